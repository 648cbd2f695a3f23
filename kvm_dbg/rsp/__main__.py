"""``python -m kvm_dbg.rsp KERNEL CORE [--listen HOST:PORT | --stdio | --unix PATH]``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import serve


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kvm_dbg.rsp",
        description="Serve a FreeBSD kernel crash dump over the GDB remote protocol.")
    p.add_argument("kernel", help="kernel ELF file (with or without debug info)")
    p.add_argument("core", help="crash dump (vmcore)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--listen", metavar="HOST:PORT",
                      help="TCP address to listen on (default 127.0.0.1:0, port printed)")
    mode.add_argument("--stdio", action="store_true",
                      help="one session on stdin/stdout (gdb: target remote | ...)")
    mode.add_argument("--unix", metavar="PATH", help="listen on a Unix socket")
    p.add_argument("--symbols", metavar="FILE",
                   help="JSON {name: address} from the debugger, used as the resolver")
    p.add_argument("--no-elf-symbols", dest="elf_symbols", action="store_false",
                   help="with --symbols: names not in FILE come from the debugger "
                        "(qSymbol), never from the kernel ELF")
    p.add_argument("-w", "--writable", action="store_true", help="allow memory writes")
    p.add_argument("--once", action="store_true", help="exit after the first client leaves")
    p.add_argument("--watch-stdin", action="store_true",
                   help="exit when stdin reaches end of file (parent went away)")
    p.add_argument("--key", metavar="FILE", help="RSA private key of an encrypted dump")
    p.add_argument("--dump-key", metavar="FILE", help="the encrypted dump's key.N")
    p.add_argument("--cache-dir", metavar="DIR", help="where decoded copies of dumps go")
    p.add_argument("--sysroot", metavar="DIR", help="the crashed machine's root (modules)")
    p.add_argument("--log", metavar="FILE", help="log to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="log every packet")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    return serve(a.kernel, a.core, listen=a.listen, stdio=a.stdio, unix=a.unix,
                 symbols=a.symbols, writable=a.writable, once=a.once,
                 watch_stdin=a.watch_stdin, log_file=a.log, verbose=a.verbose,
                 elf_symbols=a.elf_symbols,
                 open_options={"key": a.key, "dumpkey": a.dump_key, "cache_dir": a.cache_dir,
                               "sysroot": a.sysroot, "show_progress": False})


if __name__ == "__main__":
    sys.exit(main())
