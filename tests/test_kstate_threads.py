"""Thread enumeration and PCB choice on a fake kvm (no dump, no debugger)."""

from __future__ import annotations

from fakedump import PCB_SIZE, PROC_OFFS, THREAD_OFFS, FakeDump, FakeKernel

from kvm_dbg.kstate import procs, threads


def regs(n: int) -> dict:
    return {"r15": n, "r14": n + 1, "r13": n + 2, "r12": n + 3, "rbp": n + 4,
            "rsp": n + 5, "rbx": n + 6, "rip": n + 7}


def kernel(arch: str = "amd64") -> FakeKernel:
    k = FakeKernel(FakeDump(arch))
    k.add_proc(0, "kernel", [(100000, "swapper", -1, regs(0x100))])
    k.add_proc(11, "idle", [(100003, "idle: cpu0", 0, regs(0x200)),
                            (100004, "idle: cpu1", -1, regs(0x300))])
    k.add_proc(806, "sysctl", [(100659, "sysctl", 1, regs(0x400))])
    k.crash(100659, regs(0x500))
    k.stop_cpu(0, regs(0x600))
    return k


def test_order_names_and_pcb_choice():
    k = kernel()
    ts = threads(k.kvm)
    assert [t.name for t in ts] == [
        "(pid 806) sysctl (crashed)",
        "(pid 11) idle/idle: cpu0 (on CPU 0)",
        "(pid 11) idle/idle: cpu1",
        "(pid 0) kernel/swapper",
    ]
    crashed, oncpu, idle1, _ = ts
    assert crashed.crashed and crashed.pcb_addr == k.kvm.syms["dumppcb"]
    assert crashed.registers == regs(0x500)
    assert oncpu.pcb_addr == k.kvm.syms["stoppcbs"] and oncpu.registers == regs(0x600)
    assert idle1.registers == regs(0x300) and idle1.oncpu is None
    assert (crashed.pid, crashed.comm, crashed.tdname, crashed.tid) == \
        (806, "sysctl", "sysctl", 100659)
    assert k.kvm.warnings == []


def test_pid_order():
    ts = threads(kernel().kvm, order="pid")
    assert [t.pid for t in ts] == [806, 0, 11, 11]


def test_proc_list_loop_terminates_with_warning():
    k = kernel()
    first = k.kvm.read_ptr(k.kvm.syms["allproc"])
    last = k.procs[0]                              # oldest, end of allproc
    k.kvm.put_ptr(last + PROC_OFFS["p_list"], first)
    ts = threads(k.kvm)
    assert len(ts) == 4
    assert any("loop" in w for w in k.kvm.warnings)


def test_thread_list_loop_terminates():
    k = kernel()
    idle = k.procs[1]
    td0 = k.kvm.read_ptr(idle + PROC_OFFS["p_threads"])
    td1 = k.kvm.read_ptr(td0 + THREAD_OFFS["td_plist"])
    k.kvm.put_ptr(td1 + THREAD_OFFS["td_plist"], td0)
    assert len(threads(k.kvm)) == 4
    assert any("loop" in w for w in k.kvm.warnings)


def test_thread_pointer_into_hole():
    k = kernel()
    idle = k.procs[1]
    td0 = k.kvm.read_ptr(idle + PROC_OFFS["p_threads"])
    k.kvm.put_ptr(td0 + THREAD_OFFS["td_plist"], 0x7777_0000)     # unmapped
    ts = threads(k.kvm)
    assert [t.tid for t in ts] == [100659, 100003, 100000]
    assert any("0x77770000" in w for w in k.kvm.warnings)


def test_proc_pointer_into_hole():
    k = kernel()
    k.kvm.put_ptr(k.procs[2] + PROC_OFFS["p_list"], 0x7777_0000)
    ts = threads(k.kvm)
    assert [t.tid for t in ts] == [100659]
    assert k.kvm.warnings


def test_garbage_required_offset_symbol():
    k = kernel()
    k.offset_symbol("thread_off_td_tid", 0x7FFFFFFF)
    assert threads(k.kvm) == []
    assert any("thread_off_td_tid" in w for w in k.kvm.warnings)


def test_garbage_optional_offset_symbol_degrades():
    k = kernel()
    k.offset_symbol("thread_off_td_name", -5)
    ts = threads(k.kvm)
    assert len(ts) == 4 and ts[0].tdname == "" and ts[0].name == "(pid 806) sysctl (crashed)"
    assert any("thread_off_td_name" in w for w in k.kvm.warnings)


def test_misaligned_pointer_offset_rejected():
    k = kernel()
    k.offset_symbol("proc_off_p_list", 3)
    assert threads(k.kvm) == []
    assert k.kvm.warnings


def test_missing_offset_symbols():
    k = FakeKernel(FakeDump(), exports=False)
    k.add_proc(1, "init", [(100001, "init", -1, regs(0))])
    assert threads(k.kvm) == []
    assert any("missing" in w for w in k.kvm.warnings)


def test_offset_symbol_unreadable():
    k = kernel()
    k.kvm.unmap(k.kvm.syms["thread_off_td_plist"])
    assert threads(k.kvm) == []
    assert k.kvm.warnings


def test_zombproc_and_dedup():
    k = kernel()
    z, _ = k.add_proc(99, "zombie", [(100099, "zombie", -1, regs(0x700))], head="zombproc")
    # also link the zombie into allproc's tail: it must be listed once
    k.kvm.put_ptr(k.procs[0] + PROC_OFFS["p_list"], z)
    ts = threads(k.kvm)
    assert [t.tid for t in ts].count(100099) == 1 and len(ts) == 5


def test_pid_hash_walk():
    k = kernel()
    kvm = k.kvm
    extra, _ = k.add_proc(500, "hashed", [(100500, "hashed", -1, regs(0x800))], head="other")
    tbl = k.alloc(4 * 8)
    k.global_("pidhashtbl", 8)
    k.global_("pidhash", 8)
    kvm.put_ptr(kvm.syms["pidhashtbl"], tbl)
    kvm.put_int(kvm.syms["pidhash"], 3, 8)                    # mask: buckets 0..3
    kvm.put_ptr(tbl + 3 * 8, extra)                           # the last bucket counts
    kvm.put_ptr(extra + PROC_OFFS["p_hash"], k.procs[0])      # chain into a known proc
    kvm.put_ptr(k.procs[0] + PROC_OFFS["p_hash"], 0)
    ts = threads(kvm)
    assert [t.pid for t in ts] == [806, 11, 11, 0, 500]


def test_stoppcbs_pointer_form_by_osreldate():
    k = kernel()
    kvm = k.kvm
    k.global_("osreldate", 4)
    kvm.put_int(kvm.syms["osreldate"], 1400089, 4)
    array = k.alloc(PCB_SIZE * 2)
    k.pcb(regs(0x900), array)
    kvm.put_ptr(kvm.syms["stoppcbs"], array)
    oncpu = threads(kvm)[1]
    assert oncpu.pcb_addr == array and oncpu.registers == regs(0x900)


def test_stopped_cpus_bit_clear_uses_td_pcb():
    k = kernel()
    k.global_("stopped_cpus", 16)
    k.global_("mp_maxid", 4)
    k.kvm.put_int(k.kvm.syms["mp_maxid"], 1, 4)
    oncpu = threads(k.kvm)[1]
    assert oncpu.registers == regs(0x200)          # CPU 0 not stopped -> td_pcb
    k.kvm.put_int(k.kvm.syms["stopped_cpus"], 1, 8)
    assert threads(k.kvm)[1].registers == regs(0x600)


def test_on_cpu_without_stoppcbs_has_no_registers():
    k = kernel()
    del k.kvm.syms["stoppcbs"]
    oncpu = threads(k.kvm)[1]
    assert oncpu.pcb_addr is None and oncpu.registers == {} and oncpu.backtrace() == []


def test_unreadable_pcb_gives_no_registers_and_one_warning():
    k = kernel()
    idle = k.procs[1]
    td0 = k.kvm.read_ptr(idle + PROC_OFFS["p_threads"])
    td1 = k.kvm.read_ptr(td0 + THREAD_OFFS["td_plist"])
    k.kvm.put_ptr(td1 + THREAD_OFFS["td_pcb"], 0x6666_0000)        # unmapped
    ts = threads(k.kvm)
    assert ts[2].registers == {}
    assert sum("PCB" in w for w in k.kvm.warnings) == 1


def test_uchar_oncpu_before_freebsd_11():
    k = kernel()
    k.global_("osreldate", 4)
    k.kvm.put_int(k.kvm.syms["osreldate"], 1003000, 4)
    for p in k.procs:
        td = k.kvm.read_ptr(p + PROC_OFFS["p_threads"])
        while td:
            cpu = k.kvm.read_int(td + THREAD_OFFS["td_oncpu"], 4, signed=True)
            k.kvm.put_int(td + THREAD_OFFS["td_oncpu"], cpu & 0xFF | 0x5500, 4)
            td = k.kvm.read_ptr(td + THREAD_OFFS["td_plist"])
    assert [t.oncpu for t in threads(k.kvm)] == [1, 0, None, None]


def test_no_dumptid_means_no_crashed_thread():
    k = kernel()
    k.kvm.put_int(k.kvm.syms["dumptid"], -1, 4)
    ts = threads(k.kvm)
    assert not any(t.crashed for t in ts)
    assert ts[0].name == "(pid 806) sysctl (on CPU 1)"


def test_unsupported_arch():
    kvm = FakeDump("vax")
    assert threads(kvm) == [] and kvm.warnings


def test_procs():
    ps = procs(kernel().kvm)
    assert [(p.pid, p.comm, p.tids) for p in ps] == [
        (806, "sysctl", [100659]), (11, "idle", [100003, 100004]), (0, "kernel", [100000])]
    assert ps[1].nthreads == 2 and ps[0].ppid is None and ps[0].state is None


def test_procs_with_extra_offsets():
    k = kernel()
    kvm = k.kvm
    # place p_pptr at 64 and p_state at 80 inside the fake struct proc
    kvm.put_ptr(k.procs[2] + 64, k.procs[0])
    kvm.put_int(k.procs[2] + 80, 2, 4)
    ps = procs(kvm, extra={"p_pptr": 64, "p_state": 80})
    assert ps[0].ppid == 0 and ps[0].state == "PRS_ZOMBIE"
