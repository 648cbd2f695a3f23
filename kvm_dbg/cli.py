"""``kvm-dbg``: the command line over the library.

Every reporting command prints text by default and JSON with ``--json``.
Exit codes: 0 success, 1 a file or dump problem, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from . import __version__
from . import kvm as _kvm
from .errors import KvmError

EXAMPLES = """examples:
  kvm-dbg info kernel vmcore.0
  kvm-dbg nlist kernel vmcore.0 hz allproc
  kvm-dbg read kernel vmcore.0 0xffffffff81cd4c0c 16
"""


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _open(args) -> _kvm.Kvm:
    return _kvm.open(args.kernel, args.core)


def cmd_info(args) -> dict:
    with _open(args) as kd:
        info = {"kernel": kd.kernel_path, "core": kd.core_path, "arch": kd.arch,
                "format": kd.format, "byteorder": kd.byteorder, "native": kd.native,
                "kerndisp": kd.kerndisp}
        hz = kd.lookup("hz")
        try:
            info["hz"] = kd.read_int(hz, 4, signed=True) if hz is not None else None
        except KvmError:
            info["hz"] = None
        ver = kd.lookup("version")
        try:
            info["version"] = (kd.read_cstring(ver, 512).decode("utf-8", "replace").strip()
                               if ver is not None else None)
        except KvmError:
            info["version"] = None
    return info


def cmd_nlist(args) -> dict:
    with _open(args) as kd:
        return {name: kd.lookup(name) for name in args.symbols}


def cmd_read(args) -> dict:
    if args.length < 0 or args.length > 1 << 30:
        raise SystemExit(_usage_error(f"bad length {args.length}"))
    with _open(args) as kd:
        data = kd.read(args.address, args.length)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data)
        return {"address": args.address, "length": len(data), "output": args.output}
    return {"address": args.address, "length": len(data), "hex": data.hex()}


def _usage_error(msg: str) -> int:
    sys.stderr.write(f"kvm-dbg: {msg}\n")
    return 2


def _hexdump(addr: int, data: bytes) -> str:
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        asc = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{addr + i:016x}  {hx:<47}  |{asc}|")
    return "\n".join(lines)


def _print_text(cmd: str, result: dict) -> None:
    if cmd == "read":
        if "hex" in result:
            print(_hexdump(result["address"], bytes.fromhex(result["hex"])))
        else:
            print(f"wrote {result['length']} bytes to {result['output']}")
        return
    if cmd == "nlist":
        for name, value in result.items():
            print(f"{name:<32} {'not found' if value is None else hex(value)}")
        return
    for key, value in result.items():
        print(f"{key + ':':<12} {value}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvm-dbg", description="Read FreeBSD kernel crash dumps.",
                                epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"kvm-dbg {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, help_, func):
        s = sub.add_parser(name, help=help_, description=help_)
        s.add_argument("--json", action="store_true", help="print JSON")
        s.add_argument("kernel", help="kernel ELF file")
        s.add_argument("core", help="crash dump (vmcore)")
        s.set_defaults(func=func)
        return s

    add("info", "identify a kernel and dump: architecture, format, hz, version", cmd_info)
    s = add("nlist", "look up kernel symbols", cmd_nlist)
    s.add_argument("symbols", nargs="+", metavar="SYMBOL")
    s = add("read", "read kernel memory (hexdump, or raw with -o)", cmd_read)
    s.add_argument("address", type=_int)
    s.add_argument("length", type=_int)
    s.add_argument("-o", "--output", help="write the raw bytes to this file")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KvmError as e:
        sys.stderr.write(f"kvm-dbg: {e}\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"kvm-dbg: {e}\n")
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_text(args.cmd, result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
