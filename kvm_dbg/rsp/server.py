"""Transports and the connection loop: TCP, Unix socket, stdio.

A listener serves one client at a time and keeps listening after ``D``/``k``
so the debugger can reconnect.  Stdio serves exactly one session (gdb's
``target remote | cmd``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Callable, List, Optional, Tuple

from .packets import (
    ACKED,
    BAD_CHECKSUM,
    NAKED,
    OVERSIZED,
    PACKET,
    PacketParser,
    frame,
)
from .session import PACKET_SIZE, Session

log = logging.getLogger("kvm_dbg.rsp")

Recv = Callable[[], bytes]
Send = Callable[[bytes], None]
SessionFactory = Callable[[], Session]


def run_session(session: Session, recv: Recv, send: Send) -> None:
    """Serve packets until the client disconnects or sends D/k/vKill."""
    parser = PacketParser(max_size=PACKET_SIZE * 2 + 256)
    noack = False
    last = b""
    while True:
        try:
            data = recv()
        except OSError:
            return
        if not data:
            return
        out: List[bytes] = []
        close = False
        for kind, body in parser.feed(data):
            if kind == PACKET or kind == OVERSIZED:
                if not noack:
                    out.append(b"+")
                if kind == OVERSIZED:
                    result_replies, result_close, after = [b"E16"], False, False
                else:
                    log.debug("<- %r", body[:200])
                    res = session.handle(body)
                    result_replies, result_close, after = res.replies, res.close, res.noack_after
                for r in result_replies:
                    last = frame(r)
                    out.append(last)
                if after:
                    noack = True
                    parser.verify = False
                if result_close:
                    close = True
                    break
            elif kind == BAD_CHECKSUM and not noack:
                out.append(b"-")
            elif kind == NAKED and not noack and last:
                out.append(last)
            elif kind == ACKED:
                pass
        if out:
            try:
                send(b"".join(out))
            except OSError:
                return
        if close:
            return


def _receiver(conn: socket.socket) -> Recv:
    return lambda: conn.recv(1 << 16)


def serve_socket(sock: socket.socket, factory: SessionFactory,
                 once: bool = False) -> None:
    """Accept clients one after another on a listening socket."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                run_session(factory(), _receiver(conn), conn.sendall)
            except OSError as e:  # a client that went away must not stop the listener
                log.info("session ended: %s", e)
        if once:
            return


def serve_stdio(factory: SessionFactory, quiet_stderr: bool = True) -> None:
    """One session over fds 0/1; stderr goes to /dev/null (gdb polls it per byte)."""
    if quiet_stderr:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def send(data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(1, view)
            view = view[n:]

    run_session(factory(), lambda: os.read(0, 1 << 16), send)


def parse_hostport(spec: str) -> Tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (loopback by default)."""
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = "", spec
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def listen_tcp(spec: str) -> socket.socket:
    host, port = parse_hostport(spec)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1)
    return sock


def listen_unix(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    return sock


def address_of(sock: socket.socket) -> str:
    """What a debugger passes to ``target remote`` for this listener."""
    if sock.family == socket.AF_UNIX:
        return str(sock.getsockname())
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def close_listener(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    sock.close()
    if path and os.path.exists(path):
        os.unlink(path)
