"""Modules loaded on kvm-open (kvm_dbg.modload) without a debugger: the server's
``kld-loads`` answer on a fixture dump whose resolver is a debugger's symbol
table, as the plugins start it; its warnings (one per module without a file,
once); the commands each debugger runs; where ``kvm-kld`` says a file came from."""

from __future__ import annotations

import shlex

import pytest
from fixturegen import build
from fixturegen.kernelstate import default_spec
from test_kld_layout import MODULES, REL_EXPECT, write_ko

from kvm_dbg import modload
from kvm_dbg.adapter import AdapterError, KldLoad
from kvm_dbg.debuggers import _quote as gdb_quote
from kvm_dbg.elfkernel import KernelImage
from kvm_dbg.kstate.klds import locate_kld_file, search_places, section_addresses
from kvm_dbg.rsp import Target, monitor, open_dump, resolver_symbols, write_symbol_file

LOADS = [KldLoad("a.ko", 0x1000, "/m/a.ko.debug", {".text": 0x1000, ".data": 0x1040}),
         KldLoad("b.ko", 0x2000, None, {}, "b.ko: Unable to locate kld"),
         KldLoad("c.ko", 0x3000, "/m/c.ko", {}, '"/m/c.ko": not an object file'),
         KldLoad("d.ko", 0x4000, "/m dir/d.ko", {".text": 0x4000}),
         KldLoad("e.ko", 0x5000, "/m/a.ko.debug", {".text": 0x5000})]


def test_encode_decode_round_trip():
    assert modload.decode(modload.encode(LOADS)) == LOADS
    assert list(modload.decode(modload.encode(LOADS))[0].sections) == [".text", ".data"]
    for bad in ("", "{}", '[{"name": "x"}]', "not json", '[{"name": "x", "address": "z", '
                '"path": null, "sections": [], "error": null}]'):
        with pytest.raises(AdapterError, match="unexpected kld-loads answer"):
            modload.decode(bad)


def test_to_load_skips_missing_unusable_loaded_and_repeated():
    assert [x.name for x in modload.to_load(LOADS, set())] == ["a.ko", "d.ko"]
    assert [x.name for x in modload.to_load(LOADS, {"/m/a.ko.debug"})] == ["d.ko"]


def test_load_modules_lines():
    added = []

    def add(load):
        if load.name == "d.ko":
            raise AdapterError("refused")
        added.append(load.path)

    lines = modload.load_modules(lambda: modload.encode(LOADS), set(), add, "gdb")
    assert added == ["/m/a.ko.debug"]
    assert lines == ["Loaded symbols for a.ko at 0x1000 from /m/a.ko.debug",
                     "warning: klds: d.ko: gdb cannot load /m dir/d.ko: refused"]
    assert modload.load_modules(lambda: modload.encode(LOADS), {"/m/a.ko.debug",
                                                                "/m dir/d.ko"}, add, "x") == []

    def broken():
        raise AdapterError("cannot list kernel modules: bad page")

    assert modload.load_modules(broken, set(), add, "lldb") == [
        "warning: klds: module symbols not loaded: cannot list kernel modules: bad page"]
    assert modload.load_modules(lambda: "E01", set(), add, "lldb")[0].startswith(
        "warning: klds: module symbols not loaded: unexpected kld-loads answer")


def test_debugger_commands():
    assert modload.gdb_command(LOADS[0], gdb_quote) == \
        'add-symbol-file "/m/a.ko.debug" 0x1000 -s .data 0x1040'
    cmd = modload.lldb_command(LOADS[3], shlex.quote)
    assert cmd == "target modules load --file '/m dir/d.ko' .text 0x4000"
    assert shlex.split(cmd)[4] == "/m dir/d.ko"
    assert modload.loaded_line(LOADS[0]) == \
        "Loaded symbols for a.ko at 0x1000 from /m/a.ko.debug"
    assert modload.failed_line(LOADS[3], "lldb", "bad") == \
        "warning: klds: d.ko: lldb cannot load /m dir/d.ko: bad"


def test_search_places_say_where(tmp_path):
    kernel = tmp_path / "boot" / "kernel" / "kernel"
    places = search_places(str(kernel), ["/boot/kernel", "/boot/modules"], str(tmp_path / "r"))
    assert places[0] == (str(kernel.parent), "the kernel's directory")
    assert places[1] == (str(tmp_path / "r/usr/lib/debug/boot/kernel"),
                         "the /usr/lib/debug mirror of module path /boot/kernel under the "
                         "sysroot")
    assert places[-1] == (str(tmp_path / "r/boot/modules"),
                          "module path /boot/modules under the sysroot")
    assert search_places(None, ["/boot/modules"], "/")[1] == ("/boot/modules",
                                                               "module path /boot/modules")
    (tmp_path / "r/boot/modules").mkdir(parents=True)
    (tmp_path / "r/boot/modules/zfs.ko").write_bytes(b"")
    assert locate_kld_file("zfs.ko", None, ["/boot/modules"], None, str(tmp_path / "r")) == \
        (str(tmp_path / "r/boot/modules/zfs.ko"), "module path /boot/modules under the sysroot")
    (tmp_path / "elsewhere.ko").write_bytes(b"")
    assert locate_kld_file("x.ko", None, [], str(tmp_path / "elsewhere.ko")) == \
        (str(tmp_path / "elsewhere.ko"), "the module's path recorded in the dump")


@pytest.fixture
def server_target(tmp_path):
    """A Target as the plugins' server has it: the resolver is a symbol file (the
    debugger's symbols), modules in a sysroot's /usr/lib/debug mirror."""
    fx = build("amd64", "minidump", 3, str(tmp_path / "k"),
               kstate=default_spec("amd64", klds=MODULES))
    root = tmp_path / "root"
    (root / "usr/lib/debug/boot/modules").mkdir(parents=True)
    ko = write_ko(root / "usr/lib/debug/boot/modules/kvmtest.ko.debug")
    img = KernelImage(fx.kernel_path)
    symfile = tmp_path / "symbols.json"
    write_symbol_file(str(symfile), {n: img.lookup(n) for n in resolver_symbols()})
    img.close()
    kvm, _table = open_dump(fx.kernel_path, fx.core_path, str(symfile), elf_symbols=False,
                            open_options={"sysroot": str(root)})
    yield Target(kvm), fx, ko
    kvm.close()


def test_server_kld_loads(server_target):
    target, fx, ko = server_target
    base = {k.name: k.address for k in fx.manifest.kstate.klds}
    assert monitor.run(target, "warnings") == ""             # nothing looked up yet
    loads = modload.decode(monitor.run(target, "kld-loads"))
    assert [(x.name, x.address, x.path) for x in loads] == [
        ("kvmtest.ko", base["kvmtest.ko"], str(ko)), ("absent.ko", base["absent.ko"], None),
        ("other.ko", base["other.ko"], None)]
    assert loads[0].sections == section_addresses(str(ko), base["kvmtest.ko"])
    assert loads[0].sections[".data"] == base["kvmtest.ko"] + REL_EXPECT[".data"]
    assert loads[1].error == "absent.ko: Unable to locate kld"
    # one warning per module without a file, once, however often it is asked
    monitor.run(target, "kld-loads")
    warnings = monitor.run(target, "warnings").splitlines()
    assert [w.split(":", 3)[2].strip() for w in warnings] == ["absent.ko", "other.ko"]
    assert all(w.startswith("warning: klds: ") and "no symbol file found" in w
               for w in warnings), warnings
    # kvm-kld's listing says where each file came from, or where it was looked for
    listing = monitor.run(target, "kld").splitlines()
    assert listing[1].endswith(f"{ko} (from the /usr/lib/debug mirror of module path "
                               "/boot/modules under the sysroot)"), listing[1]
    assert "(none: absent.ko: Unable to locate kld; looked in " in listing[2]
