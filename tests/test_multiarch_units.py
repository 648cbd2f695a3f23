"""The per-architecture pieces of cross-architecture debugging, without a debugger:
arm/MIPS innermost frames, MIPS prologues, powerpc trap frames, displaced (powerpc64)
symbols, the target descriptions gdb needs, the unwind-module rules for arm, powerpc and
MIPS, and the generator's default kernel state on every architecture (library vs manifest)."""

from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ET

import pytest
from elftools.elf.elffile import ELFFile
from fakedump import FakeDump, FakeKernel
from fixturegen import build
from fixturegen.example import EXAMPLES
from fixturegen.kernelstate import default_spec
from kldwarn import other_warnings

import kvm_dbg
from kvm_dbg import unwindinfo
from kvm_dbg.kstate.archdata import ARCHES, arch_info
from kvm_dbg.kstate.ksyms import Displaced
from kvm_dbg.kstate.unwind import caller_registers, unwind
from kvm_dbg.rsp import monitor
from kvm_dbg.rsp.regs import lldb_triple, regset_for, target_xml
from kvm_dbg.rsp.target import Target


class Syms:
    """function_at over {name: (start, size)}."""

    def __init__(self, funcs):
        self.funcs = funcs

    def function_at(self, pc):
        for name, (start, size) in self.funcs.items():
            if start <= pc < start + size:
                return name, start
        return None


# -- the library's unwinding ------------------------------------------------------

def test_arm_innermost_frame_is_savectx_whose_caller_is_lr():
    """swtch-v6.S: {r4-r12, sp, lr, pc} with pc inside savectx; the caller is lr at the
    same sp, then the r11 frame records."""
    kvm = FakeDump("arm", ptrsize=4)
    base = FakeKernel(kvm).alloc(0x100)
    fp = base + 0x40
    kvm.put_ptr(fp, 0)                                 # the caller's record ends the chain
    kvm.put_ptr(fp + 4, 0)
    syms = Syms({"savectx": (0xC0001000, 0x100), "doadump": (0xC0002000, 0x100)})
    frames = unwind(kvm, ARCHES["arm"], {"pc": 0xC0001024, "lr": 0xC0002040, "sp": base,
                                          "r11": fp}, syms=syms)
    assert [(f.pc, f.function, f.sp, f.fp) for f in frames] == [
        (0xC0001024, "savectx", base, fp), (0xC0002040, "doadump", base, fp)]
    # the same step for gdb's unwinder, frame 0 only
    regs = {"pc": 0xC0001024, "lr": 0xC0002040, "sp": base, "r11": fp}
    assert caller_registers("arm", regs, lambda a, n: kvm.read_partial(a, n), depth=0) == {
        "pc": 0xC0002040, "sp": base, "r11": fp}


def _mips_code(kvm, start: int, size: int, ra: int, s8: int) -> None:
    words = [0x27BD0000 | (-size & 0xFFFF), 0xAFBF0000 | ra, 0xAFBE0000 | s8, 0x03A0F021]
    kvm.store(start, b"".join(w.to_bytes(4, "big") for w in words) + bytes(0x40))


def test_mips_prologue_and_leaf():
    """o32: the frame size and the ra/s8 slots from the prologue; a function without one
    (fork_trampoline) ends the backtrace."""
    kvm = FakeDump("mips", byteorder="big", ptrsize=4)
    k = FakeKernel(kvm)
    _mips_code(kvm, 0x80001000, 0x28, 0x24, 0x20)           # kern_reboot
    kvm.store(0x80002000, bytes(0x80))                       # fork_trampoline: no prologue
    sp = k.alloc(0x200)
    kvm.put_ptr(sp + 0x24, 0x80002010)                       # saved ra
    kvm.put_ptr(sp + 0x20, 0x12345678)                       # saved s8
    syms = Syms({"savectx": (0x80000100, 0x40), "kern_reboot": (0x80001000, 0x100),
                 "fork_trampoline": (0x80002000, 0x100)})
    frames = unwind(kvm, ARCHES["mips"], {"pc": 0x80000120, "ra": 0x80001030, "sp": sp,
                                           "s8": 7}, syms=syms)
    assert [(f.pc, f.function) for f in frames] == [
        (0x80000120, "savectx"), (0x80001030, "kern_reboot"), (0x80002010, "fork_trampoline")]
    assert (frames[2].sp, frames[2].fp) == (sp + 0x28, 0x12345678)


def test_mips_trap_frame_above_the_callframe():
    """MipsKernGenException: struct trapframe at sp + CALLFRAME_SIZ (24 on o32)."""
    kvm = FakeDump("mips", byteorder="big", ptrsize=4)
    sp = FakeKernel(kvm).alloc(0x200)
    tf = sp + 24
    kvm.put_ptr(tf + 29 * 4, 0xC0001000)     # sp
    kvm.put_ptr(tf + 30 * 4, 0xC0001010)     # s8
    kvm.put_ptr(tf + 37 * 4, 0x80003044)     # pc
    kvm.put_ptr(tf + 36 * 4, 8)              # cause
    syms = Syms({"MipsKernGenException": (0x80000400, 0x100), "strlen": (0x80003000, 0x100)})
    got = caller_registers("mips", {"pc": 0x80000450, "sp": sp},
                           lambda a, n: kvm.read_partial(a, n), depth=1,
                           byteorder="big", function_at=syms.function_at)
    assert (got["pc"], got["sp"], got["s8"], got["cause"]) == (0x80003044, 0xC0001000,
                                                                0xC0001010, 8)


@pytest.mark.parametrize("width,header", [(8, 48), (4, 8)])
def test_powerpc_trap_frame(width, header):
    """trapexit: struct trapframe (fixreg[32], lr, cr, xer, ctr, srr0...) above the
    call-frame header FRAME_SETUP keeps (48 bytes on powerpc64, 8 on powerpc)."""
    arch = "powerpc64" if width == 8 else "powerpc"
    kvm = FakeDump(arch)
    sp = FakeKernel(kvm).alloc(0x400)
    tf = sp + header
    kvm.put_ptr(tf + 1 * width, 0xC0005000)        # r1
    kvm.put_ptr(tf + 3 * width, 0)                 # r3
    kvm.put_ptr(tf + 36 * width, 0xC0004444)       # srr0
    kvm.put_ptr(tf + 37 * width, 0x9032)           # srr1
    syms = Syms({"trapexit": (0xC0000800, 0x100)})
    got = caller_registers(arch, {"pc": 0xC0000850, "r1": sp},
                           lambda a, n: kvm.read_partial(a, n), depth=1, byteorder="big",
                           function_at=syms.function_at)
    assert (got["pc"], got["r1"], got["msr"], got["r3"]) == (0xC0004444, 0xC0005000, 0x9032, 0)


def test_displaced_symbols():
    """powerpc64: run-time pcs are named by the link-time symbols plus kvm_kerndisp."""

    class Image:
        def function_at(self, pc):
            return ("doadump", 0x140100) if 0x140100 <= pc < 0x140200 else None

        def size(self, name):
            return 0x100

    disp = 0xC000000000F00000
    syms = Displaced(Image(), disp)
    assert syms.function_at(0x140124 + disp) == ("doadump", 0x140100 + disp)
    assert syms.function_at(0x140124) is None and syms.size("doadump") == 0x100


def test_mips_n64_and_n32_tables():
    assert arch_info("mips", 8).pcb_layouts["default"].slots[0] == ("s0", 74 * 8)
    assert arch_info("mips", 4).trap_layouts["default"].offset == 24
    assert arch_info("mips", 8).trap_layouts["default"].offset == 32


# -- what the debuggers get -------------------------------------------------------------

def test_mips_target_description():
    """gdb's mips-cpu, mips-cp0 and mips-fpu features (gdb refuses one without all three),
    regnums as in its XML, registers shown by their ABI names."""
    rs = regset_for("mips", 4)
    root = ET.fromstring(target_xml(rs))
    feats = {f.get("name"): {r.get("name"): int(r.get("regnum")) for r in f}
             for f in root.iter("feature")}
    assert set(feats) == {"org.gnu.gdb.mips.cpu", "org.gnu.gdb.mips.cp0",
                          "org.gnu.gdb.mips.fpu"}
    cpu, cp0, fpu = (feats[f"org.gnu.gdb.mips.{n}"] for n in ("cpu", "cp0", "fpu"))
    assert cpu == {**{f"r{i}": i for i in range(32)}, "lo": 33, "hi": 34, "pc": 37}
    assert cp0 == {"status": 32, "badvaddr": 35, "cause": 36}
    assert fpu == {**{f"f{i}": 38 + i for i in range(32)}, "fcsr": 70, "fir": 71}
    assert [r.regnum for r in rs.regs] == list(range(72))
    assert {rs.user_name(rs.by_num[i]) for i in (29, 30, 31)} == {"sp", "s8", "ra"}
    assert {r.get("bitsize") for r in root.iter("reg")} == {"32"}
    assert {r.bitsize for r in regset_for("mips", 8).regs} == {64}


def test_riscv_description_has_the_fpu_gdb_requires():
    root = ET.fromstring(target_xml(regset_for("riscv")))
    assert [f.get("name") for f in root.iter("feature")] == ["org.gnu.gdb.riscv.cpu",
                                                             "org.gnu.gdb.riscv.fpu"]


def test_lldb_triples_follow_the_byte_order():
    assert lldb_triple(regset_for("mips", 4), "big") == "mips-unknown-freebsd"
    assert lldb_triple(regset_for("mips", 4), "little") == "mipsel-unknown-freebsd"
    assert lldb_triple(regset_for("powerpc64"), "little") == "powerpc64le-unknown-freebsd"
    assert lldb_triple(regset_for("arm"), "big") == "armeb-unknown-freebsd"


def test_displaced_kernel_entry_and_kerndisp_query():
    """AT_ENTRY and ``monitor kerndisp``: the run-time entry, the displacement."""

    class Kvm:
        arch, byteorder, ptrsize, kernel_entry = "powerpc64", "big", 8, 0x100100
        kerndisp = 0xC000000000F00000 - (1 << 64)

        def threads(self):
            return []

    t = Target(Kvm())
    assert t.entry() == 0xC000000001000100
    assert monitor.run(t, "kerndisp") == f"{Kvm.kerndisp:#x}\n"


def _fde_rows(data: bytes) -> list:
    elf = ELFFile(io.BytesIO(data))
    return [e.get_decoded().table for e in elf.get_dwarf_info().EH_CFI_entries()
            if type(e).__name__ == "FDE"]


def _rows(arch: str, caller, inner, order: str = "little") -> list:
    """The decoded rows of a gdb module FDE [0xffe, 0x1001): entry, caller, inner."""
    R = unwindinfo.Rule
    region = unwindinfo.Region(0xFFE, 0x1001, ((0xFFE, unwindinfo.ENTRY), (0xFFF, caller),
                                               (0x1000, inner)), False)
    assert R("end").kind == "end"
    (rows,) = _fde_rows(unwindinfo.build_gdb_module(arch, [region], order))
    return rows


def test_unwind_rules_for_arm_powerpc_mips():
    R = unwindinfo.Rule
    # arm: innermost row inside savectx = same sp, return address in lr
    rows = _rows("arm", R("chain"), R("leaf"))
    inner = rows[2]
    assert (inner["cfa"].reg, inner["cfa"].offset) == (13, 0) and inner[14].type == "SAME_VALUE"
    # rows of different shapes: the caller's frame-record rule does not leak into it
    assert rows[1][11].type == "OFFSET" and 11 not in inner
    # powerpc64: CFA = [r1] (an expression), lr at CFA + 16
    rows = _rows("powerpc64", R("backchain"), R("backchain"), "big")
    assert rows[1]["cfa"].expr == [0x71, 0x00, 0x06] and rows[1][65].arg == 16
    # mips: CFA = sp + frame size; ra and s8 where the prologue stored them
    rule = R("prologue", 0x28, saved=((30, 0x20), (31, 0x24)))
    rows = _rows("mips", rule, rule, "big")
    assert (rows[1]["cfa"].reg, rows[1]["cfa"].offset) == (29, 0x28)
    assert (rows[1][31].arg, rows[1][30].arg) == (-4, -8)
    # the end of a chain: a valid CFA, no return address
    rows = _rows("powerpc", unwindinfo.END, unwindinfo.END, "big")
    assert (rows[2]["cfa"].reg, rows[2][65].type) == (1, "UNDEFINED")


@pytest.mark.parametrize("arch,ra", [("powerpc64", 65), ("mips", 31), ("riscv", 64)])
def test_trap_rules_put_the_pc_in_the_return_column(arch, ra):
    """powerpc and MIPS have no pc column: the trapframe's pc is the return
    address (lr/ra), whose own slot is then not stated; riscv (gdb only) uses
    its psABI's alternate return column and states ra from its slot."""
    info = arch_info(arch, 4 if arch == "mips" else 8)
    lay = info.trap_layouts["default"]
    rule = unwindinfo.Rule("trap", lay.offset, lay)
    row = _rows(arch, rule, rule, "little" if arch == "riscv" else "big")[2]
    slots = dict(lay.slots)
    assert (row["cfa"].reg, row["cfa"].offset) == (unwindinfo.DWARF_ARCHES[arch].regs[info.sp],
                                                   lay.offset + lay.size)
    assert row[ra].arg == slots[lay.pc] - lay.size
    if arch == "riscv":
        assert row[1].arg == slots["ra"] - lay.size
    assert len([c for c in row if isinstance(c, int)]) >= 30


def test_mips_fdes_end_at_even_addresses():
    """gdb clears bit 0 of a MIPS code address (the ISA bit): an FDE ending at
    pc + 1 would end at pc, before the pc it describes."""
    R, P = unwindinfo.Rule, unwindinfo.PcRules
    lay = arch_info("mips", 4).trap_layouts["default"]
    rules = {0x80001010: P(R("trap", lay.offset, lay), R("trap", lay.offset, lay))}
    d = unwindinfo.DWARF_ARCHES["mips"]
    (region,) = unwindinfo.gdb_regions(rules, d.end_align)
    assert (region.start, region.end) == (0x8000100E, 0x80001012)
    (region,) = unwindinfo.gdb_regions(rules, unwindinfo.DWARF_ARCHES["arm"].end_align)
    assert region.end == 0x80001011


class _Image:
    """What build_lldb_image reads of a KernelImage."""

    def __init__(self, arch: str, order: str, machine: int, flags: int):
        from kvm_dbg.elfkernel import ElfIdent, Section
        self.path = "/boot/kernel/kernel"
        self.ident = ElfIdent(32, order, 2, machine, flags, 0x1000, 9)
        self.sections = [Section(".text", 1, 6, 0x1000, 0x1000, 0x200, 0),
                         Section(".data", 1, 3, 0x2000, 0x2000, 0x100, 0)]


def test_lldb_stand_in_describes_every_function_of_a_frame():
    """arm (lldb cannot unwind a kernel without CFI): one FDE per function of a frame,
    from its first byte; no section or symbol of its own (names are the kernel's)."""
    R, P, F = unwindinfo.Rule, unwindinfo.PcRules, unwindinfo.Function
    f, g = F("f", 0x1000, 0x100), F("g", 0x1100, 0x100)
    rules = {0x1040: P(R("chain"), R("leaf"), f), 0x1080: P(R("chain"), R("chain"), f),
             0x1120: P(R("chain"), R("chain"), g, ends=True)}
    regions = unwindinfo.lldb_regions(rules, lambda pc: 0x1000 <= pc < 0x1200,
                                      unwindinfo.DWARF_ARCHES["arm"].lldb_chains)
    data = unwindinfo.build_lldb_image("arm", regions, _Image("arm", "little", 40, 0x5000400),
                                       b"\1\2\3\4")
    elf = ELFFile(io.BytesIO(data))
    assert elf["e_flags"] == 0x5000400 and elf.get_section_by_name(".symtab") is None
    assert [(s.name, s["sh_type"], s["sh_addr"]) for s in elf.iter_sections()][1:3] == [
        (".text", "SHT_NOBITS", 0x1000), (".data", "SHT_NOBITS", 0x2000)]
    fdes = [e for e in elf.get_dwarf_info().EH_CFI_entries() if type(e).__name__ == "FDE"]
    assert [(e["initial_location"], e["address_range"]) for e in fdes] == [(0x1000, 0x100),
                                                                          (0x1100, 0x100)]
    table = fdes[0].get_decoded().table
    assert [row["pc"] for row in table] == [0x1000, 0x103F, 0x1040, 0x107F, 0x1080]
    assert table[2][14].type == "SAME_VALUE" and 11 not in table[2]    # leaf, restored
    assert table[3][11].type == "OFFSET"                                # r11 frame record
    # where every backtrace ends, a chain rule still says so itself (return address 0)
    assert fdes[1].get_decoded().table[-1][14].type == "VAL_EXPRESSION"
    # a rule that cannot (a NULL back chain, a MIPS function without prologue) ends it
    ppc = unwindinfo.lldb_regions({0x1120: P(R("backchain"), R("backchain"), g, ends=True)},
                                  lambda pc: True, True)
    assert ppc[0].rows[-1] == (0x1120, unwindinfo.END)
    assert unwindinfo.build_lldb_image("riscv", regions, _Image("riscv", "little", 243, 5),
                                       b"\1\2\3\4") is None      # lldb 16: no RISC-V ABI


# -- the generator's default kernel state on every architecture --------------------

@pytest.mark.parametrize("arch", ["arm", "riscv", "powerpc64", "powerpc", "mips"])
def test_default_spec_on_other_arches(tmp_path, arch):
    """Ten processes (a zombie among them), 14 threads, klds, message buffer: the
    library reads what the generator wrote."""
    ex = EXAMPLES[arch]
    fx = build(arch, ex.fmt, ex.version, str(tmp_path),
               kstate=default_spec(arch, ex.osreldate), **ex.options)
    k = fx.manifest.kstate
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        got = kd.threads()
        assert [(t.tid, t.name) for t in got] == [(t.tid, t.name) for t in k.threads]
        for t, want in zip(got, k.threads):
            assert [f.pc for f in t.frames()] == want.backtrace, t.name
            assert [f.function for f in t.frames()] == want.functions, t.name
            assert t.registers == want.registers
        assert [(p.pid, p.comm) for p in kd.procs()] == [(p.pid, p.comm) for p in k.procs]
        assert [(m.name, m.address) for m in kd.klds()] == [(m.name, m.address)
                                                             for m in k.klds]
        assert kd.msgbuf().text == k.msgbuf_text and other_warnings(kd.warnings) == []


def test_stopped_cpus_words_in_kernel_order(tmp_path):
    """cpuset_t is an array of longs: on a big-endian kernel CPU 0 is in the first word."""
    ex = EXAMPLES["powerpc"]
    fx = build("powerpc", ex.fmt, ex.version, str(tmp_path),
               kstate=default_spec("powerpc", ex.osreldate), **ex.options)
    addr = fx.manifest.kstate.symbols["stopped_cpus"]
    word = fx.machine.read_va(addr, 4)
    assert struct.unpack(">I", word)[0] == 1          # CPU 0 stopped, CPU 1 crashed
