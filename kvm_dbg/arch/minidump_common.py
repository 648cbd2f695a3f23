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
from .base import Backend, KvmPage


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
    def direct_map(self) -> Optional[Tuple[int, int, int, Callable[[int], Optional[int]]]]:
        """(first VA, end VA, PA at first VA, pa -> file offset) of the direct
        map, for the descriptor's fast path; None where there is none."""
        return None

    def dmap_run(self, va: int, pa: int, size: int) -> Tuple[int, int]:
        """File offset and contiguous length of a direct-map range."""
        off, avail = self.phys_to_offset(va, pa, dmap=True)
        if size > avail:
            avail = max(avail, self.index.run(pa, size))
        return off, avail

    def not_minidumped(self, va: int) -> KvmError:
        return self.fail(va, f"{self.fn}: virtual address 0x{va:x} not minidumped")

    def offset_or_none(self, pa: int) -> Optional[int]:
        off = self.index.find(pa)
        return off

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        return None
