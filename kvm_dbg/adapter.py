"""Debugger-neutral helpers for the gdb and lldb adapters.

The adapters hold only debugger glue; what both need lives here: parsing
``kvm-open``'s arguments, starting the server with one-line errors, the
descriptor handed out for scripting, and decoding ``kvm-proc``/``kvm-tid``
answers.  Errors are :class:`AdapterError` with a message for the user.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional

OPEN_USAGE = "usage: kvm-open [-w] [KERNEL] CORE"
NOT_OPEN = "no dump is open (use kvm-open [KERNEL] CORE)"


class AdapterError(Exception):
    """A command error: shown as one line, never as a traceback."""


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if empty)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


class OpenRequest(NamedTuple):
    kernel: str
    core: str
    writable: bool


def parse_open_args(args: List[str], default_kernel: Optional[str],
                    load_hint: str = "load the kernel first") -> OpenRequest:
    """``[-w] [KERNEL] CORE`` -> OpenRequest (KERNEL defaults to ``default_kernel``)."""
    writable = False
    if args and args[0] in ("-w", "--writable"):
        writable, args = True, args[1:]
    if len(args) == 1:
        if not default_kernel:
            raise AdapterError(f"{args[0]}: no kernel: use kvm-open KERNEL CORE or {load_hint}")
        kernel, core = default_kernel, args[0]
    elif len(args) == 2:
        kernel, core = args
    else:
        raise AdapterError(OPEN_USAGE)
    return OpenRequest(os.path.expanduser(kernel), os.path.expanduser(core), writable)


def check_files(req: OpenRequest) -> None:
    """AdapterError unless KERNEL and CORE are existing files."""
    for path in (req.kernel, req.core):
        if not os.path.isfile(path):
            raise AdapterError(f"{path}: No such file or directory")


def already_open(server: Any, req: OpenRequest) -> None:
    """AdapterError if a dump is open already (one per debugger session)."""
    if server is not None:
        raise AdapterError(f"{req.core}: a dump is already open ({server.core}); "
                           "kvm-close first")


def lookup_symbols(names: List[str], lookup: Callable[[str], Optional[int]]) -> Dict[str, Any]:
    """``{name: address or None}`` using the debugger's ``lookup``."""
    table: Dict[str, Any] = {}
    for name in names:
        try:
            table[name] = lookup(name)
        except Exception:  # a debugger lookup failing means "not found"
            table[name] = None
    return table


def start_server(req: OpenRequest, symbols: Optional[Dict[str, Any]]) -> Any:
    """Spawn the server for REQ; a LaunchError becomes ``CORE: message``."""
    from .rsp.launch import LaunchError, spawn
    try:
        return spawn(req.kernel, req.core, symbols, writable=req.writable)
    except LaunchError as e:
        msg = str(e)
        raise AdapterError(msg if msg.startswith((req.core, req.kernel))
                           else f"{req.core}: {msg}") from None


def open_descriptor(server: Any) -> Any:
    """A read-only ``kvm_dbg.Kvm`` on the server's dump, with the same resolver."""
    from .rsp import open_dump
    symfile = os.path.join(server.workdir, "symbols.json")
    kvm, _table = open_dump(server.kernel, server.core,
                            symfile if os.path.isfile(symfile) else None)
    return kvm


def query(command: str, send: Callable[[str], str]) -> str:
    """Text of a ``qKvm`` query sent with ``send(packet) -> printed reply``."""
    from .rsp.client import QueryError, run_query
    try:
        return run_query(command, send)
    except QueryError as e:
        raise AdapterError(str(e)) from None


def kerndisp(text: str) -> int:
    """The server's ``kerndisp`` answer as a number (0 if absent or unreadable)."""
    try:
        return int(text.strip() or "0", 0)
    except ValueError:
        raise AdapterError(f"unexpected kerndisp answer: {text.strip()!r}") from None


class ThreadRef(NamedTuple):
    rid: int     # the RSP thread id the debugger knows
    tid: int
    name: str


def parse_thread_reply(text: str) -> ThreadRef:
    """Decode the server's answer to ``proc X`` / ``tid X``: ``RID TID NAME``."""
    words = text.strip().split(" ", 2)
    return ThreadRef(int(words[0], 16), int(words[1]), words[2] if len(words) > 2 else "")


# -- kernel modules -------------------------------------------------------------

class KldLoad(NamedTuple):
    """A module's symbol file and the load address of each of its sections."""

    name: str
    address: int                  # the kld's base address
    path: Optional[str]           # None when ``error`` is set
    sections: Dict[str, int]      # section-table order, ``.text`` among them
    error: Optional[str] = None


def _kld_matches(kld_name: str, wanted: str) -> bool:
    base = os.path.basename(wanted)
    return kld_name in (base, base + ".ko")


def kld_loads(kvm: Any, name: Optional[str] = None) -> List[KldLoad]:
    """What ``add-symbol-file`` / ``target modules load`` need for the dump's
    modules, located and relocated as kgdb does (threads.md §8).

    NAME (``zfs.ko``, ``zfs`` or a path) picks one module: AdapterError if it
    is not loaded or its file is missing or unusable.  Without NAME, such a
    module comes back with ``error`` set.
    """
    from .errors import KvmError
    from .kstate.klds import kld_sections, klds
    mods = klds(kvm)
    if name is not None:
        mods = [k for k in mods if _kld_matches(k.name, name)]
        if not mods:
            raise AdapterError(f"{name}: Unable to find kld in kernel")
    out = []
    for k in mods:
        try:
            path, sections = kld_sections(kvm, k)
        except KvmError as e:
            if name is not None:
                raise AdapterError(one_line(e)) from None
            out.append(KldLoad(k.name, k.address, None, {}, one_line(e)))
            continue
        out.append(KldLoad(k.name, k.address, path, sections))
    return out


def close_dump(state: Dict[str, Any]) -> None:
    """Stop ``state["server"]`` and close ``state["kvm"]``, setting both to None."""
    server, state["server"] = state.get("server"), None
    if server is not None:
        server.close()
    kvm, state["kvm"] = state.get("kvm"), None
    if kvm is not None:
        try:
            kvm.close()
        except Exception:  # closing a descriptor must not stop the shutdown
            pass
