"""Kernel modules in a real lldb: kvm-open loads every module file it finds (next
to the kernel, under --sysroot's /usr/lib/debug mirror) at kgdb's section
addresses and warns once per module without a usable file; kvm-kld lists where
each file came from; kvm-close removes them."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from fixturegen import build
from fixturegen.kernelstate import KldSpec, default_spec
from test_gdb_kld import GCC_SOURCE, _symbols
from test_kld_layout import KO_SYMBOLS, MODULES, REL_EXPECT, write_ko
from test_lldb_plugin import Lldb, _lldb

from kvm_dbg.kstate.klds import section_addresses

pytest.importorskip("pexpect")

MIRROR = "the /usr/lib/debug mirror of module path /boot/modules under the sysroot"


def _lookup(lldb: Lldb, addr: int, module: str, sym: str, sec: str, off: int) -> None:
    info = lldb.cmd(f"image lookup -a 0x{addr:x}")
    assert re.search(rf"Summary: ({re.escape(module)}`)?{sym}\b", info), (sym, info)
    assert f"{module}.{sec} + {off}" in info, (sym, hex(addr), info)


def test_kvm_open_loads_modules_in_lldb(tmp_path):
    exe = _lldb()
    if not exe:
        pytest.fail("lldb is not installed (bootstrap installs lldb-16)")
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        pytest.fail("no gcc (bootstrap installs it)")
    mods = list(MODULES) + [KldSpec("kvmgcc.ko", "/boot/modules/kvmgcc.ko")]
    fx = build("amd64", "minidump", 3, str(tmp_path),
               kstate=default_spec("amd64", klds=mods))
    write_ko(tmp_path / "kvmtest.ko.debug")                  # next to the kernel
    root = tmp_path / "root"
    (root / "usr/lib/debug/boot/modules").mkdir(parents=True)
    (root / "boot/modules").mkdir(parents=True)
    gcc_ko = root / "usr/lib/debug/boot/modules/kvmgcc.ko.debug"   # the sysroot's mirror
    (tmp_path / "kvmgcc.c").write_text(GCC_SOURCE)
    subprocess.run([gcc, "-c", "-g", "-O0", "-fno-pic", "-o", str(gcc_ko),
                    str(tmp_path / "kvmgcc.c")], check=True)
    (root / "boot/modules/absent.ko").write_bytes(b"not an ELF file\n")   # found, unusable
    base = {k.name: k.address for k in fx.manifest.kstate.klds}
    lldb = Lldb(exe)
    try:
        assert "no dump is open" in lldb.cmd("kvm-kld load")
        out = lldb.cmd(f"kvm-open --sysroot {root} {fx.kernel_path} {fx.core_path}")
        assert "error" not in out and "Traceback" not in out, out
        loaded = [ln for ln in out.splitlines() if ln.startswith("Loaded symbols for ")]
        assert loaded == [
            f"Loaded symbols for kvmtest.ko at 0x{base['kvmtest.ko']:x} from "
            f"{tmp_path / 'kvmtest.ko.debug'}",
            f"Loaded symbols for kvmgcc.ko at 0x{base['kvmgcc.ko']:x} from {gcc_ko}"], out
        warnings = [ln for ln in out.splitlines() if ln.startswith("warning:")]
        assert warnings[0] == \
            f'warning: klds: absent.ko: "{root}/boot/modules/absent.ko": not an object file'
        assert warnings[1].startswith("warning: klds: other.ko: no symbol file found")
        assert len(warnings) == 2, out

        # symbols at kgdb's addresses, without kvm-kld load
        t = base["kvmtest.ko"]
        for sym, sec, off in KO_SYMBOLS:
            _lookup(lldb, t + REL_EXPECT[sec] + off, "kvmtest.ko.debug", sym, sec, off)
        secs = section_addresses(str(gcc_ko), base["kvmgcc.ko"])
        for sym, (sec, value) in _symbols(str(gcc_ko)).items():
            _lookup(lldb, secs[sec] + value, "kvmgcc.ko.debug", sym, sec, value)
        out = lldb.cmd("p &kvmgcc_counter")                  # typed, from the DWARF
        assert f"(int *) $0 = 0x{secs['.data']:x}" in out, out

        # kvm-kld: each module, its file and where it was found, or why not
        rows = {ln.split()[2]: ln for ln in lldb.cmd("kvm-kld").splitlines()[1:] if ln.strip()}
        assert set(rows) == set(base), rows
        assert rows["kvmgcc.ko"].endswith(f"{gcc_ko} (from {MIRROR})"), rows
        assert rows["kvmtest.ko"].endswith(f"{tmp_path / 'kvmtest.ko.debug'} "
                                           "(from the kernel's directory)"), rows
        assert rows["absent.ko"].endswith(
            f'(unusable: "{root}/boot/modules/absent.ko": not an object file; from module '
            "path /boot/modules under the sysroot)"), rows
        assert f"(none: other.ko: Unable to locate kld; looked in {tmp_path}, " \
            in rows["other.ko"], rows

        # kvm-kld load: what kvm-open loaded is not added twice; errors are one line
        assert lldb.cmd("kvm-kld unload").strip() == \
            "error: kvm-kld: usage: kvm-kld [load [NAME|all]]"
        assert "add symbol table" not in lldb.cmd("kvm-kld load kvmtest")
        assert "nope: Unable to find kld in kernel" in lldb.cmd("kvm-kld load nope")
        out = lldb.cmd("kvm-kld load all")
        assert "other.ko: Unable to locate kld" in out and "Traceback" not in out, out
        assert "add symbol table" not in out, out
        assert lldb.cmd("image list").count("kvmtest.ko.debug") == 1

        lldb.cmd("kvm-close")
        listing = lldb.cmd("image list")
        assert "kvmtest.ko.debug" not in listing and "kvmgcc" not in listing, listing
    finally:
        lldb.quit()
