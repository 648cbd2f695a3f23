"""malloc(9) types (sys/sys/malloc.h, kern/kern_malloc.c): the ``kmemstatistics``
chain and each type's per-CPU ``struct malloc_type_stats``, summed as
``vmstat -m`` (libmemstat) does."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

from ._common import walk
from .pcpu import CPU_FOREACH, zpcpu_get_cpu

STAT_FIELDS = ("mts_memalloced", "mts_memfreed", "mts_numallocs", "mts_numfrees")


def for_each_malloc_type(prog: Any) -> Iterator[Any]:
    """Every ``struct malloc_type *`` on ``kmemstatistics`` (``ks_next``)."""
    return walk(prog["kmemstatistics"], lambda m: m.ks_next, "kmemstatistics")


def malloc_type_cpu_stats(mtp: Any) -> Iterator[Any]:
    """Each present CPU's ``struct malloc_type_stats`` of a malloc type: FreeBSD 13+
    keeps them in a UMA per-CPU allocation (``ks_mti.mti_stats``), older kernels in
    an array indexed by CPU (``((struct malloc_type_internal *)ks_handle)->mti_stats``)."""
    prog = mtp.prog_
    if any(m.name == "ks_mti" for m in mtp.type_.type.members):
        stats = mtp.ks_mti.mti_stats
        for cpu in CPU_FOREACH(prog):
            yield zpcpu_get_cpu(stats, cpu)[0]
    else:
        import drgn
        internal = drgn.cast("struct malloc_type_internal *", mtp.ks_handle)
        for cpu in CPU_FOREACH(prog):
            yield internal.mti_stats[cpu]


def malloc_type_stats(mtp: Any) -> Dict[str, int]:
    """A type's statistics summed over CPUs: ``memalloced``, ``memfreed``,
    ``numallocs``, ``numfrees``, ``sizemask`` (OR of ``mts_size``: bit i = the
    i-th ``kmemzones`` size), ``inuse`` and ``memuse`` (bytes)."""
    out = dict.fromkeys(("memalloced", "memfreed", "numallocs", "numfrees", "sizemask"), 0)
    for st in malloc_type_cpu_stats(mtp):
        for f in STAT_FIELDS:
            out[f[4:]] += st.member_(f).value_()
        out["sizemask"] |= st.mts_size.value_()
    out["inuse"] = out["numallocs"] - out["numfrees"]
    out["memuse"] = out["memalloced"] - out["memfreed"]
    return out


def kmemzone_sizes(prog: Any) -> List[int]:
    """``kmemzones[].kz_size`` up to the terminating 0: the malloc bucket sizes
    that a ``mts_size`` bitmask indexes."""
    zones = prog["kmemzones"]
    out = []
    for i in range(len(zones) if zones.type_.length else 64):
        size = zones[i].kz_size.value_()
        if not size:
            break
        out.append(size)
    return out
