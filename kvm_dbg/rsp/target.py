"""The server's view of an opened dump: threads with RSP ids, registers, memory.

Wraps a ``kvm_dbg.Kvm`` and takes the thread list once, so every packet sees
a consistent snapshot.  Nothing here knows about packets.

A dump whose thread list is empty (a kernel without ``allproc`` or the
offsets to walk it, a corrupt list: ``kvm.warnings`` says which) is served
as one placeholder thread so that memory stays readable in the debugger.
Its name says what it is, and its only register is a zero pc: gdb refuses a
remote target whose stop pc is unavailable ("PC register is not available").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import KvmError
from ..kstate.archdata import arch_info
from .regs import RegSet, regset_for

#: Name of the stand-in thread of a dump without threads (never a made-up kernel thread).
PLACEHOLDER_NAME = "(no threads: kvm-info says why)"


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
    obj: Any = None                   # the kstate KThread (None for the placeholder)


class Target:
    """A dump as the RSP session sees it."""

    def __init__(self, kvm: Any, writable: bool = False) -> None:
        self.kvm = kvm
        self.writable = writable
        self.regset: RegSet = regset_for(kvm.arch, kvm.ptrsize)
        self.byteorder: str = kvm.byteorder
        self.ptrsize: int = kvm.ptrsize
        self.threads: List[TargetThread] = []
        self.by_rid: Dict[int, TargetThread] = {}
        self.placeholder = False
        #: Internal errors hit while answering packets (bugs, shown by kvm-info).
        self.errors: List[str] = []
        self.reload()

    def reload(self) -> None:
        """Rebuild the thread snapshot (the crashed thread first)."""
        used: set = set()
        threads: List[TargetThread] = []
        info = arch_info(self.kvm.arch)
        fixed = info.fixed_registers if info is not None else {}
        for i, t in enumerate(self.kvm.threads()):
            rid = t.tid if 0 < t.tid < 0x7FFFFFFF and t.tid not in used else 0x7FFF0000 + i
            used.add(rid)
            threads.append(TargetThread(
                rid=rid, tid=t.tid, name=t.name, crashed=t.crashed,
                oncpu=-1 if t.oncpu is None else t.oncpu,
                # kernel-mode segment selectors, as kgdb supplies them
                registers={**fixed, **t.registers} if t.registers else {},
                pid=t.pid, obj=t))
        self.placeholder = not threads
        if self.placeholder:
            pc = self.regset.find_role("pc")
            threads.append(TargetThread(rid=1, tid=0, name=PLACEHOLDER_NAME, crashed=False,
                                        oncpu=-1, registers={pc.name: 0} if pc else {}))
        crashed = [t for t in threads if t.crashed]
        self.threads = crashed[:1] + [t for t in threads if t not in crashed[:1]]
        self.by_rid = {t.rid: t for t in self.threads}

    @property
    def kthreads(self) -> List[Any]:
        """The kstate threads of the snapshot (none for a placeholder)."""
        return [t.obj for t in self.threads if t.obj is not None]

    @property
    def current(self) -> TargetThread:
        """The thread reported in the initial stop (the crashed one)."""
        return self.threads[0]

    def thread(self, rid: int) -> Optional[TargetThread]:
        return self.by_rid.get(rid)

    def find_tid(self, tid: int) -> Optional[TargetThread]:
        return next((t for t in self.threads if t.obj is not None and t.tid == tid), None)

    def find_pid(self, pid: int) -> Optional[TargetThread]:
        return next((t for t in self.threads if t.obj is not None and t.pid == pid), None)

    def read(self, addr: int, size: int) -> bytes:
        """The readable prefix of [addr, addr+size); b'' if the first byte is not."""
        if size <= 0:
            return b""
        return bytes(self.kvm.read_partial(addr, size))

    def write(self, addr: int, data: bytes) -> bool:
        """Write into the dump (opened writable); False where it has no such page."""
        if not self.writable:
            return False
        try:
            self.kvm.write(addr, data)
        except KvmError:
            return False
        return True

    @property
    def kerndisp(self) -> int:
        """How far the kernel runs from its link address (``kvm_kerndisp``)."""
        return self.kvm.kerndisp

    def entry(self) -> int:
        """The kernel's run-time entry point (AT_ENTRY): its ELF entry, displaced by
        ``kvm_kerndisp`` (powerpc64), so that debuggers relocate a position-
        independent kernel's symbols as kgdb does."""
        entry = self.kvm.kernel_entry
        return (entry + self.kerndisp) % (1 << 8 * self.ptrsize) if entry else entry
