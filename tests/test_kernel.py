"""The kernel domain through ftrace: real tracefs, real processes, babeltrace2 as the oracle.

Every test needs root and a tracefs it can mount; without them each test is
skipped with the reason (never passes silently)."""

from __future__ import annotations

import glob
import json
import os
import signal
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
    for a, b in zip(ticks, ticks[1:]):  # between two ticks, a wait at least as long as most of the sleep
        assert any(e["name"] == "waiting" and a <= e["ts"] and e["ts"] + e["dur"] <= b and e["dur"] >= 15_000
                   for e in states), (a, b)


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
c.start()
print(c.instance.path, flush=True)
time.sleep(3600)
"""


def test_a_killed_owner_leaves_no_instance_after_the_next_start(capture, tracefs_dir, tmp_path):
    live = capture("alive")
    live.start()
    p = subprocess.Popen([sys.executable, "-c", _CRASHER, _name("crash"), str(tmp_path / "crash")],
                         stdout=subprocess.PIPE, text=True)
    path = p.stdout.readline().strip()
    assert path and os.path.isdir(path)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert os.path.isdir(path)  # the kernel keeps it: nobody removed it
    removed = tracefs.remove_stale_instances(tracefs_dir)
    assert os.path.basename(path) in removed
    assert not os.path.exists(path)
    assert live.instance.exists() and live.instance.name not in removed


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
            c.instance.stop()
            got = c.instance.read_pages()
            return got, dict(c.plans)
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
    got, plans = real_pages
    assert len(got) > 2
    for with_tid in (True, False):
        c = Converter(plans, with_tid, False, False, *_task_table())
        py = pages.PyConverter(plans, with_tid, False, False, *_task_table())
        total = 0
        for page in got:
            a, b = c.page(page), py.page(page)
            assert a[0] == bytes(b[0]) and a[1:] == b[1:]
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
    with pytest.raises(TypeError):
        Converter(plans, True, True, False, {}, lambda tid: "not a tuple").page(
            next(page for page in got if pages.PyConverter(plans, True, False, False, *_task_table()).page(page)[1]))
    with pytest.raises(TypeError):  # fork's process ids need the task table
        Converter(plans, True)
    with pytest.raises(TypeError):
        pages.PyConverter(plans, True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupt_pages_never_crash_and_both_converters_agree(real_pages, data):
    Converter = _c_converter()
    got, plans = real_pages
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


# ---------------------------------------------------------------------------
# through the daemons and the CLI (lttng's -k)


def test_the_kernel_domain_through_the_cli_one_interleaved_story(ust_env, tracefs_dir):
    from daemon_util import read_events

    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    ust_env.ust("create", "ks", "-o", ust_env.out)
    ust_env.ust("enable-channel", "-k", "kchan", "--subbuf-size", "1M", "--num-subbuf", "8")
    ust_env.ust("enable-event", "-k", "sched_switch,sched_wakeup")
    ust_env.ust("enable-event", "-k", "--syscall", "-a")
    ust_env.ust("add-context", "-k", "-t", "tid")
    ust_env.ust("enable-event", "app:*")
    _, listing, _ = ust_env.ust("list", "ks")
    assert "kernel: 8192 KiB per CPU, discard mode" in listing and "* (system call) [enabled]" in listing
    ust_env.ust("start")
    instance = os.path.join(tracefs_dir, "instances", "ust-ks")
    assert os.path.isdir(instance)
    app.send("emit app:alpha 3")
    ust_env.ust("stop")
    # babeltrace2 reads both traces together, in one time order, without a word on stderr
    r = subprocess.run(["babeltrace2", ust_env.out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
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
    ust_env.ust("destroy", "ks")
    assert not os.path.exists(instance)
    app.exit()


def test_list_k_shows_the_kernel_events_and_unknown_ones_are_one_line_errors(ust_env, tracefs_dir):
    _, out, _ = ust_env.ust("list", "-k")
    assert "sched:sched_switch (type: tracepoint)" in out
    assert "      openat\n" in out
    ust_env.ust("create", "kerr", "-o", ust_env.out)
    rc, _, err = ust_env.ust("enable-event", "-k", "no_such_kernel_event", check=False)
    assert rc != 0 and err.strip().count("\n") == 0 and "no kernel event matches 'no_such_kernel_event'" in err
    rc, _, err = ust_env.ust("add-context", "-k", "-t", "prio", check=False)
    assert rc != 0 and "not available from ftrace" in err and err.strip().count("\n") == 0


def test_a_snapshot_session_keeps_the_latest_kernel_events_in_overwrite_mode(ust_env, tracefs_dir):
    ust_env.ust("create", "ksnap", "-o", ust_env.out, "--snapshot")
    ust_env.ust("enable-event", "-k", "--syscall", "getppid")
    ust_env.ust("start")
    assert open(os.path.join(tracefs_dir, "instances", "ust-ksnap", "options", "overwrite")).read().strip() == "1"
    subprocess.run([sys.executable, "-c", "import os; [os.getppid() for _ in range(50)]"], check=True)
    _, out, _ = ust_env.ust("snapshot", "record")
    path = out.strip().split()[-1]
    kdir = glob.glob(os.path.join(ust_env.out, "snapshot-*", "kernel"))
    assert len(kdir) == 1, (out, os.listdir(ust_env.out))
    names = [e["name"] for e in events_of(bt2_dump(kdir[0]))]
    assert names.count("syscall_entry_getppid") >= 50 and names.count("syscall_exit_getppid") >= 50, path
    ust_env.ust("destroy", "ksnap")
    assert not os.path.exists(os.path.join(tracefs_dir, "instances", "ust-ksnap"))


def test_a_killed_session_daemon_leaves_no_instance_after_restart(ust_env, tracefs_dir):
    from ust.control import sessiond_pid

    ust_env.ust("create", "kcrash", "-o", ust_env.out)
    ust_env.ust("enable-event", "-k", "sched_switch")
    ust_env.ust("start")
    instance = os.path.join(tracefs_dir, "instances", "ust-kcrash")
    assert os.path.isdir(instance)
    pid = sessiond_pid(ust_env.home)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
               what="the daemon to die")
    assert os.path.isdir(instance)
    ust_env.ust("list")  # starts a new daemon, which removes what nobody owns any more
    assert not os.path.exists(instance)


def test_stop_says_how_many_kernel_events_were_lost(ust_env, tracefs_dir):
    ust_env.ust("create", "klost", "-o", ust_env.out)
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
def test_add_context_k_pid_procname_through_the_cli_and_prio_is_refused_saying_why(ust_env, tracefs_dir):
    ust_env.ust("create", "kctx", "-o", ust_env.out)
    rc, _, err = ust_env.ust("add-context", "-k", "-t", "prio", check=False)
    assert rc != 0 and err.strip().count("\n") == 0 and "carries no priority" in err
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
    ust_env.ust("destroy", "kctx")


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
