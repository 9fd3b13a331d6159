"""3.11's inline probes (docs/probes.md): the probe inside the probed function's own code must record each call
as its caller saw it, whatever the function's own code does after a `return`. Real daemons, a real application,
traces read with babeltrace2. (3.12+ runs the same checks through sys.monitoring.)"""

import json
import os

import pytest
from conftest import bt2_dump, events_of
from daemon_util import HERE, needs_bt, ust_env, wait_until  # noqa: F401

pytestmark = needs_bt
LIVE = os.path.join(HERE, "apps", "probe_live.py")


def _declared(env, pid, name):
    for a in env.client().list_apps():
        if a["pid"] == pid:
            return any(t["name"] == name for t in a["tracepoints"])
    return False


def _run(app, code: str):
    return json.loads(app.send("run " + code.replace("\n", "\\n"))[3:])


def _calls(dump, module):
    """Per function: its calls as [(entry, return), ...] in trace order, checking that every call of one thread
    has one entry and one return, properly nested."""
    calls: dict = {}
    stack: list = []
    for e in events_of(dump):
        name = e["name"]
        if not name.startswith(module + ":"):
            continue
        fn, _, kind = name[len(module) + 1:].rpartition("_")
        if kind == "entry":
            stack.append((fn, e["payload"]))
        else:
            assert stack and stack[-1][0] == fn, f"{name} without its entry: {e['payload']}"
            _, entry = stack.pop()
            calls.setdefault(fn, []).append((entry, e["payload"]))
    assert not stack, f"entries without their return: {stack}"
    return calls


SHAPES = """
import asyncio, pshapes
def outcome(f, *a):
    try:
        return ["ret", repr(f(*a))]
    except Exception as e:
        return ["exc", type(e).__name__]
R = {n: outcome(getattr(pshapes, n), 10) for n in
     ["finally_raises", "with_exit_raises", "finally_returns", "finally_swallows", "caught_after",
      "break_in_finally"]}
R["recurses_in_finally"] = outcome(pshapes.recurses_in_finally, 1)
R["guarded_generator"] = ["ret", repr(list(pshapes.guarded_generator(10)))]
R["guarded_coroutine"] = outcome(asyncio.run, pshapes.guarded_coroutine(10))
async def many():  # more frames waiting in their `finally:` at once than the record's slots (probes.c)
    return await asyncio.gather(*[pshapes.awaits_in_finally(i) for i in range(12)])
R["awaits_in_finally"] = asyncio.run(many())
R["stops_inside"] = outcome(list, pshapes.stops_inside())
"""


PATHS = {"C": {}, "pure": {"UST_PROBES_PURE": "1"}}  # the C per-call paths, and the Python ones


@pytest.mark.parametrize("paths", PATHS)
def test_a_return_that_the_functions_own_finally_or_with_exit_changes(ust_env, paths):
    """A return inside a `try:` with a `finally:`, or inside a `with` block, was recorded when the `return`
    statement ran; the `finally:` or the context manager's exit then raised (a second `_return`, with the
    exception), returned another value (a second `_return`), or dropped the return (`continue` in the
    `finally:`: one `_return` per loop turn). Now such a return is kept until the frame really leaves: one
    `_entry` and one `_return` per call, with what the caller saw. (And a StopIteration raised in a generator
    was recorded as such, where its caller gets a RuntimeError, PEP 479.)"""
    app = ust_env.app(LIVE, **PATHS[paths])
    ust_env.wait_registered(app.pid, 0)
    _run(app, "import pshapes\nR = 1")
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "pshapes:*")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "pshapes:guarded_coroutine_return"), what="probes declared")
    seen = _run(app, SHAPES)
    assert seen == {
        "finally_raises": ["exc", "Boom"], "with_exit_raises": ["exc", "Boom"], "finally_returns": ["ret", "11"],
        "finally_swallows": ["ret", "10"], "caught_after": ["ret", "-10"], "break_in_finally": ["ret", "2"],
        "recurses_in_finally": ["ret", "1"], "guarded_generator": ["ret", "[10]"],
        "guarded_coroutine": ["exc", "Boom"], "awaits_in_finally": list(range(12)),
        "stops_inside": ["exc", "RuntimeError"]}
    ust_env.ust("stop")
    calls = _calls(bt2_dump(ust_env.out), "pshapes")
    # interleaved coroutines: one entry and one return each, whatever the order
    awaited = calls.pop("awaits_in_finally")
    assert sorted(int(e["x"]) for e, _ in awaited) == sorted(int(r["retval"]) for _, r in awaited) == list(range(12))
    returns = {fn: [(r["retval"], r["exception"]) for _, r in c] for fn, c in calls.items()}
    assert returns == {
        "finally_raises": [("", "Boom")], "with_exit_raises": [("", "Boom")], "finally_returns": [("11", "")],
        "finally_swallows": [("10", "")], "caught_after": [("-10", "")], "break_in_finally": [("2", "")],
        "recurses_in_finally": [("0", ""), ("1", "")], "guarded_generator": [("20", "")],
        "guarded_coroutine": [("", "Boom")], "stops_inside": [("", "RuntimeError")],
        # exploding() is a generator probed too: entered at `with`, completed at its exit's raise
        "exploding": [("", "Boom")] * 2}
    app.exit()


@pytest.mark.parametrize("paths", PATHS)
def test_a_kept_return_of_a_call_the_filter_dropped(ust_env, paths):
    """A call the filter drops records neither event, also when its return waits for its `finally:`, which
    calls the function again (the frames' kept returns and dropped entries are told apart)."""
    app = ust_env.app(LIVE, **PATHS[paths])
    ust_env.wait_registered(app.pid, 0)
    _run(app, "import pshapes\nR = 1")
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "pshapes:recurses_in_finally", "--filter", "x != 1")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "pshapes:recurses_in_finally_return"), what="probes declared")
    assert _run(app, "R = [pshapes.recurses_in_finally(2), pshapes.recurses_in_finally(1)]") == [2, 1]
    ust_env.ust("stop")
    calls = _calls(bt2_dump(ust_env.out), "pshapes")
    assert [(e["x"], r["retval"]) for e, r in calls["recurses_in_finally"]] == [(0, "0"), (2, "2"), (0, "0")]
    app.exit()


LINES = """
import sys, traceback, pshapes
def lines(f, *a):
    seen = []
    def tracer(frame, event, arg):
        if frame.f_code.co_name == f.__name__:
            seen.append([event, frame.f_lineno])
        return tracer
    sys.settrace(tracer)
    try:
        f(*a)
    except ValueError as e:
        seen.append(["raised at", traceback.extract_tb(e.__traceback__)[-1].lineno])
    finally:
        sys.settrace(None)
    return seen
R = [lines(pshapes.raises_last, 1), lines(pshapes.plain, 1), lines(pshapes.plain, -1)]
"""


def test_lines_seen_in_a_probed_function(ust_env):
    """The inline code gave the body's last statement the def's line: a function ending with `raise` showed
    the def's line in its traceback. And the probe's entry was on the def's line: a line tracer (pdb, coverage)
    saw the def line run before the body. Now tracebacks and line events are those of the unprobed function
    (an exception leaving it still passes the probe's handler, on the def's line: docs/probes.md)."""
    app = ust_env.app(LIVE)
    ust_env.wait_registered(app.pid, 0)
    unprobed = _run(app, LINES)
    assert unprobed[0][-1] == ["raised at", unprobed[0][-2][1]]  # the `raise` line
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "pshapes:raises_last,pshapes:plain")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "pshapes:plain_return"), what="probes declared")
    probed = _run(app, LINES)
    assert probed[0][-1] == unprobed[0][-1]
    assert probed[1:] == unprobed[1:]
    ust_env.ust("stop")
    calls = _calls(bt2_dump(ust_env.out), "pshapes")
    assert [r["exception"] for _, r in calls["raises_last"]] == ["ValueError"]
    assert len(calls["plain"]) == 2
    app.exit()
