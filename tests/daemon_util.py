"""Helpers for the end-to-end daemon tests: real daemons, real apps, babeltrace2 as the oracle."""

from __future__ import annotations

import os

os.environ["UST_AGENT"] = "0"  # the test process is the controller, never a traced application

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "src")
DRIVEN = os.path.join(HERE, "apps", "driven.py")
SERVICE = os.path.join(ROOT, "examples", "service.py")
BABELTRACE = shutil.which("babeltrace2")


def wait_until(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Env:
    """One UST_HOME with its daemons; cleans them up."""

    def __init__(self):
        self.home = tempfile.mkdtemp(prefix="ust-t-")
        self.out = os.path.join(self.home, "traces")
        self.procs: list[subprocess.Popen] = []
        self._old = os.environ.get("UST_HOME")
        os.environ["UST_HOME"] = self.home

    def env(self, **extra) -> dict:
        e = dict(os.environ)
        e.pop("UST_AGENT", None)
        e["UST_HOME"] = self.home
        e["PYTHONPATH"] = SRC + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        e["UST_AGENT_RETRY"] = "0.1"
        e.update(extra)
        return e

    def client(self):
        from ust.control import Client

        return Client(self.home)

    def ust(self, *args, check=True) -> tuple[int, str, str]:
        """Run the real `ust` command in a subprocess."""
        r = subprocess.run([sys.executable, "-m", "ust.cli", *args], env=self.env(UST_AGENT="0"),
                           capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"ust {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r.returncode, r.stdout, r.stderr

    def app(self, script=DRIVEN, *args, **env) -> "App":
        p = subprocess.Popen([sys.executable, script, *args], env=self.env(**env), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, bufsize=1)
        self.procs.append(p)
        app = App(p)
        return app

    def wait_registered(self, pid, with_tracepoints=1):
        def registered():
            for a in self.client().list_apps():
                if a["pid"] == pid and len(a["tracepoints"]) >= with_tracepoints:
                    return True
            return False

        wait_until(registered, what=f"app {pid} to register")

    def close(self):
        from ust.control import sessiond_pid, stop_sessiond

        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        pid = sessiond_pid(self.home)
        if pid is not None:
            try:
                stop_sessiond(self.home, timeout=30)
            except Exception:
                os.kill(pid, signal.SIGKILL)
        if self._old is None:
            os.environ.pop("UST_HOME", None)
        else:
            os.environ["UST_HOME"] = self._old
        if not os.environ.get("UST_TEST_KEEP"):
            shutil.rmtree(self.home, ignore_errors=True)


class App:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        line = proc.stdout.readline()
        assert line.startswith("ready"), f"app did not start: {line!r}"
        self.pid = int(line.split()[1])

    def send(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply.startswith("ok"), f"app answered {reply!r} to {line!r}"
        return reply.strip()

    def exit(self):
        try:
            self.send("exit")
        except (BrokenPipeError, AssertionError):
            pass
        self.proc.wait(30)


_EVENT_RE = re.compile(r"^\[[^\]]*\] \([^)]*\) \S+ (\S+): (.*)$")


def read_events(path: str) -> list[tuple[str, str]]:
    """(event name, the rest of babeltrace2's line) of every event; no warning allowed."""
    r = subprocess.run([BABELTRACE, path], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"babeltrace2 failed on {path}: {r.stderr}"
    events = []
    for line in r.stdout.splitlines():
        m = _EVENT_RE.match(line)
        assert m, f"unexpected babeltrace2 line {line!r}"
        events.append((m.group(1).rstrip(":"), m.group(2)))
    return events


def values(events, name=None) -> list[int]:
    out = []
    for n, rest in events:
        if name is None or n == name:
            m = re.search(r"\bv = (-?\d+)", rest)
            if m:
                out.append(int(m.group(1)))
    return out


def counts(events) -> dict:
    c: dict = {}
    for n, _ in events:
        c[n] = c.get(n, 0) + 1
    return c


needs_bt = pytest.mark.skipif(BABELTRACE is None, reason="babeltrace2 is not installed")


@pytest.fixture
def ust_env():
    env = Env()
    try:
        yield env
    finally:
        env.close()
