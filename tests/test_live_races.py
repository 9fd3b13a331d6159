"""Live sessions rotating while applications write: every event exactly once, and babeltrace2
following the session without error (docs/relay.md, "The live barrier").

Two races of the live timer against writers, each a few per cent of rotations under load, are
pinned here: the stress test below rotates a live session many times while several writer
threads in two processes write numbered events, with babeltrace2 following; the ring tests in
tests/test_ring.py reproduce each race deterministically with a writer paused at the instant
that matters."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from conftest import needs_babeltrace2
from daemon_util import ust_env, wait_until  # noqa: F401
from relay_util import Relayd, attached_viewers, live_viewer

import pytest

WRITER = r"""
import os, sys, threading, time
import ust
tp = ust.tracepoint("race:ev", {"w": ust.uint32, "n": ust.uint64})
stop = threading.Event()
counts = {}
def work(w):
    n = 0
    while not stop.is_set():
        for _ in range(20):
            tp(w, n)
            n += 1
        counts[w] = n
        time.sleep(0.002)
print(f"ready {os.getpid()}", flush=True)
ts = [threading.Thread(target=work, args=(w,)) for w in range(int(sys.argv[1]))]
for line in sys.stdin:
    if line.strip() == "go":
        for t in ts: t.start()
        print("ok", flush=True)
    elif line.strip() == "stop":
        stop.set()
        for t in ts: t.join()
        print("ok " + " ".join(str(counts.get(w, 0)) for w in range(len(ts))), flush=True)
"""

EVENT = re.compile(r"race:ev: .*?vpid = (\d+).*?\{ w = (\d+), n = (\d+) \}")


@pytest.fixture
def relayd(tmp_path):
    rundir = tmp_path / "relay-run"
    rundir.mkdir()
    relay = Relayd(tmp_path / "relay-out", rundir)
    yield relay
    if relay.alive():
        assert relay.stop() == 0, relay.stderr


def _events(text: str) -> list[tuple[int, int, int]]:
    return [tuple(map(int, m.groups())) for m in EVENT.finditer(text)]


@needs_babeltrace2
def test_live_rotations_while_threads_write_lose_nothing_and_babeltrace2_follows(ust_env, relayd, tmp_path):
    """A live session (20 ms live timer, 4 KiB packets: a flush of an idle or half-written packet
    every tick) rotated 12 times while 2 processes x 3 threads write numbered events: every event
    is in exactly one archive, a missing one only as counted discarded, and babeltrace2 following
    the session live prints exactly the events recorded, without stopping on an event older than
    one it printed."""
    env = ust_env
    env.ust("create", "s", "-U", relayd.net_url, "--live=20000")
    env.ust("enable-channel", "c", "--subbuf-size", "4k", "--num-subbuf", "64", "--buffers-uid")
    env.ust("enable-event", "race:ev", "-c", "c")
    env.ust("add-context", "-c", "c", "-t", "vpid")
    apps = []
    for _ in range(2):
        p = subprocess.Popen([sys.executable, "-c", WRITER, "3"], env=env.env(), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, bufsize=1)
        env.procs.append(p)
        line = p.stdout.readline()
        assert line.startswith("ready"), line
        apps.append((p, int(line.split()[1])))
    for _, pid in apps:
        env.wait_registered(pid)
    env.ust("start")
    for p, _ in apps:
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().startswith("ok")
    host = os.uname().nodename
    wait_until(lambda: os.path.isdir(os.path.join(relayd.output, host)), what="the session on the relay")
    viewer = live_viewer(f"{relayd.live_url}/host/{host}/s", tmp_path / "live.txt")
    wait_until(lambda: attached_viewers(relayd) == 1, timeout=120, what="babeltrace2 attached")
    for _ in range(12):
        time.sleep(0.25)
        env.ust("rotate")
    time.sleep(0.25)
    written = 0
    for p, _ in apps:  # the writers stop before the session: every event written is recorded or discarded
        p.stdin.write("stop\n")
        p.stdin.flush()
        reply = p.stdout.readline().split()
        assert reply[0] == "ok", reply
        written += sum(map(int, reply[1:]))
    _, out, _ = env.ust("stop")
    env.ust("destroy")
    err = viewer.communicate(timeout=300)[1]
    (tmp_path / "live.err").write_text(err)
    # (babeltrace2 warns of the discarded events, as it should)
    assert viewer.returncode == 0, [line for line in err.splitlines() if "discarded" not in line]
    [sdir] = [d for d in os.listdir(os.path.join(relayd.output, host)) if not d.startswith(".")]
    archives = os.path.join(relayd.output, host, sdir, "archives")
    recorded = []
    for a in sorted(os.listdir(archives), key=lambda a: int(a.rsplit("-", 1)[1])):
        r = subprocess.run(["babeltrace2", os.path.join(archives, a)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        recorded += _events(r.stdout)
    assert len(recorded) == len(set(recorded)), "an event recorded twice"
    m = re.search(r"(\d+) events were discarded", out)
    discarded = int(m.group(1)) if m else 0
    assert written - len(recorded) == discarded, f"{written} written, {len(recorded)} recorded, {discarded} discarded"
    assert {(pid, w) for pid, w, _ in recorded} == {(pid, w) for _, pid in apps for w in range(3)}
    live = _events((tmp_path / "live.txt").read_text())
    assert sorted(live) == sorted(recorded)
