"""Packet sources: what the drain engine takes packets from.

Today every source is a ring buffer (``ust._ring.Buffer``, one per CPU of a
channel), created here (``create_buffers``) or mapped from descriptors a
previous consumer created (``attach_buffers``). The engine asks a source for
these only (``PacketSource``), so another producer of whole CTF packets (the
kernel's ftrace pages converted to packets, issue 12) is a new class with
the same methods; the C fast path (``drain_to``, ``drain_wait``) is taken
for ring buffers only.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

from ust._ring._ring import Buffer
from ust.ctf.writer import lost_events

__all__ = ["PacketSource", "cpu_count", "create_buffers", "attach_buffers", "BoundedCounters", "MAX_LOSS_RATE", "is_ring_buffer",
           "incomplete", "unwritten_bytes", "lost_events"]


class PacketSource(Protocol):
    """What the drain engine needs from a producer of packets (a ring Buffer has it all).

    ``get_subbuf`` returns the next whole packet (a buffer-protocol object
    with ``release()``, its length the packet's size) or None; the engine
    then calls ``put_subbuf`` (consumed) or ``unget_subbuf`` (kept: its
    write failed). ``force`` (all writers gone) also takes a packet a dead
    writer left short. ``flush`` closes the packet being filled (``final``:
    an empty one carrying the last lost-event count). ``counters`` gives
    at least the ``lost_*`` counts; ``write_offset`` and ``consumed`` (bytes)
    say what is still unread.
    """

    overwrite: bool

    def get_subbuf(self, force: bool = False): ...
    def put_subbuf(self) -> None: ...
    def unget_subbuf(self) -> None: ...
    def flush(self, final: bool = False) -> None: ...
    def counters(self) -> dict: ...


def is_ring_buffer(source) -> bool:
    """Can the C drain (drain_to, drain_wait) read this source?"""
    return isinstance(source, Buffer)


def cpu_count() -> int:
    return os.sysconf("SC_NPROCESSORS_CONF") or 1


def create_buffers(subbuf_size: int, num_subbuf: int, *, overwrite: bool, stream_id: int, uuid: bytes) -> list:
    """One new shared-memory ring buffer per CPU (configured, not online: a CPU
    brought online later has its buffer)."""
    return [Buffer.create(subbuf_size, num_subbuf, overwrite=overwrite, stream_id=stream_id, cpu=cpu, uuid=uuid)
            for cpu in range(cpu_count())]


def attach_buffers(fds: list[int]) -> list:
    """Map buffers another consumer created (a restarted consumer carries on
    where its predecessor stopped: the read position is in the buffer)."""
    return [Buffer.attach(fd) for fd in fds]


def incomplete(source) -> bool:
    """Does a discard-mode source still hold a closed packet it could not hand over?"""
    if source.overwrite:
        return False
    c = source.counters()
    return c.get("write_offset", 0) - c.get("consumed", 0) >= getattr(source, "subbuf_size", 1 << 62)


def unwritten_bytes(source) -> int:
    """Bytes of packets the source still holds (a reader that could not write them)."""
    c = source.counters()
    return max(0, c.get("write_offset", 0) - c.get("consumed", 0))


MAX_LOSS_RATE = 50_000_000  # events (or packets) per second one buffer could really lose
_COUNTED = ("lost_full", "lost_big", "packets_overwritten")


class BoundedCounters:
    """The loss counters of one buffer, as far as they can be believed.

    They live in the buffer's shared header, which every process writing the
    buffer can scribble on, another user's included (a per-UID buffer of a
    root session is shared with that user's processes). So a figure is only
    taken as a counter can really move: never down, never above 2^63, and up
    by at most MAX_LOSS_RATE per second since the last reading (a discarded
    event costs its writer far more than 20 ns). A hostile writer can still
    inflate its own buffer's figure at that rate, no further.
    """

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.values = dict.fromkeys(_COUNTED, 0)

    def read(self, raw: dict) -> dict:
        now = time.monotonic()
        allowance = int((now - self.at) * MAX_LOSS_RATE) + 1
        self.at = now
        out = {k: v if 0 <= v < 1 << 63 else 0 for k, v in raw.items()}
        for name in _COUNTED:
            value, last = out.get(name, 0), self.values[name]
            if value > last:
                self.values[name] = min(value, last + allowance)
            out[name] = self.values[name]
        return out
