"""kvm_dbg for gdb: debug FreeBSD kernel crash dumps with stock gdb.

Add to ~/.gdbinit:      source /path/to/kvm_dbg/plugins/gdb/kvm_gdb.py
then:                   kvm-open [KERNEL] CORE

Thin glue only: the dump is served by a ``python -m kvm_dbg.rsp`` child
process that gdb talks to with ``target remote`` (never a thread inside gdb:
gdb holds the GIL while waiting on the target); what is not gdb-specific is
in ``kvm_dbg.adapter``.  Commands: kvm-open, kvm-close, kvm-info, kvm-ps,
kvm-dmesg, kvm-proc, kvm-tid, kvm-kld (``kvm-kld load`` adds module symbols
as kgdb does).  Symbols come from gdb only (the server gets
--no-elf-symbols).  A frame unwinder applies kvm_dbg's frame-pointer and
trap-frame rules where gdb has no DWARF for a frame.  From gdb's ``python``
prompt, ``kvm_gdb.kvm()`` returns a read-only ``kvm_dbg.Kvm`` on the same
dump for scripting.

Finding kvm_dbg: see plugins/kvm_path.py.  $KVM_DBG_PYTHON picks the
interpreter that runs the server.
"""

from __future__ import annotations

import os
import re
import runpy
import sys
from typing import Any, Callable, Dict, Optional

import gdb  # type: ignore[import-not-found]

_HERE = os.path.dirname(os.path.abspath(__file__))


# plugins/kvm_path.py (shared by both adapters) puts kvm_dbg on sys.path.
runpy.run_path(os.path.join(os.path.dirname(_HERE), "kvm_path.py"))["setup"](_HERE)

from kvm_dbg import adapter  # noqa: E402 (needs the path above)

_state: dict = {"server": None, "kvm": None, "mem": None, "tdesc": None, "unwind": None,
                "klds": set()}


def _guard(name: str, fn: Callable[[str, bool], None], arg: str, from_tty: bool) -> None:
    try:
        fn(arg, from_tty)
    except adapter.AdapterError as e:
        raise gdb.GdbError(f"{name}: {e}") from None
    except gdb.GdbError:
        raise
    except KeyboardInterrupt:
        raise gdb.GdbError(f"{name}: interrupted") from None
    except Exception as e:  # noqa: BLE001 - a bug: one line naming it, not a traceback
        raise gdb.GdbError(f"{name}: {adapter.internal_error(e)}") from None
    finally:
        _show_server_errors()


def _connected() -> bool:
    server = _state["server"]
    if server is None:
        return False
    try:
        return gdb.selected_inferior().pid != 0
    except gdb.error:
        return False


def _query(command: str) -> str:
    """Text of a server query, through ``maint packet`` (no memory access from Python)."""
    if not _connected():
        raise adapter.AdapterError(adapter.NOT_OPEN)

    def send(packet: str) -> str:
        return gdb.execute(f"maint packet {packet}", to_string=True)
    return adapter.query(command, send)


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lookup(name: str) -> int:
    """An address from gdb's own symbol tables (no target is connected yet)."""
    return int(gdb.parse_and_eval(f"(unsigned long long)&{name}"))


def _print(text: str) -> None:
    if text:
        gdb.write(text if text.endswith("\n") else text + "\n")


def _thread_for_rid(rid: int) -> Any:
    for th in gdb.selected_inferior().threads():
        if th.ptid[1] == rid or th.ptid[2] == rid:
            return th
    return None


# -- commands ---------------------------------------------------------------

def _open(arg: str, from_tty: bool) -> None:
    from kvm_dbg.rsp.launch import needs_osabi_none
    from kvm_dbg.rsp.symbols import resolver_symbols
    args = gdb.string_to_argv(arg)
    default_kernel = _exec_file() or gdb.current_progspace().filename
    req = adapter.parse_open_args(args, default_kernel, "'file KERNEL' first")
    if _state["server"] is not None and not _state["server"].alive:
        _shutdown()             # the server died (killed, crashed): forget it, reopen
    adapter.already_open(_state["server"], req)
    adapter.check_files(req)
    _set_tdesc(req.kernel)
    _load_kernel(req.kernel, needs_osabi_none(req.kernel))
    symbols = adapter.lookup_symbols(resolver_symbols(), _lookup, (gdb.error,))
    if not any(v is not None for v in symbols.values()):
        _drop_tdesc()
        raise adapter.AdapterError(
            f"{req.kernel}: gdb has no symbols for this kernel (no symbol table and no "
            "separate debug file found): load them with 'symbol-file FILE' or "
            "'add-symbol-file FILE', then retry")
    try:
        server = adapter.start_server(req, symbols)
    except adapter.AdapterError:
        _drop_tdesc()
        raise
    _state["server"] = server
    _unwind_setup(req.kernel, symbols)
    try:
        gdb.execute("set dcache line-size 4096", to_string=True)
        gdb.execute("set dcache size 4096", to_string=True)
        gdb.execute(f"mem 0 0 {'rw' if req.writable else 'ro'} cache", to_string=True)
        _state["mem"] = _last_mem_region()
        with _quiet_stop():     # the stop location is printed once, below
            gdb.execute(f"target remote {server.address}", to_string=True)
    except gdb.error as e:
        if not _connected():
            _close()
            raise adapter.AdapterError(f"{req.core}: {adapter.one_line(e)}") from None
        # connected, but the stop frame failed (a thread without registers)
    _load_unwind_module()
    for text in adapter.open_messages(_query):
        _print(text)
    try:
        gdb.execute("frame")
    except gdb.error as e:  # e.g. a dump without thread registers: memory still works
        _print(f"kvm-open: no frame: {adapter.one_line(e)}")


class _quiet_stop:
    """``set suppress-cli-notifications on`` for a block (gdb >= 12): the stop
    location ``target remote`` prints otherwise."""

    def __enter__(self) -> None:
        try:
            self.old = gdb.parameter("suppress-cli-notifications")
            gdb.execute("set suppress-cli-notifications on", to_string=True)
        except (gdb.error, RuntimeError):
            self.old = None

    def __exit__(self, *exc: Any) -> None:
        if self.old is not None:
            gdb.execute(f"set suppress-cli-notifications {'on' if self.old else 'off'}",
                        to_string=True)


def _load_unwind_module() -> None:
    """The server's FDEs for trap frames and backtrace ends (kvm_dbg.unwindinfo):
    an objfile without sections or symbols, so frames keep the kernel's names."""
    lines = _query("unwind-elf gdb").splitlines()
    if not lines:
        return
    path = lines[0].strip()
    try:
        gdb.execute(f"add-symbol-file {_quote(path)}", to_string=True)
    except gdb.error as e:
        _print(f"kvm-open: warning: {path}: {adapter.one_line(e)}: backtraces end with "
               "gdb's own message and trap frames show as plain frames")
        return
    _state["unwind_file"] = path
    _state["unwind"]["fdes"] = {int(pc, 16): kind for pc, kind in
                                (ln.split() for ln in lines[1:] if ln.strip())}


def _set_tdesc(kernel: str) -> None:
    from kvm_dbg.rsp.launch import write_tdesc
    _drop_tdesc()
    path = write_tdesc(kernel)
    if path:
        _state["tdesc"] = path
        gdb.execute(f"set tdesc filename {path}", to_string=True)


def _drop_tdesc() -> None:
    path, _state["tdesc"] = _state.get("tdesc"), None
    if path:
        try:
            gdb.execute("unset tdesc filename", to_string=True)
            os.unlink(path)
        except (OSError, gdb.error):
            pass


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
    if osabi_none:
        current = gdb.execute("show osabi", to_string=True).splitlines()[0]
        if 'is "none"' not in current:
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
        gdb.execute(f"file {_quote(kernel)}", to_string=True)
        if symfile:
            gdb.execute(f"symbol-file {_quote(symfile)}", to_string=True)
    except gdb.error as e:
        raise adapter.AdapterError(f"{kernel}: {adapter.one_line(e)}") from None
    finally:
        gdb.execute(f"set confirm {'on' if confirm else 'off'}", to_string=True)


def _last_mem_region() -> Optional[int]:
    try:
        out = gdb.execute("info mem", to_string=True)
    except gdb.error:
        return None
    nums = [int(ln.split()[0]) for ln in out.splitlines()
            if ln.strip() and ln.split()[0].isdigit()]
    return nums[-1] if nums else None


def _close(arg: str = "", from_tty: bool = False) -> None:
    server = _state["server"]
    if server is None:
        raise adapter.AdapterError("no dump is open")
    _drop_klds()
    if _connected():
        try:
            gdb.execute("disconnect", to_string=True)
        except gdb.error:
            pass
    _shutdown()


def _shutdown() -> None:
    _state["unwind"] = None
    path = _state.pop("unwind_file", None)
    if path:
        try:
            gdb.execute(f"remove-symbol-file {_quote(path)}", to_string=True)
        except gdb.error:
            pass
    adapter.close_dump(_state)
    _drop_tdesc()
    mem, _state["mem"] = _state["mem"], None
    if mem is not None:
        try:
            gdb.execute(f"delete mem {mem}", to_string=True)
        except gdb.error:
            pass


def _text_command(name: str) -> Callable[[str, bool], None]:
    def run(arg: str, from_tty: bool) -> None:
        if arg.strip():
            raise adapter.AdapterError("this command takes no arguments")
        _print(_query(name))
    return run


def _switch(kind: str, usage: str) -> Callable[[str, bool], None]:
    def run(arg: str, from_tty: bool) -> None:
        if not arg.strip():
            raise adapter.AdapterError(f"usage: {usage}")
        try:
            value = int(gdb.parse_and_eval(arg))
        except gdb.error as e:
            raise adapter.AdapterError(adapter.one_line(e)) from None
        ref = adapter.parse_thread_reply(_query(f"{kind} {value}"))
        th = _thread_for_rid(ref.rid)
        if th is None:
            raise adapter.AdapterError(f"thread {ref.tid} is not known to gdb")
        gdb.execute(f"thread {th.num}")
    return run


# -- kernel modules -------------------------------------------------------------

KLD_USAGE = "usage: kvm-kld [load [NAME|all]]"


def _kld(arg: str, from_tty: bool) -> None:
    """``kvm-kld``: the module list; ``kvm-kld load [NAME|all]``: their symbols."""
    args = gdb.string_to_argv(arg)
    if not args:
        _print(_query("kld"))
        return
    if args[0] != "load" or len(args) > 2:
        raise adapter.AdapterError(KLD_USAGE)
    if not _connected():
        raise adapter.AdapterError(adapter.NOT_OPEN)
    name = args[1] if len(args) == 2 and args[1] != "all" else None
    loads = adapter.kld_loads(kvm(), name)
    if not loads:
        _print("no kernel modules")
    for load in loads:
        if load.path is None:
            _print(f"kvm-kld: {load.error}")
        elif load.path in _state["klds"]:
            _print(f"{load.name}: symbols already loaded from {load.path}")
        else:
            _add_symbol_file(load.path, load.sections)


def _add_symbol_file(path: str, sections: Dict[str, int]) -> None:
    """``add-symbol-file PATH TEXT -s SECTION ADDR...`` (no confirmation asked)."""
    args = [_quote(path), f"{sections['.text']:#x}"]
    for name, addr in sections.items():
        if name != ".text":
            args += ["-s", name, f"{addr:#x}"]
    try:
        out = gdb.execute("add-symbol-file " + " ".join(args), to_string=True)
    except gdb.error as e:
        raise adapter.AdapterError(f"{path}: {adapter.one_line(e)}") from None
    _state["klds"].add(path)
    _print(out)


def _drop_klds() -> None:
    """Forget the module symbol files kvm-kld added (at kvm-close)."""
    paths, _state["klds"] = _state["klds"], set()
    for path in paths:
        try:
            gdb.execute(f"remove-symbol-file {_quote(path)}", to_string=True)
        except gdb.error:
            pass


# -- frame unwinder -----------------------------------------------------------
# The kernels usually carry no DWARF CFI: frames without debug info are
# unwound by kvm_dbg's frame-pointer and trap-frame rules
# (kvm_dbg.kstate.unwind.caller_registers); gdb only adapts registers and
# memory.  Reads go to the server process over RSP, which is safe here.

def _unwind_setup(kernel: str, symbols: dict) -> None:
    from kvm_dbg.rsp.launch import arch_of_elf
    from kvm_dbg.rsp.regs import regset_for
    arch = arch_of_elf(kernel)
    rs = regset_for(arch or "")            # the server accepted this kernel: both succeed
    with open(kernel, "rb") as f:
        order = "big" if f.read(6)[5:6] == b"\x02" else "little"
    names = {}
    for r in rs.regs:
        for n in (r.name,) + tuple(r.aliases):
            names.setdefault(n, r.name)
    _state["unwind"] = {"arch": arch, "names": names, "order": order,
                        "symbols": dict(symbols), "trap_key": None, "types": {},
                        "floors": {}, "fdes": {}}


class _FrameId:
    def __init__(self, sp: int, pc: int) -> None:
        self.sp, self.pc = gdb.Value(sp), gdb.Value(pc)  # gdb 13 wants Values


def _read_memory(addr: int, size: int) -> Optional[bytes]:
    try:
        return bytes(gdb.selected_inferior().read_memory(addr, size))
    except (gdb.error, ValueError, OverflowError):
        return None


def _function_at(pc: int, arch: Any) -> Optional[tuple]:
    """(name, start) of the symbol gdb shows for ``pc`` (no frame is touched)."""
    fmt = getattr(gdb, "format_address", None)
    if fmt is None:
        return None
    m = re.search(r"<([^+>]+)(?:\+(\d+))?>", fmt(pc, gdb.current_progspace(), arch))
    return (m.group(1), pc - int(m.group(2) or 0)) if m else None


def _has_debug_info(pc: int) -> bool:
    """gdb's DWARF unwinder does better where there is debug info."""
    block = gdb.current_progspace().block_for_pc(pc)
    while block is not None and block.function is None:
        block = block.superblock
    return block is not None


def _trap_key(u: dict, info: Any) -> str:
    if u["trap_key"] is None:
        from kvm_dbg.kstate import archdata
        addr = u["symbols"].get("osreldate")
        raw = _read_memory(addr, 4) if addr else None
        rel = int.from_bytes(raw, u["order"]) if raw else None
        u["trap_key"] = archdata.trap_layout_key(info, archdata.pcb_layout_key(info, rel))
    return u["trap_key"]


def _unwind(pf: Any, u: dict) -> Any:
    from kvm_dbg.kstate import archdata
    from kvm_dbg.kstate.unwind import caller_registers
    info = archdata.arch_info(u["arch"])
    if info is None:
        return None
    names, mask = u["names"], (1 << (info.width * 8)) - 1
    regs = {}
    for k in (info.pc, info.sp, info.fp):
        if k:
            try:
                regs[k] = int(pf.read_register(names.get(k, k))) & mask
            except (gdb.error, ValueError):
                pass
    pc = regs.get(info.pc)
    # Symbol facts per pc are cached (threads share pcs: sched_switch...) until
    # the set of symbol files changes (kvm-kld load, symbol-file).
    cache = u.setdefault("pc_cache", {})
    generation = len(gdb.objfiles())
    if cache.get("generation") != generation or len(cache) > 100000:
        cache.clear()
        cache["generation"] = generation
    if pc is None:
        return None
    debug = cache.get(("dbg", pc))
    if debug is None:
        debug = cache[("dbg", pc)] = _has_debug_info(pc)
    if debug:
        return None
    arch = pf.architecture()

    def function_at(p: int) -> Optional[tuple]:
        key = ("fn", p)
        if key not in cache:
            cache[key] = _function_at(p, arch)
        return cache[key]

    caller = caller_registers(
        info.name, regs, _read_memory, depth=pf.level(), byteorder=u["order"],
        function_at=function_at, lookup=u["symbols"].get, trap_key=_trap_key(u, info))
    # Frame ids never go below the callee's, or gdb would stop at kernel
    # stack switches ("previous frame inner to this frame").
    floors = u["floors"]
    floor = floors.get(tuple(sorted(regs.items())), regs.get(info.sp, 0))
    kind = u["fdes"].get(pc)
    if (caller is None and kind == "end") or (caller is not None and kind == "trap"):
        # The unwind module's FDE says the same, and gdb's DWARF unwinder can
        # say more: "outermost" (a Python unwinder cannot) and "signal frame"
        # (a trap frame, shown as kgdb shows it).
        return None
    if caller is None:
        # The chain ends where the unwind module has no FDE saying so: repeat
        # this frame, which gdb stops at as "previous frame identical".
        stack, caller = floor, regs
    else:
        stack = max(caller.get(info.sp, 0), floor)
        if len(floors) > 100000:
            floors.clear()
        keys = (info.pc, info.sp, info.fp)
        floors[tuple(sorted((k, v) for k, v in caller.items() if k in keys))] = stack
    ui = pf.create_unwind_info(_FrameId(stack, pc))
    for k, v in caller.items():
        name = names.get(k)
        if name is None:
            continue
        try:
            rtype = u["types"].get(name) or pf.read_register(name).type
            u["types"][name] = rtype
            ui.add_saved_register(name, gdb.Value(v).cast(rtype))
        except (gdb.error, ValueError):
            pass
    return ui


def _make_unwinder() -> Any:
    from gdb.unwinder import Unwinder  # type: ignore[import-not-found]

    class KvmUnwinder(Unwinder):
        """Frame-pointer and trap-frame unwinding for frames without DWARF."""

        def __init__(self) -> None:
            super().__init__("kvm_dbg")

        def __call__(self, pending_frame: Any) -> Any:
            u = _state["unwind"]
            if u is None:
                return None
            try:
                return _unwind(pending_frame, u)
            except (gdb.error, ValueError, OverflowError):
                return None

    return KvmUnwinder()


class _Command(gdb.Command):
    def __init__(self, name: str, fn: Callable[[str, bool], None], doc: str,
                 complete: int = gdb.COMPLETE_NONE) -> None:
        self.__doc__ = doc
        super().__init__(name, gdb.COMMAND_FILES if complete == gdb.COMPLETE_FILENAME
                         else gdb.COMMAND_STATUS, complete)
        self._name, self._fn = name, fn

    def invoke(self, arg: str, from_tty: bool) -> None:
        _guard(self._name, self._fn, arg, from_tty)


def kvm() -> Any:
    """A read-only ``kvm_dbg.Kvm`` on the open dump, for scripting in gdb's Python."""
    server = _state["server"]
    if server is None:
        raise gdb.GdbError(f"kvm: {adapter.NOT_OPEN}")
    if _state["kvm"] is None:  # same resolver as the server: gdb's symbols
        _state["kvm"] = adapter.open_descriptor(server)
    return _state["kvm"]


def _on_exit(*_args: Any) -> None:
    """Stop the server when gdb exits (gdb may already be tearing down)."""
    try:
        _shutdown()
    except (OSError, gdb.error):
        pass


def _show_server_errors(*_args: Any) -> None:
    """Print internal errors the server hit since the last prompt (a bug
    answered a debugger packet with E01: never silently)."""
    server = _state["server"]
    if server is not None:
        for line in server.new_errors():
            gdb.write(f"kvm_dbg: server {line}\n", gdb.STDERR)


def register() -> None:
    """Define the commands (idempotent: sourcing twice is harmless)."""
    if getattr(sys.modules[__name__], "_registered", False):
        return
    _Command("kvm-open", _open, """Open a FreeBSD kernel crash dump: kvm-open [-w] [KERNEL] CORE.

KERNEL defaults to the current executable ('file').  Starts a kvm_dbg server
process and connects with 'target remote', selects the crashed thread and
prints the unread message buffer, the panic string and the crashed frame.
-w allows memory writes to the dump.""", gdb.COMPLETE_FILENAME)
    _Command("kvm-close", _close, "Disconnect from the dump and stop its server.")
    _Command("kvm-info", _text_command("info"),
             "Summary of the open dump: architecture, version, panic string, crashed thread.")
    _Command("kvm-ps", _text_command("ps"), "List the processes of the dump.")
    _Command("kvm-dmesg", _text_command("dmesg"), "Print the kernel message buffer.")
    _Command("kvm-kld", _kld, """List the loaded kernel modules, or load their symbols.

kvm-kld lists them.  kvm-kld load [NAME|all] finds each module's file as kgdb
does (NAME.debug, NAME.symbols, NAME next to the kernel, then in the dump's
module path) and runs add-symbol-file with the section addresses kgdb computes
from the module's load address.  NAME is e.g. zfs.ko or zfs.""", gdb.COMPLETE_NONE)
    _Command("kvm-proc", _switch("proc", "kvm-proc PID|PROC-ADDRESS"),
             "Select the first thread of a process: kvm-proc PID|PROC-ADDRESS.")
    _Command("kvm-tid", _switch("tid", "kvm-tid TID|THREAD-ADDRESS"),
             "Select a thread by kernel thread id: kvm-tid TID|THREAD-ADDRESS.")
    try:
        from gdb.unwinder import register_unwinder  # type: ignore[import-not-found]
        register_unwinder(None, _make_unwinder(), replace=True)
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

    sys.path.insert(0, _HERE)
    _mod = importlib.import_module("kvm_gdb")
    _mod.register()
    globals()["kvm_gdb"] = _mod
