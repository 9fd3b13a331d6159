"""The kernel domain through ftrace: real tracefs, real processes, babeltrace2 as the oracle.

Every test needs root and a tracefs it can mount; without them each test is
skipped with the reason (never passes silently)."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import babeltrace2_text, bt2_dump, discarded_of, events_of, needs_babeltrace2, needs_bt2
from daemon_util import ust_env, wait_until  # noqa: F401

from ust.kernel import pages, tracefs
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


def _name(tag: str) -> str:
    return f"t{os.getpid()}-{tag}"


def _traced(dump: list[dict]) -> list[dict]:
    """The events ftrace recorded (not the statedump ust writes at the start)."""
    return [e for e in events_of(dump) if not e["name"].startswith("lttng_statedump_")]


@pytest.fixture
def capture(tracefs_dir, tmp_path):
    made = []

    def make(tag, output=None, **kw):
        kw.setdefault("poll_interval", 0.02)
        c = KernelCapture(_name(tag), str(output or tmp_path / tag), **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.destroy()


_FLOODER = """
import os, sys
sys.stdin.readline()
for _ in range(int(sys.argv[1])):
    os.getppid()
print("done", flush=True)
sys.stdin.readline()
"""


@needs_bt2
def test_a_process_life_and_its_syscalls_are_in_the_kernel_trace_with_its_pid(capture, tmp_path):
    c = capture("life")
    c.enable(["sched_process_fork", "sched_process_exec", "sched_process_exit"])
    c.enable(["openat", "close", "read"], syscalls=True)
    c.start()
    p = subprocess.run(["/bin/cat", "/etc/hostname"], capture_output=True)
    assert p.returncode == 0
    c.stop()
    out, err = babeltrace2_text(tmp_path / "life" / "kernel")
    assert err == "" and out
    dump = bt2_dump(tmp_path / "life" / "kernel")
    forks = [e for e in events_of(dump, "sched_process_fork") if e["payload"]["parent_tid"] == os.getpid()]
    assert forks, "the fork of the test's child is missing"
    child = forks[-1]["payload"]["child_tid"]
    assert forks[-1]["context"]["tid"] == os.getpid()
    execs = [e for e in events_of(dump, "sched_process_exec") if e["payload"]["tid"] == child]
    assert [e["payload"]["filename"] for e in execs] == ["/bin/cat"]
    exits = [e for e in events_of(dump, "sched_process_exit") if e["payload"]["tid"] == child]
    assert len(exits) == 1 and exits[0]["payload"]["comm"] == "cat"
    mine = [e for e in events_of(dump) if e["name"].startswith("syscall_") and e["context"]["tid"] == child]
    names = [e["name"] for e in mine]
    for call in ("openat", "read", "close"):
        assert f"syscall_entry_{call}" in names and f"syscall_exit_{call}" in names, call
    # every entry is followed by its exit (one thread: strictly alternating)
    for entry, leave in zip(mine[::2], mine[1::2]):
        assert entry["name"].replace("entry", "exit") == leave["name"]
    assert any(e["name"] == "syscall_exit_read" and e["payload"]["ret"] == len(p.stdout) for e in mine)
    # ust latency --syscall pairs each thread's entries and exits
    from ust.analysis.latency import latency

    res = latency(str(tmp_path / "life" / "kernel"), "syscall_entry_read", "syscall_exit_read")
    child_reads = sum(1 for e in mine if e["name"] == "syscall_exit_read")
    all_exits = len(events_of(dump, "syscall_exit_read"))
    assert child_reads <= res.count <= all_exits
    assert any(g[2] == child for _, _, g in res.pairs)
    r = subprocess.run([sys.executable, "-m", "ust.cli", "latency", str(tmp_path / "life"), "--syscall", "read",
                        "--json"], capture_output=True, text=True, env={**os.environ, "UST_AGENT": "0"})
    assert r.returncode == 0 and json.loads(r.stdout)["count"] == res.count, r.stderr
    # sched events carry LTTng's field names
    assert set(execs[0]["payload"]) == {"filename", "tid", "old_tid"}


@needs_bt2
def test_two_sessions_with_different_kernel_events_do_not_see_each_others(capture, tmp_path):
    a = capture("a")
    b = capture("b")
    a.enable(["sched_process_exec"])
    b.enable(["getppid"], syscalls=True)
    a.start()
    b.start()
    subprocess.run([sys.executable, "-c", "import os; [os.getppid() for _ in range(10)]"], check=True)
    a.stop()
    b.stop()
    names_a = {e["name"] for e in _traced(bt2_dump(tmp_path / "a" / "kernel"))}
    names_b = {e["name"] for e in _traced(bt2_dump(tmp_path / "b" / "kernel"))}
    assert names_a == {"sched_process_exec"}
    assert names_b == {"syscall_entry_getppid", "syscall_exit_getppid"}


@needs_bt2
@pytest.mark.parametrize("overwrite", [False, True], ids=["discard", "overwrite"])
def test_lost_events_under_a_flood_are_counted_exactly(capture, tmp_path, overwrite):
    n = 100_000
    flooder = subprocess.Popen([sys.executable, "-c", _FLOODER, str(n)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        # a 4 KiB ring per CPU and a drain that sleeps through the flood: most events are lost
        c = capture("flood", buffer_size_kb=4, overwrite=overwrite, poll_interval=3600)
        c.enable(["getppid"], syscalls=True)
        c.instance.set_pids([flooder.pid])
        c.start()
        flooder.stdin.write("go\n")
        flooder.stdin.flush()
        assert flooder.stdout.readline() == "done\n"
        c.stop()
        ring_lost = sum(c.lost_by_ring().values())
    finally:
        flooder.communicate("\n", timeout=60)
    dump = bt2_dump(tmp_path / "flood" / "kernel")
    recorded = len(_traced(dump))
    discarded = discarded_of(dump)
    assert ring_lost > 0 and recorded > 0
    assert discarded == ring_lost
    assert recorded + discarded == 2 * n  # every getppid entry and exit: recorded or counted lost
    # each loss is placed in a window of time, never one instant ("between [X] and [X]": a first
    # packet's losses are dated from the start of recording, drops from when the ring was found empty)
    import re

    _, err = babeltrace2_text(tmp_path / "flood" / "kernel")
    windows = re.findall(r"discarded \d+ events between \[([^]]+)\] and \[([^]]+)\]", err)
    assert windows, err
    assert all(begin < end for begin, end in windows), err


# A flood of getppid() on every CPU in turn, then, at the next line, a burst of getpid() on each (one
# thread: the instance follows its pid).
_FLOOD_THEN_BURST = """
import os, sys
flood, burst = int(sys.argv[1]), int(sys.argv[2])
cpus = sorted(os.sched_getaffinity(0))
def all_cpus(n, call):
    for cpu in cpus:
        os.sched_setaffinity(0, {cpu})
        for _ in range(n):
            call()
sys.stdin.readline()
all_cpus(flood, os.getppid)
print("done", flush=True)
sys.stdin.readline()
all_cpus(burst, os.getpid)
print("done", flush=True)
sys.stdin.readline()
"""


@needs_bt2
def test_once_read_through_passes_a_flood_every_ring_has_room_again(capture, tmp_path):
    """Discard mode, the drain held off while a flood overflows every CPU's ring: once
    ``read_through()`` passes a time taken after the flood, no ring holds anything of it (the drain
    read each CPU out), and a burst after it is recorded whole on every CPU."""
    from ust._ring._ring import clock_now

    flood, burst = 100_000, 500
    app = subprocess.Popen([sys.executable, "-c", _FLOOD_THEN_BURST, str(flood), str(burst)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        c = capture("readthrough", buffer_size_kb=256)
        c.enable(["getppid", "getpid"], syscalls=True)
        c.instance.set_pids([app.pid])
        c.start()
        with c._paused():
            app.stdin.write("go\n")
            app.stdin.flush()
            assert app.stdout.readline() == "done\n"
            flooded = clock_now()
            assert c.read_through() < flooded
            full = [tracefs.read_stats(src.stats_fd) for src in c.sources]
        wait_until(lambda: c.read_through() > flooded, 60, "the drain to read every CPU past the flood")
        assert [tracefs.read_stats(src.stats_fd)["entries"] for src in c.sources] == [0] * len(c.sources)
        app.stdin.write("go\n")
        app.stdin.flush()
        assert app.stdout.readline() == "done\n"
        c.stop()
    finally:
        app.communicate("\n", timeout=60)
    assert all(s["dropped events"] > 0 and s["entries"] > 0 for s in full), full  # every ring overflowed
    dump = bt2_dump(tmp_path / "readthrough" / "kernel")
    assert discarded_of(dump) == sum(c.lost_by_ring().values()) > 0
    names = [e["name"] for e in _traced(dump)]
    ncpu = len(c.sources)
    assert names.count("syscall_entry_getpid") == names.count("syscall_exit_getpid") == burst * ncpu


@needs_bt2
def test_a_sleeping_python_thread_is_switched_out_between_its_events_on_one_time_line(capture, tmp_path):
    import ust

    tick = ust.tracepoint("kern:tick", {"i": ust.uint32})
    out = tmp_path / "both"
    tids = []
    with ust.Session(out, events=["kern:*"], context=["vtid"]) as s:
        c = capture("both", output=out, clock_offset_ns=s.trace.info.clock_offset_ns)
        c.enable(["sched_switch"])
        c.start()

        def work():
            tids.append(threading.get_native_id())
            for i in range(5):
                tick(i)
                time.sleep(0.02)
            tick(5)

        t = threading.Thread(target=work)
        t.start()
        t.join()
        c.stop()
    _, err = babeltrace2_text(out)
    assert err == ""
    dump = bt2_dump(out)  # both traces, merged by babeltrace2's muxer
    tid = tids[0]
    order = []
    for e in events_of(dump):
        if e["name"] == "kern:tick":
            order.append(("tick", e["payload"]["i"]))
        elif e["name"] == "sched_switch" and e["payload"]["prev_tid"] == tid:
            order.append(("out", None))
        elif e["name"] == "sched_switch" and e["payload"]["next_tid"] == tid:
            order.append(("in", None))
    ticks = [i for i, (kind, _) in enumerate(order) if kind == "tick"]
    assert [order[i][1] for i in ticks] == list(range(6))
    for a, b in zip(ticks, ticks[1:]):
        between = [kind for kind, _ in order[a + 1:b]]
        assert "out" in between and "in" in between, f"no switch away between ticks: {order[a:b + 1]}"
        assert between.index("out") < len(between) - 1 - between[::-1].index("in")
    # ust stats: the thread's time off the CPU is at least its sleeps, each sleep a switch away
    from ust.analysis.stats import trace_stats

    st = trace_stats(str(out))
    sched = st.sched[tid]
    assert sched.off_cpu_ns >= 5 * 15_000_000  # five sleeps of 20 ms, from just after each began
    assert sched.switches - sched.preempted >= 5
    assert sched.on_cpu_ns > 0
    # the Chrome/Perfetto export: the thread's states on the track of its own events
    from ust.analysis.export import export_chrome

    export_chrome(str(out), str(tmp_path / "both.json"))
    with open(tmp_path / "both.json") as f:
        chrome = json.load(f)["traceEvents"]
    ticks = sorted(e["ts"] for e in chrome if e["name"] == "kern:tick")
    track = {(e["pid"], e["tid"]) for e in chrome if e["name"] == "kern:tick"}
    states = [e for e in chrome if e.get("cat") == "sched" and (e["pid"], e["tid"]) in track]
    assert len(ticks) == 6 and len(track) == 1 and states
    for a, b in zip(ticks, ticks[1:]):  # between two ticks, waits that add up to most of the sleep
        # (in pieces when the thread wakes early or, its sleep over, waits for the GIL another thread holds:
        # a loaded run showed 6 + 14 + 5 ms)
        waits = [e for e in states if e["name"] == "waiting" and a <= e["ts"] and e["ts"] + e["dur"] <= b]
        assert sum(e["dur"] for e in waits) >= 15_000, (a, b, waits)


def test_the_instance_is_removed_on_destroy(capture, tracefs_dir):
    c = capture("destroy")
    c.enable(["sched_switch"])
    c.start()
    path = c.instance.path
    assert os.path.isdir(path) and c.instance.clock == "mono"
    assert os.path.basename(path) == "ust-" + _name("destroy")
    c.destroy()
    assert not os.path.exists(path)


_CRASHER = """
import sys, time
from ust.kernel.capture import KernelCapture
c = KernelCapture(sys.argv[1], sys.argv[2])
c.enable(["sched_switch"])
c.enable(["openat"], syscalls=True)  # and its path probes (ust.kernel.paths)
c.start()
print(c.instance.path, flush=True)
time.sleep(3600)
"""


def _probe_groups(tracefs_dir) -> set:
    return {line.split()[0].split(":", 1)[1].split("/")[0]
            for line in open(os.path.join(tracefs_dir, "uprobe_events")).read().splitlines() if line.strip()}


def test_a_killed_owner_leaves_no_instance_after_the_next_start(capture, tracefs_dir, tmp_path):
    """Nor its path probes (uprobes: global kernel objects too), while a live session's stay."""
    from ust.kernel import paths

    live = capture("alive")
    live.enable(["openat"], syscalls=True)
    live.start()
    p = subprocess.Popen([sys.executable, "-c", _CRASHER, _name("crash"), str(tmp_path / "crash")],
                         stdout=subprocess.PIPE, text=True)
    path = p.stdout.readline().strip()
    assert path and os.path.isdir(path)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert os.path.isdir(path)  # the kernel keeps it: nobody removed it
    dead_group, live_group = paths.group(os.path.basename(path)), paths.group(live.instance.name)
    assert {dead_group, live_group} <= _probe_groups(tracefs_dir)  # each session its own
    removed = tracefs.remove_stale_instances(tracefs_dir)
    assert os.path.basename(path) in removed
    assert not os.path.exists(path)
    assert live.instance.exists() and live.instance.name not in removed
    groups = _probe_groups(tracefs_dir)
    assert dead_group not in groups and live_group in groups
    live.destroy()
    assert live_group not in _probe_groups(tracefs_dir)  # removed with its instance


def test_unknown_kernel_event_and_bad_session_name_are_one_line_errors(capture, tracefs_dir):
    c = capture("errors")
    with pytest.raises(KernelTracingError, match="no kernel event matches 'no_such_event_x'"):
        c.enable(["no_such_event_x"])
    with pytest.raises(KernelTracingError, match="no system call matches"):
        c.enable(["no_such_call"], syscalls=True)
    with pytest.raises(KernelTracingError, match="cannot name an ftrace instance"):
        tracefs.check_name("../evil")


@pytest.fixture(scope="module")
def real_pages(tracefs_dir):
    """Pages of a real instance (syscalls, sched_switch, irq with strings, the
    derived fields: fork's process ids, priorities, block rwbs), and the plans."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(__file__))) as d:
        c = KernelCapture(_name("pages"), d, buffer_size_kb=1024)
        try:
            c.enable(["sched_switch", "sched_wakeup", "sched_process_fork", "sched_process_exec",
                      "irq_handler_entry", "block_rq_issue", "block_rq_complete"])
            c.enable(["*"], syscalls=True)
            c.instance.start()
            subprocess.run(["/bin/true"])
            _direct_read(os.path.join(d, "direct"))
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                os.getppid()
                os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0))  # a setter's record
            c.instance.stop()
            got = c.instance.read_pages()
            from ust.kernel.prio import converter_config

            from ust.kernel.formats import path_probe

            probes = tuple(p for ev in c.trace.tracked.values() if (p := path_probe(ev)) is not None)
            return got, dict(c.plans), converter_config(list(c.trace.formats.values())), probes
        finally:
            c.destroy()


def _direct_read(path: str) -> bytes:
    """Write a file, then read it back with O_DIRECT (the page cache bypassed:
    a block request and, on a real disk, its completion interrupt)."""
    import mmap

    with open(path, "wb") as f:
        f.write(os.urandom(1 << 16))
        f.flush()
        os.fsync(f.fileno())
    buf = mmap.mmap(-1, 1 << 16)  # page-aligned, as O_DIRECT wants
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        n = os.readv(fd, [buf])
    finally:
        os.close(fd)
    return bytes(buf[:n])


def _task_table():
    """A tasks dict and its task_of for the converters (the process ids of fork's fields)."""
    tasks = {}

    def task_of(tid):
        tasks[tid] = (tid * 7 % 100003, b"comm-of-a-very-long-name"[:tid % 24])
        return tasks[tid]

    return tasks, task_of


def _c_converter():
    try:
        from ust.kernel._ftrace import Converter
    except ImportError:
        pytest.skip("the C page converter (ust.kernel._ftrace) is not built")
    return Converter


def test_the_c_page_converter_agrees_with_the_python_reference(real_pages):
    Converter = _c_converter()
    got, plans, _, probes = real_pages
    assert len(got) > 2
    for with_tid in (True, False):
        c = Converter(plans, with_tid, False, False, *_task_table())
        py = pages.PyConverter(plans, with_tid, False, False, *_task_table())
        total = 0
        for page in got:
            a, b = c.page(page), py.page(page)
            assert a[0] == bytes(b[0]) and a[1:] == b[1:]
            assert c.records == py.records == pages.page_records(page) >= a[1]  # every record, any type
            total += a[1]
        assert total > 100
    # with the pid/procname contexts: the same bytes, and each record's thread asked once per table
    asked = []

    def task_of(tid):
        asked.append(tid)
        tasks[tid] = (tid * 7 % 100003, b"comm-of-a-very-long-name"[:tid % 24])
        return tasks[tid]

    for with_pid, with_procname in ((True, True), (True, False), (False, True)):
        out = []
        for make in (Converter, pages.PyConverter):
            tasks = {}
            conv = make(plans, True, with_pid, with_procname, tasks, task_of)
            out.append([bytes(conv.page(page)[0]) for page in got])
        assert out[0] == out[1]
        assert len(asked) == 2 * len(set(asked))
        asked.clear()
    # the open calls' file names (ust.kernel.paths): the same scans (probes' records and open calls'
    # entries), paired into the same names, written the same
    from ust.kernel._ftrace import Pairing as CPairing
    from ust.kernel.paths import Pairing

    assert probes, "no path probe made (uprobe events, the C library)"
    for gap in (None, (0, max(pages.page_time(p) for p in got) + (1 << 32))):
        out = []
        for make, pairing_class in ((Converter, CPairing), (pages.PyConverter, Pairing)):
            conv = make(plans, True, False, False, *_task_table(), paths=probes)
            pairing = pairing_class()
            names = [conv.scan(page, pairing)[4] for page in got]
            if gap is not None:  # records lost over the whole stretch: no name lent across
                pairing.gap(*gap)
            pairing.pair()
            out.append(([bytes(conv.page(page, n)[0]) for page, n in zip(got, names)], names, pairing.names_given,
                        pairing.names_unknown, pairing.pending, pairing.done))
        assert out[0] == out[1] and out[0][3] > 0 and out[0][4] == 0
        if gap is None:
            assert out[0][2] > 0
            assert any(b"/direct\0" in events for events in out[0][0])  # _direct_read's open, by name
        else:
            assert out[0][2] == 0
    with pytest.raises(TypeError):
        Converter(plans, True, True, False, {}, lambda tid: "not a tuple").page(
            next(page for page in got if pages.PyConverter(plans, True, False, False, *_task_table()).page(page)[1]))
    with pytest.raises(TypeError):  # fork's process ids need the task table
        Converter(plans, True)
    with pytest.raises(TypeError):
        pages.PyConverter(plans, True)


def test_the_c_prio_context_agrees_with_the_python_reference(real_pages):
    """The prio context: followed through real pages (sched_switch, setpriority's records) the
    same in C and in Python, with other CPUs' changes, a tainted stretch and a horizon; the
    values it gives are task_prio()'s (20 for nice 0) or unknown, and a sched_switch record
    says its own task's prio."""
    from ust.kernel.prio import converter_config  # noqa: F401 (the fixture's configuration)

    Converter = _c_converter()
    got, plans, prio, _ = real_pages
    assert prio[0] is not None and prio[2], prio  # sched_switch and the setters are configured
    c, py = (Converter(plans, True, False, False, *_task_table(), prio=prio),
             pages.PyConverter(plans, True, False, False, *_task_table(), prio=prio))
    scans = [c.scan(page) for page in got]
    assert scans == [py.scan(page) for page in got]
    assert any(changes for _, _, _, changes, _ in scans)  # setpriority's records were seen
    others = sorted({ch for _, _, _, changes, _ in scans for ch in changes})
    for taint, horizon in ((False, (1 << 64) - 1), (True, (1 << 64) - 1), (False, scans[len(scans) // 2][1])):
        sc = sp = (-1, pages.PRIO_UNKNOWN)
        for page in got:
            a = c.page_prio(page, sc, others, taint, horizon)
            b = py.page_prio(page, sp, others, taint, horizon)
            assert a[0] == bytes(b[0]) and a[1:] == b[1:]
            sc, sp = a[5], b[5]
    with pytest.raises(TypeError):
        c.page(got[0])  # a prio converter says how it converts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_pages_never_crash_and_both_converters_agree(real_pages, data):
    Converter = _c_converter()
    got, plans, prio, probes = real_pages
    page = bytearray(data.draw(st.sampled_from(got)))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(page) - 1))
        page[pos] = data.draw(st.integers(0, 255))
    page = bytes(page[:data.draw(st.integers(0, len(page)))])
    try:
        a = Converter(plans, True, False, False, *_task_table()).page(page)
    except ValueError:
        with pytest.raises(pages.PageError):
            pages.PyConverter(plans, True, False, False, *_task_table()).page(page)
        return
    b = pages.PyConverter(plans, True, False, False, *_task_table()).page(page)
    assert a[0] == bytes(b[0]) and a[1:] == b[1:]
    # with the path probes: the same scans, and names given to the open calls the same way
    c, py = (make(plans, True, False, False, *_task_table(), paths=probes) for make in (Converter, pages.PyConverter))
    assert c.scan(page) == py.scan(page)
    from ust.kernel._ftrace import Pairing as CPairing
    from ust.kernel.paths import Pairing

    pairings = CPairing(), Pairing()
    scans = c.scan(page, pairings[0]), py.scan(page, pairings[1])
    for p in pairings:
        p.pair()
    assert scans[0] == scans[1] and [(p.names_given, p.names_unknown) for p in pairings] == [
        (pairings[1].names_given, pairings[1].names_unknown)] * 2
    names = data.draw(st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=6))
    a, b = c.page(page, names), py.page(page, names)
    assert a[0] == bytes(b[0]) and a[1:] == b[1:]
    # the prio context's conversion and scan agree too, on any page
    state = (data.draw(st.integers(-1, 5000)), data.draw(st.sampled_from([20, 27, -40, pages.PRIO_UNKNOWN])))
    changes = sorted(data.draw(st.lists(st.tuples(st.integers(0, 1 << 62), st.integers(-1, 5000),
                                                  st.integers(-101, 39)), max_size=4)))
    taint, horizon = data.draw(st.booleans()), data.draw(st.integers(0, (1 << 64) - 1))
    c, py = (Converter(plans, True, False, False, *_task_table(), prio=prio),
             pages.PyConverter(plans, True, False, False, *_task_table(), prio=prio))
    a, b = c.page_prio(page, state, changes, taint, horizon), py.page_prio(page, state, changes, taint, horizon)
    assert a[0] == bytes(b[0]) and a[1:] == b[1:]
    assert c.scan(page) == py.scan(page)
    # a kernel trigger's counting (ust.kernel.matcher) too
    from ust.kernel._ftrace import count_matches

    keep = data.draw(st.integers(0, 70))
    assert count_matches(page, keep) == pages.count_matches(page, keep)


def test_a_kernel_triggers_counting_agrees_with_the_python_reference_on_real_pages(real_pages):
    """_ftrace.count_matches against pages.count_matches (and against the converter's own count)."""
    from ust.kernel._ftrace import count_matches

    got, plans, _, _ = real_pages
    Converter = _c_converter()
    for page in got:
        a = count_matches(page, 5)
        assert a == pages.count_matches(page, 5)
        converted = Converter(plans, True, False, False, *_task_table()).page(page)
        assert sum(n for i, n in a[0].items() if i in plans) == converted[1]


# ---------------------------------------------------------------------------
# through the daemons and the CLI (lttng's -k)


def test_the_kernel_domain_through_the_cli_one_interleaved_story(ust_env, tracefs_dir):
    from daemon_util import read_events

    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    ust_env.ust("create", _name("ks"), "-o", ust_env.out)
    ust_env.ust("enable-channel", "-k", "kchan", "--subbuf-size", "1M", "--num-subbuf", "8")
    ust_env.ust("enable-event", "-k", "sched_switch,sched_wakeup")
    ust_env.ust("enable-event", "-k", "--syscall", "-a")
    ust_env.ust("add-context", "-k", "-t", "tid")
    ust_env.ust("enable-event", "app:*")
    _, listing, _ = ust_env.ust("list", _name("ks"))
    assert "kernel: 8192 KiB per CPU, discard mode" in listing and "* (system call) [enabled]" in listing
    ust_env.ust("start")
    instance = os.path.join(tracefs_dir, "instances", "ust-" + _name("ks"))
    assert os.path.isdir(instance)
    app.send("emit app:alpha 3")
    ust_env.ust("stop")
    # babeltrace2 reads both traces together, in one time order, without a word on stderr but for
    # the kernel ring's exact loss counts (system-wide system calls: another process's flood on a
    # shared machine fills the ring, and the trace says so)
    r = subprocess.run(["babeltrace2", ust_env.out], capture_output=True, text=True, timeout=300)
    losses = re.findall(r"WARNING: Tracer discarded \d+ events? between .*?\(stream class ID: \d+, stream ID: \d+\)\.\n",
                        r.stderr, flags=re.S)
    assert all('/kernel"' in w for w in losses), losses
    rest = r.stderr
    for w in losses:
        rest = rest.replace(w, "", 1)
    assert r.returncode == 0 and rest == "", r.stderr
    events = read_events(ust_env.out)
    names = [n for n, _ in events]
    assert names.count("app:alpha") == 3
    assert "sched_switch" in names and any(n.startswith("syscall_entry_") for n in names)
    # the app's own system calls are there, by its thread id, around its events
    mine = [n for n, rest in events if f"tid = {app.pid} }}" in rest and n.startswith("syscall_")]
    assert mine, "no system call of the application"
    first_alpha = names.index("app:alpha")
    assert any(n.startswith("syscall_") for n in names[:first_alpha])
    assert any(n.startswith("syscall_") for n in names[first_alpha:])
    _, view, _ = ust_env.ust("view", ust_env.out)
    assert "app:alpha" in view and "sched_switch" in view
    assert os.path.isdir(os.path.join(ust_env.out, "kernel")) and os.path.isdir(os.path.join(ust_env.out, "ust"))
    ust_env.ust("destroy", _name("ks"))
    assert not os.path.exists(instance)
    app.exit()


def test_list_k_shows_the_kernel_events_and_unknown_ones_are_one_line_errors(ust_env, tracefs_dir):
    _, out, _ = ust_env.ust("list", "-k")
    assert "sched:sched_switch (type: tracepoint)" in out
    assert "      openat\n" in out
    ust_env.ust("create", _name("kerr"), "-o", ust_env.out)
    rc, _, err = ust_env.ust("enable-event", "-k", "no_such_kernel_event", check=False)
    assert rc != 0 and err.strip().count("\n") == 0 and "no kernel event matches 'no_such_kernel_event'" in err
    rc, _, err = ust_env.ust("add-context", "-k", "-t", "ppid", check=False)
    assert rc != 0 and "not available from ftrace" in err and err.strip().count("\n") == 0


def test_a_snapshot_session_keeps_the_latest_kernel_events_in_overwrite_mode(ust_env, tracefs_dir):
    ust_env.ust("create", _name("ksnap"), "-o", ust_env.out, "--snapshot")
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    options = os.path.join(tracefs_dir, "instances", "ust-" + _name("ksnap"), "options")
    assert open(os.path.join(options, "overwrite")).read().strip() == "1"
    subprocess.run([sys.executable, "-c", "import os; [os.getppid() for _ in range(50)]"], check=True)
    _, out, _ = ust_env.ust("snapshot", "record")
    path = out.strip().split()[-1]
    kdir = glob.glob(os.path.join(ust_env.out, "snapshot-*", "kernel"))
    assert len(kdir) == 1, (out, os.listdir(ust_env.out))
    names = [e["name"] for e in events_of(bt2_dump(kdir[0]))]
    assert names.count("syscall_entry_getppid") >= 50 and names.count("syscall_exit_getppid") >= 50, path
    ust_env.ust("destroy", _name("ksnap"))
    assert not os.path.exists(os.path.join(tracefs_dir, "instances", "ust-" + _name("ksnap")))


def test_a_killed_session_daemon_leaves_no_instance_after_restart(ust_env, tracefs_dir):
    from ust.control import sessiond_pid

    ust_env.ust("create", _name("kcrash"), "-o", ust_env.out)
    ust_env.ust("enable-event", "-k", "sched_switch")
    ust_env.ust("start")
    instance = os.path.join(tracefs_dir, "instances", "ust-" + _name("kcrash"))
    assert os.path.isdir(instance)
    pid = sessiond_pid(ust_env.home)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
               what="the daemon to die")
    assert os.path.isdir(instance)
    ust_env.ust("list")  # starts a new daemon, which removes what nobody owns any more
    assert not os.path.exists(instance)


def test_stop_says_how_many_kernel_events_were_lost(ust_env, tracefs_dir):
    ust_env.ust("create", _name("klost"), "-o", ust_env.out)
    ust_env.ust("enable-channel", "-k", "k", "--subbuf-size", "4k", "--num-subbuf", "1")
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    # ten bursts of 20000 events, each starting while the drain engine sleeps (its read timer is
    # 50 ms): the ring of 2 pages per CPU overflows in well under a millisecond of a burst
    burst = "import os, time\nfor _ in range(10):\n    for _ in range(10000): os.getppid()\n    time.sleep(0.06)\n"
    subprocess.run([sys.executable, "-c", burst], check=True)
    _, out, _ = ust_env.ust("stop")
    lost = sum(discarded_of([e]) for e in bt2_dump(os.path.join(ust_env.out, "kernel")) if "discarded" in e)
    assert lost > 0
    assert f"Warning: {lost} kernel events were discarded" in out, out


@needs_bt2
@pytest.mark.parametrize("kind", ["drain", "prio", "snapshot"])
def test_a_reader_of_the_rings_never_chases_its_own_system_calls(capture, tmp_path, kind):
    """Every system call recorded, the reader's own among them: trace_pipe_raw hands a page
    out as soon as it holds one record, so reading a ring until it was empty never ended —
    each read's page held the previous read's records (a consumer stuck in one pass at 100%
    of a CPU, answering nothing, writing hundreds of MB a minute). A drain pass, the prio
    context's reading of every CPU and a snapshot each end at the first page begun after
    they began. The reader runs on CPU 0 and reads CPU 0's ring: its reads are in it."""
    from ust.consumer.drain import drain_stream
    from ust.consumer.output import DiscardTraceOutput

    c = capture("echo-" + kind, contexts=("tid", "prio") if kind == "prio" else ("tid",), snapshot=True)
    c.enable(["*"], syscalls=True)
    c.start()  # a snapshot session's capture: the sources, no engine (this test reads)

    def read_cpu0():
        os.sched_setaffinity(0, {0})  # this thread only
        if kind == "snapshot":
            c.snapshot_to(str(tmp_path / "snap"))
        else:
            drain_stream(c.sources[0], DiscardTraceOutput.DROP)

    for _ in range(3):
        reader = threading.Thread(target=read_cpu0, daemon=True)
        reader.start()
        reader.join(120)
        assert not reader.is_alive(), "the reader chased the ring it read"
    if kind == "snapshot":
        dump = bt2_dump(tmp_path / "snap" / "kernel")
        assert events_of(dump, "syscall_entry_read")  # its reads were recorded, and read


def _getppid_events(kdir, pid):
    """(timestamp, name, cpu) of one process's getppid events in a kernel trace."""
    return [(e["ts"], e["name"], e["cpu_id"]) for e in events_of(bt2_dump(kdir))
            if e["name"].endswith("_getppid") and e["context"]["tid"] == pid] if os.path.isdir(kdir) else []


@needs_bt2
def test_a_second_kernel_snapshot_still_holds_the_first_ones_events(capture, tmp_path):
    # snapshots do not consume the ring (as LTTng's do not): what the first one wrote, and was not
    # overwritten since, is in the second one too, beside what came after
    c = capture("snap2", snapshot=True)
    c.enable(["getppid"], syscalls=True)
    c.start()
    # both on CPU 0: the flood overwrites the first one's events only in the same per-CPU ring
    first = subprocess.Popen([sys.executable, "-c",
                              "import os; os.sched_setaffinity(0, {0}); [os.getppid() for _ in range(40)]"])
    assert first.wait() == 0
    c.snapshot_to(str(tmp_path / "s1"))
    second = subprocess.Popen([sys.executable, "-c", "import os; [os.getppid() for _ in range(30)]"])
    assert second.wait() == 0
    c.snapshot_to(str(tmp_path / "s2"))
    s1_first = _getppid_events(str(tmp_path / "s1" / "kernel"), first.pid)
    s2_first = _getppid_events(str(tmp_path / "s2" / "kernel"), first.pid)
    s2_second = _getppid_events(str(tmp_path / "s2" / "kernel"), second.pid)
    assert len(s1_first) == 80
    assert s2_first == s1_first  # the same events, same times: read again, not lost
    assert len(s2_second) == 60
    out, err = babeltrace2_text(tmp_path / "s2" / "kernel")
    assert err == "" and out


@needs_bt2
def test_kernel_snapshot_keeps_no_more_than_the_ring_and_counts_what_gave_way(capture, tmp_path):
    c = capture("snapbound", snapshot=True, buffer_size_kb=8)
    c.enable(["getppid"], syscalls=True)
    c.start()
    # both on CPU 0: the flood overwrites the first one's events only in the same per-CPU ring
    first = subprocess.Popen([sys.executable, "-c",
                              "import os; os.sched_setaffinity(0, {0}); [os.getppid() for _ in range(40)]"])
    assert first.wait() == 0
    c.snapshot_to(str(tmp_path / "s1"))
    assert len(_getppid_events(str(tmp_path / "s1" / "kernel"), first.pid)) == 80
    flood = subprocess.Popen([sys.executable, "-c",
                              "import os; os.sched_setaffinity(0, {0}); [os.getppid() for _ in range(20000)]"])
    assert flood.wait() == 0
    c.snapshot_to(str(tmp_path / "s2"))
    dump = bt2_dump(tmp_path / "s2" / "kernel")
    kept = [e for e in events_of(dump) if e["name"].endswith("_getppid")]
    assert not [e for e in kept if e["context"]["tid"] == first.pid]  # overwritten by the flood: gone
    page = c.instance.page_size()
    assert 0 < len(kept) * 16 <= len(c.sources) * (8 * 1024 + page)  # at most the ring's pages (16 B a record)
    assert discarded_of(dump) >= 80  # the first process's events at least, said lost


@needs_bt2
def test_the_pid_and_procname_contexts_are_each_threads_process_and_name(capture, tmp_path):
    c = capture("ctx", contexts=("tid", "pid", "procname"))
    c.enable(["getppid"], syscalls=True)
    c.start()
    code = ("import os, threading\n"
            "open(f'/proc/self/task/{threading.get_native_id()}/comm', 'w').write('kctxapp')\n"  # threads inherit it
            "def work():\n    [os.getppid() for _ in range(20)]\n"
            "ts = [threading.Thread(target=work) for _ in range(3)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "print(*[t.native_id for t in ts])\n")
    app = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    threads = {int(t) for t in app.communicate()[0].split()}
    assert app.returncode == 0 and len(threads) == 3
    c.stop()
    dump = bt2_dump(tmp_path / "ctx" / "kernel")
    mine = [e for e in events_of(dump) if e["name"].endswith("_getppid") and e["context"]["tid"] in threads]
    assert len(mine) == 3 * 2 * 20
    assert {e["context"]["pid"] for e in mine} == {app.pid}  # the process, not the thread
    comm = "kctxapp"
    assert {e["context"]["procname"] for e in mine} == {comm}
    out, err = babeltrace2_text(tmp_path / "ctx" / "kernel")
    assert err == "" and f'procname = "{comm}"' in out and f"pid = {app.pid}" in out


@needs_bt2
def test_add_context_k_pid_procname_through_the_cli(ust_env, tracefs_dir):
    ust_env.ust("create", _name("kctx"), "-o", ust_env.out)
    ust_env.ust("add-context", "-k", "-t", "pid", "-t", "procname")
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    code = "open('/proc/self/comm', 'w').write('kctxcli'); import os; [os.getppid() for _ in range(10)]"
    app = subprocess.Popen([sys.executable, "-c", code])
    assert app.wait() == 0
    ust_env.ust("stop")
    mine = [e for e in events_of(bt2_dump(os.path.join(ust_env.out, "kernel")))
            if e["name"].endswith("_getppid") and e["context"]["tid"] == app.pid]
    assert len(mine) == 20
    assert {(e["context"]["pid"], e["context"]["procname"]) for e in mine} == {(app.pid, "kctxcli")}
    ust_env.ust("destroy", _name("kctx"))


_FORKS = """
import os, threading
def start_another():  # a thread started by a thread that is not the process's first
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    print(threading.get_native_id(), t.native_id, flush=True)
first = threading.Thread(target=start_another)
first.start()
first.join()
child = os.fork()
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
print(first.native_id, child, flush=True)
"""


@needs_bt2
def test_forks_process_ids_through_the_daemons_without_the_pid_context(ust_env, tracefs_dir):
    """sched_process_fork's parent_pid / child_pid are each side's process, from ftrace's task
    tables: the consumer has them though no pid/procname context was asked, and for an event
    enabled after the start (the session daemon gave them with the trace); ftrace saves each
    thread's process (options/record-tgid) from then on."""
    name = _name("kfork")
    ust_env.ust("create", name, "-o", ust_env.out)
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    record_tgid = os.path.join(tracefs_dir, "instances", "ust-" + name, "options", "record-tgid")
    assert open(record_tgid).read().strip() == "0"  # nothing asks it yet
    ust_env.ust("enable-event", "-k", "sched_process_fork")
    assert open(record_tgid).read().strip() == "1"
    app = subprocess.Popen([sys.executable, "-c", _FORKS], stdout=subprocess.PIPE, text=True)
    out, _ = app.communicate(timeout=300)
    assert app.returncode == 0
    ust_env.ust("stop")
    (first, second), (first_again, child) = [map(int, line.split()) for line in out.splitlines()]
    assert first == first_again
    forks = {(e["payload"]["parent_tid"], e["payload"]["child_tid"]): (e["payload"]["parent_pid"],
                                                                      e["payload"]["child_pid"])
             for e in events_of(bt2_dump(os.path.join(ust_env.out, "kernel")), "sched_process_fork")}
    pid = app.pid  # the process's first thread
    assert forks[(pid, first)] == (pid, pid)  # a thread: in its parent's process
    assert forks[(first, second)] == (pid, pid)  # a thread's thread: the process, not the thread
    assert forks[(pid, child)] == (pid, child)  # a new process: its own
    ust_env.ust("destroy", name)


# -- the capture in the session owner's consumer (ust-consumerd) ------------------------------

_GETPPIDS = "import os, sys\nfor _ in range(int(sys.argv[1])):\n    os.getppid()\n"


def _run_getppids(n: int) -> int:
    p = subprocess.Popen([sys.executable, "-c", _GETPPIDS, str(n)])
    assert p.wait(timeout=300) == 0
    return p.pid


def _entries(kdir, pid) -> int:
    return sum(1 for _, name, _ in _getppid_events(str(kdir), pid) if name == "syscall_entry_getppid")


@needs_bt2
def test_rotation_archives_the_kernel_trace_chunk_by_chunk(ust_env, tracefs_dir):
    """`ust rotate` cuts the kernel trace too: each archive holds <chunk>/kernel, a complete
    kernel trace babeltrace2 reads alone, and each process's system calls are in the chunk
    they were made in, all of them, once."""
    ust_env.ust("create", _name("krot"), "-o", ust_env.out)
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    first = _run_getppids(300)
    _, out, _ = ust_env.ust("rotate")
    second = _run_getppids(200)
    ust_env.ust("stop")  # a session that rotated ends its last chunk in an archive too
    archives = sorted(glob.glob(os.path.join(ust_env.out, "archives", "*")),
                      key=lambda d: int(d.rsplit("-", 1)[1]))
    assert len(archives) == 2, (out, archives)
    kdirs = [os.path.join(a, "kernel") for a in archives]
    assert all(os.path.isdir(d) for d in kdirs), [os.listdir(a) for a in archives]
    assert (_entries(kdirs[0], first), _entries(kdirs[0], second)) == (300, 0)
    assert (_entries(kdirs[1], first), _entries(kdirs[1], second)) == (0, 200)
    for d in kdirs:
        _, err = babeltrace2_text(d)
        assert "WARNING" not in err and "ERROR" not in err, err
    assert not os.path.exists(os.path.join(ust_env.out, "kernel"))  # the first chunk moved to its archive
    ust_env.ust("destroy", _name("krot"))
    assert not os.path.exists(os.path.join(tracefs_dir, "instances", "ust-" + _name("krot")))



def _stream_spans(kdir: str) -> dict[str, tuple[int, int]]:
    """Each stream file's (first packet's beginning, last packet's end)."""
    from ust.ctf.writer import PacketIndex, packet_spans

    spans = {}
    for name in sorted(os.listdir(kdir)):
        path = os.path.join(kdir, name)
        if name.startswith(".") or name == "metadata" or not os.path.isfile(path):
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            index = [PacketIndex.of(os.pread(fd, length, pos)) for pos, length in packet_spans(fd, os.fstat(fd).st_size)]
        finally:
            os.close(fd)
        assert index, f"{name}: no packet"
        spans[name] = (index[0].timestamp_begin, index[-1].timestamp_end)
    return spans


def test_every_stream_of_a_chunk_spans_the_chunk(ust_env, tracefs_dir):
    """As lttng's (whose streams are flushed, empty or not, at a rotation), the streams of a
    rotated chunk all cover one common time: lttng-analyses keeps only that time and refused
    a chunk ("Trace has no intersection") whose idle CPU's stream held only its opening
    packet, dated before another CPU's stream began (each stream of a new chunk begins at its
    own safe time: KernelTrace.restate). The only process making the recorded calls is pinned
    to one CPU, so the other records nothing."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    ust_env.ust("create", _name("kspan"), "-o", ust_env.out)
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    # a call every millisecond on one CPU, through the rotations: that CPU's stream of a new chunk begins
    # at its last call before the switch, the idle one's earlier (ust.kernel.source.MARGIN_NS)
    code = ("import os, sys, time\nos.sched_setaffinity(0, {%d})\nsys.stdin.readline()\n"
            "while True:\n    os.getppid()\n    time.sleep(0.001)" % cpus[0])
    caller = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        caller.stdin.write(b"go\n")
        caller.stdin.flush()
        for _ in range(2):
            time.sleep(0.2)
            ust_env.ust("rotate")
        time.sleep(0.2)
    finally:
        caller.kill()
        caller.wait()
    ust_env.ust("stop")
    archives = sorted(glob.glob(os.path.join(ust_env.out, "archives", "*")), key=lambda d: int(d.rsplit("-", 1)[1]))
    assert len(archives) == 3
    for a in archives:
        spans = _stream_spans(os.path.join(a, "kernel"))
        assert len(spans) == len(cpus), spans
        latest_begin = max(b for b, _ in spans.values())
        assert all(e >= latest_begin for _, e in spans.values()), (a, spans)
    ust_env.ust("destroy", _name("kspan"))

@needs_bt2
def test_clear_empties_the_kernel_trace(ust_env, tracefs_dir):
    ust_env.ust("create", _name("kclear"), "-o", ust_env.out)
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    before = _run_getppids(100)
    ust_env.ust("clear", _name("kclear"))
    after = _run_getppids(70)
    ust_env.ust("stop")
    kdir = os.path.join(ust_env.out, "kernel")
    assert (_entries(kdir, before), _entries(kdir, after)) == (0, 70)
    ust_env.ust("destroy", _name("kclear"))


@needs_bt2
def test_a_sigkilled_consumer_is_replaced_the_kernel_trace_goes_on_and_no_instance_stays(ust_env, tracefs_dir):
    """The session daemon gives a restarted consumer the same readers: it appends to the same
    stream files (numbering and time going on, babeltrace2 reads them without a word), the
    events made while no consumer ran wait in the kernel's ring; destroy removes the instance."""
    ust_env.ust("create", _name("kkill"), "-o", ust_env.out)
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    kdir = os.path.join(ust_env.out, "kernel")
    c = ust_env.client()
    old = c.ping()["consumer_pid"]
    first = _run_getppids(150)

    def written():
        try:
            return _entries(kdir, first) == 150
        except AssertionError:  # a packet being appended as babeltrace2 reads
            return False

    wait_until(written, timeout=120, what="the first process's events on disk")
    os.kill(old, signal.SIGKILL)
    second = _run_getppids(120)  # while no consumer may run: the ring keeps them
    wait_until(lambda: (c.ping()["consumer_pid"] or 0) not in (0, old), timeout=120, what="a new consumer")
    third = _run_getppids(90)
    ust_env.ust("stop")
    assert [_entries(kdir, pid) for pid in (first, second, third)] == [150, 120, 90]
    _, err = babeltrace2_text(kdir)
    assert "WARNING" not in err and "ERROR" not in err, err
    instance = os.path.join(tracefs_dir, "instances", "ust-" + _name("kkill"))
    assert os.path.isdir(instance)
    ust_env.ust("destroy", _name("kkill"))
    assert not os.path.exists(instance)


_QUARTER_FLOODER = """
import os, sys
n = int(sys.argv[1])
sys.stdin.readline()
for i in range(n):
    os.getppid()
    if i == n // 4:
        print("quarter", flush=True)
print("done", flush=True)
"""


def _ring_produced(tracefs_dir: str, session: str) -> int:
    """Every record an instance's rings took or refused: read, overwritten or dropped (after the
    final drain, none is left in them)."""
    total = 0
    for stats in glob.glob(os.path.join(tracefs_dir, "instances", "ust-" + session, "per_cpu", "cpu*", "stats")):
        s = tracefs.parse_stats(open(stats).read())
        assert s.get("entries", 0) == 0, s
        total += s["read events"] + s.get("overrun", 0) + s.get("dropped events", 0) + s.get("commit overrun", 0)
    return total


@needs_bt2
def test_a_consumer_killed_under_a_flood_loses_nothing_uncounted(ust_env, tracefs_dir):
    """What a SIGKILLed consumer had read from the rings and not written (the prio context holds
    pages back 20 ms: thousands of events under a flood) is stated as discarded by its successor
    (ring's "read events" minus what the stream's record log says the file holds), dated in the
    gap: events in the trace + babeltrace2's discarded counts == every record ftrace took or
    refused. (No record type is read without being written: the prio context's records are rules.)"""
    name = _name("kflood")
    ust_env.ust("create", name, "-o", ust_env.out)
    ust_env.ust("enable-event", "-k", "sched_switch,sched_pi_setprio")
    ust_env.ust("enable-event", "-k", "--syscall", "getppid,setpriority,sched_setscheduler,sched_setparam,"
                "sched_setattr")
    ust_env.ust("add-context", "-k", "-t", "prio")
    ust_env.ust("start")
    c = ust_env.client()
    old = c.ping()["consumer_pid"]
    flooder = subprocess.Popen([sys.executable, "-c", _QUARTER_FLOODER, "150000"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        flooder.stdin.write("go\n")
        flooder.stdin.flush()
        assert flooder.stdout.readline() == "quarter\n"
        os.kill(old, signal.SIGKILL)  # mid-flood: pages read, held back, not written
        assert flooder.stdout.readline() == "done\n"
        assert flooder.wait(timeout=300) == 0
    finally:
        if flooder.poll() is None:
            flooder.kill()
            flooder.wait()
    wait_until(lambda: (c.ping()["consumer_pid"] or 0) not in (0, old), timeout=120, what="a new consumer")
    ust_env.ust("stop")
    produced = _ring_produced(tracefs_dir, name)
    out, err = babeltrace2_text(os.path.join(ust_env.out, "kernel"))
    events = sum(1 for line in out.splitlines() if "lttng_statedump_" not in line)
    discarded = sum(int(n) for n in re.findall(r"discarded (\d+) events? between", err))  # "1 event"
    assert discarded > 0, err[:2000]  # the dead consumer's unwritten pages at least
    assert events + discarded == produced, (events, discarded, produced)
    ust_env.ust("destroy", name)
    from conftest import assert_packet_indexes

    assert assert_packet_indexes(os.path.join(ust_env.out, "kernel")) >= 1  # (rebuilt by the new consumer)


@needs_bt2
def test_records_taken_from_the_ring_by_another_reader_are_counted_lost(capture, tmp_path, tracefs_dir):
    """Records the ring handed out that never reached a packet — here read by another reader of
    the instance's trace_pipe_raw (the same as a page the consumer had to drop) — are counted
    lost at the stop, from the ring's "read events": events + discarded == what ftrace took."""
    c = capture("stolen", poll_interval=3600)  # the drain sleeps: the pages wait in the ring
    c.enable(["getppid"], syscalls=True)
    c.start()
    _run_getppids(200)
    stolen = sum(pages.page_records(page) for page in c.instance.read_pages() if len(page) >= pages.PAGE_HEADER)
    assert stolen >= 400
    _run_getppids(100)
    c.stop()
    produced = _ring_produced(tracefs_dir, _name("stolen"))
    dump = bt2_dump(tmp_path / "stolen" / "kernel")
    recorded, discarded = len(_traced(dump)), discarded_of(dump)
    assert discarded >= stolen
    assert recorded + discarded == produced, (recorded, discarded, produced, stolen)


@needs_bt2
def test_a_streamed_session_sends_the_kernel_trace_to_the_relay(ust_env, tracefs_dir, tmp_path):
    from relay_util import Relayd

    rundir = tmp_path / "relay-run"
    rundir.mkdir()
    relay = Relayd(tmp_path / "relay-out", rundir)
    try:
        ust_env.ust("create", _name("kstream"), "-U", relay.net_url)
        ust_env.ust("enable-event", "-k", "--syscall", "getppid")
        ust_env.ust("start")
        pid = _run_getppids(250)
        ust_env.ust("stop")
        ust_env.ust("destroy", _name("kstream"))
        host = os.uname().nodename
        [session] = [d for d in os.listdir(os.path.join(relay.output, host)) if d.startswith(_name("kstream") + "-")]
        kdir = os.path.join(relay.output, host, session, "kernel")
        assert os.path.isdir(kdir), os.listdir(os.path.join(relay.output, host, session))
        assert _entries(kdir, pid) == 250
        _, err = babeltrace2_text(kdir)
        assert "WARNING" not in err and "ERROR" not in err, err
        assert not os.path.exists(os.path.join(tracefs_dir, "instances", "ust-" + _name("kstream")))
    finally:
        assert relay.stop() == 0, relay.stderr


@needs_bt2
def test_rotation_of_a_streamed_session_archives_its_kernel_trace_on_the_relay(ust_env, tracefs_dir, tmp_path):
    """A streamed session's rotation cuts its kernel trace as a local one's: on the relay each
    archive holds <chunk>/kernel, read alone by babeltrace2, each system call in the chunk it was
    made in, once (before: the kernel streams were not switched, and what followed the rotation
    went on into the files the relay had just archived)."""
    from relay_util import Relayd

    rundir = tmp_path / "relay-run"
    rundir.mkdir()
    relay = Relayd(tmp_path / "relay-out", rundir)
    name = _name("krotnet")
    try:
        ust_env.ust("create", name, "-U", relay.net_url)
        ust_env.ust("enable-event", "-k", "--syscall", "getppid")
        ust_env.ust("start")
        first = _run_getppids(300)
        ust_env.ust("rotate")
        second = _run_getppids(200)
        ust_env.ust("stop")
        ust_env.ust("destroy", name)
        host = os.uname().nodename
        [session] = [d for d in os.listdir(os.path.join(relay.output, host)) if d.startswith(name + "-")]
        root = os.path.join(relay.output, host, session)
        archives = sorted(glob.glob(os.path.join(root, "archives", "*")), key=lambda d: int(d.rsplit("-", 1)[1]))
        assert len(archives) == 2, os.listdir(root)
        kdirs = [os.path.join(a, "kernel") for a in archives]
        assert all(os.path.isdir(d) for d in kdirs), [os.listdir(a) for a in archives]
        assert (_entries(kdirs[0], first), _entries(kdirs[0], second)) == (300, 0)
        assert (_entries(kdirs[1], first), _entries(kdirs[1], second)) == (0, 200)
        for d in kdirs:
            _, err = babeltrace2_text(d)
            assert "WARNING" not in err and "ERROR" not in err, err
    finally:
        assert relay.stop() == 0, relay.stderr


def test_a_consumer_with_kernel_and_ring_buffer_streams_keeps_the_c_loop_for_the_rings(capture, tmp_path):
    """The engine drains ftrace CPUs in Python and the ring buffers in the C loop, which wakes
    on the ftrace descriptors too (an epoll set): the Python round, a sleep on the eventfd
    with every stream drained in Python, is never taken, and the kernel events arrive."""
    from ust.consumer.drain import Drainer
    from ust.consumer.output import LocalTraceOutput
    from ust.consumer.trace import ChannelSpec, Trace, trace_info

    class CountingDrainer(Drainer):
        python_rounds = 0

        def _python_round(self, streams, timeout):
            CountingDrainer.python_rounds += 1
            return super()._python_round(streams, timeout)

    c = capture("mixed")
    c.enable(["getppid"], syscalls=True)
    c.start()
    c._drainer.stop()  # the capture's own engine gives way to one draining both kinds
    c._drainer = None
    rings = Trace("ust", LocalTraceOutput(str(tmp_path / "ust"), str(tmp_path)), trace_info(os.urandom(16), 0, {}))
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    rings.add_channel(ChannelSpec("channel0", 0, 4096, 4), efd)
    engine = CountingDrainer(efd)
    engine.traces.update({"ust": rings, c.trace.key: c.trace})
    engine.start()
    try:
        pid = _run_getppids(400)
        kdir = tmp_path / "mixed" / "kernel"

        def arrived():
            with engine.paused():
                return sum(out.packets for out in c.trace.channels["channel0"].outputs) > 0
        wait_until(arrived, timeout=120, what="kernel packets written by the mixed engine")
    finally:
        engine.stop()
        os.close(efd)
    c.stop()
    rings.flush(sync=True)
    rings.close()
    assert CountingDrainer.python_rounds == 0
    assert _entries(kdir, pid) == 400


@needs_babeltrace2
@pytest.mark.parametrize("contexts", [(), ("prio",)])
def test_a_live_session_shows_kernel_events_to_a_babeltrace2_viewer(ust_env, tracefs_dir, tmp_path, contexts):
    """Kernel streams in a live session: babeltrace2 following the relay prints the kernel
    events while the session runs (the consumer's kernel trace is streamed like any other);
    with the prio context too, whose held-back pages a live beacon never claims to be past."""
    from relay_util import Relayd, attached_viewers, live_viewer

    rundir = tmp_path / "relay-run"
    rundir.mkdir()
    relay = Relayd(tmp_path / "relay-out", rundir)
    try:
        ust_env.ust("create", _name("klive"), "-U", relay.net_url, "--live")
        for c in contexts:
            ust_env.ust("add-context", "-k", "-t", c)
        ust_env.ust("enable-event", "-k", "--syscall", "getppid")
        ust_env.ust("start")
        host = os.uname().nodename
        viewer = live_viewer(f"{relay.live_url}/host/{host}/{_name('klive')}", tmp_path / "live.txt")
        wait_until(lambda: attached_viewers(relay) == 1, timeout=120, what="babeltrace2 attached")
        pid = _run_getppids(60)
        mine = f"tid = {pid}"
        wait_until(lambda: sum(mine in line for line in (tmp_path / "live.txt").read_text().splitlines()
                               if "syscall_entry_getppid" in line) == 60,
                   timeout=120, what="babeltrace2 printing the kernel events live")
        ust_env.ust("destroy", _name("klive"))
        err = viewer.communicate(timeout=300)[1]
        assert viewer.returncode == 0, err
    finally:
        assert relay.stop() == 0, relay.stderr


_RENICER = """
import os, sys, time
def mark(n):
    for _ in range(n):
        os.getppid()
time.sleep(0.05)   # switched out and in: its prio is known from here
mark(5)            # nice 0: prio 20
os.setpriority(os.PRIO_PROCESS, 0, 7)
mark(3)            # not known until it is switched in again (or already 27 if it was)
time.sleep(0.05)
mark(5)            # nice 7: 27
os.setpriority(os.PRIO_PROCESS, 0, 12)
time.sleep(0.05)
mark(5)            # nice 12: 32
"""


@needs_bt2
def test_the_prio_context_follows_a_thread_that_changes_its_nice_value(ust_env, tracefs_dir):
    """`add-context -k -t prio`: each event's task_prio() (lttng-modules' value: nice 0 is
    20), exact from the thread's sched_switch in; after the thread's setpriority() it is
    unknown (-2147483648) until it is switched in again, then the new value — never the old
    one guessed. The scheduler records it is followed from are not written (not asked for)."""
    ust_env.ust("create", _name("kprio"), "-o", ust_env.out)
    ust_env.ust("add-context", "-k", "-t", "prio", "-t", "pid")
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    p = subprocess.Popen([sys.executable, "-c", _RENICER])
    assert p.wait(timeout=300) == 0
    ust_env.ust("stop")
    dump = bt2_dump(os.path.join(ust_env.out, "kernel"))
    names = {e["name"] for e in _traced(dump)}
    assert names == {"syscall_entry_getppid", "syscall_exit_getppid"}, names  # sched_switch: read, not written
    mine = [e["context"]["prio"] for e in events_of(dump, "syscall_entry_getppid") if e["context"]["tid"] == p.pid]
    assert len(mine) == 18, mine
    unknown = pages.PRIO_UNKNOWN
    assert mine[:5] == [20] * 5
    assert set(mine[5:8]) <= {unknown, 27}, mine
    assert mine[8:13] == [27] * 5
    assert mine[13:] == [32] * 5
    ust_env.ust("destroy", _name("kprio"))


@needs_bt2
def test_a_kernel_snapshot_recorded_to_a_relay(ust_env, tracefs_dir, tmp_path):
    """`snapshot record net://…` of a snapshot session with kernel events: the relay gets
    <snapshot>/kernel, the flight recorder's events (the consumer's snapshot, as for ust)."""
    from relay_util import Relayd

    rundir = tmp_path / "relay-run"
    rundir.mkdir()
    relay = Relayd(tmp_path / "relay-out", rundir)
    try:
        ust_env.ust("create", _name("ksnaprelay"), "--snapshot", "-o", ust_env.out)
        ust_env.ust("enable-event", "-k", "--syscall", "getppid")
        ust_env.ust("start")
        pid = _run_getppids(70)
        _, out, _ = ust_env.ust("snapshot", "record", relay.net_url)
        host = os.uname().nodename
        kdirs = glob.glob(os.path.join(relay.output, host, "*", "*", "kernel"))
        assert len(kdirs) == 1, (out, kdirs)
        assert _entries(kdirs[0], pid) == 70
        ust_env.ust("destroy", _name("ksnaprelay"))
    finally:
        assert relay.stop() == 0, relay.stderr


def test_the_consumer_checks_the_kernel_readers_it_is_given(tracefs_dir, tmp_path):
    """ust-consumerd takes a kernel trace's descriptors only if each is what it is said to be
    (a read-only tracefs trace_pipe_raw / stats of that CPU of a ust instance, the task tables),
    and as many as the CPUs need; otherwise the request fails in one line and nothing stays."""
    import socket
    import uuid as uuid_mod

    from ust.daemon.consumerd import Consumer
    from ust.kernel.tracefs import Instance

    inst = Instance.create(_name("fdcheck"))
    a, b = socket.socketpair()
    consumer = Consumer(a)
    opened = []
    try:
        raw, stats, tasks = inst.open_readers(True)
        opened += raw + stats + tasks
        sched = inst.format_text("sched", "sched_switch")
        base = {"cmd": "add_kernel_trace", "path": str(tmp_path / "k" / "kernel"), "root": str(tmp_path / "k"),
                "uuid": str(uuid_mod.uuid4()), "clock_offset": 0, "session": "s", "drain": True,
                "contexts": ["tid", "pid"], "cpus": len(raw), "page_size": inst.page_size(), "keep_pages": 4,
                "read_timer": 0.05, "formats": [["sched", sched]]}
        plain = os.open(str(tmp_path / "plain"), os.O_RDONLY | os.O_CREAT, 0o600)
        opened.append(plain)
        swapped = stats + raw + tasks
        cases = [
            (swapped, "is not a read-only tracefs raw file of CPU 0"),
            ([plain] + raw[1:] + stats + tasks, "is not a read-only tracefs raw file of CPU 0"),
            (raw + stats, "descriptors, got"),
            (raw + stats + tasks[::-1], "is not a read-only tracefs saved_tgids file"),
        ]
        for n, (fds, why) in enumerate(cases):
            dups = [os.dup(fd) for fd in fds]  # handle() closes what it is given, as after a recvmsg
            reply, _ = consumer.handle({**base, "key": f"bad{n}"}, dups)
            assert not reply["ok"] and why in reply["error"] and "\n" not in reply["error"], reply
            assert f"bad{n}" not in consumer.traces
        reply, _ = consumer.handle({**base, "key": "good"}, [os.dup(fd) for fd in raw + stats + tasks])
        assert reply["ok"], reply
        consumer.handle({"cmd": "remove_traces", "traces": ["good"]}, [])
    finally:
        consumer.close_all()
        for fd in opened:
            os.close(fd)
        a.close()
        b.close()
        inst.remove()
    assert not inst.exists()  # every reader was closed: the kernel let the instance go


_CROSS_CPU = """
import os, subprocess, sys, time
spin = ("import os, sys, select\\nos.sched_setaffinity(0, {0})\\nprint('go', flush=True)\\n"
        "while not select.select([sys.stdin], [], [], 0)[0]:\\n"
        "    for _ in range(1000):\\n        pass\\n    os.getppid()\\n")
a = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
a.stdout.readline()            # A runs on CPU 0 (another process: no lock shared with this one)
os.sched_setaffinity(0, {1})   # this one on CPU 1
time.sleep(0.1)
for _ in range(150):
    try:  # refused (a SCHED_OTHER thread has priority 0): A is not rescheduled for it
        os.sched_setparam(a.pid, os.sched_param(5))
    except OSError:
        pass
    time.sleep(0.002)
time.sleep(0.05)
a.communicate("stop\\n")
print(a.pid, flush=True)
"""


@needs_bt2
def test_the_prio_context_takes_a_change_made_from_another_cpu_in_time(capture, tmp_path):
    """Process B on CPU 1 calls sched_setparam() on process A while A runs on CPU 0. A call's
    effect is in no record (this one fails, which no entry record can tell), so A's events
    from its entry until A's next switch in are unknown
    — which needs the call, recorded on CPU 1, to reach CPU 0's events in time (every CPU is
    read before any is converted, newer pages held back) — and elsewhere 20 or unknown
    (unknown where A runs without its switch in being in the trace), never another value."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPUs")
    c = capture("cross", contexts=("tid", "prio"))
    c.enable(["sched_switch"])
    c.enable(["getppid", "sched_setparam"], syscalls=True)
    c.start()
    r = subprocess.run([sys.executable, "-c", _CROSS_CPU], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    c.stop()
    a = int(r.stdout.split()[-1])
    evs = events_of(bt2_dump(tmp_path / "cross" / "kernel"))
    calls = [e["ts"] for e in evs if e["name"] == "syscall_entry_sched_setparam" and e["context"]["tid"] != a]
    switched_in = [e["ts"] for e in evs if e["name"] == "sched_switch" and e["payload"]["next_tid"] == a]
    assert len(calls) == 150
    unknown = pages.PRIO_UNKNOWN
    inside = known = 0
    for e in evs:
        if e["context"]["tid"] != a or e["name"] != "syscall_entry_getppid":
            continue
        last_call = max((t for t in calls if t < e["ts"]), default=None)
        last_in = max((t for t in switched_in if t < e["ts"]), default=None)
        if last_in is None:
            continue  # before A's first switch in: unknown or not, nothing to check
        if last_call is not None and last_call > last_in:  # a call since A was last switched in
            assert e["context"]["prio"] == unknown, e
            inside += 1
        else:
            known += e["context"]["prio"] == 20
            assert e["context"]["prio"] in (20, unknown), e  # never a value it did not have
    assert inside > 0  # some of A's events fell between a call and its next switch in
    assert known > 0


def _one_record_page(event_id: int, tid: int, payload: bytes) -> bytes:
    """A ring-buffer page holding one record (common fields + payload), for the converters."""
    import struct

    rec = struct.pack("<HBBi", event_id, 0, 0, tid) + payload
    rec += bytes(-len(rec) % 4)
    data = struct.pack("<I", len(rec) // 4) + rec  # type_len = words, time delta 0
    return struct.pack("<QQ", 1_000_000, len(data)) + data


def test_derived_fields_rwbs_priorities_and_forks_process_ids_agree_in_c_and_python():
    import struct

    from ust.kernel import formats as fmt

    Converter = _c_converter()
    expected = {b"R": fmt.RWBS_READ, b"W": fmt.RWBS_WRITE, b"WS": fmt.RWBS_WRITE | fmt.RWBS_SYNC,
                b"FWS": fmt.RWBS_PREFLUSH | fmt.RWBS_WRITE | fmt.RWBS_SYNC,
                b"WFS": fmt.RWBS_WRITE | fmt.RWBS_FUA | fmt.RWBS_SYNC, b"FF": fmt.RWBS_PREFLUSH | fmt.RWBS_FLUSH,
                b"F": fmt.RWBS_FLUSH, b"DE": fmt.RWBS_DISCARD | fmt.RWBS_SECURE, b"D": fmt.RWBS_DISCARD,
                b"RA": fmt.RWBS_READ | fmt.RWBS_RAHEAD, b"RM": fmt.RWBS_READ | fmt.RWBS_META, b"N": 0, b"": 0,
                b"XYZ": 0, b"RSMAF\xff": fmt.RWBS_READ | fmt.RWBS_SYNC | fmt.RWBS_META | fmt.RWBS_RAHEAD | fmt.RWBS_FUA}
    plans = {7: ((fmt.OP_RWBS, 8, 10),), 8: ((fmt.OP_INT32_MINUS, 8, fmt.MAX_RT_PRIO),),
             9: ((fmt.OP_TGID, 8, 0), (fmt.OP_CHILD_TGID, 12, 8))}
    # the task table: 100 a process, 101 its thread, 102 a stale entry of an older thread of that id
    tables = {100: (100, b"parent"), 101: (100, b"thread"), 102: (555, b"stale")}

    def convert(page):
        out = []
        for make in (Converter, pages.PyConverter):
            tasks = dict(tables)
            res = make(plans, True, False, False, tasks, lambda tid: (-1, b""))
            out.append(bytes(res.page(page)[0]))
        assert out[0] == out[1]
        return struct.unpack_from("<" + "i" * ((len(out[0]) - 10) // 4), out[0], 10)  # after header and tid

    for text, mask in expected.items():
        assert fmt.rwbs_mask(text.ljust(10, b"\0")) == mask, text
        assert convert(_one_record_page(7, 1, text.ljust(10, b"\0")[:10])) == (mask,), text
    for prio in (120, 100, 139, 0, -2**31):
        assert convert(_one_record_page(8, 1, struct.pack("<i", prio))) == ((prio - 100 + 2**31) % 2**32 - 2**31,)
    fork = lambda child: _one_record_page(9, 100, struct.pack("<ii", 100, child))  # noqa: E731
    assert convert(fork(101)) == (100, 100)  # a thread: its parent's process
    assert convert(fork(102)) == (100, 102)  # a new process (the stale entry not believed)
    assert convert(fork(103)) == (100, 103)  # unknown to the tables: a new process


def test_a_record_shorter_than_its_format_gives_zeros_in_c_and_python():
    """A field past a (corrupt) record's end is zeros, as many as the field's size, in both
    converters (the Python reference wrote a zero for every byte from the record's end to the
    field's end: 8 too many for a field starting 8 bytes past it; found by the corrupt-pages test)."""
    import struct

    from ust.kernel import formats as fmt

    Converter = _c_converter()
    plans = {7: ((fmt.OP_COPY, 8, 4), (fmt.OP_COPY, 16, 8))}
    for payload in (b"", b"\x01\x02\x03\x04", b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a"):
        page = _one_record_page(7, 1, payload)
        a, b = Converter(plans, True).page(page), pages.PyConverter(plans, True).page(page)
        assert a[0] == bytes(b[0]) and a[1:] == b[1:], payload
        rec = payload.ljust(-(-(8 + len(payload)) // 4) * 4 - 8, b"\0")  # the record as padded on the page
        want = (rec[:4].ljust(4, b"\0") + rec[8:16].ljust(8, b"\0"))
        assert bytes(a[0])[-12:] == want and struct.unpack_from("<i", a[0], 6)[0] == 1, payload  # (header, tid, fields)


def _record(fields: bytes) -> bytes:
    """One ftrace ring-buffer record (type_len words, delta 1 ns) around a record's bytes."""
    fields += bytes(-len(fields) % 4)
    return struct.pack("<I", (len(fields) // 4) | (1 << 5)) + fields


def test_the_pairing_of_thousands_of_threads_agrees_in_c_and_python(real_pages):
    """Probes of 3,000 threads, then their calls (the C pairing's table grows, and its deleted slots
    are reused): C and Python give every call its own thread's path; a call whose pointer is
    another's, or a second call of a thread, gets ""."""
    from ust.kernel._ftrace import Pairing as CPairing
    from ust.kernel.formats import OP_PATH
    from ust.kernel.paths import Pairing

    Converter = _c_converter()
    _, plans, _, probes = real_pages
    probe_id, ptr_off, loc_off = probes[0]
    call_id, call_off = next((i, off) for i, ops in plans.items() for op, off, _ in ops if op == OP_PATH)
    n = 3000

    def probe(tid):
        path = b"/p/%d\0" % tid
        body = bytearray(max(ptr_off + 8, loc_off + 4))
        struct.pack_into("<HBBi", body, 0, probe_id, 0, 0, tid)
        struct.pack_into("<Q", body, ptr_off, 0x1000 + tid)
        struct.pack_into("<I", body, loc_off, len(body) | len(path) << 16)
        return _record(bytes(body) + path)

    def call(tid, ptr):
        body = bytearray(call_off + 8)
        struct.pack_into("<HBBi", body, 0, call_id, 0, 0, tid)
        struct.pack_into("<Q", body, call_off, ptr)
        return _record(bytes(body))

    recs = [probe(t) for t in range(1, n + 1)] + [call(t, 0x1000 + t if t % 7 else 1) for t in range(1, n + 1)]
    recs += [call(t, 0x1000 + t) for t in range(1, 50)]  # (their probes are taken)
    page_data, pages_out = b"", []
    for r in recs:
        if len(page_data) + len(r) > 4000:
            pages_out.append(page_data)
            page_data = b""
        page_data += r
    pages_out.append(page_data)
    got = [struct.pack("<QQ", 1000 + 10 * n * i, len(d)) + d for i, d in enumerate(pages_out)]
    results = []
    for make, pairing_class in ((Converter, CPairing), (pages.PyConverter, Pairing)):
        conv = make(plans, True, False, False, *_task_table(), paths=probes)
        pairing = pairing_class()
        names = [conv.scan(page, pairing)[4] for page in got]
        pairing.pair()
        results.append(([n for ns in names if ns for n in ns], pairing.names_given, pairing.names_unknown))
    assert results[0] == results[1]
    flat, given, unknown = results[0]
    assert given == n - n // 7 and unknown == n // 7 + 49
    assert flat[:n] == [b"" if t % 7 == 0 else b"/p/%d" % t for t in range(1, n + 1)] and flat[n:] == [b""] * 49


def test_a_corrupt_page_whose_time_goes_back_converts_the_same_in_c_and_python(real_pages):
    """An absolute time stamp record (type 31) older than the record before it, and time extends
    past 2^64 (a corrupt page: hypothesis found the first): C's unsigned time arithmetic and the
    Python reference's give the same events (a time going back gets the extended header)."""
    Converter = _c_converter()
    _, plans, _, _ = real_pages
    event_id = next(iter(plans))
    body = struct.pack("<HBBi", event_id, 0, 0, 42) + bytes(60)
    rec = _record(body)
    back = struct.pack("<II", 31 | (5 << 5), 0)  # absolute time 5: before the page's time
    extend = struct.pack("<II", 30 | (1 << 5), (1 << 32) - 1)  # a huge delta
    data = rec + back + rec + extend * 40 + rec
    page = struct.pack("<QQ", (1 << 63) + 10**12, len(data)) + data
    a = Converter(plans, True, False, False, *_task_table()).page(page)
    b = pages.PyConverter(plans, True, False, False, *_task_table()).page(page)
    assert a[1] == 3 and a[0] == bytes(b[0]) and a[1:] == b[1:]



def _set_last_pid(pid: int) -> None:
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:  # the next task made gets pid + 1 (root)
        f.write(str(pid))


def test_a_new_thread_gone_before_its_page_is_converted_is_not_given_an_older_threads_process(tracefs_dir):
    """ftrace's saved_tgids keeps every thread ever saved: read before a thread was made, it holds
    the entry of an older task of the same id (ids wrap at pid_max), and a fork's child_pid was
    that task's (the thread's own id, as if a new process). A thread of a page read after the
    tables is looked up in /proc, and once gone in the tables read again; unknown threads before
    it (ids above pid_max) spend no read it needs."""
    from ust.kernel.tracefs import Instance, TaskTable

    inst = Instance.create(_name("tgidread"))
    table = None
    try:
        inst.set_record_tgid(True)
        inst.set_enabled([("sched", "sched_process_fork")])  # ftrace saves a task at a wakeup after an event
        inst.start()
        table = TaskTable(*TaskTable.open_files(tracefs_dir))
        pid_max = int(open("/proc/sys/kernel/pid_max").read())
        for _ in range(50):  # other processes of the machine may take the ids wanted: again
            table.forget()
            reused = int(open("/proc/sys/kernel/ns_last_pid").read()) + 100
            if reused + 10 >= pid_max:
                _set_last_pid(300)
                continue
            _set_last_pid(reused - 1)
            older = subprocess.Popen(["true"])
            older.wait()
            if older.pid != reused:
                continue
            assert table.task_of(os.getpid())[0] == os.getpid()  # the tables read now: reused -> reused
            for tid in range(pid_max + 1, pid_max + 21):  # never a thread: unknown to the tables and /proc
                assert table.task_of(tid)[0] == -1
            made = []

            def make_another():
                t = threading.Thread(target=lambda: None)
                t.start()
                t.join()
                made.append(t.native_id)

            _set_last_pid(reused - 2)
            first = threading.Thread(target=make_another)  # reused - 1
            first.start()
            first.join()
            if made[0] != reused:
                continue
            with open(os.path.join(tracefs_dir, "saved_tgids")) as f:
                assert f"{reused} {os.getpid()}" in f.read().splitlines()  # ftrace saved the new thread
            assert not os.path.exists(f"/proc/{reused}")  # gone: only the tables know its process
            table.page_read()  # its fork's record read from the ring after the tables were
            assert table.task_of(reused)[0] == os.getpid()
            break
        else:
            pytest.fail("the thread ids wanted were always taken by other processes")
    finally:
        if table is not None:
            table.close()
        inst.remove()
