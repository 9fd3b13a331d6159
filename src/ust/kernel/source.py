"""One CPU of an ftrace instance as a source of whole CTF packets.

It has the interface of the consumer core's packet sources (a ring buffer
per CPU: ``get_subbuf``/``put_subbuf``/``unget_subbuf``/``flush``/
``counters``), so the kernel stream plugs into a drain loop like any other
channel: each ``get_subbuf`` reads one page from ``trace_pipe_raw`` (the
kernel consumes it) and returns it converted to a packet
(ust.kernel.pages: header, LTTng packet context, events), or None when the
CPU has nothing more. A packet not written (``unget_subbuf``) is kept and
returned again.

Lost events (docs/kernel.md): a page's own missed count goes into its
packet; discard mode's ``dropped events`` (per_cpu/cpuN/stats, read when
the ring has nothing more) into the next page's packet; ``flush(final=True)``
adds whatever the ring's counters say beyond that, in an empty packet at the
stop. ``events_discarded`` is cumulative from the
start of the current output (``start_output``: a snapshot's files count
from zero), and an output's first packet never carries losses (babeltrace2
could not count them): an empty packet goes first.

A trace written as recorded opens each stream when recording starts
(``prelude``: KernelTrace.recording_starts) and closes it at the stop. A
drain pass ends at the first page begun after it began (``read_ring``: with
system calls recorded, a reader's own reads are in the ring it reads).
"""

from __future__ import annotations

import collections
import errno
import os
import struct

from ust._ring._ring import clock_now

from . import pages
from .tracefs import read_stats


# A stream's record log (``.<stream file>.ring`` beside it, written before each packet): slot seq % 2 holds
# (packet_seq_num, ring records accounted for through that packet, of which lost in a consumer's gap). A
# replaced consumer finds the slot of the last whole packet in the file: what its predecessor had read from the
# ring beyond that ("read events" in stats) was read but never written, and is counted as lost.
_RECORD_SLOT = struct.Struct("<QQQ")
# a record written while its CPU was being read lands this late, at most (reserved before the read, committed
# after: ftrace writes with preemption off, microseconds; the margin also covers a virtual CPU paused by its host):
# what a reader may take as read up to a time (ust.kernel.prio's watermark, KernelTrace.restate)
MARGIN_NS = 20_000_000


def read_record_log(fd: int, seq: int) -> tuple[int, int] | None:
    """(records accounted through packet ``seq``, of which gap losses) from a record log, or None."""
    try:
        raw = os.pread(fd, _RECORD_SLOT.size, (seq % 2) * _RECORD_SLOT.size)
    except OSError:
        return None
    if len(raw) != _RECORD_SLOT.size:
        return None
    slot_seq, records, gaps = _RECORD_SLOT.unpack(raw)
    return (records, gaps) if slot_seq == seq and gaps <= records else None


def read_page(fd: int, page_size: int) -> bytes:
    """The next page of a CPU's ring (``trace_pipe_raw``, non-blocking; consumed), or b""
    when it has none now."""
    try:
        return os.read(fd, page_size)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EINTR):
            return b""
        raise


def read_ring(fd: int, page_size: int, clock) -> tuple[list[bytes], int]:
    """The pages a CPU's ring holds when the call begins (consumed), and a time up to which
    every record of that CPU is in them.

    A reader never chases the ring: ``trace_pipe_raw`` hands out a page as soon as it holds
    a record, and a session recording system calls records the reader's own ``read``s (and
    a drain's ``write``s), so reading until the ring is empty would go on for ever, each page
    holding the previous read's records. The reading stops at the first page begun after it
    started (what follows is newer: the next pass's)."""
    began = clock()
    got: list[bytes] = []
    while True:
        page = read_page(fd, page_size)
        if len(page) < pages.PAGE_HEADER:
            return got, clock()
        got.append(page)
        if pages.page_time(page) >= began:
            return got, began


class FtraceSource:
    overwrite: bool

    def __init__(self, cpu: int, fd: int, stats_fd: int, uuid: bytes, converter_of, page_size: int):
        self.cpu = cpu
        self.fd = fd  # per_cpu/cpuN/trace_pipe_raw, non-blocking (this source closes it)
        self.stats_fd = stats_fd  # per_cpu/cpuN/stats (this source closes it)
        self.uuid = uuid
        self.converter_of = converter_of  # () -> the current Converter (plans change when events are enabled)
        self.page_size = page_size
        self.overwrite = False
        self.charged = 0  # lost events put in packets, over every output
        self.dropped_seen = 0  # "dropped events" + "commit overrun" charged so far
        self.skipped = 0  # records of an event type without a plan
        self.events = 0  # events put in packets
        # ring records accounted for (in packets made, or stated lost in a replaced consumer's gap), and of those
        # the gap losses; written to record_log (a descriptor of the stream's record log, -1: none) before each
        # packet, so that a replaced consumer states exactly what its predecessor read and never wrote (resume)
        self.records_out = 0
        self.gap_total = 0
        self.record_log = -1
        self.accounting = True  # records_out counts every record read from the ring (false: resumed without a log)
        self._pending_lost = 0  # to charge in the next packet
        self._held: bytes | None = None  # handed out, not yet put or ungot
        self._kept: bytes | None = None  # ungot: handed out again next time
        self._queued: bytes | None = None  # made with the previous one, handed out next
        self._settle = False  # flush(final=True) asked: square with the ring's counters at the end
        self.on_idle = None  # called when the ring has nothing more (the end of a drain pass)
        self.on_page = None  # called when a page was read from the ring, before it is converted
        self.tracker = None  # the trace's Sweep (ust.kernel.sweep: prio context, file names): it reads the rings
        self.snapshot_conversion = None  # a snapshot's conversion of the kept pages (Sweep.snapshot_plan)
        self.keep_pages = 1  # a snapshot keeps this many pages read (the ring's size)
        self.stopped_ns = 0  # when recording stopped (flush(final=True))
        # the stream's first packet, made when recording starts (KernelTrace.recording_starts): CPU 0's
        # holds the statedump, the others' are empty: (events, count, time)
        self.prelude: tuple[bytes, int, int] | None = None
        # the output is being switched (KernelTrace.switch_output: a rotation, clear): (began, floor), the
        # stream's last packet in it ends at its safe time for ``began`` or at ``floor`` (the latest time a
        # stream of that output began), whichever is later, as lttng flushes every stream, empty or not
        self.closing: tuple[int, int] | None = None
        self.quiet_told = 0  # the latest time a live beacon said this stream had sent everything up to
        self._kept_pages: collections.deque = collections.deque()  # [page, events lost just before it]
        self._kept_tail = 0  # events lost after the last kept page
        self._kept_accounted = 0  # ring losses said by kept pages' counts or the tail
        # a drain pass (get_subbuf until None) ends at the first page begun after it began
        # (read_ring): when it began, and whether such a page was handed out
        self._pass_began: int | None = None
        self._caught_up = False
        # every record committed on this CPU before this time (the trace clock) is out of its ring (read,
        # not necessarily written yet): the beginning of the latest drain pass that ran to its end
        self.read_through = 0
        self.start_output()

    def start_output(self) -> None:
        """The next packets go to a new stream file."""
        self.seq = 0
        self.base = self.charged
        self.last_end = 0

    def resume(self, seq: int, discarded: int, end: int) -> None:
        """Carry on a stream file a previous consumer wrote, whose last packet had this
        ``packet_seq_num``, ``events_discarded`` and end time: the numbering, the cumulative
        discarded count and the time line go on from there (a restarted consumer).

        What the predecessor read from the ring and did not write (pages being converted, held
        back by the sweep, handed to a write that never came) is gone with it: the
        ring's ``read events`` now minus what the record log says the file accounts for
        (``read_record_log``) is charged as lost in the next packet, dated in the gap. Losses
        the ring counted that the file does not state yet are squared at the stop (settle), as
        always; those it states are not counted again."""
        self.seq = seq + 1
        self.charged, self.base = discarded, 0
        self.last_end = end
        stats = read_stats(self.stats_fd)
        self.dropped_seen = stats.get("dropped events", 0) + stats.get("commit overrun", 0)
        accounted = read_record_log(self.record_log, seq) if self.record_log >= 0 else None
        self.accounting = accounted is not None and "read events" in stats
        if self.accounting:
            records, gaps = accounted
            gap = max(stats["read events"] - records, 0)
            self.records_out = records + gap
            self.gap_total = gaps + gap
            self._pending_lost += gap

    def quiet_until(self, stamp: int) -> int:
        """The time up to which this stream has sent everything, for a live beacon: ``stamp``,
        or just before the oldest page the sweep holds back. No later packet of the
        stream begins before it (a viewer has moved past it)."""
        held = self.tracker.held_since(self.cpu) if self.tracker is not None else None
        quiet = stamp if held is None else max(min(stamp, held - 1), self.last_end)
        self.quiet_told = max(self.quiet_told, quiet)
        return quiet

    def safe_time(self, began: int) -> int:
        """The latest time, about ``began``, at which a packet can go next in this stream (a
        statedump: KernelTrace.restate): no earlier than what it already holds (``last_end``,
        nor a live beacon's promise), and no later than a record still to come — the ring was
        read by a pass begun after ``began``, so what it still holds is newer than that, but
        for a record reserved before the read and committed after (MARGIN_NS) and the pages the
        sweep holds back (ust.kernel.sweep)."""
        t = began - MARGIN_NS
        held = self.tracker.held_since(self.cpu) if self.tracker is not None else None
        if held is not None:
            t = min(t, held - 1)
        return max(t, self.last_end, self.quiet_told)

    def poll_fd(self) -> int:
        """Readable when the ring has data past the instance's ``buffer_percent`` (the drain
        engine sleeps on it besides its read timer: docs/kernel.md)."""
        return self.fd

    def close(self) -> None:
        for name in ("fd", "stats_fd", "record_log"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    # -- the packet source interface --------------------------------------------
    def get_subbuf(self, force: bool = False):
        if self._kept is not None or self._queued is not None:
            if self._kept is not None:
                self._held, self._kept = self._kept, None
            else:
                self._held, self._queued = self._queued, None
            return memoryview(self._held)  # the caller releases each view it gets
        if self.prelude is not None:
            events, count, at = self.prelude
            self.prelude = None
            return self._hand(events, count, at, at)
        while True:
            held = None
            if self._pass_began is None:
                self._pass_began = clock_now()
            if self._caught_up:
                page = b""  # this pass is over (read_ring: a reader never chases the ring)
            elif self.tracker is not None:  # every CPU read together, pages held back (ust.kernel.sweep)
                held = self.tracker.next_page(self.cpu)
                page = held.data if held is not None else b""
            else:
                page = read_page(self.fd, self.page_size)
            if len(page) < pages.PAGE_HEADER:
                # the pass is over: the ring was read from a time after it began on, to its end or to a page
                # begun after that time (read_ring; with a sweep, next_page swept every CPU before saying
                # none), so every record committed before it began has been taken out of the ring
                self.read_through = max(self.read_through, self._pass_began)
                self._pass_began, self._caught_up = None, False
                if self.on_idle is not None:
                    self.on_idle()
                # nothing more: discard mode's drops happened after the last event read; they are
                # counted in the next packet, so babeltrace2 dates them between the two events
                # around them (the end of the packet before, the beginning of the one counting them)
                self._pending_lost += self._new_drops()
                closing, self.closing = self.closing, None
                if closing is not None and not self._settle:
                    # every stream of an output covers one common time (readers that keep only that
                    # time, as lttng-analyses, refused a chunk whose idle CPU's stream ended before
                    # another's began); no later than what may still come (safe_time), unless the
                    # output is that short
                    at = max(self.safe_time(closing[0]), closing[1])
                    if self._pending_lost or at > self.last_end:
                        return self._hand(b"", 0, max(self.last_end, self.quiet_told), at)
                    return None
                if self._settle:
                    self._settle = False
                    self._account_unread()
                    stated = self.charged + self._pending_lost - self.gap_total  # the ring's losses said
                    self._pending_lost += max(self.ring_lost() - stated, 0)
                    # every stream closes when recording stopped, as LTTng's do (they open when it
                    # started: recording_starts), with the losses not counted yet: dated from the
                    # last event (or the last live beacon) to the stop
                    at = max(self.stopped_ns, self.last_end, self.quiet_told)
                    if self._pending_lost:
                        return self._hand(b"", 0, at, at)
                    if at > self.last_end:
                        return self._hand(b"", 0, max(self.last_end, self.quiet_told), at)
                return None
            if self.on_page is not None:
                self.on_page()
            try:
                _, missed, _ = pages.page_missed(page)
                converter = self.converter_of()
                if held is not None:
                    events, count, skipped, begin, end = self.tracker.convert(self.cpu, held, converter)
                else:
                    events, count, skipped, begin, end = converter.page(page)
                records = converter.records  # every record of the page ("read events" counts them)
            except (pages.PageError, ValueError):
                continue  # an impossible page is dropped whole, never written half
            self.records_out += records  # (in the next packet's record log slot: a page without one is
            # accounted with the next packet made)
            # a page begun during this pass ends it (the instance stopped, the ring is emptied)
            self._caught_up = not self._settle and pages.page_time(page) >= self._pass_began
            self.skipped += skipped
            self._pending_lost += missed
            if count or self._pending_lost:
                return self._hand(events, count, begin, end)

    def put_subbuf(self) -> None:
        self._held = None

    def unget_subbuf(self) -> None:
        self._kept, self._held = self._held, None

    def flush(self, final: bool = False) -> None:
        """``final``: after the last page, charge what the ring's counters say
        was lost beyond what the packets said (a page with no room for its count)."""
        if final:
            self._settle = True
            self.stopped_ns = clock_now()  # after the instance stopped: no event is newer
            if self.tracker is not None:
                self.tracker.finish()

    def snapshot_to(self, fd: int) -> tuple[int, int]:
        """Write what the ring holds now to ``fd`` as a new output (a flight
        recorder's snapshot), without losing it for the next snapshot: the
        pages read are kept (up to ``keep_pages``, the ring's size) and
        written again next time before the newer ones; returns (packets, bytes)."""
        if self.on_idle is not None:
            self.on_idle()  # the task tables as they are now (pid/procname contexts)
        conversion = self.snapshot_conversion  # the sweep's (KernelTrace.snapshot kept the pages)
        self.snapshot_conversion = None
        if conversion is None:
            self._keep_ring_pages()
        self.start_output()
        converter = conversion or self.converter_of()
        n = nbytes = 0

        def write(packet) -> None:
            nonlocal n, nbytes
            view = memoryview(packet)
            while view:
                view = view[os.write(fd, view):]
            nbytes += len(packet)
            n += 1

        for page, lost in self._kept_pages:
            try:
                events, count, _, begin, end = converter.page(page)
            except (pages.PageError, ValueError):
                continue  # checked when kept: only a plan change could get here
            self._pending_lost += lost
            if count or self._pending_lost:
                with self._hand(events, count, begin, end) as packet:
                    write(packet)
                if self._queued is not None:
                    write(self._queued)
                    self._queued = None
                self._held = None
        self._pending_lost += self._kept_tail
        if self._pending_lost:
            with self._hand(b"", 0, self.last_end, self.last_end) as packet:
                write(packet)
            self._held = None
        return n, nbytes

    def _plain(self, page: bytes):
        """A page's conversion when only its counts matter (the prio context's values aside)."""
        converter = self.converter_of()
        if self.tracker is not None and self.tracker.prio:
            return converter.page_prio(page, (-1, pages.PRIO_UNKNOWN), (), True, 0)[:5]
        return converter.page(page)

    def _keep_ring_pages(self) -> None:
        """Move every page the ring holds now to the kept pages, then drop
        the oldest beyond ``keep_pages`` (their events and losses become the
        losses before the next kept page)."""
        for page in read_ring(self.fd, self.page_size, clock_now)[0]:
            try:
                _, missed, _ = pages.page_missed(page)
                _, _, skipped, _, _ = self._plain(page)
            except (pages.PageError, ValueError):
                continue  # an impossible page is dropped whole, never written half
            self.skipped += skipped
            self._kept_pages.append([page, self._kept_tail + missed])
            self._kept_tail = 0
            self._kept_accounted += missed
        # losses the pages could not state (no room for the count), after them
        unstated = max(self.ring_lost() - self._kept_accounted, 0)
        self._kept_accounted += unstated
        self._kept_tail += unstated
        while len(self._kept_pages) > max(self.keep_pages, 1):
            page, lost = self._kept_pages.popleft()
            try:
                count = self._plain(page)[1]
            except (pages.PageError, ValueError):
                count = 0
            self._kept_pages[0][1] += lost + count

    def counters(self) -> dict:
        return {"lost_full": self.charged, "events": self.events, "skipped": self.skipped}

    # -- helpers -------------------------------------------------------------------
    def ring_lost(self) -> int:
        s = read_stats(self.stats_fd)
        return s.get("overrun", 0) + s.get("dropped events", 0) + s.get("commit overrun", 0)

    def _account_unread(self) -> None:
        """At the stop, every record the ring handed out (``read events``) is in a packet or
        counted lost; one that is neither — in a page dropped as impossible, or after a record
        the walk could not follow — is counted lost now (not a ring loss: the ring gave it)."""
        if self.overwrite or not self.accounting:
            return
        read = read_stats(self.stats_fd).get("read events")
        if read is not None and read > self.records_out:
            unread = read - self.records_out
            self.records_out += unread
            self.gap_total += unread
            self._pending_lost += unread

    def _new_drops(self) -> int:
        s = read_stats(self.stats_fd)
        seen = s.get("dropped events", 0) + s.get("commit overrun", 0)
        new, self.dropped_seen = max(seen - self.dropped_seen, 0), seen
        return new

    def _hand(self, events: bytes, count: int, begin: int, end: int) -> memoryview:
        """The next packet (two when a first packet would carry losses)."""
        lost, self._pending_lost = self._pending_lost, 0
        begin = max(begin, self.last_end)  # packets of a stream never go back in time
        end = max(end, begin)
        first = None
        if self.seq == 0 and lost:
            # a first packet carrying losses: babeltrace2 cannot count them; an empty one goes first
            # (a snapshot's output: a trace written as recorded opens each stream when recording
            # starts, and the losses of its first page are dated from then)
            first = self._packet(b"", begin, begin)
        self.charged += lost
        self.events += count
        out = self._packet(events, begin, end)
        if first is not None:
            out, self._queued = first, out
        self._held = out
        return memoryview(out)

    def _packet(self, events: bytes, begin: int, end: int) -> bytes:
        p = pages.packet(self.uuid, 0, self.cpu, self.seq, self.charged - self.base, begin, end, events)
        if self.record_log >= 0:  # before the packet is written (a replaced consumer: resume)
            try:
                os.pwrite(self.record_log, _RECORD_SLOT.pack(self.seq, self.records_out, self.gap_total),
                          (self.seq % 2) * _RECORD_SLOT.size)
            except OSError:
                pass  # (a full disk: the packet's own write says so)
        self.seq += 1
        self.last_end = end
        return p
