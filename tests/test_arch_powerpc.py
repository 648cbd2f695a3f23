"""powerpc64 minidumps (HPT and radix, BE/LE) and powerpc/powerpc64 ELF virtual cores."""

from __future__ import annotations

import arch_checks as ck
import pytest
from fixturegen import build

import kvm_dbg
from kvm_dbg import KvmError


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



def test_short_header(tmp_path):
    fx = build("powerpc64", "minidump", 2, str(tmp_path))
    with open(fx.core_path, "r+b") as f:
        f.truncate(100)
    ck.mismatched(fx.kernel_path, fx.core_path, "cannot read minidump header")


def test_hpt_walk_scales_with_valid_kernel_entries(tmp_path):
    """Every free slot of the 8 MiB hashed table holds a valid PTE the walk must
    skip (user VSID or VRMA): the scan over them runs in bulk, the result is
    the clean table's, and the walk stays far below a per-PTE Python loop."""
    import struct
    import time

    from test_fuzz_harness import CALL_BOUND_S, time_limit

    fx = build("powerpc64", "minidump", 2, str(tmp_path), mmu="mmu_g5")
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        clean = list(kd.walk_pages())
        off, n = kd.backend.pmap_off, kd.backend.nptegs * 8
    noise = (struct.pack(">QQ", (0x123 << 12) | 1, 0x3012),             # user VSID
             struct.pack(">QQ", (0x1FFFFFF << 24) | (1 << 62) | 1, 0x3012))  # VRMA
    with open(fx.core_path, "r+b") as f:
        f.seek(off)
        table = bytearray(f.read(n * 16))
        for ptex in range(n):
            if not table[ptex * 16 + 7] & 1:
                table[ptex * 16:ptex * 16 + 16] = noise[ptex & 1]
        f.seek(off)
        f.write(table)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        best = float("inf")
        for _ in range(3):
            with time_limit(CALL_BOUND_S, "hpt walk_pages"):
                t = time.perf_counter()
                pages = list(kd.walk_pages())
                best = min(best, time.perf_counter() - t)
            assert pages == clean
    assert best < 0.08, f"HPT walk took {best:.3f} s over {n} PTEs"
