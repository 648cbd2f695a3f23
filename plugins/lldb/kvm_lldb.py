"""kvm_dbg for lldb: debug FreeBSD kernel crash dumps with stock lldb.

Add to ~/.lldbinit:     command script import /path/to/kvm_dbg/plugins/lldb/kvm_lldb.py
then:                   kvm-open [KERNEL] CORE

Debugger glue only (the logic is in ``kvm_dbg.adapter``): the dump is served
by a ``python -m kvm_dbg.rsp`` child process that lldb talks to with
``process connect`` (gdb-remote).  Commands: kvm-open, kvm-close, kvm-info,
kvm-ps, kvm-dmesg, kvm-crashinfo, kvm-proc, kvm-tid, kvm-kld.  Trap frames: see
kvm_lldb_frames.py.  From lldb's ``script`` prompt or a ``command script``
file, ``kvm_lldb.kvm()`` returns a read-only ``kvm_dbg.Kvm`` on the same dump;
SB API programs use ``kvm_lldb.open_dump``/``close_dump`` (kvm_lldb_api.py).

Finding kvm_dbg: see plugins/kvm_path.py.  $KVM_DBG_PYTHON picks the
interpreter that runs the server.
"""

from __future__ import annotations

import os
import runpy
import shlex
import sys
from typing import Any, Callable, List

import lldb  # type: ignore[import-not-found]

_HERE = os.path.dirname(os.path.abspath(__file__))


# plugins/kvm_path.py (shared by both adapters) puts kvm_dbg on sys.path; this
# directory holds kvm_lldb_frames.
runpy.run_path(os.path.join(os.path.dirname(_HERE), "kvm_path.py"))["setup"](_HERE)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import kvm_lldb_frames as frames  # noqa: E402
from kvm_lldb_api import close_dump, open_dump  # noqa: E402, F401 (the scripting API)

from kvm_dbg import adapter, modload  # noqa: E402 (needs the path above)
from kvm_dbg.adapter import AdapterError, quote  # noqa: E402

# Survives a second `command script import` (which reloads this module).
_state: dict = globals().get("_state") or {"server": None, "kvm": None, "target": None,
                                          "unwind": None, "klds": {}}
PROMPT_ON_QUIT = "interpreter.prompt-on-quit"


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
        raise AdapterError(adapter.error_line(res.GetError(), command))
    return res.GetOutput() or ""


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
            raise AdapterError(adapter.NOT_OPEN)
        raise AdapterError("not connected to the dump (reconnect with 'process connect -p "
                           f"gdb-remote unix-connect://{server.address}', or kvm-close)")

    def send(packet: str) -> str:
        out = _run(debugger, f"process plugin packet send {packet}", _state["target"])
        return next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                     if ln.strip().startswith("response:")), out)
    return adapter.query(command, send)


def _kernel_target(debugger: Any, kernel: str) -> Any:
    """The selected target if it is KERNEL and idle, else a new target for KERNEL."""
    target = debugger.GetSelectedTarget()
    if target.IsValid() and not _live(target.GetProcess()):
        exe = target.GetExecutable()
        try:
            if exe.IsValid() and os.path.samefile(exe.fullpath or "", kernel):
                return target
        except OSError:
            pass
    error = lldb.SBError()
    target = debugger.CreateTarget(kernel, None, None, True, error)
    if not error.Success() or not target.IsValid():
        raise AdapterError(f"{kernel}: {adapter.error_line(error.GetCString(), 'not usable')}")
    debugger.SetSelectedTarget(target)
    return target


def _quiet_quit(debugger: Any) -> None:
    """No "Quitting LLDB will kill one or more processes?" while a dump is
    open (a dump is no process anyone can kill): kvm-close restores it."""
    name = debugger.GetInstanceName()
    value = debugger.GetInternalVariableValue(PROMPT_ON_QUIT, name)
    if value.GetSize() == 1 and value.GetStringAtIndex(0) == "true":
        lldb.SBDebugger.SetInternalVariable(PROMPT_ON_QUIT, "false", name)
        _state["prompt_on_quit"] = name


# -- commands -----------------------------------------------------------------

def _open(debugger: Any, args: List[str], out: List[str]) -> None:
    from kvm_dbg.rsp.symbols import resolver_symbols
    target = debugger.GetSelectedTarget()
    exe = target.GetExecutable() if target.IsValid() else None
    default_kernel = exe.fullpath if exe is not None and exe.IsValid() else None
    req = adapter.parse_open_args(args, default_kernel, "'target create KERNEL' first")
    adapter.already_open(_state["server"], req)
    adapter.check_files(req)
    target = _kernel_target(debugger, req.kernel)
    symbols = adapter.lookup_symbols(resolver_symbols(), frames.kernel_symbols(target))
    server = adapter.start_server(req, symbols)
    _state.update(server=server, target=target)
    try:
        url = "unix-connect://" + server.address
        connected = _run(debugger, f"process connect -p gdb-remote {url}", target)
        proc = target.GetProcess()
        if not proc.IsValid() or not proc.GetNumThreads():
            raise AdapterError("the debugger could not connect to the server")
        run = lambda command: _run(debugger, command, target)  # noqa: E731
        query = lambda command: _query(debugger, command)  # noqa: E731
        slide = adapter.kerndisp(query("kerndisp"))     # powerpc64: as kgdb, by kerndisp
        frames.load_kernel(run, target, target.GetModuleAtIndex(0), slide)
        out.extend(modload.load_modules(lambda: query(modload.QUERY), _state["klds"],
                                        lambda ld: _add_kld(debugger, ld), "lldb"))
        try:
            _state["unwind"] = frames.swap_kernel_module(run, query, target, req.kernel, slide)
        except AdapterError as e:
            out.append(f"kvm-open: warning: {e}: trap frames are unwound by lldb's own "
                       "heuristics")
        for th in proc:                         # the crashed thread: the one with a stop reason
            if th.GetStopReason() not in (lldb.eStopReasonNone, lldb.eStopReasonInvalid):
                proc.SetSelectedThread(th)
                break
    except BaseException as e:  # leave nothing running behind a failed open
        _shutdown()
        if isinstance(e, AdapterError):
            raise AdapterError(f"{req.core}: {e}") from None
        raise
    _quiet_quit(debugger)
    out.extend(adapter.open_messages(lambda cmd: _query(debugger, cmd)))
    out.append(connected)


def _close(debugger: Any, args: List[str], out: List[str]) -> None:
    if _state["server"] is None:
        raise AdapterError("no dump is open")
    proc = _process()
    if proc is not None:
        # Quietly: the debugger's listener would print "Process N detached"; ours
        # takes the state change instead (which is what makes it public).
        listener = lldb.SBListener("kvm_dbg.close")
        broadcaster = proc.GetBroadcaster()
        broadcaster.RemoveListener(debugger.GetListener())
        broadcaster.AddListener(listener, lldb.SBProcess.eBroadcastBitStateChanged)
        proc.Detach()
        event = lldb.SBEvent()
        while listener.WaitForEvent(5, event) and _live(proc):
            pass
    _shutdown()


def _shutdown() -> None:
    name = _state.pop("prompt_on_quit", None)
    if name is not None:
        lldb.SBDebugger.SetInternalVariable(PROMPT_ON_QUIT, "true", name)
    target, _state["target"] = _state["target"], None
    swapped, _state["unwind"] = _state["unwind"], None
    klds, _state["klds"] = _state["klds"], {}
    if target is not None and target.IsValid():
        for m in klds.values():
            target.RemoveModule(m)
        frames.restore(target, swapped)
    adapter.close_dump(_state)


def _text_command(name: str) -> Callable[[Any, List[str], List[str]], None]:
    def run(debugger: Any, args: List[str], out: List[str]) -> None:
        adapter.no_args(args)
        out.append(_query(debugger, name))
    return run


def _number(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        pass
    proc = _process()
    if proc is None:
        raise AdapterError(adapter.NOT_OPEN)
    value = proc.GetSelectedThread().GetSelectedFrame().EvaluateExpression(text)
    if not value.GetError().Success():
        raise AdapterError(adapter.error_line(value.GetError().GetCString(), text))
    return value.GetValueAsUnsigned()


def _kld(debugger: Any, args: List[str], out: List[str]) -> None:
    """``kvm-kld`` lists modules; ``kvm-kld load [NAME|all]`` adds their symbol
    files at kgdb's section addresses (kvm_dbg.adapter.kld_loads)."""
    load, name = adapter.parse_kld_args(args)
    if not load:
        out.append(_query(debugger, "kld"))
        return
    for ld in adapter.kld_loads(adapter.descriptor(_state), name):
        if ld.error:
            out.append(f"{ld.name}: {ld.error}")
        elif ld.path not in _state["klds"]:
            try:
                _add_kld(debugger, ld)
            except AdapterError:
                out.append(f"{ld.name}: lldb cannot load {ld.path}")
                continue
            out.append(f"add symbol table from file \"{ld.path}\" at 0x{ld.address:x}")


def _add_kld(debugger: Any, ld: Any) -> None:
    """A module's file at kgdb's section addresses (kvm_dbg.modload)."""
    target = _state["target"]
    module = target.AddModule(ld.path, None, None)
    if not module.IsValid():
        raise AdapterError("lldb does not read it as an object file")
    try:
        _run(debugger, modload.lldb_command(ld, quote), target)
    except AdapterError:
        target.RemoveModule(module)
        raise
    _state["klds"][ld.path] = module


def _switch(kind: str) -> Callable[[Any, List[str], List[str]], None]:
    def run(debugger: Any, args: List[str], out: List[str]) -> None:
        if len(args) != 1:
            raise AdapterError(f"usage: {adapter.HELP['kvm-' + kind].syntax}")
        ref = adapter.parse_thread_reply(_query(debugger, f"{kind} {_number(args[0])}"))
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
    fn: Callable[[Any, List[str], List[str]], None]

    def __init__(self, debugger: Any, internal_dict: dict) -> None:
        pass

    def get_short_help(self) -> str:
        return adapter.HELP[self.name].short

    def get_long_help(self) -> str:
        h = adapter.HELP[self.name]
        return f"Usage: {h.syntax}\n\n{h.long or h.short}\n"

    def __call__(self, debugger: Any, command: str, exe_ctx: Any, result: Any) -> None:
        out: List[str] = []

        def body() -> None:
            try:
                args = shlex.split(command)
            except ValueError as e:
                raise AdapterError(str(e)) from None
            type(self).fn(debugger, args, out)
        error = adapter.run_guarded(self.name, body)
        if error:
            result.SetError(error)
        text = adapter.text_block(out + adapter.server_errors(_state["server"]))
        if text:
            result.AppendMessage(text.rstrip("\n"))
        if result.GetStatus() != lldb.eReturnStatusFailed:
            result.SetStatus(lldb.eReturnStatusSuccessFinishResult)


_FUNCTIONS = {
    "kvm-open": _open, "kvm-close": _close, "kvm-info": _text_command("info"),
    "kvm-ps": _text_command("ps"), "kvm-dmesg": _text_command("dmesg"), "kvm-kld": _kld,
    "kvm-crashinfo": _text_command("crashinfo"), "kvm-proc": _switch("proc"),
    "kvm-tid": _switch("tid"),
}
COMMANDS = [type(name.replace("-", "_"), (_Command,), {"name": name, "fn": staticmethod(fn)})
            for name, fn in _FUNCTIONS.items()]
for _cls in COMMANDS:
    globals()[_cls.__name__] = _cls


def kvm() -> Any:
    """A read-only ``kvm_dbg.Kvm`` on the open dump, for scripting in lldb's Python."""
    try:
        return adapter.descriptor(_state)
    except AdapterError as e:
        raise AdapterError(f"kvm: {e}") from None


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
