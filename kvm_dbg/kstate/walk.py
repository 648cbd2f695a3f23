"""Enumerate processes and their threads: allproc, zombproc and the pid hash.

Lists are followed defensively: a NULL ends a list, an unreadable pointer
truncates it, a repeated element (loop) or an absurd length stops it - each
with a warning.  Processes are de-duplicated by address across the walks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

from .memory import Record, decode_text, lookup, read_int, read_ptr, warn
from .offsets import proc_offsets, thread_offsets

MAX_PROCS = 1 << 20
MAX_THREADS_PER_PROC = 1 << 16
MAX_PIDHASH_BUCKETS = 1 << 24
#: MAXCOMLEN + 1
COMM_SIZE = 20
#: td_oncpu became an int in FreeBSD 11.0; a u_char (NOCPU 0xff) before.
ONCPU_INT_SINCE = 1100000


@dataclass
class RawThread:
    addr: int
    tid: int
    name: str
    oncpu: Optional[int]
    td_pcb: Optional[int]


@dataclass
class RawProc:
    addr: int
    pid: Optional[int]
    comm: str
    threads: List[RawThread] = field(default_factory=list)


class Guard:
    """Loop and length guard for one linked list."""

    def __init__(self, kvm: Any, what: str, limit: int) -> None:
        self.kvm, self.what, self.limit = kvm, what, limit
        self.seen: Set[int] = set()

    def admit(self, addr: int) -> bool:
        if addr in self.seen:
            warn(self.kvm, f"{self.what}: loop at 0x{addr:x}; list truncated")
            return False
        if len(self.seen) >= self.limit:
            warn(self.kvm, f"{self.what}: more than {self.limit} entries; list truncated")
            return False
        self.seen.add(addr)
        return True


def follow(kvm: Any, first: Optional[int], next_off: int, what: str, limit: int) -> List[int]:
    """Addresses of a NULL-terminated list whose next pointer is at +next_off."""
    out: List[int] = []
    guard = Guard(kvm, what, limit)
    cur = first
    while cur and guard.admit(cur):
        out.append(cur)
        nxt = read_ptr(kvm, cur + next_off)
        if nxt is None:
            warn(kvm, f"{what}: cannot read the link at 0x{cur + next_off:x}; list truncated")
            break
        cur = nxt
    return out


def _list_head(kvm: Any, symbol: str) -> Optional[int]:
    addr = lookup(kvm, symbol)
    if addr is None:
        return None
    head = read_ptr(kvm, addr)
    if head is None:
        warn(kvm, f"cannot read {symbol}")
    return head


def proc_addresses(kvm: Any, offs: Dict[str, Optional[int]]) -> List[int]:
    """Process addresses: allproc, then zombproc, then the pid hash (13+),
    in walk order without duplicates."""
    found: List[int] = []
    known: Set[int] = set()

    def add(addrs: List[int]) -> None:
        for a in addrs:
            if a not in known:
                known.add(a)
                found.append(a)

    if offs["p_list"] is not None:
        for sym in ("allproc", "zombproc"):
            if lookup(kvm, sym) is not None:
                add(follow(kvm, _list_head(kvm, sym), offs["p_list"], sym, MAX_PROCS))
    tbl_sym, mask_sym = lookup(kvm, "pidhashtbl"), lookup(kvm, "pidhash")
    if offs["p_hash"] is not None and tbl_sym is not None and mask_sym is not None:
        tbl = read_ptr(kvm, tbl_sym)
        mask = read_int(kvm, mask_sym, kvm.ptrsize)
        if tbl is None or mask is None or mask >= MAX_PIDHASH_BUCKETS:
            warn(kvm, "pid hash unreadable or implausible; not walked")
        else:
            for i in range(mask + 1):        # pidhash is a mask: buckets 0..mask
                head = read_ptr(kvm, tbl + i * kvm.ptrsize)
                if head:
                    add(follow(kvm, head, offs["p_hash"], f"pidhash[{i}]", MAX_PROCS))
    return found


def proc_threads(kvm: Any, proc: int, toffs: Dict[str, Optional[int]], p_threads: int,
                 oncpu_size: int = 4) -> List[RawThread]:
    """The threads of one process (``p_threads`` / ``td_plist``).  Threads
    whose tid cannot be read are skipped, as LLDB does."""
    out: List[RawThread] = []
    first = read_ptr(kvm, proc + p_threads)
    if first is None:
        warn(kvm, f"proc 0x{proc:x}: cannot read its thread list")
        return out
    spans = [(toffs["td_tid"], 4), (toffs["td_plist"], kvm.ptrsize),
             (toffs["td_name"], COMM_SIZE), (toffs["td_oncpu"], oncpu_size),
             (toffs["td_pcb"], kvm.ptrsize)]
    guard = Guard(kvm, f"threads of proc 0x{proc:x}", MAX_THREADS_PER_PROC)
    td = first
    while td and guard.admit(td):
        rec = Record(kvm, td, spans)
        tid = rec.int(toffs["td_tid"], 4, signed=True)
        if tid is None:
            warn(kvm, f"thread 0x{td:x}: unreadable; skipped")
        else:
            out.append(RawThread(td, tid, _text(rec, toffs["td_name"]),
                                 _oncpu(rec, toffs["td_oncpu"], oncpu_size),
                                 rec.ptr(toffs["td_pcb"])))
        nxt = rec.ptr(toffs["td_plist"])
        if nxt is None:
            if tid is not None:
                warn(kvm, f"thread 0x{td:x}: cannot read td_plist; thread list truncated")
            break
        td = nxt
    return out


def _text(rec: Record, off: Optional[int]) -> str:
    raw = rec.bytes(off, COMM_SIZE)
    return decode_text(raw.split(b"\0", 1)[0]) if raw else ""


def _oncpu(rec: Record, off: Optional[int], size: int) -> Optional[int]:
    value = rec.int(off, size, signed=True)
    if value is None:
        return None
    return -1 if value < 0 else value          # NOCPU: -1 (int) or 0xff (u_char)


def osreldate(kvm: Any) -> Optional[int]:
    """``__FreeBSD_version`` of the dumped kernel, if the dump has it."""
    value = read_int(kvm, lookup(kvm, "osreldate"), 4, signed=True)
    return value if value and value > 0 else None


def walk(kvm: Any) -> Optional[List[RawProc]]:
    """Every process with its threads, or None if the offset symbols needed
    for a walk are missing (a warning says which)."""
    poffs, toffs = proc_offsets(kvm), thread_offsets(kvm)
    need = [("proc_off_" + k, poffs[k]) for k in ("p_pid", "p_threads")]
    need += [("thread_off_" + k, toffs[k]) for k in ("td_tid", "td_plist")]
    missing = [name for name, v in need if v is None]
    if poffs["p_list"] is None and poffs["p_hash"] is None:
        missing.append("proc_off_p_list")
    if missing:
        warn(kvm, "cannot enumerate threads: missing " + ", ".join(missing))
        return None
    rel = osreldate(kvm)
    oncpu_size = 1 if rel is not None and rel < ONCPU_INT_SINCE else 4
    procs: List[RawProc] = []
    for addr in proc_addresses(kvm, poffs):
        rec = Record(kvm, addr, [(poffs["p_pid"], 4), (poffs["p_comm"], COMM_SIZE)])
        pid = rec.int(poffs["p_pid"], 4, signed=True)
        if pid is None and read_ptr(kvm, addr + poffs["p_threads"]) is None:
            warn(kvm, f"proc 0x{addr:x}: unreadable; skipped")   # e.g. a link into a hole
            continue
        proc = RawProc(addr, pid, _text(rec, poffs["p_comm"]))
        proc.threads = proc_threads(kvm, addr, toffs, poffs["p_threads"], oncpu_size)
        procs.append(proc)
    return procs
