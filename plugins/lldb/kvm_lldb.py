"""kvm_dbg for lldb: debug FreeBSD kernel crash dumps with stock lldb.

Add to ~/.lldbinit:     command script import /path/to/kvm_dbg/plugins/lldb/kvm_lldb.py
then:                   kvm-open [KERNEL] CORE

Thin glue only: the dump is served by a ``python -m kvm_dbg.rsp`` child
process that lldb talks to with ``process connect`` (gdb-remote).  Commands:
kvm-open, kvm-close, kvm-info, kvm-ps, kvm-dmesg, kvm-proc, kvm-tid, kvm-kld.
From lldb's ``script`` prompt or a ``command script`` file,
``kvm_lldb.kvm()`` returns a read-only ``kvm_dbg.Kvm`` on the same dump.

Finding kvm_dbg: see plugins/kvm_path.py.  $KVM_DBG_PYTHON picks the
interpreter that runs the server.
"""

from __future__ import annotations

import os
import runpy
import shlex
from typing import Any, Callable, List, Optional

import lldb  # type: ignore[import-not-found]

_HERE = os.path.dirname(os.path.abspath(__file__))


# plugins/kvm_path.py (shared by both adapters) puts kvm_dbg on sys.path.
runpy.run_path(os.path.join(os.path.dirname(_HERE), "kvm_path.py"))["setup"](_HERE)

from kvm_dbg.adapter import (  # noqa: E402 (needs the path above)
    NOT_OPEN,
    AdapterError,
    already_open,
    check_files,
    internal_error,
    kld_loads,
    lookup_symbols,
    open_descriptor,
    open_messages,
    parse_open_args,
    parse_thread_reply,
    query,
    start_server,
)

# Survives a second `command script import` (which reloads this module).
_state: dict = globals().get("_state") or {"server": None, "kvm": None, "target": None,
                                          "unwind": None}


# -- lldb helpers -------------------------------------------------------------

def _run(debugger: Any, command: str, target: Any = None) -> str:
    """Run an lldb command (on TARGET if given); its output, or AdapterError."""
    res = lldb.SBCommandReturnObject()
    interp = debugger.GetCommandInterpreter()
    if target is not None and target.IsValid():
        interp.HandleCommand(command, lldb.SBExecutionContext(target), res)
    else:
        interp.HandleCommand(command, res)
    if not res.Succeeded():
        raise AdapterError(_lldb_error(res.GetError(), command))
    return res.GetOutput() or ""


def _lldb_error(text: Optional[str], default: str) -> str:
    """lldb's error text as one line, without its ``error:`` prefix."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    lines = [ln[len("error:"):].strip() if ln.startswith("error:") else ln for ln in lines]
    if not lines:
        return f"{default}: failed"
    if lines[0].endswith(":") and len(lines) > 1:  # "expression failed to parse:" + detail
        return f"{lines[0]} {lines[1]}"
    return lines[0]


def _live(proc: Any) -> bool:
    return proc.IsValid() and proc.GetState() not in (
        lldb.eStateDetached, lldb.eStateExited, lldb.eStateInvalid, lldb.eStateUnloaded)


def _process() -> Any:
    """Our live process, or None."""
    target = _state["target"]
    if _state["server"] is None or target is None or not target.IsValid():
        return None
    proc = target.GetProcess()
    return proc if _live(proc) else None


def _query(debugger: Any, command: str) -> str:
    """Text of a server query, sent with ``process plugin packet send``."""
    if _process() is None:
        server = _state["server"]
        if server is None:
            raise AdapterError(NOT_OPEN)
        raise AdapterError("not connected to the dump (reconnect with 'process connect -p "
                           f"gdb-remote unix-connect://{server.address}', or kvm-close)")

    def send(packet: str) -> str:
        out = _run(debugger, f"process plugin packet send {packet}", _state["target"])
        for line in out.splitlines():
            if line.strip().startswith("response:"):
                return line.split(":", 1)[1].strip()
        return out
    return query(command, send)


def _lookup(target: Any) -> Callable[[str], Optional[int]]:
    """lldb's own symbol lookup: load address if known, else file address (slide 0)."""
    invalid = lldb.LLDB_INVALID_ADDRESS

    def addr_of(addr: Any) -> Optional[int]:
        for value in (addr.GetLoadAddress(target), addr.GetFileAddress()):
            if value != invalid:
                return value
        return None

    def lookup(name: str) -> Optional[int]:
        for ctx in target.FindSymbols(name):
            sym = ctx.GetSymbol()
            if sym.IsValid() and sym.GetName() == name:
                if sym.GetType() == lldb.eSymbolTypeAbsolute and hasattr(sym, "GetValue"):
                    return sym.GetValue()  # e.g. kernbase: no section, no address
                value = addr_of(sym.GetStartAddress())
                if value is not None:
                    return value
        for var in target.FindGlobalVariables(name, 1):
            value = addr_of(var.GetAddress())
            if value is not None:
                return value
        return None
    return lookup


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _kernel_target(debugger: Any, kernel: str) -> Any:
    """The selected target if it is KERNEL and idle, else a new target for KERNEL."""
    target = debugger.GetSelectedTarget()
    if target.IsValid() and not _live(target.GetProcess()):
        exe = target.GetExecutable()
        if exe.IsValid() and _same_file(exe.fullpath or "", kernel):
            return target
    error = lldb.SBError()
    target = debugger.CreateTarget(kernel, None, None, True, error)
    if not error.Success() or not target.IsValid():
        raise AdapterError(f"{kernel}: {_lldb_error(error.GetCString(), 'not usable')}")
    debugger.SetSelectedTarget(target)
    return target


def _ensure_loaded(debugger: Any, target: Any, kernel: str) -> None:
    """Kernel sections at their link addresses (the server's AT_ENTRY usually did it)."""
    module = target.GetModuleAtIndex(0)
    for i in range(module.GetNumSections()):
        section = module.GetSectionAtIndex(i)
        if section.GetFileAddress() != lldb.LLDB_INVALID_ADDRESS and section.GetFileAddress():
            if section.GetLoadAddress(target) == lldb.LLDB_INVALID_ADDRESS:
                _run(debugger, f"target modules load --file {shlex.quote(kernel)} --slide 0",
                     target)
            return


def _loaded_ranges(target: Any) -> List[str]:
    """``LO-HI`` (hex) of every loaded section of the target's modules."""
    out: List[str] = []

    def walk(section: Any) -> None:
        load, size = section.GetLoadAddress(target), section.GetByteSize()
        if load != lldb.LLDB_INVALID_ADDRESS and size:
            out.append(f"{load:x}-{load + size:x}")
        for i in range(section.GetNumSubSections()):
            walk(section.GetSubSectionAtIndex(i))

    for module in target.module_iter():
        for section in module.section_iter():
            walk(section)
    return out


def _load_unwind_module(debugger: Any, target: Any, kernel: str) -> None:
    """Where lldb cannot unwind by itself (trap frames), swap the kernel module
    for the server's stand-in (kvm_dbg.unwindinfo): the same sections, UUID,
    symbols and DWARF (from the kernel's symbol file), plus the library's rules
    as .eh_frame.  Restored by kvm-close."""
    module = target.GetModuleAtIndex(0)
    uuid = module.GetUUIDString() if module.IsValid() else ""
    if not uuid:
        return
    path = _query(debugger, f"unwind-elf lldb {uuid}").split("\n", 1)[0].strip()
    if not path:
        return
    symfile = module.GetSymbolFileSpec().fullpath or kernel
    target.RemoveModule(module)
    image = target.AddModule(path, None, None, symfile)
    if not image.IsValid() or image.GetSymbolFileSpec().fullpath != symfile:
        if image.IsValid():
            target.RemoveModule(image)
        target.AddModule(module)
        _run(debugger, f"target modules load --file {shlex.quote(module.GetFileSpec().fullpath)}"
             " --slide 0", target)
        raise AdapterError(f"{path}: lldb did not take {symfile} as its symbol file")
    _state["unwind"] = (image, module)
    _run(debugger, f"target modules load --file {shlex.quote(path)} --slide 0", target)


def _select_crashed(proc: Any) -> None:
    for th in proc:
        if th.GetStopReason() not in (lldb.eStopReasonNone, lldb.eStopReasonInvalid):
            proc.SetSelectedThread(th)
            return


# -- commands -----------------------------------------------------------------

def _open(debugger: Any, args: List[str], out: List[str]) -> None:
    from kvm_dbg.rsp.symbols import resolver_symbols
    target = debugger.GetSelectedTarget()
    exe = target.GetExecutable() if target.IsValid() else None
    default_kernel = exe.fullpath if exe is not None and exe.IsValid() else None
    req = parse_open_args(args, default_kernel, "'target create KERNEL' first")
    already_open(_state["server"], req)
    check_files(req)
    target = _kernel_target(debugger, req.kernel)
    symbols = lookup_symbols(resolver_symbols(), _lookup(target))    # lldb's never raises
    server = start_server(req, symbols)
    _state.update(server=server, target=target)
    try:
        url = "unix-connect://" + server.address
        connected = _run(debugger, f"process connect -p gdb-remote {url}", target)
        proc = target.GetProcess()
        if not proc.IsValid() or not proc.GetNumThreads():
            raise AdapterError("the debugger could not connect to the server")
        _ensure_loaded(debugger, target, req.kernel)
        try:
            _load_unwind_module(debugger, target, req.kernel)
        except AdapterError as e:
            out.append(f"kvm-open: warning: no unwind module ({e}): frames without "
                       "DWARF are unwound by lldb's own heuristics")
        _select_crashed(proc)
    except AdapterError as e:  # leave nothing running behind a failed open
        _shutdown()
        raise AdapterError(f"{req.core}: {e}") from None
    except BaseException:
        _shutdown()
        raise
    out.extend(open_messages(lambda cmd: _query(debugger, cmd)))
    out.append(connected)


def _close(debugger: Any, args: List[str], out: List[str]) -> None:
    if _state["server"] is None:
        raise AdapterError("no dump is open")
    proc = _process()
    if proc is not None:
        proc.Detach()  # lldb itself reports "Process N detached"
    _shutdown()


def _shutdown() -> None:
    server, _state["server"] = _state["server"], None
    target, _state["target"] = _state["target"], None
    swapped, _state["unwind"] = _state.get("unwind"), None
    modules = list(_state.pop("klds", {}).values())
    if target is not None and target.IsValid():
        for m in modules:
            target.RemoveModule(m)
        if swapped is not None:          # the kernel module again, for the next kvm-open
            image, kernel = swapped
            target.RemoveModule(image)
            target.AddModule(kernel)
    if server is not None:
        server.close()
    kvm_, _state["kvm"] = _state["kvm"], None
    if kvm_ is not None:
        kvm_.close()


def _text_command(name: str) -> Callable[[Any, List[str], List[str]], None]:
    def run(debugger: Any, args: List[str], out: List[str]) -> None:
        if args:
            raise AdapterError("this command takes no arguments")
        out.append(_query(debugger, name))
    return run


def _number(debugger: Any, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        pass
    proc = _process()
    if proc is None:
        raise AdapterError(NOT_OPEN)
    value = proc.GetSelectedThread().GetSelectedFrame().EvaluateExpression(text)
    if not value.GetError().Success():
        raise AdapterError(_lldb_error(value.GetError().GetCString(), text))
    return value.GetValueAsUnsigned()


def _kld(debugger: Any, args: List[str], out: List[str]) -> None:
    """``kvm-kld`` lists modules; ``kvm-kld load [NAME|all]`` adds their symbol
    files at kgdb's section addresses (kvm_dbg.adapter.kld_loads)."""
    if not args:
        out.append(_query(debugger, "kld"))
        return
    if args[0] != "load" or len(args) > 2:
        raise AdapterError("usage: kvm-kld [load [NAME|all]]")
    target = _state["target"]
    if _state["server"] is None or target is None:
        raise AdapterError(NOT_OPEN)
    name = None if len(args) == 1 or args[1] == "all" else args[1]
    added = _state.setdefault("klds", {})
    for load in kld_loads(kvm(), name):
        if load.error:
            out.append(f"{load.name}: {load.error}")
            continue
        if load.path in added:
            continue
        module = target.AddModule(load.path, None, None)
        if not module.IsValid():
            out.append(f"{load.name}: lldb cannot load {load.path}")
            continue
        pairs = " ".join(f"{shlex.quote(sec)} 0x{addr:x}"
                         for sec, addr in load.sections.items())
        _run(debugger, f"target modules load --file {shlex.quote(load.path)} {pairs}", target)
        added[load.path] = module
        out.append(f"add symbol table from file \"{load.path}\" at 0x{load.address:x}")


def _switch(kind: str, usage: str) -> Callable[[Any, List[str], List[str]], None]:
    def run(debugger: Any, args: List[str], out: List[str]) -> None:
        if len(args) != 1:
            raise AdapterError(f"usage: {usage}")
        ref = parse_thread_reply(_query(debugger, f"{kind} {_number(debugger, args[0])}"))
        proc = _process()
        th = proc.GetThreadByID(ref.rid)
        if not th.IsValid():
            raise AdapterError(f"thread {ref.tid} is not known to lldb")
        proc.SetSelectedThread(th)  # quietly: 'thread select' would print asynchronously
        stream = lldb.SBStream()
        th.GetStatus(stream)
        out.append(stream.GetData())
    return run


class _Command:
    """Base of the kvm-* commands: lldb calls ``__call__``; errors become one line."""

    name = ""
    syntax = ""
    short = ""
    long = ""
    fn: Callable[[Any, List[str], List[str]], None]

    def __init__(self, debugger: Any, internal_dict: dict) -> None:
        pass

    def get_short_help(self) -> str:
        return self.short

    def get_long_help(self) -> str:
        return f"Usage: {self.syntax}\n\n{self.long or self.short}\n"

    def __call__(self, debugger: Any, command: str, exe_ctx: Any, result: Any) -> None:
        out: List[str] = []
        try:
            try:
                args = shlex.split(command)
            except ValueError as e:
                raise AdapterError(str(e)) from None
            type(self).fn(debugger, args, out)
        except AdapterError as e:
            result.SetError(f"{self.name}: {e}")
        except KeyboardInterrupt:
            result.SetError(f"{self.name}: interrupted")
        except Exception as e:  # noqa: BLE001 - a bug: one line naming it, not a traceback
            result.SetError(f"{self.name}: {internal_error(e)}")
        server = _state["server"]
        if server is not None:
            out += [f"kvm_dbg: server {line}" for line in server.new_errors()]
        text = "".join(s if s.endswith("\n") else s + "\n" for s in out if s)
        if text:
            result.AppendMessage(text.rstrip("\n"))
        if result.GetStatus() != lldb.eReturnStatusFailed:
            result.SetStatus(lldb.eReturnStatusSuccessFinishResult)


def _command(name: str, fn: Callable[..., None], syntax: str, short: str,
             long: str = "") -> type:
    return type(name.replace("-", "_"), (_Command,),
                {"name": name, "fn": staticmethod(fn), "syntax": syntax, "short": short,
                 "long": long})


COMMANDS = [
    _command("kvm-open", _open, "kvm-open [-w] [KERNEL] CORE",
             "Open a FreeBSD kernel crash dump.",
             "KERNEL defaults to the current target's executable; a target is created\n"
             "if needed.  Starts a kvm_dbg server process, connects with 'process connect'\n"
             "(gdb-remote), loads the kernel at its link address, selects the crashed\n"
             "thread and prints the unread message buffer and the panic string.\n"
             "-w allows memory writes to the dump."),
    _command("kvm-close", _close, "kvm-close", "Detach from the dump and stop its server."),
    _command("kvm-info", _text_command("info"), "kvm-info",
             "Summary of the open dump: architecture, version, panic string, crashed thread."),
    _command("kvm-ps", _text_command("ps"), "kvm-ps", "List the processes of the dump."),
    _command("kvm-dmesg", _text_command("dmesg"), "kvm-dmesg",
             "Print the kernel message buffer."),
    _command("kvm-kld", _kld, "kvm-kld [load [NAME|all]]", "List the loaded kernel modules.",
             "With 'load', add the module's symbol file (found next to the kernel or in\n"
             "the kernel's module path, as kgdb does) at its sections' load addresses."),
    _command("kvm-proc", _switch("proc", "kvm-proc PID|PROC-ADDRESS"),
             "kvm-proc PID|PROC-ADDRESS", "Select the first thread of a process."),
    _command("kvm-tid", _switch("tid", "kvm-tid TID|THREAD-ADDRESS"),
             "kvm-tid TID|THREAD-ADDRESS", "Select a thread by its kernel thread id."),
]
for _cls in COMMANDS:
    globals()[_cls.__name__] = _cls


def kvm() -> Any:
    """A read-only ``kvm_dbg.Kvm`` on the open dump, for scripting in lldb's Python."""
    server = _state["server"]
    if server is None:
        raise AdapterError(f"kvm: {NOT_OPEN}")
    if _state["kvm"] is None:
        _state["kvm"] = open_descriptor(server)
    return _state["kvm"]


def _on_exit() -> None:
    """Stop the server when lldb's Python exits."""
    try:
        _shutdown()
    except OSError:
        pass


def __lldb_init_module(debugger: Any, internal_dict: dict) -> None:
    for cls in COMMANDS:
        debugger.HandleCommand(f"command script add -o -c {__name__}.{cls.__name__} {cls.name}")
    if not globals().get("_atexit"):
        import atexit
        atexit.register(_on_exit)
        globals()["_atexit"] = True
