"""Stack unwinding from a PCB: frame-pointer chains plus kernel trap frames.

Frame-pointer rules follow LLDB's generic unwinder, which produced the
reference backtraces of the real dumps: a caller frame is kept only if its
return address and saved frame pointer are readable, the return address is
non-zero, the saved frame pointer is not 0/1 and the caller's CFA is aligned.
PowerPC follows the stack back chain; MIPS, which keeps no frame pointer,
reads the function's prologue (its frame size and where it saved ra and s8).
On arm and MIPS the PCB's pc is inside savectx/cpu_switch, which keep no frame:
the innermost frame's caller is the link register.  When the kernel ELF is
available, a frame inside a trap entry stub (kgdb's list, threads.md §6)
continues from the ``struct trapframe`` at its SP.
Bad data never makes unwinding raise: it stops at the first unreadable or implausible step,
on a loop, or at ``max_frames``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import invalid_address
from . import archdata
from .archdata import ArchInfo
from .memory import int_map, lookup, read, read_partial, read_ptr

MAX_FRAMES = 256


@dataclass
class Frame:
    """One stack frame: its pc, stack and frame pointer, and every register
    known in it (all of them for a trap frame, pc/sp/fp for a plain frame)."""

    pc: int
    sp: Optional[int]
    fp: Optional[int]
    regs: Dict[str, int] = field(default_factory=dict)
    kind: str = "frame"            # "pcb", "frame" or "trapframe"
    function: Optional[str] = None


def is_trap_function(arch: ArchInfo, name: str) -> bool:
    """True for kgdb's trap-entry stubs (amd64/i386: also ``X*`` vectors)."""
    if name in arch.trap_functions:
        return True
    return arch.name in ("amd64", "i386") and len(name) > 1 and name[0] == "X" \
        and name[1] != "_"


def unwind(kvm: Any, arch: ArchInfo, regs: Dict[str, int], trap_key: str = "default",
           syms: Any = None, max_frames: int = MAX_FRAMES) -> List[Frame]:
    """Frames innermost first, starting from the registers of a PCB."""
    pc = regs.get(arch.pc)
    if pc is None:
        return []
    frames = [Frame(pc, regs.get(arch.sp), regs.get(arch.fp) if arch.fp else None,
                    dict(regs), "pcb", _function(syms, pc, 0))]
    seen = {(frames[0].sp, frames[0].fp, pc)}
    while len(frames) < max_frames:
        nxt = _step(kvm, arch, trap_key, frames[-1], syms, len(frames) - 1)
        if nxt is None:
            break
        key = (nxt.sp, nxt.fp, nxt.pc)
        if key in seen:
            break
        seen.add(key)
        frames.append(nxt)
    return frames


def _step(kvm: Any, arch: ArchInfo, trap_key: str, cur: Frame, syms: Any,
          depth: int) -> Optional[Frame]:
    """The caller of ``cur`` (at ``depth`` from the innermost frame), or None."""
    fn = _lookup(syms, cur.pc, depth)
    if fn is not None and is_trap_function(arch, fn[0]):
        return _trap_step(kvm, arch, trap_key, cur, fn, syms)
    if depth == 0 and arch.pcb_leaf_lr:
        return _leaf_step(arch, cur, syms)
    if arch.prologue is not None:
        return _prologue_step(kvm, arch, cur, fn, syms)
    return _chain_step(kvm, arch, cur, syms)


def _leaf_step(arch: ArchInfo, cur: Frame, syms: Any) -> Optional[Frame]:
    """The caller of a frame that saved nothing: pc = link register, same sp/fp."""
    ret = cur.regs.get(arch.pcb_leaf_lr or "")
    if not ret:
        return None
    regs = {k: v for k, v in cur.regs.items() if k not in (arch.pc, arch.pcb_leaf_lr)}
    regs[arch.pc] = ret
    return Frame(ret, cur.sp, cur.fp, regs, "frame", _function(syms, ret, 1))


def prologue_frame(kvm: Any, arch: ArchInfo, pc: int, start: int
                   ) -> Optional[Tuple[int, Dict[int, int]]]:
    """MIPS: (frame size, {31: ra slot, 30: s8 slot}) from the prologue of the
    function starting at ``start``, scanned up to ``pc``; None for a function
    without a frame or that did not save ra (nothing to go on)."""
    pro = arch.prologue
    if pro is None:
        return None
    count = min((pc - start) // 4, pro.max_insns)
    code = read(kvm, start, 4 * count) if count > 0 else None
    if code is None:
        return None
    size, saved = None, {}
    for (word,) in struct.iter_unpack(">I" if kvm.byteorder == "big" else "<I", code):
        hi, imm = word >> 16, word & 0xFFFF
        imm -= (imm & 0x8000) << 1
        if hi == pro.sp_adjust and imm < 0 and size is None:
            size = -imm
        elif hi & ~0x1F == pro.store and hi & 0x1F in (30, 31):
            saved.setdefault(hi & 0x1F, imm)
    if size is None or 31 not in saved:
        return None
    return size, saved


def _prologue_step(kvm: Any, arch: ArchInfo, cur: Frame, fn: Optional[Tuple[str, int]],
                   syms: Any) -> Optional[Frame]:
    """MIPS: the caller from the function prologue's frame size and save slots."""
    if fn is None or cur.sp is None:
        return None
    frame = prologue_frame(kvm, arch, cur.pc, fn[1])
    if frame is None:
        return None
    size, saved = frame
    ret = read_ptr(kvm, cur.sp + saved[31])
    if not ret:
        return None
    caller_sp = cur.sp + size
    fp = read_ptr(kvm, cur.sp + saved[30]) if 30 in saved else cur.fp
    regs = {arch.pc: ret, arch.sp: caller_sp}
    if arch.fp and fp is not None:
        regs[arch.fp] = fp
    return Frame(ret, caller_sp, fp, regs, "frame", _function(syms, ret, 1))


class _ReaderMem:
    """A read-only kvm look-alike over a debugger's memory reader."""

    def __init__(self, read: Callable[[int, int], Optional[bytes]], byteorder: str,
                 ptrsize: int, lookup: Optional[Callable[[str], Optional[int]]]) -> None:
        self._read, self._lookup = read, lookup
        self.byteorder, self.ptrsize = byteorder, ptrsize

    def read(self, addr: int, size: int) -> bytes:
        data = self._read(addr, size)
        if data is None or len(data) < size:
            raise invalid_address(addr + (len(data) if data else 0))
        return bytes(data[:size])

    def read_partial(self, addr: int, size: int) -> bytes:
        data = self._read(addr, size)
        return b"" if data is None else bytes(data[:size])

    def lookup(self, name: str) -> Optional[int]:
        return self._lookup(name) if self._lookup else None


class _FunctionAt:
    def __init__(self, fn: Callable[[int], Optional[Tuple[str, int]]]) -> None:
        self.function_at = fn


def caller_registers(arch_name: str, regs: Dict[str, int],
                     read: Callable[[int, int], Optional[bytes]], *, depth: int = 0,
                     byteorder: str = "little",
                     function_at: Optional[Callable[[int], Optional[Tuple[str, int]]]] = None,
                     lookup: Optional[Callable[[str], Optional[int]]] = None,
                     trap_key: str = "default") -> Optional[Dict[str, int]]:
    """One unwinding step for a debugger's frame unwinder.

    ``regs`` are the known registers of the frame at ``depth`` (library
    names: rip/rsp/rbp, pc/sp/fp...), ``read(addr, n)`` returns bytes or
    None, ``function_at(pc)`` gives ``(name, start)`` for trap-frame
    detection.  Returns the caller's registers (same rules as :func:`unwind`)
    or None when the chain ends.  ``read`` answers None for memory it cannot
    read; anything it or ``function_at`` raises propagates (a debugger error
    is not the end of a stack).
    """
    arch = archdata.arch_info(arch_name, 8 if arch_name == "mips64" else None)
    if arch is None or arch.pc not in regs:
        return None
    mem = _ReaderMem(read, byteorder, arch.width, lookup)
    syms = _FunctionAt(function_at) if function_at else None
    cur = Frame(regs[arch.pc], regs.get(arch.sp), regs.get(arch.fp) if arch.fp else None,
                dict(regs))
    nxt = _step(mem, arch, trap_key, cur, syms, depth)
    return None if nxt is None else dict(nxt.regs)


def _lookup(syms: Any, pc: int, depth: int) -> Optional[Tuple[str, int]]:
    """Function containing a frame's pc; callers' pcs are return addresses,
    so look one byte back for them."""
    if syms is None:
        return None
    return syms.function_at(pc - 1 if depth > 0 and pc else pc)


def _function(syms: Any, pc: int, depth: int) -> Optional[str]:
    fn = _lookup(syms, pc, depth)
    return fn[0] if fn else None


def _chain_step(kvm: Any, arch: ArchInfo, cur: Frame, syms: Any) -> Optional[Frame]:
    rec = arch.frame
    if rec is None:
        return None
    if rec.backchain:
        if not cur.sp:
            return None
        caller_sp = read_ptr(kvm, cur.sp)
        if not caller_sp or caller_sp % rec.align:
            return None
        ret = read_ptr(kvm, caller_sp + rec.ret)
        if not ret:
            return None
        return Frame(ret, caller_sp, caller_sp, {arch.sp: caller_sp, arch.pc: ret},
                     "frame", _function(syms, ret, 1))
    fp = cur.fp
    if not fp:
        return None
    saved = read_ptr(kvm, fp + rec.saved_fp)
    ret = read_ptr(kvm, fp + rec.ret)
    if saved is None or not ret:
        return None
    fn = _lookup(syms, ret, 1)
    in_trap = fn is not None and is_trap_function(arch, fn[0])
    if not in_trap and (saved in (0, 1) or (saved + rec.cfa) % rec.align):
        return None
    sp = fp + rec.cfa
    regs = {arch.pc: ret, arch.sp: sp}
    if arch.fp:
        regs[arch.fp] = saved
    return Frame(ret, sp, saved, regs, "frame", fn[0] if fn else None)


def _trap_step(kvm: Any, arch: ArchInfo, key: str, cur: Frame, fn: Tuple[str, int],
               syms: Any) -> Optional[Frame]:
    layout = arch.trap_layouts.get(key) or arch.trap_layouts.get("default")
    if layout is None or cur.sp is None:
        return None
    base = cur.sp + layout.offset + _trap_sp_adjust(kvm, arch, fn, cur.pc)
    raw = read_partial(kvm, base, layout.size)
    regs = int_map(raw, kvm.byteorder, layout.slots, layout.width)
    if arch.name == "i386" and "cs" in regs and regs["cs"] & 3 == 0:
        regs[layout.sp] = base + layout.size - 8      # kernel trap: no esp/ss pushed
        regs.pop("ss", None)
    elif arch.name == "arm" and "cpsr" in regs:
        usr = regs["cpsr"] & 0x1F == archdata.ARM_TRAP_USR_MODE
        sp_off, lr_off = archdata.ARM_TRAP_USR_SP_LR if usr else archdata.ARM_TRAP_SVC_SP_LR
        regs.update(int_map(raw, kvm.byteorder, (("sp", sp_off), ("lr", lr_off)), 4))
    pc = regs.get(layout.pc)
    if not pc:
        return None                                   # thread start (or unreadable)
    return Frame(pc, regs.get(layout.sp), regs.get(arch.fp) if arch.fp else None, regs,
                 "trapframe", _function(syms, pc, 0))


_I386_BYREF_TRAPS = ("calltrap", "Xlcall_syscall", "Xint0x80_syscall", "Xtimerint")
_I386_NOADJ_TRAPS = ("Xcpustop", "Xrendezvous", "Xipi_intr_bitmap_handler", "Xlazypmap")


def _trap_sp_adjust(kvm: Any, arch: ArchInfo, fn: Tuple[str, int], pc: int) -> int:
    """Where the trapframe starts relative to the frame's SP (threads.md §6)."""
    name, start = fn
    if arch.name == "amd64":
        return 8 if name == "fork_trampoline" and pc == start else 0
    if arch.name != "i386":
        return 0
    if name in _I386_NOADJ_TRAPS:
        return 0
    if name == "fork_trampoline":
        return 4 if pc == start else 12
    byref = 4 if _i386_frame_by_reference(kvm) else 0
    if name in _I386_BYREF_TRAPS:
        return byref
    return 4 + byref


def _i386_frame_by_reference(kvm: Any) -> bool:
    """Newer i386 kernels pass the trapframe by reference: ``calltrap``
    starts with ``push %esp`` (0x54)."""
    addr = lookup(kvm, "calltrap")
    first = read(kvm, addr, 1) if addr is not None else None
    return first == b"\x54"
