"""Dumps as FreeBSD leaves them: compressed, on a dump device, encrypted,
textdumps (kvm_dbg.dumpfile), checked against fixtures written from the
FreeBSD sources (tests/fixturegen/savecore.py) and the real LLDB dumps."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest
from fixturegen import build
from fixturegen import savecore as sc

import kvm_dbg
from kvm_dbg import KvmError
from kvm_dbg.dumpfile import prepare

# One minidump per architecture the library reads.
ARCH_CASES = [("amd64", {}), ("i386", {"pae": True}), ("arm64", {}),
              ("arm", {"mmu": "v6", "endian": "le"}), ("riscv", {"mode": "sv39"}),
              ("mips", {"abi": "n64", "endian": "be"}),
              ("powerpc64", {"mmu": "mmu_radix", "endian": "le"})]


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _cache_files(d) -> list:
    return sorted(n for n in os.listdir(d) if "kvm-dbg-cache" in n)


def _same_reads(fx, kernel, core, **kw):
    """Every probe of the manifest reads the same bytes through ``core``."""
    with kvm_dbg.open(kernel, core, **kw) as kd:
        assert kd.arch == fx.arch
        for p in fx.manifest.probes:
            assert kd.read(p.va, len(p.data)) == p.data, (p.kind, hex(p.va))
        for h in fx.manifest.holes[:5]:
            with pytest.raises(KvmError):
                kd.read(h.va, h.size)
        return kd.source


@pytest.mark.parametrize("how", ["zstd", "gzip", "gzip-savecore"])
@pytest.mark.parametrize("arch,opts", ARCH_CASES, ids=[a for a, _ in ARCH_CASES])
def test_compressed_minidump_every_arch(tmp_path, arch, opts, how):
    fx = build(arch, "minidump", 0, str(tmp_path / "fx"), **opts)
    plain = open(fx.core_path, "rb").read()
    comp = sc.write(str(tmp_path / "crash" / f"vmcore.0.{how[:4].replace('gzip', 'gz')}"),
                    sc.compress(plain, how))
    before = _digest(comp)
    src = _same_reads(fx, fx.kernel_path, comp)
    assert src.cached and not src.cache_hit
    assert os.path.dirname(src.cached) == os.path.dirname(comp)     # next to the dump
    assert _digest(src.cached) == hashlib.sha256(plain).hexdigest()
    assert _digest(comp) == before                                  # original untouched
    src2 = _same_reads(fx, fx.kernel_path, comp)
    assert src2.cache_hit and src2.cached == src.cached


def test_detected_by_magic_not_name(tmp_path):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    odd = sc.write(str(tmp_path / "dump.bin"), sc.kernel_zstd(open(fx.core_path, "rb").read()))
    assert "zstd-compressed" in _same_reads(fx, fx.kernel_path, odd).description


def test_cache_falls_back_to_xdg_when_dump_dir_is_readonly(tmp_path, monkeypatch):
    fx = build("arm64", "minidump", 2, str(tmp_path / "fx"))
    crash = tmp_path / "crash"
    comp = sc.write(str(crash / "vmcore.1.zst"), sc.kernel_zstd(open(fx.core_path, "rb").read()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p) == str(crash)
                        else real_access(p, m, **k))
    src = _same_reads(fx, fx.kernel_path, comp)
    assert os.path.dirname(src.cached) == str(tmp_path / "xdg" / "kvm-dbg")
    assert _cache_files(crash) == []
    assert _same_reads(fx, fx.kernel_path, comp).cache_hit


def test_explicit_cache_dir_and_stale_copies(tmp_path):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    data = open(fx.core_path, "rb").read()
    comp = sc.write(str(tmp_path / "crash" / "vmcore.0.zst"), sc.kernel_zstd(data))
    cdir = tmp_path / "cache"
    first = _same_reads(fx, fx.kernel_path, comp, cache_dir=str(cdir)).cached
    assert os.path.dirname(first) == str(cdir)
    # savecore reuses the number: a new dump under the same name gets a new copy,
    # and the stale one goes.
    sc.write(comp, sc.kernel_zstd(data + bytes(4096)))
    os.utime(comp, ns=(1, 1))
    second = prepare(comp, cache_dir=str(cdir)).cached
    assert second != first and _cache_files(cdir) == [os.path.basename(second)]


@pytest.mark.parametrize("how", ["zstd", "gzip"])
def test_truncated_stream_names_offset_and_leaves_no_cache(tmp_path, how):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    full = sc.compress(open(fx.core_path, "rb").read(), how)
    crash = tmp_path / "crash"
    for cut in (len(full) // 2, len(full) - 3):
        comp = sc.write(str(crash / f"vmcore.0.{'zst' if how == 'zstd' else 'gz'}"),
                        full[:cut])
        with pytest.raises(KvmError) as ei:
            kvm_dbg.open(fx.kernel_path, comp)
        msg = str(ei.value)
        assert msg.startswith(comp + ": ") and f"truncated {how} stream" in msg
        assert f"compressed offset {cut}" in msg
        assert _cache_files(crash) == [] and [n for n in os.listdir(crash)
                                              if n.endswith(".partial")] == []
    sc.write(comp, full)                          # the whole file opens afterwards
    _same_reads(fx, fx.kernel_path, comp)


@pytest.mark.parametrize("how", ["zstd", "gzip"])
def test_corrupt_stream(tmp_path, how):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    full = bytearray(sc.compress(open(fx.core_path, "rb").read(), how))
    full[len(full) // 2] ^= 0x5A
    full[len(full) // 2 + 1] ^= 0xA5
    comp = sc.write(str(tmp_path / "c" / "vmcore.0.x"), bytes(full))
    with pytest.raises(KvmError, match=rf"^{comp}: corrupt {how} data .*offsets? \d+"):
        kvm_dbg.open(fx.kernel_path, comp)
    assert _cache_files(tmp_path / "c") == []


def test_writable_refused_for_compressed(tmp_path):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    comp = sc.write(str(tmp_path / "vmcore.0.gz"), sc.kernel_gzip(open(fx.core_path, "rb").read()))
    with pytest.raises(KvmError, match="cannot open it writable"):
        kvm_dbg.open(fx.kernel_path, comp, writable=True)


def test_progress_bar_drawn_when_asked(tmp_path, capfd):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    comp = sc.write(str(tmp_path / "vmcore.0.zst"), sc.kernel_zstd(open(fx.core_path, "rb").read()))
    kvm_dbg.open(fx.kernel_path, comp, show_progress=True).close()
    err = capfd.readouterr().err
    assert "decompressing vmcore.0.zst" in err and "100%" in err
    kvm_dbg.open(fx.kernel_path, comp, show_progress=True).close()   # cache hit: no bar
    assert "decompressing" not in capfd.readouterr().err


def test_zstd_cli_output_opens(tmp_path):
    """A file compressed by the zstd(1) CLI (content size, checksum) opens too."""
    fx = build("i386", "minidump", 2, str(tmp_path / "fx"), pae=True)
    out = tmp_path / "vmcore.3.zst"
    subprocess.run(["zstd", "-q", "-19", fx.core_path, "-o", str(out)], check=True)
    _same_reads(fx, fx.kernel_path, str(out))


# -- dump device images --------------------------------------------------------

@pytest.mark.parametrize("sector", [512, 4096])
@pytest.mark.parametrize("how", ["none", "gzip", "zstd"])
def test_device_image(tmp_path, how, sector):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    plain = open(fx.core_path, "rb").read()
    payload = plain if how == "none" else sc.compress(plain, how)
    comp = {"none": 0, "gzip": 1, "zstd": 2}[how]
    img = sc.device_image(str(tmp_path / "swap.img"), payload, sector=sector,
                          compression=comp, panic="page fault", versionstring="FreeBSD x\n")
    src = _same_reads(fx, fx.kernel_path, img)
    assert src.header.panicstring == "page fault" and src.header.compression == comp
    assert src.header.dumplength == len(payload)
    if how == "none" and sector == 4096:         # payload page-aligned: no copy
        assert src.cached is None and "mapped in place" in src.description
    elif how == "none":
        assert src.cached and "copy of the dump" in src.description
    else:
        assert src.cached and _digest(src.cached) == hashlib.sha256(plain).hexdigest()


def test_device_image_unaligned_payload_is_copied(tmp_path):
    fx = build("arm64", "minidump", 2, str(tmp_path / "fx"))
    plain = open(fx.core_path, "rb").read()
    img = sc.device_image(str(tmp_path / "swap.img"), plain, front=64 * 1024 + 512)
    src = _same_reads(fx, fx.kernel_path, img)
    assert src.cached and "copy of the dump" in src.description


def _img(tmp_path, **kw):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    return fx, sc.device_image(str(tmp_path / "swap.img"), open(fx.core_path, "rb").read(), **kw)


def test_device_cleared_header(tmp_path):
    fx, img = _img(tmp_path, magic=b"Cleared Kernel Dump")
    with pytest.raises(KvmError, match=r"Cleared Kernel Dump.*savecore has already saved"):
        kvm_dbg.open(fx.kernel_path, img)


def test_device_parity_error(tmp_path):
    fx, img = _img(tmp_path, bad_parity=True)
    with pytest.raises(KvmError, match=r"parity error on last dump header \(offset \d+\)"):
        kvm_dbg.open(fx.kernel_path, img)


def test_device_headers_disagree(tmp_path):
    other = sc.header(123, panic="another")
    fx, img = _img(tmp_path, first_hdr=other)
    with pytest.raises(KvmError, match="first and last dump headers disagree"):
        kvm_dbg.open(fx.kernel_path, img)


def test_device_unknown_version(tmp_path):
    fx, img = _img(tmp_path, version=1)
    with pytest.raises(KvmError, match=r"unknown version \(1\) in last dump header"):
        kvm_dbg.open(fx.kernel_path, img)


def test_device_extent_beyond_image(tmp_path):
    fx, img = _img(tmp_path, extent=None)
    data = bytearray(open(img, "rb").read())
    h = sc.header(len(data), dumpextent=len(data) * 2)
    data[-512:] = h
    open(img, "wb").write(data)
    with pytest.raises(KvmError, match="larger than the image"):
        kvm_dbg.open(fx.kernel_path, img)


# -- encrypted dumps -------------------------------------------------------------

@pytest.fixture(scope="module")
def rsa(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    priv = sc.rsa_key(2048)
    other = sc.rsa_key(2048)
    small = sc.rsa_key(1024)
    return {"priv": priv, "pem": sc.write_pem(priv, str(d / "dump.pem")),
            "other": sc.write_pem(other, str(d / "other.pem")),
            "small": sc.write_pem(small, str(d / "small.pem"))}


@pytest.mark.parametrize("alg,how,pkcs", [(1, "none", False), (2, "none", False),
                                          (2, "zstd", False), (1, "none", True)])
def test_encrypted_savecore_files(tmp_path, rsa, alg, how, pkcs):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    plain = open(fx.core_path, "rb").read()
    payload = plain if how == "none" else sc.compress(plain, how)
    ct, blob = sc.encrypt(payload, rsa["priv"], alg, pkcs1v15=pkcs)
    crash = tmp_path / "crash"
    core = sc.write(str(crash / "vmcore_encrypted.4"), ct)
    sc.write(str(crash / "key.4"), blob)
    with pytest.raises(KvmError, match=r"is encrypted \(its key is .*key\.4\): give the RSA "
                       r"private key"):
        kvm_dbg.open(fx.kernel_path, core)
    src = _same_reads(fx, fx.kernel_path, core, key=rsa["pem"])
    assert ("AES-256-CBC" if alg == 1 else "ChaCha20") in src.description
    assert _digest(src.cached) == hashlib.sha256(plain).hexdigest()
    assert os.stat(src.cached).st_mode & 0o077 == 0                 # decrypted copy: 0600
    assert _same_reads(fx, fx.kernel_path, core, key=rsa["pem"]).cache_hit


def test_encrypted_wrong_keys(tmp_path, rsa):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    ct, blob = sc.encrypt(open(fx.core_path, "rb").read(), rsa["priv"], 2)
    core = sc.write(str(tmp_path / "vmcore_encrypted.0"), ct)
    sc.write(str(tmp_path / "key.0"), blob)
    with pytest.raises(KvmError, match=r"RSA modulus size mismatch: equals 1024b and should "
                       r"be 2048b"):
        kvm_dbg.open(fx.kernel_path, core, key=rsa["small"])
    with pytest.raises(KvmError) as ei:
        kvm_dbg.open(fx.kernel_path, core, key=rsa["other"])
    assert ("Unable to decrypt key" in str(ei.value)
            or "decrypted data is not a kernel dump" in str(ei.value))
    assert _cache_files(tmp_path) == []
    os.unlink(tmp_path / "key.0")
    with pytest.raises(KvmError, match=r"cannot read the dump's key: No such file"):
        kvm_dbg.open(fx.kernel_path, core, key=rsa["pem"])


def test_encrypted_device_image(tmp_path, rsa):
    fx = build("arm64", "minidump", 2, str(tmp_path / "fx"))
    plain = open(fx.core_path, "rb").read()
    ct, blob = sc.encrypt(sc.kernel_zstd(plain), rsa["priv"], 2, blocksize=512)
    img = sc.device_image(str(tmp_path / "swap.img"), ct, key_blob=blob, compression=2,
                          arch="aarch64", archver=1)
    with pytest.raises(KvmError, match=r"this dump is encrypted \(its key is .*key at offset"):
        kvm_dbg.open(fx.kernel_path, img)
    src = _same_reads(fx, fx.kernel_path, img, key=rsa["pem"])
    assert src.header.dumpkeysize == len(blob)


# -- textdumps ------------------------------------------------------------------

TEXT = {"ddb.txt": b"db:0:kdb.enter.default>  bt\nTracing pid 0\nkdb_enter() at kdb_enter+0x33\n",
        "config.txt": b"options \tDDB\nident\tGENERIC\n",
        "msgbuf.txt": b"Copyright (c) 1992-2023 The FreeBSD Project.\n"
                      b"fault virtual address\t= 0x0\n",
        "panic.txt": b"page fault",
        "version.txt": b"FreeBSD 14.0-RELEASE #0: Fri Nov 10 05:57:23 UTC 2023\n"
                       b"    root@releng1:/usr/obj/usr/src/amd64.amd64/sys/GENERIC\n"}


@pytest.mark.parametrize("wrap", ["tar", "tar.gz", "device"])
def test_textdump_has_no_memory(tmp_path, wrap):
    fx = build("amd64", "minidump", 3, str(tmp_path / "fx"))
    tar = sc.textdump_tar(TEXT)
    if wrap == "tar":
        path = sc.write(str(tmp_path / "textdump.tar.0"), tar)
    elif wrap == "tar.gz":
        path = sc.write(str(tmp_path / "textdump.tar.0.gz"), sc.compress(tar, "gzip-savecore"))
    else:
        path = sc.textdump_device(str(tmp_path / "swap.img"), tar)
    src = prepare(path)
    assert src.textdump
    from kvm_dbg.dumpfile.textdump import Textdump
    td = Textdump.open(src.path)
    assert td.panic == "page fault" and td.msgbuf == TEXT["msgbuf.txt"].decode()
    assert td.version.startswith("FreeBSD 14.0-RELEASE") and "kdb_enter" in td.ddb
    assert td.config.startswith("options")
    with pytest.raises(KvmError, match="a textdump has no memory"):
        kvm_dbg.open(fx.kernel_path, path)


# -- the real dumps: compressed read exactly like plain -----------------------------

@pytest.mark.parametrize("how", ["zstd", "gzip"])
def test_real_dumps_compressed_identical(real_dump, tmp_path, how):
    d = tmp_path / "crash"
    d.mkdir()
    out = d / ("vmcore.0." + ("zst" if how == "zstd" else "gz"))
    tool = ["zstd", "-q", "-c"] if how == "zstd" else ["gzip", "-c"]
    with open(out, "wb") as f:
        subprocess.run(tool + [real_dump.core], stdout=f, check=True)
    with kvm_dbg.open(real_dump.kernel, real_dump.core) as a, \
            kvm_dbg.open(real_dump.kernel, str(out)) as b:
        assert (a.arch, a.format) == (b.arch, b.format)
        ta = [(t.tid, t.name, sorted(t.registers.items())) for t in a.threads()]
        tb = [(t.tid, t.name, sorted(t.registers.items())) for t in b.threads()]
        assert ta == tb and len(ta) == real_dump.expected["numthread"]
        assert a.msgbuf().text == b.msgbuf().text
        pages = [p.kp_kmap_vaddr for p in a.walk_pages()][:200]
        for va in pages:
            assert a.read_partial(va, 4096) == b.read_partial(va, 4096)
    assert shutil.which("zstd")
