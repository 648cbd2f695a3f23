"""powerpc64: minidumps v1-v2 for the hashed (mmu_g5, mmu_phyp) and radix
(mmu_radix) MMUs, either byte order (formats.md §5.4).

Header fields are in the kernel's byte order (libkvm always swaps them as
big-endian, wrong for powerpc64le); HPT and radix entries are big-endian
(architectural).  Kernel addresses below the direct map are link-time
addresses and are relocated by ``kvm_kerndisp`` = startkernel - 0x100100.
"""

from __future__ import annotations

import errno
import struct
from typing import Iterator, Optional, Tuple

from ..elfkernel import EM_PPC64
from ..errors import KvmError
from ..pagetable import INVALID, LEAF, TABLE, FlatRoot, Level, PageTable, Untranslatable
from .base import ArchSpec, KvmPage, Prot, host_is, if_set, register, untranslatable
from .minidump_common import MinidumpBackend

PPC64_KERNBASE = 0x100100
M64 = (1 << 64) - 1
HPT_MMUS = ("mmu_g5", "mmu_phyp")
RADIX_MMU = "mmu_radix"

# -- HPT (kvm_minidump_powerpc64_hpt.c) ------------------------------------
SEGMENT_SHIFT = 28
ESID_MASK = 0xFFFFFFFFF0000000
KERNEL_VSID_BIT = 1 << 36
VSID_VRMA = 0x1FFFFFF
HASH_MASK = 0x7F_FFFF_FFFF
LPTEH_BIG, LPTEH_HID, LPTEH_VALID = 0x4, 0x2, 0x1
LPTEH_B_MASK = 0xC000000000000000
AVA_VSID_MASK, AVA_PAGE_MASK = 0x3FFFFFFFFFFFF000, 0xF80
PTEL_PA_MASK, PTEL_LP_PA_MASK = 0x0FFFFFFFFFFFF000, 0x0FFFFFFFFF000000
LPTEL_RW, LPTEL_NOEXEC = 0x2, 0x4
HPT_PROT = Prot(write=if_set(LPTEL_RW), execute=if_set(LPTEL_NOEXEC))  # sic: libkvm's inversion
MAX_SEGMENTS = 1 << 24          # sanity bound on header-derived segment counts
HPT_SCAN_PTES = 1 << 16         # PTEs per block of the walk's bulk scan (1 MiB of table)
# Byte -> 0/1 tables for that scan (bytes 0-7 of a big-endian PTE high word).
_BIT0 = bytes(b & 1 for b in range(256))
_NOT_1 = bytes(int(b != 1) for b in range(256))
_LOW6 = bytes(int(b & 0x3F != 0) for b in range(256))
_NOT_FF = bytes(int(b != 0xFF) for b in range(256))
_VSID_INV = pow(0x13BB, -1, 1 << 36)


def kernel_vsid(esid: int) -> int:
    return ((((esid << 8) | (esid >> 28)) * 0x13BB) & (KERNEL_VSID_BIT - 1)) | KERNEL_VSID_BIT


def vsid_to_esid(vsid: int) -> int:
    """Inverse of ``kernel_vsid`` for 36-bit ESIDs (a rotation and an odd multiplier)."""
    r = ((vsid & (KERNEL_VSID_BIT - 1)) * _VSID_INV) & (KERNEL_VSID_BIT - 1)
    return ((r >> 8) | (r << 28)) & (KERNEL_VSID_BIT - 1)


def _ava_shift(b: int) -> int:
    return 5 - (min(54, 77 - b) + 1 - 50)


def _va_shift(b: int) -> int:
    return 28 - b - (min(54, 77 - b) + 1 - 50)


# -- radix (kvm_minidump_powerpc64_radix.c) ----------------------------------
RPTE_VALID, RPTE_LEAF = 1 << 63, 1 << 62
RPTE_RPN_MASK, RPDE_NLB_MASK = 0x00FFFFFFFFFFF000, 0x00FFFFFFFFFFFF00
EAA_R, EAA_W, EAA_X = 0x4, 0x2, 0x1
RADIX_ROOT_SIZE = 1 << 16


def _radix_classify(e: int) -> int:
    if not e & RPTE_VALID:
        return INVALID
    return LEAF if e & RPTE_LEAF else TABLE


def _radix_frame(shift: int):
    def frame(e: int) -> int:
        if e & RPTE_LEAF:
            return e & RPTE_RPN_MASK & ~((1 << shift) - 1)
        return e & RPDE_NLB_MASK
    return frame


RADIX_PROT = Prot(read=if_set(EAA_R | EAA_W), write=if_set(EAA_W), execute=if_set(EAA_X))


class Powerpc64Minidump(MinidumpBackend):
    arch = "powerpc64"
    magic = b"minidump FreeBSD/powerpc64"
    magic_field = 32
    header_size = 144
    fields = (("version", 64, "I"), ("msgbufsize", 68, "I"), ("bitmapsize", 72, "I"),
              ("pmapsize", 76, "I"), ("kernbase", 80, "Q"), ("kernend", 88, "Q"),
              ("dmapbase", 96, "Q"), ("dmapend", 104, "Q"), ("hw_direct_map", 112, "I"),
              ("startkernel", 120, "Q"), ("endkernel", 128, "Q"))
    version_fields = {2: (("dumpavailsize", 136, "I"),)}
    max_version = 2

    def __init__(self, core, kernel, resolve) -> None:
        if core.size < self.header_size:
            raise KvmError("cannot read minidump header", path=core.path)
        super().__init__(core, kernel, resolve)

    def choose_page_size(self, h: dict) -> int:
        """(Hook run right after the version check.) Select the MMU as libkvm does."""
        raw = self.core.head(64)[32:64]
        self.mmu = raw.split(b"\0", 1)[0].decode("latin-1")
        if self.mmu in HPT_MMUS:
            self.radix = False
            self.fn = "ppc64mmu_hpt_kvatop"
        elif self.mmu == RADIX_MMU:
            self.radix = True
            self.fn = "ppc64mmu_radix_kvatop"
            if h["pmapsize"] == 0:
                raise KvmError("radix minidump does not contain a page map", path=self.core.path)
            if h["pmapsize"] != RADIX_ROOT_SIZE:
                raise KvmError(f"unexpected radix page map size: {h['pmapsize']}",
                               path=self.core.path)
        else:
            raise KvmError(f"unsupported MMU: {self.mmu}", path=self.core.path)
        return 4096

    def setup(self) -> None:
        h = self.hdr
        self.format += f" ({self.mmu})"
        self.kernbase, self.kernend = h["kernbase"], h["kernend"]
        self.dmapbase, self.dmapend = h["dmapbase"], h["dmapend"]
        disp = (h["startkernel"] - PPC64_KERNBASE) & M64
        self.disp = disp
        self.kerndisp = disp - (1 << 64) if disp >> 63 else disp
        self.pmap_off = self.sections.pmap
        if self.radix:
            root = FlatRoot(0, self._root_entry, RADIX_ROOT_SIZE // 8)
            levels = [Level(39, 13, _radix_classify, _radix_frame(39)),
                      Level(30, 9, _radix_classify, _radix_frame(30)),
                      Level(21, 9, _radix_classify, _radix_frame(21)),
                      Level(12, 9, _radix_classify, _radix_frame(12))]
            self.pt = PageTable(root, levels, "big", self.phys,
                                lambda pa: f"radix page table page at 0x{pa:x} was not dumped")
        else:
            self._hpt_setup()

    # -- shared ---------------------------------------------------------------
    def _root_entry(self, idx: int) -> Optional[int]:
        idx &= RADIX_ROOT_SIZE // 8 - 1
        return struct.unpack_from(">Q", self.core.mm, self.pmap_off + idx * 8)[0]

    def kvatop(self, va: int) -> Tuple[int, int]:
        if va < self.dmapbase:
            va = (va + self.disp) & M64
        if self.radix:
            return self._radix_kvatop(va)
        return self._hpt_kvatop(va)

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        return self._radix_walk() if self.radix else self._hpt_walk()

    def kvatop_run(self, va: int, size: int) -> Tuple[int, int]:
        dm = self.direct_map
        if dm is not None and dm[0] <= va < dm[1]:
            try:
                return self.dmap_run(va, va - self.dmapbase, min(size, dm[1] - va))
            except KvmError:
                pass                        # the exact libkvm error comes from kvatop
        return self.page_run(va, size)

    @property
    def direct_map(self):
        """Only when ``va & ~dmapbase`` (HPT) equals ``va - dmapbase`` (radix)."""
        end = self.dmapend + 1
        if end <= self.dmapbase or self.dmapbase % (1 << (end - 1 - self.dmapbase).bit_length()):
            return None
        return (self.dmapbase, end, 0, self.index.find, self.index.span)

    # -- radix ----------------------------------------------------------------
    def _radix_kvatop(self, va: int) -> Tuple[int, int]:
        if self.dmapbase <= va <= self.dmapend:
            pa = va - self.dmapbase
        elif va >= self.kernbase:
            try:
                pa, _ = self.pt.translate(va)
            except Untranslatable as u:
                if u.hard:        # libkvm stops here without the soft message
                    raise KvmError(u.hard, errno=errno.EFAULT, address=va) from None
                raise self.fail(va) from None
        else:
            raise self.fail(va)
        off = self.index.find(pa)
        if off is None:
            raise self.fail(va)
        return off, min(4096 - (pa & 0xFFF), self.core.size - off)

    def _radix_walk(self) -> Iterator[KvmPage]:
        for va, pa, size, e in self.pt.leaves():
            va |= self.dmapbase
            if va < self.kernbase:
                continue
            yield self.page(pa, va, self.dmapbase + pa, RADIX_PROT(e), size,
                            self.index.find(pa))

    # -- HPT ------------------------------------------------------------------
    def _hpt_setup(self) -> None:
        h = self.hdr
        self.nptegs = h["pmapsize"] // 128
        if self.nptegs == 0 or self.nptegs & (self.nptegs - 1):
            raise KvmError(f"hashed page table size {h['pmapsize']} is not a power-of-two "
                           f"number of 128-byte groups", path=self.core.path)
        maxmem = h["bitmapsize"] * 8 * 4096
        # The software SLB: kernel VM segments, then DMAP segments (large pages
        # when hw_direct_map).  Kept as ranges, VSIDs computed on demand.
        self.seg_ranges = [(self.kernbase, self.kernend, False),
                           (self.dmapbase, min(self.dmapend, self.dmapbase + maxmem),
                            bool(h["hw_direct_map"]))]
        nseg = sum(max(0, -(-(e - s) >> SEGMENT_SHIFT)) for s, e, _ in self.seg_ranges)
        if nseg > MAX_SEGMENTS:
            raise KvmError("cannot allocate slbs", path=self.core.path)

    def _segment(self, esid: int) -> Optional[bool]:
        """None if no SLB entry covers the ESID, else its large-page flag."""
        for start, end, large in self.seg_ranges:
            first = start >> SEGMENT_SHIFT
            if first <= esid < first + max(0, -(-(end - start) >> SEGMENT_SHIFT)):
                return large
        return None

    def _pte(self, ptex: int) -> Tuple[int, int]:
        return struct.unpack_from(">QQ", self.core.mm, self.pmap_off + ptex * 16)

    def _pte_search(self, ea: int) -> Optional[Tuple[int, int]]:
        esid = ea >> SEGMENT_SHIFT
        large = self._segment(esid)
        if large is None:
            raise self.fail(ea, f"{self.fn}: pte not valid")
        b = 24 if large else 12
        vsid = kernel_vsid(esid)
        page = (ea & ~ESID_MASK) >> b
        ava_sh, va_sh = _ava_shift(b), _va_shift(b)
        hmask = self.nptegs - 1
        for hid in (0, LPTEH_HID):
            h = (vsid & HASH_MASK) ^ page
            if hid:
                h = ~h & HASH_MASK
            g = (h & hmask) << 3
            for ptex in range(g, g + 8):
                hi, lo = self._pte(ptex)
                if (hi & LPTEH_HID) != hid or not hi & LPTEH_VALID or hi & LPTEH_B_MASK:
                    continue
                if (hi & AVA_VSID_MASK) >> 12 != vsid or \
                        ((hi & AVA_PAGE_MASK) >> 7) >> ava_sh != page >> va_sh:
                    continue
                if bool(hi & LPTEH_BIG) != (b == 24):
                    continue
                return hi, lo
        return None

    @untranslatable
    def _hpt_kvatop(self, va: int) -> Tuple[int, int]:
        if self.dmapbase <= va <= self.dmapend:
            pa = (va & ~self.dmapbase) & ~0xFFF
            off = self.index.find(pa)
            if off is None:
                raise self.fail(va, f"{self.fn}: direct map address 0x{va:x} not in minidump")
        elif va >= self.kernbase:
            hit = self._pte_search(va)
            if hit is None:
                raise self.fail(va, f"{self.fn}: pte not valid")
            hi, lo = hit
            if hi & LPTEH_BIG:
                pa = (lo & PTEL_LP_PA_MASK) | (va & ~0xFFF & 0xFFFFFF)
            else:
                pa = lo & PTEL_PA_MASK
            off = self.index.find(pa)
            if off is None:
                raise self.fail(va, f"{self.fn}: physical address 0x{pa:x} not in minidump")
        else:
            raise self.fail(va, f"{self.fn}: virtual address 0x{va:x} not minidumped")
        o = va & 0xFFF
        return off + o, min(4096 - o, self.core.size - off)

    def _hpt_ea(self, hi: int, ptex: int) -> Optional[int]:
        vsid = (hi & AVA_VSID_MASK) >> 12
        esid = vsid_to_esid(vsid)
        if kernel_vsid(esid) != vsid:
            return None
        large = self._segment(esid)
        if large is None:
            return None
        ea = esid << SEGMENT_SHIFT
        b = 24 if large else 12
        if self.nptegs < 0x10000:
            sh = _ava_shift(b)
            ea |= (((hi & AVA_PAGE_MASK) >> 7) >> sh) << (SEGMENT_SHIFT - 5 + sh)
        h = ptex >> 3
        if hi & LPTEH_HID:
            h = ~h & HASH_MASK
        return ea | (((h ^ (vsid & HASH_MASK)) << b) & ~ESID_MASK & M64)

    def _hpt_kernel_ptes(self) -> Iterator[Tuple[int, int, int]]:
        """(ptex, hi, lo) of each valid, non-VRMA PTE whose VSID has the kernel
        bit, in table order: the walk's candidates.  The scan runs in C a block
        at a time, one byte of each PTE per pass, so Python work follows the
        candidates, not the table size (hostile tables included)."""
        mm, base, n = self.core.mm, self.pmap_off, self.nptegs * 8
        unpack = struct.Struct(">QQ").unpack_from

        def column(start: int, end: int, byte: int, table: bytes) -> int:
            return int.from_bytes(mm[start + byte:end:16].translate(table), "little")

        for first in range(0, n, HPT_SCAN_PTES):
            k = min(HPT_SCAN_PTES, n - first)
            start, end = base + first * 16, base + (first + k) * 16
            # LPTEH_VALID: bit 0 of byte 7; KERNEL_VSID_BIT (hi bit 48): bit 0 of byte 1.
            hits = column(start, end, 7, _BIT0) & column(start, end, 1, _BIT0)
            if not hits:
                continue
            # Not VSID_VRMA ((hi & AVA_VSID_MASK) >> 24): bits 24-48 set, 49-61 clear.
            hits &= (column(start, end, 1, _NOT_1) | column(start, end, 0, _LOW6) |
                     column(start, end, 2, _NOT_FF) | column(start, end, 3, _NOT_FF) |
                     column(start, end, 4, _NOT_FF))
            if not hits:
                continue
            marks = hits.to_bytes(k, "little")
            j = marks.find(1)
            while j >= 0:
                hi, lo = unpack(mm, start + j * 16)
                yield first + j, hi, lo
                j = marks.find(1, j + 1)

    def _hpt_walk(self) -> Iterator[KvmPage]:
        for ptex, hi, lo in self._hpt_kernel_ptes():
            ea = self._hpt_ea(hi, ptex)
            if ea is None:
                # libkvm: "slb_vsid_search: segment not found for VSID" ends the walk
                return
            if hi & LPTEH_BIG:
                pa, size, off = lo & PTEL_LP_PA_MASK, 1 << 24, None
            else:
                pa, size = lo & PTEL_PA_MASK, 4096
                off = self.index.find(pa)
            yield self.page(pa, ea, self.dmapbase + pa, HPT_PROT(lo), size, off)


register(ArchSpec("powerpc64 minidump", "powerpc64", 64, EM_PPC64, True, Powerpc64Minidump,
                  lambda ident: host_is("powerpc64"), etype=3))
