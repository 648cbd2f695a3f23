"""Process list (``ps`` material) from the exported offset symbols.

Only what the offset symbols describe is known without DWARF: pid, comm,
threads, address.  ``ppid`` and ``state`` stay None unless the caller passes
their offsets (``p_pptr``, ``p_state``; e.g. taken from DWARF) in ``extra``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .memory import read_int, read_ptr
from .offsets import proc_offsets
from .walk import walk

#: enum p_states in sys/sys/proc.h
PROC_STATES = {0: "PRS_NEW", 1: "PRS_NORMAL", 2: "PRS_ZOMBIE"}


@dataclass
class KProc:
    """One process of the dump."""

    pid: Optional[int]
    comm: str
    addr: int
    tids: List[int] = field(default_factory=list)
    ppid: Optional[int] = None
    state: Optional[str] = None

    @property
    def nthreads(self) -> int:
        return len(self.tids)


def procs(kvm: Any, extra: Optional[Dict[str, int]] = None) -> List[KProc]:
    """Processes in walk order (allproc, zombproc, pid hash), de-duplicated.

    ``extra`` may give ``p_pptr`` and ``p_state`` offsets (and ``p_pid`` is
    reused for the parent); without them ppid/state are None.
    """
    raw = walk(kvm)
    if raw is None:
        return []
    extra = extra or {}
    pid_off = proc_offsets(kvm)["p_pid"]
    out = []
    for p in raw:
        proc = KProc(p.pid, p.comm, p.addr, [t.tid for t in p.threads])
        if "p_pptr" in extra and pid_off is not None:
            parent = read_ptr(kvm, p.addr + extra["p_pptr"])
            if parent:
                proc.ppid = read_int(kvm, parent + pid_off, 4, signed=True)
        if "p_state" in extra:
            st = read_int(kvm, p.addr + extra["p_state"], 4)
            if st is not None:
                proc.state = PROC_STATES.get(st, str(st))
        out.append(proc)
    return out
