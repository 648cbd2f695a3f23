"""``kvm-dbg`` subcommands on real dumps and fixtures, text and JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixturegen import build

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "cli-json-schema.json").read_text())


def run(*args, check=None):
    """Run the CLI as a user would; returns (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=120)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p.returncode, p.stdout, p.stderr


def validate(doc, definition):
    jsonschema = pytest.importorskip("jsonschema")
    schema = dict(SCHEMA, **{"$ref": f"#/$defs/{definition}"})
    jsonschema.validate(doc, schema)


@pytest.mark.parametrize("cmd", ["info", "threads", "ps", "dmesg", "kld", "triage"])
def test_reporting_commands_json_match_schema(cmd, real_dump):
    _, out, _ = run(cmd, "--json", real_dump.kernel, real_dump.core, check=0)
    doc = json.loads(out)
    validate(doc, cmd)
    if cmd == "info":
        assert doc["arch"] == real_dump.arch and doc["hz"] == real_dump.expected["hz"]
    if cmd == "threads":
        rows = doc["threads"]
        assert len(rows) == real_dump.expected["numthread"]
        assert rows[0]["name"] == real_dump.expected["threads"]["0"]["name"]
        assert rows[0]["crashed"] is True
    if cmd == "triage":
        exp = real_dump.expected["threads"]["0"]
        assert doc["crashed_thread"]["name"] == exp["name"]
        pcs = [int(f["pc"], 16) for f in doc["crashed_thread"]["backtrace"]]
        assert pcs[:len(exp["backtrace_pcs"])] == [int(x, 16) for x in exp["backtrace_pcs"]]


def test_text_output(real_dumps):
    d = real_dumps["amd64-minidump"]
    _, out, _ = run("info", d.kernel, d.core, check=0)
    assert "minidump v3" in out and "hz:" in out and "100" in out
    _, out, _ = run("threads", d.kernel, d.core, check=0)
    assert "(pid 800) sysctl (crashed)" in out.splitlines()[1]
    _, out, _ = run("triage", d.kernel, d.core, check=0)
    assert "crashed:   (pid 800) sysctl (crashed)" in out
    assert "0xffffffff80c09ade" in out
    _, out, _ = run("ps", d.kernel, d.core, check=0)
    assert any(line.split()[0] == "800" and line.endswith("sysctl")
               for line in out.splitlines()[1:])


def test_nlist_and_read(real_dumps):
    d = real_dumps["i386-minidump"]
    _, out, _ = run("nlist", "--json", d.kernel, d.core, "hz", "nonexistent_sym", check=0)
    doc = json.loads(out)
    validate(doc, "nlist")
    assert doc["symbols"]["nonexistent_sym"] is None
    hz = doc["symbols"]["hz"]
    _, out, _ = run("read", "--json", d.kernel, d.core, hz, 4, check=0)
    doc = json.loads(out)
    validate(doc, "read")
    assert int.from_bytes(bytes.fromhex(doc["hex"]), "little") == d.expected["hz"]
    _, out, _ = run("read", d.kernel, d.core, hz, 4, check=0)
    assert out.startswith(f"{int(hz, 16):016x}  64 00 00 00")


def test_read_raw_to_file(real_dumps, tmp_path):
    d = real_dumps["arm64-minidump"]
    _, out, _ = run("nlist", "--json", d.kernel, d.core, "hz", check=0)
    hz = json.loads(out)["symbols"]["hz"]
    target = tmp_path / "hz.bin"
    run("read", d.kernel, d.core, hz, 4, "-o", target, check=0)
    assert int.from_bytes(target.read_bytes(), "little") == d.expected["hz"]


def test_crashdir_n_finds_kernel_like_kgdb(real_dumps, tmp_path):
    d = real_dumps["amd64-full"]
    os.symlink(d.core, tmp_path / "vmcore.3")
    os.symlink(d.kernel, tmp_path / "kernel.3")
    _, out, _ = run("info", "--json", "-n", 3, "--crashdir", tmp_path, check=0)
    assert json.loads(out)["format"] == "ELF full dump"
    # and through info.N's build directory
    build_dir = tmp_path / "obj"
    build_dir.mkdir()
    os.symlink(d.kernel, build_dir / "kernel.debug")
    os.symlink(d.core, tmp_path / "vmcore.4")
    (tmp_path / "info.4").write_text("Dump header from device: /dev/ada0p3\n"
                                     f"  Version String: FreeBSD 13.0\n    root@host:{build_dir}\n")
    _, out, _ = run("info", "--json", "-n", 4, "--crashdir", tmp_path, check=0)
    assert json.loads(out)["kernel"] == str(build_dir / "kernel.debug")


def test_triage_many_dumps_groups_them(real_dumps, tmp_path):
    """20 dumps in a crash directory (kernel.N beside each vmcore.N): two
    crash signatures plus one unreadable dump."""
    a, b = real_dumps["amd64-minidump"], real_dumps["arm64-minidump"]
    cores = []
    for n in range(20):
        d = a if n < 12 else b
        os.symlink(d.kernel, tmp_path / f"kernel.{n}")
        if n == 19:
            (tmp_path / f"vmcore.{n}").write_bytes(b"minidump" + b"\0" * 100)
        else:
            os.symlink(d.core, tmp_path / f"vmcore.{n}")
        cores.append(tmp_path / f"vmcore.{n}")
    _, out, _ = run("triage", "--json", *cores, check=0)
    doc = json.loads(out)
    validate(doc, "triage")
    counts = sorted(g["count"] for g in doc["summary"])
    assert counts == [1, 7, 12]
    big = next(g for g in doc["summary"] if g["count"] == 12)
    assert "0xffffffff80c09ade" in big["signature"]
    assert sorted(big["cores"]) == sorted(str(c) for c in cores[:12])
    assert "error" in doc["dumps"][19]
    _, text, _ = run("triage", *cores, check=0)
    assert "summary:" in text and "   12  " in text


def test_bad_arguments_exit_2():
    code, _, err = run("read", "k", "c", "notanumber", "4")
    assert code == 2 and "not a number" in err
    code, _, err = run("info")
    assert code == 2
    assert err.strip().splitlines()[-1] == "kvm-dbg: error: a CORE (or -n N) is required"
    code, _, _ = run("frobnicate")
    assert code == 2


def test_bad_files_exit_1_one_line(tmp_path, real_dumps):
    d = real_dumps["amd64-minidump"]
    code, out, err = run("info", d.kernel, tmp_path / "missing")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "missing: No such file or directory" in err
    junk = tmp_path / "junk"
    junk.write_text("hello\n" * 100)
    code, _, err = run("threads", d.kernel, junk)
    assert code == 1 and err.count("\n") == 1 and "invalid core" in err
    code, _, err = run("read", d.kernel, d.core, "0x10", "8")
    assert code == 1 and "invalid address (0x10)" in err


def test_serve_refuses_non_loopback(real_dumps):
    d = real_dumps["amd64-minidump"]
    code, _, err = run("serve", d.kernel, d.core, "--listen", "0.0.0.0:2345")
    assert code == 2 and "--allow-remote" in err


def test_fixture_dump_info(tmp_path):
    fx = build("i386", "minidump", 1, str(tmp_path), pae=False)
    _, out, _ = run("info", "--json", fx.kernel_path, fx.core_path, check=0)
    doc = json.loads(out)
    assert doc["format"] == "minidump v1 (non-PAE)" and doc["hz"] == fx.manifest.hz_value


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")
def test_kvm_dbg_gdb_reaches_prompt_with_crashed_thread(real_dumps):
    pexpect = pytest.importorskip("pexpect")
    d = real_dumps["amd64-minidump"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="dumb")
    child = pexpect.spawn(sys.executable, ["-m", "kvm_dbg.cli", "gdb", d.kernel, d.core, "--",
                                           "-nx", "-iex", "set pagination off"],
                          env=env, encoding="utf-8", timeout=90, dimensions=(200, 250))
    try:
        child.expect(r"\(gdb\) ")
        child.sendline("info threads")
        child.expect(r"\* 1 +Thread 100670 \"\(pid 800\) sysctl \(crashed\)\"")
        child.expect(r"\(gdb\) ")
        child.sendline("quit")
        if child.expect([r"Quit anyway\? \(y or n\) ", pexpect.EOF]) == 0:
            child.sendline("y")
            child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
