"""Security and robustness of the daemons (issue 8, items 1, 2, 8, 10, 11): real
users made with useradd, a real system daemon, real applications of root and
of a `tracing` group member, real signals, traces read back with babeltrace2.

Processes of the other users (and the system daemon, whose consumers run as
them) need a Python they can execute and a copy of ust they can read: this
interpreter or the system's, this checkout or a world-readable copy of its
``src``. The tests are skipped where none works (not root, no useradd).
"""

import atexit
import glob
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from daemon_util import DRIVEN, SRC, App, needs_bt, read_events, ust_env, values, wait_until  # noqa: F401

ALICE = "ust-t-alice"  # member of the tracing group
BOB = "ust-t-bob"  # another user, in no group of ours

pytestmark = needs_bt


# ---------------------------------------------------------------------------
# users


def _works_for_others(python: str, src: str) -> bool:
    try:
        r = subprocess.run([python, "-c", "import ust._ring._ring, ust.ctf.writer"], env={"PYTHONPATH": src},
                           capture_output=True, user=65534, group=65534, extra_groups=[], cwd="/")
    except OSError:  # not executable by them
        return False
    return r.returncode == 0


def _public_src() -> str:
    """A copy of this checkout's ``src`` anybody can read (the checkout may be in a private directory)."""
    top = tempfile.mkdtemp(prefix="ust-t-src-")
    atexit.register(shutil.rmtree, top, True)
    os.chmod(top, 0o755)
    dst = os.path.join(top, "src")
    shutil.copytree(SRC, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(dst):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o755)
    return dst


def _setup() -> tuple[str | None, str | None, str | None]:
    """(python, src, None) usable by other users, or (None, None, why not)."""
    if os.geteuid() != 0:
        return None, None, "needs root (creates users)"
    if shutil.which("useradd") is None or shutil.which("groupadd") is None:
        return None, None, "useradd/groupadd not installed"
    pythons = [p for p in (sys.executable, "/usr/bin/python3") if os.access(p, os.X_OK)]
    for python in pythons:
        if _works_for_others(python, SRC):
            return python, SRC, None
    src = _public_src()
    for python in pythons:
        if _works_for_others(python, src):
            return python, src, None
    return None, None, "no Python other users can run with this ust"


SYS_PY, USER_SRC, _SKIP = _setup() if os.environ.get("UST_TEST_USERS", "1") != "0" else (None, None, "disabled")
needs_users = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


def ensure_group(name: str) -> int:
    subprocess.run(["groupadd", "-f", name], check=True, capture_output=True)
    return grp.getgrnam(name).gr_gid


def ensure_user(name: str, groups: tuple[str, ...] = ()) -> pwd.struct_passwd:
    """The user ``name`` (created once, idempotent, even when two test runs race)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(["useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name],
                           capture_output=True, text=True)
        if r.returncode not in (0, 9):  # 9: it exists (made meanwhile)
            raise AssertionError(f"useradd {name}: {r.stderr}")
    for g in groups:
        ensure_group(g)
        if name not in grp.getgrnam(g).gr_mem:
            subprocess.run(["gpasswd", "-a", name, g], check=True, capture_output=True)
    return pwd.getpwnam(name)


def creds(user: pwd.struct_passwd) -> dict:
    return dict(user=user.pw_uid, group=user.pw_gid, extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
                cwd="/")


def user_dir(parent: str, user: pwd.struct_passwd, name: str) -> str:
    """A private directory of ``user``."""
    path = os.path.join(parent, name)
    os.mkdir(path, 0o700)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


CALL = """
import json, sys
from ust.control import Client
from ust.errors import UstError
try:
    print(json.dumps({"ok": Client(sys.argv[1], autostart=False).call(sys.argv[2], **json.loads(sys.argv[3]))}))
except UstError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def call_as(user: pwd.struct_passwd, rundir: str, cmd: str, **args) -> dict:
    """One request to the daemon at ``rundir`` from a process of ``user``: {"ok": reply} or {"error": msg}."""
    r = subprocess.run([SYS_PY, "-c", CALL, rundir, cmd, json.dumps(args)], env={"PYTHONPATH": USER_SRC, "UST_AGENT": "0"},
                       capture_output=True, text=True, timeout=120, **creds(user))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def ok_as(user, rundir, cmd, **args) -> dict:
    reply = call_as(user, rundir, cmd, **args)
    assert "ok" in reply, f"{cmd} as {user.pw_name}: {reply['error']}"
    return reply["ok"]


class SystemDaemon:
    """A real system session daemon (root, group `tracing`) in a temporary runtime directory."""

    def __init__(self, **env):
        self.top = tempfile.mkdtemp(prefix="ust-t-sys-")
        os.chmod(self.top, 0o755)
        self.rundir = os.path.join(self.top, "run")
        self.log = open(os.path.join(self.top, "sessiond.log"), "w")
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": USER_SRC, "UST_AGENT": "0",
                    "UST_SYSTEM_HOME": self.rundir, **env}
        self.proc = subprocess.Popen([SYS_PY, "-m", "ust.daemon.sessiond", "--rundir", self.rundir], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.apps: list[subprocess.Popen] = []
        wait_until(lambda: os.path.exists(os.path.join(self.rundir, "sessiond.pid")) or self.proc.poll() is not None,
                   what="the system daemon")
        assert self.proc.poll() is None, self.logtext()

    def logtext(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def client(self):
        from ust.control import Client

        return Client(self.rundir, autostart=False)

    def app(self, user: pwd.struct_passwd | None = None) -> App:
        env = {"PYTHONPATH": USER_SRC, "UST_HOME": self.rundir, "UST_AGENT_RETRY": "0.1",
               "HOME": user.pw_dir if user else "/root"}
        with open(DRIVEN) as f:  # its text: the checkout may be closed to other users
            code = f.read()
        p = subprocess.Popen([SYS_PY, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             bufsize=1, **(creds(user) if user else {}))
        self.apps.append(p)
        return App(p)

    def wait_registered(self, pid: int) -> None:
        wait_until(lambda: any(a["pid"] == pid for a in self.client().list_apps()), what=f"app {pid} registered")

    def close(self) -> None:
        for p in self.apps:
            if p.poll() is None:
                p.kill()
                p.wait()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if not os.environ.get("UST_TEST_KEEP"):
            shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def sysd():
    ensure_group("tracing")
    d = SystemDaemon(UST_CONSUMER_TIMEOUT="20")
    try:
        yield d
    finally:
        d.close()


def owners(path: str) -> set[int]:
    out = set()
    for top, dirs, files in os.walk(path):
        for n in [top] + [os.path.join(top, f) for f in files]:
            out.add(os.lstat(n).st_uid)
    return out


# ---------------------------------------------------------------------------
# item 1: the tracing group against the system daemon


@needs_users
def test_tracing_group_member_cannot_touch_roots_sessions(sysd):
    alice = ensure_user(ALICE, ("tracing",))
    root_out = os.path.join(sysd.top, "root-out")
    alice_out = os.path.join(user_dir(sysd.top, alice, "alice"), "trace")
    c = sysd.client()
    root_app, alice_app = sysd.app(), sysd.app(alice)
    sysd.wait_registered(root_app.pid)
    sysd.wait_registered(alice_app.pid)
    c.create_session("root-s", output=root_out)
    c.enable_events("root-s", "app:*")
    c.start("root-s")

    # Root's session does not exist for her: not listed, not controllable.
    assert [s["name"] for s in ok_as(alice, sysd.rundir, "list")["sessions"]] == []
    for cmd in ("stop", "destroy", "session", "start"):
        assert call_as(alice, sysd.rundir, cmd, session="root-s") == {"error": "no session named 'root-s'"}
    assert "permission denied" in call_as(alice, sysd.rundir, "shutdown")["error"]
    assert c.ping()["pid"] == sysd.proc.pid  # still serving
    # She sees her own processes only (root's command lines are not hers to read).
    assert [a["pid"] for a in ok_as(alice, sysd.rundir, "apps")["apps"]] == [alice_app.pid]
    assert {a["pid"] for a in c.list_apps()} >= {root_app.pid, alice_app.pid}  # root sees all

    # Her own session records only her processes, and its files are hers.
    ok_as(alice, sysd.rundir, "create", name="alice-s", output=alice_out)
    ok_as(alice, sysd.rundir, "enable_event", session="alice-s", patterns=["app:*"])
    ok_as(alice, sysd.rundir, "start", session="alice-s")
    assert [s["name"] for s in c.list_sessions()] == ["root-s", "alice-s"]  # root sees all
    root_app.send("emit app:alpha 50 1000")  # root's secret events
    alice_app.send("emit app:alpha 30 0")
    ok_as(alice, sysd.rundir, "stop", session="alice-s")
    ok_as(alice, sysd.rundir, "destroy", session="alice-s")
    c.stop("root-s")
    c.destroy_session("root-s")

    assert sorted(values(read_events(alice_out))) == list(range(30))
    assert owners(alice_out) == {alice.pw_uid}
    root_values = values(read_events(root_out))  # root's session records every user's processes
    assert sorted(v for v in root_values if v >= 1000) == list(range(1000, 1050))
    assert owners(root_out) == {0}


@needs_users
def test_tracing_group_member_cannot_make_root_write_for_her(sysd):
    alice = ensure_user(ALICE, ("tracing",))
    home = user_dir(sysd.top, alice, "alice")
    victim = os.path.join(sysd.top, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    rootdir = os.path.join(sysd.top, "rootdir")
    os.mkdir(rootdir, 0o755)
    app = sysd.app(alice)
    sysd.wait_registered(app.pid)

    # 1. A symbolic link planted where the consumer writes the metadata.
    out = os.path.join(home, "evil")
    trace_dir = os.path.join(out, "ust", "uid", str(alice.pw_uid), "64-bit")
    r = subprocess.run([SYS_PY, "-c", "import os, sys; os.makedirs(sys.argv[1], 0o700); "
                        "os.symlink(sys.argv[2], os.path.join(sys.argv[1], '.metadata.tmp'))", trace_dir, victim],
                       capture_output=True, text=True, **creds(alice))
    assert r.returncode == 0, r.stderr
    ok_as(alice, sysd.rundir, "create", name="evil", output=out)
    ok_as(alice, sysd.rundir, "enable_event", session="evil", patterns=["app:*"])
    ok_as(alice, sysd.rundir, "start", session="evil")
    app.send("emit app:alpha 10 0")
    ok_as(alice, sysd.rundir, "destroy", session="evil")
    with open(victim) as f:
        assert f.read() == "precious\n"
    assert os.stat(victim).st_uid == 0
    assert sorted(values(read_events(out))) == list(range(10))

    # 2. An output directory only root could create.
    ok_as(alice, sysd.rundir, "create", name="evil2", output=os.path.join(rootdir, "x"))
    ok_as(alice, sysd.rundir, "enable_event", session="evil2", patterns=["app:*"])
    err = call_as(alice, sysd.rundir, "start", session="evil2")["error"]
    assert "Permission denied" in err and "\n" not in err
    assert os.listdir(rootdir) == []

    # 3. A stream file planted as a link to a root file.
    out3 = os.path.join(home, "evil3")
    trace3 = os.path.join(out3, "ust", "uid", str(alice.pw_uid), "64-bit")
    subprocess.run([SYS_PY, "-c", "import os, sys; os.makedirs(sys.argv[1], 0o700); "
                    "os.symlink(sys.argv[2], os.path.join(sys.argv[1], 'channel0_0'))", trace3, victim],
                   check=True, **creds(alice))
    ok_as(alice, sysd.rundir, "create", name="evil3", output=out3)
    ok_as(alice, sysd.rundir, "enable_event", session="evil3", patterns=["app:*"])
    assert "error" in call_as(alice, sysd.rundir, "start", session="evil3")
    with open(victim) as f:
        assert f.read() == "precious\n"
    assert c_ping(sysd)


def _consumer_of(uid: int) -> int:
    """The pid of the ust-consumerd running as ``uid``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            if b"ust.daemon.consumerd" in cmdline and os.stat(f"/proc/{pid}").st_uid == uid:
                return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no consumer runs as uid {uid}")


@needs_users
def test_a_users_stalled_consumer_does_not_hold_up_root(sysd):
    alice = ensure_user(ALICE, ("tracing",))
    alice_out = os.path.join(user_dir(sysd.top, alice, "alice"), "trace")
    root_out = os.path.join(sysd.top, "root-out")
    root_app, alice_app = sysd.app(), sysd.app(alice)
    sysd.wait_registered(root_app.pid)
    sysd.wait_registered(alice_app.pid)
    ok_as(alice, sysd.rundir, "create", name="alice-s", output=alice_out)
    ok_as(alice, sysd.rundir, "enable_event", session="alice-s", patterns=["app:*"])
    ok_as(alice, sysd.rundir, "start", session="alice-s")
    alice_app.send("emit app:alpha 20 0")
    consumer = _consumer_of(alice.pw_uid)
    os.kill(consumer, signal.SIGSTOP)
    try:
        stopper = threading.Thread(target=call_as, args=(alice, sysd.rundir, "stop"), kwargs={"session": "alice-s"})
        stopper.start()
        # Root's whole session, start to destroy, while her stop waits for her stopped consumer.
        c = sysd.client()
        c.create_session("root-s", output=root_out)
        c.enable_events("root-s", "app:beta")
        c.start("root-s")
        wait_until(lambda: '"attached": 1' in root_app.send("agent"), what="root's rule applied")
        root_app.send("emit app:beta 50 0")
        c.stop("root-s")
        c.destroy_session("root-s")
        assert stopper.is_alive(), "root's commands had to wait for her consumer"
        stopper.join(120)
    finally:
        os.kill(consumer, signal.SIGCONT)
    assert values(read_events(root_out), "app:beta") == list(range(50))
    ok_as(alice, sysd.rundir, "destroy", session="alice-s")  # her consumer is used again
    assert _consumer_of(alice.pw_uid) == consumer
    assert sorted(values(read_events(alice_out))) == list(range(20))


def c_ping(sysd) -> bool:
    return sysd.client().ping()["pid"] == sysd.proc.pid


# ---------------------------------------------------------------------------
# item 2: trace directories another user prepared


@pytest.fixture
def open_tmp():
    """A temporary directory other users can traverse (pytest's are private)."""
    top = tempfile.mkdtemp(prefix="ust-t-open-")
    os.chmod(top, 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _shared_dir(parent: str) -> str:
    shared = os.path.join(parent, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)  # like /tmp
    return shared


def _as(user, code: str, *args: str) -> None:
    subprocess.run([SYS_PY, "-c", code, *args], check=True, capture_output=True, **creds(user))


@needs_users
def test_embedded_session_refuses_a_directory_another_user_prepared(open_tmp):
    from ust.ctf.writer import TraceDirError
    from ust.session import Session

    bob = ensure_user(BOB)
    shared = _shared_dir(str(open_tmp))
    private = os.path.join(str(open_tmp), "private")
    os.mkdir(private, 0o700)
    pre = os.path.join(shared, "out")
    link = os.path.join(shared, "link")
    _as(bob, "import os, sys; os.mkdir(sys.argv[1]); os.chmod(sys.argv[1], 0o777); os.symlink(sys.argv[3], sys.argv[2])",
        pre, link, private)
    for output in (pre, link):
        with pytest.raises(TraceDirError) as info:
            Session(output, events=("*",)).start()
        assert "\n" not in str(info.value) and "refusing" in str(info.value)
    assert os.listdir(pre) == [] and os.listdir(private) == []

    # A directory of ours, group- or world-writable, is refused too; a new one is made 0750 at most.
    mine = os.path.join(str(open_tmp), "open")
    os.mkdir(mine)
    os.chmod(mine, 0o777)
    with pytest.raises(TraceDirError):
        Session(mine, events=("*",)).start()
    fresh = os.path.join(str(open_tmp), "fresh")
    s = Session(fresh, events=("*",)).start()
    s.stop()
    for top, dirs, _ in os.walk(fresh):
        assert os.stat(top).st_mode & 0o027 == 0, top


@needs_users
def test_daemon_refuses_a_directory_another_user_prepared(ust_env, open_tmp):
    bob = ensure_user(BOB)
    shared = _shared_dir(str(open_tmp))
    pre = os.path.join(shared, "out")
    _as(bob, "import os, sys; os.mkdir(sys.argv[1]); os.chmod(sys.argv[1], 0o777)", pre)
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    ust_env.ust("create", "s", "-o", pre)
    ust_env.ust("enable-event", "app:alpha")
    code, _, err = ust_env.ust("start", check=False)
    assert code != 0 and f"trace directory {pre} belongs to uid {bob.pw_uid}" in err
    assert len(err.strip().splitlines()) == 1, err
    assert os.listdir(pre) == []
    # The daemon still works for a good directory.
    ust_env.ust("destroy", "s")
    ust_env.ust("create", "t", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app.send("emit app:alpha 5")
    ust_env.ust("destroy", "t")
    assert values(read_events(ust_env.out)) == list(range(5))
    for top, dirs, files in os.walk(ust_env.out):
        assert os.stat(top).st_mode & 0o027 == 0, top
        for f in files:
            assert os.stat(os.path.join(top, f)).st_mode & 0o077 == 0, f


@needs_users
def test_ust_run_default_directory_in_a_shared_directory(ust_env, open_tmp):
    """Another user pre-creates the names `ust run` would pick: it writes elsewhere, in a directory of its own."""
    import datetime

    bob = ensure_user(BOB)
    shared = _shared_dir(str(open_tmp))
    prog = os.path.join(str(open_tmp), "prog.py")
    with open(prog, "w") as f:
        f.write("import ust\ntp = ust.tracepoint('app:x', {'v': ust.int64})\nfor i in range(7):\n    tp(i)\n")
    now = datetime.datetime.now()
    names = [os.path.join(shared, f"ust-trace-prog.py-{(now + datetime.timedelta(seconds=d)):%Y%m%d-%H%M%S}")
             for d in range(0, 120)]
    _as(bob, "import os, sys\nfor p in sys.argv[1:]:\n    os.mkdir(p); os.chmod(p, 0o777)", *names)
    r = subprocess.run([sys.executable, "-m", "ust.cli", "run", "--", sys.executable, prog], cwd=shared,
                       env=ust_env.env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stderr.split("trace written in ", 1)[1].split("\n", 1)[0].strip()
    assert out not in names and os.path.dirname(out) == shared
    assert os.stat(out).st_uid == os.getuid() and os.stat(out).st_mode & 0o022 == 0
    assert values(read_events(out)) == list(range(7))
    assert all(os.listdir(p) == [] for p in names)


# ---------------------------------------------------------------------------
# item 8: a stalled consumer


def test_stalled_consumer_delays_only_its_requests(ust_env, monkeypatch):
    monkeypatch.setenv("UST_CONSUMER_TIMEOUT", "15")  # read by the daemon the client starts
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.send("emit app:alpha 1000 0")
    c = ust_env.client()
    consumer = c.ping()["consumer_pid"]
    os.kill(consumer, signal.SIGSTOP)
    try:
        outcome = {}

        def stop():
            try:
                ust_env.client().stop("s")
                outcome["stop"] = "ok"
            except Exception as exc:
                outcome["stop"] = str(exc)

        stopper = threading.Thread(target=stop)
        stopper.start()
        # While `stop` waits for the stopped consumer, the daemon answers everything else.
        for _ in range(20):
            assert [s["name"] for s in c.list_sessions()] == ["s"]
            assert any(a["pid"] == app.pid for a in c.list_apps())
        assert stopper.is_alive(), "list had to wait for the stalled consumer"
        stopper.join(120)
        assert "did not answer" in outcome["stop"]
    finally:
        os.kill(consumer, signal.SIGCONT)
    # It answers again: it is used again, and the trace is complete.
    app.send("emit app:alpha 10 1000")  # the session is stopped: not recorded
    assert c.ping()["consumer_pid"] == consumer
    ust_env.ust("destroy", "s")
    assert sorted(values(read_events(ust_env.out))) == list(range(1000))


# ---------------------------------------------------------------------------
# item 10: resource limits


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _connect(rundir: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(rundir, "sessiond.sock"))
    return s


def _closed_by_peer(s: socket.socket) -> bool:
    s.settimeout(0)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_idle_connections_do_not_lock_others_out(ust_env, monkeypatch):
    from ust.control import sessiond_pid

    monkeypatch.setenv("UST_SESSIOND_IDLE_TIMEOUT", "3")
    c = ust_env.client()
    c.ping()
    pid = sessiond_pid(ust_env.home)
    idle = []
    try:
        for _ in range(560):  # more than the daemon's cap
            idle.append(_connect(ust_env.home))
        # They are closed once idle for too long; then everybody is served again.
        wait_until(lambda: all(_closed_by_peer(s) for s in idle), timeout=120, what="idle connections closed")
        assert ust_env.client().list_sessions() == []
    finally:
        for s in idle:
            s.close()
    assert os.path.exists(f"/proc/{pid}")


@needs_users
def test_one_user_cannot_take_every_connection(sysd):
    alice = ensure_user(ALICE, ("tracing",))
    code = ("import select, socket, sys, time\nconns = []\nanswered = closed = 0\n"
            "for i in range(400):\n"
            "    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); conns.append(s)\n"
            "pending = set(conns)\ndeadline = time.monotonic() + 60\n"
            "while pending and answered + closed < 400 - 256 and time.monotonic() < deadline:\n"
            "    for s in select.select(list(pending), [], [], 1)[0]:\n"
            "        pending.discard(s)\n"
            "        try:\n            data = s.recv(4096)\n"
            "        except OSError:\n            data = b''\n"
            "        answered += b'too many connections from uid' in data\n"
            "        closed += not data\n"
            "print(answered, closed, flush=True)\nsys.stdin.read()\n")
    hog = subprocess.Popen([SYS_PY, "-c", code, os.path.join(sysd.rundir, "sessiond.sock")], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, **creds(alice))
    try:
        answered, closed = map(int, hog.stdout.readline().split())
        # The per-uid cap: the others are refused, with an answer (a few at a time) or closed unanswered.
        assert answered + closed == 400 - 256 and answered >= 1
        # Root (and other users) are still served while her connections stay open.
        assert sysd.client().list_sessions() == []
        assert hog.poll() is None
    finally:
        hog.kill()
        hog.wait()


def test_partial_bodies_do_not_grow_the_daemon(ust_env, monkeypatch):
    """300 connections each send half of a 1 MiB body, then nothing: the daemon
    holds at most its input budget for them (it grew by ~190 MB before)."""
    from ust.control import sessiond_pid
    from ust.daemon import protocol

    monkeypatch.setenv("UST_SESSIOND_READ_TIMEOUT", "600")  # only the input budget may save it here
    ust_env.client().ping()
    pid = sessiond_pid(ust_env.home)
    before = _rss_kb(pid)
    header = protocol.HEADER.pack(protocol.MAGIC, protocol.PROTOCOL_VERSION, 0, protocol.MAX_BODY)

    def send_half(s):
        try:
            s.settimeout(60)
            s.sendall(header + b"[" + b" " * (512 << 10))
        except OSError:  # refused: the daemon hung up
            pass

    conns, senders = [], []
    try:
        for _ in range(300):
            conns.append(_connect(ust_env.home))
            senders.append(threading.Thread(target=send_half, args=(conns[-1],)))
            senders[-1].start()
        for t in senders:
            t.join()
        # Every connection is either holding its share of the budget or was refused.
        wait_until(lambda: sum(_closed_by_peer(s) for s in conns) >= 300 - 64, timeout=120,
                   what="bodies beyond the input budget refused")
        assert _rss_kb(pid) - before < 128 * 1024, "the daemon grew by more than 128 MB"
        assert ust_env.client().list_sessions() == []
    finally:
        for s in conns:
            s.close()


def test_declarations_are_capped_per_app(ust_env, monkeypatch):
    monkeypatch.setenv("UST_MAX_TRACEPOINTS_PER_APP", "20")
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "cap:*")
    ust_env.ust("start")
    app = ust_env.app(UST_AGENT_SYNC="1")  # a declaration returns once the daemon answered it
    ust_env.wait_registered(app.pid)
    for i in range(30):  # 9 declared at start, 30 more: the app never sees an exception
        app.send(f"declare cap:t{i} INFO")
    [tps] = [a["tracepoints"] for a in ust_env.client().list_apps() if a["pid"] == app.pid]
    assert len(tps) == 20
    # 9 declared at start (none matches cap:*), then cap:t0..t10 fit
    assert '"attached": 11' in app.send("agent")
    app.send("emit cap:t0 3")  # within the cap: traced
    app.send("emit cap:t29 3")  # beyond it: not registered, not traced, no error in the app
    ust_env.ust("destroy", "s")
    events = read_events(ust_env.out)
    assert [n for n, _ in events] == ["cap:t0"] * 3


def test_nested_json_is_answered_and_the_app_deregistered(ust_env):
    from ust.daemon import protocol

    c = ust_env.client()
    c.ping()
    # A client: an error, on one line, and the daemon lives on.
    s = _connect(ust_env.home)
    body = b"[" * 200_000
    s.sendall(protocol.HEADER.pack(protocol.MAGIC, protocol.PROTOCOL_VERSION, 0, len(body)) + body)
    reply, _ = protocol.recv_msg(s)
    assert not reply["ok"] and "deeper than" in reply["error"]
    s.close()
    # An application (this process) that registers, then sends such a body.
    s = _connect(ust_env.home)
    protocol.send_msg(s, {"cmd": "register", "pid": os.getpid(), "uid": os.getuid(), "procname": "evil",
                          "tracepoints": [], "seq": 1})
    reply, _ = protocol.recv_msg(s)
    assert reply["ok"]
    assert any(a["pid"] == os.getpid() for a in c.list_apps())
    s.sendall(protocol.HEADER.pack(protocol.MAGIC, protocol.PROTOCOL_VERSION, 0, len(body)) + body)
    wait_until(lambda: _closed_by_peer(s), what="the daemon hangs up")
    wait_until(lambda: not any(a["pid"] == os.getpid() for a in c.list_apps()), what="the app deregistered")
    s.close()


# ---------------------------------------------------------------------------
# item 11: loss counters in shared memory are the writers' to scribble on

LOST_FULL_OFFSET = 192  # struct ust_shm_header (_ring/shm.h): the slow-path cache line
SHM_MAGIC = 0x3166756252747375


def _scribble_lost_counters(pid: int) -> int:
    """As a hostile writer would: set the loss counters of every buffer ``pid`` maps. Returns how many."""
    import mmap

    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:ust-ring"):
                continue
            f = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR)
        except OSError:
            continue
        try:
            with mmap.mmap(f, 4096) as m:
                if struct.unpack_from("<Q", m, 0)[0] == SHM_MAGIC:
                    struct.pack_into("<QQ", m, LOST_FULL_OFFSET, 1 << 62, (1 << 64) - 5)
                    n += 1
        finally:
            os.close(f)
    return n


def test_hostile_writer_cannot_set_the_lost_figure(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    t0 = time.monotonic()
    ust_env.ust("start")
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.send("emit app:alpha 100 0")
    assert _scribble_lost_counters(app.pid) > 0
    c = ust_env.client()
    stats = c.call("stats")["traces"]
    lost = c.stop("s")["lost"]
    elapsed = time.monotonic() - t0
    nbuf = sum(len(bufs) for chans in stats.values() for bufs in chans.values())
    # At most what buffers could really lose meanwhile, and the counters never exceed 2^63.
    from ust.consumer.source import MAX_LOSS_RATE

    assert lost <= (elapsed + 1) * MAX_LOSS_RATE * nbuf * 2, lost
    for chans in stats.values():
        for bufs in chans.values():
            for b in bufs:
                assert 0 <= b["lost_big"] < 1 << 63 and b["lost_full"] < 1 << 62
    ust_env.ust("destroy", "s")
    assert values(read_events(ust_env.out)) == list(range(100))


def test_app_name_cannot_lead_a_trace_directory_elsewhere(ust_env):
    """A per-PID trace directory is named after the application, which names itself."""
    from ust.daemon import protocol

    decl = {"name": "evil:ev", "loglevel": 6, "kind": "tracepoint", "fields": []}
    ust_env.client().ping()
    s = _connect(ust_env.home)
    protocol.send_msg(s, {"cmd": "register", "pid": os.getpid(), "uid": os.getuid(),
                          "procname": "../../../../escape", "tracepoints": [decl], "seq": 1})
    assert protocol.recv_msg(s)[0]["ok"]
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-channel", "channel0", "--buffers-pid")
    ust_env.ust("enable-event", "evil:*")
    ust_env.ust("start")  # this "application" never answers: dropped after a while
    ust_env.ust("destroy", "s")
    s.close()
    top = os.path.dirname(os.path.dirname(ust_env.out))
    assert not any(n.startswith("escape") for n in os.listdir(top) + os.listdir(os.path.dirname(ust_env.out)))
    [made] = os.listdir(os.path.join(ust_env.out, "ust", "pid"))
    assert made.startswith("_._.._.._.._escape-")  # one harmless name inside the output


KERNEL_APP = "import os\nfor _ in range(40):\n    os.getppid()\n"


@needs_users
def test_a_tracing_group_members_kernel_trace_is_made_with_her_credentials(sysd):
    """Through the system daemon, a member of the tracing group has the kernel
    domain; her kernel trace's files are hers (written by her own consumer, given the readers),
    and babeltrace2 reads the system calls of her program in it."""
    from conftest import bt2_dump, events_of

    from ust.kernel import tracefs

    alice = ensure_user(ALICE, ("tracing",))
    name = f"alice-k{os.getpid()}"  # the ftrace instance is the machine's: one per test run
    alice_out = os.path.join(user_dir(sysd.top, alice, name), "trace")
    ok_as(alice, sysd.rundir, "create", name=name, output=alice_out)
    assert "sched:sched_switch" in ok_as(alice, sysd.rundir, "kernel_list")["events"]
    ok_as(alice, sysd.rundir, "kernel_enable_event", session=name, patterns=["getppid"], syscall=True)
    ok_as(alice, sysd.rundir, "start", session=name)
    instance = os.path.join(tracefs.find_tracefs(), "instances", "ust-" + name)
    assert os.path.isdir(instance)
    prog = subprocess.run([SYS_PY, "-c", KERNEL_APP], env={"UST_AGENT": "0"}, capture_output=True, **creds(alice))
    assert prog.returncode == 0
    # her consumer drains the kernel: a rotation archives her kernel chunk, as hers
    archive = ok_as(alice, sysd.rundir, "rotate", session=name)["path"]
    # the statedump at the start (the processes already running) was written by her consumer,
    # as /proc shows them to her: the thread that wrote it is hers, and saw itself
    states = events_of(bt2_dump(os.path.join(archive, "kernel")), "lttng_statedump_process_state")
    writers = {e["context"]["tid"] for e in states}
    assert len(writers) == 1, writers
    [writer] = writers
    assert os.stat(f"/proc/{writer}").st_uid == alice.pw_uid  # (alive: her session goes on)
    assert writer in {e["payload"]["tid"] for e in states}
    prog2 = subprocess.run([SYS_PY, "-c", KERNEL_APP], env={"UST_AGENT": "0"}, capture_output=True, **creds(alice))
    assert prog2.returncode == 0
    ok_as(alice, sysd.rundir, "stop", session=name)
    ok_as(alice, sysd.rundir, "destroy", session=name)
    assert not os.path.exists(instance)
    assert owners(alice_out) == {alice.pw_uid}
    archives = sorted(glob.glob(os.path.join(alice_out, "archives", "*")), key=lambda d: int(d.rsplit("-", 1)[1]))
    assert archives[0] == archive and len(archives) == 2
    for d in archives:
        calls = events_of(bt2_dump(os.path.join(d, "kernel")), "syscall_entry_getppid")
        assert len(calls) >= 40


@needs_users
def test_a_tracing_group_members_kernel_trigger_is_counted_by_her_consumer(sysd):
    """Through the system daemon, a member of the tracing group may have kernel triggers (as the kernel domain):
    the daemon makes the instance, her own consumer (her credentials) reads its rings and counts her matches;
    removing the trigger removes the instance. Her user's own daemon (not root) refuses in one line."""
    from ust.kernel import tracefs

    alice = ensure_user(ALICE, ("tracing",))
    name = f"ak{os.getpid()}"
    t = ok_as(alice, sysd.rundir, "add_trigger", name=name, domain="kernel", syscall="exit", pattern="getppid",
              filter=f"ret == {os.getpid()}", actions=[{"type": "notify"}])["trigger"]
    instance = os.path.join(tracefs.find_tracefs(), "instances", t["condition"]["instance"])
    assert os.path.isdir(instance)
    readers = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(instance + "/per_cpu/"):
                    readers.add(os.stat(f"/proc/{pid}").st_uid)
        except OSError:
            continue
    assert alice.pw_uid in readers  # her consumer holds them (and root's daemon its own copies)
    prog = subprocess.run([SYS_PY, "-c", KERNEL_APP], env={"UST_AGENT": "0"}, capture_output=True, **creds(alice))
    assert prog.returncode == 0

    def hits():
        return next(x["hits"] for x in ok_as(alice, sysd.rundir, "list_triggers")["triggers"] if x["name"] == name)

    wait_until(lambda: hits() == 40, what="her 40 getppid() counted by her consumer")
    ok_as(alice, sysd.rundir, "remove_trigger", name=name)
    assert not os.path.exists(instance)


@needs_users
def test_kernel_tracing_is_refused_in_one_line_to_others(sysd):
    """Someone outside the tracing group cannot reach the system daemon at all;
    a user's own daemon (not root) has no kernel domain."""
    bob = ensure_user(BOB)
    err = call_as(bob, sysd.rundir, "kernel_list")["error"]
    assert err and "\n" not in err.strip()
    own = tempfile.mkdtemp(prefix="ust-t-bob-")
    os.chown(own, bob.pw_uid, bob.pw_gid)
    try:
        code = ("import os, sys\n"
                "from ust.daemon.sessiond.server import SessionDaemon\n"
                "from ust.daemon.sessiond.model import Session\n"
                "from ust.daemon.sessiond import kernel, ktriggers\n"
                "from ust.errors import SessionError\n"
                "d = SessionDaemon(sys.argv[1], consumer=False)\n"
                "try:\n"
                "    kernel.enable(d, Session('b', '/nonexistent', uid=os.getuid()), ['sched_switch'], False)\n"
                "except SessionError as exc:\n"
                "    print(exc)\n"
                "try:\n"
                "    ktriggers.check_allowed(d, os.getuid())\n"
                "except SessionError as exc:\n"
                "    print(exc)\n")
        r = subprocess.run([SYS_PY, "-c", code, own], env={"PYTHONPATH": USER_SRC, "UST_AGENT": "0"},
                           capture_output=True, text=True, timeout=120, **creds(bob))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 2 and lines[0].startswith("kernel tracing needs root"), r.stdout
        assert lines[1].startswith("kernel triggers need root: this session daemon does not run as root"), r.stdout
    finally:
        shutil.rmtree(own, ignore_errors=True)
