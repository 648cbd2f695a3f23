"""Kernel state for fixture dumps: processes, threads, PCBs, stacks (with trap frames),
the message buffer, klds and panic/version facts, laid out as FreeBSD does
(docs threads.md), plus what a debugger must show (``manifest.kstate``).

Written from the spec, independently of kvm_dbg.kstate. Use::

    fx = build("amd64", "minidump", 3, tmp, kstate=default_spec("amd64"))
    fx.manifest.kstate.threads[0].name   # '(pid 812) sysctl (crashed)'

Structures live in a kernel-map "heap" of superpages added to the machine (at PA 64 MiB;
ELF cores need ``dump_avail=ELF_DUMP_AVAIL``); offset symbols and globals are in
``.rodata``/``.kdata`` sections of the kernel ELF and in the dump; function symbols
(with sizes) in ``.text``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import pagetables as pt
from .elfwriter import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHT_NOBITS,
    STT_FUNC,
    ElfIdent,
    Section,
    Segment,
    Symbol,
    build_kernel_elf,
)
from .machine import K4, M2, M4, RW

NOCPU = -1
MSG_MAGIC = 0x063062
UNREAD_HEADER = "Unread portion of the kernel message buffer:"   # kgdb/LLDB, threads.md §10.3
MAXCOMLEN = 19
ARM64_NEW_PCB = 1400084          # arm64 pcb/trapframe layout change (threads.md §5.3, §6.3)
STOPPCBS_POINTER = 1400089       # ``struct pcb *stoppcbs`` instead of an array
ZOMBPROC_REMOVED = 1300000       # FreeBSD 13: zombproc gone, pid hash walk
CORRUPTIONS = ("proc_loop", "allproc_cut", "thread_hole", "offset_garbage",
               "msgbuf_indices", "msgbuf_size", "kld_loop")

# ------------------------------------------------------------------------ the spec


@dataclass
class ThreadSpec:
    """A thread. ``stack``: function names, innermost first (the PCB's pc is in the
    first); a trap-entry stub (``calltrap``...) is followed by the interrupted function,
    whose registers come from a trap frame; a stub last ends the stack with a zeroed
    trap frame. ``regs``: PCB values of the callee-saved registers (else generated)."""

    tid: int
    name: str = ""
    oncpu: int = NOCPU
    stack: Sequence[str] = ()
    regs: Dict[str, int] = field(default_factory=dict)


@dataclass
class ProcSpec:
    """A process; ``threads`` in p_threads order. Spec order = creation order."""

    pid: int
    comm: str
    threads: List[ThreadSpec] = field(default_factory=list)
    zombie: bool = False


@dataclass
class KldSpec:
    filename: str
    pathname: Optional[str]
    address: int = 0              # 0: generated


@dataclass
class KernelSpec:
    """What the dumped kernel holds. ``proclists``: "auto" (by osreldate), "zombproc"
    (allproc + zombproc, < 13) or "pidhash" (allproc + pidhashtbl, 13+). ``corrupt``:
    names from CORRUPTIONS."""

    procs: List[ProcSpec]
    dumptid: Optional[int] = None
    ncpu: int = 2
    osreldate: int = 1400097
    proclists: str = "auto"
    pidhash_mask: int = 0x3F
    panicstr: Optional[str] = "page fault"
    hostname: str = "fixture.example.org"
    osrelease: str = "14.0-RELEASE"
    msgbuf_lines: Optional[List[str]] = None      # boot part (None: generated)
    panic_lines: Optional[List[str]] = None       # unread tail (None: from panicstr)
    msgbuf_size: int = 4000
    klds: Optional[List[KldSpec]] = None           # None: zfs.ko + dtraceall.ko
    version_mismatch: bool = False                 # kernel FILE's version differs
    i386_trap_by_ref: bool = True                  # calltrap starts with push %esp
    corrupt: Sequence[str] = ()
    virt: bool = False                             # VNET + DPCPU sets, two vnets
    #: More kernel state written by other modules (e.g. fixturegen.vmstat.Vmstat): each
    #: has ``name``, ``reserve(writer)`` (globals), ``write(writer)`` and ``expect``.
    extras: Sequence[Any] = ()


# ------------------------------------------------------------------ expectations


@dataclass
class ThreadExpect:
    tid: int
    pid: int
    comm: str
    tdname: str
    name: str                     # LLDB: (pid N) comm[/tdname] (crashed|on CPU n)
    crashed: bool
    oncpu: int
    registers: Dict[str, int]     # from the PCB a debugger must pick ({} if none)
    backtrace: List[int]          # frame pcs, innermost first
    functions: List[str]
    trapframes: Dict[int, Dict[str, int]]   # frame index -> registers from a trap frame
    pcb_source: str               # dumppcb, stoppcbs, td_pcb or none
    pcb_addr: int
    td_addr: int
    proc_addr: int


@dataclass
class ProcExpect:
    pid: int
    comm: str
    addr: int
    tids: List[int]
    zombie: bool = False


@dataclass
class KldExpect:
    name: str
    path: Optional[str]
    address: int
    addr: int


@dataclass
class KernelExpect:
    """The debugger's view: ``threads`` in display order (crashed first, then the
    walk: allproc newest first, zombproc, pid-hash-only), ``procs`` in walk order."""

    arch: str
    osreldate: int
    threads: List[ThreadExpect] = field(default_factory=list)
    procs: List[ProcExpect] = field(default_factory=list)
    msgbuf_text: str = ""
    msgbuf_unread: str = ""
    msgbuf_size: int = 0
    msgbuf_wseq: int = 0
    msgbuf_rseq: int = 0
    klds: List[KldExpect] = field(default_factory=list)
    panicstr: Optional[str] = None
    version: str = ""
    file_version: str = ""
    version_mismatch: bool = False
    hostname: str = ""
    osrelease: str = ""
    dumptid: int = -1
    pcb_size: int = 0
    symbols: Dict[str, int] = field(default_factory=dict)
    functions: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    offsets: Dict[str, int] = field(default_factory=dict)
    corrupt: List[str] = field(default_factory=list)   # each must give a warning
    virt: Dict[str, object] = field(default_factory=dict)   # see Installer._virt
    extras: Dict[str, Any] = field(default_factory=dict)   # KernelSpec.extras' expect
    kerndisp: int = 0             # run-time pcs minus link addresses (powerpc64)

    def thread(self, tid: int) -> ThreadExpect:
        return next(t for t in self.threads if t.tid == tid)

    def function_at(self, pc: int) -> Optional[str]:
        pc = (pc - self.kerndisp) % (1 << 64)
        for name, (start, size) in self.functions.items():
            if start <= pc < start + size:
                return name
        return None


# ------------------------------------------------------------------- arch facts


@dataclass(frozen=True)
class ArchFacts:
    """How one architecture's kernel lays out PCBs, stacks and trap frames.

    ``model``: how a caller is found from a frame - "fp" (frame records chained through
    the frame pointer: saved fp at fp+rec[0], return address at fp+rec[1], caller's sp
    = fp+rec[2]), "backchain" (PowerPC: [sp] = caller's sp, return address in the
    caller's frame at caller sp + ``lr_off``) or "prologue" (MIPS: no frame pointer;
    each function's prologue ``addiu sp,sp,-N; sw ra,N-w(sp); sw s8,N-2w(sp)`` says
    where its caller's registers are).  ``pcb_pc``: the PCB slot holding the pc (arm64,
    riscv, powerpc: the link register).  ``leaf_pcb``: the PCB pc is inside the
    context-save routine (savectx, cpu_switch) that keeps no frame of its own; its
    caller is the link register ``ra``.  ``tf_at``: the trap frame's offset from the
    trap stub's sp.  ``frameless``: functions without a MIPS prologue."""

    w: int
    pcb: Tuple[Tuple[str, int], ...]     # register -> offset (debugger names)
    pcb_size: int
    pc: str
    sp: str
    fp: str
    tf: Tuple[Tuple[str, int], ...]
    tf_size: int                         # stored size
    tf_span: int                         # bytes below the interrupted sp (kernel mode)
    traps: Tuple[str, ...]
    fill: bytes
    model: str = "fp"
    rec: Tuple[int, int, int] = (0, 0, 0)
    pcb_pc: str = ""
    leaf_pcb: bool = False
    ra: str = ""
    tf_at: int = 0
    lr_off: int = 0
    frameless: Tuple[str, ...] = ()
    tf_fixed: Tuple[Tuple[str, int], ...] = ()     # trap-frame registers with fixed values
    pc_align: int = 1                    # instruction alignment of code addresses

    @property
    def record(self) -> Tuple[int, int, int]:
        return self.rec if self.rec != (0, 0, 0) else (0, self.w, 2 * self.w)

    @property
    def pc_slot(self) -> str:
        return self.pcb_pc or self.pc


def _seq(names: Sequence[str], start: int, w: int) -> Tuple[Tuple[str, int], ...]:
    return tuple((n, start + i * w) for i, n in enumerate(names))


_X = [f"x{i}" for i in range(29)] + ["fp"]
_AMD64_TF = (("rdi", 0), ("rsi", 8), ("rdx", 16), ("rcx", 24), ("r8", 32), ("r9", 40),
             ("rax", 48), ("rbx", 56), ("rbp", 64), ("r10", 72), ("r11", 80), ("r12", 88),
             ("r13", 96), ("r14", 104), ("r15", 112), ("rip", 152), ("rsp", 176))
_I386_TF = (("edi", 12), ("esi", 16), ("ebp", 20), ("ebx", 28), ("edx", 32), ("ecx", 36),
            ("eax", 40), ("eip", 52))
# arm: sys/arm/include/frame.h (struct trapframe; struct switchframe = pcb_regs).
_ARM_TF = (("cpsr", 0),) + _seq([f"r{i}" for i in range(13)], 4, 4) + (
    ("sp", 64), ("lr", 68), ("pc", 72))
# riscv: sys/riscv/include/frame.h, pcb.h (s0 is the frame pointer "fp").
_RV_S = ["fp"] + [f"s{i}" for i in range(1, 12)]
_RISCV_TF = _seq(["ra", "sp", "gp", "tp"] + [f"t{i}" for i in range(7)] + _RV_S
                 + [f"a{i}" for i in range(8)] + ["pc", "sstatus", "stval", "scause"], 0, 8)


def _ppc_tf(w: int) -> Tuple[Tuple[str, int], ...]:
    """sys/powerpc/include/frame.h: fixreg[32], lr, cr, xer, ctr, srr0 (pc), srr1 (msr)."""
    return _seq([f"r{i}" for i in range(32)] + ["lr", "cr", "xer", "ctr", "pc", "msr"], 0, w)


def _ppc_pcb(w: int) -> Tuple[Tuple[str, int], ...]:
    """sys/powerpc/include/pcb.h: pcb_context[20] = r12..r31, cr, sp, toc, lr."""
    toc = (("r2", 22 * w),) if w == 8 else ()
    return _seq([f"r{i}" for i in range(12, 32)], 0, w) + (("cr", 20 * w), ("r1", 21 * w)) \
        + toc + (("lr", 23 * w),)


#: MIPS register names (o32), struct trapframe order (sys/mips/include/frame.h).
MIPS_GPRS = ["zero", "at", "v0", "v1", "a0", "a1", "a2", "a3"] + [f"t{i}" for i in range(8)] \
    + [f"s{i}" for i in range(8)] + ["t8", "t9", "k0", "k1", "gp", "sp", "s8", "ra"]
MIPS_TF_WORDS = 74                     # struct trapframe in register_t words (kgdb)
# pcb_context[]: PCB_REG_S0..S7, SP, S8, RA, SR, GP, PC (sys/mips/include/pcb.h).
_MIPS_PCB = _seq([f"s{i}" for i in range(8)] + ["sp", "s8", "ra", "status", "gp", "pc"],
                 MIPS_TF_WORDS * 4, 4)
_MIPS_TF = _seq(MIPS_GPRS + ["status", "lo", "hi", "badvaddr", "cause", "pc"], 0, 4)
MIPS_CALLFRAME_SIZ = 24                # o32: 4 argument slots + 2 words (kgdb)
ARM_SVC_MODE = 0x13
ARM_USR_SP_LR = (56, 60)
FACTS = {
    "amd64": ArchFacts(8, _seq(["r15", "r14", "r13", "r12", "rbp", "rsp", "rbx", "rip"], 0, 8),
                       0x1C0, "rip", "rsp", "rbp", _AMD64_TF, 192, 192,
                       ("calltrap", "fast_syscall_common", "fork_trampoline", "mchk_calltrap",
                        "nmi_calltrap"), b"\xcc"),
    "i386": ArchFacts(4, _seq(["edi", "esi", "ebp", "esp", "ebx", "eip"], 0, 4), 0x180,
                      "eip", "esp", "ebp", _I386_TF, 72, 64, ("calltrap", "fork_trampoline"),
                      b"\x90"),
    "arm64-new": ArchFacts(8, _seq(_X[19:], 0, 8) + (("lr", 88), ("sp", 96)), 0x2A0, "pc",
                           "sp", "fp", (("sp", 0), ("lr", 8), ("pc", 16)) + _seq(_X, 48, 8),
                           288, 288, ("handle_el1h_sync", "handle_el1h_irq", "handle_el0_sync",
                                      "handle_el0_irq", "handle_el0_error", "fork_trampoline"),
                           b"\x00", pcb_pc="lr", pc_align=4),
    "arm64-old": ArchFacts(8, _seq(_X, 0, 8) + (("lr", 240), ("sp", 256)), 0x370, "pc", "sp",
                           "fp", (("sp", 0), ("lr", 8), ("pc", 16)) + _seq(_X, 32, 8), 272,
                           272, ("handle_el1h_sync", "handle_el1h_irq", "handle_el0_sync",
                                 "handle_el0_irq", "handle_el0_error", "fork_trampoline"),
                           b"\x00", pcb_pc="lr", pc_align=4),
    # clang's frame record (push {r11, lr}; mov r11, sp); pcb_regs.sf_pc is inside
    # savectx/cpu_switch (stmia {r4-r12, sp, lr, pc}), sf_lr the caller's return address.
    "arm": ArchFacts(4, _seq([f"r{i}" for i in range(4, 13)] + ["sp", "lr", "pc"], 0, 4),
                     0x170, "pc", "sp", "r11", _ARM_TF, 80, 80,
                     ("data_abort_entry", "prefetch_abort_entry", "undefined_entry",
                      "exception_exit", "irq_entry", "swi_entry", "swi_exit"), b"\x00",
                     rec=(0, 4, 8), leaf_pcb=True, ra="lr", pc_align=4,
                     tf_fixed=(("cpsr", 0x60000000 | ARM_SVC_MODE),)),
    # GCC/LLVM riscv frame: s0 = CFA, ra at s0-8, caller's s0 at s0-16 (riscv_frame).
    "riscv": ArchFacts(8, (("ra", 0), ("sp", 8), ("gp", 16), ("tp", 24)) + _seq(_RV_S, 32, 8),
                       0x298, "pc", "sp", "fp", _RISCV_TF, 280, 288,
                       ("cpu_exception_handler_supervisor", "cpu_exception_handler_user"),
                       b"\x00", rec=(-16, -8, 0), pcb_pc="ra", pc_align=2,
                       tf_fixed=(("sstatus", 0x8000000200006120),)),
    # FRAME_SETUP: stdu r1,-(FRAMELEN+288)(r1); trap frame at r1 + 48 (kgdb).
    "powerpc64": ArchFacts(8, _ppc_pcb(8), 0x540, "pc", "r1", "r1", _ppc_tf(8), 336, 640,
                           ("trapexit", "asttrapexit"), b"\x00", model="backchain",
                           pcb_pc="lr", tf_at=48, lr_off=16, pc_align=4,
                           tf_fixed=(("msr", 0x8000000000009032),)),
    "powerpc": ArchFacts(4, _ppc_pcb(4), 0x4C0, "pc", "r1", "r1", _ppc_tf(4), 168, 184,
                         ("trapexit", "asttrapexit"), b"\x00", model="backchain",
                         pcb_pc="lr", tf_at=8, lr_off=4, tf_fixed=(("msr", 0x9032),),
                         pc_align=4),
    # o32; MipsKernGenException: trap frame at sp + CALLFRAME_SIZ (kgdb).
    "mips": ArchFacts(4, _MIPS_PCB, 0x168, "pc", "sp", "s8", _MIPS_TF, MIPS_TF_WORDS * 4, 304,
                      ("MipsKernGenException", "MipsKernIntr", "MipsTLBInvalidException"),
                      b"\x00", model="prologue", leaf_pcb=True, ra="ra", pc_align=4,
                      tf_at=MIPS_CALLFRAME_SIZ,
                      frameless=("savectx", "cpu_switch", "fork_trampoline",
                                 "MipsUserGenException", "btext"),
                      tf_fixed=(("zero", 0), ("status", 0x1000FF03))),
}
#: Field offsets (struct proc, struct thread, struct linker_file) and sizes per width.
PROC = {8: dict(p_list=0x0, p_threads=0x10, p_pid=0xBC, p_hash=0xD8, p_comm=0x3E4, size=0x4B8),
        4: dict(p_list=0x0, p_threads=0x8, p_pid=0x68, p_hash=0x74, p_comm=0x25C, size=0x2E0)}
THREAD = {8: dict(td_plist=0x10, td_tid=0x9C, td_oncpu=0x110, td_name=0x2A4, td_pcb=0x3D8,
                  size=0x4A0),
          4: dict(td_plist=0x8, td_tid=0x54, td_oncpu=0xB8, td_name=0x1A4, td_pcb=0x264,
                  size=0x300)}
KLD = {8: dict(next=0x18, filename=0x28, pathname=0x30, address=0x40, size=0x98),
       4: dict(next=0x10, filename=0x18, pathname=0x1C, address=0x24, size=0x60)}
TEXT_OFF = 0x40000        # functions start here inside the kernel text superpage
#: RAM for ELF (full) cores of amd64/i386 with kernel state: the heap is at PA 64 MiB.
ELF_DUMP_AVAIL = [(0, 0x9F000), (0x100000, 0x4800000)]
FUNC_SIZE = 0x100


def facts(arch: str, osreldate: int) -> ArchFacts:
    if arch == "arm64":
        return FACTS["arm64-new" if osreldate >= ARM64_NEW_PCB else "arm64-old"]
    return FACTS[arch]


def mips_frame_size(name: str) -> int:
    """The stack frame a MIPS function's prologue allocates (varies by function)."""
    return 0x20 + 8 * (sum(name.encode()) % 4)


#: arm64 functions: ``stp x29, x30, [sp, #-16]!; mov x29, sp`` (the frame record).
ARM64_PROLOGUE = [0xA9BF7BFD, 0x910003FD]


def mips_prologue(size: int) -> List[int]:
    """``addiu sp,sp,-size; sw ra,size-4(sp); sw s8,size-8(sp); move s8,sp`` (o32)."""
    return [0x27BD0000 | (-size & 0xFFFF), 0xAFBF0000 | (size - 4), 0xAFBE0000 | (size - 8),
            0x03A0F021]


def is_trap(f: ArchFacts, name: str) -> bool:
    return name in f.traps or (f.pc in ("rip", "eip") and len(name) > 1 and name[0] == "X"
                               and name[1] != "_")


def i386_trap_adjust(name: str, by_ref: bool) -> int:
    """Bytes between the stub frame's SP and its trap frame (threads.md §6.2)."""
    if name in ("calltrap", "Xlcall_syscall", "Xint0x80_syscall", "Xtimerint"):
        return 4 if by_ref else 0
    if name in ("Xcpustop", "Xrendezvous", "Xipi_intr_bitmap_handler", "Xlazypmap"):
        return 0
    if name == "fork_trampoline":
        return 12
    return 4 + (4 if by_ref else 0)


# ------------------------------------------------------------------ memory arena


class Arena:
    """A growing image of kernel memory at ``base`` (written to the machine at once)."""

    def __init__(self, base: int, w: int, little: bool = True) -> None:
        self.base, self.w, self.buf = base, w, bytearray()
        self.order = "little" if little else "big"

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def alloc(self, size: int, align: int = 16) -> int:
        pad = -self.end % align
        va = self.end + pad
        self.buf += bytes(pad + size)
        return va

    def put(self, va: int, data: bytes) -> None:
        off = va - self.base
        if off < 0 or off + len(data) > len(self.buf):
            raise ValueError(f"arena write outside allocation at {va:#x}")
        self.buf[off:off + len(data)] = data

    def int(self, va: int, value: int, size: int) -> None:
        self.put(va, (value % (1 << 8 * size)).to_bytes(size, self.order))

    def ptr(self, va: int, value: int) -> None:
        self.int(va, value, self.w)

    def cstr(self, s: str, size: int = 0) -> int:
        raw = s.encode() + b"\0"
        va = self.alloc(max(size, len(raw)), 1)
        self.put(va, raw)
        return va


# --------------------------------------------------------------------- installer


@dataclass
class Installed:
    """Result of install(): the expectations and the kernel-file writer."""

    expect: KernelExpect
    sections: List[Section]
    symbols: List[Symbol]
    file_version: bytes

    def write_kernel(self, path: str, pr) -> None:
        """(Re)write the kernel ELF with the kernel-state sections and symbols."""
        m = pr.m
        ident = ElfIdent(m.spec.bits, m.spec.little, m.spec.e_machine,
                         getattr(m.spec, "e_flags", 0))
        secs = [s for s in self.sections]
        secs.insert(1, Section(".data", flags=SHF_ALLOC | SHF_WRITE, addr=pr.data_va,
                               data=self.file_version))
        secs.insert(2, Section(".bss", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, addr=pr.bss_va,
                               data=None, size=pr.bss_size))
        syms = [Symbol("btext", pr.text_va, 64, ".text", stype=STT_FUNC),
                Symbol("version", pr.data_va, len(self.file_version), ".data")]
        for name, va in sorted(pr.bss_syms.items(), key=lambda kv: kv[1]):
            syms.append(Symbol(name, va, 8 if m.spec.bits == 64 else 4, ".bss"))
        for name, va in pr.abs_syms.items():
            syms.append(Symbol(name, va, 0, None))
        syms += self.symbols
        segs = [Segment(flags=5, section=".text"), Segment(flags=6, section=".data"),
                Segment(flags=4, section=".rodata"), Segment(flags=6, section=".kdata")]
        with open(path, "wb") as f:
            f.write(build_kernel_elf(ident, secs, syms, segs, entry=pr.text_va,
                                     e_type=getattr(m.spec, "e_type", None)))


def _heap_place(pr) -> Tuple[int, int, int]:
    """(va, pa, superpage size) of the kernel-state heap for this machine."""
    m = pr.m
    if "kstate_heap" in pr.notes:           # (va, pa, superpage) chosen by the profile
        return pr.notes["kstate_heap"]  # type: ignore[return-value]
    if m.arch == "amd64":
        return 0xFFFFFFFF80000000 + 0x2000000, 0x4000000, M2
    if m.arch == "i386":
        return m.kernbase + 0x3000000, 0x4000000, (M2 if pr.notes.get("pae") else M4)
    l2 = m.page_size * (m.page_size // 8)
    return m.kernbase + 8 * l2, m.dump_avail[0][0] + 0x4000000, l2


def _map_heap(pr, va: int, pa: int, size: int, sp: int) -> None:
    """Map [va, va+size) with superpages, also in the x86 page tables already built."""
    m = pr.m
    if not any(s <= pa and pa + size <= e for s, e in m.dump_avail):
        raise ValueError(f"kernel-state heap [{pa:#x}, {pa + size:#x}) is not in dump_avail;"
                         " pass a larger dump_avail")
    for off in range(0, size, sp):
        m.map(va + off, pa + off, sp, RW, populate=())
        v, p = va + off, pa + off
        if m.arch == "amd64":
            pdp = pt._next(m, pr.pml4, (v >> 39) & 511, 8, pt.FRAME64)
            pd = pt._next(m, pdp, (v >> 30) & 511, 8, pt.FRAME64)
            pt._set(m, pd, (v >> 21) & 511, 8, p | pt.leaf_bits(RW, True) | pt.PG_PS)
        elif m.arch == "i386":
            pae = bool(pr.notes.get("pae"))
            _, pdpage = pt.i386_pde(m, pr.top, pae, v)
            idx, esz = ((v >> 21) & 511, 8) if pae else (v >> 22, 4)
            pt._set(m, pdpage, idx, esz, p | pt.leaf_bits(RW, pae) | pt.PG_PS)


def _val(seed: int, j: int, w: int) -> int:
    """A recognisable register value."""
    if w == 8:
        return (0x5EED0000 + seed) << 32 | (0x100 * j + 0x11)
    return 0x40000000 + ((seed * 0x100 + j * 4 + 1) & 0x3FFFFFFF)


def _lldb_name(pid: int, comm: str, tdname: str, crashed: bool, oncpu: int) -> str:
    name = f"(pid {pid}) {comm}"
    if tdname and tdname != comm:
        name += f"/{tdname}"
    if crashed:
        name += " (crashed)"
    elif oncpu != NOCPU:
        name += f" (on CPU {oncpu})"
    return name


class _Writer:
    """Lays the spec out in memory; see install()."""

    def __init__(self, pr, spec: KernelSpec) -> None:
        self.pr, self.spec, self.m = pr, spec, pr.m
        self.arch = pr.m.arch
        self.f = facts(self.arch, spec.osreldate)
        self.w = self.f.w
        bad = set(spec.corrupt) - set(CORRUPTIONS)
        if bad:
            raise ValueError(f"unknown corruption(s) {sorted(bad)}")
        if spec.ncpu > 32 * self.w:
            raise ValueError("ncpu too large for stopped_cpus (4 longs)")
        self.era = spec.proclists if spec.proclists != "auto" else (
            "zombproc" if spec.osreldate < ZOMBPROC_REMOVED else "pidhash")
        self.exp = KernelExpect(self.arch, spec.osreldate, corrupt=list(spec.corrupt))
        self.funcs: Dict[str, Tuple[int, int]] = {"btext": (pr.text_va, 64)}
        self.code_va = pr.text_va + TEXT_OFF
        # powerpc64 kernels run displaced from their link address: pcs are run-time.
        relocate = getattr(pr.m, "relocate", None)
        self.disp = (relocate(self.code_va) - self.code_va) % (1 << 64) if relocate else 0
        self.exp.kerndisp = self.disp
        self.syms: List[Symbol] = []

    # -- functions -----------------------------------------------------------------
    def func(self, name: str) -> int:
        if name not in self.funcs:
            self.funcs[name] = (self.code_va + FUNC_SIZE * (len(self.funcs) - 1), FUNC_SIZE)
        return self.funcs[name][0]

    def pc_in(self, name: str, depth: int) -> int:
        self.func(name)
        start, size = self.funcs[name]
        off = 0x10 + (7 * depth + 3 * len(name)) % (size - 0x20)
        return start + self.disp + off - off % self.f.pc_align

    # -- globals -----------------------------------------------------------------
    def gsym(self, arena: Arena, name: str, size: int, sec: str, align: int = 8) -> int:
        va = arena.alloc(size, align)
        self.exp.symbols[name] = va
        self.syms.append(Symbol(name, va, size, sec))
        return va

    def run(self, options: Dict[str, object]) -> Installed:
        sp_, m, w, f = self.spec, self.m, self.w, self.f
        heap_va, heap_pa, spz = _heap_place(self.pr)
        # Globals: in front of the heap, or in the kernel image (``kstate_globals``, a
        # link address: powerpc64 kernels run displaced, their globals with them).
        gva = self.pr.notes.get("kstate_globals", heap_va)
        ro = Arena(gva, w, m.little())
        kd = Arena(gva + K4, w, m.little())
        offs = {}
        for pre, table in (("proc_off_", PROC[w]), ("thread_off_", THREAD[w]),
                           ("kld_off_", KLD[w])):
            for k, v in table.items():
                if k != "size":
                    offs[pre + k] = v
        if self.era == "zombproc":
            del offs["proc_off_p_hash"]
        offs["pcb_size"] = f.pcb_size
        if "offset_garbage" in sp_.corrupt:
            offs["thread_off_td_pcb"] = 0x7FFFFFF0
        for name, v in offs.items():
            self.ro_int(ro, name, v)
        self.exp.offsets, self.exp.pcb_size = dict(offs), f.pcb_size
        g = {}
        names = [("allproc", w), ("pidhashtbl", w), ("pidhash", w), ("zombproc", w),
                 ("dumptid", 4), ("mp_maxid", 4), ("mp_ncpus", 4), ("osreldate", 4),
                 ("stopped_cpus", 4 * w), ("msgbufp", w), ("linker_files", 2 * w),
                 ("linker_kernel_file", w), ("panicstr", w), ("linker_path", 64),
                 ("osrelease", 32), ("hostname", 256), ("panic_buf", 256),
                 ("dumppcb", f.pcb_size)]
        names.append(("stoppcbs", w if sp_.osreldate >= STOPPCBS_POINTER
                      else f.pcb_size * sp_.ncpu))
        for name, size in names:
            if name == "zombproc" and self.era != "zombproc":
                continue
            if name in ("pidhashtbl", "pidhash") and self.era == "zombproc":
                continue
            g[name] = self.gsym(kd, name, size, ".kdata", 64 if "pcb" in name else w)
        self.ro, self.kd, self.g = ro, kd, g
        for extra in sp_.extras:
            extra.reserve(self)
        heap = Arena(heap_va + K4 * (1 + (len(kd.buf) + K4 - 1) // K4) if gva == heap_va
                     else heap_va, w, m.little())
        self.heap, self.kd, self.g = heap, kd, g
        kd.int(g["dumptid"], -1 if sp_.dumptid is None else sp_.dumptid, 4)
        kd.int(g["mp_maxid"], sp_.ncpu - 1, 4)
        kd.int(g["mp_ncpus"], sp_.ncpu, 4)
        kd.int(g["osreldate"], sp_.osreldate, 4)
        kd.put(g["osrelease"], sp_.osrelease.encode() + b"\0")
        kd.put(g["hostname"], sp_.hostname.encode() + b"\0")
        kd.put(g["linker_path"], b"/boot/kernel;/boot/modules\0")
        self.exp.osrelease, self.exp.hostname = sp_.osrelease, sp_.hostname
        self.exp.dumptid = -1 if sp_.dumptid is None else sp_.dumptid
        if sp_.panicstr is not None:
            kd.put(g["panic_buf"], sp_.panicstr.encode() + b"\0")
            kd.ptr(g["panicstr"], g["panic_buf"] + self.disp * (gva != heap_va))
        self.exp.panicstr = sp_.panicstr
        if sp_.osreldate >= STOPPCBS_POINTER:
            self.stoppcbs = heap.alloc(f.pcb_size * sp_.ncpu, 64)
            kd.ptr(g["stoppcbs"], self.stoppcbs)
        else:
            self.stoppcbs = g["stoppcbs"]
        crashed_cpu = next((t.oncpu for p in sp_.procs for t in p.threads
                            if t.tid == sp_.dumptid), NOCPU)
        self.stopped = [c for c in range(sp_.ncpu) if c != crashed_cpu]
        mask = sum(1 << c for c in self.stopped)
        for word in range(4):                            # cpuset_t: 4 longs
            kd.int(g["stopped_cpus"] + word * w, mask >> (8 * w * word), w)
        self.hole = None
        self._procs()
        self._msgbuf(options)
        self._klds()
        if sp_.virt:
            self._virt()
        for extra in sp_.extras:
            extra.write(self)
            self.exp.extras[extra.name] = extra.expect
        self._version(options)
        # Hole: the page after the heap's last page is mapped but never written.
        pg = m.page_size
        size = -(-(heap.end - heap_va + 2 * pg) // spz) * spz
        _map_heap(self.pr, heap_va, heap_pa, size, spz)
        self._patch_holes(heap.end + (-heap.end % pg) + pg + 0x40)
        self._write_image(ro.base, bytes(ro.buf))
        self._write_image(kd.base, bytes(kd.buf))
        m.write_va(heap.base, bytes(heap.buf))
        self._code()
        self.exp.functions = dict(self.funcs)
        secs = [self.text_section,
                Section(".rodata", flags=SHF_ALLOC, addr=ro.base, data=bytes(ro.buf)),
                Section(".kdata", flags=SHF_ALLOC | SHF_WRITE, addr=kd.base,
                        data=bytes(kd.buf))]
        for name, (va, size) in self.funcs.items():
            if name != "btext":
                self.syms.append(Symbol(name, va, size, ".text", stype=STT_FUNC))
        self.pr.notes["kstate"] = self.exp
        return Installed(self.exp, secs, self.syms, self.file_version)

    def ro_int(self, ro: Arena, name: str, value: int) -> None:
        va = self.gsym(ro, name, 4, ".rodata", 4)
        ro.int(va, value, 4)

    # -- processes and threads --------------------------------------------------
    def _procs(self) -> None:
        sp_, heap, kd, g, w = self.spec, self.heap, self.kd, self.g, self.w
        P, T = PROC[w], THREAD[w]
        addrs: Dict[int, int] = {}
        tds: Dict[int, List[Tuple[ThreadSpec, int]]] = {}
        for p in sp_.procs:
            pa = heap.alloc(P["size"], 64)
            addrs[id(p)] = pa
            heap.int(pa + P["p_pid"], p.pid, 4)
            heap.put(pa + P["p_comm"], p.comm.encode()[:MAXCOMLEN] + b"\0")
            lst = []
            for t in p.threads:
                ta = heap.alloc(T["size"], 64)
                lst.append((t, ta))
                heap.int(ta + T["td_tid"], t.tid, 4)
                heap.int(ta + T["td_oncpu"], t.oncpu, 4)
                heap.put(ta + T["td_name"], (t.name or p.comm).encode()[:MAXCOMLEN] + b"\0")
            tds[id(p)] = lst
            for (_, ta), nxt in zip(lst, lst[1:] + [(None, 0)]):
                heap.ptr(ta + T["td_plist"], nxt[1])
            if lst:                                  # TAILQ_HEAD: first, &last.next
                heap.ptr(pa + P["p_threads"], lst[0][1])
                heap.ptr(pa + P["p_threads"] + w, lst[-1][1] + T["td_plist"])
        self.addrs, self.tds = addrs, tds
        # allproc / zombproc: LIST_INSERT_HEAD on fork -> newest first.
        newest = list(reversed(sp_.procs))
        lists = {"allproc": [p for p in newest if not (p.zombie and self.era == "zombproc")]}
        if self.era == "zombproc":
            lists["zombproc"] = [p for p in newest if p.zombie]
        self.hole_links: List[int] = []         # pointer slots to aim at the hole
        walk: List[ProcSpec] = []
        for head, procs in lists.items():
            self._chain(g[head], [addrs[id(p)] for p in procs], P["p_list"])
            cut = procs
            if head == "allproc" and "proc_loop" in sp_.corrupt and len(procs) > 2:
                heap.ptr(addrs[id(procs[-1])] + P["p_list"], addrs[id(procs[1])])
            if head == "allproc" and "allproc_cut" in sp_.corrupt and len(procs) > 2:
                self.hole_links.append(addrs[id(procs[1])] + P["p_list"])
                cut = procs[:2]
            walk += cut
        if self.era == "pidhash":
            nb = sp_.pidhash_mask + 1
            tbl = heap.alloc(nb * w, 64)
            kd.ptr(g["pidhashtbl"], tbl)
            kd.int(g["pidhash"], sp_.pidhash_mask, w)
            seen = {id(p) for p in walk}
            buckets: Dict[int, List[ProcSpec]] = {}
            for p in newest:
                buckets.setdefault(p.pid & sp_.pidhash_mask, []).append(p)
            for b in range(nb):
                chain = buckets.get(b, [])
                self._chain(tbl + b * w, [addrs[id(p)] for p in chain], P["p_hash"])
                walk += [p for p in chain if id(p) not in seen]
                seen.update(id(p) for p in chain)
        thole = "thread_hole" in sp_.corrupt
        hole_proc = next((p for p in walk if len(p.threads) > 1), None) if thole else None
        if hole_proc is not None:
            self.hole_links.append(tds[id(hole_proc)][0][1] + T["td_plist"])
        texp: List[ThreadExpect] = []
        for p in walk:
            lst = tds[id(p)][:1] if p is hole_proc else tds[id(p)]
            self.exp.procs.append(ProcExpect(p.pid, p.comm, addrs[id(p)],
                                             [t.tid for t, _ in lst], p.zombie))
            for t, ta in lst:
                texp.append(self._thread(p, t, ta))
        # Threads whose PCB we could not pick keep their stacks but show no registers.
        crashed = [t for t in texp if t.crashed]
        self.exp.threads = crashed + [t for t in texp if not t.crashed]

    def _chain(self, head: int, objs: List[int], link: int) -> None:
        """A LIST: head -> objs[0] -> ... via the pointer at obj + link."""
        target = self.kd if self.kd.base <= head < self.kd.end else self.heap
        target.ptr(head, objs[0] if objs else 0)
        for a, b in zip(objs, objs[1:] + [0]):
            self.heap.ptr(a + link, b)

    def _thread(self, p: ProcSpec, t: ThreadSpec, ta: int) -> ThreadExpect:
        sp_, heap, f, w, T = self.spec, self.heap, self.f, self.w, THREAD[self.w]
        crashed = t.tid == sp_.dumptid
        stopped = t.oncpu in self.stopped
        stack = list(t.stack) or sleep_stack(self.arch, "kthread_main")
        if f.leaf_pcb:      # the context-save routine is the innermost frame
            stack = ["savectx" if crashed or (t.oncpu != NOCPU and stopped)
                     else "cpu_switch"] + stack
        frames, tfs, pcbv = self._stack(stack, t.tid)
        regs = dict(pcbv)
        gen = [r for r, _ in f.pcb if r not in (f.sp, f.fp, "lr")]
        for j, r in enumerate(gen):
            regs.setdefault(r, t.regs.get(r, _val(t.tid % 0x10000, j, w)))
        if f.pc_slot != f.pc:
            regs[f.pc] = regs[f.pc_slot]
        if "cr" in regs:                # powerpc: the condition register has 32 bits
            regs["cr"] &= 0xFFFFFFFF
        # td_pcb (the kernel puts it at the top of the kernel stack).
        td_pcb = heap.alloc(f.pcb_size, 64)
        heap.ptr(ta + T["td_pcb"], td_pcb)
        if crashed:
            src, pcb = "dumppcb", self.g["dumppcb"]
        elif t.oncpu != NOCPU and stopped:
            src, pcb = "stoppcbs", self.stoppcbs + t.oncpu * f.pcb_size
        else:
            src, pcb = "td_pcb", td_pcb
        if src != "td_pcb":      # a stale context in td_pcb: from the last switch
            stale = {r: _val(0x7A7A, j, w) for j, r in enumerate(x for x, _ in f.pcb)}
            stale[f.pc_slot] = self.pc_in("sched_switch", 0)
            self._pcb(heap, td_pcb, stale)
        self._pcb(self.kd if src == "dumppcb" or self.kd.base <= pcb < self.kd.end
                  else heap, pcb, regs)
        if src == "td_pcb" and "offset_garbage" in sp_.corrupt:
            src, regs, frames, tfs = "none", {}, [], {}
        name = _lldb_name(p.pid, p.comm, t.name or p.comm, crashed, t.oncpu)
        return ThreadExpect(t.tid, p.pid, p.comm, t.name or p.comm, name, crashed, t.oncpu,
                            regs, [pc for pc, _ in frames], [fn for _, fn in frames], tfs,
                            src, pcb, ta, self.addrs[id(p)])

    def _pcb(self, arena: Arena, va: int, regs: Dict[str, int]) -> None:
        for r, off in self.f.pcb:
            if r in regs:
                arena.int(va + off, regs[r], self.w)
        if self.arch == "arm64" and self.f is FACTS["arm64-old"]:
            arena.int(va + 248, 0xDEAD0000DEAD, 8)     # pcb_pc: unused by debuggers

    # -- stacks ------------------------------------------------------------------
    def _stack(self, funcs: List[str], seed: int):
        """Write a stack; returns ([(pc, function)], {frame: tf regs}, pcb pc/sp/fp)."""
        f, w, heap = self.f, self.w, self.heap
        if not funcs or is_trap(f, funcs[0]):
            raise ValueError("a stack must start with a normal function")
        n = len(funcs)
        ntraps = sum(1 for x in funcs if is_trap(f, x))
        if f.model == "fp" and not f.leaf_pcb and f.rec == (0, 0, 0):
            size = n * (2 * w + 0x40) + ntraps * (f.tf_size + 0x60) + 0x100
        else:
            size = n * 0xA0 + ntraps * (f.tf_span + f.tf_at + 0x80) + 0x100
        base = heap.alloc(size, 16)
        top = base + size
        pcs = [self.pc_in(x, i) for i, x in enumerate(funcs)]
        fps: List[Optional[int]] = [None] * n
        sps: List[int] = [0] * n
        tfs: Dict[int, Dict[str, int]] = {}
        addr = top - 0x80
        for i in reversed(range(n)):
            name = funcs[i]
            if is_trap(f, name):
                adj = i386_trap_adjust(name, self.spec.i386_trap_by_ref) \
                    if f.pc == "eip" else 0
                if i == n - 1:                 # ends the stack: a zeroed trap frame
                    tf = (addr - f.tf_size - 0x40) & ~15
                else:
                    tf = addr - f.tf_span
                    tfs[i + 1] = self._trapframe(tf, i + 1, pcs, fps, sps, seed)
                if adj:
                    heap.ptr(tf - adj, tf)
                sps[i] = addr = tf - adj - f.tf_at
                if f.model == "backchain":
                    fps[i] = sps[i]
                    heap.ptr(sps[i], sps[i + 1] if i + 1 < n else 0)
                elif f.model == "prologue":     # the stub keeps the interrupted s8
                    fps[i] = fps[i + 1] if i + 1 < n else 0
                continue
            if i == 0 and f.leaf_pcb:          # savectx/cpu_switch: no frame of its own
                sps[0], fps[0] = sps[1], fps[1]
                continue
            if f.model == "backchain":
                self._backchain_frame(i, n, pcs, sps, fps, addr)
            elif f.model == "prologue":
                self._prologue_frame(name, i, n, pcs, sps, fps, addr)
            else:
                rs, rr, rc = f.record
                fp = addr - rc
                fps[i] = fp
                if i == n - 1:
                    saved, ret = 0, 0
                elif is_trap(f, funcs[i + 1]):
                    saved, ret = fps[i + 2] or 0 if i + 2 < n else 0, pcs[i + 1]
                else:
                    saved, ret = fps[i + 1], pcs[i + 1]
                heap.ptr(fp + rs, saved)
                heap.ptr(fp + rr, ret)
                sps[i] = fp - 0x10 * (1 + i % 3)
            addr = sps[i]
        assert addr > base
        regs = {f.fp: fps[0], f.sp: sps[0], f.pc_slot: pcs[0]}
        if f.leaf_pcb:
            regs[f.ra] = pcs[1]
        return list(zip(pcs, funcs)), tfs, regs

    def _backchain_frame(self, i: int, n: int, pcs, sps, fps, addr: int) -> None:
        """PowerPC: [sp] = caller's sp; the return address in the caller's LR save word."""
        f, heap = self.f, self.heap
        sps[i] = fps[i] = addr - (0x70 if self.w == 8 else 0x30) - 0x10 * (i % 3)
        heap.ptr(sps[i], sps[i + 1] if i + 1 < n else 0)
        if i + 1 < n:
            heap.ptr(sps[i + 1] + f.lr_off, pcs[i + 1])

    def _prologue_frame(self, name: str, i: int, n: int, pcs, sps, fps, addr: int) -> None:
        """MIPS: the frame its prologue built (ra and s8 saved at the top)."""
        w, heap = self.w, self.heap
        if name in self.f.frameless:
            sps[i] = fps[i] = addr - 0x20
            return
        size = mips_frame_size(name)
        sps[i] = fps[i] = addr - size
        heap.ptr(sps[i] + size - w, pcs[i + 1] if i + 1 < n else 0)
        heap.ptr(sps[i] + size - 2 * w, (fps[i + 1] or 0) if i + 1 < n else 0)

    def _trapframe(self, tf: int, k: int, pcs, fps, sps, seed: int) -> Dict[str, int]:
        """Trap frame at ``tf`` describing interrupted frame ``k``."""
        f, w = self.f, self.w
        regs = {r: _val(0x3000 + seed % 0x1000, j, w) for j, (r, _) in enumerate(f.tf)}
        regs[f.pc], regs[f.fp], regs[f.sp] = pcs[k], fps[k] or 0, sps[k]
        if self.arch == "arm64":
            regs["lr"] = pcs[k + 1] if k + 1 < len(pcs) else 0
        regs.update(f.tf_fixed)
        if "cr" in regs:
            regs["cr"] &= 0xFFFFFFFF
        for r, off in f.tf:
            if r in regs:
                self.heap.int(tf + off, regs[r], w)
        if self.arch == "amd64":
            self.heap.int(tf + 160, 0x20, 8)            # cs: kernel
            self.heap.int(tf + 168, 0x10246, 8)
            self.heap.int(tf + 184, 0x28, 8)
        elif self.arch == "i386":
            self.heap.int(tf + 56, 0x20, 4)             # cs: kernel -> no esp/ss
            self.heap.int(tf + 60, 0x10246, 4)
            regs["esp"] = tf + 64
        elif self.arch == "arm64":
            self.heap.int(tf + 24, 0x60000005, 8 if f is FACTS["arm64-new"] else 4)
        elif self.arch == "arm":                        # the user-mode copies of sp/lr
            for j, off in enumerate(ARM_USR_SP_LR):
                self.heap.int(tf + off, _val(0x4000 + seed % 0x1000, j, w), 4)
        return regs

    # -- message buffer ------------------------------------------------------------
    def _msgbuf(self, options: Dict[str, object]) -> None:
        sp_, heap, w = self.spec, self.heap, self.w
        size = sp_.msgbuf_size
        tail = "".join(line + "\n" for line in (sp_.panic_lines if sp_.panic_lines is not None
                                               else panic_lines(sp_.panicstr or "")))
        boot = "".join(line + "\n" for line in (sp_.msgbuf_lines if sp_.msgbuf_lines
                                               is not None else boot_lines(3 * size)))
        u = len(tail.encode())
        k = (u // 2 - len(boot.encode()) - u) % size    # unread part crosses the ring end
        if u >= size or len(boot) + u < size:
            k = 0
        elif k:
            k = k if k >= 12 else k + size
            boot += "fixture: " + "." * (k - 10) + "\n"
        stream = (boot + tail).encode()
        ring = bytearray(size)
        for i in range(0, len(stream)):
            ring[i % size] = stream[i]
        seqmod = 16 * size
        wseq = len(stream) % seqmod
        rseq = (wseq - min(u, size)) % seqmod
        self.exp.msgbuf_text = stream[-size:].decode() if len(stream) >= size else \
            stream.decode()
        self.exp.msgbuf_unread = stream[-min(u, size):].decode() if u else ""
        self.exp.msgbuf_size, self.exp.msgbuf_wseq, self.exp.msgbuf_rseq = size, wseq, rseq
        rva = heap.alloc(size, 64)
        heap.put(rva, bytes(ring))
        mb = heap.alloc(0x60, 16)
        o = w                                             # 64-bit: 8, 32-bit: 4
        if "msgbuf_indices" in sp_.corrupt:
            wseq, rseq = 0xFFFFFFF7, 0x7FFFFFF3
        msize = 0x7FFFFFF0 if "msgbuf_size" in sp_.corrupt else size
        heap.ptr(mb, rva)
        for i, v in enumerate((MSG_MAGIC, msize, wseq, rseq, sum(ring) & 0xFFFFFFFF,
                               seqmod, -1, 0)):
            heap.int(mb + o + 4 * i, v, 4)
        self.kd.ptr(self.g["msgbufp"], mb)
        options.setdefault("msgbuf", bytes(ring))

    # -- VNET and DPCPU (sys/net/vnet.h, sys/sys/pcpu.h, kern/subr_pcpu.c) ------------
    def _virt(self) -> None:
        """Linker sets ``set_pcpu`` / ``set_vnet`` in the kernel image (their
        ``__start_``/``__stop_`` symbols and one ``pcpu_entry_``/``vnet_entry_``
        variable each), ``mp_maxcpus`` + ``dpcpu_off[]`` (a per-CPU copy of the
        set for each CPU but the last, whose offset is 0: absent), and two
        ``struct vnet`` (vnet0 and a jail's) on ``vnet_head`` with their data
        copies.  ``exp.virt`` holds what a reader must find."""
        kd, heap, w = self.kd, self.heap, self.w
        maxcpus = self.spec.ncpu + 1
        pset = kd.alloc(0x100, 64)
        vset = kd.alloc(0x200, 64)
        for name, va in (("__start_set_pcpu", pset), ("__stop_set_pcpu", pset + 0x100),
                         ("pcpu_entry_pcpu_counter", pset + 0x10),
                         ("__start_set_vnet", vset), ("__stop_set_vnet", vset + 0x200),
                         ("vnet_entry_vnet_counter", vset + 0x20)):
            self.syms.append(Symbol(name, va, 8 if "entry" in name else 0, ".kdata"))
            self.exp.symbols[name] = va
        g = {n: self.gsym(kd, n, size, ".kdata", w) for n, size in
             (("mp_maxcpus", 4), ("dpcpu_off", w * maxcpus), ("vnet_head", w),
              ("vnet0", w))}
        kd.int(g["mp_maxcpus"], maxcpus, 4)
        counters = {}
        for cpu in range(maxcpus - 1):
            copy = heap.alloc(0x100, 64)
            kd.ptr(g["dpcpu_off"] + cpu * w, copy - pset)
            heap.int(copy + 0x10, 1000 + cpu, 8)
            counters[cpu] = (copy + 0x10, 1000 + cpu)
        # struct vnet: LIST_ENTRY (2 pointers), vnet_magic_n, vnet_ifcnt, vnet_sockcnt,
        # vnet_state (u_int each), vnet_data_mem, vnet_data_base.
        magic_off = 2 * w
        mem_off = (magic_off + 16 + w - 1) & -w
        vnets = []
        for i in range(2):
            v = heap.alloc(mem_off + 2 * w + 8, 64)
            data = heap.alloc(0x200, 64)
            heap.int(v + magic_off, 0x3E0D8F29, 4)
            heap.ptr(v + mem_off, data)
            heap.ptr(v + mem_off + w, data - vset)
            heap.int(data + 0x20, 5000 + i, 8)
            vnets.append((v, data + 0x20, 5000 + i))
        heap.ptr(vnets[1][0], vnets[0][0])            # vnet_head -> jail's -> vnet0
        heap.ptr(vnets[0][0] + w, vnets[1][0])
        heap.ptr(vnets[1][0] + w, g["vnet_head"])
        kd.ptr(g["vnet_head"], vnets[1][0])
        kd.ptr(g["vnet0"], vnets[0][0])
        self.exp.virt = {"maxcpus": maxcpus, "counters": counters, "vnets": vnets,
                         "pset": pset, "vset": vset}

    # -- klds --------------------------------------------------------------------
    def _klds(self) -> None:
        heap, w, K = self.heap, self.w, KLD[self.w]
        mods = self.spec.klds if self.spec.klds is not None else [
            KldSpec("zfs.ko", "/boot/kernel/zfs.ko"),
            KldSpec("dtraceall.ko", "/boot/kernel/dtraceall.ko")]
        base = self.heap.base - 0x300000
        files = [("kernel", "/boot/kernel/kernel", self.pr.text_va)]
        files += [(k.filename, k.pathname, k.address or base + 0x100000 * i)
                  for i, k in enumerate(mods)]
        addrs = []
        for name, path, address in files:
            lf = heap.alloc(K["size"], 16)
            addrs.append(lf)
            heap.ptr(lf + K["filename"], heap.cstr(name))
            heap.ptr(lf + K["pathname"], heap.cstr(path) if path else 0)
            heap.ptr(lf + K["address"], address)
            if name != "kernel":
                self.exp.klds.append(KldExpect(name, path, address, lf))
        self.kd.ptr(self.g["linker_files"], addrs[0])
        self.kd.ptr(self.g["linker_files"] + w, addrs[-1] + K["next"])
        for a, b in zip(addrs, addrs[1:] + [0]):
            heap.ptr(a + K["next"], b)
        if "kld_loop" in self.spec.corrupt and len(addrs) > 2:
            heap.ptr(addrs[-1] + K["next"], addrs[1])
        self.kd.ptr(self.g["linker_kernel_file"], addrs[0])

    def _version(self, options: Dict[str, object]) -> None:
        ver = self.pr.version
        self.exp.version = ver.rstrip(b"\0").decode()
        self.file_version = ver.replace(b" #0 ", b" #1 ") if self.spec.version_mismatch \
            else ver
        self.exp.file_version = self.file_version.rstrip(b"\0").decode()
        self.exp.version_mismatch = self.file_version != ver

    def _patch_holes(self, hole: int) -> None:
        self.hole = hole
        for slot in self.hole_links:
            self.heap.ptr(slot, hole)

    def _write_image(self, va: int, data: bytes) -> None:
        """Write kernel-image bytes; outside the kernel map (direct-mapped image) their
        pages are dumped as the kernel dumps its image."""
        m = self.m
        m.write_va(va, data)
        if m.mapping_at(va) is None:
            for page in range(va & ~(K4 - 1), va + len(data), K4):
                m.dmap_dump.add(m.va_to_pa(page) // m.page_size)

    def _code(self) -> None:
        """Function bodies in the text superpage (memory and the file's .text)."""
        m, pr = self.m, self.pr
        n = max(len(self.funcs) - 1, 1)
        code = bytearray(self.f.fill * (n * FUNC_SIZE))
        if self.arch == "i386" and self.spec.i386_trap_by_ref and "calltrap" in self.funcs:
            code[self.funcs["calltrap"][0] - self.code_va] = 0x54     # push %esp
        prologue = {"mips": lambda name: mips_prologue(mips_frame_size(name)),
                    "arm64": lambda name: ARM64_PROLOGUE}.get(self.arch)
        if prologue is not None:       # the functions' real prologues (debuggers read them)
            order = "little" if m.little() else "big"
            for name, (start, _size) in self.funcs.items():
                if name == "btext" or name in self.f.frameless or is_trap(self.f, name):
                    continue
                off = start - self.code_va
                insns = b"".join(i.to_bytes(4, order) for i in prologue(name))
                code[off:off + len(insns)] = insns
        self._write_image(self.code_va, bytes(code))
        head = bytearray(TEXT_OFF)
        head[:64] = b"\xcc" * 64
        self.text_section = Section(".text", flags=SHF_ALLOC | SHF_EXECINSTR,
                                    addr=pr.text_va, data=bytes(head + code))


def install(pr, fmt: str, version: int, options: Dict[str, object]) -> Installed:
    """Write ``options["kstate"]`` (a KernelSpec) into the profile's machine; sets
    ``options["msgbuf"]`` (minidump section) unless given, and ``pr.notes["kstate"]``;
    then calls ``options["kstate_hook"](pr, expect)`` if given."""
    done = _Writer(pr, options["kstate"]).run(options)  # type: ignore[arg-type]
    hook = options.get("kstate_hook")
    if hook is not None:       # more content in the machine before the dump is written
        hook(pr, done.expect)  # type: ignore[operator]
    return done


# --------------------------------------------------------------- stock material

_PPC_ENTRY = ["trap", "powerpc_interrupt", "trapexit"]
_SYSCALL = {"amd64": ["amd64_syscall", "fast_syscall_common"],
            "i386": ["syscall", "Xint0x80_syscall"],
            "arm64": ["svc_handler", "do_el0_sync", "handle_el0_sync"],
            "arm": ["syscall", "swi_handler", "swi_entry"],
            "riscv": ["syscallenter", "ecall_handler", "do_trap_user",
                      "cpu_exception_handler_user"],
            "powerpc64": ["syscall"] + _PPC_ENTRY, "powerpc": ["syscall"] + _PPC_ENTRY,
            "mips": ["trap", "MipsUserGenException"]}
_FAULT = {"amd64": ["trap_fatal", "trap_pfault", "trap", "calltrap"],
          "i386": ["trap_fatal", "trap_pfault", "trap", "calltrap"],
          "arm64": ["data_abort", "do_el1h_sync", "handle_el1h_sync"],
          "arm": ["abort_fatal", "abort_handler", "exception_exit"],
          "riscv": ["page_fault_handler", "do_trap_supervisor",
                    "cpu_exception_handler_supervisor"],
          "powerpc64": ["trap_fatal"] + _PPC_ENTRY, "powerpc": ["trap_fatal"] + _PPC_ENTRY,
          "mips": ["trap", "MipsKernGenException"]}
_STOP = {"amd64": ["cpustop_handler", "ipi_nmi_handler", "trap", "nmi_calltrap"],
         "i386": ["cpustop_handler", "ipi_nmi_handler", "trap", "calltrap"],
         "arm64": ["ipi_stop", "intr_ipi_dispatch", "intr_irq_handler", "handle_el1h_irq"],
         "arm": ["ipi_stop", "intr_ipi_dispatch", "intr_irq_handler", "irq_entry"],
         "riscv": ["ipi_stop", "ipi_handler", "intr_irq_handler", "riscv_cpu_intr",
                   "do_trap_supervisor", "cpu_exception_handler_supervisor"],
         "powerpc64": ["powerpc_ipi_handler", "intr_event_handle", "powerpc_dispatch_intr",
                       "powerpc_interrupt", "trapexit"],
         "powerpc": ["powerpc_ipi_handler", "intr_event_handle", "powerpc_dispatch_intr",
                     "powerpc_interrupt", "trapexit"],
         "mips": ["mips_ipi_handler", "intr_event_handle", "cpu_intr", "MipsKernIntr"]}
_SLEEP = ["sched_switch", "mi_switch", "sleepq_switch", "sleepq_timedwait", "_sleep"]


def crash_stack(arch: str) -> List[str]:
    """A page fault in a sysctl handler: doadump ... trap stub, then the syscall path."""
    return (["doadump", "kern_reboot", "vpanic", "panic"] + _FAULT[arch]
            + ["strlen", "sysctl_handle_string", "sysctl_root_handler_locked", "sysctl_root",
               "userland_sysctl", "sys___sysctl"] + _SYSCALL[arch])


def sleep_stack(arch: str, main: str) -> List[str]:
    """A kernel thread asleep in ``main`` (ends at fork_trampoline)."""
    return _SLEEP + [main, "fork_exit", "fork_trampoline"]


def syscall_stack(arch: str, syscall: str) -> List[str]:
    """A user thread asleep in a system call."""
    return _SLEEP[:3] + ["sleepq_wait_sig", "_cv_wait_sig", syscall] + _SYSCALL[arch]


def stopped_idle_stack(arch: str) -> List[str]:
    """An idle thread whose CPU was stopped by IPI (context in stoppcbs)."""
    return _STOP[arch] + ["cpu_idle", "sched_idletd", "fork_exit", "fork_trampoline"]


def default_spec(arch: str, osreldate: int = 1400097, **kw) -> KernelSpec:
    """Ten processes, 14 threads, 2 CPUs: CPU 1 crashed in sysctl, CPU 0 stopped in idle."""
    T, P = ThreadSpec, ProcSpec
    procs = [
        P(0, "kernel", [
            T(100000, "swapper", stack=_SLEEP + ["swapper", "mi_startup", "btext"]),
            T(100001, "if_io_tqg_0", stack=sleep_stack(arch, "gtaskqueue_thread_loop")),
            T(100002, "thread taskq", stack=sleep_stack(arch, "taskqueue_thread_loop"))]),
        P(1, "init", [T(100010, stack=syscall_stack(arch, "kern_wait6"))]),
        P(10, "audit", [T(100011, stack=sleep_stack(arch, "audit_worker"))]),
        P(11, "idle", [T(100003, "idle: cpu0", 0, stack=stopped_idle_stack(arch)),
                       T(100004, "idle: cpu1", stack=["sched_switch", "mi_switch",
                                                     "sched_idletd", "fork_exit",
                                                     "fork_trampoline"])]),
        P(12, "intr", [T(100005, "swi4: clock (0)", stack=sleep_stack(arch, "ithread_loop"))]),
        P(16, "syncer", [T(100012, stack=sleep_stack(arch, "sched_sync"))]),
        P(63, "devd", [T(100060, stack=syscall_stack(arch, "kern_select"))]),
        P(700, "python3.9", [T(100100, stack=syscall_stack(arch, "kern_select")),
                             T(100101, "worker", stack=syscall_stack(arch, "kern_nanosleep"))]),
        P(777, "sh", [T(100200, stack=["sched_switch", "mi_switch", "thread_exit", "exit1",
                                       "sys_exit"] + _SYSCALL[arch])], zombie=True),
        P(812, "sysctl", [T(100300, oncpu=1, stack=crash_stack(arch))]),
    ]
    return KernelSpec(procs, dumptid=100300, osreldate=osreldate, **kw)


def boot_lines(nbytes: int) -> List[str]:
    """Boot messages of about ``nbytes``."""
    out = ["---<<BOOT>>---", "Copyright (c) 1992-2023 The FreeBSD Project.",
           "FreeBSD 14.0-RELEASE #0 releng/14.0-n265380-f9716eee8ab4: Fri Nov 10 05:57:23 "
           "UTC 2023", "real memory  = 4294967296 (4096 MB)"]
    i = 0
    while sum(len(x) + 1 for x in out) < nbytes:
        out.append(f"fixture{i}: <Synthetic device {i}> mem 0x{0xfe000000 + i * 0x1000:x}-"
                   f"0x{0xfe000fff + i * 0x1000:x} irq {16 + i % 8} on pci0")
        i += 1
    return out


def panic_lines(msg: str) -> List[str]:
    """kern_reboot's console output after a fatal page fault."""
    return ["", "", "Fatal trap 12: page fault while in kernel mode", "cpuid = 1; apic id = 01",
            "fault virtual address\t= 0x0", "fault code\t\t= supervisor read data, page not "
            "present", "current process\t\t= 812 (sysctl)", "trap number\t\t= 12",
            f"panic: {msg}", "cpuid = 1", "time = 1700000000", "KDB: stack backtrace:",
            "Uptime: 3m14s", "Dumping 512 out of 4071 MB:..1%..11%..21%..31%..41%..51%..61%"]


def build_threads(tmpdir: str, nthreads: int = 2000, arch: str = "amd64",
                  per_proc: int = 4):
    """A dump with ``nthreads`` threads (``nthreads // per_proc`` processes) for
    benchmarks; 2 of every 16 threads are on (stopped) CPUs."""
    from . import build

    ncpu = max(2, min(32 if arch == "i386" else 64, nthreads // 8))     # MAXCPU
    procs: List[ProcSpec] = []
    tid, cpu = 100000, 1
    crash = None
    for pid in range(nthreads // per_proc):
        tds = []
        for i in range(per_proc):
            oncpu = NOCPU
            if crash is None:
                oncpu, crash = 0, tid
                stack = crash_stack(arch)
            elif (tid % 8 == 0) and cpu < ncpu:
                oncpu, cpu = cpu, cpu + 1
                stack = stopped_idle_stack(arch)
            else:
                stack = syscall_stack(arch, "kern_select") if pid % 2 else \
                    sleep_stack(arch, "worker_loop")
            tds.append(ThreadSpec(tid, f"worker {i}" if i else "", oncpu, stack))
            tid += 1
        procs.append(ProcSpec(pid, f"proc{pid}", tds))
    spec = KernelSpec(procs, dumptid=crash, ncpu=ncpu, pidhash_mask=0xFF)
    os.makedirs(tmpdir, exist_ok=True)
    return build(arch, "minidump", 0, tmpdir, kstate=spec)
