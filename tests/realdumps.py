"""The four real FreeBSD dumps of LLDB's test suite, prepared once per session.

Usage in a test module::

    from realdumps import REAL_DUMPS, real_dump_factory   # noqa: F401 (fixture)

    @pytest.mark.parametrize("name", REAL_DUMPS)
    def test_x(real_dump_factory, name):
        d = real_dump_factory(name)   # RealDump: .kernel, .core, .expected, .arch

The data live in ``<checkout>/../shared/testdata/freebsd-lldb`` (a sibling of
the checkout in CI).  Tests skip with a clear message when the directory or
``yaml2obj`` is missing, and fail instead under ``KVM_DBG_REQUIRE_TESTDATA=1``
(as in CI: see tests/conftest.py).  Stdlib + pytest only.
"""

from __future__ import annotations

import bz2
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import pytest

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "freebsd-lldb"
#: Every skip for want of the real dumps starts with this (conftest counts them).
MISSING_DATA = "real FreeBSD dumps not available"


def missing_data(what: object) -> None:
    """Skip: ``what`` (a path) of the real-dump data set is absent."""
    pytest.skip(f"{MISSING_DATA}: {what} is absent (the LLVM project's FreeBSD vmcores, "
                "see ../shared/testdata/freebsd-lldb/README.md)")
YAML2OBJ_MAX_SIZE = 31457280


def _expected() -> Dict[str, dict]:
    try:
        return json.loads((DATA_DIR / "expected.json").read_text())
    except (OSError, ValueError):
        return {}


EXPECTED = _expected()
#: Dump names without ".bz2", e.g. "vmcore-amd64-minidump".
REAL_DUMPS = sorted(name[:-4] for name in EXPECTED) or ["vmcore-amd64-full",
                                                       "vmcore-amd64-minidump",
                                                       "vmcore-arm64-minidump",
                                                       "vmcore-i386-minidump"]


@dataclass(frozen=True)
class RealDump:
    name: str          # "vmcore-amd64-minidump"
    arch: str          # "amd64"
    kernel: str        # path of the built kernel ELF
    core: str          # path of the decompressed vmcore
    expected: dict     # this dump's entry of expected.json


def yaml2obj() -> str:
    """Path of LLVM's yaml2obj (env YAML2OBJ, PATH, versioned names), or ''."""
    env = os.environ.get("YAML2OBJ")
    if env:
        return env
    for name in ["yaml2obj"] + [f"yaml2obj-{v}" for v in range(20, 10, -1)]:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/yaml2obj" if os.path.exists("/usr/bin/yaml2obj") else ""


class _Preparer:
    """Builds kernels and decompresses dumps into one directory, once each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.done: Dict[str, RealDump] = {}

    def kernel(self, yaml_name: str) -> str:
        out = self.root / yaml_name.replace(".yaml", "")
        if not out.exists():
            tool = yaml2obj()
            if not tool:
                pytest.skip("yaml2obj (LLVM) not found: cannot build the real-dump kernels")
            tmp = out.with_suffix(".tmp")
            subprocess.run([tool, f"--max-size={YAML2OBJ_MAX_SIZE}", str(DATA_DIR / yaml_name),
                            "-o", str(tmp)], check=True, capture_output=True)
            tmp.replace(out)
        return str(out)

    def core(self, name: str) -> str:
        out = self.root / name
        if not out.exists():
            tmp = out.with_suffix(".tmp")
            with bz2.open(DATA_DIR / (name + ".bz2"), "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            tmp.replace(out)
        return str(out)

    def __call__(self, name: str) -> RealDump:
        if not DATA_DIR.is_dir():
            missing_data(DATA_DIR)
        entry = EXPECTED.get(name + ".bz2")
        if entry is None:
            missing_data(f"{name} in {DATA_DIR / 'expected.json'}")
        with self.lock:
            if name not in self.done:
                arch = name.split("-")[1]
                self.done[name] = RealDump(name, arch, self.kernel(entry["kernel"]),
                                           self.core(name), entry)
            return self.done[name]


@pytest.fixture(scope="session")
def real_dump_factory(tmp_path_factory) -> Callable[[str], RealDump]:
    """A function ``name -> RealDump`` preparing each dump once per session."""
    return _Preparer(tmp_path_factory.mktemp("realdumps"))
