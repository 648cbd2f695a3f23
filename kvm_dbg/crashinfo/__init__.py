"""crashinfo(8)'s core.txt on any host: the standard report of a FreeBSD crash.

``report(kd)`` returns the sections in crashinfo.sh's order as plain data (shape in
docs/cli-json-schema.json, ``crashinfo``); ``render(report)`` prints core.txt.
Sections come from three layers: kvm_dbg's own kernel state (header, backtraces,
ps, kldstat, dmesg: always), drgn with the kernel's symbols (vmstat -i, pstat -T,
kernel config, ddb capture buffer) and drgn with its DWARF (vmstat -s/-m/-z).  A
section that cannot be produced carries a one-line reason; the others still come
out.  docs/crashinfo.md compares each section with crashinfo(8).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from . import sections as S
from .text import render

__all__ = ["SECTIONS", "Section", "report", "render"]


@dataclass(frozen=True)
class Section:
    """One section: crashinfo's title, what it needs ("kstate", "symbols" = drgn,
    "types" = drgn + DWARF, "none" = not implemented) and its producer."""

    id: str
    title: str
    needs: str
    produce: Optional[Callable[[S.Context], Any]]


#: crashinfo.sh's sections, in its order (kldstat is kgdb's module list).
SECTIONS: List[Section] = [
    Section("header", "", "kstate", S.header),
    Section("backtrace", "", "kstate", S.backtrace),
    Section("kldstat", "kldstat", "kstate", S.kldstat),
    Section("ps", "ps -axlww", "kstate", S.ps),
    Section("vmstat_s", "vmstat -s", "types", S.vmstat_s),
    Section("vmstat_m", "vmstat -m", "types", S.vmstat_m),
    Section("vmstat_z", "vmstat -z", "types", S.vmstat_z),
    Section("vmstat_i", "vmstat -i", "symbols", S.vmstat_i),
    Section("pstat_T", "pstat -T", "symbols", S.pstat_t),
    Section("pstat_s", "pstat -s", "none", None),
    Section("iostat", "iostat", "none", None),
    Section("ipcs_a", "ipcs -a", "none", None),
    Section("ipcs_T", "ipcs -T", "none", None),
    Section("netstat_s", "netstat -s", "none", None),
    Section("netstat_m", "netstat -m", "none", None),
    Section("netstat_anA", "netstat -anA", "none", None),
    Section("netstat_aL", "netstat -aL", "none", None),
    Section("fstat", "fstat", "none", None),
    Section("dmesg", "dmesg", "kstate", S.dmesg),
    Section("kernel_config", "kernel config", "symbols", S.kernel_config),
    Section("ddb_capture", "ddb capture buffer", "symbols", S.ddb_capture),
]


def report(kd: Any, prog: Any = None, use_drgn: bool = True,
           now: Optional[datetime.datetime] = None,
           drgn_hint: Optional[str] = None) -> Dict[str, Any]:
    """The report of an open dump.  ``prog``: a drgn Program over ``kd`` (made here
    when drgn is installed and ``use_drgn``); ``now``: the date line's time;
    ``drgn_hint``: added to the reason when drgn cannot be used."""
    ctx = S.Context(kd, prog)
    if prog is None and use_drgn:
        ctx.open_drgn()
    elif prog is None:
        ctx.no_drgn = "drgn not used (--no-drgn)"
    if ctx.no_drgn and drgn_hint:
        ctx.no_drgn += f" ({drgn_hint})"
    when = now or datetime.datetime.now(datetime.timezone.utc)
    out: Dict[str, Any] = {
        "kernel": kd.kernel_path, "core": kd.core_path, "arch": kd.arch,
        "date": when.isoformat(timespec="seconds"),
        "drgn": {"used": ctx.prog is not None, "reason": ctx.no_drgn,
                 "debug_info": ctx.debug_info},
        "sections": [],
    }
    for sec in SECTIONS:
        entry: Dict[str, Any] = {"id": sec.id, "title": sec.title, "data": None,
                                 "unavailable": None}
        reason = ctx.missing(sec.needs)
        if reason is None and sec.produce is not None:
            try:
                entry["data"] = sec.produce(ctx)
            except S.Unavailable as e:
                reason = str(e)
            except S.DATA_ERRORS as e:
                reason = S.describe(e)
        elif sec.produce is None:
            reason = "not implemented by kvm-dbg"
        entry["unavailable"] = reason
        out["sections"].append(entry)
    out["warnings"] = list(dict.fromkeys(getattr(kd, "warnings", [])))
    return out


def crashinfo(kernel: str, core: str, use_drgn: bool = True,
              now: Optional[datetime.datetime] = None) -> Dict[str, Any]:
    """``report()`` of a kernel and dump, opened and closed here."""
    from .. import kvm as _kvm
    with _kvm.open(kernel, core) as kd:
        return report(kd, use_drgn=use_drgn, now=now)
