"""The server's view of an opened dump: threads with RSP ids, registers, memory.

Wraps a ``kvm_dbg.Kvm`` (or anything with the same methods) and caches the
thread list once, so every packet sees a consistent snapshot.  Nothing here
knows about packets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .regs import RegSet, reg_value, regset_for


@dataclass
class TargetThread:
    """One thread as served: its RSP id, display name and register dict."""

    rid: int
    tid: int
    name: str
    crashed: bool
    oncpu: int
    registers: Dict[str, int] = field(default_factory=dict)
    pid: Optional[int] = None
    obj: Any = None


def _thread_list(kvm: Any) -> List[Any]:
    try:
        return list(kvm.threads())
    except Exception:  # a dump without a usable thread list still serves memory
        return []


class Target:
    """A dump as the RSP session sees it."""

    def __init__(self, kvm: Any, writable: bool = False) -> None:
        self.kvm = kvm
        self.writable = writable
        self.regset: RegSet = regset_for(kvm.arch, getattr(kvm, "ptrsize", None))
        self.byteorder: str = getattr(kvm, "byteorder", "little")
        self.ptrsize: int = int(getattr(kvm, "ptrsize", 8))
        self.threads: List[TargetThread] = []
        self.by_rid: Dict[int, TargetThread] = {}
        self.reload()

    def reload(self) -> None:
        """Rebuild the thread snapshot (the crashed thread first)."""
        raw = _thread_list(self.kvm)
        used: set = set()
        threads: List[TargetThread] = []
        for i, t in enumerate(raw):
            tid = int(getattr(t, "tid", 0) or 0)
            rid = tid if 0 < tid < 0x7FFFFFFF and tid not in used else 0
            if not rid:
                rid = 0x7FFF0000 + i
            used.add(rid)
            oncpu = getattr(t, "oncpu", -1)
            threads.append(TargetThread(
                rid=rid, tid=tid, name=str(getattr(t, "name", "") or f"tid {tid}"),
                crashed=bool(getattr(t, "crashed", False)),
                oncpu=-1 if oncpu is None else int(oncpu),
                registers=dict(getattr(t, "registers", None) or {}),
                pid=getattr(t, "pid", None), obj=t))
        if not threads:
            threads.append(TargetThread(rid=1, tid=0, name="kernel", crashed=True, oncpu=-1))
        crashed = [t for t in threads if t.crashed]
        self.threads = crashed[:1] + [t for t in threads if t not in crashed[:1]]
        self.by_rid = {t.rid: t for t in self.threads}
        pc = self.regset.find_role("pc")
        if pc is not None and reg_value(self.regset, pc, self.current.registers) is None:
            # gdb refuses a stop whose pc is unavailable: keep memory usable
            self.current.registers[pc.name] = 0

    @property
    def current(self) -> TargetThread:
        """The thread reported in the initial stop (the crashed one)."""
        return self.threads[0]

    def thread(self, rid: int) -> Optional[TargetThread]:
        return self.by_rid.get(rid)

    def find_tid(self, tid: int) -> Optional[TargetThread]:
        return next((t for t in self.threads if t.tid == tid), None)

    def find_pid(self, pid: int) -> Optional[TargetThread]:
        return next((t for t in self.threads if t.pid == pid), None)

    def read(self, addr: int, size: int) -> bytes:
        """The readable prefix of [addr, addr+size); b'' if the first byte is not."""
        if size <= 0:
            return b""
        try:
            return bytes(self.kvm.read_partial(addr, size))
        except Exception:
            return b""

    def write(self, addr: int, data: bytes) -> bool:
        if not self.writable:
            return False
        try:
            self.kvm.write(addr, data)
        except Exception:
            return False
        return True

    @property
    def kerndisp(self) -> int:
        """How far the kernel runs from its link address (``kvm_kerndisp``)."""
        disp = getattr(self.kvm, "kerndisp", 0)
        return disp if isinstance(disp, int) else 0

    def entry(self) -> int:
        """The kernel's run-time entry point (AT_ENTRY): its ELF entry, displaced by
        ``kvm_kerndisp`` (powerpc64), so that debuggers relocate a position-
        independent kernel's symbols as kgdb does."""
        entry = int(getattr(self.kvm, "kernel_entry", 0) or 0)
        return (entry + self.kerndisp) % (1 << 8 * self.ptrsize) if entry else entry
