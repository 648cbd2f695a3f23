"""arm (32-bit): minidumps v1/v2 (ARMv4/ARMv6 PTEs, LE/BE) and ELF full dumps."""

from __future__ import annotations

import struct

import arch_checks as ck
import pytest
from fixturegen import build
from fixturegen.arm import CASES

import kvm_dbg
from kvm_dbg import KvmError

fx = ck.case_fixture(CASES)


def test_format_names(fx):
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.byteorder == ("little" if fx.options["endian"] == "le" else "big")
        if fx.fmt == "minidump":
            assert kd.format == f"minidump v{fx.version} (ARM{fx.options['mmu']})"
        else:
            assert kd.format == "ELF full dump"



def test_v4_tiny_page_is_refused(tmp_path):
    fx = build("arm", "minidump", 2, str(tmp_path), mmu="v4")
    tiny = [h for h in fx.manifest.holes if h.kind == "tiny"]
    assert tiny
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        with pytest.raises(KvmError) as ei:
            kd.read(tiny[0].va, 8)
    assert ei.value.hard == "_arm_minidump_kvatop: pte not supported"


def test_unknown_mmuformat_is_v6(tmp_path):
    fx = build("arm", "minidump", 2, str(tmp_path), mmu="v6", mmuformat=0)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.format.endswith("(ARMv6)")
    ck.probes_read_back(fx)


def test_dump_avail_with_32bit_entries_is_rejected(tmp_path):
    fx = build("arm", "minidump", 2, str(tmp_path), dump_avail_32=True)
    err = ck.mismatched(fx.kernel_path, fx.core_path, "64-bit")
    assert fx.core_path in str(err)


def test_not_a_minidump_for_this_platform(tmp_path):
    arm = build("arm", "minidump", 2, str(tmp_path / "a"))
    rv = build("riscv", "minidump", 2, str(tmp_path / "r"))
    err = ck.mismatched(arm.kernel_path, rv.core_path, "not a minidump for this platform")
    assert "riscv" in str(err)


def test_elf_core_of_other_machine_is_invalid(tmp_path):
    arm = build("arm", "elf", 0, str(tmp_path / "a"))
    ppc = build("powerpc", "elf", 0, str(tmp_path / "p"))
    ck.mismatched(arm.kernel_path, ppc.core_path, "invalid core")


def test_elf_l1_address_rule(tmp_path):
    """ARMv4 stores kernel_l1pa as a PA, ARMv6 as a KVA; both must find the L1 table."""
    for mmu in ("v4", "v6"):
        fx = build("arm", "elf", 0, str(tmp_path / mmu), mmu=mmu, delta=False)
        with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
            assert kd.backend.l1pa == fx.manifest.notes["l1pa"]
        assert (fx.manifest.notes["kernel_l1pa"] >= 0xC0000000) == (mmu == "v6")


def test_elf_invalid_address_text(tmp_path):
    fx = build("arm", "elf", 0, str(tmp_path))
    hole = next(h for h in fx.manifest.holes if h.kind == "unmapped")
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        with pytest.raises(KvmError) as ei:
            kd.read(hole.va, 4)
    assert ei.value.message == f"Invalid address ({hole.va:x})"


def test_header_is_in_kernel_byte_order(tmp_path):
    fx = build("arm", "minidump", 2, str(tmp_path), endian="be")
    with open(fx.core_path, "rb") as f:
        head = f.read(56)
    assert struct.unpack_from(">I", head, 24)[0] == 2
    assert struct.unpack_from(">I", head, 40)[0] == 0xC0000000
