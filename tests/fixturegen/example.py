"""A "first look" crash for the bundled examples, one per architecture: ``panic: page
fault`` in ``sysctl`` (trap frame on the crashed stack), 7 processes, a wrapped message
buffer ending in the panic lines, two klds, in the dump format FreeBSD writes for the
architecture (``EXAMPLES``: amd64 minidump v3, ... powerpc ELF). Besides what kernelstate
writes, the processes and threads get a few more fields that a debugger with DWARF shows
(``EXTRA``: td_proc, p_pptr, p_state, p_numthreads; examples/src/kernel.h declares them
there), and the trap frame says what faulted (``FAULT``: amd64 tf_trapno 12 and %rdi 0:
strlen(NULL); the other architectures' cause registers and first argument)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List, Tuple

from .kernelstate import (
    KernelSpec,
    KldSpec,
    ProcSpec,
    ThreadSpec,
    crash_stack,
    facts,
    panic_lines,
    sleep_stack,
    stopped_idle_stack,
    syscall_stack,
)
from .machine import K4, M2
from .vmstat import Vmstat

ARCH = "amd64"
#: Offsets of the extra fields (struct thread / struct proc), 64-bit kernels.
EXTRA = {"td_proc": 0x8, "p_state": 0xB8, "p_pptr": 0xD0, "p_numthreads": 0x3E0}
#: ... and 32-bit kernels (kernelstate's PROC[4]/THREAD[4] layout).
EXTRA_BY_WIDTH = {8: EXTRA, 4: {"td_proc": 0x4, "p_state": 0x64, "p_pptr": 0x7C,
                                "p_numthreads": 0x258}}
#: Parent of each process (pid -> parent pid; the kernel process has none).
PARENTS = {1: 0, 11: 0, 12: 0, 16: 0, 705: 1, 812: 705}
PRS_NORMAL, PRS_ZOMBIE = 1, 2
T_PAGEFLT, TF_TRAPNO, TF_RDI = 12, 120, 0      # struct trapframe (amd64)


@dataclass(frozen=True)
class ExampleArch:
    """How one architecture's example is dumped: fixturegen build() arguments, the
    kernel's release, FreeBSD's MACHINE name and a CPU line for the boot messages."""

    fmt: str
    version: int
    options: Dict[str, object] = field(default_factory=dict)
    osreldate: int = 1400097
    osrelease: str = "14.0-RELEASE"
    machine: str = ""
    cpu: str = ""
    klds: Tuple[int, int] = (0, 0)             # zfs.ko, linux.ko load addresses (0: generated)
    fault: Tuple[Tuple[int, int, int], ...] = ()   # (trap frame offset, value, size)
    arg0: str = ""                             # the register holding strlen's argument


_X86_CPU = "CPU: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz (2394.52-MHz K8-class CPU)"
EXAMPLES: Dict[str, ExampleArch] = {
    "amd64": ExampleArch("minidump", 3, machine="amd64", cpu=_X86_CPU,
                         klds=(0xFFFFFFFF82400000, 0xFFFFFFFF83200000),
                         fault=((TF_TRAPNO, T_PAGEFLT, 4),), arg0="rdi"),
    "i386": ExampleArch("minidump", 2, {"pae": True}, machine="i386",
                        cpu=_X86_CPU.replace("K8", "686"),
                        fault=((44, T_PAGEFLT, 4), (48, 0, 4))),      # tf_trapno, tf_err
    "arm64": ExampleArch("minidump", 3, {"page_flag": 0}, machine="arm64",
                         cpu="CPU  0: ARM Cortex-A72 r0p3 affinity:  0",
                         fault=((32, 0x96000006, 8), (40, 0, 8)),      # tf_esr, tf_far
                         arg0="x0"),
    "arm": ExampleArch("minidump", 2, {
        "mmu": "v6", "endian": "le", "e_flags": 0x05000400,
        "dump_avail": [(0x80000000, 0x80900000), (0x80A00000, 0x88000000)],
        "kstate_heap": (0xC2000000, 0x84000000, 1 << 20)},
        machine="arm", cpu="CPU: ARM Cortex-A7 r0p5 (ECO: 0x00000000)", arg0="r0"),
    "riscv": ExampleArch("minidump", 2, {"mode": "sv39", "e_flags": 1}, machine="riscv",
                         cpu="cpu0: SiFive U74 (rv64imafdc_zicsr_zifencei)",
                         fault=((264, 0, 8), (272, 13, 8)),        # tf_stval, tf_scause
                         arg0="a0"),
    "powerpc64": ExampleArch("minidump", 2, {
        "mmu": "mmu_radix", "endian": "be", "e_flags": 2,
        "kstate_heap": (0xC008000004000000, 0x4000000, M2), "kstate_globals": 0x210000},
        machine="powerpc", cpu="cpu0: IBM POWER9 revision 2.2, 2200.00 MHz",
        fault=((38 * 8, 0x300, 8), (39 * 8, 0, 8), (40 * 8, 0x40000000, 8)),  # exc, dar
        arg0="r3"),
    "powerpc": ExampleArch("elf", 0, {"kstate_heap": (0xC2000000, 0x4000000, 16 * K4),
                                      "image_span": 0x50000},
                           machine="powerpc", cpu="cpu0: Motorola PowerPC 7447A revision "
                           "1.2, 1666.66 MHz",
                           fault=((38 * 4, 0x300, 4), (39 * 4, 0, 4), (40 * 4, 0x40000000, 4)),
                           arg0="r3"),
    "mips": ExampleArch("minidump", 2, {
        "abi": "o32", "endian": "be", "e_flags": 0x70001000, "data_offset": 0x80000,
        "dump_avail": [(0, 0x1000000), (0x1100000, 0x8000000)]},
        osreldate=1300139, osrelease="13.0-RELEASE", machine="mips",
        cpu="cpu0: MIPS Technologies processor v2.1",
        fault=((35 * 4, 0, 4), (36 * 4, 2 << 2, 4)),       # badvaddr, cause (TLBL)
        arg0="a0"),
}


def example_spec(arch: str = ARCH) -> KernelSpec:
    """The example's kernel state (see module docstring)."""
    ex = EXAMPLES[arch]
    T, P = ThreadSpec, ProcSpec
    sleep = ["sched_switch", "mi_switch", "sleepq_switch", "sleepq_timedwait", "_sleep"]
    procs = [
        P(0, "kernel", [T(100000, "swapper", stack=sleep + ["swapper", "mi_startup", "btext"]),
                        T(100001, "if_config_tqg_0",
                          stack=sleep_stack(arch, "gtaskqueue_thread_loop"))]),
        P(1, "init", [T(100002, stack=syscall_stack(arch, "kern_wait6"))]),
        P(11, "idle", [T(100003, "idle: cpu0", 0, stack=stopped_idle_stack(arch)),
                       T(100004, "idle: cpu1", stack=["sched_switch", "mi_switch",
                                                     "sched_idletd", "fork_exit",
                                                     "fork_trampoline"])]),
        P(12, "intr", [T(100005, "swi4: clock (0)", stack=sleep_stack(arch, "ithread_loop"))]),
        P(16, "syncer", [T(100006, stack=sleep_stack(arch, "sched_sync"))]),
        P(705, "sshd", [T(100101, stack=syscall_stack(arch, "kern_select"))]),
        P(812, "sysctl", [T(100120, oncpu=1, stack=crash_stack(arch))]),
    ]
    second = {"amd64": "linux64.ko", "arm64": "linux64.ko", "i386": "linux.ko"}.get(
        arch, "if_bridge.ko")
    klds = [KldSpec("zfs.ko", "/boot/kernel/zfs.ko", ex.klds[0]),
            KldSpec(second, f"/boot/kernel/{second}", ex.klds[1])]
    tail = panic_lines("page fault")
    return KernelSpec(procs, dumptid=100120, ncpu=2, hostname="crashbox.example.org",
                      msgbuf_lines=_boot(tail, 4000, ex), panic_lines=tail,
                      msgbuf_size=4000, klds=klds, osreldate=ex.osreldate,
                      osrelease=ex.osrelease, extras=[Vmstat()])


def _boot(tail: List[str], size: int, ex: ExampleArch = EXAMPLES[ARCH]) -> List[str]:
    """Boot messages; their length makes the unread tail start where kernelstate
    needs no filler line (it would otherwise pad the ring with dots)."""
    rel = ex.osrelease.split("-")[0]
    lines = ["---<<BOOT>>---", "Copyright (c) 1992-2023 The FreeBSD Project.",
             f"FreeBSD {ex.osrelease} releng/{rel}-n265380-f9716eee8ab4 GENERIC {ex.machine}",
             ex.cpu,
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
          "Thu Nov 23 10:14:02 UTC 2023",
          f"FreeBSD/{ex.machine} (crashbox.example.org) (ttyv0)"]
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
    """Write the EXTRA fields and the fault into the machine (before the dump is
    written)."""
    k, m = fx.manifest.kstate, fx.machine
    f = facts(k.arch, k.osreldate)
    extra = EXTRA_BY_WIDTH[f.w]
    addr: Dict[int, int] = {p.pid: p.addr for p in k.procs}
    for p in k.procs:
        m.put_word(p.addr + extra["p_state"], PRS_ZOMBIE if p.zombie else PRS_NORMAL, 4)
        m.put_word(p.addr + extra["p_numthreads"], len(p.tids), 4)
        parent = PARENTS.get(p.pid)
        m.put_word(p.addr + extra["p_pptr"], addr[parent] if parent is not None else 0, f.w)
    for t in k.threads:
        m.put_word(t.td_addr + extra["td_proc"], t.proc_addr, f.w)
    # The fault: strlen(NULL) -> page fault at address 0, as the message buffer says;
    # the trap frame lies tf_span bytes below the interrupted stack pointer.
    ex = EXAMPLES[k.arch]
    crashed = k.threads[0]
    for regs in crashed.trapframes.values():
        tf = regs[f.sp] - f.tf_span
        names = {off: name for name, off in f.tf}
        for off, value, size in ex.fault:
            m.put_word(tf + off, value, size)
            if off in names:
                regs[names[off]] = value
        if ex.arg0:
            m.put_word(tf + dict(f.tf)[ex.arg0], 0, f.w)
            regs[ex.arg0] = 0
        break


def _before_dump(pr, expect) -> None:
    """kernelstate's hook: content written into the machine before the dump is."""
    _enrich(SimpleNamespace(manifest=SimpleNamespace(kstate=expect), machine=pr.m))


def build_example(tmpdir: str, arch: str = ARCH):
    """Kernel + vmcore of ``arch`` (``EXAMPLES[arch]``'s format) in tmpdir; returns the
    fixturegen Fixture (``fx.kernel_path``, ``fx.core_path``, ``fx.manifest.kstate``)."""
    from . import build

    ex = EXAMPLES[arch]
    return build(arch, ex.fmt, ex.version, tmpdir, kstate=example_spec(arch),
                 kstate_hook=_before_dump, **ex.options)
