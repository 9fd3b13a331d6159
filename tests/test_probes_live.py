"""Dynamic probes put on a running service from the CLI, as an SRE would (issue 11, the live half): what
tests/test_probes.py does not pin. Real daemons, real application processes, traces read with babeltrace2."""

import json
import os
import subprocess
import sys

from conftest import bt2_dump, events_of
from daemon_util import HERE, needs_bt, ust_env, wait_until  # noqa: F401

pytestmark = needs_bt
LIVE = os.path.join(HERE, "apps", "probe_live.py")


def _app_entry(env, pid):
    for a in env.client().list_apps():
        if a["pid"] == pid:
            return a
    return None


def _declared(env, pid, name):
    a = _app_entry(env, pid)
    return a is not None and any(t["name"] == name for t in a["tracepoints"])


def _probe_status(env, pid):
    a = _app_entry(env, pid)
    return {} if a is None else {p["target"]: (p["state"], p["detail"]) for p in a.get("probes", [])}


def _payloads(dump, name):
    return [e["payload"] for e in events_of(dump, name)]


def _run(app, code: str):
    return json.loads(app.send("run " + code.replace("\n", "\\n"))[3:])


def test_property_setter_deleter_and_cached_property(ust_env):
    """A property's three accessors share its qualname: the setter and the deleter were silently not
    probed (their events clashed with the getter's declaration, and the error was hidden behind
    "installed (1 function)"); a functools.cached_property was refused as "not a function". Now the
    setter and deleter are K.prop.setter / K.prop.deleter, and a failure is said in `ust list --apps`."""
    app = ust_env.app(LIVE)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "plive:Account.*,plive:two_lambdas.*")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "plive:Account.balance.deleter_return"), what="probes declared")
    status = _probe_status(ust_env, app.pid)
    assert status["plive:Account.*"] == ("installed", "5 functions")
    # two lambdas of one function, one qualname, other parameters: one probed, the other said
    state, detail = status["plive:two_lambdas.*"]
    assert state == "installed" and detail.startswith("1 function; not probed: plive:two_lambdas.<locals>.<lambda>")
    assert _run(app, "a = plive.Account()\na.balance = 5\nR = [a.balance, a.report]\ndel a.balance") == \
        [5, "balance 5"]
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    assert [p["value"] for p in _payloads(dump, "plive:Account.balance.setter_entry")] == [5]
    assert len(_payloads(dump, "plive:Account.balance.setter_return")) == 1
    assert [p["retval"] for p in _payloads(dump, "plive:Account.balance_return")] == [5]
    assert len(_payloads(dump, "plive:Account.balance.deleter_entry")) == 1
    assert _payloads(dump, "plive:Account.report_return") == [{"retval": "balance 5", "exception": "", "unfit": ""}]
    app.exit()


FORKED = """
import os, sys, ust
from ust.instrument import probes
def before(): return 1
def in_parent(): return 2
def in_child(): return 3
with ust.Session(sys.argv[1], events=["python:*"], mode="discard"):
    w = probes.WholeProgram(include=["__main__:*"], exclude=[]); w.start()
    before()
    pid = os.fork()
    if pid == 0:
        in_child()
        w.stop()
        os._exit(0)
    os.waitpid(pid, 0)
    in_parent()
    w.stop()
print(pid)
"""


def test_functions_ids_of_a_forked_child_are_its_own(tmp_path):
    """Whole-program tracing (`ust run --functions` of a program that forks workers): a forked child kept
    its parent's id base and counter, so the parent and the child gave the same id to different functions
    (in_child and in_parent: one id, two names in one trace). The child now numbers its functions under
    its own pid."""
    out = tmp_path / "trace"
    r = subprocess.run([sys.executable, "-c", FORKED, str(out)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "UST_AGENT": "0", "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")})
    assert r.returncode == 0, r.stderr[-3000:]
    child = int(r.stdout.split()[-1])
    dump = bt2_dump(out)
    infos = [e["payload"] for e in events_of(dump, "python:function_info")]
    names: dict = {}
    for p in infos:
        names.setdefault(p["id"], set()).add(p["qualname"])
    assert all(len(n) == 1 for n in names.values()), names
    by_name = {p["qualname"]: p["id"] for p in infos}
    assert by_name["in_child"] >> 32 == child
    assert by_name["in_parent"] >> 32 == by_name["before"] >> 32 != child
    entries = [next(iter(names[e["payload"]["id"]])) for e in events_of(dump, "python:function_entry")]
    assert entries.count("in_child") == entries.count("in_parent") == 1


def test_two_sessions_probe_the_same_function(ust_env):
    """Two sessions wanting the same function: the first probe installed served both, so session b's
    events of its own (another event name) were never recorded, and a's filter silently applied to b's
    calls too. Now b's events are an extra output of the function's probe, with its own filter and its
    own entry/return pairs (coroutines interleaved); the same events with another filter cannot be told
    apart in the trace and are refused in one line; stopping a leaves b's probe working, and the
    original code is back once both are gone."""
    app = ust_env.app(LIVE)
    ust_env.wait_registered(app.pid, 0)
    _run(app, "import asyncio, inspect, sys\nORIG = (plive.hot, plive.hot.__code__, str(inspect.signature(plive.hot)))")
    out_b = ust_env.out + "-b"
    ust_env.ust("create", "a", "-o", ust_env.out)
    ust_env.ust("enable-event", "-s", "a", "--function", "plive:hot", "--filter", "i >= 8")
    ust_env.ust("enable-event", "-s", "a", "--function", "plive:job")
    ust_env.ust("start", "a")
    ust_env.ust("create", "b", "-o", out_b)
    ust_env.ust("enable-event", "-s", "b", "--function", "plive:hot", "b:hot")
    ust_env.ust("enable-event", "-s", "b", "--function", "plive:job", "b:job", "--filter", "x >= 2")
    ust_env.ust("start", "b")
    rc, _, err = ust_env.ust("enable-event", "-s", "b", "--function", "plive:hot", check=False)
    assert rc != 0 and len(err.strip().splitlines()) == 1
    assert "probed already with other options" in err and "give this probe its own event name" in err
    wait_until(lambda: _declared(ust_env, app.pid, "b:job_return"), what="b's events declared")
    _run(app, "R = [plive.hot(i) for i in range(10)]\n"
              "async def main(): return await asyncio.gather(*[plive.job(x) for x in range(4)])\n"
              "R.append(asyncio.run(main()))")
    ust_env.ust("stop", "a")
    _run(app, "R = [plive.hot(i) for i in (10, 11)]")  # b's probe outlives a's
    ust_env.ust("stop", "b")
    same = _run(app, "R = [plive.hot is ORIG[0], plive.hot.__code__ is ORIG[1], "
                     "str(inspect.signature(plive.hot)) == ORIG[2], "
                     "[sys.monitoring.get_local_events(t, plive.hot.__code__) for t in range(6)] "
                     "if sys.version_info >= (3, 12) else []]")
    assert same[:3] == [True, True, True] and not any(same[3])
    a, b = bt2_dump(ust_env.out), bt2_dump(out_b)
    assert [p["i"] for p in _payloads(a, "plive:hot_entry")] == [8, 9]
    assert [p["retval"] for p in _payloads(a, "plive:hot_return")] == [9, 10]
    assert sorted(p["x"] for p in _payloads(a, "plive:job_entry")) == [0, 1, 2, 3]
    assert [p["i"] for p in _payloads(b, "b:hot_entry")] == list(range(12))
    assert [p["retval"] for p in _payloads(b, "b:hot_return")] == list(range(1, 13))
    # b's filter on the coroutine: the returns of exactly the calls it kept, though they interleave
    assert sorted(p["x"] for p in _payloads(b, "b:job_entry")) == [2, 3]
    assert sorted(p["retval"] for p in _payloads(b, "b:job_return")) == [20, 30]
    assert not events_of(b, "plive:hot_entry") and not events_of(a, "b:hot_entry")
    app.exit()


def test_probe_follows_a_reloaded_module(ust_env):
    """importlib.reload() makes the module's functions again: the probe stayed on the old ones (equal to
    the new code objects by value, so the import watcher's look found nothing new) and `ust list --apps`
    still said "installed" while the service's calls were no longer recorded. Now the probe moves to
    the new functions."""
    app = ust_env.app(LIVE)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "plive:hot")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "plive:hot_return"), what="probe declared")
    assert _run(app, "import importlib\nplive.hot(1)\nimportlib.reload(plive)\nR = [plive.hot(2), plive.hot(3)]") \
        == [3, 4]
    assert _probe_status(ust_env, app.pid)["plive:hot"] == ("installed", "1 function")
    ust_env.ust("stop")
    _run(app, "R = plive.hot(4)")  # stopped: not recorded, and the new function's code is its own again
    assert _run(app, "import sys\nR = [sys.monitoring.get_local_events(t, plive.hot.__code__) for t in range(6)] "
                     "if sys.version_info >= (3, 12) else [int('__ust_on' in plive.hot.__code__.co_varnames)]") \
        in ([0] * 6, [0])
    dump = bt2_dump(ust_env.out)
    assert [p["i"] for p in _payloads(dump, "plive:hot_entry")] == [1, 2, 3]
    assert [p["retval"] for p in _payloads(dump, "plive:hot_return")] == [2, 3, 4]
    app.exit()


def test_filter_on_a_field_the_entry_does_not_have_is_refused(ust_env):
    """A probe's filter runs at entry, on the parameters: one naming something else (`retval`, a typo,
    any field under --no-args) was accepted and then dropped every call, silently. Now it is refused in
    one line naming the field and the fields there are; nothing is left behind. Likewise a function
    the module imported from another one is refused saying where to probe it."""
    app = ust_env.app(LIVE)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "x:y")
    ust_env.ust("start")
    for extra in (("--filter", "retval > 3"), ("--filter", "i > 3", "--no-args")):
        rc, _, err = ust_env.ust("enable-event", "--function", "plive:hot", *extra, check=False)
        assert rc != 0 and len(err.strip().splitlines()) == 1, err
        assert "--filter names" in err and "not a field of plive:hot's entry" in err
    assert ust_env.client().get_session("s")["probes"] == []
    # a function imported from another module: where to probe it (it was "no function to_json in plive")
    rc, _, err = ust_env.ust("enable-event", "--function", "plive:to_json", check=False)
    assert rc != 0 and err.strip().endswith("plive:to_json is json:dumps: probe it there"), err
    ust_env.ust("enable-event", "--function", "plive:hot", "--filter", "i > 3 && $ctx.vtid > 0")
    wait_until(lambda: _declared(ust_env, app.pid, "plive:hot_return"), what="probe declared")
    _run(app, "R = [plive.hot(i) for i in range(6)]")
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    assert [p["i"] for p in _payloads(dump, "plive:hot_entry")] == [4, 5]
    app.exit()


def test_two_event_names_on_one_function_in_one_session(ust_env):
    """`enable-event --function plive:hot one:hot` then `... two:hot` in one session: the second replaced the
    first (one probe per target and channel) while one:hot's rules stayed enabled, so one:hot recorded
    nothing more with no word said. As in LTTng, where two enable-event with two names are two event rules,
    both now record every call (each with its own filter); `disable-event --function T NAME` removes that
    one (its rules too) and leaves the other working; `disable-event --function T` removes every probe on
    T; then the original code is back."""
    app = ust_env.app(LIVE)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "plive:hot", "one:hot")
    _, out, _ = ust_env.ust("enable-event", "--function", "plive:hot", "two:hot", "--filter", "i >= 2")
    assert "two:hot_entry" in out
    ust_env.ust("enable-event", "--function", "plive:hot")  # a third, under its own name
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "two:hot_return"), what="the second probe's events")
    _run(app, "R = [plive.hot(i) for i in range(4)]")
    _, out, _ = ust_env.ust("disable-event", "--function", "plive:hot", "one:hot")
    assert out.strip() == "1 function probe removed from session s"
    session = ust_env.client().get_session("s")
    assert sorted(p["event"] or p["target"] for p in session["probes"]) == ["plive:hot", "two:hot"]
    patterns = {r["pattern"] for r in session["rules"]}
    assert not {"one:hot_entry", "one:hot_return"} & patterns and "two:hot_entry" in patterns
    _run(app, "R = [plive.hot(i) for i in (4, 5)]")
    rc, _, err = ust_env.ust("disable-event", "--function", "plive:hot", "one:hot", check=False)
    assert rc != 0 and "no probe on plive:hot named one:hot" in err and len(err.strip().splitlines()) == 1, err
    _, out, _ = ust_env.ust("disable-event", "--function", "plive:hot")
    assert out.strip() == "2 function probes removed from session s"
    _run(app, "R = plive.hot(6)")
    ust_env.ust("stop")
    assert _run(app, "import sys\nR = [sys.monitoring.get_local_events(t, plive.hot.__code__) for t in range(6)] "
                     "if sys.version_info >= (3, 12) else [int('__ust_on' in plive.hot.__code__.co_varnames)]") \
        in ([0] * 6, [0])
    dump = bt2_dump(ust_env.out)
    assert [p["i"] for p in _payloads(dump, "one:hot_entry")] == [0, 1, 2, 3]
    assert [p["retval"] for p in _payloads(dump, "one:hot_return")] == [1, 2, 3, 4]
    assert [p["i"] for p in _payloads(dump, "two:hot_entry")] == [2, 3, 4, 5]
    assert [p["retval"] for p in _payloads(dump, "two:hot_return")] == [3, 4, 5, 6]
    assert [p["i"] for p in _payloads(dump, "plive:hot_entry")] == [0, 1, 2, 3, 4, 5]
    app.exit()


def test_nested_function_without_an_instance_has_typed_fields(ust_env):
    """A nested function probed before its enclosing function ever ran has no instance to read annotations
    from (they are evaluated each time the enclosing function runs): its fields were repr() text, so a
    filter `k >= 2` compared text with a number and dropped every call, silently. Its annotations are now
    read from the enclosing code that makes it, so its events are declared typed before its first call."""
    app = ust_env.app(LIVE)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "plive:nest.<locals>.inner", "--filter", "k >= 2")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "plive:nest.<locals>.inner_return"), what="probe declared")
    assert _run(app, "R = [plive.nest(i) for i in range(4)]") == [1, 2, 3, 4]
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    # int, a string annotation ("str"), bool: typed; list[int] and *rest: repr text
    assert _payloads(dump, "plive:nest.<locals>.inner_entry") == [
        {"k": 2, "label": "n2", "items": "[2]", "rest": "()", "flag": {"value": 0, "labels": ["false"]}, "unfit": ""},
        {"k": 3, "label": "n3", "items": "[3]", "rest": "()", "flag": {"value": 1, "labels": ["true"]}, "unfit": ""}]
    assert [p["retval"] for p in _payloads(dump, "plive:nest.<locals>.inner_return")] == [3, 4]
    app.exit()


def test_a_probed_function_sees_its_real_caller(ust_env):
    """On 3.11 a probed function ran one frame below a trampoline: sys._getframe(1) saw the trampoline,
    warnings.warn(stacklevel=2) pointed at the probed function's own file, a traceback had the function
    twice. The probe is now inside the function's own code (recompiled from its source, checked to compile
    to exactly the running code): its frame is the only one. (3.12+: sys.monitoring adds none either.)"""
    app = ust_env.app(LIVE)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "plive:caller_name,plive:warns,plive:fails")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "plive:fails_return"), what="probes declared")
    seen = _run(app, "import inspect, traceback, warnings\n"
                     "def from_here(): return plive.caller_name(1)\n"
                     "with warnings.catch_warnings(record=True) as w:\n"
                     "    warnings.simplefilter('always')\n"
                     "    plive.warns(2)\n"
                     "try:\n"
                     "    plive.fails(3)\n"
                     "except ValueError as e:\n"
                     "    tb = [f.name for f in traceback.extract_tb(e.__traceback__)]\n"
                     "R = [from_here(), w[0].filename, tb, str(inspect.signature(plive.fails))]")
    assert seen == ["from_here", "<string>", ["<module>", "fails"], "(x: int) -> int"]
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    assert _payloads(dump, "plive:caller_name_return") == [{"retval": "from_here", "exception": "", "unfit": ""}]
    assert _payloads(dump, "plive:warns_entry") == [{"x": 2, "unfit": ""}]
    assert _payloads(dump, "plive:fails_return") == [{"retval": 0, "exception": "ValueError", "unfit": ""}]
    app.exit()
