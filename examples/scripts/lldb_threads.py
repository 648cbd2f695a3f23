"""Walk every thread of a FreeBSD kernel crash dump with lldb's SB API.

Prints each thread with its backtrace (pc and symbol per frame), then a kernel
global read from the dump (``hz`` by default, as a 4-byte int).  Runs on any
host for a dump of any architecture lldb knows (amd64, i386, arm64, ...):

    eval "$(kvm-dbg env --lldb)"      # PYTHON and PYTHONPATH (docs/lldb.md, Scripts)
    "$PYTHON" examples/scripts/lldb_threads.py KERNEL CORE [GLOBAL]
"""

import sys

import lldb

from kvm_dbg.scripting import ScriptError, lldb_plugin


def symbol(frame, target):
    """``name+0xoff`` of a frame's pc, ``??`` when lldb has no symbol for it."""
    name = frame.GetFunctionName()
    if not name:
        return "??"
    start = (frame.GetFunction() if frame.GetFunction().IsValid() else frame.GetSymbol())
    offset = frame.GetPC() - start.GetStartAddress().GetLoadAddress(target)
    return f"{name}+{offset:#x}" if offset > 0 else name


def read_int(target, process, name):
    """The 4-byte signed int at kernel symbol NAME, read from the dump."""
    for ctx in target.FindSymbols(name):
        address = ctx.GetSymbol().GetStartAddress().GetLoadAddress(target)
        if address != lldb.LLDB_INVALID_ADDRESS:
            break
    else:
        raise ScriptError(f"{name}: no such symbol")
    error = lldb.SBError()
    value = process.ReadUnsignedFromMemory(address, 4, error)
    if not error.Success():
        raise ScriptError(f"{name}: {error.GetCString()}")
    return value - (1 << 32) if value & (1 << 31) else value


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(f"usage: {argv[0]} KERNEL CORE [GLOBAL]")
    kernel, core = argv[1], argv[2]
    name = argv[3] if len(argv) == 4 else "hz"
    debugger = lldb.SBDebugger.Create()
    debugger.SetAsync(False)
    try:
        kvm_lldb = lldb_plugin(debugger)              # command script import kvm_lldb.py
        process = kvm_lldb.open_dump(debugger, kernel, core)   # kvm-open KERNEL CORE
        target = process.GetTarget()
        print(f"{process.GetNumThreads()} threads")
        for thread in process:
            print(f"thread {thread.GetIndexID()} tid {thread.GetThreadID()} "
                  f"name '{thread.GetName()}'")
            for frame in thread:
                print(f"  #{frame.GetFrameID():<2} {frame.GetPC():#018x}  "
                      f"{symbol(frame, target)}")
        print(f"{name} = {read_int(target, process, name)}")
        kvm_lldb.close_dump(debugger)
    except ScriptError as e:                          # the line kvm-open would print
        sys.exit(f"error: {e}")
    finally:
        lldb.SBDebugger.Destroy(debugger)


if __name__ == "__main__":
    main(sys.argv)
