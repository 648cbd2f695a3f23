"""Time ``kvm-open`` to the next lldb prompt, and ``thread list``, in a real lldb.

Drives lldb (``$LLDB``, else lldb-16 / lldb) through pexpect as a user would.
Default dump: the largest of the real test dumps (vmcore-amd64-full), built
once into a cache directory from ``../shared/testdata/freebsd-lldb``.

    python benchmarks/bench_lldb.py [--kernel K --core C] [--repeat N] [--cache DIR]
"""

from __future__ import annotations

import argparse
import bz2
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pexpect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kvm_dbg.debuggers import debugger_env  # noqa: E402

PLUGIN = ROOT / "plugins" / "lldb" / "kvm_lldb.py"
DATA = ROOT.parent / "shared" / "testdata" / "freebsd-lldb"
PROMPT = r"\(lldb\) "


def prepare(cache: Path, dump: str = "vmcore-amd64-full", kernel: str = "kernel-amd64"):
    """Build the kernel with yaml2obj and decompress the dump, once."""
    cache.mkdir(parents=True, exist_ok=True)
    k, c = cache / kernel, cache / dump
    if not k.exists():
        tool = shutil.which("yaml2obj") or shutil.which("yaml2obj-16") or "yaml2obj"
        subprocess.run([tool, "--max-size=31457280", str(DATA / f"{kernel}.yaml"), "-o",
                        str(k)], check=True)
    if not c.exists():
        with bz2.open(DATA / f"{dump}.bz2") as src, open(c.with_suffix(".tmp"), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        c.with_suffix(".tmp").replace(c)
    return str(k), str(c)


def timed(p: pexpect.spawn, line: str) -> tuple:
    t0 = time.perf_counter()
    p.sendline(line)
    p.expect(PROMPT, timeout=300)
    return time.perf_counter() - t0, p.before


def run_once(exe: str, kernel: str, core: str, lists: int) -> dict:
    env = debugger_env(dict(os.environ, TERM="dumb"))
    p = pexpect.spawn(exe, ["--no-lldbinit", "--no-use-colors"], env=env, encoding="utf-8",
                      timeout=300, echo=False, dimensions=(200, 400))
    p.delaybeforesend = None  # pexpect's default 50 ms pause would be timed too
    p.expect(PROMPT)
    timed(p, "settings set auto-confirm true")
    imp, _ = timed(p, f"command script import {PLUGIN}")
    opened, out = timed(p, f"kvm-open {kernel} {core}")
    if "error: kvm-open" in out:       # (lldb may also report frame 0's code unreadable)
        raise SystemExit(out)
    first, out = timed(p, "thread list")
    nthreads = len(re.findall(r"^[* ] thread #\d+", out.replace("\r", ""), re.M))
    again = [timed(p, "thread list")[0] for _ in range(lists)]
    close, _ = timed(p, "kvm-close")
    p.sendline("quit")
    p.expect(pexpect.EOF, timeout=60)
    return {"import": imp, "kvm-open": opened, "thread list (first)": first,
            "thread list (again)": statistics.median(again), "kvm-close": close,
            "threads": nthreads}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel")
    ap.add_argument("--core")
    ap.add_argument("--repeat", type=int, default=3, help="lldb sessions (best is reported)")
    ap.add_argument("--lists", type=int, default=5, help="extra 'thread list' per session")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "kvm_dbg-bench"))
    a = ap.parse_args(argv)
    exe = os.environ.get("LLDB") or shutil.which("lldb-16") or shutil.which("lldb")
    if not exe:
        print("lldb not found", file=sys.stderr)
        return 1
    kernel, core = (a.kernel, a.core) if a.kernel and a.core else prepare(Path(a.cache))
    runs = [run_once(exe, kernel, core, a.lists) for _ in range(a.repeat)]
    print(f"lldb: {exe}\ndump: {core} ({os.path.getsize(core) / 2**20:.0f} MiB), "
          f"{runs[0]['threads']} threads, {a.repeat} sessions")
    for key in ("import", "kvm-open", "thread list (first)", "thread list (again)", "kvm-close"):
        values = [r[key] for r in runs]
        print(f"  {key:<22} best {min(values) * 1000:7.0f} ms   "
              f"median {statistics.median(values) * 1000:7.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
