"""Standalone debugger scripts: what ``open_dump`` / ``close_dump`` in the gdb and
lldb plugins share, and the environment an lldb SB API program needs.

The plugins' ``open_dump`` runs ``kvm-open`` itself (so a script gets exactly
the command's behaviour and messages) with the command line built here, and
turns a failure into :class:`ScriptError` carrying the one line the command
prints.  lldb's Python module lives outside every venv (Debian:
``/usr/lib/llvm-16/lib/python3.11/site-packages``, importable only by the
matching system interpreter and only with ``liblldb-16-dev`` installed), so
:func:`lldb_env` finds that interpreter and the ``PYTHONPATH`` that reaches
lldb, kvm_dbg and pyelftools together; ``kvm-dbg env --lldb`` prints it.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
from typing import Any, Dict, List, Optional, TextIO

from .adapter import AdapterError
from .errors import KvmError

#: ``open_dump`` keywords and the ``kvm-open`` option each one becomes.
OPEN_OPTIONS = {"key": "--key", "dumpkey": "--dump-key", "cache_dir": "--cache-dir",
                "sysroot": "--sysroot"}
PROBE_TIMEOUT = 60.0


class ScriptError(AdapterError):
    """A kvm_dbg command failed in a script; ``str(e)`` is the line the command
    prints, e.g. ``kvm-open: /var/crash/vmcore.1: invalid core``."""


def _quote(word: str) -> str:
    """Double-quoted, backslash-escaped: read back the same by gdb's
    ``string_to_argv`` and by ``shlex.split`` (the lldb plugin's parser)."""
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def open_command_args(kernel: Optional[str], core: str, writable: bool = False,
                      **options: Optional[str]) -> str:
    """``kvm-open``'s argument string for ``open_dump(kernel, core, **options)``.

    Options are ``writable`` and those of :data:`OPEN_OPTIONS` (``kvm_dbg.open``'s
    names); an unknown one is a TypeError, as for any Python call.  ``kernel``
    None means the kernel the debugger has loaded.  A path starting with ``-``
    gets ``./`` so that it is not taken for an option."""
    unknown = sorted(set(options) - set(OPEN_OPTIONS))
    if unknown:
        raise TypeError(f"open_dump() got an unexpected keyword argument {unknown[0]!r} "
                        f"(known: writable, {', '.join(OPEN_OPTIONS)})")
    words: List[str] = ["-w"] if writable else []
    for name, flag in OPEN_OPTIONS.items():
        value = options.get(name)
        if value is not None:
            words += [flag, _quote(_not_option(os.fspath(value)))]
    for path in (kernel, core):
        if path is not None:
            words.append(_quote(_not_option(os.fspath(path))))
    return " ".join(words)


def _not_option(path: str) -> str:
    return os.path.join(".", path) if path.startswith("-") else path


def command_error(text: Optional[str], command: str) -> str:
    """The one line a failed command printed (a debugger's ``error:`` prefix
    dropped); ``COMMAND: failed`` if it printed nothing."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("error:"):
            line = line[len("error:"):].strip()
        if line:
            return line
    return f"{command}: failed"


def show(text: Optional[str], out: Optional[TextIO]) -> None:
    """Write a command's messages to the text stream ``out`` (None: sys.stderr,
    as ``print`` defaults to sys.stdout)."""
    if text and text.strip():
        stream = sys.stderr if out is None else out
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()


# -- lldb SB API programs -----------------------------------------------------------

def lldb_plugin(debugger: Any) -> Any:
    """Import the lldb plugin into ``debugger`` (``command script import``, so
    its kvm-* commands exist too) and return the ``kvm_lldb`` module;
    ScriptError if lldb refuses it."""
    import lldb  # type: ignore[import-not-found]

    from .debuggers import plugin_path
    try:
        path = plugin_path("lldb")
    except KvmError as e:
        raise ScriptError(str(e)) from None
    result = lldb.SBCommandReturnObject()
    debugger.GetCommandInterpreter().HandleCommand(f"command script import {_quote(path)}",
                                                   result)
    module = sys.modules.get("kvm_lldb")
    if not result.Succeeded() or module is None:
        raise ScriptError(command_error(result.GetError(), f"command script import {path}"))
    return module


class LldbPython:
    """Where lldb's Python module is and what it needs."""

    def __init__(self, lldb_exe: str, module_dir: str, version: Optional[str]) -> None:
        self.lldb = lldb_exe
        self.module_dir = module_dir            # what ``lldb -P`` prints
        self.version = version                  # "16" (lldb's major version), if known

    def packages(self) -> str:
        """Debian's names for the packages that make the module importable."""
        v = self.version or "N"
        return f"python3-lldb-{v} liblldb-{v}-dev"


def lldb_python(lldb_exe: Optional[str] = None) -> LldbPython:
    """Ask lldb (``lldb -P``, ``lldb --version``) where its Python module is."""
    from .debuggers import lldb_binary
    exe = lldb_exe or lldb_binary()
    try:
        where = subprocess.run([exe, "-P"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=PROBE_TIMEOUT)
        ver = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KvmError(f"{exe}: cannot run it: {e}") from None
    lines = [ln.strip() for ln in where.stdout.splitlines() if ln.strip()]
    if where.returncode != 0 or not lines:
        raise KvmError(f"{exe} -P does not say where lldb's Python module is "
                       f"(exit {where.returncode})")
    m = re.search(r"version (\d+)", ver.stdout)
    return LldbPython(exe, lines[-1], m.group(1) if m else None)


def lldb_module_version(module_dir: str) -> Optional[str]:
    """``"3.11"``: the Python the ``_lldb`` extension in ``module_dir`` was
    built for (its file name's ``cpython-311`` tag, else the directory's
    ``python3.11``); None if neither says."""
    for path in glob.glob(os.path.join(module_dir, "lldb", "_lldb*")):
        m = re.search(r"\.cpython-(\d)(\d+)", os.path.basename(path))
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    m = re.search(r"python(\d+\.\d+)", module_dir)
    return m.group(1) if m else None


def interpreter_candidates(version: Optional[str]) -> List[str]:
    """Interpreters that may load lldb's module: the system's ``pythonX.Y``
    first (Debian's lldb links against it), then one on PATH, then python3."""
    from shutil import which
    names = [f"python{version}"] if version else []
    names.append("python3")
    out: List[str] = []
    for name in names:
        for cand in (os.path.join("/usr/bin", name), which(name)):
            if cand and os.path.isfile(cand) and os.access(cand, os.X_OK) and cand not in out:
                out.append(cand)
    return out


def _probe(python: str, pythonpath: str, modules: str) -> Optional[str]:
    """None if ``python`` imports ``modules`` with this PYTHONPATH, else its
    last error line."""
    env = dict(os.environ, PYTHONPATH=pythonpath)
    env.pop("PYTHONHOME", None)
    try:
        r = subprocess.run([python, "-c", f"import {modules}"], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"'import {modules}' did not finish within {PROBE_TIMEOUT:.0f} s"
    except OSError as e:
        return e.strerror or str(e)
    if r.returncode == 0:
        return None
    lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {r.returncode}"


def _dangling_lldb_module(module_dir: str) -> Optional[str]:
    """The target of a ``_lldb`` symlink that points nowhere (Debian ships it
    in liblldb-N-dev), else None."""
    for path in glob.glob(os.path.join(module_dir, "lldb", "_lldb*")):
        if os.path.islink(path) and not os.path.exists(path):
            return os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return None


def _package_dir(module: Any) -> str:
    """The sys.path entry a package was imported from."""
    return os.path.dirname(os.path.dirname(os.path.abspath(module.__file__)))


def lldb_env(lldb_exe: Optional[str] = None) -> Dict[str, str]:
    """``{"PYTHON": ..., "PYTHONPATH": ...}`` for an lldb SB API program that
    uses kvm_dbg: an interpreter that imports lldb's module, and a path with
    lldb's module directory, this kvm_dbg and pyelftools.  Each is checked by
    importing it; KvmError (one line, naming the package to install) if
    lldb's module cannot be imported."""
    import elftools

    import kvm_dbg
    info = lldb_python(lldb_exe)
    pkg = info.packages()
    if not os.path.isfile(os.path.join(info.module_dir, "lldb", "__init__.py")):
        raise KvmError(f"lldb's Python module is not installed ({info.module_dir}/lldb is "
                       f"missing; Debian: apt install {pkg})")
    dangling = _dangling_lldb_module(info.module_dir)
    if dangling:
        raise KvmError(f"lldb's Python module cannot be imported: its _lldb extension "
                       f"points to {dangling}, which is missing (Debian: apt install "
                       f"liblldb-{info.version or 'N'}-dev)")
    version = lldb_module_version(info.module_dir)
    cands = interpreter_candidates(version)
    if not cands:
        raise KvmError(f"no python{version or '3'} to run lldb's Python module "
                       f"({info.module_dir}): install python{version or '3'}")
    ours = [info.module_dir, _package_dir(kvm_dbg)]
    tried: List[str] = []
    for python in cands:
        why = _probe(python, info.module_dir, "lldb")
        if why is not None:
            tried.append(f"{python}: {why}")
            continue
        path = list(dict.fromkeys(ours))
        if _probe(python, os.pathsep.join(path), "kvm_dbg, elftools") is not None:
            path = list(dict.fromkeys(path + [_package_dir(elftools)]))
        pythonpath = os.pathsep.join(path)
        why = _probe(python, pythonpath, "lldb, kvm_dbg, elftools")
        if why is not None:
            raise KvmError(f"{python} imports lldb but not kvm_dbg and pyelftools with "
                           f"PYTHONPATH={pythonpath}: {why}")
        return {"PYTHON": python, "PYTHONPATH": pythonpath}
    raise KvmError(f"lldb's Python module ({info.module_dir}) cannot be imported: "
                   + "; ".join(tried) + f" (Debian: apt install {pkg})")


def shell_assignments(env: Dict[str, str]) -> str:
    """``NAME=value`` lines for ``eval``, PYTHONPATH exported (the program
    needs it; PYTHON is for the shell that runs it)."""
    lines = [f"{name}={shlex.quote(value)}" for name, value in env.items()]
    if "PYTHONPATH" in env:
        lines.append("export PYTHONPATH")
    return "\n".join(lines)
