"""Large arm64 / riscv minidumps for benchmarks/bench_read.py (``--arch``): a
``ram_gib`` GiB machine with ``dumped_gib`` GiB of dumped direct-map pages in
``runs`` contiguous runs ("stamp" page pattern), like ``build_large`` for amd64."""

from __future__ import annotations

import os
from typing import List, Tuple

from .machine import G1, K4


def _runs(pr, base_pfn: int, ram_pages: int, dumped_gib: int, runs: int) -> None:
    m = pr.m
    per = dumped_gib * G1 // runs // K4
    stride = ram_pages // runs
    pts: List[Tuple[str, int, int]] = []
    for i in range(runs):
        s = base_pfn + stride * i + (2 * G1 // K4 if i == 0 else 0) + 1
        m.populated_runs.append((s, s + per))
        m.dmap_dump_runs.append((s, s + per))
        pts.append(("dmap_large", m.dmap_va(s * K4) + 0x40, 0x40))
        pts.append(("dmap_large_end", m.dmap_va((s + per) * K4) - 8, 8))
    pr.points.extend(pts)


def build_large_arch(arch: str, tmpdir: str, ram_gib: int = 64, dumped_gib: int = 4,
                     runs: int = 4):
    """arm64 (v2, 4 KiB pages) or riscv (v2) large minidump; returns the Fixture."""
    os.makedirs(tmpdir, exist_ok=True)
    kpath = os.path.join(tmpdir, f"kernel-{arch}-large")
    cpath = os.path.join(tmpdir, f"vmcore-{arch}-large")
    if arch == "riscv":
        from . import riscv

        base = riscv.DMAP_PHYS
        ram = [(base, base + 0x900000), (base + 0xA00000, base + ram_gib * G1)]
        pr = riscv.profile("minidump", 2, {"dump_avail": ram, "pattern": "stamp"})
        _runs(pr, base // K4, ram_gib * G1 // K4, dumped_gib, runs)
        return riscv.write(pr, 2, kpath, cpath, {"large": True})
    if arch == "arm64":
        from . import Fixture, _manifest
        from .kernel import write_kernel
        from .minidump import write_minidump
        from .profiles import ARM64, PROFILES

        base = ARM64["DMAP_PHYS"]
        ram = [(base, base + 0xBCA0000), (base + 0xBD00000, base + ram_gib * G1)]
        pr = PROFILES["arm64"]("minidump", 2, {"dump_avail": ram, "pattern": "stamp"})
        _runs(pr, base // K4, ram_gib * G1 // K4, dumped_gib, runs)
        m = pr.m
        write_kernel(m, kpath, pr.text_va, pr.data_va, pr.version, pr.bss_va, pr.bss_size,
                     pr.bss_syms, pr.abs_syms)
        lay = write_minidump(m, cpath, 2)
        return Fixture("arm64", "minidump", 2, kpath, cpath, _manifest(pr, "minidump", 2, lay),
                       m, lay, pr, {"large": True})
    raise ValueError(f"no large builder for {arch}")
