"""Run under callgrind by tests/test_probes.py: N calls of a function, untouched / probed / after removal.

argv: MODE N [nested]   (MODE: plain, probed, removed; nested: the probe is on outer.<locals>.inner and the
loop calls outer(), which makes an instance of inner and calls it)
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_targets"))

import ptarget  # noqa: E402
from ust.instrument import probes  # noqa: E402

mode, n = sys.argv[1], int(sys.argv[2])
nested = sys.argv[3:] == ["nested"]
spec = "ptarget:outer.<locals>.inner" if nested else "ptarget:add"
if mode in ("probed", "removed"):
    probes.PROBES.apply([probes.ProbeSpec(spec)])
    ptarget.add(1, 2), ptarget.outer(1)
if mode == "removed":
    probes.PROBES.apply([])
ptarget.add(1, 2), ptarget.outer(1)
if nested:
    outer = ptarget.outer
    for i in range(n):
        outer(i)
else:
    add = ptarget.add
    for i in range(n):
        add(i, 1)
