"""The producers of crashinfo's sections: each returns plain data or raises
``Unavailable`` (or a data error, see ``DATA_ERRORS``) with a one-line reason."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .. import report as _report
from ..errors import KvmError
from ..kstate.memory import decode_text, lookup, read_cstring
from ..kstate.unwind import MAX_FRAMES

#: FreeBSD's MACHINE for each architecture (uname -m), used when ``machine`` is absent.
MACHINE = {"amd64": "amd64", "i386": "i386", "arm64": "arm64", "arm": "arm",
           "riscv": "riscv", "powerpc64": "powerpc", "powerpc": "powerpc", "mips": "mips"}
NO_DWARF = ("the kernel has no DWARF debug info (open the kernel.debug file, or a kernel "
            "built with makeoptions DEBUG=-g)")


class Unavailable(Exception):
    """The section cannot be produced; the message says why, in one line."""


def _drgn_errors() -> Tuple[type, ...]:
    try:
        import drgn
    except ImportError:
        return ()
    return (drgn.FaultError, drgn.ObjectAbsentError, drgn.MissingDebugInfoError)


#: What a dump's contents can make a producer raise (missing symbols, unknown
#: structure members, unreadable or implausible memory): a reason, not a crash.
DATA_ERRORS: Tuple[type, ...] = (KvmError, LookupError, ValueError, AttributeError,
                                 OverflowError) + _drgn_errors()


def describe(e: BaseException) -> str:
    """One line for a data error."""
    try:
        import drgn
        if isinstance(e, drgn.FaultError):
            return f"unreadable kernel memory at {e.address:#x}"
    except ImportError:
        pass
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return text.strip().splitlines()[0]


class Context:
    """The dump, and the drgn program when there is one (else why not)."""

    def __init__(self, kd: Any, prog: Any = None) -> None:
        self.kd, self.prog = kd, prog
        self.no_drgn: Optional[str] = None
        self.debug_info = False
        self._threads: Optional[List[Any]] = None
        if prog is not None:
            from ..drgn import has_debug_info
            self.debug_info = has_debug_info(prog)

    def open_drgn(self) -> None:
        from ..drgn import DrgnUnavailable, has_debug_info, program_for
        try:
            self.prog = program_for(self.kd)
        except DrgnUnavailable as e:
            self.no_drgn = e.message
            return
        except KvmError as e:
            self.no_drgn = f"drgn: {e.message}"
            return
        self.debug_info = has_debug_info(self.prog)

    def missing(self, needs: str) -> Optional[str]:
        """Why a section needing ``needs`` cannot be produced, or None."""
        if needs in ("symbols", "types") and self.prog is None:
            return f"needs drgn: {self.no_drgn}"
        if needs == "types" and not self.debug_info:
            return NO_DWARF
        return None

    def threads(self) -> List[Any]:
        if self._threads is None:
            self._threads = self.kd.threads()
        return self._threads


# -- from kvm_dbg's own kernel state -------------------------------------------------

def _kstring(kd: Any, name: str, maxlen: int = 256) -> Optional[str]:
    raw = read_cstring(kd, lookup(kd, name), maxlen)
    return decode_text(raw) if raw else None


def header(ctx: Context) -> Dict[str, Any]:
    """uname(1)'s fields from the kernel (``ostype``, ``osrelease``, ``version``,
    ``machine``), the host name and the panic string."""
    kd = ctx.kd
    info = kd.panic_info()
    version = " ".join((info.version or "").replace("\t", " ").split("\n")).strip()
    ostype = _kstring(kd, "ostype") or (version.split()[0] if version else None)
    return {"hostname": info.hostname, "core": kd.core_path, "ostype": ostype,
            "osrelease": info.osrelease, "version": version or None,
            "machine": _kstring(kd, "machine") or MACHINE.get(kd.arch),
            "panic": info.panicstr}


def _thread(ctx: Context, t: Any) -> Dict[str, Any]:
    d = _report.thread_dict(ctx.kd, t, backtrace=True, max_frames=MAX_FRAMES)
    d["comm"] = t.comm
    if ctx.prog is not None and ctx.debug_info and d["backtrace"]:
        _add_sources(ctx, t, d["backtrace"])
    return d


def _add_sources(ctx: Context, t: Any, frames: List[Dict[str, Any]]) -> None:
    """Each frame's source line from the kernel's DWARF (drgn's addr2line, which
    works on every architecture, unlike drgn's stack traces): a return address
    is looked up one byte back, at its call; the pcb's and a trap frame's pc
    are where the thread stopped."""
    kd = ctx.kd
    mask = (1 << 8 * kd.ptrsize) - 1
    for f, fr in zip(frames, t.frames(len(frames))):
        pc = fr.pc if fr.kind in ("pcb", "trapframe") else fr.pc - 1
        pc = (pc - kd.kerndisp) & mask        # drgn's program is in link addresses
        try:
            loc = ctx.prog.source_location(pc)[0]
        except LookupError:
            continue
        f["source"] = f"{loc.filename}:{loc.line}"


def backtrace(ctx: Context) -> Dict[str, Any]:
    """kgdb's ``bt`` of the crashed thread, then acttrace: every thread that was on
    a CPU, in CPU order; kgdb's unread message buffer banner first."""
    threads = ctx.threads()
    crashed = next((t for t in threads if t.crashed), None)
    oncpu = sorted((t for t in threads if t.oncpu is not None), key=lambda t: t.oncpu)
    if crashed is None and not oncpu:
        raise Unavailable("no thread list: " + "; ".join(ctx.kd.warnings[-1:])
                          if ctx.kd.warnings else "no crashed thread in this dump")
    return {"unread_msgbuf": ctx.kd.msgbuf().unread,
            "crashed": _thread(ctx, crashed) if crashed is not None else None,
            "acttrace": [_thread(ctx, t) for t in oncpu]}


def kldstat(ctx: Context) -> List[Dict[str, Any]]:
    """The loaded modules, with the symbol file kgdb (and drgn) would use."""
    return _report.klds(ctx.kd)["klds"]


def ps(ctx: Context) -> List[Dict[str, Any]]:
    """The process table (kvm-dbg ps)."""
    return _report.procs(ctx.kd)["procs"]


def dmesg(ctx: Context) -> Dict[str, Any]:
    """``dmesg -a``: the whole message buffer, every syslog facility."""
    mb = ctx.kd.msgbuf()
    if mb.source == "none":
        raise Unavailable("no message buffer (msgbufp missing or unreadable)")
    return {"lines": mb.dmesg(all_facilities=True), "source": mb.source}


# -- drgn, symbols only ----------------------------------------------------------------

def vmstat_i(ctx: Context) -> Dict[str, Any]:
    """``vmstat -i``: interrupt counters with a rate over ``time_uptime`` (vmstat on
    a dump divides by the analysing host's uptime; the dump's own is used here)."""
    from ..helpers import intr_counters
    prog = ctx.prog
    uptime = _time_uptime(prog)
    ms = uptime * 1000 if uptime else None
    rows, total = [], 0
    for name, count in intr_counters(prog):
        total += count
        if name.strip() and count:
            rows.append({"name": name.rstrip(), "total": count,
                         "rate": (count * 1000 + ms // 2) // ms if ms else None})
    return {"interrupts": rows, "total": total,
            "rate": (total * 1000 + ms // 2) // ms if ms else None,
            "uptime_seconds": uptime}


def _time_uptime(prog: Any) -> Optional[int]:
    try:
        sym = prog.symbol("time_uptime")
    except LookupError:
        return None
    if sym.size not in (4, 8):
        return None
    return int.from_bytes(prog.read(sym.address, sym.size),
                          "little" if prog.platform.flags & prog.platform.flags.IS_LITTLE_ENDIAN
                          else "big") or None


def pstat_t(ctx: Context) -> Dict[str, Any]:
    """``pstat -T``: open files of ``maxfiles`` (swap totals are not implemented)."""
    from ..helpers._common import symbol_address
    prog = ctx.prog
    return {"openfiles": _s32(prog.read_u32(symbol_address(prog, "openfiles"))),
            "maxfiles": _s32(prog.read_u32(symbol_address(prog, "maxfiles"))),
            "swap": None, "swap_unavailable": "swap totals (kvm_getswapinfo) not implemented"}


def _s32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def kernel_config(ctx: Context) -> Dict[str, Any]:
    """``config -x kernel``: the INCLUDE_CONFIG_FILE text."""
    from ..helpers import kern_conf
    return {"text": kern_conf(ctx.prog)}


def ddb_capture(ctx: Context) -> Dict[str, Any]:
    """``ddb capture print``: ddb's capture buffer."""
    from ..helpers import db_capture_buffer
    return {"text": db_capture_buffer(ctx.prog)}


# -- drgn with DWARF ---------------------------------------------------------------------

#: ``vmstat -s`` lines in its order: (struct vmmeter member, label).
VMSTAT_S = (
    ("v_swtch", "cpu context switches"), ("v_intr", "device interrupts"),
    ("v_soft", "software interrupts"), ("v_trap", "traps"), ("v_syscall", "system calls"),
    ("v_kthreads", "kernel threads created"), ("v_forks", " fork() calls"),
    ("v_vforks", "vfork() calls"), ("v_rforks", "rfork() calls"),
    ("v_swapin", "swap pager pageins"), ("v_swappgsin", "swap pager pages paged in"),
    ("v_swapout", "swap pager pageouts"), ("v_swappgsout", "swap pager pages paged out"),
    ("v_vnodein", "vnode pager pageins"), ("v_vnodepgsin", "vnode pager pages paged in"),
    ("v_vnodeout", "vnode pager pageouts"),
    ("v_vnodepgsout", "vnode pager pages paged out"),
    ("v_pdwakeups", "page daemon wakeups"),
    ("v_pdpages", "pages examined by the page daemon"),
    ("v_pdshortfalls", "clean page reclamation shortfalls"),
    ("v_reactivated", "pages reactivated by the page daemon"),
    ("v_cow_faults", "copy-on-write faults"),
    ("v_cow_optim", "copy-on-write optimized faults"),
    ("v_zfod", "zero fill pages zeroed"), ("v_ozfod", "zero fill pages prezeroed"),
    ("v_intrans", "intransit blocking page faults"),
    ("v_vm_faults", "total VM faults taken"), ("v_io_faults", "page faults requiring I/O"),
    ("v_kthreadpages", "pages affected by kernel thread creation"),
    ("v_forkpages", "pages affected by  fork()"), ("v_vforkpages", "pages affected by vfork()"),
    ("v_rforkpages", "pages affected by rfork()"), ("v_tfree", "pages freed"),
    ("v_dfree", "pages freed by daemon"), ("v_pfree", "pages freed by exiting processes"),
    ("v_active_count", "pages active"), ("v_inactive_count", "pages inactive"),
    ("v_laundry_count", "pages in the laundry queue"), ("v_wire_count", "pages wired down"),
    ("v_user_wire_count", "virtual user pages wired down"), ("v_free_count", "pages free"),
    ("v_page_size", "bytes per page"),
)


def vmstat_s(ctx: Context) -> Dict[str, Any]:
    """``vmstat -s``: ``vm_cnt``'s counters (counter(9) summed over CPUs) and
    integers; members this kernel's ``struct vmmeter`` lacks are listed apart
    (FreeBSD 12+ keeps the page queue counts per domain)."""
    import drgn

    from ..helpers import counter_u64_fetch
    prog = ctx.prog
    cnt = prog["vm_cnt"]
    members = {m.name for m in cnt.type_.members}
    rows, missing = [], []
    for field, label in VMSTAT_S:
        if field in members:
            obj = cnt.member_(field)
            value = counter_u64_fetch(obj) if obj.type_.unaliased_kind() == drgn.TypeKind.POINTER \
                else obj.value_()
        elif field == "v_user_wire_count" and _has(prog, "vm_user_wire_count"):
            value = prog["vm_user_wire_count"].value_()
        else:
            missing.append(field)
            continue
        rows.append({"field": field, "label": label, "value": value})
    return {"rows": rows, "missing": missing}


def _has(prog: Any, name: str) -> bool:
    from ..helpers._common import has_symbol
    return has_symbol(prog, name)


def vmstat_m(ctx: Context) -> Dict[str, Any]:
    """``vmstat -m``: malloc types with activity (InUse, MemUse in KiB, Requests,
    the bucket sizes used)."""
    from ..helpers import for_each_malloc_type, kmemzone_sizes, malloc_type_stats
    prog = ctx.prog
    sizes = kmemzone_sizes(prog)
    rows = []
    for mtp in for_each_malloc_type(prog):
        st = malloc_type_stats(mtp)
        if st["numallocs"] == 0 and st["inuse"] == 0:
            continue
        rows.append({"type": mtp.ks_shortdesc.string_().decode("utf-8", "replace"),
                     "inuse": st["inuse"], "memuse_kb": (st["memuse"] + 1023) // 1024,
                     "requests": st["numallocs"],
                     "sizes": [s for i, s in enumerate(sizes) if st["sizemask"] >> i & 1]})
    return {"types": rows}


def vmstat_z(ctx: Context) -> Dict[str, Any]:
    """``vmstat -z``: every UMA zone of every keg (libmemstat's arithmetic)."""
    from ..helpers import for_each_zone, uma_zone_stats
    return {"zones": [uma_zone_stats(z) for z in for_each_zone(ctx.prog)]}
