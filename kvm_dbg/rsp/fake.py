"""A small in-memory stand-in for ``kvm_dbg.Kvm``, for protocol tests and adapters.

It has the methods the server uses (threads, read_partial, write, msgbuf,
procs, klds, panic_info) over a few mapped pages, so the RSP layer and the
debugger adapters can be exercised without a dump.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List, Optional

PAGE = 0x1000


@dataclass
class FakeThread:
    tid: int
    pid: int
    name: str
    crashed: bool = False
    oncpu: int = -1
    registers: Dict[str, int] = field(default_factory=dict)

    def backtrace(self) -> List[int]:
        pc = self.registers.get("rip", self.registers.get("pc"))
        return [] if pc is None else [pc]


class FakeKvm:
    """amd64-like fake: pages at KERNBASE and in the direct map, three threads."""

    arch = "amd64"
    byteorder = "little"
    ptrsize = 8
    kernel_entry = 0xFFFFFFFF80200000

    def __init__(self, arch: str = "amd64", writable: bool = False) -> None:
        self.arch = arch
        if arch in ("i386", "arm", "powerpc", "mips"):
            self.ptrsize = 4
        self.writable = writable
        self.pages: Dict[int, bytearray] = {}
        base = 0xFFFFFFFF80200000 if self.ptrsize == 8 else 0xC0200000
        self.base = base
        for i in range(4):
            self.pages[base + i * PAGE] = bytearray(
                bytes((j * 7 + i) & 0xFF for j in range(PAGE)))
        self.symbols = {"hz": base + 0x100, "dumptid": base + 0x108}
        self.pages[base][0x100:0x104] = (100).to_bytes(4, "little")
        self.pages[base][0x108:0x10C] = (100001).to_bytes(4, "little")
        if self.ptrsize == 8:
            regs = [
                {"rbp": 0xFFFFFE0000011000, "rsp": 0xFFFFFE0000010FF0,
                 "rip": base + 0x24, "rbx": 0xB0B0, "r12": 12, "r13": 13, "r14": 14, "r15": 15},
                {"rbp": 0xFFFFFE0000021000, "rsp": 0xFFFFFE0000020FF0, "rip": base + 0x65},
                {"rip": base + 0x3000},
            ]
            if arch == "arm64":
                regs = [{**{f"x{i}": i for i in range(29)}, "fp": 0x29, "lr": 0x30,
                         "sp": 0xFFFF000000010000, "pc": base + 0x24}, {"pc": base + 0x65}, {}]
        else:
            regs = [{"ebp": 0xC1001000, "esp": 0xC1000FF0, "eip": base + 0x24, "ebx": 0xB0B0},
                    {"eip": base + 0x65}, {}]
        self._threads = [
            FakeThread(100001, 806, "(pid 806) sysctl (crashed)", True, 0, regs[0]),
            FakeThread(100000, 0, "(pid 0) kernel/swapper", False, -1, regs[1]),
            FakeThread(100002, 12, "(pid 12) intr/irq1: atkbd0 (on CPU 1)", False, 1, regs[2]),
        ]

    # -- the Kvm surface the server uses --------------------------------

    def threads(self) -> List[FakeThread]:
        return list(self._threads)

    def lookup(self, name: str) -> Optional[int]:
        return self.symbols.get(name)

    def read_partial(self, addr: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            page = self.pages.get(addr & ~(PAGE - 1))
            if page is None:
                break
            off = addr & (PAGE - 1)
            n = min(size, PAGE - off)
            out += page[off:off + n]
            addr += n
            size -= n
        return bytes(out)

    def read(self, addr: int, size: int) -> bytes:
        data = self.read_partial(addr, size)
        if len(data) != size:
            from ..errors import invalid_address
            raise invalid_address(addr + len(data))
        return data

    def write(self, addr: int, data: bytes) -> None:
        from ..errors import KvmError
        if not self.writable:
            raise KvmError("kvm_write: dump opened read-only")
        for i, b in enumerate(data):
            page = self.pages.get((addr + i) & ~(PAGE - 1))
            if page is None:
                from ..errors import invalid_address
                raise invalid_address(addr + i)
            page[(addr + i) & (PAGE - 1)] = b

    def msgbuf(self) -> SimpleNamespace:
        return SimpleNamespace(text="<6>booting\nhello world\npanic: test\n",
                               unread="panic: test\n")

    def panic_info(self) -> SimpleNamespace:
        return SimpleNamespace(panicstr="test panic", version="FreeBSD 13.0-FAKE",
                               hostname="fakehost", osreldate=1300139)

    def procs(self) -> List[SimpleNamespace]:
        return [SimpleNamespace(pid=806, ppid=1, comm="sysctl", state="RUN", numthreads=1),
                SimpleNamespace(pid=0, ppid=0, comm="kernel", state="RUN", numthreads=1)]

    def klds(self) -> List[SimpleNamespace]:
        return [SimpleNamespace(filename="kernel", address=self.base, size=0x4000,
                                pathname="/boot/kernel/kernel")]
