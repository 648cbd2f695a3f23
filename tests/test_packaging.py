"""The package works outside the repository: a built wheel installs into a
fresh virtual environment, imports, runs ``kvm-dbg`` and ships the plugins;
and the README's two commands are the ones the scripts implement."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from fixturegen import build

ROOT = Path(__file__).resolve().parents[1]


def sh(*args, cwd=None, env=None, timeout=600):
    p = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-2000:])
    return p.stdout


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A clean venv (outside the checkout) with the wheel built from a copy of it."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    files = sh("git", "ls-files", "-z", cwd=ROOT).split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    dist = tmp / "dist"
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src)
    wheels = list(dist.glob("kvm_dbg-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    sh(py, "-m", "pip", "install", "-q", wheels[0])
    return tmp, py, env_dir


def test_wheel_installs_and_runs_outside_the_repo(wheel_env, tmp_path):
    tmp, py, env_dir = wheel_env
    out = sh(py, "-c", "import kvm_dbg, os; from kvm_dbg import kvm_open2; "
             "print(os.path.dirname(kvm_dbg.__file__))", cwd=tmp_path)
    assert str(ROOT) not in out and str(env_dir) in out
    fx = build("amd64", "minidump", 3, str(tmp_path))
    out = sh(env_dir / "bin" / "kvm-dbg", "info", fx.kernel_path, fx.core_path, cwd=tmp_path)
    assert "minidump v3" in out
    for dbg in ("gdb", "lldb"):
        path = sh(py, "-c", f"from kvm_dbg.debuggers import plugin_path; "
                  f"print(plugin_path('{dbg}'))", cwd=tmp_path).strip()
        assert path.startswith(str(env_dir)) and os.path.isfile(path), path


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")
def test_installed_gdb_plugin_finds_the_installed_package(wheel_env, tmp_path):
    """The plugin copy a wheel installs finds kvm_dbg in its own prefix, with no
    environment help (no KVM_DBG_PATH, no VIRTUAL_ENV), from gdb's Python."""
    _tmp, py, env_dir = wheel_env
    plugin = sh(py, "-c", "from kvm_dbg.debuggers import plugin_path; "
                "print(plugin_path('gdb'))", cwd=tmp_path).strip()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = sh("gdb", "-batch", "-nx", "-ex", f"source {plugin}", "-ex",
             "python import kvm_dbg; print('KVM_DBG', kvm_dbg.__file__)", cwd=tmp_path, env=env)
    line = next(ln for ln in out.splitlines() if ln.startswith("KVM_DBG "))
    assert line.split(" ", 1)[1].startswith(str(env_dir)), out


def test_readme_commands_match_the_scripts():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^    (bash scripts/\S+)$", readme, re.M)
    assert blocks == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
    for script in ("demo.sh", "test.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert "bash scripts/bootstrap.sh" in text      # both set everything up first


def test_bootstrap_is_idempotent_and_complete():
    """Run the README's set-up step twice on this machine: it must succeed, and
    leave a venv from which the package and the test tools import."""
    if os.environ.get("KVM_DBG_SKIP_BOOTSTRAP_TEST"):
        pytest.skip("KVM_DBG_SKIP_BOOTSTRAP_TEST set")
    for _ in range(2):
        sh("bash", ROOT / "scripts" / "bootstrap.sh", cwd=ROOT, timeout=1200)
    py = ROOT / ".venv" / "bin" / "python"
    sh(py, "-c", "import kvm_dbg, elftools, pytest, pexpect, jsonschema, hypothesis")
    for tool in ("gdb", "gdb-multiarch", "lldb-16", "yaml2obj"):
        assert shutil.which(tool), tool
    sh("/usr/bin/python3", "-c", "import elftools, lldb")    # the debuggers' own Python
