"""Text answers to ``monitor`` (qRcmd) and ``qKvm`` queries: ps, dmesg, info, kld...

Tables come from :mod:`kvm_dbg.report` (the CLI prints the same ones).  Bad
data in the dump shows as warnings (``info``, ``warnings``); a dump that
cannot be read somewhere gives a :class:`MonitorError` with the reason.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List

from .. import report
from ..errors import KvmError
from .target import Target

HELP = """kvm_dbg monitor commands:
  info          dump summary: architecture, kernel, version, panic string, warnings
  warnings      what the dump could not give, and why (empty when all is well)
  ps            processes (pid, ppid, state, threads, comm)
  threads       threads (tid, pid, cpu, name)
  dmesg         the whole kernel message buffer
  unread        the unread portion of the message buffer (as kgdb prints it)
  panic         the panic string
  kerndisp      how far the kernel runs from its link address (kvm_kerndisp)
  kld           loaded kernel modules, with the symbol file found for each
  kld-loads     the same as JSON with each file's section addresses (what the
                debuggers load on kvm-open; kvm_dbg.modload)
  crashinfo     crashinfo(8)'s report (core.txt); drgn in the server's Python
                gives the vmstat/pstat/config/ddb sections
  proc PID|ADDR the thread id of a process's first thread
  tid TID|ADDR  the thread id of a thread (checks it exists)
  unwind-elf gdb | unwind-elf lldb UUID
                write the debugger's unwind module (kvm_dbg.unwindinfo; for
                lldb, a stand-in for the kernel with the UUID lldb gave its
                symbol file): prints its path (in a directory private to the
                server), then PC KIND for each pc it describes; nothing when
                there is nothing to describe
  help          this text
"""


class MonitorError(Exception):
    """A command failed; the message is printed to the user as is."""


def _reading(what: str, fn: Callable[[], Any]) -> Any:
    """``fn()``; a dump that cannot be read there becomes a MonitorError."""
    try:
        return fn()
    except KvmError as e:
        raise MonitorError(f"cannot {what}: {e}") from None


def panic_string(target: Target) -> str:
    return target.kvm.panic_info().panicstr or ""


def _lines(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def cmd_info(target: Target, _args: List[str]) -> str:
    kvm = target.kvm
    lines = [f"architecture: {kvm.arch} ({target.byteorder}-endian, {target.ptrsize * 8}-bit)",
             f"kernel: {kvm.kernel_path}", f"core: {kvm.core_path}", f"format: {kvm.format}"]
    pinfo = kvm.panic_info()
    for label in ("version", "osrelease", "osreldate", "hostname"):
        v = getattr(pinfo, label)
        if v:
            lines.append(f"{label}: {str(v).strip()}")
    lines.append(f"panic: {pinfo.panicstr}" if pinfo.panicstr else "panic: (no panic string)")
    if target.placeholder:
        lines.append("threads: none found in the dump (memory only)")
    else:
        crashed = target.current
        lines.append(f"threads: {len(target.threads)}; crashed thread: {crashed.tid} "
                     f"{crashed.name}")
    return _lines("\n".join(lines + [cmd_warnings(target, [])]).rstrip("\n"))


def cmd_warnings(target: Target, _args: List[str]) -> str:
    """Every warning so far (kernel state the dump could not give), then any
    internal errors the server hit while answering the debugger."""
    items = report.warnings(target.kvm)
    items += [f"server error: {e}" for e in target.errors]
    return _lines(report.text_warnings(items))


def cmd_ps(target: Target, _args: List[str]) -> str:
    rows = _reading("list processes", lambda: report.procs(target.kvm))["procs"]
    return _lines(report.text_procs(rows))


def cmd_threads(target: Target, _args: List[str]) -> str:
    rows = report.threads(target.kvm, rows=target.kthreads)["threads"]
    return _lines(report.text_threads(rows))


def cmd_dmesg(target: Target, _args: List[str]) -> str:
    return _lines(_reading("read the message buffer", target.kvm.msgbuf).text)


def cmd_unread(target: Target, _args: List[str]) -> str:
    text = _reading("read the message buffer", target.kvm.msgbuf).unread
    if not text:
        return ""
    return f"\nUnread portion of the kernel message buffer:\n{_lines(text)}\n"


def cmd_kerndisp(target: Target, _args: List[str]) -> str:
    """``0x...``: the debuggers relocate the kernel's symbols by it (kgdb does)."""
    return f"{target.kerndisp:#x}\n"


def cmd_panic(target: Target, _args: List[str]) -> str:
    p = panic_string(target)
    return f"panic: {p}\n" if p else ""


def cmd_kld(target: Target, _args: List[str]) -> str:
    rows = _reading("list kernel modules", lambda: report.klds(target.kvm))["klds"]
    return _lines(report.text_klds(rows))


def cmd_kld_loads(target: Target, _args: List[str]) -> str:
    """kvm_dbg.modload's JSON: each module's file and section addresses, from
    the descriptor's module table (a module without a usable file is one of
    the dump's warnings)."""
    from ..adapter import kld_load
    from ..modload import encode
    mods = _reading("list kernel modules", target.kvm.modules)
    return encode([kld_load(m) for m in mods])


def cmd_crashinfo(target: Target, args: List[str]) -> str:
    """crashinfo's core.txt, made in this server (kvm_dbg.crashinfo)."""
    import sys

    from ..crashinfo import render, report
    from ..errors import KvmError
    if args:
        raise MonitorError("usage: crashinfo")
    hint = (f"the kvm_dbg server runs on {sys.executable}; set KVM_DBG_PYTHON to a "
            "Python with kvm-dbg[drgn] before kvm-open")
    try:
        return render(report(target.kvm, drgn_hint=hint))
    except KvmError as e:
        raise MonitorError(f"crashinfo: {e}") from None


def _kernstart(target: Target) -> int:
    return 1 << (target.ptrsize * 8 - 1) if target.ptrsize == 8 else 0xC0000000


def _number(args: List[str], usage: str) -> int:
    if len(args) != 1:
        raise MonitorError(f"usage: {usage}")
    try:
        return int(args[0], 0)
    except ValueError:
        raise MonitorError(f"usage: {usage}") from None


def _select(target: Target, args: List[str], kind: str, attr: str,
            by_number: Callable[[int], Any]) -> str:
    """kgdb's ``proc``/``tid``: a number, or a kernel address of the structure;
    answers ``RID TID NAME`` of the thread to switch to."""
    v = _number(args, f"{kind} {'PID' if kind == 'proc' else 'TID'}|ADDRESS")
    if v >= _kernstart(target):
        t = next((t for t in target.threads
                  if t.obj is not None and getattr(t.obj, attr) == v), None)
        what = "proc" if kind == "proc" else "thread"
        if t is None:
            raise MonitorError(f"invalid {what} address")
    else:
        t = by_number(v)
        if t is None:
            raise MonitorError("invalid pid" if kind == "proc" else "invalid tid")
    return f"{t.rid:x} {t.tid} {t.name}\n"


def cmd_proc(target: Target, args: List[str]) -> str:
    return _select(target, args, "proc", "proc_addr", target.find_pid)


def cmd_tid(target: Target, args: List[str]) -> str:
    return _select(target, args, "tid", "td_addr", target.find_tid)


def cmd_unwind_elf(target: Target, args: List[str]) -> str:
    """Write a debugger's unwind module (:mod:`kvm_dbg.unwindinfo`) into a
    directory private to this server (a client never chooses where the server
    writes); answer its path, then ``PC KIND`` for each pc it describes, or
    nothing when there is nothing to describe."""
    from ..unwindinfo import write_unwind_elf
    usage = "usage: unwind-elf gdb | unwind-elf lldb UUID"
    if args[:1] == ["gdb"] and len(args) == 1:
        debugger, uuid = "gdb", b""
    elif args[:1] == ["lldb"] and len(args) == 2:
        debugger = "lldb"
        try:
            uuid = bytes.fromhex(args[1].replace("-", ""))
        except ValueError:
            raise MonitorError(usage) from None
        if not uuid:
            raise MonitorError(usage)
    else:
        raise MonitorError(usage)
    base = os.path.basename(target.kvm.kernel_path or "kernel")
    # lldb names frames after the module that holds them: the kernel's name
    name = base if debugger == "lldb" else base + ".unwind"
    directory = os.path.join(_private_dir(), debugger)
    path = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
        kinds = write_unwind_elf(target.kvm, path, debugger, uuid)
    except OSError as e:
        raise MonitorError(f"{path}: {e.strerror or e}") from None
    if not kinds:
        return ""
    return path + "\n" + "".join(f"{pc:x} {kind}\n" for pc, kind in sorted(kinds.items()))


_PRIVATE: List[str] = []


def _private_dir() -> str:
    """A 0700 temporary directory owned by this server, removed at exit."""
    if not _PRIVATE:
        import atexit
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix="kvm_dbg-srv-")
        atexit.register(shutil.rmtree, d, True)
        _PRIVATE.append(d)
    return _PRIVATE[0]


COMMANDS: Dict[str, Callable[[Target, List[str]], str]] = {
    "info": cmd_info, "warnings": cmd_warnings, "ps": cmd_ps, "threads": cmd_threads,
    "dmesg": cmd_dmesg, "unread": cmd_unread, "panic": cmd_panic, "kerndisp": cmd_kerndisp,
    "kld": cmd_kld, "kld-loads": cmd_kld_loads, "proc": cmd_proc, "tid": cmd_tid,
    "crashinfo": cmd_crashinfo, "unwind-elf": cmd_unwind_elf, "help": lambda _t, _a: HELP,
}


def run(target: Target, line: str) -> str:
    """Run one command line; raises MonitorError with a one-line message."""
    words = line.split()
    if not words:
        return HELP
    fn = COMMANDS.get(words[0])
    if fn is None:
        raise MonitorError(f"unknown command {words[0]!r}; try 'help'")
    return fn(target, words[1:])
