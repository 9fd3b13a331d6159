"""End to end: real ust-sessiond / ust-consumerd, real application processes,
traces checked with babeltrace2. No timed assertions: conditions are polled."""

import glob
import os
import signal
import stat
import subprocess
import sys
import time

from daemon_util import SERVICE, counts, needs_bt, read_events, ust_env, values, wait_until  # noqa: F401

pytestmark = needs_bt


def test_app_started_before_session(ust_env):
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app.send("emit app:alpha 500")
    app.send("emit app:beta 10")  # not enabled
    ust_env.ust("stop")
    events = read_events(ust_env.out)
    assert values(events, "app:alpha") == list(range(500))
    assert counts(events) == {"app:alpha": 500}
    app.exit()


def test_app_started_after_session_and_late_tracepoint(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha,late:*")
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)

    def attached():
        return '"attached": 1' in app.send("agent")

    wait_until(attached, what="the rule to reach the new app")
    app.send("emit app:alpha 10")
    app.send("declare late:one INFO")
    # the declaration reaches the daemon asynchronously (the app never waits)
    wait_until(lambda: '"attached": 2' in app.send("agent"), what="late tracepoint attached")
    app.send("emit late:one 5")
    ust_env.ust("stop")
    events = read_events(ust_env.out)
    assert counts(events) == {"app:alpha": 10, "late:one": 5}


def test_runtime_enable_disable(ust_env):
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app.send("emit app:alpha 10 0")
    ust_env.ust("disable-event", "app:alpha")
    app.send("emit app:alpha 10 10")
    ust_env.ust("enable-event", "app:alpha")
    app.send("emit app:alpha 10 20")
    ust_env.ust("stop")
    app.send("emit app:alpha 10 30")  # stopped: not recorded
    ust_env.ust("start")
    app.send("emit app:alpha 10 40")
    ust_env.ust("stop")
    events = read_events(ust_env.out)
    assert values(events) == list(range(0, 10)) + list(range(20, 30)) + list(range(40, 50))


def test_wildcards_exclusions_filters_loglevels(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:*", "-x", "app:beta")
    ust_env.ust("enable-event", "other:delta", "--filter", "v >= 5 && v != 7")
    ust_env.ust("enable-event", "lvl:*", "--loglevel", "TRACE_WARNING")
    ust_env.ust("enable-event", "only:*", "--loglevel-only", "INFO")
    rc, _, err = ust_env.ust("enable-event", "x:y", "--filter", "v >= && 3", check=False)
    assert rc != 0 and "position" in err and err.count("\n") == 1
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 6' in app.send("agent"), what="rules applied")
    for name in ("app:alpha", "app:beta", "app:gamma", "other:delta", "lvl:crit", "lvl:warn", "lvl:info",
                 "only:info", "only:err"):
        app.send(f"emit {name} 10")
    ust_env.ust("stop")
    events = read_events(ust_env.out)
    assert counts(events) == {"app:alpha": 10, "app:gamma": 10, "other:delta": 4, "lvl:crit": 10,
                              "lvl:warn": 10, "only:info": 10}
    assert values(events, "other:delta") == [5, 6, 8, 9]


def test_per_uid_buffers_shared_by_processes(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("add-context", "-t", "vpid")
    ust_env.ust("start")
    a, b = ust_env.app(), ust_env.app()
    for app in (a, b):
        ust_env.wait_registered(app.pid)
        wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    a.send("emit app:alpha 100 0")
    b.send("emit app:alpha 100 1000")
    ust_env.ust("stop")
    dirs = glob.glob(os.path.join(ust_env.out, "ust", "uid", "*", "64-bit"))
    assert len(dirs) == 1
    events = read_events(ust_env.out)
    assert sorted(values(events)) == list(range(100)) + list(range(1000, 1100))
    pids = {int(rest.split("vpid = ")[1].split()[0].rstrip(",}")) for _, rest in events}
    assert pids == {a.pid, b.pid}


def test_per_pid_buffers(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-channel", "ch", "--buffers-pid", "--subbuf-size", "8k")
    ust_env.ust("enable-event", "app:alpha", "-c", "ch")
    ust_env.ust("start")
    a, b = ust_env.app(), ust_env.app()
    for app in (a, b):
        ust_env.wait_registered(app.pid)
        wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    a.send("emit app:alpha 300 0")
    b.send("emit app:alpha 300 1000")
    ust_env.ust("stop")
    dirs = sorted(glob.glob(os.path.join(ust_env.out, "ust", "pid", "*")))
    assert len(dirs) == 2
    by_pid = {}
    for d in dirs:
        by_pid[int(os.path.basename(d).split("-")[-3])] = values(read_events(d))
    assert by_pid == {a.pid: list(range(300)), b.pid: list(range(1000, 1300))}


def test_sigkill_app_loses_no_committed_event(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-channel", "channel0", "--subbuf-size", "4k", "--num-subbuf", "64")
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.proc.stdin.write("loop app:alpha\n")
    app.proc.stdin.flush()
    last = 0
    while last < 5000:
        last = int(app.proc.stdout.readline().split()[1])
    app.proc.send_signal(signal.SIGKILL)
    app.proc.wait()
    ust_env.ust("stop")
    events = read_events(ust_env.out)
    v = values(events)
    # Every event committed before the kill is there, in order, without a hole
    # (the buffer is large enough that nothing was discarded at this rate).
    assert len(v) >= last and v == list(range(len(v)))


def test_sigkill_consumer_tracing_goes_on(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-channel", "channel0", "--subbuf-size", "4k", "--num-subbuf", "64")
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.send("emit app:alpha 1000 0")
    c = ust_env.client()
    old = c.ping()["consumer_pid"]
    os.kill(old, signal.SIGKILL)
    app.send("emit app:alpha 1000 1000")  # while no consumer runs
    new = wait_until(lambda: (c.ping()["consumer_pid"] or 0) not in (0, old) and c.ping()["consumer_pid"],
                     what="a new consumer")
    assert new != old
    app.send("emit app:alpha 1000 2000")
    ust_env.ust("stop")
    v = values(read_events(ust_env.out))
    # Nothing committed is lost but at most the packet the dead consumer was writing out.
    assert set(range(1000, 3000)) <= set(v)
    assert len(set(v)) == len(v)


def test_snapshot_of_running_overwrite_session(ust_env):
    ust_env.ust("create", "s", "--snapshot", "-o", ust_env.out)
    ust_env.ust("enable-channel", "channel0", "--subbuf-size", "4k", "--num-subbuf", "4")
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.send("emit app:alpha 20000 0")  # far more than the buffers hold
    _, out, _ = ust_env.ust("snapshot", "record")
    snap = out.split("Snapshot recorded in ")[1].strip()
    v = values(read_events(snap))
    assert v and v[-1] == 19999 and v == list(range(v[0], 20000))  # the newest events, no hole, not torn
    app.send("emit app:alpha 10 50000")
    _, out, _ = ust_env.ust("snapshot", "record")
    snap2 = out.split("Snapshot recorded in ")[1].strip()
    assert snap2 != snap
    assert values(read_events(snap2))[-10:] == list(range(50000, 50010))
    s = ust_env.client().get_session("s")
    assert s["active"]


def test_ust_run_program_that_forks(ust_env):
    out = os.path.join(ust_env.home, "run")
    r = subprocess.run([sys.executable, "-m", "ust.cli", "run", "-o", out, "-t", "vpid", "--", sys.executable,
                        SERVICE, "--workers", "2", "--iterations", "30"],
                       env=ust_env.env(UST_AGENT="0"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"trace written in {out}" in r.stderr and "events" in r.stderr
    events = read_events(out)
    assert counts(events) == {"service:request": 60, "service:slow": 6, "service:tick": 1}
    pids = {rest.split("vpid = ")[1].split()[0].rstrip(",}") for _, rest in events}
    assert len(pids) == 3
    # ust run traces only its program: the session is gone, nothing else was recorded.
    assert ust_env.client().list_sessions() == []


def test_ust_run_exit_status_and_other_apps_untouched(ust_env):
    other = ust_env.app()
    ust_env.wait_registered(other.pid)
    out = os.path.join(ust_env.home, "run")
    code = "import ust, sys; tp = ust.tracepoint('app:alpha', {'v': ust.int64}); tp(1); sys.exit(3)"
    r = subprocess.run([sys.executable, "-m", "ust.cli", "run", "-o", out, "--", sys.executable, "-c", code],
                       env=ust_env.env(UST_AGENT="0"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert values(read_events(out)) == [1]
    assert '"attached": 0' in other.send("agent")


def test_sigterm_sessiond_flushes_and_stops_consumer(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.send("emit app:alpha 10")
    c = ust_env.client()
    info = c.ping()
    os.kill(info["pid"], signal.SIGTERM)

    def gone(pid):
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

    wait_until(lambda: gone(info["pid"]) and gone(info["consumer_pid"]), what="daemons to stop")
    assert not os.path.exists(os.path.join(ust_env.home, "sessiond.pid"))
    assert values(read_events(ust_env.out)) == list(range(10))
    # the agent notices, and registers again with the next daemon
    wait_until(lambda: '"registered": false' in app.send("agent") or "channels\": []" in app.send("agent"),
               what="agent to notice")
    ust_env.wait_registered(app.pid)


def test_runtime_dir_private(ust_env):
    ust_env.client().ping()
    assert stat.S_IMODE(os.stat(ust_env.home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(ust_env.home, "sessiond.sock")).st_mode) & 0o077 == 0
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    ust_env.ust("stop")
    for path in glob.glob(os.path.join(ust_env.out, "**"), recursive=True):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path


def test_cli_errors(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    for args, msg in [
        (("create", "s"), "already exists"),
        (("start",), "no event rule enabled"),
        (("start", "nope"), "no session named 'nope'"),
        (("enable-event", "x", "-c", "c", "-s", "nope"), "no session named"),
        (("disable-event", "x", "-c", "nochan"), "no channel named 'nochan'"),
        (("enable-channel", "c", "--subbuf-size", "5k"), "power of two"),
        (("enable-channel", "c", "--subbuf-size", "4Q"), "invalid size"),
        (("snapshot", "record"), "not a snapshot session"),
        (("add-context", "-t", "bogus"), "unknown context type"),
    ]:
        rc, _, err = ust_env.ust(*args, check=False)
        assert rc != 0 and msg in err and err.startswith("ust: error:") and err.count("\n") <= 2, (args, err)
