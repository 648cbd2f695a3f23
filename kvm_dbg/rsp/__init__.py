"""GDB remote-serial-protocol server over an opened FreeBSD kernel dump.

One server process per dump serves gdb and lldb (``target remote`` /
``gdb-remote``): threads with names, per-thread registers, memory, clean
errors, no execution.  Start it with :func:`serve` or
``python -m kvm_dbg.rsp KERNEL CORE [--listen HOST:PORT | --stdio | --unix PATH]``.
"""

from .dumpserver import open_dump, serve, serve_target
from .messages import ERROR_PREFIX, READY_PREFIX
from .regs import REGSETS, RegSet, regset_for, target_xml
from .session import Session
from .symbols import SymbolTable, load_symbol_file, resolver_symbols, write_symbol_file
from .target import Target

__all__ = [
    "ERROR_PREFIX", "READY_PREFIX", "REGSETS", "RegSet", "Session", "SymbolTable", "Target",
    "load_symbol_file", "open_dump", "regset_for", "resolver_symbols", "serve", "serve_target",
    "target_xml", "write_symbol_file",
]
