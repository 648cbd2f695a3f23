"""amd64: minidumps v1-v3 and ELF full dumps (formats.md §3, §6.3)."""

from __future__ import annotations

import struct
from typing import Iterator, Optional, Sequence

from ..elfkernel import EM_X86_64
from ..errors import KvmError
from ..pagetable import (
    Level,
    PageTable,
    TableRoot,
    frame_mask,
    leaf_if,
    sign_extend,
    table_if,
    table_or_leaf,
)
from .base import (
    VM_PROT_READ,
    VM_PROT_WRITE,
    ArchSpec,
    ElfPhysBackend,
    KvmPage,
    Prot,
    host_is,
    if_clear,
    if_set,
    register,
)
from .minidump_common import DirectMapMinidump

# Page-table entry bits (kvm_amd64.h).
PG_V, PG_RW, PG_PS = 0x1, 0x2, 0x80
PG_NX = 1 << 63
PG_FRAME = 0x000FFFFFFFFFF000
PG_PS_FRAME = 0x000FFFFFFFE00000
PG_1GB_FRAME = 0x000FFFFFC0000000

_pte = leaf_if(PG_V)
_dir = table_or_leaf(PG_V, PG_PS)
_frame = frame_mask(PG_FRAME)
PROT = Prot(write=if_set(PG_RW), execute=if_clear(PG_NX))


class Amd64Minidump(DirectMapMinidump):
    arch = "amd64"
    magic = b"minidump FreeBSD/amd64"
    header_size = 72
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "Q"), ("dmapbase", 48, "Q"),
              ("dmapend", 56, "Q"))
    version_fields = {3: (("dumpavailsize", 64, "I"),)}
    max_version = 3
    version_word = "expected"
    dmap_first = False               # libkvm: va >= kernbase is the kernel map
    prot = PROT

    def missing_table(self, pa: int) -> str:
        return f"cannot find page table entry for {pa}"

    def levels(self) -> Sequence[Level]:
        if self.version == 1:
            self.fn = "_amd64_minidump_vatop_v1"
            return [Level(12, 0, _pte, _frame, f"{self.fn}: pte not valid")]
        self.fn = "_amd64_minidump_vatop"
        return [Level(21, 0, _dir, frame_mask(PG_FRAME, PG_PS, PG_PS_FRAME),
                      f"{self.fn}: pde not valid"),
                Level(12, 9, _pte, _frame, f"{self.fn}: pte not valid")]

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        if self.version == 1:
            return None
        return self._walk()

    def _walk(self) -> Iterator[KvmPage]:
        # Pages reached through the kernel map, then the same pages through the
        # direct map (libkvm's second pass).  A set, not a bitmap-sized array:
        # memory follows the pages found, not the size the header claims.
        seen = set()
        index = self.index
        nbits = index.nbits
        for p in self.kmap_pages(self.dmapbase):
            yield p
            bit = index.bit_of(p.kp_paddr)
            if bit is not None and bit < nbits:
                seen.add(bit)
        for bit in sorted(seen):
            pa = index.pa_of(bit)
            if pa is None or self.dmapbase + pa + 4096 > self.dmapend:
                return
            yield self.page(pa, 0, self.dmapbase + pa, VM_PROT_READ | VM_PROT_WRITE, 4096,
                            index.find(pa))


class Amd64Elf(ElfPhysBackend):
    """Full physical-memory ELF dump, translated through the kernel's PML4."""

    arch = "amd64"
    fn = "_amd64_vatop"
    not_in_dump = "_amd64_vatop: address not in dump"

    def __init__(self, core, kernel, resolve) -> None:
        super().__init__(core, kernel, resolve)
        kernbase = self.need("kernbase", "bad namelist - no kernbase")
        kpml4phys = self.need("KPML4phys", "bad namelist - no KPML4phys")
        raw = self.phys(kpml4phys - kernbase, 8)
        if raw is None:
            raise KvmError("cannot read KPML4phys", path=core.path)
        pml4 = struct.unpack("<Q", raw)[0] & PG_FRAME
        if self.phys(pml4, 4096) is None:
            raise KvmError("cannot read KPML4phys", path=core.path)
        f = self.fn
        levels = [Level(39, 9, table_if(PG_V), _frame, f"{f}: pml4e not valid"),
                  Level(30, 9, _dir, frame_mask(PG_FRAME, PG_PS, PG_1GB_FRAME),
                        f"{f}: pdpe not valid"),
                  Level(21, 9, _dir, frame_mask(PG_FRAME, PG_PS, PG_PS_FRAME),
                        f"{f}: pde not valid"),
                  Level(12, 9, _pte, _frame, f"{f}: pte not valid")]
        self.pt = PageTable(TableRoot(pml4), levels, "little", self.phys,
                            lambda pa: f"{f}: bootstrap data not in dump")


def _native(_ident) -> bool:
    return host_is("amd64")


register(ArchSpec("amd64 minidump", "amd64", 64, EM_X86_64, True, Amd64Minidump, _native))
register(ArchSpec("amd64", "amd64", 64, EM_X86_64, False, Amd64Elf, _native))

__all__ = ["Amd64Minidump", "Amd64Elf", "sign_extend"]
