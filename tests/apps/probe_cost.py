"""Run under callgrind by tests/test_probes.py: N calls of a function, untouched / probed / after removal.

argv: MODE N   (MODE: plain, probed, removed)
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_targets"))

import ptarget  # noqa: E402
from ust.instrument import probes  # noqa: E402

mode, n = sys.argv[1], int(sys.argv[2])
if mode in ("probed", "removed"):
    probes.PROBES.apply([probes.ProbeSpec("ptarget:add")])
    ptarget.add(1, 2)
if mode == "removed":
    probes.PROBES.apply([])
    ptarget.add(1, 2)
else:
    ptarget.add(1, 2)
add = ptarget.add
for i in range(n):
    add(i, 1)
