"""Model of a crashed FreeBSD machine: sparse physical memory, dump_avail, kernel mappings.

Writers (minidump.py, elfcore.py) turn a Machine into a core file; the manifest is
derived from the same model, so every expected byte comes from here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

READ, WRITE, EXECUTE = 1, 2, 4
RW, RX, RWX = READ | WRITE, READ | EXECUTE, READ | WRITE | EXECUTE
K4, K16, M2, M4, M32, G1 = 1 << 12, 1 << 14, 1 << 21, 1 << 22, 1 << 25, 1 << 30


@dataclass(frozen=True)
class ArchSpec:
    """Per-arch constants used by the generator (ELF identity and minidump magic)."""

    name: str
    bits: int
    little: bool
    e_machine: int
    magic: bytes
    kernbase: int  # KERNBASE of the kernel image (classic value)


ARCHES: Dict[str, ArchSpec] = {
    "amd64": ArchSpec("amd64", 64, True, 62, b"minidump FreeBSD/amd64", 0xFFFFFFFF80000000),
    "i386": ArchSpec("i386", 32, True, 3, b"minidump FreeBSD/i386", 0xC0000000),
    "arm64": ArchSpec("arm64", 64, True, 183, b"minidump FreeBSD/arm64", 0xFFFF000000000000),
}

PATTERN_TAG = 0x5AC3_0000_0000_0000


def page_pattern(pa: int, size: int, style: str = "addr") -> bytes:
    """Distinctive page contents derived from its physical address.

    "addr": every 8-byte LE word holds its own physical address (pa + offset), so a read
    from the wrong page *or* the wrong offset is caught. "stamp": 16-byte units
    (pa, pa ^ PATTERN_TAG) repeated -- much faster, used by the large benchmark mode.
    """
    if style == "stamp":
        return struct.pack("<QQ", pa, pa ^ PATTERN_TAG) * (size // 16)
    return struct.pack(f"<{size // 8}Q", *range(pa, pa + size, 8))


@dataclass
class Mapping:
    """A kernel-map mapping of ``size`` bytes (one page or one superpage)."""

    va: int
    pa: int
    size: int
    prot: int = RW

    def contains(self, va: int) -> bool:
        return self.va <= va < self.va + self.size


def merge_runs(items: Sequence[int], runs: Sequence[Tuple[int, int]] = ()) -> List[List[int]]:
    """Merge single numbers and [start, end) runs into sorted disjoint runs."""
    allr = sorted([(i, i + 1) for i in items] + [tuple(r) for r in runs if r[1] > r[0]])
    out: List[List[int]] = []
    for s, e in allr:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


@dataclass
class Machine:
    """A crashed machine. Physical page numbers (pfn) are in units of ``page_size``.

    ``populated`` pfns exist (content = explicit ``phys`` bytes, else the pattern);
    pages never populated read as absent in every dump. ``dmap_dump`` pfns are the
    pages the kernel registered as dumpable besides the kernel-map ones.
    """

    arch: str
    page_size: int = 4096
    dump_avail: List[Tuple[int, int]] = field(default_factory=list)
    kernbase: int = 0  # first VA of the minidump pmap section (header ``kernbase``)
    dmap_base: int = 0
    dmap_end: int = 0
    dmap_phys: int = 0
    pattern: str = "addr"
    mappings: List[Mapping] = field(default_factory=list)
    phys: Dict[int, bytearray] = field(default_factory=dict)
    populated: Set[int] = field(default_factory=set)
    populated_runs: List[Tuple[int, int]] = field(default_factory=list)
    dmap_dump: Set[int] = field(default_factory=set)
    dmap_dump_runs: List[Tuple[int, int]] = field(default_factory=list)
    nodump: Set[int] = field(default_factory=set)
    symbols: Dict[str, int] = field(default_factory=dict)
    pt_pool: List[int] = field(default_factory=lambda: [0, 0])  # [next pa, end pa)
    meta: Dict[str, object] = field(default_factory=dict)

    @property
    def spec(self) -> ArchSpec:
        return ARCHES[self.arch]

    # -- physical memory -------------------------------------------------
    def in_dump_avail(self, pa: int) -> bool:
        return any(s <= pa < e for s, e in self.dump_avail)

    def is_populated(self, pfn: int) -> bool:
        if pfn in self.populated:
            return True
        return any(s <= pfn < e for s, e in self.populated_runs)

    def populate(self, pa: int, size: int = 0) -> None:
        """Mark the pages of [pa, pa+size) (at least one page) as existing."""
        p = self.page_size
        for pfn in range(pa // p, (pa + max(size, 1) + p - 1) // p):
            self.populated.add(pfn)

    def page(self, pfn: int) -> bytes:
        """Contents of page ``pfn`` (explicit bytes or the pattern)."""
        b = self.phys.get(pfn)
        if b is not None:
            return bytes(b)
        return page_pattern(pfn * self.page_size, self.page_size, self.pattern)

    def write_pa(self, pa: int, data: bytes) -> None:
        """Store bytes at a physical address (populating the pages)."""
        p = self.page_size
        pos = 0
        while pos < len(data):
            pfn, off = divmod(pa + pos, p)
            buf = self.phys.get(pfn)
            if buf is None:
                buf = self.phys[pfn] = bytearray(self.page(pfn))
            self.populated.add(pfn)
            n = min(p - off, len(data) - pos)
            buf[off:off + n] = data[pos:pos + n]
            pos += n

    def read_pa(self, pa: int, n: int) -> Optional[bytes]:
        """Bytes at [pa, pa+n) or None if any page is not populated."""
        p = self.page_size
        out = bytearray()
        while n > 0:
            pfn, off = divmod(pa, p)
            if not self.is_populated(pfn):
                return None
            k = min(p - off, n)
            out += self.page(pfn)[off:off + k]
            pa, n = pa + k, n - k
        return bytes(out)

    def alloc_page(self) -> int:
        """Allocate a zeroed page from the page-table pool; returns its PA."""
        pa = self.pt_pool[0]
        if pa + self.page_size > self.pt_pool[1]:
            raise RuntimeError("page-table pool exhausted")
        self.pt_pool[0] += self.page_size
        self.phys[pa // self.page_size] = bytearray(self.page_size)
        self.populated.add(pa // self.page_size)
        return pa

    # -- virtual memory --------------------------------------------------
    def map(self, va: int, pa: int, size: int, prot: int = RW,
            populate: Sequence[int] = (0,)) -> Mapping:
        """Add a mapping; ``populate`` lists page indexes inside it to mark present
        (negative indexes count from the end; ``None`` element means all pages)."""
        m = Mapping(va, pa, size, prot)
        self.mappings.append(m)
        n = size // self.page_size
        for i in populate:
            if i is None:
                for k in range(n):
                    self.populated.add(pa // self.page_size + k)
            else:
                self.populated.add(pa // self.page_size + (i % n))
        return m

    def mapping_at(self, va: int) -> Optional[Mapping]:
        for m in self.mappings:
            if m.contains(va):
                return m
        return None

    def dmap_va(self, pa: int) -> int:
        return self.dmap_base + pa - self.dmap_phys

    def va_to_pa(self, va: int) -> Optional[int]:
        """Kernel-map translation first, then the direct map (if any)."""
        m = self.mapping_at(va)
        if m is not None:
            return m.pa + (va - m.va)
        if self.dmap_end and self.dmap_base <= va < self.dmap_end:
            return va - self.dmap_base + self.dmap_phys
        return None

    def write_va(self, va: int, data: bytes) -> None:
        """Write bytes at a kernel VA (through the mappings; may cross pages)."""
        pos = 0
        while pos < len(data):
            pa = self.va_to_pa(va + pos)
            if pa is None:
                raise ValueError("va %#x not mapped" % (va + pos))
            n = min(self.page_size - (pa % self.page_size), len(data) - pos)
            self.write_pa(pa, data[pos:pos + n])
            pos += n

    def read_va(self, va: int, n: int) -> Optional[bytes]:
        out = bytearray()
        while n > 0:
            pa = self.va_to_pa(va)
            if pa is None:
                return None
            k = min(self.page_size - pa % self.page_size, n)
            b = self.read_pa(pa, k)
            if b is None:
                return None
            out += b
            va, n = va + k, n - k
        return bytes(out)

    def kmap_end(self) -> int:
        """Highest end of a kernel-map mapping at or above ``kernbase``."""
        return max((m.va + m.size for m in self.mappings if m.va >= self.kernbase),
                   default=self.kernbase)

    def iter_pages(self, m: Mapping) -> Iterator[Tuple[int, int]]:
        """(va, pa) for each page of a mapping."""
        for off in range(0, m.size, self.page_size):
            yield m.va + off, m.pa + off

    def little(self) -> bool:
        return self.spec.little

    def put_word(self, va: int, value: int, size: int) -> None:
        """Store an integer in kernel byte order at a kernel VA."""
        self.write_va(va, value.to_bytes(size, "little" if self.little() else "big"))

    def populated_in(self, lo_pfn: int, hi_pfn: int) -> List[List[int]]:
        """Sorted [start, end) pfn runs of populated pages inside [lo_pfn, hi_pfn)."""
        items = [p for p in self.populated if lo_pfn <= p < hi_pfn]
        runs = [(max(s, lo_pfn), min(e, hi_pfn)) for s, e in self.populated_runs
                if s < hi_pfn and e > lo_pfn]
        return merge_runs(items, runs)
