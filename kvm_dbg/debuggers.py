"""Starting gdb or lldb on a dump, kgdb-style: which binary, which plugin,
which kernel for ``vmcore.N``.

The adapters themselves live in plugins/; this module only builds the
command line that loads one and runs ``kvm-open``.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import List, Optional, Tuple

from .arch.base import host_machine
from .errors import KvmError

PLUGINS = {"gdb": ("gdb", "kvm_gdb.py"), "lldb": ("lldb", "kvm_lldb.py")}
LLDB_NAMES = ("lldb", "lldb-16", "lldb-17", "lldb-18", "lldb-19", "lldb-15", "lldb-14")


def plugin_path(debugger: str) -> str:
    """Path of the adapter script for ``gdb`` or ``lldb`` (repository layout,
    or the copy a wheel installs under ``share/kvm-dbg/plugins``)."""
    sub, name = PLUGINS[debugger]
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "plugins" / sub / name,
                  Path(sysconfig.get_path("data")) / "share" / "kvm-dbg" / "plugins" / sub / name,
                  Path(sys.prefix) / "share" / "kvm-dbg" / "plugins" / sub / name]
    for c in candidates:
        if c.is_file():
            return str(c)
    raise KvmError(f"the {debugger} plugin ({name}) is not installed next to kvm_dbg")


def crashdir_files(n: int, crashdir: str) -> Tuple[Optional[str], str]:
    """kgdb's ``-n N``: the core ``DIR/vmcore.N`` and its kernel, if found."""
    core = os.path.join(crashdir, f"vmcore.{n}")
    if not os.path.exists(core):
        raise KvmError(f"{core}: no such dump")
    return kernel_for_core(crashdir, n), core


def kernel_for_core(crashdir: str, n: Optional[int]) -> Optional[str]:
    """The kernel kgdb would pick for dump N: ``kernel.N`` (file or directory
    with ``kernel``), else the build directory named in ``info.N``."""
    if n is None:
        return None
    for cand in (os.path.join(crashdir, f"kernel.{n}"),
                 os.path.join(crashdir, f"kernel.{n}", "kernel")):
        if os.path.isfile(cand):
            return cand
    info = os.path.join(crashdir, f"info.{n}")
    try:
        with open(info, errors="replace") as f:
            for line in f:
                if line.startswith("    ") and ":" in line:
                    build = line.split(":", 1)[1].strip()
                    for name in ("kernel.debug", "kernel.full", "kernel"):
                        cand = os.path.join(build, name)
                        if os.path.isfile(cand):
                            return cand
    except OSError:
        pass
    return None


def dump_number(core: str) -> Optional[int]:
    """N of a ``vmcore.N`` path, else None."""
    base = os.path.basename(core)
    if base.startswith("vmcore.") and base[7:].isdigit():
        return int(base[7:])
    return None


def gdb_binary(arch: str) -> str:
    """gdb for a native dump, gdb-multiarch for a foreign one (when present)."""
    multi = shutil.which("gdb-multiarch")
    plain = shutil.which("gdb")
    if arch != host_machine() and multi:
        return multi
    if plain:
        return plain
    if multi:
        return multi
    raise KvmError("gdb not found (install gdb or gdb-multiarch)")


def lldb_binary() -> str:
    for name in LLDB_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise KvmError("lldb not found (install lldb, e.g. Debian's lldb-16)")


def debugger_env(base: Optional[dict] = None) -> dict:
    """Environment for starting gdb/lldb: the system ``python3`` first on PATH,
    and ``$KVM_DBG_PATH`` naming this kvm_dbg installation for the plugins.

    A debugger's embedded Python derives its prefix from the ``python3`` it
    finds on PATH; with pyenv's (or a venv's) first, lldb-16 loads the wrong
    standard library and loses the system site-packages (pyelftools)."""
    env = dict(os.environ if base is None else base)
    here = str(Path(__file__).resolve().parents[1])     # where this kvm_dbg lives
    paths = [p for p in env.get("KVM_DBG_PATH", "").split(os.pathsep) if p]
    if here not in paths:
        env["KVM_DBG_PATH"] = os.pathsep.join([here] + paths)
    path = env.get("PATH", "")
    if os.path.isdir("/usr/bin") and not path.startswith("/usr/bin:"):
        env["PATH"] = "/usr/bin" + (os.pathsep + path if path else "")
    return env


def _quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gdb_argv(kernel: str, core: str, arch: str, extra: List[str]) -> List[str]:
    return [gdb_binary(arch), "-q", "-ex", "set osabi none", "-ex",
            f"source {plugin_path('gdb')}", "-ex",
            f"kvm-open {_quote(kernel)} {_quote(core)}", *extra]


def lldb_argv(kernel: str, core: str, extra: List[str]) -> List[str]:
    return [lldb_binary(), "--no-use-colors", "-o",
            f"command script import {plugin_path('lldb')}", "-o",
            f"kvm-open {_quote(kernel)} {_quote(core)}", *extra]
