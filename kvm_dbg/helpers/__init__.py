"""FreeBSD kernel helpers for drgn: plain functions over drgn Objects, named after
the kernel's own macros and functions (queue(3), tree(3), pcpu, counter(9), VNET,
malloc(9), UMA, interrupt counters, msgbuf, kernel config, ddb capture buffer).

They need a ``drgn.Program`` (``kvm_dbg.drgn.program``); the type-based ones need
the kernel's DWARF, the symbol-based ones (``intr_counters``, ``db_capture_buffer``,
``kern_conf``) only its symbol table.  See docs/drgn.md.
"""

from .conf import kern_conf
from .counter import counter_u64_fetch, counter_u64_fetch_cpus
from .ddb import db_capture_buffer
from .intr import intr_counters
from .malloc import (
    for_each_malloc_type,
    kmemzone_sizes,
    malloc_type_cpu_stats,
    malloc_type_stats,
)
from .msgbuf import msgbuf_peekbytes
from .pcpu import (
    CPU_FOREACH,
    DPCPU_ID_GET,
    DPCPU_ID_PTR,
    DPCPU_SUM,
    mp_maxid,
    pcpu_find,
    zpcpu_get_cpu,
    zpcpu_offset_cpu,
)
from .proc import for_each_proc, for_each_thread, pfind, tdfind
from .queue import LIST_FOREACH, SLIST_FOREACH, STAILQ_FOREACH, TAILQ_FOREACH
from .tree import RB_FOREACH, RB_LEFT, RB_MIN, RB_NEXT, RB_PARENT, RB_RIGHT, RB_ROOT
from .uma import ZDOM_GET, for_each_keg, for_each_zone, keg_zones, uma_zone_stats, zone_cache
from .vnet import VNET, VNET_FOREACH

__all__ = [
    "CPU_FOREACH", "DPCPU_ID_GET", "DPCPU_ID_PTR", "DPCPU_SUM", "LIST_FOREACH",
    "RB_FOREACH", "RB_LEFT", "RB_MIN", "RB_NEXT", "RB_PARENT", "RB_RIGHT", "RB_ROOT",
    "SLIST_FOREACH", "STAILQ_FOREACH", "TAILQ_FOREACH", "VNET", "VNET_FOREACH", "ZDOM_GET",
    "counter_u64_fetch", "counter_u64_fetch_cpus", "db_capture_buffer", "for_each_keg",
    "for_each_malloc_type", "for_each_proc", "for_each_thread", "for_each_zone",
    "intr_counters", "keg_zones", "kern_conf", "kmemzone_sizes", "malloc_type_cpu_stats",
    "malloc_type_stats", "mp_maxid", "msgbuf_peekbytes", "pcpu_find", "pfind", "tdfind",
    "uma_zone_stats", "zone_cache", "zpcpu_get_cpu", "zpcpu_offset_cpu",
]
