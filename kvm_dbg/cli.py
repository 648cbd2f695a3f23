"""``kvm-dbg``: the command line over the library.

Reporting commands print text by default and JSON with ``--json`` (shapes in
docs/cli-json-schema.json).  Exit codes: 0 success, 1 a file or dump
problem, 2 bad arguments.  ``gdb`` and ``lldb`` start the debugger with the
plugin loaded and the dump open, as ``kgdb kernel vmcore`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import __version__, crashdir, report
from . import kvm as _kvm
from .corefile import peek
from .debuggers import debugger_env, gdb_argv, lldb_argv
from .dumpfile import TEXTDUMP_NO_MEMORY, dump_number, prepare
from .errors import KvmError

EXAMPLES = """examples:
  kvm-dbg triage /boot/kernel/kernel /var/crash/vmcore.0
  kvm-dbg triage --crashdir /var/crash -n 0          # dump 0 and its kernel (crashinfo's way)
  kvm-dbg triage -n 0 --crashdir crash --sysroot /mnt/host   # a copy of the machine's root
  kvm-dbg info kernel vmcore.0.zst                   # compressed: decompressed once, cached
  kvm-dbg info --key dump.pem kernel vmcore_encrypted.0
  kvm-dbg info textdump.tar.0.gz                     # a textdump needs no kernel
  kvm-dbg triage kernel.debug crashes/vmcore.*       # many dumps, grouped by panic
  kvm-dbg gdb kernel.debug vmcore.0                  # gdb with the dump open
  kvm-dbg lldb kernel.debug vmcore.0
  kvm-dbg threads --json kernel vmcore.0
  kvm-dbg read kernel vmcore.0 0xffffffff81cd4c0c 16
  kvm-dbg serve kernel vmcore.0 --listen 127.0.0.1:2345
  kvm-dbg crashinfo kernel.debug vmcore.0 -o core.txt.0   # crashinfo(8) on any host
  kvm-dbg drgn kernel.debug vmcore.0                 # drgn shell (pip install 'kvm-dbg[drgn]')
  eval "$(kvm-dbg env --lldb)"; "$PYTHON" my_lldb_script.py   # a standalone lldb program
"""


class UsageError(Exception):
    """Bad arguments: exit status 2."""


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


# -- locating kernel and cores ------------------------------------------------

def _is_kernel(path: str) -> bool:
    """An ELF executable or shared object (not a core, not a minidump)."""
    head = peek(path, 18)
    if not head or head[:4] != b"\x7fELF" or len(head) < 18:
        return False
    etype = int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")
    return etype in (2, 3)


def open_options(args) -> Dict[str, Any]:
    """The ``kvm_dbg.open`` keywords given on the command line."""
    return {"key": getattr(args, "key", None), "dumpkey": getattr(args, "dump_key", None),
            "cache_dir": getattr(args, "cache_dir", None),
            "sysroot": getattr(args, "sysroot", None)}


def _say(text: str) -> None:
    sys.stderr.write(f"kvm-dbg: {text}\n")
    sys.stderr.flush()


def _find_kernel(core: str, n: Optional[int], args, info=None) -> str:
    """The kernel for ``core`` (crashdir.find_kernel), said on stderr."""
    d = os.path.dirname(core) or "."
    if info is None and n is not None and os.path.isfile(os.path.join(d, f"info.{n}")):
        info = crashdir.parse_info(os.path.join(d, f"info.{n}"))
    choice = crashdir.find_kernel(d, n, getattr(args, "sysroot", None) or "/", info)
    if choice.path is None:
        raise KvmError(f"{core}: {choice.explain()}")
    _say(choice.explain())
    return choice.path


def _kernel_core_pairs(args) -> List[Tuple[Optional[str], str]]:
    """(kernel, core) for each dump named on the command line; kernel None
    for a textdump (it needs none)."""
    paths = list(args.paths)
    if getattr(args, "n", None) is not None:
        dump = crashdir.find_dump(args.crashdir, args.n)
        if paths:
            return [(paths[0], dump.core)]
        if _is_textdump(dump.core, args):
            return [(None, dump.core)]
        return [(_find_kernel(dump.core, args.n, args, dump.info), dump.core)]
    if not paths:
        raise UsageError("a CORE (or -n N) is required")
    kernel = None
    if len(paths) > 1 and _is_kernel(paths[0]):
        kernel, paths = paths[0], paths[1:]
    if len(paths) > 1 and not getattr(args, "many", False):
        raise UsageError("expected [KERNEL] CORE")
    out: List[Tuple[Optional[str], str]] = []
    for core in paths:
        if kernel is None and _is_textdump(core, args):
            out.append((None, core))
            continue
        out.append((kernel or _find_kernel(core, dump_number(core), args), core))
    return out


def _is_textdump(core: str, args) -> bool:
    opts = open_options(args)
    return prepare(core, key=opts["key"], dumpkey=opts["dumpkey"],
                   cache_dir=opts["cache_dir"]).textdump


def _open(kernel: Optional[str], core: str, args) -> _kvm.Kvm:
    if kernel is None:       # a textdump: kvm_dbg.open says it has no memory
        raise KvmError(f"{core}: {TEXTDUMP_NO_MEMORY}")
    return _kvm.open(kernel, core, **open_options(args))


def _open_one(args) -> _kvm.Kvm:
    kernel, core = _kernel_core_pairs(args)[0]
    return _open(kernel, core, args)


def _textdump(core: str, args):
    """The Textdump a core path holds, or None."""
    from .dumpfile.textdump import Textdump
    opts = open_options(args)
    src = prepare(core, key=opts["key"], dumpkey=opts["dumpkey"], cache_dir=opts["cache_dir"])
    return Textdump.open(src.path) if src.textdump else None


# -- commands --------------------------------------------------------------------

def cmd_info(args) -> Any:
    kernel, core = _kernel_core_pairs(args)[0]
    if kernel is None:
        return report.textdump_info(core, _textdump(core, args))
    with _open(kernel, core, args) as kd:
        return report.info(kd)


def cmd_threads(args) -> Any:
    with _open_one(args) as kd:
        return report.threads(kd, backtrace=args.backtrace)


def cmd_ps(args) -> Any:
    with _open_one(args) as kd:
        return report.procs(kd)


def cmd_dmesg(args) -> Any:
    kernel, core = _kernel_core_pairs(args)[0]
    if kernel is None:
        td = _textdump(core, args)
        return {"text": td.msgbuf or "", "unread": "", "source": "textdump msgbuf.txt",
                "warnings": []}
    with _open(kernel, core, args) as kd:
        return report.dmesg(kd)


def cmd_kld(args) -> Any:
    with _open_one(args) as kd:
        return report.klds(kd)


def cmd_nlist(args) -> Any:
    with _open_one(args) as kd:
        symbols = {name: (None if (v := kd.lookup(name)) is None else f"0x{v:x}")
                   for name in args.symbols}
        return {"symbols": symbols, "warnings": report.warnings(kd)}


def cmd_read(args) -> Any:
    if not 0 <= args.length <= 1 << 30:
        raise UsageError(f"bad length {args.length}")
    with _open_one(args) as kd:
        data = kd.read(args.address, args.length)
        warnings = report.warnings(kd)
    out: Dict[str, Any] = {"address": f"0x{args.address:x}", "length": len(data)}
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data)
        out["output"] = args.output
    else:
        out["hex"] = data.hex()
    out["warnings"] = warnings
    return out


def cmd_triage(args) -> Any:
    pairs = _kernel_core_pairs(args)
    reports = []
    show = len(pairs) > 1 and sys.stderr.isatty() and not args.json
    for i, (kernel, core) in enumerate(pairs, 1):
        if show:
            bar = "#" * (30 * i // len(pairs))
            sys.stderr.write(f"\r[{bar:<30}] {i}/{len(pairs)} {os.path.basename(core)[:30]:<30}")
            sys.stderr.flush()
        try:
            if kernel is None:
                r = report.textdump_triage(core, _textdump(core, args))
            else:
                with _open(kernel, core, args) as kd:
                    r = report.triage(kd)
        except KvmError as e:
            r = {"kernel": kernel, "core": core, "error": str(e)}
        reports.append(r)
    if show:
        sys.stderr.write("\n")
    if len(reports) == 1 and not args.many_output:
        if "error" in reports[0]:
            raise KvmError(reports[0]["error"])
        return reports[0]
    groups: Dict[str, List[str]] = {}
    for r in reports:
        key = ("(unreadable) " + r["error"]) if "error" in r else report.signature(r)
        groups.setdefault(key, []).append(r["core"])
    summary = [{"signature": k, "count": len(v), "cores": v}
               for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
    warnings = [f"{r['core']}: {w}" for r in reports for w in r.get("warnings", [])]
    return {"dumps": reports, "summary": summary, "warnings": warnings}


def cmd_serve(args) -> Any:
    from .rsp import serve
    kernel, core = _kernel_core_pairs(args)[0]
    if kernel is None:
        raise KvmError(f"{core}: {TEXTDUMP_NO_MEMORY}")
    if args.listen and not args.allow_remote:
        host = args.listen.rsplit(":", 1)[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1", ""):
            raise UsageError("refusing to listen on a non-loopback address without "
                             "--allow-remote")
    status = serve(kernel, core, listen=args.listen, stdio=args.stdio, unix=args.unix,
                   writable=args.writable, open_options=open_options(args))
    raise SystemExit(status)


def cmd_crashinfo(args) -> Any:
    from . import crashinfo
    kernel, core = _kernel_core_pairs(args)[0]
    with _kvm.open(kernel, core) as kd:
        rep = crashinfo.report(kd, use_drgn=not args.no_drgn)
    if not args.output:
        return rep
    text = json.dumps(rep, indent=2) if args.json else crashinfo.render(rep)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return {"output": args.output}


def cmd_drgn(args) -> Any:
    from . import drgn as kdrgn
    from . import drgncli
    paths, script = list(args.paths), ""
    if (len(paths) >= 2 or args.n is not None) and paths and paths[-1].endswith(".py") \
            and not _is_kernel(paths[-1]) and peek(paths[-1], 8) != b"minidump":
        script = paths.pop()
    args.paths = paths
    kernel, core = _kernel_core_pairs(args)[0]
    kdrgn.require()
    prog = kdrgn.program(kernel, core)
    try:
        drgncli.run(prog, script, args.extra)
    finally:
        kdrgn.close(prog)
    raise SystemExit(0)


def _exec_debugger(argv: List[str]) -> None:
    sys.stdout.flush()
    try:
        os.execvpe(argv[0], argv, debugger_env())
    except OSError as e:
        raise KvmError(f"{argv[0]}: {os.strerror(e.errno or 2)}") from None


def _option_words(args) -> List[str]:
    """``kvm-open`` options repeating ours (``--key FILE``...)."""
    out: List[str] = []
    for flag, value in (("--key", args.key), ("--dump-key", args.dump_key),
                        ("--cache-dir", args.cache_dir), ("--sysroot", args.sysroot)):
        if value:
            out += [flag, os.path.abspath(value)]
    return out


def cmd_gdb(args) -> Any:
    kernel, core = _kernel_core_pairs(args)[0]
    with _open(kernel, core, args) as kd:     # fail early, with our message (and decode once)
        arch = kd.arch
    _exec_debugger(gdb_argv(kernel, core, arch, args.extra, _option_words(args)))


def cmd_lldb(args) -> Any:
    kernel, core = _kernel_core_pairs(args)[0]
    with _open(kernel, core, args):
        pass
    _exec_debugger(lldb_argv(kernel, core, args.extra, _option_words(args)))


def cmd_env(args) -> Any:
    """Shell assignments for a standalone lldb SB API program (kvm_dbg.scripting)."""
    from .scripting import lldb_env, shell_assignments
    print(shell_assignments(lldb_env()))
    raise SystemExit(0)


# -- text rendering ------------------------------------------------------------------

def _hexdump(addr: int, data: bytes) -> str:
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{addr + i:016x}  {hx:<47}  |{asc}|")
    return "\n".join(lines)


def _text_info(r: Dict[str, Any]) -> str:
    def show(v: Any) -> str:
        if isinstance(v, list):
            return ", ".join(map(str, v))
        return "-" if v is None else str(v)
    return "\n".join(f"{k + ':':<20} {show(v)}" for k, v in r.items() if k != "warnings")


def _text_triage_textdump(r: Dict[str, Any]) -> str:
    out = [f"dump:      {r['core']}", "format:    textdump (no memory: ddb output and text "
           "files only)",
           f"version:   {(r['version'] or 'unknown').splitlines()[0]}",
           f"panic:     {r['panic'] or '(no panic.txt)'}",
           f"files:     {', '.join(r['files'])}"]
    if r["ddb"]:
        out.append("ddb capture (ddb.txt):")
        out.extend("  " + line for line in r["ddb"].rstrip("\n").splitlines())
    if r["msgbuf_tail"]:
        out.append("message buffer (last lines):")
        out.extend("  " + line for line in r["msgbuf_tail"])
    return "\n".join(out)


def _text_triage_one(r: Dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['core']}: error: {r['error']}"
    if r.get("format") == "textdump":
        return _text_triage_textdump(r)
    up = r["uptime_seconds"]
    out = [f"dump:      {r['core']}",
           f"kernel:    {r['kernel']}" + ("" if r["kernel_matches_dump"] is not False
                                          else "   (WARNING: does not match the dump)"),
           f"format:    {r['arch']} {r['format']}",
           f"version:   {(r['version'] or 'unknown').splitlines()[0]}",
           f"panic:     {r['panic'] or '(no panic string)'}"]
    if up is not None:
        out.insert(-1, f"uptime:    {_duration(up)}")
    ct = r["crashed_thread"]
    if ct:
        out.append(f"crashed:   {ct['name']} (tid {ct['tid']})")
        for i, f in enumerate(ct["backtrace"]):
            out.append(f"  #{i:<2} {f['pc']:>18}  {f['symbol']}")
    else:
        out.append("crashed:   (no thread list)")
    if r["msgbuf_tail"]:
        out.append("message buffer (last lines):")
        out.extend("  " + line for line in r["msgbuf_tail"])
    for w in r["warnings"]:
        out.append(f"warning:   {w}")
    return "\n".join(out)


def _text_triage(r: Dict[str, Any]) -> str:
    if "dumps" not in r:
        return _text_triage_one(r)
    body = "\n\n".join(_text_triage_one(d) for d in r["dumps"])
    table = [f"{'COUNT':>5}  SIGNATURE"]
    table += [f"{g['count']:>5}  {g['signature']}" for g in r["summary"]]
    return body + "\n\nsummary:\n" + "\n".join(table)


def _duration(seconds: float) -> str:
    """``3d 4h 5m 6s (273906 s)`` as uptime(1) would count it."""
    s = int(seconds)
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    parts = [f"{d}d"] * bool(d) + [f"{h}h"] * bool(d or h) + [f"{m}m"] * bool(d or h or m)
    return " ".join(parts + [f"{sec}s"]) + (f" ({seconds:g} s)" if s >= 60 else "")


def _text_nlist(r: Dict[str, Any]) -> str:
    return "\n".join(f"{k:<32} {v or 'not found'}" for k, v in r["symbols"].items())


def _text_read(r: Dict[str, Any]) -> str:
    if "hex" in r:
        return _hexdump(int(r["address"], 16), bytes.fromhex(r["hex"]))
    return f"wrote {r['length']} bytes to {r['output']}"


def _text_crashinfo(r: Dict[str, Any]) -> str:
    if "output" in r:
        return f"Writing crash summary to {r['output']}."
    from .crashinfo import render
    return render(r).rstrip("\n")


def _text_dmesg(r: Dict[str, Any]) -> str:
    return r["text"].rstrip("\n") if r["text"] else "(message buffer is empty)"


TEXT: Dict[str, Callable[[Any], str]] = {
    "info": _text_info, "threads": lambda r: report.text_threads(r["threads"]),
    "ps": lambda r: report.text_procs(r["procs"]), "kld": lambda r: report.text_klds(r["klds"]),
    "triage": _text_triage, "nlist": _text_nlist, "read": _text_read, "dmesg": _text_dmesg,
    "crashinfo": _text_crashinfo,
}


# -- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvm-dbg", description="Debug FreeBSD kernel crash dumps "
                                "on any host.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"kvm-dbg {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, help_: str, func, report_: bool = True, many: bool = False):
        s = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if report_:
            s.add_argument("--json", action="store_true", help="print JSON")
        s.add_argument("-n", type=int, metavar="N", help="dump number: open CRASHDIR/vmcore.N")
        s.add_argument("--crashdir", default="/var/crash", metavar="DIR",
                       help="crash directory for -n (default /var/crash)")
        s.add_argument("--sysroot", metavar="DIR",
                       help="the crashed machine's root (its /boot, /usr/lib/debug): where "
                            "kernels and modules are looked for (default /)")
        s.add_argument("--key", metavar="FILE",
                       help="RSA private key (PEM) of an encrypted dump (decryptcore -p)")
        s.add_argument("--dump-key", metavar="FILE",
                       help="the encrypted dump's key.N, when not beside it")
        s.add_argument("--cache-dir", metavar="DIR",
                       help="where decompressed/decrypted copies go (default: beside the "
                            "dump, else ~/.cache/kvm-dbg)")
        s.set_defaults(func=func, many=many, many_output=False, extra=[])
        return s

    s = add("info", "identify a dump: architecture, format, hz, version, panic", cmd_info)
    s.add_argument("paths", nargs="*", metavar="[KERNEL] CORE")
    s = add("triage", "what happened: panic, crashed thread backtrace, version, uptime, "
            "message buffer; many dumps are grouped by panic", cmd_triage, many=True)
    s.add_argument("paths", nargs="*", metavar="[KERNEL] CORE...")
    s = add("threads", "kernel threads (crashed first) with registers", cmd_threads)
    s.add_argument("--backtrace", "-b", action="store_true", help="add backtraces")
    s.add_argument("paths", nargs="*", metavar="[KERNEL] CORE")
    for name, help_, func in (("ps", "processes", cmd_ps),
                              ("dmesg", "the kernel message buffer", cmd_dmesg),
                              ("kld", "loaded kernel modules", cmd_kld)):
        s = add(name, help_, func)
        s.add_argument("paths", nargs="*", metavar="[KERNEL] CORE")
    s = add("crashinfo", "crashinfo(8)'s core.txt: panic, backtraces, ps, vmstat -s/-m/-z/-i, "
            "pstat -T, dmesg, kernel config, ddb capture buffer", cmd_crashinfo)
    s.add_argument("paths", nargs="*", metavar="[KERNEL] CORE")
    s.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE "
                   "(e.g. core.txt.0) instead of standard output")
    s.add_argument("--no-drgn", action="store_true",
                   help="only the sections kvm-dbg reads without drgn")
    s = add("drgn", "drgn's interactive shell on the dump (prog, FreeBSD helpers, crashed "
            "thread), or run SCRIPT.py with it; needs pip install 'kvm-dbg[drgn]'",
            cmd_drgn, report_=False)
    s.add_argument("paths", nargs="*", metavar="[KERNEL] CORE [SCRIPT.py]")
    s = add("nlist", "look up kernel symbols", cmd_nlist)
    s.add_argument("kernel_core", nargs=2, metavar="KERNEL CORE")
    s.add_argument("symbols", nargs="+", metavar="SYMBOL")
    s = add("read", "read kernel memory (hexdump, or raw with -o FILE)", cmd_read)
    s.add_argument("kernel_core", nargs=2, metavar="KERNEL CORE")
    s.add_argument("address", type=_int)
    s.add_argument("length", type=_int)
    s.add_argument("-o", "--output", help="write the raw bytes to this file")
    s = add("serve", "serve the dump over the GDB remote protocol (any RSP client)",
            cmd_serve, report_=False)
    s.add_argument("paths", nargs="*", metavar="[KERNEL] CORE")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--listen", metavar="HOST:PORT", help="TCP address (default 127.0.0.1:0)")
    g.add_argument("--stdio", action="store_true", help="speak RSP on stdin/stdout")
    g.add_argument("--unix", metavar="PATH", help="listen on a Unix socket")
    s.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --listen address")
    s.add_argument("-w", "--writable", action="store_true", help="allow memory writes")
    for name, func in (("gdb", cmd_gdb), ("lldb", cmd_lldb)):
        s = add(name, f"start {name} with the plugin loaded and the dump open "
                "(extra arguments after -- go to the debugger)", func, report_=False)
        s.add_argument("paths", nargs="*", metavar="[KERNEL] CORE")
    s = sub.add_parser("env", help="print the environment a standalone debugger script needs "
                       "(eval \"$(kvm-dbg env --lldb)\")",
                       description="Print PYTHON=... (an interpreter that imports lldb's Python "
                       "module) and PYTHONPATH=... (lldb's module, kvm_dbg, pyelftools) for an "
                       "lldb SB API program: eval \"$(kvm-dbg env --lldb)\"; \"$PYTHON\" "
                       "script.py.  See docs/lldb.md, Scripts.")
    s.add_argument("--lldb", action="store_true", required=True,
                   help="for a Python program that imports lldb")
    s.set_defaults(func=cmd_env, many=False, many_output=False, extra=[])
    return p


def _normalise(args) -> None:
    if hasattr(args, "kernel_core"):
        args.paths = args.kernel_core


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.extra = extra
    _normalise(args)
    try:
        result = args.func(args)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"kvm-dbg: error: {e}\n")
        return 2
    except (KvmError, OSError) as e:
        sys.stderr.write(f"kvm-dbg: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("kvm-dbg: interrupted\n")
        return 130
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
        return 0
    print(TEXT[args.cmd](result))
    if args.cmd != "triage" and result.get("warnings"):     # triage prints its own
        sys.stdout.flush()
        sys.stderr.write(report.text_warnings(result["warnings"]) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
