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

OPEN_USAGE = ("usage: kvm-open [-w] [--key FILE] [--dump-key FILE] [--cache-dir DIR] "
              "[--sysroot DIR] [-n N [--crashdir DIR]] [KERNEL] CORE")
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
        OPEN_USAGE[len("usage: "):], "Open a FreeBSD kernel crash dump.",
        "KERNEL defaults to the debugger's current executable.  Starts a kvm_dbg\n"
        "server process and connects the debugger to it, selects the crashed thread\n"
        "and prints the unread message buffer, the panic string and the crashed\n"
        "frame.  -w allows memory writes to the dump.  --key/--dump-key open an\n"
        "encrypted dump, --cache-dir says where decoded copies go, --sysroot is the\n"
        "crashed machine's root (kernel modules); -n N opens dump N of --crashdir\n"
        "(default /var/crash) and finds its kernel as crashinfo does."),
    "kvm-close": CommandHelp("kvm-close", "Detach from the dump and stop its server."),
    "kvm-info": CommandHelp(
        "kvm-info", "Summary of the open dump: architecture, version, panic string, "
        "crashed thread."),
    "kvm-ps": CommandHelp("kvm-ps", "List the processes of the dump."),
    "kvm-dmesg": CommandHelp("kvm-dmesg", "Print the kernel message buffer."),
    "kvm-crashinfo": CommandHelp(
        "kvm-crashinfo", "Print crashinfo(8)'s report of the dump.",
        "The same report as kvm-dbg crashinfo (docs/crashinfo.md), made by the server\n"
        "process; drgn in the server's Python gives its vmstat/pstat/config sections."),
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

    #: the library's name of its register set and unwinding rules
    #: (:func:`kvm_dbg.kstate.archdata.arch_info`: 64-bit MIPS is ``mips64``);
    #: None: not an architecture kvm_dbg reads
    arch: Optional[str]
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
    from .kstate.archdata import arch_info
    try:
        ident = read_ident_file(path)
    except KvmError as e:
        raise AdapterError(str(e)) from None
    arch = arch_of_machine(ident.machine)
    info = arch_info(arch, ident.elfclass // 8) if arch else None
    return KernelFile(info.name if info else arch, ident.byteorder)


# -- kvm-open -------------------------------------------------------------------

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
                                         symfile if os.path.isfile(symfile) else None,
                                         open_options=getattr(server, "open_options", None))
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


def kerndisp(text: str) -> int:
    """The server's ``kerndisp`` answer as a number."""
    try:
        return int(text.strip() or "0", 0)
    except ValueError:
        raise AdapterError(f"unexpected kerndisp answer: {text.strip()!r}") from None


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
        """The registers a step needs (library names; arm/MIPS: the link
        register too, the caller of a PCB inside savectx)."""
        return self.info.unwind_registers

    def function_at(self, pc: int, render: Callable[[int], str]) -> Optional[Tuple[str, int]]:
        """(function, start) of ``pc`` from ``render(address)``, the
        debugger's ``<name+offset>`` for an address as it holds them (32-bit
        MIPS: sign-extended)."""
        hit = symbolic(pc, render(self.info.debugger_address(pc)))
        return hit and (hit[0], hit[1] & self.mask)

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
    """Library register names (and their aliases) -> the names gdb gives
    them (the server's target description's, or gdb's own where it renames
    them: MIPS r29 is ``sp``)."""
    from .rsp.regs import regset_for
    rs = regset_for(arch)
    names: Dict[str, str] = {}
    for r in rs.regs:
        for n in (r.name,) + tuple(r.aliases):
            names.setdefault(n, rs.user_name(r))
    return names
