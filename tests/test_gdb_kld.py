"""Kernel modules in a real gdb: kvm-open loads every module file it finds (and
warns once per module without one), module symbols land where kgdb would put
them, kvm-kld lists where each file came from, kvm-kld load adds a file that
appeared later."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from elftools.elf.elffile import ELFFile
from fixturegen import build
from fixturegen.kernelstate import KldSpec, default_spec
from test_gdb_plugin import Gdb, _gdb_for
from test_kld_layout import KO_SYMBOLS, MODULES, REL_EXPECT, write_ko

from kvm_dbg.kstate.klds import section_addresses

pytest.importorskip("pexpect")

GCC_SOURCE = """
int kvmgcc_counter = 5;
static char kvmgcc_buf[256] __attribute__((aligned(64)));
char *kvmgcc_bufp(void) { return kvmgcc_buf; }
int kvmgcc_fn(int x) { return x + kvmgcc_counter; }
"""


def _symbols(path: str) -> dict:
    """{name: (section name, value)} of a relocatable file's defined symbols."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        out = {}
        for s in elf.get_section_by_name(".symtab").iter_symbols():
            shndx = s["st_shndx"]
            if s.name and isinstance(shndx, int) and s["st_info"]["type"] in ("STT_FUNC",
                                                                               "STT_OBJECT"):
                out[s.name] = (elf.get_section(shndx).name, s["st_value"])
        return out


@pytest.fixture(scope="module")
def kld_session(tmp_path_factory):
    """(dump, dir, gcc module): MODULES plus kvmgcc.ko, a gcc-built module with
    DWARF next to the kernel; kvmtest.ko.debug is written by the test, after
    kvm-open (a module file that does not exist when the dump is opened)."""
    if not _gdb_for("amd64"):
        pytest.fail("no gdb (bootstrap installs it)")
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        pytest.fail("no gcc (bootstrap installs it)")
    d = tmp_path_factory.mktemp("gdbkld")
    mods = list(MODULES) + [KldSpec("kvmgcc.ko", "/boot/modules/kvmgcc.ko")]
    fx = build("amd64", "minidump", 3, str(d), kstate=default_spec("amd64", klds=mods))
    (d / "kvmgcc.c").write_text(GCC_SOURCE)
    ko = d / "kvmgcc.ko"
    subprocess.run([gcc, "-c", "-g", "-O0", "-fno-pic", "-o", str(ko), str(d / "kvmgcc.c")],
                   check=True)
    return fx, d, ko


def _addr(out: str) -> int:
    m = re.search(r"0x[0-9a-f]+", out)
    assert m, out
    return int(m.group(0), 16)


def test_kvm_open_loads_modules(kld_session):
    fx, d, gcc_ko = kld_session
    base = {k.name: k.address for k in fx.manifest.kstate.klds}
    g = Gdb(_gdb_for("amd64"))
    try:
        out = g.cmd("kvm-kld load")
        assert out.strip().startswith("kvm-kld: no dump is open"), out
        # kvm-open: a line per module loaded, a warning per module without a file, once
        out = g.cmd(f"kvm-open {fx.kernel_path} {fx.core_path}")
        assert "kvm-open:" not in out and "Traceback" not in out, out
        loaded = [ln for ln in out.splitlines() if ln.startswith("Loaded symbols for ")]
        assert loaded == [f"Loaded symbols for kvmgcc.ko at 0x{base['kvmgcc.ko']:x} "
                          f"from {gcc_ko}"], out
        for name in ("kvmtest.ko", "absent.ko", "other.ko"):
            assert out.count(f"warning: klds: {name}: no symbol file found") == 1, out
        assert out.count("warning:") == 3, out
        assert out.index("Loaded symbols") < out.index("panic: page fault") < \
            out.index("warning: klds")
        # the gcc module's symbols and DWARF, without any kvm-kld load
        secs = section_addresses(str(gcc_ko), base["kvmgcc.ko"])
        for sym, (sec, value) in _symbols(str(gcc_ko)).items():
            out = g.cmd(f"print &{sym}")
            assert _addr(out) == secs[sec] + value, (sym, sec, out)
            assert f"<{sym}>" in out, out
        assert "int (int)" in g.cmd("ptype kvmgcc_fn")     # from the module's DWARF
        assert secs[".bss"] % 64 == 0

        # kvm-kld: each module, its file and where it was found, or why not
        listing = g.cmd("kvm-kld")
        for name in base:
            assert f"0x{base[name]:x}" in listing and name in listing, listing
        row = next(ln for ln in listing.splitlines() if "kvmgcc.ko" in ln)
        assert row.endswith(f"{gcc_ko} (from the kernel's directory)"), row
        row = next(ln for ln in listing.splitlines() if "absent.ko" in ln)
        assert f"(none: absent.ko: Unable to locate kld; looked in {d}, " in row, row
        assert g.cmd("kvm-kld unload").strip() == "kvm-kld: usage: kvm-kld [load [NAME|all]]"

        # a file that appears after kvm-open: kvm-kld load adds it, kgdb's way
        write_ko(d / "kvmtest.ko.debug")
        out = g.cmd("kvm-kld load kvmtest")
        assert f'add symbol table from file "{d / "kvmtest.ko.debug"}" at' in out, out
        t = base["kvmtest.ko"]
        assert f"\t.text_addr = 0x{t + REL_EXPECT['.text']:x}" in out, out
        assert f"\t.bss_addr = 0x{t + REL_EXPECT['.bss']:x}" in out, out
        for sym, sec, off in KO_SYMBOLS:
            want = t + REL_EXPECT[sec] + off
            info = g.cmd(f"info address {sym}")
            assert f"is at 0x{want:x} " in info, (sym, hex(want), info)
            assert _addr(g.cmd(f"print &{sym}")) == want
            assert g.cmd(f"info symbol 0x{want:x}").startswith(f"{sym} in section {sec}")
        out = g.cmd("kvm-kld load kvmtest.ko")
        assert "symbols already loaded" in out and "add symbol table" not in out, out
        assert g.cmd("kvm-kld load absent.ko").strip() == \
            "kvm-kld: absent.ko: Unable to locate kld"
        assert g.cmd("kvm-kld load nope").strip() == \
            "kvm-kld: nope: Unable to find kld in kernel"

        # all: the others report one line each; kvm-open's are already loaded
        out = g.cmd("kvm-kld load all")
        assert "kvm-kld: absent.ko: Unable to locate kld" in out
        assert "kvm-kld: other.ko: Unable to locate kld" in out
        assert "Traceback" not in out and "kvmtest.ko: symbols already loaded" in out, out
        assert f"kvmgcc.ko: symbols already loaded from {gcc_ko}" in out, out

        # kvm-close forgets them, those of kvm-open included
        g.cmd("kvm-close")
        assert "No symbol" in g.cmd("info address kvmtest_var")
        assert "No symbol" in g.cmd("info address kvmgcc_counter")
    finally:
        g.quit()
        (d / "kvmtest.ko.debug").unlink(missing_ok=True)
