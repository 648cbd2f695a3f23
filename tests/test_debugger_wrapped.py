"""``kvm-open`` in real gdb and lldb on dumps as FreeBSD leaves them: a zstd
core (progress bar in the debugger's terminal, then a cache hit), an encrypted
one with ``--key``, ``-n N --crashdir``, and a textdump refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fixturegen import savecore as sc
from test_gdb_plugin import Gdb
from test_lldb_plugin import Lldb, _lldb

pexpect = pytest.importorskip("pexpect")


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    import gzip
    root = Path(__file__).resolve().parents[1]
    d = tmp_path_factory.mktemp("wrapped")
    kernel = gzip.open(root / "examples" / "kernel.gz").read()
    core = gzip.open(root / "examples" / "vmcore.0.gz").read()
    sc.write(str(d / "kernel"), kernel)
    sc.write(str(d / "crash" / "vmcore.0.zst"), sc.kernel_zstd(core))
    priv = sc.rsa_key()
    sc.write_pem(priv, str(d / "dump.pem"))
    ct, blob = sc.encrypt(core, priv, 2)
    sc.write(str(d / "crash" / "vmcore_encrypted.1"), ct)
    sc.write(str(d / "crash" / "key.1"), blob)
    sc.write(str(d / "crash" / "textdump.tar.2"),
             sc.textdump_tar({"panic.txt": b"boom", "msgbuf.txt": b"hello\n"}))
    return d


def test_gdb_kvm_open_wrapped(example_dir):
    exe = shutil.which("gdb")
    assert exe, "gdb is required"
    d = example_dir
    g = Gdb(exe)
    try:
        g.cmd("set osabi none")
        out = g.cmd(f"kvm-open --cache-dir {d}/c1 {d}/kernel {d}/crash/vmcore.0.zst")
        assert "decompressing vmcore.0.zst" in out           # the bar, on gdb's terminal
        assert "sysctl (crashed)" in g.cmd("info threads")
        g.cmd("kvm-close")
        out = g.cmd(f"kvm-open --cache-dir {d}/c1 {d}/kernel {d}/crash/vmcore.0.zst")
        assert "decompressing" not in out                     # cache hit
        g.cmd("kvm-close")
        out = g.cmd(f"kvm-open {d}/kernel {d}/crash/vmcore_encrypted.1")
        assert "give the RSA private key" in out
        out = g.cmd(f"kvm-open --key {d}/dump.pem --cache-dir {d}/c2 -n 1 --crashdir "
                    f"{d}/crash {d}/kernel")
        assert "sysctl (crashed)" in g.cmd("info threads"), out
        g.cmd("kvm-close")
        out = g.cmd(f"kvm-open -n 2 --crashdir {d}/crash {d}/kernel")
        assert "a textdump has no memory" in out
    finally:
        g.quit()


def test_lldb_kvm_open_wrapped(example_dir):
    exe = _lldb()
    assert exe, "lldb is required"
    d = example_dir
    lldb = Lldb(exe)
    try:
        out = lldb.cmd(f"kvm-open --cache-dir {d}/c3 {d}/kernel {d}/crash/vmcore.0.zst")
        assert "sysctl" in lldb.cmd("thread list"), out
        lldb.cmd("kvm-close")
        out = lldb.cmd(f"kvm-open --key {d}/dump.pem --cache-dir {d}/c4 {d}/kernel "
                       f"{d}/crash/vmcore_encrypted.1")
        assert "sysctl" in lldb.cmd("thread list"), out
        lldb.cmd("kvm-close")
        out = lldb.cmd(f"kvm-open {d}/kernel {d}/crash/textdump.tar.2")
        assert "a textdump has no memory" in out
    finally:
        lldb.quit()
