"""Overlapping probe specs, added and removed in every order: the functions end as they began."""

import itertools
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_targets"))

import ptarget as T  # noqa: E402
from ust.instrument import probes as P  # noqa: E402

ORIG = {name: getattr(T, name).__code__ for name in ("add", "mixed", "gen")}
SPECS = [P.ProbeSpec("ptarget:*"), P.ProbeSpec("ptarget:add"), P.ProbeSpec("ptarget:m*")]


def probed(name) -> bool:
    fn = getattr(T, name)
    if P.MONITORING:
        tool = next((t for t in range(6) if sys.monitoring.get_tool(t) == "ust"), None)
        return tool is not None and sys.monitoring.get_local_events(tool, fn.__code__) != 0
    return fn.__code__ is not ORIG[name]


def check(order, active) -> None:
    wants = {n for n in ORIG if any(P.glob_regex(s.qualname).match(n) for s in active)}
    for n in ORIG:
        assert probed(n) == (n in wants), (order, n, [s.target for s in active])


for order in itertools.permutations(range(3)):
    active = []
    for i in order:
        active.append(SPECS[i])
        P.PROBES.apply(active)
        check(order, active)
    for i in order:
        active.remove(SPECS[i])
        P.PROBES.apply(active)
        check(order, active)
    assert all(getattr(T, n).__code__ is c for n, c in ORIG.items())
    assert T.add(1, 2) == 3 and list(T.gen(2)) == [0, 1]
print("ok")
