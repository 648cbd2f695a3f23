"""Per-architecture knowledge as data: PCB layouts, frame records, trap frames.

Sources (threads.md §5, §6): freebsd-src ``sys/<arch>/include/pcb.h`` and
``frame.h``, the context-switch and trap-entry assembly (``swtch*.S``,
``exception.S``, ``trap_subr*.S``); kgdb's ``*fbsd-kern.c``; LLDB's
FreeBSDKernel register contexts.  Register names follow LLDB/GDB spelling
(arm64 x29 is ``fp``; riscv s0 is ``fp``; MIPS uses the o32 names, r30 is
``s8``).  Only registers a structure actually holds appear in a layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

Slots = Tuple[Tuple[str, int], ...]


@dataclass(frozen=True)
class PcbLayout:
    """Register slots of ``struct pcb``; ``aliases`` copy one slot to a name."""

    name: str
    slots: Slots
    width: int
    aliases: Tuple[Tuple[str, str], ...] = ()

    @property
    def span(self) -> int:
        return max(off for _, off in self.slots) + self.width


@dataclass(frozen=True)
class FrameRecord:
    """Frame-pointer chain: saved fp at fp+saved_fp, return address at fp+ret;
    the caller's stack pointer (CFA) is fp+cfa.  ``backchain`` means the
    PowerPC ABI (saved sp at [sp], return address at [caller sp + ret])."""

    saved_fp: int
    ret: int
    cfa: int
    align: int
    backchain: bool = False


@dataclass(frozen=True)
class TrapLayout:
    """``struct trapframe`` at a trap-entry frame's SP (plus ``offset``: the
    call-frame header the stub keeps below it on powerpc and MIPS)."""

    name: str
    slots: Slots
    width: int
    size: int
    pc: str
    sp: str
    offset: int = 0


@dataclass(frozen=True)
class Prologue:
    """MIPS: no frame pointer chain; a function's prologue (scanned from its
    start, at most ``max_insns``) allocates its frame and saves registers:
    ``addiu/daddiu sp,sp,-N`` and ``sw/sd REG,off(sp)``.  Instruction words
    (opcode + rs + rt, i.e. the top 16 bits) per width."""

    sp_adjust: int            # addiu/daddiu sp, sp, imm
    store: int                # sw/sd rt, off(sp) with rt = 0
    max_insns: int = 64


@dataclass(frozen=True)
class ArchInfo:
    """Everything the thread code needs to know about one architecture."""

    name: str
    width: int
    pc: str
    sp: str
    fp: Optional[str]
    frame: Optional[FrameRecord]
    pcb_layouts: Dict[str, PcbLayout]
    trap_layouts: Dict[str, TrapLayout] = field(default_factory=dict)
    trap_functions: Tuple[str, ...] = ()
    #: registers no structure holds but whose value in kernel mode is a constant
    #: (x86 segment selectors, GSEL(..., SEL_KPL)): kgdb supplies them, so does
    #: the server for every thread's PCB registers.
    fixed_registers: Dict[str, int] = field(default_factory=dict)
    #: the PCB's pc lies inside the context-save routine (savectx, cpu_switch),
    #: which keeps no frame: the innermost frame's caller is this link register.
    pcb_leaf_lr: Optional[str] = None
    #: MIPS: callers found from the function prologue instead of a frame chain.
    prologue: Optional[Prologue] = None

    def debugger_address(self, addr: int) -> int:
        """``addr`` as debuggers hold it: 32-bit MIPS addresses are sign-extended
        (KSEG0 0x80000000 is 0xffffffff80000000 to gdb)."""
        if self.name == "mips" and addr & 0x80000000:
            return addr | 0xFFFFFFFF00000000
        return addr

    @property
    def unwind_registers(self) -> Tuple[str, ...]:
        """The registers one unwinding step reads from a frame."""
        return tuple(r for r in (self.pc, self.sp, self.fp, self.pcb_leaf_lr) if r)


def _seq(names, start: int, width: int) -> Slots:
    return tuple((n, start + i * width) for i, n in enumerate(names))


# -- amd64 -------------------------------------------------------------------
AMD64 = ArchInfo(
    name="amd64", width=8, pc="rip", sp="rsp", fp="rbp",
    frame=FrameRecord(saved_fp=0, ret=8, cfa=16, align=8),
    pcb_layouts={"default": PcbLayout("amd64", _seq(
        ["r15", "r14", "r13", "r12", "rbp", "rsp", "rbx", "rip"], 0, 8), 8)},
    trap_layouts={"default": TrapLayout("amd64", (
        ("rdi", 0), ("rsi", 8), ("rdx", 16), ("rcx", 24), ("r8", 32), ("r9", 40),
        ("rax", 48), ("rbx", 56), ("rbp", 64), ("r10", 72), ("r11", 80), ("r12", 88),
        ("r13", 96), ("r14", 104), ("r15", 112), ("rip", 152), ("cs", 160),
        ("rflags", 168), ("rsp", 176), ("ss", 184)), 8, 192, "rip", "rsp")},
    trap_functions=("calltrap", "fast_syscall_common", "fork_trampoline",
                    "mchk_calltrap", "nmi_calltrap"),
    fixed_registers={"cs": 0x20, "ss": 0x28},
)

# -- i386 --------------------------------------------------------------------
_I386_PCB = ["edi", "esi", "ebp", "esp", "ebx", "eip"]
I386 = ArchInfo(
    name="i386", width=4, pc="eip", sp="esp", fp="ebp",
    frame=FrameRecord(saved_fp=0, ret=4, cfa=8, align=4),
    pcb_layouts={
        "default": PcbLayout("i386", _seq(_I386_PCB, 0, 4), 4),
        # Before __FreeBSD_version 1001505 pcb_cr3 came first (UNVERIFIED shift).
        "pre1001505": PcbLayout("i386-old", _seq(_I386_PCB, 4, 4), 4),
    },
    trap_layouts={"default": TrapLayout("i386", (
        ("fs", 0), ("es", 4), ("ds", 8), ("edi", 12), ("esi", 16), ("ebp", 20),
        ("ebx", 28), ("edx", 32), ("ecx", 36), ("eax", 40), ("eip", 52), ("cs", 56),
        ("eflags", 60), ("esp", 64), ("ss", 68)), 4, 72, "eip", "esp")},
    trap_functions=("calltrap", "fork_trampoline"),
    fixed_registers={"cs": 0x20, "ds": 0x28, "es": 0x28, "gs": 0x28, "ss": 0x28,
                     "fs": 0x08},
)

# -- arm64 -------------------------------------------------------------------
_X = [f"x{i}" for i in range(29)] + ["fp"]
ARM64 = ArchInfo(
    name="arm64", width=8, pc="pc", sp="sp", fp="fp",
    frame=FrameRecord(saved_fp=0, ret=8, cfa=16, align=16),
    pcb_layouts={
        # FreeBSD >= 1400084: pcb_x[0..10] = x19..x29, pcb_x[11] = lr (= pc), sp.
        "new": PcbLayout("arm64", _seq(_X[19:], 0, 8) + (("lr", 88), ("sp", 96)), 8,
                         (("pc", "lr"),)),
        # FreeBSD <= 13: pcb_x[0..29], pcb_x[30] = lr (= pc), pcb_pc unused, sp at 256.
        "old": PcbLayout("arm64-old", _seq(_X, 0, 8) + (("lr", 240), ("sp", 256)), 8,
                         (("pc", "lr"),)),
    },
    trap_layouts={
        "new": TrapLayout("arm64", (("sp", 0), ("lr", 8), ("pc", 16), ("cpsr", 24))
                          + _seq(_X, 48, 8), 8, 288, "pc", "sp"),
        "old": TrapLayout("arm64-old", (("sp", 0), ("lr", 8), ("pc", 16))
                          + _seq(_X, 32, 8), 8, 272, "pc", "sp"),
    },
    trap_functions=("handle_el1h_sync", "handle_el1h_irq", "handle_el0_sync",
                    "handle_el0_irq", "handle_el0_error", "fork_trampoline"),
)

# -- arm (32-bit) ------------------------------------------------------------
ARM = ArchInfo(
    name="arm", width=4, pc="pc", sp="sp", fp="r11",
    # clang's ARM frame record: [fp] = caller fp, [fp+4] = lr (UNVERIFIED for gcc kernels).
    frame=FrameRecord(saved_fp=0, ret=4, cfa=8, align=4),
    # swtch-v6.S: cpu_switch/savectx store {r4-r12, sp, lr, pc} with pc inside
    # themselves; they push nothing before, so their caller is lr at the same sp.
    pcb_leaf_lr="lr",
    pcb_layouts={"default": PcbLayout("arm", _seq(
        [f"r{i}" for i in range(4, 13)] + ["sp", "lr", "pc"], 0, 4), 4)},
    trap_layouts={"default": TrapLayout("arm", (("cpsr", 0),) + _seq(
        [f"r{i}" for i in range(13)], 4, 4) + (("pc", 72),), 4, 80, "pc", "sp")},
    trap_functions=("data_abort_entry", "prefetch_abort_entry", "undefined_entry",
                    "exception_exit", "irq_entry", "swi_entry", "swi_exit"),
    # (kgdb supplies cpsr 0, "a gross hack" in its own words: not a real value)
)

# -- riscv64 -----------------------------------------------------------------
_S = ["fp"] + [f"s{i}" for i in range(1, 12)]
RISCV = ArchInfo(
    name="riscv", width=8, pc="pc", sp="sp", fp="fp",
    frame=FrameRecord(saved_fp=-16, ret=-8, cfa=0, align=16),
    pcb_layouts={"default": PcbLayout("riscv", (("ra", 0), ("sp", 8), ("gp", 16), ("tp", 24))
                                      + _seq(_S, 32, 8), 8, (("pc", "ra"),))},
    trap_layouts={"default": TrapLayout("riscv", _seq(
        ["ra", "sp", "gp", "tp", "t0", "t1", "t2", "t3", "t4", "t5", "t6"] + _S
        + [f"a{i}" for i in range(8)] + ["pc", "sstatus", "stval", "scause"], 0, 8),
        8, 280, "pc", "sp")},
    trap_functions=("cpu_exception_handler_user", "cpu_exception_handler_supervisor"),
)


# -- powerpc / powerpc64 -----------------------------------------------------
def _ppc(width: int) -> ArchInfo:
    slots = _seq([f"r{i}" for i in range(12, 32)], 0, width) + (("cr", 20 * width),
                                                               ("r1", 21 * width))
    if width == 8:
        slots += (("r2", 22 * width),)
    slots += (("lr", 23 * width),)
    # frame.h: fixreg[32], lr, cr, xer, ctr, srr0, srr1, exc, dar, ... (42 words);
    # trap_subr*.S: FRAME_SETUP puts it above a call-frame header of 48 (8) bytes.
    trap = _seq([f"r{i}" for i in range(32)] + ["lr", "cr", "xer", "ctr", "pc", "msr"],
                0, width)
    return ArchInfo(
        name="powerpc64" if width == 8 else "powerpc", width=width, pc="pc", sp="r1",
        fp="r1", frame=FrameRecord(saved_fp=0, ret=16 if width == 8 else 4, cfa=0,
                                   align=16 if width == 8 else 8, backchain=True),
        pcb_layouts={"default": PcbLayout("ppc", slots, width, (("pc", "lr"),))},
        trap_layouts={"default": TrapLayout("ppc", trap, width, 42 * width, "pc", "r1",
                                            48 if width == 8 else 8)},
        trap_functions=("trapexit", "asttrapexit"),
    )


POWERPC64 = _ppc(8)
POWERPC = _ppc(4)

# -- mips (o32 and n64) -------------------------------------------------------
#: struct trapframe order (sys/mips/include/frame.h); it has 74 register_t words.
MIPS_GPRS = ["zero", "at", "v0", "v1", "a0", "a1", "a2", "a3"] + [f"t{i}" for i in range(8)] \
    + [f"s{i}" for i in range(8)] + ["t8", "t9", "k0", "k1", "gp", "sp", "s8", "ra"]
MIPS_TRAPFRAME_WORDS = 74


def _mips(width: int) -> ArchInfo:
    # pcb.h: struct trapframe pcb_regs, then pcb_context[PCB_REG_S0..S7, SP, S8,
    # RA, SR, GP, PC] (kgdb mipsfbsd-kern.c); savectx/cpu_switch store their own
    # address as PC and the caller's return address as RA (swtch.S).
    pcb = _seq([f"s{i}" for i in range(8)] + ["sp", "s8", "ra", "status", "gp", "pc"],
               MIPS_TRAPFRAME_WORDS * width, width)
    trap = _seq(MIPS_GPRS + ["status", "lo", "hi", "badvaddr", "cause", "pc"], 0, width)
    return ArchInfo(
        name="mips" if width == 4 else "mips64", width=width, pc="pc", sp="sp", fp="s8",
        frame=None,
        pcb_layouts={"default": PcbLayout("mips", pcb, width)},
        # exception.S: the stub's frame is CALLFRAME_SIZ (o32: 6 words, n64: 4)
        # below the trapframe it saves (kgdb).
        trap_layouts={"default": TrapLayout("mips", trap, width,
                                            MIPS_TRAPFRAME_WORDS * width, "pc", "sp",
                                            24 if width == 4 else 32)},
        trap_functions=("MipsKernGenException", "MipsKernIntr", "MipsTLBInvalidException"),
        pcb_leaf_lr="ra",
        prologue=Prologue(0x27BD, 0xAFA0) if width == 4 else Prologue(0x67BD, 0xFFA0),
    )


MIPS = _mips(4)
MIPS64 = _mips(8)
#: n32 kernels (ELF32, EF_MIPS_ABI2) keep 64-bit registers behind 32-bit
#: pointers: no layout is known for them (no registers rather than wrong ones).
MIPS_N32 = ArchInfo(name="mips-n32", width=8, pc="pc", sp="sp", fp="s8", frame=None,
                    pcb_layouts={})
EF_MIPS_ABI2 = 0x20

ARCHES: Dict[str, ArchInfo] = {a.name: a for a in (AMD64, I386, ARM64, ARM, RISCV,
                                                     POWERPC64, POWERPC, MIPS, MIPS64)}

#: arm64 layouts switch at this __FreeBSD_version (pcb and trapframe).
ARM64_NEW_LAYOUT = 1400084
#: i386 PCB layout before AVX support.
I386_NEW_PCB = 1001505


def arch_info(arch: str, ptrsize: Optional[int] = None) -> Optional[ArchInfo]:
    """The table for a Kvm ``arch`` string (mips: its pointer size picks o32 or
    n64), or None if unknown."""
    if arch == "mips" and ptrsize == 8:
        return MIPS64
    return ARCHES.get(arch)


def arch_for_kvm(kvm: Any) -> Optional[ArchInfo]:
    """The table for an open dump: ``arch_info`` plus the mips n32 case."""
    info = arch_info(kvm.arch, getattr(kvm, "ptrsize", None))
    if info is MIPS:
        ident = getattr(getattr(kvm, "kernel", None), "ident", None)
        if ident is not None and ident.flags & EF_MIPS_ABI2:
            return MIPS_N32
    return info


def _kernel_addr(value: Optional[int]) -> bool:
    return value is not None and value >> 48 == 0xFFFF


def _pick_arm64(osreldate: Optional[int], probe: Optional[Callable[[str], Dict[str, int]]]
                ) -> str:
    if osreldate is not None and osreldate > 0:
        return "new" if osreldate >= ARM64_NEW_LAYOUT else "old"
    if probe is not None:
        # Without osreldate (LLDB would assume "new"), keep the layout whose
        # pc and sp look like kernel addresses with an aligned stack.
        for key in ("new", "old"):
            regs = probe(key)
            if _kernel_addr(regs.get("pc")) and _kernel_addr(regs.get("sp")) \
                    and regs["sp"] % 16 == 0:
                return key
    return "new"


def pcb_layout_key(arch: ArchInfo, osreldate: Optional[int],
                   probe: Optional[Callable[[str], Dict[str, int]]] = None) -> Optional[str]:
    """Which PCB layout applies; ``probe(key)`` decodes a sample PCB with it."""
    if not arch.pcb_layouts:
        return None
    if arch.name == "arm64":
        return _pick_arm64(osreldate, probe)
    if arch.name == "i386" and osreldate and 0 < osreldate < I386_NEW_PCB:
        return "pre1001505"
    return "default"


def trap_layout_key(arch: ArchInfo, pcb_key: Optional[str]) -> str:
    """The trapframe layout matching the chosen PCB generation."""
    if arch.name == "arm64":
        return pcb_key or "new"
    return "default"

#: arm trapframe: sp/lr come from the user copies when the saved mode is USR32,
#: else from the SVC copies (threads.md §6.5).
ARM_TRAP_USR_MODE = 0x10
ARM_TRAP_USR_SP_LR = (56, 60)
ARM_TRAP_SVC_SP_LR = (64, 68)
