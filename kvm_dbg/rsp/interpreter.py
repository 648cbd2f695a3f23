"""Which Python runs the dump server: chosen on purpose, probed before use.

Inside gdb and lldb, ``sys.executable`` is whatever ``python3`` comes first on
PATH (a pyenv shim, a conda or project venv), not the interpreter the debugger
embeds, and that one may lack pyelftools.  The server is therefore started on
the first of these that can import ``kvm_dbg`` and ``elftools``:

1. ``$KVM_DBG_PYTHON`` (when set, the only candidate);
2. the interpreter this process runs on, found from ``sys.prefix`` /
   ``sys.base_prefix`` and the version (``/usr/bin/python3.11`` inside
   Debian's gdb and lldb, the venv's python for ``kvm-dbg``);
3. ``sys.executable``;
4. the interpreter of the ``kvm-dbg`` command on PATH (its ``#!`` line);
5. the system's ``pythonX.Y`` of the same version (``/usr/bin``, ``/usr/local/bin``).

Each candidate runs ``import kvm_dbg, elftools`` once (about 50 ms) with the
``PYTHONPATH`` the server will get.  When none can, :class:`InterpreterError`
names every interpreter tried, what it lacked, and how to fix it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

PROBE = "import kvm_dbg, elftools"
PROBE_TIMEOUT = 30.0
FIX = ("install pyelftools for it (Debian: apt install python3-pyelftools; "
       "pip: pip install pyelftools) or set KVM_DBG_PYTHON to a python3 that can "
       "import kvm_dbg and elftools")

SYSTEM_BINDIRS = ("/usr/bin", "/usr/local/bin")

_probed: Dict[Tuple[str, str], Optional[str]] = {}


class InterpreterError(Exception):
    """No interpreter can run the server; the message is one line for the user."""


def package_root() -> str:
    """The directory holding the ``kvm_dbg`` package this process imported."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def server_pythonpath(environ: Optional[Dict[str, str]] = None) -> str:
    """``PYTHONPATH`` for the server: this kvm_dbg first, then the caller's."""
    env = os.environ if environ is None else environ
    parts = [package_root()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    seen: List[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    return os.pathsep.join(seen)


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _shebang(command: str) -> Optional[str]:
    """The interpreter named by the ``#!`` line of ``command`` on PATH."""
    found = shutil.which(command)
    if not found:
        return None
    try:
        with open(found, "rb") as f:
            line = f.readline(512)
    except OSError:
        return None
    if not line.startswith(b"#!"):
        return None
    words = line[2:].decode("utf-8", "replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env" and len(words) > 1:
        return shutil.which(words[1])
    return words[0]


def candidates() -> List[str]:
    """Interpreters to try, in order, without duplicates (see the module docstring)."""
    env = os.environ.get("KVM_DBG_PYTHON")
    if env:
        return [env]
    v = sys.version_info
    out: List[str] = []
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        for name in (f"python{v.major}.{v.minor}", f"python{v.major}"):
            out.append(os.path.join(prefix, "bin", name))
    out.append(sys.executable)
    entry = _shebang("kvm-dbg")
    if entry:
        out.append(entry)
    # lldb derives its embedded Python's prefix from the python3 first on PATH, so
    # inside lldb the prefixes above may all be a venv's or pyenv's: the system
    # interpreter of the same version (what Debian's lldb and gdb embed) comes last.
    for bindir in SYSTEM_BINDIRS:
        out.append(os.path.join(bindir, f"python{v.major}.{v.minor}"))
    # Paths, not real paths, are compared: a venv's python is a symlink to its base
    # interpreter but sees other packages.
    unique: List[str] = []
    for c in out:
        if c and c not in unique and _executable(c):
            unique.append(c)
    return unique


def probe(python: str, pythonpath: str) -> Optional[str]:
    """None if ``python`` can import kvm_dbg and elftools, else why not (one line)."""
    key = (python, pythonpath)
    if key in _probed:
        return _probed[key]
    env = dict(os.environ, PYTHONPATH=pythonpath)
    env.pop("PYTHONHOME", None)
    try:
        r = subprocess.run([python, "-c", PROBE], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        why: Optional[str] = f"'{PROBE}' did not finish within {PROBE_TIMEOUT:.0f} s"
    except OSError as e:
        why = e.strerror or str(e)
    else:
        lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
        why = None if r.returncode == 0 else (lines[-1] if lines else f"exit {r.returncode}")
        if why and ": " in why and why.split(":", 1)[0].endswith("Error"):
            why = why.split(": ", 1)[1]         # "No module named 'elftools'"
    _probed[key] = why
    return why


def choose(pythonpath: Optional[str] = None) -> str:
    """The first candidate that passes :func:`probe`; InterpreterError if none."""
    path = server_pythonpath() if pythonpath is None else pythonpath
    tried: List[str] = []
    cands = candidates()
    if not cands:
        env = os.environ.get("KVM_DBG_PYTHON")
        raise InterpreterError(f"cannot start the dump server: KVM_DBG_PYTHON={env} is not an "
                               "executable file" if env else
                               "cannot start the dump server: no python3 interpreter found; "
                               + FIX)
    for python in cands:
        why = probe(python, path)
        if why is None:
            return python
        tried.append(f"{python} ({why})")
    raise InterpreterError("cannot start the dump server: " + "; ".join(tried) + "; " + FIX)
