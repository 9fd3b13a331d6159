"""Kernel triggers (`ust add-trigger --type kernel | kernel:syscall...`): a trigger-only ftrace instance whose
filter is ftrace's own, its matches counted in the owner's consumer, fired by the session daemon — real tracefs,
real daemons, real processes, babeltrace2 reading the snapshots.

Every end-to-end test needs root and a tracefs it can mount; without them it is skipped with the reason."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import bt2_dump, events_of, needs_bt2
from daemon_util import ust_env, wait_until  # noqa: F401

from ust.errors import FilterError
from ust.kernel import formats as fmt
from ust.kernel import kfilter, pages, tracefs
from ust.kernel.tracefs import KernelTracingError

COND = ("--condition", "event-rule-matches")


@pytest.fixture(scope="module")
def tracefs_dir():
    if os.geteuid() != 0:
        pytest.skip("kernel tracing needs root (tracefs instances)")
    try:
        return tracefs.find_tracefs()
    except KernelTracingError as exc:
        pytest.skip(f"cannot use tracefs here: {exc}")


def _trigger(env, name):
    return next(t for t in env.client().list_triggers() if t["name"] == name)


def _instance(tracefs_dir, env, name) -> str:
    inst = _trigger(env, name)["condition"]["instance"]
    assert inst.startswith(f"ust-.trigger-{env.client().ping()['pid']}-")
    return os.path.join(tracefs_dir, "instances", inst)


def _getppids(n: int) -> int:
    """A process calling getppid() n times (its parent: this one); its pid."""
    p = subprocess.run([sys.executable, "-c", f"import os; [os.getppid() for _ in range({n})]; print(os.getpid())"],
                       capture_output=True, text=True, check=True, env={**os.environ, "UST_AGENT": "0"})
    return int(p.stdout)


def test_a_syscall_trigger_counts_exactly_what_its_filter_keeps_and_fires_by_its_rate_policy(ust_env, tracefs_dir):
    """kernel:syscall:exit getppid with a filter on the return value (the kernel evaluates it: only our children's
    calls reach the trigger's ring): every match counted, every:10 notifications with the captured values of the
    match that fired each, list-triggers and its JSON; removal removes the instance."""
    env = ust_env
    me = os.getpid()
    rc, so, se = env.ust("add-trigger", "--name", "pp", *COND, "--type", "kernel:syscall:exit", "--name", "getppid",
                         "--filter", f"ret == {me}", "--capture", "ret", "--capture", "$ctx.tid",
                         "--capture", "nothere", "--action", "notify", "--rate-policy", "every:10")
    assert so == "Added trigger `pp`.\n", se
    t = _trigger(env, "pp")
    assert (t["condition"]["domain"], t["condition"]["syscall"], t["condition"]["events"]) == (
        "kernel", "exit", ["syscalls:sys_exit_getppid"])
    inst = _instance(tracefs_dir, env, "pp")
    assert open(os.path.join(inst, "events/syscalls/sys_exit_getppid/filter")).read().strip() == f"ret == {me}"
    assert open(os.path.join(inst, "events/syscalls/sys_exit_getppid/enable")).read().strip() == "1"
    assert open(os.path.join(inst, "events/syscalls/sys_enter_getppid/enable")).read().strip() == "0"
    with env.client() as c:
        sub = c.notifications(["pp"], timeout=120)
        child = _getppids(37)
        got = [next(sub) for _ in range(3)]
    assert [(n["trigger"], n["event"], n["domain"], n["hits"]) for n in got] == [
        ("pp", "syscall_exit_getppid", "kernel", h) for h in (10, 20, 30)]
    assert [n["captures"] for n in got] == [{"ret": me, "$ctx.tid": child, "nothere": None}] * 3
    from ust.cli.trigger_cmds import describe_notification

    assert describe_notification(got[0]) == (f"Trigger `pp` fired: syscall_exit_getppid in the kernel (match 10), "
                                             f"captures: ret = {me}, $ctx.tid = {child}, nothere = unavailable")
    wait_until(lambda: _trigger(env, "pp")["hits"] == 37, what="37 matches counted")
    _getppids(3)
    wait_until(lambda: _trigger(env, "pp")["hits"] == 40, what="40 matches counted")
    t = _trigger(env, "pp")
    assert (t["actions"][0]["fired"], t["discarded"]) == (4, 0)
    out = env.ust("list-triggers")[1]
    assert (f"    rule: getppid (type: kernel syscall (exit), filter: ret == {me})\n    captures:\n      - ret\n"
            "      - $ctx.tid\n      - nothere\n    matches: 40\n    discarded: 0 (the trigger's ring was full)\n"
            "  action:notify, rate policy: every 10\n    fired: 4\n") in out
    assert json.loads(env.ust("list-triggers", "--json")[1])[0]["condition"]["syscall"] == "exit"
    mi = json.loads(env.ust("--mi", "json", "list-triggers")[1])["command"]["output"]["triggers"][0]["condition"]
    assert mi["condition_event_rule_matches"]["event_rule"] == {"event_rule_kernel_syscall": {
        "emission_site": "exit", "name_pattern": "getppid", "filter_expression": f"ret == {me}"}}
    assert mi["error_query_results"][0]["error_query_result_counter"] == {"value": 0}
    rc, so, se = env.ust("--mi", "xml", "add-trigger", "--name", "tp", *COND, "--type", "kernel", "--name",
                         "sched_process_exec", "--action", "notify")
    assert "<event_rule_kernel_tracepoint><name_pattern>sched_process_exec</name_pattern>" in so, so
    env.ust("remove-trigger", "tp")
    assert env.ust("remove-trigger", "pp")[1] == "Removed trigger `pp`.\n"
    assert not os.path.exists(inst)


@needs_bt2
def test_an_exec_trigger_snapshots_a_flight_recorder_exactly_once(ust_env, tracefs_dir):
    """The classic use, in the kernel: a flight recorder of system calls snapshots itself when a given program
    is executed (sched_process_exec, a glob on its file name), once (once-after:1) however often it runs; the
    snapshot holds the exec that fired it; a notify action beside it says each match."""
    env = ust_env
    env.ust("create", "kfr", "--snapshot", "-o", env.out)
    env.ust("enable-event", "-k", "sched_process_exec")
    env.ust("start")
    env.ust("add-trigger", "--name", "ex", *COND, "--type", "kernel", "--name", "sched_process_exec",
            "--filter", 'filename == "*/true"', "--capture", "filename", "--action", "snapshot-session", "kfr",
            "--rate-policy", "once-after:1", "--action", "notify")
    inst = _instance(tracefs_dir, env, "ex")
    assert open(os.path.join(inst, "events/sched/sched_process_exec/filter")).read().strip() == \
        'filename ~ "*/true"'
    with env.client() as c:
        sub = c.notifications(["ex"], timeout=120)
        subprocess.run(["/bin/echo", "not this one"], check=True, capture_output=True)
        for _ in range(3):
            subprocess.run(["true"], check=True)
        got = [next(sub) for _ in range(3)]
    assert [n["hits"] for n in got] == [1, 2, 3]
    assert all(n["event"] == "sched_process_exec" and n["captures"]["filename"].endswith("/true") for n in got)
    wait_until(lambda: _trigger(env, "ex")["actions"][0]["fired"] == 1 and
               len(glob.glob(os.path.join(env.out, "snapshot-*", "kernel"))) == 1, what="one snapshot")
    [kdir] = glob.glob(os.path.join(env.out, "snapshot-*", "kernel"))
    execs = [e for e in events_of(bt2_dump(kdir)) if e["name"] == "sched_process_exec"]
    assert any(e["payload"]["filename"].endswith("/true") for e in execs), execs
    t = _trigger(env, "ex")
    assert (t["hits"], t["actions"][0]["fired"], t["actions"][1]["fired"]) == (3, 1, 3)
    env.ust("remove-trigger", "ex")
    env.ust("destroy", "kfr")
    assert not os.path.exists(inst)


def test_a_sigkilled_consumer_is_replaced_the_trigger_goes_on_and_no_instance_stays(ust_env, tracefs_dir, tmp_path):
    """The daemon owns the instance and gives a restarted consumer the same readers: matches made while no
    consumer ran waited in the ring and count; removal removes the instance; a SIGKILLed daemon's instance is
    removed by the next daemon."""
    from ust.control import sessiond_pid

    env = ust_env
    me = os.getpid()
    env.ust("add-trigger", "--name", "kk", *COND, "--type", "kernel:syscall", "--name", "getppid",
            "--filter", f"ret == {me} || $ctx.procname == \"nothing-this\"", "--action", "notify")
    inst = _instance(tracefs_dir, env, "kk")
    c = env.client()
    old = c.ping()["consumer_pid"]
    _getppids(5)
    wait_until(lambda: _trigger(env, "kk")["hits"] == 5, what="5 matches (exits only: the entry has no ret)")
    os.kill(old, signal.SIGKILL)
    _getppids(4)  # maybe while no consumer runs: the ring keeps them
    wait_until(lambda: (c.ping()["consumer_pid"] or 0) not in (0, old), timeout=120, what="a new consumer")
    _getppids(3)
    wait_until(lambda: _trigger(env, "kk")["hits"] == 12, timeout=60, what="every match after the restart")
    env.ust("remove-trigger", "kk")
    assert not os.path.exists(inst)

    prog = tmp_path / f"ktrig-true-{os.getpid()}"  # a program only this test runs (others exec all the time)
    shutil.copy("/bin/true", prog)
    env.ust("add-trigger", "--name", "k2", *COND, "--type", "kernel", "--name", "sched_process_exec",
            "--filter", f'filename == "{prog}"', "--action", "notify", "--rate-policy", "once-after:1")
    inst = _instance(tracefs_dir, env, "k2")
    assert open(os.path.join(inst, "tracing_on")).read().strip() == "1"
    subprocess.run([str(prog)], check=True)
    # spent (its one action fired): nothing it records could fire any more, its instance is switched off
    wait_until(lambda: open(os.path.join(inst, "tracing_on")).read().strip() == "0", what="the instance off")
    pid = sessiond_pid(env.home)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
               what="the daemon to die")
    assert os.path.isdir(inst)
    env.ust("list")  # a new daemon: it removes what nobody owns any more (once its consumer let it go)
    wait_until(lambda: not os.path.exists(inst), timeout=90, what="the dead daemon's trigger instance removed")


def test_matches_the_full_ring_dropped_are_counted_as_discarded_exactly(ust_env, tracefs_dir):
    """A flood of matches while the consumer is stopped overflows the trigger's ring (discard mode): what it kept
    is counted as matches, what it dropped as discarded (ftrace's dropped events: the filter runs before the ring,
    so each is a match), and together they are every call — none counted twice, none lost unsaid."""
    env = ust_env
    me = os.getpid()
    env.ust("add-trigger", "--name", "fl", *COND, "--type", "kernel:syscall:exit", "--name", "getppid",
            "--filter", f"ret == {me}", "--action", "notify", "--rate-policy", "once-after:1000000000")
    consumer = env.client().ping()["consumer_pid"]
    os.kill(consumer, signal.SIGSTOP)
    try:
        _getppids(200_000)
    finally:
        os.kill(consumer, signal.SIGCONT)

    def total():
        t = _trigger(env, "fl")
        return t["hits"] + t["discarded"]

    wait_until(lambda: total() == 200_000, timeout=120, what="every call counted, kept or discarded")
    t = _trigger(env, "fl")
    assert t["discarded"] > 0 and t["hits"] > 0, t
    assert f"    discarded: {t['discarded']} (the trigger's ring was full)" in env.ust("list-triggers")[1]
    # a restarted consumer reads the rings' drop counters again: the same total, not counted twice
    c = env.client()
    os.kill(consumer, signal.SIGKILL)
    wait_until(lambda: (c.ping()["consumer_pid"] or 0) not in (0, consumer), timeout=120, what="a new consumer")
    _getppids(3)
    wait_until(lambda: _trigger(env, "fl")["hits"] == t["hits"] + 3, what="3 more matches")
    assert _trigger(env, "fl")["discarded"] == t["discarded"]


@pytest.mark.parametrize("args, error", [
    (("--type", "kernel", "--name", "no_such_event_x"), "no kernel event matches 'no_such_event_x' (see ust list -k)"),
    (("--type", "kernel:syscall", "--name", "no_such_call"), "no system call matches 'no_such_call'"),
    (("--type", "kernel:kprobe", "--name", "x"), "event rule type 'kernel:kprobe' is not supported"),
    (("--type", "kernel", "--name", "sched_process_exec", "--filter", "pid == 1.5"),
     "kernel filter 'pid == 1.5': a floating-point literal (position 7): ftrace's filter cannot evaluate it"),
    (("--type", "kernel", "--name", "sched_process_exec", "--filter", "tid & 1"),
     "kernel filter 'tid & 1': the operator '&' (position 4): ftrace's filter cannot evaluate it"),
    (("--type", "kernel", "--name", "sched_process_exec", "--filter", "nope == 1"),
     "kernel filter 'nope == 1': no event the rule selects has a field 'nope'"),
    (("--type", "kernel", "--name", "sched_process_exec", "--log-level", "ERR"),
     "a kernel event rule takes no --log-level nor --exclude-name"),
])
def test_bad_kernel_triggers_are_one_line_errors_and_leave_nothing(ust_env, tracefs_dir, args, error):
    def trigger_instances():  # (other users of this tracefs make and remove instances of their own meanwhile)
        return sorted(n for n in os.listdir(os.path.join(tracefs_dir, "instances")) if n.startswith("ust-.trigger-"))

    before = trigger_instances()
    rc, so, se = ust_env.ust("add-trigger", "--name", "bad", *COND, *args, "--action", "notify", check=False)
    assert rc != 0 and se.startswith(f"ust: error: {error}") and se.count("\n") == 1, se
    assert ust_env.client().list_triggers() == []
    assert trigger_instances() == before


# -- pieces without the daemons ------------------------------------------------------------

_EXEC = """name: sched_process_exec
ID: 365
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:20;\tsize:4;\tsigned:1;
"""


@pytest.mark.parametrize("expr, ftrace", [
    ("tid == 5", "pid == 5"),  # lttng-modules' names, ftrace's in the filter
    ("5 < old_tid", "old_pid > 5"),
    ('filename == "/bin/tr*"', 'filename ~ "/bin/tr*"'),
    ('filename != "*true" && old_tid > 3', '(!(filename ~ "*true")) && (old_pid > 3)'),
    ('filename == "a*b"', 'filename ~ "a*b"'),
    ('filename == "/bin/true"', 'filename == "/bin/true"'),
    ("prio == 20", "prio == 120"),  # lttng-modules' priorities: the kernel's minus 100
    ("prio", "prio != 100"),
    ("nope == 1 || tid == 2", "pid == 2"),  # a missing field is false, as in LTTng
    ("nope == 1", False),
    ('tid == "x"', False),  # a number against text: false
    ("!(nope == 1)", True),
    ("!(tid == 3)", "!(pid == 3)"),
    ('$ctx.procname == "sh" && $ctx.tid != 0 && $ctx.cpu_id == 1', '((comm == "sh") && (common_pid != 0)) && (CPU == 1)'),
])
def test_filters_become_ftraces_own(expr, ftrace):
    ev = fmt.parse_format(_EXEC, "sched")
    assert kfilter.translate(expr, ev) == ftrace


@pytest.mark.parametrize("expr", ['filename == "a?*"', 'filename == "!x*"', r'filename == "a\*b*"',
                                  'filename < "a"', "$app.x == 1", "$ctx.vpid == 1", "tid == old_tid",
                                  "-tid == 1", "filename[0] == 1"])
def test_what_ftraces_filter_cannot_say_is_refused(expr):
    with pytest.raises(FilterError, match="ftrace's filter cannot evaluate it"):
        kfilter.translate(expr, fmt.parse_format(_EXEC, "sched"))


def _record(event_id: int, tid: int, payload: bytes) -> bytes:
    import struct

    rec = struct.pack("<HBBi", event_id, 0, 0, tid) + payload
    return rec + b"\0" * (-len(rec) % 4)


def _page(records: list[bytes], missed: bool = False) -> bytes:
    import struct

    body = b""
    for rec in records:
        body += struct.pack("<I", (len(rec) // 4) | (10 << 5)) + rec  # type_len = words, delta 10
    commit = len(body) | (pages.RB_MISSED_EVENTS if missed else 0)
    return struct.pack("<QQ", 1000, commit) + body + b"\0" * 64


def test_matches_are_counted_alike_in_c_and_python_and_capture_values_are_read():
    import struct

    from ust.kernel import _ftrace

    name = b"/usr/bin/true\0"
    payload = struct.pack("<Iiii", (len(name) << 16) | 24, 7, 7, 120) + name  # the text after the fields
    recs = [_record(365, 7, payload), _record(12, 8, b"\0" * 8), _record(365, 9, payload)] * 20
    page = _page(recs, missed=True)
    for keep in (0, 1, 5, 100):
        c = _ftrace.count_matches(page, keep)
        py = pages.count_matches(page, keep)
        assert c == py
        assert c[0] == {365: 40, 12: 20} and c[2] is True and len(c[1]) == min(keep, 60)
    many = _page([_record(i, 1, b"") for i in range(40)] * 3)  # more distinct ids than the C table holds
    assert _ftrace.count_matches(many, 0) == pages.count_matches(many, 0) == ({i: 3 for i in range(40)}, [], False)
    for cut in range(0, len(page), 7):  # a cut page never crashes, and both agree
        try:
            py = pages.count_matches(page[:cut], 3)
        except pages.PageError:
            with pytest.raises(ValueError):
                _ftrace.count_matches(page[:cut], 3)
            continue
        assert _ftrace.count_matches(page[:cut], 3) == py
    ev = fmt.parse_format(_EXEC, "sched")
    assert fmt.record_values(ev, _ftrace.count_matches(page, 1)[1][0][1]) == {
        "filename": "/usr/bin/true", "tid": 7, "old_tid": 7, "prio": 20}
