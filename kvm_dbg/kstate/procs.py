"""Process list (``ps`` material): pid, comm, threads from the walk; parent
pid and state from ``p_pptr``/``p_state``, whose offsets no symbol exports.

Those two come from the caller's ``extra`` offsets, else from the kernel's
DWARF (``struct proc``; the state names from its ``enum p_states``); without
either, ``ppid`` and ``state`` stay None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from . import dwarf
from .memory import Record, read_int
from .offsets import plausible, proc_offsets
from .walk import walk

#: enum p_states in sys/sys/proc.h (used when DWARF does not name them).
PROC_STATES = {0: "PRS_NEW", 1: "PRS_NORMAL", 2: "PRS_ZOMBIE"}


@dataclass
class KProc:
    """One process of the dump; ``state`` is the enum name, or the number
    when the kernel does not name it."""

    pid: Optional[int]
    comm: str
    addr: int
    tids: List[int] = field(default_factory=list)
    ppid: Optional[int] = None
    state: Optional[Union[str, int]] = None

    @property
    def nthreads(self) -> int:
        return len(self.tids)


@dataclass
class _Extra:
    pptr: Optional[int] = None
    state: Optional[int] = None
    state_size: int = 4
    names: Optional[Dict[int, str]] = None


def _extra(kvm: Any, given: Optional[Dict[str, int]]) -> _Extra:
    """Offsets of ``p_pptr``/``p_state``: the caller's, else DWARF's."""
    given = given or {}
    ex = _Extra(given.get("p_pptr"), given.get("p_state"), 4, dict(PROC_STATES))
    if ex.pptr is not None and ex.state is not None:
        return ex
    layout = dwarf.struct_layout(kvm, "proc")
    if layout is None:
        return ex
    pptr, state = layout.member("p_pptr"), layout.member("p_state")
    if ex.pptr is None and pptr is not None and plausible(kvm, "p_pptr", pptr.offset):
        ex.pptr = pptr.offset
    if ex.state is None and state is not None and plausible(kvm, "p_state", state.offset):
        ex.state = state.offset
        if state.size in (1, 2, 4, 8):
            ex.state_size = state.size
        ex.names = state.enum
    return ex


def procs(kvm: Any, extra: Optional[Dict[str, int]] = None) -> List[KProc]:
    """Processes in walk order (allproc, zombproc, pid hash), de-duplicated.

    ``extra`` may give ``p_pptr`` and ``p_state`` offsets (``p_pid`` is
    reused for the parent); else they come from DWARF when the kernel has it.
    """
    raw = walk(kvm)
    if raw is None:
        return []
    pid_off = proc_offsets(kvm)["p_pid"]
    ex = _extra(kvm, extra)
    names = ex.names if ex.names is not None else {}
    out = []
    for p in raw:
        proc = KProc(p.pid, p.comm, p.addr, [t.tid for t in p.threads])
        rec = Record(kvm, p.addr, [(ex.pptr, kvm.ptrsize), (ex.state, ex.state_size)])
        parent = rec.ptr(ex.pptr)
        if parent and pid_off is not None:
            proc.ppid = read_int(kvm, parent + pid_off, 4, signed=True)
        st = rec.int(ex.state, ex.state_size)
        if st is not None:
            proc.state = names.get(st, st)
        out.append(proc)
    return out
