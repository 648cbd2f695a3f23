"""savecore(8)'s crash directory: ``info.N``, which file holds dump N, and
which kernel goes with it.

* ``info.N`` is savecore's ``printheader`` output (freebsd-src
  ``sbin/savecore/savecore.c``): ``  Label: value`` lines, the ``Version
  String`` value running over several lines (the kernel's ``version`` ends
  with a newline and may have been cut at 192 bytes).
* Dump N is the first of ``vmcore.N``, ``vmcore.N.zst``, ``vmcore.N.gz``,
  ``vmcore_encrypted.N[.zst|.gz]``, ``livecore.N[.zst|.gz]``,
  ``textdump.tar.N[.gz]`` that exists (savecore's names).
* Its kernel is found as kgdb does first (``kernel.N`` or ``kernel.N/kernel``
  in the crash directory), then as crashinfo(8) does
  (``usr.sbin/crashinfo/crashinfo.sh`` ``find_kernel``): the first candidate
  whose ``version`` string, cut to the length of info.N's, equals info.N's
  ``Version String``.  Candidates: the build directory named on the version
  string's second line (kgdb), then ``/boot/*/`` (newest first, as ``ls -t``)
  and ``/usr/lib/debug/boot/*/`` under a sysroot, each trying
  ``kernel.debug``, ``kernel.full``, ``kernel.symbols``, ``kernel``.  A
  debug-only file (``objcopy --only-keep-debug``: no ``version`` data) cannot
  be compared; the chosen kernel's own debug file in ``/usr/lib/debug/boot``
  is reported beside it (``KernelChoice.debug``) for the debuggers.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .errors import KvmError

CORE_NAMES = ("vmcore.{n}", "vmcore.{n}.zst", "vmcore.{n}.gz", "vmcore_encrypted.{n}",
              "vmcore_encrypted.{n}.zst", "vmcore_encrypted.{n}.gz", "livecore.{n}",
              "livecore.{n}.zst", "livecore.{n}.gz", "textdump.tar.{n}", "textdump.tar.{n}.gz")
KERNEL_NAMES = ("kernel.debug", "kernel.full", "kernel.symbols", "kernel")
_LABEL = re.compile(r"^  ([A-Za-z][A-Za-z ]*): ?(.*)$")


@dataclass
class InfoFile:
    """The fields of an ``info.N`` (label -> text) and the useful ones decoded."""

    path: str
    fields: Dict[str, str] = field(default_factory=dict)
    device: Optional[str] = None

    def get(self, label: str) -> Optional[str]:
        return self.fields.get(label)

    @property
    def version(self) -> Optional[str]:
        v = self.fields.get("Version String")
        return v if v and v.strip() else None

    @property
    def panic(self) -> Optional[str]:
        v = self.fields.get("Panic String")
        return v if v else None

    @property
    def dumptime(self) -> Optional[str]:
        return self.fields.get("Dumptime")

    @property
    def compression(self) -> Optional[str]:
        return self.fields.get("Compression")

    @property
    def architecture(self) -> Optional[str]:
        return self.fields.get("Architecture")

    @property
    def hostname(self) -> Optional[str]:
        return self.fields.get("Hostname")

    @property
    def status(self) -> Optional[str]:
        return self.fields.get("Dump Status")

    @property
    def dump_length(self) -> Optional[int]:
        v = self.fields.get("Dump Length", "")
        return int(v) if v.strip().isdigit() else None

    def as_dict(self) -> Dict[str, Optional[object]]:
        return {"path": self.path, "device": self.device, "architecture": self.architecture,
                "hostname": self.hostname, "dumptime": self.dumptime,
                "compression": self.compression, "dump_length": self.dump_length,
                "version": self.version, "panic": self.panic, "status": self.status}


def parse_info(path: str) -> InfoFile:
    """Read savecore's info.N; KvmError if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="backslashreplace") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError as e:
        raise KvmError(f"cannot read: {e.strerror}", path=path) from None
    info = InfoFile(path)
    current: Optional[str] = None
    for line in lines:
        if line.startswith("Dump header from device"):
            info.device = line.split(":", 1)[1].strip() if ":" in line else None
            current = None
            continue
        m = _LABEL.match(line)
        if m:
            current = m.group(1)
            info.fields[current] = m.group(2)
        elif current == "Version String":        # continuation of the version
            info.fields[current] += "\n" + line
    v = info.fields.get("Version String")
    if v is not None:
        info.fields["Version String"] = v.rstrip("\n")
    return info


@dataclass
class Dump:
    """Dump N of a crash directory."""

    number: int
    crashdir: str
    core: str
    info: Optional[InfoFile]


def find_dump(crashdir: str, n: int) -> Dump:
    """The file savecore wrote for dump N (KvmError naming what was looked for)."""
    for pat in CORE_NAMES:
        cand = os.path.join(crashdir, pat.format(n=n))
        if os.path.exists(cand):
            break
    else:
        raise KvmError(f"{os.path.join(crashdir, f'vmcore.{n}')}: no such dump (nor .zst, .gz, "
                       "vmcore_encrypted, livecore or textdump.tar)")
    ipath = os.path.join(crashdir, f"info.{n}")
    info = parse_info(ipath) if os.path.isfile(ipath) else None
    return Dump(n, crashdir, cand, info)


# -- the kernel -------------------------------------------------------------------

@dataclass
class KernelChoice:
    """The kernel picked for a dump: ``path`` (None if none matched), why, and
    every candidate looked at with the verdict."""

    path: Optional[str]
    reason: str
    tried: List[Tuple[str, str]] = field(default_factory=list)
    debug: Optional[str] = None        # its separate debug file, when one exists

    def explain(self) -> str:
        if self.path is not None:
            extra = f" (debug file {self.debug})" if self.debug else ""
            return f"kernel {self.path}{extra}: {self.reason}"
        lines = [self.reason] + [f"  {p}: {why}" for p, why in self.tried]
        return "\n".join(lines)


def kernel_version(path: str) -> Optional[str]:
    """The ``version`` string a kernel file holds (None: no such data)."""
    from .kstate.ksyms import file_bytes
    raw = file_bytes(path, "version", 1024)
    if raw is None:
        return None
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def version_matches(kernel_version_text: str, info_version: str) -> bool:
    """crashinfo's test: the kernel's version cut to the length of info.N's
    (trailing newlines dropped, as ``$(...)`` does) equals it."""
    want = info_version.rstrip("\n")
    return bool(want) and kernel_version_text[:len(want)] == want


def _under(sysroot: str, path: str) -> str:
    return os.path.join(sysroot, path.lstrip("/")) if sysroot not in ("", "/") else path


def _build_dir(info_version: str) -> Optional[str]:
    """kgdb: the kernel's build directory, after the ':' of the version's 2nd line."""
    lines = info_version.split("\n")
    if len(lines) > 1 and lines[1].startswith("    ") and ":" in lines[1]:
        return lines[1].split(":", 1)[1].strip() or None
    return None


def _candidates(sysroot: str, info_version: str) -> List[Tuple[str, bool]]:
    """(candidate kernel file, whether it is in info.N's build directory), in
    search order."""
    out: List[Tuple[str, bool]] = []
    build = _build_dir(info_version)
    if build:
        for base in dict.fromkeys([_under(sysroot, build), build]):
            out += [(os.path.join(base, k), True) for k in KERNEL_NAMES]
    boot = _under(sysroot, "/boot")
    dirs = [d for d in glob.glob(os.path.join(glob.escape(boot), "*")) if os.path.isdir(d)]
    dirs.sort(key=lambda d: -_mtime(os.path.join(d, "kernel")))
    for d in dirs:
        out += [(os.path.join(d, k), False) for k in KERNEL_NAMES]
    dbg = _under(sysroot, "/usr/lib/debug/boot")
    for d in sorted(glob.glob(os.path.join(glob.escape(dbg), "*"))):
        out += [(os.path.join(d, k), False) for k in KERNEL_NAMES]
    return out


def debug_file(kernel: str, sysroot: str = "/") -> Optional[str]:
    """``/usr/lib/debug/boot/X/kernel.debug`` (under sysroot) for ``.../boot/X/kernel``."""
    d, base = os.path.split(os.path.abspath(kernel))
    if base != "kernel" or os.path.basename(os.path.dirname(d)) != "boot":
        return None
    cand = os.path.join(_under(sysroot, "/usr/lib/debug/boot"), os.path.basename(d),
                        "kernel.debug")
    return cand if os.path.isfile(cand) else None


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def find_kernel(crashdir: str, n: Optional[int], sysroot: str = "/",
                info: Optional[InfoFile] = None) -> KernelChoice:
    """The kernel for dump N (see module doc); never raises for missing files."""
    tried: List[Tuple[str, str]] = []
    iv = info.version if info is not None else None
    if n is not None:
        for cand in (os.path.join(crashdir, f"kernel.{n}"),
                     os.path.join(crashdir, f"kernel.{n}", "kernel")):
            if not os.path.isfile(cand):
                continue
            kv = kernel_version(cand) if iv else None
            if not iv:
                return KernelChoice(cand, f"kernel.{n} beside the dump (kgdb's rule; no "
                                    f"info.{n} version string to check it against)", tried)
            if kv is None or version_matches(kv, iv):
                return KernelChoice(cand, f"kernel.{n} beside the dump (kgdb's rule)"
                                    + (", its version matches info." + str(n) if kv else
                                       "; its version could not be read to check it"), tried)
            tried.append((cand, f"version differs from info.{n}'s"))
    if not iv:
        where = f"info.{n}" if n is not None else "an info.N file"
        return KernelChoice(None, f"no kernel found: no kernel.{n} beside the dump and no "
                            f"version string in {where} to match kernels against "
                            "(give KERNEL explicitly)", tried)
    seen = set()
    unverified: Optional[str] = None
    for cand, in_build in _candidates(sysroot, iv):
        if cand in seen or not os.path.isfile(cand):
            continue
        seen.add(cand)
        kv = kernel_version(cand)
        if kv is None:
            tried.append((cand, "no version string in the file (debug-only?) to compare"))
            if unverified is None and in_build:
                unverified = cand
            continue
        if version_matches(kv, iv):
            return KernelChoice(cand, "its version string matches the dump's (info."
                                f"{n if n is not None else 'N'}, as crashinfo compares)",
                                tried, debug_file(cand, sysroot))
        tried.append((cand, "version differs: " + kv.split("\n", 1)[0]))
    if unverified is not None:
        return KernelChoice(unverified, "in the build directory info.N names (kgdb's rule); "
                            "NOT verified: the file has no version string to compare", tried,
                            debug_file(unverified, sysroot))
    first = iv.split("\n", 1)[0]
    return KernelChoice(None, f"no kernel matches the dump's version \"{first}\" (searched "
                        f"kernel.N, the build directory, {_under(sysroot, '/boot')}/* and "
                        f"{_under(sysroot, '/usr/lib/debug/boot')}/*; give KERNEL or "
                        "--sysroot)", tried)
