"""Dynamic probes benchmark (issue 11): ns per call added, as ratios against baselines of the same run.

  probe      a probed function (entry + return events, 2 typed int args) recording into a buffer,
             minus the same function untouched; the removed probe against the untouched function;
  functions  whole-program tracing (ust run --functions) on a recursive function, added ns per call,
             side by side with viztracer's (pip install 'ust[bench]').

    python bench/bench_probes.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from itertools import repeat

import ust
from ust.instrument import probes

from _timing import best_ns_per_call


def target(a: int, b: int) -> int:
    return a


def untyped(a, b):
    return a


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def calls_of_fib(n: int) -> int:
    return 1 if n < 2 else 1 + calls_of_fib(n - 1) + calls_of_fib(n - 2)


def loop(f):
    def run(n):
        for _ in repeat(None, n):
            f(1, 2)
    return run


def fib_loop(depth):
    def run(n):
        for _ in repeat(None, n):
            fib(depth)
    return run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, reps = (20_000, 3) if args.quick else (200_000, 7)
    mod = sys.modules[__name__].__name__
    hooks = probes._MONITOR.hooks
    whole = "frame-evaluation hook" if hooks is not None and hasattr(hooks, "eval_hook") else \
        "sys.monitoring" if probes.MONITORING else "profile function"
    print(f"Python {sys.version.split()[0]}, probes: "
          f"{'sys.monitoring' if probes.MONITORING else 'code swap (3.11)'}, --functions: {whole}")
    # overwrite mode: every event is written whatever the reader's speed (with a reader starved of CPU, a
    # full buffer would drop events cheaply and the probe would look faster than it is)
    with tempfile.TemporaryDirectory() as d, ust.Session(d, events=["bench:*", "python:*"], mode="overwrite",
                                                           subbuf_size=1 << 20,
                                                           num_subbuf=8):
        for name, fn in (("target", target), ("untyped", untyped)):
            plain = best_ns_per_call(loop(fn), n, reps)
            probes.PROBES.apply([probes.ProbeSpec(f"{mod}:{name}", event=f"bench:{name}")])
            probed = best_ns_per_call(loop(fn), n, reps)
            probes.PROBES.apply([])
            removed = best_ns_per_call(loop(fn), n, reps)
            print(f"probe on {name}(a, b){' typed int' if fn is target else ' (repr)'}: untouched {plain:.0f} ns, "
                  f"probed {probed:.0f} ns (+{probed - plain:.0f} ns per call, entry+return), "
                  f"removed {removed:.0f} ns ({removed / plain:.2f}x untouched)")
    depth = 15 if args.quick else 18
    per = calls_of_fib(depth)
    fn_reps = max(3, reps // 2)
    # whole-program tracing into a channel without context, then with vtid, as `ust run --functions` records
    # (each thread's calls paired apart): the figure compared with viztracer's is the latter
    for context in ((), ("vtid",)):
        with tempfile.TemporaryDirectory() as d, ust.Session(d, events=["python:*"], mode="overwrite",
                                                               subbuf_size=1 << 20, num_subbuf=8, context=context):
            plain = best_ns_per_call(fib_loop(depth), 5, fn_reps) / per
            whole = probes.WholeProgram(include=[f"{mod}:fib"], exclude=[])
            whole.start()
            # the steady state: every page of every CPU's buffer written once before the measurement (a
            # fresh session's first lap pays a page fault per 4 KiB of shared memory: ~+25 ns a call here)
            laps_bytes = 2 * (8 << 20) * (os.cpu_count() or 1)
            fib_loop(depth)(laps_bytes // (per * 2 * 14) + 1)
            traced = best_ns_per_call(fib_loop(depth), 5, fn_reps) / per
            whole.stop()
        print(f"--functions on fib({depth}) ({per} calls), context {', '.join(context) or 'none'}: untouched "
              f"{plain:.0f} ns/call, traced {traced:.0f} ns/call (+{traced - plain:.0f} ns)")
    try:
        from viztracer import VizTracer
    except ImportError:
        print("viztracer: not installed (pip install 'ust[bench]')")
        return 0
    tracer = VizTracer(verbose=0, tracer_entries=4_000_000)
    plain2 = best_ns_per_call(fib_loop(depth), 5, fn_reps) / per
    tracer.start()
    viz = best_ns_per_call(fib_loop(depth), 5, fn_reps) / per
    tracer.stop()
    tracer.clear()
    base = min(plain, plain2)  # the same untouched loop, measured before and after
    added_ust, added_viz = traced - base, viz - base
    print(f"viztracer on fib({depth}): {viz:.0f} ns/call (+{added_viz:.0f} ns); "
          f"ust run --functions (vtid) added cost = {added_ust / added_viz:.2f}x viztracer's (target <= 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
