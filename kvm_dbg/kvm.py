"""The descriptor: open a kernel and its dump, resolve symbols, read memory.

``Kvm`` follows libkvm's ``_kvm_open`` step by step (api.md §4.2) so the
same inputs fail with the same messages, then offers a Pythonic surface:
``read`` raises, ``read_partial`` returns the readable prefix, and kernel
state (threads, processes, message buffer, modules, panic) is one call away.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Callable, Iterator, List, Optional

from .arch.base import KvmPage, probe
from .corefile import CoreFile, peek
from .dumpfile import TEXTDUMP_NO_MEMORY, Prepared, prepare
from .elfkernel import KernelImage
from .errors import KvmError, syserr

Resolver = Callable[[str], Optional[int]]

O_ACCMODE = 3
MAXPATHLEN = 1024
_PATH_MEM, _PATH_DEVNULL = "/dev/mem", "/dev/null"
_PAGE = 4096
_CACHE_MAX = 1 << 16
_CHUNK_SHIFT = 22                 # reads remember one file run per 4 MiB of VA ...
_CHUNK = 1 << _CHUNK_SHIFT
_CHUNK_REACH = _CHUNK + (1 << 20)  # ... measured this far: reads that start in it may end past it
_NO_RUN = (0, 1, 0)               # a run entry no offset can match (lo > hi)


class _ChunkRuns(dict):
    """VA >> _CHUNK_SHIFT -> (file offset - VA, lo, hi): the run of the file
    that starts at that chunk of VA, measured by ``measure(chunk VA)`` on
    first use.  An offset ``VA + delta`` inside [lo, hi) is valid whichever
    chunk's entry gave it, so an entry can only serve reads it holds."""

    __slots__ = ("measure",)

    def __init__(self, measure: Callable[[int], tuple]) -> None:
        super().__init__()
        self.measure = measure

    def __missing__(self, key: int) -> tuple:
        if len(self) >= _CACHE_MAX:
            self.clear()
        entry = self[key] = self.measure(key << _CHUNK_SHIFT)
        return entry


def getbootfile() -> str:
    """The running system's kernel path (libc getbootfile): FreeBSD only."""
    if sys.platform.startswith("freebsd"):
        try:
            import subprocess
            out = subprocess.run(["sysctl", "-n", "kern.bootfile"], capture_output=True,
                                 text=True, timeout=5, check=False).stdout.strip()
            if out:
                return out
        except (OSError, ValueError):
            pass
    return "/boot/kernel/kernel"


class Kvm:
    """An open kernel + crash dump.  Create it with :func:`kvm_dbg.open`."""

    def __init__(self) -> None:
        self.kernel: Optional[KernelImage] = None
        self.core: Optional[CoreFile] = None
        self.backend = None
        self.resolver: Optional[Resolver] = None
        self.kernel_path: Optional[str] = None
        self.core_path: Optional[str] = None
        self.arch = "none"
        self.format = "none"
        self.byteorder = sys.byteorder
        self.ptrsize = 8
        self.native = True
        self.writable = False
        self.live_null = False
        self.warnings: List[str] = []
        self.errbuf = ""                 # kvm_geterr's text
        self.program: Optional[str] = None
        self.source: Optional[Prepared] = None     # what the core path held (dumpfile)
        self.open_options: dict = {}
        self._cache: dict = {}
        self._runs = _ChunkRuns(self._chunk_run)
        self._back: Optional[Callable[[int, int], int]] = None   # PhysIndex.back of the direct map
        self._mm = None
        # Direct-map fast path: (first VA, end VA, VA - PA, pa -> offset,
        # (pa, size) -> (offset, run), file size, mmap).
        self._dmap: tuple = (0, 0, 0, None, None, 0, None)
        self._modtable = None             # kstate.klds.ModuleTable, built on demand
        self._virt: dict = {}             # "vnet" / "dpcpu" state (virtsyms), on demand
        self._busy = False                # building the module table or vnet state

    # -- opening ----------------------------------------------------------
    @classmethod
    def _open(cls, execfile: Optional[str], corefile: Optional[str], flags: int = os.O_RDONLY,
              resolver: Optional[Resolver] = None, require_resolver: bool = False,
              writable: Optional[bool] = None, options: Optional[dict] = None) -> Kvm:
        """libkvm's ``_kvm_open``: raises KvmError with libkvm's message.

        ``options`` (see :func:`open`): key, dumpkey, cache_dir, show_progress,
        sysroot."""
        kd = cls()
        kd.open_options = dict(options or {})
        try:
            kd._do_open(execfile, corefile, flags, resolver, require_resolver, writable)
        except BaseException:
            kd.close()
            raise
        return kd

    def _do_open(self, execfile, corefile, flags, resolver, require_resolver, writable) -> None:
        if execfile is None:
            execfile = getbootfile()
        execfile = os.fspath(execfile)
        if len(execfile.encode()) >= MAXPATHLEN:
            raise KvmError("exec file name too long")
        if flags & ~O_ACCMODE or flags & O_ACCMODE == O_ACCMODE:
            raise KvmError("bad flags arg")
        corefile = _PATH_MEM if corefile is None else os.fspath(corefile)
        self.core_path = corefile
        self.kernel_path = execfile
        try:
            st = os.stat(corefile)
        except OSError as e:
            raise syserr(corefile, e.errno or errno.ENOENT) from None
        if stat.S_ISCHR(st.st_mode):
            if corefile == _PATH_DEVNULL:
                self.live_null = True
                self.format = "/dev/null"
                return
            raise syserr(corefile, errno.ENOTSUP)   # /dev/mem and raw devices: FreeBSD only
        if stat.S_ISREG(st.st_mode) and st.st_size <= 0:
            raise KvmError(f"empty file: {os.strerror(errno.EINVAL)}", path=corefile)
        if writable is None:
            writable = flags & O_ACCMODE != os.O_RDONLY
        self.writable = bool(writable)
        opts = self.open_options
        src = prepare(corefile, key=opts.get("key"), dumpkey=opts.get("dumpkey"),
                      cache_dir=opts.get("cache_dir"), show_progress=opts.get("show_progress"))
        self.source = src
        if src.textdump:
            raise KvmError(TEXTDUMP_NO_MEMORY, errno=errno.ENOTSUP, path=corefile)
        if self.writable and (src.path != corefile or src.offset or src.length is not None):
            raise KvmError(f"cannot open it writable: writes need a plain dump file, and this "
                           f"one is {src.description}", path=corefile)
        self.core = CoreFile(src.path, writable=self.writable, offset=src.offset,
                             length=src.length)
        self._mm = self.core.mm
        self.kernel = KernelImage(execfile)
        ident = self.kernel.ident
        self.byteorder = ident.byteorder
        self.ptrsize = ident.elfclass // 8
        head = self.core.head(8)
        is_minidump = head == b"minidump"
        spec = probe(ident, is_minidump)
        if spec is None:
            if not is_minidump and head[:4] != b"\x7fELF":
                raise KvmError("unsupported architecture (core is neither a minidump nor an "
                               "ELF core)", path=corefile)
            raise KvmError("unsupported architecture", path=execfile)
        self.native = bool(spec.native(ident))
        if not self.native and resolver is None and require_resolver:
            raise KvmError("non-native kernel requires a symbol resolver")
        self.resolver = resolver
        self.arch = spec.arch
        self.backend = spec.open(self.core, ident, self._resolve)
        self.format = self.backend.format
        dm = getattr(self.backend, "direct_map", None)
        if dm is not None:
            start, end, pa_base, find, span = dm
            self._dmap = (start, end, start - pa_base, find, span, self.core.size, self.core.mm)
            self._back = self.backend.index.back

    # -- symbols ----------------------------------------------------------
    def _resolve(self, name: str) -> Optional[int]:
        """The descriptor's resolver: the caller's, else the kernel's ELF symbols."""
        if self.resolver is not None:
            # None means "no such symbol"; whatever the resolver raises is its
            # failure, not an answer, and reaches the caller unchanged.
            value = self.resolver(name)
            return None if value is None else int(value)
        if self.kernel is None:
            return None
        hit = self.kernel.nlist(name)
        return None if hit is None else hit[0]

    def _resolve_module(self, name: str) -> Optional[int]:
        """A name defined in a loaded module's file (kstate.klds.ModuleTable)."""
        if self._busy or self.backend is None:
            return None
        table = self._module_table()
        return None if table is None else table.lookup(name)

    def _module_table(self):
        if self._modtable is None:
            from .kstate.klds import ModuleTable, module_files
            from .kstate.memory import warn
            self._busy = True
            try:
                files = module_files(self)
            finally:
                self._busy = False
            for m in files:
                if m.file is None:
                    warn(self, f"klds: {m.name}: no symbol file found (looked for "
                               f"{m.name}.debug, .symbols and {m.name} in "
                               f"{', '.join(m.searched) or 'no directory'}); "
                               "give --sysroot")
                elif m.error:
                    warn(self, f"klds: {m.name}: {m.error}")
            self._modtable = ModuleTable(files)
        return self._modtable

    def modules(self):
        """Loaded kernel modules with their symbol files and section addresses
        (kstate.klds.ModuleFile), found as kgdb does under the open's sysroot;
        a module without a file is a warning."""
        if self.backend is None:
            return []
        return list(self._module_table().files)

    def _virt_state(self, kind: str):
        if kind not in self._virt:
            from . import virtsyms
            self._busy = True
            try:
                self._virt[kind] = (virtsyms.vnet_init(self) if kind == "vnet"
                                    else virtsyms.dpcpu_init(self))
            finally:
                self._busy = False
        return self._virt[kind]

    def _resolve_virtual(self, name: str) -> Optional[int]:
        """libkvm's retries: ``vnet_entry_<name>`` relocated for the selected
        vnet, then ``pcpu_entry_<name>`` for the selected CPU."""
        if self._busy or self.backend is None:
            return None
        from .virtsyms import VNET_SYMPREFIX, retry_names
        mask = (1 << (8 * self.ptrsize)) - 1
        for prefix, cand in retry_names(name):
            value = self._resolve(cand)
            if value is None:
                value = self._resolve_module(cand)
            if value is None:
                continue
            kind = "vnet" if prefix == VNET_SYMPREFIX else "dpcpu"
            state = self._virt_state(kind)
            if state is None:
                # libkvm answers the master copy's address then, with an error in
                # its buffer; here that is a warning the user sees.
                from .kstate.memory import warn
                what = ("no vnet could be read (proc0's prison, vnet0)" if kind == "vnet"
                        else "dpcpu_off/mp_maxcpus could not be read")
                warn(self, f"{name}: {cand} is not relocated ({what}): its address is "
                           "the master copy's, not a live instance's")
                return value
            return state.relocate(value, mask)
        return None

    def lookup(self, name: str) -> Optional[int]:
        """Address of a kernel symbol, or None if unknown: the kernel's (or the
        resolver's), then a loaded module's, then a VNET or DPCPU variable of
        that name in the selected vnet / CPU (libkvm's ``vnet_entry_`` and
        ``pcpu_entry_`` retries)."""
        value = self._resolve(name)
        if value is None and not self._debugger_resolver:
            value = self._resolve_module(name)
            if value is None:
                value = self._resolve_virtual(name)
        return value

    @property
    def _debugger_resolver(self) -> bool:
        """A debugger's symbol table (rsp.symbols.SymbolTable) is the resolver:
        it learns names through qSymbol, and every name asked and not found is
        asked of the debugger again, so the library's own retries (module
        files, vnet_entry_/pcpu_entry_) stay out of its way; the debugger
        loads module symbols itself (kvm-kld load)."""
        return self.resolver is not None and hasattr(self.resolver, "learn")

    # -- VNET / DPCPU selection (virtsyms) ------------------------------------
    @property
    def vnet(self) -> Optional[int]:
        """Address of the selected ``struct vnet`` (None: not a VIMAGE kernel)."""
        state = self._virt_state("vnet")
        return None if state is None else state.current

    def vnets(self) -> List[int]:
        """Every ``struct vnet`` on ``vnet_head``, newest first (LIST_INSERT_HEAD)."""
        from .virtsyms import vnet_list
        return vnet_list(self)

    def set_vnet(self, address: int) -> None:
        """Relocate VNET symbols for the vnet at ``address`` (checks its magic)."""
        from .virtsyms import Vnet, read_vnet
        state = self._virt_state("vnet")
        if state is None:
            raise KvmError("no VNET symbols in this kernel (__start_set_vnet, "
                           "__stop_set_vnet, vnet_head)", errno=errno.ENOENT,
                           path=self.kernel_path)
        base = read_vnet(self, address)
        self._virt["vnet"] = Vnet(state.start, state.stop, address, base)

    @property
    def cpu(self) -> Optional[int]:
        """The CPU whose DPCPU copies symbols resolve to (None: no DPCPU)."""
        state = self._virt_state("dpcpu")
        return None if state is None else state.cpu

    def set_cpu(self, cpu: int) -> None:
        """Relocate DPCPU symbols for ``cpu`` (libkvm's ``kvm_dpcpu_setcpu``)."""
        from .virtsyms import dpcpu_setcpu
        dpcpu_setcpu(self._virt_state("dpcpu"), cpu)

    def symbol(self, name: str) -> int:
        """Address of a kernel symbol (as :meth:`lookup`); KvmError if unknown."""
        value = self.lookup(name)
        if value is None:
            raise KvmError(f"symbol '{name}' not found", errno=errno.ENOENT,
                           path=self.kernel_path)
        return value

    # -- translation and reading -----------------------------------------
    def _page(self, va: int):
        """(file offset, length) of the 4 KiB page holding ``va``; cached.

        Errors name ``va`` itself, not the page start.  The cache maps a page
        to (its file offset, bytes contiguous in the file from its start,
        whether that length is all there is): one page, or a bulk read's run."""
        page_va = va & ~(_PAGE - 1)
        hit = self._cache.get(page_va)
        if hit is None:
            if self.backend is None:
                raise KvmError(f"invalid address (0x{va:x})", errno=errno.EFAULT, address=va)
            off, n = self.backend.kvatop(va)
            o = va - page_va
            hit = (off - o, n + o if n + o < _PAGE else _PAGE, n + o < _PAGE)
            cache = self._cache
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[page_va] = hit
        return hit[0], hit[1]

    def translate(self, va: int) -> int:
        """File offset of a kernel virtual address (raises KvmError)."""
        off, n = self._page(va)
        o = va & (_PAGE - 1)
        if o >= n:
            raise KvmError(f"invalid address (0x{va:x})", hard="beyond end of core file",
                           errno=errno.EFAULT, address=va)
        return off + o

    def read(self, addr: int, size: int) -> bytes:
        """Exactly ``size`` bytes of kernel memory at ``addr``; KvmError names the
        first unreadable address."""
        # A run of the file found once serves every later read inside it:
        # file offset = VA + delta wherever that lands in [lo, hi).  One run
        # is kept per 4 MiB chunk of VA (see _ChunkRuns and _dmap_run).
        delta, lo, hi = self._runs[addr >> _CHUNK_SHIFT]
        off = addr + delta
        if lo <= off and off + size <= hi and size >= 0:
            return self._mm[off:off + size]
        o = addr & (_PAGE - 1)
        if o + size <= _PAGE and size >= 0:
            # Direct map: the physical index alone gives the offset (about a
            # microsecond), so these reads skip the page cache's bookkeeping.
            lo, hi, delta, find, _span, fsize, mm = self._dmap
            if lo <= addr < hi:
                off = find(addr - delta)
                if off is not None and off + size <= fsize:
                    return mm[off:off + size]
            elif addr >= 0:
                page = addr - o
                hit = self._cache.get(page)
                if hit is None:
                    hit = self._page(addr)
                if o + size <= hit[1]:
                    off = hit[0] + o
                    return self._mm[off:off + size]
        elif size > 0:
            # Bulk, outside its chunk's run: the run of addr's page, cached
            # per page (chunks whose pages are scattered in the file).
            page = addr - o
            hit = self._cache.get(page)
            if hit is not None and o + size <= hit[1]:
                off = hit[0] + o
                return self._mm[off:off + size]
            lo, hi = self._dmap[:2]
            if lo <= addr and addr + size <= hi:
                off = self._dmap_run(addr, size)
                if off is not None:
                    return self._mm[off:off + size]
        data, err = self._read_loop(addr, size)
        if err is not None:
            raise err
        return data

    def _dmap_run(self, addr: int, size: int) -> Optional[int]:
        """A direct-map bulk read outside its chunk's run: the run of the file
        from addr's page (to the chunk's reach) is measured once and
        remembered for the page.  When it is longer than the chunk's run it
        is measured back to where it starts and becomes the chunk's run (a
        chunk keeps its largest run, where most reads land).  File offset of
        the read, or None when the run does not hold it."""
        lo, hi, delta, _find, span, _fsize, _mm = self._dmap
        o = addr & (_PAGE - 1)
        page = addr - o
        chunk = addr & -_CHUNK
        end = chunk + _CHUNK_REACH
        if end > hi:
            end = hi
        run = span(page - delta, end - page)
        if run is None:
            return None
        off, n = run
        cache = self._cache
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[page] = (off, n, page + n < end)
        runs, key = self._runs, addr >> _CHUNK_SHIFT
        _delta, elo, ehi = runs[key]
        if n > ehi - elo:
            floor = chunk if chunk > lo else lo
            back = self._back(page - delta, (page - floor) >> 12) * _PAGE
            runs[key] = (off - page, off - back, off + n)
        if o + size <= n:
            return off + o
        return None

    def _chunk_run(self, start: int) -> tuple:
        """(file offset - VA, lo, hi) of the file run that starts at the chunk
        of VA ``start`` (or where the direct map starts inside it), measured
        up to _CHUNK_REACH; _NO_RUN when its first page is not in the dump."""
        if start < 0 or self.backend is None:
            return _NO_RUN
        lo, hi, delta, _find, span, _fsize, _mm = self._dmap
        if start < lo < start + _CHUNK:
            start = lo
        end = start + _CHUNK_REACH
        if lo <= start < hi:
            run = span(start - delta, (end if end < hi else hi) - start)
        else:
            try:
                run = self.backend.kvatop_run(start, _CHUNK_REACH)
            except KvmError:
                return _NO_RUN
            if run is not None and start < lo < start + run[1]:
                run = (run[0], lo - start)   # the direct map translates its own VAs
        if run is None or run[1] <= 0:
            return _NO_RUN
        off, n = run
        return (off - start, off, off + n)

    def read_partial(self, addr: int, size: int) -> bytes:
        """The readable prefix of ``[addr, addr+size)`` (empty if ``addr`` is unreadable)."""
        delta, lo, hi = self._runs[addr >> _CHUNK_SHIFT]      # as in read()
        off = addr + delta
        if lo <= off and off + size <= hi and size >= 0:
            return self._mm[off:off + size]
        return self._read_loop(addr, size)[0]

    def _run(self, addr: int, size: int):
        """(file offset of ``addr``, bytes contiguous in the file from there,
        at most ``size`` needed): the page cache's run, else the backend's,
        remembered for the page.  Raises the backend's KvmError."""
        o = addr & (_PAGE - 1)
        page = addr - o
        cache = self._cache
        hit = cache.get(page)
        if hit is not None and (o + size <= hit[1] or hit[2]):
            return hit[0] + o, hit[1] - o            # enough, or all there is
        if o + size <= _PAGE:
            off, n = self._page(addr)
            return off + o, n - o
        if self.backend is None:
            raise KvmError(f"invalid address (0x{addr:x})", errno=errno.EFAULT, address=addr)
        want = ((o + size + _PAGE - 1) & -_PAGE) - o       # to the end of the last page
        off, n = self.backend.kvatop_run(addr, want)
        if n > 0:
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[page] = (off - o, n + o, n < want)
            # A run longer than its chunk's (a superpage, a long segment)
            # becomes the chunk's: later reads inside it need one lookup.
            runs, key = self._runs, addr >> _CHUNK_SHIFT
            _delta, elo, ehi = runs[key]
            if n > ehi - elo:
                runs[key] = (off - addr, off, off + n)
        return off, n

    def _read_loop(self, addr: int, size: int):
        """(bytes read, the error that stopped the read or None): one slice per
        run of pages that are contiguous in the file."""
        if size < 0:
            return b"", KvmError(f"invalid size {size}")
        if addr < 0 or addr + size > 1 << 64:
            return b"", KvmError(f"invalid address (0x{addr & ((1 << 64) - 1):x})",
                                 errno=errno.EFAULT, address=addr)
        chunks = []
        mm = self._mm
        while size > 0:
            try:
                off, n = self._run(addr, size)
            except KvmError as e:
                return b"".join(chunks), e
            if n <= 0:
                return b"".join(chunks), KvmError(
                    f"invalid address (0x{addr:x})", hard="beyond end of core file",
                    errno=errno.EFAULT, address=addr)
            take = n if n < size else size
            chunks.append(mm[off:off + take])
            addr += take
            size -= take
            if addr & (_PAGE - 1) and size > 0:      # short page (truncated core)
                return b"".join(chunks), KvmError(
                    f"invalid address (0x{addr:x})", hard="beyond end of core file",
                    errno=errno.EFAULT, address=addr)
        if len(chunks) == 1:
            return chunks[0], None
        return b"".join(chunks), None

    def read_int(self, addr: int, size: int, signed: bool = False) -> int:
        """An integer of ``size`` bytes in the kernel's byte order."""
        return int.from_bytes(self.read(addr, size), self.byteorder, signed=signed)

    def read_ptr(self, addr: int) -> int:
        """A kernel pointer."""
        return int.from_bytes(self.read(addr, self.ptrsize), self.byteorder)

    def read_u32(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 4), self.byteorder)

    def read_s32(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 4), self.byteorder, signed=True)

    def read_cstring(self, addr: int, maxlen: int = 4096) -> bytes:
        """A NUL-terminated string (without the NUL), at most ``maxlen`` bytes."""
        data = self.read_partial(addr, maxlen)
        if not data:
            self.read(addr, 1)      # raises the proper error
        end = data.find(b"\0")
        return data if end < 0 else data[:end]

    def write(self, addr: int, data: bytes) -> None:
        """Write into pages present in a dump opened writable."""
        if not self.writable or self.core is None:
            raise KvmError("kvm_write not implemented for dead kernels")
        data = bytes(data)
        # Check the whole range first so a failed write changes nothing.
        spans = []
        pos = 0
        while pos < len(data):
            va = addr + pos
            o = va & (_PAGE - 1)
            off, n = self._page(va)
            if o >= n:
                raise KvmError(f"invalid address (0x{va:x})", errno=errno.EFAULT, address=va)
            take = min(len(data) - pos, n - o)
            spans.append((off + o, pos, take))
            pos += take
        for off, start, take in spans:
            self.core.write(off, data[start:start + take])

    # -- pages --------------------------------------------------------------
    def walk_pages(self) -> Iterator[KvmPage]:
        """The dump's pages as libkvm's ``kvm_walk_pages`` reports them (may be empty)."""
        if self.backend is None:
            return iter(())
        it = self.backend.walk_pages()
        return iter(()) if it is None else it

    @property
    def has_page_walk(self) -> bool:
        return self.backend is not None and self.backend.walk_pages() is not None

    @property
    def kerndisp(self) -> int:
        """Displacement of the running kernel from its link address (kvm_kerndisp)."""
        return 0 if self.backend is None else self.backend.kerndisp

    @property
    def kernel_entry(self) -> int:
        return 0 if self.kernel is None else self.kernel.ident.entry

    @property
    def msgbuf_section(self) -> Optional[bytes]:
        """The minidump's raw message-buffer section, or None."""
        sec = getattr(self.backend, "msgbuf_section", None)
        if not sec or self.core is None:
            return None
        off, size = sec
        return self.core.mm[off:off + size] if size > 0 else None

    # -- kernel state (kvm_dbg.kstate) --------------------------------------
    def threads(self):
        """Kernel threads in display order (crashed first), with registers."""
        from . import kstate
        return kstate.threads(self)

    def procs(self):
        """Processes (ps material)."""
        from . import kstate
        return kstate.procs(self)

    def msgbuf(self):
        """The kernel message buffer (``.text``, ``.unread``)."""
        from . import kstate
        return kstate.msgbuf(self)

    def klds(self):
        """Loaded kernel modules."""
        from . import kstate
        return kstate.klds(self)

    def panic_info(self):
        """Panic string, version, osreldate, hostname, kernel/dump match."""
        from . import kstate
        return kstate.panic_info(self)

    # -- lifetime -----------------------------------------------------------
    def close(self) -> None:
        """Release the files; the descriptor cannot be used afterwards."""
        self._cache = {}
        self._runs.clear()
        self._dmap = (0, 0, 0, None, None, 0, None)
        self._mm = None
        for obj in (self.core, self.kernel):
            if obj is not None:
                obj.close()
        self.backend = None
        self.core = None
        self.kernel = None

    @property
    def closed(self) -> bool:
        return self.core is None and not self.live_null

    def __enter__(self) -> Kvm:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Kvm {self.arch} {self.format} kernel={self.kernel_path!r} "
                f"core={self.core_path!r}>")


def open(kernel: str, core: str, *, resolver: Optional[Resolver] = None,  # noqa: A001
         writable: bool = False, key: Optional[str] = None, dumpkey: Optional[str] = None,
         cache_dir: Optional[str] = None, sysroot: Optional[str] = None,
         show_progress: Optional[bool] = None) -> Kvm:
    """Open a kernel and its crash dump; raises :class:`KvmError`.

    The kernel's own ELF symbol table resolves symbols unless ``resolver``
    (``name -> address or None``) is given; any architecture opens on any host.
    ``core`` may be a plain vmcore, a ``.zst``/``.gz`` one, an encrypted one
    (``key``: the RSA private key; ``dumpkey``: its key.N if not beside it), or
    a dump device image; decoded copies go next to it or to ``cache_dir``
    (docs/crash-directory.md).  ``sysroot`` is where the crashed machine's
    files are (``/boot/modules``, ``/usr/lib/debug``...), for module files.
    A progress bar is drawn on a terminal (``show_progress`` forces it).
    """
    if kernel is None or core is None:
        raise KvmError("both a kernel and a core file must be given")
    flags = os.O_RDWR if writable else os.O_RDONLY
    options = {"key": key, "dumpkey": dumpkey, "cache_dir": cache_dir, "sysroot": sysroot,
               "show_progress": show_progress}
    kd = Kvm._open(kernel, core, flags, resolver, require_resolver=False, writable=writable,
                   options=options)
    if resolver is None:
        # Locate module files now: a missing one is a warning from the start.  With
        # a caller's resolver (a debugger answering symbols as it learns them),
        # the walk waits for the first lookup the resolver cannot answer.
        kd.modules()
    return kd


def is_minidump(path: str) -> bool:
    return peek(path, 8) == b"minidump"

