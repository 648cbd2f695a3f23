"""Kernel state from a readable dump: threads, registers, stacks, processes,
message buffer, modules, panic/version facts.

Everything here reads through a ``Kvm`` (``read``, ``read_partial``,
``lookup``, ``arch``, ``byteorder``, ``ptrsize``, ``warnings``) and needs no
debugger and no DWARF.  Corrupted structures give partial results and a
warning in ``kvm.warnings``, never an exception; a bug, a missing module or a
resolver's own failure is not bad data and propagates.
"""

from __future__ import annotations

from .archdata import ARCHES, ArchInfo, arch_info
from .klds import Kld, find_kld_file, kld_file, klds, linker_path
from .msgbuf import MsgBuf, msgbuf
from .panic import PanicInfo, panic_info
from .procs import KProc, procs
from .threads import KThread, display_name, threads
from .unwind import Frame, unwind

__all__ = [
    "ARCHES", "ArchInfo", "Frame", "KProc", "KThread", "Kld", "MsgBuf", "PanicInfo",
    "arch_info", "display_name", "find_kld_file", "kld_file", "klds", "linker_path",
    "msgbuf", "panic_info", "procs", "threads", "unwind",
]
