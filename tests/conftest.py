"""Shared fixtures: the four real FreeBSD dumps from ../shared/testdata.

The preparation itself (decompress, yaml2obj, once per session) lives in
``tests/realdumps.py``; these fixtures expose it keyed by short names
("amd64-minidump", ...) for the core tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from realdumps import DATA_DIR, MISSING_DATA, real_dump_factory  # noqa: E402, F401

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


# -- the suite must not shrink unnoticed ---------------------------------------------
# Under KVM_DBG_REQUIRE_TESTDATA=1 (set by .ci/run) every skip fails the run, except
# those whose reason starts with "n/a:" (a test that does not apply to this host, e.g.
# a non-native check on a native host).  Without it, one line says how many tests
# were skipped for want of the real dumps and where those come from.

REQUIRE = os.environ.get("KVM_DBG_REQUIRE_TESTDATA") == "1"
NOT_APPLICABLE = "n/a:"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = [_skip_reason(r) for r in skipped]
    data = sum(1 for r in reasons if r.startswith(MISSING_DATA))
    if data and not REQUIRE:
        terminalreporter.write_line(
            f"kvm_dbg: {data} tests skipped: {MISSING_DATA} in {DATA_DIR} (the LLVM project's "
            "FreeBSD vmcores: see README.md; CI sets KVM_DBG_REQUIRE_TESTDATA=1 to fail "
            "instead)", yellow=True)
    bad = [r for r in reasons if not r.startswith(NOT_APPLICABLE)]
    if REQUIRE and bad:
        terminalreporter.write_line(
            f"kvm_dbg: KVM_DBG_REQUIRE_TESTDATA=1: {len(bad)} skipped tests count as "
            f"failures (missing data or tools), e.g.: {bad[0]}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if not REQUIRE:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if any(not _skip_reason(r).startswith(NOT_APPLICABLE) for r in skipped):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
