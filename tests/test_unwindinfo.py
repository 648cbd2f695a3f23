"""kvm_dbg.unwindinfo without a debugger: the gdb module and the lldb kernel
stand-in read back with pyelftools, their CFI checked against the library's
frames and the trapframe layouts, the i386 esp expression evaluated."""

from __future__ import annotations

import io
import struct
import zlib

import fixturegen
import pytest
from fixturegen.kernelstate import default_spec
from realdumps import REAL_DUMPS, real_dump_factory  # noqa: F401 (fixture)

import kvm_dbg
from kvm_dbg import unwindinfo
from kvm_dbg.kstate import archdata
from kvm_dbg.unwindinfo import END, Function, PcRules, Rule

elftools = pytest.importorskip("elftools")
from elftools.elf.elffile import ELFFile  # noqa: E402

AMD64_TRAP = archdata.arch_info("amd64").trap_layouts["default"]


def _elf(data: bytes) -> ELFFile:
    assert data is not None
    return ELFFile(io.BytesIO(data))


def _fdes(elf: ELFFile) -> list:
    return [e for e in elf.get_dwarf_info().EH_CFI_entries() if type(e).__name__ == "FDE"]


def _eval(expr: list, cfa: int, mem: dict, width: int) -> int:
    """A DWARF stack machine for the operations the generator emits."""
    code, stack, i = bytes(expr), [cfa], 0
    mask = (1 << (8 * width)) - 1

    def leb(signed: bool) -> int:
        nonlocal i
        v = shift = 0
        while True:
            b = code[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return v - (1 << shift) if signed and b & 0x40 else v

    while i < len(code):
        op = code[i]
        i += 1
        if 0x30 <= op < 0x50:
            stack.append(op - 0x30)
        elif op == 0x11:
            stack.append(leb(True) & mask)
        elif op == 0x23:
            stack.append((stack.pop() + leb(False)) & mask)
        elif op == 0x06:
            stack.append(mem[stack.pop()])
        elif op == 0x12:
            stack.append(stack[-1])
        elif op in (0x1A, 0x22):
            b, a = stack.pop(), stack.pop()
            stack.append({0x1A: a & b, 0x22: (a + b) & mask}[op])
        elif op in (0x28, 0x2F):
            off = struct.unpack_from("<h", code, i)[0]
            i += 2
            if op == 0x2F or stack.pop():
                i += off
        else:
            raise AssertionError(f"unexpected DW_OP 0x{op:x}")
    return stack[-1]


def _trap(adjust: int = 0, layout=AMD64_TRAP) -> Rule:
    return Rule("trap", adjust, layout)


def test_gdb_module_trap_and_end():
    """FDEs only (nothing that could name a frame); trap FDEs are signal
    frames restoring every trapframe slot, end FDEs leave the return address
    undefined."""
    pc, end = 0xFFFF_FFFF_8000_1000, 0xFFFF_FFFF_8000_2000
    rules = {pc: PcRules(_trap(), _trap()), end: PcRules(None, None, ends=True),
             0xFFFF_FFFF_8000_3000: PcRules(None, None)}        # plain frame: no FDE
    elf = _elf(unwindinfo.build_gdb_module("amd64", unwindinfo.gdb_regions(rules)))
    assert elf["e_machine"] == "EM_X86_64" and elf["e_ident"]["EI_OSABI"] == "ELFOSABI_FREEBSD"
    assert not any(s["sh_flags"] & 2 for s in elf.iter_sections())       # nothing allocated
    assert elf.get_section_by_name(".symtab") is None
    trap, stop = _fdes(elf)
    assert [(f["initial_location"], f["address_range"]) for f in (trap, stop)] == \
        [(pc - 2, 3), (end - 2, 3)]
    assert b"S" in trap.cie.header["augmentation"]
    assert b"S" not in stop.cie.header["augmentation"]
    row = trap.get_decoded().table[-1]
    assert row["pc"] == pc
    assert (row["cfa"].reg, row["cfa"].offset) == (7, AMD64_TRAP.size)
    slots = dict(AMD64_TRAP.slots)
    for name, num in (("rip", 16), ("rsp", 7), ("rbp", 6), ("rbx", 3), ("r15", 15)):
        assert (row[num].type, row[num].arg) == ("OFFSET", slots[name] - AMD64_TRAP.size), name
    for row in stop.get_decoded().table[1:]:
        assert row[16].type == "UNDEFINED"


def test_gdb_module_trap_stub_end_is_signal_frame():
    """A kthread's fork_trampoline: kgdb shows it as a signal frame and stops."""
    pc = 0xFFFF_FFFF_8000_1000
    elf = _elf(unwindinfo.build_gdb_module(
        "amd64", unwindinfo.gdb_regions({pc: PcRules(_trap(), _trap(), ends=True)})))
    (fde,) = _fdes(elf)
    assert b"S" in fde.cie.header["augmentation"]
    assert all(r[16].type == "UNDEFINED" for r in fde.get_decoded().table[1:])


def test_i386_trap_esp():
    lay = archdata.arch_info("i386").trap_layouts["default"]
    slots = dict(lay.slots)
    rules = {0x1000: PcRules(_trap(4, lay), _trap(4, lay))}
    row = _fdes(_elf(unwindinfo.build_gdb_module("i386", unwindinfo.gdb_regions(rules))))[0] \
        .get_decoded().table[1]
    cfa = 0x5000 + 4 + lay.size
    base = cfa - lay.size
    kernel = {base + slots["cs"]: 0x20}
    user = {base + slots["cs"]: 0x33, base + slots["esp"]: 0xBEEF0}
    assert _eval(row[4].arg, cfa, kernel, 4) == base + lay.size - 8
    assert _eval(row[4].arg, cfa, user, 4) == 0xBEEF0


def test_arm64_big_endian_and_unsupported():
    lay = archdata.arch_info("arm64").trap_layouts["new"]
    rules = {0x100: PcRules(_trap(0, lay), _trap(0, lay)), 0x101: PcRules(None, None, ends=True),
             0x200: PcRules(None, None, ends=True)}
    elf = _elf(unwindinfo.build_gdb_module("arm64", unwindinfo.gdb_regions(rules), "big"))
    assert elf.little_endian is False and elf["e_machine"] == "EM_AARCH64"
    fdes = _fdes(elf)
    assert [f["initial_location"] for f in fdes] == [0xFE, 0x1FE]      # overlaps dropped
    assert fdes[0].cie["return_address_register"] == 32              # the trapframe's pc
    assert fdes[1].cie["return_address_register"] == 30             # lr
    assert unwindinfo.build_gdb_module("sparc64", unwindinfo.gdb_regions(rules)) is None
    assert unwindinfo.build_gdb_module("amd64", []) is None


class _Kernel:
    """What build_lldb_image reads of a KernelImage."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ident = kvm_dbg.elfkernel.KernelImage(path).ident
        self.sections = kvm_dbg.elfkernel.KernelImage(path).sections


@pytest.mark.parametrize("uuid", [bytes.fromhex("9c81619b"), bytes(range(20))])
def test_lldb_image(example, uuid):
    """The stand-in has the kernel's allocated sections (no file bytes), the
    kernel's UUID as lldb computes it, and one FDE per trap-entry stub."""
    kernel = str(example / "kernel")
    with kvm_dbg.open(kernel, str(example / "vmcore.0")) as kvm:
        rules = unwindinfo.collect(kvm)
        image = kvm.kernel
        sections = unwindinfo.kernel_sections(image)
        regions = unwindinfo.lldb_regions(
            rules, lambda pc: any(s.addr <= pc < s.addr + s.size for s in sections))
        data = unwindinfo.build_lldb_image("amd64", regions, image, uuid)
        stubs = {r.function for r in rules.values() if r.trap}
    elf = _elf(data)
    assert elf["e_entry"] == image.ident.entry and elf["e_ident"]["EI_OSABI"] == "ELFOSABI_FREEBSD"
    copied = [(s.name, s["sh_addr"], s["sh_size"], s["sh_type"]) for s in elf.iter_sections()
              if s["sh_flags"] & 2 and s.name.startswith(".") and s["sh_type"] == "SHT_NOBITS"]
    assert copied == [(s.name, s.addr, s.size, "SHT_NOBITS") for s in sections]
    if len(uuid) == 4:
        link = elf.get_section_by_name(".gnu_debuglink").data()
        assert link.startswith(b"kernel\0")
        assert struct.unpack("<I", link[-4:])[0] == int.from_bytes(uuid, "little")
    else:
        note = next(elf.get_section_by_name(".note.gnu.build-id").iter_notes())
        assert note["n_type"] == "NT_GNU_BUILD_ID" and bytes.fromhex(note["n_desc"]) == uuid
    fdes = _fdes(elf)
    assert {f["initial_location"] for f in fdes} == {fn.start for fn in stubs}
    names = {fn.start: fn.name for fn in stubs}
    assert set(names.values()) >= {"calltrap", "nmi_calltrap", "fork_trampoline"}
    for f in fdes:
        # no signal frames for lldb: it would take a pc of 0 above one for a frame
        assert b"S" not in f.cie.header["augmentation"], names[f["initial_location"]]
        for row in f.get_decoded().table:
            assert (row["cfa"].reg, row["cfa"].offset - AMD64_TRAP.size) in ((7, 0), (7, 8))


def test_lldb_uuid_of_example_is_its_crc(example):
    """What lldb computes for a kernel with neither build-id nor debuglink
    (and what the stand-in's .gnu_debuglink carries): the file's CRC-32."""
    data = (example / "kernel").read_bytes()
    assert zlib.crc32(data).to_bytes(4, "little").hex().upper() == "9C81619B"


def test_collect_example(example):
    """Trap rules exactly at the frames the library unwound through a
    trapframe, ends exactly at the last frames."""
    with kvm_dbg.open(str(example / "kernel"), str(example / "vmcore.0")) as kvm:
        rules = unwindinfo.collect(kvm)
        frames = [t.frames() for t in kvm.threads()]
    traps = {f[i].pc for f in frames for i in range(len(f) - 1) if f[i + 1].kind == "trapframe"}
    lasts = {f[-1].pc for f in frames}
    assert {pc for pc, r in rules.items() if r.trap and not r.ends} == traps - lasts
    assert {pc for pc, r in rules.items() if r.ends} == lasts
    assert traps and lasts
    strlen = next(pc for f in frames for i, fr in enumerate(f) if i and f[i - 1].pc in traps
                  for pc in [fr.pc] if fr.function == "strlen")
    assert not rules[strlen].trap        # the faulting frame: plain frame-pointer rules


@pytest.mark.parametrize("name", REAL_DUMPS)
def test_collect_real_dump(real_dump_factory, name):  # noqa: F811
    """No trap-entry symbols in these kernels: only ends (each thread's last pc)."""
    dump = real_dump_factory(name)
    with kvm_dbg.open(dump.kernel, dump.core) as kvm:
        rules = unwindinfo.collect(kvm)
        ends = {t.backtrace()[-1] for t in kvm.threads()}
        nthreads = len(kvm.threads())
    want = {int(t["backtrace_pcs"][-1], 16) for t in dump.expected["threads"].values()
            if len(t["backtrace_pcs"]) > 1 or dump.arch == "arm64"}
    assert want <= ends == {pc for pc, r in rules.items() if r.ends}
    assert len(ends) < nthreads            # threads share last pcs: one FDE each
    assert not any(r.trap for r in rules.values())


def test_end_rule_is_not_a_trap():
    assert END.kind == "end" and PcRules(None, None, Function("f", 0, 0), True).kind() == "end"
    assert PcRules(_trap(), None).kind() == "trap" and PcRules(None, None).kind() is None


def test_lldb_arm64_states_frame_pointer_steps(tmp_path):
    """lldb 16's arm64 default plan leaves the caller's sp undefined, so its own
    frame-pointer unwinding stops at frame 1: on arm64 the stand-in describes
    every function of a frame, with the library's frame-pointer step."""
    fx = fixturegen.build("arm64", "minidump", 2, str(tmp_path), kstate=default_spec("arm64"))
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kvm:
        rules = unwindinfo.collect(kvm)
        sections = unwindinfo.kernel_sections(kvm.kernel)

        def covered(pc: int) -> bool:
            return any(s.addr <= pc < s.addr + s.size for s in sections)
        regions = unwindinfo.lldb_regions(rules, covered, chains=True)
        functions = {f.function for t in kvm.threads() for f in t.frames()}
        elf = _elf(unwindinfo.build_lldb_image("arm64", regions, kvm.kernel, b"\1\2\3\4"))
        starts = {kvm.kernel.lookup(name): name for name in functions}
    fdes = {f["initial_location"]: f for f in _fdes(elf)}
    assert set(fdes) == set(starts)
    for start, f in fdes.items():
        rows = f.get_decoded().table
        kinds = {row["cfa"].reg for row in rows[1:]}
        if f.cie["return_address_register"] == 30:          # a frame-pointer function
            assert kinds == {29}, starts[start]             # CFA = fp + 16
            assert (rows[0]["cfa"].reg, rows[0]["cfa"].offset) == (31, 0)   # entry: sp
        else:                                               # a trap stub: pc column 32
            assert starts[start].startswith("handle_") or starts[start] == "fork_trampoline"
    assert unwindinfo.lldb_regions(rules, covered) != regions     # without chains: stubs only


def test_lldb_image_leaves_the_kernels_own_eh_frame_out(example, tmp_path):
    """A kernel with an allocated .eh_frame: the stand-in's own .eh_frame is its only
    one (lldb would read either of two), the kernel's other sections are all there."""
    import shutil
    import subprocess
    objcopy = shutil.which("objcopy")
    assert objcopy, "objcopy is not installed (binutils)"
    cfi = tmp_path / "cfi"
    cfi.write_bytes(bytes(64))
    kernel = tmp_path / "kernel"
    subprocess.run([objcopy, "--add-section", f".eh_frame={cfi}", "--set-section-flags",
                    ".eh_frame=alloc,readonly", "--change-section-address",
                    ".eh_frame=0xffffffff81000000", str(example / "kernel"), str(kernel)],
                   check=True, capture_output=True)
    image = kvm_dbg.elfkernel.KernelImage(str(kernel))
    assert any(s.name == ".eh_frame" and s.flags & 2 for s in image.sections)
    pc = 0xFFFFFFFF80240759
    rules = {pc: PcRules(_trap(), _trap(), Function("calltrap", pc - 89, 0x100))}
    regions = unwindinfo.lldb_regions(rules, lambda p: True)
    elf = _elf(unwindinfo.build_lldb_image("amd64", regions, image, b"\1\2\3\4"))
    assert [s.name for s in elf.iter_sections()].count(".eh_frame") == 1
    assert elf.get_section_by_name(".eh_frame")["sh_type"] == "SHT_PROGBITS"
    assert {s.name for s in elf.iter_sections()} >= {".text", ".data", ".rodata"}
