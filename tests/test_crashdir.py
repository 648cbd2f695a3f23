"""savecore's crash directory: info.N, ``-n N`` picking the dump file, the
kernel found as crashinfo(8) does (version strings compared), textdumps in
the CLI.  Fixtures: tests/fixturegen/savecore.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixturegen import build
from fixturegen import savecore as sc

from kvm_dbg import crashdir

ROOT = Path(__file__).resolve().parents[1]


def run(*args, check=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), KVM_DBG_PROGRESS="0")
    p = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=120)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p.returncode, p.stdout, p.stderr


def _variant(src: str, dst: str, old: bytes, new: bytes) -> str:
    """A copy of kernel ``src`` whose version string differs (same length)."""
    data = open(src, "rb").read()
    assert data.count(old) == 1 and len(old) == len(new)
    sc.write(dst, data.replace(old, new))
    return dst


@pytest.fixture
def tree(tmp_path):
    """crash/ with dump 0 (zstd) and its info.0; a sysroot whose /boot has three
    kernels, only kernel.old matching; its debug file in /usr/lib/debug."""
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    version = fx.profile.version.rstrip(b"\0").decode()
    crash = tmp_path / "crash"
    sc.write(str(crash / "vmcore.0.zst"), sc.kernel_zstd(open(fx.core_path, "rb").read()))
    sc.write(str(crash / "info.0"), sc.info_text(versionstring=version, panic="page fault",
                                                compression="zstd").encode())
    root = tmp_path / "root"
    good = sc.write(str(root / "boot/kernel.old/kernel"), open(fx.kernel_path, "rb").read())
    newer = _variant(fx.kernel_path, str(root / "boot/kernel/kernel"), b"FIXTURE #0", b"FIXTURE #1")
    _variant(fx.kernel_path, str(root / "boot/kernel.x/kernel"), b"FIXTURE #0", b"FIXTURE #2")
    os.utime(good, (1000, 1000))                        # oldest: searched last but one
    os.utime(root / "boot/kernel.x/kernel", (500, 500))
    dbg = sc.write(str(root / "usr/lib/debug/boot/kernel.old/kernel.debug"), b"\x7fELF")
    return {"fx": fx, "crash": crash, "root": root, "good": good, "newer": newer, "dbg": dbg,
            "version": version}


def test_parse_info(tmp_path):
    text = sc.info_text(versionstring="FreeBSD 14.0-RELEASE #0: Fri\n    root@h:/usr/obj/x\n",
                        panic="general protection fault", compression="zstd", length=1234,
                        hostname="box", bounds=3)
    info = crashdir.parse_info(sc.write(str(tmp_path / "info.3"), text.encode()))
    assert info.device == "/dev/ada0p3" and info.architecture == "amd64"
    assert info.version == "FreeBSD 14.0-RELEASE #0: Fri\n    root@h:/usr/obj/x"
    assert info.panic == "general protection fault" and info.compression == "zstd"
    assert info.dump_length == 1234 and info.hostname == "box" and info.status == "good"
    assert info.dumptime.startswith("2023-11-14")


def test_version_match_is_crashinfos_prefix_rule():
    full = "FreeBSD 14.0 #0 r1: Mon\n    root@x:/usr/obj/usr/src/amd64.amd64/sys/GENERIC\n"
    assert crashdir.version_matches(full, full.rstrip("\n"))
    cut = full[:190]                     # the header keeps 191 bytes, [190] = '\n'
    assert crashdir.version_matches(full, cut + "\n")
    assert not crashdir.version_matches(full.replace("r1", "r2"), full)
    assert not crashdir.version_matches(full, "")


def test_kernel_found_by_version_in_sysroot(tree):
    choice = crashdir.find_kernel(str(tree["crash"]), 0, str(tree["root"]),
                                  crashdir.parse_info(str(tree["crash"] / "info.0")))
    assert choice.path == tree["good"] and choice.debug == tree["dbg"]
    assert "version string matches" in choice.reason
    tried = dict(choice.tried)
    assert tried[tree["newer"]].startswith("version differs: FreeBSD 14.0-FIXTURE #1")


def test_cli_n_crashdir_sysroot(tree):
    _, out, err = run("info", "--json", "-n", 0, "--crashdir", tree["crash"],
                      "--sysroot", tree["root"], check=0)
    r = json.loads(out)
    assert r["kernel"] == tree["good"] and r["core"] == str(tree["crash"] / "vmcore.0.zst")
    assert r["version"] == tree["version"].strip() and r["kernel_matches_dump"] is True
    assert f"kernel {tree['good']} (debug file {tree['dbg']})" in err
    assert "its version string matches the dump's (info.0" in err


def test_cli_no_matching_kernel_lists_what_was_tried(tree):
    os.unlink(tree["good"])
    code, _, err = run("info", "-n", 0, "--crashdir", tree["crash"], "--sysroot", tree["root"])
    assert code == 1
    assert "no kernel matches the dump's version \"FreeBSD 14.0-FIXTURE #0" in err
    assert f"{tree['newer']}: version differs" in err


def test_mismatching_kernel_n_is_skipped(tree):
    _variant(tree["good"], str(tree["crash"] / "kernel.0"), b"FIXTURE #0", b"FIXTURE #9")
    choice = crashdir.find_kernel(str(tree["crash"]), 0, str(tree["root"]),
                                  crashdir.parse_info(str(tree["crash"] / "info.0")))
    assert choice.path == tree["good"]
    assert dict(choice.tried)[str(tree["crash"] / "kernel.0")] == "version differs from info.0's"
    sc.write(str(tree["crash"] / "kernel.0"), open(tree["good"], "rb").read())
    choice = crashdir.find_kernel(str(tree["crash"]), 0, str(tree["root"]),
                                  crashdir.parse_info(str(tree["crash"] / "info.0")))
    assert choice.path == str(tree["crash"] / "kernel.0") and "kgdb's rule" in choice.reason


def test_find_dump_names(tmp_path):
    for name in ("textdump.tar.2.gz", "vmcore_encrypted.1", "vmcore.0.gz", "vmcore.0"):
        sc.write(str(tmp_path / name), b"x")
    assert crashdir.find_dump(str(tmp_path), 0).core.endswith("/vmcore.0")
    assert crashdir.find_dump(str(tmp_path), 1).core.endswith("/vmcore_encrypted.1")
    assert crashdir.find_dump(str(tmp_path), 2).core.endswith("/textdump.tar.2.gz")
    with pytest.raises(Exception, match=r"vmcore\.5: no such dump"):
        crashdir.find_dump(str(tmp_path), 5)


def test_cli_encrypted_by_number(tmp_path):
    fx = build("arm64", "minidump", 2, str(tmp_path / "fx"))
    priv = sc.rsa_key()
    pem = sc.write_pem(priv, str(tmp_path / "private.pem"))
    ct, blob = sc.encrypt(open(fx.core_path, "rb").read(), priv, 2)
    crash = tmp_path / "crash"
    sc.write(str(crash / "vmcore_encrypted.7"), ct)
    sc.write(str(crash / "key.7"), blob)
    code, _, err = run("info", "-n", 7, "--crashdir", crash, fx.kernel_path)
    assert code == 1 and "--key" in err and "key.7" in err
    _, out, _ = run("info", "--json", "-n", 7, "--crashdir", crash, "--key", pem,
                    fx.kernel_path, check=0)
    assert json.loads(out)["arch"] == "arm64"


TEXT = {"ddb.txt": b"db:0:kdb.enter.panic>  bt\nTracing pid 12 tid 100034 td 0xf\n"
                   b"kdb_enter() at kdb_enter+0x33/frame 0xfffffe\n",
        "msgbuf.txt": b"line one\npanic: sleeping thread\ncpuid = 1\n",
        "panic.txt": b"sleeping thread",
        "version.txt": b"FreeBSD 13.2-RELEASE-p4 GENERIC\n"}


def test_cli_textdump(tmp_path):
    crash = tmp_path / "crash"
    sc.write(str(crash / "textdump.tar.1.gz"),
             sc.compress(sc.textdump_tar(TEXT), "gzip-savecore"))
    _, out, _ = run("triage", "-n", 1, "--crashdir", crash, check=0)
    assert "format:    textdump" in out and "panic:     sleeping thread" in out
    assert "kdb_enter() at kdb_enter+0x33" in out and "cpuid = 1" in out
    _, out, _ = run("info", "--json", str(crash / "textdump.tar.1.gz"), check=0)
    r = json.loads(out)
    assert r["format"] == "textdump" and r["panic"] == "sleeping thread"
    assert r["files"] == sorted(TEXT)
    _, out, _ = run("dmesg", str(crash / "textdump.tar.1.gz"), check=0)
    assert "panic: sleeping thread" in out
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    for cmd in (("read", fx.kernel_path, crash / "textdump.tar.1.gz", "0x1000", "8"),
                ("nlist", fx.kernel_path, crash / "textdump.tar.1.gz", "hz"),
                ("threads", "-n", 1, "--crashdir", crash)):
        code, _, err = run(*cmd)
        assert code == 1 and "a textdump has no memory" in err, (cmd, err)


def test_textdump_json_matches_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "docs" / "cli-json-schema.json").read_text())
    path = sc.write(str(tmp_path / "textdump.tar.0"), sc.textdump_tar(TEXT))
    for cmd in ("info", "triage", "dmesg"):
        _, out, _ = run(cmd, "--json", path, check=0)
        jsonschema.validate(json.loads(out), dict(schema, **{"$ref": f"#/$defs/{cmd}"}))
