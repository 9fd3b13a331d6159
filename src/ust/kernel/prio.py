"""The kernel trace's ``prio`` context: each event's thread priority, exact or unknown.

lttng-modules writes ``task_prio(current)`` (``p->prio - 100``: nice 0 is 20,
real-time priorities are negative) into every event. An ftrace record carries
no priority, so ust follows it (docs/kernel.md, "The prio context"):

* a ``sched_switch`` record says the outgoing thread's prio (its own
  context) and the incoming one's: from it on, the CPU's current thread and
  its prio are known exactly;
* a ``sched_pi_setprio`` record (priority inheritance) says a thread's new
  prio, exactly, from that time on;
* a priority-setting system call (``setpriority``, ``sched_setscheduler``,
  ``sched_setparam``, ``sched_setattr``, ``nice``) makes its target's prio
  unknown from its entry until the target's next ``sched_switch`` in (its
  new value is not in any record);
* lost events (discard mode's dropped events, overwrite mode's missed
  pages) make what they could have hidden unknown.

These events are enabled in the instance for the context (and written only
if the session asked for them too). A change recorded on one CPU must be
applied to a thread running on another at the right time, so the engine
reads every CPU before converting any (``PrioTracker.sweep``) and holds back
each CPU's pages newer than the *watermark*: the oldest time up to which
every CPU has been read, minus ``MARGIN_NS`` for a record being written when
its CPU was read. A snapshot, which cannot wait, writes ``unknown`` after
the watermark instead. ``PRIO_UNKNOWN`` (INT32_MIN, which lttng-modules never
writes) says unknown.
"""

from __future__ import annotations

import collections

from . import formats as fmt
from .pages import PRIO_UNKNOWN, PageError
from .source import MARGIN_NS, read_ring
from .tracefs import read_stats

__all__ = ["PRIO_UNKNOWN", "TRACKED", "SETTERS", "tracked_events", "converter_config", "PrioTracker"]

# What the prio context needs recorded, beside what the session asked for.
TRACKED = [("sched", "sched_switch"), ("sched", "sched_pi_setprio")]
# The system calls that set priorities: (name, its `which` argument or "", its target argument).
SETTERS = [("setpriority", "which", "who"), ("sched_setscheduler", "", "pid"), ("sched_setparam", "", "pid"),
           ("sched_setattr", "", "pid"), ("nice", "", "")]
NEVER = (1 << 64) - 1


def tracked_events(available: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (system, event) of TRACKED and of the setters' entries this kernel has."""
    have = set(available)
    out = [e for e in TRACKED if e in have]
    out += [("syscalls", f"sys_enter_{name}") for name, _, _ in SETTERS if ("syscalls", f"sys_enter_{name}") in have]
    return out


def converter_config(formats: list[fmt.EventFormat]) -> tuple:
    """The Converter's ``prio`` configuration (event ids and field offsets) from the formats
    of the tracked events (those this kernel does not have are left out)."""
    by_name = {(ev.system, ev.name): ev for ev in formats}

    def offset(ev: fmt.EventFormat, name: str) -> int:
        for f in ev.fields:
            if f.name == name and f.size in (4, 8) and not f.dynamic and not f.count:
                return f.offset  # an int (or a long's low half: little-endian)
        raise fmt.FormatError(f"{ev.system}:{ev.name} has no integer field {name!r}")

    switch = by_name.get(("sched", "sched_switch"))
    pi = by_name.get(("sched", "sched_pi_setprio"))
    setters = []
    for name, which, who in SETTERS:
        ev = by_name.get(("syscalls", f"sys_enter_{name}"))
        if ev is not None:
            # nice(inc) changes the caller's: no target argument (who 0: the caller)
            setters.append((ev.id, offset(ev, which) if which else 0, offset(ev, who) if who else 0))
    return ((switch.id, offset(switch, "prev_prio"), offset(switch, "next_pid"), offset(switch, "next_prio"))
            if switch else None,
            (pi.id, offset(pi, "pid"), offset(pi, "newprio")) if pi else None,
            tuple(setters))


class _Page:
    __slots__ = ("data", "first", "last", "taint", "released")

    def __init__(self, data: bytes, first: int, last: int, taint: bool):
        self.data, self.first, self.last, self.taint = data, first, last, taint
        self.released = False  # read after recording stopped: nothing older can come any more


class PrioTracker:
    """The prio state of a kernel trace's CPUs, and the reading of their rings in sweeps.

    ``attach(sources)`` (the trace's FtraceSources); each source then takes its
    next page from ``next_page(cpu)`` and converts it with ``convert(cpu, page)``."""

    def __init__(self, clock=None):
        from ust._ring._ring import clock_now

        self.clock = clock or clock_now  # the trace clock (CLOCK_MONOTONIC: ftrace's "mono")
        self.sources: list = []
        self.queues: dict[int, collections.deque] = {}
        self.state: dict[int, tuple[int, int]] = {}
        self.applied: dict[int, int] = {}  # per CPU: the time up to which changes were applied
        self.last_read: dict[int, int] = {}  # per CPU: the time of the last record read
        self.drops_seen: dict[int, int] = {}
        self.changes: list[tuple[int, int, int, int]] = []  # (time, tid, prio, cpu), by time
        self.watermark = 0

    def attach(self, sources: list) -> None:
        self.sources = sources
        for src in sources:
            self.queues[src.cpu] = collections.deque()
            self.state[src.cpu] = (-1, PRIO_UNKNOWN)
            self.applied[src.cpu] = 0
            self.last_read[src.cpu] = 0
            self.drops_seen[src.cpu] = 0

    # -- reading ------------------------------------------------------------------------
    def _read_ring(self, src) -> tuple[list[bytes], int]:
        """Every page the CPU's ring holds now, and a time up to which every record of the CPU
        is read (when it was found empty: ust.kernel.source.read_ring)."""
        return read_ring(src.fd, src.page_size, self.clock)

    def sweep(self) -> None:
        """Read every CPU, learn the priority changes their records say, move the watermark."""
        converter = self.sources[0].converter_of() if self.sources else None
        found_empty = []
        for src in self.sources:
            cpu = src.cpu
            pages, empty_at = self._read_ring(src)
            found_empty.append(empty_at)
            dropped = 0
            if not src.overwrite:
                s = read_stats(src.stats_fd)
                seen = s.get("dropped events", 0) + s.get("commit overrun", 0)
                dropped, self.drops_seen[cpu] = seen - self.drops_seen[cpu], seen
            gap_before = self.last_read[cpu]
            if dropped > 0:  # lost somewhere after what was read before: any change could be among them
                self._add(gap_before, -1, PRIO_UNKNOWN, cpu)
            for page in pages:
                try:
                    first, last, missed, changes = converter.scan(page)
                except (PageError, ValueError):
                    continue  # an impossible page is dropped whole (get_subbuf would drop it too)
                if missed:
                    self._add(self.last_read[cpu], -1, PRIO_UNKNOWN, cpu)
                for when, tid, value in changes:
                    self._add(when, tid, value, cpu)
                self.queues[cpu].append(_Page(page, first, last, dropped > 0))
                self.last_read[cpu] = max(self.last_read[cpu], last)
            if dropped > 0 and not pages:
                self.state[cpu] = (-1, PRIO_UNKNOWN)  # the gap is before whatever comes next
        if found_empty:
            self.watermark = max(self.watermark, min(found_empty) - MARGIN_NS)
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

    def next_page(self, cpu: int) -> bytes | None:
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
        for q in self.queues.values():
            for page in q:
                page.released = True

    # -- converting ---------------------------------------------------------------------
    def convert(self, cpu: int, page: _Page, converter, horizon: int = NEVER):
        """Convert the CPU's next page (from next_page): the Converter's page() result."""
        q = self.queues[cpu]
        if q and q[0] is page:
            q.popleft()
        since = self.applied[cpu]
        others = [(when, tid, value) for when, tid, value, where in self.changes
                  if where != cpu and since < when <= page.last]
        events, count, skipped, begin, end, state = converter.page_prio(page.data, self.state[cpu], others,
                                                                        page.taint, horizon)
        self.state[cpu] = (-1, PRIO_UNKNOWN) if page.taint else state
        self.applied[cpu] = max(since, page.last)
        self._prune()
        return events, count, skipped, begin, end

    def _prune(self) -> None:
        done = min(self.applied.values(), default=0)
        if self.changes and self.changes[0][0] <= done:
            self.changes = [c for c in self.changes if c[0] > done]

    # -- snapshots: every CPU's kept pages again, from nothing ----------------------------
    def snapshot_plan(self, kept: dict[int, list[bytes]], read_at: dict[int, int], converter) -> dict:
        """For a snapshot: per CPU, a function converting its kept pages in order with the prio
        context as far as it is known from them alone (after the watermark: unknown)."""
        changes = []
        for cpu, pages in kept.items():
            last = 0
            for page in pages:
                try:
                    _, page_last, missed, found = converter.scan(page)
                except (PageError, ValueError):
                    continue
                if missed:
                    changes.append((last, -1, PRIO_UNKNOWN, cpu))
                changes += [(when, tid, value, cpu) for when, tid, value in found]
                last = max(last, page_last)
        changes.sort(key=lambda c: c[0])
        horizon = max(min(read_at.values(), default=0) - MARGIN_NS, 0)
        plans = {}
        for cpu in kept:
            others = [(when, tid, value) for when, tid, value, where in changes if where != cpu]
            plans[cpu] = _SnapshotConversion(converter, others, horizon)
        return plans


class _SnapshotConversion:
    """One CPU's kept pages converted in order for a snapshot (state from nothing)."""

    def __init__(self, converter, changes: list, horizon: int):
        self.converter = converter
        self.changes = changes
        self.horizon = horizon
        self.state = (-1, PRIO_UNKNOWN)
        self.applied = 0

    def page(self, data: bytes):
        others = [c for c in self.changes if c[0] > self.applied]
        events, count, skipped, begin, end, self.state = self.converter.page_prio(data, self.state, others, False,
                                                                                  self.horizon)
        self.applied = max(self.applied, end)
        return events, count, skipped, begin, end
