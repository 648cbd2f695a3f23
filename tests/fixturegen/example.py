"""A "first look" crash for the bundled example: amd64 minidump v3, ``panic: page fault``
in ``sysctl`` (trap frame on the crashed stack), 7 processes, a wrapped message buffer
ending in the panic lines, two klds. Besides what kernelstate writes, the processes and
threads get a few more fields that a debugger with DWARF shows (``EXTRA``: td_proc,
p_pptr, p_state, p_numthreads; examples/src/kernel.h declares them there), and the trap
frame says what faulted (tf_trapno 12, %rdi 0: strlen(NULL))."""

from __future__ import annotations

from typing import Dict, List

from .kernelstate import (
    KernelSpec,
    KldSpec,
    ProcSpec,
    ThreadSpec,
    crash_stack,
    panic_lines,
    sleep_stack,
    stopped_idle_stack,
    syscall_stack,
)
from .vmstat import Vmstat

ARCH = "amd64"
#: Offsets of the extra fields (struct thread / struct proc, amd64).
EXTRA = {"td_proc": 0x8, "p_state": 0xB8, "p_pptr": 0xD0, "p_numthreads": 0x3E0}
#: Parent of each process (pid -> parent pid; the kernel process has none).
PARENTS = {1: 0, 11: 0, 12: 0, 16: 0, 705: 1, 812: 705}
PRS_NORMAL, PRS_ZOMBIE = 1, 2
T_PAGEFLT, TF_TRAPNO, TF_RDI = 12, 120, 0      # struct trapframe (amd64)


def example_spec() -> KernelSpec:
    """The example's kernel state (see module docstring)."""
    T, P = ThreadSpec, ProcSpec
    sleep = ["sched_switch", "mi_switch", "sleepq_switch", "sleepq_timedwait", "_sleep"]
    procs = [
        P(0, "kernel", [T(100000, "swapper", stack=sleep + ["swapper", "mi_startup", "btext"]),
                        T(100001, "if_config_tqg_0",
                          stack=sleep_stack(ARCH, "gtaskqueue_thread_loop"))]),
        P(1, "init", [T(100002, stack=syscall_stack(ARCH, "kern_wait6"))]),
        P(11, "idle", [T(100003, "idle: cpu0", 0, stack=stopped_idle_stack(ARCH)),
                       T(100004, "idle: cpu1", stack=["sched_switch", "mi_switch",
                                                     "sched_idletd", "fork_exit",
                                                     "fork_trampoline"])]),
        P(12, "intr", [T(100005, "swi4: clock (0)", stack=sleep_stack(ARCH, "ithread_loop"))]),
        P(16, "syncer", [T(100006, stack=sleep_stack(ARCH, "sched_sync"))]),
        P(705, "sshd", [T(100101, stack=syscall_stack(ARCH, "kern_select"))]),
        P(812, "sysctl", [T(100120, oncpu=1, stack=crash_stack(ARCH))]),
    ]
    klds = [KldSpec("zfs.ko", "/boot/kernel/zfs.ko", 0xFFFFFFFF82400000),
            KldSpec("linux64.ko", "/boot/kernel/linux64.ko", 0xFFFFFFFF83200000)]
    tail = panic_lines("page fault")
    return KernelSpec(procs, dumptid=100120, ncpu=2, hostname="crashbox.example.org",
                      msgbuf_lines=_boot(tail, 4000), panic_lines=tail,
                      msgbuf_size=4000, klds=klds, extras=[Vmstat()])


def _boot(tail: List[str], size: int) -> List[str]:
    """Boot messages; their length makes the unread tail start where kernelstate
    needs no filler line (it would otherwise pad the ring with dots)."""
    lines = ["---<<BOOT>>---", "Copyright (c) 1992-2023 The FreeBSD Project.",
             "FreeBSD 14.0-RELEASE releng/14.0-n265380-f9716eee8ab4 GENERIC amd64",
             "CPU: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz (2394.52-MHz K8-class CPU)",
             "real memory  = 4294967296 (4096 MB)", "avail memory = 4083294208 (3894 MB)",
             "FreeBSD/SMP: Multiprocessor System Detected: 2 CPUs",
             "em0: <Intel(R) Legacy PRO/1000 MT 82540EM> port 0xc000-0xc03f irq 11 on pci0",
             "ada0: <VBOX HARDDISK 1.0> ATA-6 device", "Trying to mount root from zfs:zroot []...",
             "Starting devd.", "Starting sshd."]
    u = len("".join(x + "\n" for x in tail).encode())
    rc = ["Setting hostname: crashbox.example.org.", "lo0: link state changed to UP",
          "Starting syslogd.", "Security policy loaded: MAC/ntpd (mac_ntpd)",
          "Starting ntpd.", "Creating and/or trimming log files.", "Updating motd:.",
          "Mounting late filesystems:.", "Starting cron.", "Autoloading module: uhid",
          "Starting background file system checks in 60 seconds.", "Clearing /tmp.",
          "Thu Nov 23 10:14:02 UTC 2023", "FreeBSD/amd64 (crashbox.example.org) (ttyv0)"]
    i = 0
    while True:
        used = sum(len(x.encode()) + 1 for x in lines)
        need = (u // 2 - u - used) % size       # kernelstate's filler length: make it 0
        if used >= 9000:
            sums: Dict[int, List[str]] = {0: []}    # /etc/rc lines (in order) adding up
            for line in rc:
                for n, chosen in list(sums.items()):
                    sums.setdefault(n + len(line) + 1, chosen + [line])
            if need in sums:
                return lines + sums[need]
        lines.append(f"pid {900 + i} (sh), jid 0, uid 0: exited on signal 11 (core dumped)")
        lines.append(f"em0: link state changed to {'DOWN' if i % 2 else 'UP'}")
        i += 1


def _enrich(fx) -> None:
    """Write the EXTRA fields into the machine (before the dump is written)."""
    k, m = fx.manifest.kstate, fx.machine
    addr: Dict[int, int] = {p.pid: p.addr for p in k.procs}
    for p in k.procs:
        m.put_word(p.addr + EXTRA["p_state"], PRS_ZOMBIE if p.zombie else PRS_NORMAL, 4)
        m.put_word(p.addr + EXTRA["p_numthreads"], len(p.tids), 4)
        parent = PARENTS.get(p.pid)
        m.put_word(p.addr + EXTRA["p_pptr"], addr[parent] if parent is not None else 0, 8)
    for t in k.threads:
        m.put_word(t.td_addr + EXTRA["td_proc"], t.proc_addr, 8)
    # The fault: strlen(NULL) -> page fault (T_PAGEFLT) at address 0, as the
    # message buffer says; the trap frame ends 192 bytes above the interrupted %rsp.
    crashed = k.threads[0]
    for regs in crashed.trapframes.values():
        tf = regs["rsp"] - 192
        m.put_word(tf + TF_TRAPNO, T_PAGEFLT, 4)
        m.put_word(tf + TF_RDI, 0, 8)
        regs["rdi"] = 0


def build_example(tmpdir: str):
    """Kernel + vmcore (amd64 minidump v3) in tmpdir; returns the fixturegen Fixture
    (``fx.kernel_path``, ``fx.core_path``, ``fx.manifest.kstate``)."""
    from . import build
    from .minidump import write_minidump

    fx = build(ARCH, "minidump", 3, tmpdir, kstate=example_spec())
    _enrich(fx)
    pr = fx.profile
    fx.layout = write_minidump(fx.machine, fx.core_path, 3, pml4=pr.pml4, top=pr.top,
                               msgbuf=fx.options.get("msgbuf"))  # type: ignore[arg-type]
    return fx
