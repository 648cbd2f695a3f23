"""i386: minidumps v1-v2 (PAE and not) and ELF full dumps (formats.md §4, §6.4)."""

from __future__ import annotations

import struct
from typing import Iterator, Optional, Tuple

from ..elfcore import PhysSegments, read_phdrs
from ..errors import KvmError
from ..pagetable import INVALID, LEAF, TABLE, FlatRoot, Level, PageTable
from .base import (
    VM_PROT_EXECUTE,
    VM_PROT_READ,
    VM_PROT_WRITE,
    ArchSpec,
    Backend,
    KvmPage,
    host_is,
    register,
    untranslatable,
)
from .minidump_common import MinidumpBackend

EM_386 = 3
PG_V, PG_RW, PG_PS = 0x1, 0x2, 0x80
PG_NX = 1 << 63
FRAME = {False: 0xFFFFF000, True: 0x000FFFFFFFFFF000}
PS_FRAME = {False: 0xFFC00000, True: 0x000FFFFFFFE00000}
PDR_SHIFT = {False: 22, True: 21}


def _pte(e: int) -> int:
    return LEAF if e & PG_V else INVALID


def _pde(e: int) -> int:
    if not e & PG_V:
        return INVALID
    return LEAF if e & PG_PS else TABLE


def _prot(e: int) -> int:
    p = VM_PROT_READ
    if e & PG_RW:
        p |= VM_PROT_WRITE
    if not e & PG_NX:
        p |= VM_PROT_EXECUTE
    return p


class I386Minidump(MinidumpBackend):
    arch = "i386"
    magic = b"minidump FreeBSD/i386"
    header_size = 52
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "I"), ("paemode", 44, "I"))
    version_fields = {2: (("dumpavailsize", 48, "I"),)}
    max_version = 2
    version_word = "expected"

    def pmap_entsize(self, h: dict) -> int:
        return 8 if h["paemode"] else 4

    def setup(self) -> None:
        pae = bool(self.hdr["paemode"])
        self.pae = pae
        self.format = f"minidump v{self.version} ({'PAE' if pae else 'non-PAE'})"
        self.fn = "_i386_minidump_vatop_pae" if pae else "_i386_minidump_vatop"
        self.kernbase = self.hdr["kernbase"]
        frame = FRAME[pae]
        levels = [Level(12, 0, _pte, lambda e: e & frame, f"{self.fn}: pte not valid",
                        self.pmap.entsize)]
        self.pt = PageTable(FlatRoot(self.kernbase, self.pmap.get, self.pmap.count), levels,
                            "little", self.phys)

    @untranslatable
    def kvatop(self, va: int) -> Tuple[int, int]:
        if va >= self.kernbase:
            pa, _ = self.pt.translate(va)
            return self.phys_to_offset(va, pa)
        raise self.not_minidumped(va)

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        return (self.page(pa, va, 0, _prot(e), size, self.index.find(pa))
                for va, pa, size, e in self.pt.leaves())


class I386Elf(Backend):
    """Full physical dump; page directory found through the kernel's symbols."""

    arch = "i386"
    format = "ELF full dump"

    def __init__(self, core, kernel, resolve) -> None:
        super().__init__(core, kernel, resolve)
        _ident, segs = read_phdrs(core, kernel)
        self.segs = PhysSegments(core, segs)
        path = core.path
        pae_mode_sym = self._lookup("pae_mode")
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
            pdpt = self._lookup("IdlePDPT")
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
        esz = 8 if pae else 4
        fmt = "<" + ("Q" if pae else "I")
        count = len(ptd) // esz

        def get(i: int, ptd=ptd) -> Optional[int]:
            return struct.unpack_from(fmt, ptd, i * esz)[0] if 0 <= i < count else None

        frame, big = FRAME[pae], PS_FRAME[pae]
        pde_msg = "_kvm_kvatop_pae: pde not valid" if pae else f"{fn}: pde not valid"
        levels = [Level(PDR_SHIFT[pae], 0, _pde,
                        lambda e: (e & big) if e & PG_PS else (e & frame), pde_msg, esz),
                  Level(12, 9 if pae else 10, _pte, lambda e: e & frame,
                        f"{fn}: pte not valid" if pae else "_kvm_kvatop: pte not valid", esz)]
        self.pt = PageTable(FlatRoot(0, get, count), levels, "little", self.phys,
                            lambda pa: f"{fn}: pte_pa not found")

    def _lookup(self, name: str) -> Optional[int]:
        try:
            return self.resolve(name)
        except Exception:  # noqa: BLE001 - caller-supplied resolver
            return None

    def phys(self, pa: int, size: int) -> Optional[bytes]:
        hit = self.segs.find(pa)
        if hit is None or hit[1] < size:
            return None
        return self.core.mm[hit[0]:hit[0] + size]

    @untranslatable
    def kvatop(self, va: int) -> Tuple[int, int]:
        pa, span = self.pt.translate(va)
        hit = self.segs.find(pa)
        if hit is None:
            raise self.fail(va, f"{self.fn}: address not in dump")
        return hit[0], min(span, hit[1])


def _native(_ident) -> bool:
    return host_is("i386")


register(ArchSpec("i386 minidump", "i386", 32, EM_386, True, I386Minidump, _native))
register(ArchSpec("i386", "i386", 32, EM_386, False, I386Elf, _native))
