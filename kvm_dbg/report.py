"""Plain-data reports about an open dump, and their one text rendering.

Each report function returns JSON-serialisable data with a fixed shape,
documented by the JSON schema in docs/cli-json-schema.json, always with the
dump's ``warnings`` (what kernel state could not be read, and why).  Bad
*data* in the dump becomes ``None`` fields plus warnings (kstate never raises
for it); a bug raises.  The ``text_*`` functions render the tables once, for
the CLI and for the debuggers' ``kvm-*`` commands alike.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from .errors import KvmError
from .kstate import ksyms
from .kvm import Kvm

BACKTRACE_FRAMES = 16
MSGBUF_TAIL_LINES = 20


def _safe(fn: Callable[[], Any], default: Any = None) -> Any:
    """``fn()``, or ``default`` when the dump cannot be read there (KvmError)."""
    try:
        return fn()
    except KvmError:
        return default


def warnings(kd: Any) -> List[str]:
    """The descriptor's warnings so far, each once, in the order they arose."""
    return list(dict.fromkeys(getattr(kd, "warnings", None) or []))


def symbolize(kd: Kvm, pc: int) -> str:
    """``function+0xoff`` for a code address, else the hex address."""
    syms = ksyms.for_kvm(kd)
    hit = syms.function_at(pc) if syms is not None else None
    if hit is None:
        return f"0x{pc:x}"
    name, start = hit
    return f"{name}+0x{pc - start:x}" if pc != start else name


def info(kd: Kvm) -> Dict[str, Any]:
    """Identity of the dump: files, architecture, format, hz, version, panic."""
    pinfo = kd.panic_info()
    hz = kd.lookup("hz")
    return {
        "kernel": kd.kernel_path, "core": kd.core_path, "arch": kd.arch, "format": kd.format,
        "byteorder": kd.byteorder, "native": bool(kd.native), "kerndisp": kd.kerndisp,
        "hz": _safe(lambda: kd.read_int(hz, 4, signed=True)) if hz is not None else None,
        "version": pinfo.version.strip() if pinfo and pinfo.version else None,
        "osreldate": pinfo.osreldate if pinfo else None,
        "hostname": pinfo.hostname if pinfo else None,
        "panic": pinfo.panicstr if pinfo else None,
        "kernel_matches_dump": (None if pinfo is None or pinfo.version_mismatch is None
                                else not pinfo.version_mismatch),
        "uptime_seconds": uptime(kd),
        "warnings": warnings(kd),
    }


#: time_t is 32 bits on i386 only (sys/<arch>/include/_types.h); 64 elsewhere.
_TIME_T_32 = ("i386",)


def uptime(kd: Kvm) -> Optional[float]:
    """Seconds since boot: ``time_uptime`` (time_t), else ``ticks`` / ``hz``;
    None when the kernel has neither or the dump lacks their pages."""
    addr = kd.lookup("time_uptime")
    if addr is not None:
        syms = ksyms.for_kvm(kd)
        size = syms.size("time_uptime") if syms is not None else None
        if size not in (4, 8):
            size = 4 if kd.arch in _TIME_T_32 else 8
        value = _safe(lambda: kd.read_int(addr, size, signed=True))
        if value is not None and value >= 0:
            return float(value)
    ticks, hz = kd.lookup("ticks"), kd.lookup("hz")
    if ticks is None or hz is None:
        return None
    t = _safe(lambda: kd.read_int(ticks, 4))
    h = _safe(lambda: kd.read_int(hz, 4, signed=True))
    if t is None or not h or h <= 0:
        return None
    # init_param1() (kern/subr_param.c) starts the int ``ticks`` at
    # INT_MAX - hz * 600 so that it wraps ten minutes after boot.
    start = (0x7FFFFFFF - h * 600) & 0xFFFFFFFF
    return round(((t - start) & 0xFFFFFFFF) / h, 2)


def thread_dict(kd: Kvm, t: Any, backtrace: bool = False,
                max_frames: int = BACKTRACE_FRAMES) -> Dict[str, Any]:
    d = {"tid": t.tid, "pid": t.pid, "name": t.name, "crashed": bool(t.crashed),
         "oncpu": t.oncpu,
         "registers": {k: f"0x{v:x}" for k, v in sorted(t.registers.items())}}
    if backtrace:
        d["backtrace"] = [{"pc": f"0x{pc:x}", "symbol": symbolize(kd, pc)}
                          for pc in t.backtrace()[:max_frames]]
    return d


def threads(kd: Kvm, backtrace: bool = False, rows: Optional[List[Any]] = None
            ) -> Dict[str, Any]:
    """Every kernel thread (crashed first); ``rows``: threads already listed."""
    listed = kd.threads() if rows is None else rows
    return {"threads": [thread_dict(kd, t, backtrace) for t in listed],
            "warnings": warnings(kd)}


def procs(kd: Kvm) -> Dict[str, Any]:
    rows = [{"pid": p.pid, "ppid": p.ppid, "state": p.state, "comm": p.comm,
             "nthreads": p.nthreads, "tids": list(p.tids), "address": f"0x{p.addr:x}"}
            for p in kd.procs()]
    return {"procs": rows, "warnings": warnings(kd)}


def dmesg(kd: Kvm) -> Dict[str, Any]:
    mb = kd.msgbuf()
    return {"text": mb.text, "unread": mb.unread, "source": mb.source,
            "warnings": warnings(kd)}


def klds(kd: Kvm) -> Dict[str, Any]:
    """Loaded modules, each with the symbol file found for it (kgdb's search
    under the dump's sysroot) or why none was."""
    files = {(m.name, m.address): m for m in kd.modules()}
    rows = []
    for k in kd.klds():
        m = files.get((k.name, k.address))
        rows.append({"name": k.name, "path": k.path, "address": f"0x{k.address:x}",
                     "size": k.size, "file": m.file if m is not None else None,
                     "file_error": m.error if m is not None else None,
                     "found_in": m.where if m is not None else None,
                     "searched": list(m.searched) if m is not None else []})
    return {"klds": rows, "warnings": warnings(kd)}


def triage(kd: Kvm) -> Dict[str, Any]:
    """What happened: panic, crashed thread and its symbolized backtrace,
    version, uptime, format, kernel/dump match, the message buffer's tail."""
    report = info(kd)
    ths = kd.threads()
    crashed = next((t for t in ths if t.crashed), None)
    report["crashed_thread"] = thread_dict(kd, crashed, backtrace=True) if crashed else None
    report["nthreads"] = len(ths)
    mb = kd.msgbuf()
    lines = mb.text.rstrip("\n").splitlines() if mb.text else []
    report["msgbuf_tail"] = lines[-MSGBUF_TAIL_LINES:]
    report["warnings"] = warnings(kd)
    return report


def textdump_info(core: str, td: Any) -> Dict[str, Any]:
    """What a textdump says about itself (it has no memory to read)."""
    return {"core": core, "format": "textdump", "files": sorted(td.files),
            "version": td.version.strip() if td.version else None, "panic": td.panic,
            "warnings": []}


def textdump_triage(core: str, td: Any) -> Dict[str, Any]:
    """Triage of a textdump: panic, version, the ddb capture, the msgbuf's tail."""
    lines = td.msgbuf.rstrip("\n").splitlines() if td.msgbuf else []
    out = textdump_info(core, td)
    out["kernel"] = None
    out["ddb"] = td.ddb
    out["msgbuf_tail"] = lines[-MSGBUF_TAIL_LINES:]
    return out


def signature(report: Dict[str, Any], frames: int = 3) -> str:
    """Grouping key of a triage report: panic string plus the top frames."""
    panic = report.get("panic") or "(no panic string)"
    ct = report.get("crashed_thread") or {}
    top = [f["symbol"] for f in (ct.get("backtrace") or [])[:frames]]
    return panic + (" @ " + " < ".join(top) if top else "")


# -- text ------------------------------------------------------------------------

def text_threads(rows: List[Dict[str, Any]]) -> str:
    """The thread table (``kvm-dbg threads``; the debuggers' thread listing)."""
    out = [f"{'TID':>8} {'PID':>6} {'CPU':>4}  NAME"]
    for t in rows:
        cpu = "-" if t["oncpu"] is None else t["oncpu"]
        pid = "-" if t["pid"] is None else t["pid"]
        out.append(f"{t['tid']:>8} {pid:>6} {cpu:>4}  {t['name']}")
        for i, f in enumerate(t.get("backtrace", [])):
            out.append(f"{'':>21}#{i:<2} {f['pc']:>18}  {f['symbol']}")
    return "\n".join(out)


def text_procs(rows: List[Dict[str, Any]]) -> str:
    """The process table (``kvm-dbg ps``, ``kvm-ps``)."""
    out = [f"{'PID':>6} {'PPID':>6} {'STATE':<10} {'THR':>4} {'ADDRESS':>18}  COMM"]
    for p in rows:
        ppid = "-" if p["ppid"] is None else p["ppid"]
        state = "-" if p["state"] is None else p["state"]
        pid = "?" if p["pid"] is None else p["pid"]
        out.append(f"{pid:>6} {ppid:>6} {state!s:<10} {p['nthreads']:>4} "
                   f"{p['address']:>18}  {p['comm']}")
    return "\n".join(out)


def text_klds(rows: List[Dict[str, Any]]) -> str:
    """The module table (``kvm-dbg kld``, ``kvm-kld``), with the symbol file
    found for each module and where, or why there is none."""
    out = [f"{'ADDRESS':>18} {'SIZE':>10}  NAME  PATH  SYMBOL FILE"]
    for k in rows:
        size = "-" if k["size"] is None else f"0x{k['size']:x}"
        out.append(f"{k['address']:>18} {size:>10}  {k['name']}  {k['path'] or '-'}  "
                   f"{_symbol_file(k)}")
    return "\n".join(out)


def _symbol_file(row: Dict[str, Any]) -> str:
    """``FILE (from WHERE)``, ``(unusable: WHY; from WHERE)`` or ``(none: WHY;
    looked in DIRS)`` for a row of :func:`klds`."""
    file, error, where = row.get("file"), row.get("file_error"), row.get("found_in")
    if file and not error:
        return f"{file} (from {where})" if where else file
    if file:
        return f"(unusable: {error}; from {where})" if where else f"(unusable: {error})"
    searched = row.get("searched") or []
    looked = f"; looked in {', '.join(searched)}" if searched else ""
    return f"(none: {error or 'not looked for'}{looked})"


def text_warnings(items: List[str]) -> str:
    """One ``warning:`` line per warning (empty when there are none)."""
    return "\n".join(f"warning: {w}" for w in items)
