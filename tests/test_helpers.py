"""kvm_dbg.helpers on the DWARF dumps (the bundled example of every architecture), checked against
what the generator wrote (fixturegen.vmstat / kernelstate), plus queue(3) and tree(3)
layouts the dumps do not have, on programs built here."""

from __future__ import annotations

import shutil
import subprocess

import drgn
import pytest
from drgn import Object, Program, TypeMember
from dwarfdumps import DWARF_DUMPS, dwarf_dump, dwarf_dump_factory  # noqa: F401

from kvm_dbg import drgn as kdrgn
from kvm_dbg import helpers as H

_PROGS: dict = {}


@pytest.fixture(params=DWARF_DUMPS)
def dd(request, dwarf_dump_factory):  # noqa: F811
    """(DwarfDump, its Program), one Program per dump and session."""
    d = dwarf_dump_factory(request.param)
    if d.name not in _PROGS:
        _PROGS[d.name] = kdrgn.program(d.kernel, d.core)
    return d, _PROGS[d.name]


# -- processes and threads ------------------------------------------------------------

def test_list_and_tailq_foreach(dd):
    d, prog = dd
    assert [p.p_pid.value_() for p in H.LIST_FOREACH(prog["allproc"], "p_list")] == \
        [p.pid for p in d.kstate.procs]
    for pe in d.kstate.procs:
        p = Object(prog, "struct proc *", value=pe.addr)
        assert [t.td_tid.value_() for t in H.TAILQ_FOREACH(p.p_threads, "td_plist")] == pe.tids


def test_stailq_foreach(dd):
    d, prog = dd
    pcpus = [pc.value_() for pc in H.STAILQ_FOREACH(prog["cpuhead"], "pc_allcpu")]
    assert pcpus == [d.vm.pcpu[c] for c in sorted(d.vm.pcpu)]


def test_for_each_proc_and_thread(dd):
    d, prog = dd
    procs = list(H.for_each_proc(prog))
    assert [p.value_() for p in procs] == [p.addr for p in d.kstate.procs]
    for p, pe in zip(procs, d.kstate.procs):
        assert [t.value_() for t in H.for_each_thread(p)] == \
            [d.kstate.thread(tid).td_addr for tid in pe.tids]


def test_pfind_and_tdfind(dd):
    d, prog = dd
    for pe in d.kstate.procs:
        assert H.pfind(prog, pe.pid).value_() == pe.addr
    assert H.pfind(prog, 4242).value_() == 0
    for tid, addr in d.vm.tids.items():            # through tidhashtbl's td_hash chains
        assert H.tdfind(prog, tid).value_() == addr
        pid = d.kstate.thread(tid).pid
        assert H.tdfind(prog, tid, pid).value_() == addr
        assert H.tdfind(prog, tid, pid + 1).value_() == 0
    assert H.tdfind(prog, 99).value_() == 0


# -- per-CPU, counter(9), VNET --------------------------------------------------------

def test_pcpu(dd):
    d, prog = dd
    cpus = sorted(d.vm.pcpu)
    assert list(H.CPU_FOREACH(prog)) == cpus and H.mp_maxid(prog) == cpus[-1]
    for c in cpus:
        pc = H.pcpu_find(prog, c)
        assert pc.value_() == d.vm.pcpu[c] and pc.pc_cpuid.value_() == c
        assert pc.pc_curthread.value_() == d.vm.curthread[c]
        assert H.DPCPU_ID_GET(prog, c, "pcputicks").value_() == d.vm.dpcpu_pcputicks[c]
        assert H.DPCPU_ID_PTR(prog, c, "pcputicks").type_.type_name() == "int *"
    assert H.DPCPU_SUM(prog, "pcputicks") == sum(d.vm.dpcpu_pcputicks.values())
    # the master copy in set_pcpu is not any CPU's value
    assert prog["pcpu_entry_pcputicks"].value_() == 0


def test_counters_and_zpcpu(dd):
    d, prog = dd
    cnt = prog["vm_cnt"]
    for name, (stored, per_cpu) in d.vm.counters.items():
        if not name.startswith("vm_cnt."):
            continue
        c = cnt.member_(name[len("vm_cnt."):])
        assert c.value_() == stored                   # amd64: an offset from __pcpu
        assert H.counter_u64_fetch_cpus(c) == per_cpu
        assert H.counter_u64_fetch(c) == sum(per_cpu)
        assert H.zpcpu_get_cpu(c, 1)[0].value_() == per_cpu[1]
    if d.arch == "amd64":
        assert H.zpcpu_offset_cpu(prog, 1) == prog["__pcpu"].value_() + 4096
    else:
        assert H.zpcpu_offset_cpu(prog, 1) == 4096


def test_vnet(dd):
    d, prog = dd
    vnets = list(H.VNET_FOREACH(prog))
    assert [(v.value_(), H.VNET(prog, "ip_defttl", v).value_()) for v in vnets] == d.vm.vnets
    default = H.VNET(prog, "ip_defttl")
    assert default.value_() == dict(d.vm.vnets)[d.vm.vnet0] == 100
    assert default.type_.type_name() == "int"
    assert prog["vnet_entry_ip_defttl"].value_() == d.vm.ip_defttl_master == 64
    bad = Object(prog, "struct vnet *", value=d.vm.pcpu[0])
    with pytest.raises(ValueError, match="bad magic"):
        H.VNET(prog, "ip_defttl", bad)


# -- malloc, UMA ----------------------------------------------------------------------

def test_malloc_types(dd):
    d, prog = dd
    types = list(H.for_each_malloc_type(prog))
    assert [t.ks_shortdesc.string_().decode() for t in types] == \
        [m["type"] for m in d.vm.malloc]
    sizes = H.kmemzone_sizes(prog)
    assert sizes == d.vm.kmemzones
    for t, exp in zip(types, d.vm.malloc):
        st = H.malloc_type_stats(t)
        assert t.value_() == exp["address"]
        assert (st["inuse"], st["memuse"], st["numallocs"]) == \
            (exp["inuse"], exp["memuse_bytes"], exp["requests"])
        assert [s for i, s in enumerate(sizes) if st["sizemask"] >> i & 1] == exp["sizes"]
        assert len(list(H.malloc_type_cpu_stats(t))) == len(d.vm.pcpu)


def test_uma(dd):
    d, prog = dd
    kegs = list(H.for_each_keg(prog))
    assert [k.uk_name.string_().decode() for k in kegs] == d.vm.kegs
    zones = list(H.for_each_zone(prog))
    assert [z.value_() for z in zones] == [z["address"] for z in d.vm.zones]
    for z, exp in zip(zones, d.vm.zones):
        row = H.uma_zone_stats(z)
        assert row == {k: v for k, v in exp.items() if k != "address"}
        assert H.zone_cache(z, 0).address_ == z.uz_cpu.address_
        zdom = H.ZDOM_GET(z, 0)
        assert zdom.type_.type_name() == "struct uma_zone_domain *"
        assert zdom.uzd_nitems.value_() == sum(b.ub_cnt.value_() for b in H.STAILQ_FOREACH(
            zdom.uzd_buckets, "ub_link"))
    assert [z.uz_name.string_() for z in H.keg_zones(kegs[1])] == [b"mbuf", b"mbuf_packet"]


# -- symbol-only helpers ----------------------------------------------------------------

def test_intr_counters(dd):
    d, prog = dd
    assert H.intr_counters(prog) == d.vm.intr


def test_msgbuf(dd):
    d, prog = dd
    text, unread = H.msgbuf_peekbytes(prog)
    assert text.decode() == d.kstate.msgbuf_text and unread.decode() == d.kstate.msgbuf_unread


def test_kern_conf_and_ddb(dd):
    d, prog = dd
    assert H.kern_conf(prog) == d.vm.kernconf
    assert H.db_capture_buffer(prog) == d.vm.capture


def test_kern_conf_section_of_the_kernel_file(tmp_path):
    """Without a ``kernconfstring`` symbol, config -x's source: the ``kern_conf``
    section of the kernel file; without either, a clear LookupError."""
    from fixturegen import build
    from fixturegen.kernelstate import default_spec
    objcopy = shutil.which("objcopy")
    assert objcopy, "objcopy (binutils) is needed"
    fx = build("amd64", "minidump", 3, str(tmp_path), kstate=default_spec("amd64"))
    prog = kdrgn.program(fx.kernel_path, fx.core_path)
    with pytest.raises(LookupError, match="INCLUDE_CONFIG_FILE"):
        H.kern_conf(prog)
    text = "ident\tKVMTEST\noptions\tINCLUDE_CONFIG_FILE\n"
    (tmp_path / "conf").write_bytes(text.encode() + b"\0")
    conf_kernel = tmp_path / "kernel-conf"
    subprocess.run([objcopy, "--add-section", f"kern_conf={tmp_path / 'conf'}",
                    fx.kernel_path, str(conf_kernel)], check=True)
    prog = kdrgn.program(str(conf_kernel), fx.core_path)
    assert H.kern_conf(prog) == text
    with pytest.raises(LookupError, match="db_capture_buf not found"):
        H.db_capture_buffer(prog)


# -- tree(3): the example's tree, then all three layouts --------------------------------

def test_rb_tree_of_the_example(dd):
    d, prog = dd
    head = prog["vm_phys_fictitious_tree"]
    segs = list(H.RB_FOREACH(head, "node"))
    assert [s.start.value_() for s in segs] == d.vm.fict_starts
    for s in segs:
        parent, bits = d.vm.fict_nodes[s.value_()]
        assert H.RB_PARENT(s, "node").value_() == parent
        assert s.node.rbe_parent.value_() == parent | bits      # the raw word has the bits
    assert H.RB_MIN(head, "node").start.value_() == d.vm.fict_starts[0]
    walk, elm = [], H.RB_MIN(head, "node")
    while elm.value_():
        walk.append(elm.start.value_())
        elm = H.RB_NEXT(elm, "node")
    assert walk == d.vm.fict_starts
    assert H.RB_ROOT(head).value_() == segs[len(segs) // 2].value_()


class Mem:
    """A Program over a dict of 8-byte words, with struct types made here."""

    def __init__(self) -> None:
        self.prog = Program(drgn.Platform(drgn.Architecture.X86_64))
        self.words = {}
        self.prog.add_memory_segment(0x1000, 0x100000, self._read)
        self.u64 = self.prog.int_type("unsigned long", 8, False)
        self.int = self.prog.int_type("int", 4, True)

    def _read(self, addr, count, _off, _phys):
        out = bytearray()
        for a in range(addr, addr + count):
            word = self.words.get(a & ~7, 0)
            out.append(word >> 8 * (a & 7) & 0xFF)
        return bytes(out)

    def put(self, addr: int, value: int) -> None:
        self.words[addr] = value


def _rb_program(layout: str):
    """A 7-node tree (keys 10..70) in one of tree.h's layouts; returns (Mem, head,
    {key: node address}, {key: parent key})."""
    m = Mem()
    types = {}

    def ptr():                                   # struct node *, made lazily (recursive)
        return m.prog.pointer_type(types["node"])
    if layout == "rbe_link":          # FreeBSD 15: parent, left, right
        entry = m.prog.struct_type(None, 24, [TypeMember(
            lambda: m.prog.array_type(ptr(), 3), "rbe_link", 0)])
        po, lo, ro = 8, 16, 24
    else:
        members = [TypeMember(ptr, "rbe_left", 0), TypeMember(ptr, "rbe_right", 64),
                   TypeMember(ptr, "rbe_parent", 128)]
        if layout == "rbe_color":     # before FreeBSD 13
            members.append(TypeMember(m.int, "rbe_color", 192))
        entry = m.prog.struct_type(None, 32 if layout == "rbe_color" else 24, members)
        po, lo, ro = 24, 8, 16
    types["node"] = m.prog.struct_type("node", 48, [TypeMember(m.u64, "key", 0),
                                                    TypeMember(entry, "link", 64)])
    addr = {k: 0x2000 + 0x40 * i for i, k in enumerate((10, 20, 30, 40, 50, 60, 70))}
    shape = {40: (20, 60), 20: (10, 30), 60: (50, 70)}
    parents = {c: p for p, kids in shape.items() for c in kids}
    for k, a in addr.items():
        m.put(a, k)
        left, right = shape.get(k, (None, None))
        m.put(a + lo, addr[left] if left else 0)
        m.put(a + ro, addr[right] if right else 0)
        bits = 0 if layout == "rbe_color" else (3 if k in (40, 60) else 0)
        m.put(a + po, (addr[parents[k]] if k in parents else 0) | bits)
    m.put(0x1000, addr[40])
    head = Object(m.prog, m.prog.struct_type("tree", 8, [TypeMember(ptr(), "rbh_root", 0)]),
                  address=0x1000)
    return m, head, addr, parents


@pytest.mark.parametrize("layout", ["rbe_link", "rbe_parent_bits", "rbe_color"])
def test_rb_layouts(layout):
    m, head, addr, parents = _rb_program(layout)
    assert [n.key.value_() for n in H.RB_FOREACH(head, "link")] == [10, 20, 30, 40, 50, 60, 70]
    for k, a in addr.items():
        n = Object(m.prog, H.RB_ROOT(head).type_, value=a)
        assert H.RB_PARENT(n, "link").value_() == (addr[parents[k]] if k in parents else 0)
    elm, keys = H.RB_MIN(head, "link"), []
    while elm.value_():
        keys.append(elm.key.value_())
        elm = H.RB_NEXT(elm, "link")
    assert keys == [10, 20, 30, 40, 50, 60, 70]


def test_rb_cycle_is_an_error():
    m, head, addr, _ = _rb_program("rbe_link")
    m.put(addr[70] + 24, addr[40])                      # 70's right child: the root
    with pytest.raises(ValueError, match="cycle"):
        list(H.RB_FOREACH(head, "link"))


@pytest.mark.parametrize("kind", ["LIST", "TAILQ", "STAILQ", "SLIST"])
def test_queue_macros_and_loops(kind):
    """Each queue(3) head/entry naming; a loop raises instead of spinning."""
    m = Mem()
    names = {"LIST": ("lh_first", "le_next"), "TAILQ": ("tqh_first", "tqe_next"),
             "STAILQ": ("stqh_first", "stqe_next"), "SLIST": ("slh_first", "sle_next")}
    first, nxt = names[kind]
    types = {}
    entry = m.prog.struct_type(None, 8, [TypeMember(
        lambda: m.prog.pointer_type(types["elem"]), nxt, 0)])
    elem = types["elem"] = m.prog.struct_type("elem", 16, [TypeMember(m.u64, "v", 0),
                                                          TypeMember(entry, "link", 64)])
    head = Object(m.prog, m.prog.struct_type("head", 8, [
        TypeMember(m.prog.pointer_type(elem), first, 0)]), address=0x1000)
    nodes = [0x3000 + 0x20 * i for i in range(5)]
    m.put(0x1000, nodes[0])
    for i, (a, b) in enumerate(zip(nodes, nodes[1:] + [0])):
        m.put(a, 100 + i)
        m.put(a + 8, b)
    foreach = getattr(H, f"{kind}_FOREACH")
    assert [e.v.value_() for e in foreach(head, "link")] == [100, 101, 102, 103, 104]
    m.put(nodes[4] + 8, nodes[2])
    with pytest.raises(ValueError, match="loop"):
        list(foreach(head, "link"))


def test_kern_conf_from_the_file_when_memory_is_unreadable(example):
    """kernconfstring's page missing from the dump: config -x's way, the kernel file."""
    import kvm_dbg
    from kvm_dbg.errors import KvmError
    kd = kvm_dbg.open(str(example / "kernel"), str(example / "vmcore.0"))
    addr = kd.lookup("kernconfstring")
    real_read = kd.read

    def read(a: int, n: int) -> bytes:
        if a <= addr < a + n or addr <= a < addr + 4096:
            raise KvmError(f"invalid address ({a:#x})", address=a)
        return real_read(a, n)
    kd.read = read
    prog = kdrgn.program_for(kd)
    with pytest.raises(drgn.FaultError):
        prog.read(addr, 1)
    text = H.kern_conf(prog)
    assert text.startswith("options\tCONFIG_AUTOGENERATED\nident\tGENERIC\nmachine\tamd64\n")
    assert text.endswith("device\tada\n")
    kd.close()
