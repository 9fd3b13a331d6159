"""Triggers (`ust add-trigger`, `list-triggers`, `remove-trigger`, `wait-trigger`, ``Client.notifications``): the
condition evaluated in real applications, the actions run by the real daemons, traces read with babeltrace2."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from daemon_util import needs_bt, read_events, ust_env, values, wait_until  # noqa: F401

COND = ("--condition", "event-rule-matches")


def _trigger(env, name):
    return next(t for t in env.client().list_triggers() if t["name"] == name)


def _enabled(app, tp):
    return app.send(f"enabled {tp}") == "ok True"


def test_notify_reaches_subscribers_with_filter_rate_policy_and_removal(ust_env):
    env = ust_env
    app = env.app()
    env.wait_registered(app.pid)
    assert not _enabled(app, "app:alpha")
    rc, so, se = env.ust("add-trigger", "--name", "big", *COND, "--type", "user", "--name", "app:*",
                         "--filter", "v >= 10", "--action", "notify", "--rate-policy", "every:2")
    assert so == "Added trigger `big`.\n"
    assert _enabled(app, "app:alpha")  # attached when add-trigger returns
    with env.client() as c:
        sub = c.notifications(["big"], timeout=60)
        app.send("emit app:alpha 14 0")  # v = 10..13 match: 4 matches, every:2 -> 2 notifications
        got = [next(sub), next(sub)]
    assert [(n["trigger"], n["event"], n["pid"]) for n in got] == [("big", "app:alpha", app.pid)] * 2
    wait_until(lambda: _trigger(env, "big")["hits"] == 4, what="4 matches counted")
    assert _trigger(env, "big")["actions"][0]["fired"] == 2
    rc, so, se = env.ust("list-triggers")
    assert so.startswith("- name: big\n  owner uid: 0\n  condition: event rule matches\n"
                         "    rule: app:* (type: user tracepoint, filter: v >= 10)\n    matches: 4\n"
                         "  action:notify, rate policy: every 2\n    fired: 2\n    errors: none\n")

    # the command-line subscriber: it prints what it got and exits after -n of them
    p = subprocess.Popen([sys.executable, "-m", "ust.cli", "wait-trigger", "big", "--json", "-n", "1", "-t", "120"],
                         env=env.env(UST_AGENT="0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    v = iter(range(100, 100000, 2))
    # it subscribes at some point after it starts: keep matching until it has heard one
    wait_until(lambda: app.send(f"emit app:beta 2 {next(v)}") and p.poll() is not None, timeout=120,
               what="wait-trigger to get a notification")
    out, err = p.communicate()
    assert p.returncode == 0, err
    line = json.loads(out)
    assert (line["trigger"], line["event"], line["pid"]) == ("big", "app:beta", app.pid)

    # removed: the application stops evaluating it (the tracepoint is detached), the name is free again
    assert env.ust("remove-trigger", "big")[1] == "Removed trigger `big`.\n"
    assert not _enabled(app, "app:alpha") and not _enabled(app, "app:beta")
    assert env.client().list_triggers() == []
    app.exit()


def test_a_trigger_attaches_in_applications_that_register_later_and_ignores_other_events(ust_env):
    env = ust_env
    env.ust("add-trigger", *COND, "--name", "other:*", "--log-level", "ERR..", "--action", "notify")
    [t] = env.client().list_triggers()
    assert t["name"] == "trigger1" and t["condition"]["loglevel_type"] == "range"
    app = env.app()
    env.wait_registered(app.pid)
    wait_until(lambda: _enabled(app, "other:delta"), what="the trigger attached in a new application")
    assert not _enabled(app, "app:alpha")
    with env.client() as c:
        sub = c.notifications(timeout=60)
        app.send("emit app:alpha 5 0")
        app.send("emit other:delta 1 0")
        n = next(sub)
    assert (n["trigger"], n["event"]) == ("trigger1", "other:delta")
    assert _trigger(env, "trigger1")["hits"] == 1
    app.exit()


@needs_bt
def test_error_event_snapshots_a_flight_recorder_exactly_once(ust_env, tmp_path):
    """The classic use: a flight-recorder session snapshots itself when an error event is recorded, once."""
    env = ust_env
    out = str(tmp_path / "fl")
    env.ust("create", "fl", "--snapshot", "-o", out)
    env.ust("enable-event", "app:*,other:*")
    app = env.app()
    env.wait_registered(app.pid)
    env.ust("start")
    env.ust("add-trigger", "--name", "on-error", *COND, "--name", "other:delta", "--action", "snapshot-session",
            "fl", "--rate-policy", "once-after:1")
    app.send("emit app:alpha 5 0")
    app.send("emit other:delta 3 100")  # three matches: one snapshot
    wait_until(lambda: _trigger(env, "on-error")["actions"][0]["fired"] == 1, what="the snapshot action")
    wait_until(lambda: glob.glob(f"{out}/snapshot-1-*"), what="the snapshot written")
    [snap] = glob.glob(f"{out}/snapshot-1-*")
    app.send("emit other:delta 3 200")
    assert _trigger(env, "on-error")["actions"][0] == {"type": "snapshot-session", "session": "fl",
                                                       "rate_policy": "once-after:1", "fired": 1, "errors": 0,
                                                       "last_error": None}
    assert glob.glob(f"{out}/snapshot-*") == [snap]
    events = read_events(snap)
    assert values(events, "app:alpha") == [0, 1, 2, 3, 4] and 100 in values(events, "other:delta")
    env.ust("stop")
    app.exit()


@needs_bt
def test_events_start_rotate_and_stop_a_session(ust_env, tmp_path):
    env = ust_env
    out = str(tmp_path / "s")
    env.ust("create", "s", "-o", out)
    env.ust("enable-event", "app:alpha")
    app = env.app()
    env.wait_registered(app.pid)
    env.ust("add-trigger", "--name", "go", *COND, "--name", "lvl:info", "--action", "start-session", "s")
    env.ust("add-trigger", "--name", "cut", *COND, "--name", "lvl:warn", "--action", "rotate-session", "s")
    env.ust("add-trigger", "--name", "halt", *COND, "--name", "lvl:crit", "--action", "stop-session", "s")

    def active():
        return env.client().get_session("s")["active"]

    app.send("emit app:alpha 5 0")  # not recorded: the session is not started
    app.send("emit lvl:info 1 0")
    wait_until(active, what="the session started by its trigger")
    wait_until(lambda: _enabled(app, "app:alpha"), what="alpha recording")
    app.send("emit app:alpha 5 10")
    app.send("emit lvl:warn 1 0")
    wait_until(lambda: glob.glob(f"{out}/archives/*"), what="the chunk rotated by its trigger")
    app.send("emit app:alpha 5 20")
    app.send("emit lvl:crit 1 0")
    wait_until(lambda: not active(), what="the session stopped by its trigger")
    app.send("emit app:alpha 5 30")  # not recorded: stopped
    app.exit()
    chunks = sorted(glob.glob(f"{out}/archives/*"))
    assert len(chunks) == 2
    assert [values(read_events(c), "app:alpha") for c in chunks] == [[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]]
    assert all(_trigger(env, n)["actions"][0]["errors"] == 0 for n in ("go", "cut", "halt"))


APP = textwrap.dedent("""
    import logging, sys
    logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger("warm").debug("declares the record's tracepoint")
    print("ready", flush=True)
    sys.stdin.readline()
    for name in ("app", "app.db", "other"):
        for level in (10, 20, 30, 40, 50):
            logging.getLogger(name).log(level, "%s %d", name, level)
""")


def test_python_log_records_fire_a_python_trigger(ust_env):
    env = ust_env
    env.ust("add-trigger", "--name", "db-errors", *COND, "--type", "python", "--name", "app.d*",
            "--log-level", "ERROR..", "--action", "notify")
    p = subprocess.Popen([sys.executable, "-c", "import ust\n" + APP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env.env(UST_LOGGING="1"))
    assert p.stdout.readline() == "ready\n"
    # listed once every session and trigger has been applied to it (the trigger is attached then)
    env.wait_registered(p.pid)
    with env.client() as c:
        sub = c.notifications(timeout=60)
        p.communicate("go\n", timeout=120)
        got = [next(sub), next(sub)]
    assert p.returncode == 0
    assert [(n["trigger"], n["event"], n["pid"]) for n in got] == [("db-errors", "lttng_python:event", p.pid)] * 2
    wait_until(lambda: _trigger(env, "db-errors")["hits"] == 2, what="2 matches")  # app.db 40 and 50 only


@pytest.mark.parametrize("args, error", [
    (["--name", "t", *COND, "--name", "a:*", "--action", "start-session", "nope"], "no session named 'nope'"),
    (["--name", "t", *COND, "--name", "a:*", "--action", "snapshot-session", "plain"],
     "session 'plain' is not a snapshot session (create it with --snapshot)"),
    (["--condition", "channel-buffer-usage-ge", "--action", "notify"], "condition channel-buffer-usage-ge needs --session"),
    (["--condition", "channel-buffer-usage-le", "--session", "plain", "--channel", "c", "--action", "notify"],
     "condition channel-buffer-usage-le needs one of --threshold-ratio and --threshold-size"),
    (["--condition", "channel-buffer-usage-ge", "--session", "plain", "--threshold-ratio", "0.5", "--action",
      "notify"], "condition channel-buffer-usage-ge needs --channel"),
    (["--condition", "channel-buffer-usage-ge", "--session", "plain", "--channel", "c", "--threshold-ratio", "1.5",
      "--action", "notify"], "threshold ratio 1.5 is out of range 0..1"),
    (["--condition", "channel-buffer-usage-ge", "--session", "plain", "--channel", "c", "--threshold-ratio", "x",
      "--action", "notify"], "bad --threshold-ratio 'x': expected a number in 0..1"),
    (["--condition", "session-consumed-size-ge", "--session", "plain", "--threshold-size", "1Q", "--action",
      "notify"], "invalid size '1Q': expected a number with an optional k, M or G suffix"),
    (["--condition", "session-consumed-size-ge", "--session", "plain", "--name", "a:*", "--action", "notify"],
     "--name does not apply to condition session-consumed-size-ge"),
    (["--condition", "often", "--action", "notify"], "unknown condition 'often' (one of event-rule-matches, "
     "channel-buffer-usage-ge, channel-buffer-usage-le, session-consumed-size-ge)"),
    ([*COND, "--type", "kernel:uprobe", "--name", "sched_switch", "--action", "notify"],
     "event rule type 'kernel:uprobe' is not supported: user, python, kernel, kernel:tracepoint, "
     "kernel:syscall[:entry|:exit|:entry+exit] (no kprobe nor uprobe: this kernel's ftrace has neither)"),
    ([*COND, "--type", "jul", "--name", "x", "--action", "notify"],
     "event rule type 'jul' is not supported: user, python, kernel, kernel:tracepoint, "
     "kernel:syscall[:entry|:exit|:entry+exit] (docs/lifecycle.md)"),
    ([*COND, "--name", "a:*", "--action", "notify", "--rate-policy", "often:2"],
     "bad rate policy 'often:2': expected every:N or once-after:N, N at least 1"),
    ([*COND, "--name", "a:*", "--action", "notify", "--rate-policy", "every:0"],
     "bad rate policy 'every:0': expected every:N or once-after:N, N at least 1"),
    ([*COND, "--name", "a:*"], "missing --action (notify, start-session S, stop-session S, rotate-session S, "
                               "snapshot-session S)"),
    (["--name", "t", "--action", "notify"], "missing --condition (event-rule-matches)"),
    ([*COND, "--name", "a:*", "--action", "notify", "x"], "action notify takes no argument"),
    ([*COND, "--name", "a:*", "--action", "stop-session"], "action stop-session takes one session name"),
    ([*COND, "--name", "a:*", "--action", "explode"], "unknown action 'explode' (one of notify, start-session, "
                                                      "stop-session, rotate-session, snapshot-session)"),
    ([*COND, "--name", "a:*", "--filter", "v >", "--action", "notify"], None),
    (["--name", "dup", *COND, "--name", "a:*", "--action", "notify"], "a trigger named 'dup' already exists"),
])
def test_bad_triggers_get_one_line_errors_and_change_nothing(ust_env, args, error):
    env = ust_env
    env.ust("create", "plain", "-o", os.path.join(env.home, "plain"))
    env.ust("add-trigger", "--name", "dup", *COND, "--name", "z:*", "--action", "notify")
    before = env.client().list_triggers()
    rc, so, se = env.ust("add-trigger", *args, check=False)
    assert rc != 0 and so == "" and se.count("\n") == 1 and se.startswith("ust: error: ")
    if error is not None:
        assert se == f"ust: error: {error}\n"
    assert env.client().list_triggers() == before


def test_remove_and_wait_for_a_missing_trigger(ust_env):
    rc, so, se = ust_env.ust("remove-trigger", "ghost", check=False)
    assert rc != 0 and se == "ust: error: no trigger named 'ghost'\n"
    rc, so, se = ust_env.ust("wait-trigger", "ghost", "-t", "1", check=False)
    assert rc != 0 and se == "ust: error: no trigger named 'ghost'\n"


def test_the_daemon_checks_what_applications_report(ust_env):
    """An application's trigger_hits are bounded and checked: a malformed report fires nothing, and a
    process may only fire the triggers it was given (those whose rule selects its tracepoints)."""
    import socket

    import ust
    from ust.daemon import paths, protocol
    from ust.instrument.tracepoint import declare

    env = ust_env
    env.ust("add-trigger", "--name", "t", *COND, "--name", "x:*", "--action", "notify")
    env.ust("add-trigger", "--name", "elsewhere", *COND, "--name", "y:*", "--action", "notify")
    tid, other = 1, 2
    decl = protocol.decl_to_json(declare("x:y", {"v": ust.int64}).decl)
    with env.client() as c:
        sub = c.notifications(timeout=5)
        s = socket.socket(socket.AF_UNIX)
        s.connect(paths.socket_path(env.home))
        protocol.send_msg(s, {"cmd": "register", "pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(),
                              "procname": "fake", "token": None, "tracepoints": [decl], "cmdline": "", "seq": 1})
        while True:  # answer the daemon's commands (it attaches trigger t) until registered
            msg, fds = protocol.recv_msg(s)
            protocol.close_fds(fds)
            if msg.get("re") == 1:
                break
            if "cmd" in msg:
                protocol.send_msg(s, {"ok": True, "re": msg["seq"]})
        for bad in ({"hits": "x"}, {"hits": [[tid, "x:y"]]}, {"hits": [[tid, "x:y", -1]]},
                    {"hits": [[tid, "x:y", True]]}, {"hits": [[999, "x:y", 1]]},
                    {"hits": [[other, "y:z", 1]]},  # a trigger it was not given: not its to fire {"hits": [[tid, 5, 1]]},
                    {"hits": [[tid, "x:y", 1]] * 5000}):
            protocol.send_msg(s, {"cmd": "trigger_hits", "seq": 2, **bad})
        protocol.send_msg(s, {"cmd": "trigger_hits", "seq": 3, "hits": [[tid, "x:y", 1]]})  # a good one, last
        n = next(sub)
        s.close()
    assert (n["trigger"], n["event"], n["hits"]) == ("t", "x:y", 1)  # the bad ones counted nothing


def test_add_trigger_options_mean_what_their_place_says():
    """lttng's parser: --name before --condition names the trigger, after it the rule; -x repeats; a rate policy
    belongs to the action before it; a log level LEVEL.. is a range, LEVEL alone exact."""
    from ust.cli import build_parser, glue_filter_values
    from ust.cli.trigger_cmds import parse_add_trigger

    argv = glue_filter_values(["add-trigger", "--name", "T", *COND, "--name", "a:*", "-x", "a:b,a:c", "-x", "a:d",
                               "--filter", "-v > 1", "--log-level", "WARNING", "--action", "notify",
                               "--action", "stop-session", "s", "--rate-policy", "once-after:3"])
    args = build_parser(only="add-trigger").parse_args(argv)
    assert parse_add_trigger(args.in_order) == {
        "name": "T", "pattern": "a:*", "python": False, "filter": "-v > 1", "exclusions": ["a:b", "a:c", "a:d"],
        "actions": [("notify", None, None), ("stop-session", "s", "once-after:3")],
        "loglevel": "WARNING", "loglevel_only": True}
    args = build_parser(only="add-trigger").parse_args(["add-trigger", *COND, "--log-level", "ERR..",
                                                        "--action", "notify"])
    kw = parse_add_trigger(args.in_order)
    assert (kw["name"], kw["pattern"], kw["loglevel"], kw["loglevel_only"]) == (None, "*", "ERR", False)


def test_a_forked_child_matches_triggers_from_the_fork_onwards(ust_env):
    """The child inherits its parent's trigger evaluation, as it inherits its tracepoints: matches right after
    os.fork(), before the child has registered, are counted and reported under the child's pid; a child that
    exits at once (atexit) still sends them."""
    env = ust_env
    app = env.app()
    env.wait_registered(app.pid)
    env.ust("add-trigger", "--name", "f", *COND, "--name", "app:alpha", "--filter", "v >= 100", "--action", "notify")
    assert _enabled(app, "app:alpha")
    with env.client() as c:
        sub = c.notifications(["f"], timeout=120)
        child = int(app.send("forkexit app:alpha 3 100").split()[1])  # three matches in the child, then exit
        got = [next(sub) for _ in range(3)]  # every:1, one notification per match
        app.send("emit app:alpha 2 100")  # the parent still matches, in its own name
        got += [next(sub), next(sub)]
    assert [(x["event"], x["pid"]) for x in got] == [("app:alpha", child)] * 3 + [("app:alpha", app.pid)] * 2
    wait_until(lambda: _trigger(env, "f")["hits"] == 5, what="3 matches in the child, 2 in the parent")
    app.exit()


CAPTURE_APP = textwrap.dedent("""
    import os, sys, threading
    import ust
    tp = ust.tracepoint("cap:ev", {"v": ust.int64, "s": ust.string, "arr": ust.array(ust.int64, 3)})
    threading.current_thread().name = "capturer"
    print(f"ready {os.getpid()}", flush=True)
    for line in sys.stdin:
        if line.strip() == "go":
            for v in range(6):
                tp(v, f"s{v}", [v, 10 * v, 100 * v])
            print("ok", flush=True)
        elif line.strip() == "enabled":
            print(f"ok {tp.enabled}", flush=True)
        else:
            break
""")


def test_captured_values_ride_with_the_notifications(ust_env, tmp_path):
    """--capture: payload fields (whole arrays and indexed elements), $ctx contexts; a reference the event
    lacks is unavailable (None); each notification carries the values of the match that fired it."""
    env = ust_env
    script = tmp_path / "cap.py"
    script.write_text(CAPTURE_APP)
    app = env.app(str(script))
    env.wait_registered(app.pid)
    env.ust("add-trigger", "--name", "c", *COND, "--name", "cap:ev", "--filter", "v >= 2",
            "--capture", "v", "--capture", "s", "--capture", "arr[1]", "--capture", "arr", "--capture", "$ctx.vpid",
            "--capture", "$ctx.thread_name", "--capture", "nothere", "--action", "notify", "--rate-policy", "every:2")
    assert app.send("enabled") == "ok True"
    assert _trigger(env, "c")["condition"]["captures"] == ["v", "s", "arr[1]", "arr", "$ctx.vpid",
                                                           "$ctx.thread_name", "nothere"]
    with env.client() as c:
        sub = c.notifications(["c"], timeout=120)
        app.send("go")  # v = 2, 3, 4, 5 match; every:2 fires at the 2nd and 4th match: v = 3 and v = 5
        got = [next(sub), next(sub)]
    assert [n["hits"] for n in got] == [2, 4]
    assert [n["captures"] for n in got] == [
        {"v": v, "s": f"s{v}", "arr[1]": 10 * v, "arr": [v, 10 * v, 100 * v], "$ctx.vpid": app.pid,
         "$ctx.thread_name": "capturer", "nothere": None} for v in (3, 5)]

    # the command-line subscriber prints them; it subscribes at some point after it starts
    p = subprocess.Popen([sys.executable, "-m", "ust.cli", "wait-trigger", "c", "-n", "1", "-t", "120"],
                         env=env.env(UST_AGENT="0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: app.send("go") and p.poll() is not None, timeout=120, what="wait-trigger to get one")
    out, err = p.communicate()
    assert p.returncode == 0, err
    m = re.match(rf"Trigger `c` fired: cap:ev in process {app.pid} \(match (\d+)\), captures: v = (\d),", out)
    assert m and m.group(2) in "35", out
    v = int(m.group(2))
    assert out == (f"Trigger `c` fired: cap:ev in process {app.pid} (match {m.group(1)}), captures: v = {v}, "
                   f's = "s{v}", arr[1] = {10 * v}, arr = [{v}, {10 * v}, {100 * v}], $ctx.vpid = {app.pid}, '
                   '$ctx.thread_name = "capturer", nothere = unavailable\n')
    assert "    captures:\n      - v\n      - s\n" in env.ust("list-triggers")[1]
    app.exit()


KILLED_APP = textwrap.dedent("""
    import os, signal, sys
    import ust
    tp = ust.tracepoint("sk:ev", {"v": ust.int64})
    print(f"ready {os.getpid()}", flush=True)
    for line in sys.stdin:
        if line.strip() == "enabled":
            print(f"ok {tp.enabled}", flush=True)
        elif line.startswith("go "):
            # the agent's thread never gets the GIL before the kill: none of these is reported
            sys.setswitchinterval(1000)
            for v in range(int(line.split()[1])):
                tp(v)
            os.kill(os.getpid(), signal.SIGKILL)
""")


def test_matches_of_a_process_sigkilled_right_after_them_are_not_lost(ust_env, tmp_path):
    """The agent adds each match to a counter it shares with the daemon: a process SIGKILLed before its agent's
    thread reported its matches still has them counted, and fired, when the daemon sees it gone."""
    env = ust_env
    script = tmp_path / "killed.py"
    script.write_text(KILLED_APP)
    env.ust("add-trigger", "--name", "k", *COND, "--name", "sk:ev", "--filter", "v >= 0", "--action", "notify",
            "--rate-policy", "every:100")
    apps = [env.app(str(script)) for _ in range(2)]
    for app in apps:
        env.wait_registered(app.pid)
        wait_until(lambda: app.send("enabled") == "ok True", what="the trigger attached")
    with env.client() as c:
        sub = c.notifications(["k"], timeout=120)
        for app, n, total in zip(apps, (500, 230), (500, 730)):
            app.proc.stdin.write(f"go {n}\n")
            app.proc.stdin.flush()
            assert app.proc.wait(60) == -9
            wait_until(lambda: _trigger(env, "k")["hits"] == total, what=f"{total} matches counted")
        got = [next(sub) for _ in range(7)]
    wait_until(lambda: _trigger(env, "k")["hits"] == 730, what="every match counted")
    assert [n["hits"] for n in got] == [100, 200, 300, 400, 500, 600, 700]
    assert [n["pid"] for n in got] == [apps[0].pid] * 5 + [apps[1].pid] * 2
    assert {n["event"] for n in got} == {"sk:ev"}


@pytest.mark.parametrize("capture, error", [
    ("v > 1", "bad capture 'v > 1': a capture is one reference, unexpected '>' at position 2"),
    ("3", "bad capture '3': a capture is a field or a context reference, got 3 at position 0"),
    ("arr[", "bad capture 'arr[': expected an integer index, got end of expression at position 4"),
])
def test_bad_captures_get_one_line_errors(ust_env, capture, error):
    rc, so, se = ust_env.ust("add-trigger", *COND, "--name", "a:*", "--capture", capture, "--action", "notify",
                             check=False)
    assert rc != 0 and se == f"ust: error: {error}\n"
    assert ust_env.client().list_triggers() == []


def test_the_daemon_checks_captured_values(ust_env):
    """Captured values come from the application: the daemon bounds and checks them (a hostile report fires
    nothing) and passes the good ones on."""
    import socket

    import ust
    from ust.daemon import paths, protocol
    from ust.instrument.tracepoint import declare

    env = ust_env
    env.ust("add-trigger", "--name", "t", *COND, "--name", "x:*", "--capture", "v", "--capture", "w",
            "--action", "notify")
    decl = protocol.decl_to_json(declare("x:cap", {"v": ust.int64}).decl)
    with env.client() as c:
        sub = c.notifications(timeout=5)
        s = socket.socket(socket.AF_UNIX)
        s.connect(paths.socket_path(env.home))
        protocol.send_msg(s, {"cmd": "register", "pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(),
                              "procname": "fake", "token": None, "tracepoints": [decl], "cmdline": "", "seq": 1})
        while True:
            msg, fds = protocol.recv_msg(s)
            protocol.close_fds(fds)
            if msg.get("re") == 1:
                break
            if "cmd" in msg:
                assert msg.get("captures") in (None, ["v", "w"])
                protocol.send_msg(s, {"ok": True, "re": msg["seq"]})
        for bad in ([[1]],  # one value for two captures
                    [[1, 2], [3, 4]],  # two matches' values for one match
                    [[1, "x" * 5000]], [[1, [[2]]]], [[1, {"a": 1}]], [[1, 1 << 70]], [[1, True]],
                    [[1, list(range(1000))]], "no"):
            protocol.send_msg(s, {"cmd": "trigger_hits", "seq": 2, "hits": [[1, "x:cap", 1, bad]]})
        # a good entry then a bad one: the report is dropped whole, the good one counts nothing either
        protocol.send_msg(s, {"cmd": "trigger_hits", "seq": 2, "hits": [[1, "x:cap", 1, [[5, "a"]]],
                                                                         [1, "x:cap", 1, [[5]]]]})
        protocol.send_msg(s, {"cmd": "trigger_hits", "seq": 3, "hits": [[1, "x:cap", 2, [[7, "ok"], [8, [1.5, None]]]]]})
        got = [next(sub), next(sub)]
        s.close()
    assert [(n["hits"], n["captures"]) for n in got] == [(1, {"v": 7, "w": "ok"}), (2, {"v": 8, "w": [1.5, None]})]


@needs_bt
def test_a_flight_recorder_snapshots_itself_when_its_channel_is_90_percent_full(ust_env, tmp_path):
    """channel-buffer-usage-ge/le, sampled every --monitor-timer: -le holds at once on empty buffers (and
    so proves the sampling runs), -ge fires when the app has filled its buffer, once (it stays full)."""
    env = ust_env
    out = str(tmp_path / "fl")
    env.ust("create", "fl", "--snapshot", "-o", out)
    env.ust("enable-channel", "small", "--subbuf-size", "4096", "--num-subbuf", "2", "--monitor-timer", "100000")
    env.ust("enable-event", "app:alpha", "-c", "small")
    app = env.app()
    env.wait_registered(app.pid)
    env.ust("start")
    env.ust("add-trigger", "--name", "full", "--condition", "channel-buffer-usage-ge", "--session", "fl",
            "--channel", "small", "--threshold-ratio", "0.9", "--action", "snapshot-session", "fl",
            "--action", "notify")
    with env.client() as c:
        # subscribed before the -le trigger exists: it holds at its first sample, 0.1 s after add-trigger,
        # and a subscription only sees what fires after it was made
        sub = c.notifications(["full", "empty"], timeout=120)
        env.ust("add-trigger", "--name", "empty", "--condition", "channel-buffer-usage-le", "--session", "fl",
                "--channel", "small", "--threshold-size", "1k", "--action", "notify")
        first = next(sub)
        assert (first["trigger"], first["session"], first["channel"], first["buffer_capacity"]) == \
            ("empty", "fl", "small", 8192)
        assert first["buffer_usage"] <= 1024
        assert _trigger(env, "full")["hits"] == 0  # sampled with -le, and not full
        app.send("emit app:alpha 2000 0")  # far more than 8 KiB: the buffer it writes is full
        n = next(sub)
    assert (n["trigger"], n["session"], n["channel"]) == ("full", "fl", "small")
    assert n["buffer_usage_ratio"] >= 0.9 and n["buffer_usage"] >= 0.9 * 8192
    wait_until(lambda: _trigger(env, "full")["actions"][0]["fired"] == 1, what="the snapshot action")
    wait_until(lambda: glob.glob(f"{out}/snapshot-1-*"), what="the snapshot written")
    [snap] = glob.glob(f"{out}/snapshot-1-*")
    got = values(read_events(snap), "app:alpha")  # the events that filled it (the latest ones, as many as fit)
    assert got and got == sorted(got) and set(got) <= set(range(2000))
    assert _trigger(env, "full")["hits"] == 1  # fired when it became full, not at every sample since
    rc, so, se = env.ust("list-triggers")
    assert ("- name: full\n  owner uid: 0\n  condition: buffer usage high\n    session name: fl\n"
            "    channel name: small\n    threshold: ratio 0.9\n    matches: 1\n") in so
    env.ust("stop")
    app.exit()


@needs_bt
def test_a_session_rotates_when_it_has_consumed_a_size(ust_env, tmp_path):
    """session-consumed-size-ge: what the consumer wrote since the session began, across chunks."""
    env = ust_env
    out = str(tmp_path / "s")
    env.ust("create", "s", "-o", out)
    env.ust("enable-channel", "ch", "--subbuf-size", "4096", "--num-subbuf", "64", "--monitor-timer", "100000")
    env.ust("enable-event", "app:alpha", "-c", "ch")
    app = env.app()
    env.wait_registered(app.pid)
    env.ust("start")
    env.ust("add-trigger", "--name", "big", "--condition", "session-consumed-size-ge", "--session", "s",
            "--threshold-size", "64k", "--action", "rotate-session", "s", "--action", "notify")
    with env.client() as c:
        sub = c.notifications(["big"], timeout=120)
        for start in range(0, 6000, 500):  # 256 KiB buffers hold it all: nothing is discarded
            app.send(f"emit app:alpha 500 {start}")
        n = next(sub)
    assert n["session"] == "s" and n["consumed_size"] >= 64 * 1024
    wait_until(lambda: glob.glob(f"{out}/archives/*"), what="the chunk rotated by its trigger")
    wait_until(lambda: _trigger(env, "big")["actions"][0]["fired"] == 1 and
               _trigger(env, "big")["actions"][0]["errors"] == 0, what="the rotation done")
    env.ust("stop")
    app.exit()
    got = sorted(v for chunk in glob.glob(f"{out}/archives/*") for v in values(read_events(chunk), "app:alpha"))
    assert got == list(range(6000))  # every event in exactly one chunk
    assert _trigger(env, "big")["hits"] == 1  # consumed only grows: it became true once


MI_TRIGGER_STEPS = [
    "add-trigger --name t1 --condition event-rule-matches --type user --name app:* --filter v>1 --log-level WARNING.. "
    "-x app:b --capture v --capture $ctx.vpid --capture arr[2] --capture $app.contextvar:x --action notify "
    "--action snapshot-session fl --rate-policy once-after:3",
    "add-trigger --name t2 --condition event-rule-matches --type python --name x --log-level ERROR "
    "--action start-session fl --rate-policy every:2",
    "list-triggers",
    "remove-trigger t1",
]


def test_trigger_commands_mi_is_lttngs(ust_env, tmp_path):
    """`--mi xml` of add-trigger, list-triggers and remove-trigger: lttng's documents (the element paths the real
    `lttng --mi xml` writes for the same commands, valid against its mi-lttng-4.1.xsd, buffer conditions
    included); `--mi json` is the same tree; wait-trigger's document carries the notifications."""
    from test_lifecycle import MI_SCRIPT, _lttng_usable, _mi_paths

    env = ust_env
    env.ust("create", "fl", "--snapshot", "-o", str(tmp_path / "fl"))
    ours = {}
    for step in MI_TRIGGER_STEPS:
        rc, so, se = env.ust("--mi", "xml", *step.split())
        ours[step] = so
    for step in ("add-trigger --name b1 --condition channel-buffer-usage-le --session fl --channel channel0 "
                 "--threshold-size 4k --action notify",
                 "add-trigger --name b2 --condition session-consumed-size-ge --session fl --threshold-size 100M "
                 "--action rotate-session fl", "list-triggers"):
        rc, so, se = env.ust("--mi", "xml", *step.split())
        ours["buffers: " + step] = so
    xsd = "/usr/share/xml/lttng/mi-lttng-4.1.xsd"
    if os.path.exists(xsd) and shutil.which("xmllint"):
        for i, doc in enumerate(ours.values()):
            (tmp_path / f"{i}.xml").write_text(doc)
            r = subprocess.run(["xmllint", "--noout", "--schema", xsd, str(tmp_path / f"{i}.xml")],
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr + doc
    listed = json.loads(env.ust("--mi", "json", "list-triggers")[1])["command"]
    assert listed["name"] == "list-trigger" and "success" not in listed
    b1 = next(t for t in listed["output"]["triggers"] if t["name"] == "b1")
    assert b1["condition"]["condition_buffer_usage_low"] == {"session_name": "fl", "channel_name": "channel0",
                                                             "domain": "UST", "threshold_bytes": 4096}
    t2 = next(t for t in listed["output"]["triggers"] if t["name"] == "t2")
    assert t2["action"]["action_list"][0]["action_start_session"] == {
        "session_name": "fl", "rate_policy": {"rate_policy_every_n": {"interval": 2}}}
    rc, so, se = env.ust("--mi", "xml", "remove-trigger", "nope", check=False)
    assert rc != 0 and se == "ust: error: no trigger named 'nope'\n" and "<success>false</success>" in so

    if _lttng_usable():
        home = tmp_path / "lttnghome"
        home.mkdir()
        steps = [f"create fl --snapshot -o {tmp_path}/lttng"] + MI_TRIGGER_STEPS
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", MI_SCRIPT, "sh", str(home),
                            str(tmp_path / "lttng"), *steps], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        theirs = {}
        for chunk in r.stdout.split("=== ")[1:]:
            step, _, doc = chunk.partition("\n")
            theirs[step] = doc
        for step in MI_TRIGGER_STEPS:
            assert _mi_paths(ours[step]) == _mi_paths(theirs[step]), step


def test_wait_trigger_mi_json_carries_the_notifications(ust_env):
    env = ust_env
    app = env.app()
    env.wait_registered(app.pid)
    env.ust("add-trigger", "--name", "w", *COND, "--name", "app:alpha", "--capture", "v", "--action", "notify")
    assert _enabled(app, "app:alpha")
    p = subprocess.Popen([sys.executable, "-m", "ust.cli", "--mi", "json", "wait-trigger", "w", "-n", "1", "-t", "120"],
                         env=env.env(UST_AGENT="0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: app.send("emit app:alpha 1 7") and p.poll() is not None, timeout=120,
               what="wait-trigger to get one")
    out, err = p.communicate()
    assert p.returncode == 0, err
    doc = json.loads(out)["command"]
    assert doc["name"] == "wait-trigger" and doc["success"] is True
    [n] = doc["output"]["notifications"]
    assert (n["trigger"], n["event"], n["pid"], n["captures"]) == ("w", "app:alpha", app.pid,
                                                                    [{"expression": "v", "value": "7"}])
    app.exit()
