"""Plain-data reports about an open dump (what the CLI prints, as dicts).

Each function returns JSON-serialisable data with a fixed shape, documented
by the JSON schema in docs/cli-json-schema.json; the CLI renders the same
dicts as text.  Kernel-state failures become ``None`` fields and warnings,
never exceptions: a triage report of a half-broken dump is still useful.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .errors import KvmError
from .kvm import Kvm

BACKTRACE_FRAMES = 16
MSGBUF_TAIL_LINES = 20


def _safe(fn, default=None):
    try:
        return fn()
    except (KvmError, ValueError, LookupError):
        return default


def symbolize(kd: Kvm, pc: int) -> str:
    """``function+0xoff`` for a code address, else the hex address."""
    from .kstate import ksyms

    syms = ksyms.for_kvm(kd)
    hit = syms.function_at(pc) if syms is not None else None
    if hit is None:
        return f"0x{pc:x}"
    name, start = hit
    return f"{name}+0x{pc - start:x}" if pc != start else name


def info(kd: Kvm) -> Dict[str, Any]:
    """Identity of the dump: files, architecture, format, hz, version, panic."""
    pinfo = _safe(kd.panic_info)
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
    }


def uptime(kd: Kvm) -> Optional[float]:
    """Seconds since boot from ``ticks`` / ``hz``, when the kernel has both."""
    ticks, hz = kd.lookup("ticks"), kd.lookup("hz")
    if ticks is None or hz is None:
        return None
    t = _safe(lambda: kd.read_int(ticks, 4))
    h = _safe(lambda: kd.read_int(hz, 4, signed=True))
    if t is None or not h or h <= 0:
        return None
    return round(t / h, 2)


def thread_dict(kd: Kvm, t: Any, backtrace: bool = False,
                max_frames: int = BACKTRACE_FRAMES) -> Dict[str, Any]:
    d = {"tid": t.tid, "pid": t.pid, "name": t.name, "crashed": bool(t.crashed),
         "oncpu": t.oncpu,
         "registers": {k: f"0x{v:x}" for k, v in sorted(t.registers.items())}}
    if backtrace:
        d["backtrace"] = [{"pc": f"0x{pc:x}", "symbol": symbolize(kd, pc)}
                          for pc in _safe(lambda: t.backtrace()[:max_frames], [])]
    return d


def threads(kd: Kvm, backtrace: bool = False) -> List[Dict[str, Any]]:
    return [thread_dict(kd, t, backtrace) for t in kd.threads()]


def procs(kd: Kvm) -> List[Dict[str, Any]]:
    return [{"pid": p.pid, "ppid": p.ppid, "state": p.state, "comm": p.comm,
             "nthreads": p.nthreads, "tids": list(p.tids), "address": f"0x{p.addr:x}"}
            for p in kd.procs()]


def dmesg(kd: Kvm) -> Dict[str, Any]:
    mb = kd.msgbuf()
    return {"text": mb.text, "unread": mb.unread, "source": mb.source}


def klds(kd: Kvm) -> List[Dict[str, Any]]:
    return [{"name": k.name, "path": k.path, "address": f"0x{k.address:x}",
             "size": k.size} for k in kd.klds()]


def triage(kd: Kvm) -> Dict[str, Any]:
    """What happened: panic, crashed thread and its symbolized backtrace,
    version, uptime, format, kernel/dump match, the message buffer's tail."""
    report = info(kd)
    ths = _safe(kd.threads, []) or []
    crashed = next((t for t in ths if t.crashed), None)
    report["crashed_thread"] = thread_dict(kd, crashed, backtrace=True) if crashed else None
    report["nthreads"] = len(ths)
    mb = _safe(kd.msgbuf)
    lines = mb.text.rstrip("\n").splitlines() if mb is not None and mb.text else []
    report["msgbuf_tail"] = lines[-MSGBUF_TAIL_LINES:]
    report["warnings"] = list(dict.fromkeys(kd.warnings))
    return report


def signature(report: Dict[str, Any], frames: int = 3) -> str:
    """Grouping key of a triage report: panic string plus the top frames."""
    panic = report.get("panic") or "(no panic string)"
    ct = report.get("crashed_thread") or {}
    top = [f["symbol"] for f in (ct.get("backtrace") or [])[:frames]]
    return panic + (" @ " + " < ".join(top) if top else "")
