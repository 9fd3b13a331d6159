"""The consumer's model: a trace, its channels and their streams.

A ``Trace`` is built once from what its host knows (uuid, clock offset,
environment, creation time: ``trace_info``), and keeps its ``TraceInfo``,
its channels and its event table; ``metadata_text`` is the one place the
metadata of a live trace is generated. A ``Channel`` owns its per-CPU
sources (created or attached once), their bounded counters and their stream
outputs. The drain engine (``ust.consumer.drain.Drainer``) drains the traces
it is given; the host changes a trace only while the engine is paused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from ust.consumer.drain import drain_stream, final_drain, snapshot_stream
from ust.consumer.events import EventTable
from ust.consumer.output import StreamOutput, TraceOutput
from ust.consumer.source import (BoundedCounters, attach_buffers, cpu_count, create_buffers, is_ring_buffer,
                                 unwritten_bytes)
from ust.ctf import metadata as md
from ust.instrument import context as ctx

__all__ = ["ChannelSpec", "Channel", "Trace", "trace_info"]

SWITCH_WAIT = 2.0  # s: how long a rotation waits for the writers of a packet it closed to commit

# Environment keys of a trace that end in its metadata's env block as they are.
_ENV_EXTRA = ("procname", "vpid", "hostname")


def trace_info(uuid: bytes, clock_offset_ns: int, env: dict, created: float | None = None) -> md.TraceInfo:
    """The metadata's trace description, from a host's environment dict
    (``trace_name``, ``trace_buffering_scheme``, ``buffering_id``, and
    ``procname``/``vpid``/``hostname`` when known)."""
    return md.TraceInfo(
        uuid=uuid,
        clock_offset_ns=clock_offset_ns,
        trace_name=env.get("trace_name", "ust"),
        buffering=env.get("trace_buffering_scheme", "uid"),
        buffering_id=env.get("buffering_id", 0),
        env_extra={k: v for k, v in env.items() if k in _ENV_EXTRA and v not in (None, "")},
        creation_time=time.time() if created is None else created,
    )


@dataclass(frozen=True)
class ChannelSpec:
    """How a channel's buffers are made and drained (timers in seconds, 0: none)."""

    name: str
    stream_id: int
    subbuf_size: int
    num_subbuf: int
    overwrite: bool = False
    context: tuple[str, ...] = ()  # normalized (ust.instrument.context.normalize): C contexts, then Python ones
    read_timer: float = 0.0  # the longest sleep of the drain engine (0: its default)
    switch_timer: float = 0.0  # close a partial packet this often (idle channels still deliver)
    live_timer: float = 0.0  # close partial packets this often and tell idle streams' outputs (live streaming)
    tracefile_size: int = 0
    tracefile_count: int = 0
    drain_live: bool = True  # False: a flight recorder, written out at the end only


class Channel:
    """A channel of a trace: its per-CPU sources and their outputs, index by index."""

    def __init__(self, spec: ChannelSpec, sources: list, outputs: list[StreamOutput]):
        self.spec = spec
        self.name = spec.name
        self.stream_id = spec.stream_id
        self.sources = sources
        self.outputs = outputs
        self.counters = [BoundedCounters() for _ in sources]
        self.consumed_before = 0  # bytes the outputs of earlier chunks took (the session's consumed size)
        self.next_switch = 0.0  # monotonic time of the next switch timer (0: not armed yet)
        self.next_live = 0.0  # and of the live timer

    def streams(self) -> list[tuple[Any, StreamOutput]]:
        return list(zip(self.sources, self.outputs))

    def bounded_counters(self) -> list[dict]:
        """Each source's counters as far as they can be believed (source.BoundedCounters)."""
        return [bounded.read(src.counters()) for src, bounded in zip(self.sources, self.counters)]

    def usage(self) -> dict:
        """What a buffer-usage or consumed-size trigger samples (lttng's monitor timer): each buffer's
        unread bytes, at most its capacity (an overwrite buffer nobody reads is full, not more), the
        highest and the lowest of them, and the bytes consumed into the outputs since the trace began."""
        capacity = self.spec.subbuf_size * self.spec.num_subbuf
        used = [min(capacity, unwritten_bytes(src)) for src in self.sources] or [0]
        return {"capacity": capacity, "highest": max(used), "lowest": min(used), "consumed": self.consumed()}

    def consumed(self) -> int:
        return self.consumed_before + sum(getattr(out, "bytes_written", 0) for out in self.outputs)

    def stream_class(self) -> md.StreamClass:
        return md.StreamClass(self.stream_id, self.name, list(self.spec.context))


class Trace:
    """One trace: its output (None: nothing written while it runs, a snapshot
    session), its channels and its event table.

    ``write_metadata`` rewrites the metadata when the event table or the
    channels changed; ``flush`` writes everything out; ``snapshot`` copies
    the buffers' contents to another output without consuming them.
    """

    def __init__(self, key: str, output: TraceOutput | None, info: md.TraceInfo, events=None, shm=None):
        self.key = key
        self.output = output
        # ``ust create --shm-path``: the buffers are files there, beside a copy of the metadata
        # (ust.consumer.shm_path.ShmDirectory); None: anonymous memfds
        self.shm = shm
        self.info = info
        self.events = events if events is not None else EventTable()
        self.channels: dict[str, Channel] = {}
        self._described: Any = None  # the event table's version the metadata describes

    @property
    def drains(self) -> bool:
        """Whether the trace is written while it runs (False: a snapshot session's)."""
        return self.output is not None

    @property
    def uuid(self) -> bytes:
        return self.info.uuid

    # -- channels ------------------------------------------------------------------

    def add_channel(self, spec: ChannelSpec, wakeup_fd: int, *, attach_fds: list[int] | None = None,
                    sources: list | None = None) -> Channel:
        """Create the channel's per-CPU ring buffers (or map those of
        ``attach_fds``, or take ``sources``: another producer of packets),
        set the eventfd their writers wake the reader with, and open their
        stream outputs; the metadata is rewritten to describe the new stream."""
        spec = replace(spec, context=sum(ctx.normalize(spec.context), ()))
        if sources is None:
            if attach_fds is not None:
                sources = attach_buffers(attach_fds)
            elif self.shm is not None:
                sources = self.shm.create_buffers(spec.name, cpu_count(), spec.subbuf_size, spec.num_subbuf,
                                                  overwrite=spec.overwrite, stream_id=spec.stream_id,
                                                  uuid=self.uuid)
            else:
                sources = create_buffers(spec.subbuf_size, spec.num_subbuf, overwrite=spec.overwrite,
                                         stream_id=spec.stream_id, uuid=self.uuid)
        for src in sources:
            if is_ring_buffer(src):
                src.set_wakeup_fd(wakeup_fd)
        outputs = [] if self.output is None else [self.output.stream(spec, cpu) for cpu in range(len(sources))]
        ch = Channel(spec, sources, outputs)
        self.channels[spec.name] = ch
        self.write_metadata(force=True)
        return ch

    def streams(self, *, live_only: bool = False) -> list[tuple[Any, StreamOutput]]:
        """(source, output) of every stream (``live_only``: of those drained
        while the trace runs, not the flight recorders)."""
        if self.output is None:
            return []
        return [s for ch in self.channels.values() if ch.spec.drain_live or not live_only for s in ch.streams()]

    # -- metadata ------------------------------------------------------------------

    @property
    def described_version(self) -> int:
        """The event table's version the metadata on disk describes (-1: none yet)."""
        return self._described if self._described is not None else -1

    def metadata_text(self) -> str:
        channels = sorted(self.channels.values(), key=lambda c: c.stream_id)
        events = sorted(self.events.events(), key=lambda e: (e[1], e[0]))
        return md.metadata_text(self.info, [ch.stream_class() for ch in channels], events)

    def write_metadata(self, force: bool = False) -> None:
        """Rewrite the metadata if an event was added since it was last written (or ``force``);
        beside the buffer files too, with --shm-path."""
        if self.output is None and self.shm is None:
            return  # a snapshot session writes the metadata with each snapshot only
        version = self.events.version()
        if not force and version == self._described:
            return
        self._described = version
        text = self.metadata_text()
        if self.output is not None:
            self.output.write_metadata(text)
        if self.shm is not None:
            self.shm.write_metadata(text)

    # -- the end of a run ----------------------------------------------------------

    def flush(self, *, sync: bool) -> int:
        """Close the partial packets and write everything the buffers hold
        (the applications have stopped writing: see drain.final_drain); with
        ``sync``, make the stream files and the metadata durable. Returns the
        packets written."""
        if self.output is None:
            return 0
        streams = self.streams()
        n = final_drain(streams)
        if sync:
            for _, out in streams:
                out.sync()
            self.output.sync()
        return n

    def snapshot(self, output: TraceOutput) -> int:
        """Close the partial packets and copy every buffer's packets to
        ``output``, without consuming them (the next snapshot has them again
        unless overwritten). Returns the packets copied."""
        output.write_metadata(self.metadata_text())
        n = 0
        for ch in self.channels.values():
            spec = replace(ch.spec, tracefile_size=0, tracefile_count=0)  # a snapshot is one file per stream
            for cpu, src in enumerate(ch.sources):
                src.flush()
                out = output.stream(spec, cpu)
                try:
                    n += snapshot_stream(src, out)
                finally:
                    out.close()
        output.close()
        return n

    def switch_output(self, output: TraceOutput) -> int:
        """Go on writing the trace to ``output``, at a packet boundary: every
        packet the buffers hold now (the partial ones closed) ends in the old
        output, the next ones in the new one; none lost, none written twice.
        The host pauses the engine around it. Returns the packets written to
        the old output. (For rotating chunks.)

        The new output's streams and metadata are made before the old streams
        end: a live viewer is told of them (the relay's NEW_STREAM flag) with
        the old streams' last packets, before it prints any of their events.
        Made after (as before), a viewer could print a stream flushed late up
        to its flush time without knowing the new stream of a CPU flushed
        earlier, whose first events are older: babeltrace2 then stopped
        ("timestamp is less than the last returned", or, when that first
        message was a discarded-events one, a clock overflow)."""
        n = 0
        version = self.events.version()
        fresh = {name: [output.stream(ch.spec, cpu) for cpu in range(len(ch.sources))]
                 for name, ch in self.channels.items()}
        output.write_metadata(self.metadata_text())
        for ch in self.channels.values():
            for src, out in ch.streams():
                # every byte reserved before the flush belongs to the old output: a packet the
                # flush closed while a writer was still mid-event is not ready at once, so it is
                # waited for (bounded: a writer dead mid-event is the drain's to repair later,
                # and its packet then goes to the new output, still once)
                reserved = src.counters().get("write_offset", 0) if is_ring_buffer(src) else 0
                src.flush()
                n += drain_stream(src, out)
                deadline = time.monotonic() + SWITCH_WAIT
                while reserved and src.counters().get("consumed", 0) < reserved and time.monotonic() < deadline:
                    time.sleep(0.001)
                    n += drain_stream(src, out)
                out.sync()
                out.close()
        if self.output is not None:
            self.output.sync()
            self.output.close()
        self.output = output
        for ch in self.channels.values():
            ch.consumed_before = ch.consumed()
            ch.outputs = fresh[ch.name]
        self._described = version
        self.write_metadata()  # (only if an event was described meanwhile)
        return n

    def close(self) -> None:
        """Close the outputs (the buffers are unmapped when the trace is dropped)."""
        for ch in self.channels.values():
            for out in ch.outputs:
                out.close()
        if self.output is not None:
            self.output.close()
        self.events.close()
