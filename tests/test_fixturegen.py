"""Structural tests of tests/fixturegen against formats.md (and the real LLDB dumps)."""

from __future__ import annotations

import bz2
import os
import struct

import pytest

from tests.fixturegen import CASES, build
from tests.fixturegen.minidump import pack_header
from tests.realdumps import DATA_DIR, missing_data

REAL = str(DATA_DIR)
HDR_SIZE = {("amd64", 1): 64, ("amd64", 2): 64, ("amd64", 3): 72, ("i386", 1): 48,
            ("i386", 2): 52, ("arm64", 1): 72, ("arm64", 2): 80, ("arm64", 3): 80}
MAGIC = {"amd64": b"minidump FreeBSD/amd64", "i386": b"minidump FreeBSD/i386",
         "arm64": b"minidump FreeBSD/arm64"}
MD_CASES = [c for c in CASES if c[1] == "minidump"]
ELF_CASES = [c for c in CASES if c[1] == "elf"]


def _id(c):
    return f"{c[0]}-{c[1]}{c[2]}-" + "-".join(f"{k}{v}" for k, v in c[3].items())


def R(x, p):
    return (x + p - 1) // p * p


@pytest.mark.parametrize("case", MD_CASES, ids=_id)
def test_minidump_structure(case, tmp_path):
    arch, fmt, ver, opts = case
    fx = build(arch, fmt, ver, str(tmp_path), **opts)
    lay, man = fx.layout, fx.manifest
    p = lay.page_size
    data = open(fx.core_path, "rb").read()
    assert data[:24] == MAGIC[arch].ljust(24, b"\0")
    v, msz, bsz, psz = struct.unpack_from("<IIII", data, 24)
    assert (v, msz, bsz, psz) == (ver, len(lay.msgbuf), lay.bitmapsize, lay.pmapsize)
    assert lay.header_size == HDR_SIZE[(arch, ver)]
    assert data[lay.header_size:p] == bytes(p - lay.header_size)
    has_da = ver == 3 if arch == "amd64" else ver >= 2
    off = {"amd64": 64, "i386": 48, "arm64": 72}[arch]
    if has_da:
        assert struct.unpack_from("<I", data, off)[0] == p
    if arch == "arm64" and ver == 3:
        assert struct.unpack_from("<I", data, 76)[0] == opts["page_flag"]
    # Section offsets (formats.md §2.1).
    da_off = p + R(msz, p)
    bm_off = da_off + (p if has_da else 0)
    pm_off = bm_off + R(bsz, p)
    sp_off = pm_off + R(psz, p)
    assert lay.offsets == {"header": 0, "msgbuf": p, "dump_avail": da_off, "bitmap": bm_off,
                           "pmap": pm_off, "sparse": sp_off}
    assert data[p:p + msz] == lay.msgbuf
    assert bsz % p == 0 and psz % p == 0
    if has_da:
        pairs = struct.unpack_from(f"<{p // 8}Q", data, da_off)
        got = []
        for i in range(0, len(pairs), 2):
            if pairs[i + 1] == 0:
                break
            got.append((pairs[i], pairs[i + 1]))
        assert got == fx.machine.dump_avail
        nbits = sum(-(-e // p) - s // p for s, e in got)
        assert bsz == R(-(-nbits // 8), p)
    pop = sum(bin(b).count("1") for b in data[bm_off:bm_off + bsz])
    assert pop == lay.npages == man.npages
    assert len(data) == sp_off + pop * p == man.file_size
    # Walk records (where libkvm walks) have sane fields.
    if man.walk is not None:
        for r in man.walk:
            assert r.prot & 1 and r.len in (p, 1 << 21)
            assert r.offset == -1 or (r.offset - sp_off) % p == 0


@pytest.mark.parametrize("case", MD_CASES, ids=_id)
def test_minidump_probes_consistent(case, tmp_path):
    """Probe bytes sit in the file where bit rank says; holes are really absent."""
    arch, fmt, ver, opts = case
    fx = build(arch, fmt, ver, str(tmp_path), **opts)
    lay, m = fx.layout, fx.machine
    data = open(fx.core_path, "rb").read()
    p = lay.page_size
    for pr in fx.manifest.probes:
        pa = m.va_to_pa(pr.va)
        off = lay.offset_of(pa)
        n = min(len(pr.data), p - pa % p)
        assert data[off + pa % p: off + pa % p + n] == pr.data[:n], pr.kind
    kinds = {h.kind for h in fx.manifest.holes}
    assert {"unmapped", "nodump", "gap"} <= kinds
    assert fx.manifest.hz_value == struct.unpack("<I", m.read_va(fx.manifest.hz_addr, 4))[0]


def test_amd64_v3_page_kinds(tmp_path):
    fx = build("amd64", "minidump", 3, str(tmp_path))
    kinds = {p.kind for p in fx.manifest.probes}
    for k in ("kmap_4k", "kmap_4k_cross", "kmap_2m", "kmap_1g", "dmap", "dmap_cross",
              "last_page", "symbol_hz", "symbol_version"):
        assert k in kinds
    # 1 GiB mapping synthesized as 512 PS PDEs; PT pages are in the bitmap.
    pdes = struct.unpack(f"<{len(fx.layout.pmap) // 8}Q", fx.layout.pmap)
    g = pdes[512:1024]
    assert all(e & 0x81 == 0x81 for e in g)
    assert [e - g[0] for e in g] == [j << 21 for j in range(512)]
    assert fx.layout.pt_pages and all(fx.layout.offset_of(a) for a in fx.layout.pt_pages)


def test_truncation(tmp_path):
    fx = build("amd64", "minidump", 3, str(tmp_path), truncate_pages=3)
    assert os.path.getsize(fx.core_path) == fx.manifest.full_size - 3 * 4096
    assert "truncated" in {h.kind for h in fx.manifest.holes}


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_kernel_elf(case, tmp_path):
    from elftools.elf.elffile import ELFFile

    arch, fmt, ver, opts = case
    fx = build(arch, fmt, ver, str(tmp_path), **opts)
    with open(fx.kernel_path, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_EXEC"
        assert elf.elfclass == (32 if arch == "i386" else 64) and elf.little_endian
        syms = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols()}
        assert syms["hz"]["st_value"] == fx.manifest.hz_addr
        assert elf.get_section(syms["hz"]["st_shndx"]).name == ".bss"
        assert syms["kernbase"]["st_shndx"] == "SHN_ABS"
        ver_sec = elf.get_section_by_name(".data")
        assert ver_sec["sh_addr"] == syms["version"]["st_value"]
        assert ver_sec.data() == fx.manifest.version_string


@pytest.mark.parametrize("case", ELF_CASES, ids=_id)
def test_elf_core(case, tmp_path):
    from elftools.elf.elffile import ELFFile

    arch, fmt, ver, opts = case
    fx = build(arch, fmt, ver, str(tmp_path), **opts)
    with open(fx.core_path, "rb") as f:
        head = f.read(16)
        assert head[7] == 255 and head[6] == 1
        f.seek(0)
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_CORE" and elf["e_version"] in (0, "EV_NONE")
        assert elf["e_shnum"] == 0 and elf["e_phoff"] == elf["e_ehsize"]
        segs = list(elf.iter_segments())
        assert [(s["p_paddr"], s["p_memsz"]) for s in segs] == [
            (a, b - a) for a, b in fx.machine.dump_avail]
        pos = R(elf["e_ehsize"] + elf["e_phentsize"] * len(segs), 4096)
        for s in segs:
            assert s["p_offset"] == pos and s["p_vaddr"] == s["p_paddr"]
            assert s["p_type"] == "PT_LOAD" and s["p_flags"] == 4
            pos += s["p_filesz"]
        data = open(fx.core_path, "rb").read()
    # Probe bytes are at pa - p_paddr + p_offset; the bootstrap symbol reads hold.
    for pr in fx.manifest.probes:
        from tests.fixturegen import pagetables as pt
        m = fx.machine
        if arch == "amd64":
            _, pa = pt.amd64_walk(m, fx.profile.pml4, pr.va)
        else:
            _, pa = pt.i386_walk(m, fx.profile.top, fx.profile.notes["pae"], pr.va)
        off = fx.layout.offset_of(pa)
        n = min(len(pr.data), 4096 - pa % 4096)
        assert data[off:off + n] == pr.data[:n], pr.kind
    syms = fx.manifest.symbols
    if arch == "amd64":
        pa = syms["KPML4phys"] - syms["kernbase"]
        assert struct.unpack_from("<Q", data, fx.layout.offset_of(pa))[0] == fx.profile.pml4
    elif fx.profile.notes["layout"] == "classic":
        name = "IdlePDPT" if opts["pae"] else "IdlePTD"
        pa = syms[name] - syms["kernbase"]
        assert struct.unpack_from("<I", data, fx.layout.offset_of(pa))[0] == fx.profile.top
    else:
        assert struct.unpack_from("<I", data, fx.layout.offset_of(syms["pae_mode"]))[0] == \
            int(opts["pae"])


def _real_header(name, n=4096):
    path = os.path.join(REAL, name + ".bz2")
    if not os.path.exists(path):
        missing_data(path)
    with bz2.open(path) as f:
        return f.read(n)


@pytest.mark.parametrize("name,arch,ver", [("vmcore-amd64-minidump", "amd64", 3),
                                          ("vmcore-i386-minidump", "i386", 2),
                                          ("vmcore-arm64-minidump", "arm64", 2)])
def test_header_matches_real_dump(name, arch, ver):
    """Re-pack the real header's values with our writer: identical header page."""
    real = _real_header(name)
    v, msz, bsz, psz = struct.unpack_from("<IIII", real, 24)
    h = {"msgbufsize": msz, "bitmapsize": bsz, "pmapsize": psz}
    if arch == "amd64":
        h.update(zip(("kernbase", "dmapbase", "dmapend"), struct.unpack_from("<QQQ", real, 40)))
        h["dumpavailsize"] = struct.unpack_from("<I", real, 64)[0]
    elif arch == "i386":
        h.update(zip(("kernbase", "paemode", "dumpavailsize"),
                     struct.unpack_from("<III", real, 40)))
    else:
        h.update(zip(("kernbase", "dmapphys", "dmapbase", "dmapend"),
                     struct.unpack_from("<QQQQ", real, 40)))
        h["dumpavailsize"] = struct.unpack_from("<I", real, 72)[0]
    mine = pack_header(arch, ver, MAGIC[arch], h)
    assert v == ver and len(mine) == HDR_SIZE[(arch, ver)]
    assert mine + bytes(4096 - len(mine)) == real


def test_real_amd64_full_core_layout():
    real = _real_header("vmcore-amd64-full", 4096)
    from tests.fixturegen.elfwriter import CoreChunk, ElfIdent, core_header, core_layout

    ph = [struct.unpack_from("<IIQQQQQQ", real, 64 + 56 * i) for i in range(2)]
    chunks = [CoreChunk(p[4], p[6]) for p in ph]
    mine = core_header(ElfIdent(64, True, 62), core_layout(ElfIdent(64, True, 62), chunks))
    assert mine == real[:len(mine)]
    assert real[len(mine):4096] == bytes(4096 - len(mine))


def test_fast_and_small(tmp_path):
    import time

    for arch, fmt, ver, opts in CASES:
        t = time.time()
        fx = build(arch, fmt, ver, str(tmp_path / _id((arch, fmt, ver, opts))), **opts)
        assert time.time() - t < 0.5
        assert os.stat(fx.core_path).st_blocks * 512 < 8 << 20
