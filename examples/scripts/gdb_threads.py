"""Walk every thread of a FreeBSD kernel crash dump from gdb's Python.

Defines the gdb command ``dump-threads KERNEL CORE [GLOBAL]``: it opens the
dump with ``kvm_gdb.open_dump``, prints each thread with its backtrace (pc and
symbol per frame), then a kernel global read from the dump (``hz`` by default,
as an int).  Source the plugin first (or from ~/.gdbinit); use gdb-multiarch
for a dump of another architecture (arm64, riscv, ...):

    gdb -batch -x plugins/gdb/kvm_gdb.py -x examples/scripts/gdb_threads.py \\
        -ex 'dump-threads KERNEL CORE'
"""

import re

import gdb

try:  # sourcing plugins/gdb/kvm_gdb.py made it importable
    import kvm_gdb
except ImportError:
    raise gdb.GdbError("source plugins/gdb/kvm_gdb.py first") from None
from kvm_dbg.scripting import ScriptError


def symbol(frame):
    """``name+0xoff`` of a frame's pc, ``??`` when gdb has no symbol for it."""
    # gdb.format_address (gdb >= 13) says "0x... <name+off>" from any symbol table
    text = gdb.format_address(frame.pc()) if hasattr(gdb, "format_address") else ""
    m = re.search(r"<([^+>]+)(?:\+(\d+))?>", text)
    if m is None:
        return frame.name() or "??"
    offset = int(m.group(2) or 0)
    return f"{m.group(1)}+{offset:#x}" if offset else m.group(1)


def dump_threads(kernel, core, name="hz"):
    inferior = kvm_gdb.open_dump(kernel, core)        # kvm-open KERNEL CORE
    threads = sorted(inferior.threads(), key=lambda t: t.num)
    print(f"{len(threads)} threads")
    for thread in threads:
        thread.switch()
        print(f"thread {thread.num} tid {thread.ptid[1]} name '{thread.name}'")
        frame, level = gdb.newest_frame(), 0
        while frame is not None:
            print(f"  #{level:<2} {frame.pc():#018x}  {symbol(frame)}")
            frame, level = frame.older(), level + 1
    print(f"{name} = {int(gdb.parse_and_eval(f'*(int *)&{name}'))}")
    kvm_gdb.close_dump()


class DumpThreads(gdb.Command):
    """Print every thread's backtrace and a global: dump-threads KERNEL CORE [GLOBAL]."""

    def __init__(self):
        super().__init__("dump-threads", gdb.COMMAND_USER, gdb.COMPLETE_FILENAME)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if len(args) not in (2, 3):
            raise gdb.GdbError("usage: dump-threads KERNEL CORE [GLOBAL]")
        try:
            dump_threads(*args)
        except ScriptError as e:                    # the line kvm-open would print
            raise gdb.GdbError(str(e)) from None


DumpThreads()
