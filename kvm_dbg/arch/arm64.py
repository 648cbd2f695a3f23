"""arm64 (aarch64): minidumps v1-v3 with 4K or 16K pages (formats.md §5.1)."""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

from ..errors import KvmError
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

EM_AARCH64 = 183
L3_PAGE = 3
ATTR_MASK = 0xFFFC000000000FFF
ATTR_AP_RO = 1 << 7
ATTR_XN = (1 << 53) | (1 << 54)      # PXN | UXN
PAGE_SIZE_FLAGS = {0: 4096, 1: 16384}


def _l3(e: int) -> int:
    return LEAF if e & 3 == L3_PAGE else INVALID


def _frame(e: int) -> int:
    return e & ~ATTR_MASK & 0xFFFFFFFFFFFFFFFF


def _prot(e: int) -> int:
    p = VM_PROT_READ
    if not e & ATTR_AP_RO:
        p |= VM_PROT_WRITE
    if not e & ATTR_XN:
        p |= VM_PROT_EXECUTE
    return p


class Arm64Minidump(MinidumpBackend):
    arch = "arm64"
    magic = b"minidump FreeBSD/arm64"
    header_size = 80
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "Q"), ("dmapphys", 48, "Q"),
              ("dmapbase", 56, "Q"), ("dmapend", 64, "Q"))
    version_fields = {2: (("dumpavailsize", 72, "I"),),
                      3: (("dumpavailsize", 72, "I"), ("flags", 76, "I"))}
    max_version = 3
    fn = "_aarch64_minidump_vatop"

    def choose_page_size(self, h: dict) -> int:
        flag = h.get("flags", 0) & 3 if self.version >= 3 else 0
        if flag not in PAGE_SIZE_FLAGS:
            raise KvmError(f"unknown page size flag {flag:x}", path=self.core.path)
        return PAGE_SIZE_FLAGS[flag]

    def setup(self) -> None:
        h = self.hdr
        self.kernbase, self.dmapphys = h["kernbase"], h["dmapphys"]
        self.dmapbase, self.dmapend = h["dmapbase"], h["dmapend"]
        shift = self.page_size.bit_length() - 1
        if self.page_size != 4096:
            self.format += f" ({self.page_size // 1024}K pages)"
        levels = [Level(shift, 0, _l3, _frame, f"{self.fn}: pde not valid")]
        self.pt = PageTable(FlatRoot(self.kernbase, self.pmap.get, self.pmap.count), levels,
                            "little", self.phys)

    @untranslatable
    def kvatop(self, va: int) -> Tuple[int, int]:
        if self.dmapbase <= va < self.dmapend:
            pa = va - self.dmapbase + self.dmapphys
            return self.phys_to_offset(va, pa, dmap=True)
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
        # libkvm reports dmap = dmapbase + pa here (it does not subtract dmapphys).
        return (self.page(pa, va, self.dmapbase + pa, _prot(e), size, self.index.find(pa))
                for va, pa, size, e in self.pt.leaves())


register(ArchSpec("aarch64 minidump", "arm64", 64, EM_AARCH64, True, Arm64Minidump,
                  lambda ident: host_is("arm64")))
