"""Latency between begin/end event pairs (per thread, or by a key field)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._common import Progress, fmt_ns, group_key


@dataclass
class LatencyResult:
    begin: str
    end: str
    key: str | None
    durations: list = field(default_factory=list)  # ns, sorted
    pairs: list = field(default_factory=list)  # (begin_ns, end_ns, group)
    unmatched_begin: int = 0
    unmatched_end: int = 0

    @property
    def count(self) -> int:
        return len(self.durations)

    def percentile(self, q: float) -> int | None:
        """Nearest-rank percentile (q in 0..100)."""
        d = self.durations
        if not d:
            return None
        import math
        k = max(1, math.ceil(q / 100.0 * len(d)))
        return d[min(k, len(d)) - 1]

    def summary(self) -> dict:
        d = self.durations
        if not d:
            return {"count": 0}
        return {"count": len(d), "min": d[0], "mean": sum(d) / len(d), "p50": self.percentile(50),
                "p90": self.percentile(90), "p99": self.percentile(99), "max": d[-1]}

    def histogram(self, bins: int = 20) -> list:
        """[(lo, hi, count)] over [min, max] in equal bins."""
        d = self.durations
        if not d:
            return []
        lo, hi = d[0], d[-1]
        if hi == lo:
            return [(lo, hi, len(d))]
        width = (hi - lo) / bins
        counts = [0] * bins
        for x in d:
            i = int((x - lo) / width)
            counts[min(i, bins - 1)] += 1
        return [(lo + i * width, lo + (i + 1) * width, c) for i, c in enumerate(counts)]


def latency(path, begin: str, end: str, key: str | None = None, progress=False) -> LatencyResult:
    """Pair each ``end`` event with the latest unmatched ``begin`` of its group.

    The group is the emitting thread (vpid/vtid contexts; else the process;
    else the stream), or, with ``key``, the value of that field (payload or
    context; ``$ctx.NAME`` for a context only). Nested pairs in a group
    match innermost first.
    """
    from ust.ctf import read_trace

    res = LatencyResult(begin, end, key)
    open_ = {}
    prog = Progress("latency") if progress else None
    n = 0
    for ev in read_trace(path):
        n += 1
        if prog is not None and not n & 0xFFFF:
            prog.update(n)
        name = ev.name
        if name == begin:
            open_.setdefault(group_key(ev, key), []).append(ev.timestamp)
            if name != end:
                continue
        if name == end:
            g = group_key(ev, key)
            stack = open_.get(g)
            if name == begin:
                # begin and end are the same event: consecutive occurrences pair up
                if stack and len(stack) >= 2:
                    t0 = stack[-2]
                    del stack[-2]
                    res.pairs.append((t0, ev.timestamp, g))
                continue
            if not stack:
                res.unmatched_end += 1
                continue
            t0 = stack.pop()
            res.pairs.append((t0, ev.timestamp, g))
    if prog is not None:
        prog.done(n)
    res.unmatched_begin = sum(len(s) for s in open_.values())
    res.durations = sorted(t1 - t0 for t0, t1, _ in res.pairs)
    return res


def format_latency(res: LatencyResult, bins: int = 20, width: int = 50) -> str:
    by = f"by {res.key}" if res.key else "per thread"
    lines = [f"latency {res.begin} -> {res.end} ({by}): {res.count} pairs"]
    s = res.summary()
    if s["count"]:
        lines.append("  " + "  ".join(f"{k} {fmt_ns(s[k])}" for k in ("min", "mean", "p50", "p90", "p99", "max")))
        hist = res.histogram(bins)
        top = max(c for _, _, c in hist) or 1
        lines.append("")
        for lo, hi, c in hist:
            bar = "#" * (round(c * width / top) if c else 0)
            lines.append(f"  {fmt_ns(lo):>10} - {fmt_ns(hi):>10} | {bar:<{width}} {c}")
    if res.unmatched_begin or res.unmatched_end:
        lines.append("")
        lines.append(f"unmatched: {res.unmatched_begin} begin, {res.unmatched_end} end")
    return "\n".join(lines) + "\n"
