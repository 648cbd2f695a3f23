"""kvm_dbg.adapter without a debugger: what the gdb and lldb plugins share
(argument parsing, quoting, error lines, server answers, kernel ELF facts,
the frame unwinder's decisions), and the one ELF machine -> architecture map."""

from __future__ import annotations

import shlex
import struct

import pytest

from kvm_dbg import adapter, elfkernel
from kvm_dbg.adapter import AdapterError, FrameUnwinder
from kvm_dbg.arch import base as archbase
from kvm_dbg.kstate import archdata


def test_one_machine_map():
    """Every registered backend's (e_machine, arch) is the map's: the one place."""
    archbase._load_all()
    pairs = {(spec.machine, spec.arch) for spec in archbase.REGISTRY}
    assert pairs == set(elfkernel.ARCH_OF_MACHINE.items())
    # (mips64: the n64 tables of "mips", picked by the kernel's pointer size)
    assert set(elfkernel.ARCH_OF_MACHINE.values()) == set(archdata.ARCHES) - {"mips64"}


def test_kernel_file(example, tmp_path):
    assert adapter.kernel_file(str(example / "kernel")) == ("amd64", "little")
    assert adapter.kernel_file(str(example / "kernel")).x86
    big = tmp_path / "ppc"
    big.write_bytes(b"\x7fELF\x02\x02\x01\x09" + bytes(8) + struct.pack(">HH", 2, 21)
                    + bytes(44))
    assert adapter.kernel_file(str(big)) == ("powerpc64", "big")
    for cls, arch in ((1, "mips"), (2, "mips64")):      # n64: the 64-bit MIPS tables
        mips = tmp_path / f"mips{cls}"
        mips.write_bytes(b"\x7fELF" + bytes([cls, 2, 1, 9]) + bytes(8)
                         + struct.pack(">HH", 2, 8) + bytes(44))
        assert adapter.kernel_file(str(mips)) == (arch, "big")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AdapterError, match=f"^{text}: kernel is not an ELF file$"):
        adapter.kernel_file(str(text))
    with pytest.raises(AdapterError, match="No such file or directory"):
        adapter.kernel_file(str(tmp_path / "absent"))


def test_kld_args():
    assert adapter.parse_kld_args([]) == (False, None)
    assert adapter.parse_kld_args(["load"]) == (True, None)
    assert adapter.parse_kld_args(["load", "all"]) == (True, None)
    assert adapter.parse_kld_args(["load", "zfs.ko"]) == (True, "zfs.ko")
    for bad in (["unload"], ["load", "a", "b"]):
        with pytest.raises(AdapterError, match=r"^usage: kvm-kld \[load \[NAME\|all\]\]$"):
            adapter.parse_kld_args(bad)
    assert adapter.HELP["kvm-kld"].syntax == "kvm-kld [load [NAME|all]]"


def test_help_and_usage():
    assert set(adapter.HELP) == {"kvm-open", "kvm-close", "kvm-info", "kvm-ps", "kvm-dmesg",
                                 "kvm-crashinfo", "kvm-kld", "kvm-proc", "kvm-tid"}
    assert adapter.help_doc("kvm-open").startswith(
        "Open a FreeBSD kernel crash dump: kvm-open [-w] [--key FILE] [--dump-key FILE] "
        "[--cache-dir DIR] [--sysroot DIR] [-n N [--crashdir DIR]] [KERNEL] CORE.\n\n")
    assert adapter.help_doc("kvm-ps") == "List the processes of the dump: kvm-ps."
    assert adapter.OPEN_USAGE == "usage: " + adapter.HELP["kvm-open"].syntax


def test_quote_round_trips_through_a_shell_like_parser():
    for text in ("/tmp/a b/kernel", 'we"ird\\path', "plain"):
        assert shlex.split(adapter.quote(text)) == [text]


def test_error_line_and_symbolic():
    assert adapter.error_line("error: no such file\nmore\n", "x") == "no such file"
    assert adapter.error_line("error: expression failed to parse:\nerror: bad token", "e") == \
        "expression failed to parse: bad token"
    assert adapter.error_line("", "target create") == "target create: failed"
    assert adapter.symbolic(0x1010, "0x1010 <sched_switch+16>") == ("sched_switch", 0x1000)
    assert adapter.symbolic(0x1000, "0x1000 <btext>") == ("btext", 0x1000)
    assert adapter.symbolic(0x1000, "0x1000") is None


def test_guarded_commands():
    def fail(e: BaseException):
        def body():
            raise e
        return body
    assert adapter.run_guarded("kvm-x", lambda: None) is None
    assert adapter.run_guarded("kvm-x", fail(AdapterError("bad"))) == "kvm-x: bad"
    assert adapter.run_guarded("kvm-x", fail(KeyboardInterrupt())) == "kvm-x: interrupted"
    assert adapter.run_guarded("kvm-x", fail(KeyError("k"))) == \
        "kvm-x: internal error: KeyError: 'k'"
    with pytest.raises(OSError):
        adapter.run_guarded("kvm-x", fail(OSError("gdb's own")), (OSError,))
    assert adapter.text_block(["a", "", "b\n"]) == "a\nb\n"
    with pytest.raises(AdapterError, match="takes no arguments"):
        adapter.no_args(" x ")
    adapter.no_args([])


def test_descriptor_needs_a_dump():
    with pytest.raises(AdapterError, match=r"^no dump is open \(use kvm-open"):
        adapter.descriptor({"server": None, "kvm": None})


def test_require_symbols():
    adapter.require_symbols("k", {"allproc": 1, "hz": None}, "gdb", "X")
    with pytest.raises(AdapterError) as e:
        adapter.require_symbols("/k", {"allproc": None}, "gdb", "'symbol-file FILE'")
    assert str(e.value) == ("/k: gdb has no symbols for this kernel (no symbol table and no "
                            "separate debug file found): load them with 'symbol-file FILE', "
                            "then retry")


def test_unwind_reply():
    assert adapter.parse_unwind_reply("") is None
    module = adapter.parse_unwind_reply("/tmp/d/kernel.unwind\nffff1000 end\nffff2000 trap\n")
    assert module == ("/tmp/d/kernel.unwind", {0xFFFF1000: "end", 0xFFFF2000: "trap"})


# -- the frame unwinder's decisions ------------------------------------------------

def _q(v: int) -> bytes:
    return v.to_bytes(8, "little")


MEM = {0x1000: _q(0x1100), 0x1008: _q(0xFFFFFFFF80001234),     # frame record
       0x1100: _q(0x1200), 0x1108: _q(0)}                      # ... whose caller ends


def _read(addr: int, n: int):
    return MEM.get(addr, b"")[:n] or None


def _unwinder() -> FrameUnwinder:
    return FrameUnwinder("amd64", "little", {"osreldate": None},
                         adapter.register_names("amd64"))


def test_frame_unwinder_steps_and_leaves_frames_to_the_fdes():
    u = _unwinder()
    assert u.wanted == ("rip", "rsp", "rbp") and u.names["rflags"] == "eflags"
    regs = {"rip": 0xFFFFFFFF80000010, "rsp": 0xFF0, "rbp": 0x1000}
    step = u.step(regs, 0, _read, lambda pc: None)
    assert step.caller == {"rip": 0xFFFFFFFF80001234, "rsp": 0x1010, "rbp": 0x1100}
    assert step.stack == 0x1010
    end = u.step(step.caller, 1, _read, lambda pc: None)
    assert end == (0x1010, step.caller)     # no FDE: the frame itself (gdb stops there)
    u.kinds = {0xFFFFFFFF80001234: "end"}
    assert u.step(step.caller, 1, _read, lambda pc: None) is None   # the FDE says outermost
    u.kinds = {0xFFFFFFFF80000010: "end"}   # an end FDE where this thread goes on: ours
    assert u.step(regs, 0, _read, lambda pc: None).caller == step.caller


def test_frame_unwinder_trap_frames_go_to_the_signal_fde():
    u = _unwinder()
    sp, pc = 0x2000, 0xFFFFFFFF80000108
    lay = archdata.arch_info("amd64").trap_layouts["default"]
    frame = bytearray(lay.size)
    slots = dict(lay.slots)
    for name, value in (("rip", 0xFFFFFFFF80005555), ("rsp", 0x2800), ("rbp", 0x3000)):
        frame[slots[name]:slots[name] + 8] = _q(value)

    def read(addr: int, n: int):
        return bytes(frame[addr - sp:addr - sp + n]) if sp <= addr < sp + lay.size else None

    def function_at(p: int):
        return ("calltrap", 0xFFFFFFFF80000100)
    regs = {"rip": pc, "rsp": sp, "rbp": 0x1000}
    step = u.step(regs, 1, read, function_at)
    assert (step.caller["rip"], step.caller["rsp"]) == (0xFFFFFFFF80005555, 0x2800)
    u.kinds = {pc: "trap"}
    assert u.step(regs, 1, read, function_at) is None


def test_frame_ids_never_go_inward():
    """A kernel stack switch (interrupt stack -> thread stack) must not make
    gdb stop with "previous frame inner to this frame"."""
    u = _unwinder()
    mem = {0x9000: _q(0x500), 0x9008: _q(0xFFFFFFFF80002000)}   # caller's frame is lower
    regs = {"rip": 0xFFFFFFFF80000010, "rsp": 0x8FF0, "rbp": 0x9000}
    step = u.step(regs, 0, lambda a, n: mem.get(a, b"")[:n] or None, lambda pc: None)
    assert step.caller["rsp"] == 0x9010 and step.stack == 0x9010
    nxt = u.step(step.caller, 1, lambda a, n: {0x500: _q(0x600), 0x508: _q(0xFFFFFFFF80003000)}
                 .get(a, b"")[:n] or None, lambda pc: None)
    assert nxt.caller["rsp"] == 0x510 and nxt.stack == 0x9010


def test_cached_facts_follow_the_symbol_files():
    u = _unwinder()
    calls = []
    assert u.cached("f", 1, lambda pc: calls.append(pc) or "x", generation=1) == "x"
    assert u.cached("f", 1, lambda pc: calls.append(pc) or "y", generation=1) == "x"
    assert u.cached("f", 1, lambda pc: calls.append(pc) or "z", generation=2) == "z"
    assert calls == [1, 1]


def test_unsupported_arch():
    with pytest.raises(AdapterError, match="no unwinding rules"):
        FrameUnwinder("vax", "little", {}, {})


def test_frame_unwinder_on_mips():
    """o32: the caller of a PCB inside savectx is ``ra`` (read too); gdb holds
    KSEG0 addresses sign-extended and names registers by their ABI names."""
    u = FrameUnwinder("mips", "big", {}, adapter.register_names("mips"))
    assert u.wanted == ("pc", "sp", "s8", "ra")
    assert (u.names["sp"], u.names["s8"], u.names["ra"]) == ("sp", "s8", "ra")
    asked = []

    def render(addr: int) -> str:
        asked.append(addr)
        return "0xffffffff80140024 <savectx+36>"
    assert u.function_at(0x80140024, render) == ("savectx", 0x80140000)
    assert asked == [0xFFFFFFFF80140024]
    step = u.step({"pc": 0x80140024, "sp": 0xC1007CF0, "s8": 7, "ra": 0x80141B44}, 0,
                  lambda a, n: None, lambda pc: ("savectx", 0x80140000))
    assert step.caller == {"pc": 0x80141B44, "sp": 0xC1007CF0, "s8": 7}
    assert FrameUnwinder("mips64", "big", {}, adapter.register_names("mips64")).mask == \
        (1 << 64) - 1
