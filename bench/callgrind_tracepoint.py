"""Instructions per tracepoint call (callgrind): enabled (recorded into a ring buffer) and disabled, and the loop
alone, so that a change of the C core can be compared before/after on a shared machine (issue 9).

Each figure is the difference of two runs (N and 2N calls) divided by N, so start-up cancels out. No session and
no reader thread: the tracepoint is attached to a Channel of one overwrite Buffer per CPU (the process is pinned to
one CPU), which never fills, so every enabled call records.

    python bench/callgrind_tracepoint.py            # needs valgrind
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

N = 20000


def worker(mode: str, n: int) -> None:
    import ust
    from ust._ring import Buffer, Channel

    tp = ust.tracepoint("bench:tp", {"a": ust.int64, "b": ust.uint32})
    ncpu = os.sysconf("SC_NPROCESSORS_CONF")
    ch = Channel([Buffer.create(1 << 16, 4, overwrite=True, cpu=c) for c in range(ncpu)])
    if mode == "enabled":
        tp.attach(ch, 0)
    if mode == "loop":  # the loop's own cost
        for i in range(n):
            pass
        return
    for i in range(n):
        tp(i, 7)


def instructions(mode: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(["taskset", "-c", "0", "valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/out",
                            sys.executable, __file__, "--worker", mode, str(n)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": "0", "UST_AGENT": "0"})
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode != 0 or not m:
        raise SystemExit(f"callgrind run failed: {r.stderr[-2000:]}")
    return int(m.group(1))


def per_call(mode: str, n: int = N) -> float:
    return (instructions(mode, 2 * n) - instructions(mode, n)) / n


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]))
        return 0
    print(f"Python {sys.version.split()[0]}")
    loop = per_call("loop")
    for mode in ("disabled", "enabled"):
        v = per_call(mode)
        print(f"{mode:9s} tp(i, 7): {v - loop:7.1f} instructions per call (with the loop: {v:.1f})")
    print(f"empty loop:         {loop:7.1f} instructions per iteration")
    return 0


if __name__ == "__main__":
    sys.exit(main())
