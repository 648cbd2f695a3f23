"""Kernel modules from linker_files and kgdb's module-file search."""

from __future__ import annotations

from fakedump import KLD_OFFS, FakeDump, FakeKernel

from kvm_dbg.kstate import find_kld_file, kld_file, klds, linker_path


def build(n: int = 3):
    kvm = FakeDump("amd64")
    k = FakeKernel(kvm)
    for name, off in KLD_OFFS.items():
        k.offset_symbol("kld_off_" + name, off)
    k.global_("linker_files", 16)
    k.global_("linker_kernel_file", 8)
    k.global_("linker_path", 64)
    kvm.store(kvm.syms["linker_path"], b"/boot/kernel;/boot/modules\0")
    files = []
    prev = kvm.syms["linker_files"]
    link = 0
    for i, name in enumerate(["kernel"] + [f"m{i}.ko" for i in range(1, n)]):
        lf = k.alloc(64)
        s = k.alloc(64)
        kvm.store(s, name.encode() + b"\0")
        kvm.put_ptr(lf + KLD_OFFS["filename"], s)
        p = k.alloc(64)
        kvm.store(p, f"/boot/kernel/{name}".encode() + b"\0")
        kvm.put_ptr(lf + KLD_OFFS["pathname"], p)
        kvm.put_ptr(lf + KLD_OFFS["address"], 0xFFFF_FFFF_8000_0000 + i * 0x10_0000)
        kvm.put_ptr(prev + link, lf)
        prev, link = lf, KLD_OFFS["next"]
        files.append(lf)
    kvm.put_ptr(kvm.syms["linker_kernel_file"], files[0])
    return kvm, files


def test_walk_skips_kernel():
    kvm, files = build()
    mods = klds(kvm)
    assert [(m.name, m.path, m.address, m.addr) for m in mods] == [
        ("m1.ko", "/boot/kernel/m1.ko", 0xFFFF_FFFF_8010_0000, files[1]),
        ("m2.ko", "/boot/kernel/m2.ko", 0xFFFF_FFFF_8020_0000, files[2])]
    assert mods[0].size is None and kvm.warnings == []
    assert linker_path(kvm) == ["/boot/kernel", "/boot/modules"]


def test_zero_address_skipped_and_loop_stops():
    kvm, files = build(4)
    kvm.put_ptr(files[2] + KLD_OFFS["address"], 0)
    kvm.put_ptr(files[3] + KLD_OFFS["next"], files[1])
    assert [m.name for m in klds(kvm)] == ["m1.ko", "m3.ko"]
    assert any("no base address" in w for w in kvm.warnings)
    assert any("loop" in w for w in kvm.warnings)


def test_missing_offsets_or_list():
    assert klds(FakeDump()) == []
    kvm, _ = build()
    del kvm.syms["kld_off_next"]
    assert klds(kvm) == [] and kvm.warnings


def test_find_kld_file_order(tmp_path):
    kdir, mdir = tmp_path / "k", tmp_path / "m"
    kdir.mkdir()
    mdir.mkdir()
    kernel = kdir / "kernel"
    kernel.write_bytes(b"")
    (mdir / "zfs.ko").write_bytes(b"")
    assert find_kld_file("zfs.ko", str(kernel), [str(mdir)]) == str(mdir / "zfs.ko")
    (mdir / "zfs.ko.symbols").write_bytes(b"")
    assert find_kld_file("zfs.ko", str(kernel), [str(mdir)]) == str(mdir / "zfs.ko.symbols")
    (kdir / "zfs.ko").write_bytes(b"")
    assert find_kld_file("zfs.ko", str(kernel), [str(mdir)]) == str(kdir / "zfs.ko")
    (kdir / "zfs.ko.debug").write_bytes(b"")
    assert find_kld_file("zfs.ko", str(kernel), [str(mdir)]) == str(kdir / "zfs.ko.debug")
    assert find_kld_file("nope.ko", str(kernel), [str(mdir)]) is None
    assert find_kld_file("nope.ko", None, (), str(kernel)) == str(kernel)


def test_kld_file_uses_dump_linker_path(tmp_path):
    kvm, _ = build()
    d = tmp_path / "mods"
    d.mkdir()
    (d / "m1.ko.debug").write_bytes(b"")
    kvm.store(kvm.syms["linker_path"], f"{d};/nonexistent\0".encode())
    kvm.kernel_path = str(tmp_path / "kernel")
    assert kld_file(kvm, klds(kvm)[0]) == str(d / "m1.ko.debug")
