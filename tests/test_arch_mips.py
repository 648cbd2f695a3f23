"""mips: minidumps v1/v2 of o32, n32 and n64 kernels, big- and little-endian."""

from __future__ import annotations

import arch_checks as ck
import pytest
from fixturegen import build
from fixturegen.mips import CASES

import kvm_dbg
from kvm_dbg import KvmError

fx = ck.case_fixture(CASES)


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

