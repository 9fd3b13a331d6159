"""Statistics of a trace: events per name, per process and thread, rates, time span, losses."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._common import Progress, thread_of


@dataclass
class Counter:
    count: int = 0
    first_ns: int | None = None
    last_ns: int | None = None

    def add(self, ns):
        self.count += 1
        if self.first_ns is None:
            self.first_ns = ns
        self.last_ns = ns

    @property
    def duration_s(self) -> float:
        if self.first_ns is None:
            return 0.0
        return (self.last_ns - self.first_ns) / 1e9

    @property
    def rate(self) -> float:
        """Events per second over this counter's own time span (0 when instantaneous)."""
        d = self.duration_s
        return self.count / d if d > 0 else 0.0


@dataclass
class TraceStats:
    total: Counter = field(default_factory=Counter)
    by_name: dict = field(default_factory=dict)  # name -> Counter
    by_process: dict = field(default_factory=dict)  # (vpid, procname) -> Counter
    by_thread: dict = field(default_factory=dict)  # (vpid, vtid, procname) -> Counter
    discarded_events: int = 0
    lost_packets: int = 0
    traces: int = 0
    streams: int = 0


def trace_stats(path, progress=False) -> TraceStats:
    """Read every event under ``path`` once and count."""
    from ust.ctf.reader import iter_events, open_traces, ordered_streams

    st = TraceStats()
    traces = open_traces(path)
    streams = ordered_streams(traces)
    st.traces = len(traces)
    st.streams = len(streams)

    def lost(d):
        if d.packets:
            st.lost_packets += d.count
        else:
            st.discarded_events += d.count

    prog = Progress("stats") if progress else None
    by_name, by_proc, by_thread = st.by_name, st.by_process, st.by_thread
    total = st.total
    n = 0
    for ev in iter_events(traces, lost):
        ns = ev.timestamp
        total.add(ns)
        c = by_name.get(ev.name)
        if c is None:
            c = by_name[ev.name] = Counter()
        c.add(ns)
        vpid, vtid, proc = thread_of(ev)
        k = (vpid, proc)
        c = by_proc.get(k)
        if c is None:
            c = by_proc[k] = Counter()
        c.add(ns)
        if vtid is not None:
            k = (vpid, vtid, proc)
            c = by_thread.get(k)
            if c is None:
                c = by_thread[k] = Counter()
            c.add(ns)
        n += 1
        if prog is not None and not n & 0xFFFF:
            prog.update(n)
    if prog is not None:
        prog.done(n)
    # events lost before the first packet of a stream are counted by the stream
    return st


def _fmt_time(ns):
    if ns is None:
        return "-"
    from ust.ctf._text import TextFormat

    sec, frac = divmod(ns, 1_000_000_000)
    # `ust view --clock-date`'s text: a date beyond the platform's range (a clock
    # of 1 Hz makes one) is printed as seconds since the Epoch, not a traceback
    return TextFormat(clock_date=True).sec_text(sec) + f".{frac:09d}"


def format_stats(st: TraceStats) -> str:
    lines = []
    t = st.total
    lines.append(f"{t.count} events in {st.traces} trace(s), {st.streams} stream(s)")
    lines.append(f"first event: {_fmt_time(t.first_ns)}")
    lines.append(f"last event:  {_fmt_time(t.last_ns)}")
    lines.append(f"time span:   {t.duration_s:.9f} s, {t.rate:,.1f} events/s")
    lines.append(f"discarded events: {st.discarded_events}" + (f", lost packets: {st.lost_packets}"
                                                             if st.lost_packets else ""))
    lines.append("")
    w = max([len(n) for n in st.by_name] + [10])
    lines.append(f"{'event':<{w}}  {'count':>10}  {'%':>6}  {'events/s':>12}  first / last")
    for name, c in sorted(st.by_name.items(), key=lambda kv: (-kv[1].count, kv[0])):
        pct = 100.0 * c.count / t.count if t.count else 0.0
        lines.append(f"{name:<{w}}  {c.count:>10}  {pct:>6.2f}  {c.rate:>12,.1f}  "
                     f"{_fmt_time(c.first_ns)} / {_fmt_time(c.last_ns)}")
    if st.by_process:
        lines.append("")
        lines.append(f"{'process':<24}  {'count':>10}  {'events/s':>12}")
        for (vpid, proc), c in sorted(st.by_process.items(), key=lambda kv: -kv[1].count):
            label = f"{proc or '?'} ({vpid if vpid is not None else '?'})"
            lines.append(f"{label:<24}  {c.count:>10}  {c.rate:>12,.1f}")
    if st.by_thread:
        lines.append("")
        lines.append(f"{'thread':<24}  {'count':>10}  {'events/s':>12}")
        for (vpid, vtid, proc), c in sorted(st.by_thread.items(), key=lambda kv: -kv[1].count):
            label = f"{proc or '?'} {vpid}/{vtid}"
            lines.append(f"{label:<24}  {c.count:>10}  {c.rate:>12,.1f}")
    return "\n".join(lines) + "\n"


def stats_dict(st: TraceStats) -> dict:
    """A JSON-able view of the statistics."""
    def c(x):
        return {"count": x.count, "first_ns": x.first_ns, "last_ns": x.last_ns, "rate": x.rate}
    return {
        "total": c(st.total), "traces": st.traces, "streams": st.streams,
        "discarded_events": st.discarded_events, "lost_packets": st.lost_packets,
        "by_name": {k: c(v) for k, v in st.by_name.items()},
        "by_process": [dict(vpid=k[0], procname=k[1], **c(v)) for k, v in st.by_process.items()],
        "by_thread": [dict(vpid=k[0], vtid=k[1], procname=k[2], **c(v)) for k, v in st.by_thread.items()],
    }
