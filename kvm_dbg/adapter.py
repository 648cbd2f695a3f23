"""Debugger-neutral logic of the gdb and lldb adapters.

The adapters (``plugins/gdb/kvm_gdb.py``, ``plugins/lldb/kvm_lldb.py``) hold
only debugger glue; what both need lives here and is tested without a
debugger: ``kvm-open`` and ``kvm-kld`` argument parsing, starting and
stopping the server with one-line errors, the descriptor handed out for
scripting, server queries and their answers, quoting for a debugger's
command line, the kernel file's ELF facts, and the library's unwinding step
for a debugger's frame unwinder.  Errors are :class:`AdapterError` with a
message for the user.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Type

OPEN_USAGE = "usage: kvm-open [-w] [KERNEL] CORE"
KLD_USAGE = "usage: kvm-kld [load [NAME|all]]"
NOT_OPEN = "no dump is open (use kvm-open [KERNEL] CORE)"


class AdapterError(Exception):
    """A command error: shown as one line, never as a traceback."""


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if empty)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def internal_error(e: BaseException) -> str:
    """The one line shown for an exception nobody planned for (a bug)."""
    return f"internal error: {type(e).__name__}: {one_line(e)}"


class CommandHelp(NamedTuple):
    syntax: str
    short: str
    long: str = ""


#: The help of the kvm-* commands, for both debuggers.
HELP: Dict[str, CommandHelp] = {
    "kvm-open": CommandHelp(
        "kvm-open [-w] [KERNEL] CORE", "Open a FreeBSD kernel crash dump.",
        "KERNEL defaults to the debugger's current executable.  Starts a kvm_dbg\n"
        "server process and connects the debugger to it, selects the crashed thread\n"
        "and prints the unread message buffer, the panic string and the crashed\n"
        "frame.  -w allows memory writes to the dump."),
    "kvm-close": CommandHelp("kvm-close", "Detach from the dump and stop its server."),
    "kvm-info": CommandHelp(
        "kvm-info", "Summary of the open dump: architecture, version, panic string, "
        "crashed thread."),
    "kvm-ps": CommandHelp("kvm-ps", "List the processes of the dump."),
    "kvm-dmesg": CommandHelp("kvm-dmesg", "Print the kernel message buffer."),
    "kvm-kld": CommandHelp(
        KLD_USAGE[len("usage: "):], "List the loaded kernel modules, or load their symbols.",
        "kvm-kld lists them.  kvm-kld load [NAME|all] finds each module's file as kgdb\n"
        "does (NAME.debug, NAME.symbols, NAME next to the kernel, then in the dump's\n"
        "module path) and adds its symbols at the section addresses kgdb computes\n"
        "from the module's load address.  NAME is e.g. zfs.ko or zfs."),
    "kvm-proc": CommandHelp("kvm-proc PID|PROC-ADDRESS",
                            "Select the first thread of a process."),
    "kvm-tid": CommandHelp("kvm-tid TID|THREAD-ADDRESS",
                           "Select a thread by its kernel thread id."),
}


def help_doc(name: str) -> str:
    """A command's help as one text: summary and syntax, then the details."""
    h = HELP[name]
    head = f"{h.short.rstrip('.')}: {h.syntax}."
    return f"{head}\n\n{h.long}" if h.long else head


def run_guarded(name: str, body: Callable[[], None],
                passthrough: Tuple[Type[BaseException], ...] = ()) -> Optional[str]:
    """Run a command's ``body``: the one line to show as its error, or None.
    AdapterError is the user's; anything unplanned is a bug, named in one
    line, never a traceback.  ``passthrough`` exceptions propagate."""
    try:
        body()
    except passthrough:
        raise
    except AdapterError as e:
        return f"{name}: {e}"
    except KeyboardInterrupt:
        return f"{name}: interrupted"
    except Exception as e:  # noqa: BLE001 - a bug: one line naming it, not a traceback
        return f"{name}: {internal_error(e)}"
    return None


def text_block(parts: List[str]) -> str:
    """Non-empty ``parts`` as lines of one text (each ends with a newline)."""
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)


def server_errors(server: Any) -> List[str]:
    """Internal errors the server hit since the last call (a bug answered a
    debugger packet with E01): what an adapter shows, never silently drops."""
    return [f"kvm_dbg: server {line}" for line in server.new_errors()] if server else []


def error_line(text: Optional[str], default: str) -> str:
    """A debugger's error output as one line, without its ``error:`` prefix
    (``default: failed`` when it said nothing)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    lines = [ln[len("error:"):].strip() if ln.startswith("error:") else ln for ln in lines]
    if not lines:
        return f"{default}: failed"
    if lines[0].endswith(":") and len(lines) > 1:  # "expression failed to parse:" + detail
        return f"{lines[0]} {lines[1]}"
    return lines[0]


def symbolic(pc: int, text: str) -> Optional[Tuple[str, int]]:
    """(function, start) from a debugger's ``<name+offset>`` rendering of ``pc``."""
    m = re.search(r"<([^+>]+)(?:\+(\d+))?>", text)
    return (m.group(1), pc - int(m.group(2) or 0)) if m else None


def quote(text: str) -> str:
    """``text`` as one double-quoted word of a gdb or lldb command line."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the kernel file ------------------------------------------------------------

class KernelFile(NamedTuple):
    """What an adapter needs to know of the kernel's ELF header."""

    arch: Optional[str]          # the library's name (None: not one kvm_dbg reads)
    byteorder: str

    @property
    def x86(self) -> bool:
        """gdb builds without a FreeBSD x86 OS ABI reject the server's target
        description for these: the adapter sets ``osabi none`` first."""
        return self.arch in ("amd64", "i386")


def kernel_file(path: str) -> KernelFile:
    """The kernel's ELF facts; AdapterError naming the file if it is not ELF."""
    from .elfkernel import arch_of_machine, read_ident_file
    from .errors import KvmError
    try:
        ident = read_ident_file(path)
    except KvmError as e:
        raise AdapterError(str(e)) from None
    return KernelFile(arch_of_machine(ident.machine), ident.byteorder)


# -- kvm-open -------------------------------------------------------------------

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


def require_symbols(kernel: str, symbols: Dict[str, Any], debugger: str, how: str) -> None:
    """AdapterError if the debugger found none of the server's symbols;
    ``how`` says how to load them in that debugger."""
    if not any(v is not None for v in symbols.values()):
        raise AdapterError(
            f"{kernel}: {debugger} has no symbols for this kernel (no symbol table and no "
            f"separate debug file found): load them with {how}, then retry")


def start_server(req: OpenRequest, symbols: Optional[Dict[str, Any]]) -> Any:
    """Spawn the server for REQ; a LaunchError becomes ``CORE: message``."""
    from .rsp.launch import LaunchError, spawn
    try:
        return spawn(req.kernel, req.core, symbols, writable=req.writable)
    except LaunchError as e:
        msg = str(e)
        raise AdapterError(msg if msg.startswith((req.core, req.kernel))
                           else f"{req.core}: {msg}") from None


def open_messages(text_of: Callable[[str], str]) -> List[str]:
    """What ``kvm-open`` prints once connected: the unread message buffer, the
    panic string and the dump's warnings (kernel state it could not read),
    each fetched with ``text_of(command)`` (a server query)."""
    return [text_of(cmd) for cmd in ("unread", "panic", "warnings")]


# -- the open dump ----------------------------------------------------------------

def descriptor(state: Dict[str, Any]) -> Any:
    """``kvm()`` of both adapters: a read-only ``kvm_dbg.Kvm`` on the open dump
    (``state["server"]``), opened once with the server's resolver (the
    debugger's symbols) and kept in ``state["kvm"]``."""
    server = state.get("server")
    if server is None:
        raise AdapterError(NOT_OPEN)
    if state.get("kvm") is None:
        from .rsp.dumpserver import open_dump
        symfile = os.path.join(server.workdir, "symbols.json")
        state["kvm"], _table = open_dump(server.kernel, server.core,
                                         symfile if os.path.isfile(symfile) else None)
    return state["kvm"]


def close_dump(state: Dict[str, Any]) -> None:
    """Stop ``state["server"]`` and close ``state["kvm"]``, setting both to None."""
    server, state["server"] = state.get("server"), None
    if server is not None:
        server.close()
    kvm, state["kvm"] = state.get("kvm"), None
    if kvm is not None:
        kvm.close()


def query(command: str, send: Callable[[str], str]) -> str:
    """Text of a ``qKvm`` query sent with ``send(packet) -> printed reply``."""
    from .rsp.client import QueryError, run_query
    try:
        return run_query(command, send)
    except QueryError as e:
        raise AdapterError(str(e)) from None


def no_args(args: Any) -> None:
    """AdapterError if a command that takes no arguments got some."""
    if args if isinstance(args, list) else str(args).strip():
        raise AdapterError("this command takes no arguments")


class ThreadRef(NamedTuple):
    rid: int     # the RSP thread id the debugger knows
    tid: int
    name: str


def parse_thread_reply(text: str) -> ThreadRef:
    """Decode the server's answer to ``proc X`` / ``tid X``: ``RID TID NAME``."""
    words = text.strip().split(" ", 2)
    return ThreadRef(int(words[0], 16), int(words[1]), words[2] if len(words) > 2 else "")


class UnwindModule(NamedTuple):
    """The server's answer to ``unwind-elf``: the module's path and, for each
    pc it describes, what its FDE says ("end" or "trap")."""

    path: str
    kinds: Dict[int, str]


def parse_unwind_reply(text: str) -> Optional[UnwindModule]:
    """Decode ``PATH`` then ``PC KIND`` lines; None when there is no module."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    kinds = {}
    for ln in lines[1:]:
        pc, kind = ln.split()
        kinds[int(pc, 16)] = kind
    return UnwindModule(lines[0], kinds)


# -- kernel modules -------------------------------------------------------------

def parse_kld_args(args: List[str]) -> Tuple[bool, Optional[str]]:
    """``kvm-kld [load [NAME|all]]`` -> (load?, NAME or None for all)."""
    if not args:
        return False, None
    if args[0] != "load" or len(args) > 2:
        raise AdapterError(KLD_USAGE)
    return True, args[1] if len(args) == 2 and args[1] != "all" else None


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


# -- a debugger's frame unwinder ------------------------------------------------------

class FrameStep(NamedTuple):
    """One unwinding step: the frame's id (its stack address, never below the
    callee's: kernel stacks switch) and its caller's registers."""

    stack: int
    caller: Dict[str, int]


class FrameUnwinder:
    """The library's frame-pointer and trap-frame rules
    (:func:`kvm_dbg.kstate.unwind.caller_registers`) for a debugger's frame
    unwinder (gdb's Python unwinder), which adapts registers and memory.

    ``kinds`` (:class:`UnwindModule`) are the pcs whose FDE in the unwind
    module gives the library's answer and can say more than a Python
    unwinder: "outermost" for the end of a backtrace, "signal frame" for a
    trap frame (kgdb's display).  :meth:`step` answers None there: the
    debugger's DWARF unwinder takes the frame.
    """

    def __init__(self, arch: str, byteorder: str, symbols: Dict[str, Optional[int]],
                 register_names: Dict[str, str]) -> None:
        from .kstate import archdata
        info = archdata.arch_info(arch)
        if info is None:
            raise AdapterError(f"no unwinding rules for architecture {arch!r}")
        self.info = info
        self.byteorder = byteorder
        self.symbols = dict(symbols)
        self.names = register_names          # library name -> debugger's
        self.kinds: Dict[int, str] = {}
        self.mask = (1 << (info.width * 8)) - 1
        self._trap_key: Optional[str] = None
        self._floors: Dict[tuple, int] = {}
        self._facts: Dict[Any, Any] = {}
        self._generation: Any = None

    @property
    def wanted(self) -> Tuple[str, ...]:
        """The registers a step needs (library names)."""
        return tuple(r for r in (self.info.pc, self.info.sp, self.info.fp) if r)

    def cached(self, what: str, pc: int, compute: Callable[[int], Any],
               generation: Any = None) -> Any:
        """``compute(pc)``, remembered per pc (threads share pcs) until
        ``generation`` changes (the debugger's symbol files did)."""
        if generation != self._generation or len(self._facts) > 100000:
            self._facts.clear()
            self._generation = generation
        key = (what, pc)
        if key not in self._facts:
            self._facts[key] = compute(pc)
        return self._facts[key]

    def trap_key(self, read: Callable[[int, int], Optional[bytes]]) -> str:
        """The trapframe layout of this kernel (from ``osreldate``), once."""
        if self._trap_key is None:
            from .kstate import archdata
            addr = self.symbols.get("osreldate")
            raw = read(addr, 4) if addr else None
            rel = int.from_bytes(raw, self.byteorder) if raw else None
            self._trap_key = archdata.trap_layout_key(
                self.info, archdata.pcb_layout_key(self.info, rel))
        return self._trap_key

    def step(self, regs: Dict[str, int], depth: int,
             read: Callable[[int, int], Optional[bytes]],
             function_at: Callable[[int], Optional[Tuple[str, int]]]) -> Optional[FrameStep]:
        """The caller of the frame with registers ``regs`` at ``depth``, or None
        when the unwind module's FDE at its pc answers (see the class).

        Where the chain ends without such an FDE, the frame itself comes
        back: gdb stops there ("previous frame identical to this frame")."""
        from .kstate.unwind import caller_registers
        info = self.info
        pc = regs[info.pc]
        caller = caller_registers(info.name, regs, read, depth=depth, byteorder=self.byteorder,
                                  function_at=function_at, lookup=self.symbols.get,
                                  trap_key=self.trap_key(read))
        kind = self.kinds.get(pc)
        if (caller is None and kind == "end") or (caller is not None and kind == "trap"):
            return None
        floors = self._floors
        floor = floors.get(tuple(sorted(regs.items())), regs.get(info.sp, 0))
        if caller is None:
            return FrameStep(floor, dict(regs))
        stack = max(caller.get(info.sp, 0), floor)
        if len(floors) > 100000:
            floors.clear()
        keys = (info.pc, info.sp, info.fp)
        floors[tuple(sorted((k, v) for k, v in caller.items() if k in keys))] = stack
        return FrameStep(stack, caller)


def register_names(arch: str) -> Dict[str, str]:
    """Library register names (and their aliases) -> the names the server's
    target description gives them (what the debugger calls them)."""
    from .rsp.regs import regset_for
    names: Dict[str, str] = {}
    for r in regset_for(arch).regs:
        for n in (r.name,) + tuple(r.aliases):
            names.setdefault(n, r.name)
    return names
