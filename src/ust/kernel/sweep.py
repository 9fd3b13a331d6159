"""Reading every CPU of a kernel trace before converting any: what one CPU's records tell another's.

Two things in a kernel trace depend on records of other CPUs than the event's own:

* the ``prio`` context (ust.kernel.prio): a priority change recorded on one CPU (another thread's
  ``setpriority``, a boost) applies to the thread's events on another, from its time on;
* the open calls' file names (ust.kernel.paths): a thread's path probe record and its system
  call's are on different CPUs when it moved in between.

So the trace's sources do not read their CPU on their own: each pass, ``Sweep.sweep`` reads every
CPU's ring, scans each page in C for what the others need (``Converter.scan``), and holds back
each CPU's pages newer than the *watermark*: the earliest time at which a CPU was found empty in
the sweep, minus ``MARGIN_NS`` for a record reserved before its CPU was read and committed after.
A page is converted when it is older than that (every record any CPU recorded before its newest
one has been scanned), or when recording has stopped (``finish``). A snapshot, which cannot wait,
reads every CPU's kept pages first (``snapshot_plan``) and goes as far as they tell.
"""

from __future__ import annotations

import collections

from .pages import PRIO_UNKNOWN, PageError
from .paths import NEVER
from .source import MARGIN_NS, read_ring
from .tracefs import read_stats


class _Page:
    __slots__ = ("data", "first", "last", "taint", "released", "names")

    def __init__(self, data: bytes, first: int, last: int, taint: bool, names: list | None):
        self.data, self.first, self.last, self.taint = data, first, last, taint
        self.released = False  # read after recording stopped: nothing older can come any more
        self.names = names  # its open calls' file names (ust.kernel.paths.Pairing fills them)


class Sweep:
    """The reading of a kernel trace's CPUs in sweeps, with the prio context's state (``prio``)
    and the open calls' pairing (``pairing``: ``pages.pairing_class()``'s, which goes with the
    trace's Converter; set it when path probes are enabled).

    ``attach(sources)`` (the trace's FtraceSources); each source then takes its next page from
    ``next_page(cpu)`` and converts it with ``convert(cpu, page)``."""

    def __init__(self, clock=None, *, prio: bool = True, pairing=None):
        from ust._ring._ring import clock_now

        self.clock = clock or clock_now  # the trace clock (CLOCK_MONOTONIC: ftrace's "mono")
        self.prio = prio
        self.pairing = pairing
        self.sources: list = []
        self.queues: dict[int, collections.deque] = {}
        self.state: dict[int, tuple[int, int]] = {}
        self.applied: dict[int, int] = {}  # per CPU: the time up to which changes were applied
        self.last_read: dict[int, int] = {}  # per CPU: the time of the last record read
        self.drops_seen: dict[int, int] = {}
        self.changes: list[tuple[int, int, int, int]] = []  # (time, tid, prio, cpu), by time
        self.watermark = 0

    def attach(self, sources: list) -> None:
        """Read these sources from now on (drops already counted by their rings are not this sweep's)."""
        self.sources = sources
        for src in sources:
            self.queues[src.cpu] = collections.deque()
            self.state[src.cpu] = (-1, PRIO_UNKNOWN)
            self.applied[src.cpu] = 0
            self.last_read[src.cpu] = 0
            self.drops_seen[src.cpu] = self._drops(src)

    @staticmethod
    def _drops(src) -> int:
        s = read_stats(src.stats_fd)
        return s.get("dropped events", 0) + s.get("commit overrun", 0)

    # -- reading ------------------------------------------------------------------------
    def _read_ring(self, src) -> tuple[list[bytes], int]:
        """Every page the CPU's ring holds now, and a time up to which every record of the CPU
        is read (when it was found empty: ust.kernel.source.read_ring)."""
        return read_ring(src.fd, src.page_size, self.clock)

    def sweep(self) -> None:
        """Read every CPU, learn what their records tell the others, move the watermark."""
        converter = self.sources[0].converter_of() if self.sources else None
        found_empty = []
        for src in self.sources:
            cpu = src.cpu
            pages, empty_at = self._read_ring(src)
            found_empty.append(empty_at)
            dropped = 0
            if not src.overwrite:
                seen = self._drops(src)
                dropped, self.drops_seen[cpu] = seen - self.drops_seen[cpu], seen
            gap_before = self.last_read[cpu]
            if dropped > 0:  # lost somewhere after what was read before: any change could be among them
                if self.prio:
                    self._add(gap_before, -1, PRIO_UNKNOWN, cpu)
                if self.pairing is not None:
                    self.pairing.gap(gap_before, empty_at)
            for page in pages:
                try:  # (a gap queued after the page's records is sorted before them all the same)
                    first, last, missed, changes, names = converter.scan(page, self.pairing)
                except (PageError, ValueError):
                    continue  # an impossible page is dropped whole (get_subbuf would drop it too)
                if missed:
                    if self.prio:
                        self._add(self.last_read[cpu], -1, PRIO_UNKNOWN, cpu)
                    if self.pairing is not None:
                        self.pairing.gap(self.last_read[cpu], first)
                for when, tid, value in changes:
                    self._add(when, tid, value, cpu)
                if self.pairing is None:
                    names = None
                self.queues[cpu].append(_Page(page, first, last, dropped > 0, names))
                self.last_read[cpu] = max(self.last_read[cpu], last)
            if dropped > 0 and not pages:
                self.state[cpu] = (-1, PRIO_UNKNOWN)  # the gap is before whatever comes next
        if found_empty:
            self.watermark = max(self.watermark, min(found_empty) - MARGIN_NS)
        if self.pairing is not None:
            self.pairing.pair(self.watermark)
        for cpu, q in self.queues.items():
            if not q and self.applied[cpu] < self.watermark:
                self._pass_time(cpu, self.watermark)

    def _pass_time(self, cpu: int, until: int) -> None:
        """A CPU with no record up to ``until`` (its ring was found empty after it): the other
        CPUs' changes up to then still change its current thread's state (so the list of
        changes can be pruned while a CPU is idle)."""
        tid, prio = self.state[cpu]
        for when, who, value, where in self.changes:
            if where != cpu and self.applied[cpu] < when <= until and who in (-1, tid):
                prio = value
        self.state[cpu] = (tid, prio)
        self.applied[cpu] = until
        self._prune()

    def _add(self, when: int, tid: int, value: int, cpu: int) -> None:
        self.changes.append((when, tid, value, cpu))
        if len(self.changes) > 1 and self.changes[-2][0] > when:
            self.changes.sort(key=lambda c: c[0])

    def next_page(self, cpu: int) -> _Page | None:
        """The CPU's next page that may be converted now (None: none yet)."""
        q = self.queues[cpu]
        if not q or not self._ready(q[0]):
            self.sweep()
        if q and self._ready(q[0]):
            return q[0]
        return None

    def held_since(self, cpu: int) -> int | None:
        """The time of the oldest record the CPU's held-back pages have (None: none held)."""
        q = self.queues.get(cpu)
        return q[0].first if q else None

    def _ready(self, page: _Page) -> bool:
        return page.released or page.last <= self.watermark

    def finish(self) -> None:
        """Recording has stopped (the session's stop, a final flush): read every CPU once more
        and let every page read go (no older record can be written any more)."""
        self.sweep()
        if self.pairing is not None:
            self.pairing.pair(NEVER)
        for q in self.queues.values():
            for page in q:
                page.released = True

    # -- converting ---------------------------------------------------------------------
    def convert(self, cpu: int, page: _Page, converter, horizon: int = NEVER):
        """Convert the CPU's next page (from next_page): the Converter's page() result."""
        q = self.queues[cpu]
        if q and q[0] is page:
            q.popleft()
        if not self.prio:
            return converter.page(page.data, page.names)
        since = self.applied[cpu]
        others = [(when, tid, value) for when, tid, value, where in self.changes
                  if where != cpu and since < when <= page.last]
        events, count, skipped, begin, end, state = converter.page_prio(page.data, self.state[cpu], others,
                                                                        page.taint, horizon, page.names)
        self.state[cpu] = (-1, PRIO_UNKNOWN) if page.taint else state
        self.applied[cpu] = max(since, page.last)
        self._prune()
        return events, count, skipped, begin, end

    def _prune(self) -> None:
        done = min(self.applied.values(), default=0)
        if self.changes and self.changes[0][0] <= done:
            self.changes = [c for c in self.changes if c[0] > done]

    # -- snapshots: every CPU's kept pages again, from nothing ----------------------------
    def snapshot_plan(self, kept: dict[int, list[tuple[bytes, int]]], read_at: dict[int, int], converter) -> dict:
        """For a snapshot: per CPU, a function converting its kept pages (page, events lost just
        before it) in order, with the prio context as far as it is known from them alone (after
        the watermark: unknown) and the open calls' names they pair."""
        changes = []
        pairing = type(self.pairing)() if self.pairing is not None else None
        names: dict[int, list | None] = {}  # id(page) -> its names
        for cpu, pages in kept.items():
            last = 0
            for page, lost in pages:
                try:
                    first, page_last, missed, found_changes, page_names = converter.scan(page, pairing)
                except (PageError, ValueError):
                    continue
                if missed or lost:
                    changes.append((last, -1, PRIO_UNKNOWN, cpu))
                    if pairing is not None:
                        pairing.gap(last, first)
                changes += [(when, tid, value, cpu) for when, tid, value in found_changes]
                if pairing is not None:
                    names[id(page)] = page_names
                last = max(last, page_last)
        if pairing is not None:
            pairing.pair(NEVER)
        changes.sort(key=lambda c: c[0])
        horizon = max(min(read_at.values(), default=0) - MARGIN_NS, 0)
        plans = {}
        for cpu in kept:
            others = [(when, tid, value) for when, tid, value, where in changes if where != cpu]
            plans[cpu] = _SnapshotConversion(converter, others, horizon, self.prio, names)
        return plans


class _SnapshotConversion:
    """One CPU's kept pages converted in order for a snapshot (state from nothing)."""

    def __init__(self, converter, changes: list, horizon: int, prio: bool, names: dict):
        self.converter = converter
        self.changes = changes
        self.horizon = horizon
        self.prio = prio
        self.names = names
        self.state = (-1, PRIO_UNKNOWN)
        self.applied = 0

    def page(self, data: bytes):
        names = self.names.get(id(data))
        if not self.prio:
            return self.converter.page(data, names)
        others = [c for c in self.changes if c[0] > self.applied]
        events, count, skipped, begin, end, self.state = self.converter.page_prio(data, self.state, others, False,
                                                                                  self.horizon, names)
        self.applied = max(self.applied, end)
        return events, count, skipped, begin, end
