"""Read-only guarantee: kernel and dump are byte-identical after every kind of
read-only session (library, compat, CLI, RSP server, gdb); writes happen only
through an explicit writable open, only inside dumped pages, and land exactly
where asked."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_fuzz_harness import fixture_target, sparse_copy

import kvm_dbg
from kvm_dbg import compat

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest() + f":{os.stat(path).st_mtime_ns}"


@pytest.fixture(scope="module")
def pair(real_dump_factory, tmp_path_factory):
    """Private copies of the amd64 minidump and its kernel (mtime checked too)."""
    d = real_dump_factory("vmcore-amd64-minidump")
    tmp = tmp_path_factory.mktemp("ro")
    kernel, core = str(tmp / "kernel"), str(tmp / "vmcore")
    sparse_copy(d.kernel, kernel)
    sparse_copy(d.core, core)
    return kernel, core


def _run(args, **kw):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300,
                          cwd=str(ROOT), **kw)


def _sessions(kernel: str, core: str):
    def library():
        with kvm_dbg.open(kernel, core) as kd:
            kd.read(kd.symbol("hz"), 4)
            kd.read_partial(kd.symbol("hz"), 1 << 16)
            list(kd.walk_pages())
            kd.threads()
            kd.procs()
            kd.msgbuf()
            kd.klds()
            kd.panic_info()
            with pytest.raises(kvm_dbg.KvmError):
                kd.write(kd.symbol("hz"), b"\1\2\3\4")

    def compat_api():
        errbuf = bytearray(compat.POSIX2_LINE_MAX)
        kd = compat.kvm_openfiles(kernel, core, None, compat.O_RDONLY, errbuf)
        assert kd is not None, errbuf
        nl = [compat.nlist("hz"), compat.nlist(None)]
        compat.kvm_nlist2(kd, nl)
        buf = bytearray(4)
        assert compat.kvm_read(kd, nl[0].n_value, buf) == 4
        assert compat.kvm_write(kd, nl[0].n_value, b"\0\0\0\0") == -1
        compat.kvm_walk_pages(kd, lambda p, c: 1, None)
        compat.kvm_close(kd)

    def cli():
        for sub in (["info", kernel, core], ["nlist", kernel, core, "hz", "allproc"],
                    ["read", kernel, core, "0xffffffff81cd4c0c", "64"],
                    ["info", "--json", kernel, core]):
            r = _run([sys.executable, "-m", "kvm_dbg.cli"] + sub)
            assert r.returncode == 0, r.stderr

    def rsp_server():
        from test_rsp_protocol import Client
        p = subprocess.Popen([sys.executable, "-m", "kvm_dbg.rsp", kernel, core, "--once"],
                             stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            line = p.stdout.readline()
            assert "listening on" in line, line
            c = Client(line.split("listening on ", 1)[1].strip())
            c.send(b"qSupported:swbreak+")
            c.noack()
            assert c.send(b"M" + b"ffffffff81cd4c0c,4:00000000") == b"E0d"
            c.send(b"mffffffff81cd4c0c,40")
            c.send(b"qfThreadInfo")
            c.send(b"D")
            c.close()
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()

    def gdb_batch():
        gdb = shutil.which("gdb")
        if not gdb:
            return
        r = _run([gdb, "-nx", "-batch", "-ex", "set pagination off", "-ex", f"source {PLUGIN}",
                  "-ex", f"kvm-open {kernel} {core}", "-ex", "info threads", "-ex", "bt",
                  "-ex", "x/4wx &hz", "-ex", "set var hz = 1", "-ex", "kvm-ps",
                  "-ex", "kvm-close"])
        assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr

    return {"library": library, "compat": compat_api, "cli": cli, "rsp": rsp_server,
            "gdb": gdb_batch}


@pytest.mark.parametrize("kind", ["library", "compat", "cli", "rsp", "gdb"])
def test_read_only_sessions_change_nothing(pair, kind):
    kernel, core = pair
    before = (_digest(kernel), _digest(core))
    _sessions(kernel, core)[kind]()
    assert (_digest(kernel), _digest(core)) == before, kind


def test_write_lands_exactly_and_only_in_dumped_pages(tmp_path):
    t = fixture_target("amd64-minidump-v3", "amd64", "minidump", 3, {}, str(tmp_path))
    core = str(tmp_path / "core.rw")
    shutil.copyfile(t.core, core)
    original = Path(core).read_bytes()
    kernel_before = _digest(t.kernel)
    rng = random.Random(3)
    with kvm_dbg.open(t.kernel, core, writable=True) as kd:
        va = t.addrs[0]
        data = bytes(rng.getrandbits(8) for _ in range(24))
        off = kd.translate(va)
        kd.write(va, data)
        # a write touching an unmapped page changes nothing at all
        hole = next(a for a in (0, 1 << 63, (1 << 64) - 4096) if _unreadable(kd, a))
        with pytest.raises(kvm_dbg.KvmError):
            kd.write(hole, b"\xAA" * 8)
    after = Path(core).read_bytes()
    expected = original[:off] + data + original[off + len(data):]
    assert after == expected
    assert _digest(t.kernel) == kernel_before


def test_write_spanning_a_page_boundary(tmp_path):
    t = fixture_target("i386-minidump-v2-paeTrue", "i386", "minidump", 2, {"pae": True},
                       str(tmp_path))
    core = str(tmp_path / "core.rw")
    shutil.copyfile(t.core, core)
    original = bytearray(Path(core).read_bytes())
    with kvm_dbg.open(t.kernel, core, writable=True) as kd:
        for va in t.addrs:
            start = (va | 0xFFF) - 3
            try:
                offs = [kd.translate(start + i) for i in range(8)]
            except kvm_dbg.KvmError:
                continue
            kd.write(start, b"ABCDEFGH")
            for i, o in enumerate(offs):
                original[o] = b"ABCDEFGH"[i]
            break
        else:
            pytest.skip("no two consecutive dumped pages in this fixture")
    assert Path(core).read_bytes() == bytes(original)


def _unreadable(kd, addr: int) -> bool:
    try:
        kd.translate(addr)
    except kvm_dbg.KvmError:
        return True
    return False
