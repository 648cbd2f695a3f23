"""kvm_dbg for gdb: the frames of the open dump (part of kvm_gdb.py).

A Python unwinder for frames without DWARF: gdb only adapts registers and
memory to ``kvm_dbg.adapter.FrameUnwinder`` (kvm_dbg's frame-pointer and
trap-frame rules); reads go to the server process over RSP, which is safe
here.  The server's unwind module, an objfile of FDEs only, says what a
Python unwinder cannot: where the unwinder leaves a frame to gdb's DWARF
unwinder, trap frames become signal frames (``<signal handler called>``, as
kgdb shows them) and a backtrace ends without "Backtrace stopped".
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import gdb  # type: ignore[import-not-found]

from kvm_dbg import adapter

_state: Dict[str, Any] = {"unwinder": None, "module": None, "types": {}}


def attach(kernel: adapter.KernelFile, symbols: Dict[str, Optional[int]]) -> None:
    """Unwind the frames of a dump of ``kernel`` (the server accepted it)."""
    if kernel.arch is not None:
        _state["unwinder"] = adapter.FrameUnwinder(kernel.arch, kernel.byteorder, symbols,
                                                   adapter.register_names(kernel.arch))


def relocate(kernel: str, disp: int) -> None:
    """A kernel running away from its link address (powerpc64): its symbols
    at their run-time addresses, the frames' pcs (kgdb relocates the kernel
    by kvm_kerndisp)."""
    if not disp:
        return
    confirm = gdb.parameter("confirm")
    gdb.execute("set confirm off", to_string=True)
    try:
        gdb.execute(f"symbol-file -o {disp:#x} {adapter.quote(kernel)}", to_string=True)
    finally:
        gdb.execute(f"set confirm {'on' if confirm else 'off'}", to_string=True)


def load_module(query: Callable[[str], str]) -> None:
    """Load the server's unwind module (``query`` asks the server)."""
    module = adapter.parse_unwind_reply(query("unwind-elf gdb"))
    if module is None or _state["unwinder"] is None:
        return
    try:
        gdb.execute(f"add-symbol-file {adapter.quote(module.path)}", to_string=True)
    except gdb.error as e:
        gdb.write(f"kvm-open: warning: {module.path}: {adapter.one_line(e)}: backtraces end "
                  "with gdb's own message and trap frames show as plain frames\n")
        return
    _state["module"] = module.path
    _state["unwinder"].kinds = module.kinds


def detach() -> None:
    """Forget the dump's frames (at kvm-close)."""
    _state["unwinder"] = None
    _state["types"] = {}
    path, _state["module"] = _state["module"], None
    if path:
        try:
            gdb.execute(f"remove-symbol-file {adapter.quote(path)}", to_string=True)
        except gdb.error:
            pass


class _FrameId:
    def __init__(self, sp: int, pc: int) -> None:
        self.sp, self.pc = gdb.Value(sp), gdb.Value(pc)  # gdb 13 wants Values


def _read_memory(addr: int, size: int) -> Optional[bytes]:
    try:
        return bytes(gdb.selected_inferior().read_memory(addr, size))
    except (gdb.error, ValueError, OverflowError):
        return None


def _function_at(u: adapter.FrameUnwinder, arch: Any) -> Callable[[int], Optional[tuple]]:
    """(name, start) of the symbol gdb shows for a pc (no frame is touched)."""
    return lambda pc: u.function_at(
        pc, lambda addr: gdb.format_address(addr, gdb.current_progspace(), arch))


def _has_debug_info(pc: int) -> bool:
    """gdb's DWARF unwinder does better where there is debug info."""
    block = gdb.current_progspace().block_for_pc(pc)
    while block is not None and block.function is None:
        block = block.superblock
    return block is not None


def _unwind(pf: Any, u: adapter.FrameUnwinder) -> Any:
    regs = {}
    for k in u.wanted:
        try:
            regs[k] = int(pf.read_register(u.names.get(k, k))) & u.mask
        except (gdb.error, ValueError):
            pass
    pc = regs.get(u.info.pc)
    generation = len(gdb.objfiles())   # symbol facts hold until symbol files change
    if pc is None or u.cached("debug", pc, _has_debug_info, generation):
        return None
    find = _function_at(u, pf.architecture())
    step = u.step(regs, pf.level(), _read_memory,
                  lambda p: u.cached("function", p, find, generation))
    if step is None:
        return None
    ui = pf.create_unwind_info(_FrameId(step.stack, pc))
    types = _state["types"]             # register types, read once per register
    for k, v in step.caller.items():
        name = u.names.get(k)
        if name is not None:
            try:
                rtype = types.get(name) or types.setdefault(name, pf.read_register(name).type)
                ui.add_saved_register(name, gdb.Value(v).cast(rtype))
            except (gdb.error, ValueError):
                pass
    return ui


def register() -> None:
    """Install the unwinder (for every program space); ImportError without
    gdb's unwinder API."""
    from gdb.unwinder import Unwinder, register_unwinder  # type: ignore[import-not-found]

    class KvmUnwinder(Unwinder):
        """kvm_dbg's frame-pointer and trap-frame rules for frames without DWARF."""

        def __init__(self) -> None:
            super().__init__("kvm_dbg")

        def __call__(self, pending_frame: Any) -> Any:
            u = _state["unwinder"]
            if u is None:
                return None
            try:
                return _unwind(pending_frame, u)
            except (gdb.error, ValueError, OverflowError):
                return None

    register_unwinder(None, KvmUnwinder(), replace=True)
