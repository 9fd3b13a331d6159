"""A probe removed while its own call is being recorded (a __repr__ of an argument removes it; another
thread could do the same while the GIL is released): the call records its entry with what it read
before, or nothing, and never reads the freed probe. argv: OUT. Run with PYTHONMALLOC=debug, which fills
freed memory, so that a read of it fails loudly."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_targets"))

import ptarget as T  # noqa: E402

import ust  # noqa: E402
from ust.instrument import probes as P  # noqa: E402


class RemovesTheProbe:
    def __repr__(self):
        P.PROBES.apply([])
        return "removed"


def nested_with_repr():
    def inner(obj):  # 3.11: probed through the frame-evaluation hook
        return obj
    return inner


with ust.Session(sys.argv[1], events=["ptarget:*"]):
    for spec, call in (("ptarget:takes", lambda: T.takes(RemovesTheProbe())),
                       ("ptarget:untyped", lambda: T.untyped(RemovesTheProbe(), RemovesTheProbe()))):
        for _ in range(3):
            assert P.PROBES.apply([P.ProbeSpec(spec)])[0]["state"] == "installed"
            call()
            call()  # not probed any more
    inner = nested_with_repr()
    for _ in range(3):
        st = P.PROBES.apply([P.ProbeSpec("__main__:nested_with_repr.<locals>.inner")])
        assert st[0]["state"] == "installed", st
        inner(RemovesTheProbe())
print("ok")
