"""Kernel domain benchmark (root, tracefs): what the capture sustains and what it costs.

    python bench/bench_kernel.py [--seconds 3] [--buffer-kb 4096]

1. Page conversion alone: events/s of the C converter and of the Python
   reference on real pages (all system calls + sched_switch of this machine).
2. A system-call flood: one process per CPU calls getppid() as fast as it can
   for ``--seconds`` while a KernelCapture records their entries and exits
   (buffer ``--buffer-kb`` per CPU, discard mode): events written per second,
   events lost (the ring's own counters), the drain's CPU time.
3. The cost to the traced program: ns per getppid() untraced, and traced (the
   same loop, its system calls recorded and drained), as a ratio of the two,
   both measured in this run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from ust.kernel import pages  # noqa: E402
from ust.kernel.capture import KernelCapture  # noqa: E402

FLOOD = r"""
import os, sys, time
sys.stdin.readline()
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    for _ in range(1000):
        os.getppid()
    n += 1000
print(n, flush=True)
"""

LOOP = r"""
import os, sys, time
n = int(sys.argv[1])
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        os.getppid()
    best = min(best, (time.perf_counter_ns() - t0) / n)
print(best)
"""


def conversion(out: str) -> None:
    c = KernelCapture(f"bench-conv-{os.getpid()}", out, buffer_size_kb=8192)
    try:
        c.enable(["sched_switch"])
        c.enable(["*"], syscalls=True)
        c.instance.start()
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            os.getppid()
        c.instance.stop()
        got = c.instance.read_pages()
        for name, cls in (("C", pages.converter_class()), ("Python", pages.PyConverter)):
            conv = cls(c.plans, True)
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                n = sum(conv.page(p)[1] for p in got)
                best = min(best, time.perf_counter() - t0)
            print(f"conversion ({name:6}): {n / best / 1e6:8.1f} M events/s ({len(got)} pages, {n} events)")
    finally:
        c.destroy()


def flood(out: str, seconds: float, buffer_kb: int) -> None:
    ncpu = os.cpu_count() or 1
    procs = [subprocess.Popen([sys.executable, "-c", FLOOD, str(seconds)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(ncpu)]
    c = KernelCapture(f"bench-flood-{os.getpid()}", out, buffer_size_kb=buffer_kb)
    try:
        c.enable(["getppid"], syscalls=True)
        c.instance.set_pids([p.pid for p in procs])
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c.start()
        t0 = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        calls = sum(int(p.stdout.readline()) for p in procs)
        elapsed = time.monotonic() - t0
        c.stop()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        written = sum(c.events().values())
        lost = sum(c.lost_by_ring().values())
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        print(f"flood: {ncpu} processes, {calls} getppid calls = {2 * calls} events in {elapsed:.2f} s: "
              f"{written / elapsed / 1e6:.2f} M events/s written, {lost} lost "
              f"({100 * lost / max(2 * calls, 1):.2f} %), drain CPU {cpu:.2f} s "
              f"({100 * cpu / elapsed:.0f} % of one CPU)")
    finally:
        for p in procs:
            p.wait()
        c.destroy()


def cost(out: str, n: int = 200_000) -> None:
    def run():
        return float(subprocess.run([sys.executable, "-c", LOOP, str(n)], capture_output=True, text=True,
                                    check=True).stdout)

    off = run()
    c = KernelCapture(f"bench-cost-{os.getpid()}", out)
    try:
        c.enable(["getppid"], syscalls=True)
        c.start()
        on = run()
        c.stop()
        lost = sum(c.lost_by_ring().values())
    finally:
        c.destroy()
    print(f"cost: getppid() {off:.0f} ns untraced, {on:.0f} ns traced ({on / off:.2f}x), {lost} lost")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--buffer-kb", type=int, default=4096)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_kernel: needs root (tracefs instances); skipped")
        return 0
    with tempfile.TemporaryDirectory() as d:
        conversion(os.path.join(d, "conv"))
        flood(os.path.join(d, "flood"), args.seconds, args.buffer_kb)
        cost(os.path.join(d, "cost"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
