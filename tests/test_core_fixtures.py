"""The core reader against generated dumps of every x86/arm64 format and version.

The generator (tests/fixturegen) is written from the spec independently of
the reader; its manifest says what must read back, what must fail, and what
kvm_walk_pages must report.
"""

from __future__ import annotations

import pytest
from fixturegen import CASES, build

import kvm_dbg
from kvm_dbg import KvmError, kvm_close, kvm_open2, kvm_read, kvm_walk_pages

X86_ARM64 = [c for c in CASES if c[0] in ("amd64", "i386", "arm64")]


def _id(case):
    arch, fmt, version, opts = case
    extra = ",".join(f"{k}={v}" for k, v in sorted(opts.items()))
    return f"{arch}-{fmt}{version or ''}" + (f"[{extra}]" if extra else "")


@pytest.fixture(params=X86_ARM64, ids=_id)
def fixture(request, tmp_path):
    arch, fmt, version, opts = request.param
    return build(arch, fmt, version, str(tmp_path), **opts)


def test_probes_read_back(fixture):
    with kvm_dbg.open(fixture.kernel_path, fixture.core_path) as kd:
        assert kd.arch == fixture.arch
        kinds = set()
        for p in fixture.manifest.probes:
            assert kd.read(p.va, len(p.data)) == p.data, (p.kind, hex(p.va))
            kinds.add(p.kind)
        assert any(k.endswith("_cross") for k in kinds), kinds


def test_hz_symbol(fixture):
    m = fixture.manifest
    with kvm_dbg.open(fixture.kernel_path, fixture.core_path) as kd:
        assert kd.symbol("hz") == m.hz_addr
        assert kd.read_int(m.hz_addr, 4) == m.hz_value


def test_holes_fail_with_kvm_error(fixture):
    m = fixture.manifest
    assert m.holes, "every fixture has holes"
    with kvm_dbg.open(fixture.kernel_path, fixture.core_path) as kd:
        for h in m.holes:
            with pytest.raises(KvmError) as ei:
                kd.read(h.va, h.size)
            assert "invalid address" in str(ei.value), h.kind
            assert kd.read_partial(h.va, h.size) == b"", h.kind


def test_partial_reads(fixture):
    with kvm_dbg.open(fixture.kernel_path, fixture.core_path) as kd:
        for p in fixture.manifest.partial:
            assert kd.read_partial(p.va, p.length) == p.data, p.kind
            with pytest.raises(KvmError):
                kd.read(p.va, p.length)


def test_compat_read_semantics(fixture):
    """kvm_read: full count for probes, -1 for holes (libkvm loses partial counts)."""
    m = fixture.manifest
    kd = kvm_open2(fixture.kernel_path, fixture.core_path, 0, None,
                   lambda name: m.symbols.get(name))
    assert kd is not None
    try:
        for p in m.probes[:20]:
            buf = bytearray(len(p.data))
            assert kvm_read(kd, p.va, buf) == len(p.data)
            assert bytes(buf) == p.data
        for h in m.holes:
            if h.kind == "truncated":
                continue
            assert kvm_read(kd, h.va, bytearray(h.size)) == -1
            assert kvm_dbg.kvm_geterr(kd).startswith("invalid address (0x")
    finally:
        kvm_close(kd)


def _walk(kd):
    pages = []
    rv = kvm_walk_pages(kd, lambda page, closure: closure.append(page) or 1, pages)
    return rv, pages


def test_walk_pages_matches_manifest(fixture):
    m = fixture.manifest
    with kvm_dbg.open(fixture.kernel_path, fixture.core_path) as kd:
        rv, pages = _walk(kd)
        if m.walk is None:
            assert rv == 0 and pages == []
            return
        assert rv == 1
        got = [(p.kp_paddr, p.kp_kmap_vaddr, p.kp_dmap_vaddr, p.kp_prot, p.kp_len)
               for p in pages]
        want = [(w.paddr, w.kmap_vaddr, w.dmap_vaddr, w.prot, w.len) for w in m.walk]
        assert got == want
        for p, w in zip(pages, m.walk):
            if w.offset is not None and w.offset >= 0 and w.offset < m.file_size:
                assert p.kp_offset == w.offset
            else:
                assert p.kp_offset == -1


def test_walk_pages_callback_can_stop(fixture):
    with kvm_dbg.open(fixture.kernel_path, fixture.core_path) as kd:
        seen = []
        assert kvm_walk_pages(kd, lambda page, c: seen.append(page) and 0, None) == 0
        # one record then stop; formats without a walker report nothing
        assert len(seen) == (0 if fixture.manifest.walk is None else 1)


def test_kerndisp_is_zero(fixture):
    kd = kvm_open2(fixture.kernel_path, fixture.core_path, 0, None, lambda n: None)
    if kd is None:      # ELF backends need symbols at open
        return
    try:
        assert kvm_dbg.kvm_kerndisp(kd) == 0
    finally:
        kvm_close(kd)


@pytest.mark.parametrize("case", [("amd64", "minidump", 3), ("i386", "minidump", 2),
                                  ("arm64", "minidump", 2)], ids=lambda c: f"{c[0]}-v{c[2]}")
def test_gap_pages_do_not_alias(case, tmp_path):
    """A page in a dump_avail gap is "not in dump", never another page's bytes
    (libkvm's _kvm_pa_bit_id aliasing bug is deliberately not reproduced)."""
    fx = build(case[0], case[1], case[2], str(tmp_path), gap_page=True)
    gaps = [h for h in fx.manifest.holes if h.kind == "gap"]
    assert gaps
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        for h in gaps:
            with pytest.raises(KvmError):
                kd.read(h.va, 8)


@pytest.mark.parametrize("cut", [1, 4096, 3 * 4096 + 100])
def test_truncated_minidump_reads_what_is_there(cut, tmp_path):
    fx = build("amd64", "minidump", 3, str(tmp_path), truncate=-cut)
    m = fx.manifest
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.read_int(m.hz_addr, 4) == m.hz_value
        for h in m.holes:
            if h.kind == "truncated":
                with pytest.raises(KvmError):
                    kd.read(h.va, h.size)
