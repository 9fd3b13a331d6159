"""The consumer core's interfaces (ust.consumer): an output that takes packets
one by one with their index, as a relay stream will, fed by the one drain
engine while the application writes, at the end, and by a snapshot.

The embedded session and ust-consumerd host the same core: their behaviour
is pinned by test_session.py, test_consumer.py and test_daemon_e2e.py.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

import ust
from conftest import babeltrace2_text, needs_babeltrace2
from daemon_util import wait_until
from ust.consumer.drain import Drainer
from ust.consumer.output import LocalTraceOutput, StreamOutput, TraceOutput
from ust.consumer.trace import ChannelSpec, Trace, trace_info
from ust.ctf import metadata as md
from ust.ctf.writer import PacketIndex
from ust.instrument import context as ctx
from ust.instrument.registry import REGISTRY


class IndexedStream(StreamOutput):
    """Takes each packet with its index (no descriptor for the C drain)."""

    def __init__(self, path: str):
        self.name = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.index: list[tuple[int, PacketIndex]] = []  # (offset in the file, index)
        self.offset = 0
        self.closed = False

    def write_packet(self, packet, index: PacketIndex) -> None:
        assert not self.closed
        view = memoryview(packet)
        while view:
            view = view[os.write(self.fd, view):]
        self.index.append((self.offset, index))
        self.offset += len(packet)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
            self.closed = True


class IndexedTrace(TraceOutput):
    """Metadata as a local trace has it; streams as IndexedStream."""

    def __init__(self, directory):
        self.local = LocalTraceOutput(directory, fresh=True)
        self.directory = str(directory)
        self.streams: list[IndexedStream] = []
        self.metadata_writes = 0

    def stream(self, channel, cpu):
        s = IndexedStream(os.path.join(self.directory, f"{channel.name}_{cpu}"))
        self.streams.append(s)
        return s

    def write_metadata(self, text):
        self.metadata_writes += 1
        self.local.write_metadata(text)


def _check_index(stream: IndexedStream, stream_id: int) -> None:
    """Each packet's index says what its bytes say, and the packets follow each other."""
    with open(stream.name, "rb") as f:
        data = f.read()
    assert sum(ix.packet_size for _, ix in stream.index) == len(data)
    offset = 0
    for seq, (pos, ix) in enumerate(stream.index):
        assert pos == offset
        assert ix == PacketIndex.of(data[pos:pos + ix.packet_size])
        assert ix.stream_id == stream_id and ix.packet_seq_num == seq
        assert ix.content_size <= ix.packet_size and ix.timestamp_begin <= ix.timestamp_end
        offset += ix.packet_size
    begins = [ix.timestamp_begin for _, ix in stream.index]
    assert begins == sorted(begins)


def _recording_trace(directory, name: str, overwrite: bool = False):
    tp = ust.tracepoint(name, {"i": ust.int32, "s": ust.string})
    out = IndexedTrace(directory)
    trace = Trace("t", out, trace_info(uuid.uuid4().bytes, md.clock_offset_now(), {"trace_name": "core"}))
    wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    ch = trace.add_channel(ChannelSpec("channel0", 0, 16384, 8, overwrite=overwrite), wakeup)
    trace.events.describe(0, 7, REGISTRY.get(name).decl)
    trace.write_metadata()
    channel = ctx.make_channel(ch.sources, ())
    tp.attach(channel, 7)
    return tp, channel, out, trace, wakeup


@needs_babeltrace2
def test_packet_output_gets_every_packet_with_its_index(tmp_path):
    """A stream output without a descriptor (a relay stream, a kernel-side
    index) is fed by the same engine, while running and at the end: every
    event arrives, in whole packets whose index matches their bytes."""
    tp, channel, out, trace, wakeup = _recording_trace(tmp_path / "t", "core:indexed")
    drainer = Drainer(wakeup)
    drainer.traces[trace.key] = trace
    drainer.start()
    try:
        n = 0
        # Packets leave while the application still writes (the engine's Python round).
        while sum(len(s.index) for s in out.streams) < 3:
            assert n < 5_000_000, "the engine drained nothing while the application wrote"
            for _ in range(200):
                tp(n, "x" * 20)
                n += 1
            time.sleep(0.002)  # pacing: the engine needs the GIL for each packet
    finally:
        tp.detach(channel)
        drainer.stop()
    drained_while_running = sum(len(s.index) for s in out.streams)
    trace.flush(sync=True)
    trace.write_metadata(force=True)
    trace.close()
    assert sum(len(s.index) for s in out.streams) > drained_while_running  # and the rest at the end
    assert all(s.closed for s in out.streams)
    assert out.metadata_writes >= 2  # the channel's stream, then its event
    for s in out.streams:
        _check_index(s, 0)
    text, _ = babeltrace2_text(tmp_path / "t")
    values = [int(line.split("i = ")[1].split(",")[0]) for line in text.splitlines()]
    lost = sum(src.counters()["lost_full"] for src in trace.channels["channel0"].sources)
    assert len(values) == n - lost and len(set(values)) == len(values) and set(values) <= set(range(n))


@needs_babeltrace2
def test_snapshot_to_a_packet_output_equals_a_snapshot_to_files(tmp_path):
    """A snapshot copies the same packets to an output that takes them one by
    one (with their index) as to local files, and consumes nothing."""
    tp, channel, _, trace, wakeup = _recording_trace(tmp_path / "live", "core:snap", overwrite=True)
    try:
        for i in range(3000):
            tp(i, "snapshot")
        files = tmp_path / "files"
        indexed = IndexedTrace(tmp_path / "indexed")
        assert trace.snapshot(LocalTraceOutput(files, fresh=True)) > 0
        n = trace.snapshot(indexed)
        assert n == sum(len(s.index) for s in indexed.streams) > 0
        for s in indexed.streams:
            assert s.closed
            _check_index(s, 0)
            name = os.path.basename(s.name)
            assert (files / name).read_bytes() == (tmp_path / "indexed" / name).read_bytes()
        a, _ = babeltrace2_text(files)
        b, _ = babeltrace2_text(tmp_path / "indexed")
        assert a == b and len(a.splitlines()) == 3000
    finally:
        tp.detach(channel)
        trace.close()
        os.close(wakeup)


def test_a_failing_packet_output_keeps_its_packets(tmp_path):
    """An output whose write fails leaves the packet in its buffer (reported
    once): written again when the output recovers, nothing lost or doubled."""

    class Flaky(IndexedStream):
        failing = True

        def write_packet(self, packet, index):
            if Flaky.failing:
                raise OSError(28, "No space left on device")
            super().write_packet(packet, index)

    class FlakyTrace(IndexedTrace):
        def stream(self, channel, cpu):
            s = Flaky(os.path.join(self.directory, f"{channel.name}_{cpu}"))
            self.streams.append(s)
            return s

    from ust.consumer.drain import drain_stream

    tp = ust.tracepoint("core:flaky", {"i": ust.int32})
    out = FlakyTrace(tmp_path / "t")
    trace = Trace("t", out, trace_info(uuid.uuid4().bytes, 0, {}))
    wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    ch = trace.add_channel(ChannelSpec("channel0", 0, 4096, 16), wakeup)
    channel = ctx.make_channel(ch.sources, ())
    tp.attach(channel, 0)
    try:
        for i in range(2000):
            tp(i)
        tp.detach(channel)
        for src in ch.sources:
            src.flush()
        assert sum(drain_stream(src, o) for src, o in ch.streams()) == 0
        assert any(o.write_error == 28 for o in out.streams)
        Flaky.failing = False
        written = sum(drain_stream(src, o) for src, o in ch.streams())
        assert written > 0 and not any(o.write_error for o in out.streams)
        seqs = [[ix.packet_seq_num for _, ix in o.index] for o in out.streams]
        assert all(s == list(range(len(s))) for s in seqs)
    finally:
        trace.close()
        os.close(wakeup)


@needs_babeltrace2
def test_switch_output_cuts_the_trace_at_a_packet_boundary(tmp_path):
    """A trace moved to a new output (a new chunk of a rotating session):
    what was recorded before is all in the old directory, what follows all
    in the new one, each a complete trace."""
    tp = ust.tracepoint("core:chunks", {"i": ust.int32})
    trace = Trace("t", LocalTraceOutput(tmp_path / "a", fresh=True), trace_info(uuid.uuid4().bytes, 0, {}))
    wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    ch = trace.add_channel(ChannelSpec("channel0", 0, 4096, 64), wakeup)
    trace.events.describe(0, 0, REGISTRY.get("core:chunks").decl)
    trace.write_metadata()
    channel = ctx.make_channel(ch.sources, ())
    tp.attach(channel, 0)
    try:
        for i in range(1000):
            tp(i)
        assert trace.switch_output(LocalTraceOutput(tmp_path / "b", fresh=True)) > 0
        for i in range(1000, 2500):
            tp(i)
    finally:
        tp.detach(channel)
    trace.flush(sync=True)
    trace.close()
    os.close(wakeup)

    def values(d):
        text, _ = babeltrace2_text(d)
        return sorted(int(line.split("i = ")[1].split(" ")[0].rstrip("}").strip()) for line in text.splitlines())

    assert values(tmp_path / "a") == list(range(1000))
    assert values(tmp_path / "b") == list(range(1000, 2500))


if __name__ == "__main__":
    pytest.main([__file__])
