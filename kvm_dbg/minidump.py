"""What every minidump shares: header decoding, section layout, dump_avail,
and the bitmap rank index that maps a physical page to its file offset.

Untrusted header numbers are checked here, once, against the file size;
the architecture modules then work with the parsed ``Minidump`` object.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

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

_MAX_RANGES = 1024   # dump_avail pairs we accept; the kernel's array is far smaller
_BLOCK_SHIFT = 10
_BLOCK = 1 << _BLOCK_SHIFT   # bitmap words per lazily built rank block


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
        found = got.split(b"\0", 1)[0][:40].decode("latin-1")
        raise KvmError("not a minidump for this platform", path=core.path,
                       hard=f"core magic {found!r}, kernel needs {magic.decode()!r}")


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
    cumulative popcount per bitmap word plus one popcount of the partial
    word (no Python loop over pages at read time).  The per-word counts are
    built lazily, one block of ``_BLOCK`` words at a time, on top of block
    totals counted in C at open: opening costs O(bitmap / 8 KiB) whatever
    size the header claims, and a read pays only for the blocks it touches
    (a block covers 256 MiB of 4 KiB pages with 64-bit words).

    ``find`` maps one address; ``span`` also measures how far the file stays
    contiguous from there (consecutive set bits), in one pass (bulk reads).
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
        self.size = core.size
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
        wb = self.word_bytes
        nwords = bitmap_size // wb
        self.nwords = nwords
        self.nbits = nwords * wb * 8
        self._wfmt = ("<" if order == "little" else ">") + {4: "I", 8: "Q"}[wb]
        self._wcode = next(c for c in "ILQ" if array(c).itemsize == wb)
        self._swap = order != sys.byteorder
        # Set bits before each block (one big-integer popcount per block).
        step = _BLOCK * wb
        mm, end = core.mm, bitmap_off + nwords * wb
        totals = array("Q", [0])
        for pos in range(bitmap_off, end, step):
            totals.append(totals[-1] + _popcount(int.from_bytes(mm[pos:min(pos + step, end)],
                                                                "little")))
        self._totals = totals
        self._blocks: List[Optional[array]] = [None] * (len(totals) - 1)
        self.npages = totals[-1]
        self._wshift = (wb * 8).bit_length() - 1
        self.find, self.span = self._make_lookups()

    def _block(self, bi: int) -> array:
        """Cumulative popcount before each word of block ``bi`` (built once)."""
        blk = self._blocks[bi]
        if blk is None:
            wb = self.word_bytes
            lo = self.bitmap_off + bi * _BLOCK * wb
            hi = min(lo + _BLOCK * wb, self.bitmap_off + self.nwords * wb)
            words = array(self._wcode)
            words.frombytes(self.mm[lo:hi])
            if self._swap:
                words.byteswap()
            blk = array("Q", accumulate(map(_popcount, words), initial=self._totals[bi]))
            self._blocks[bi] = blk
        return blk

    @property
    def cum(self) -> array:
        """Set bits before each bitmap word (the whole array; for inspection)."""
        out = array("Q")
        for bi in range(len(self._blocks)):
            out.extend(self._block(bi)[:-1])
        out.append(self.npages)
        return out

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

    def is_set(self, bit: int) -> bool:
        if not 0 <= bit < self.nbits:
            return False
        sh = self._wshift
        w = struct.unpack_from(self._wfmt, self.mm, self.bitmap_off + (bit >> sh << sh >> 3))[0]
        return bool(w >> (bit & ((1 << sh) - 1)) & 1)

    def _make_lookups(self) -> Tuple[Callable[[int], Optional[int]],
                                     Callable[[int, int], Optional[Tuple[int, int]]]]:
        """Build ``find`` and ``span`` as closures over locals: they are the hot
        path of every uncached read, so no attribute lookups and no helper calls."""
        unpack = struct.Struct(self._wfmt).unpack_from
        mm, base, sparse, size = self.mm, self.bitmap_off, self.sparse, self.size
        blocks, block = self._blocks, self._block
        bshift, bmask_w = _BLOCK_SHIFT, _BLOCK - 1
        page, pshift, nbits = self.page, self.pshift, self.nbits
        sh = self._wshift
        wbits = 1 << sh
        wbyte_shift = sh - 3
        wbytes = 1 << wbyte_shift
        bmask = (1 << sh) - 1
        pmask = page - 1
        popcount = _popcount
        # (first page, end page, bit = page - delta), ends clipped to the bitmap;
        # ranges that continue each other in both pages and bits are one.
        merged: List[Tuple[int, int, int]] = []
        for first, count, adj in self.ranges or [(0, nbits, 0)]:
            end, delta = min(first + count, first - adj + nbits), first - adj
            if merged and merged[-1][1] == first and merged[-1][2] == delta:
                merged[-1] = (merged[-1][0], end, delta)
            elif first < end:
                merged.append((first, end, delta))
        # The largest range first: most addresses need one comparison.
        ranges = tuple(sorted(merged, key=lambda r: r[0] - r[1]))
        self._merged = ranges

        def find(pa: int) -> Optional[int]:
            pn = pa >> pshift
            for first, end, delta in ranges:
                if first <= pn < end:
                    bit = pn - delta
                    break
            else:
                return None
            wi = bit >> sh
            word = unpack(mm, base + (wi << wbyte_shift))[0]
            b = bit & bmask
            if not word >> b & 1:
                return None
            blk = blocks[wi >> bshift] or block(wi >> bshift)
            off = sparse + (blk[wi & bmask_w] + popcount(word & ((1 << b) - 1))) * page
            if off >= size:
                return None          # truncated dump: the page never made it to disk
            return off + (pa & pmask)

        def span(pa: int, want: int) -> Optional[Tuple[int, int]]:
            pn = pa >> pshift
            for first, end, delta in ranges:
                if first <= pn < end:
                    bit = pn - delta
                    break
            else:
                return None
            wi = bit >> sh
            word = unpack(mm, base + (wi << wbyte_shift))[0]
            b = bit & bmask
            if not word >> b & 1:
                return None
            blk = blocks[wi >> bshift] or block(wi >> bshift)
            off = sparse + (blk[wi & bmask_w] + popcount(word & ((1 << b) - 1))) * page
            if off >= size:
                return None          # truncated dump: the page never made it to disk
            po = pa & pmask
            # Pages wanted after pa's, within its dump_avail range: set bits
            # after ``bit`` are consecutive pages of the file.
            more = (po + want - 1) >> pshift
            if more >= end - pn:
                more = end - pn - 1
            need = (2 << more) - 1
            if word >> b & need == need:     # all of them in this word (the usual case)
                n = page - po + more * page
                off += po
                if off + n > size:
                    n = size - off
                return off, n if n < want else want
            rest = word >> b >> 1            # the bits after ``bit`` in this word
            got = (rest ^ (rest + 1)).bit_length() - 1       # its trailing set bits
            if got >= wbits - 1 - b:
                # The run reaches the next word: skip whole words of ones at
                # C speed, then count into the first word that is not.
                got = wbits - 1 - b
                pos = base + ((wi + 1) << wbyte_shift)
                left = ((more - got) >> sh) + 1 << wbyte_shift     # bytes of words to look at
                while left > 0:
                    seg = mm[pos:pos + (left if left < 65536 else 65536)]
                    full = (len(seg) - len(seg.lstrip(b"\xff"))) >> wbyte_shift << wbyte_shift
                    got += full << 3
                    pos += full
                    left -= full
                    if full < 65536:
                        break                # a word that is not all ones, or the end
                if got < more and pos + wbytes <= size:
                    rest = unpack(mm, pos)[0]
                    got += (rest ^ (rest + 1)).bit_length() - 1
            n = page - po + (more if got > more else got) * page
            off += po
            if off + n > size:
                n = size - off               # the file ends inside the run
            return off, n if n < want else want

        find.__doc__ = ("libkvm's pt_find: file offset of the byte at physical address "
                        "``pa``, or None when its page is not in the dump.")
        span.__doc__ = ("(file offset of ``pa``, bytes from there that lie contiguously "
                        "in the file: up to ``want``, at least to the end of its page or of "
                        "the file), or None when pa's page is not in the dump.")
        return find, span

    def back(self, pa: int, limit: int) -> int:
        """How many pages just before pa's page continue into it, in memory
        and in the file (set bits of the same dump_avail range), at most
        ``limit``; 0 when pa's page is not in the dump.  With ``span`` this
        gives the whole run around an address (bulk reads' chunk runs)."""
        pn = pa >> self.pshift
        hit = next((r for r in self._merged if r[0] <= pn < r[1]), None)
        if hit is None:
            return 0
        first, bit = hit[0], pn - hit[2]
        if limit > pn - first:
            limit = pn - first
        if limit <= 0 or not self.is_set(bit):
            return 0
        sh = self._wshift
        wbits, wb = 1 << sh, self.word_bytes
        b = bit & (wbits - 1)
        pos = self.bitmap_off + (bit >> sh) * wb
        word = struct.unpack_from(self._wfmt, self.mm, pos)[0]
        zeros = ~word & ((1 << b) - 1)           # clear bits below ``bit`` in its word
        if zeros:
            return min(b - zeros.bit_length(), limit)
        got = b
        if got < limit:                          # whole words of ones before it, at C speed
            start = max(self.bitmap_off, pos - ((limit - got + wbits - 1) >> sh) * wb)
            seg = self.mm[start:pos]
            full = (len(seg) - len(seg.rstrip(b"\xff"))) // wb
            got += full * wbits
            pos -= full * wb
            if got < limit and pos - wb >= self.bitmap_off:
                word = struct.unpack_from(self._wfmt, self.mm, pos - wb)[0]
                got += wbits - (~word & ((1 << wbits) - 1)).bit_length()
        return min(got, limit)

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

    def get_many(self, idx: int, n: int) -> Tuple[int, ...]:
        """Up to ``n`` entries from ``idx`` (fewer at the end of the section)."""
        n = min(n, self.count - idx)
        if idx < 0 or n <= 0:
            return ()
        return struct.unpack_from(self.fmt[0] + str(n) + self.fmt[1], self.mm,
                                  self.off + idx * self.entsize)

    def nonzero(self) -> Iterator[Tuple[int, int]]:
        """(index, entry) of every non-zero entry, skipping zero runs in bulk
        (a hostile or sparse pmap is mostly zeros: walks must not crawl it)."""
        chunk = 1 << 16
        zero = bytes(chunk)
        total = self.count * self.entsize
        fmt = self.fmt
        for pos in range(0, total, chunk):
            n = min(chunk, total - pos)
            block = self.mm[self.off + pos:self.off + pos + n]
            if block == zero[:n]:
                continue
            base = pos // self.entsize
            for i, (e,) in enumerate(struct.iter_unpack(fmt, block)):
                if e:
                    yield base + i, e
