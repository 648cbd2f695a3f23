"""kvm_dbg for lldb: the kernel module of the open dump and its frames (part of
kvm_lldb.py): lldb's symbol lookup, the kernel's load addresses, the stand-in.

On amd64 and i386 lldb unwinds kernel frames by itself (kvm_dbg's
frame-pointer rules are LLDB's generic ones) except trap frames, whose
caller's registers sit in a ``struct trapframe``; on arm64, arm, powerpc and
MIPS it cannot unwind a kernel without CFI at all.  lldb takes unwind rules
for an address only from the module whose section holds it, so the kernel
module is swapped for the server's stand-in (kvm_dbg.unwindinfo): the same
sections, ELF identity and UUID, the kernel's symbol file (symbols, DWARF),
and the library's rules as .eh_frame, loaded where the kernel is (its
kvm_kerndisp slide).  :func:`restore` puts the kernel module back."""

from __future__ import annotations

from typing import Any, Callable, Optional

import lldb  # type: ignore[import-not-found]

from kvm_dbg import adapter
from kvm_dbg.adapter import AdapterError, quote


def kernel_symbols(target: Any) -> Callable[[str], Optional[int]]:
    """lldb's own symbol lookup (the server's resolver): load address if known,
    else file address (slide 0)."""
    def addr_of(addr: Any) -> Optional[int]:
        return next((v for v in (addr.GetLoadAddress(target), addr.GetFileAddress())
                     if v != lldb.LLDB_INVALID_ADDRESS), None)

    def lookup(name: str) -> Optional[int]:
        for ctx in target.FindSymbols(name):
            sym = ctx.GetSymbol()
            if sym.IsValid() and sym.GetName() == name:
                if sym.GetType() == lldb.eSymbolTypeAbsolute and hasattr(sym, "GetValue"):
                    return sym.GetValue()  # e.g. kernbase: no section, no address
                value = addr_of(sym.GetStartAddress())
                if value is not None:
                    return value
        for var in target.FindGlobalVariables(name, 1):
            value = addr_of(var.GetAddress())
            if value is not None:
                return value
        return None
    return lookup


def load_kernel(run: Callable[[str], str], target: Any, module: Any, slide: int = 0) -> None:
    """The kernel module's sections at their link addresses (the server's
    AT_ENTRY usually did it), or ``slide`` (kvm_kerndisp) away from them;
    ``run`` runs an lldb command on target."""
    if slide:
        run(f"target modules load --file {quote(module.GetFileSpec().fullpath)} "
            f"--slide {slide % (1 << 64):#x}")
        return
    for i in range(module.GetNumSections()):
        section = module.GetSectionAtIndex(i)
        if section.GetFileAddress() not in (0, lldb.LLDB_INVALID_ADDRESS):
            if section.GetLoadAddress(target) == lldb.LLDB_INVALID_ADDRESS:
                run(f"target modules load --file {quote(module.GetFileSpec().fullpath)}"
                    " --slide 0")
            return


def swap_kernel_module(run: Callable[[str], str], query: Callable[[str], str], target: Any,
                       kernel: str, slide: int = 0) -> Any:
    """Swap the kernel module (the target's first) for the server's stand-in,
    if the server has one for this dump, loaded where the kernel is (``slide``
    from its link addresses): ``(stand-in, kernel module)`` for
    :func:`restore`, or None.  AdapterError (kernel module back in place) if
    lldb would not attach the kernel's symbol file to it."""
    module = target.GetModuleAtIndex(0)
    uuid = module.GetUUIDString() if module.IsValid() else ""
    stand_in = adapter.parse_unwind_reply(query(f"unwind-elf lldb {uuid}")) if uuid else None
    if stand_in is None:
        return None
    symfile = module.GetSymbolFileSpec().fullpath or kernel
    target.RemoveModule(module)
    image = target.AddModule(stand_in.path, None, None, symfile)
    if not image.IsValid() or image.GetSymbolFileSpec().fullpath != symfile:
        if image.IsValid():
            target.RemoveModule(image)
        target.AddModule(module)
        load_kernel(run, target, module, slide)
        raise AdapterError(f"{stand_in.path}: lldb did not take {symfile} as its symbol file")
    load_kernel(run, target, image, slide)
    return image, module


def restore(target: Any, swapped: Any) -> None:
    """The kernel module again in place of the stand-in (for the next kvm-open)."""
    if swapped is not None and target.IsValid():
        target.RemoveModule(swapped[0])
        target.AddModule(swapped[1])
