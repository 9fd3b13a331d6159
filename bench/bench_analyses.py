"""Analyses benchmark: `ust stats` against `ust view`, `ust export --format parquet` peak memory.

    python bench/bench_analyses.py [--events N] [--keep DIR] [--repeat R]

Generates the reader benchmark's trace (bench_reader.make_trace: two per-CPU
streams, three-integer events and integer + string events, half each), then runs,
each in a fresh process on the same trace in this run:

  * `ust view TRACE > /dev/null` (the baseline)
  * `ust stats TRACE > /dev/null`          -> time, and its ratio to `ust view`
  * `ust export TRACE --format parquet`    -> time and peak RSS (ru_maxrss of that process)

Timings are wall-clock, best of R runs; peak RSS is the largest of the runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from bench_reader import make_trace  # noqa: E402


def run(cmd):
    """(wall seconds, peak RSS in MB) of one process running ``cmd``, stdout discarded."""
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=null, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read()
        p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode(errors='replace')}")
    return dt, usage.ru_maxrss / 1024


def best(cmd, repeat, before=None):
    times, peaks = [], []
    for _ in range(repeat):
        if before is not None:
            before()
        dt, rss = run(cmd)
        times.append(dt)
        peaks.append(rss)
    return min(times), max(peaks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", help="write the trace here and keep it")
    args = ap.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="ust-bench-")
    trace = os.path.join(tmp, "trace")
    if not os.path.exists(os.path.join(trace, "metadata")):
        t0 = time.perf_counter()
        make_trace(trace, args.events)
        print(f"generated {args.events} events in {time.perf_counter() - t0:.1f} s: {trace}")
    os.environ["PYTHONPATH"] = os.path.join(HERE, "..", "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    ust = [sys.executable, "-m", "ust.cli"]
    out = os.path.join(tmp, "parquet")
    size = sum(os.path.getsize(os.path.join(trace, f)) for f in os.listdir(trace))
    print(f"trace: {args.events:,} events, {size / 1e6:.0f} MB")
    view_t, view_rss = best(ust + ["view", trace], args.repeat)
    stats_t, stats_rss = best(ust + ["stats", trace], args.repeat)
    exp_t, exp_rss = best(ust + ["export", trace, "--format", "parquet", "-o", out], args.repeat,
                          before=lambda: shutil.rmtree(out, ignore_errors=True))
    print(f"  ust view             {view_t:7.2f} s  peak {view_rss:7.0f} MB")
    print(f"  ust stats            {stats_t:7.2f} s  peak {stats_rss:7.0f} MB  ratio stats / view: "
          f"{stats_t / view_t:.2f}x")
    print(f"  ust export parquet   {exp_t:7.2f} s  peak {exp_rss:7.0f} MB  "
          f"({exp_rss * 1024 * 1024 / args.events:.1f} B/event)")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
