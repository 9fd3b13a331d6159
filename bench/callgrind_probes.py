"""Instructions per call (callgrind) of a probed call and of --functions, next to viztracer's (issue 11).

Instruction counts are stable where times on a shared machine are not. Each figure is the difference
of two runs (N and 2N calls) divided by N; only the main thread is counted (the session's reader thread,
which runs when it likes, made the whole-process counts vary by about +-150 a call), and in it only the
measured loop (the session's start and final flush wait for other threads, longer on a loaded machine:
they made a figure of 640 read 154 once).

    python bench/callgrind_probes.py            # needs valgrind; viztracer optional
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile


def target(a: int, b: int) -> int:
    return a


def target_guarded(a: int, b: int) -> int:
    try:  # 3.11's inline probe keeps this return until the finally has run (docs/probes.md)
        return a
    finally:
        pass


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


FIB_DEPTH, FIB_CALLS = 12, 465  # calls of fib(12)


def worker(mode: str, n: int) -> None:
    import ust
    from ust.instrument import probes

    mod = __name__
    # overwrite mode: every event is written whatever the reader's speed (with a reader starved of CPU, a
    # full buffer would drop events cheaply and the probe would look faster than it is)
    with tempfile.TemporaryDirectory() as d, ust.Session(d, events=["bench:*", "python:*"], mode="overwrite",
                                                           subbuf_size=1 << 20,
                                                           num_subbuf=8):
        stop = lambda: None  # noqa: E731
        if mode == "probe":
            probes.PROBES.apply([probes.ProbeSpec(f"{mod}:target", event="bench:target")])
        elif mode == "guarded-probe":
            probes.PROBES.apply([probes.ProbeSpec(f"{mod}:target_guarded", event="bench:target")])
        elif mode == "functions":
            whole = probes.WholeProgram(include=[f"{mod}:fib"], exclude=[])
            whole.start()
            stop = whole.stop
        elif mode == "viztracer":
            from viztracer import VizTracer
            tracer = VizTracer(verbose=0, tracer_entries=4_000_000)
            tracer.start()
            stop = tracer.stop
        target(1, 2), fib(5)  # warm up
        # The loop runs inside functools.reduce, the only region callgrind counts (--toggle-collect): the
        # session's start and its flush at the end (waits whose length depends on the machine's load) stay out.
        if mode in ("plain-probe", "probe"):
            functools.reduce(lambda _, __: target(1, 2), range(n), None)
        elif mode in ("plain-guarded", "guarded-probe"):
            functools.reduce(lambda _, __: target_guarded(1, 2), range(n), None)
        else:
            functools.reduce(lambda _, __: fib(FIB_DEPTH), range(n), None)
        stop()
        probes.PROBES.apply([])


def instructions(mode: str, n: int) -> tuple[int, int]:
    """The main thread's instructions (the session's reader thread, which runs when it likes, apart), and
    those spent in sched_getcpu()."""
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes", "--collect-atstart=no",
                            "--toggle-collect=functools_reduce", f"--callgrind-out-file={d}/out",
                            sys.executable, __file__, "--worker", mode, str(n)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": "0", "UST_AGENT": "0"})
        try:
            with open(f"{d}/out-01") as f:
                m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
            a = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", f"{d}/out-01"],
                               capture_output=True, text=True).stdout
            cpu = sum(int(c.replace(",", "")) for c in
                      re.findall(r"^\s*([\d,]+) \([^)]*\)\s+\S*:sched_getcpu \[", a, re.M))
        except OSError:
            m, cpu = None, 0
    if r.returncode != 0 or not m:
        raise SystemExit(f"callgrind run failed: {r.stderr[-2000:]}")
    return int(m.group(1)), cpu


def per_call(mode: str, n: int, calls_per_iter: int) -> float:
    return per_call_split(mode, n, calls_per_iter)[0]


def per_call_split(mode: str, n: int, calls_per_iter: int) -> tuple[float, float]:
    """Instructions per call, and of them sched_getcpu()'s: under valgrind glibc's rseq registration is
    refused, so the ring asks sched_getcpu() for the CPU where it otherwise reads it from the rseq area
    (one load): that part is valgrind's, not what a traced program pays."""
    (t1, c1), (t2, c2) = instructions(mode, n), instructions(mode, 2 * n)
    return (t2 - t1) / (n * calls_per_iter), (c2 - c1) / (n * calls_per_iter)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]))
        return 0
    print(f"Python {sys.version.split()[0]}")
    plain = per_call("plain-probe", 3000, 1)
    probed, cpu = per_call_split("probe", 3000, 1)
    print(f"probe, 2 typed int args: untouched {plain:.0f}, probed {probed:.0f} instructions per call "
          f"(+{probed - plain:.0f}, entry+return; of which sched_getcpu, valgrind only: {cpu:.0f})")
    plain = per_call("plain-guarded", 3000, 1)
    probed, cpu = per_call_split("guarded-probe", 3000, 1)
    print(f"probe on a function returning inside try/finally: untouched {plain:.0f}, probed {probed:.0f} "
          f"instructions per call (+{probed - plain:.0f}; of which sched_getcpu, valgrind only: {cpu:.0f})")
    plain = per_call("plain-fib", 20, FIB_CALLS)
    traced, cpu = per_call_split("functions", 20, FIB_CALLS)
    print(f"--functions on fib({FIB_DEPTH}): untouched {plain:.0f}, traced {traced:.0f} instructions per call "
          f"(+{traced - plain:.0f}; of which sched_getcpu, valgrind only: {cpu:.0f})")
    try:
        import viztracer  # noqa: F401
    except ImportError:
        print("viztracer: not installed (pip install 'ust[bench]')")
        return 0
    viz = per_call("viztracer", 20, FIB_CALLS)
    print(f"viztracer on fib({FIB_DEPTH}): {viz:.0f} instructions per call (+{viz - plain:.0f}); "
          f"ust --functions = {(traced - plain) / (viz - plain):.2f}x viztracer's added instructions "
          f"({(traced - cpu - plain) / (viz - plain):.2f}x without valgrind's sched_getcpu)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
