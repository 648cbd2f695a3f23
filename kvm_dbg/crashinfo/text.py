"""core.txt text of a crashinfo report (the dict from ``crashinfo.report``): the
layout of crashinfo.sh, with each tool's own column formats."""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, List

RULE = "-" * 72


def _frames(frames: List[Dict[str, Any]]) -> List[str]:
    out = []
    for i, f in enumerate(frames):
        line = f"#{i:<2} {f['pc']} in {f['symbol']}"
        if f.get("source"):
            line += f" at {f['source']}"
        out.append(line)
    return out


def _date(iso: str) -> str:
    when = datetime.datetime.fromisoformat(iso)
    return when.strftime("%a %b %e %H:%M:%S %Z %Y")


def _header(r: Dict[str, Any], d: Dict[str, Any]) -> List[str]:
    uname = " ".join(str(x) for x in (d["ostype"], d["hostname"], d["osrelease"],
                                        d["version"], d["machine"]) if x)
    return [f"{d['hostname'] or '(unknown host)'} dumped core - see {d['core']}", "",
            _date(r["date"]), "", uname, "",
            f"panic: {d['panic']}" if d["panic"] else "panic: (no panic string)", ""]


def _backtrace(d: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    if d["unread_msgbuf"]:
        body = d["unread_msgbuf"].rstrip("\n").split("\n")
        out += ["Unread portion of the kernel message buffer:", *body, ""]
    ct = d["crashed"]
    if ct is not None:
        out.append(f"bt: {ct['name']} (tid {ct['tid']})")
        out += _frames(ct["backtrace"]) or ["(no registers: no backtrace)"]
        out.append("")
    for t in d["acttrace"]:
        out.append(f"Tracing command {t['comm']} pid {t['pid']} tid {t['tid']} "
                   f"(CPU {t['oncpu']})")
        out += _frames(t["backtrace"]) or ["(no registers: no backtrace)"]
        out.append("")
    return out


def _kldstat(rows: List[Dict[str, Any]]) -> List[str]:
    out = [f"{'ADDRESS':>18}  NAME  FILE"]
    out += [f"{k['address']:>18}  {k['name']}  {k['file'] or '(no file)'}" for k in rows]
    return out


def _ps(rows: List[Dict[str, Any]]) -> List[str]:
    from ..report import text_procs
    return text_procs(rows).split("\n")


def _vmstat_s(d: Dict[str, Any]) -> List[str]:
    out = [f"{r['value']:9d} {r['label']}" for r in d["rows"]]
    if d["missing"]:
        out.append(f"(not in this kernel's struct vmmeter: {', '.join(d['missing'])})")
    return out


def _vmstat_m(d: Dict[str, Any]) -> List[str]:
    out = [f"{'Type':>13} {'InUse':>5} {'MemUse':>6} {'Requests':>8}  Size(s)"]
    for t in d["types"]:
        out.append(f"{t['type']:>13} {t['inuse']:5d} {t['memuse_kb']:5d}K "
                   f"{t['requests']:8d}  {','.join(str(s) for s in t['sizes'])}")
    return out


def _vmstat_z(d: Dict[str, Any]) -> List[str]:
    out = [f"{'ITEM':<20} {'SIZE':>6} {'LIMIT':>6} {'USED':>8} {'FREE':>8} {'REQ':>8} "
           f"{'FAIL':>8}{'SLEEP':>4} {'XDOMAIN':>4}"]
    for z in d["zones"]:
        out.append(f"{z['name'] + ':':<20} {z['size']:6d}, {z['limit']:6d},{z['used']:8d},"
                   f"{z['free']:8d},{z['requests']:8d},{z['fail']:4d},{z['sleep']:4d},"
                   f"{z['xdomain']:4d}")
    return out


def _vmstat_i(d: Dict[str, Any]) -> List[str]:
    width = max([len("interrupt")] + [len(r["name"]) for r in d["interrupts"]])

    def rate(v: Any) -> str:
        return "-" if v is None else str(v)
    out = [f"{'interrupt':<{width}} {'total':>20} {'rate':>10}"]
    out += [f"{r['name']:<{width}} {r['total']:20d} {rate(r['rate']):>10}"
            for r in d["interrupts"]]
    out.append(f"{'Total':<{width}} {d['total']:20d} {rate(d['rate']):>10}")
    if d["uptime_seconds"] is None:
        out.append("(rates unknown: no time_uptime in this kernel)")
    return out


def _pstat_t(d: Dict[str, Any]) -> List[str]:
    return [f"{d['openfiles']:3d}/{d['maxfiles']:3d} files",
            f"swap: not available: {d['swap_unavailable']}"]


def _text(d: Dict[str, Any]) -> List[str]:
    return d["text"].rstrip("\n").split("\n") if d["text"] else []


RENDER: Dict[str, Callable[[Any], List[str]]] = {
    "backtrace": _backtrace, "kldstat": _kldstat, "ps": _ps, "vmstat_s": _vmstat_s,
    "vmstat_m": _vmstat_m, "vmstat_z": _vmstat_z, "vmstat_i": _vmstat_i,
    "pstat_T": _pstat_t, "dmesg": lambda d: list(d["lines"]), "kernel_config": _text,
    "ddb_capture": _text,
}


def render(r: Dict[str, Any]) -> str:
    """core.txt for a report."""
    out: List[str] = []
    for sec in r["sections"]:
        if sec["id"] == "header":
            if sec["data"] is not None:
                out += _header(r, sec["data"])
            else:
                out += [f"{r['core']}: header not available: {sec['unavailable']}", ""]
            continue
        if sec["title"]:
            out += [RULE, sec["title"], ""]
        if sec["unavailable"] is not None:
            out.append(f"not available: {sec['unavailable']}")
        else:
            out += RENDER[sec["id"]](sec["data"])
        out.append("")
    if r["warnings"]:
        out += [RULE, "kvm-dbg warnings", ""] + [f"warning: {w}" for w in r["warnings"]]
        out.append("")
    return "\n".join(out)
