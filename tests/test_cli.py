"""The `ust` command's edges: signals during `ust run`, a stopped daemon, bad arguments,
`ust view` without a path, `ust version`. Real daemons, real processes, real signals."""

import os
import signal
import subprocess
import sys
import time

from daemon_util import needs_bt, read_events, ust_env, values, wait_until  # noqa: F401


def _pids_with(marker: str) -> list[int]:
    """Processes whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def _sigterm_run(ust_env, client, marker: str, delay: float, after_session: bool) -> int:
    """Start `ust run` on a sleeping program; SIGTERM it ``delay`` s after it started (or after its
    session appeared in the daemon, with ``after_session``), then every 5 ms until it exits."""
    code = "import time; print('ready', flush=True); time.sleep(300)"
    p = subprocess.Popen([sys.executable, "-m", "ust.cli", "run", "-q", "-o", os.path.join(ust_env.home, marker),
                          "--", sys.executable, "-c", code, marker],
                         env=ust_env.env(UST_AGENT="0"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if after_session:
        wait_until(lambda: client.list_sessions() or p.poll() is not None, what="the session of ust run")
    time.sleep(delay)
    while p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(0.005)
        except subprocess.TimeoutExpired:
            pass
    p.stderr.close()
    return p.returncode


def test_ust_run_sigterm_at_any_point_of_start_up(ust_env):
    """SIGTERM at any moment of `ust run`'s start-up: no session left behind, no orphaned program.

    Half the signals are spread over the start-up from the exec of `ust run`, half from the moment its
    session exists (the window where, with the handlers installed after the program started, ust run
    died leaving both behind)."""
    c = ust_env.client()
    c.ping()  # the daemon runs: the start-up measured below is ust run's own
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "ust.cli", "run", "-q", "-o", os.path.join(ust_env.home, "probe"),
                          "--", sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(300)",
                          "probe-marker"], env=ust_env.env(UST_AGENT="0"), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    window = time.monotonic() - t0
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 128 + signal.SIGTERM
    steps = 20
    plan = [(window * i / steps, False) for i in range(steps)] + [(0.002 * i, True) for i in range(steps)]
    for i, (delay, after_session) in enumerate(plan):
        marker = f"ust-sigterm-{os.getpid()}-{i}"
        rc = _sigterm_run(ust_env, c, marker, delay, after_session)
        when = f"{delay:.3f}s after {'its session appeared' if after_session else 'ust run started'}"
        # killed by the signal (before anything existed, or after cleaning up), or the program was
        assert rc in (-signal.SIGTERM, 128 + signal.SIGTERM), (rc, when)
        orphans = _pids_with(marker)
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        assert orphans == [], f"program orphaned after SIGTERM {when}"
        assert c.list_sessions() == [], f"session left after SIGTERM {when}"


def test_list_against_a_stopped_daemon_fails_in_bounded_time(ust_env):
    """`ust list` while the session daemon is SIGSTOPped: a one-line error, not a hang."""
    pid = ust_env.client().ping()["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        # the client's query deadline is 10 s; before, it waited 60 s per request
        r = subprocess.run([sys.executable, "-m", "ust.cli", "list"], env=ust_env.env(UST_AGENT="0"),
                           capture_output=True, text=True, timeout=45)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ust: error: the session daemon"), r.stderr
    assert "did not answer 'list'" in err[0]
    # the daemon, resumed, serves again
    assert ust_env.ust("list")[1].startswith("No session")


def test_add_context_to_a_missing_channel_is_refused(ust_env):
    """Like lttng: a channel that does not exist is an error, not silently created."""
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    rc, _, err = ust_env.ust("add-context", "-c", "nosuch", "-t", "vpid", check=False)
    assert rc != 0
    assert err.strip() == "ust: error: no channel named 'nosuch' in session 's'"
    assert [ch["name"] for ch in ust_env.client().get_session("s")["channels"]] == ["channel0"]
    # the existing channel, named or not, takes it
    ust_env.ust("add-context", "-c", "channel0", "-t", "vpid")
    ust_env.ust("add-context", "-t", "vtid")
    assert ust_env.client().get_session("s")["channels"][0]["context"] == ["vpid", "vtid"]


def test_run_of_a_program_that_records_nothing_names_no_directory(ust_env):
    """`ust run -- ls`: no application recorded, so no trace directory exists: say so, name none."""
    out = os.path.join(ust_env.home, "run-ls")
    r = subprocess.run([sys.executable, "-m", "ust.cli", "run", "-o", out, "--", "ls", ust_env.home],
                       env=ust_env.env(UST_AGENT="0"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(out)
    assert out not in r.stderr
    assert "ust: nothing recorded, no trace written: ls and its children hit no enabled tracepoint" in r.stderr
    assert ust_env.client().list_sessions() == []


def test_run_with_the_default_directory_leaves_none_when_nothing_is_recorded(ust_env, tmp_path):
    """The default output directory is made before the program runs (nobody else may take its
    predictable name first); when nothing was recorded it does not stay behind, empty."""
    r = subprocess.run([sys.executable, "-m", "ust.cli", "run", "--", "ls"], cwd=tmp_path,
                       env=ust_env.env(UST_AGENT="0"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "nothing recorded" in r.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith("ust-trace-")]


@needs_bt
def test_view_without_a_path_views_the_current_session(ust_env):
    """Like `lttng view`: no path means the current session's trace (or -s NAME's)."""
    from conftest import babeltrace2_text

    rc, _, err = ust_env.ust("view", check=False)
    assert rc != 0 and err.startswith("ust: error: no trace given and no current session"), err
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    rc, _, err = ust_env.ust("view", check=False)
    assert rc != 0 and err.strip() == (f"ust: error: session 's' has recorded nothing yet (no trace in "
                                       f"{ust_env.out}): start it, and run an application"), err
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.send("emit app:alpha 7")
    ust_env.ust("stop")
    expected, _ = babeltrace2_text(ust_env.out)
    assert expected.count("app:alpha") == 7
    assert ust_env.ust("view")[1] == expected
    ust_env.ust("create", "other", "-o", os.path.join(ust_env.home, "other"))  # now the current session
    assert ust_env.ust("view", "-s", "s")[1] == expected
    app.exit()


def test_version():
    from ust import __version__

    r = subprocess.run([sys.executable, "-m", "ust.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == f"ust (ust Trace Control) {__version__}\n"
    r = subprocess.run([sys.executable, "-m", "ust.cli", "version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith(f"ust (ust Trace Control) {__version__}\n\n")
    assert "NO\nwarranty" in r.stdout


def test_every_console_script_runs():
    """Each script pyproject.toml declares names an importable function (ust-relayd once did not)."""
    import importlib
    import tomllib

    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml"),
              "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert "ust" in scripts and "ust-relayd" in scripts
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), name


_MODULES_LOADED = """
import sys
from ust.cli import main
main({argv!r})
print(sorted(m for m in sys.modules if m.startswith('ust')), file=sys.stderr)
"""


def test_a_command_imports_only_what_it_needs(ust_env):
    """The start-up cost of `ust`: a session command loads no reader, analysis, agent or C core;
    `ust --help` / `ust version` load no command module at all."""
    heavy = ("ust.ctf", "ust.analysis", "ust.agent._agent", "ust.instrument.registry", "ust._ring",
             "ust.instrument.fields", "ust.daemon.rules", "ust.cli.view", "ust.cli.run")
    ust_env.client().ping()
    script = os.path.join(ust_env.home, "ust")  # named like the console script: ust's own tool, not an app
    for argv in (["list"], ["version"], ["help"]):
        with open(script, "w") as f:
            f.write(_MODULES_LOADED.format(argv=argv))
        r = subprocess.run([sys.executable, script], env=ust_env.env(), capture_output=True, text=True,
                           timeout=120)
        loaded = eval(r.stderr.strip().splitlines()[-1])
        assert not [m for m in loaded if m.startswith(heavy)], (argv, loaded)
        if argv != ["list"]:
            assert not [m for m in loaded if m.startswith(("ust.control", "ust.cli.session_cmds"))], loaded


class _HostileDaemon:
    """A process-local stand-in for a session daemon that misbehaves on purpose (the real one
    cannot be made to): it reads each request and answers with ``reply(sock)``."""

    def __init__(self, rundir, reply):
        import socket
        import threading

        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(os.path.join(rundir, "sessiond.sock"))
        self.listener.listen(8)
        self.reply = reply
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        from ust.daemon import protocol

        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    protocol.recv_msg(conn)
                    self.reply(conn, self.stop)
                except OSError:
                    pass

    def close(self):
        import socket

        self.stop.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_client_bounds_a_daemon_that_trickles_or_lies(tmp_path):
    """The reply deadline covers the whole exchange (a byte every 0.2 s does not stretch it), and a
    reply without the expected field is a one-line DaemonError, not a KeyError."""
    from ust.control import Client
    from ust.daemon import protocol
    from ust.errors import DaemonError

    rundir = str(tmp_path / "run")
    os.mkdir(rundir, 0o700)

    def trickle(conn, stop):
        data = protocol.encode({"ok": True, "sessions": []})
        for b in data:
            if stop.wait(0.2):
                return
            conn.sendall(bytes([b]))

    d = _HostileDaemon(rundir, trickle)
    try:
        c = Client(rundir, autostart=False, timeout=2)
        try:
            c.list_sessions()
            raise AssertionError("a trickling reply was waited for to its end")
        except DaemonError as exc:
            assert "did not answer 'list' within 2s" in str(exc) and "\n" not in str(exc)
    finally:
        d.close()
    os.unlink(os.path.join(rundir, "sessiond.sock"))

    d = _HostileDaemon(rundir, lambda conn, stop: conn.sendall(protocol.encode({"ok": True})))
    try:
        for call in (Client.list_sessions, Client.list_apps, lambda c: c.get_session("s"), lambda c: c.stop("s")):
            try:
                call(Client(rundir, autostart=False))  # this daemon answers once per connection
                raise AssertionError("a reply without its field was accepted")
            except DaemonError as exc:
                assert "without" in str(exc) and "\n" not in str(exc)
    finally:
        d.close()


def test_client_with_a_daemon_that_accepts_nothing(tmp_path):
    """A socket whose backlog is full (a stopped or swamped daemon): the client waits its connect
    deadline and says so in one line; it neither claims no daemon runs nor starts a second one."""
    import socket

    from ust.control import Client
    from ust.errors import DaemonError

    rundir = str(tmp_path / "run")
    os.mkdir(rundir, 0o700)
    path = os.path.join(rundir, "sessiond.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    held = []
    try:
        while True:  # fill the backlog
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            held.append(s)
        try:
            Client(rundir).ping()  # autostart on
            raise AssertionError("connected to a daemon that accepts nothing")
        except DaemonError as exc:
            assert "accepted no connection within 5s" in str(exc) and "\n" not in str(exc), exc
        assert sorted(os.listdir(rundir)) == ["sessiond.sock"]  # no second daemon was started
    finally:
        for s in held:
            s.close()
        listener.close()
