"""The kernel state that crashinfo's ``vmstat``/``pstat``/``ddb``/``config`` sections read,
for fixture dumps of any architecture (pointer size, byte order and alignment from ABIS).

Structures follow FreeBSD 14 (sys/sys/pcpu.h, sys/sys/vmmeter.h, sys/sys/malloc.h +
kern_malloc.c, vm/uma_int.h, kern/kern_intr.c + x86 intr_machdep.c, net/vnet.h,
ddb/db_capture.c, config(8)'s kernconfstring, vm/vm_phys.c's fictitious-segment tree);
examples/src/vmstat.h declares the same layouts in C and ``layout_checks`` asserts them.
Use it as a ``KernelSpec.extras`` entry; what a correct reader must see is in
``manifest.kstate.extras["vmstat"]`` (a VmstatExpect), computed here, never read back.

Per-CPU data: ``cpuid_to_pcpu[]``/``cpuhead`` point at one ``struct pcpu`` per CPU (an
array at ``__pcpu`` on amd64); dynamic per-CPU data (DPCPU) is ``dpcpu_off[cpu]`` +
``&pcpu_entry_<name>``; UMA per-CPU allocations (counter(9), malloc statistics) hold one
copy per CPU, UMA_PCPU_ALLOC_SIZE (a page) apart, and on amd64 the pointer stored is an
offset from ``__pcpu`` (machine/pcpu_aux.h zpcpu_offset_cpu).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

PAGE_SIZE = 4096
UMA_PCPU_ALLOC_SIZE = PAGE_SIZE
MAXCPU = 32                  # the example kernel's cpuid_to_pcpu[] / dpcpu_off[] length
MAXCOMLEN = 19
CPUSTATES = 5
M_VERSION = 2020110501
VNET_MAGIC_N = 0x5E4A6F28
UMA_ZFLAG_INTERNAL = 0x20000000
UMA_ZONE_SECONDARY = 0x0200
RB_RED_L, RB_RED_R = 1, 2
MACHINE = {"amd64": "amd64", "i386": "i386", "arm64": "arm64", "arm": "arm",
           "riscv": "riscv", "powerpc64": "powerpc", "powerpc": "powerpc", "mips": "mips"}
CPU_OPTION = {"amd64": "HAMMER", "i386": "I686_CPU", "arm64": "ARM64", "arm": "CPU_CORTEXA",
              "riscv": "RISCV", "powerpc64": "AIM", "powerpc": "AIM", "mips": "CPU_MIPS4KC"}


@dataclass(frozen=True)
class Abi:
    """What the C compiler decides per architecture (checked by examples/build.py)."""

    w: int                  # pointer and long
    u64_align: int          # alignof(uint64_t) inside structures (4 on i386)
    cache_line: int         # CACHE_LINE_SIZE
    uma_align: int          # UMA_SUPER_ALIGN: uma_cache's alignment
    pcpu_size: int          # sizeof(struct pcpu): a page on x86 (counters(9) need it)
    time_t: int
    paddr: int = 8          # vm_paddr_t (sys/<arch>/include/_types.h): 4 on arm and mips


ABIS = {
    "amd64": Abi(8, 8, 64, 128, 4096, 8), "i386": Abi(4, 4, 64, 64, 4096, 4),
    "arm64": Abi(8, 8, 128, 128, 1024, 8), "riscv": Abi(8, 8, 64, 64, 1024, 8),
    "powerpc64": Abi(8, 8, 128, 256, 1024, 8), "powerpc": Abi(4, 8, 128, 128, 1024, 8),
    "arm": Abi(4, 8, 64, 64, 1024, 8, 4), "mips": Abi(4, 8, 64, 64, 1024, 8, 4),
}


# ----------------------------------------------------------------- layout engine

def _up(n: int, a: int) -> int:
    return -(-n // a) * a


@dataclass(frozen=True)
class CType:
    size: int
    align: int


@dataclass(frozen=True)
class Arr(CType):
    elem: CType = CType(1, 1)
    n: int = 0


def arr(elem: CType, n: int) -> Arr:
    return Arr(elem.size * n, elem.align, elem, n)


class Struct(CType):
    """A C structure: members at natural alignment, ``align`` as __aligned(N),
    ``size`` when padded to a fixed size (struct pcpu)."""

    def __init__(self, name: str, members: Sequence[Tuple[str, CType]], align: int = 1,
                 size: Optional[int] = None) -> None:
        off, a = 0, align
        self.name = name
        self.members: Dict[str, Tuple[int, CType]] = {}
        for mname, t in members:
            off = _up(off, t.align)
            self.members[mname] = (off, t)
            off += t.size
            a = max(a, t.align)
        total = _up(off, a)
        if size is not None:
            if size < total or size % a:
                raise ValueError(f"struct {name}: size {size} < {total}")
            total = size
        object.__setattr__(self, "size", total)
        object.__setattr__(self, "align", a)

    def __hash__(self) -> int:
        return id(self)

    def off(self, path: str) -> int:
        """Offset of a dotted member path (``pc_allcpu.stqe_next``)."""
        t: CType = self
        base = 0
        for part in path.split("."):
            if not isinstance(t, Struct):
                raise KeyError(path)
            o, t = t.members[part]
            base += o
        return base


class Types:
    """The FreeBSD 14 structures (subsets) for one ABI."""

    def __init__(self, abi: Abi) -> None:
        w = abi.w
        u8, u16, u32, i32 = CType(1, 1), CType(2, 2), CType(4, 4), CType(4, 4)
        u64 = CType(8, abi.u64_align)
        paddr = u64 if abi.paddr == 8 else CType(4, 4)
        ptr = long = CType(w, w)
        time_t = CType(abi.time_t, abi.time_t if abi.time_t == 4 else abi.u64_align)
        self.ptr, self.u32, self.u64, self.long, self.time_t = ptr, u32, u64, long, time_t
        S = Struct
        link2 = [("le_next", ptr), ("le_prev", ptr)]
        self.lock_object = S("lock_object", [("lo_name", ptr), ("lo_flags", u32),
                                             ("lo_data", u32), ("lo_witness", ptr)])
        self.mtx = S("mtx", [("lock_object", self.lock_object), ("mtx_lock", ptr)])
        mtx_pad = S("mtx_padalign", [("lock_object", self.lock_object), ("mtx_lock", ptr)],
                    align=abi.cache_line)
        self.pcpu = S("pcpu", [
            ("pc_curthread", ptr), ("pc_idlethread", ptr), ("pc_fpcurthread", ptr),
            ("pc_deadthread", ptr), ("pc_curpcb", ptr), ("pc_sched", ptr),
            ("pc_switchtime", u64), ("pc_switchticks", i32), ("pc_cpuid", u32),
            ("pc_allcpu", S("", [("stqe_next", ptr)])), ("pc_spinlocks", ptr),
            ("pc_cp_time", arr(long, CPUSTATES)), ("pc_device", ptr), ("pc_netisr", ptr),
            ("pc_unused1", i32), ("pc_domain", i32),
            ("pc_rm_queue", S("rm_queue", [("rmq_next", ptr), ("rmq_prev", ptr)])),
            ("pc_dynamic", ptr), ("pc_early_dummy_counter", u64), ("pc_zpcpu_offset", ptr)],
            align=abi.cache_line, size=abi.pcpu_size)
        self.vmmeter = S("vmmeter", [(n, ptr) for n in VM_COUNTERS]
                         + [(n, u32) for n in VM_UINTS])
        self.mts = S("malloc_type_stats", [(n, u64) for n in (
            "mts_memalloced", "mts_memfreed", "mts_numallocs", "mts_numfrees", "mts_size",
            "_mts_reserved1", "_mts_reserved2", "_mts_reserved3")])
        self.mti = S("malloc_type_internal", [("mti_probes", arr(u32, 2)), ("mti_zone", u8),
                                              ("mti_stats", ptr), ("mti_spare", arr(long, 8))])
        self.malloc_type = S("malloc_type", [("ks_next", ptr), ("ks_version", long),
                                             ("ks_shortdesc", ptr), ("ks_mti", self.mti)])
        self.kmemzone = S("kmemzone", [("kz_size", i32), ("kz_name", ptr),
                                       ("kz_zone", arr(ptr, 1))])
        self.bucket = S("uma_bucket", [("ub_link", S("", [("stqe_next", ptr)])),
                                       ("ub_cnt", u16), ("ub_entries", u16), ("ub_seq", u32),
                                       ("ub_bucket", arr(ptr, 0))])
        self.ucb = S("uma_cache_bucket", [("ucb_bucket", ptr), ("ucb_cnt", u16),
                                          ("ucb_entries", u16), ("ucb_spare", u32)])
        self.cache = S("uma_cache", [("uc_freebucket", self.ucb), ("uc_allocbucket", self.ucb),
                                     ("uc_crossbucket", self.ucb), ("uc_allocs", u64),
                                     ("uc_frees", u64)], align=abi.uma_align)
        self.domain = S("uma_domain", [("ud_lock", mtx_pad), ("ud_part_slab", ptr),
                                       ("ud_free_slab", ptr), ("ud_full_slab", ptr),
                                       ("ud_pages", u32), ("ud_free_items", u32),
                                       ("ud_free_slabs", u32)], align=abi.cache_line)
        self.keg = S("uma_keg", [
            ("uk_hash", S("uma_hash", [("uh_slab_hash", ptr), ("uh_hashsize", u32),
                                       ("uh_hashmask", u32)])),
            ("uk_zones", S("", [("lh_first", ptr)])),
            ("uk_dr", S("domainset_ref", [("dr_policy", ptr), ("dr_iter", u32)])),
            ("uk_align", u32), ("uk_reserve", u32), ("uk_size", u32), ("uk_rsize", u32),
            ("uk_init", ptr), ("uk_fini", ptr), ("uk_allocf", ptr), ("uk_freef", ptr),
            ("uk_offset", long), ("uk_kva", ptr), ("uk_pgoff", u32), ("uk_ppera", u16),
            ("uk_ipers", u16), ("uk_flags", u32), ("uk_name", ptr),
            ("uk_link", S("", link2)), ("uk_domain", arr(self.domain, 0))])
        self.zdom = S("uma_zone_domain", [
            ("uzd_buckets", S("uma_bucketlist", [("stqh_first", ptr), ("stqh_last", ptr)])),
            ("uzd_cross", ptr), ("uzd_nitems", long), ("uzd_imax", long), ("uzd_imin", long),
            ("uzd_wss", long), ("uzd_seq", u32), ("uzd_lock", self.mtx)], align=abi.cache_line)
        self.zone = S("uma_zone", [
            ("uz_flags", u32), ("uz_size", u32), ("uz_ctor", ptr), ("uz_dtor", ptr),
            ("uz_smr", ptr), ("uz_max_items", u64), ("uz_bucket_max", u64),
            ("uz_bucket_size", u16), ("uz_bucket_size_max", u16), ("uz_sleepers", u32),
            ("uz_xdomain", ptr), ("uz_keg", ptr), ("uz_import", ptr), ("uz_release", ptr),
            ("uz_arg", ptr), ("uz_init", ptr), ("uz_fini", ptr), ("uz_items", u64),
            ("uz_sleeps", u64), ("uz_link", S("", link2)), ("uz_allocs", ptr),
            ("uz_frees", ptr), ("uz_fails", ptr), ("uz_name", ptr), ("uz_ctlname", ptr),
            ("uz_namecnt", i32), ("uz_bucket_size_min", u16), ("uz_pad0", u16),
            ("uz_oid", ptr), ("uz_warning", ptr), ("_uz_opaque", arr(ptr, 12)),
            ("uz_cross_lock", self.mtx), ("uz_cpu", arr(self.cache, 0))])
        self.vnet = S("vnet", [("vnet_le", S("", link2)), ("vnet_magic_n", u32),
                               ("vnet_ifcnt", u32), ("vnet_sockcnt", u32), ("vnet_state", u32),
                               ("vnet_data_mem", ptr), ("vnet_data_base", ptr),
                               ("vnet_shutdown", u8)], align=abi.cache_line)
        self.fict = S("vm_phys_fictitious_seg", [
            ("node", S("", [("rbe_left", ptr), ("rbe_right", ptr), ("rbe_parent", ptr)])),
            ("start", paddr), ("end", paddr), ("first_page", ptr)])


#: struct vmmeter's counter(9) fields, then its u_int fields (sys/sys/vmmeter.h).
VM_COUNTERS = ("v_swtch", "v_trap", "v_syscall", "v_intr", "v_soft", "v_vm_faults",
               "v_io_faults", "v_cow_faults", "v_cow_optim", "v_zfod", "v_ozfod", "v_swapin",
               "v_swapout", "v_swappgsin", "v_swappgsout", "v_vnodein", "v_vnodeout",
               "v_vnodepgsin", "v_vnodepgsout", "v_intrans", "v_reactivated", "v_pdwakeups",
               "v_pdpages", "v_pdshortfalls", "v_dfree", "v_pfree", "v_tfree", "v_forks",
               "v_vforks", "v_rforks", "v_kthreads", "v_forkpages", "v_vforkpages",
               "v_rforkpages", "v_kthreadpages", "v_wire_count")
VM_UINTS = ("v_page_size", "v_page_count", "v_free_reserved", "v_free_target", "v_free_min",
            "v_inactive_target", "v_pageout_free_min", "v_interrupt_free_min", "v_free_severe")
KMEMZONE_SIZES = (16, 32, 64, 128, 256, 384, 512, 1024, 2048, 4096, 8192, 16384, 32768,
                  65536)


def layout_checks(arch: str) -> List[str]:
    """C compile-time assertions (check.c, with kernel.h's CHECK/CHECK_SIZE) that
    examples/src/vmstat.h has the layouts written here."""
    t = Types(ABIS[arch])
    out = ['#include "vmstat.h"']
    for s in (t.pcpu, t.vmmeter, t.mts, t.mti, t.malloc_type, t.kmemzone, t.bucket, t.ucb,
              t.cache, t.domain, t.keg, t.zdom, t.zone, t.vnet, t.fict):
        for m, (off, _) in s.members.items():
            if not m.startswith("_"):
                out.append(f"CHECK({s.name}, {m}, {off:#x});")
        out.append(f"CHECK_SIZE({s.name}, {s.size:#x});")
    out.append(f"_Static_assert(sizeof(time_t) == {ABIS[arch].time_t}, \"time_t\");")
    return out


# ----------------------------------------------------------------- the content

@dataclass
class MallocSpec:
    name: str
    #: per CPU: memalloced, memfreed, numallocs, numfrees, size bitmask
    per_cpu: List[Tuple[int, int, int, int, int]]


@dataclass
class ZoneSpec:
    name: str
    allocs: List[int]                 # uz_allocs per CPU (counter(9))
    frees: List[int]
    cache_allocs: List[int]           # uma_cache uc_allocs per CPU
    cache_frees: List[int]
    cache_buckets: List[Tuple[int, int, int]]   # free/alloc/cross bucket counts per CPU
    zone_buckets: List[int]           # full buckets in the zone domain (ub_cnt each)
    fails: int = 0
    sleeps: int = 0
    xdomain: int = 0
    max_items: int = 0


@dataclass
class KegSpec:
    name: str
    size: int
    zones: List[ZoneSpec]
    free_items: int = 0               # uk_domain[0].ud_free_items
    flags: int = 0


@dataclass
class VmstatExpect:
    """What the dump holds (from the generator's bookkeeping)."""

    ostype: str = "FreeBSD"
    machine: str = ""
    kernconf: str = ""
    capture: str = ""
    capture_bufsize: int = 0
    intr: List[Tuple[str, int]] = field(default_factory=list)     # every slot, in order
    time_uptime: int = 0
    ticks: int = 0
    vmmeter: Dict[str, int] = field(default_factory=dict)
    malloc: List[Dict[str, object]] = field(default_factory=list)
    kmemzones: List[int] = field(default_factory=list)
    zones: List[Dict[str, object]] = field(default_factory=list)
    kegs: List[str] = field(default_factory=list)
    pcpu: Dict[int, int] = field(default_factory=dict)            # cpu -> struct pcpu
    curthread: Dict[int, int] = field(default_factory=dict)       # cpu -> struct thread
    dpcpu_pcputicks: Dict[int, int] = field(default_factory=dict)
    #: counter(9) name -> (value of the counter_u64_t, per-CPU values)
    counters: Dict[str, Tuple[int, List[int]]] = field(default_factory=dict)
    vnets: List[Tuple[int, int]] = field(default_factory=list)    # (struct vnet, ip_defttl)
    vnet0: int = 0
    ip_defttl_master: int = 64
    fict_starts: List[int] = field(default_factory=list)          # in order
    fict_nodes: Dict[int, Tuple[int, int]] = field(default_factory=dict)  # node -> (parent, bits)
    tids: Dict[int, int] = field(default_factory=dict)            # tid -> struct thread
    openfiles: int = 0
    maxfiles: int = 0
    zpcpu_base: int = 0


def _seq(base: int, ncpu: int, step: int) -> List[int]:
    return [base + step * c for c in range(ncpu)]


class Vmstat:
    """KernelSpec extra writing the structures above (see module docstring)."""

    name = "vmstat"

    def __init__(self, uptime: int = 194, vnet_defttl: Tuple[int, int] = (100, 128)) -> None:
        self.uptime = uptime
        self.vnet_defttl = vnet_defttl
        self.expect = VmstatExpect()

    # -- content (deterministic, scaled by the CPU count) ---------------------------
    def _content(self, ncpu: int) -> None:
        n = ncpu
        self.mallocs = [
            MallocSpec("sysctl", [(4096 + 512 * c, 4096, 40 + c, 40, 0b10) for c in range(n)]),
            MallocSpec("devbuf", [(1 << 20, 65536 * (c + 1), 900 + 10 * c, 300, 0b1001011)
                                  for c in range(n)]),
            MallocSpec("acpidev", [(0, 0, 0, 0, 0)] * n),       # never used: not listed
            MallocSpec("temp", [(300000 + 1000 * c, 299000, 5000 + c, 4990, 0b1111101)
                                for c in range(n)]),
            MallocSpec("proc-args", [(64 * 17, 64 * 12, 17, 12, 0b100)] + [(0, 0, 0, 0, 0)]
                       * (n - 1)),
        ]
        z = ZoneSpec
        self.kegs = [
            KegSpec("UMA Kegs", 384, [z("UMA Kegs", [110] + [0] * (n - 1), [2] + [0] * (n - 1),
                                        [7] * n, [1] * n, [(1, 2, 0)] * n, [])],
                    free_items=9, flags=UMA_ZFLAG_INTERNAL),
            KegSpec("mbuf", 256, [
                z("mbuf", _seq(5000, n, 700), _seq(4100, n, 650), _seq(300, n, 3),
                  _seq(280, n, 2), [(3, 4, 0)] * n, [128, 64], fails=2, xdomain=0,
                  max_items=4096 * 64),
                z("mbuf_packet", _seq(800, n, 11), _seq(770, n, 10), [20] * n, [18] * n,
                  [(1, 0, 0)] * n, [32])],
                free_items=40, flags=UMA_ZONE_SECONDARY),
            KegSpec("vmem btag", 56, [z("vmem btag", _seq(12000, n, 7), _seq(9000, n, 5),
                                        [0] * n, [0] * n, [(0, 0, 0)] * n, [], sleeps=3)],
                    free_items=77),
        ]
        self.intr = [("cpu0:timer", 19423), ("irq1: atkbd0", 12), ("stray irq7", 0),
                     ("irq9: acpi0", 3), ("irq14: ata0", 1531), ("irq16: em0:irq0", 80211),
                     ("cpu1:timer", 18897)]
        self.fict = [0xC0000000, 0xC1000000, 0xD0000000, 0xD8000000, 0xE0000000]

    # -- globals -------------------------------------------------------------------------
    def reserve(self, wr) -> None:
        """Globals in the writer's .rodata/.kdata arenas (before its heap exists)."""
        self.abi = ABIS[wr.arch]
        self.t = Types(self.abi)
        self.ncpu = wr.spec.ncpu
        if self.ncpu > MAXCPU:
            raise ValueError(f"vmstat: ncpu {self.ncpu} > {MAXCPU}")
        self._content(self.ncpu)
        w, kd, ro, t = self.abi.w, wr.kd, wr.ro, self.t
        g: Dict[str, int] = {}
        self.g = g

        def glob(name: str, size: int, align: int, arena=kd) -> None:
            g[name] = wr.gsym(arena, name, size, ".rodata" if arena is ro else ".kdata",
                              align)
            if align >= 16 and size % align:    # MIPS gas rounds such a section's size
                arena.alloc(align - size % align, 1)

        self.kernconf = _kernconf(wr.arch)
        # Arrays and large structures are __aligned(16) in vmstat.c (gcc would pick 16
        # or 32 by itself); the rest have their natural alignment.
        glob("ostype", 8, 16, ro)
        glob("machine", 16, 16, ro)
        glob("kernconfstring", len(self.kernconf) + 1, 16, ro)
        glob("kmemzones", t.kmemzone.size * (len(KMEMZONE_SIZES) + 1), 16, ro)
        for name, size, align in (
                ("cpuid_to_pcpu", MAXCPU * w, 16), ("dpcpu_off", MAXCPU * w, 16),
                ("cpuhead", 2 * w, w), ("all_cpus", 4 * w, 16), ("mp_maxcpus", 4, 4),
                ("vm_cnt", t.vmmeter.size, 16), ("kmemstatistics", w, w),
                ("uma_kegs", w, w), ("vm_ndomains", 4, 4), ("intrnames", w, w),
                ("intrcnt", w, w), ("sintrnames", w, w), ("sintrcnt", w, w),
                ("nintrcnt", 4, 4), ("db_capture_buf", w, w), ("db_capture_bufsize", 4, 4),
                ("db_capture_maxbufsize", 4, 4), ("db_capture_bufoff", 4, 4),
                ("db_capture_bufpadding", 4, 4), ("db_capture_inpager", 4, 4),
                ("db_capture_inprogress", 4, 4), ("vnet0", w, w), ("vnet_head", w, w),
                ("vm_phys_fictitious_tree", w, w), ("tidhashtbl", w, w), ("tidhash", w, w),
                ("openfiles", 4, 4), ("maxfiles", 4, 4), ("ticks", 4, 4),
                ("time_uptime", t.time_t.size, t.time_t.align)):
            glob(name, size, align)
        if wr.arch == "amd64":
            glob("__pcpu", w, w)
        # Linker sets: __start_set_X, the master copies, __stop_set_X (then a gap so no
        # other symbol shares __stop's address).
        for setname, entries in (("set_pcpu", [("pcpu_entry_pcputicks", 4)]),
                                 ("set_vnet", [("vnet_entry_ip_defttl", 4)])):
            glob(f"__start_{setname}", 0, 16)
            for ename, esize in entries:
                glob(ename, esize, 4)
            glob(f"__stop_{setname}", 0, 16)
            kd.alloc(8, 8)

    # -- structures ----------------------------------------------------------------------
    def write(self, wr) -> None:
        """Structures in the writer's heap, globals filled in; sets ``self.expect``."""
        self.wr, self.heap, self.kd, self.ro = wr, wr.heap, wr.kd, wr.ro
        e, g, t, w = self.expect, self.g, self.t, self.abi.w
        e.machine = MACHINE[wr.arch]
        e.kernconf = self.kernconf
        self.ro.put(g["ostype"], b"FreeBSD\0")
        self.ro.put(g["machine"], e.machine.encode() + b"\0")
        self.ro.put(g["kernconfstring"], self.kernconf.encode() + b"\0")
        self._int(g["mp_maxcpus"], MAXCPU, 4)
        self._int(g["all_cpus"], (1 << self.ncpu) - 1, 4 if w == 4 else 8)
        self._pcpu()
        self._vmmeter()
        self._malloc()
        self._uma()
        self._intr()
        self._ddb()
        self._vnet()
        self._fict()
        self._tidhash()
        e.openfiles, e.maxfiles = 87, 130416
        self._int(g["openfiles"], e.openfiles, 4)
        self._int(g["maxfiles"], e.maxfiles, 4)
        e.time_uptime = self.uptime
        e.ticks = self.uptime * wr.pr.hz + 37
        self._int(g["time_uptime"], e.time_uptime, t.time_t.size)
        self._int(g["ticks"], e.ticks, 4)

    # -- primitive writes: a global lives in kd/ro, anything else in the heap ------------
    def _arena(self, va: int):
        for a in (self.kd, self.ro, self.heap):
            if a.base <= va < a.end:
                return a
        raise ValueError(f"vmstat: {va:#x} outside the arenas")

    def _int(self, va: int, value: int, size: int) -> None:
        self._arena(va).int(va, value, size)

    def _ptr(self, va: int, value: int) -> None:
        self._int(va, value, self.abi.w)

    def _cstr(self, s: str) -> int:
        return self.heap.cstr(s)

    def _struct(self, s: Struct, count: int = 1) -> int:
        return self.heap.alloc(s.size * count, s.align)

    # -- per-CPU ------------------------------------------------------------------------
    def _pcpu(self) -> None:
        wr, e, g, t, w, n = self.wr, self.expect, self.g, self.t, self.abi.w, self.ncpu
        P = t.pcpu
        base = self.heap.alloc(P.size * n, PAGE_SIZE)        # __pcpu[] (one page each on x86)
        self.pcpu_base = base
        if "__pcpu" in g:
            self._ptr(g["__pcpu"], base)
        # UMA per-CPU allocations: n pages, copy for CPU c at + c * UMA_PCPU_ALLOC_SIZE.
        self.zpcpu = self.heap.alloc(UMA_PCPU_ALLOC_SIZE * n, PAGE_SIZE)
        self.zpcpu_next = 0
        e.zpcpu_base = self.zpcpu
        # DPCPU: a copy of set_pcpu per CPU.
        start, stop = g["__start_set_pcpu"], g["__stop_set_pcpu"]
        dpcpu = self.heap.alloc(_up(stop - start, 64) * n, 64)
        threads = {t_.oncpu: ta for lst in wr.tds.values() for t_, ta in lst}
        idle = {t_.name: ta for lst in wr.tds.values() for t_, ta in lst}
        prev = 0
        for c in reversed(range(n)):                  # STAILQ: cpuhead -> cpu0 -> cpu1
            pc = base + c * P.size
            e.pcpu[c] = pc
            self._ptr(g["cpuid_to_pcpu"] + c * w, pc)
            cur = threads.get(c, idle.get(f"idle: cpu{c}", 0))
            e.curthread[c] = cur
            self._ptr(pc + P.off("pc_curthread"), cur)
            self._ptr(pc + P.off("pc_idlethread"), idle.get(f"idle: cpu{c}", 0))
            self._int(pc + P.off("pc_cpuid"), c, 4)
            self._ptr(pc + P.off("pc_allcpu.stqe_next"), prev)
            off = dpcpu + c * _up(stop - start, 64) - start
            self._ptr(g["dpcpu_off"] + c * w, off)
            self._ptr(pc + P.off("pc_dynamic"), off)
            self._ptr(pc + P.off("pc_zpcpu_offset"), self._zpcpu_offset(c))
            ticks = 9700 + 31 * c
            e.dpcpu_pcputicks[c] = ticks
            self._int(g["pcpu_entry_pcputicks"] + off, ticks, 4)
            prev = pc
        self._ptr(g["cpuhead"], base)
        self._ptr(g["cpuhead"] + w, base + (n - 1) * P.size + P.off("pc_allcpu.stqe_next"))

    def _zpcpu_offset(self, cpu: int) -> int:
        """zpcpu_offset_cpu(cpu): amd64 adds &__pcpu[0] (pcpu_aux.h)."""
        return (self.pcpu_base if "__pcpu" in self.g else 0) + UMA_PCPU_ALLOC_SIZE * cpu

    def _zpcpu_alloc(self, size: int) -> Tuple[int, int]:
        """(value stored in the kernel, address of CPU 0's copy) of a per-CPU allocation."""
        self.zpcpu_next = _up(self.zpcpu_next, min(size, 64))
        addr = self.zpcpu + self.zpcpu_next
        self.zpcpu_next += size
        if self.zpcpu_next > UMA_PCPU_ALLOC_SIZE:
            raise ValueError("vmstat: per-CPU page full")
        stored = addr - (self.pcpu_base if "__pcpu" in self.g else 0)
        return stored % (1 << 8 * self.abi.w), addr

    def _counter(self, name: str, per_cpu: Sequence[int]) -> int:
        stored, addr = self._zpcpu_alloc(8)
        for c, v in enumerate(per_cpu):
            self._int(addr + c * UMA_PCPU_ALLOC_SIZE, v, 8)
        self.expect.counters[name] = (stored, list(per_cpu))
        return stored

    # -- vmstat -s ----------------------------------------------------------------------
    def _vmmeter(self) -> None:
        V, base, n = self.t.vmmeter, self.g["vm_cnt"], self.ncpu
        for i, name in enumerate(VM_COUNTERS):
            per = [(1000 + 37 * i) * (c + 1) + 7 * i for c in range(n)]
            self._ptr(base + V.off(name), self._counter("vm_cnt." + name, per))
            self.expect.vmmeter[name] = sum(per)
        values = dict(v_page_size=PAGE_SIZE, v_page_count=1011834, v_free_reserved=1613,
                      v_free_target=21739, v_free_min=6420, v_inactive_target=32608,
                      v_pageout_free_min=34, v_interrupt_free_min=2, v_free_severe=4016)
        for name in VM_UINTS:
            self._int(base + V.off(name), values[name], 4)
            self.expect.vmmeter[name] = values[name]

    # -- vmstat -m ------------------------------------------------------------------------
    def _malloc(self) -> None:
        t, g, e, n = self.t, self.g, self.expect, self.ncpu
        Z = t.kmemzone
        for i, size in enumerate(KMEMZONE_SIZES):
            self.ro.int(g["kmemzones"] + i * Z.size + Z.off("kz_size"), size, 4)
            self.ro.ptr(g["kmemzones"] + i * Z.size + Z.off("kz_name"),
                        self._cstr(f"malloc-{size}"))
        e.kmemzones = list(KMEMZONE_SIZES)
        M, Mti, St = t.malloc_type, t.mti, t.mts
        nxt = 0
        addrs: Dict[str, int] = {}
        for spec in reversed(self.mallocs):           # kmemstatistics: first listed first
            mt = self._struct(M)
            addrs[spec.name] = mt
            self._ptr(mt + M.off("ks_next"), nxt)
            self._int(mt + M.off("ks_version"), M_VERSION, self.abi.w)
            self._ptr(mt + M.off("ks_shortdesc"), self._cstr(spec.name))
            stored, addr = self._zpcpu_alloc(St.size)
            self._ptr(mt + M.off("ks_mti") + Mti.off("mti_stats"), stored)
            for c, stats in enumerate(spec.per_cpu[:n]):
                for fname, v in zip(("mts_memalloced", "mts_memfreed", "mts_numallocs",
                                     "mts_numfrees", "mts_size"), stats):
                    self._int(addr + c * UMA_PCPU_ALLOC_SIZE + St.off(fname), v, 8)
            nxt = mt
        self._ptr(g["kmemstatistics"], nxt)
        for spec in self.mallocs:
            st = spec.per_cpu[:n]
            mask = 0
            for s in st:
                mask |= s[4]
            e.malloc.append({
                "type": spec.name, "address": addrs[spec.name],
                "inuse": sum(s[2] for s in st) - sum(s[3] for s in st),
                "memuse_bytes": sum(s[0] for s in st) - sum(s[1] for s in st),
                "requests": sum(s[2] for s in st),
                "sizes": [KMEMZONE_SIZES[i] for i in range(len(KMEMZONE_SIZES))
                          if mask >> i & 1]})

    # -- vmstat -z ------------------------------------------------------------------------
    def _uma(self) -> None:
        t, g, e, n = self.t, self.g, self.expect, self.ncpu
        K, Zt, C, D, ZD = t.keg, t.zone, t.cache, t.domain, t.zdom
        self._int(g["vm_ndomains"], 1, 4)
        zone_size = _up(Zt.size + C.size * n, ZD.align) + ZD.size
        keg_addrs = []
        for kspec in self.kegs:
            keg = self.heap.alloc(K.size + D.size, K.align)
            keg_addrs.append(keg)
            self._int(keg + K.off("uk_size"), kspec.size, 4)
            self._int(keg + K.off("uk_rsize"), _up(kspec.size, 16), 4)
            self._int(keg + K.off("uk_flags"), kspec.flags, 4)
            self._ptr(keg + K.off("uk_name"), self._cstr(kspec.name))
            self._int(keg + K.off("uk_domain") + D.off("ud_free_items"), kspec.free_items, 4)
            zaddrs = []
            for i, zs in enumerate(kspec.zones):
                z = self.heap.alloc(zone_size, Zt.align)
                zaddrs.append(z)
                self._zone(z, zs, keg, kspec, i == 0)
            # uk_zones in list order (the first one is the keg's primary zone).
            for a, b in zip(zaddrs, zaddrs[1:] + [0]):
                self._ptr(a + Zt.off("uz_link.le_next"), b)
            self._ptr(keg + K.off("uk_zones.lh_first"), zaddrs[0] if zaddrs else 0)
        for a, b in zip(keg_addrs, keg_addrs[1:] + [0]):
            self._ptr(a + K.off("uk_link.le_next"), b)
        self._ptr(g["uma_kegs"], keg_addrs[0])
        e.kegs = [k.name for k in self.kegs]

    def _zone(self, z: int, zs: ZoneSpec, keg: int, kspec: KegSpec, primary: bool) -> None:
        t, e, n = self.t, self.expect, self.ncpu
        Zt, C, ZD, B, U = t.zone, t.cache, t.zdom, t.bucket, t.ucb
        self._ptr(z + Zt.off("uz_keg"), keg)
        self._ptr(z + Zt.off("uz_name"), self._cstr(zs.name))
        self._int(z + Zt.off("uz_flags"), kspec.flags, 4)
        self._int(z + Zt.off("uz_size"), kspec.size, 4)
        self._int(z + Zt.off("uz_max_items"), zs.max_items, 8)
        self._int(z + Zt.off("uz_sleeps"), zs.sleeps, 8)
        tag = f"{zs.name}."
        self._ptr(z + Zt.off("uz_allocs"), self._counter(tag + "uz_allocs", zs.allocs[:n]))
        self._ptr(z + Zt.off("uz_frees"), self._counter(tag + "uz_frees", zs.frees[:n]))
        self._ptr(z + Zt.off("uz_fails"), self._counter(tag + "uz_fails",
                                                          [zs.fails] + [0] * (n - 1)))
        self._ptr(z + Zt.off("uz_xdomain"), self._counter(tag + "uz_xdomain",
                                                            [zs.xdomain] + [0] * (n - 1)))
        cpu0 = z + Zt.off("uz_cpu")
        for c in range(n):
            cache = cpu0 + c * C.size
            self._int(cache + C.off("uc_allocs"), zs.cache_allocs[c], 8)
            self._int(cache + C.off("uc_frees"), zs.cache_frees[c], 8)
            for bname, cnt in zip(("uc_freebucket", "uc_allocbucket", "uc_crossbucket"),
                                  zs.cache_buckets[c]):
                self._int(cache + C.off(bname) + U.off("ucb_cnt"), cnt, 2)
        zdom = _up(cpu0 + C.size * n, ZD.align)       # ZDOM_GET(z, 0)
        assert zdom == cpu0 + C.size * n
        prev_link = zdom + ZD.off("uzd_buckets.stqh_first")
        for cnt in zs.zone_buckets:
            b = self.heap.alloc(B.size + 8 * self.abi.w, B.align)
            self._int(b + B.off("ub_cnt"), cnt, 2)
            self._int(b + B.off("ub_entries"), 254, 2)
            self._ptr(prev_link, b)
            prev_link = b + B.off("ub_link.stqe_next")
        self._ptr(zdom + ZD.off("uzd_buckets.stqh_last"), prev_link)
        self._int(zdom + ZD.off("uzd_nitems"), sum(zs.zone_buckets), self.abi.w)
        # libmemstat's arithmetic (memstat_kvm_uma), the expected vmstat -z row.
        allocs, frees = sum(zs.allocs[:n]), sum(zs.frees[:n])
        allocs = max(allocs, frees)
        free = 0
        if not kspec.flags & UMA_ZFLAG_INTERNAL:
            allocs += sum(zs.cache_allocs[:n])
            frees += sum(zs.cache_frees[:n])
            free += sum(sum(b) for b in zs.cache_buckets[:n])
        free += sum(zs.zone_buckets)
        if primary:
            free += kspec.free_items
        e.zones.append({"name": zs.name, "size": kspec.size, "limit": zs.max_items,
                        "used": allocs - frees, "free": free, "requests": allocs,
                        "fail": zs.fails, "sleep": zs.sleeps, "xdomain": zs.xdomain,
                        "address": z})

    # -- vmstat -i ------------------------------------------------------------------------
    def _intr(self) -> None:
        g, w, e = self.g, self.abi.w, self.expect
        slot = MAXCOMLEN + 1                          # x86 intrcnt_setname: "%-*s"
        names = b"".join(f"{nm:<{MAXCOMLEN}}".encode()[:MAXCOMLEN] + b"\0"
                         for nm, _ in self.intr)
        nb = self.heap.alloc(len(names), 8)
        self.heap.put(nb, names)
        cb = self.heap.alloc(w * len(self.intr), w)
        for i, (_, count) in enumerate(self.intr):
            self.heap.int(cb + i * w, count, w)
        self._ptr(g["intrnames"], nb)
        self._ptr(g["intrcnt"], cb)
        self._int(g["sintrnames"], len(names), w)
        self._int(g["sintrcnt"], w * len(self.intr), w)
        self._int(g["nintrcnt"], len(self.intr), 4)
        e.intr = [(f"{nm:<{MAXCOMLEN}}"[:MAXCOMLEN], c) for nm, c in self.intr]
        assert len(names) == slot * len(self.intr)

    # -- ddb capture --------------------------------------------------------------------
    def _ddb(self) -> None:
        g, e, wr = self.g, self.expect, self.wr
        crashed = next(t for t in wr.exp.threads if t.crashed)
        lines = ["db:0:kdb.enter.panic>  show pcpu",
                 f"cpuid        = {crashed.oncpu}",
                 f"curthread    = {crashed.td_addr:#x}: pid {crashed.pid} tid {crashed.tid}"
                 f" \"{crashed.tdname}\"",
                 "db:0:kdb.enter.panic>  bt",
                 f"Tracing pid {crashed.pid} tid {crashed.tid} td {crashed.td_addr:#x}"]
        lines += [f"{fn}() at {fn}+0x{pc - wr.funcs[fn][0]:x}/frame 0x0"
                  for pc, fn in zip(crashed.backtrace, crashed.functions)]
        text = "\n".join(lines) + "\n"
        size = 48 * 1024 // 16                        # a small DDB_CAPTURE_DEFAULTBUFSIZE
        buf = self.heap.alloc(size, 64)
        self.heap.put(buf, text.encode())
        self._ptr(g["db_capture_buf"], buf)
        self._int(g["db_capture_bufsize"], size, 4)
        self._int(g["db_capture_maxbufsize"], 5 * 1024 * 1024, 4)
        self._int(g["db_capture_bufoff"], len(text), 4)
        e.capture, e.capture_bufsize = text, size

    # -- VNET -----------------------------------------------------------------------------
    def _vnet(self) -> None:
        g, e, t = self.g, self.expect, self.t
        V = t.vnet
        start, stop = g["__start_set_vnet"], g["__stop_set_vnet"]
        self._int(g["vnet_entry_ip_defttl"], e.ip_defttl_master, 4)
        prev = 0
        for i, ttl in enumerate(self.vnet_defttl):     # vnet0 first created, jail later
            v = self._struct(V)
            mem = self.heap.alloc(_up(stop - start, 64), 64)
            self._int(v + V.off("vnet_magic_n"), VNET_MAGIC_N, 4)
            self._int(v + V.off("vnet_ifcnt"), 2 - i, 4)
            self._ptr(v + V.off("vnet_data_mem"), mem)
            self._ptr(v + V.off("vnet_data_base"), mem - start)
            self._int(g["vnet_entry_ip_defttl"] - start + mem, ttl, 4)
            # LIST_INSERT_HEAD(&vnet_head, vnet, vnet_le): newest first.
            self._ptr(v + V.off("vnet_le.le_next"), prev)
            if prev:
                self._ptr(prev + V.off("vnet_le.le_prev"), v + V.off("vnet_le.le_next"))
            if i == 0:
                e.vnet0 = v
                self._ptr(g["vnet0"], v)
            e.vnets.insert(0, (v, ttl))
            prev = v
        self._ptr(g["vnet_head"], prev)
        self._ptr(prev + V.off("vnet_le.le_prev"), g["vnet_head"])

    # -- an RB tree (tree(3), FreeBSD 13+ encoding: colour bits in rbe_parent) -------------
    def _fict(self) -> None:
        F, e = self.t.fict, self.expect
        nodes = {s: self._struct(F) for s in self.fict}
        paddr = self.abi.paddr
        for s, a in nodes.items():
            self._int(a + F.off("start"), s, paddr)
            self._int(a + F.off("end"), s + 0x800000, paddr)

        def build(keys: List[int], parent: int) -> int:
            if not keys:
                return 0
            mid = len(keys) // 2
            a = nodes[keys[mid]]
            left, right = build(keys[:mid], a), build(keys[mid + 1:], a)
            self._ptr(a + F.off("node.rbe_left"), left)
            self._ptr(a + F.off("node.rbe_right"), right)
            # Rank-difference bits of this node's children live in its parent word.
            bits = (RB_RED_L if left and not right else 0) | (RB_RED_R if right and not left
                                                              else 0)
            self._ptr(a + F.off("node.rbe_parent"), parent | bits)
            e.fict_nodes[a] = (parent, bits)
            return a

        root = build(sorted(self.fict), 0)
        self._ptr(self.g["vm_phys_fictitious_tree"], root)
        e.fict_starts = sorted(self.fict)

    # -- tdfind's hash, and td_proc -----------------------------------------------------
    def _tidhash(self) -> None:
        wr, g, e, w = self.wr, self.g, self.expect, self.abi.w
        mask = 0x3F
        td_hash = THREAD_TD_PLIST[w] + 4 * 2 * w      # after td_plist/runq/slpq/lockq
        tbl = self.heap.alloc((mask + 1) * w, 64)
        heads: Dict[int, int] = {}
        for key, lst in wr.tds.items():
            for spec, ta in lst:
                e.tids[spec.tid] = ta
                self._ptr(ta + w, wr.addrs[key])      # td_proc (tdfind's pid check)
                b = spec.tid & mask
                first = heads.get(b, 0)               # LIST_INSERT_HEAD
                self._ptr(ta + td_hash, first)
                self._ptr(ta + td_hash + w, tbl + b * w)
                if first:
                    self._ptr(first + td_hash + w, ta + td_hash)
                heads[b] = ta
        for b, first in heads.items():
            self._ptr(tbl + b * w, first)
        self._ptr(g["tidhashtbl"], tbl)
        self._int(g["tidhash"], mask, w)


#: offsetof(struct thread, td_plist) per pointer size (kernelstate.THREAD).
THREAD_TD_PLIST = {8: 0x10, 4: 0x8}


def _kernconf(arch: str) -> str:
    """config(8)'s INCLUDE_CONFIG_FILE text (kernconfstring)."""
    lines = ["options\tCONFIG_AUTOGENERATED", "ident\tGENERIC", f"machine\t{MACHINE[arch]}",
             f"cpu\t{CPU_OPTION[arch]}", "makeoptions\tDEBUG=-g", "options\tVIMAGE",
             "options\tINCLUDE_CONFIG_FILE", "options\tDDB", "options\tKDB",
             "options\tSMP", "device\tem", "device\tpci", "device\tada"]
    return "".join(line + "\n" for line in lines)

