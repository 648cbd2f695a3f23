"""kvm_dbg.scripting without a debugger: kvm-open's argument string for
open_dump, error lines, and the environment ``kvm-dbg env --lldb`` prints
(with fake lldb executables for the failures, the real lldb for success)."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvm_dbg import scripting
from kvm_dbg.adapter import AdapterError, parse_open_args
from kvm_dbg.errors import KvmError

ROOT = Path(__file__).resolve().parents[1]


def _lldb() -> str:
    return os.environ.get("LLDB") or shutil.which("lldb-16") or shutil.which("lldb") or ""


def test_open_command_args_round_trip():
    odd = 'dir with "quotes" \\ and spaces/vmcore.0'
    args = scripting.open_command_args("/k/kernel", odd, writable=True, key="/k.pem",
                                       dumpkey="/key.0", cache_dir="/c", sysroot="/r")
    req = parse_open_args(shlex.split(args), None)
    assert (req.kernel, req.core, req.writable) == ("/k/kernel", odd, True)
    assert (req.key, req.dumpkey, req.cache_dir, req.sysroot) == ("/k.pem", "/key.0", "/c", "/r")
    # no kernel: the debugger's; a path that looks like an option stays a path
    req = parse_open_args(shlex.split(scripting.open_command_args(None, "-core")), "/dbg/k")
    assert (req.kernel, req.core, req.writable) == ("/dbg/k", "./-core", False)
    assert scripting.open_command_args("k", "c", sysroot=None) == '"k" "c"'
    assert scripting.open_command_args(Path("k"), Path("c")) == '"k" "c"'


def test_open_command_args_unknown_option():
    with pytest.raises(TypeError, match="unexpected keyword argument 'sysrot'"):
        scripting.open_command_args("k", "c", sysrot="/r")


def test_command_error_and_show(capsys):
    assert scripting.command_error("error: kvm-open: c: invalid core\n", "kvm-open") == \
        "kvm-open: c: invalid core"
    assert scripting.command_error("\n  kvm-close: no dump is open\nmore", "kvm-close") == \
        "kvm-close: no dump is open"
    assert scripting.command_error("", "kvm-open") == "kvm-open: failed"
    assert issubclass(scripting.ScriptError, AdapterError)
    buf = io.StringIO()
    scripting.show("panic: x", buf)
    scripting.show("  \n", buf)
    assert buf.getvalue() == "panic: x\n"
    scripting.show("to stderr\n", None)
    assert capsys.readouterr().err == "to stderr\n"


def test_lldb_module_version(tmp_path):
    d = tmp_path / "lib" / "python3.9" / "site-packages"
    (d / "lldb").mkdir(parents=True)
    assert scripting.lldb_module_version(str(d)) == "3.9"               # from the directory
    (d / "lldb" / "_lldb.cpython-312-x86_64-linux-gnu.so").write_bytes(b"")
    assert scripting.lldb_module_version(str(d)) == "3.12"              # the extension's tag
    assert scripting.lldb_module_version(str(tmp_path)) is None


def _fake_lldb(tmp_path: Path, module_dir: Path) -> str:
    exe = tmp_path / "bin" / "lldb"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\n"
                   f'if [ "$1" = -P ]; then echo {shlex.quote(str(module_dir))}; '
                   'else echo "lldb version 16.0.6"; fi\n')
    exe.chmod(0o755)
    return str(exe)


def _site(tmp_path: Path) -> Path:
    v = sys.version_info
    d = tmp_path / "llvm" / "lib" / f"python{v.major}.{v.minor}" / "site-packages"
    d.mkdir(parents=True)
    return d


def test_lldb_env_module_missing(tmp_path):
    exe = _fake_lldb(tmp_path, _site(tmp_path))
    with pytest.raises(KvmError, match=r"lldb's Python module is not installed .*"
                                       r"apt install python3-lldb-16 liblldb-16-dev"):
        scripting.lldb_env(exe)


def test_lldb_env_dangling_extension(tmp_path):
    """Debian without liblldb-16-dev: _lldb points to a missing liblldb.so."""
    site = _site(tmp_path)
    (site / "lldb").mkdir()
    (site / "lldb" / "__init__.py").write_text("from . import _lldb\n")
    (site / "lldb" / "_lldb.cpython-311-x86_64-linux-gnu.so").symlink_to("../../../liblldb.so")
    exe = _fake_lldb(tmp_path, site)
    with pytest.raises(KvmError) as e:
        scripting.lldb_env(exe)
    msg = str(e.value)
    assert "points to " + str(tmp_path / "llvm" / "lib" / "liblldb.so") in msg, msg
    assert msg.endswith("(Debian: apt install liblldb-16-dev)"), msg
    assert "\n" not in msg


def test_lldb_env_import_fails(tmp_path):
    site = _site(tmp_path)
    (site / "lldb").mkdir()
    (site / "lldb" / "__init__.py").write_text("raise ImportError('circular import')\n")
    exe = _fake_lldb(tmp_path, site)
    with pytest.raises(KvmError, match=r"cannot be imported: .*ImportError: circular import.*"
                                       r"apt install python3-lldb-16 liblldb-16-dev"):
        scripting.lldb_env(exe)


def test_lldb_env_real_lldb():
    exe = _lldb()
    if not exe:
        pytest.fail("lldb is not installed (bootstrap installs lldb-16)")
    env = scripting.lldb_env(exe)
    out = subprocess.run(
        [env["PYTHON"], "-c", "import lldb, kvm_dbg, elftools; print(kvm_dbg.__file__); "
         "print(lldb.SBDebugger.Create().IsValid())"],
        env=dict(os.environ, PYTHONPATH=env["PYTHONPATH"]), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert Path(lines[0]).resolve() == (ROOT / "kvm_dbg" / "__init__.py").resolve()
    assert lines[1] == "True"


def test_shell_assignments_eval():
    env = {"PYTHON": "/usr/bin/python3.11", "PYTHONPATH": "/a b:/c'd"}
    text = scripting.shell_assignments(env)
    assert text.splitlines()[0].startswith("PYTHON=") and \
        text.splitlines()[1].startswith("PYTHONPATH=")
    out = subprocess.run(["bash", "-c", 'eval "$1"; echo "$PYTHON"; '
                          'sh -c \'echo "$PYTHONPATH"\'', "x", text],
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert out.stdout.splitlines() == ["/usr/bin/python3.11", "/a b:/c'd"]


def _kvm_dbg(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvm_dbg.cli", *args], capture_output=True,
                          text=True, env=env or dict(os.environ, PYTHONPATH=str(ROOT)))


def test_cli_env_lldb():
    """The documented use: eval "$(kvm-dbg env --lldb)", then "$PYTHON" imports all."""
    if not _lldb():
        pytest.fail("lldb is not installed (bootstrap installs lldb-16)")
    r = _kvm_dbg("env", "--lldb")
    assert r.returncode == 0, r.stderr
    names = [ln.split("=", 1)[0] for ln in r.stdout.splitlines()]
    assert names == ["PYTHON", "PYTHONPATH", "export PYTHONPATH"], r.stdout
    check = subprocess.run(["bash", "-c", 'eval "$1" && "$PYTHON" -c "import lldb, kvm_dbg, '
                            'elftools"', "x", r.stdout], capture_output=True, text=True,
                           env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")})
    assert check.returncode == 0, check.stderr


def test_cli_env_lldb_fails_with_package_name(tmp_path):
    _fake_lldb(tmp_path, _site(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(ROOT),
               PATH=str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    r = _kvm_dbg("env", "--lldb", env=env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("kvm-dbg: lldb's Python module is not installed"), r.stderr
    assert "python3-lldb-16" in r.stderr and len(r.stderr.splitlines()) == 1
    assert _kvm_dbg("env").returncode == 2                        # --lldb is required
