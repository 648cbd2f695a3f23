"""GDB remote-serial-protocol server over an opened FreeBSD kernel dump.

One server process per dump serves gdb and lldb (``target remote`` /
``gdb-remote``): threads with names, per-thread registers, memory, clean
errors, no execution.  Start it with :func:`serve` or
``python -m kvm_dbg.rsp KERNEL CORE [--listen HOST:PORT | --stdio | --unix PATH]``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional, Tuple

from .regs import REGSETS, RegSet, regset_for, target_xml
from .server import address_of, close_listener, listen_tcp, listen_unix, serve_socket, serve_stdio
from .session import Session
from .symbols import SymbolTable, load_symbol_file, resolver_symbols, write_symbol_file
from .target import Target

__all__ = [
    "REGSETS", "RegSet", "Session", "SymbolTable", "Target", "load_symbol_file", "open_dump",
    "regset_for", "resolver_symbols", "serve", "serve_target", "target_xml", "write_symbol_file",
]

READY_PREFIX = "kvm_dbg.rsp: listening on "
ERROR_PREFIX = "kvm_dbg.rsp: error: "


def _elf_fallback(kernel: str) -> Callable[[str], Optional[int]]:
    """Lazy ELF symbol lookup for names the debugger was not asked about."""
    image: Any = None

    def lookup(name: str) -> Optional[int]:
        nonlocal image
        if image is None:
            try:
                from ..elfkernel import KernelImage
                image = KernelImage(kernel)
            except Exception:
                image = False
        return image.lookup(name) if image else None

    return lookup


def open_dump(kernel: str, core: str, symbols: Optional[str] = None,
              writable: bool = False, elf_symbols: bool = True
              ) -> Tuple[Any, Optional[SymbolTable]]:
    """Open the dump with the debugger's symbols (if given) as the resolver.

    With ``elf_symbols=False`` names missing from the file are not looked up
    in the kernel ELF: they stay unknown until the debugger answers qSymbol.
    """
    import kvm_dbg
    table = None
    if symbols:
        table = SymbolTable(load_symbol_file(symbols),
                            fallback=_elf_fallback(kernel) if elf_symbols else None)
    kvm = kvm_dbg.open(kernel, core, resolver=table, writable=writable)
    return kvm, table


def serve_target(kvm: Any, *, listen: Optional[str] = None, stdio: bool = False,
                 unix: Optional[str] = None, symbols: Optional[SymbolTable] = None,
                 writable: bool = False, once: bool = False,
                 ready: Optional[Callable[[str], None]] = None) -> None:
    """Serve an already opened ``Kvm`` (or a fake with the same methods)."""
    target = Target(kvm, writable=writable)
    wanted = resolver_symbols() if symbols is not None else []

    def factory() -> Session:
        return Session(target, symbols, wanted)

    if stdio:
        serve_stdio(factory)
        return
    sock = listen_unix(unix) if unix else listen_tcp(listen or "127.0.0.1:0")
    try:
        if ready:
            ready(address_of(sock))
        serve_socket(sock, factory, once=once)
    finally:
        close_listener(sock)


def _watch_stdin() -> None:
    """Exit when the parent closes our stdin (the adapter died or closed)."""
    def run() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # main thread unwinds and removes the socket
        time.sleep(5)
        os._exit(0)
    threading.Thread(target=run, daemon=True, name="stdin-watch").start()


def serve(kernel: str, core: str, *, listen: Optional[str] = None, stdio: bool = False,
          unix: Optional[str] = None, symbols: Optional[str] = None, writable: bool = False,
          once: bool = False, watch_stdin: bool = False, log_file: Optional[str] = None,
          verbose: bool = False, elf_symbols: bool = True) -> int:
    """Open KERNEL+CORE and serve it; returns a process exit status.

    Socket modes print ``kvm_dbg.rsp: listening on ADDRESS`` on stdout once
    ready, or ``kvm_dbg.rsp: error: MESSAGE`` on stderr (exit status 1).
    """
    if log_file:
        logging.basicConfig(filename=log_file, level=logging.DEBUG if verbose else logging.INFO)
    try:
        kvm, table = open_dump(kernel, core, symbols, writable, elf_symbols)
        regset_for(kvm.arch, kvm.ptrsize)
    except Exception as e:  # one line, no traceback: the adapter shows it to the user
        sys.stderr.write(f"{ERROR_PREFIX}{e}\n")
        sys.stderr.flush()
        return 1
    if watch_stdin and not stdio:
        _watch_stdin()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def ready(address: str) -> None:
        sys.stdout.write(f"{READY_PREFIX}{address}\n")
        sys.stdout.flush()

    try:
        serve_target(kvm, listen=listen, stdio=stdio, unix=unix, symbols=table,
                     writable=writable, once=once, ready=ready)
    except OSError as e:
        sys.stderr.write(f"{ERROR_PREFIX}{e}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
