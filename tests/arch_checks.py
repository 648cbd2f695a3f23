"""Checks shared by tests/test_arch_<arch>.py: a generated fixture (tests/fixturegen)
read back through kvm_dbg must agree with the generator's manifest."""

from __future__ import annotations

import pytest
from fixturegen import build

import kvm_dbg
from kvm_dbg import KvmError, kvm_close, kvm_kerndisp, kvm_open2, kvm_read, kvm_walk_pages
from kvm_dbg.arch.base import host_machine


def case_id(case) -> str:
    arch, fmt, version, opts = case
    extra = ",".join(f"{k}={v}" for k, v in sorted(opts.items()))
    return f"{arch}-{fmt}{version or ''}" + (f"[{extra}]" if extra else "")


def build_case(case, tmpdir) -> object:
    """Build the fixture of one (arch, fmt, version, options) case in tmpdir."""
    arch, fmt, version, opts = case
    return build(arch, fmt, version, str(tmpdir), **opts)


def case_fixture(cases):
    """A pytest fixture ``fx`` over ``cases`` (assign it to a module-level ``fx``)."""
    @pytest.fixture(params=cases, ids=case_id)
    def fx(request, tmp_path):
        return build_case(request.param, tmp_path)
    return fx


def probes_read_back(fx) -> None:
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.arch == fx.arch
        kinds = set()
        for p in fx.manifest.probes:
            assert kd.read(p.va, len(p.data)) == p.data, (p.kind, hex(p.va))
            kinds.add(p.kind)
        assert any("cross" in k for k in kinds), kinds
        assert kd.read_int(fx.manifest.hz_addr, 4) == fx.manifest.hz_value
        assert kd.symbol("hz") == fx.manifest.hz_addr


def holes_fail(fx) -> None:
    assert fx.manifest.holes
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        for h in fx.manifest.holes:
            with pytest.raises(KvmError) as ei:
                kd.read(h.va, h.size)
            assert ei.value.address is not None, h.kind
            assert kd.read_partial(h.va, h.size) == b"", h.kind
        for p in fx.manifest.partial:
            assert kd.read_partial(p.va, p.length) == p.data, p.kind
            with pytest.raises(KvmError):
                kd.read(p.va, p.length)


def compat_reads(fx) -> None:
    """kvm_read through kvm_open2 with a resolver: full counts and -1."""
    m = fx.manifest
    kd = kvm_open2(fx.kernel_path, fx.core_path, 0, None, lambda name: m.symbols.get(name))
    assert kd is not None
    try:
        for p in m.probes:
            buf = bytearray(len(p.data))
            assert kvm_read(kd, p.va, buf) == len(p.data), p.kind
            assert bytes(buf) == p.data
        for h in m.holes:
            assert kvm_read(kd, h.va, bytearray(h.size)) == -1, h.kind
            assert kvm_dbg.kvm_geterr(kd)
    finally:
        kvm_close(kd)


def walk_matches(fx) -> None:
    m = fx.manifest
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        pages = []
        rv = kvm_walk_pages(kd, lambda page, closure: closure.append(page) or 1, pages)
        if m.walk is None:
            assert rv == 0 and pages == []
            return
        assert rv == 1
        got = [(p.kp_paddr, p.kp_kmap_vaddr, p.kp_dmap_vaddr, p.kp_prot, p.kp_len, p.kp_offset)
               for p in pages]
        want = [(w.paddr, w.kmap_vaddr, w.dmap_vaddr, w.prot, w.len,
                 w.offset if w.offset < m.file_size else -1) for w in m.walk]
        assert got == want
        assert all(p.kp_version == 2 for p in pages)


def kerndisp(fx, expected: int = 0) -> None:
    kd = kvm_open2(fx.kernel_path, fx.core_path, 0, None, lambda n: fx.manifest.symbols.get(n))
    assert kd is not None
    try:
        assert kvm_kerndisp(kd) == expected
    finally:
        kvm_close(kd)


def nonnative_needs_resolver(fx, arch: str) -> None:
    errbuf = bytearray(kvm_dbg.POSIX2_LINE_MAX)
    kd = kvm_open2(fx.kernel_path, fx.core_path, kvm_dbg.O_RDONLY, errbuf, None)
    if host_machine() == arch:
        pytest.skip("n/a: the host is this architecture, so the dump is native")
    assert kd is None
    assert errbuf.split(b"\0")[0] == b"non-native kernel requires a symbol resolver"
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd2:
        assert kd2.native is False


def truncated(fx) -> None:
    """A dump cut short: the lost pages fail cleanly, everything else still reads."""
    m = fx.manifest
    assert m.file_size < m.full_size
    lost = [h for h in m.holes if h.kind == "truncated"]
    lost += [p for p in m.partial if p.why == "truncated"]
    assert lost, "truncation must hit at least one probe"
    probes_read_back(fx)
    holes_fail(fx)


def mismatched(kernel_path: str, core_path: str, text: str) -> KvmError:
    with pytest.raises(KvmError) as ei:
        kvm_dbg.open(kernel_path, core_path)
    assert text in str(ei.value)
    return ei.value
