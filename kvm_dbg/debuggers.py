"""Starting gdb or lldb on a dump, kgdb-style: which binary, which plugin.

The adapters themselves live in plugins/; this module only builds the
command line that loads one and runs ``kvm-open``.  Which kernel goes with
``vmcore.N`` is kvm_dbg.crashdir's job.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import List, Optional

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
    ``$KVM_DBG_PATH`` naming this kvm_dbg installation for the plugins, and
    ``$KVM_DBG_PYTHON`` (unless set) naming this interpreter for the server.

    A debugger's embedded Python derives its prefix from the ``python3`` it
    finds on PATH; with pyenv's (or a venv's) first, lldb-16 loads another
    standard library than its own and loses the system site-packages.  The
    server runs on the interpreter ``kvm-dbg`` itself runs on, which has every
    optional feature installed with it (drgn for ``kvm-crashinfo``, zstd...);
    the plugin still probes it before use."""
    env = dict(os.environ if base is None else base)
    env.setdefault("KVM_DBG_PYTHON", sys.executable)
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


def _open_cmd(kernel: str, core: str, options: Optional[List[str]]) -> str:
    """``kvm-open [OPTIONS] KERNEL CORE`` (options: ``--key FILE``...)."""
    words = [_quote(w) if not w.startswith("-") else w for w in (options or [])]
    return " ".join(["kvm-open", *words, _quote(kernel), _quote(core)])


def gdb_argv(kernel: str, core: str, arch: str, extra: List[str],
             options: Optional[List[str]] = None) -> List[str]:
    return [gdb_binary(arch), "-q", "-ex", "set osabi none", "-ex",
            f"source {plugin_path('gdb')}", "-ex", _open_cmd(kernel, core, options), *extra]


def lldb_argv(kernel: str, core: str, extra: List[str],
              options: Optional[List[str]] = None) -> List[str]:
    return [lldb_binary(), "--no-use-colors", "-o",
            f"command script import {plugin_path('lldb')}", "-o",
            _open_cmd(kernel, core, options), *extra]
