"""riscv (64-bit): minidumps v1-v2, Sv39/Sv48 kernels (formats.md §5.3).

The pmap section is a flat array of L3 PTEs from kernbase (superpages are
synthesized by the writer), so Sv39 and Sv48 dumps read the same way."""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

from ..pagetable import INVALID, LEAF, FlatRoot, Level, PageTable
from .base import (
    VM_PROT_EXECUTE,
    VM_PROT_READ,
    VM_PROT_WRITE,
    ArchSpec,
    KvmPage,
    host_is,
    register,
    untranslatable,
)
from .minidump_common import MinidumpBackend

EM_RISCV = 243
PTE_V, PTE_R, PTE_W, PTE_X = 0x1, 0x2, 0x4, 0x8
PTE_RWX = PTE_R | PTE_W | PTE_X
PPN_SHIFT = 10


def _l3(e: int) -> int:
    return LEAF if e & PTE_V and e & PTE_RWX else INVALID


def _frame(e: int) -> int:
    return (e >> PPN_SHIFT) << 12      # libkvm does not mask Svpbmt/N bits


def _prot(e: int) -> int:
    p = VM_PROT_READ
    if e & PTE_W:
        p |= VM_PROT_WRITE
    if e & PTE_X:
        p |= VM_PROT_EXECUTE
    return p


class RiscvMinidump(MinidumpBackend):
    arch = "riscv"
    magic = b"minidump FreeBSD/riscv"
    header_size = 80
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "Q"), ("dmapphys", 48, "Q"),
              ("dmapbase", 56, "Q"), ("dmapend", 64, "Q"))
    version_fields = {2: (("dumpavailsize", 72, "I"),)}
    max_version = 2
    fn = "_riscv_minidump_vatop"

    def setup(self) -> None:
        h = self.hdr
        self.kernbase, self.dmapphys = h["kernbase"], h["dmapphys"]
        self.dmapbase, self.dmapend = h["dmapbase"], h["dmapend"]
        levels = [Level(12, 0, _l3, _frame, f"{self.fn}: pte not valid")]
        self.pt = PageTable(FlatRoot(self.kernbase, self.pmap.get, self.pmap.count), levels,
                            "little", self.phys)

    @untranslatable
    def kvatop(self, va: int) -> Tuple[int, int]:
        if self.dmapbase <= va < self.dmapend:
            return self.phys_to_offset(va, va - self.dmapbase + self.dmapphys, dmap=True)
        if va >= self.kernbase:
            pa, _ = self.pt.translate(va)
            return self.phys_to_offset(va, pa)
        raise self.not_minidumped(va)

    @untranslatable
    def kvatop_run(self, va: int, size: int) -> Tuple[int, int]:
        if self.dmapbase <= va < self.dmapend:
            return self.dmap_run(va, va - self.dmapbase + self.dmapphys,
                                 min(size, self.dmapend - va))
        return self.kvatop(va)

    @property
    def direct_map(self):
        return (self.dmapbase, self.dmapend, self.dmapphys, self.index.find)

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        # dmap = dmapbase + pa (libkvm does not subtract dmapphys); the second,
        # direct-map pass of libkvm walks an empty local bitmap: nothing to add.
        return (self.page(pa, va, self.dmapbase + pa, _prot(e), size, self.index.find(pa))
                for va, pa, size, e in self.pt.leaves())


register(ArchSpec("riscv minidump", "riscv", 64, EM_RISCV, True, RiscvMinidump,
                  lambda ident: host_is("riscv")))
