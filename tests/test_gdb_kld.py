"""kvm-kld in a real gdb: module symbols land where kgdb would put them."""

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
    """(dump, dir, gcc module or None): MODULES plus a gcc-built kvmgcc.ko with DWARF."""
    if not _gdb_for("amd64"):
        pytest.skip("no gdb")
    d = tmp_path_factory.mktemp("gdbkld")
    gcc = shutil.which("gcc") or shutil.which("cc")
    mods = list(MODULES) + ([KldSpec("kvmgcc.ko", "/boot/modules/kvmgcc.ko")] if gcc else [])
    fx = build("amd64", "minidump", 3, str(d), kstate=default_spec("amd64", klds=mods))
    write_ko(d / "kvmtest.ko.debug")
    ko = None
    if gcc:
        (d / "kvmgcc.c").write_text(GCC_SOURCE)
        ko = d / "kvmgcc.ko"
        subprocess.run([gcc, "-c", "-g", "-O0", "-fno-pic", "-o", str(ko), str(d / "kvmgcc.c")],
                       check=True)
    return fx, d, ko


def _addr(out: str) -> int:
    m = re.search(r"0x[0-9a-f]+", out)
    assert m, out
    return int(m.group(0), 16)


def test_kvm_kld_load(kld_session):
    fx, d, gcc_ko = kld_session
    base = {k.name: k.address for k in fx.manifest.kstate.klds}
    g = Gdb(_gdb_for("amd64"))
    try:
        out = g.cmd("kvm-kld load")
        assert out.strip().startswith("kvm-kld: no dump is open"), out
        out = g.cmd(f"kvm-open {fx.kernel_path} {fx.core_path}")
        assert "kvm-open:" not in out and "Traceback" not in out, out
        listing = g.cmd("kvm-kld")
        for name in base:
            assert f"0x{base[name]:x}" in listing and name in listing, listing
        assert g.cmd("kvm-kld unload").strip() == "kvm-kld: usage: kvm-kld [load [NAME|all]]"

        # one module: kgdb's message, then symbols at section address + offset
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

        # all: the others report one line each; the gcc module gets its DWARF symbols
        out = g.cmd("kvm-kld load all")
        assert "kvm-kld: absent.ko: Unable to locate kld" in out
        assert "kvm-kld: other.ko: Unable to locate kld" in out
        assert "Traceback" not in out and "kvmtest.ko: symbols already loaded" in out, out
        if gcc_ko is not None:
            secs = section_addresses(str(gcc_ko), base["kvmgcc.ko"])
            for sym, (sec, value) in _symbols(str(gcc_ko)).items():
                out = g.cmd(f"print &{sym}")
                assert _addr(out) == secs[sec] + value, (sym, sec, out)
                assert f"<{sym}>" in out, out
            assert "int (int)" in g.cmd("ptype kvmgcc_fn")     # from the module's DWARF
            assert secs[".bss"] % 64 == 0

        # kvm-close forgets them
        g.cmd("kvm-close")
        assert "No symbol" in g.cmd("info address kvmtest_var")
    finally:
        g.quit()
