"""Make ``kvm_dbg`` importable inside a debugger's embedded Python.

Loaded by file path by both adapters (before kvm_dbg can be imported, so it
cannot live in kvm_dbg).  It adds, in order: the checkout holding the
plugins (repository layout), the site-packages of the prefix a wheel
installed the plugins into (``<prefix>/share/kvm-dbg/plugins/...``),
``$KVM_DBG_PATH`` (os.pathsep-separated) and the site-packages of
``$KVM_DBG_VENV`` (or ``$VIRTUAL_ENV``).  pyelftools comes from one of those
or from the system (Debian: python3-pyelftools), whose package directory is
appended when the debugger's Python lost it (see ``_system_pyelftools``).
"""

from __future__ import annotations

import glob
import os
import sys
from typing import List


def _site_packages(prefix: str) -> List[str]:
    return sorted(glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages")))


def setup(plugin_dir: str) -> None:
    """Put the places kvm_dbg may live at the front of sys.path."""
    root = os.path.dirname(os.path.dirname(plugin_dir))
    extra: List[str] = [root]
    if os.path.basename(root) == "kvm-dbg" and os.path.basename(os.path.dirname(root)) == "share":
        extra += _site_packages(os.path.dirname(os.path.dirname(root)))
    extra += [p for p in os.environ.get("KVM_DBG_PATH", "").split(os.pathsep) if p]
    venv = os.environ.get("KVM_DBG_VENV") or os.environ.get("VIRTUAL_ENV")
    if venv:
        extra += _site_packages(venv)
    for p in reversed(extra):
        if p not in sys.path:
            sys.path.insert(0, p)
    _system_pyelftools()


def _system_pyelftools() -> None:
    """When pyelftools is not importable, append the system's package directory
    that holds it (for this Python version).  lldb builds its embedded Python's
    path from the ``python3`` first on PATH: with a venv's or pyenv's first,
    Debian's /usr/lib/python3/dist-packages (python3-pyelftools) is missing."""
    import importlib.util
    if importlib.util.find_spec("elftools") is not None:
        return
    v = sys.version_info
    for d in ("/usr/lib/python3/dist-packages", f"/usr/local/lib/python{v.major}.{v.minor}"
              "/dist-packages", f"/usr/lib/python{v.major}.{v.minor}/site-packages"):
        if os.path.isdir(os.path.join(d, "elftools")) and d not in sys.path:
            sys.path.append(d)
            return
