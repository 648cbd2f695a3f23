"""The unwind module of kvm_dbg.unwindinfo: its ELF and CFI read back with
pyelftools (no lldb), its rules evaluated, and lldb's ``bt`` through it."""

from __future__ import annotations

import io
import re
import struct
import subprocess

import pytest
from realdumps import REAL_DUMPS, real_dump_factory  # noqa: F401 (fixture)
from test_lldb_plugin import PLUGIN, TIMEOUT, _lldb

from kvm_dbg import unwindinfo
from kvm_dbg.kstate import archdata
from kvm_dbg.unwindinfo import PcRules, Rule

elftools = pytest.importorskip("elftools")
from elftools.elf.elffile import ELFFile  # noqa: E402

CHAIN = PcRules(Rule("chain"), Rule("chain"), True)


def _elf(arch: str, rules: dict, order: str = "little") -> ELFFile:
    data = unwindinfo.build_elf(arch, rules, order)
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
        elif op == 0x10:
            stack.append(leb(False))
        elif op == 0x11:
            stack.append(leb(True) & mask)
        elif op == 0x23:
            stack.append((stack.pop() + leb(False)) & mask)
        elif op == 0x06:
            stack.append(mem[stack.pop()])
        elif op == 0x12:
            stack.append(stack[-1])
        elif op == 0x13:
            stack.pop()
        elif op == 0x16:
            stack[-1], stack[-2] = stack[-2], stack[-1]
        elif op in (0x1A, 0x21, 0x22, 0x25, 0x29, 0x2E):
            b, a = stack.pop(), stack.pop()
            stack.append({0x1A: a & b, 0x21: a | b, 0x22: (a + b) & mask, 0x25: a >> b,
                          0x29: int(a == b), 0x2E: int(a != b)}[op])
        elif op in (0x28, 0x2F):
            off = struct.unpack_from("<h", code, i)[0]
            i += 2
            if op == 0x2F or stack.pop():
                i += off
        else:
            raise AssertionError(f"unexpected DW_OP 0x{op:x}")
    return stack[-1]


@pytest.mark.parametrize("arch,fp,ra,cfa", [("amd64", 6, 16, 16), ("i386", 5, 8, 8),
                                            ("arm64", 29, 30, 16)])
def test_chain_rule(arch, fp, ra, cfa):
    info = archdata.arch_info(arch)
    width = info.width
    pc = 0x1000_0040
    elf = _elf(arch, {pc: CHAIN})
    assert elf["e_ident"]["EI_OSABI"] == "ELFOSABI_FREEBSD"
    text = [s for s in elf.iter_sections() if s.name.startswith(".text.kvm_unwind")]
    assert [(s["sh_addr"], s["sh_size"], s["sh_type"]) for s in text] == \
        [(pc - 2, 3, "SHT_NOBITS")]
    sym = [s for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name]
    assert [(s.name, s["st_value"], s["st_size"], s["st_info"]["type"]) for s in sym] == \
        [("??", pc - 2, 2, "STT_FUNC")]    # readable code: the pc is left outside
    (fde,) = _fdes(elf)
    assert fde.cie["return_address_register"] == ra
    assert (fde["initial_location"], fde["address_range"]) == (pc - 2, 3)
    rows = fde.get_decoded().table
    assert [r["pc"] for r in rows] == [pc - 2, pc - 1, pc]
    for row in rows[1:]:   # callers (pc backed up by one) and the innermost frame
        assert (row["cfa"].reg, row["cfa"].offset) == (fp, cfa)
        assert (row[fp].type, row[fp].arg) == ("OFFSET", -cfa)
        assert row[ra].type == "VAL_EXPRESSION"
        expr, fpv = row[ra].arg, 0x8000_0000
        c = fpv + cfa
        ret = 0x1000_1234
        good = {fpv: fpv + 0x100, fpv + width: ret}
        assert _eval(expr, c, good, width) == ret
        # the library's stop checks: saved fp 0 or 1, caller's CFA misaligned -> pc 0
        for saved in (0, 1, fpv + 0x101):
            assert _eval(expr, c, {fpv: saved, fpv + width: ret}, width) == 0


def test_plain_and_trap_rules():
    pc = 0xFFFF_FFFF_8000_1000
    info = archdata.arch_info("amd64")
    lay = info.trap_layouts["default"]
    rules = {pc: PcRules(Rule("chain-plain"), Rule("chain-plain")),
             pc + 0x100: PcRules(Rule("trap", 8, lay), Rule("trap", 8, lay))}
    elf = _elf("amd64", rules)
    sym = {s["st_value"]: s["st_size"] for s in elf.get_section_by_name(".symtab")
           .iter_symbols() if s.name}
    assert sym == {pc - 2: 3, pc + 0x100 - 2: 3}     # unreadable code: the pc inside
    plain, trap = (f.get_decoded().table[2] for f in _fdes(elf))
    assert (plain[16].type, plain[16].arg) == ("OFFSET", -8)
    assert (trap["cfa"].reg, trap["cfa"].offset) == (7, 8 + lay.size)
    slots = dict(lay.slots)
    for name, num in (("rip", 16), ("rsp", 7), ("rbp", 6), ("rbx", 3), ("r15", 15)):
        assert (trap[num].type, trap[num].arg) == ("OFFSET", slots[name] - lay.size), name


def test_i386_trap_esp():
    lay = archdata.arch_info("i386").trap_layouts["default"]
    slots = dict(lay.slots)
    elf = _elf("i386", {0x1000: PcRules(Rule("trap", 4, lay), Rule("trap", 4, lay))})
    row = _fdes(elf)[0].get_decoded().table[1]
    cfa = 0x5000 + 4 + lay.size
    base = cfa - lay.size
    kernel = {base + slots["cs"]: 0x20}
    user = {base + slots["cs"]: 0x33, base + slots["esp"]: 0xBEEF0}
    assert _eval(row[4].arg, cfa, kernel, 4) == base + lay.size - 8
    assert _eval(row[4].arg, cfa, user, 4) == 0xBEEF0


def test_overlaps_big_endian_and_unsupported():
    rules = {0x100: CHAIN, 0x101: CHAIN, 0x200: CHAIN}
    elf = _elf("arm64", rules, "big")
    assert elf.little_endian is False
    assert [f["initial_location"] for f in _fdes(elf)] == [0xFE, 0x1FE]
    assert unwindinfo.build_elf("riscv", rules) is None      # lldb 16: no RISC-V ABI
    assert unwindinfo.build_elf("amd64", {}) is None


@pytest.mark.parametrize("name", REAL_DUMPS)
def test_collect_real_dump(real_dump_factory, tmp_path, name):  # noqa: F811
    import kvm_dbg
    dump = real_dump_factory(name)
    with kvm_dbg.open(dump.kernel, dump.core) as kvm:
        rules = unwindinfo.collect(kvm)
        path = tmp_path / "k.unwind"
        n = unwindinfo.write_unwind_elf(kvm, str(path))
        skipped = unwindinfo.collect(kvm, skip=lambda pc: True)
    assert skipped == {}
    want = {int(pc, 16) for t in dump.expected["threads"].values()
            for pc in t["backtrace_pcs"]}
    assert want <= set(rules)
    assert all(r.caller.kind == "chain" for r in rules.values())
    with open(path, "rb") as f:
        assert len(_fdes(ELFFile(f))) == n > 0


def test_lldb_bt_all_threads(real_dump_factory):  # noqa: F811
    """Every thread of every real dump: lldb's ``bt all`` frames are the library's."""
    import kvm_dbg
    exe = _lldb()
    if not exe:
        pytest.skip("lldb is not installed")
    for name in REAL_DUMPS:
        dump = real_dump_factory(name)
        with kvm_dbg.open(dump.kernel, dump.core) as kvm:
            want = [t.backtrace() for t in kvm.threads()]
        out = subprocess.run(
            [exe, "--no-lldbinit", "-b", "-o", f"command script import {PLUGIN}",
             "-o", f"kvm-open {dump.kernel} {dump.core}", "-o", "bt all", "-o", "kvm-close"],
            capture_output=True, text=True, timeout=TIMEOUT).stdout
        got: list = []
        for line in out[out.index("(lldb) bt all"):].splitlines():
            if re.match(r"^[* ] thread #\d+,", line):
                got.append([])
            m = re.match(r"^\s*\*?\s*frame #\d+: (0x[0-9a-f]+)", line)
            if m and got:
                got[-1].append(int(m.group(1), 16))
        assert got == want, (name, out)
