"""Dynamic probes (issue 11): `ust enable-event --function` on a running application,
through the real daemons; traces read back with babeltrace2 (bt2)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import bt2_dump, events_of
from daemon_util import HERE, needs_bt, ust_env, wait_until  # noqa: F401

pytestmark = needs_bt
PROBED = os.path.join(HERE, "apps", "probed.py")
TRUE = {"value": 1, "labels": ["true"]}  # a boolean field, as bt2 shows it


def _declared(env, pid, name):
    for a in env.client().list_apps():
        if a["pid"] == pid:
            return any(t["name"] == name for t in a["tracepoints"])
    return False


def _probe_state(env, pid):
    for a in env.client().list_apps():
        if a["pid"] == pid:
            return {p["target"]: p["state"] for p in a.get("probes", [])}
    return {}


def _start_probed(env, *functions, extra=(), **app_env):
    app = env.app(PROBED, **app_env)
    env.wait_registered(app.pid, 0)
    env.ust("create", "s", "-o", env.out)
    env.ust("enable-event", "--function", ",".join(functions), *extra)
    env.ust("start")
    return app


def _payloads(dump, name):
    return [e["payload"] for e in events_of(dump, name)]


@pytest.mark.parametrize("paths", ["C", "pure"])
def test_every_kind_of_callable(ust_env, paths):
    """Every kind of callable; with the C per-call paths and with the Python ones (UST_PROBES_PURE=1)."""
    app = _start_probed(ust_env, "ptarget:*", **({"UST_PROBES_PURE": "1"} if paths == "pure" else {}))
    wait_until(lambda: _declared(ust_env, app.pid, "ptarget:add_entry"), what="probe events declared")
    app.send("run kinds")
    check = json.loads(app.send("check")[3:])
    assert check["identity"] and check["signature"]
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    P = lambda n: _payloads(dump, n)  # noqa: E731
    assert P("ptarget:add_entry") == [{"a": 1, "b": 2, "unfit": ""}]
    assert P("ptarget:add_return") == [{"retval": 3, "exception": "", "unfit": ""}]
    # typed from annotations: int, str, float, bool, bytes; *args / **kw as repr
    (mixed,) = P("ptarget:mixed_entry")
    assert mixed == {"a": 3, "b": "s", "c": 2.5, "d": TRUE, "_e_length": 2, "e": [1, 2], "args": "(9,)",
                     "kw": "{'z': 4}", "unfit": ""}
    assert P("ptarget:untyped_entry") == [{"x": "'hello'", "y": "[1, 2]"}]
    assert P("ptarget:untyped_return") == [{"retval": "['hello', [1, 2]]", "exception": ""}]
    assert P("ptarget:K.m_entry")[0]["x"] == 21 and P("ptarget:K.m_return")[0]["retval"] == 42
    assert P("ptarget:K.cm_entry")[0]["y"] == 4 and P("ptarget:K.cm_return")[0]["retval"] == 5
    assert P("ptarget:K.sm_entry") == [{"z": TRUE, "unfit": ""}]
    assert P("ptarget:K.prop_return")[0]["retval"] == 7
    # decorated: the wrapped function (via __wrapped__), under its own qualname
    assert P("ptarget:decorated_entry") == [{"q": 5, "unfit": ""}]
    assert P("ptarget:decorated_return")[0]["retval"] == 15
    # nested functions and closures by qualname: every instance, made before or after the probe (on 3.11
    # too, through the frame-evaluation hook; the pure-Python path reaches the instances alive at install)
    closures = [e["k"] for e in P("ptarget:make_closure.<locals>.closure_entry")]
    assert closures == ([1] if paths == "pure" and sys.version_info < (3, 12) else [1, 2])
    # typed from its annotations, though no instance was alive at install time (read from the enclosing code)
    if paths == "C" or sys.version_info >= (3, 12):
        assert P("ptarget:outer.<locals>.inner_entry") == [{"k": 1, "unfit": ""}]
        assert P("ptarget:outer.<locals>.inner_return") == [{"retval": 3, "exception": "", "unfit": ""}]
    # an argument captured by a closure (a cell) is read through its cell
    assert P("ptarget:outer_entry") == [{"n": 2, "unfit": ""}]
    # generator: one entry, one return at completion, with the return value
    assert P("ptarget:gen_entry") == [{"n": 2, "unfit": ""}]
    assert P("ptarget:gen_return") == [{"retval": "'done'", "exception": ""}]
    # coroutines: entry at start, return at completion; resumptions are not calls
    assert sorted(e["x"] for e in P("ptarget:coro_entry")) == [0, 1, 2, 5]
    assert sorted(e["retval"] for e in P("ptarget:coro_return")) == [0, 1, 2, 5]
    assert P("ptarget:agen_entry") == [{"n": 2, "unfit": ""}] and len(P("ptarget:agen_return")) == 1
    # exceptions
    assert P("ptarget:boom_entry") == [{"v": 7, "unfit": ""}]
    assert P("ptarget:boom_return") == [{"retval": 0, "exception": "KeyError", "unfit": ""}]
    # a repr that raises, an int that does not fit an int64
    assert P("ptarget:takes_entry") == [{"obj": "<repr failed: TypeError>"}]
    assert P("ptarget:big_entry") == [{"v": 0, "unfit": f"v={1 << 70}"}]
    app.exit()


def test_named_event_filter_and_removal(ust_env):
    app = _start_probed(ust_env, "ptarget:add", extra=("myapp:adder", "--filter", "a >= 198"))
    wait_until(lambda: _declared(ust_env, app.pid, "myapp:adder_entry"), what="probe events declared")
    app.send("run many")
    ust_env.ust("disable-event", "--function", "ptarget:add")
    wait_until(lambda: _probe_state(ust_env, app.pid) == {}, what="probe removed")
    check = json.loads(app.send("check")[3:])
    assert check["identity"] and check["signature"] and check["original_code"]
    if sys.version_info >= (3, 12):
        assert check["monitoring_events"] == 0
    app.send("run many")  # not recorded any more
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    assert [e["a"] for e in _payloads(dump, "myapp:adder_entry")] == [198, 199]
    assert [e["retval"] for e in _payloads(dump, "myapp:adder_return")] == [199, 200]
    app.exit()


def test_threads_have_their_own_calls(ust_env):
    app = ust_env.app(PROBED)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("add-context", "-t", "vtid")
    ust_env.ust("enable-event", "--function", "ptarget:add")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "ptarget:add_entry"), what="probe events declared")
    app.send("run threads")
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    by_tid: dict = {}
    for e in dump:
        if e.get("name", "").startswith("ptarget:add_"):
            by_tid.setdefault(e["context"]["vtid"], []).append(e["name"][-5:])
    assert len(by_tid) == 4
    for seq in by_tid.values():
        assert seq == ["entry", "eturn"] * 50


def test_module_imported_after_the_probe(ust_env):
    app = _start_probed(ust_env, "ptlate:late")
    wait_until(lambda: _probe_state(ust_env, app.pid).get("ptlate:late") == "pending", what="probe pending")
    _, out, _ = ust_env.ust("list", "--apps")
    assert "probe ptlate:late: pending (module ptlate is not imported (yet))" in out
    app.send("late")  # imports ptlate, calls late(41)
    # The import installs the probe at once; its events and its new state reach the daemon asynchronously
    # (never waited for), the state after the events: listed as installed, the probe records. Before, the
    # listing said "pending" for good (the daemon only heard of states in the answer to its probe set).
    wait_until(lambda: _probe_state(ust_env, app.pid).get("ptlate:late") == "installed", what="probe installed")
    assert _declared(ust_env, app.pid, "ptlate:late_return")
    _, out, _ = ust_env.ust("list", "--apps")
    assert "probe ptlate:late: installed (1 function)" in out
    app.send("late")
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    entries = _payloads(dump, "ptlate:late_entry")
    assert entries and entries == [{"v": 41, "unfit": ""}] * len(entries)
    assert _payloads(dump, "ptlate:late_return") == [{"retval": 42, "exception": "", "unfit": ""}] * len(entries)


def test_a_module_being_imported_when_the_probe_arrives(ust_env):
    """The probe arrives while the application is importing its module (in sys.modules, half executed:
    its functions are not all defined yet, and the agent never waits for an import): it is installed as
    soon as that import is over, though the application imports nothing after it."""
    app = ust_env.app(PROBED)
    ust_env.wait_registered(app.pid, 0)
    assert app.send("held") == "ok importing"  # the import of ptheld stops half-way
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "ptheld:held")
    ust_env.ust("start")
    wait_until(lambda: _probe_state(ust_env, app.pid).get("ptheld:held") == "pending", what="probe pending")
    _, out, _ = ust_env.ust("list", "--apps")
    assert "probe ptheld:held: pending (module ptheld is being imported)" in out
    assert app.send("go") == "ok"  # the import ends
    # The agent's thread probes it then and tells the daemon (the listing said "pending" for good before).
    wait_until(lambda: _probe_state(ust_env, app.pid).get("ptheld:held") == "installed", 60,
               "probe installed after the import")
    assert _declared(ust_env, app.pid, "ptheld:held_return")
    _, out, _ = ust_env.ust("list", "--apps")
    assert "probe ptheld:held: installed (1 function)" in out
    app.send("run held")
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    assert _payloads(dump, "ptheld:held_entry") == [{"v": 2, "unfit": ""}]
    assert _payloads(dump, "ptheld:held_return") == [{"retval": 6, "exception": "", "unfit": ""}]


@pytest.mark.parametrize("args, message", [
    (("--function", "nocolon"), "invalid function 'nocolon': expected MODULE:QUALNAME"),
    (("--function", "os:getpid"), "os:getpid is not a Python function (builtin_function_or_method)"),
    (("--function", "ptarget:a*", "x:y"), "needs exactly one function"),
    (("--function", "ptarget:add", "--repr-limit", "0"), "--repr-limit must be 1 to 65536"),
    (("--no-args", "x:y"), "--no-args and --repr-limit go with --function"),
])
def test_bad_input_is_refused_in_one_line(ust_env, args, message):
    app = ust_env.app(PROBED)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:x")
    ust_env.ust("start")
    rc, out, err = ust_env.ust("enable-event", *args, check=False)
    assert rc != 0
    assert message in err and len(err.strip().splitlines()) == 1, err
    # nothing was left behind: no probe, the app untouched
    assert json.loads(ust_env.client().get_session("s")["probes"] and "[1]" or "[]") == []
    check = json.loads(app.send("check")[3:])
    assert check["original_code"]
    app.exit()


CALLS = os.path.join(HERE, "apps", "calls.py")
FIB_CALLS = {5: 15, 4: 9, 2: 3}


def test_run_functions_names_stacks_and_analyses(ust_env):
    out = ust_env.out
    ust_env.ust("run", "--functions", "--include", "__main__:*", "-t", "vtid,asyncio_task", "-o", out, "--",
                sys.executable, CALLS)
    dump = bt2_dump(out)
    infos = {e["payload"]["id"]: e["payload"] for e in events_of(dump, "python:function_info")}
    names = {i: f"{p['module']}:{p['qualname']}" for i, p in infos.items()}
    # the statedump: once per code object, only what --include lets through
    assert sorted(names.values()) == sorted({"__main__:<module>", "__main__:fib", "__main__:in_thread",
                                             "__main__:fails", "__main__:main_async", "__main__:step",
                                             "__main__:main_async.<locals>.<genexpr>"})
    assert infos[next(i for i, n in names.items() if n == "__main__:fib")]["line"] == 7
    entries = [names[e["payload"]["id"]] for e in events_of(dump, "python:function_entry")]
    returns = [names[e["payload"]["id"]] for e in events_of(dump, "python:function_return")]
    assert entries.count("__main__:fib") == returns.count("__main__:fib") == 15 + 9 + 3 * 3  # fib(5), fib(4), 3 x fib(2)
    assert entries.count("__main__:fails") == returns.count("__main__:fails") == 1
    # the reader resolves ids: view, stats, latency, chrome export
    _, text, _ = ust_env.ust("view", out)
    assert 'function = "__main__:fib"' in text
    _, js, _ = ust_env.ust("stats", "--functions", "--json", out)
    st = json.loads(js)
    assert st["__main__:fib"]["calls"] == 33 and st["__main__:fails"]["calls"] == 1
    assert st["__main__:in_thread"]["self_ns"] < st["__main__:in_thread"]["total_ns"]
    # every task keeps its own stack: each step() is one call, not cut by the other tasks' calls, and its
    # resumptions are not calls (on 3.11 too: the frame-evaluation hook records what sys.monitoring would)
    assert st["__main__:step"]["calls"] == 3
    _, lat, _ = ust_env.ust("latency", "--function", "__main__:fib", "--json", out)
    assert json.loads(lat)["count"] == 33
    dest = os.path.join(ust_env.home, "t.json")
    ust_env.ust("export", "--format", "chrome", "-o", dest, out)
    with open(dest) as f:
        slices = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    assert sum(1 for e in slices if e["name"] == "__main__:fib") == 33
    worker = {e["tid"] for e in slices if e["name"] == "__main__:in_thread"}
    assert len(worker) == 1 and worker != {e["tid"] for e in slices if e["name"] == "__main__:<module>"}


def test_enable_function_star_on_a_running_program(ust_env):
    app = _start_probed(ust_env, "*")
    wait_until(lambda: _declared(ust_env, app.pid, "python:function_entry"), what="whole-program events")
    app.send("run add")
    app.send("run add")
    ust_env.ust("disable-event", "--function", "*")
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    names = {e["payload"]["id"]: e["payload"]["qualname"] for e in events_of(dump, "python:function_info")}
    calls = [names.get(e["payload"]["id"]) for e in events_of(dump, "python:function_entry")]
    assert calls.count("add") == 2
    assert _probe_state(ust_env, app.pid) == {}


COST = os.path.join(HERE, "apps", "probe_cost.py")
VALGRIND = __import__("shutil").which("valgrind")


def _instructions(mode, n, *extra):
    for _attempt in range(5):
        r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                            COST, mode, str(n), *extra],
                           env={**os.environ, "PYTHONHASHSEED": "0", "UST_AGENT": "0",
                                "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")},
                           capture_output=True, text=True, timeout=600)
        # valgrind itself is sometimes killed by SIGTRAP on this shared machine, even running a bare
        # `python -c pass`: a tool's death by a signal is tried again; any other failure is the test's
        if r.returncode >= 0:
            break
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stderr.splitlines() if "Collected :" in x)
    return int(line.split(":")[-1])


@pytest.mark.skipif(VALGRIND is None, reason="valgrind is not installed")
@pytest.mark.parametrize("target", ["function", "nested"])
def test_removal_restores_the_instruction_count(target):
    """Per call, in instructions (callgrind): a function probed then unprobed costs what it did untouched.
    nested: a nested function (3.11: its probe is read by the frame-evaluation hook, removed with the last
    such probe, after which calls are inlined again)."""
    extra = ("nested",) if target == "nested" else ()
    per_call = {}
    for mode in ("plain", "removed"):
        per_call[mode] = (_instructions(mode, 12000, *extra) - _instructions(mode, 2000, *extra)) / 10000
    # Nothing left behind costs instructions (3.13's counts move by ~2% either way between processes;
    # a leftover trampoline or monitoring event costs > 100%: see the probed figure in docs/probes.md).
    assert per_call["removed"] <= 1.03 * per_call["plain"], per_call


def test_hostile_probe_messages_are_refused():
    """What another process sends (the daemon's probe set; a client's request) is checked and bounded."""
    from ust.instrument.probes import MAX_SPECS, ProbeError, apply_for

    for bad in ("x", [{"target": 1}], [{"target": "m:f", "repr_limit": "9"}], [{"target": "m:f", "filter": 3}],
                [{"target": "no colon"}], [{"target": "m:f"}] * (MAX_SPECS + 1), [["m:f"]]):
        with pytest.raises(ProbeError):
            apply_for("test", bad)


def test_the_daemon_checks_the_probe_states_an_application_reports(ust_env):
    """`probe_status` (an application's report of its probes' states, made when a module is imported
    later) comes from another process: malformed reports change nothing, the states are bounded (256, 300
    characters a field), and a report older than the one kept (generations cross) is dropped."""
    import socket

    from ust.daemon import paths, protocol

    ust_env.ust("create", "s", "-o", ust_env.out)  # starts the daemon
    s = socket.socket(socket.AF_UNIX)
    s.connect(paths.socket_path(ust_env.home))
    protocol.send_msg(s, {"cmd": "register", "pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(),
                          "procname": "fake", "token": None, "tracepoints": [], "cmdline": "", "seq": 1})
    seq = 1

    def answered(msg):  # the worker runs an application's requests in order: a declare's answer says all ran
        nonlocal seq
        seq += 1
        protocol.send_msg(s, {"cmd": "probe_status", "seq": seq, **msg})
        seq += 1
        protocol.send_msg(s, {"cmd": "declare", "seq": seq, "tracepoints": []})
        while True:
            reply, fds = protocol.recv_msg(s)
            protocol.close_fds(fds)
            if reply.get("re") == seq:
                return next(a["probes"] for a in ust_env.client().list_apps() if a["pid"] == os.getpid())

    try:
        good = {"target": "m:f", "event": "", "state": "installed", "detail": "1 function"}
        assert answered({"generation": 5, "probes": [good]}) == [good]
        pending = {**good, "state": "pending"}
        for bad in ({"generation": 6, "probes": "x"}, {"generation": -1, "probes": [pending]},
                    {"generation": True, "probes": [pending]}, {"probes": [pending]},
                    {"generation": 4, "probes": [pending]}):  # older than the one kept: the reports crossed
            assert answered(bad) == [good]
        assert answered({"generation": 7, "probes": [5, None, ["m:f"], {"state": 3}]}) == [
            {"target": "", "event": "", "state": "3", "detail": ""}]  # what is not a state is skipped
        many = answered({"generation": 8, "probes": [{**good, "detail": "d" * 600}] * 1000})
        assert len(many) == 256 and all(st["detail"] == "d" * 300 for st in many)
    finally:
        s.close()


def test_bad_requests_to_the_daemon(ust_env):
    from ust.errors import UstError

    ust_env.ust("create", "s", "-o", ust_env.out)
    c = ust_env.client()
    for args in ({"targets": "m:f"}, {"targets": ["m:" + "f" * 600]}, {"targets": ["m:f"], "repr_limit": -1},
                 {"targets": ["m:f"], "args": "yes"}, {"targets": []}):
        with pytest.raises(UstError):
            c.call("enable_probe", session="s", **args)
    with pytest.raises(UstError, match="no probe on m:f"):
        c.call("disable_probe", session="s", targets=["m:f"])
    assert c.get_session("s")["probes"] == []


def test_overlapping_probes_install_once_and_restore_in_any_order():
    r = subprocess.run([sys.executable, os.path.join(HERE, "apps", "probe_overlap.py")], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "UST_AGENT": "0",
                                                     "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_application_started_after_the_probe(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "ptarget:add")
    ust_env.ust("start")
    app = ust_env.app(PROBED)
    wait_until(lambda: _declared(ust_env, app.pid, "ptarget:add_return"), what="probe installed at registration")
    app.send("run add")
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    assert _payloads(dump, "ptarget:add_entry") == [{"a": 1, "b": 2, "unfit": ""}]
    assert _payloads(dump, "ptarget:add_return") == [{"retval": 3, "exception": "", "unfit": ""}]


def test_no_args_and_repr_limit(ust_env):
    app = ust_env.app(PROBED)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "--function", "ptarget:mixed", "--no-args")
    ust_env.ust("enable-event", "--function", "ptarget:untyped", "--repr-limit", "3")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "ptarget:untyped_return"), what="probe events declared")
    app.send("run kinds")
    ust_env.ust("stop")
    dump = bt2_dump(ust_env.out)
    assert _payloads(dump, "ptarget:mixed_entry") == [{}]
    assert _payloads(dump, "ptarget:mixed_return") == [{"retval": "", "exception": ""}]
    assert _payloads(dump, "ptarget:untyped_entry") == [{"x": "'he", "y": "[1,"}]
    assert _payloads(dump, "ptarget:untyped_return") == [{"retval": "['h", "exception": ""}]


@pytest.mark.parametrize("flt, context, kept", [
    ("", "", True),                       # the direct path: the id goes straight into the ring
    ("id > 0", "", True),                 # a filter: the general path, which runs it
    ("id == 0", "", False),               # ... and drops what it rejects
    ("", "thread_name", True),            # a Python context: the general path, which adds it
    ("", "vtid", True),                   # vtid alone (ust run --functions): the direct path, with the thread id
    ("", "vtid,vpid", True),              # C contexts: the general path, which adds them
])
def test_function_ids_go_through_filters_and_contexts(tmp_path, flt, context, kept):
    out = tmp_path / "trace"
    r = subprocess.run([sys.executable, os.path.join(HERE, "apps", "functions_channel.py"), str(out), flt, context],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "UST_AGENT": "0", "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    dump = bt2_dump(out)
    infos = {e["payload"]["id"]: e["payload"]["qualname"] for e in events_of(dump, "python:function_info")}
    entries = events_of(dump, "python:function_entry")
    returns = events_of(dump, "python:function_return")
    if not kept:
        assert entries == returns == []
        return
    fib_id = next(i for i, q in infos.items() if q == "fib")
    assert fib_id >> 32 > 0  # pid << 32 | n: a uint64 beyond 32 bits, written whole
    assert [e["payload"]["id"] for e in entries] == [fib_id] * 15
    assert [e["payload"]["id"] for e in returns] == [fib_id] * 15
    if "thread_name" in context:
        assert {e["context"]["thread_name"] for e in entries + returns} == {"MainThread"}
    if "vtid" in context:  # the main thread's id is the process's, the ids' high half
        assert {e["context"]["vtid"] for e in entries + returns} == {fib_id >> 32}
    if "vpid" in context:
        assert {e["context"]["vpid"] for e in entries + returns} == {fib_id >> 32}


def test_probe_removed_while_its_call_is_recorded(tmp_path):
    """The per-call paths hold the probe's record while they may run Python (a __repr__, the slow path):
    removing the probe meanwhile must not free it under them (PYTHONMALLOC=debug fills freed memory)."""
    out = tmp_path / "trace"
    env = {**os.environ, "UST_AGENT": "0", "PYTHONMALLOC": "debug",
           "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")}
    r = subprocess.run([sys.executable, os.path.join(HERE, "apps", "probe_removed_midcall.py"), str(out)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-3000:])
    dump = bt2_dump(out)
    # each probed call records its entry (the repr it made); its return too on 3.11, whose trampoline was
    # running already, not on 3.12+, whose PY_RETURN event went with the probe
    assert [e["payload"]["obj"] for e in events_of(dump, "ptarget:takes_entry")] == ["removed"] * 3
    returns = [e["payload"] for e in events_of(dump, "ptarget:takes_return")]
    assert returns == ([] if sys.version_info >= (3, 12) else [{"retval": "1", "exception": ""}] * 3)


def test_functions_and_a_probe_on_the_same_function(tmp_path):
    """Whole-program tracing next to a probe records each call once in each: on 3.12/3.13 the calls are
    recorded by the frame-evaluation hook, not by global sys.monitoring PY_START/PY_RETURN events (their
    dispatch cost more than the hook, docs/probes.md), while the probe keeps its local events."""
    out = tmp_path / "trace"
    r = subprocess.run([sys.executable, os.path.join(HERE, "apps", "functions_with_probe.py"), str(out)],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "UST_AGENT": "0", "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")})
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "ok", r.stderr[-3000:]
    if sys.version_info >= (3, 12) and os.environ.get("UST_PROBES_PURE") != "1":
        import ust.instrument.probes as probes_mod
        if probes_mod._C is not None and hasattr(probes_mod._C.Hooks, "eval_hook"):
            # only the probe's exceptions (PY_UNWIND is global-only in CPython); no per-call global events
            assert r.stdout.splitlines()[0] == f"global-events {sys.monitoring.events.PY_UNWIND}"
    dump = bt2_dump(out)
    infos = {e["payload"]["id"]: e["payload"]["qualname"] for e in events_of(dump, "python:function_info")}
    entries = [infos[e["payload"]["id"]] for e in events_of(dump, "python:function_entry")]
    returns = [infos[e["payload"]["id"]] for e in events_of(dump, "python:function_return")]
    assert entries.count("fib") == returns.count("fib") == 15
    assert entries.count("fails") == returns.count("fails") == 1
    assert len(events_of(dump, "t:fib_entry")) == len(events_of(dump, "t:fib_return")) == 15


DEEP = """
import sys, tempfile, threading, ust
from ust.instrument import probes
def rec(n): return 0 if n == 0 else 1 + rec(n - 1)
limit, depth, stack_mib = (int(a) for a in sys.argv[1:4])
out = []
def run():
    try:
        out.append(rec(depth))
    except RecursionError:
        out.append("RecursionError")
sys.setrecursionlimit(limit)
with tempfile.TemporaryDirectory() as d, ust.Session(d, events=["python:*"], mode="overwrite"):
    w = probes.WholeProgram(include=["__main__:rec"], exclude=[]); w.start()
    if stack_mib:  # in a thread of that stack size
        threading.stack_size(stack_mib << 20)
        t = threading.Thread(target=run); t.start(); t.join()
    else:
        run()
    w.stop()
print(out[0])
"""


def run_deep(limit: int, depth: int, stack_mib: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DEEP, str(limit), str(depth), str(stack_mib)], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "UST_AGENT": "0", "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")})


@pytest.mark.parametrize("limit,depth,stack_mib", [(1000, 990, 0), (20000, 18000, 512)])
def test_functions_keep_the_recursion_depth_of_the_untraced_program(limit, depth, stack_mib):
    """3.12+: calls through the frame-evaluation hook are evaluated in C, each taking two units of the
    interpreter's C recursion limit (1,500 units on 3.12.1, 10,000 on 3.13.0), where an untraced
    (inlined) call takes none: the hook gives both back, so a recursion to 90 % of the Python limit works
    traced as untraced. Before: 990 deep raised RecursionError on 3.12 (one unit given back, limit 800),
    then 18,000 deep under a limit of 20,000 raised on 3.12 (at ~1,400) and 3.13 (at ~9,000)."""
    r = run_deep(limit, depth, stack_mib)
    assert r.returncode == 0 and r.stdout.split() == [str(depth)], (r.returncode, r.stdout, r.stderr[-2000:])


def test_functions_recursion_at_the_end_of_the_stack_raises_recursion_error():
    """A traced call takes C stack (the hook's evaluation), an untraced one none: with a limit raised far
    beyond what the thread's stack holds, the hook makes the interpreter raise RecursionError near the
    end of the stack instead of the process dying (it segfaulted on 3.11, where the limit is the only
    check; 3.12/3.13 now give their C units back, so they would too)."""
    r = run_deep(1_000_000, 200_000, 8)
    assert r.returncode == 0 and r.stdout.split() == ["RecursionError"], (r.returncode, r.stdout, r.stderr[-2000:])


MANY_PACKETS = """
import sys, tempfile, threading, ust
from ust.instrument import probes
def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)
out = sys.argv[1]
# 4 KiB packets: a fib(16) (3,193 calls, 6,386 events of 14 bytes) crosses ~22 of them per thread; room for
# every event (no loss in either mode), so the counts are exact
with ust.Session(out, events=["python:*"], mode=sys.argv[2], subbuf_size=4096, num_subbuf=256):
    w = probes.WholeProgram(include=["__main__:fib"], exclude=[]); w.start()
    threads = [threading.Thread(target=fib, args=(16,)) for _ in range(2)]
    for t in threads: t.start()
    fib(16)
    for t in threads: t.join()
    w.stop()
print("ok")
"""


@pytest.mark.parametrize("mode", ["discard", "overwrite"])
def test_functions_events_across_many_packets_from_threads(tmp_path, mode):
    """--functions' 8-byte events (ring_write_u64, a channel without contexts) find their packet's
    sub-buffer in a per-buffer cache, refreshed from the slot table at each new packet: three threads
    writing across many packets of the same per-CPU buffers must leave every entry and every return in
    packets babeltrace2 reads (a stale cache would put events in another packet's sub-buffer: lost or
    torn events, packets bt2 refuses)."""
    out = tmp_path / "trace"
    r = subprocess.run([sys.executable, "-c", MANY_PACKETS, str(out), mode], capture_output=True, text=True,
                       timeout=300,
                       env={**os.environ, "UST_AGENT": "0", "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    dump = bt2_dump(out)
    assert not any("discarded" in e for e in dump)
    infos = {e["payload"]["id"]: e["payload"]["qualname"] for e in events_of(dump, "python:function_info")}
    entries = events_of(dump, "python:function_entry")
    returns = events_of(dump, "python:function_return")
    assert {infos[e["payload"]["id"]] for e in entries + returns} == {"fib"}
    assert len(entries) == len(returns) == 3 * 3193
    streams = [f for f in out.rglob("*") if f.is_file() and f.name != "metadata" and f.suffix != ".idx"]
    assert sum(f.stat().st_size for f in streams) // 4096 > 20  # packets


READING = os.path.join(HERE, "apps", "functions_reading.py")
SRC_ENV = {"UST_AGENT": "0", "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")}


def _function_stats_json(trace):
    r = subprocess.run([sys.executable, "-m", "ust.cli", "stats", "--functions", "--json", str(trace)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **SRC_ENV})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _chrome_function_slices(trace, dest):
    """The function slices of `ust export --format chrome`, checked against the trace-event format's rules:
    complete events with a duration >= 0, and on each (pid, tid) track slices that nest (Perfetto shows
    overlapping slices of one track wrongly)."""
    r = subprocess.run([sys.executable, "-m", "ust.cli", "export", "--format", "chrome", "-o", str(dest), str(trace)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **SRC_ENV})
    assert r.returncode == 0, r.stderr[-2000:]
    with open(dest) as f:
        events = json.load(f)["traceEvents"]
    slices = [e for e in events if e.get("cat") == "function" and e["ph"] == "X"]  # "i": unfinished; "b"/"e": async
    tracks: dict = {}
    for e in slices:
        assert e["ph"] == "X" and e["dur"] >= 0 and isinstance(e["ts"], (int, float)), e
        tracks.setdefault((e["pid"], e["tid"]), []).append((e["ts"], -e["dur"]))
    for spans in tracks.values():
        ends: list = []
        for ts, neg in sorted(spans):
            while ends and ends[-1] <= ts:
                ends.pop()
            assert not ends or ts - neg <= ends[-1] + 1e-3, "overlapping slices on one track"
            ends.append(ts - neg)
    return slices


def test_run_functions_pairs_the_calls_of_interleaved_threads_apart(ust_env):
    """`ust run --functions` with threads: a() returns while b() runs in another thread. The 8-byte id
    events had no thread context, so the reader paired per CPU stream (or per process): a's return popped
    b's entry, and b's call was lost (0 calls). `ust run --functions` now adds the vtid context."""
    out = ust_env.out
    ust_env.ust("run", "-q", "--functions", "--include", "__main__:*", "-o", out, "--", sys.executable, READING,
                "threads")
    st = _function_stats_json(out)
    assert st["__main__:a"]["calls"] == 1 and st["__main__:b"]["calls"] == 1, st
    slices = _chrome_function_slices(out, os.path.join(ust_env.home, "t.json"))
    (a,) = [e for e in slices if e["name"] == "__main__:a"]
    (b,) = [e for e in slices if e["name"] == "__main__:b"]
    assert a["tid"] != b["tid"] and a["pid"] == b["pid"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_call_whose_thread_moved_to_another_cpu_is_paired(tmp_path):
    """No context (per-user buffers, one stream per CPU): outer()'s entry is in CPU 0's stream, its return in
    CPU 1's. The reader paired per stream, so outer was lost (stats, export); whole-program ids carry the
    pid, so it now pairs per process."""
    out = tmp_path / "trace"
    r = subprocess.run([sys.executable, READING, "migrate", str(out)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **SRC_ENV})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    entries = events_of(bt2_dump(out), "python:function_entry")
    assert len({e["cpu_id"] for e in entries}) == 2  # the trace really is split over CPUs
    st = _function_stats_json(out)
    assert st["__main__:outer"]["calls"] == 1 and st["__main__:inner"]["calls"] == 1, st
    slices = _chrome_function_slices(out, tmp_path / "t.json")
    assert sorted(e["name"] for e in slices) == ["__main__:inner", "__main__:outer"]
    assert len({(e["pid"], e["tid"]) for e in slices}) == 1  # the process's track, not a CPU's


def test_lost_events_never_pair_an_entry_with_another_calls_return(tmp_path):
    """Discard mode, buffers too small: events are lost in the middle of recursions of r(n) -> n. The pairer
    popped to the latest entry of the same function, so after a lost return an outer call's return closed
    an inner call's entry (r's entry n != its retval: wrong durations in stats, latency and export). A call
    whose span holds a loss of its trace is now left out (and counted as unpaired)."""
    from ust.analysis.functions import CallPairer, calls
    from ust.ctf import read_trace

    out = tmp_path / "trace"
    r = subprocess.run([sys.executable, READING, "losses", str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **SRC_ENV})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    lost = []
    assert sum(1 for _ in read_trace(str(out), lost.append)) > 0
    assert sum(d.count for d in lost) > 0  # the scenario did lose events
    pairer = CallPairer()
    paired = [(c.entry.fields["n"], c.ret.fields["retval"]) for c in calls(str(out), pairer=pairer)]
    assert paired and pairer.dropped > 0
    assert [p for p in paired if p[0] != p[1]] == []
    # r is a plain recursion: its total (outermost calls) is its calls' self times summed, losses or not
    # (an entry left without its return, under later calls of r, made them look nested: total < self)
    st = _function_stats_json(out)["t:r"]
    assert st["total_ns"] == st["self_ns"], st
    _chrome_function_slices(out, tmp_path / "t.json")
    text = subprocess.run([sys.executable, "-m", "ust.cli", "stats", "--functions", str(out)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **SRC_ENV}).stdout
    assert "events were lost" in text.splitlines()[-1]


def test_suspended_generators_and_coroutines_are_calls(ust_env):
    """A coroutine's or generator's return is recorded at its completion, after the frame that started it
    returned: asyncio tasks (traced without the asyncio_task context) and a generator finished by another
    function. The pairer dropped such entries when their starter returned, then their returns found no
    entry: task, amain and numbers made 0 calls. Their lives are now async slices in the Chrome export
    (they overlap their callers' slices)."""
    out = ust_env.out
    ust_env.ust("run", "-q", "--functions", "--include", "__main__:*", "-o", out, "--", sys.executable, READING,
                "suspended")
    st = _function_stats_json(out)
    assert {f: st.get(f, {}).get("calls") for f in ("__main__:task", "__main__:amain", "__main__:numbers",
                                                      "__main__:start", "__main__:finish", "__main__:inner")} == {
        "__main__:task": 10, "__main__:amain": 1, "__main__:numbers": 1, "__main__:start": 1,
        "__main__:finish": 1, "__main__:inner": 10}
    dest = os.path.join(ust_env.home, "t.json")
    _chrome_function_slices(out, dest)
    with open(dest) as f:
        events = json.load(f)["traceEvents"]
    begins = [e for e in events if e["ph"] == "b"]
    ends = {e["id"]: e for e in events if e["ph"] == "e"}
    # each task once: a complete slice when it completed on its stack, else an async slice
    assert sum(1 for e in events if e["name"] == "__main__:task" and e["ph"] in "Xb") == 10
    assert [e["name"] for e in begins].count("__main__:numbers") == 1
    assert all(ends[b["id"]]["ts"] >= b["ts"] and ends[b["id"]]["name"] == b["name"] for b in begins)
    assert len(ends) == len(begins)


@pytest.mark.parametrize("args", [("--include", "app.util"), ("--exclude", "app"), ("--include", ":f")])
def test_run_functions_refuses_a_pattern_that_is_not_module_colon_qualname(ust_env, args):
    """--include/--exclude match "module:qualname" whole: `--include app.util` matched nothing, and the run
    wrote an empty trace without a word. Now a one-line error, before anything runs or is written."""
    marker = os.path.join(ust_env.home, "ran")
    rc, _, err = ust_env.ust("run", "--functions", *args, "-o", ust_env.out, "--", sys.executable, "-c",
                             f"open({marker!r}, 'w')", check=False)
    assert rc != 0 and "is not MODULE:QUALNAME" in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(marker) and not os.path.exists(ust_env.out)


def test_stats_total_of_a_recursive_function_counts_its_time_once(ust_env):
    """`ust stats --functions` summed every call's duration: a recursive function's nested calls counted
    its time again at each level (fib's total was ~8x the whole program's). Total is now the time the
    function was on the stack, as cProfile's cumulative time: its outermost calls' durations (bt2's)."""
    code = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nfib(12)\nfib(12)\n"
    out = ust_env.out
    ust_env.ust("run", "-q", "--functions", "--include", "__main__:*", "-o", out, "--", sys.executable, "-c", code)
    st = _function_stats_json(out)
    dump = bt2_dump(out)
    fib_id = next(e["payload"]["id"] for e in events_of(dump, "python:function_info")
                  if e["payload"]["qualname"] == "fib")
    depth, begin, outermost = 0, None, []
    for e in dump:
        if e.get("name") in ("python:function_entry", "python:function_return") and e["payload"]["id"] == fib_id:
            if e["name"].endswith("entry"):
                depth += 1
                begin = e["ts"] if depth == 1 else begin
            else:
                depth -= 1
                if depth == 0:
                    outermost.append(e["ts"] - begin)
    assert len(outermost) == 2 and st["__main__:fib"]["calls"] == 2 * 465
    assert st["__main__:fib"]["total_ns"] == sum(outermost)
    assert st["__main__:fib"]["total_ns"] <= st["__main__:<module>"]["total_ns"]


def test_latency_of_a_function_not_in_the_trace_is_an_error(ust_env):
    """`ust latency --function` with a misspelt name printed "0 pairs" and succeeded, as if the function had
    never been called; it is now a one-line error naming it (a function that was seen is still measured)."""
    out = ust_env.out
    ust_env.ust("run", "-q", "--functions", "--include", "__main__:*", "-o", out, "--", sys.executable, "-c",
                "def leaf(): pass\nfor i in range(3): leaf()\n")
    _, js, _ = ust_env.ust("latency", "--function", "__main__:leaf", "--json", out)
    assert json.loads(js)["count"] == 3
    rc, _, err = ust_env.ust("latency", "--function", "__main__:lef", out, check=False)
    assert rc != 0 and "no function '__main__:lef' in this trace" in err and len(err.strip().splitlines()) == 1


def test_chrome_export_puts_each_process_of_a_run_on_its_own_track(ust_env):
    """`ust run --functions` records vtid, not vpid, into per-user buffers shared by the program's processes:
    the Chrome export put every thread of every process under one "process 1". A thread's whole-program
    ids carry its pid (pid << 32 | n): its events now go under that pid."""
    out = ust_env.out
    ust_env.ust("run", "-q", "--functions", "--include", "__main__:*", "--include", "__mp_main__:*", "-o", out,
                "--", sys.executable, READING, "spawn")
    slices = _chrome_function_slices(out, os.path.join(ust_env.home, "t.json"))
    workers = {(e["pid"], e["tid"]) for e in slices if e["name"] == "__mp_main__:work"}
    main = {(e["pid"], e["tid"]) for e in slices if e["name"] == "__main__:main"}
    assert len(workers) == 2 and len(main) == 1
    # each process's main thread: tid == pid, three different processes
    assert all(pid == tid for pid, tid in workers | main) and len({p for p, _ in workers | main}) == 3


def test_a_generator_finished_later_is_not_paired_with_an_abandoned_one(ust_env):
    """3.13 closes a generator suspended at a plain yield without running its frame: no return is recorded
    for it. A later generator of the same function, finished after its starter returned, closed the oldest
    set-aside entry (the abandoned one), so its call began at the abandoned generator's start. It now closes
    the latest: its call begins at its own entry (bt2's)."""
    out = ust_env.out
    ust_env.ust("run", "-q", "--functions", "--include", "__main__:*", "-o", out, "--", sys.executable, READING,
                "abandoned")
    from ust.analysis.functions import calls

    dump = bt2_dump(out)
    numbers = next(e["payload"]["id"] for e in events_of(dump, "python:function_info")
                   if e["payload"]["qualname"] == "numbers")
    entries = [e["ts"] for e in events_of(dump, "python:function_entry") if e["payload"]["id"] == numbers]
    returns = [e["ts"] for e in events_of(dump, "python:function_return") if e["payload"]["id"] == numbers]
    assert len(entries) == 2 and len(returns) == (1 if sys.version_info >= (3, 13) else 2)
    got = sorted((c.begin, c.end) for c in calls(out) if c.name == "__main__:numbers")
    assert got[-1][1] - got[-1][0] == returns[-1] - entries[1]  # bt2's clock values: ns from the clock's origin


def test_enable_function_star_on_a_busy_program_names_every_function(ust_env):
    """`enable-event --function '*'` on a program calling functions all the time: it sees them the moment the
    tracer is installed, before the daemon has attached python:function_info to the session's channel, and
    their names went nowhere (none in the trace: every call read as <function N>). Attaching
    python:function_info now writes the names seen so far (the statedump, as at `regenerate statedump`)."""
    app = ust_env.app(READING, "busy")
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("add-context", "-t", "vtid")
    ust_env.ust("enable-event", "--function", "*")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "python:function_entry"), what="whole-program events")
    app.send("run")  # a round trip: the program has run meanwhile
    ust_env.ust("stop")
    app.exit()
    dump = bt2_dump(ust_env.out)
    named = {e["payload"]["id"] for e in events_of(dump, "python:function_info")}
    called = {e["payload"]["id"] for e in events_of(dump, "python:function_entry")}
    assert called and called <= named, f"{len(called - named)} of {len(called)} functions have no name"
    # the return event is attached before the entry: a call begun while only one of them was attached
    # leaves a return without its entry (dropped by the reader), never an entry without its return, which
    # would stay open under the thread's later calls. Only the calls running at `stop` may have no return:
    # in the busy thread, work() and the inner() it calls (a leaf), nothing under or beside them
    from ust.analysis.functions import CallPairer, calls

    pairer = CallPairer()
    list(calls(ust_env.out, pairer=pairer))
    for stack in pairer.stacks.values():
        names = [pairer.names.name(e[0][1]) for e in stack]
        for i, name in enumerate(names):
            if name == "__main__:work":
                assert names[i + 1:] in ([], ["__main__:inner"]), names
            elif name == "__main__:inner":
                assert names[i + 1:] == [] and names[i - 1:i] == ["__main__:work"], names
    st = _function_stats_json(ust_env.out)
    assert st["__main__:work"]["calls"] > 0 and not [n for n in st if n.startswith("<function")], st


def _calls_by_thread(dump, names):
    """{vtid: [function name of each whole-program entry/return]}."""
    out: dict = {}
    for e in events_of(dump, "python:function_entry") + events_of(dump, "python:function_return"):
        out.setdefault(e["context"]["vtid"], []).append(names.get(e["payload"]["id"], "?"))
    return out


def _function_names(dump):
    return {e["payload"]["id"]: f"{e['payload']['module']}:{e['payload']['qualname']}"
            for e in events_of(dump, "python:function_info")}


def test_run_functions_records_none_of_the_agents_own_calls(ust_env):
    """The tracer must not trace itself: under `ust run --functions` the agent's thread (receiving the daemon's
    attach commands, answering them: socket, selectors, json, threading...) was traced like the program, and
    its calls filled the trace under a thread the program never started. Now a ust thread marks itself as a
    tracer's (as a profile function's own code is not profiled): none of its calls is recorded."""
    out = ust_env.out
    ust_env.ust("run", "-q", "--functions", "-t", "vpid", "-o", out, "--", sys.executable, READING, "alone")
    dump = bt2_dump(out)
    by_thread = _calls_by_thread(dump, _function_names(dump))
    (pid,) = {e["context"]["vpid"] for e in events_of(dump, "python:function_entry")}
    assert "__main__:inner" in by_thread.get(pid, [])
    others = {tid: sorted(set(names))[:10] for tid, names in by_thread.items() if tid != pid}
    assert others == {}, others


def test_enable_function_star_and_probes_record_none_of_the_agents_own_calls(ust_env):
    """`enable-event --function '*'` on a running program, and a probe on a function the agent's thread calls
    too (json:dumps, its protocol's encoder): the agent's own calls were recorded (its socket and json
    work applying the daemon's commands, each json.dumps of its messages). Only the program's are now."""
    app = ust_env.app(PROBED)
    ust_env.wait_registered(app.pid, 0)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("add-context", "-t", "vtid")
    ust_env.ust("enable-event", "--function", "*")
    ust_env.ust("enable-event", "--function", "json:dumps")
    ust_env.ust("start")
    wait_until(lambda: _declared(ust_env, app.pid, "python:function_entry"), what="whole-program events")
    wait_until(lambda: _declared(ust_env, app.pid, "json:dumps_return"), what="the probe's events")
    app.send("run add")
    app.send("check")  # one json.dumps in the program's thread
    ust_env.ust("enable-event", "app:x")  # more work for the agent's thread, while traced
    ust_env.ust("stop")
    app.exit()
    dump = bt2_dump(ust_env.out)
    by_thread = _calls_by_thread(dump, _function_names(dump))
    assert by_thread.get(app.pid, []).count("ptarget:add") == 2  # its entry and its return
    others = {tid: sorted(set(names))[:10] for tid, names in by_thread.items() if tid != app.pid}
    assert others == {}, others
    dumps = [e["context"]["vtid"] for e in events_of(dump, "json:dumps_entry")]
    assert dumps == [app.pid], dumps
