"""The real lttng-analyses (Debian's python3-lttnganalyses: lttng-cputop,
lttng-schedlog, lttng-syscallstats, lttng-irqstats, lttng-iolatencytop) on
ust's kernel trace: they read LTTng kernel traces (lttng-modules' event and
field names, types and meaning), so they must read ours and find in it what a
known workload did.

Needs root and tracefs (as tests/test_kernel.py) and the tools (installed by
scripts/ensure-system-deps.sh); without them each test is skipped with the
reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from daemon_util import ust_env  # noqa: F401
from test_kernel import _name, tracefs_dir  # noqa: F401

TOOLS = ("lttng-cputop-mi", "lttng-schedlog-mi", "lttng-syscallstats-mi", "lttng-irqstats-mi",
         "lttng-iolatencytop-mi")

GETPPIDS = 37
SLEEPS = 4
SLEEP_S = 0.05
DIRECT_SIZE = 3 << 16  # 192 KiB: one O_DIRECT read of a size nothing else on the machine reads

# the workload: waits for "go", then known system calls, sleeps,
# a fork + exec, an O_DIRECT read; prints the exec'd child's pid
_WORKLOAD = f"""
import mmap, os, sys, time
sys.stdin.readline()
for _ in range({GETPPIDS}):
    os.getppid()
for _ in range({SLEEPS}):
    time.sleep({SLEEP_S})
child = os.fork()
if child == 0:
    os.execv("/bin/true", ["true"])
os.waitpid(child, 0)
buf = mmap.mmap(-1, {DIRECT_SIZE})  # page-aligned, as O_DIRECT wants
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
assert os.readv(fd, [buf]) == {DIRECT_SIZE}
os.close(fd)
print(child, flush=True)
sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"lttng-analyses is not installed ({', '.join(missing)} missing: "
                    "apt-get install python3-lttnganalyses, as scripts/ensure-system-deps.sh does)")


def _run(tool: str, trace: str, *args: str) -> list[dict]:
    """A tool's machine-interface results (the tool must succeed)."""
    r = subprocess.run([tool, *args, trace], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{tool}: {r.stderr.strip()[-2000:]}"
    return json.loads(r.stdout)["results"]


def _tables(results: list[dict], title: str) -> list[dict]:
    return [t for t in results if title in str(t["class"])]


@pytest.fixture(scope="module")
def workload_trace(tracefs_dir, tools, tmp_path_factory):
    """One recording of the workload (shared: each tool takes seconds to read it)."""
    from ust.kernel.capture import KernelCapture

    out = tmp_path_factory.mktemp("lttng-analyses")
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".direct-{os.getpid()}")  # on the disk
    with open(data, "wb") as f:
        f.write(os.urandom(DIRECT_SIZE))
        f.flush()
        os.fsync(f.fileno())
    c = KernelCapture(_name("analyses"), str(out))
    app = None
    try:
        c.enable(["sched_switch", "sched_wakeup", "sched_wakeup_new", "sched_waking", "sched_process_fork",
                  "sched_process_exec", "sched_process_exit", "sched_migrate_task", "irq_handler_entry",
                  "irq_handler_exit", "softirq_entry", "softirq_exit", "softirq_raise", "block_rq_issue",
                  "block_rq_complete"])
        c.enable(["*"], syscalls=True)
        c.start()
        # started while recording: its fork is in the trace (ust writes no statedump of the
        # processes already running: lttng-analyses shows their pid as "?")
        app = subprocess.Popen([sys.executable, "-c", _WORKLOAD, data], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
        app.stdin.write("go\n")
        app.stdin.flush()
        child = int(app.stdout.readline())
        time.sleep(0.05)  # the workload's last events reach the ring before it stops
        c.stop()
        app.stdin.write("end\n")
        app.stdin.flush()
        assert app.wait(timeout=60) == 0
        yield str(out / "kernel"), app.pid, child
    finally:
        c.destroy()
        if app is not None and app.poll() is None:
            app.kill()
            app.wait()
        os.unlink(data)


def test_lttng_syscallstats_counts_the_workloads_system_calls_and_sleeps(workload_trace):
    trace, pid, child = workload_trace
    results = _run("lttng-syscallstats-mi", trace)
    # the per-thread table names the process: its pid comes from sched_process_fork's child_pid
    mine = _tables(results, f" ({pid}, TID: {pid})]")
    assert len(mine) == 1, [str(t["class"]) for t in results][:40]
    calls = {row[0]["name"]: row for row in mine[0]["data"]}
    assert calls["getppid"][1]["value"] == GETPPIDS
    sleeps = calls["clock_nanosleep"]
    assert sleeps[1]["value"] >= SLEEPS
    assert sleeps[4]["value"] >= SLEEP_S * 1e9  # the longest sleep, in ns
    assert "execve" in {row[0]["name"] for t in _tables(results, f"({child}, TID: {child})") for row in t["data"]}
    # a process already running when recording started (this one) is known by its pid too:
    # from the statedump at the start (lttng_statedump_process_state), read because every
    # stream opens at the start (lttng-analyses keeps only the time all streams cover)
    me = os.getpid()
    assert _tables(results, f" ({me}, TID: {me})]"), [str(t["class"]) for t in results][:40]


def test_lttng_cputop_and_schedlog_see_the_workload_run_and_wake_up(workload_trace):
    trace, pid, _ = workload_trace
    top = _run("lttng-cputop-mi", trace, "--limit", "100000")
    procs = [row[0] for t in _tables(top, "per-process") for row in t["data"]]
    assert any(p["tid"] == pid for p in procs)
    cpus = [row[0]["id"] for t in _tables(top, "per-cpu") for row in t["data"]]
    assert cpus and set(cpus) <= set(range(os.cpu_count()))  # cpu_id, from the packet context
    log = _run("lttng-schedlog-mi", trace)
    wakeups = [row for t in _tables(log, "log") for row in t["data"] if row[5]["tid"] == pid]
    assert len(wakeups) >= SLEEPS  # woken after each sleep
    assert all(row[5].get("pid") == pid and row[3]["value"] == 20 for row in wakeups)  # prio as lttng-modules: 20


def test_lttng_irqstats_and_iolatencytop_read_the_interrupts_and_the_direct_read(workload_trace):
    trace, pid, _ = workload_trace
    irqs = _run("lttng-irqstats-mi", trace)
    counts = [row[1]["value"] for t in irqs for row in t["data"]]
    assert sum(counts) > 0  # the timer's softirqs at least, during the sleeps
    io = _run("lttng-iolatencytop-mi", trace, "--minsize", str(DIRECT_SIZE), "--maxsize", str(DIRECT_SIZE))
    reads = [row for t in _tables(io, "Top system call latencies") for row in t["data"]
             if row[3]["name"] == "readv" and row[5]["tid"] == pid]
    assert [row[4]["value"] for row in reads] == [DIRECT_SIZE], io


def test_babeltrace_1_and_2_read_the_kernel_trace_without_a_warning(workload_trace):
    """lttng-analyses reads with babeltrace 1 (and checks the trace with its CLI); babeltrace2
    is ust's oracle: neither may warn, but about events the ring really lost (in a window of time)."""
    import re

    trace, _, _ = workload_trace
    for tool in ("babeltrace2", "babeltrace"):
        if shutil.which(tool) is None:
            continue
        r = subprocess.run([tool, trace], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and r.stdout, r.stderr
        for line in r.stderr.splitlines():
            m = re.search(r"discarded \d+ events between \[([^]]+)\] and \[([^]]+)\]", line)
            assert m and m.group(1) < m.group(2), r.stderr[:2000]


# a process that runs before the session starts: each line asks for that many getppid()
_WORKER = """
import os, sys
for line in sys.stdin:
    for _ in range(int(line)):
        os.getppid()
    print("done", flush=True)
"""


def _worker_calls(worker, n: int) -> None:
    worker.stdin.write(f"{n}\n")
    worker.stdin.flush()
    assert worker.stdout.readline() == "done\n"


def _getppids_of(trace: str, pid: int) -> int | None:
    """lttng-syscallstats' count of ``pid``'s getppid calls in ``trace`` when it knows the
    thread's process (its table is named "(pid, TID: pid)"), else None."""
    mine = _tables(_run("lttng-syscallstats-mi", trace), f" ({pid}, TID: {pid})]")
    if not mine:
        return None
    return sum(row[1]["value"] for t in mine for row in t["data"] if row[0]["name"] == "getppid")


def _statedumps(trace: str) -> int:
    from conftest import bt2_dump, events_of

    return sum(1 for e in events_of(bt2_dump(trace)) if e["name"] == "lttng_statedump_start")


def test_every_chunk_and_a_cleared_trace_start_with_a_statedump(ust_env, tracefs_dir, tools):
    """A rotated chunk is a self-contained kernel trace, as lttng's: lttng-analyses reading the
    second chunk alone knows a process that was running before it (from that chunk's own
    statedump: without the pid context nothing else says it); so does the trace left by
    `clear`; `regenerate statedump` and a start after a stop write one more."""
    import glob

    worker = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        name = _name("kchunks")
        ust_env.ust("create", name, "-o", ust_env.out)
        ust_env.ust("enable-event", "-k", "--syscall", "getppid")
        ust_env.ust("enable-event", "-k", "sched_switch")
        ust_env.ust("start")
        _worker_calls(worker, 11)
        ust_env.ust("rotate")
        _worker_calls(worker, 13)
        ust_env.ust("rotate")
        archives = sorted(glob.glob(os.path.join(ust_env.out, "archives", "*")),
                          key=lambda d: int(d.rsplit("-", 1)[1]))
        assert len(archives) == 2
        chunks = [os.path.join(a, "kernel") for a in archives]
        assert [_getppids_of(d, worker.pid) for d in chunks] == [11, 13]
        assert [_statedumps(d) for d in chunks] == [1, 1]
        # clear: the fresh files start with a statedump too
        _worker_calls(worker, 5)
        ust_env.ust("clear", name)
        _worker_calls(worker, 7)
        ust_env.ust("regenerate", "statedump")
        ust_env.ust("stop")  # a rotating session's stop archives its last chunk
        trace = sorted(glob.glob(os.path.join(ust_env.out, "archives", "*")),
                       key=lambda d: int(d.rsplit("-", 1)[1]))[-1] + "/kernel"
        assert _getppids_of(trace, worker.pid) == 7
        assert _statedumps(trace) == 2  # the clear's, regenerate's
        ust_env.ust("destroy", name)
        # a start after a stop writes one more, as each lttng start
        name = _name("krestart")
        out = os.path.join(ust_env.out, "restart")
        ust_env.ust("create", name, "-o", out)
        ust_env.ust("enable-event", "-k", "--syscall", "getppid")
        ust_env.ust("enable-event", "-k", "sched_switch")
        ust_env.ust("start")
        ust_env.ust("stop")
        ust_env.ust("start")
        _worker_calls(worker, 3)
        ust_env.ust("stop")
        assert _getppids_of(out + "/kernel", worker.pid) == 3
        assert _statedumps(out + "/kernel") == 2
        for d in chunks + [trace, out + "/kernel"]:
            r = subprocess.run(["babeltrace2", d], capture_output=True, text=True, timeout=600)
            assert r.returncode == 0 and "WARNING" not in r.stderr and "ERROR" not in r.stderr, r.stderr[:2000]
        ust_env.ust("destroy", name)
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)


# opens one file before recording starts (known from the statedump's file descriptors), writes to it,
# then opens another by name while recording (its name from the path probes) and reads it whole
_IO_WORKLOAD = """
import os, sys
os.sched_setaffinity(0, {0})  # a thread moved between a path probe and its call may get "" (docs/kernel.md)
pre = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
print("ready", flush=True)
sys.stdin.readline()
for _ in range(3):
    os.write(pre, b"w" * 41 * 1024)
fd = os.open(sys.argv[2], os.O_RDONLY)
n = 0
while (chunk := os.read(fd, 7 * 1024)):
    n += len(chunk)
os.close(fd)
print(n, flush=True)
sys.stdin.readline()
"""
WRITTEN, READ = 3 * 41 * 1024, 77 * 1024


def test_lttng_iousagetop_names_the_files_a_workload_reads_and_writes(ust_env, tracefs_dir, tools, tmp_path):
    """lttng-iousagetop names files by what they were opened as: a file opened before recording
    started by the statedump's lttng_statedump_file_descriptor (from /proc/PID/fd), one opened
    while recording by syscall_entry_openat's filename (the path probes: ftrace records only the
    pointer). Both are reported with the bytes the workload moved, under their names."""
    if shutil.which("lttng-iousagetop-mi") is None:
        pytest.skip("lttng-iousagetop-mi is not installed (python3-lttnganalyses)")
    written, to_read = str(tmp_path / "written.bin"), str(tmp_path / "read-me.bin")
    with open(to_read, "wb") as f:
        f.write(os.urandom(READ))
    app = subprocess.Popen([sys.executable, "-c", _IO_WORKLOAD, written, to_read], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout.readline() == "ready\n"
        name = _name("kio")
        ust_env.ust("create", name, "-o", ust_env.out)
        ust_env.ust("enable-event", "-k", "sched_switch,sched_process_fork,sched_process_exec,sched_process_exit")
        ust_env.ust("enable-event", "-k", "--syscall", "-a")
        ust_env.ust("start")
        app.stdin.write("go\n")
        app.stdin.flush()
        assert int(app.stdout.readline()) == READ
        ust_env.ust("stop")
        results = _run("lttng-iousagetop-mi", os.path.join(ust_env.out, "kernel"), "--limit", "1000000")
        ust_env.ust("destroy", name)
    finally:
        if app.poll() is None:
            app.stdin.write("end\n")
            app.stdin.flush()
            app.wait(timeout=60)

    def per_file(kind: str) -> dict:
        return {row[0]["path"]: (row[1]["value"], row[2]["value"]) for t in _tables(results, f"Per-file top I/O "
                f"operations [{kind}]") for row in t["data"]}

    reads, writes = per_file("read"), per_file("written")
    assert to_read in reads and written in writes, (reads, writes)
    assert reads[to_read][0] == READ and f"({app.pid})" in reads[to_read][1]
    assert writes[written][0] == WRITTEN and f"({app.pid})" in writes[written][1]
