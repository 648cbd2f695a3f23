"""Kernel symbols the library resolves, and resolvers built from a symbol file.

A debugger adapter looks these names up with the debugger's own symbol
machinery (so relocations the debugger knows about apply) and hands them to
the server in a JSON file (``--symbols FILE``: ``{"name": address, ...}``).
``RESOLVER_SYMBOLS`` is that list: the one place to extend it.
"""

from __future__ import annotations

import json
from typing import Callable, Dict, Iterable, List, Optional

Resolver = Callable[[str], Optional[int]]

RESOLVER_SYMBOLS: List[str] = [
    # translation / dump formats
    "kernbase", "KERNBASE", "KPML4phys", "IdlePTD", "IdlePDPT", "pae_mode", "IdlePTD_nopae",
    "IdlePDPT_nopae", "tramp_idleptd", "kernel_l1pa", "physaddr", "vm_maxuser_address",
    "dmapbase", "dmapend", "kernstart",
    # processes and threads
    "allproc", "zombproc", "pidhashtbl", "pidhash", "proc0", "thread0",
    "dumptid", "dumppcb", "stoppcbs", "pcb_size", "stopped_cpus", "mp_maxid", "mp_maxcpus",
    "mp_ncpus", "cpuid_to_pcpu", "__pcpu", "dpcpu_off",
    "proc_off_p_pid", "proc_off_p_comm", "proc_off_p_list", "proc_off_p_threads",
    "proc_off_p_hash", "thread_off_td_tid", "thread_off_td_name", "thread_off_td_oncpu",
    "thread_off_td_pcb", "thread_off_td_plist",
    # kernel modules
    "kld_off_address", "kld_off_filename", "kld_off_pathname", "kld_off_next",
    "linker_files", "linker_kernel_file", "linker_path",
    # messages and identity
    "msgbufp", "panicstr", "version", "osreldate", "hostname", "hz",
    "osrelease", "ostype", "machine", "ticks", "time_uptime",     # crashinfo's header
    # trap entry points (frame unwinding)
    "calltrap", "fast_syscall_common", "fork_trampoline", "mchk_calltrap", "nmi_calltrap",
    "Xlcall_syscall", "Xint0x80_syscall", "Xtimerint", "Xcpustop", "Xrendezvous",
    "Xipi_intr_bitmap_handler", "Xlazypmap", "dblfault_handler",
    "handle_el1h_sync", "handle_el1h_irq", "handle_el0_sync", "handle_el0_irq",
    "handle_el0_error", "cpu_exception_handler_user", "cpu_exception_handler_supervisor",
    "data_abort_entry", "prefetch_abort_entry", "undefined_entry", "exception_exit",
    "irq_entry", "swi_entry", "swi_exit", "doadump", "savectx",
]


def resolver_symbols() -> List[str]:
    """The names a debugger should resolve before the server opens the dump."""
    return list(RESOLVER_SYMBOLS)


class SymbolTable:
    """A mutable name -> address map usable as a resolver.

    It starts from the adapter's symbol file and learns more through qSymbol.
    ``fallback`` (e.g. the ELF's own table) answers names it has never heard of.
    Names asked for and not found are remembered, so the next qSymbol round
    (gdb starts one for every objfile it loads) asks the debugger for them.
    """

    def __init__(self, table: Optional[Dict[str, Optional[int]]] = None,
                 fallback: Optional[Resolver] = None) -> None:
        self.table: Dict[str, Optional[int]] = dict(table or {})
        self.fallback = fallback
        self.misses: Dict[str, None] = {}

    def __call__(self, name: str) -> Optional[int]:
        value = self.table.get(name)
        if value is None and name not in self.table and self.fallback is not None:
            value = self.fallback(name)
        if value is None:
            self.misses[name] = None
        return value

    def learn(self, name: str, address: Optional[int]) -> None:
        self.table[name] = address
        if address is not None:
            self.misses.pop(name, None)

    def missing(self, names: Iterable[str]) -> List[str]:
        """Names to ask the debugger: ``names`` never looked up, then past misses."""
        ask = [n for n in names if n not in self.table]
        return ask + [n for n in self.misses if n not in ask]


def load_symbol_file(path: str) -> Dict[str, Optional[int]]:
    """Read a ``{"name": address}`` JSON file (ints or "0x..." strings).

    ``null`` means "the debugger looked and the symbol does not exist".
    """
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of name -> address")
    table: Dict[str, Optional[int]] = {}
    for name, value in raw.items():
        if value is None:
            table[str(name)] = None
        else:
            table[str(name)] = int(value, 0) if isinstance(value, str) else int(value)
    return table


def write_symbol_file(path: str, table: Dict[str, Optional[int]]) -> None:
    """Write the file :func:`load_symbol_file` reads."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=0, sort_keys=True)
