"""riscv: minidumps v1/v2 of Sv39 and Sv48 kernels (flat L3 array, direct map)."""

from __future__ import annotations

import arch_checks as ck
from fixturegen.riscv import CASES

import kvm_dbg

fx = ck.case_fixture(CASES)


def test_direct_map_alias(fx):
    """hz through the kernel map and through the direct map are the same bytes."""
    m = fx.machine
    hz = fx.manifest.hz_addr
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.read(m.dmap_va(m.va_to_pa(hz)), 4) == kd.read(hz, 4)
        for p in fx.manifest.probes:
            if p.kind.startswith("l2_super") and len(p.data) <= 64:
                assert kd.read(m.dmap_va(m.va_to_pa(p.va)), len(p.data)) == p.data

