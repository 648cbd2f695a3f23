"""Processes and threads: FOREACH_PROC_IN_SYSTEM, FOREACH_THREAD_IN_PROC, pfind(9),
tdfind (sys/sys/proc.h, kern/kern_proc.c, kern/kern_thread.c)."""

from __future__ import annotations

from typing import Any, Iterator

from ._common import has_symbol
from .queue import LIST_FOREACH, TAILQ_FOREACH


def for_each_proc(prog: Any) -> Iterator[Any]:
    """Every ``struct proc *``: ``allproc`` (FOREACH_PROC_IN_SYSTEM), then
    ``zombproc`` on kernels before FreeBSD 13, which kept zombies apart."""
    yield from LIST_FOREACH(prog["allproc"], "p_list")
    if has_symbol(prog, "zombproc"):
        yield from LIST_FOREACH(prog["zombproc"], "p_list")


def for_each_thread(p: Any) -> Iterator[Any]:
    """A process's threads, ``FOREACH_THREAD_IN_PROC(p, td)`` (``p_threads``)."""
    return TAILQ_FOREACH(p.p_threads, "td_plist")


def pfind(prog: Any, pid: int) -> Any:
    """``pfind(pid)``: the ``struct proc *`` with that pid (via the ``pidhashtbl``
    chain ``PIDHASH(pid)`` when the kernel has one), NULL if there is none."""
    import drgn
    if has_symbol(prog, "pidhashtbl"):
        chain = prog["pidhashtbl"][pid & prog["pidhash"].value_()]
        found = (p for p in LIST_FOREACH(chain, "p_hash"))
    else:
        found = for_each_proc(prog)
    for p in found:
        if p.p_pid.value_() == pid:
            return p
    return drgn.NULL(prog, "struct proc *")


def tdfind(prog: Any, tid: int, pid: int = -1) -> Any:
    """``tdfind(tid, pid)``: the ``struct thread *`` with that tid (and pid unless
    -1), via ``tidhashtbl`` when present, else by walking every process; NULL if
    there is none."""
    import drgn
    if has_symbol(prog, "tidhashtbl"):
        chain = prog["tidhashtbl"][tid & prog["tidhash"].value_()]
        found = (td for td in LIST_FOREACH(chain, "td_hash"))
    else:
        found = (td for p in for_each_proc(prog) for td in for_each_thread(p))
    for td in found:
        if td.td_tid.value_() == tid and (pid == -1 or td.td_proc.p_pid.value_() == pid):
            return td
    return drgn.NULL(prog, "struct thread *")
