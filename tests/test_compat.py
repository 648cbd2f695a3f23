"""libkvm's own negative cases and error semantics (api.md §3, §4, §6-§10, §14)."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os

import pytest
from fixturegen import build

import kvm_dbg
from kvm_dbg import (
    O_RDONLY,
    O_RDWR,
    KvmError,
    kvm_close,
    kvm_geterr,
    kvm_native,
    kvm_nlist,
    kvm_open,
    kvm_open2,
    kvm_openfiles,
    kvm_read,
    kvm_write,
    nlist,
)
from kvm_dbg.arch.base import host_machine


@pytest.fixture
def fx(tmp_path):
    return build("amd64", "minidump", 3, str(tmp_path))


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("this is not a crash dump\n" * 20)
    return str(p)


def _err(buf: bytearray) -> str:
    return bytes(buf).split(b"\0", 1)[0].decode()


def _resolver(fx):
    return lambda name: fx.manifest.symbols.get(name)


def test_nonexistent_core(fx, tmp_path):
    missing = str(tmp_path / "vmcore.99")
    buf = bytearray(2048)
    assert kvm_openfiles(fx.kernel_path, missing, None, O_RDONLY, buf) is None
    assert _err(buf) == f"{missing}: {os.strerror(errno.ENOENT)}"


def test_nonexistent_core_null_errbuf_untouched(fx, tmp_path, capsys):
    assert kvm_open2(fx.kernel_path, str(tmp_path / "nope"), O_RDONLY, None, None) is None
    assert capsys.readouterr() == ("", "")


def test_nonexistent_kernel(fx, tmp_path):
    missing = str(tmp_path / "kernel.nope")
    buf = bytearray(2048)
    assert kvm_open2(missing, fx.core_path, O_RDONLY, buf, _resolver(fx)) is None
    assert _err(buf) == f"{missing}: {os.strerror(errno.ENOENT)}"


def test_text_file_as_core(fx, text_file):
    buf = bytearray(2048)
    assert kvm_open2(fx.kernel_path, text_file, O_RDONLY, buf, _resolver(fx)) is None
    assert _err(buf) == "invalid core"


def test_text_file_as_kernel(fx, text_file):
    buf = bytearray(2048)
    assert kvm_open2(text_file, fx.core_path, O_RDONLY, buf, _resolver(fx)) is None
    assert _err(buf) == "kernel is not an ELF file"


def test_empty_core(fx, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    buf = bytearray(2048)
    assert kvm_open2(fx.kernel_path, str(empty), O_RDONLY, buf, _resolver(fx)) is None
    assert _err(buf) == "empty file: Invalid argument"


@pytest.mark.parametrize("flags", [O_RDWR | 0x4000, 3, 0x100])
def test_bad_flags(fx, flags):
    buf = bytearray(2048)
    assert kvm_open2(fx.kernel_path, fx.core_path, flags, buf, _resolver(fx)) is None
    assert _err(buf) == "bad flags arg"


def test_exec_file_name_too_long(fx):
    buf = bytearray(2048)
    assert kvm_open2("k" * 1024, fx.core_path, O_RDONLY, buf, _resolver(fx)) is None
    assert _err(buf) == "exec file name too long"


def test_errbuf_truncated_and_nul_terminated(fx, tmp_path):
    buf = bytearray(b"\xff" * 12)
    assert kvm_open2(fx.kernel_path, str(tmp_path / "missing"), 0, buf, None) is None
    assert buf[11] == 0 and b"\0" not in buf[:11]
    assert bytes(buf[:11]) == str(tmp_path / "missing").encode()[:11]


def test_errstr_prints_to_stderr(fx, tmp_path, capsys):
    assert kvm_open(fx.kernel_path, str(tmp_path / "gone"), None, O_RDONLY, "myprog") is None
    err = capsys.readouterr().err
    assert err == f"myprog: {tmp_path / 'gone'}: {os.strerror(errno.ENOENT)}\n"


def test_errstr_none_prints_nothing(fx, tmp_path, capsys):
    assert kvm_open(fx.kernel_path, str(tmp_path / "gone"), None, O_RDONLY, None) is None
    assert capsys.readouterr().err == ""


def test_sun_mode_hard_error_goes_to_stderr_soft_to_errbuf(fx, capsys):
    kd = kvm_open(fx.kernel_path, fx.core_path, None, O_RDONLY, "prog")
    if kd is None:   # non-native host: kvm_open has no resolver
        assert "non-native kernel requires a symbol resolver" in capsys.readouterr().err
        return
    try:
        hole = fx.manifest.holes[0]
        assert kvm_read(kd, hole.va, bytearray(8)) == -1
        assert kvm_geterr(kd) == f"invalid address (0x{hole.va:x})"
        err = capsys.readouterr().err
        assert err.startswith("prog: _amd64_minidump_vatop"), err
    finally:
        kvm_close(kd)


def test_kvm_close_none_sets_einval():
    ctypes.set_errno(0)
    assert kvm_close(None) == -1
    assert ctypes.get_errno() == errno.EINVAL


def test_kvm_geterr_none():
    assert kvm_geterr(None) == ""


def test_write_on_read_only_descriptor(fx):
    kd = kvm_open2(fx.kernel_path, fx.core_path, O_RDONLY, None, _resolver(fx))
    try:
        assert kvm_write(kd, fx.manifest.hz_addr, b"\1\2\3\4") == -1
        assert kvm_geterr(kd) == "kvm_write not implemented for dead kernels"
    finally:
        kvm_close(kd)


def test_errors_not_cleared_by_success(fx):
    kd = kvm_open2(fx.kernel_path, fx.core_path, O_RDONLY, None, _resolver(fx))
    try:
        hole = fx.manifest.holes[0]
        assert kvm_read(kd, hole.va, bytearray(8)) == -1
        msg = kvm_geterr(kd)
        assert msg
        assert kvm_read(kd, fx.manifest.hz_addr, bytearray(4)) == 4
        assert kvm_geterr(kd) == msg
    finally:
        kvm_close(kd)


def test_writable_open_writes_exactly_there(fx):
    m = fx.manifest
    with open(fx.core_path, "rb") as f:
        before = f.read()
    kd = kvm_open2(fx.kernel_path, fx.core_path, O_RDWR, None, _resolver(fx))
    try:
        probe = next(p for p in m.probes if len(p.data) >= 8 and not p.kind.endswith("_cross"))
        off = kd.translate(probe.va)
        assert kvm_write(kd, probe.va, b"WRITTEN!") == 8
        hole = m.holes[0]
        assert kvm_write(kd, hole.va, b"x") == -1           # only into dumped pages
    finally:
        kvm_close(kd)
    with open(fx.core_path, "rb") as f:
        after = f.read()
    assert after[off:off + 8] == b"WRITTEN!"
    assert after[:off] == before[:off] and after[off + 8:] == before[off + 8:]


def test_read_only_open_never_writes(fx):
    def digest(p):
        with open(p, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    before = digest(fx.core_path), digest(fx.kernel_path)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        for p in fx.manifest.probes:
            kd.read(p.va, len(p.data))
        list(kd.walk_pages())
    assert (digest(fx.core_path), digest(fx.kernel_path)) == before


def test_dev_null_descriptor():
    buf = bytearray(2048)
    kd = kvm_openfiles(None, "/dev/null", None, O_RDONLY, buf)
    assert kd is not None, _err(buf)
    try:
        assert kvm_native(kd) == 1
        assert kvm_read(kd, 0x1000, bytearray(8)) == 0
        assert kvm_dbg.kvm_walk_pages(kd, lambda p, c: 1, None) == 0
        assert kvm_dbg.kvm_kerndisp(kd) == 0
    finally:
        kvm_close(kd)


@pytest.mark.skipif(os.path.exists("/boot/kernel/kernel"),
                    reason="n/a: the host has a FreeBSD kernel at /boot/kernel/kernel")
def test_null_execfile_means_boot_kernel(fx):
    buf = bytearray(2048)
    assert kvm_openfiles(None, fx.core_path, None, O_RDONLY, buf) is None
    assert _err(buf) == f"/boot/kernel/kernel: {os.strerror(errno.ENOENT)}"


def test_kvm_nlist_legacy_refuses_non_native(tmp_path):
    fx = build("arm64" if host_machine() != "arm64" else "amd64", "minidump", 2,
               str(tmp_path))
    kd = kvm_open2(fx.kernel_path, fx.core_path, 0, None, _resolver(fx))
    try:
        assert kvm_nlist(kd, [nlist("hz")]) == -1
        assert kvm_geterr(kd) == "kvm_nlist of non-native vmcore"
    finally:
        kvm_close(kd)


def test_pythonic_errors_name_the_file(fx, text_file, tmp_path):
    with pytest.raises(KvmError) as ei:
        kvm_dbg.open(fx.kernel_path, text_file)
    assert text_file in str(ei.value) and "invalid core" in str(ei.value)
    with pytest.raises(KvmError) as ei:
        kvm_dbg.open(text_file, fx.core_path)
    assert text_file in str(ei.value)
    assert isinstance(ei.value, OSError)


def test_unsupported_compression_is_named(fx, tmp_path):
    """gzip and zstd open (tests/test_dumpfile.py); bzip2 is named and refused."""
    import bz2
    bz = tmp_path / "vmcore.0.bz2"
    with open(fx.core_path, "rb") as f:
        bz.write_bytes(bz2.compress(f.read()))
    with pytest.raises(KvmError, match="bzip2-compressed: decompress it first"):
        kvm_dbg.open(fx.kernel_path, str(bz))


def test_kernel_core_arch_mismatch(tmp_path):
    a = build("amd64", "minidump", 3, str(tmp_path / "a"))
    b = build("arm64", "minidump", 2, str(tmp_path / "b"))
    with pytest.raises(KvmError, match="not a minidump for this platform"):
        kvm_dbg.open(a.kernel_path, b.core_path)
