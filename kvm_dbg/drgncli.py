"""``kvm-dbg drgn``: drgn's interactive shell (or a script) on a FreeBSD dump, with
``prog``, the FreeBSD helpers and the crashed thread preloaded."""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any, Dict, Sequence

from . import drgn as kdrgn
from . import helpers

BANNER = """For help, type help(drgn) (drgn) or see docs/drgn.md (kvm-dbg).
>>> prog                   # drgn.Program over the dump
>>> thread                 # the crashed thread (kvm_dbg KThread; thread.frames())
>>> curthread              # (struct thread *) of it, when the kernel has DWARF
>>> stack_trace(thread)    # drgn StackTrace from kvm_dbg's unwinder
FreeBSD helpers: """ + ", ".join(sorted(helpers.__all__))


def shell_globals(prog: Any, base: Dict[str, Any]) -> Dict[str, Any]:
    """drgn's default globals plus kvm_dbg's: helpers, ``thread``, ``curthread``,
    ``stack_trace``, ``kd`` (the kvm_dbg.Kvm)."""
    g = dict(base)
    g.update({name: getattr(helpers, name) for name in helpers.__all__})
    g["kd"] = kdrgn.kvm(prog)
    g["threads"] = lambda: kdrgn.threads(prog)
    g["find_thread"] = lambda t: kdrgn.find_thread(prog, t)
    g["stack_trace"] = lambda t: kdrgn.stack_trace(prog, t)
    try:
        g["thread"] = kdrgn.crashed_thread(prog)
    except LookupError:
        g["thread"] = None
    g["curthread"] = None
    if g["thread"] is not None and kdrgn.has_debug_info(prog):
        g["curthread"] = kdrgn.thread_object(prog, g["thread"])
    return g


def run(prog: Any, script: str = "", argv: Sequence[str] = ()) -> None:
    """The interactive shell, or ``script`` run as ``__main__`` with ``sys.argv``
    = [script, *argv] (as ``drgn script.py`` does)."""
    import drgn
    import drgn.cli
    drgn.set_default_prog(prog)
    if script:
        old = sys.argv
        sys.argv = [script, *argv]
        try:
            runpy.run_path(script, init_globals=shell_globals(prog, drgn.cli.default_globals(
                prog)), run_name="__main__")
        finally:
            sys.argv = old
        return
    kd = kdrgn.kvm(prog)
    header = (f"{drgn.cli.version_header()}\nkvm-dbg: {kd.arch} {kd.format} "
              f"{os.path.basename(kd.core_path or '')} (kernel {kd.kernel_path})")
    if not kdrgn.has_debug_info(prog):
        header += "\nwarning: the kernel has no DWARF: symbols and memory only"
    drgn.cli.run_interactive(prog, banner_func=lambda _b: header + "\n" + BANNER,
                             globals_func=lambda g: shell_globals(prog, g))
