"""Unwind information for debuggers, generated from the library's unwinder.

What a debugger cannot do alone on a FreeBSD kernel: unwind a trap-entry
stub, whose caller's registers sit in a ``struct trapframe`` (kgdb's
trap-frame unwinders); end a backtrace without a warning (gdb's Python
unwinders cannot say "outermost"); and, for lldb on a kernel without CFI,
unwind at all on arm64, arm, powerpc and MIPS (its default plans follow no
frame-pointer chain there, no back chain and no MIPS prologue).  This module
states, as DWARF ``.eh_frame``, what :mod:`kvm_dbg.kstate.unwind` does at the
program counters of the dump's threads: the frame-pointer step (its stop
checks as a DWARF expression), the PowerPC back chain (a CFA expression), a
MIPS frame as its prologue built it, the innermost frame of arm/MIPS PCBs
(inside savectx: the caller is the link register), the trap-frame step, or
"the backtrace ends here" (return address undefined).  For gdb, trap-entry
stubs get a CIE with the ``S`` (signal frame) augmentation: gdb shows them as
``<signal handler called>``, as kgdb does, and treats the frame they
interrupted as one that was executing, not calling.

One layout per debugger; neither names a frame or owns an address:

``gdb`` (:func:`build_gdb_module`)
    An objfile with an ``.eh_frame`` and no code section or symbol: gdb
    searches the FDEs of every objfile, and names frames from the kernel's
    symbols alone.  The plugin's Python unwinder declines exactly the frames
    whose FDE gives the library's answer (the ``{pc: kind}`` that
    :func:`write_unwind_elf` returns).
``lldb`` (:func:`build_lldb_image`)
    lldb takes unwind rules for an address only from the module whose
    section holds it, so the CFI goes into a stand-in for the kernel module
    itself: the kernel's sections (SHT_NOBITS: code and data come from the
    dump), e_flags and UUID, to which lldb attaches the kernel's symbol file
    (its symbols and DWARF), plus an FDE per trap-entry stub and, where lldb
    cannot unwind the kernel by itself (:attr:`DwarfArch.lldb_chains`), per
    function of a frame.  Its addresses are the kernel's link addresses: a
    displaced kernel's (kvm_kerndisp, powerpc64) stand-in is loaded with that
    slide, like the kernel.

FDE rows: for a pc ``p`` the library visited, the row at ``p - 1`` is the
rule for callers (debuggers look up a return address one byte back) and the
row at ``p`` the rule for the innermost frame and for frames a trap
interrupted.  Rows of different shapes in one FDE are separated by
``DW_CFA_remember_state``/``restore_state`` (each starts from the CIE's
rule).  Supported: amd64, i386, arm64, arm, powerpc, powerpc64, mips (o32,
n64) and, for gdb only, riscv (lldb 16 has no RISC-V ABI plugin: it unwinds
nothing there, with or without CFI).
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from .elfkernel import MACHINE_OF_ARCH
from .kstate import archdata
from .kstate.archdata import ArchInfo, TrapLayout
from .kstate.unwind import (
    MAX_FRAMES,
    _lookup,
    _trap_sp_adjust,
    is_trap_function,
    prologue_frame,
)

# -- per-architecture DWARF data ---------------------------------------------

_X86_64 = {n: i for i, n in enumerate(
    ["rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp"]
    + [f"r{i}" for i in range(8, 16)] + ["rip"])}
_X86_64.update(rflags=49, es=50, cs=51, ss=52, ds=53, fs=54, gs=55)
_I386 = {n: i for i, n in enumerate(
    ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags"])}
_I386.update(es=40, cs=41, ss=42, ds=43, fs=44, gs=45)
_ARM64 = {f"x{i}": i for i in range(29)}
_ARM64.update(fp=29, lr=30, sp=31, pc=32)
_ARM = {f"r{i}": i for i in range(13)}
_ARM.update(sp=13, lr=14, pc=15)
# GCC's rs6000 numbering (what .eh_frame uses): r0-r31, lr 65, ctr 66.
_PPC = {f"r{i}": i for i in range(32)}
_PPC.update(lr=65, ctr=66)
_MIPS = {n: i for i, n in enumerate(archdata.MIPS_GPRS)}
# RISC-V psABI: x0-x31 (ABI names, s0 is the library's "fp"); 64 is its
# alternate frame return column (no register: the trapframe's pc goes there).
_RISCV = {n: i for i, n in enumerate(
    ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1"]
    + [f"a{i}" for i in range(8)] + [f"s{i}" for i in range(2, 12)]
    + ["t3", "t4", "t5", "t6"])}


@dataclass(frozen=True)
class DwarfArch:
    """DWARF numbering of one architecture, and what each debugger needs."""

    regs: Dict[str, int]         # library register name -> DWARF number
    ra: int                      # return-address column of frame-pointer rules
    trap_ra: int                 # column holding the pc in trap-frame rules
    entry_cfa: int               # CFA = sp + entry_cfa at a function's first byte
    #: lldb cannot unwind a kernel without CFI here by itself (arm64: its
    #: default plan leaves the caller's sp undefined; arm, powerpc, MIPS: no
    #: frame-pointer chain, back chain or prologue it follows): its stand-in
    #: describes every function of a frame, not only trap-entry stubs.
    lldb_chains: bool = False
    #: lldb unwinds the architecture at all (lldb 16 has no RISC-V ABI plugin).
    lldb: bool = True
    #: FDEs end at a multiple of this: gdb clears bit 0 of MIPS code
    #: addresses (the MIPS16/microMIPS ISA bit), so an FDE ending at an odd
    #: address would end a byte early, before the pc it describes.
    end_align: int = 1


DWARF_ARCHES: Dict[str, DwarfArch] = {
    "amd64": DwarfArch(_X86_64, 16, 16, 8),
    "i386": DwarfArch(_I386, 8, 8, 4),
    "arm64": DwarfArch(_ARM64, 30, 32, 0, lldb_chains=True),
    "arm": DwarfArch(_ARM, 14, 15, 0, lldb_chains=True),
    # powerpc and MIPS have no pc column: the link register's is the return
    # address, also in trap frames (whose saved lr/ra then stay unstated)
    "powerpc64": DwarfArch(_PPC, 65, 65, 0, lldb_chains=True),
    "powerpc": DwarfArch(_PPC, 65, 65, 0, lldb_chains=True),
    "mips": DwarfArch(_MIPS, 31, 31, 0, lldb_chains=True, end_align=2),
    "mips64": DwarfArch(_MIPS, 31, 31, 0, lldb_chains=True, end_align=2),
    "riscv": DwarfArch(_RISCV, 1, 64, 0, lldb=False),
}

# -- rules ------------------------------------------------------------------


class Rule(NamedTuple):
    """How the caller's registers follow from a frame at one pc."""

    kind: str                    # "trap", "chain", "chain-plain" (no stop checks),
    #                              "leaf", "backchain", "prologue", "end" or "entry"
    adjust: int = 0              # trap: trapframe = sp + adjust; prologue: frame size
    layout: Optional[TrapLayout] = None
    saved: Tuple[Tuple[int, int], ...] = ()     # prologue: (DWARF register, sp offset)


END = Rule("end")                # the backtrace ends: no caller
ENTRY = Rule("entry")            # a function's first byte: the call just happened


class Function(NamedTuple):
    """A kernel code symbol."""

    name: str
    start: int
    size: int                    # 0: unknown


class PcRules(NamedTuple):
    """What the library does at one pc, over every thread that visits it.

    ``caller``/``inner``: its rule with the pc taken as a return address
    (looked up one byte back) or as the pc of an innermost or interrupted
    frame: the trap-frame step in a trap-entry stub, else the architecture's
    step (frame pointer - "chain-plain" when the caller is a trap stub: no
    stop checks -, back chain, prologue, or "leaf" for a PCB's pc inside
    savectx)."""

    caller: Optional[Rule]
    inner: Optional[Rule]
    function: Optional[Function] = None
    ends: bool = False           # some thread's backtrace ends here
    goes_on: bool = False        # some thread's backtrace goes on from here

    @property
    def trap(self) -> bool:
        return "trap" in (self.caller and self.caller.kind, self.inner and self.inner.kind)

    def kind(self) -> Optional[str]:
        """What a gdb module says at this pc: "end", "trap" or nothing.  An end
        wins: gdb's Python unwinder, which comes first, takes the frames of
        threads that go on from here."""
        if self.ends:
            return "end"
        return "trap" if self.trap else None


def _rule(kvm: Any, arch: ArchInfo, trap_key: str, fn: Optional[Tuple[str, int]], pc: int,
          depth: int, plain: bool) -> Optional[Rule]:
    """The library's step at ``pc`` (:mod:`kvm_dbg.kstate.unwind`), as a Rule;
    None where it has none (the backtrace ends there)."""
    if fn is not None and is_trap_function(arch, fn[0]):
        layout = arch.trap_layouts.get(trap_key) or arch.trap_layouts.get("default")
        if layout is None:
            return None
        return Rule("trap", layout.offset + _trap_sp_adjust(kvm, arch, fn, pc), layout)
    if depth == 0 and arch.pcb_leaf_lr:
        return Rule("leaf")
    if arch.prologue is not None:
        frame = prologue_frame(kvm, arch, pc, fn[1]) if fn is not None else None
        if frame is None:
            return None
        return Rule("prologue", frame[0], saved=tuple(sorted(frame[1].items())))
    if arch.frame is not None and arch.frame.backchain:
        return Rule("backchain")
    if arch.frame is None or not arch.fp:
        return None
    return Rule("chain-plain" if plain else "chain")


def collect(kvm: Any, threads: Optional[Iterable[Any]] = None) -> Dict[int, PcRules]:
    """What the library does at every pc of every thread's frames
    (``kvm.threads()`` unless given): its rule, whether a backtrace ends
    there or goes on, the kernel function it is in."""
    arch = archdata.arch_for_kvm(kvm)
    if arch is None or arch.name not in DWARF_ARCHES:
        return {}
    rules: Dict[int, Dict[int, Optional[Rule]]] = {}
    functions: Dict[int, Function] = {}
    ended, through = set(), set()
    for kt in kvm.threads() if threads is None else threads:
        ctx = getattr(kt, "_ctx", None)
        trap_key = ctx.trap_key if ctx is not None else "default"
        syms = ctx.symbols() if ctx is not None else None
        frames = kt.frames()
        for i, fr in enumerate(frames):
            if i + 1 == len(frames) < MAX_FRAMES:    # a real end, not the frame limit
                ended.add(fr.pc)
            elif i + 1 < len(frames):
                through.add(fr.pc)
            nxt = frames[i + 1] if i + 1 < len(frames) else None
            # The library skips its stop checks when the caller is a trap stub.
            plain = nxt is not None and nxt.function is not None \
                and is_trap_function(arch, nxt.function)
            depth = min(i, 1)
            at = rules.setdefault(fr.pc, {})
            old = at.get(depth)
            if depth in at and not (plain and old is not None and old.kind == "chain"):
                continue
            fn = _lookup(syms, fr.pc, depth)
            at[depth] = _rule(kvm, arch, trap_key, fn, fr.pc, depth, plain)
            if fn is not None and (depth or fr.pc not in functions):
                size = syms.size(fn[0]) if hasattr(syms, "size") else None
                functions[fr.pc] = Function(fn[0], fn[1], size or 0)
    out = {}
    for pc, at in rules.items():
        caller = at.get(1) or at.get(0)
        inner = at.get(0) or caller
        out[pc] = PcRules(caller, inner, functions.get(pc), pc in ended, pc in through)
    return out


# -- DWARF encoding ---------------------------------------------------------

DW_CFA_advance_loc = 0x40
DW_CFA_offset = 0x80
DW_CFA_nop = 0x00
DW_CFA_advance_loc1, DW_CFA_advance_loc2, DW_CFA_advance_loc4 = 0x02, 0x03, 0x04
DW_CFA_remember_state, DW_CFA_restore_state = 0x0A, 0x0B
DW_CFA_undefined = 0x07
DW_CFA_same_value = 0x08
DW_CFA_offset_extended_sf = 0x11
DW_CFA_def_cfa = 0x0C
DW_CFA_def_cfa_expression = 0x0F
DW_CFA_val_expression = 0x16
DW_OP_breg0 = 0x70
DW_OP_deref, DW_OP_dup, DW_OP_drop, DW_OP_swap = 0x06, 0x12, 0x13, 0x16
DW_OP_and, DW_OP_or, DW_OP_plus, DW_OP_shr = 0x1A, 0x21, 0x22, 0x25
DW_OP_plus_uconst, DW_OP_constu, DW_OP_consts = 0x23, 0x10, 0x11
DW_OP_eq, DW_OP_ne, DW_OP_bra, DW_OP_skip = 0x29, 0x2E, 0x28, 0x2F
DW_OP_lit0 = 0x30
DW_EH_PE_absptr, DW_EH_PE_sdata4 = 0x00, 0x0B


def uleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def sleb(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        done = (v == 0 and not b & 0x40) or (v == -1 and b & 0x40)
        out.append(b | (0 if done else 0x80))
        if done:
            return bytes(out)


def _lit(v: int) -> bytes:
    return bytes([DW_OP_lit0 + v]) if 0 <= v < 32 else bytes([DW_OP_consts]) + sleb(v)


def _at_cfa(off: int) -> bytes:
    """Expression fragment: CFA on the stack -> CFA + off."""
    return bytes([DW_OP_plus_uconst]) + uleb(off) if off >= 0 else _lit(off) + bytes([DW_OP_plus])


def _if_else(cond: bytes, then: bytes, other: bytes) -> bytes:
    """``cond`` pops a flag: nonzero -> ``then``, zero -> ``other``."""
    jump_other = bytes([DW_OP_skip]) + struct.pack("<h", len(then))
    return cond + bytes([DW_OP_bra]) + struct.pack("<h", len(other) + len(jump_other)) \
        + other + jump_other + then


def _offset(reg: int, off: int, data_align: int) -> bytes:
    """Register saved at CFA + off."""
    factored = off // data_align
    if 0 <= factored and reg < 64:
        return bytes([DW_CFA_offset | reg]) + uleb(factored)
    return bytes([DW_CFA_offset_extended_sf]) + uleb(reg) + sleb(factored)


def _val_expr(reg: int, expr: bytes) -> bytes:
    return bytes([DW_CFA_val_expression]) + uleb(reg) + uleb(len(expr)) + expr


def _entry_cfi(arch: ArchInfo, d: DwarfArch, ra: int) -> bytes:
    """A function's first byte: CFA = sp + entry_cfa (the return address at
    CFA - width where the call pushed it)."""
    out = bytes([DW_CFA_def_cfa]) + uleb(d.regs[arch.sp]) + uleb(d.entry_cfa)
    if d.entry_cfa:
        out += _offset(ra, -arch.width, -arch.width)
    return out


def _chain_cfi(arch: ArchInfo, d: DwarfArch, plain: bool) -> bytes:
    """Frame-pointer step: CFA = fp + cfa, saved fp and return address in the frame
    record; unless ``plain``, the return address is 0 (the chain ends) where the
    library stops: saved fp 0 or 1, or the caller's CFA misaligned."""
    rec, ws = arch.frame, arch.width
    assert rec is not None and arch.fp
    fp, da = d.regs[arch.fp], -ws
    # the caller's sp is the CFA: the debugger's default, not stated
    out = bytes([DW_CFA_def_cfa]) + uleb(fp) + uleb(rec.cfa)
    out += _offset(fp, rec.saved_fp - rec.cfa, da)
    if plain:
        return out + _offset(d.ra, rec.ret - rec.cfa, da)
    # stack: CFA
    saved = bytes([DW_OP_dup]) + _at_cfa(rec.saved_fp - rec.cfa) + bytes([DW_OP_deref])
    bad = (saved                                               # CFA saved
           + bytes([DW_OP_dup, DW_OP_lit0 + 1, DW_OP_shr, DW_OP_lit0, DW_OP_eq])
           + bytes([DW_OP_swap]) + _at_cfa(rec.cfa)            # CFA bad1 saved+cfa
           + bytes([DW_OP_constu]) + uleb(rec.align - 1)
           + bytes([DW_OP_and, DW_OP_lit0, DW_OP_ne, DW_OP_or]))  # CFA bad
    ret = _at_cfa(rec.ret - rec.cfa) + bytes([DW_OP_deref])
    return out + _val_expr(d.ra, _if_else(bad, bytes([DW_OP_drop, DW_OP_lit0]), ret))


def _trap_cfi(arch: ArchInfo, d: DwarfArch, rule: Rule) -> bytes:
    """Trap-frame step: CFA = sp + adjust + size; every register of
    ``struct trapframe`` saved at its slot."""
    lay = rule.layout
    assert lay is not None
    ws = arch.width
    sp = d.regs[arch.sp]
    out = bytes([DW_CFA_def_cfa]) + uleb(sp) + uleb(rule.adjust + lay.size)
    for name, off in lay.slots:
        reg = d.trap_ra if name == lay.pc else d.regs.get(name)
        if reg is None or (name == lay.sp and arch.name == "i386") \
                or (reg == d.trap_ra and name != lay.pc):   # (powerpc, MIPS: lr/ra)
            continue
        out += _offset(reg, off - lay.size, -ws)
    if arch.name == "i386":
        # kernel-mode trap (cs & 3 == 0): no esp pushed, it is base + size - 8
        slots = dict(lay.slots)
        cs = bytes([DW_OP_dup]) + _at_cfa(slots["cs"] - lay.size) \
            + bytes([DW_OP_deref, DW_OP_lit0 + 3, DW_OP_and])
        user = _at_cfa(slots[lay.sp] - lay.size) + bytes([DW_OP_deref])
        out += _val_expr(sp, _if_else(cs, user, _at_cfa(-8)))
    return out


def _end_cfi(arch: ArchInfo, d: DwarfArch, ra: int) -> bytes:
    """The backtrace ends: return address undefined (gdb: outermost frame),
    with a valid CFA (lldb drops a frame whose CFA it cannot compute)."""
    return bytes([DW_CFA_def_cfa]) + uleb(d.regs[arch.sp]) + uleb(d.entry_cfa) \
        + bytes([DW_CFA_undefined]) + uleb(ra)


def _leaf_cfi(arch: ArchInfo, d: DwarfArch) -> bytes:
    """Inside savectx/cpu_switch (arm, MIPS PCBs): same sp, the caller is the
    link register."""
    return bytes([DW_CFA_def_cfa]) + uleb(d.regs[arch.sp]) + uleb(0) \
        + bytes([DW_CFA_same_value]) + uleb(d.ra)


def _backchain_cfi(arch: ArchInfo, d: DwarfArch) -> bytes:
    """PowerPC: CFA = the back chain word at sp (the caller's sp); the return
    address in the caller's LR save word."""
    rec = arch.frame
    assert rec is not None
    expr = bytes([DW_OP_breg0 + d.regs[arch.sp]]) + sleb(0) + bytes([DW_OP_deref])
    return bytes([DW_CFA_def_cfa_expression]) + uleb(len(expr)) + expr \
        + _offset(d.ra, rec.ret, -arch.width)


def _prologue_cfi(arch: ArchInfo, d: DwarfArch, rule: Rule) -> bytes:
    """MIPS: CFA = sp + frame size; ra and s8 where the prologue stored them."""
    out = bytes([DW_CFA_def_cfa]) + uleb(d.regs[arch.sp]) + uleb(rule.adjust)
    for reg, off in rule.saved:
        out += _offset(reg, off - rule.adjust, -arch.width)
    return out


def _cfi(arch: ArchInfo, d: DwarfArch, rule: Rule, ra: int) -> bytes:
    if rule.kind == "trap":
        return _trap_cfi(arch, d, rule)
    if rule.kind == "end":
        return _end_cfi(arch, d, ra)
    if rule.kind in ("chain", "chain-plain"):
        return _chain_cfi(arch, d, rule.kind == "chain-plain")
    if rule.kind == "leaf":
        return _leaf_cfi(arch, d)
    if rule.kind == "backchain":
        return _backchain_cfi(arch, d)
    if rule.kind == "prologue":
        return _prologue_cfi(arch, d, rule)
    return _entry_cfi(arch, d, ra)


# -- what each debugger's module describes ------------------------------------

#: bytes of a gdb FDE before and after its pc
BEFORE, AFTER = 2, 1
MAX_REGIONS = 60000


class Region(NamedTuple):
    """One FDE: ``rows`` are (address, rule), sorted; the first is at ``start``."""

    start: int
    end: int
    rows: Tuple[Tuple[int, Rule], ...]
    signal: bool


def _rules_of(r: PcRules, trap: bool) -> Tuple[Optional[Rule], Optional[Rule]]:
    """(caller, inner) rules of one family: trap-frame steps or frame-pointer
    steps (one CIE per FDE: on arm64 they use different return columns)."""
    keep = [x if x is not None and (x.kind == "trap") == trap else None
            for x in (r.caller, r.inner)]
    return keep[0] or keep[1], keep[1] or keep[0]


def _end(addr: int, align: int) -> int:
    return addr + -addr % align


def gdb_regions(rules: Dict[int, PcRules], end_align: int = 1) -> List[Region]:
    """A ``[pc-2, pc+1)`` FDE per pc whose :meth:`PcRules.kind` is set (its
    end rounded up to ``end_align``, :attr:`DwarfArch.end_align`)."""
    out = []
    for pc, r in sorted(rules.items()):
        kind = r.kind()
        if kind is None or pc < BEFORE:
            continue
        caller, inner = (END, END) if kind == "end" else _rules_of(r, True)
        rows = ((pc - BEFORE, caller if kind == "trap" else ENTRY), (pc - 1, caller),
                (pc, inner))
        out.append(Region(pc - BEFORE, _end(pc + AFTER, end_align), rows, r.trap))
    return _no_overlaps(out)


def lldb_regions(rules: Dict[int, PcRules], covered: Callable[[int], bool],
                 chains: bool = False, end_align: int = 1) -> List[Region]:
    """One FDE per kernel function the kernel's sections hold (``covered``),
    from its first byte to its end (or its last visited pc): every trap-entry
    stub, and with ``chains`` every function of a frame (lldb's own
    frame-pointer unwinding fails on the architecture)."""
    by_fn: Dict[Function, List[Tuple[int, PcRules]]] = {}
    for pc, r in sorted(rules.items()):
        fn = r.function
        if (r.trap or chains) and fn is not None and covered(fn.start) and covered(pc):
            by_fn.setdefault(fn, []).append((pc, r))
    out = []
    for fn, pcs in by_fn.items():
        end = _end(max(pcs[-1][0] + AFTER, fn.start + fn.size), end_align)
        trap = any(r.trap for _pc, r in pcs)
        steps = [(pc, _lldb_ending(r, _rules_of(r, trap))) for pc, r in pcs]
        if trap:
            # The trap rule holds everywhere in a stub (its first byte may
            # differ: fork_trampoline before it ever ran).
            first = next((c for pc, (c, _i) in steps if c and pc - 1 > fn.start),
                         steps[0][1][0])
            rows: Dict[int, Optional[Rule]] = {fn.start: first, fn.start + 1: first}
        else:
            rows = {fn.start: ENTRY}
        for pc, (caller, inner) in steps:
            rows[pc - 1] = caller
            rows[pc] = inner
        kept = tuple(sorted((a, rule) for a, rule in rows.items()
                            if fn.start <= a < end and rule is not None))
        # No "S" augmentation: above a frame lldb takes for a trap handler, a pc
        # of 0 (the trapframe of a thread that never ran) would be one more frame.
        out.append(Region(fn.start, end, kept, False))
    return _no_overlaps(out)


def _lldb_ending(r: PcRules, rules: Tuple[Optional[Rule], Optional[Rule]]
                 ) -> Tuple[Optional[Rule], Optional[Rule]]:
    """Where every backtrace through ``r`` ends, a rule that cannot say so
    by itself becomes END: lldb drops a frame whose CFA it cannot compute (a
    NULL back chain) and goes on from a frame without a row.  The chain's stop
    checks (a return address of 0) and a trap frame's pc of 0 say it."""
    if not r.ends or r.goes_on:
        return rules
    return tuple(x if x is not None and x.kind in ("chain", "trap") else END  # type: ignore
                 for x in rules)


def _no_overlaps(regions: List[Region]) -> List[Region]:
    out: List[Region] = []
    last_end = -1
    for reg in sorted(regions, key=lambda g: g.start):
        if reg.start < last_end or reg.start < 0 or len(out) >= MAX_REGIONS:
            continue
        out.append(reg)
        last_end = reg.end
    return out


# -- ELF writer -------------------------------------------------------------


def _advance(delta: int, end: str) -> bytes:
    if delta < 0x40:
        return bytes([DW_CFA_advance_loc | delta])
    if delta < 0x100:
        return bytes([DW_CFA_advance_loc1, delta])
    if delta < 0x10000:
        return bytes([DW_CFA_advance_loc2]) + struct.pack(end + "H", delta)
    return bytes([DW_CFA_advance_loc4]) + struct.pack(end + "I", delta)


class _Cie(NamedTuple):
    offset: int
    ra: int


def _eh_frame(arch: ArchInfo, d: DwarfArch, order: str, regions: List[Region],
              signed: bool = False) -> bytes:
    """``.eh_frame`` of ``regions``; ``signed``: addresses as sign-extended
    4-byte values (gdb holds 32-bit MIPS addresses sign-extended, and finds
    no FDE at 0x80001000 for its pc 0xffffffff80001000)."""
    ws = arch.width
    end = "<" if order == "little" else ">"
    ptr = end + ("Q" if ws == 8 else "I")
    u32 = end + "I"
    out = bytearray()

    def pad(body: bytes) -> bytes:
        total = 4 + len(body)
        return body + bytes([DW_CFA_nop]) * (-total % ws)

    def cie(ra: int, signal: bool) -> _Cie:
        aug = b"zRS\x00" if signal else b"zR\x00"
        body = pad(struct.pack(u32, 0) + b"\x01" + aug + uleb(1) + sleb(-ws)
                   + uleb(ra) + uleb(1) + bytes([DW_EH_PE_sdata4 if signed else DW_EH_PE_absptr])
                   + _entry_cfi(arch, d, ra))
        at = len(out)
        out.extend(struct.pack(u32, len(body)) + body)
        return _Cie(at, ra)

    cies: Dict[Tuple[int, bool], _Cie] = {}
    for reg in regions:
        trap = any(rule.kind == "trap" for _a, rule in reg.rows)
        ra = d.trap_ra if trap else d.ra
        c = cies.get((ra, reg.signal)) or cies.setdefault((ra, reg.signal), cie(ra, reg.signal))
        program = bytearray()
        at = reg.start
        # rows of different shapes: each starts from the CIE's rule again
        restore = len({rule for _a, rule in reg.rows}) > 1
        if restore:
            program.append(DW_CFA_remember_state)
        for addr, rule in reg.rows:
            if addr > at:
                program += _advance(addr - at, end)
                at = addr
            if restore:
                program += bytes([DW_CFA_restore_state, DW_CFA_remember_state])
            program += _cfi(arch, d, rule, ra)
        fde_at = len(out)
        body = pad(struct.pack(u32, fde_at + 4 - c.offset)
                   + struct.pack(ptr, reg.start) + struct.pack(ptr, reg.end - reg.start)
                   + uleb(0) + bytes(program))
        out.extend(struct.pack(u32, len(body)) + body)
    out.extend(struct.pack(u32, 0))
    return bytes(out)


SHT_PROGBITS, SHT_STRTAB, SHT_NOTE, SHT_NOBITS = 1, 3, 7, 8
SHF_ALLOC = 2
ET_EXEC = 2
NT_GNU_BUILD_ID = 3
ELFOSABI_FREEBSD = 9


class Section(NamedTuple):
    """A section of a generated ELF: ``data`` is its contents, or the size
    of an SHT_NOBITS section."""

    name: str
    type: int
    flags: int
    addr: int
    data: Any
    align: int = 1


class Image(NamedTuple):
    """The ELF identity of the kernel a module stands for."""

    machine: int
    width: int
    byteorder: str
    osabi: int
    entry: int = 0
    flags: int = 0               # e_flags (the ABI: arm EABI, MIPS o32/n64...)


def write_elf(image: Image, sections: List[Section]) -> bytes:
    """A section-only ET_EXEC ELF (no program headers)."""
    is64 = image.width == 8
    end = "<" if image.byteorder == "little" else ">"
    ehdr_size, shdr_size = (64, 64) if is64 else (52, 40)
    shstr = bytearray(b"\0")
    names = []
    for sec in sections + [Section(".shstrtab", SHT_STRTAB, 0, 0, b"")]:
        names.append(len(shstr))
        shstr.extend(sec.name.encode() + b"\0")
    sections = sections + [Section(".shstrtab", SHT_STRTAB, 0, 0, bytes(shstr))]
    out = bytearray(ehdr_size)
    headers = [(0,) * 10]
    for name, sec in zip(names, sections):
        nobits = sec.type == SHT_NOBITS
        size = sec.data if nobits else len(sec.data)
        if not nobits:
            out.extend(bytes(-len(out) % 8))
        headers.append((name, sec.type, sec.flags, sec.addr, len(out), size, 0, 0,
                        sec.align, 0))
        if not nobits:
            out.extend(sec.data)
    out.extend(bytes(-len(out) % 8))
    shoff = len(out)
    shfmt = end + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
    for sh in headers:
        out.extend(struct.pack(shfmt, *sh))
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if image.byteorder == "little" else 2, 1,
                                image.osabi]) + bytes(8)
    fmt = "HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH"
    out[:ehdr_size] = ident + struct.pack(end + fmt, ET_EXEC, image.machine, 1, image.entry, 0,
                                          shoff, image.flags, ehdr_size, 0, 0, shdr_size,
                                          len(headers), len(headers) - 1)
    return bytes(out)


def identity_section(uuid: bytes, byteorder: str, name: str) -> Section:
    """What gives a file lldb's UUID ``uuid``: a GNU build-id note, or for a
    4-byte UUID (lldb's CRC-32 of a file without one) a ``.gnu_debuglink``
    naming ``name`` with that CRC."""
    end = "<" if byteorder == "little" else ">"
    if len(uuid) == 4:
        link = name.encode() + b"\0"
        link += bytes(-len(link) % 4)
        crc = int.from_bytes(uuid, "little")
        return Section(".gnu_debuglink", SHT_PROGBITS, 0, 0, link + struct.pack(end + "I", crc), 4)
    desc = uuid + bytes(-len(uuid) % 4)
    note = struct.pack(end + "III", 4, len(uuid), NT_GNU_BUILD_ID) + b"GNU\0" + desc
    return Section(".note.gnu.build-id", SHT_NOTE, SHF_ALLOC, 0, note, 4)


def build_gdb_module(arch_name: str, regions: List[Region], byteorder: str = "little",
                     flags: int = 0) -> Optional[bytes]:
    """gdb's module: an ``.eh_frame`` of ``regions`` (:func:`gdb_regions`),
    nothing else (no section or symbol covers code: gdb names frames from the
    kernel alone).  ``arch_name`` is a :data:`DWARF_ARCHES` key (``mips64``
    for n64 kernels), ``flags`` the kernel's e_flags.  None if the
    architecture is not supported or there is nothing to say."""
    arch = archdata.arch_info(arch_name)
    d = DWARF_ARCHES.get(arch_name)
    if arch is None or d is None or not regions:
        return None
    eh = _eh_frame(arch, d, byteorder, regions)
    machine = MACHINE_OF_ARCH["mips" if arch_name == "mips64" else arch_name]
    return write_elf(Image(machine, arch.width, byteorder, ELFOSABI_FREEBSD, flags=flags),
                     [Section(".eh_frame", SHT_PROGBITS, 0, 0, eh, arch.width)])


def build_lldb_image(arch_name: str, regions: List[Region], kernel: Any, uuid: bytes
                     ) -> Optional[bytes]:
    """lldb's stand-in for the kernel: the kernel's allocated sections (as
    SHT_NOBITS: code and data come from the dump), its ELF identity (machine,
    e_flags, entry), the UUID lldb gave the kernel's symbol file (so that
    file's symbols and DWARF attach to it) and an ``.eh_frame`` of
    ``regions`` (:func:`lldb_regions`, at link addresses).  ``kernel`` is a
    :class:`~kvm_dbg.elfkernel.KernelImage`; a 4-byte ``uuid`` (lldb's CRC of
    a file without a build-id) goes in a ``.gnu_debuglink`` naming it.  None
    if the architecture is not supported (by lldb) or there is nothing to
    describe."""
    arch = archdata.arch_info(arch_name)
    d = DWARF_ARCHES.get(arch_name)
    if arch is None or d is None or not d.lldb or not regions:
        return None
    ident = kernel.ident
    eh = _eh_frame(arch, d, ident.byteorder, regions)
    sections = [Section(s.name, SHT_NOBITS, s.flags, s.addr, s.size)
                for s in kernel_sections(kernel)]
    sections += [Section(".eh_frame", SHT_PROGBITS, 0, 0, eh, arch.width),
                 identity_section(uuid, ident.byteorder, os.path.basename(kernel.path))]
    return write_elf(Image(ident.machine, arch.width, ident.byteorder, ident.osabi,
                           ident.entry, ident.flags), sections)


#: a kernel's own CFI sections: the stand-in's .eh_frame takes their place (two
#: sections of one name, one of them empty, would leave lldb reading either)
KERNEL_CFI = (".eh_frame", ".eh_frame_hdr")


def kernel_sections(kernel: Any) -> List[Any]:
    """The kernel's allocated sections (what a debugger loads), but its own
    ``.eh_frame``: the stand-in's rules for the frames the dump has replace it
    (a ``.debug_frame`` is not allocated: lldb still reads it from the
    kernel's symbol file)."""
    return [s for s in kernel.sections
            if s.flags & SHF_ALLOC and s.size and s.name and s.name not in KERNEL_CFI]


def _moved(regions: List[Region], delta: int) -> List[Region]:
    """``regions`` ``delta`` bytes further (modulo 2**64)."""
    m = (1 << 64) - 1
    return [Region((g.start + delta) & m, (g.end + delta) & m,
                   tuple(((a + delta) & m, rule) for a, rule in g.rows), g.signal)
            for g in regions]


def write_unwind_elf(kvm: Any, path: str, debugger: str, uuid: bytes = b""
                     ) -> Dict[int, str]:
    """Write ``kvm``'s unwind module for ``debugger`` to ``path``: for "gdb"
    :func:`build_gdb_module` (at run-time addresses), for "lldb"
    :func:`build_lldb_image` (``uuid``: lldb's for the kernel's symbol file;
    at the kernel's link addresses, ``kvm.kerndisp`` below the run-time
    ones).  ``{pc: kind}`` of the (run-time) pcs it describes ("end",
    "trap", or the rule's kind); empty when there is nothing to say (no file
    written)."""
    arch = archdata.arch_for_kvm(kvm)
    d = DWARF_ARCHES.get(arch.name) if arch is not None else None
    if arch is None or d is None:
        return {}
    rules = collect(kvm)
    kernel = getattr(kvm, "kernel", None)
    ident = getattr(kernel, "ident", None)
    if debugger == "gdb":
        regions = gdb_regions(rules, d.end_align)
        data = build_gdb_module(arch.name, regions, getattr(kvm, "byteorder", "little"),
                                ident.flags if ident is not None else 0)
    else:
        from .kstate import ksyms
        kernel = ksyms.for_kvm(kvm)
        if isinstance(kernel, ksyms.Displaced):
            kernel = kernel.image              # the stand-in is at link addresses
        if kernel is None or not d.lldb:
            return {}
        sections = kernel_sections(kernel)
        disp = getattr(kvm, "kerndisp", 0) or 0

        def covered(pc: int) -> bool:
            link = (pc - disp) & ((1 << 64) - 1)
            return any(s.addr <= link < s.addr + s.size for s in sections)

        regions = lldb_regions(rules, covered, d.lldb_chains, d.end_align)
        data = build_lldb_image(arch.name, _moved(regions, -disp), kernel, uuid)
    if data is None:
        return {}
    with open(path, "wb") as f:
        f.write(data)
    starts = [g.start for g in regions]
    out = {}
    for pc, r in rules.items():
        i = bisect.bisect_right(starts, pc) - 1
        kind = r.kind() or (r.caller.kind if r.caller else None)
        if i >= 0 and pc < regions[i].end and kind is not None:
            out[pc] = kind
    return out
