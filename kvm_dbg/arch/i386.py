"""i386: minidumps v1-v2 (PAE and not) and ELF full dumps (formats.md §4, §6.4)."""

from __future__ import annotations

import struct
from typing import Optional

from ..elfkernel import EM_386
from ..errors import KvmError
from ..pagetable import FlatRoot, Level, PageTable, frame_mask, leaf_if, table_or_leaf
from .base import ArchSpec, ElfPhysBackend, Prot, host_is, if_clear, if_set, register
from .minidump_common import MinidumpBackend

PG_V, PG_RW, PG_PS = 0x1, 0x2, 0x80
PG_NX = 1 << 63
FRAME = {False: 0xFFFFF000, True: 0x000FFFFFFFFFF000}
PS_FRAME = {False: 0xFFC00000, True: 0x000FFFFFFFE00000}
PDR_SHIFT = {False: 22, True: 21}

_pte = leaf_if(PG_V)
_pde = table_or_leaf(PG_V, PG_PS)


class I386Minidump(MinidumpBackend):
    arch = "i386"
    magic = b"minidump FreeBSD/i386"
    header_size = 52
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "I"), ("paemode", 44, "I"))
    version_fields = {2: (("dumpavailsize", 48, "I"),)}
    max_version = 2
    version_word = "expected"
    prot = Prot(write=if_set(PG_RW), execute=if_clear(PG_NX))

    def pmap_entsize(self, h: dict) -> int:
        return 8 if h["paemode"] else 4

    def setup(self) -> None:
        pae = bool(self.hdr["paemode"])
        self.pae = pae
        self.format = f"minidump v{self.version} ({'PAE' if pae else 'non-PAE'})"
        self.fn = "_i386_minidump_vatop_pae" if pae else "_i386_minidump_vatop"
        self.kernbase = self.hdr["kernbase"]
        self.pt = self.flat_pagetable([Level(12, 0, _pte, frame_mask(FRAME[pae]),
                                             f"{self.fn}: pte not valid", self.pmap.entsize)])


class I386Elf(ElfPhysBackend):
    """Full physical dump; page directory found through the kernel's symbols."""

    arch = "i386"

    def __init__(self, core, kernel, resolve) -> None:
        super().__init__(core, kernel, resolve)
        path = core.path
        pae_mode_sym = self.lookup("pae_mode")
        if pae_mode_sym is not None:
            # FreeBSD >= 12: kernel mapped VA == PA; read the variables at their
            # own addresses (the approach Volatility 3 takes; formats.md §6.4).
            raw = self.phys(pae_mode_sym, 4)
            if raw is None:
                raise KvmError("cannot read pae_mode", path=path)
            pae = struct.unpack("<I", raw)[0] != 0
            sym = "IdlePDPT" if pae else "IdlePTD_nopae"
            addr = self.need(sym, "bad namelist")
            raw = self.phys(addr, 4)
            if raw is None:
                raise KvmError(f"cannot read {sym}", path=path)
            table = struct.unpack("<I", raw)[0]
        else:
            kernbase = self.need("kernbase", "cannot resolve kernbase")
            pdpt = self.lookup("IdlePDPT")
            pae = pdpt is not None
            if pae:
                raw = self.phys(pdpt - kernbase, 4)
                if raw is None:
                    raise KvmError("cannot read IdlePDPT", path=path)
            else:
                ptd = self.need("IdlePTD", "bad namelist")
                raw = self.phys(ptd - kernbase, 4)
                if raw is None:
                    raise KvmError("cannot read IdlePTD", path=path)
            table = struct.unpack("<I", raw)[0]
        self.pae = pae
        self.format = f"ELF full dump ({'PAE' if pae else 'non-PAE'})"
        if pae:
            raw = self.phys(table, 32)
            if raw is None:
                raise KvmError("Cannot read PDPT", path=path)
            pds = []
            for e in struct.unpack("<4Q", raw):
                page = self.phys(e & FRAME[True], 4096)
                if page is None:
                    raise KvmError("cannot read PDPT", path=path)
                pds.append(page)
            ptd = b"".join(pds)
            fn = "_i386_vatop_pae"
        else:
            ptd = self.phys(table & FRAME[False], 4096)
            if ptd is None:
                raise KvmError("cannot read PTD", path=path)
            fn = "_i386_vatop"
        self.fn = fn
        self.not_in_dump = f"{fn}: address not in dump"
        esz = 8 if pae else 4
        fmt = "<" + ("Q" if pae else "I")
        count = len(ptd) // esz

        def get(i: int, ptd=ptd) -> Optional[int]:
            return struct.unpack_from(fmt, ptd, i * esz)[0] if 0 <= i < count else None

        frame = FRAME[pae]
        pde_msg = "_kvm_kvatop_pae: pde not valid" if pae else f"{fn}: pde not valid"
        levels = [Level(PDR_SHIFT[pae], 0, _pde, frame_mask(frame, PG_PS, PS_FRAME[pae]),
                        pde_msg, esz),
                  Level(12, 9 if pae else 10, _pte, frame_mask(frame),
                        f"{fn}: pte not valid" if pae else "_kvm_kvatop: pte not valid", esz)]
        self.pt = PageTable(FlatRoot(0, get, count), levels, "little", self.phys,
                            lambda pa: f"{fn}: pte_pa not found")


def _native(_ident) -> bool:
    return host_is("i386")


register(ArchSpec("i386 minidump", "i386", 32, EM_386, True, I386Minidump, _native))
register(ArchSpec("i386", "i386", 32, EM_386, False, I386Elf, _native))
