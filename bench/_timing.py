"""What the benchmarks share: the timing loop and the baseline call."""

import time
from itertools import repeat

S10 = "abcdefghij"  # the 10-character string every per-event figure records


def best_ns_per_call(fn, n: int, repeats: int) -> float:
    """Best of ``repeats`` runs of fn(n), in ns per call."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def empty(a, b):
    """The baseline: an empty Python function taking what a tracepoint takes."""


def loop_of(f):
    """n calls of f(1, S10), as a function of n."""

    def loop(n):
        for _ in repeat(None, n):
            f(1, S10)

    return loop
