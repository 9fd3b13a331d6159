"""The reader's outputs, this tree against a baseline tree, in the same run.

    python bench/bench_view_modes.py --baseline OTHER_SRC [--events N] [--repeat R] [--keep DIR]

OTHER_SRC is the ``src`` directory of another checkout with its extensions built
in place (e.g. a copy of the tree before a change). Generates the reader
benchmark's trace (bench_reader.make_trace), then times, each in a fresh process,
alternating the two trees, best of R:

  * `ust view TRACE`                                   (the C text path)
  * `ust view TRACE --filter 'id > 10 && id < 1000'` (selective: ~1,000 events)
  * `ust view TRACE --json`
  * `ust stats TRACE`

and prints each one's CPU time (user + system: steadier than wall time on a shared
machine) with the ratio this / baseline (lower is faster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)
sys.path.insert(0, SRC)

from bench_reader import make_trace  # noqa: E402

MODES = [
    ("ust view", ["view"]),
    ("ust view --filter", ["view", "--filter", "id > 10 && id < 1000"]),
    ("ust view --json", ["view", "--json"]),
    ("ust stats", ["stats"]),
]


def run(src, args, trace):
    """CPU seconds (user + system) of one run: on a shared machine, steadier than wall time."""
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, "-m", "ust.cli", args[0], trace, *args[1:]]
    with open(os.devnull, "wb") as null:
        p = subprocess.Popen(cmd, stdout=null, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (PYTHONPATH={src})")
    return usage.ru_utime + usage.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="src directory of the tree to compare with")
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="write the trace here (reused when it exists) and keep it")
    ap.add_argument("--modes", help="comma-separated labels to run (default: all), e.g. 'ust view,ust stats'")
    a = ap.parse_args()
    tmp = None
    if a.keep:
        trace = a.keep
        if not os.path.exists(os.path.join(trace, "metadata")):
            make_trace(trace, a.events)
    else:
        tmp = tempfile.mkdtemp(prefix="ust-bench-modes-")
        trace = make_trace(os.path.join(tmp, "t"), a.events)
    try:
        print(f"{a.events} events, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; CPU time, best of {a.repeat}")
        for label, args in MODES:
            if a.modes and label not in a.modes.split(","):
                continue
            best = {"this": None, "base": None}
            for _ in range(a.repeat):
                for key, src in (("base", a.baseline), ("this", SRC)):
                    dt = run(src, args, trace)
                    best[key] = dt if best[key] is None else min(best[key], dt)
            print(f"  {label:20s} this {best['this']:6.2f} s   baseline {best['base']:6.2f} s   "
                  f"ratio {best['this'] / best['base']:.2f}", flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
