"""Bulk reads (issue #14): a read spanning many pages is served in runs of
file-contiguous pages (one slice each), from a page-table/bitmap pass or the
descriptor's page cache.  Every read here must return exactly what a
page-by-page read through ``backend.kvatop`` (libkvm's loop: one translation
and one copy per page) returns, fail with the same message at the same
address, and agree with the generator's model of memory where it knows it.

The address sets cover contiguous and non-contiguous runs, holes and unmapped
pages inside a read, dump_avail gaps, truncated files (EOF inside a run and
inside a page), direct-map and kernel-map reads of minidumps, ELF full dumps
and segment-translated ELF dumps, for every architecture the generator builds
and for the real dumps.
"""

from __future__ import annotations

import itertools
import random
import struct
from array import array

import arch_checks as ck
import pytest
from fixturegen import CASES, arm, build_dmap_runs, mips, ppc64, riscv
from realdumps import REAL_DUMPS, real_dump_factory  # noqa: F401 (fixture)

import kvm_dbg
from kvm_dbg import KvmError
from kvm_dbg.kvm import _CHUNK as CHUNK
from kvm_dbg.kvm import _CHUNK_SHIFT as CHUNK_SHIFT
from kvm_dbg.minidump import PhysIndex
from kvm_dbg.pagetable import (
    INVALID,
    LEAF,
    TABLE,
    FlatRoot,
    Level,
    PageTable,
    TableRoot,
    Untranslatable,
)

P = 4096
X86_TRUNCATED = [
    ("amd64", "minidump", 3, {"truncate_pages": 3}),
    ("amd64", "minidump", 3, {"truncate": -(3 * P + 100)}),
    ("amd64", "minidump", 1, {"truncate_pages": 2}),
    ("amd64", "elf", 0, {"truncate_pages": 3}),
    ("amd64", "elf", 0, {"truncate": -(2 * P + 1000)}),
    ("i386", "minidump", 2, {"pae": True, "truncate_pages": 2}),
    ("i386", "elf", 0, {"pae": False, "layout": "fbsd12", "truncate_pages": 2}),
    ("arm64", "minidump", 3, {"page_flag": 1, "truncate": -(P + 512)}),
    ("arm64", "minidump", 2, {"truncate_pages": 3}),
]
X86_VARIANTS = [
    ("amd64", "minidump", 3, {"holes": True, "gap_page": True}),
    ("amd64", "minidump", 3, {"real_kva": True}),
    ("i386", "minidump", 2, {"pae": False, "holes": True}),
    ("arm64", "minidump", 2, {"holes": True}),
]
OTHERS = arm.CASES + mips.CASES + riscv.CASES + ppc64.CASES + ppc64.ELF_CASES
ALL_CASES = CASES + X86_TRUNCATED + X86_VARIANTS + OTHERS + [
    ("arm", "minidump", 2, {"mmu": "v4", "endian": "le", "truncate_pages": 3}),
    ("arm", "elf", 0, {"mmu": "v6", "endian": "le", "truncate_pages": 3}),
    ("mips", "minidump", 2, {"abi": "n64", "truncate_pages": 2}),
    ("riscv", "minidump", 2, {"truncate_pages": 2}),
    ("powerpc64", "minidump", 1, {"mmu": "mmu_radix", "endian": "le", "truncate_pages": 2}),
    ("powerpc64", "elf", 0, {"endian": "le", "truncate_pages": 2}),
]
SIZES = (8, P + 1, 2 * P, 3 * P - 5, 5 * P, 17 * P + 3)


# -- the reference: libkvm's loop, one page at a time --------------------------

def reference(kd, va: int, size: int):
    """(bytes, str of the error or None, its address) read page by page."""
    out = bytearray()
    mm = kd.core.mm
    while size > 0:
        o = va & (P - 1)
        try:
            off, n = kd.backend.kvatop(va)
        except KvmError as e:
            return bytes(out), str(e), e.address
        n = min(n, P - o)
        if n <= 0:
            return bytes(out), _eof(va), va
        take = min(n, size)
        out += mm[off:off + take]
        va += take
        size -= take
        if size and va & (P - 1):
            return bytes(out), _eof(va), va
    return bytes(out), None, None


def _eof(va: int) -> str:
    return str(KvmError(f"invalid address (0x{va:x})", hard="beyond end of core file"))


def check_read(kd, va: int, size: int, model=None, stats=None) -> None:
    want, err, err_va = reference(kd, va, size)
    got = kd.read_partial(va, size)
    assert got == want, (hex(va), size, len(got), len(want))
    if err is None:
        assert kd.read(va, size) == want
    else:
        with pytest.raises(KvmError) as ei:
            kd.read(va, size)
        assert (str(ei.value), ei.value.address) == (err, err_va), (hex(va), size)
    if model is not None and want:
        known = model.read_va(va, len(want))
        if known is not None:
            assert want == known, (hex(va), size)
            if stats is not None:
                stats["model"] += 1
    if stats is not None:
        stats["full" if err is None else ("partial" if want else "none")] += 1


# -- addresses worth reading ---------------------------------------------------

def interesting(kd, fx=None, limit: int = 120, seed: int = 0) -> list:
    """VAs near probes, holes, partial reads, page-walk records, direct-map runs."""
    rng = random.Random(seed)
    vas = set()
    if fx is not None:
        m = fx.manifest
        vas.update(p.va for p in m.probes)
        vas.update(h.va for h in m.holes)
        vas.update(p.va for p in m.partial)
    if kd.has_page_walk:
        pages = list(kd.walk_pages())
        for p in rng.sample(pages, min(len(pages), 40)):
            vas.add(p.kp_kmap_vaddr or p.kp_dmap_vaddr)
            if p.kp_dmap_vaddr:
                vas.add(p.kp_dmap_vaddr + p.kp_len - 8)
    pt = getattr(kd.backend, "pt", None)
    if not kd.has_page_walk and pt is not None:
        leaves = list(itertools.islice(pt.leaves(), 20000))
        for va, _pa, size, _e in rng.sample(leaves, min(len(leaves), 40)):
            vas.update((va, va + size - 8))
    dm = getattr(kd.backend, "direct_map", None)
    index = getattr(kd.backend, "index", None)
    if dm is not None and index is not None:
        bits = list(index.set_bits())
        for bit in rng.sample(bits, min(len(bits), 30)):
            pa = index.pa_of(bit)
            if pa is not None and dm[0] <= dm[0] + pa - dm[2] < dm[1]:
                vas.add(dm[0] + pa - dm[2] + rng.choice((0, 8, P - 8)))
    vas.discard(0)
    vas = sorted(vas)
    if len(vas) > limit:
        vas = sorted(rng.sample(vas, limit))
    out = []
    for va in vas:
        for start in (va & ~(P - 1), va - P + 100, va - 3 * P):
            if start >= 0:
                out.append(start)
    return out


def read_everything(kd, vas, model=None, seed: int = 0) -> dict:
    """Each VA with every size, in an order mixing small and bulk reads so
    the page cache holds runs of every length when the next read comes."""
    stats = {"full": 0, "partial": 0, "none": 0, "model": 0}
    rng = random.Random(seed)
    jobs = [(va, size) for va in vas for size in SIZES]
    rng.shuffle(jobs)
    for va, size in jobs:
        if rng.random() < 0.3:
            kd.read_partial(va, 8)
        check_read(kd, va, size, model, stats)
    return stats


@pytest.mark.parametrize("case", ALL_CASES, ids=ck.case_id)
def test_bulk_reads_match_page_by_page(case, tmp_path):
    fx = ck.build_case(case, tmp_path)
    model = getattr(fx, "m", None)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        vas = interesting(kd, fx)
        stats = read_everything(kd, vas, model)
        check_chunk_runs(kd)
    assert stats["full"], stats
    if fx.manifest.holes or fx.manifest.partial:
        assert stats["partial"] + stats["none"], stats
    # A fresh descriptor, reads in the opposite order: nothing cached yet.
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        for va in reversed(vas[::3]):
            check_read(kd, va, 5 * P, model)


@pytest.mark.parametrize("name", REAL_DUMPS)
def test_bulk_reads_match_page_by_page_real(real_dump_factory, name):  # noqa: F811
    d = real_dump_factory(name)
    with kvm_dbg.open(d.kernel, d.core) as kd:
        vas = interesting(kd, limit=200, seed=1)
        hz = kd.symbol("hz")
        vas += [hz & ~(P - 1), hz - 2 * P]
        stats = read_everything(kd, vas, seed=1)
        check_chunk_runs(kd)
    assert stats["full"] and stats["partial"] + stats["none"], stats


def check_chunk_runs(kd) -> int:
    """Every run the descriptor remembers for a chunk of VA starts inside the
    chunk and puts each of its pages where ``kvatop`` does; returns how many
    runs span more than a page."""
    long = 0
    for key, (delta, lo, hi) in kd._runs.items():
        if hi <= lo:
            continue
        va = lo - delta
        assert va >> CHUNK_SHIFT == key, (hex(va), hex(key))
        for pos in _page_starts(va, hi - lo):
            assert kd.backend.kvatop(va + pos)[0] == lo + pos, (hex(va), pos)
        long += hi - lo > P
    return long


# -- the fast paths are taken ---------------------------------------------------

def _runs_taken(kd, vas, size: int) -> list:
    """kvatop_run's length at each readable VA (more than a page: one slice)."""
    out = []
    for va in vas:
        try:
            out.append(kd.backend.kvatop_run(va, size)[1])
        except KvmError:
            pass
    return out


@pytest.mark.parametrize("case", [("amd64", "minidump", 3, {}), ("amd64", "elf", 0, {}),
                                  ("arm64", "minidump", 2, {}),
                                  ("i386", "minidump", 2, {"pae": True})],
                         ids=ck.case_id)
def test_multi_page_runs_are_one_slice(case, tmp_path):
    """Direct-map and kernel-map reads over file-contiguous pages come back as
    one run, and a run stops exactly where the file stops being contiguous."""
    fx = ck.build_case(case, tmp_path)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        vas = interesting(kd, fx)
        runs = _runs_taken(kd, vas, 8 * P)
        assert max(runs) >= 3 * P, runs
        for va in vas:
            try:
                off, n = kd.backend.kvatop_run(va, 8 * P)
            except KvmError:
                continue
            # every byte of the run is where page-by-page translation puts it
            for pos in _page_starts(va, n):
                assert kd.backend.kvatop(va + pos)[0] == off + pos, (hex(va), pos)
            # and the page after the run is not its continuation
            if n < 8 * P and not (va + n) & (P - 1):
                try:
                    nxt = kd.backend.kvatop(va + n)[0]
                except KvmError:
                    continue
                assert nxt != off + n, hex(va)


def _page_starts(va: int, n: int):
    pos = 0
    while pos < n:
        yield pos
        pos += P - ((va + pos) & (P - 1))


def test_direct_map_read_is_one_copy(tmp_path):
    """A direct-map bulk read of file-contiguous pages: one slice of the mapping,
    remembered for its page; later reads from that page use the cache."""
    fx = ck.build_case(("amd64", "minidump", 3, {}), tmp_path)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        b = kd.backend
        bits = list(b.index.set_bits())
        start, length, cur, prev = bits[0], 1, bits[0], bits[0]
        for bit in bits[1:]:
            if bit == prev + 1 and b.index.pa_of(bit) == b.index.pa_of(prev) + P:
                if bit - cur + 1 > length:
                    start, length = cur, bit - cur + 1
            else:
                cur = bit
            prev = bit
        assert length >= 3, length
        va = b.dmapbase + b.index.pa_of(start) + 123
        size = length * P - 200
        # a shorter read first: its cached run must not cut the longer read short
        assert kd.read(va, size - P - 1000) == reference(kd, va, size - P - 1000)[0]
        data = kd.read(va, size)
        assert data == reference(kd, va, size)[0]
        off, run, _final = kd._cache[va & ~(P - 1)]
        assert run >= 123 + size
        assert kd.core.mm[off + 123:off + 123 + size] == data

        def boom(*args):
            raise AssertionError("the cached run must serve this read")
        kd._dmap = kd._dmap[:4] + (boom,) + kd._dmap[5:]
        kd.backend.kvatop_run = boom
        assert kd.read(va + 8, size - 8) == data[8:]
        # the run was measured to the end of its last page: a read further on
        # in the same page is served from the cache too
        assert kd.read(va + 50, size) == reference(kd, va + 50, size)[0]


CP = CHUNK // P                                  # pages per chunk
K0 = max(2, (64 << 20) // CHUNK)                 # a chunk above the profile's own pages


def test_chunk_run_serves_every_read_inside_it(tmp_path):
    """Direct-map pages contiguous in the file from a chunk boundary: the
    first read of the chunk measures the run once, and every later read that
    lies inside it (any size, any offset, across the next chunk's start) is
    served without another translation.  Reads outside it, in a chunk whose
    start is not dumped, and across the run's end read as page by page."""
    quarter, half = CP // 4, CP // 2
    runs = [(K0 * CP, (K0 + 1) * CP + quarter), ((K0 + 1) * CP + half, (K0 + 1) * CP + half + 1),
            ((K0 + 1) * CP + half + 3, (K0 + 1) * CP + half + 10),
            ((K0 + 2) * CP + quarter, (K0 + 2) * CP + quarter + 5)]
    fx = build_dmap_runs(str(tmp_path), (K0 + 4) * CHUNK, runs)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        base = kd.backend.dmapbase
        va0 = base + K0 * CHUNK
        assert base % CHUNK == 0 and kd._runs == {}
        jobs = [(va0 + 100, 20 * 1024), (va0, 8), (va0 + CHUNK - 10, 5 * P),
                (va0 + CHUNK - P, 8), (va0 + 4321, CHUNK), (va0 + 5 * P + 3, 1)]
        want = {job: reference(kd, *job) for job in jobs}
        assert all(err is None for _, err, _ in want.values())
        assert kd.read(*jobs[0]) == want[jobs[0]][0]
        assert check_chunk_runs(kd) == 1
        with pytest.raises(KvmError, match="invalid size -1"):
            kd.read(va0 + 100, -1)           # inside the run, still not a read

        def boom(*args):
            raise AssertionError("the chunk's run must serve this read")
        saved = kd._dmap, kd.backend.kvatop_run, kd.backend.kvatop
        kd._dmap = kd._dmap[:3] + (boom, boom) + kd._dmap[5:]
        kd.backend.kvatop_run = kd.backend.kvatop = boom
        for job in jobs[1:]:
            assert kd.read(*job) == want[job][0], job
            assert kd.read_partial(*job) == want[job][0], job
        kd._dmap, kd.backend.kvatop_run, kd.backend.kvatop = saved

        # the next chunk has its own run, from its start to where the pages
        # stop; single pages, short runs and a chunk whose start is not
        # dumped read as page by page
        nxt = va0 + CHUNK
        for job in [(nxt + 77, 3 * P), (nxt + half * P, 8), (nxt + (half + 3) * P + 9, 2 * P),
                    (nxt + quarter * P - 100, 3 * P), (nxt + CHUNK + quarter * P, 5 * P),
                    (nxt + CHUNK + (quarter + 1) * P - 1, 2)]:
            check_read(kd, *job)
        assert check_chunk_runs(kd) >= 2
        with pytest.raises(KvmError) as ei:
            kd.read(nxt + quarter * P - 100, 3 * P)
        assert ei.value.address == nxt + quarter * P


def test_chunk_keeps_its_largest_run(tmp_path):
    """A chunk whose start is not dumped: its run is the one around the read
    (measured back to where it starts), replaced only by a longer one; reads
    inside the kept run need no translation, reads in the others are served
    by the per-page cache without displacing it."""
    small = (K0 * CP + CP // 8, K0 * CP + CP // 8 + 6)
    big = (K0 * CP + CP // 2, K0 * CP + CP // 2 + CP // 4)
    fx = build_dmap_runs(str(tmp_path), (K0 + 2) * CHUNK, [small, big])
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        base = kd.backend.dmapbase
        key = (base + K0 * CHUNK) >> CHUNK_SHIFT

        def run_pages():
            delta, lo, hi = kd._runs[key]
            return (lo - delta - base) // P, (hi - delta - base) // P

        def read(va, size):
            assert kd.read(va, size) == reference(kd, va, size)[0]

        read(base + (small[0] + 2) * P + 5, 2 * P)
        assert run_pages() == small              # measured back to the run's start
        read(base + (big[0] + CP // 8) * P + 7, 5 * P)
        assert run_pages() == big                # the longer run replaces it
        read(base + (small[0] + 1) * P, 3 * P)
        assert run_pages() == big                # a shorter one does not
        jobs = [(base + big[0] * P, 8), (base + (big[1] - 5) * P + 1, 5 * P - 1),
                (base + (big[0] + 3) * P + 99, (CP // 4 - 10) * P),
                (base + (small[0] + 1) * P + 3, 2 * P)]
        want = {job: reference(kd, *job)[0] for job in jobs}
        kd._dmap = kd._dmap[:3] + (None, None) + kd._dmap[5:]
        kd._back = kd.backend.kvatop_run = kd.backend.kvatop = None
        for job in jobs:                         # nothing left to translate with
            assert kd.read(*job) == want[job], job


@pytest.mark.parametrize("name", ["vmcore-amd64-minidump", "vmcore-amd64-full"])
def test_superpage_is_one_run(real_dump_factory, name):  # noqa: F811
    """Kernel-map reads in a 2 MiB leaf of the real dumps: the first bulk read
    measures the leaf to its end, and every later read inside it, after the
    first one's address, is one lookup (nothing left to translate with)."""
    d = real_dump_factory(name)
    with kvm_dbg.open(d.kernel, d.core) as kd:
        leaves = []
        for va, _pa, size, _e in kd.backend.pt.leaves():
            va |= (0xFFFF << 48) if va >> 47 & 1 else 0       # canonical amd64 VA
            if size == 2 << 20 and kd.backend.kvatop_run(va, size)[1] >= size:
                leaves.append(va)
        assert len(leaves) >= 3, leaves                        # the kernel image's
        for leaf in leaves[:3]:
            first = leaf + 3 * P + 5
            assert kd.read(first, 3 * P) == reference(kd, first, 3 * P)[0]
            jobs = [(first, 8), (leaf + (1 << 20) + 77, 20 * 1024),
                    (leaf + (2 << 20) - 2 * P, 2 * P), (first + 1, (2 << 20) - 4 * P)]
            want = {job: reference(kd, *job)[0] for job in jobs}
            saved = kd._dmap, kd.backend.kvatop_run, kd.backend.kvatop
            kd._dmap = kd._dmap[:3] + (None, None) + kd._dmap[5:]
            kd.backend.kvatop_run = kd.backend.kvatop = None
            for job in jobs:
                assert kd.read(*job) == want[job], (hex(leaf), job)
            kd._dmap, kd.backend.kvatop_run, kd.backend.kvatop = saved
        check_chunk_runs(kd)


def test_truncated_file_ends_inside_a_run(tmp_path):
    """EOF in the middle of a page of a contiguous run: the readable prefix ends
    exactly at EOF and the error names the first missing byte."""
    fx = ck.build_case(("amd64", "minidump", 3, {"truncate": -(2 * P + 1000)}), tmp_path)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        size = kd.core.size
        b = kd.backend
        last = None
        for bit in b.index.set_bits():
            pa = b.index.pa_of(bit)
            off = b.index.find(pa)
            if off is not None and off < size <= off + P:
                last = pa
        assert last is not None, "the file must end inside a dumped page"
        first = last
        while first - P >= 0 and b.index.find(first - P) == b.index.find(first) - P:
            first -= P                  # the run of file-contiguous pages ending at EOF
        va = b.dmapbase + first + 100
        want, err, err_va = reference(kd, va, 5 * P)
        assert err_va == b.dmapbase + last + size % P
        got = kd.read_partial(va, 5 * P)
        assert got == want and len(got) == err_va - va
        assert kd.core.mm[size - len(got):size] == got
        with pytest.raises(KvmError) as ei:
            kd.read(va, 5 * P)
        assert ei.value.address == err_va and "beyond end of core file" in str(ei.value)


# -- the one-pass primitives against their per-page definitions -----------------

class _Core:
    """Just enough of CoreFile for PhysIndex: bytes, size, path."""

    def __init__(self, data: bytes) -> None:
        self.mm = data
        self.size = len(data)
        self.path = "synthetic"

    def has(self, off: int, n: int) -> bool:
        return 0 <= off and off + n <= self.size


@pytest.mark.parametrize("word_bits,order", [(64, "little"), (32, "little"), (64, "big"),
                                             (32, "big")])
def test_physindex_span_matches_find(word_bits, order):
    """``span`` against a page-by-page walk with ``find``: runs across bitmap
    words, dump_avail ranges (adjacent and not), clear bits and a file that
    ends inside a page."""
    rng = random.Random(word_bits)
    page = 4096
    nbits = 8 * word_bits
    bitmap_off, sparse = page, 2 * page
    for density in (0.97, 0.6):
        bits = [rng.random() < density for _ in range(nbits)]
        words = [sum(1 << i for i in range(word_bits) if bits[w * word_bits + i])
                 for w in range(nbits // word_bits)]
        fmt = ("<" if order == "little" else ">") + {32: "I", 64: "Q"}[word_bits]
        bitmap = b"".join(struct.pack(fmt, w) for w in words)
        npages = sum(bits)
        blob = bytes(page) + bitmap + bytes(page - len(bitmap))
        blob += bytes(npages * page)
        blob = blob[:len(blob) - page // 2]                 # EOF inside the last page
        ranges = [(0, 100 * page), (100 * page, 200 * page), (300 * page, (300 + nbits
                                                                             - 200) * page)]
        idx = PhysIndex(_Core(blob), page, ranges, bitmap_off, len(bitmap), sparse, order,
                        word_bits)
        for _ in range(3000):
            pa = rng.randrange(0, (300 + nbits) * page)
            want = rng.choice((1, 8, page, 3 * page + 5, 40 * page, 300 * page))
            got = idx.span(pa, want)
            off = idx.find(pa)
            if off is None:
                assert got is None
                continue
            # per-page reference: pages while find() continues the file offsets
            n = min(page - (pa & (page - 1)), len(blob) - off)
            nxt = pa - (pa & (page - 1)) + page
            while n < want and n == nxt - pa:
                o2 = idx.find(nxt)
                if o2 != off + n:
                    break
                n += min(page, len(blob) - o2)
                nxt += page
            assert got == (off, min(n, want)), (hex(pa), want)
            # and ``back``: pages before pa's that find() puts just before it
            limit = rng.choice((0, 1, 5, 40, 300))
            cur, before = pa - (pa & (page - 1)), 0
            while before < limit and cur >= page and idx.find(cur - page) == idx.find(cur) - page:
                cur -= page
                before += 1
            assert idx.back(pa, limit) == before, (hex(pa), limit)


@pytest.mark.parametrize("word_bits,order", [(64, "little"), (32, "big")])
def test_physindex_span_long_runs(word_bits, order):
    """Runs longer than the 64 KiB steps ``span`` scans the bitmap in, ending
    at word boundaries and inside words, against a rank computed bit by bit
    (16-byte pages keep the file small)."""
    rng = random.Random(word_bits + 1)
    page = 16
    bits = []
    for length in (700_000, 3, 524_288 - 7, 64, 1, 530_000, 5):
        bits += [True] * length + [False] * rng.choice((1, 2, word_bits))
    bits += [False] * (-len(bits) % word_bits)
    fmt = ("<" if order == "little" else ">") + {32: "I", 64: "Q"}[word_bits]
    bitmap = b"".join(struct.pack(fmt, sum(1 << i for i in range(word_bits) if bits[w + i]))
                      for w in range(0, len(bits), word_bits))
    sparse = page + len(bitmap)
    blob = bytes(page) + bitmap + bytes(sum(bits) * page)
    idx = PhysIndex(_Core(blob), page, [], page, len(bitmap), sparse, order, word_bits)
    rank = list(itertools.accumulate(bits, initial=0))
    ends, end = [0] * len(bits), len(bits)
    for i in range(len(bits) - 1, -1, -1):
        end = end if bits[i] else i
        ends[i] = end
    starts, start = [0] * len(bits), 0
    for i, set_ in enumerate(bits):
        start = start if set_ else i + 1
        starts[i] = start
    for _ in range(400):
        bit = rng.randrange(len(bits))
        po = rng.randrange(page)
        want = rng.choice((1, 20, 64 * page, 600_000 * page, 2_000_000 * page))
        got = idx.span(bit * page + po, want)
        if not bits[bit]:
            assert got is None
            continue
        assert got == (sparse + rank[bit] * page + po,
                       min(want, (ends[bit] - bit) * page - po)), (bit, po, want)
        limit = rng.choice((3, 70, 600_000, 10**7))
        assert idx.back(bit * page + po, limit) == min(limit, bit - starts[bit]), (bit, limit)


def _levels_amd64_like():
    def classify(e):
        return INVALID if not e & 1 else (LEAF if e & 0x80 else TABLE)
    return [Level(21, 9, classify, lambda e: e & (0xFFFFFFFFFE00000 if e & 0x80 else
                                                  0xFFFFFFFFFF000)),
            Level(12, 9, lambda e: LEAF if e & 1 else INVALID, lambda e: e & 0xFFFFFFFFFF000)]


def test_translate_run_matches_translate():
    """``translate_run`` against ``translate`` leaf after leaf, over tables
    with 4 KiB leaves, superpages, holes, contiguous and scattered frames,
    a table page missing, both root kinds, and 64 KiB leaves whose entry is
    repeated per 4 KiB (arm)."""
    rng = random.Random(7)
    phys = {}

    def read_phys(pa, n):
        page = phys.get(pa & ~(P - 1))
        if page is None or (pa & (P - 1)) + n > P:
            return None
        return bytes(page[pa & (P - 1):(pa & (P - 1)) + n])

    # leaf tables at 0x100000.. ; frames mostly contiguous with breaks and holes
    frame = 0x4000000
    pdes = []
    for t in range(6):
        if t == 3:
            pdes.append(0x80000000 | 0x81)                   # a 2 MiB superpage
            continue
        if t == 4:
            pdes.append(0x200000 | 1)                       # table page not in memory
            continue
        tpa = 0x100000 + t * P
        ents = array("Q", bytes(P))
        for i in range(512):
            r = rng.random()
            if r < 0.05:
                ents[i] = 0                                 # hole
            else:
                if r < 0.12:
                    frame += P * rng.randrange(2, 9)        # a break in the frames
                ents[i] = frame | 1
                frame += P
        phys[tpa] = bytearray(ents.tobytes())
        pdes.append(tpa | 1)
    pdes.append(0x80400000 | 0x81)                          # a superpage after a table
    base = 0xFFFF800000000000
    root_pa = 0x300000
    top = array("Q", bytes(P))
    for i, e in enumerate(pdes):
        top[i] = e
    phys[root_pa] = bytearray(top.tobytes())

    def flat_get(i):
        return pdes[i] if 0 <= i < len(pdes) else None

    tables = [
        (PageTable(FlatRoot(base, flat_get, len(pdes)), _levels_amd64_like(), "little",
                   read_phys), base),
        (PageTable(FlatRoot(base, flat_get, len(pdes),
                            lambda i, n: pdes[i:i + n]), _levels_amd64_like(), "little",
                   read_phys), base),
        (PageTable(TableRoot(root_pa), _levels_amd64_like(), "little", read_phys), 0),
    ]
    # arm-like flat table of 4 KiB-indexed entries with 64 KiB pages (type 1) repeated
    arm_ents = []
    f = 0x10000000
    while len(arm_ents) < 400:
        if rng.random() < 0.3:
            for _ in range(16):
                arm_ents.append(f | 1)                      # 64 KiB page, 16 entries
            f += 0x10000
        else:
            arm_ents.append((f | 2) if rng.random() > 0.05 else 0)
            f += P if rng.random() > 0.1 else 3 * P
    arm_lv = [Level(12, 0, lambda e: INVALID if e == 0 else LEAF,
                    lambda e: e & ~0xFFFF if e & 3 == 1 else e & ~0xFFF, "", 4,
                    lambda e: 0x10000 if e & 3 == 1 else P)]
    arm_base = 0xC0000000
    tables.append((PageTable(FlatRoot(arm_base, lambda i: arm_ents[i]
                                      if 0 <= i < len(arm_ents) else None, len(arm_ents)),
                             arm_lv, "little", read_phys), arm_base))
    checked = 0
    for pt, b in tables:
        span_va = (len(pdes) << 21) if b != arm_base else len(arm_ents) * P
        for _ in range(2500):
            va = b + rng.randrange(span_va + 2 * P)
            size = rng.choice((1, P, 5 * P, 40 * P, 600 * P))
            try:
                want_pa, n = pt.translate(va)
            except Untranslatable as u:
                with pytest.raises(Untranslatable) as ei:
                    pt.translate_run(va, size)
                assert ei.value.hard == u.hard
                continue
            while n < size:
                try:
                    npa, nn = pt.translate(va + n)
                except Untranslatable:
                    break
                if npa != want_pa + n:
                    break
                n += nn
            assert pt.translate_run(va, size) == (want_pa, n), (hex(va), size)
            checked += 1
    assert checked > 5000
