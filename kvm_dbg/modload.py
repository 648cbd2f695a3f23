"""Kernel modules loaded on ``kvm-open``, as kgdb loads them when it opens a dump.

The server answers the ``kld-loads`` query with every module of the dump, its
symbol file (found as kgdb does: kernel directory, ``linker_path``, under
``--sysroot`` and its ``/usr/lib/debug`` mirror) and the load address of
each section (:func:`kvm_dbg.adapter.kld_loads`), as JSON.  Computing it in
the server records a warning there for each module without a usable file, so
``kvm-open`` prints those once, with the dump's other warnings.  Each
adapter gives :func:`load_modules` a function that adds one file (with the
commands built here) and prints the lines it returns, one per module.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Container, List

from .adapter import AdapterError, KldLoad

QUERY = "kld-loads"


def encode(loads: List[KldLoad]) -> str:
    """The ``kld-loads`` answer: a JSON list, sections in section-table order."""
    return json.dumps([{"name": x.name, "address": x.address, "path": x.path,
                        "sections": [[n, a] for n, a in x.sections.items()],
                        "error": x.error} for x in loads]) + "\n"


def decode(text: str) -> List[KldLoad]:
    """KldLoads from a ``kld-loads`` answer; AdapterError if it is not one."""
    try:
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise TypeError(f"a list was expected, not {type(rows).__name__}")
        return [KldLoad(str(r["name"]), int(r["address"]),
                        None if r["path"] is None else str(r["path"]),
                        {str(n): int(a) for n, a in r["sections"]},
                        None if r["error"] is None else str(r["error"])) for r in rows]
    except (ValueError, TypeError, KeyError) as e:
        raise AdapterError(f"unexpected {QUERY} answer ({type(e).__name__}: {e}): "
                           f"{text.strip()[:200]!r}") from None


def load_modules(answer: Callable[[], str], loaded: Container[str],
                 add: Callable[[KldLoad], None], debugger: str) -> List[str]:
    """What kvm-open does: ``add(load)`` each module of the server's
    ``answer()`` not in ``loaded``; the lines to print, one per module
    (``add`` raises AdapterError when the debugger refuses the file).  A
    failed query is one line too: the dump stays open."""
    try:
        loads = to_load(decode(answer()), loaded)
    except AdapterError as e:
        return [query_failed_line(e)]
    lines: List[str] = []
    for load in loads:
        try:
            add(load)
        except AdapterError as e:
            lines.append(failed_line(load, debugger, e))
            continue
        lines.append(loaded_line(load))
    return lines


def to_load(loads: List[KldLoad], loaded: Container[str]) -> List[KldLoad]:
    """The modules with a usable file not in ``loaded`` (paths already added),
    each file once.  Modules without one are the server's warnings."""
    out: List[KldLoad] = []
    seen = set()
    for x in loads:
        if x.path is None or x.error or not x.sections or x.path in loaded or x.path in seen:
            continue
        seen.add(x.path)
        out.append(x)
    return out


def gdb_command(load: KldLoad, quote: Callable[[str], str]) -> str:
    """``add-symbol-file FILE TEXT -s SECTION ADDR...`` (every allocated section)."""
    words = ["add-symbol-file", quote(load.path or ""), f"{load.sections['.text']:#x}"]
    for name, addr in load.sections.items():
        if name != ".text":
            words += ["-s", name, f"{addr:#x}"]
    return " ".join(words)


def lldb_command(load: KldLoad, quote: Callable[[str], str]) -> str:
    """``target modules load --file FILE SECTION ADDR...`` for a file already
    added with ``SBTarget.AddModule``."""
    pairs = " ".join(f"{quote(n)} {a:#x}" for n, a in load.sections.items())
    return f"target modules load --file {quote(load.path or '')} {pairs}"


def loaded_line(load: KldLoad) -> str:
    """What kvm-open prints for a module whose symbols it loaded."""
    return f"Loaded symbols for {load.name} at {load.address:#x} from {load.path}"


def failed_line(load: KldLoad, debugger: str, why: Any) -> str:
    """What kvm-open prints when the debugger refuses a module's file."""
    return f"warning: klds: {load.name}: {debugger} cannot load {load.path}: {why}"


def query_failed_line(why: Any) -> str:
    """What kvm-open prints when the server could not list the modules (the
    dump stays open: memory, threads and the kernel's symbols still work)."""
    return f"warning: klds: module symbols not loaded: {why}"
