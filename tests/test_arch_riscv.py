"""riscv: minidumps v1/v2 of Sv39 and Sv48 kernels (flat L3 array, direct map)."""

from __future__ import annotations

import arch_checks as ck
import pytest
from fixturegen import build
from fixturegen.riscv import CASES

import kvm_dbg


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
    ck.nonnative_needs_resolver(fx, "riscv")


def test_direct_map_alias(fx):
    """hz through the kernel map and through the direct map are the same bytes."""
    m = fx.machine
    hz = fx.manifest.hz_addr
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.read(m.dmap_va(m.va_to_pa(hz)), 4) == kd.read(hz, 4)
        for p in fx.manifest.probes:
            if p.kind.startswith("l2_super") and len(p.data) <= 64:
                assert kd.read(m.dmap_va(m.va_to_pa(p.va)), len(p.data)) == p.data


@pytest.mark.parametrize("version", [1, 2])
def test_truncated(version, tmp_path):
    fx = build("riscv", "minidump", version, str(tmp_path), truncate_pages=2)
    ck.truncated(fx)
