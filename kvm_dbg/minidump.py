"""What every minidump shares: header decoding, section layout, dump_avail,
and the bitmap rank index that maps a physical page to its file offset.

Untrusted header numbers are checked here, once, against the file size;
the architecture modules then work with the parsed ``Minidump`` object.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from itertools import accumulate
from typing import Dict, List, Optional, Sequence, Tuple

from .corefile import CoreFile
from .errors import KvmError

MAGIC_PREFIX = b"minidump"

try:
    _popcount = int.bit_count  # Python >= 3.10
except AttributeError:  # pragma: no cover - Python 3.9 (macOS lldb)
    def _popcount(x: int) -> int:
        return bin(x).count("1")

# Field kinds used by header tables: name -> (offset, struct code)
HeaderFields = Sequence[Tuple[str, int, str]]

_BLOCK = 64          # bytes per rank block (512 bits, a multiple of any word)
_MAX_RANGES = 1024   # dump_avail pairs we accept; the kernel's array is far smaller


def round_up(n: int, p: int) -> int:
    return (n + p - 1) // p * p


def parse_header(data: bytes, fields: HeaderFields, order: str) -> Dict[str, int]:
    """Decode header integers from a field table ``(name, offset, code)``."""
    e = "<" if order == "little" else ">"
    return {name: struct.unpack_from(e + code, data, off)[0] for name, off, code in fields}


@dataclass
class Sections:
    """File offsets of a minidump's sections (formats.md §2.1)."""

    msgbuf: int
    dump_avail: int
    bitmap: int
    pmap: int
    sparse: int


def layout(page: int, msgbufsize: int, dumpavailsize: int, bitmapsize: int,
           pmapsize: int) -> Sections:
    msg = page
    da = msg + round_up(msgbufsize, page)
    bm = da + round_up(dumpavailsize, page)
    pm = bm + round_up(bitmapsize, page)
    sp = pm + round_up(pmapsize, page)
    return Sections(msg, da, bm, pm, sp)


def check_magic(core: CoreFile, magic: bytes, field: int) -> None:
    """libkvm's strncmp over the whole magic field."""
    got = core.head(field)
    if len(got) < field or got.split(b"\0", 1)[0] != magic:
        raise KvmError("not a minidump for this platform", path=core.path)


def parse_dump_avail(core: CoreFile, off: int, size: int, order: str) -> List[Tuple[int, int]]:
    """[start, end) pairs from the dump_avail section (64-bit entries)."""
    if size <= 0:
        return []
    if not core.has(off, size):
        raise KvmError(f"cannot read {size} bytes for dump_avail", path=core.path)
    e = "<" if order == "little" else ">"
    n = min(size // 16, _MAX_RANGES)
    out: List[Tuple[int, int]] = []
    for start, end in struct.iter_unpack(e + "QQ", core.mm[off:off + n * 16]):
        if end == 0:
            break
        if end < start:
            raise KvmError(f"corrupt dump_avail entry [0x{start:x}, 0x{end:x})", path=core.path)
        out.append((start, end))
    return out


class PhysIndex:
    """Physical address -> file offset for a minidump's sparse page data.

    Bit *i* of the bitmap says whether page-index *i* is in the dump; its
    data lives at ``sparse + rank(i) * page``.  ``rank`` is O(1): a
    cumulative popcount per 64-byte block plus one popcount of the partial
    block, all on slices of the memory map (no Python loop at read time).
    """

    def __init__(self, core: CoreFile, page: int, ranges: Sequence[Tuple[int, int]],
                 bitmap_off: int, bitmap_size: int, sparse_off: int,
                 order: str = "little", word_bits: int = 64) -> None:
        if bitmap_size <= 0:
            raise KvmError("minidump has an empty bitmap", path=core.path)
        if not core.has(bitmap_off, bitmap_size):
            raise KvmError(f"cannot read {bitmap_size} bytes for bitmap", path=core.path)
        self.core = core
        self.mm = core.mm
        self.page = page
        self.pshift = page.bit_length() - 1
        self.bitmap_off = bitmap_off
        self.nbits = bitmap_size * 8
        self.sparse = sparse_off
        self.order = order
        self.word_bytes = word_bits // 8
        # Page-number ranges: (first page, page count, first bit).
        self.ranges: List[Tuple[int, int, int]] = []
        adj = 0
        for start, end in ranges:
            first = start >> self.pshift
            count = ((end + page - 1) >> self.pshift) - first
            self.ranges.append((first, count, adj))
            adj += count
        # Cumulative popcount before each block.
        mm, base = self.mm, bitmap_off
        counts = (_popcount(int.from_bytes(mm[base + i:base + i + _BLOCK], "little"))
                  for i in range(0, bitmap_size, _BLOCK))
        self.cum = array("Q", [0])
        self.cum.extend(accumulate(counts))
        self.npages = self.cum[-1]

    def bit_of(self, pa: int) -> Optional[int]:
        """The bitmap index of a physical address, or None outside dump_avail."""
        pn = pa >> self.pshift
        if not self.ranges:
            return pn
        for first, count, adj in self.ranges:
            if first <= pn < first + count:
                return pn - first + adj
        return None

    def pa_of(self, bit: int) -> Optional[int]:
        """Inverse of ``bit_of``."""
        if not self.ranges:
            return bit << self.pshift
        for first, count, adj in self.ranges:
            if adj <= bit < adj + count:
                return (first + bit - adj) << self.pshift
        return None

    def _word(self, bit: int) -> Tuple[int, int]:
        """(byte offset of the word holding ``bit``, that word's value)."""
        wb = self.word_bytes
        ws = self.bitmap_off + (bit >> 3) // wb * wb
        return ws, int.from_bytes(self.mm[ws:ws + wb], self.order)

    def is_set(self, bit: int) -> bool:
        if not 0 <= bit < self.nbits:
            return False
        _, word = self._word(bit)
        return bool(word >> (bit % (self.word_bytes * 8)) & 1)

    def offset_of_bit(self, bit: int) -> Optional[int]:
        """File offset of the page for a set bit; None if clear or past EOF."""
        if not 0 <= bit < self.nbits:
            return None
        ws, word = self._word(bit)
        b = bit % (self.word_bytes * 8)
        if not word >> b & 1:
            return None
        blk = (bit >> 3) // _BLOCK
        bs = self.bitmap_off + blk * _BLOCK
        rank = self.cum[blk] + _popcount(word & ((1 << b) - 1))
        if ws > bs:
            rank += _popcount(int.from_bytes(self.mm[bs:ws], "little"))
        off = self.sparse + rank * self.page
        if off >= self.core.size:
            return None          # truncated dump: the page never made it to disk
        return off

    def find(self, pa: int) -> Optional[int]:
        """libkvm's pt_find: file offset of the page holding ``pa`` (plus the
        offset within the page), or None when the page is not in the dump."""
        bit = self.bit_of(pa)
        if bit is None:
            return None
        off = self.offset_of_bit(bit)
        if off is None:
            return None
        return off + (pa & (self.page - 1))

    def set_bits(self):
        """Every set bit index in ascending order (for page walks)."""
        mm, base = self.mm, self.bitmap_off
        nbytes = self.nbits // 8
        step = 4096
        for chunk in range(0, nbytes, step):
            block = mm[base + chunk:base + min(nbytes, chunk + step)]
            if not any(block):
                continue
            for wi in range(0, len(block), self.word_bytes):
                w = int.from_bytes(block[wi:wi + self.word_bytes], self.order)
                while w:
                    low = w & -w
                    yield (chunk + wi) * 8 + low.bit_length() - 1
                    w ^= low


class Pmap:
    """The minidump's page-table section: an array of fixed-size entries."""

    def __init__(self, core: CoreFile, off: int, size: int, entsize: int, order: str) -> None:
        if size < 0 or not core.has(off, size):
            raise KvmError(f"cannot read {size} bytes from offset {off} for page map",
                           path=core.path)
        self.mm = core.mm
        self.off = off
        self.count = size // entsize
        self.fmt = ("<" if order == "little" else ">") + {4: "I", 8: "Q"}[entsize]
        self.entsize = entsize

    def get(self, idx: int) -> Optional[int]:
        """Entry ``idx``, or None when out of bounds (bounded by pmapsize)."""
        if 0 <= idx < self.count:
            return struct.unpack_from(self.fmt, self.mm, self.off + idx * self.entsize)[0]
        return None
