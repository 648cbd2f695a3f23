"""Start the server as a child process for a debugger adapter, and stop it again.

Debugger-neutral: the gdb and lldb adapters both call :func:`spawn`, then
connect the debugger to ``ServerProcess.address`` (a Unix socket path).  The
child exits when asked, when its stdin closes (the debugger died), or on
SIGTERM; it never outlives the adapter.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Dict, List, Optional

from .interpreter import InterpreterError, choose, server_pythonpath
from .messages import ERROR_PREFIX, READY_PREFIX
from .symbols import write_symbol_file


class LaunchError(Exception):
    """The server could not start; the message is one line for the user."""


def write_tdesc(arch: str) -> str:
    """Write the server's target.xml for ``arch`` to a temp file.

    gdb keeps the last remote's description after a disconnect and then
    refuses a kernel of another architecture; ``set tdesc filename`` with
    this file before ``file`` avoids that.  The caller deletes the file.
    """
    from .regs import regset_for, target_xml
    fd, path = tempfile.mkstemp(prefix="kvm_dbg-", suffix=".xml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(target_xml(regset_for(arch)))
    return path


class ServerProcess:
    """A running ``python -m kvm_dbg.rsp`` child listening on a Unix socket."""

    def __init__(self, proc: subprocess.Popen, address: str, workdir: str,
                 kernel: str, core: str, writable: bool) -> None:
        self.proc = proc
        self.address = address
        self.workdir = workdir
        self.kernel = kernel
        self.core = core
        self.writable = writable
        self._err_seen = 0

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def new_errors(self) -> List[str]:
        """Error lines the server printed since the last call (internal errors
        while answering the debugger): what the adapter must show the user."""
        path = os.path.join(self.workdir, "server.err")
        try:
            with open(path, "rb") as f:
                f.seek(self._err_seen)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._err_seen += end
        lines = data[:end].decode("utf-8", "replace").splitlines()
        return [ln[len(ERROR_PREFIX):] for ln in lines if ln.startswith(ERROR_PREFIX)]

    def close(self, timeout: float = 3.0) -> None:
        """Stop the child (stdin EOF, then SIGTERM, then SIGKILL) and clean up."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        for stream in (self.proc.stdout,):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def _error_text(workdir: str) -> str:
    try:
        with open(os.path.join(workdir, "server.err"), encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        lines = []
    for ln in lines:
        if ln.startswith(ERROR_PREFIX):
            return ln[len(ERROR_PREFIX):]
    return lines[-1] if lines else "the server exited without a message"


def spawn(kernel: str, core: str, symbols: Optional[Dict[str, Optional[int]]] = None,
          writable: bool = False, python: Optional[str] = None,
          timeout: float = 120.0, extra_args: Optional[List[str]] = None,
          elf_symbols: bool = False) -> ServerProcess:
    """Start a server for KERNEL+CORE; raises LaunchError with the server's message.

    With ``symbols`` (the debugger's lookups) the debugger is the only
    resolver: names not in it are asked with qSymbol, not read from the ELF
    (``elf_symbols=True`` restores the ELF fallback).
    """
    pythonpath = server_pythonpath()
    try:
        python = python or choose(pythonpath)
    except InterpreterError as e:
        raise LaunchError(str(e)) from None
    workdir = tempfile.mkdtemp(prefix="kvm_dbg-")
    sock = os.path.join(workdir, "rsp.sock")
    args = [python, "-m", "kvm_dbg.rsp", kernel, core, "--unix", sock, "--watch-stdin"]
    if symbols is not None:
        symfile = os.path.join(workdir, "symbols.json")
        write_symbol_file(symfile, symbols)
        args += ["--symbols", symfile]
        if not elf_symbols:
            args.append("--no-elf-symbols")
    if writable:
        args.append("--writable")
    args += extra_args or []
    env = dict(os.environ, PYTHONPATH=pythonpath)
    err = open(os.path.join(workdir, "server.err"), "wb")
    try:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                env=env, start_new_session=True, close_fds=True)
    except OSError as e:
        err.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise LaunchError(f"cannot start {args[0]}: {e.strerror}") from None
    finally:
        err.close()
    server = ServerProcess(proc, sock, workdir, kernel, core, writable)
    line = _ready_line(proc, timeout)
    if line is None or not line.startswith(READY_PREFIX):
        try:
            proc.wait(5)  # stdout closed: the child is exiting, let it finish
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() is not None:
            message = _error_text(workdir)
        else:
            message = line or f"the server did not start within {timeout:.0f} s"
        server.close()
        raise LaunchError(message)
    server.address = line[len(READY_PREFIX):].strip()
    return server


def _ready_line(proc: subprocess.Popen, timeout: float) -> Optional[str]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not ready:
            if proc.poll() is not None:
                return None
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace")
