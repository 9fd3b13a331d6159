"""The open calls' file names (ust.kernel.paths: path probes on the C library) whatever CPU a
thread runs on: real tracefs, real processes migrated between CPUs, babeltrace2 as the oracle.

Needs root and a tracefs it can mount (each test says why it skips otherwise), uprobe events
and two CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from conftest import bt2_dump, discarded_of, events_of, needs_bt2

from ust.kernel import tracefs
from ust.kernel.capture import KernelCapture
from ust.kernel.tracefs import KernelTracingError


@pytest.fixture(scope="module")
def tracefs_dir():
    if os.geteuid() != 0:
        pytest.skip("kernel tracing needs root (tracefs instances)")
    try:
        return tracefs.find_tracefs()
    except KernelTracingError as exc:
        pytest.skip(f"cannot use tracefs here: {exc}")


@pytest.fixture
def capture(tracefs_dir, tmp_path):
    made = []

    def make(tag, **kw):
        kw.setdefault("poll_interval", 0.02)
        c = KernelCapture(f"t{os.getpid()}-{tag}", str(tmp_path / tag), **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.destroy()


# Opens files f0..f{N-1} in a directory between two getppid() markers, one at a time (the C
# library's open64: a path probe, then the openat system call), each file by a new path object.
_OPENER = """
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
os.getppid()
for i in range(n):
    os.close(os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_WRONLY, 0o600))
os.getppid()
print("done", flush=True)
sys.stdin.readline()
"""


def _hop(pid: int, stop: threading.Event) -> int:
    """Move a process between the CPUs until told to stop (each change of its affinity migrates
    it at once, wherever it is: between a path probe and its system call too); returns the moves."""
    cpus = sorted(os.sched_getaffinity(0))
    moves = 0
    while not stop.is_set():
        try:
            os.sched_setaffinity(pid, {cpus[moves % len(cpus)]})
        except OSError:
            break  # (gone)
        moves += 1
    return moves


def _opens_between_markers(dump: list[dict], tid: int) -> list[str]:
    """The file names of a thread's openat entries between its two getppid entries."""
    mine = [e for e in events_of(dump) if e["context"]["tid"] == tid
            and e["name"] in ("syscall_entry_openat", "syscall_entry_getppid")]
    marks = [i for i, e in enumerate(mine) if e["name"] == "syscall_entry_getppid"]
    assert len(marks) == 2, f"the opener's markers: {len(marks)} getppid entries"
    return [e["payload"]["filename"] for e in mine[marks[0] + 1:marks[1]]]


@needs_bt2
@pytest.mark.parametrize("contexts", [("tid",), ("tid", "prio")])
def test_every_open_has_its_file_name_while_the_thread_hops_between_cpus(capture, tmp_path, contexts):
    """A process opening files while another moves it between the CPUs as fast as it can: the
    path probe's record and its system call's are often on different CPUs (and the CPUs' pages
    are converted in any order). Every openat entry still carries the exact name it opened, in
    order, with nothing lost."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to migrate between")
    n = 3000
    files = tmp_path / "files"
    files.mkdir()
    c = capture("hop" + "-".join(contexts), buffer_size_kb=16384, contexts=contexts)
    c.enable(["openat", "getppid"], syscalls=True)
    if c.paths_unavailable:
        pytest.skip(f"path probes unavailable here: {c.paths_unavailable}")
    app = subprocess.Popen([sys.executable, "-c", _OPENER, str(files), str(n)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    stop = threading.Event()
    moves = []
    hopper = threading.Thread(target=lambda: moves.append(_hop(app.pid, stop)))
    try:
        assert app.stdout.readline() == "ready\n"
        c.start()
        hopper.start()
        app.stdin.write("go\n")
        app.stdin.flush()
        assert app.stdout.readline() == "done\n"
        stop.set()
        hopper.join()
        c.stop()
    finally:
        stop.set()
        if app.poll() is None:
            app.stdin.write("end\n")
            app.stdin.flush()
            app.wait(timeout=60)
    assert moves and moves[0] > 100, moves
    dump = bt2_dump(tmp_path / ("hop" + "-".join(contexts)) / "kernel")
    assert discarded_of(dump) == 0 and sum(c.discarded().values()) == 0  # nothing lost: every name is due
    names = _opens_between_markers(dump, app.pid)
    expected = [str(files / f"f{i}") for i in range(n)]
    missing = [i for i, (got, want) in enumerate(zip(names, expected)) if got != want]
    assert len(names) == n and not missing, (len(names), len(missing), [names[i] for i in missing[:5]])
