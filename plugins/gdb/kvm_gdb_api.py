"""kvm_dbg for gdb: the Python API for ``gdb -batch -x`` scripts (part of kvm_gdb.py).

``open_dump`` and ``close_dump`` run ``kvm-open`` / ``kvm-close`` as a user
would type them and raise ``kvm_dbg.scripting.ScriptError`` with the line the
command prints when it fails (docs/gdb.md, Scripts)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator, Optional

import gdb  # type: ignore[import-not-found]

from kvm_dbg import scripting


def open_dump(kernel: Optional[str], core: str, out: Any = None, **options: Any) -> Any:
    """``kvm-open`` from a gdb Python script: the ``gdb.Inferior`` on the dump,
    which is left selected.

    Options: ``writable``, ``key``, ``dumpkey``, ``cache_dir``, ``sysroot`` (as
    ``kvm_dbg.open``); KERNEL None means the file gdb has loaded.  What the
    command prints goes to the text stream ``out`` (default sys.stderr); a
    failure raises ``kvm_dbg.scripting.ScriptError`` with the line it prints."""
    _script_command("kvm-open " + scripting.open_command_args(kernel, core, **options), out)
    return gdb.selected_inferior()


def close_dump(out: Any = None) -> None:
    """``kvm-close`` from a gdb Python script (ScriptError if no dump is open)."""
    _script_command("kvm-close", out)


@contextlib.contextmanager
def quiet_stop() -> Iterator[None]:
    """``set suppress-cli-notifications on`` (gdb >= 12) for a block: the stop
    location ``target remote`` prints otherwise (which to_string cannot capture)."""
    try:
        old = gdb.parameter("suppress-cli-notifications")
        gdb.execute("set suppress-cli-notifications on", to_string=True)
    except (gdb.error, RuntimeError):        # gdb < 12: no such setting
        old = None
    try:
        yield
    finally:
        if old is not None:
            gdb.execute(f"set suppress-cli-notifications {'on' if old else 'off'}",
                        to_string=True)


def _script_command(line: str, out: Any) -> None:
    """Run LINE as typed, capturing its output for ``out``."""
    sys.modules["kvm_gdb"].register()
    try:
        with quiet_stop():
            text = gdb.execute(line, to_string=True)
    except gdb.error as e:
        raise scripting.ScriptError(scripting.command_error(str(e), line.split()[0])) from None
    scripting.show(text, out)
