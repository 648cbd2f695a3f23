"""Open a dump and serve it over RSP: the server process's main job.

:func:`serve` prints ``kvm_dbg.rsp: listening on ADDRESS`` on stdout once
ready, or ``kvm_dbg.rsp: error: MESSAGE`` on stderr (one line, which the
debugger adapters show to the user) and exits 1.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional, Tuple

from ..errors import KvmError
from .messages import READY_PREFIX, error_line
from .regs import regset_for
from .server import address_of, close_listener, listen_tcp, listen_unix, serve_socket, serve_stdio
from .session import Session
from .symbols import SymbolTable, load_symbol_file, resolver_symbols
from .target import Target


def _elf_fallback(kernel: str) -> Callable[[str], Optional[int]]:
    """Lazy ELF symbol lookup for names the debugger was not asked about
    (the kernel file is parsed on the first such name; its errors propagate)."""
    image: Any = None

    def lookup(name: str) -> Optional[int]:
        nonlocal image
        if image is None:
            from ..elfkernel import KernelImage
            image = KernelImage(kernel)
        return image.lookup(name)

    return lookup


def open_dump(kernel: str, core: str, symbols: Optional[str] = None,
              writable: bool = False, elf_symbols: bool = True,
              open_options: Optional[dict] = None) -> Tuple[Any, Optional[SymbolTable]]:
    """Open the dump with the debugger's symbols (if given) as the resolver.

    With ``elf_symbols=False`` names missing from the file are not looked up
    in the kernel ELF: they stay unknown until the debugger answers qSymbol.
    """
    import kvm_dbg
    table = None
    if symbols:
        table = SymbolTable(load_symbol_file(symbols),
                            fallback=_elf_fallback(kernel) if elf_symbols else None)
    kvm = kvm_dbg.open(kernel, core, resolver=table, writable=writable,
                       **(open_options or {}))
    return kvm, table


def serve_target(target: Target, *, listen: Optional[str] = None, stdio: bool = False,
                 unix: Optional[str] = None, symbols: Optional[SymbolTable] = None,
                 once: bool = False, ready: Optional[Callable[[str], None]] = None) -> None:
    """Serve an opened dump (a :class:`Target` over a ``Kvm``)."""
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


def _fail(message: str) -> int:
    error_line(message)
    return 1


def serve(kernel: str, core: str, *, listen: Optional[str] = None, stdio: bool = False,
          unix: Optional[str] = None, symbols: Optional[str] = None, writable: bool = False,
          once: bool = False, watch_stdin: bool = False, log_file: Optional[str] = None,
          verbose: bool = False, elf_symbols: bool = True,
          open_options: Optional[dict] = None) -> int:
    """Open KERNEL+CORE and serve it; returns a process exit status.

    Socket modes print ``kvm_dbg.rsp: listening on ADDRESS`` on stdout once
    ready, or ``kvm_dbg.rsp: error: MESSAGE`` on stderr (exit status 1).
    """
    if log_file:
        logging.basicConfig(filename=log_file, level=logging.DEBUG if verbose else logging.INFO)
    try:
        kvm, table = open_dump(kernel, core, symbols, writable, elf_symbols, open_options)
        regset_for(kvm.arch, kvm.ptrsize)
        target = Target(kvm, writable=writable)      # walks the threads: fails here, loudly
    except (KvmError, OSError) as e:                 # the dump or a file: one line
        return _fail(str(e))
    except ImportError as e:
        return _fail(f"{sys.executable}: {e} (the server's interpreter lacks a module)")
    except Exception as e:  # noqa: BLE001 - a bug: traceback to stderr, one line to the user
        traceback.print_exc()
        return _fail(f"internal error: {type(e).__name__}: {e}")
    if watch_stdin and not stdio:
        _watch_stdin()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def ready(address: str) -> None:
        sys.stdout.write(f"{READY_PREFIX}{address}\n")
        sys.stdout.flush()

    try:
        serve_target(target, listen=listen, stdio=stdio, unix=unix, symbols=table,
                     once=once, ready=ready)
    except OSError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return 0
    return 0
