"""Declaring from many threads at once, and forking while another thread declares.

A tracepoint (or marker) declared lazily by several threads together is
recorded from each thread's first call: no thread gets it before every active
session that enables it has attached it. A fork while another thread declares
never leaves a lock held in the child.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import babeltrace2_text, needs_babeltrace2
from daemon_util import ROOT, read_events, ust_env  # noqa: F401 - ust_env is a fixture

SRC = os.path.join(ROOT, "src")

# Rounds of 4 threads passing a barrier, then each declaring the round's
# tracepoint and marker and recording N events with them at once.
LAZY_APP = textwrap.dedent("""
    import sys, threading
    import ust
    ROUNDS, THREADS, N = int(sys.argv[1]), 4, int(sys.argv[2])
    SESSION = sys.argv[3] if len(sys.argv) > 3 else None

    def worker(barrier, r, w):
        barrier.wait()
        tp = ust.tracepoint(f"lz:ev{r}", {"w": ust.uint8, "i": ust.uint32})
        for i in range(N):
            tp(w, i)
        for i in range(N):
            ust.mark("lzm", f"m{r}", "w %d i %d", w, i)

    def main():
        for r in range(ROUNDS):
            barrier = threading.Barrier(THREADS)
            threads = [threading.Thread(target=worker, args=(barrier, r, w)) for w in range(THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    if SESSION:
        with ust.Session(SESSION, events=["lz:*", "lzm:*"], subbuf_size=1 << 20, num_subbuf=8) as s:
            main()
        assert s.lost == 0, s.counters()
    else:
        main()
""")


def _counts(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        name = line.split(") ", 1)[1].split()[1].rstrip(":")
        out[name] = out.get(name, 0) + 1
    return out


@needs_babeltrace2
def test_embedded_session_records_lazily_declared_tracepoints_from_every_thread(tmp_path):
    rounds, n = 10, 200
    trace = tmp_path / "t"
    r = subprocess.run([sys.executable, "-c", LAZY_APP, str(rounds), str(n), str(trace)],
                       env={**os.environ, "UST_AGENT": "0"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out, err = babeltrace2_text(trace)
    assert err == ""
    expected = {f"lz:ev{k}": 4 * n for k in range(rounds)} | {f"lzm:m{k}": 4 * n for k in range(rounds)}
    assert _counts(out) == expected


@needs_babeltrace2
def test_ust_run_records_lazily_declared_tracepoints_from_every_thread(ust_env):
    """The issue's reproducer: under `ust run` the declaring thread waits for the daemon."""
    rounds, n = 3, 2000
    out = os.path.join(ust_env.home, "run")
    r = subprocess.run([sys.executable, "-m", "ust.cli", "run", "-o", out, "-e", "lz:*", "-e", "lzm:*",
                        "--subbuf-size", "1M", "--num-subbuf", "8", "--",
                        sys.executable, "-c", LAZY_APP, str(rounds), str(n)],
                       env=ust_env.env(UST_AGENT="0"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got: dict = {}
    for name, _ in read_events(out):
        got[name] = got.get(name, 0) + 1
    expected = {f"lz:ev{k}": 4 * n for k in range(rounds)} | {f"lzm:m{k}": 4 * n for k in range(rounds)}
    assert got == expected, r.stderr


# One thread declares new tracepoints without pause while the main thread
# forks 100 times; each child declares one more tracepoint (takes the
# registry's lock), records it and exits. A child stuck on a lock is killed
# after a generous deadline and counted.
FORK_APP = textwrap.dedent("""
    import os, signal, sys, threading, time
    import ust
    SESSION = sys.argv[1] if len(sys.argv) > 1 else None
    stop = threading.Event()

    def declarer():
        i = 0
        while not stop.is_set():
            ust.tracepoint(f"fk:d{i % 300}", {"v": ust.int32})(i)
            i += 1

    def main():
        t = threading.Thread(target=declarer, daemon=True)
        t.start()
        hung = 0
        for k in range(100):
            pid = os.fork()
            if pid == 0:
                ust.tracepoint(f"fk:child{k}", {"v": ust.int32})(k)
                os._exit(0)
            deadline = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0, status
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    hung += 1
                    break
                time.sleep(0.005)
        stop.set()
        t.join()
        print("hung", hung, flush=True)

    if SESSION:
        with ust.Session(SESSION, events=["fk:child*"]):
            main()
    else:
        main()
""")


def _run_fork_app(env, *args, timeout=900):
    r = subprocess.run([sys.executable, "-c", FORK_APP, *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["hung", "0"], r.stdout
    return r


def test_fork_while_another_thread_declares_no_agent():
    _run_fork_app({**os.environ, "UST_AGENT": "0", "PYTHONPATH": SRC})


@needs_babeltrace2
def test_fork_while_another_thread_declares_embedded_session(tmp_path):
    trace = tmp_path / "t"
    _run_fork_app({**os.environ, "UST_AGENT": "0", "PYTHONPATH": SRC}, str(trace))
    out, err = babeltrace2_text(trace)
    assert err == ""
    assert sorted(_counts(out)) == sorted(f"fk:child{k}" for k in range(100))


def test_fork_while_another_thread_declares_with_agent(ust_env):
    ust_env.ust("create", "fk", "-o", ust_env.out)
    ust_env.ust("enable-event", "fk:child*")
    ust_env.ust("start")
    _run_fork_app(ust_env.env())
    ust_env.ust("stop")
