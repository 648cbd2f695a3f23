"""The test double for a dump: ``FakeDump``, sparse memory plus symbols with
the ``kvm_dbg.Kvm`` surface (kernel state comes from the real ``kstate`` code
over that memory), and ``FakeKernel``, which lays out kernel structures in it.

For unit tests of ``kstate`` and the RSP server, and for benchmarks, where a
generated dump file would be slower or less precise.  Memory is a dict of
pages; unmapped pages are holes (reads fail there).  ``store`` builds memory;
``write`` is the Kvm API (writable dumps, mapped pages only).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from kvm_dbg import kstate
from kvm_dbg.errors import KvmError, invalid_address
from kvm_dbg.kstate.archdata import PcbLayout, arch_info
from kvm_dbg.kstate.msgbuf import MSG_MAGIC

PAGE = 4096
_BIG_ENDIAN = ("powerpc", "powerpc64")
_PTR4 = ("i386", "arm", "powerpc")


class FakeDump:
    """Sparse memory + symbols with the ``Kvm`` API."""

    format = "fake"
    kerndisp = 0
    kernel_entry = 0xFFFFFFFF80200000

    def __init__(self, arch: str = "amd64", byteorder: Optional[str] = None,
                 ptrsize: Optional[int] = None, writable: bool = False) -> None:
        self.arch = arch
        self.writable = writable
        self.core_path = f"<fake {arch} dump>"
        self.byteorder = byteorder or ("big" if arch in _BIG_ENDIAN else "little")
        self.ptrsize = ptrsize or (4 if arch in _PTR4 else 8)
        self.pages: Dict[int, bytearray] = {}
        self.syms: Dict[str, int] = {}
        self.warnings: List[str] = []
        self.msgbuf_section: Optional[bytes] = None
        self.kernel_path: Optional[str] = None
        self.reads = 0

    # -- building ---------------------------------------------------------
    def store(self, addr: int, data: bytes) -> None:
        """Store bytes, mapping pages as needed."""
        pos = 0
        while pos < len(data):
            page, off = divmod(addr + pos, PAGE)
            buf = self.pages.setdefault(page, bytearray(PAGE))
            n = min(PAGE - off, len(data) - pos)
            buf[off:off + n] = data[pos:pos + n]
            pos += n

    def put_int(self, addr: int, value: int, size: int) -> None:
        self.store(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, self.byteorder))

    def put_ptr(self, addr: int, value: int) -> None:
        self.put_int(addr, value, self.ptrsize)

    def unmap(self, addr: int, size: int = 1) -> None:
        """Punch a hole: every page touching [addr, addr + size) disappears."""
        for page in range(addr // PAGE, (addr + size - 1) // PAGE + 1):
            self.pages.pop(page, None)

    def define(self, name: str, addr: int) -> None:
        self.syms[name] = addr

    # -- the Kvm API ------------------------------------------------------
    def read_partial(self, addr: int, size: int) -> bytes:
        self.reads += 1
        out = bytearray()
        while size > 0:
            page, off = divmod(addr, PAGE)
            buf = self.pages.get(page)
            if buf is None:
                break
            n = min(PAGE - off, size)
            out += buf[off:off + n]
            addr += n
            size -= n
        return bytes(out)

    def read(self, addr: int, size: int) -> bytes:
        data = self.read_partial(addr, size)
        if len(data) < size:
            raise KvmError(f"invalid address (0x{addr + len(data):x})", address=addr)
        return data

    def read_int(self, addr: int, size: int, signed: bool = False) -> int:
        return int.from_bytes(self.read(addr, size), self.byteorder, signed=signed)

    def read_ptr(self, addr: int) -> int:
        return self.read_int(addr, self.ptrsize)

    def read_cstring(self, addr: int, maxlen: int = 4096) -> bytes:
        return self.read_partial(addr, maxlen).split(b"\0", 1)[0]

    def lookup(self, name: str) -> Optional[int]:
        return self.syms.get(name)

    def symbol(self, name: str) -> int:
        if name not in self.syms:
            raise KvmError(f"{name}: symbol not found")
        return self.syms[name]

    def write(self, addr: int, data: bytes) -> None:
        """The Kvm API: into mapped pages of a writable dump, all or nothing."""
        if not self.writable:
            raise KvmError("kvm_write not implemented for dead kernels")
        for a in range(addr, addr + len(data)):
            if a // PAGE not in self.pages:
                raise invalid_address(a)
        self.store(addr, data)

    # -- kernel state, as Kvm gives it (the real kstate code) -----------------
    def threads(self) -> list:
        return kstate.threads(self)

    def procs(self) -> list:
        return kstate.procs(self)

    def msgbuf(self) -> kstate.MsgBuf:
        return kstate.msgbuf(self)

    def klds(self) -> list:
        return kstate.klds(self)

    def panic_info(self) -> kstate.PanicInfo:
        return kstate.panic_info(self)


# Offsets used by FakeKernel: pointer-aligned for 4- and 8-byte pointers.
PROC_OFFS = {"p_list": 0, "p_threads": 16, "p_hash": 32, "p_pid": 48, "p_comm": 52}
THREAD_OFFS = {"td_tid": 8, "td_plist": 16, "td_name": 24, "td_oncpu": 44, "td_pcb": 48}
KLD_OFFS = {"next": 0, "address": 8, "filename": 16, "pathname": 24}
PROC_SIZE, THREAD_SIZE = 128, 64
PCB_SIZE = 1024


def encode_regs(layout: PcbLayout, regs: Dict[str, int], order: str, size: int) -> bytes:
    """A PCB image holding ``regs`` in ``layout`` (unlisted slots zero)."""
    buf = bytearray(size)
    for name, off in layout.slots:
        if name in regs:
            buf[off:off + layout.width] = (regs[name] % (1 << 8 * layout.width)).to_bytes(
                layout.width, order)
    return bytes(buf)


class FakeKernel:
    """Lays out globals, offset symbols, procs, threads and PCBs in a FakeDump.

    Processes are inserted at the head of ``allproc`` (newest first, like the
    kernel); ``data`` holds globals, ``heap`` the allocated structures.
    """

    def __init__(self, kvm: FakeDump, data: int = 0x1000_0000, heap: int = 0x2000_0000,
                 pcb_layout: str = "default", exports: bool = True) -> None:
        self.kvm, self.data, self.heap = kvm, data, heap
        self.arch = arch_info(kvm.arch, kvm.ptrsize)
        self.layout = self.arch.pcb_layouts.get(pcb_layout) if self.arch else None
        self.procs: List[int] = []
        for name in ("allproc", "dumptid", "dumppcb", "stoppcbs", "pcb_size"):
            self.global_(name, PCB_SIZE * 4 if name in ("dumppcb", "stoppcbs") else 16)
        kvm.put_int(kvm.syms["dumptid"], -1, 4)
        kvm.put_int(kvm.syms["pcb_size"], PCB_SIZE, 4)
        if exports:
            for name, off in PROC_OFFS.items():
                self.offset_symbol("proc_off_" + name, off)
            for name, off in THREAD_OFFS.items():
                self.offset_symbol("thread_off_" + name, off)

    def global_(self, name: str, size: int) -> int:
        addr = self.data
        self.data += (size + 15) & ~15
        self.kvm.store(addr, bytes(size))
        self.kvm.define(name, addr)
        return addr

    def alloc(self, size: int) -> int:
        addr = self.heap
        self.heap += (size + 63) & ~63
        self.kvm.store(addr, bytes(size))
        return addr

    def offset_symbol(self, name: str, value: int) -> None:
        addr = self.kvm.syms.get(name) or self.global_(name, 4)
        self.kvm.put_int(addr, value, 4)

    def pcb(self, regs: Dict[str, int], addr: Optional[int] = None) -> int:
        addr = addr if addr is not None else self.alloc(PCB_SIZE)
        if self.layout is not None:
            self.kvm.store(addr, encode_regs(self.layout, regs, self.kvm.byteorder, PCB_SIZE))
        return addr

    def add_proc(self, pid: int, comm: str,
                 threads: Sequence[Tuple[int, str, int, Dict[str, int]]] = (),
                 head: str = "allproc") -> Tuple[int, List[int]]:
        """Add a process with threads ``(tid, name, oncpu, regs)``; returns
        (proc address, thread addresses)."""
        k = self.kvm
        p = self.alloc(PROC_SIZE)
        k.put_int(p + PROC_OFFS["p_pid"], pid, 4)
        k.store(p + PROC_OFFS["p_comm"], comm.encode()[:19] + b"\0")
        if head not in k.syms:
            self.global_(head, 16)
        k.put_ptr(p + PROC_OFFS["p_list"], k.read_ptr(k.syms[head]))
        k.put_ptr(k.syms[head], p)
        tds = []
        prev = p + PROC_OFFS["p_threads"]
        link = 0
        for tid, name, oncpu, regs in threads:
            td = self.alloc(THREAD_SIZE)
            k.put_int(td + THREAD_OFFS["td_tid"], tid, 4)
            k.store(td + THREAD_OFFS["td_name"], name.encode()[:19] + b"\0")
            k.put_int(td + THREAD_OFFS["td_oncpu"], oncpu, 4)
            k.put_ptr(td + THREAD_OFFS["td_pcb"], self.pcb(regs))
            k.put_ptr(prev + link, td)
            prev, link = td, THREAD_OFFS["td_plist"]
            tds.append(td)
        self.procs.append(p)
        return p, tds

    def crash(self, tid: int, regs: Dict[str, int]) -> None:
        """Mark ``tid`` as the dumping thread with ``regs`` in dumppcb."""
        self.kvm.put_int(self.kvm.syms["dumptid"], tid, 4)
        self.pcb(regs, self.kvm.syms["dumppcb"])

    def stop_cpu(self, cpu: int, regs: Dict[str, int]) -> None:
        """Fill ``stoppcbs[cpu]`` (array form)."""
        self.pcb(regs, self.kvm.syms["stoppcbs"] + cpu * PCB_SIZE)

    def stack(self, frames: Iterable[Tuple[int, int]], base: Optional[int] = None) -> int:
        """A frame-pointer chain (amd64/i386 style record: [fp] = caller fp,
        [fp + ptrsize] = return address) of ``(ret, spacing)`` frames; returns
        the innermost fp.  The outermost record's saved fp is 0."""
        frames = list(frames)
        w = self.kvm.ptrsize
        base = base if base is not None else self.alloc(0x4000)
        fps = []
        fp = base
        for _, spacing in frames:
            fps.append(fp)
            fp += spacing
        for i, (ret, _) in enumerate(frames):
            nxt = fps[i + 1] if i + 1 < len(fps) else 0
            self.kvm.put_ptr(fps[i], nxt)
            self.kvm.put_ptr(fps[i] + w, ret)
        return fps[0] if fps else 0

    def string(self, text: str) -> int:
        """A NUL-terminated string on the heap; returns its address."""
        raw = text.encode() + b"\0"
        addr = self.alloc(len(raw))
        self.kvm.store(addr, raw)
        return addr

    def panic(self, message: str) -> None:
        """``panicstr`` pointing at ``message``."""
        self.kvm.put_ptr(self.global_("panicstr", 16), self.string(message))

    def message_buffer(self, text: str, unread: int) -> None:
        """``msgbufp`` over a ring holding ``text`` (not wrapped); the last
        ``unread`` bytes are what syslogd has not read yet (threads.md §10)."""
        k, w = self.kvm, self.kvm.ptrsize
        raw = text.encode()
        ring = self.alloc(len(raw) + 16)
        k.store(ring, raw)
        hdr = self.alloc(w + 16)
        k.put_ptr(hdr, ring)
        for i, v in enumerate((MSG_MAGIC, len(raw) + 16, len(raw), len(raw) - unread)):
            k.put_int(hdr + w + 4 * i, v, 4)
        k.put_ptr(self.global_("msgbufp", 16), hdr)
