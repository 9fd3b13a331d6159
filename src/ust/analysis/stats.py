"""Statistics of a trace: events per name, per process and thread, rates, time span, losses."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._common import Progress, hashable, thread_of


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
    app_tids: set = field(default_factory=set)  # thread ids of user-space (not kernel) events
    sched: dict = field(default_factory=dict)  # tid -> analysis.sched.ThreadSched (with a kernel trace)


def trace_stats(path, progress=False) -> TraceStats:
    """Read every event under ``path`` once and count.

    With numpy, from the bulk reader's columns (no object per event); without it,
    event by event. Both give the same statistics.
    """
    from ust.ctf import open_traces, ordered_streams

    st = TraceStats()
    traces = open_traces(path)
    st.traces = len(traces)
    st.streams = len(ordered_streams(traces))

    def lost(d):
        if d.packets:
            st.lost_packets += d.count
        else:
            st.discarded_events += d.count

    prog = Progress("stats") if progress else None
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None and all(_thread_columns_plain(t) for t in traces):
        n = _count_columns(np, st, traces, lost, prog)
    else:
        n = _count_events(st, traces, lost, prog)
    if prog is not None:
        prog.done(n)
    from .sched import thread_sched

    st.sched = thread_sched(traces, {t for t in st.app_tids if isinstance(t, int)})
    # in order of first appearance, as event by event (the JSON output's order)
    for d in ("by_name", "by_process", "by_thread"):
        counters = getattr(st, d)
        setattr(st, d, dict(sorted(counters.items(), key=lambda kv: kv[1].first_ns)))
    return st


def _count_events(st, traces, lost, prog) -> int:
    from ust.ctf import iter_events

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
            if ev.stream.trace.env.get("domain") != "kernel":
                st.app_tids.add(vtid)
        n += 1
        if prog is not None and not n & 0xFFFF:
            prog.update(n)
    return n


_THREAD_CONTEXTS = ("vpid", "pid", "vtid", "tid", "procname")


def _context_names(sc, ec):
    from ust.ctf import display_name

    return {display_name(n) for st in (sc.event_context, ec.context) if st is not None for n, _ in st.fields}


def _thread_columns_plain(trace) -> bool:
    """Whether the bulk columns tell thread_of's contexts apart: no payload field of an
    event class has the name of one of them while a context also has it (the columns
    are by name, the payload's would hide the context's)."""
    from ust.ctf import display_name

    for sc in trace.metadata.streams.values():
        for ec in sc.events.values():
            ctx = _context_names(sc, ec)
            payload = set() if ec.fields is None else {display_name(n) for n, _ in ec.fields.fields}
            if ctx & payload & set(_THREAD_CONTEXTS):
                return False
    return True


def _count_columns(np, st, traces, lost, prog) -> int:
    """The statistics from the bulk reader's columns, a chunk at a time: per chunk and
    name, the runs of equal (vpid, vtid, procname) are counted with numpy and only the
    runs reach Python."""
    from ust.ctf import iter_column_chunks

    ctx_of = {}  # (trace id, event name) -> context names
    n = 0
    for trace, tables in iter_column_chunks(None, 1 << 18, on_discarded=lost, traces=traces,
                                                 payload=False):
        env = trace.env
        for name, cols in tables.items():
            ts = cols["timestamp"]
            k = len(ts)
            if not k:
                continue
            n += k
            ctx = ctx_of.get((id(trace), name))
            if ctx is None:
                ctx = ctx_of[(id(trace), name)] = _class_contexts(trace, name)
            first, last = ts.min(), ts.max()
            first, last = int(first), int(last)
            _merge(st.total, k, first, last)
            _merge(st.by_name.setdefault(name, Counter()), k, first, last)
            vpid = _key_column(cols, ctx, ("vpid", "pid"), env.get("vpid"))
            vtid = _key_column(cols, ctx, ("vtid", "tid"), None)
            proc = _key_column(cols, ctx, ("procname",), env.get("procname"))
            keyed = [c for c in (vpid, vtid, proc) if isinstance(c, np.ndarray)]
            if keyed:
                change = np.zeros(k - 1, dtype=bool)
                for c in keyed:
                    change |= np.asarray(c[1:] != c[:-1], dtype=bool)
                starts = np.concatenate(([0], np.flatnonzero(change) + 1))
            else:
                starts = np.zeros(1, dtype=np.int64)
            counts = np.diff(np.append(starts, k)).tolist()
            firsts = np.minimum.reduceat(ts, starts).tolist()
            lasts = np.maximum.reduceat(ts, starts).tolist()
            vals = [c[starts].tolist() if isinstance(c, np.ndarray) else [c] * len(starts) for c in
                    (vpid, vtid, proc)]
            app = env.get("domain") != "kernel"
            for cnt, f, la, p, t, pr in zip(counts, firsts, lasts, *vals):
                p, t, pr = hashable(p), hashable(t), hashable(pr)
                _merge(st.by_process.setdefault((p, pr), Counter()), cnt, int(f), int(la))
                if t is not None:
                    _merge(st.by_thread.setdefault((p, t, pr), Counter()), cnt, int(f), int(la))
                    if app:
                        st.app_tids.add(t)
        if prog is not None:
            prog.update(n)
    return n


def _class_contexts(trace, name):
    names = set()
    for sc in trace.metadata.streams.values():
        for ec in sc.events.values():
            if ec.name == name:
                names |= _context_names(sc, ec)
    return names


def _key_column(cols, ctx, choices, default):
    """thread_of's choice in columns: the first of ``choices`` the contexts have, else ``default``."""
    for c in choices:
        if c in ctx and c in cols:
            return cols[c]
    return hashable(default)


def _merge(counter, count, first, last):
    counter.count += count
    if counter.first_ns is None or first < counter.first_ns:
        counter.first_ns = first
    if counter.last_ns is None or last > counter.last_ns:
        counter.last_ns = last


def _fmt_time(ns):
    if ns is None:
        return "-"
    from ust.ctf import TextFormat

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
    if st.sched:
        from ._common import fmt_ns

        lines.append("")
        lines.append("threads on the CPU (the kernel's sched_switch):")
        lines.append(f"{'tid':>10}  {'on-CPU':>12}  {'off-CPU':>12}  {'switches':>9}  {'preempted':>9}")
        for tid, t in sorted(st.sched.items(), key=lambda kv: -kv[1].on_cpu_ns):
            lines.append(f"{tid:>10}  {fmt_ns(t.on_cpu_ns):>12}  {fmt_ns(t.off_cpu_ns):>12}  {t.switches:>9}  "
                         f"{t.preempted:>9}")
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
        "sched": [{"tid": t.tid, "on_cpu_ns": t.on_cpu_ns, "off_cpu_ns": t.off_cpu_ns, "switches": t.switches,
                   "preempted": t.preempted} for t in st.sched.values()],
    }
