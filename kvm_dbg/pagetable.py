"""One generic page-table walker, driven by per-architecture level tables.

An architecture describes its page tables as data: a root (a flat array
from a minidump's pmap section, indexed from a base address, or a table
page in physical memory) and a list of ``Level`` records below it, each
with its index bits, entry size and a classifier telling invalid / next
table / leaf.  ``PageTable.translate`` and ``PageTable.leaves`` are the only
walkers; they are shared by every format and architecture.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Tuple

INVALID, TABLE, LEAF = 0, 1, 2

_MAX_LEAVES_PER_TABLE = 1 << 20


@dataclass(frozen=True)
class Level:
    """One level of a page table.

    ``shift``: log2 of the bytes one entry maps; ``bits``: index width
    (ignored for a flat root); ``classify(entry)`` -> INVALID/TABLE/LEAF;
    ``frame(entry)`` -> physical address of the next table or of the leaf
    (aligned to the entry's span); ``invalid``: libkvm's hard message for an
    invalid entry ('' when libkvm reports only the soft one).
    """

    shift: int
    bits: int
    classify: Callable[[int], int]
    frame: Callable[[int], int]
    invalid: str = ""
    entsize: int = 8
    #: bytes a leaf entry maps when it depends on the entry (arm 64 KiB large
    #: pages in a 4 KiB-indexed table); None: ``1 << shift``
    size: Optional[Callable[[int], int]] = None

    def span(self, e: int) -> int:
        return (1 << self.shift) if self.size is None else self.size(e)


def leaf_if(valid: int) -> Callable[[int], int]:
    """Classifier of a last level: LEAF when a ``valid`` bit is set."""
    return lambda e: LEAF if e & valid else INVALID


def table_if(valid: int) -> Callable[[int], int]:
    """Classifier of a level without superpages: TABLE when a ``valid`` bit is set."""
    return lambda e: TABLE if e & valid else INVALID


def table_or_leaf(valid: int, big: int) -> Callable[[int], int]:
    """Classifier of a directory level: INVALID without ``valid``, LEAF (a
    superpage) with ``big``, else TABLE."""
    return lambda e: INVALID if not e & valid else (LEAF if e & big else TABLE)


def frame_mask(mask: int, big: int = 0, big_mask: int = 0) -> Callable[[int], int]:
    """Frame of an entry: ``e & big_mask`` when a ``big`` bit is set, else ``e & mask``."""
    if not big:
        return lambda e: e & mask
    return lambda e: (e & big_mask) if e & big else (e & mask)


class Untranslatable(Exception):
    """Raised inside the walker; carries libkvm's hard message (may be '')."""

    def __init__(self, hard: str = "") -> None:
        super().__init__(hard)
        self.hard = hard


@dataclass(frozen=True)
class FlatRoot:
    """A minidump pmap section: entry i maps ``base + (i << level.shift)``."""

    base: int
    get: Callable[[int], Optional[int]]   # index -> entry, None if out of bounds
    count: int
    #: (index, n) -> up to n entries from index (bounded by count); None: use ``get``
    get_many: Optional[Callable[[int, int], Sequence[int]]] = None


@dataclass(frozen=True)
class TableRoot:
    """A table page at a physical address (full dumps, amd64 PT pages)."""

    pa: int


class PageTable:
    """Translate virtual addresses through a root and its levels."""

    def __init__(self, root, levels: Sequence[Level], order: str,
                 read_phys: Callable[[int, int], Optional[bytes]],
                 missing_table: Callable[[int], str] = lambda pa: "") -> None:
        self.root = root
        self.levels = tuple(levels)
        self.order = order
        self.read_phys = read_phys
        self.missing_table = missing_table
        self._fmt = {4: ("<I" if order == "little" else ">I"),
                     8: ("<Q" if order == "little" else ">Q")}

    def _entry(self, table_pa: int, idx: int, lv: Level) -> int:
        raw = self.read_phys(table_pa + idx * lv.entsize, lv.entsize)
        if raw is None or len(raw) < lv.entsize:
            raise Untranslatable(self.missing_table(table_pa))
        return struct.unpack(self._fmt[lv.entsize], raw)[0]

    def _walk(self, va: int) -> Tuple[int, int, Optional[int]]:
        """(leaf entry, its level's index, physical address of the table holding
        it or None for a flat root) of ``va``; raises Untranslatable."""
        root = self.root
        levels = self.levels
        lv = levels[0]
        if isinstance(root, FlatRoot):
            if va < root.base:
                raise Untranslatable()
            e = root.get((va - root.base) >> lv.shift)
            if e is None:
                raise Untranslatable()
            table = None
        else:
            table = root.pa
            e = self._entry(table, (va >> lv.shift) & ((1 << lv.bits) - 1), lv)
        i = 0
        while True:
            kind = lv.classify(e)
            if kind == LEAF:
                return e, i, table
            if kind != TABLE or i + 1 >= len(levels):
                raise Untranslatable(lv.invalid)
            i += 1
            nxt = levels[i]
            table = lv.frame(e)
            e = self._entry(table, (va >> nxt.shift) & ((1 << nxt.bits) - 1), nxt)
            lv = nxt

    def translate(self, va: int) -> Tuple[int, int]:
        """(physical address of ``va``, bytes to the end of its leaf)."""
        e, i, _table = self._walk(va)
        lv = self.levels[i]
        span = lv.span(e)
        return lv.frame(e) + (va & (span - 1)), span - (va & (span - 1))

    def translate_run(self, va: int, size: int) -> Tuple[int, int]:
        """(physical address of ``va``, bytes from ``va`` that map physically
        contiguous memory): ``va``'s leaf, extended while the following leaves
        continue it, until at least ``size`` bytes (or the first that does not).

        Raises Untranslatable for ``va`` itself only.  Following entries of the
        same table are read in one batch; a new table costs one walk."""
        e, i, table = self._walk(va)
        levels = self.levels
        lv = levels[i]
        span = lv.span(e)
        pa = lv.frame(e) + (va & (span - 1))
        n = span - (va & (span - 1))
        top0 = levels[0].shift + levels[0].bits
        flat = isinstance(self.root, FlatRoot)
        descend = False
        try:
            while n < size:
                nva = va + n
                ents = () if descend else self._following(nva, lv, table, size - n)
                if not ents:              # a table ends or starts: walk from the root
                    if not flat and nva >> top0 != va >> top0:
                        break             # past the root table's reach
                    e, i, table = self._walk(nva)
                    lv = levels[i]
                    ents = (e,)
                descend = False
                step = 1 << lv.shift
                ev = nva
                for e in ents:
                    if ev >= va + n:      # not inside a large page already counted
                        kind = lv.classify(e)
                        if kind != LEAF:
                            if kind != TABLE:
                                return pa, n
                            descend = True    # smaller leaves after a superpage
                            break
                        span = lv.span(e)
                        o = ev & (span - 1)
                        if lv.frame(e) + o != pa + n:
                            return pa, n
                        n += span - o
                    ev += step
        except Untranslatable:
            pass
        return pa, n

    def _following(self, va: int, lv: Level, table: Optional[int], size: int) -> Sequence[int]:
        """Entries of ``lv`` from ``va``'s on, in the table of the previous
        entry, enough to map ``size`` bytes; empty when that table ends there."""
        count = (size + (1 << lv.shift) - 1) >> lv.shift
        if table is None:
            root = self.root
            idx = (va - root.base) >> lv.shift
            count = min(count, root.count - idx)
            if count <= 0:
                return ()
            if root.get_many is not None:
                return root.get_many(idx, count)
            out = []
            for j in range(idx, idx + count):
                e = root.get(j)
                if e is None:
                    break
                out.append(e)
            return out
        top = lv.shift + lv.bits
        if va >> top != (va - 1) >> top:
            return ()
        j = (va >> lv.shift) & ((1 << lv.bits) - 1)
        pa = table + j * lv.entsize
        count = min(count, (1 << lv.bits) - j, (4096 - (pa & 4095)) // lv.entsize)
        raw = self.read_phys(pa, count * lv.entsize)
        if raw is None or len(raw) < count * lv.entsize:
            return ()
        fmt = self._fmt[lv.entsize]
        return struct.unpack(fmt[0] + fmt[1] * count, raw)

    def leaves(self) -> Iterator[Tuple[int, int, int, int]]:
        """Every valid leaf as (va, pa, size, entry), ascending VA.

        Hostile tables cost at most one scan per distinct table page: a table
        that held no leaf is remembered and skipped when referenced again."""
        root = self.root
        lv = self.levels[0]
        barren: set = set()
        if isinstance(root, FlatRoot):
            # A minidump pmap offers a bulk scan of its non-zero entries (a zero
            # entry is invalid at every level of every architecture).
            scan = getattr(getattr(root.get, "__self__", None), "nonzero", None)
            if scan is not None:
                for idx, e in scan():
                    yield from self._descend(e, 0, root.base + (idx << lv.shift), barren)
                return
            for idx in range(root.count):
                e = root.get(idx)
                if e is None:
                    break
                if e:
                    yield from self._descend(e, 0, root.base + (idx << lv.shift), barren)
        else:
            yield from self._table(root.pa, 0, 0, barren)

    def _table(self, pa: int, li: int, va_base: int, barren: set):
        if (pa, li) in barren:
            return
        lv = self.levels[li]
        n = min(1 << lv.bits, _MAX_LEAVES_PER_TABLE)
        raw = self.read_phys(pa, n * lv.entsize)
        found = False
        if raw is not None and len(raw) >= n * lv.entsize and raw.count(0) != len(raw):
            fmt = self._fmt[lv.entsize][0] + self._fmt[lv.entsize][1] * n
            for idx, e in enumerate(struct.unpack(fmt, raw)):
                if e:
                    for leaf in self._descend(e, li, va_base | (idx << lv.shift), barren):
                        found = True
                        yield leaf
        if not found:
            barren.add((pa, li))

    def _descend(self, e: int, li: int, va: int, barren: set):
        lv = self.levels[li]
        kind = lv.classify(e)
        if kind == LEAF:
            yield va, lv.frame(e), lv.span(e), e
        elif kind == TABLE and li + 1 < len(self.levels):
            yield from self._table(lv.frame(e), li + 1, va, barren)


def sign_extend(va: int, bits: int) -> int:
    """Canonical form of a ``bits``-bit virtual address (amd64, arm64, riscv)."""
    if va & (1 << (bits - 1)):
        return va | ((1 << 64) - (1 << bits))
    return va
