"""Kernel triggers (``add-trigger --type kernel``), counted at the capture in the owner's consumer.

Each kernel trigger has an ftrace instance of its own (made by the session daemon,
ust.daemon.sessiond.ktriggers) whose events carry the trigger's filter in ftrace's own filter
file (ust.kernel.kfilter): the kernel records only matches. ``Matcher`` reads those instances'
rings (each CPU's ``trace_pipe_raw``, given by the daemon) on a thread of its own and counts
their records per event in C (``_ftrace.count_matches``: no event is parsed in Python); only the
first matches of each report of a trigger with ``--capture`` are read in Python for their values
(``formats.record_values``). Matches wait in ``pending`` until the daemon takes them (consumer
command ``kernel_trigger_matches``); when the first arrive, the daemon's eventfd is written, so
it comes at once. Records the ring dropped (it was full: ftrace's ``dropped events``) are matches
nobody saw: counted as ``discarded``, per trigger (the rings' cumulative counters, so a restarted
consumer says the same total), as lttng counts an event notifier's discarded notifications.

The instances' ``buffer_percent`` is 0: a poller of ``trace_pipe_raw`` is woken at the first
record. After a pass the thread waits MIN_PASS before the next, so a flood of matches is read in
pages, not record by record.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time

from ust._ring._ring import clock_now

from . import formats as fmt
from . import pages
from .source import read_ring
from .tracefs import read_stats

MIN_PASS = 0.01  # s between two passes over the rings (a burst is read in pages)
STATS_PERIOD = 0.5  # s between two reads of the rings' dropped counts (what was not recorded)
MAX_CAPTURED = 64  # matches of one trigger whose values one report carries (ust.filter.MAX_CAPTURED_MATCHES)
CPU_CONTEXTS = ("cpu_id",)


class KernelTrigger:
    """One trigger's instance, as this consumer reads it."""

    def __init__(self, trigger: int, raw_fds: list[int], stats_fds: list[int], events: list[fmt.EventFormat],
                 captures: list[str], page_size: int):
        from ust.filter import compile_capture

        self.id = trigger
        self.raw = raw_fds  # each CPU's trace_pipe_raw, non-blocking (ours to close)
        self.stats = stats_fds
        self.events = {ev.id: ev for ev in events}
        self.captures = [compile_capture(c) for c in captures]
        self.page_size = page_size
        self.dropped_seen = 0  # the rings' drops (cumulative over the instance's life) last reported

    def close(self) -> None:
        for fd in self.raw + self.stats:
            try:
                os.close(fd)
            except OSError:
                pass
        self.raw, self.stats = [], []


class Matcher:
    """The kernel triggers of a consumer: their rings read on one thread, their matches pending."""

    def __init__(self, notify_fd: int = -1):
        self.notify_fd = notify_fd  # the session daemon's eventfd: matches are waiting
        self.lock = threading.Lock()
        self.triggers: dict[int, KernelTrigger] = {}
        # trigger id -> {event name: [count, [captured values of the first matches]]}
        self.pending: dict[int, dict[str, list]] = {}
        # trigger id -> records its rings dropped since the instance began (their own cumulative counters:
        # a restarted consumer says the same total, never one counted twice), when it grew
        self.discarded: dict[int, int] = {}
        self._count = pages.match_counter()
        self._kick = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._epoll = select.epoll()
        self._epoll.register(self._kick, select.EPOLLIN)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- the consumer's commands ------------------------------------------------------

    def add(self, trigger: KernelTrigger) -> None:
        with self.lock:
            old = self.triggers.pop(trigger.id, None)
            if old is not None:
                self._forget(old)
            done = []
            try:
                for fd in trigger.raw:
                    self._epoll.register(fd, select.EPOLLIN)
                    done.append(fd)
            except BaseException:
                for fd in done:
                    self._epoll.unregister(fd)
                raise
            self.triggers[trigger.id] = trigger
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kernel-triggers", daemon=True)
                self._thread.start()
        os.eventfd_write(self._kick, 1)

    def remove(self, trigger: int) -> bool:
        with self.lock:
            t = self.triggers.pop(trigger, None)
            if t is not None:
                self._forget(t)
            self.pending.pop(trigger, None)
            self.discarded.pop(trigger, None)
        return t is not None

    def take(self) -> dict:
        """What the daemon is told: ``{"matches": [[trigger, event, count, captured], ...],
        "discarded": [[trigger, records dropped in all], ...]}``: the matches since the last time."""
        with self.lock:
            pending, self.pending = self.pending, {}
            discarded, self.discarded = self.discarded, {}
        matches = [[tid, event, n, captured] for tid, events in pending.items() for event, (n, captured) in
                   events.items()]
        return {"matches": matches, "discarded": [[tid, n] for tid, n in discarded.items() if n]}

    def close(self) -> None:
        with self.lock:
            self._stopping = True
            thread = self._thread
        os.eventfd_write(self._kick, 1)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        with self.lock:
            for t in self.triggers.values():
                self._forget(t)
            self.triggers.clear()
        self._epoll.close()
        os.close(self._kick)

    def _forget(self, t: KernelTrigger) -> None:
        for fd in t.raw:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        t.close()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        next_stats = 0.0
        while True:
            try:
                self._epoll.poll(STATS_PERIOD)
            except InterruptedError:
                pass
            with self.lock:
                if self._stopping:
                    return
                try:
                    os.eventfd_read(self._kick)
                except BlockingIOError:
                    pass
                now = time.monotonic()
                stats = now >= next_stats
                if stats:
                    next_stats = now + STATS_PERIOD
                try:
                    found = self._pass(stats)
                except Exception as exc:  # the thread must go on: a broken trigger loses its matches only
                    print(f"ust-consumerd[{os.getpid()}]: kernel triggers: {type(exc).__name__}: {exc}",
                          file=sys.stderr, flush=True)
                    found = False
            if found and self.notify_fd >= 0:
                try:
                    os.eventfd_write(self.notify_fd, 1)
                except OSError:
                    pass
            time.sleep(MIN_PASS)  # what comes meanwhile is read in pages, next pass

    def _pass(self, stats: bool) -> bool:
        """Read every trigger's rings (each up to now: read_ring never chases a ring); whether
        matches became pending (they were none before)."""
        was_empty = not self.pending and not self.discarded
        for t in self.triggers.values():
            events = self.pending.get(t.id)
            for cpu, fd in enumerate(t.raw):
                for page in read_ring(fd, t.page_size, clock_now)[0]:
                    events = self._page(t, cpu, page, events)
            if stats:
                seen = 0
                for fd in t.stats:
                    s = read_stats(fd)
                    seen += s.get("dropped events", 0) + s.get("commit overrun", 0) + s.get("overrun", 0)
                if seen > t.dropped_seen:
                    self.discarded[t.id] = t.dropped_seen = seen
        return was_empty and bool(self.pending or self.discarded)

    def _page(self, t: KernelTrigger, cpu: int, page: bytes, events: dict | None) -> dict | None:
        captured = sum(len(v[1]) for v in events.values()) if events else 0
        keep = max(0, MAX_CAPTURED - captured) if t.captures else 0
        try:
            counts, kept, _ = self._count(page, keep)
        except ValueError:
            return events  # an impossible page: nothing in it is believed
        for event_id, n in counts.items():
            ev = t.events.get(event_id)
            if ev is None:
                continue  # not one of the trigger's events (an instance only records those)
            if events is None:
                events = self.pending.setdefault(t.id, {})
            events.setdefault(ev.ctf_name, [0, []])[0] += n
        for event_id, rec in kept:
            ev = t.events.get(event_id)
            if ev is None:
                continue
            fields = fmt.record_values(ev, rec)
            tid = int.from_bytes(rec[4:8], "little", signed=True)
            context = {"tid": tid, "vtid": tid, "cpu_id": cpu}
            events[ev.ctf_name][1].append([c.value(fields, context) for c in t.captures])
        return events
