"""drgn programs over FreeBSD dumps: typed kernel objects on any host.

drgn knows Linux only, but runs on any memory it is given: ``program()`` builds a
``drgn.Program`` whose memory is kvm_dbg's reader (unreadable addresses raise
``drgn.FaultError``), with the kernel and its modules as drgn modules (symbols and
DWARF from their files), and ``stack_trace()`` turns kvm_dbg's own unwinder's
program counters into a drgn ``StackTrace`` (function names, inline frames, source
lines).  drgn is optional: ``pip install 'kvm-dbg[drgn]'`` (drgn 0.3.0 or newer);
everything else in kvm_dbg works without it, and asking for it says how to install it.

Platforms (``PLATFORMS``): amd64, i386, arm64, arm, riscv and powerpc64 map to drgn
architectures.  drgn has none for 32-bit PowerPC and MIPS: their programs use
``Architecture.UNKNOWN`` (typed objects and helpers work; stack traces do not).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from .errors import KvmError

if TYPE_CHECKING:  # pragma: no cover
    from .kstate.threads import KThread
    from .kvm import Kvm

MIN_VERSION = (0, 3, 0)
INSTALL_HINT = "pip install 'kvm-dbg[drgn]' (drgn 0.3.0 or newer)"
#: kvm_dbg architecture -> drgn Architecture name (None: drgn has no platform for it).
PLATFORMS: Dict[str, Optional[str]] = {
    "amd64": "X86_64", "i386": "I386", "arm64": "AARCH64", "arm": "ARM",
    "riscv": "RISCV64", "powerpc64": "PPC64", "powerpc": None, "mips": None,
}
#: Key of the kvm_dbg state kept in ``prog.cache``.
CACHE_KEY = "kvm_dbg"


class DrgnUnavailable(KvmError):
    """drgn is missing or too old in this interpreter."""


def _version(text: str) -> Tuple[int, ...]:
    out = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def require() -> Any:
    """The ``drgn`` module; DrgnUnavailable (saying how to install it) if it is
    missing or older than MIN_VERSION."""
    try:
        import drgn
    except ImportError:
        raise DrgnUnavailable(f"drgn is not installed for {sys.executable}: "
                              f"{INSTALL_HINT}") from None
    version = getattr(drgn, "__version__", "0")
    if _version(version) < MIN_VERSION or not hasattr(drgn.Program, "extra_module"):
        raise DrgnUnavailable(f"drgn {version} ({drgn.__file__}) is too old: "
                              f"{INSTALL_HINT}")
    return drgn


def available() -> bool:
    """True if a usable drgn can be imported."""
    try:
        require()
    except DrgnUnavailable:
        return False
    return True


def platform(kd: Kvm) -> Any:
    """The drgn Platform of an open dump (UNKNOWN architecture where drgn has none)."""
    drgn = require()
    if kd.arch not in PLATFORMS:
        raise KvmError(f"drgn: unknown architecture {kd.arch}")
    name = PLATFORMS[kd.arch] or "UNKNOWN"
    flags = drgn.PlatformFlags(0)
    if kd.ptrsize == 8:
        flags |= drgn.PlatformFlags.IS_64_BIT
    if kd.byteorder == "little":
        flags |= drgn.PlatformFlags.IS_LITTLE_ENDIAN
    return drgn.Platform(getattr(drgn.Architecture, name), flags)


class _State:
    """What a program built here keeps: the descriptor and its thread list."""

    def __init__(self, kd: Kvm, owns: bool) -> None:
        self.kd, self.owns = kd, owns
        self.threads: Optional[List[KThread]] = None
        self.kernel_debug_info = False
        self.modules: Dict[str, str] = {}       # module name -> file (or the reason none)


def program(kernel: str, core: str, **open_options: Any) -> Any:
    """A ``drgn.Program`` for a kernel and its dump (``kvm_dbg.open`` options)."""
    require()
    from . import kvm as _kvm
    kd = _kvm.open(kernel, core, **open_options)
    try:
        return program_for(kd, owns=True)
    except BaseException:
        kd.close()
        raise


def program_for(kd: Kvm, owns: bool = False) -> Any:
    """A ``drgn.Program`` over an open ``Kvm`` (kept open by the program if ``owns``)."""
    drgn = require()
    prog = drgn.Program(platform(kd))
    state = _State(kd, owns)
    prog.cache[CACHE_KEY] = state

    def read(address: int, count: int, _offset: int, physical: bool) -> bytes:
        if physical:
            raise drgn.FaultError("physical reads are not supported", address)
        try:
            return kd.read(address, count)
        except KvmError as e:
            raise drgn.FaultError(e.message, getattr(e, "address", None) or address) \
                from None

    prog.add_memory_segment(0, (1 << 8 * kd.ptrsize) - 1, read)
    _add_kernel(prog, kd, state)
    _add_klds(prog, kd, state)
    return prog


def _span(kd: Kvm) -> Optional[Tuple[int, int]]:
    """[start, end) of the kernel's allocated sections.  Link addresses, as the
    descriptor reads them (its backend applies ``kerndisp`` itself)."""
    image = kd.kernel
    if image is None:
        return None
    secs = [s for s in image.sections if s.flags & 2 and s.size and s.addr]
    if not secs:
        return None
    return min(s.addr for s in secs), max(s.addr + s.size for s in secs)


def _add_kernel(prog: Any, kd: Kvm, state: _State) -> None:
    drgn = require()
    span = _span(kd)
    if span is None or not kd.kernel_path:
        raise KvmError("drgn: the kernel has no allocated sections", path=kd.kernel_path)
    mod = prog.extra_module("kernel", create=True)
    mod.address_range = span
    mod.try_file(kd.kernel_path, force=True)
    state.kernel_debug_info = mod.debug_file_status == drgn.ModuleFileStatus.HAVE
    state.modules["kernel"] = kd.kernel_path


def _add_klds(prog: Any, kd: Kvm, state: _State) -> None:
    """Each loaded module's file at kgdb's section addresses (threads.md §8)."""
    from .kstate.klds import kld_sections, klds
    from .kstate.memory import warn
    for k in klds(kd):
        try:
            path, sections = kld_sections(kd, k)
        except KvmError as e:
            state.modules[k.name] = f"(no file: {e.message})"
            continue
        mod = prog.relocatable_module(k.name, k.address, create=True)
        for name, addr in sections.items():
            mod.section_addresses[name] = addr
        try:
            mod.try_file(path, force=True)
        except (OSError, ValueError) as e:        # drgn ignores files it cannot use
            warn(kd, f"drgn: {path}: {e}")
            continue
        state.modules[k.name] = path


def _state(prog: Any) -> _State:
    state = prog.cache.get(CACHE_KEY)
    if not isinstance(state, _State):
        raise KvmError("drgn: this program was not made by kvm_dbg.drgn.program()")
    return state


def kvm(prog: Any) -> Kvm:
    """The ``kvm_dbg.Kvm`` a program reads from."""
    return _state(prog).kd


def has_debug_info(prog: Any) -> bool:
    """True when the kernel file has DWARF (typed objects work)."""
    return _state(prog).kernel_debug_info


def modules(prog: Any) -> Dict[str, str]:
    """``{module: its file, or why there is none}`` for the kernel and its klds."""
    return dict(_state(prog).modules)


def close(prog: Any) -> None:
    """Close the descriptor of a program made by ``program()``."""
    state = _state(prog)
    if state.owns:
        state.kd.close()


def threads(prog: Any) -> List[KThread]:
    """kvm_dbg's thread list (crashed thread first), read once per program."""
    state = _state(prog)
    if state.threads is None:
        state.threads = state.kd.threads()
    return state.threads


def crashed_thread(prog: Any) -> KThread:
    """The thread that panicked (``dumptid``); LookupError if the dump has none."""
    for t in threads(prog):
        if t.crashed:
            return t
    raise LookupError("no crashed thread in this dump")


def find_thread(prog: Any, thread: Union[int, Any]) -> KThread:
    """A KThread from a tid, a ``struct thread`` address, a drgn Object (``struct
    thread *`` or ``struct thread``) or a KThread; LookupError if unknown."""
    from .kstate.threads import KThread
    if isinstance(thread, KThread):
        return thread
    drgn = require()
    if isinstance(thread, drgn.Object):
        addr = thread.value_() if thread.type_.unaliased_kind() == drgn.TypeKind.POINTER \
            else thread.address_
        return _by(prog, lambda t: t.td_addr == addr, f"struct thread at {addr:#x}")
    value = int(thread)
    return _by(prog, lambda t: t.tid == value or t.td_addr == value, f"thread {value}")


def _by(prog: Any, pred: Any, what: str) -> KThread:
    for t in threads(prog):
        if pred(t):
            return t
    raise LookupError(f"{what} is not in this dump's thread list")


def thread_object(prog: Any, thread: Union[int, Any]) -> Any:
    """``(struct thread *)`` of a thread (needs the kernel's DWARF)."""
    drgn = require()
    t = find_thread(prog, thread)
    return drgn.Object(prog, "struct thread *", value=t.td_addr)


def stack_trace(prog: Any, thread: Union[int, Any]) -> Any:
    """drgn ``StackTrace`` of a thread from kvm_dbg's unwinder (which follows trap
    frames): each frame's pc, function, inline frames and source line.  Registers
    and locals are not attached (the frames' registers are in
    ``find_thread(prog, thread).frames()``)."""
    t = find_thread(prog, thread)
    pcs = t.backtrace()
    if not pcs:
        raise LookupError(f"thread {t.tid}: no registers, no stack trace")
    # The program is in link addresses (see the module docstring); a kernel that
    # runs displaced (powerpc64: kvm_kerndisp) has run-time pcs.
    kd = kvm(prog)
    mask = (1 << 8 * kd.ptrsize) - 1
    pcs = [(pc - kd.kerndisp) & mask for pc in pcs]
    try:
        return prog.stack_trace_from_pcs(pcs)
    except NotImplementedError as e:
        raise KvmError(f"drgn: {e} ({kvm(prog).arch})") from None
