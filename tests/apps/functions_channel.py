"""Whole-program tracing of fib(5) into an embedded session: argv = OUT [FILTER] [CONTEXT].

The id events take the direct path into the ring only when the channel has no filter and no context but
vtid (CONTEXT: comma-separated); the others go through the general path (tests/test_probes.py checks both record the same)."""
import sys

import ust
from ust.instrument import probes


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


out = sys.argv[1]
flt = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
context = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else []
with ust.Session(out, events=["python:*"], filter=flt, context=context):
    whole = probes.WholeProgram(include=["__main__:fib"], exclude=[])
    whole.start()
    fib(5)
    whole.stop()
print("ok")
