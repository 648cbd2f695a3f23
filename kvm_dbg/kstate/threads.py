"""Kernel threads of a dump with their PCB registers (threads.md §2-§4).

PCB choice: the crashed (``dumptid``) thread uses ``dumppcb``; a thread on a
CPU stopped by IPI uses ``stoppcbs[cpu]`` (an array before osreldate 1400089,
a pointer to one since); every other thread uses ``td_pcb``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from . import ksyms
from .archdata import ArchInfo, PcbLayout, arch_for_kvm, pcb_layout_key, trap_layout_key
from .memory import int_map, lookup, read_int, read_partial, warn
from .offsets import pcb_size
from .unwind import MAX_FRAMES, Frame, unwind
from .walk import RawProc, RawThread, osreldate, walk

#: ``struct pcb *stoppcbs`` (allocated at boot) replaced the static array here.
STOPPCBS_POINTER_SINCE = 1400089
NOCPU = -1


@dataclass
class KThread:
    """One kernel thread as a debugger shows it."""

    tid: int
    pid: Optional[int]
    name: str
    comm: str
    tdname: str
    crashed: bool
    oncpu: Optional[int]
    registers: Dict[str, int]
    pcb_addr: Optional[int]
    td_addr: int
    proc_addr: int
    _kvm: Any = field(default=None, repr=False, compare=False)
    _ctx: Any = field(default=None, repr=False, compare=False)
    _frames: Optional[List[Frame]] = field(default=None, repr=False, compare=False)

    def frames(self, max_frames: int = MAX_FRAMES) -> List[Frame]:
        """Stack frames innermost first (bad data never raises; may be empty)."""
        if self._frames is None or len(self._frames) > max_frames:
            if self._ctx is None or not self.registers:
                self._frames = []
            else:
                self._frames = unwind(self._kvm, self._ctx.arch, self.registers,
                                      self._ctx.trap_key, self._ctx.symbols(), max_frames)
        return self._frames[:max_frames]

    def backtrace(self, max_frames: int = MAX_FRAMES) -> List[int]:
        """Frame program counters, innermost first."""
        return [f.pc for f in self.frames(max_frames)]


def display_name(pid: Optional[int], comm: str, tdname: str, crashed: bool,
                 oncpu: Optional[int]) -> str:
    """LLDB's thread name: ``(pid 11) idle/idle: cpu0 (on CPU 0)``."""
    name = f"(pid {'?' if pid is None else pid}) {comm}"
    if tdname and tdname != comm:
        name += f"/{tdname}"
    if crashed:
        name += " (crashed)"
    elif oncpu is not None and oncpu != NOCPU:
        name += f" (on CPU {oncpu})"
    return name


class Context:
    """Per-dump facts needed to pick and decode PCBs."""

    def __init__(self, kvm: Any, arch: ArchInfo) -> None:
        self.kvm, self.arch = kvm, arch
        self._syms: Any = None
        self._syms_loaded = False
        self.osreldate = osreldate(kvm)
        self.dumptid = read_int(kvm, lookup(kvm, "dumptid"), 4, signed=True)
        self.dumppcb = lookup(kvm, "dumppcb")
        self.pcb_size = pcb_size(kvm)
        self.stoppcbs, self.stoppcbs_bytes = self._stoppcbs()
        self.mp_maxid = read_int(kvm, lookup(kvm, "mp_maxid"), 4, signed=True)
        self.stopped_cpus = lookup(kvm, "stopped_cpus")
        key = pcb_layout_key(arch, self.osreldate, self._probe)
        self.layout: Optional[PcbLayout] = arch.pcb_layouts.get(key) if key else None
        self.trap_key = trap_layout_key(arch, key)
        self.unreadable_pcbs = 0

    def symbols(self) -> Any:
        """Kernel ELF symbols for trap-frame detection (loaded on first use)."""
        if not self._syms_loaded:
            self._syms_loaded = True
            self._syms = ksyms.for_kvm(self.kvm)
        return self._syms

    def _probe(self, key: str) -> Dict[str, int]:
        if self.dumppcb is None:
            return {}
        return self.decode(self.arch.pcb_layouts[key], self.dumppcb)

    def _stoppcbs(self):
        """(address of stoppcbs[0], byte size of the array if known)."""
        sym = lookup(self.kvm, "stoppcbs")
        if sym is None:
            return None, None
        size = None
        pointer = self.osreldate is not None and self.osreldate >= STOPPCBS_POINTER_SINCE
        if self.osreldate is None:
            syms = self.symbols()
            size = syms.size("stoppcbs") if syms is not None else None
            pointer = size == self.kvm.ptrsize
        if pointer:
            base = read_int(self.kvm, sym, self.kvm.ptrsize)
            if not base:
                warn(self.kvm, "stoppcbs pointer unreadable or NULL")
                return None, None
            return base, None
        return sym, size

    def decode(self, layout: PcbLayout, addr: int) -> Dict[str, int]:
        raw = read_partial(self.kvm, addr, layout.span)
        regs = int_map(raw, self.kvm.byteorder, layout.slots, layout.width)
        for dst, src in layout.aliases:
            if src in regs:
                regs[dst] = regs[src]
        return regs

    def cpu_stopped(self, cpu: int) -> Optional[bool]:
        """kgdb's stopped-CPU test; None when the kernel does not tell."""
        if self.mp_maxid is not None and self.mp_maxid >= 0 and cpu > self.mp_maxid:
            return False
        if self.stopped_cpus is None:
            return None
        bits = self.kvm.ptrsize * 8
        word = read_int(self.kvm, self.stopped_cpus + (cpu // bits) * self.kvm.ptrsize,
                        self.kvm.ptrsize)
        return None if word is None else bool(word >> (cpu % bits) & 1)

    def pcb_for(self, td: RawThread, crashed: bool) -> Optional[int]:
        if crashed and self.dumppcb is not None:
            return self.dumppcb
        cpu = td.oncpu
        if cpu is None or cpu == NOCPU or self.cpu_stopped(cpu) is False:
            return td.td_pcb
        if self.stoppcbs is None or self.pcb_size is None:
            return None                       # LLDB: on-CPU thread without stoppcbs
        off = cpu * self.pcb_size
        if self.stoppcbs_bytes is not None and off + self.pcb_size > self.stoppcbs_bytes:
            warn(self.kvm, f"thread {td.tid}: CPU {cpu} beyond stoppcbs")
            return None
        return self.stoppcbs + off

    def registers(self, pcb: Optional[int]) -> Dict[str, int]:
        if not pcb or self.layout is None:
            return {}
        regs = self.decode(self.layout, pcb)
        if not regs:
            self.unreadable_pcbs += 1
        return regs


def threads(kvm: Any, order: str = "walk") -> List[KThread]:
    """Every kernel thread, crashed thread first.

    ``order="walk"`` keeps the order the lists are walked in (allproc is
    newest first) - what the reference LLDB sessions of the real dumps show;
    ``order="pid"`` sorts the rest by ascending pid (newest LLDB revision).
    Never raises for a corrupted dump: partial list plus ``kvm.warnings``.
    """
    arch = arch_for_kvm(kvm)
    if arch is None:
        warn(kvm, f"threads: unsupported architecture {kvm.arch}")
        return []
    procs = walk(kvm)
    if procs is None:
        return []
    ctx = Context(kvm, arch)
    if ctx.layout is None:
        warn(kvm, f"threads: no PCB layout for {arch.name}; registers unavailable")
    out = _build(kvm, ctx, procs)
    if ctx.unreadable_pcbs:
        warn(kvm, f"threads: {ctx.unreadable_pcbs} PCB(s) unreadable; no registers")
    return _ordered(out, order)


def _build(kvm: Any, ctx: Context, procs: List[RawProc]) -> List[KThread]:
    out: List[KThread] = []
    crashed_seen = False
    for proc in procs:
        for td in proc.threads:
            crashed = not crashed_seen and ctx.dumptid is not None \
                and ctx.dumptid != -1 and td.tid == ctx.dumptid
            crashed_seen = crashed_seen or crashed
            pcb = ctx.pcb_for(td, crashed)
            out.append(KThread(
                tid=td.tid, pid=proc.pid,
                name=display_name(proc.pid, proc.comm, td.name, crashed, td.oncpu),
                comm=proc.comm, tdname=td.name, crashed=crashed,
                oncpu=None if td.oncpu in (None, NOCPU) else td.oncpu,
                registers=ctx.registers(pcb), pcb_addr=pcb, td_addr=td.addr,
                proc_addr=proc.addr, _kvm=kvm, _ctx=ctx))
    return out


def _ordered(threads_: List[KThread], order: str) -> List[KThread]:
    key: Callable[[KThread], Any]
    if order == "pid":
        def key(t: KThread) -> Any:
            return (not t.crashed, t.pid is None, t.pid or 0)
    else:
        def key(t: KThread) -> Any:
            return not t.crashed
    return sorted(threads_, key=key)        # stable: walk order otherwise kept
