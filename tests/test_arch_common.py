"""Checks every non-x86 architecture shares (arm, mips, riscv, powerpc): a generated
fixture read back through kvm_dbg must agree with the generator's manifest."""

from __future__ import annotations

import arch_checks as ck
import pytest
from fixturegen import arm, mips, ppc64, riscv

CASES = arm.CASES + mips.CASES + riscv.CASES + ppc64.CASES + ppc64.ELF_CASES

# Truncated dumps: the lost pages fail cleanly, everything else still reads.
TRUNCATED = [
    ("arm", "minidump", 1, {"mmu": "v6", "endian": "be", "truncate_pages": 3}),
    ("arm", "minidump", 2, {"mmu": "v4", "endian": "le", "truncate_pages": 3}),
    ("arm", "elf", 0, {"mmu": "v6", "endian": "le", "truncate_pages": 3}),
    ("mips", "minidump", 2, {"abi": "o32", "truncate_pages": 2}),
    ("mips", "minidump", 2, {"abi": "n64", "truncate_pages": 2}),
    ("riscv", "minidump", 1, {"truncate_pages": 2}),
    ("riscv", "minidump", 2, {"truncate_pages": 2}),
    ("powerpc64", "minidump", 2, {"mmu": "mmu_g5", "truncate_pages": 2}),
    ("powerpc64", "minidump", 1, {"mmu": "mmu_radix", "endian": "le", "truncate_pages": 2}),
    ("powerpc64", "elf", 0, {"endian": "le", "truncate_pages": 2}),
]

fx = ck.case_fixture(CASES)


def test_probes(fx):
    ck.probes_read_back(fx)


def test_holes_and_partial_reads(fx):
    ck.holes_fail(fx)


def test_compat_reads(fx):
    ck.compat_reads(fx)


def test_walk_pages(fx):
    ck.walk_matches(fx)


def test_kerndisp(fx):
    """Zero, except a displaced (PIE) powerpc64 kernel's minidump."""
    displaced = fx.arch == "powerpc64" and fx.fmt == "minidump"
    ck.kerndisp(fx, fx.manifest.notes.get("kerndisp", 0) if displaced else 0)


def test_nonnative_requires_resolver(fx):
    ck.nonnative_needs_resolver(fx, fx.arch)


@pytest.mark.parametrize("case", TRUNCATED, ids=ck.case_id)
def test_truncated(case, tmp_path):
    ck.truncated(ck.build_case(case, tmp_path))
