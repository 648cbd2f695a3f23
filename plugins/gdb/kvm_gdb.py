"""kvm_dbg for gdb: debug FreeBSD kernel crash dumps with stock gdb.

Add to ~/.gdbinit:      source /path/to/kvm_dbg/plugins/gdb/kvm_gdb.py
then:                   kvm-open [KERNEL] CORE

Debugger glue only (the logic is in ``kvm_dbg.adapter``): the dump is served
by a ``python -m kvm_dbg.rsp`` child process that gdb talks to with
``target remote`` (never a thread inside gdb: gdb holds the GIL while
waiting on the target); symbols come from gdb only (the server gets
--no-elf-symbols); frames without DWARF are unwound by kvm_gdb_frames.py.
Commands: kvm-open, kvm-close, kvm-info, kvm-ps, kvm-dmesg, kvm-crashinfo,
kvm-proc, kvm-tid, kvm-kld.  ``kvm_gdb.kvm()`` (gdb's ``python``) returns a read-only
``kvm_dbg.Kvm`` on the same dump; ``kvm_gdb.open_dump``/``close_dump`` serve
``gdb -batch -x`` scripts (kvm_gdb_api.py).  Finding kvm_dbg: plugins/kvm_path.py;
$KVM_DBG_PYTHON picks the interpreter that runs the server.
"""

from __future__ import annotations

import os
import re
import runpy
import sys
from typing import Any, Callable, Dict, Optional

import gdb  # type: ignore[import-not-found]

_HERE = os.path.dirname(os.path.abspath(__file__))


# plugins/kvm_path.py (shared by both adapters) puts kvm_dbg on sys.path; this
# directory holds kvm_gdb (imported by itself, below) and kvm_gdb_frames.
runpy.run_path(os.path.join(os.path.dirname(_HERE), "kvm_path.py"))["setup"](_HERE)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import kvm_gdb_frames as frames  # noqa: E402
from kvm_gdb_api import close_dump, open_dump, quiet_stop  # noqa: E402, F401 (API)

from kvm_dbg import adapter, modload  # noqa: E402 (needs the path above)
from kvm_dbg.adapter import AdapterError, quote  # noqa: E402

_state: dict = {"server": None, "kvm": None, "mem": None, "tdesc": None, "klds": set()}


def _connected() -> bool:
    try:
        return _state["server"] is not None and gdb.selected_inferior().pid != 0
    except gdb.error:
        return False


def _query(command: str) -> str:
    """Text of a server query, through ``maint packet`` (no memory access from Python)."""
    if not _connected():
        raise AdapterError(adapter.NOT_OPEN)
    return adapter.query(command, lambda p: gdb.execute(f"maint packet {p}", to_string=True))


def _lookup(name: str) -> int:
    """An address from gdb's own symbol tables (no target is connected yet)."""
    return int(gdb.parse_and_eval(f"(unsigned long long)&{name}"))


def _print(text: str) -> None:
    gdb.write(adapter.text_block([text]))


def _quietly(command: str) -> None:
    """Run a clean-up command whose failure changes nothing for the user."""
    try:
        gdb.execute(command, to_string=True)
    except gdb.error:
        pass


# -- kvm-open / kvm-close ------------------------------------------------------

def _open(arg: str, from_tty: bool) -> None:
    from kvm_dbg.rsp.symbols import resolver_symbols
    default_kernel = _exec_file() or gdb.current_progspace().filename
    req = adapter.parse_open_args(gdb.string_to_argv(arg), default_kernel,
                                  "'file KERNEL' first")
    if _state["server"] is not None and not _state["server"].alive:
        _shutdown()             # the server died (killed, crashed): forget it, reopen
    adapter.already_open(_state["server"], req)
    adapter.check_files(req)
    kernel = adapter.kernel_file(req.kernel)
    _set_tdesc(kernel.arch)
    _load_kernel(req.kernel, kernel.x86)
    symbols = adapter.lookup_symbols(resolver_symbols(), _lookup, (gdb.error,))
    try:
        adapter.require_symbols(req.kernel, symbols, "gdb", "'symbol-file FILE' or "
                                "'add-symbol-file FILE'")
        _state["server"] = adapter.start_server(req, symbols)
    except AdapterError:
        _drop_tdesc()
        raise
    frames.attach(kernel, symbols)
    try:
        gdb.execute("set dcache line-size 4096", to_string=True)
        gdb.execute("set dcache size 4096", to_string=True)
        gdb.execute(f"mem 0 0 {'rw' if req.writable else 'ro'} cache", to_string=True)
        _state["mem"] = _last_mem_region()
        with quiet_stop():      # the stop location is printed once, below
            gdb.execute(f"target remote {_state['server'].address}", to_string=True)
    except gdb.error as e:
        if not _connected():
            _close()
            raise AdapterError(f"{req.core}: {adapter.one_line(e)}") from None
        # connected, but the stop frame failed (a thread without registers)
    frames.relocate(req.kernel, adapter.kerndisp(_query("kerndisp")))
    for line in modload.load_modules(lambda: _query(modload.QUERY), _state["klds"], _add_kld,
                                     "gdb"):    # every module's symbols, as kgdb loads them
        _print(line)
    frames.load_module(_query)
    for text in adapter.open_messages(_query):
        _print(text)
    try:
        gdb.execute("frame")
    except gdb.error as e:  # e.g. a dump without thread registers: memory still works
        _print(f"kvm-open: no frame: {adapter.one_line(e)}")


def _set_tdesc(arch: Optional[str]) -> None:
    from kvm_dbg.rsp.launch import write_tdesc
    _drop_tdesc()
    if arch is not None:
        _state["tdesc"] = path = write_tdesc(arch)
        gdb.execute(f"set tdesc filename {path}", to_string=True)


def _drop_tdesc() -> None:
    path, _state["tdesc"] = _state["tdesc"], None
    if path:
        _quietly("unset tdesc filename")
        os.unlink(path)


def _exec_file() -> Optional[str]:
    """gdb's exec file (``progspace.filename`` is the symbol file)."""
    try:
        out = gdb.execute("info files", to_string=True)
    except gdb.error:
        return None
    m = re.search(r"Local exec file:\s*`(.*)', file type", out)
    return m.group(1) if m else None


def _same_file(a: Optional[str], b: str) -> bool:
    return bool(a) and os.path.realpath(a) == os.path.realpath(b)  # type: ignore[arg-type]


def _load_kernel(kernel: str, osabi_none: bool) -> None:
    """``file KERNEL``, after ``set osabi none`` for x86 (gdb lacks FreeBSD/x86 there).

    A symbol file loaded for KERNEL with ``symbol-file`` is kept (reloaded
    when the OS ABI changes).
    """
    loaded = gdb.current_progspace().filename
    exe = _exec_file()
    symfile = loaded if _same_file(exe, kernel) and not _same_file(loaded, kernel) else None
    same = _same_file(loaded, kernel) or _same_file(exe, kernel)
    if osabi_none and 'is "none"' not in gdb.execute("show osabi", to_string=True):
        gdb.execute("set osabi none", to_string=True)
        same = False  # the architecture was chosen with the old OS ABI: reload
    if same:
        return
    confirm = gdb.parameter("confirm")
    gdb.execute("set confirm off", to_string=True)
    try:
        if loaded:  # symbols read under the old OS ABI keep 32-bit addresses: drop them
            gdb.execute("file", to_string=True)
            gdb.execute("symbol-file", to_string=True)
        gdb.execute(f"file {quote(kernel)}", to_string=True)
        if symfile:
            gdb.execute(f"symbol-file {quote(symfile)}", to_string=True)
    except gdb.error as e:
        raise AdapterError(f"{kernel}: {adapter.one_line(e)}") from None
    finally:
        gdb.execute(f"set confirm {'on' if confirm else 'off'}", to_string=True)


def _last_mem_region() -> Optional[int]:
    nums = re.findall(r"^(\d+)\s", gdb.execute("info mem", to_string=True), re.M)
    return int(nums[-1]) if nums else None


def _close(arg: str = "", from_tty: bool = False) -> None:
    if _state["server"] is None:
        raise AdapterError("no dump is open")
    paths, _state["klds"] = _state["klds"], set()
    for path in paths:          # the module symbol files kvm-kld added
        _quietly(f"remove-symbol-file {quote(path)}")
    if _connected():
        _quietly("disconnect")
    _shutdown()


def _shutdown() -> None:
    frames.detach()
    adapter.close_dump(_state)
    _drop_tdesc()
    mem, _state["mem"] = _state["mem"], None
    if mem is not None:
        _quietly(f"delete mem {mem}")


# -- the other commands ----------------------------------------------------------

def _text_command(name: str) -> Callable[[str, bool], None]:
    def run(arg: str, from_tty: bool) -> None:
        adapter.no_args(arg)
        _print(_query(name))
    return run


def _switch(kind: str, usage: str) -> Callable[[str, bool], None]:
    def run(arg: str, from_tty: bool) -> None:
        if not arg.strip():
            raise AdapterError(f"usage: {usage}")
        try:
            value = int(gdb.parse_and_eval(arg))
        except gdb.error as e:
            raise AdapterError(adapter.one_line(e)) from None
        ref = adapter.parse_thread_reply(_query(f"{kind} {value}"))
        th = next((t for t in gdb.selected_inferior().threads() if ref.rid in t.ptid[1:]), None)
        if th is None:
            raise AdapterError(f"thread {ref.tid} is not known to gdb")
        gdb.execute(f"thread {th.num}")
    return run


def _kld(arg: str, from_tty: bool) -> None:
    """``kvm-kld``: the module list; ``kvm-kld load [NAME|all]``: their symbols."""
    load, name = adapter.parse_kld_args(gdb.string_to_argv(arg))
    if not load:
        _print(_query("kld"))
        return
    loads = adapter.kld_loads(adapter.descriptor(_state), name)
    if not loads:
        _print("no kernel modules")
    for ld in loads:
        if ld.path is None:
            _print(f"kvm-kld: {ld.error}")
        elif ld.path in _state["klds"]:
            _print(f"{ld.name}: symbols already loaded from {ld.path}")
        else:
            try:
                _print(_add_kld(ld))
            except AdapterError as e:
                raise AdapterError(f"{ld.path}: {e}") from None


def _add_kld(ld: Any) -> str:
    """add-symbol-file at kgdb's section addresses (kvm_dbg.modload); gdb's output."""
    try:
        out = gdb.execute(modload.gdb_command(ld, quote), to_string=True)
    except gdb.error as e:
        raise AdapterError(adapter.one_line(e)) from None
    _state["klds"].add(ld.path)
    return out


# -- registration --------------------------------------------------------------------

class _Command(gdb.Command):
    def __init__(self, name: str, fn: Callable[[str, bool], None], doc: str,
                 complete: int = gdb.COMPLETE_NONE) -> None:
        self.__doc__ = doc
        super().__init__(name, gdb.COMMAND_FILES if complete == gdb.COMPLETE_FILENAME
                         else gdb.COMMAND_STATUS, complete)
        self._name, self._fn = name, fn

    def invoke(self, arg: str, from_tty: bool) -> None:
        try:
            error = adapter.run_guarded(self._name, lambda: self._fn(arg, from_tty),
                                        (gdb.GdbError,))
        finally:
            _show_server_errors()
        if error:
            raise gdb.GdbError(error)


def kvm() -> Any:
    """A read-only ``kvm_dbg.Kvm`` on the open dump, for scripting in gdb's Python."""
    try:
        return adapter.descriptor(_state)
    except AdapterError as e:
        raise gdb.GdbError(f"kvm: {e}") from None


def _on_exit(*_args: Any) -> None:
    """Stop the server when gdb exits (gdb may already be tearing down)."""
    try:
        _shutdown()
    except (OSError, gdb.error):
        pass


def _show_server_errors(*_args: Any) -> None:
    """Internal errors the server hit since the last prompt (bugs)."""
    gdb.write(adapter.text_block(adapter.server_errors(_state["server"])), gdb.STDERR)


COMMANDS: Dict[str, Callable[[str, bool], None]] = {
    "kvm-open": _open, "kvm-close": _close, "kvm-info": _text_command("info"),
    "kvm-ps": _text_command("ps"), "kvm-dmesg": _text_command("dmesg"), "kvm-kld": _kld,
    "kvm-crashinfo": _text_command("crashinfo"),
    "kvm-proc": _switch("proc", adapter.HELP["kvm-proc"].syntax),
    "kvm-tid": _switch("tid", adapter.HELP["kvm-tid"].syntax),
}


def register() -> None:
    """Define the commands (idempotent: sourcing twice is harmless)."""
    if getattr(sys.modules[__name__], "_registered", False):
        return
    for name, fn in COMMANDS.items():
        _Command(name, fn, adapter.help_doc(name),
                 gdb.COMPLETE_FILENAME if name == "kvm-open" else gdb.COMPLETE_NONE)
    try:
        frames.register()
    except (ImportError, RuntimeError) as e:
        gdb.write(f"kvm_dbg: warning: no frame unwinder ({adapter.one_line(e)}): frames "
                  "without DWARF are unwound by gdb's own heuristics\n", gdb.STDERR)
    if hasattr(gdb.events, "gdb_exiting"):
        gdb.events.gdb_exiting.connect(_on_exit)
    gdb.events.before_prompt.connect(_show_server_errors)
    import atexit
    atexit.register(_on_exit)
    sys.modules[__name__]._registered = True  # type: ignore[attr-defined]


if __name__ == "__main__":
    # Sourced by gdb: import ourselves as a real module so that `kvm_gdb.kvm()`
    # works at the python prompt and a second `source` does not re-register.
    import importlib

    _mod = importlib.import_module("kvm_gdb")
    _mod.register()
    globals()["kvm_gdb"] = _mod
