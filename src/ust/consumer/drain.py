"""The drain engine: moves packets from sources to outputs, while running and at the end.

* ``drain_stream(source, output)``: every complete packet of one stream, by
  the C drain without the GIL when the output takes them on a descriptor
  (``direct_fd``), else one by one with their index (``write_packet``).
* ``final_drain(streams)``: the end of a run (close partial packets, give
  writers in the middle of an event a grace period, take what dead writers
  left), and the report of what a failing output cost.
* ``snapshot_stream(source, output)``: a copy without consuming.
* ``Drainer``: the thread of a host (the embedded session, ust-consumerd).
  It drains the traces it is given, sleeps on the eventfd writers write when
  they complete a packet while the reader sleeps, fires the switch timers,
  and rewrites a trace's metadata when its event table grew. When every
  stream is a ring buffer with a direct output, the whole loop (drain, sleep,
  wake-up) runs in C without the GIL (``_ring.drain_wait``) and comes back to
  Python only for a timer, a new event, a pause or once a second. Other
  sources that can say when they have data (``poll_fd()``: an ftrace CPU's
  ``trace_pipe_raw``) are drained by a Python pass, and the C loop goes on
  for the ring buffers, told to return also when one of those descriptors
  is readable (they are in an epoll set it watches with its stop
  descriptor) or at their read timer. Otherwise a Python pass drains every
  stream and sleeps on the eventfd and those descriptors.

The host changes its traces (adds a channel, describes events, flushes,
removes a trace) only inside ``with drainer.paused():``, which wakes the
engine, waits for it to leave the drain and keeps it out until the block
ends: one reader per buffer, always.
"""

from __future__ import annotations

import os
import select
import threading
import time
from contextlib import contextmanager
from typing import Callable

from ust._ring._ring import drain_wait
from ust.consumer.output import StreamOutput
from ust.consumer.source import incomplete, is_ring_buffer, lost_events, unwritten_bytes
from ust.ctf.writer import PacketIndex, packet_spans, warn
from ust.instrument import ownthread

__all__ = ["drain_stream", "final_drain", "snapshot_stream", "Drainer", "FLUSH_GRACE", "RETURN_PERIOD",
           "READ_PERIOD"]

FLUSH_GRACE = 0.2  # s: how long final_drain waits for a writer between reserve and commit
REPAIR_PERIOD = 0.5  # s between two repairs of the buffers nobody drains (dead writers)
RETURN_PERIOD = 1.0  # s: the C loop's longest stretch without the GIL (to report and retry a failed write)
READ_PERIOD = 0.2  # s: the default read timer, the longest sleep without a wake-up (a safety net)


def drain_stream(source, out: StreamOutput, *, force: bool = False) -> int:
    """Move every complete packet from ``source`` to ``out``; returns how many.

    With force (all writers gone), also take packets a dead writer left
    short. A packet whose write fails (a full disk) stays in the source, the
    output ends on the packet before it, and the failure is reported once
    (StreamOutput.write_failed), never raised.
    """
    fd = out.direct_fd()
    if fd >= 0 and is_ring_buffer(source):
        packets, nbytes, err = source.drain_to(fd, force=force)
        out.drained(packets, nbytes, err)
        return packets
    n = 0
    while (packet := source.get_subbuf(force=force)) is not None:
        try:
            out.write_packet(packet, PacketIndex.of(packet))
        except OSError as exc:
            packet.release()
            source.unget_subbuf()
            out.write_failed(exc.errno or 0)
            break
        packet.release()
        source.put_subbuf()
        n += 1
    if n:
        out.write_succeeded()
    return n


def final_drain(streams, grace: float = FLUSH_GRACE) -> int:
    """Close partial packets and write everything out; ``streams``: (source, output).

    For when the applications have stopped writing. A writer may still be
    between reserve and commit (a thread of ours, a child still running): it
    gets ``grace`` seconds to commit. After that, what stays uncommitted
    belongs to a dead writer (a SIGKILLed process) and is taken as it is
    (force), so nothing committed around it is lost.
    """
    n = 0
    for src, out in streams:
        src.flush()
        n += drain_stream(src, out)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(incomplete(src) for src, _ in streams):
        time.sleep(0.005)
        for src, out in streams:
            n += drain_stream(src, out)
    for src, out in streams:
        src.flush(final=True)  # an empty packet carrying the last lost-event count
        n += drain_stream(src, out)
        n += drain_stream(src, out, force=True)
    unwritten = [(src, out) for src, out in streams if out.write_error and not out.loss_reported]
    if unwritten:
        for _, out in unwritten:
            out.loss_reported = True  # once, not at every later flush (stop, then destroy)
        left = sum(unwritten_bytes(src) for src, _ in unwritten)
        lost = sum(lost_events(src.counters()) for src, _ in unwritten)
        warn(f"{len(unwritten)} stream file(s) could not be written to the end "
             f"({os.strerror(unwritten[0][1].write_error)}): {left} bytes of packets were left unwritten, "
             f"and {lost} events were discarded")
    return n


def snapshot_stream(source, out: StreamOutput) -> int:
    """Copy the complete packets of ``source`` to ``out`` without consuming them; returns how many."""
    fd = out.direct_fd()
    if fd >= 0:
        return source.snapshot_to(fd)[0]
    # An output that takes packets one by one gets them with their index,
    # copied first to memory (a snapshot is bounded by the buffer's size).
    mem = os.memfd_create("ust-snapshot", os.MFD_CLOEXEC)
    try:
        source.snapshot_to(mem)
        n = 0
        for pos, length in packet_spans(mem, os.fstat(mem).st_size):
            packet = os.pread(mem, length, pos)
            out.write_packet(packet, PacketIndex.of(packet))
            n += 1
        return n
    finally:
        os.close(mem)


def _poll_fd(source) -> int:
    """A descriptor readable when ``source`` (not a ring buffer) has data, or -1."""
    poll_fd = getattr(source, "poll_fd", None)
    return poll_fd() if poll_fd is not None else -1


def _live_tick(ch) -> None:
    """The live timer (LTTng's): every stream's partial packet is closed, so that
    the round that follows sends it and a live viewer sees its events within the
    period; a stream with nothing to send tells its output (``beacon``, a relay
    stream) that it has nothing up to some time, so that viewers move past it.

    A ring buffer's beacon time comes from the ring (``Buffer.quiet_until``, the
    live barrier, docs/relay.md): the clock read at the flush is not enough, since
    a writer that read its clock just before it, and reserved just after, would
    put an older event after the beacon (babeltrace2 then stops: "timestamp is
    less than the last returned")."""
    from ust._ring._ring import clock_now

    stamp = clock_now()  # (a source of its own, ftrace: before its drain, so no record it sends later is older)
    for src, out in ch.streams():
        beacon = getattr(out, "beacon", None)
        if is_ring_buffer(src):
            src.flush()
            until = src.quiet_until() if beacon is not None else 0  # 0: packets to send, or a writer opening one
        else:  # a source that holds nothing of its own (ftrace): what it has until now is sent first
            until = stamp if drain_stream(src, out) == 0 and beacon is not None else 0
            quiet_until = getattr(src, "quiet_until", None)  # a source holding back older records
            if until and quiet_until is not None:
                until = quiet_until(until)
        if until and beacon is not None:
            beacon(until)


class Drainer:
    """The drain thread of a host, over the traces in ``traces`` (key -> Trace).

    ``wakeup_fd``: the eventfd the sources' writers write (the sessiond's,
    shared with every application; or the host's own). ``log``: where a
    failure of the loop is told (it then carries on).
    """

    def __init__(self, wakeup_fd: int, *, name: str = "ust-consumer", log: Callable[[str], None] = warn):
        self.wakeup_fd = wakeup_fd
        self.traces: dict = {}
        self.name = name
        self.log = log
        self._kick = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)  # makes the C loop return
        self._lock = threading.Lock()  # held by the engine while it drains, by the host while paused
        self._pausers = 0
        self._resume = threading.Condition(threading.Lock())
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._next_repair = 0.0
        # The C loop's stop descriptor when pollable sources are drained beside ring buffers:
        # an epoll set of the kick and their descriptors (rebuilt when they change).
        self._watch: select.epoll | None = None
        self._watched: tuple = ()

    # -- the host's side -----------------------------------------------------------

    def start(self) -> None:
        # ust's own: in an application (an embedded session's reader), none of its calls is recorded
        self._thread = ownthread.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    @contextmanager
    def paused(self):
        """Keep the engine out of the traces for the duration of the block."""
        with self._resume:
            self._pausers += 1
        os.eventfd_write(self._kick, 1)
        try:
            with self._lock:
                yield self
        finally:
            with self._resume:
                self._pausers -= 1
                if not self._pausers:
                    self._resume.notify_all()

    def wake(self) -> None:
        """Have the engine look at its traces again now (a new channel: it may
        sleep for a whole read period without having told the new buffers
        that it sleeps, and writers wake only a reader that said so)."""
        os.eventfd_write(self.wakeup_fd if self.wakeup_fd >= 0 else self._kick, 1)

    def stop(self) -> None:
        """End the thread (what the buffers still hold stays there: see Trace.flush)."""
        with self.paused():
            self._stopping = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        os.close(self._kick)
        self._kick = -1

    # -- the engine ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._resume:
                while self._pausers:
                    self._resume.wait()
                try:
                    os.eventfd_read(self._kick)  # no one waits: a kick left over
                except BlockingIOError:
                    pass
            with self._lock:
                if self._stopping:
                    return
                try:
                    self._round()
                except Exception as exc:  # the loop must go on: a stuck consumer loses every later event
                    self.log(f"drain failed: {type(exc).__name__}: {exc}")
                    time.sleep(0.1)

    def _fire_timers(self, now: float) -> float:
        """Run the due switch and live timers; the time until the next one (at most RETURN_PERIOD)."""
        timeout = RETURN_PERIOD
        for t in self.traces.values():
            for ch in t.channels.values():
                period = ch.spec.switch_timer
                if period:
                    if now >= ch.next_switch:
                        if ch.next_switch:
                            for src in ch.sources:
                                src.flush()
                        ch.next_switch = now + period
                    timeout = min(timeout, max(0.0, ch.next_switch - now))
                period = ch.spec.live_timer
                if period:
                    if now >= ch.next_live:
                        if ch.next_live:
                            _live_tick(ch)
                        ch.next_live = now + period
                    timeout = min(timeout, max(0.0, ch.next_live - now))
        return timeout

    def _repair_undrained(self, traces, now: float) -> float:
        """Every REPAIR_PERIOD, repair the dead writers' packets in the ring
        buffers nobody drains while the trace runs (flight recorders, snapshot
        sessions): a writer killed between reserve and commit would otherwise
        freeze its slot, and the recorder with it, until the end (drained
        buffers are repaired by the drain itself). The time until the next
        repair (RETURN_PERIOD when there is nothing to repair)."""
        undrained = [src for t in traces for ch in t.channels.values()
                     if t.output is None or not ch.spec.drain_live for src in ch.sources if is_ring_buffer(src)]
        if not undrained:
            return RETURN_PERIOD
        if now >= self._next_repair:
            for src in undrained:
                src.repair_dead_writers()
            self._next_repair = now + REPAIR_PERIOD
        return max(0.0, self._next_repair - now)

    def _round(self) -> None:
        traces = list(self.traces.values())
        now = time.monotonic()
        timeout = min(self._fire_timers(now), self._repair_undrained(traces, now))
        periods = {id(src): ch.spec.read_timer or READ_PERIOD
                   for t in traces for ch in t.channels.values() for src in ch.sources}
        streams = [s for t in traces for s in t.streams(live_only=True)]
        rings = [(src, out) for src, out in streams if is_ring_buffer(src) and out.direct_fd() >= 0]
        others = [(src, out) for src, out in streams if not (is_ring_buffer(src) and out.direct_fd() >= 0)]
        pollable = all(_poll_fd(src) >= 0 for src, _ in others)
        if rings and pollable:
            if others:
                # Pollable sources (ftrace CPUs) are drained here; the ring buffers stay in the
                # C loop, which returns when one of those has data (its stop descriptor is an
                # epoll set of the kick and theirs) or at their read timer.
                self._pass(others)
                timeout = min([timeout] + [periods[id(src)] for src, _ in others])
            read_period = min(periods[id(src)] for src, _ in rings)
            watch_fd, watch_size = -1, -1
            for t in traces:  # an event table shared through a file: the C loop returns when it grows
                if t.events.watch_fd() >= 0:  # (beyond what the metadata describes: it may have already)
                    watch_fd, watch_size = t.events.watch_fd(), t.described_version
                    break
            results = drain_wait([src for src, _ in rings], [out.direct_fd() for _, out in rings], self.wakeup_fd,
                                 self._stop_fd(others), timeout, read_period, watch_fd, watch_size)
            for (_, out), result in zip(rings, results):
                out.drained(*result)
        else:
            read_period = min(periods.values(), default=READ_PERIOD)
            self._python_round(streams, min(timeout, read_period))
        for t in traces:
            t.write_metadata()

    def _polled(self, others) -> list[int]:
        """The descriptors of pollable sources to wake on: not those whose output failed (their
        data stays unread until the next retry: waking on it would spin)."""
        return [_poll_fd(src) for src, out in others if _poll_fd(src) >= 0 and not out.write_error]

    def _stop_fd(self, others) -> int:
        """What makes the C loop return: the kick alone, or an epoll set of the kick and the
        pollable sources' descriptors (readable when one of them is)."""
        fds = tuple(self._polled(others))
        if not fds:
            return self._kick
        if self._watch is None or fds != self._watched:
            if self._watch is not None:
                self._watch.close()
            self._watch = select.epoll()
            self._watch.register(self._kick, select.EPOLLIN)
            for fd in fds:
                self._watch.register(fd, select.EPOLLIN)
            self._watched = fds
        return self._watch.fileno()

    def _python_round(self, streams, timeout: float) -> None:
        """One drain pass, then a sleep on the writers' eventfd (and the pollable sources)
        if nothing was there."""
        if self._pass(streams):
            return
        rings = [src for src, _ in streams if is_ring_buffer(src)]
        try:
            for src in rings:
                src.reader_sleep(True)
            if self._pass(streams):  # a packet may have completed before we said so
                return
            wait = [fd for fd in (self.wakeup_fd, self._kick) if fd >= 0]
            wait += self._polled([(src, out) for src, out in streams if not is_ring_buffer(src)])
            ready, _, _ = select.select(wait, [], [], max(timeout, 0.001))
            if self.wakeup_fd >= 0 and self.wakeup_fd in ready:
                try:
                    os.eventfd_read(self.wakeup_fd)
                except BlockingIOError:
                    pass
        finally:
            for src in rings:
                src.reader_sleep(False)

    def _pass(self, streams) -> int:
        n = 0
        for src, out in streams:
            try:
                n += drain_stream(src, out)
            except OSError as exc:
                self.log(f"writing {out.describe()}: {exc}")
        return n
