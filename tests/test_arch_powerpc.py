"""powerpc64 minidumps (HPT and radix, BE/LE) and powerpc/powerpc64 ELF virtual cores."""

from __future__ import annotations

import arch_checks as ck
import pytest
from fixturegen import build
from fixturegen.ppc64 import CASES, ELF_CASES

import kvm_dbg
from kvm_dbg import KvmError


@pytest.fixture(params=CASES + ELF_CASES, ids=ck.case_id)
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


def test_kerndisp(fx):
    ck.kerndisp(fx, fx.manifest.notes.get("kerndisp", 0) if fx.fmt == "minidump" else 0)


def test_nonnative_requires_resolver(fx):
    ck.nonnative_needs_resolver(fx, fx.arch)


def test_symbols_are_relocated_by_kerndisp(tmp_path):
    """Link-time addresses (below the direct map) read the displaced kernel."""
    fx = build("powerpc64", "minidump", 2, str(tmp_path), mmu="mmu_radix")
    m = fx.manifest
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.kerndisp == m.notes["kerndisp"] < 0
        runtime = (m.hz_addr + kd.kerndisp) % (1 << 64)
        assert kd.read(runtime, 4) == kd.read(m.hz_addr, 4)
        assert kd.read_int(m.hz_addr, 4) == m.hz_value


def _patch(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def test_unsupported_mmu(tmp_path):
    fx = build("powerpc64", "minidump", 2, str(tmp_path), mmu="mmu_g5")
    _patch(fx.core_path, 32, b"mmu_booke\0")
    ck.mismatched(fx.kernel_path, fx.core_path, "unsupported MMU: mmu_booke")


def test_radix_page_map_size(tmp_path):
    fx = build("powerpc64", "minidump", 2, str(tmp_path), mmu="mmu_radix", endian="le")
    _patch(fx.core_path, 76, (4096).to_bytes(4, "little"))
    ck.mismatched(fx.kernel_path, fx.core_path, "unexpected radix page map size: 4096")


def test_radix_table_not_dumped(tmp_path):
    fx = build("powerpc64", "minidump", 2, str(tmp_path), mmu="mmu_radix", drop_table=True)
    va = next(p.va for p in fx.manifest.probes if p.kind == "kmap_4k")
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        with pytest.raises(KvmError) as ei:
            kd.read(va, 8)
    assert ei.value.message.startswith("radix page table page at 0x")
    assert ei.value.message.endswith("was not dumped")


def test_hpt_walk_skips_user_ptes_and_reports_16m_dmap(tmp_path):
    fx = build("powerpc64", "minidump", 1, str(tmp_path), mmu="mmu_phyp")
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        pages = list(kd.walk_pages())
    assert [p.kp_len for p in pages].count(1 << 24) == 2
    assert all(p.kp_kmap_vaddr >= 0xC000000000000000 for p in pages)


def test_raw_elf_core_opens_but_cannot_read(tmp_path):
    fx = build("powerpc64", "elf", 0, str(tmp_path), raw=True)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        with pytest.raises(KvmError) as ei:
            kd.read(fx.manifest.hz_addr, 4)
    assert ei.value.message == "Raw corefile not supported"


def test_kerneldumpheader_for_other_arch_is_refused(tmp_path):
    fx = build("powerpc64", "elf", 0, str(tmp_path), kdh=True)
    _patch(fx.core_path, 20, b"powerpc\0\0\0\0\0")
    ck.mismatched(fx.kernel_path, fx.core_path, "invalid corefile")


def test_minidump_of_other_arch(tmp_path):
    ppc = build("powerpc64", "minidump", 2, str(tmp_path / "p"))
    mips = build("mips", "minidump", 2, str(tmp_path / "m"), abi="n64")
    ck.mismatched(ppc.kernel_path, mips.core_path, "not a minidump for this platform")


@pytest.mark.parametrize("case", [("minidump", 2, {"mmu": "mmu_g5"}),
                                  ("minidump", 1, {"mmu": "mmu_radix", "endian": "le"}),
                                  ("elf", 0, {"endian": "le"})], ids=lambda c: f"{c[0]}{c[1]}")
def test_truncated(case, tmp_path):
    fx = build("powerpc64", case[0], case[1], str(tmp_path), truncate_pages=2, **case[2])
    ck.truncated(fx)


def test_short_header(tmp_path):
    fx = build("powerpc64", "minidump", 2, str(tmp_path))
    with open(fx.core_path, "r+b") as f:
        f.truncate(100)
    ck.mismatched(fx.kernel_path, fx.core_path, "cannot read minidump header")
