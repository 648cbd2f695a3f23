"""Text answers to ``monitor`` (qRcmd) and ``qKvm`` queries: ps, dmesg, info, kld...

The output mimics kgdb/ps where a convention exists.  Adapters (gdb, lldb)
print it or parse it; the library objects are read defensively because
the kernel-state layer may lack fields on old kernels.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List

from .target import Target

HELP = """kvm_dbg monitor commands:
  info          dump summary: architecture, kernel, version, panic string
  ps            processes (pid, ppid, state, threads, comm)
  threads       threads (tid, pid, cpu, name)
  dmesg         the whole kernel message buffer
  unread        the unread portion of the message buffer (as kgdb prints it)
  panic         the panic string
  kerndisp      how far the kernel runs from its link address (kvm_kerndisp)
  kld           loaded kernel modules
  proc PID|ADDR the thread id of a process's first thread
  tid TID|ADDR  the thread id of a thread (checks it exists)
  unwind-elf [LO-HI]...
                write the unwind module (kvm_dbg.unwindinfo) for the pcs of all
                threads outside the hex address ranges; prints how many pcs
                and the file's path (in a directory private to the server)
  help          this text
"""


class MonitorError(Exception):
    """A command failed; the message is printed to the user as is."""


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return v() if callable(v) and not isinstance(v, type) else v
    return default


def _hex(v: Any) -> str:
    return f"0x{v:x}" if isinstance(v, int) else str(v)


def panic_string(target: Target) -> str:
    try:
        info = target.kvm.panic_info()
    except Exception:
        return ""
    if info is None:
        return ""
    if isinstance(info, (str, bytes)):
        return info.decode(errors="replace") if isinstance(info, bytes) else info
    return str(_get(info, "panicstr", "message", "text", default="") or "")


def _msgbuf(target: Target) -> Any:
    try:
        return target.kvm.msgbuf()
    except Exception as e:
        raise MonitorError(f"cannot read the message buffer: {e}") from None


def cmd_info(target: Target, _args: List[str]) -> str:
    kvm = target.kvm
    lines = [f"architecture: {kvm.arch} ({target.byteorder}-endian, {target.ptrsize * 8}-bit)"]
    for label, attr in (("kernel", "kernel_path"), ("core", "core_path"), ("format", "format")):
        v = getattr(kvm, attr, None)
        if v:
            lines.append(f"{label}: {v}")
    try:
        pinfo = kvm.panic_info()
    except Exception:
        pinfo = None
    if pinfo is not None and not isinstance(pinfo, (str, bytes)):
        for label in ("version", "osrelease", "osreldate", "hostname"):
            v = _get(pinfo, label)
            if v:
                lines.append(f"{label}: {str(v).strip()}")
        if _get(pinfo, "version_mismatch"):
            lines.append("warning: the kernel file's version differs from the dump's")
    p = panic_string(target)
    lines.append(f"panic: {p}" if p else "panic: (no panic string)")
    crashed = target.current
    lines.append(f"threads: {len(target.threads)}; crashed thread: {crashed.tid} {crashed.name}")
    return "\n".join(lines) + "\n"


def cmd_ps(target: Target, _args: List[str]) -> str:
    try:
        procs = list(target.kvm.procs())
    except Exception as e:
        raise MonitorError(f"cannot list processes: {e}") from None
    out = [f"{'PID':>6} {'PPID':>6} {'STATE':<10} {'THR':>4} {'ADDRESS':>18}  COMM"]
    for p in procs:
        nthr = _get(p, "nthreads", "numthreads")
        if nthr is None:
            thr = _get(p, "threads")
            nthr = len(thr) if isinstance(thr, (list, tuple)) else ""
        out.append(f"{_get(p, 'pid', default='?'):>6} {_get(p, 'ppid', default='-'):>6} "
                   f"{str(_get(p, 'state', default='-')):<10} {nthr:>4} "
                   f"{_hex(_get(p, 'address', 'addr', 'paddr', default='-')):>18}  "
                   f"{_get(p, 'comm', 'name', default='?')}")
    return "\n".join(out) + "\n"


def cmd_threads(target: Target, _args: List[str]) -> str:
    out = [f"{'TID':>8} {'PID':>6} {'CPU':>4}  NAME"]
    for t in target.threads:
        cpu = "-" if t.oncpu < 0 else str(t.oncpu)
        out.append(f"{t.tid:>8} {'' if t.pid is None else t.pid:>6} {cpu:>4}  {t.name}")
    return "\n".join(out) + "\n"


def cmd_dmesg(target: Target, _args: List[str]) -> str:
    text = _get(_msgbuf(target), "text", default="") or ""
    return text if not text or text.endswith("\n") else text + "\n"


def cmd_unread(target: Target, _args: List[str]) -> str:
    text = _get(_msgbuf(target), "unread", default="") or ""
    if not text:
        return ""
    if not text.endswith("\n"):
        text += "\n"
    return f"\nUnread portion of the kernel message buffer:\n{text}\n"


def cmd_kerndisp(target: Target, _args: List[str]) -> str:
    """``0x...``: the debuggers relocate the kernel's symbols by it (kgdb does)."""
    return f"{target.kerndisp:#x}\n"


def cmd_panic(target: Target, _args: List[str]) -> str:
    p = panic_string(target)
    return f"panic: {p}\n" if p else ""


def cmd_kld(target: Target, _args: List[str]) -> str:
    try:
        klds = list(target.kvm.klds())
    except Exception as e:
        raise MonitorError(f"cannot list kernel modules: {e}") from None
    out = [f"{'ADDRESS':>18} {'SIZE':>10}  NAME  PATH"]
    for k in klds:
        size = _get(k, "size", default="")
        name = _get(k, "name", "filename", default="?")
        out.append(f"{_hex(_get(k, 'address', 'addr', default='-')):>18} "
                   f"{_hex(size) if size != '' else '':>10}  {name}"
                   f"  {_get(k, 'path', 'pathname', default='')}")
    return "\n".join(out) + "\n"


def _kernstart(target: Target) -> int:
    return 1 << (target.ptrsize * 8 - 1) if target.ptrsize == 8 else 0xC0000000


def _number(args: List[str], usage: str) -> int:
    if len(args) != 1:
        raise MonitorError(f"usage: {usage}")
    try:
        return int(args[0], 0)
    except ValueError:
        raise MonitorError(f"usage: {usage}") from None


def _select(target: Target, args: List[str], kind: str, attrs: tuple,
            by_number: Callable[[int], Any]) -> str:
    """kgdb's ``proc``/``tid``: a number, or a kernel address of the structure;
    answers ``RID TID NAME`` of the thread to switch to."""
    v = _number(args, f"{kind} {'PID' if kind == 'proc' else 'TID'}|ADDRESS")
    if v >= _kernstart(target):
        t = next((t for t in target.threads if _get(t.obj, *attrs) == v), None)
        what = "proc" if kind == "proc" else "thread"
        if t is None:
            raise MonitorError(f"invalid {what} address")
    else:
        t = by_number(v)
        if t is None:
            raise MonitorError("invalid pid" if kind == "proc" else "invalid tid")
    return f"{t.rid:x} {t.tid} {t.name}\n"


def cmd_proc(target: Target, args: List[str]) -> str:
    return _select(target, args, "proc", ("proc_addr", "proc_address", "paddr"),
                   target.find_pid)


def cmd_tid(target: Target, args: List[str]) -> str:
    return _select(target, args, "tid", ("td_addr", "address", "addr"), target.find_tid)


def cmd_unwind_elf(target: Target, args: List[str]) -> str:
    """Write the unwind module into a directory private to this server (a
    client never chooses where the server writes) and answer ``N PATH``."""
    from ..unwindinfo import write_unwind_elf
    try:
        ranges = [tuple(int(x, 16) for x in a.split("-", 1)) for a in args]
    except ValueError:
        ranges = None
    if ranges is None or any(len(r) != 2 for r in ranges):
        raise MonitorError("usage: unwind-elf [LO-HI]...")
    path = os.path.join(_private_dir(), "kernel.unwind")
    try:
        n = write_unwind_elf(target.kvm, path,
                             skip=lambda pc: any(lo <= pc < hi for lo, hi in ranges))
    except OSError as e:
        raise MonitorError(f"{path}: {e.strerror or e}") from None
    return f"{n} {path}\n"


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
    "info": cmd_info, "ps": cmd_ps, "threads": cmd_threads, "dmesg": cmd_dmesg,
    "unread": cmd_unread, "panic": cmd_panic, "kerndisp": cmd_kerndisp, "kld": cmd_kld,
    "proc": cmd_proc, "tid": cmd_tid,
    "unwind-elf": cmd_unwind_elf, "help": lambda _t, _a: HELP,
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
