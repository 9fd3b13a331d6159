"""Context fields (LTTng's user-space contexts) and filters on them: written by the real
fast path, read back with babeltrace2, checked against the process's real ids."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap

import pytest

from conftest import bt2_dump, events_of, needs_bt2, run_python
from daemon_util import needs_bt, read_events, ust_env, wait_until  # noqa: F401 - ust_env is a fixture

from ust import _ring
from ust.instrument import context as ctx

ALL_C = list(ctx.C_ORDER)
NS = ("cgroup_ns", "ipc_ns", "mnt_ns", "net_ns", "pid_ns", "time_ns", "user_ns", "uts_ns")
SW_PERF = ["perf:thread:page-fault", "perf:thread:context-switches", "perf:thread:cpu-clock",
           "perf:thread:task-clock"]


def _hardware_counts() -> bool:
    try:
        _ring.perf_check(*ctx.PERF_COUNTERS["perf:thread:instructions"])
        return True
    except OSError:
        return False


def test_python_table_matches_ring():
    assert ctx.C_ORDER == _ring.CONTEXT_KINDS
    assert set(ctx.C_TYPES) == set(ctx.C_ORDER)


# The application: records from the main thread and a worker, touches memory
# and sleeps between events (so page faults, context switches and CPU time grow),
# forks a child that records, and prints the ids it expects to see.
APP = textwrap.dedent("""
    import contextvars, json, os, sys, threading, time
    import ust

    out, names = sys.argv[1], json.loads(sys.argv[2])
    req = contextvars.ContextVar("req")
    facts = {}

    def ns():
        return {n: os.stat(f"/proc/self/ns/{n[:-3]}").st_ino for n in %(ns)r}

    with ust.Session(out, events=["ctx:*"], context=names):
        tp = ust.tracepoint("ctx:ev", {"step": ust.int32})
        req.set("r-17")
        tp(0)
        junk = bytearray(64 << 20)  # 16k fresh pages: page faults
        for i in range(0, len(junk), 4096):
            junk[i] = 1
        time.sleep(0.05)  # context switches, and task-clock stops while asleep
        x = sum(range(200000))  # CPU time
        tp(1)

        def worker():
            facts["worker"] = {"tid": threading.get_native_id(), "pthread": threading.get_ident()}
            tp(2)

        t = threading.Thread(target=worker, name="worker-1")
        t.start()
        t.join()
        pid = os.fork()
        if pid == 0:
            tp(3)
            os._exit(0)
        os.waitpid(pid, 0)
        facts["child"] = pid
    facts.update(pid=os.getpid(), ppid=os.getppid(), tid=threading.get_native_id(),
                 pthread=threading.get_ident(), comm=open("/proc/self/comm").read().strip(), resuid=os.getresuid(), resgid=os.getresgid(), ns=ns())
    print(json.dumps(facts))
""") % {"ns": NS}


@needs_bt2
def test_every_context_read_back_matches_the_process(tmp_path):
    names = ALL_C + SW_PERF + ["thread_name", "asyncio_task", "contextvar:req"]
    r = run_python(APP, str(tmp_path / "t"), json.dumps(names), timeout=120)
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    evs = {e["payload"]["step"]: e["context"] for e in events_of(bt2_dump(tmp_path / "t"), "ctx:ev")}
    assert sorted(evs) == [0, 1, 2, 3]
    main, worker, child = evs[1], evs[2], evs[3]
    for c in (evs[0], main, worker):
        assert (c["vpid"], c["pid"]) == (facts["pid"], facts["pid"])
        assert (c["vppid"], c["ppid"]) == (facts["ppid"], facts["ppid"])
        assert (c["vuid"], c["veuid"], c["vsuid"]) == tuple(facts["resuid"])
        assert (c["vgid"], c["vegid"], c["vsgid"]) == tuple(facts["resgid"])
        assert {n: c[n] for n in NS} == facts["ns"]
        assert c["procname"] == facts["comm"]
        assert 0 <= c["cpu_id"] < os.cpu_count()
    for c in (evs[0], main):
        assert (c["vtid"], c["tid"], c["pthread_id"]) == (facts["tid"], facts["tid"], facts["pthread"])
        assert c["thread_name"] == "MainThread"
        assert c["contextvar_req"] == "r-17"
    assert (worker["vtid"], worker["tid"]) == (facts["worker"]["tid"],) * 2
    assert worker["pthread_id"] == facts["worker"]["pthread"]
    assert worker["thread_name"] == "worker-1" and worker["contextvar_req"] == ""
    # the forked child: its own pid, its parent is the process
    assert (child["vpid"], child["pid"]) == (facts["child"],) * 2
    assert (child["vppid"], child["ppid"]) == (facts["pid"],) * 2
    assert child["vtid"] == facts["child"]
    # per-thread perf counters: the main thread's grew between its two events
    assert main["perf_thread_page_fault"] >= evs[0]["perf_thread_page_fault"] + 10000
    assert main["perf_thread_context_switches"] > evs[0]["perf_thread_context_switches"]
    assert main["perf_thread_task_clock"] > evs[0]["perf_thread_task_clock"]
    assert main["perf_thread_cpu_clock"] > evs[0]["perf_thread_cpu_clock"]
    # the worker's counters are its own (opened in the worker: far below the main thread's)
    assert worker["perf_thread_page_fault"] < main["perf_thread_page_fault"]
    assert worker["perf_thread_task_clock"] < main["perf_thread_task_clock"]


def test_metadata_types_are_lttngs():
    from ust.ctf import metadata as md

    decl = {n: " ".join(md.context_decl(n)) for n in ALL_C + ["perf:thread:page-fault", "contextvar:a.b"]}
    i32 = "integer { size = 32; align = 8; signed = 1; encoding = none; base = 10; }"
    assert decl["cpu_id"] == f"{i32} _cpu_id;"  # LTTng-UST's cpu_id is an int
    u32 = "integer { size = 32; align = 8; signed = 0; encoding = none; base = 10; }"
    u64 = "integer { size = 64; align = 8; signed = 0; encoding = none; base = 10; }"
    for n in ("vpid", "pid", "vtid", "tid", "vppid", "ppid"):
        assert decl[n] == f"{i32} _{n};"
    for n in ("vuid", "veuid", "vsuid", "vgid", "vegid", "vsgid"):
        assert decl[n] == f"{u32} _{n};"
    for n in NS + ("pthread_id",):
        assert decl[n] == f"{u64} _{n};"
    assert decl["perf:thread:page-fault"] == f"{u64} _perf_thread_page_fault;"
    assert decl["contextvar:a.b"] == "string { encoding = UTF8; } _contextvar_a_b;"


CRED_APP = textwrap.dedent("""
    import os, sys
    import ust

    with ust.Session(sys.argv[1], events=["cred:*"], context=["vuid", "veuid", "vsuid", "vgid", "vegid",
                                                              "vsgid", "net_ns"]):
        tp = ust.tracepoint("cred:ev", {"step": ust.int32})
        tp(0)
        os.setresgid(4242, 4343, 0)
        os.setresuid(5252, 5353, 0)  # saved uid 0: we can come back
        tp(1)
        os.setresuid(0, 0, 0)
        os.setresgid(0, 0, 0)
        tp(2)
""")


@needs_bt2
@pytest.mark.skipif(os.geteuid() != 0, reason="changes credentials: needs root")
def test_credentials_are_reread_after_setuid(tmp_path):
    r = run_python(CRED_APP, str(tmp_path / "t"), timeout=120)
    assert r.returncode == 0, r.stderr
    evs = {e["payload"]["step"]: e["context"] for e in events_of(bt2_dump(tmp_path / "t"), "cred:ev")}
    ids = {k: tuple(evs[k][n] for n in ("vuid", "veuid", "vsuid", "vgid", "vegid", "vsgid")) for k in evs}
    assert ids == {0: (0, 0, 0, 0, 0, 0), 1: (5252, 5353, 0, 4242, 4343, 0), 2: (0, 0, 0, 0, 0, 0)}
    # not dumpable after setuid: /proc/self/ns is closed to the process, the cached inode stays
    assert evs[1]["net_ns"] == evs[0]["net_ns"] == os.stat("/proc/self/ns/net").st_ino


FILTER_APP = textwrap.dedent("""
    import os, sys, threading
    import ust

    flt = sys.argv[2].replace("PID", str(os.getpid()))
    with ust.Session(sys.argv[1], events=["flt:*"], filter=flt, context=["vtid"]):
        tp = ust.tracepoint("flt:ev", {"v": ust.int64})
        for v in range(10):
            tp(v)
        t = threading.Thread(target=lambda: [tp(v) for v in range(100, 110)], name="worker")
        t.start()
        t.join()
""")


@needs_bt2
@pytest.mark.parametrize("flt, expected", [
    # issue 7 item 2: the embedded session evaluated filters with an empty context (recorded nothing)
    ("$ctx.vpid == PID", list(range(10)) + list(range(100, 110))),
    ("$ctx.vpid != PID", []),
    ("$ctx.vpid == PID && (v & 1) == 0", [0, 2, 4, 6, 8] + list(range(100, 110, 2))),
    ('$ctx.thread_name == "work*"', list(range(100, 110))),
    ("$ctx.vtid == $ctx.vpid && v >= 8", [8, 9]),
    ('$ctx.procname == "python*" && v < 2', [0, 1]),
    ("$ctx.vuid == 0 && v == 3 || $ctx.pid == PID && v == 104", [3, 104]),
    ("$ctx.nope == 1", []),
])
def test_embedded_session_filters_on_context(tmp_path, flt, expected):
    if os.geteuid() != 0 and "vuid" in flt:
        pytest.skip("expects uid 0")
    r = run_python(FILTER_APP, str(tmp_path / "t"), flt, timeout=120)
    assert r.returncode == 0, r.stderr
    got = sorted(e["payload"]["v"] for e in events_of(bt2_dump(tmp_path / "t"), "flt:ev"))
    assert got == sorted(expected)


def test_unknown_or_unavailable_context_is_one_clear_error(tmp_path):
    import ust

    with pytest.raises(ValueError, match="unknown context 'nosuch'"):
        ust.Session(tmp_path / "t", context=["nosuch"])
    with pytest.raises(ValueError, match="at most 16 Python contexts"):
        ust.Session(tmp_path / "t", context=[f"contextvar:v{k}" for k in range(17)])
    if not _hardware_counts():
        with pytest.raises(ValueError, match=r"^context perf:thread:instructions: this machine cannot count it"):
            ust.Session(tmp_path / "t", context=["perf:thread:instructions"])


def test_perf_counters_do_not_leak_descriptors():
    code = textwrap.dedent("""
        import os, threading, tempfile, time
        import ust

        def perf_fds():
            return sum(os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[perf_event]"
                       for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))

        d = tempfile.mkdtemp()
        with ust.Session(d + "/t", events=["p:*"], context=["perf:thread:page-fault", "perf:thread:task-clock"]):
            tp = ust.tracepoint("p:ev", {"v": ust.int32})
            tp(0)
            assert perf_fds() == 2
            for _ in range(20):
                t = threading.Thread(target=tp, args=(1,))
                t.start()
                t.join()
            # join() returns before the OS thread has run its exit destructors: wait for them
            deadline = time.monotonic() + 30
            while perf_fds() != 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            after_threads = perf_fds()
            # a thread alive during the fork: its counters are copies in the child too
            go, done = threading.Event(), threading.Event()
            live = threading.Thread(target=lambda: (tp(2), go.set(), done.wait()))
            live.start()
            go.wait()
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                before = perf_fds()
                tp(3)  # the child opens its own counters
                os.write(w, f"{before} {perf_fds()}".encode())
                os._exit(0)
            os.close(w)
            os.waitpid(pid, 0)
            child = os.read(r, 100).decode()
            done.set()
            live.join()
        print(after_threads, child)
    """)
    r = run_python(code, timeout=120)
    assert r.returncode == 0, r.stderr
    after_threads, child_before, child_after = map(int, r.stdout.split())
    assert after_threads == 2  # each thread's counters were closed when it ended
    assert (child_before, child_after) == (0, 2)  # the child closed every inherited counter, then opened its two


def test_cli_glues_filters_that_start_with_a_dash():
    from ust.cli import glue_filter_values

    assert glue_filter_values(["enable-event", "a:*", "--filter", "-v < -5"]) == ["enable-event", "a:*",
                                                                                 "--filter=-v < -5"]
    assert glue_filter_values(["run", "-f", "-v>1", "--", "python", "-f", "-x"]) == ["run", "-f-v>1", "--",
                                                                                     "python", "-f", "-x"]
    assert glue_filter_values(["view", "-f", "-x", "--filter", "-v"]) == ["view", "-f", "-x", "--filter=-v"]


@needs_bt
def test_daemon_contexts_and_filters_through_the_cli(ust_env):  # noqa: F811
    ust_env.ust("create", "s", "-o", ust_env.out)
    # a filter starting with '-' (issue 7 item 7), bitwise operators, and $ctx values from the agent
    ust_env.ust("enable-event", "app:alpha", "--filter", "-v < -3 && (v & 1) == 0 && $ctx.vtid == $ctx.vpid")
    ust_env.ust("enable-event", "app:gamma", "--filter=-v == -1")
    types = "vpid,pid,vtid,tid,ppid,vppid,pthread_id,vuid,veuid,vsuid,vgid,vegid,vsgid," + ",".join(NS)
    _, out, _ = ust_env.ust("add-context", "-t", types, "-t", "perf:thread:page-fault", "-t", "contextvar:req")
    assert "perf:thread:page-fault" in out
    ust_env.ust("start")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 2' in app.send("agent"), what="rules applied")
    # issue 7 item 2 through the daemons: a filter on this very process's id
    ust_env.ust("enable-event", "app:beta", "--filter", f"$ctx.vpid == {app.pid} && v > 7")
    ust_env.ust("enable-event", "other:delta", "--filter", f"$ctx.vpid != {app.pid}")
    wait_until(lambda: '"attached": 4' in app.send("agent"), what="rules applied")
    app.send("emit app:alpha 10")
    app.send("emit app:gamma 3")
    app.send("emit app:beta 10")
    app.send("emit other:delta 10")
    ust_env.ust("stop")
    events = read_events(ust_env.out)
    vals = [(n, int(re.search(r"\bv = (-?\d+)", rest).group(1))) for n, rest in events]
    assert sorted(vals) == [("app:alpha", 4), ("app:alpha", 6), ("app:alpha", 8), ("app:beta", 8), ("app:beta", 9),
                            ("app:gamma", 1)]
    rest = events[0][1]

    def field(name):
        return re.search(rf"\b{name} = (\"[^\"]*\"|-?\d+)", rest).group(1)

    assert int(field("vpid")) == int(field("pid")) == int(field("vtid")) == int(field("tid")) == app.pid
    assert int(field("ppid")) == int(field("vppid")) == os.getpid()
    assert int(field("vuid")) == os.getuid() and int(field("vegid")) == os.getegid()
    for n in NS:
        assert int(field(n)) == os.stat(f"/proc/{app.pid}/ns/{n[:-3]}").st_ino
    assert int(field("perf_thread_page_fault")) >= 0 and field("contextvar_req") == '""'


def test_cli_add_context_list_and_errors(ust_env):  # noqa: F811
    _, out, _ = ust_env.ust("add-context", "--list")
    listed = {line.split()[0] for line in out.splitlines()}
    assert set(ctx.C_ORDER) | {"thread_name", "asyncio_task", "contextvar:NAME"} | set(SW_PERF) <= listed
    ust_env.ust("create", "s", "-o", ust_env.out)
    # a channel that does not exist is an error (it was silently created), as in lttng
    rc, _, err = ust_env.ust("add-context", "-c", "nosuch", "-t", "vpid", check=False)
    assert rc != 0 and "no channel named 'nosuch'" in err and err.count("\n") == 1
    assert ust_env.client().get_session("s")["channels"] == []
    rc, _, err = ust_env.ust("add-context", "-t", "nosuch", check=False)
    assert rc != 0 and err.startswith("ust: error:") and "nosuch" in err and err.count("\n") == 1
    if not _hardware_counts():
        rc, _, err = ust_env.ust("add-context", "-t", "perf:thread:cpu-cycles", check=False)
        assert rc != 0 and "cannot count" in err and err.count("\n") == 1
    # the daemon checks what a client sends, not only the CLI
    from ust.errors import UstError

    with pytest.raises(UstError, match="unknown context"):
        ust_env.client().add_context("s", ["contextvar:"])
    # calls add up: a channel never gets more than an application can record
    for k in range(16):
        ust_env.client().add_context("s", [f"contextvar:v{k}"])
    with pytest.raises(UstError, match="at most 16 Python contexts"):
        ust_env.client().add_context("s", ["thread_name"])


NESTED_APP = textwrap.dedent("""
    import json, os, sys, threading
    import ust

    def outer(path):
        for line in open(path):
            if line.startswith("NSpid:"):
                return int(line.split()[1])

    facts = {}
    with ust.Session(sys.argv[1], events=["ns:*"], context=["vpid", "pid", "vtid", "tid"]):
        tp = ust.tracepoint("ns:ev", {"step": ust.int32})
        tp(0)

        def worker():
            facts["worker"] = (threading.get_native_id(), outer("/proc/thread-self/status"))
            tp(1)

        t = threading.Thread(target=worker)
        t.start()
        t.join()
    facts["main"] = (os.getpid(), outer("/proc/self/status"))
    print(json.dumps(facts))
""")


@needs_bt2
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"), reason="needs root and unshare")
def test_pid_and_tid_in_a_nested_pid_namespace(tmp_path):
    """vpid/vtid are the namespace's ids, pid/tid the initial namespace's (LTTng's kernel-side meaning)."""
    import subprocess

    r = subprocess.run(["/usr/bin/unshare", "--pid", "--fork", sys.executable, "-c", NESTED_APP, str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    evs = {e["payload"]["step"]: e["context"] for e in events_of(bt2_dump(tmp_path / "t"), "ns:ev")}
    vpid, pid = facts["main"]
    assert vpid == 1 and pid > 1
    assert (evs[0]["vpid"], evs[0]["pid"], evs[0]["vtid"], evs[0]["tid"]) == (1, pid, 1, pid)
    wvtid, wtid = facts["worker"]
    assert wvtid != wtid
    assert (evs[1]["vpid"], evs[1]["pid"], evs[1]["vtid"], evs[1]["tid"]) == (1, pid, wvtid, wtid)


PERF_FILTER_APP = textwrap.dedent("""
    import sys, time
    import ust

    with ust.Session(sys.argv[1], events=["pf:*"], filter="$ctx.perf_thread_task_clock > 10000000"):
        tp = ust.tracepoint("pf:ev", {"step": ust.int32})
        tp(0)  # opens this thread's counter: a few microseconds at most
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.05:  # 50 ms of this thread's CPU time
            pass
        tp(1)
""")


@needs_bt2
def test_filter_on_a_perf_counter(tmp_path):
    r = run_python(PERF_FILTER_APP, str(tmp_path / "t"), timeout=120)
    assert r.returncode == 0, r.stderr
    assert [e["payload"]["step"] for e in events_of(bt2_dump(tmp_path / "t"), "pf:ev")] == [1]


CTXVAR_APP = textwrap.dedent("""
    import contextvars, os, sys
    import ust

    request = contextvars.ContextVar("request")
    tp = ust.tracepoint("cv:ev", {"v": ust.int64})
    print(f"ready {os.getpid()}", flush=True)
    for line in sys.stdin:
        if line.startswith("emit"):
            request.set(line.split()[1])
            tp(1)
            print("ok", flush=True)
        elif line.startswith("agent"):
            import json
            print("ok " + json.dumps(ust.agent.status()), flush=True)
        else:
            print("ok", flush=True)
            break
""")


@needs_bt
def test_daemon_records_contextvar_values(ust_env, tmp_path):  # noqa: F811
    script = tmp_path / "cv_app.py"
    script.write_text(CTXVAR_APP)
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "cv:*")
    ust_env.ust("add-context", "-t", "contextvar:request,vtid")
    ust_env.ust("start")
    app = ust_env.app(str(script))
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.send("emit req-42")
    app.send("emit req-43")
    app.exit()
    ust_env.ust("stop")
    rests = [rest for name, rest in read_events(ust_env.out) if name == "cv:ev"]
    assert [re.search(r'contextvar_request = "([^"]*)"', r).group(1) for r in rests] == ["req-42", "req-43"]
    assert all(f"vtid = {app.pid}" in r for r in rests)


PINNED = textwrap.dedent("""
    import os, sys
    import ust
    from ust.instrument import probes

    def pinned_call():
        pass

    cpus = sorted(os.sched_getaffinity(0))
    with ust.Session(sys.argv[1], events=["python:*"], context=sys.argv[2:]):
        whole = probes.WholeProgram(include=["__main__:pinned_call"], exclude=[])
        whole.start()
        for _ in range(3):
            for cpu in cpus:
                os.sched_setaffinity(0, {cpu})  # the kernel moves the thread before the call returns
                pinned_call()
        whole.stop()
    print(" ".join(map(str, cpus)))
""")


@needs_bt2
@pytest.mark.parametrize("context", [[], ["cpu_id"]])
def test_events_go_to_the_stream_of_the_cpu_the_thread_runs_on(tmp_path, context):
    """The writer's CPU (read from the thread's rseq area when glibc registered one, else sched_getcpu)
    follows the thread as it is moved from CPU to CPU: each event is in that CPU's stream, and the cpu_id
    context says the same. No context: the 8-byte event's lean path; cpu_id: the general path."""
    r = run_python(PINNED, str(tmp_path / "t"), *context, timeout=120)
    assert r.returncode == 0, r.stderr
    cpus = [int(c) for c in r.stdout.split()]
    entries = events_of(bt2_dump(tmp_path / "t"), "python:function_entry")
    by_time = sorted(entries, key=lambda e: e["ts"])
    assert [e["cpu_id"] for e in by_time] == cpus * 3
    if context:
        assert [e["context"]["cpu_id"] for e in by_time] == cpus * 3
