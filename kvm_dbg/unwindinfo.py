"""Unwind information for debuggers, generated from the library's unwinder.

A kernel with only a symbol table gives a debugger no code sections and no
CFI, so lldb falls back to heuristics.  :func:`build_elf` writes a small ELF
"unwind module": for each program counter the library's unwinder visited, a
3-byte code section ``[pc-2, pc+1)`` (SHT_NOBITS, so the debugger still reads
the dump's own bytes) and an ``.eh_frame`` FDE stating the rule
:mod:`kvm_dbg.kstate.unwind` applies there: the frame-pointer step (its stop
checks as a DWARF expression) or the trap-frame step.

FDE rows: offset 0 is the function-entry rule (lldb's x86 assembly
augmentation requires it), offset 1 is used for callers (whose pc a debugger
backs up by one) and offset 2 for the innermost frame - matching the
library's ``depth`` rule for trap-function lookups.  Supported: amd64, i386,
arm64, arm, powerpc, powerpc64 and mips (o32 and n64): the frame-pointer
chain, the PowerPC back chain (a CFA expression), a MIPS frame as its
prologue built it, the innermost frame of arm/MIPS PCBs (inside savectx:
the caller is the link register) and trap frames.  riscv is left out: lldb
16 has no RISC-V ABI plugin and does not unwind it at all.

Kernel code lldb can read but has no CFI for (a kernel ELF with code and no
``.eh_frame``/``.debug_frame``) is covered too: the module's sections shadow
the kernel's there, so lldb unwinds with the library's rules.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from .errors import KvmError
from .kstate import archdata
from .kstate.archdata import ArchInfo, TrapLayout
from .kstate.unwind import _lookup, _trap_sp_adjust, is_trap_function, prologue_frame

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


@dataclass(frozen=True)
class DwarfArch:
    """ELF and DWARF numbering of one architecture."""

    machine: int                 # e_machine
    regs: Dict[str, int]         # library register name -> DWARF number
    ra: int                      # return-address column of frame-pointer rules
    trap_ra: int                 # column holding the pc in trap-frame rules
    entry_cfa: int               # CFA = sp + entry_cfa at a function's first byte


DWARF_ARCHES: Dict[str, DwarfArch] = {
    "amd64": DwarfArch(62, _X86_64, 16, 16, 8),
    "i386": DwarfArch(3, _I386, 8, 8, 4),
    "arm64": DwarfArch(183, _ARM64, 30, 32, 0),
    "arm": DwarfArch(40, _ARM, 14, 15, 0),
    # powerpc and MIPS have no pc column: the link register's is the return address
    "powerpc64": DwarfArch(21, _PPC, 65, 65, 0),
    "powerpc": DwarfArch(20, _PPC, 65, 65, 0),
    "mips": DwarfArch(8, _MIPS, 31, 31, 0),
    "mips64": DwarfArch(8, _MIPS, 31, 31, 0),
}

#: symbol name of a code range whose function the library does not know
UNKNOWN = "??"

# -- rules ------------------------------------------------------------------


class Rule(NamedTuple):
    """How the caller's registers follow from a frame at one pc."""

    kind: str                    # "chain", "chain-plain" (no stop checks), "trap",
    #                              "leaf", "backchain", "prologue" or "end"
    adjust: int = 0              # trap: trapframe = sp + adjust; prologue: frame size
    layout: Optional[TrapLayout] = None
    saved: Tuple[Tuple[int, int], ...] = ()     # prologue: (register, sp offset)


class PcRules(NamedTuple):
    caller: Rule                 # the pc is a return address (depth > 0)
    inner: Rule                  # the pc is the innermost frame's (depth 0)
    readable: bool = False       # the dump has the code byte at pc
    name: str = UNKNOWN          # function name for the symbol


def _rule(kvm: Any, arch: ArchInfo, trap_key: str, syms: Any, pc: int, depth: int,
          plain: bool) -> Optional[Rule]:
    fn = _lookup(syms, pc, depth)
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


def collect(kvm: Any, threads: Optional[Iterable[Any]] = None,
            skip: Optional[Callable[[int], bool]] = None) -> Dict[int, PcRules]:
    """Rules for every pc of every thread's frames (``kvm.threads()``), except
    those ``skip(pc)`` rejects (e.g. pcs a debugger already has a module for)."""
    arch = archdata.arch_for_kvm(kvm)
    if arch is None or arch.name not in DWARF_ARCHES:
        return {}
    found: Dict[int, Dict[int, Rule]] = {}
    names: Dict[int, str] = {}
    for kt in kvm.threads() if threads is None else threads:
        ctx = getattr(kt, "_ctx", None)
        trap_key = ctx.trap_key if ctx is not None else "default"
        syms = ctx.symbols() if ctx is not None else None
        frames = kt.frames()
        for i, fr in enumerate(frames):
            if skip is not None and skip(fr.pc):
                continue
            nxt = frames[i + 1] if i + 1 < len(frames) else None
            # The library skips its stop checks when the caller is a trap stub.
            plain = nxt is not None and nxt.function is not None \
                and is_trap_function(arch, nxt.function)
            depth = min(i, 1)
            if depth and fr.function:
                names.setdefault(fr.pc, fr.function)
            rules = found.setdefault(fr.pc, {})
            old = rules.get(depth)
            if old is None or (plain and old.kind == "chain"):
                rule = _rule(kvm, arch, trap_key, syms, fr.pc, depth, plain)
                if rule is not None and rule.kind == "backchain" and nxt is None:
                    # the chain ends (a NULL back chain): say so with a valid CFA,
                    # or lldb drops this outermost frame
                    rule = Rule("end")
                if rule is not None:
                    rules[depth] = rule
    out = {}
    for pc, rules in found.items():
        caller = rules.get(1) or rules.get(0)
        if caller is not None:
            out[pc] = PcRules(caller, rules.get(0) or caller, _readable(kvm, pc),
                              names.get(pc) or UNKNOWN)
    return out


def _readable(kvm: Any, pc: int) -> bool:
    try:
        return len(kvm.read(pc, 1)) == 1
    except KvmError:  # not in the dump
        return False


# -- DWARF encoding ---------------------------------------------------------

DW_CFA_advance_loc = 0x40
DW_CFA_advance_loc1, DW_CFA_advance_loc2 = 0x02, 0x03
DW_CFA_remember_state, DW_CFA_restore_state = 0x0A, 0x0B
DW_CFA_offset = 0x80
DW_CFA_nop = 0x00
DW_CFA_offset_extended_sf = 0x11
DW_CFA_def_cfa = 0x0C
DW_CFA_def_cfa_expression = 0x0F
DW_CFA_same_value = 0x08
DW_CFA_undefined = 0x07
DW_CFA_val_expression = 0x16
DW_OP_breg0 = 0x70
DW_OP_deref, DW_OP_dup, DW_OP_drop, DW_OP_swap = 0x06, 0x12, 0x13, 0x16
DW_OP_and, DW_OP_or, DW_OP_plus, DW_OP_shr = 0x1A, 0x21, 0x22, 0x25
DW_OP_plus_uconst, DW_OP_constu, DW_OP_consts = 0x23, 0x10, 0x11
DW_OP_eq, DW_OP_ne, DW_OP_bra, DW_OP_skip = 0x29, 0x2E, 0x28, 0x2F
DW_OP_lit0 = 0x30
DW_EH_PE_absptr = 0x00


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


def _leaf_cfi(arch: ArchInfo, d: DwarfArch) -> bytes:
    """Inside savectx/cpu_switch (arm, MIPS PCBs): same sp, the caller is the link
    register."""
    return bytes([DW_CFA_def_cfa]) + uleb(d.regs[arch.sp]) + uleb(0) \
        + bytes([DW_CFA_same_value]) + uleb(d.ra)


def _backchain_cfi(arch: ArchInfo, d: DwarfArch) -> bytes:
    """PowerPC: CFA = the back chain word at sp (the caller's sp); the return address
    in the caller's LR save word."""
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


def _cfi(arch: ArchInfo, d: DwarfArch, rule: Rule) -> bytes:
    if rule.kind == "trap":
        return _trap_cfi(arch, d, rule)
    if rule.kind == "leaf":
        return _leaf_cfi(arch, d)
    if rule.kind == "backchain":
        return _backchain_cfi(arch, d)
    if rule.kind == "prologue":
        return _prologue_cfi(arch, d, rule)
    if rule.kind == "end":              # the outermost frame: no return address
        return bytes([DW_CFA_def_cfa]) + uleb(d.regs[arch.sp]) + uleb(0) \
            + bytes([DW_CFA_undefined]) + uleb(d.ra)
    return _chain_cfi(arch, d, rule.kind == "chain-plain")


# -- ELF writer -------------------------------------------------------------

#: bytes of a generated code range before and after its pc
BEFORE, AFTER = 2, 1
MAX_SECTIONS = 60000


class _Cie(NamedTuple):
    offset: int
    ra: int


class _Fde(NamedTuple):
    start: int
    length: int
    ra: int
    rows: List[Tuple[int, bytes]]        # (offset from start, CFI instructions)


def _fde_ra(d: DwarfArch, rules: PcRules) -> Optional[int]:
    """The return column of an FDE holding both rows (None: they need two)."""
    if (rules.inner.kind == "trap") != (rules.caller.kind == "trap") and d.trap_ra != d.ra:
        return None
    return d.trap_ra if rules.caller.kind == "trap" else d.ra


def _pc_fdes(arch: ArchInfo, d: DwarfArch, entries: List[Tuple[int, PcRules]]
             ) -> List[_Fde]:
    """One FDE ``[pc-2, pc+1)`` per pc: entry rule, caller row (+1), inner row (+2)."""
    out = []
    for pc, rules in entries:
        ra = _fde_ra(d, rules)
        if ra is not None:    # one CIE per FDE: both rows need the same return column
            out.append(_Fde(pc - BEFORE, BEFORE + AFTER, ra,
                            [(1, _cfi(arch, d, rules.caller)), (2, _cfi(arch, d, rules.inner))]))
    return out


def _function_fdes(arch: ArchInfo, d: DwarfArch, entries: List[Tuple[int, PcRules]],
                   functions: List[Tuple[str, int, int]]) -> List[_Fde]:
    """One FDE per function from its start (the entry rule), with a caller row at each
    pc - 1 and an inner row at each pc (each row starts from the entry rule again)."""
    starts = sorted((start, size) for _n, start, size in functions if size)
    out = []
    by_fn: Dict[Tuple[int, int], List[Tuple[int, PcRules]]] = {}
    for pc, rules in entries:
        fn = next(((s, n) for s, n in starts if s < pc < s + n), None)
        if fn is not None:
            by_fn.setdefault(fn, []).append((pc, rules))
    for (start, _size), items in sorted(by_fn.items()):
        ra, rows, last = None, [], 0
        for pc, rules in items:
            r = _fde_ra(d, rules)
            if r is None or (ra is not None and r != ra) or pc - 1 - start <= last:
                continue
            ra, last = r, pc - start
            rows += [(pc - 1 - start, _cfi(arch, d, rules.caller)),
                     (pc - start, _cfi(arch, d, rules.inner))]
        if rows and ra is not None:
            out.append(_Fde(start, last + AFTER, ra, rows))
    return out


def _advance(delta: int, end: str) -> bytes:
    if delta < 0x40:
        return bytes([DW_CFA_advance_loc | delta])
    if delta < 0x100:
        return bytes([DW_CFA_advance_loc1, delta])
    return bytes([DW_CFA_advance_loc2]) + struct.pack(end + "H", delta)


def _eh_frame(arch: ArchInfo, d: DwarfArch, order: str, fdes: List[_Fde]) -> bytes:
    ws = arch.width
    end = "<" if order == "little" else ">"
    ptr = end + ("Q" if ws == 8 else "I")
    u32 = end + "I"
    out = bytearray()

    def pad(body: bytes) -> bytes:
        total = 4 + len(body)
        return body + bytes([DW_CFA_nop]) * (-total % ws)

    def cie(ra: int) -> _Cie:
        init = bytes([DW_CFA_def_cfa]) + uleb(d.regs[arch.sp]) + uleb(d.entry_cfa)
        if d.entry_cfa:
            init += _offset(ra, -ws, -ws)     # return address at CFA - ws
        body = pad(struct.pack(u32, 0) + b"\x01zR\x00" + uleb(1) + sleb(-ws)
                   + uleb(ra) + uleb(1) + bytes([DW_EH_PE_absptr]) + init)
        at = len(out)
        out.extend(struct.pack(u32, len(body)) + body)
        return _Cie(at, ra)

    cies = {d.ra: cie(d.ra)}
    for fde in fdes:
        c = cies.get(fde.ra) or cies.setdefault(fde.ra, cie(fde.ra))
        at = len(out)
        rows, loc = bytearray(), 0
        restore = len(fde.rows) > 2          # rows of several pcs: reset to the entry rule
        if restore:
            rows.append(DW_CFA_remember_state)
        for off, cfi in fde.rows:
            rows += _advance(off - loc, end)
            if restore:
                rows += bytes([DW_CFA_restore_state, DW_CFA_remember_state])
            rows += cfi
            loc = off
        body = pad(struct.pack(u32, at + 4 - c.offset)
                   + struct.pack(ptr, fde.start) + struct.pack(ptr, fde.length)
                   + uleb(0) + bytes(rows))
        out.extend(struct.pack(u32, len(body)) + body)
    out.extend(struct.pack(u32, 0))
    return bytes(out)


SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS = 1, 2, 3, 8
STB_GLOBAL, STT_FUNC, ET_EXEC = 1, 2, 2
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
ELFOSABI_FREEBSD = 9


def _entries(rules: Dict[int, PcRules]) -> List[Tuple[int, PcRules]]:
    """Sorted (pc, rules), without pcs whose range overlaps an earlier one."""
    entries: List[Tuple[int, PcRules]] = []
    last_end = -1
    for pc in sorted(rules):
        if pc < BEFORE or pc - BEFORE < last_end or len(entries) >= MAX_SECTIONS:
            continue
        entries.append((pc, rules[pc]))
        last_end = pc + AFTER
    return entries


Shadow = Tuple[int, int, List[Tuple[str, int, int]]]     # (lo, hi, [(name, start, size)])


def build_elf(arch_name: str, rules: Dict[int, PcRules], byteorder: str = "little",
              flags: int = 0, shadow: Iterable[Shadow] = ()) -> Optional[bytes]:
    """The unwind module for ``rules`` (from :func:`collect`); None if the
    architecture is not supported or there is nothing to describe.

    Each pc gets a writable, executable SHT_NOBITS section ``[pc-2, pc+1)`` (so
    debuggers read code from the dump, never from this file), a function
    symbol and an FDE; pcs whose ranges overlap an earlier one are left out.
    The symbol ends before the pc when the dump has the code there: lldb then
    unwinds an innermost frame at that pc with the FDE instead of inspecting
    instructions.  Otherwise it covers the pc (lldb cannot read the code, and
    falls back to the FDE).  ``flags``: the kernel's e_flags (its ABI, for lldb).

    ``shadow``: kernel code ranges lldb cannot unwind on its own; each becomes one
    SHT_NOBITS section holding the kernel's function symbols there (so lldb names
    frames as the kernel does), and the pcs inside get no section of their own.
    """
    arch = archdata.arch_info(arch_name)
    d = DWARF_ARCHES.get(arch_name)
    if arch is None or d is None or not rules:
        return None
    shadow = list(shadow)
    entries = _entries(rules)
    inside = [(pc, r) for pc, r in entries if any(lo <= pc < hi for lo, hi, _ in shadow)]
    fdes = _pc_fdes(arch, d, [e for e in entries if e not in inside]) + _function_fdes(
        arch, d, inside, [f for _lo, _hi, funcs in shadow for f in funcs])
    eh = _eh_frame(arch, d, byteorder, fdes)
    shstr, strtab = bytearray(b"\0"), bytearray(b"\0")

    def name(table: bytearray, s: str) -> int:
        table.extend(s.encode() + b"\0")
        return len(table) - len(s.encode()) - 1

    is64 = arch.width == 8
    end = "<" if byteorder == "little" else ">"
    ehdr_size, shdr_size, sym_size = (64, 64, 24) if is64 else (52, 40, 16)
    names = [name(shstr, n) for n in (".eh_frame", ".symtab", ".strtab", ".shstrtab")]
    # distinct section names: lldb maps ELF symbols to sections by name
    # (address, size, [(symbol, value, size)]) of each code section
    code: List[Tuple[int, int, List[Tuple[str, int, int]]]] = []
    for pc, r in entries:
        if not any(lo <= pc < hi for lo, hi, _ in shadow):
            size = BEFORE if r.readable else BEFORE + AFTER
            code.append((pc - BEFORE, BEFORE + AFTER, [(r.name, pc - BEFORE, size)]))
    code += [(lo, hi - lo, funcs) for lo, hi, funcs in shadow]
    text_names = [name(shstr, f".text.kvm_unwind.{i}") for i in range(len(code))]
    syms = bytearray(sym_size)
    info = STB_GLOBAL << 4 | STT_FUNC
    for i, (_addr, _size, symbols) in enumerate(code):
        for sym_name, value, size in symbols:
            st_name = name(strtab, sym_name)
            if is64:
                syms += struct.pack(end + "IBBHQQ", st_name, info, 0, i + 1, value, size)
            else:
                syms += struct.pack(end + "IIIBBH", st_name, value, size, info, 0, i + 1)
    first = len(code) + 1                    # section index of .eh_frame
    blobs = [eh, bytes(syms), bytes(strtab), bytes(shstr)]
    offsets, at = [], ehdr_size
    for blob in blobs:
        at += -at % 8
        offsets.append(at)
        at += len(blob)
    shoff = at + (-at % 8)
    shdrs = [(0,) * 10]
    sh_flags = SHF_ALLOC | SHF_WRITE | SHF_EXECINSTR
    for text_name, (addr, size, _s) in zip(text_names, code):
        shdrs.append((text_name, SHT_NOBITS, sh_flags, addr, ehdr_size, size, 0, 0, 1, 0))
    shdrs.append((names[0], SHT_PROGBITS, 0, 0, offsets[0], len(eh), 0, 0, arch.width, 0))
    shdrs.append((names[1], SHT_SYMTAB, 0, 0, offsets[1], len(syms), first + 2, 1, 8,
                  sym_size))
    shdrs.append((names[2], SHT_STRTAB, 0, 0, offsets[2], len(strtab), 0, 0, 1, 0))
    shdrs.append((names[3], SHT_STRTAB, 0, 0, offsets[3], len(shstr), 0, 0, 1, 0))
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if byteorder == "little" else 2, 1,
                                ELFOSABI_FREEBSD]) + bytes(8)
    fmt = "HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH"
    ehdr = ident + struct.pack(end + fmt, ET_EXEC, d.machine, 1, 0, 0, shoff, flags,
                               ehdr_size, 0, 0, shdr_size, len(shdrs), len(shdrs) - 1)
    shfmt = end + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
    out = bytearray(ehdr)
    for off, blob in zip(offsets, blobs):
        out.extend(bytes(off - len(out)) + blob)
    out.extend(bytes(shoff - len(out)))
    for sh in shdrs:
        out.extend(struct.pack(shfmt, *sh))
    return bytes(out)


def _code_without_cfi(kvm: Any) -> List[Shadow]:
    """The kernel's code sections (run-time ranges, function symbols) when the kernel
    ELF has no CFI (.eh_frame/.debug_frame): lldb cannot unwind there on its own."""
    image = getattr(kvm, "kernel", None)
    sections = getattr(image, "sections", None)
    if not sections or any(s.name in (".eh_frame", ".debug_frame") for s in sections):
        return []
    disp = getattr(kvm, "kerndisp", 0) or 0
    funcs = image.functions()
    out: List[Shadow] = []
    for s in sections:
        if s.addr and s.size and s.flags & SHF_EXECINSTR:
            lo, hi = s.addr, s.addr + s.size
            out.append(((lo + disp) % (1 << 64), (hi + disp) % (1 << 64),
                        [(n, (start + disp) % (1 << 64), size) for start, size, n in funcs
                         if lo <= start < hi]))
    return out


def write_unwind_elf(kvm: Any, path: str, skip: Optional[Callable[[int], bool]] = None
                     ) -> int:
    """Write the unwind module of ``kvm``'s threads to ``path``; the number of
    pcs it describes (0: nothing written)."""
    shadow = _code_without_cfi(kvm)
    if skip is not None and shadow:
        outer = skip

        def skip(pc: int) -> bool:  # noqa: F811 (narrowed: kernel code lldb cannot unwind)
            return outer(pc) and not any(lo <= pc < hi for lo, hi, _ in shadow)
    rules = collect(kvm, skip=skip)
    arch = archdata.arch_for_kvm(kvm)
    ident = getattr(getattr(kvm, "kernel", None), "ident", None)
    data = build_elf(arch.name if arch else kvm.arch, rules, getattr(kvm, "byteorder", "little"),
                     ident.flags if ident is not None else 0, shadow)
    if data is None:
        return 0
    with open(path, "wb") as f:
        f.write(data)
    return len(_entries(rules))
