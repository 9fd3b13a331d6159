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
from daemon_util import wait_until

from ust._ring._ring import clock_now
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


# Opens files f0..f{N-1} of a directory between two getppid() markers, one at a time (the C
# library's open64: a path probe, then the openat system call), each by a new path object (the
# allocator often gives it the address of the previous one: a stale name would match). Each call
# says which file it opens in its mode argument, which the kernel masks (S_IALLUGO) but ftrace
# records whole: i << 12 | 0o600. A line on stdin starts each of the phases given in argv.
_OPENER = """
import os, sys
d, phases = sys.argv[1], [int(n) for n in sys.argv[2:]]
print("ready", flush=True)
i = 0
for n in phases:
    sys.stdin.readline()
    os.getppid()
    for _ in range(n):
        os.close(os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_WRONLY, i << 12 | 0o600))
        i += 1
    os.getppid()
    print("done", flush=True)
sys.stdin.readline()
"""


class Opener:
    """The opener process, moved between the CPUs by a thread of this one while it runs."""

    def __init__(self, files, *phases: int):
        self.files = files
        self.app = subprocess.Popen([sys.executable, "-c", _OPENER, str(files), *map(str, phases)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.app.stdout.readline() == "ready\n"
        self.stop = threading.Event()
        self.moves: list[int] = []
        self.hopper = threading.Thread(target=lambda: self.moves.append(_hop(self.app.pid, self.stop)))
        self.hopper.start()

    def phase(self) -> None:
        self.app.stdin.write("go\n")
        self.app.stdin.flush()
        assert self.app.stdout.readline() == "done\n"

    def close(self) -> None:
        self.stop.set()
        self.hopper.join()
        if self.app.poll() is None:
            self.app.stdin.write("end\n")
            self.app.stdin.flush()
            self.app.wait(timeout=60)
        assert self.moves and self.moves[0] > 100, self.moves  # it did hop


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


def _opens(trace, tid: int) -> tuple[list[tuple[int, str]], list[dict]]:
    """(file index, file name) of a thread's openat entries (the index from the mode argument),
    and babeltrace2's dump of the trace. babeltrace2 2.0.4 shows an empty string as an earlier
    string field's value (docs/reader.md): the names are ust's reader's, and babeltrace2 must
    read the same events, and the same names where they are not empty."""
    import ust.ctf

    dump = bt2_dump(trace)
    oracle = [(e["payload"]["mode"] >> 12, e["payload"]["filename"]) for e in events_of(dump, "syscall_entry_openat")
              if e["context"]["tid"] == tid]
    opens = [(e.fields["mode"] >> 12, e.fields["filename"]) for e in ust.ctf.read_trace(trace)
             if e.name == "syscall_entry_openat" and e.context["tid"] == tid]
    assert [i for i, _ in opens] == [i for i, _ in oracle]
    assert all(name == oracle[k][1] for k, (_, name) in enumerate(opens) if name)
    return opens, dump


def _needs_two_cpus_and_probes(c) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to migrate between")
    if c.paths_unavailable:
        pytest.skip(f"path probes unavailable here: {c.paths_unavailable}")


@needs_bt2
@pytest.mark.parametrize("mode", ["tid", "prio", "snapshot"])
def test_every_open_has_its_file_name_while_the_thread_hops_between_cpus(capture, tmp_path, mode):
    """A process opening files while another moves it between the CPUs as fast as it can: the
    path probe's record and its system call's are often on different CPUs (and the CPUs' pages
    are converted in any order). Every openat entry still carries the exact name it opened, in
    order, with nothing lost: written as recorded (with the tid context, or with the prio context,
    whose pages are held back too), or from a flight recorder's snapshot."""
    n = 3000
    files = tmp_path / "files"
    files.mkdir()
    c = capture("hop", buffer_size_kb=16384, contexts=("tid", "prio") if mode == "prio" else ("tid",),
                snapshot=mode == "snapshot")
    c.enable(["openat"], syscalls=True)
    _needs_two_cpus_and_probes(c)
    opener = Opener(files, n)
    try:
        c.start()
        opener.phase()
        if mode == "snapshot":
            c.snapshot_to(str(tmp_path / "snap"))
        c.stop()
    finally:
        opener.close()
    opens, dump = _opens(tmp_path / ("snap" if mode == "snapshot" else "hop") / "kernel", opener.app.pid)
    assert discarded_of(dump) == 0 and sum(c.discarded().values()) == 0  # nothing lost: every name is due
    assert [i for i, _ in opens] == list(range(n))
    wrong = [(i, name) for i, name in opens if name != str(files / f"f{i}")]
    assert not wrong, (len(wrong), wrong[:5])


@needs_bt2
def test_after_lost_records_a_name_given_is_the_right_one_and_the_next_opens_have_theirs(capture, tmp_path):
    """Records lost (discard mode, the reader held off while the ring overflows) may hide a
    thread's call or probe between a probe and a call: no open is given another one's name, the
    trace counts every lost record, and the opens after the stretch have their names again."""
    files = tmp_path / "files"
    files.mkdir()
    c = capture("lossy", buffer_size_kb=256)
    c.enable(["openat"], syscalls=True)
    _needs_two_cpus_and_probes(c)
    first, second = 20000, 300
    opener = Opener(files, first, second)
    try:
        c.instance.set_pids([opener.app.pid])  # only its records: the second phase fits in the ring whatever else runs
        c.start()
        with c._paused():  # the ring overflows: discard mode drops what comes
            opener.phase()
        # every CPU's ring emptied of the first phase (seeing its drops is not enough: the reader has
        # read one CPU's ring then, maybe not yet another's, still full): the second phase fits
        done = clock_now()
        wait_until(lambda: c.read_through() > done, 60, "the reader to read every CPU past the first phase")
        assert [tracefs.read_stats(src.stats_fd)["entries"] for src in c.sources] == [0] * len(c.sources)
        opener.phase()
        c.stop()
    finally:
        opener.close()
    opens, dump = _opens(tmp_path / "lossy" / "kernel", opener.app.pid)
    lost = discarded_of(dump)
    assert lost > 0 and lost == sum(c.discarded().values()) == sum(c.lost_by_ring().values())
    assert len(opens) < first + second  # (some were lost)
    wrong = [(i, name) for i, name in opens if name not in ("", str(files / f"f{i}"))]
    assert not wrong, (len(wrong), wrong[:5])
    after = [(i, name) for i, name in opens if i >= first]
    assert [i for i, _ in after] == list(range(first, first + second))
    assert all(name == str(files / f"f{i}") for i, name in after), [x for x in after if not x[1]][:5]
