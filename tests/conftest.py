"""Shared fixtures: the four real FreeBSD dumps from ../shared/testdata.

The preparation itself (decompress, yaml2obj, once per session) lives in
``tests/realdumps.py``; these fixtures expose it keyed by short names
("amd64-minidump", ...) for the core tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from realdumps import real_dump_factory  # noqa: E402, F401  (session fixture)

DUMPS = {
    "amd64-full": "vmcore-amd64-full",
    "amd64-minidump": "vmcore-amd64-minidump",
    "arm64-minidump": "vmcore-arm64-minidump",
    "i386-minidump": "vmcore-i386-minidump",
}


@pytest.fixture(scope="session")
def real_dumps(real_dump_factory) -> dict:  # noqa: F811
    """{short key: RealDump} for all four real dumps."""
    return {key: _Keyed(real_dump_factory(name), key) for key, name in DUMPS.items()}


@pytest.fixture(params=sorted(DUMPS))
def real_dump(request, real_dump_factory):  # noqa: F811
    """Each real dump in turn (a realdumps.RealDump with .key added)."""
    return _Keyed(real_dump_factory(DUMPS[request.param]), request.param)


class _Keyed:
    """A RealDump plus the short key the core tests use."""

    def __init__(self, dump, key: str) -> None:
        self.__dict__.update(vars(dump))
        self.key = key


@pytest.fixture(scope="session")
def example(tmp_path_factory) -> Path:
    """The committed example pair (examples/), decompressed: DIR/kernel, DIR/vmcore.0."""
    import gzip
    import shutil

    d = tmp_path_factory.mktemp("example")
    for name in ("kernel", "vmcore.0"):
        with gzip.open(ROOT / "examples" / f"{name}.gz") as src, open(d / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return d
