"""Python threads seen from the kernel: on-CPU and off-CPU time, context switches.

A session with the kernel domain (docs/kernel.md) has the kernel's
``sched_switch`` events on the same clock as the Python program's; a thread's
kernel tid is its ``vtid`` (same pid namespace). Each switch *to* a thread
starts an on-CPU interval, each switch *away* ends it and starts an off-CPU
one; a switch away while runnable (``prev_state`` 0) is a preemption, any
other a wait (sleep, I/O, lock). Intervals are counted between the thread's
first and last switch in the trace (before its first one its state is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass, field

RUNNING, PREEMPTED, WAITING = "running", "runnable (preempted)", "waiting"


@dataclass
class ThreadSched:
    tid: int
    on_cpu_ns: int = 0
    off_cpu_ns: int = 0
    switches: int = 0  # switched away from a CPU
    preempted: int = 0  # ... while still runnable
    intervals: list | None = None  # (begin ns, end ns, state) when asked for (the Chrome export)
    _in: int | None = None  # when it last got a CPU
    _out: int | None = None  # when it last lost one
    _out_state: str = field(default=WAITING)

    def switch_in(self, ns: int) -> None:
        if self._out is not None:
            self.off_cpu_ns += ns - self._out
            if self.intervals is not None:
                self.intervals.append((self._out, ns, self._out_state))
            self._out = None
        self._in = ns

    def switch_out(self, ns: int, runnable: bool) -> None:
        if self._in is not None:
            self.on_cpu_ns += ns - self._in
            if self.intervals is not None:
                self.intervals.append((self._in, ns, RUNNING))
            self._in = None
        self._out = ns
        self._out_state = PREEMPTED if runnable else WAITING
        self.switches += 1
        self.preempted += runnable

    def feed(self, fields: dict, ns: int) -> None:
        """One sched_switch that names this thread (as prev, next or both)."""
        if fields.get("prev_tid") == self.tid:
            self.switch_out(ns, fields.get("prev_state") == 0)
        if fields.get("next_tid") == self.tid:
            self.switch_in(ns)


def kernel_traces(traces) -> list:
    return [t for t in traces if t.env.get("domain") == "kernel"]


def thread_sched(traces, tids) -> dict[int, ThreadSched]:
    """The scheduling of threads ``tids`` from the kernel traces among ``traces``
    (those opened by ust.ctf.reader.open_traces); empty without sched_switch."""
    from ust.ctf import iter_events

    ktraces = kernel_traces(traces)
    want = set(tids)
    out: dict[int, ThreadSched] = {}
    if not ktraces or not want:
        return out
    for ev in iter_events(ktraces, lambda d: None):
        if ev.name != "sched_switch":
            continue
        f = ev.fields
        for tid in {f.get("prev_tid"), f.get("next_tid")} & want:
            (out.get(tid) or out.setdefault(tid, ThreadSched(tid))).feed(f, ev.timestamp)
    return out
