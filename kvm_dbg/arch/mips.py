"""mips (o32, n32, n64; either byte order): minidumps v1-v2 (formats.md §5.5).

Unmapped segments (KSEG0/KSEG1, and XKPHYS on 64-bit kernels) translate
directly; everything at or above kernbase goes through the PTE array."""

from __future__ import annotations

import errno
import sys
from typing import Tuple

from ..elfkernel import EM_MIPS
from ..errors import KvmError
from ..pagetable import Level, leaf_if
from .base import ALWAYS, ArchSpec, Prot, host_is, if_clear, register
from .minidump_common import MinidumpBackend

EF_MIPS_ABI2 = 0x20
PTE_V = 0x2
KSEG_MASK = 0x1FFFFFFF
XKPHYS_MASK = 0x0FF_FFFF_FFFF
# (start, end exclusive, mask) per kernel class; libkvm's ranges end one byte
# short of each segment (`va < ..._END` with END = last byte), kept as is.
SEGMENTS = {
    64: ((0x8000000000000000, 0xBFFFFFFFFFFFFFFF, XKPHYS_MASK),
         (0xFFFFFFFF80000000, 0xFFFFFFFF9FFFFFFF, KSEG_MASK),
         (0xFFFFFFFFA0000000, 0xFFFFFFFFBFFFFFFF, KSEG_MASK)),
    32: ((0x80000000, 0x9FFFFFFF, KSEG_MASK), (0xA0000000, 0xBFFFFFFF, KSEG_MASK)),
}
# PTE layout: (PFN mask, software read-only bit) by PTE width.
PTE = {32: (0x1FFFFFC0, 1 << 29), 64: (0x3_FFFF_FFC0, 1 << 55)}


def pte_bits(ident) -> int:
    """64-bit PTEs for n64 and n32 kernels, 32-bit for o32."""
    return 64 if ident.elfclass == 64 or ident.flags & EF_MIPS_ABI2 else 32


class MipsMinidump(MinidumpBackend):
    arch = "mips"
    magic = b"minidump FreeBSD/mips"
    header_size = 72
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "Q"), ("dmapbase", 48, "Q"),
              ("dmapend", 56, "Q"))
    version_fields = {2: (("dumpavailsize", 64, "I"),)}
    max_version = 2
    fn = "_mips_minidump_kvatop"

    def __init__(self, core, kernel, resolve) -> None:
        self.pte_bits = pte_bits(kernel)
        # v1: the writer's vm_page_dump is uint32_t[] on every mips kernel;
        # v2: a bitset of long (64-bit on n64 only).
        self.bitmap_word_bits = 32
        self._class = kernel.elfclass
        super().__init__(core, kernel, resolve)

    def choose_page_size(self, h: dict) -> int:
        if self.version >= 2 and self._class == 64:
            self.bitmap_word_bits = 64
        return 4096

    def pmap_entsize(self, h: dict) -> int:
        return self.pte_bits // 8

    def setup(self) -> None:
        abi = "n64" if self._class == 64 else ("n32" if self.pte_bits == 64 else "o32")
        self.format += f" ({abi})"
        self.kernbase = self.hdr["kernbase"]
        self.segments = SEGMENTS[self._class]
        mask, ro = PTE[self.pte_bits]
        self.prot = Prot(write=if_clear(ro), execute=ALWAYS)
        self.pt = self.flat_pagetable(
            [Level(12, 0, leaf_if(PTE_V), lambda e: ((e & mask) >> 6) << 12,
                   f"{self.fn}: pte not valid", self.pte_bits // 8)],
            self.order)

    def kvatop(self, va: int) -> Tuple[int, int]:
        page = va & ~0xFFF
        for start, end, mask in self.segments:
            if start <= page < end:
                return self.phys_to_offset(va, (page & mask) | (va & 0xFFF))
        if page >= self.kernbase:
            return self.kmap_offset(va)
        # libkvm returns here without the soft "invalid address" message.
        raise KvmError(f"{self.fn}: virtual address 0x{page:x} not minidumped",
                       errno=errno.EFAULT, address=va)

    def kvatop_run(self, va: int, size: int) -> Tuple[int, int]:
        page = va & ~0xFFF
        for start, end, mask in self.segments:
            if start <= page < end:          # as kvatop: the page decides
                pa = va & mask
                last = ((end - 1) | 0xFFF) + 1 - va
                hit = self.index.span(pa, min(size, last, mask + 1 - pa))
                return self.kvatop(va) if hit is None else hit   # kvatop: libkvm's error
        if page >= self.kernbase:
            return self.kmap_run(va, size)
        return self.kvatop(va)

    @property
    def direct_map(self):
        """KSEG0 (the segment the kernel image and its variables live in)."""
        start, end, _mask = self.segments[-2]
        return (start, end, 0, self.index.find, self.index.span)


def _native(ident) -> bool:
    if not host_is("mips", ident.byteorder):
        return False
    host64 = sys.maxsize > 2 ** 32
    return (ident.elfclass == 64) == host64 and not ident.flags & EF_MIPS_ABI2


register(ArchSpec("mips minidump", "mips", None, EM_MIPS, True, MipsMinidump, _native,
                  etype=None))
