"""kvm-kld load in a real lldb: module symbols land where kgdb would put them."""

from __future__ import annotations

import re

import pytest
from fixturegen import build
from fixturegen.kernelstate import default_spec
from test_kld_layout import KO_SYMBOLS, MODULES, REL_EXPECT, write_ko
from test_lldb_plugin import Lldb, _lldb

pytest.importorskip("pexpect")


def test_kvm_kld_load_in_lldb(tmp_path):
    exe = _lldb()
    if not exe:
        pytest.skip("lldb not installed")
    fx = build("amd64", "minidump", 3, str(tmp_path),
               kstate=default_spec("amd64", klds=list(MODULES)))
    write_ko(tmp_path / "kvmtest.ko.debug")
    base = {k.name: k.address for k in fx.manifest.kstate.klds}["kvmtest.ko"]
    lldb = Lldb(exe)
    try:
        assert "no dump is open" in lldb.cmd("kvm-kld load")
        out = lldb.cmd(f"kvm-open {fx.kernel_path} {fx.core_path}")
        assert "error" not in out, out
        assert "kvmtest.ko" in lldb.cmd("kvm-kld")
        assert lldb.cmd("kvm-kld unload").strip() == \
            "error: kvm-kld: usage: kvm-kld [load [NAME|all]]"
        out = lldb.cmd("kvm-kld load kvmtest")
        assert f'add symbol table from file "{tmp_path / "kvmtest.ko.debug"}"' in out, out
        for sym, sec, off in KO_SYMBOLS:
            want = base + REL_EXPECT[sec] + off
            info = lldb.cmd(f"image lookup -a 0x{want:x}")
            sec_name = f"kvmtest.ko.debug.{sec} + {off}"
            assert re.search(rf"Summary: (kvmtest.ko.debug`)?{sym}\b", info), (sym, info)
            assert sec_name in info, (sym, hex(want), info)
        assert "nope: Unable to find kld in kernel" in lldb.cmd("kvm-kld load nope")
        out = lldb.cmd("kvm-kld load all")
        assert "absent.ko: Unable to locate kld" in out and "Traceback" not in out, out
        lldb.cmd("kvm-close")
        assert "kvmtest.ko.debug" not in lldb.cmd("image list")
    finally:
        lldb.quit()
