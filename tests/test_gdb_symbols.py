"""The debugger's symbol tables are the resolver: a stripped kernel whose
symbols exist only in a separate debug file that gdb loaded still opens."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from realdumps import real_dump_factory  # noqa: F401 (fixture)
from test_gdb_plugin import Gdb, _gdb_for
from test_rsp_protocol import fake_dump

from kvm_dbg.rsp.session import Session
from kvm_dbg.rsp.symbols import SymbolTable
from kvm_dbg.rsp.target import Target

pytest.importorskip("pexpect")
DUMP = "vmcore-amd64-full"


def _objcopy() -> str:
    return shutil.which("objcopy") or shutil.which("llvm-objcopy") or ""


@pytest.fixture(scope="module")
def stripped(real_dump_factory, tmp_path_factory):  # noqa: F811
    """(dump, dir): dir/kernel (stripped, debuglink), kernel.nolink, kernel.debug."""
    dump = real_dump_factory(DUMP)
    tool = _objcopy()
    if not tool or not _gdb_for(dump.arch):
        pytest.skip("objcopy or gdb missing")
    d = tmp_path_factory.mktemp("stripped")
    debug, nolink, kernel = d / "kernel.debug", d / "kernel.nolink", d / "kernel"
    subprocess.run([tool, "--only-keep-debug", dump.kernel, str(debug)], check=True)
    subprocess.run([tool, "--strip-all", dump.kernel, str(nolink)], check=True)
    subprocess.run([tool, f"--add-gnu-debuglink={debug}", str(nolink), str(kernel)],
                   check=True, cwd=d)
    syms = subprocess.run(["readelf" if shutil.which("readelf") else "llvm-readelf", "-S",
                           str(kernel)], capture_output=True, text=True).stdout
    assert ".symtab" not in syms  # the kernel file itself has no symbols at all
    return dump, d


def _check_open(g: Gdb, dump, out: str) -> None:
    assert "kvm-open:" not in out and "Traceback" not in out, out
    threads = g.cmd("info threads")
    lines = [ln for ln in threads.splitlines() if re.match(r"^[* ]\s*\d+\s+Thread", ln)]
    assert len(lines) == dump.expected["numthread"], threads
    assert '"(pid 806) sysctl (crashed)"' in lines[0]
    assert g.cmd("print (int)hz").strip().endswith(f"= {dump.expected['hz']}")
    pid = g.server_pid()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"--no-elf-symbols" in f.read().split(b"\0")
    hz = "int(gdb.parse_and_eval('(unsigned long)&hz'))"
    assert "b'd\\x00\\x00\\x00'" in g.cmd(f"python print(kvm_gdb.kvm().read({hz}, 4))")
    frames = re.findall(r"^#\d+\s+(0x[0-9a-f]+)", g.cmd("bt"), re.M)
    assert [int(p, 16) for p in frames] == \
        [int(p, 16) for p in dump.expected["threads"]["0"]["backtrace_pcs"]]
    g.cmd("kvm-close")


@pytest.fixture
def gdb(stripped):
    g = Gdb(_gdb_for(stripped[0].arch))
    yield g
    try:
        g.quit()
    except Exception:
        g.p.terminate(force=True)


def test_debuglink(gdb, stripped):
    dump, d = stripped
    _check_open(gdb, dump, gdb.cmd(f"kvm-open {d / 'kernel'} {dump.core}"))


def test_symbol_file(gdb, stripped):
    dump, d = stripped
    gdb.cmd(f"file {d / 'kernel.nolink'}")
    gdb.cmd(f"symbol-file {d / 'kernel.debug'}")
    _check_open(gdb, dump, gdb.cmd(f"kvm-open {dump.core}"))


def test_add_symbol_file(gdb, stripped):
    dump, d = stripped
    gdb.cmd("set osabi none")
    gdb.cmd(f"file {d / 'kernel.nolink'}")
    gdb.cmd(f"add-symbol-file {d / 'kernel.debug'}")
    _check_open(gdb, dump, gdb.cmd(f"kvm-open {d / 'kernel.nolink'} {dump.core}"))


def test_without_debug_file_fails_clearly(gdb, stripped, tmp_path):
    dump, d = stripped
    lonely = tmp_path / "kernel"
    shutil.copy(d / "kernel", lonely)  # debuglink points to a file that is not there
    out = gdb.cmd(f"kvm-open {lonely} {dump.core}").strip()
    assert out.splitlines()[-1] == (
        f"kvm-open: {lonely}: gdb has no symbols for this kernel (no symbol table and no "
        "separate debug file found): load them with 'symbol-file FILE' or "
        "'add-symbol-file FILE', then retry"), out
    assert "No threads" in gdb.cmd("info threads")


def test_names_not_in_the_file_are_asked_with_qsymbol():
    table = SymbolTable({"allproc": 0x1000})          # no ELF fallback
    assert table("linker_files") is None              # the library missed it
    s = Session(Target(fake_dump()), table, ["allproc"])
    ask = b"qSymbol:" + b"linker_files".hex().encode()
    assert s.handle(b"qSymbol::").replies == [ask]    # e.g. after add-symbol-file
    assert s.handle(b"qSymbol:ffffffff81000000:" + b"linker_files".hex().encode()
                    ).replies == [b"OK"]
    assert table("linker_files") == 0xFFFFFFFF81000000
    assert s.handle(b"qSymbol::").replies == [b"OK"]  # nothing left to ask
