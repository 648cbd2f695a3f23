"""Fuzzing the RSP layer: the packet parser on random byte streams and the
session dispatcher on random, malformed and huge packets over a real
(fixture) dump.  ``Session.handle`` must answer every packet within the
bound, never raise, and never hit an internal error (which it would answer
with ``E01`` and record in ``Target.errors``)."""

from __future__ import annotations

import random
from typing import List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_harness import CALL_BOUND_S, PHASES, Failure, fixture_target, time_limit

import kvm_dbg
from kvm_dbg.rsp.packets import PACKET, PacketParser, checksum, frame
from kvm_dbg.rsp.session import PACKET_SIZE, Session
from kvm_dbg.rsp.target import Target

CMDS = ["m", "x", "M", "X", "g", "p", "P", "G", "H", "Hg", "Hc", "T", "?", "c", "s", "vCont;c:",
        "vCont?", "z0,", "Z0,", "qSupported:", "qXfer:features:read:target.xml:",
        "qXfer:threads:read::", "qXfer:auxv:read::", "qXfer:x:y:z:", "qfThreadInfo",
        "qsThreadInfo", "qC", "qAttached", "qSymbol:", "qRcmd,", "qKvm:", "qThreadExtraInfo,",
        "qThreadStopInfo", "qMemoryRegionInfo:", "qHostInfo", "qProcessInfo", "jThreadsInfo",
        "QStartNoAckMode", "QThreadSuffixSupported", "vMustReplyEmpty", "D", "k", "vKill",
        "qOffsets", "_M", "!", ""]
MONITOR = ["threads", "ps", "dmesg", "kldstat", "panic", "info", "help", "bt", "nonsense",
           "thread 0", "thread ffffffff", "regs", ""]


def _num(rng: random.Random) -> str:
    v = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 63, (1 << 64) - 1, 1 << 64, 1 << 100,
                    rng.getrandbits(64), rng.getrandbits(16)])
    r = rng.random()
    if r < 0.1:
        return "-" + format(v, "x")
    if r < 0.2:
        return "zz"
    if r < 0.25:
        return ""
    return format(v, "x")


def random_packet(rng: random.Random, addrs: List[int]) -> bytes:
    """A packet body from the grammar above with hostile arguments."""
    c = rng.choice(CMDS)
    if c in ("m", "x") or c.startswith("qMemoryRegionInfo"):
        a = format(rng.choice(addrs), "x") if addrs and rng.random() < 0.5 else _num(rng)
        n = rng.choice(["7fffffff", "ffffffffffffffff", "0", "10", "1000", _num(rng)])
        body = f"{c}{a},{n}" if rng.random() < 0.9 else f"{c}{a}"
    elif c in ("M", "X"):
        body = f"{c}{_num(rng)},{_num(rng)}:" + "".join(rng.choice("0123456789abcdefg}#$*")
                                                        for _ in range(rng.randrange(20)))
    elif c in ("p", "P"):
        body = f"{c}{_num(rng)}" + (f";thread:{_num(rng)};" if rng.random() < 0.3 else "")
    elif c.startswith("qRcmd,") or c.startswith("qKvm:"):
        cmd = rng.choice(MONITOR).encode().hex()
        if rng.random() < 0.2:
            cmd = "zz" + cmd
        body = c + cmd + (f":{_num(rng)},{_num(rng)}" if c == "qKvm:" else "")
    elif c.startswith("qXfer"):
        body = c + f"{_num(rng)},{_num(rng)}"
    else:
        body = c + (_num(rng) if rng.random() < 0.5 else "")
    raw = body.encode()
    if rng.random() < 0.1:
        raw += bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 16)))
    if rng.random() < 0.02:
        raw = raw * rng.randrange(100, 3000)
    return raw


def check_session(session: Session, body: bytes) -> None:
    errors = session.target.errors
    before = len(errors)
    try:
        with time_limit(CALL_BOUND_S, "Session.handle"):
            res = session.handle(body)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise Failure(f"handle({body[:200]!r}) raised {type(e).__name__}: {e}") from None
    if len(errors) > before:
        raise Failure(f"handle({body[:200]!r}) hit an internal error: {errors[-1][-1500:]}")
    for reply in res.replies:
        if not isinstance(reply, bytes) or len(reply) > 2 * PACKET_SIZE + 64:
            raise Failure(f"handle({body[:200]!r}): bad reply {type(reply)} "
                          f"len {len(reply)}")


def check_parser(rng: random.Random) -> None:
    """Random streams (valid, bad checksum, truncated, noise) fed in random chunks."""
    p = PacketParser(max_size=512)
    fast = random.Random(rng.getrandbits(64))      # bulk bytes, cheaply
    stream = bytearray()
    for _ in range(rng.randrange(1, 12)):
        r = rng.random()
        n = rng.choice([0, 1, 5, 50, 700])
        body = fast.getrandbits(8 * n).to_bytes(n, "little") if n else b""
        if r < 0.4:
            stream += frame(body.replace(b"#", b"").replace(b"$", b""))
        elif r < 0.6:
            stream += b"$" + body + b"#" + b"%02x" % ((checksum(body) + 1) & 0xFF)
        elif r < 0.8:
            stream += body
        else:
            stream += rng.choice([b"+", b"-", b"\x03", b"$", b"#", b"#z", b"}"])
    pos = 0
    try:
        with time_limit(CALL_BOUND_S, "PacketParser.feed"):
            while pos < len(stream):
                n = rng.randrange(1, 300)
                for kind, body in p.feed(bytes(stream[pos:pos + n])):
                    if kind == PACKET and len(body) > 512:
                        raise Failure(f"parser delivered {len(body)} bytes > max_size")
                if len(p._buf) > 513:
                    raise Failure("parser buffered beyond max_size")
                pos += n
    except Failure:
        raise
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise Failure(f"parser raised {type(e).__name__}: {e} on {bytes(stream[:200])!r}") from None


class SessionTarget:
    """A fixture dump served through Target/Session."""

    def __init__(self, kernel: str, core: str, addrs: List[int]) -> None:
        self.kvm = kvm_dbg.open(kernel, core)
        self.addrs = addrs
        self.target = Target(self.kvm)

    def session(self) -> Session:
        return Session(self.target)


_ST: dict = {}


def _session_target(tmpdir: str) -> SessionTarget:
    if "t" not in _ST:
        t = fixture_target("amd64-minidump-v3", "amd64", "minidump", 3, {}, tmpdir)
        _ST["t"] = SessionTarget(t.kernel, t.core, t.addrs)
    return _ST["t"]


def session_step(tmpdir: str = ""):
    import tempfile
    st_ = _session_target(tmpdir or tempfile.mkdtemp(prefix="kvmfuzz-rsp-"))

    def step(rng: random.Random, _st) -> None:
        s = st_.session()
        for _ in range(rng.randrange(1, 12)):
            check_session(s, random_packet(rng, st_.addrs))
    return step


def parser_step():
    def step(rng: random.Random, _st) -> None:
        check_parser(rng)
    return step


# -- tests -------------------------------------------------------------------------

SETTINGS = dict(deadline=None, derandomize=True, print_blob=True, phases=PHASES,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return _session_target(str(tmp_path_factory.mktemp("rspfz")))


@settings(max_examples=200, **SETTINGS)
@given(rnd=st.randoms(use_true_random=False))
def test_session_random_packets(served, rnd):
    s = served.session()
    for _ in range(rnd.randrange(1, 8)):
        check_session(s, random_packet(rnd, served.addrs))


@settings(max_examples=200, **SETTINGS)
@given(body=st.binary(max_size=300))
def test_session_arbitrary_bytes(served, body):
    check_session(served.session(), body)


@settings(max_examples=200, **SETTINGS)
@given(rnd=st.randoms(use_true_random=False))
def test_parser_random_streams(rnd):
    check_parser(rnd)


def test_huge_m_read_is_capped_and_fast(served):
    """``m`` of 0x7fffffff bytes over unmapped and mapped memory: bounded reply."""
    import tracemalloc
    s = served.session()
    for addr in [0, 0xFFFF800000000000, (1 << 64) - 0x1000] + served.addrs[:4]:
        tracemalloc.start()
        with time_limit(CALL_BOUND_S, "m 0x7fffffff"):
            res = s.handle(f"m{addr:x},7fffffff".encode())
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(res.replies[0]) <= PACKET_SIZE, hex(addr)
        assert peak < 4 * PACKET_SIZE + (1 << 20), (hex(addr), peak)
