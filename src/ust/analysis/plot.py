"""PNG plots: event rate over time per event name, latency histogram."""

from __future__ import annotations

from ust.errors import UstError


def plot_trace(path, out, begin=None, end=None, key=None, bins=100, progress=False) -> str:
    """Write a PNG to ``out``: the event rate per name over time, and, with
    ``begin``/``end``, the latency histogram of those pairs. Needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UstError("plot needs matplotlib: pip install matplotlib (or 'ust[analysis]')") from None
    from ust.ctf import read_trace

    from ._common import Progress

    prog = Progress("plot") if progress else None
    times = {}
    n = 0
    for ev in read_trace(path):
        times.setdefault(ev.name, []).append(ev.timestamp)
        n += 1
        if prog is not None and not n & 0xFFFF:
            prog.update(n)
    if prog is not None:
        prog.done(n)
    if not times:
        raise UstError("the trace has no event to plot")
    t0 = min(v[0] for v in times.values())
    t1 = max(v[-1] for v in times.values())
    span = max(t1 - t0, 1)
    width = span / bins
    lat = None
    if begin and end:
        from .latency import latency
        lat = latency(path, begin, end, key)
    nrows = 2 if lat is not None else 1
    fig, axes = plt.subplots(nrows, 1, figsize=(10, 4 * nrows), squeeze=False)
    ax = axes[0][0]
    xs = [(i + 0.5) * width / 1e9 for i in range(bins)]
    for name, ts in sorted(times.items()):
        counts = [0] * bins
        for t in ts:
            counts[min(int((t - t0) / width), bins - 1)] += 1
        ax.plot(xs, [c / (width / 1e9) for c in counts], label=name)
    ax.set_xlabel("time since first event (s)")
    ax.set_ylabel("events/s")
    ax.set_title("event rate")
    if len(times) <= 20:
        ax.legend(fontsize="small")
    if lat is not None:
        ax2 = axes[1][0]
        if lat.durations:
            ax2.hist([d / 1e3 for d in lat.durations], bins=50)
        ax2.set_xlabel("latency (µs)")
        ax2.set_ylabel("pairs")
        ax2.set_title(f"{begin} -> {end}: {lat.count} pairs")
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out
