"""Message buffer: ordering, wrap, zeroed buffers, fallback (threads.md §10)."""

from __future__ import annotations

import pytest
from fakedump import FakeDump

from kvm_dbg.kstate import msgbuf
from kvm_dbg.kstate.msgbuf import MSG_MAGIC

MBP, HDR, RING = 0x1000, 0x2000, 0x3000


def make(ring: bytes, wseq: int, rseq: int, arch: str = "amd64", magic: int = MSG_MAGIC,
         size=None) -> FakeDump:
    kvm = FakeDump(arch)
    w = kvm.ptrsize
    kvm.define("msgbufp", MBP)
    kvm.put_ptr(MBP, HDR)
    kvm.put_ptr(HDR, RING)
    for i, v in enumerate([magic, len(ring) if size is None else size, wseq, rseq]):
        kvm.put_int(HDR + w + 4 * i, v, 4)
    kvm.store(RING, ring)
    return kvm


@pytest.mark.parametrize("arch", ["amd64", "i386", "powerpc"])
def test_not_yet_wrapped(arch):
    ring = b"hello\nworld\n" + b"\0" * 20
    mb = msgbuf(make(ring, wseq=12, rseq=6, arch=arch))
    assert mb.text == "hello\nworld\n" and mb.unread == "world\n" and mb.source == "msgbufp"
    assert mb.unread_banner() == \
        "\nUnread portion of the kernel message buffer:\nworld\n\n"


def test_wrapped():
    ring = b"DEF\nxyzABC"          # oldest data starts at wseq % size = 7
    size = len(ring)
    mb = msgbuf(make(ring, wseq=size * 5 + 7, rseq=size * 5 + 4))
    assert mb.text == "ABCDEF\nxyz"
    assert mb.unread == "xyz"                           # r=4 < w=7
    mb = msgbuf(make(ring, wseq=7, rseq=8))             # r > w: wraps
    assert mb.unread == "BCDEF\nxyz"


def test_zeroed_buffer():
    mb = msgbuf(make(b"\0" * 64, wseq=0, rseq=0))
    assert mb.text == "" and mb.unread == "" and mb.unread_banner() == ""


def test_bad_magic_falls_back_to_section():
    kvm = make(b"abc\n", 4, 0, magic=0)
    kvm.msgbuf_section = b"from section\n\0\0"
    mb = msgbuf(kvm)
    assert mb.source == "section" and mb.text == "from section\n" and mb.unread == ""
    assert any("magic" in w for w in kvm.warnings)


def test_absurd_size_and_missing_symbol():
    kvm = make(b"abc\n", 4, 0, size=0x7FFFFFFF)
    assert msgbuf(kvm).source == "none" and kvm.warnings
    assert msgbuf(FakeDump()).text == ""


def test_unreadable_ring_tail_is_tolerated():
    kvm = make(b"x" * 8000, wseq=100, rseq=100)
    kvm.unmap(RING + 4096, 4096)
    mb = msgbuf(kvm)
    assert mb.text == "x" * 4096 and kvm.warnings


def test_dmesg_priorities():
    ring = b"<6>kernel line\n<14>user line\nplain\n"
    mb = msgbuf(make(ring, wseq=len(ring), rseq=len(ring)))
    assert mb.dmesg() == ["kernel line", "plain"]
    assert mb.dmesg(all_facilities=True) == ["kernel line", "user line", "plain"]
