"""UMA kegs and zones (vm/uma_int.h): ``uma_kegs``, each keg's zones, a zone's
per-CPU caches (``uz_cpu[]``) and per-domain state (``ZDOM_GET``), and the
``vmstat -z`` row of a zone computed as libmemstat's ``memstat_kvm_uma``."""

from __future__ import annotations

from typing import Any, Dict, Iterator

from .counter import counter_u64_fetch
from .pcpu import CPU_FOREACH, mp_maxid
from .queue import LIST_FOREACH, STAILQ_FOREACH

UMA_ZONE_SECONDARY = 0x0200
UMA_ZFLAG_INTERNAL = 0x20000000


def for_each_keg(prog: Any) -> Iterator[Any]:
    """Every ``struct uma_keg *`` on ``uma_kegs`` (``uk_link``)."""
    return LIST_FOREACH(prog["uma_kegs"], "uk_link")


def keg_zones(keg: Any) -> Iterator[Any]:
    """A keg's zones (``uk_zones``/``uz_link``); the first is its primary zone."""
    return LIST_FOREACH(keg.uk_zones, "uz_link")


def for_each_zone(prog: Any) -> Iterator[Any]:
    """Every zone of every keg, in ``vmstat -z`` order (cache zones have no keg and
    are not listed, as with ``vmstat -M``)."""
    for keg in for_each_keg(prog):
        yield from keg_zones(keg)


def zone_cache(zone: Any, cpu: int) -> Any:
    """``zone->uz_cpu[cpu]``: the CPU's ``struct uma_cache``."""
    return zone.uz_cpu[cpu]


def ZDOM_GET(zone: Any, n: int) -> Any:
    """``ZDOM_GET(z, n)``: domain ``n``'s ``struct uma_zone_domain *``, stored right
    after the per-CPU caches ``uz_cpu[mp_maxid + 1]``."""
    import drgn
    prog = zone.prog_
    first = zone.uz_cpu[mp_maxid(prog) + 1].address_
    zdom = prog.type("struct uma_zone_domain")
    return drgn.Object(prog, prog.pointer_type(zdom), value=first + n * zdom.size)


def _ndomains(prog: Any) -> int:
    return prog["vm_ndomains"].value_()


def uma_zone_stats(zone: Any) -> Dict[str, Any]:
    """A zone's ``vmstat -z`` row: ``name``, ``size``, ``limit``, ``used``, ``free``,
    ``requests``, ``fail``, ``sleep``, ``xdomain``.  Like libmemstat: the counters
    plus every CPU cache's allocs/frees (not for UMA_ZFLAG_INTERNAL kegs), free
    items in CPU buckets, the zone domains' full buckets and, for the keg's primary
    zone only, the keg's free slab items."""
    prog = zone.prog_
    keg = zone.uz_keg
    allocs = counter_u64_fetch(zone.uz_allocs)
    frees = counter_u64_fetch(zone.uz_frees)
    allocs = max(allocs, frees)              # libmemstat: racy counters
    free = 0
    if not keg.uk_flags.value_() & UMA_ZFLAG_INTERNAL:
        for cpu in CPU_FOREACH(prog):
            c = zone_cache(zone, cpu)
            allocs += c.uc_allocs.value_()
            frees += c.uc_frees.value_()
            free += sum(c.member_(b).ucb_cnt.value_()
                        for b in ("uc_allocbucket", "uc_freebucket", "uc_crossbucket"))
    ndom = _ndomains(prog)
    for d in range(ndom):
        free += sum(b.ub_cnt.value_() for b in STAILQ_FOREACH(ZDOM_GET(zone, d).uzd_buckets,
                                                                "ub_link"))
    first = keg.uk_zones.lh_first.value_()
    if not (keg.uk_flags.value_() & UMA_ZONE_SECONDARY and first != zone.value_()):
        free += sum(keg.uk_domain[d].ud_free_items.value_() for d in range(ndom))
    return {"name": zone.uz_name.string_().decode(errors="replace"),
            "size": keg.uk_size.value_(), "limit": zone.uz_max_items.value_(),
            "used": allocs - frees, "free": free, "requests": allocs,
            "fail": counter_u64_fetch(zone.uz_fails), "sleep": zone.uz_sleeps.value_(),
            "xdomain": counter_u64_fetch(zone.uz_xdomain)}
