"""A "first look" crash for the bundled example: amd64 minidump v3, ``panic: page fault``
in ``sysctl`` (trap frame on the crashed stack), 7 processes, a wrapped message buffer
ending in the panic lines, two klds."""

from __future__ import annotations

from typing import List

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

ARCH = "amd64"


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
    return KernelSpec(procs, dumptid=100120, ncpu=2, hostname="crashbox.example.org",
                      msgbuf_lines=_boot(), panic_lines=panic_lines("page fault"),
                      msgbuf_size=4000, klds=klds)


def _boot() -> List[str]:
    lines = ["---<<BOOT>>---", "Copyright (c) 1992-2023 The FreeBSD Project.",
             "FreeBSD 14.0-RELEASE releng/14.0-n265380-f9716eee8ab4 GENERIC amd64",
             "CPU: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz (2394.52-MHz K8-class CPU)",
             "real memory  = 4294967296 (4096 MB)", "avail memory = 4083294208 (3894 MB)",
             "FreeBSD/SMP: Multiprocessor System Detected: 2 CPUs",
             "em0: <Intel(R) Legacy PRO/1000 MT 82540EM> port 0xc000-0xc03f irq 11 on pci0",
             "ada0: <VBOX HARDDISK 1.0> ATA-6 device", "Trying to mount root from zfs:zroot []...",
             "Starting devd.", "Starting sshd."]
    i = 0
    while sum(len(x) + 1 for x in lines) < 9000:
        lines.append(f"pid {900 + i} (sh), jid 0, uid 0: exited on signal 11 (core dumped)")
        lines.append(f"em0: link state changed to {'DOWN' if i % 2 else 'UP'}")
        i += 1
    return lines


def build_example(tmpdir: str):
    """Kernel + vmcore (amd64 minidump v3) in tmpdir; returns the fixturegen Fixture
    (``fx.kernel_path``, ``fx.core_path``, ``fx.manifest.kstate``)."""
    from . import build

    return build(ARCH, "minidump", 3, tmpdir, kstate=example_spec())
