"""Debugger-neutral helpers for the gdb and lldb adapters.

The adapters hold only debugger glue; what both need lives here: parsing
``kvm-open``'s arguments, starting the server with one-line errors, the
descriptor handed out for scripting, and decoding ``kvm-proc``/``kvm-tid``
answers.  Errors are :class:`AdapterError` with a message for the user.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Type

OPEN_USAGE = ("usage: kvm-open [-w] [--key FILE] [--dump-key FILE] [--cache-dir DIR] "
              "[--sysroot DIR] [-n N [--crashdir DIR]] [KERNEL] CORE")
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
    key: Optional[str] = None          # RSA private key of an encrypted dump
    dumpkey: Optional[str] = None      # its key.N when not beside it
    cache_dir: Optional[str] = None    # where decoded copies of the dump go
    sysroot: Optional[str] = None      # the crashed machine's root (modules, kernels)

    def open_options(self) -> Dict[str, Optional[str]]:
        """Keywords for ``kvm_dbg.open``."""
        return {"key": self.key, "dumpkey": self.dumpkey, "cache_dir": self.cache_dir,
                "sysroot": self.sysroot}

    def server_args(self) -> List[str]:
        """The same options on the server's command line (python -m kvm_dbg.rsp)."""
        out: List[str] = []
        for flag, value in (("--key", self.key), ("--dump-key", self.dumpkey),
                            ("--cache-dir", self.cache_dir), ("--sysroot", self.sysroot)):
            if value:
                out += [flag, value]
        return out


_VALUE_FLAGS = {"--key": "key", "--dump-key": "dumpkey", "--cache-dir": "cache_dir",
                "--sysroot": "sysroot", "-n": "n", "--crashdir": "crashdir"}


def parse_open_args(args: List[str], default_kernel: Optional[str],
                    load_hint: str = "load the kernel first") -> OpenRequest:
    """``[-w] [--key FILE] [--dump-key FILE] [--cache-dir DIR] [--sysroot DIR]
    [-n N [--crashdir DIR]] [KERNEL] CORE`` -> OpenRequest.

    KERNEL defaults to ``default_kernel`` (the one the debugger has loaded);
    with ``-n N`` the core is dump N of the crash directory (default
    /var/crash) and, failing both, its kernel is found as crashinfo does
    (kvm_dbg.crashdir; the choice is said on stderr)."""
    writable = False
    opts: Dict[str, Optional[str]] = {}
    rest: List[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-w", "--writable"):
            writable = True
        elif a in _VALUE_FLAGS:
            if i + 1 >= len(args):
                raise AdapterError(f"{a} needs a value; {OPEN_USAGE}")
            opts[_VALUE_FLAGS[a]] = os.path.expanduser(args[i + 1])
            i += 1
        elif a.startswith("-") and len(a) > 1:
            raise AdapterError(f"unknown option {a}; {OPEN_USAGE}")
        else:
            rest.append(a)
        i += 1
    n = opts.pop("n", None)
    crashdir_path = opts.pop("crashdir", None) or "/var/crash"
    if n is not None:
        if not n.isdigit() or len(rest) > 1:
            raise AdapterError(OPEN_USAGE)
        kernel, core = _crashdir_pair(int(n), crashdir_path, rest, default_kernel,
                                      opts.get("sysroot"))
    elif len(rest) == 1:
        if not default_kernel:
            raise AdapterError(f"{rest[0]}: no kernel: use kvm-open KERNEL CORE or {load_hint}")
        kernel, core = default_kernel, rest[0]
    elif len(rest) == 2:
        kernel, core = rest
    else:
        raise AdapterError(OPEN_USAGE)
    return OpenRequest(os.path.expanduser(kernel), os.path.expanduser(core), writable,
                       opts.get("key"), opts.get("dumpkey"), opts.get("cache_dir"),
                       opts.get("sysroot"))


def _crashdir_pair(n: int, directory: str, rest: List[str], default_kernel: Optional[str],
                   sysroot: Optional[str]):
    """(kernel, core) of dump N in ``directory``."""
    import sys

    from . import crashdir
    from .errors import KvmError
    try:
        dump = crashdir.find_dump(directory, n)
    except KvmError as e:
        raise AdapterError(one_line(e)) from None
    if rest:
        return rest[0], dump.core
    if default_kernel:
        return default_kernel, dump.core
    choice = crashdir.find_kernel(directory, n, sysroot or "/", dump.info)
    if choice.path is None:
        raise AdapterError(f"{dump.core}: {one_line(KvmError(choice.reason))}")
    sys.stderr.write(f"kvm-open: {choice.explain()}\n")
    return choice.path, dump.core


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


def lookup_symbols(names: List[str], lookup: Callable[[str], Optional[int]],
                   not_found: Tuple[Type[BaseException], ...] = ()) -> Dict[str, Any]:
    """``{name: address or None}`` using the debugger's ``lookup``; the
    exceptions in ``not_found`` (gdb's ``gdb.error``) mean "no such symbol"."""
    table: Dict[str, Any] = {}
    for name in names:
        try:
            table[name] = lookup(name)
        except not_found:
            table[name] = None
    return table


def prepare_core(req: OpenRequest) -> Any:
    """Decode a compressed or encrypted core here, in the debugger (whose
    terminal shows the progress bar), so the server finds the cached copy;
    a textdump is refused (it has no memory)."""
    from .dumpfile import TEXTDUMP_NO_MEMORY, prepare
    from .errors import KvmError
    try:
        src = prepare(req.core, key=req.key, dumpkey=req.dumpkey, cache_dir=req.cache_dir)
    except KvmError as e:
        raise AdapterError(one_line(e)) from None
    if src.textdump:
        raise AdapterError(f"{req.core}: {TEXTDUMP_NO_MEMORY}")
    return src


def start_server(req: OpenRequest, symbols: Optional[Dict[str, Any]]) -> Any:
    """Spawn the server for REQ; a LaunchError becomes ``CORE: message``."""
    from .rsp.launch import LaunchError, spawn
    prepare_core(req)
    try:
        server = spawn(req.kernel, req.core, symbols, writable=req.writable,
                       extra_args=req.server_args())
    except LaunchError as e:
        msg = str(e)
        raise AdapterError(msg if msg.startswith((req.core, req.kernel))
                           else f"{req.core}: {msg}") from None
    server.open_options = req.open_options()     # for open_descriptor
    return server


def open_descriptor(server: Any) -> Any:
    """A read-only ``kvm_dbg.Kvm`` on the server's dump, with the same resolver."""
    from .rsp import open_dump
    symfile = os.path.join(server.workdir, "symbols.json")
    kvm, _table = open_dump(server.kernel, server.core,
                            symfile if os.path.isfile(symfile) else None,
                            open_options=getattr(server, "open_options", None))
    return kvm


def query(command: str, send: Callable[[str], str]) -> str:
    """Text of a ``qKvm`` query sent with ``send(packet) -> printed reply``."""
    from .rsp.client import QueryError, run_query
    try:
        return run_query(command, send)
    except QueryError as e:
        raise AdapterError(str(e)) from None


def kerndisp(text: str) -> int:
    """The server's ``kerndisp`` answer as a number."""
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


def kld_loads(kvm: Any, name: Optional[str] = None,
              sysroot: Optional[str] = None) -> List[KldLoad]:
    """What ``add-symbol-file`` / ``target modules load`` need for the dump's
    modules, located and relocated as kgdb does (threads.md §8;
    ``kvm_dbg.kstate.klds.module_files``, under ``sysroot`` or the one the dump
    was opened with).

    NAME (``zfs.ko``, ``zfs`` or a path) picks one module: AdapterError if it
    is not loaded or its file is missing or unusable.  Without NAME, such a
    module comes back with ``error`` set.
    """
    from .kstate.klds import module_files
    mods = module_files(kvm, sysroot)
    if name is not None:
        mods = [m for m in mods if _kld_matches(m.name, name)]
        if not mods:
            raise AdapterError(f"{name}: Unable to find kld in kernel")
        if mods[0].error:
            raise AdapterError(mods[0].error.splitlines()[0])
    return [kld_load(m) for m in mods]


def kld_load(m: Any) -> KldLoad:
    """The KldLoad of a ``kvm_dbg.kstate.klds.ModuleFile``."""
    return KldLoad(m.name, m.address, None if m.error else m.file, m.sections,
                   m.error.splitlines()[0] if m.error else None)


def close_dump(state: Dict[str, Any]) -> None:
    """Stop ``state["server"]`` and close ``state["kvm"]``, setting both to None."""
    server, state["server"] = state.get("server"), None
    if server is not None:
        server.close()
    kvm, state["kvm"] = state.get("kvm"), None
    if kvm is not None:
        kvm.close()


def open_messages(text_of: Callable[[str], str]) -> List[str]:
    """What ``kvm-open`` prints once connected: the unread message buffer, the
    panic string and the dump's warnings (kernel state it could not read),
    each fetched with ``text_of(command)`` (a server query)."""
    return [text_of(cmd) for cmd in ("unread", "panic", "warnings")]


def internal_error(e: BaseException) -> str:
    """The one line shown for an exception nobody planned for (a bug)."""
    return f"internal error: {type(e).__name__}: {one_line(e)}"
