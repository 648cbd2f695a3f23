"""counter(9) (sys/sys/counter.h): a ``counter_u64_t`` is a UMA per-CPU
``uint64_t``; its value is the sum of every CPU's copy."""

from __future__ import annotations

from typing import Any, List

from .pcpu import CPU_FOREACH, zpcpu_get_cpu


def counter_u64_fetch_cpus(c: Any) -> List[int]:
    """Each present CPU's copy of counter ``c``, in ``CPU_FOREACH`` order."""
    return [zpcpu_get_cpu(c, cpu)[0].value_() for cpu in CPU_FOREACH(c.prog_)]


def counter_u64_fetch(c: Any) -> int:
    """``counter_u64_fetch(c)``: the counter's value (sum over ``CPU_FOREACH``), as
    a 64-bit unsigned integer like the kernel's."""
    return sum(counter_u64_fetch_cpus(c)) & (1 << 64) - 1
