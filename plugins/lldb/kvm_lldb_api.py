"""kvm_dbg for lldb: the Python API for SB API programs (part of kvm_lldb.py).

``open_dump`` and ``close_dump`` run the ``kvm-open`` / ``kvm-close`` command
objects themselves (no command line) and raise
``kvm_dbg.scripting.ScriptError`` with the line the command prints when it
fails (docs/lldb.md, Scripts)."""

from __future__ import annotations

import sys
from typing import Any, Optional

import lldb  # type: ignore[import-not-found]

from kvm_dbg import scripting


def open_dump(debugger: Any, kernel: Optional[str], core: str, out: Any = None,
              **options: Any) -> Any:
    """``kvm-open`` from an SB API program: the dump's ``lldb.SBProcess``.

    Options: ``writable``, ``key``, ``dumpkey``, ``cache_dir``, ``sysroot`` (as
    ``kvm_dbg.open``); KERNEL None means the selected target's.  What the command
    prints goes to the text stream ``out`` (default sys.stderr); a failure raises
    ``kvm_dbg.scripting.ScriptError`` with the line the command prints."""
    _script_command(debugger, "kvm-open", scripting.open_command_args(kernel, core, **options),
                    out)
    return _plugin()._state["target"].GetProcess()


def close_dump(debugger: Any, out: Any = None) -> None:
    """``kvm-close`` from an SB API program (ScriptError if no dump is open)."""
    _script_command(debugger, "kvm-close", "", out)


def _plugin() -> Any:
    return sys.modules["kvm_lldb"]


def _script_command(debugger: Any, name: str, args: str, out: Any) -> None:
    """Run kvm-* command NAME as lldb would (its class, no command line)."""
    cls = next(c for c in _plugin().COMMANDS if c.name == name)
    result = lldb.SBCommandReturnObject()
    cls(debugger, {})(debugger, args, None, result)
    scripting.show(result.GetOutput(), out)
    if not result.Succeeded():
        raise scripting.ScriptError(scripting.command_error(result.GetError(), name))
