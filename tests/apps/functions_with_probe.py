"""Whole-program tracing of fib(5) and a probe on fib at once, into an embedded session: argv = OUT.

Prints the sys.monitoring events ust's tool has on while both run (3.12+; "-" before 3.12), then "ok".
Each call must be recorded once by each: on 3.12/3.13 the probe's sys.monitoring callbacks fire for fib
while the frame-evaluation hook records the whole-program ids (tests/test_probes.py)."""
import sys

import ust
from ust.instrument import probes


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def fails():
    raise KeyError("x")


out = sys.argv[1]
with ust.Session(out, events=["python:*", "t:*"]):
    probes.PROBES.apply([probes.ProbeSpec("__main__:fib", event="t:fib")])
    whole = probes.WholeProgram(include=["__main__:fib", "__main__:fails"], exclude=[])
    whole.start()
    fib(5)
    try:
        fails()
    except KeyError:
        pass
    if sys.version_info >= (3, 12):
        tool = probes._MONITOR.tool
        print("global-events", sys.monitoring.get_events(tool) if tool is not None else 0)
    else:
        print("global-events -")
    whole.stop()
    probes.PROBES.apply([])
print("ok")
