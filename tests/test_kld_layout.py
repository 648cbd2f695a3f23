"""Module symbol loading without a debugger: kgdb's section layout (threads.md §8.3)
and the adapter-neutral plan (file, {section: address}) on a fixture dump."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import pytest
from fixturegen import build
from fixturegen import elfwriter as ew
from fixturegen.kernelstate import KldSpec, default_spec

import kvm_dbg
from kvm_dbg.adapter import AdapterError, kld_loads
from kvm_dbg.errors import KvmError
from kvm_dbg.kstate.klds import kld_sections, klds, section_addresses

ET_REL = 1
BASE = 0xFFFF_FFFF_82A0_0000
RX, RW = ew.SHF_ALLOC | ew.SHF_EXECINSTR, ew.SHF_ALLOC | ew.SHF_WRITE

#: (section, size, alignment) of the relocatable test module, in file order.
REL_LAYOUT = [(".text", 0x23, 16), (".rodata", 5, 32), (".comment", 10, 1),
              ("set_sysinit_set", 8, 8), (".empty", 0, 64), (".data", 0x11, 8),
              (".odd", 4, 12), (".bss", 0x100, 64)]
#: Where kgdb puts them from BASE: .comment is not allocated; the empty section still
#: aligns (gdb >= 10 keeps zero-sized sections); alignment 12 rounds up to 16.
REL_EXPECT = {".text": 0x0, ".rodata": 0x40, "set_sysinit_set": 0x48, ".empty": 0x80,
              ".data": 0x80, ".odd": 0xA0, ".bss": 0xC0}
#: Symbols (name, section, offset): what a debugger must find at section + offset.
KO_SYMBOLS = [("kvmtest_func", ".text", 0x10), ("kvmtest_var", ".data", 0x8),
              ("kvmtest_bss", ".bss", 0x20)]


def write_ko(path: Path, layout=REL_LAYOUT, e_type: int = ET_REL,
             addrs: Optional[List[int]] = None) -> Path:
    """A module file: sections of ``layout`` (alloc unless .comment), KO_SYMBOLS."""
    secs = []
    for i, (name, size, align) in enumerate(layout):
        flags = 0 if name == ".comment" else RX if name == ".text" else \
            ew.SHF_ALLOC if name in (".rodata", ".empty", "set_sysinit_set") else RW
        addr = addrs[i] if addrs else 0
        if name == ".bss":
            secs.append(ew.Section(name, ew.SHT_NOBITS, flags, addr, None, size, align))
        else:
            secs.append(ew.Section(name, flags=flags, addr=addr, data=b"\xcc" * size,
                                align=align))
    names = {s.name for s in secs}
    syms = [ew.Symbol(n, off, 4, sec, stype=ew.STT_FUNC if sec == ".text" else 1)
            for n, sec, off in KO_SYMBOLS if sec in names]
    path.write_bytes(ew.build_kernel_elf(ew.ElfIdent(), secs, syms, e_type=e_type))
    return path


def test_relocatable_layout(tmp_path):
    ko = write_ko(tmp_path / "m.ko")
    got = section_addresses(str(ko), BASE)
    assert got == {k: BASE + v for k, v in REL_EXPECT.items()}
    assert list(got) == list(REL_EXPECT)        # section-table order, as add-symbol-file gets it


def test_relocatable_unaligned_base(tmp_path):
    ko = write_ko(tmp_path / "m.ko", [(".text", 3, 16), (".data", 1, 4)])
    assert section_addresses(str(ko), BASE + 4) == {".text": BASE + 0x10, ".data": BASE + 0x14}


def test_shared_object_layout(tmp_path):
    """ET_DYN/ET_EXEC modules (i386, arm64...): every section's address + base."""
    ko = write_ko(tmp_path / "m.ko", [(".text", 0x100, 16), (".data", 8, 8), (".bss", 64, 64)],
                  ew.ET_DYN, [0x1000, 0x3000, 0x3040])
    assert section_addresses(str(ko), BASE) == \
        {".text": BASE + 0x1000, ".data": BASE + 0x3000, ".bss": BASE + 0x3040}


def test_errors(tmp_path):
    with pytest.raises(KvmError, match="can't open"):
        section_addresses(str(tmp_path / "missing.ko"), BASE)
    bad = tmp_path / "bad.ko"
    bad.write_bytes(b"\x7fELF" + b"\xff" * 60)
    with pytest.raises(KvmError, match="not an object file"):
        section_addresses(str(bad), BASE)
    notext = write_ko(tmp_path / "notext.ko", [(".data", 8, 8)])
    with pytest.raises(KvmError, match="can't find text section"):
        section_addresses(str(notext), BASE)


def test_debug_file_same_layout(tmp_path):
    """A ``.debug`` file (objcopy --only-keep-debug: sections become NOBITS) gives the
    addresses of the module itself, which is why kgdb can load it instead."""
    gcc, objcopy = shutil.which("gcc") or shutil.which("cc"), shutil.which("objcopy")
    if not gcc or not objcopy:
        pytest.skip("gcc or objcopy missing")
    src, ko, dbg = tmp_path / "m.c", tmp_path / "m.ko", tmp_path / "m.ko.debug"
    src.write_text("int a = 1; static char b[300] __attribute__((aligned(128)));\n"
                   "const char *s = \"x\"; char *f(void) { return b; }\n")
    subprocess.run([gcc, "-c", "-g", "-O1", "-o", str(ko), str(src)], check=True)
    subprocess.run([objcopy, "--only-keep-debug", str(ko), str(dbg)], check=True)
    got = section_addresses(str(ko), BASE)
    assert got == section_addresses(str(dbg), BASE)
    assert {".text", ".data", ".bss"} <= set(got) and got[".bss"] % 128 == 0


# -- on a fixture dump ------------------------------------------------------------

MODULES = [KldSpec("kvmtest.ko", "/boot/modules/kvmtest.ko"),
           KldSpec("absent.ko", "/boot/modules/absent.ko"),
           KldSpec("other.ko", None)]


def build_kld_dump(d: Path):
    """Fixture dump with MODULES; next to the kernel: kvmtest.ko.debug (kgdb's first
    choice) and a bare kvmtest.ko.  absent.ko and other.ko (no pathname) have no file."""
    fx = build("amd64", "minidump", 3, str(d), kstate=default_spec("amd64", klds=MODULES))
    write_ko(d / "kvmtest.ko.debug")
    write_ko(d / "kvmtest.ko", [(".text", 0x40, 16)])
    return fx


@pytest.fixture(scope="module")
def kld_dump(tmp_path_factory):
    d = tmp_path_factory.mktemp("kld")
    fx = build_kld_dump(d)
    kvm = kvm_dbg.open(fx.kernel_path, fx.core_path)
    yield fx, kvm, d
    kvm.close()


def test_kld_sections_on_dump(kld_dump):
    fx, kvm, d = kld_dump
    base = {k.name: k.address for k in fx.manifest.kstate.klds}
    mods = klds(kvm)
    assert [k.name for k in mods] == ["kvmtest.ko", "absent.ko", "other.ko"]
    path, secs = kld_sections(kvm, mods[0])
    assert path == str(d / "kvmtest.ko.debug")
    assert secs == {k: base["kvmtest.ko"] + v for k, v in REL_EXPECT.items()}
    with pytest.raises(KvmError, match="absent.ko: Unable to locate kld"):
        kld_sections(kvm, mods[1])


def test_adapter_kld_loads(kld_dump):
    fx, kvm, d = kld_dump
    base = {k.name: k.address for k in fx.manifest.kstate.klds}
    loads = kld_loads(kvm)
    assert [(x.name, x.address, x.path, x.error) for x in loads] == [
        ("kvmtest.ko", base["kvmtest.ko"], str(d / "kvmtest.ko.debug"), None),
        ("absent.ko", base["absent.ko"], None, "absent.ko: Unable to locate kld"),
        ("other.ko", base["other.ko"], None, "other.ko: Unable to locate kld")]
    assert loads[0].sections[".data"] == base["kvmtest.ko"] + REL_EXPECT[".data"]
    for name in ("kvmtest.ko", "kvmtest", "/boot/modules/kvmtest.ko"):
        assert kld_loads(kvm, name) == loads[:1]
    with pytest.raises(AdapterError, match=r"^nope\.ko: Unable to find kld in kernel$"):
        kld_loads(kvm, "nope.ko")
    with pytest.raises(AdapterError, match=r"^absent\.ko: Unable to locate kld$"):
        kld_loads(kvm, "absent")
