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
arm64.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from .kstate import archdata
from .kstate.archdata import ArchInfo, TrapLayout
from .kstate.unwind import _lookup, _trap_sp_adjust, is_trap_function

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
}

#: symbol name of a code range whose function the library does not know
UNKNOWN = "??"

# -- rules ------------------------------------------------------------------


class Rule(NamedTuple):
    """How the caller's registers follow from a frame at one pc."""

    kind: str                    # "chain", "chain-plain" (no stop checks) or "trap"
    adjust: int = 0              # trap: trapframe = sp + adjust
    layout: Optional[TrapLayout] = None


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
        return Rule("trap", _trap_sp_adjust(kvm, arch, fn, pc), layout)
    if arch.frame is None or arch.frame.backchain or not arch.fp:
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
    except Exception:  # any read error: not in the dump
        return False


# -- DWARF encoding ---------------------------------------------------------

DW_CFA_advance_loc = 0x40
DW_CFA_offset = 0x80
DW_CFA_nop = 0x00
DW_CFA_offset_extended_sf = 0x11
DW_CFA_def_cfa = 0x0C
DW_CFA_val_expression = 0x16
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
        if reg is None or (name == lay.sp and arch.name == "i386"):
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


def _cfi(arch: ArchInfo, d: DwarfArch, rule: Rule) -> bytes:
    return _trap_cfi(arch, d, rule) if rule.kind == "trap" \
        else _chain_cfi(arch, d, rule.kind == "chain-plain")


# -- ELF writer -------------------------------------------------------------

#: bytes of a generated code range before and after its pc
BEFORE, AFTER = 2, 1
MAX_SECTIONS = 60000


class _Cie(NamedTuple):
    offset: int
    ra: int


def _eh_frame(arch: ArchInfo, d: DwarfArch, order: str, entries: List[Tuple[int, PcRules]]
              ) -> bytes:
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
    for pc, rules in entries:
        ra = d.trap_ra if rules.caller.kind == "trap" else d.ra
        if (rules.inner.kind == "trap") != (rules.caller.kind == "trap") \
                and d.trap_ra != d.ra:
            continue    # one CIE per FDE: both rows need the same return column
        c = cies.get(ra) or cies.setdefault(ra, cie(ra))
        at = len(out)
        body = pad(struct.pack(u32, at + 4 - c.offset)
                   + struct.pack(ptr, pc - BEFORE) + struct.pack(ptr, BEFORE + AFTER)
                   + uleb(0)
                   + bytes([DW_CFA_advance_loc | 1]) + _cfi(arch, d, rules.caller)
                   + bytes([DW_CFA_advance_loc | 1]) + _cfi(arch, d, rules.inner))
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


def build_elf(arch_name: str, rules: Dict[int, PcRules], byteorder: str = "little"
              ) -> Optional[bytes]:
    """The unwind module for ``rules`` (from :func:`collect`); None if the
    architecture is not supported or there is nothing to describe.

    Each pc gets a writable, executable SHT_NOBITS section ``[pc-2, pc+1)`` (so
    debuggers read code from the dump, never from this file), a function
    symbol and an FDE; pcs whose ranges overlap an earlier one are left out.
    The symbol ends before the pc when the dump has the code there: lldb then
    unwinds an innermost frame at that pc with the FDE instead of inspecting
    instructions.  Otherwise it covers the pc (lldb cannot read the code, and
    falls back to the FDE).
    """
    arch = archdata.arch_info(arch_name)
    d = DWARF_ARCHES.get(arch_name)
    if arch is None or d is None or not rules:
        return None
    entries = _entries(rules)
    eh = _eh_frame(arch, d, byteorder, entries)
    shstr, strtab = bytearray(b"\0"), bytearray(b"\0")

    def name(table: bytearray, s: str) -> int:
        table.extend(s.encode() + b"\0")
        return len(table) - len(s.encode()) - 1

    is64 = arch.width == 8
    end = "<" if byteorder == "little" else ">"
    ehdr_size, shdr_size, sym_size = (64, 64, 24) if is64 else (52, 40, 16)
    names = [name(shstr, n) for n in (".eh_frame", ".symtab", ".strtab", ".shstrtab")]
    # distinct section names: lldb maps ELF symbols to sections by name
    text_names = [name(shstr, f".text.kvm_unwind.{i}") for i in range(len(entries))]
    syms = bytearray(sym_size)
    for i, (pc, r) in enumerate(entries):
        size = BEFORE if r.readable else BEFORE + AFTER
        st_name, info, shndx = name(strtab, r.name), STB_GLOBAL << 4 | STT_FUNC, i + 1
        if is64:
            syms += struct.pack(end + "IBBHQQ", st_name, info, 0, shndx, pc - BEFORE, size)
        else:
            syms += struct.pack(end + "IIIBBH", st_name, pc - BEFORE, size, info, 0, shndx)
    first = len(entries) + 1                 # section index of .eh_frame
    blobs = [eh, bytes(syms), bytes(strtab), bytes(shstr)]
    offsets, at = [], ehdr_size
    for blob in blobs:
        at += -at % 8
        offsets.append(at)
        at += len(blob)
    shoff = at + (-at % 8)
    shdrs = [(0,) * 10]
    flags = SHF_ALLOC | SHF_WRITE | SHF_EXECINSTR
    for text_name, (pc, _r) in zip(text_names, entries):
        shdrs.append((text_name, SHT_NOBITS, flags, pc - BEFORE, ehdr_size, BEFORE + AFTER,
                      0, 0, 1, 0))
    shdrs.append((names[0], SHT_PROGBITS, 0, 0, offsets[0], len(eh), 0, 0, arch.width, 0))
    shdrs.append((names[1], SHT_SYMTAB, 0, 0, offsets[1], len(syms), first + 2, 1, 8,
                  sym_size))
    shdrs.append((names[2], SHT_STRTAB, 0, 0, offsets[2], len(strtab), 0, 0, 1, 0))
    shdrs.append((names[3], SHT_STRTAB, 0, 0, offsets[3], len(shstr), 0, 0, 1, 0))
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if byteorder == "little" else 2, 1,
                                ELFOSABI_FREEBSD]) + bytes(8)
    fmt = "HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH"
    ehdr = ident + struct.pack(end + fmt, ET_EXEC, d.machine, 1, 0, 0, shoff, 0, ehdr_size,
                               0, 0, shdr_size, len(shdrs), len(shdrs) - 1)
    shfmt = end + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
    out = bytearray(ehdr)
    for off, blob in zip(offsets, blobs):
        out.extend(bytes(off - len(out)) + blob)
    out.extend(bytes(shoff - len(out)))
    for sh in shdrs:
        out.extend(struct.pack(shfmt, *sh))
    return bytes(out)


def write_unwind_elf(kvm: Any, path: str, skip: Optional[Callable[[int], bool]] = None
                     ) -> int:
    """Write the unwind module of ``kvm``'s threads to ``path``; the number of
    pcs it describes (0: nothing written)."""
    rules = collect(kvm, skip=skip)
    data = build_elf(kvm.arch, rules, getattr(kvm, "byteorder", "little"))
    if data is None:
        return 0
    with open(path, "wb") as f:
        f.write(data)
    return len(_entries(rules))
