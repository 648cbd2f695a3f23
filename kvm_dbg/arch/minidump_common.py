"""The part of every minidump backend that is not architecture knowledge:
header checks in libkvm's order, section layout, dump_avail, the physical
page index and the pmap section.  An architecture subclass supplies its
header table and translation rules as class attributes.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Tuple

from ..corefile import CoreFile
from ..elfkernel import ElfIdent
from ..errors import KvmError
from ..minidump import (
    HeaderFields,
    PhysIndex,
    Pmap,
    check_magic,
    layout,
    parse_dump_avail,
    parse_header,
)
from ..pagetable import FlatRoot, Level, PageTable, Untranslatable
from .base import Backend, KvmPage

#: (first VA, end VA, PA at first VA, pa -> offset, (pa, size) -> (offset, run))
DirectMap = Tuple[int, int, int, Callable[[int], Optional[int]],
                  Callable[[int, int], Optional[Tuple[int, int]]]]


class MinidumpBackend(Backend):
    """Shared minidump opening; see formats.md §2."""

    magic: bytes = b""
    magic_field = 24
    header_size = 0                 # the reader's struct size (api.md §14.2)
    fields: HeaderFields = ()       # (name, offset, code) common to all versions
    version_fields: dict = {}       # version -> extra fields
    max_version = 1
    version_word = "Expected"       # amd64/i386 print "expected"
    entsize = 8                     # pmap entry size
    bitmap_word_bits = 64
    fn = "_minidump_vatop"          # libkvm function name used in hard messages
    #: VM_PROT_* of a kernel-map leaf entry (a ``base.Prot``); None: no page walker
    prot: Optional[Callable[[int], int]] = None
    kernbase: int
    pt: PageTable

    def __init__(self, core: CoreFile, kernel: ElfIdent,
                 resolve: Callable[[str], Optional[int]]) -> None:
        super().__init__(core, kernel, resolve)
        if core.size < self.header_size:
            raise KvmError("cannot read dump header", path=core.path)
        check_magic(core, self.magic, self.magic_field)
        head = core.head(self.header_size)
        h = parse_header(head, self.fields, self.order)
        v = h["version"]
        if not self.version_ok(v):
            raise KvmError(f"wrong minidump version. {self.version_word} {self.max_version} "
                           f"got {v}", path=core.path)
        h.update(parse_header(head, self.version_fields.get(v, ()), self.order))
        h.setdefault("dumpavailsize", 0)
        self.hdr = h
        self.version = v
        self.format = f"minidump v{v}"
        self.page_size = self.choose_page_size(h)
        P = self.page_size
        for name in ("msgbufsize", "bitmapsize", "pmapsize", "dumpavailsize"):
            if h[name] > core.size:
                raise KvmError(f"minidump header field {name} ({h[name]}) larger than the file "
                               f"({core.size} bytes)", path=core.path)
        sec = layout(P, h["msgbufsize"], h["dumpavailsize"], h["bitmapsize"], h["pmapsize"])
        self.sections = sec
        if h["dumpavailsize"]:
            ranges: Sequence[Tuple[int, int]] = parse_dump_avail(
                core, sec.dump_avail, h["dumpavailsize"], self.order)
        else:
            ranges = [(0, h["bitmapsize"] * 8 * P)]
        self.ranges = ranges
        self.index = PhysIndex(core, P, ranges, sec.bitmap, h["bitmapsize"], sec.sparse,
                               self.order, self.bitmap_word_bits)
        self.pmap = Pmap(core, sec.pmap, h["pmapsize"], self.pmap_entsize(h), self.order)
        self.msgbuf_section = (sec.msgbuf, min(h["msgbufsize"], max(0, core.size - sec.msgbuf)))
        self.setup()

    # -- hooks -------------------------------------------------------------
    def version_ok(self, v: int) -> bool:
        return 1 <= v <= self.max_version

    def choose_page_size(self, h: dict) -> int:
        return 4096

    def pmap_entsize(self, h: dict) -> int:
        return self.entsize

    def setup(self) -> None:
        """Arch-specific initialisation after the common parts."""

    # -- physical access ---------------------------------------------------
    def phys(self, pa: int, size: int) -> Optional[bytes]:
        """``size`` bytes at a physical address inside one dumped page."""
        off = self.index.find(pa)
        if off is None or off + size > self.core.size:
            return None
        return self.core.mm[off:off + size]

    def phys_to_offset(self, va: int, pa: int, dmap: bool = False) -> Tuple[int, int]:
        """File offset of a physical address reached from ``va``, libkvm's errors."""
        off = self.index.find(pa)
        if off is None:
            if dmap:
                raise self.fail(va, f"{self.fn}: direct map address 0x{va:x} not in minidump")
            raise self.fail(va, f"{self.fn}: physical address 0x{pa:x} not in minidump")
        P = self.page_size
        avail = min(P - (pa & (P - 1)), self.core.size - off)
        return off, avail

    @property
    def direct_map(self) -> Optional[DirectMap]:
        """(first VA, end VA, PA at first VA, ``index.find``, ``index.span``) of
        the direct map, for the descriptor's fast path; None where there is none."""
        return None

    def dmap_run(self, va: int, pa: int, size: int) -> Tuple[int, int]:
        """File offset and file-contiguous length (up to ``size``) of a
        direct-map range: one pass over the bitmap."""
        hit = self.index.span(pa, size)
        if hit is None:
            return self.phys_to_offset(va, pa, dmap=True)     # libkvm's error
        return hit

    def not_minidumped(self, va: int) -> KvmError:
        return self.fail(va, f"{self.fn}: virtual address 0x{va:x} not minidumped")

    # -- the kernel map: a flat pmap section from kernbase -------------------
    def flat_pagetable(self, levels: Sequence[Level], order: str = "little") -> PageTable:
        """The page table rooted in the pmap section, entry 0 mapping kernbase."""
        return PageTable(FlatRoot(self.kernbase, self.pmap.get, self.pmap.count,
                                  self.pmap.get_many), levels,
                         order, self.phys, self.missing_table)

    def missing_table(self, pa: int) -> str:
        """libkvm's hard message for a page-table page not in the dump."""
        return ""

    def kmap_offset(self, va: int) -> Tuple[int, int]:
        """``kvatop`` through the kernel page table ``self.pt``, libkvm's errors."""
        try:
            pa, _span = self.pt.translate(va)
        except Untranslatable as u:
            raise self.fail(va, u.hard) from None
        return self.phys_to_offset(va, pa)

    def kmap_run(self, va: int, size: int) -> Tuple[int, int]:
        """``kvatop_run`` through ``self.pt``: the leaves that continue ``va``'s
        physically (at least to the end of its own leaf, so a superpage is
        one run), then the part of those pages that is contiguous in the file."""
        try:
            pa, span = self.pt.translate_run(va, size)
        except Untranslatable as u:
            raise self.fail(va, u.hard) from None
        hit = self.index.span(pa, span)
        if hit is None:
            return self.phys_to_offset(va, pa)          # libkvm's error
        return hit

    def kvatop(self, va: int) -> Tuple[int, int]:
        """Kernel map only (arm, i386); formats with a direct map override."""
        if va >= self.kernbase:
            return self.kmap_offset(va)
        raise self.not_minidumped(va)

    def kvatop_run(self, va: int, size: int) -> Tuple[int, int]:
        if va >= self.kernbase:
            return self.kmap_run(va, size)
        raise self.not_minidumped(va)

    def kmap_pages(self, dmapbase: Optional[int] = None) -> Iterator[KvmPage]:
        """A page record per kernel-map leaf; kp_dmap_vaddr is ``dmapbase + pa``
        (libkvm does not subtract dmapphys), or 0 without a ``dmapbase``."""
        prot, find, page = self.prot, self.index.find, self.page
        for va, pa, size, e in self.pt.leaves():
            yield page(pa, va, 0 if dmapbase is None else dmapbase + pa, prot(e), size,
                       find(pa))

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        return None if self.prot is None else self.kmap_pages()


class DirectMapMinidump(MinidumpBackend):
    """A minidump whose header describes a direct map [dmapbase, dmapend) of
    physical memory from dmapphys beside the kernel map (amd64, arm64, riscv).

    Subclasses set ``levels()`` (their kernel map) and ``prot``; ``dmap_first``
    says whether libkvm tries the direct map before the kernel map (arm64,
    riscv) or only below kernbase (amd64)."""

    dmap_first = True

    def setup(self) -> None:
        h = self.hdr
        self.kernbase, self.dmapbase, self.dmapend = h["kernbase"], h["dmapbase"], h["dmapend"]
        self.dmapphys = h.get("dmapphys", 0)
        self.pt = self.flat_pagetable(self.levels())

    def levels(self) -> Sequence[Level]:
        """The kernel map's levels below the pmap section."""
        raise NotImplementedError

    def kvatop(self, va: int) -> Tuple[int, int]:
        if self.dmapbase <= va < self.dmapend and (self.dmap_first or va < self.kernbase):
            pa = va - self.dmapbase + self.dmapphys
            off = self.index.find(pa)        # hot path: phys_to_offset inlined
            n = self.page_size - (pa & (self.page_size - 1))
            if off is not None and off + n <= self.core.size:
                return off, n
            return self.phys_to_offset(va, pa, dmap=True)
        if va >= self.kernbase:
            return self.kmap_offset(va)
        raise self.not_minidumped(va)

    def kvatop_run(self, va: int, size: int) -> Tuple[int, int]:
        if self.dmapbase <= va < self.dmapend and (self.dmap_first or va < self.kernbase):
            return self.dmap_run(va, va - self.dmapbase + self.dmapphys,
                                 min(size, self.dmapend - va))
        if va >= self.kernbase:
            return self.kmap_run(va, size)
        raise self.not_minidumped(va)

    @property
    def direct_map(self) -> Optional[DirectMap]:
        if not self.dmap_first and self.kernbase < self.dmapend:
            return None          # the kernel map wins over part of the direct map
        return (self.dmapbase, self.dmapend, self.dmapphys, self.index.find, self.index.span)

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        return self.kmap_pages(self.dmapbase)
