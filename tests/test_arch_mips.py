"""mips: minidumps v1/v2 of o32, n32 and n64 kernels, big- and little-endian."""

from __future__ import annotations

import arch_checks as ck
import pytest
from fixturegen import build
from fixturegen.mips import CASES

import kvm_dbg
from kvm_dbg import KvmError


@pytest.fixture(params=CASES, ids=ck.case_id)
def fx(request, tmp_path):
    arch, fmt, version, opts = request.param
    return build(arch, fmt, version, str(tmp_path), **opts)


def test_probes(fx):
    ck.probes_read_back(fx)


def test_holes_and_partial_reads(fx):
    ck.holes_fail(fx)


def test_compat_reads(fx):
    ck.compat_reads(fx)


def test_walk_pages(fx):
    ck.walk_matches(fx)


def test_kerndisp_zero(fx):
    ck.kerndisp(fx, 0)


def test_nonnative_requires_resolver(fx):
    ck.nonnative_needs_resolver(fx, "mips")


def test_segment_aliases(fx):
    """KSEG0, KSEG1 (and XKPHYS on n64) reach the same physical page."""
    m = fx.machine
    pa = m.va_to_pa(fx.manifest.hz_addr)
    vas = [m.meta["kseg0"] + pa, m.meta["kseg1"] + pa]
    if fx.options["abi"] == "n64":
        vas.append(0x9800000000000000 | pa)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert {kd.read(va, 4) for va in vas} == {kd.read(fx.manifest.hz_addr, 4)}
        assert kd.read_int(vas[-1], 4) == fx.manifest.hz_value


def test_pte_width_and_format(fx):
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.backend.pte_bits == (32 if fx.options["abi"] == "o32" else 64)
        assert kd.format == f"minidump v{fx.version} ({fx.options['abi']})"


def test_not_minidumped_has_no_soft_message(tmp_path):
    fx = build("mips", "minidump", 2, str(tmp_path))
    h = next(h for h in fx.manifest.holes if h.kind == "unmapped" and h.va < 0x80000000)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        with pytest.raises(KvmError) as ei:
            kd.read(h.va, 8)
    assert ei.value.message == f"_mips_minidump_kvatop: virtual address 0x{h.va & ~0xFFF:x} " \
                               "not minidumped"


@pytest.mark.parametrize("abi", ["o32", "n64"])
def test_truncated(abi, tmp_path):
    fx = build("mips", "minidump", 2, str(tmp_path), abi=abi, truncate_pages=2)
    ck.truncated(fx)
