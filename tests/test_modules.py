"""Kernel modules found automatically: kgdb's search under --sysroot and its
/usr/lib/debug mirror, module symbols resolved by the library at kgdb's
section addresses, one warning per module without a file, ``kvm-dbg kld``,
and ``kvm-open``'s new options (adapter.parse_open_args)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixturegen import build
from fixturegen.kernelstate import default_spec
from test_kld_layout import MODULES, REL_EXPECT, write_ko

import kvm_dbg
from kvm_dbg import kvm_nlist2, kvm_open2, nlist
from kvm_dbg.adapter import AdapterError, kld_loads, parse_open_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sysroot_dump(tmp_path_factory):
    """The kernel in its own directory; the modules only in a copy of the
    crashed machine's root: kvmtest.ko.debug in /usr/lib/debug/boot/modules,
    a bare kvmtest.ko in /boot/modules."""
    d = tmp_path_factory.mktemp("mods")
    fx = build("amd64", "minidump", 3, str(d / "k"), kstate=default_spec("amd64", klds=MODULES))
    root = d / "root"
    (root / "usr/lib/debug/boot/modules").mkdir(parents=True)
    (root / "boot/modules").mkdir(parents=True)
    dbg = write_ko(root / "usr/lib/debug/boot/modules/kvmtest.ko.debug")
    write_ko(root / "boot/modules/kvmtest.ko", [(".text", 0x40, 16)])
    base = {k.name: k.address for k in fx.manifest.kstate.klds}
    return fx, root, dbg, base


def test_module_files_under_sysroot(sysroot_dump):
    fx, root, dbg, base = sysroot_dump
    with kvm_dbg.open(fx.kernel_path, fx.core_path, sysroot=str(root)) as kd:
        mods = {m.name: m for m in kd.modules()}
        assert mods["kvmtest.ko"].file == str(dbg)
        assert mods["kvmtest.ko"].sections[".data"] == base["kvmtest.ko"] + REL_EXPECT[".data"]
        assert mods["absent.ko"].file is None and "Unable to locate kld" in mods["absent.ko"].error
        assert str(root / "usr/lib/debug/boot/modules") in mods["absent.ko"].searched
        missing = [w for w in kd.warnings if w.startswith("klds: ")]
        assert len(missing) == 2                      # one line per module without a file
        assert missing[0].startswith("klds: absent.ko: no symbol file found")
        assert missing[1].startswith("klds: other.ko: no symbol file found")


def test_module_symbols_resolved(sysroot_dump):
    fx, root, dbg, base = sysroot_dump
    b = base["kvmtest.ko"]
    with kvm_dbg.open(fx.kernel_path, fx.core_path, sysroot=str(root)) as kd:
        assert kd.symbol("kvmtest_var") == b + REL_EXPECT[".data"] + 0x8
        assert kd.lookup("kvmtest_func") == b + REL_EXPECT[".text"] + 0x10
        assert kd.lookup("kvmtest_bss") == b + REL_EXPECT[".bss"] + 0x20
        assert kd.lookup("hz") == fx.manifest.hz_addr       # the kernel's still first
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:   # no sysroot: not found
        assert kd.lookup("kvmtest_var") is None
        assert len([w for w in kd.warnings if w.startswith("klds: ")]) == 3
    err = bytearray(2048)
    from kvm_dbg.elfkernel import KernelImage
    kd = kvm_open2(fx.kernel_path, fx.core_path, 0, err, KernelImage(fx.kernel_path).lookup)
    kd.open_options = {"sysroot": str(root)}
    nl = [nlist("kvmtest_var"), nlist("hz"), nlist(None)]
    assert kvm_nlist2(kd, nl) == 0 and nl[0].n_value == b + REL_EXPECT[".data"] + 0x8


def test_adapter_kld_loads_with_sysroot(sysroot_dump):
    fx, root, dbg, base = sysroot_dump
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        loads = kld_loads(kd, sysroot=str(root))
        assert [(x.name, x.path) for x in loads] == [
            ("kvmtest.ko", str(dbg)), ("absent.ko", None), ("other.ko", None)]
        with pytest.raises(AdapterError, match="^absent.ko: Unable to locate kld$"):
            kld_loads(kd, "absent.ko", sysroot=str(root))


def test_cli_kld_lists_files(sysroot_dump):
    fx, root, dbg, base = sysroot_dump
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "kvm_dbg.cli", "kld", "--sysroot", str(root),
           fx.kernel_path, fx.core_path]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    line = next(x for x in out.splitlines() if "kvmtest.ko" in x)
    mirror = "the /usr/lib/debug mirror of module path /boot/modules under the sysroot"
    assert line.endswith(f"{dbg} (from {mirror})"), line
    line = next(x for x in out.splitlines() if "absent.ko" in x)
    kdir = os.path.dirname(fx.kernel_path)
    assert line.endswith(f"(none: absent.ko: Unable to locate kld; looked in {kdir}, "
                         f"{root}/usr/lib/debug/boot/kernel, {root}/boot/kernel, "
                         f"{root}/usr/lib/debug/boot/modules, {root}/boot/modules)"), line
    rows = json.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True,
                                     env=env, check=True).stdout)["klds"]
    assert rows[0]["file"] == str(dbg) and rows[1]["file"] is None
    assert rows[0]["found_in"] == mirror and rows[1]["found_in"] is None
    assert rows[1]["searched"][-1] == f"{root}/boot/modules"


def test_parse_open_args_options(tmp_path):
    req = parse_open_args(["--key", "~/k.pem", "--sysroot", "/mnt/r", "--cache-dir", "/c",
                           "-w", "kern", "core"], None)
    assert (req.kernel, req.core, req.writable) == ("kern", "core", True)
    assert req.key == os.path.expanduser("~/k.pem") and req.sysroot == "/mnt/r"
    assert req.server_args() == ["--key", req.key, "--cache-dir", "/c", "--sysroot", "/mnt/r"]
    (tmp_path / "vmcore.2.zst").write_bytes(b"x")
    req = parse_open_args(["-n", "2", "--crashdir", str(tmp_path)], "/boot/kernel/kernel")
    assert req.core == str(tmp_path / "vmcore.2.zst") and req.kernel == "/boot/kernel/kernel"
    with pytest.raises(AdapterError, match=r"vmcore\.3: no such dump"):
        parse_open_args(["-n", "3", "--crashdir", str(tmp_path)], "k")
    with pytest.raises(AdapterError, match="unknown option --bogus"):
        parse_open_args(["--bogus", "k", "c"], None)
    with pytest.raises(AdapterError, match="--key needs a value"):
        parse_open_args(["k", "c", "--key"], None)
