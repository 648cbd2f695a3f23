"""Shared fixtures: the four real FreeBSD dumps from ../shared/testdata.

They are decompressed and their kernels built with yaml2obj once per test
session into a temporary directory; nothing large is ever committed.  When
../shared is absent the tests that need them skip with a message (in CI it
is always present).
"""

from __future__ import annotations

import bz2
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TESTDATA = ROOT.parent / "shared" / "testdata" / "freebsd-lldb"
DUMPS = {
    "amd64-full": ("vmcore-amd64-full", "amd64"),
    "amd64-minidump": ("vmcore-amd64-minidump", "amd64"),
    "arm64-minidump": ("vmcore-arm64-minidump", "arm64"),
    "i386-minidump": ("vmcore-i386-minidump", "i386"),
}


class RealDump:
    """Paths and expectations of one real dump."""

    def __init__(self, key: str, kernel: Path, core: Path, expected: dict) -> None:
        self.key = key
        self.kernel = str(kernel)
        self.core = str(core)
        self.expected = expected
        self.arch = DUMPS[key][1]


def _yaml2obj() -> str:
    for name in ("yaml2obj", "yaml2obj-16", "yaml2obj-15", "yaml2obj-14"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("yaml2obj not installed (Debian package llvm)")


@pytest.fixture(scope="session")
def real_dumps(tmp_path_factory) -> dict:
    """{key: RealDump} for all four real dumps, built once per session."""
    if not TESTDATA.is_dir():
        pytest.skip(f"real dumps not found at {TESTDATA} (../shared is absent)")
    expected = json.loads((TESTDATA / "expected.json").read_text())
    out = tmp_path_factory.mktemp("realdumps")
    tool = _yaml2obj()
    result = {}
    for key, (core_name, arch) in DUMPS.items():
        kernel = out / f"kernel-{arch}"
        if not kernel.exists():
            subprocess.run([tool, "--max-size=31457280", str(TESTDATA / f"kernel-{arch}.yaml"),
                            "-o", str(kernel)], check=True)
        core = out / core_name
        with bz2.open(TESTDATA / f"{core_name}.bz2", "rb") as src, open(core, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        result[key] = RealDump(key, kernel, core, expected[f"{core_name}.bz2"])
    return result


@pytest.fixture(params=sorted(DUMPS))
def real_dump(request, real_dumps) -> RealDump:
    """Each real dump in turn."""
    return real_dumps[request.param]
