"""Property-based and mutation fuzzing of every dump format and page-table walker.

Mutated minidump headers (every field), dump_avail arrays, bitmaps, pmap
entries, ELF core headers and program headers, byte flips and truncations of
the generator fixtures and of the four real dumps (mutated in place in a
sparse working copy, restored after each example).  Invariant: see
``test_fuzz_harness.exercise``.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_harness import (
    CALL_BOUND_S,
    MEM_BOUND,
    PHASES,
    REAL_KEYS,
    Mutation,
    WorkCopy,
    fixture_cases,
    fixture_target,
    mutate,
    peak_memory,
    real_target,
    run_one,
    time_limit,
)

import kvm_dbg

SETTINGS = dict(deadline=None, derandomize=True, print_blob=True, phases=PHASES,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
#: Every reader is fuzzed (the powerpc64 HPT walk is bounded since it scans in C).
SKIP: tuple = ()


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("fuzzfmt"))
    out = []
    for name, arch, fmt, version, opts in fixture_cases():
        if any(s in name for s in SKIP):
            continue
        t = fixture_target(name, arch, fmt, version, opts, tmp)
        out.append((t, WorkCopy(t.core, tmp, name + ".core")))
    return out


@pytest.fixture(scope="module")
def real_targets(real_dump_factory, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("fuzzreal"))
    out = {}
    for key, (name, _arch) in REAL_KEYS.items():
        d = real_dump_factory(name)
        t = real_target(d.kernel, d.core, key)
        out[key] = (t, WorkCopy(t.core, tmp, key + ".core"))
    return out


# -- random mutations -----------------------------------------------------------

@settings(max_examples=300, **SETTINGS)
@given(data=st.data(), rnd=st.randoms(use_true_random=False))
def test_mutated_fixtures(targets, data, rnd):
    t, wc = data.draw(st.sampled_from(targets), label="target")
    run_one(t, wc, mutate(rnd, t), rnd)


@pytest.mark.parametrize("key", sorted(REAL_KEYS))
@settings(max_examples=40, **SETTINGS)
@given(rnd=st.randoms(use_true_random=False))
def test_mutated_real_dumps(real_targets, key, rnd):
    t, wc = real_targets[key]
    run_one(t, wc, mutate(rnd, t), rnd, kstate=rnd.random() < 0.3)


# -- structured inputs --------------------------------------------------------------

U64 = st.one_of(st.sampled_from([0, 1, 4095, 4096, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 63,
                                 (1 << 64) - 1, (1 << 64) - 4096]),
                st.integers(0, (1 << 64) - 1), st.integers(0, 1 << 34))


@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), pairs=st.lists(st.tuples(U64, U64), min_size=1, max_size=40),
       terminate=st.booleans())
def test_dump_avail_arrays(targets, data, pairs, terminate):
    """Unsorted, overlapping, start > end, huge and unterminated dump_avail arrays."""
    cands = [(t, wc) for t, wc in targets if any(r.name == "dump_avail" for r in t.regions)]
    t, wc = data.draw(st.sampled_from(cands), label="target")
    reg = next(r for r in t.regions if r.name == "dump_avail")
    raw = b"".join(a.to_bytes(8, t.order) + b.to_bytes(8, t.order) for a, b in pairs)
    if terminate:
        raw += bytes(16)
    run_one(t, wc, Mutation([(reg.off, raw[:reg.size])]), random.Random(len(pairs)))


@settings(max_examples=150, **SETTINGS)
@given(data=st.data(), entries=st.lists(st.tuples(st.integers(0, 4095), U64), min_size=1,
                                        max_size=24))
def test_pmap_entries(targets, data, entries):
    """Arbitrary entries in the first pmap pages: loops, self references, huge frames."""
    cands = [(t, wc) for t, wc in targets if any(r.name == "pmap" for r in t.regions)]
    t, wc = data.draw(st.sampled_from(cands), label="target")
    reg = next(r for r in t.regions if r.name == "pmap")
    n = max(1, reg.size // reg.width)
    patches = []
    for idx, v in entries:
        if data.draw(st.booleans(), label="point-at-a-dumped-page") and t.frames:
            v = data.draw(st.sampled_from(t.frames)) | (v & 0xFFF)
        patches.append((reg.off + (idx % n) * reg.width,
                        (v % (1 << (8 * reg.width))).to_bytes(reg.width, t.order)))
    run_one(t, wc, Mutation(patches), random.Random(len(entries)))


@settings(max_examples=200, **SETTINGS)
@given(data=st.data())
def test_header_fields(targets, data):
    """Every header / program-header field set to an arbitrary value."""
    t, wc = data.draw(st.sampled_from(targets), label="target")
    fields = [r for r in t.regions if r.name.startswith(("hdr.", "ehdr.", "phdr"))]
    patches = []
    for reg in data.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4),
                         label="fields"):
        v = data.draw(st.one_of(U64, st.integers(t.size - 8192, t.size + 8192)), label=reg.name)
        patches.append((reg.off, (v % (1 << (8 * reg.width))).to_bytes(reg.width, t.order)))
    run_one(t, wc, Mutation(patches), random.Random(0))


@settings(max_examples=100, **SETTINGS)
@given(data=st.data(), body=st.binary(max_size=400))
def test_tiny_cores(targets, tmp_path_factory, data, body):
    """Short files behind every magic: header only, garbage after it."""
    t, _wc = data.draw(st.sampled_from(targets), label="kernel")
    magic = data.draw(st.sampled_from([b"minidump FreeBSD/amd64\0\0", b"minidump FreeBSD/i386\0",
                                       b"minidump FreeBSD/arm64\0\0", b"\x7fELF\x02\x01\x01",
                                       b"\x7fELF\x01\x01\x01", b"\x7fELF\x01\x02\x01",
                                       b"\x7fELF\x02\x02\x01", b""]), label="magic")
    path = tmp_path_factory.getbasetemp() / "tiny.core"
    path.write_bytes((magic + body) or b"\0")
    with time_limit(CALL_BOUND_S, "open tiny"):
        try:
            kvm_dbg.open(t.kernel, str(path)).close()
        except kvm_dbg.KvmError:
            pass


# -- deterministic sweeps -------------------------------------------------------

def test_truncation_at_every_section_boundary(targets):
    """Cut each fixture at each region start/end +-1 and at header bytes."""
    n = 0
    for t, wc in targets:
        cuts = {1, 8, 23, 24, 27, 28, 63, 64, 4095, 4096, 4097, t.head, t.size - 1}
        for r in t.regions:
            cuts |= {r.off, r.off + 1, r.off + r.size - 1, r.off + r.size}
        cuts = sorted(c for c in cuts if 0 < c < t.size)
        for cut in random.Random(t.name).sample(cuts, min(len(cuts), 10)):
            run_one(t, wc, Mutation([], cut), random.Random(cut))
            n += 1
    assert n > 100


SIZE_FIELDS = ("hdr.msgbufsize", "hdr.bitmapsize", "hdr.pmapsize", "hdr.dumpavailsize",
               "phdr[0].p_filesz", "phdr[0].p_memsz", "phdr[0].p_offset", "ehdr.e_phnum",
               "ehdr.e_phoff")


def test_huge_size_fields_bounded_memory(targets):
    """Sizes far beyond the file: no allocation sized by them (tracemalloc)."""
    for t, wc in targets:
        for reg in (r for r in t.regions if r.name in SIZE_FIELDS):
            top = (1 << (8 * reg.width)) - 1
            for v in {top, top >> 1, t.size + 1, t.size, t.size - 4096, 0}:
                m = Mutation([(reg.off, (v & top).to_bytes(reg.width, t.order))])
                with peak_memory() as mem:
                    run_one(t, wc, m, random.Random(v & 0xFFFF))
                assert mem["peak"] < MEM_BOUND, (t.name, reg.name, hex(v), mem["peak"])


@pytest.mark.parametrize("key", ["amd64-minidump", "arm64-minidump", "i386-minidump"])
def test_real_bitmap_claims_most_of_the_file(real_targets, key):
    """A bitmap size just inside the file: open stays fast and small (lazy rank index)."""
    t, wc = real_targets[key]
    reg = next(r for r in t.regions if r.name == "hdr.bitmapsize")
    for v in (t.size - 16 * 4096, t.size // 2, 90_000_000 % t.size):
        m = Mutation([(reg.off, struct.pack("<I" if t.order == "little" else ">I", v))])
        with peak_memory() as mem:
            run_one(t, wc, m, random.Random(1))
        assert mem["peak"] < 4 * MEM_BOUND, (key, v, mem["peak"])
