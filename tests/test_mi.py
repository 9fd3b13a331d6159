"""`ust --mi json|xml` for every command that has one (issue 13): each document parses, carries the
command's result, and (xml) validates against lttng's own MI schema, mi-lttng-4.1.xsd, when it is
installed (scripts/install-lttng-mi-xsd.sh); its element paths are those the real `lttng --mi xml`
writes for the same command when lttng-tools is usable here. docs/mi.md lists the documents."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from daemon_util import needs_bt, ust_env, wait_until  # noqa: F401
from test_lifecycle import MI_SCRIPT, _lttng_usable, _mi_paths

XSD = os.environ.get("UST_LTTNG_MI_XSD", "/usr/share/xml/lttng/mi-lttng-4.1.xsd")
HAVE_XSD = os.path.exists(XSD) and shutil.which("xmllint") is not None
# lttng has no crash MI (lttng-crash has no --mi): ust's document is its own, outside the schema
NOT_IN_SCHEMA = {"crash"}


def _validate(xml_text: str, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.xml"
    path.write_text(xml_text)
    r = subprocess.run(["xmllint", "--noout", "--schema", XSD, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, f"{name}: {r.stderr}\n{xml_text}"


def _json(env, *args):
    """The command's --mi json document, parsed."""
    rc, so, se = env.ust("--mi", "json", *args)
    return json.loads(so)["command"]


def _xml(env, tmp_path, label, *args, check=True):
    """The command's --mi xml document, validated against lttng's schema when it is installed."""
    rc, so, se = env.ust("--mi", "xml", *args, check=check)
    if HAVE_XSD and args[0] not in NOT_IN_SCHEMA:
        _validate(so, tmp_path, label)
    return rc, so, se


def test_every_command_has_a_machine_interface_or_a_reason():
    from ust.cli import COMMANDS
    from ust.cli.mi import MI_COMMANDS, NO_MI

    # the trigger commands' documents are built on another branch (trig) of this same issue
    pending = {"add-trigger", "list-triggers", "remove-trigger", "wait-trigger"}
    assert set(COMMANDS) - set(MI_COMMANDS) - set(NO_MI) <= pending
    assert not set(MI_COMMANDS) & set(NO_MI)


def test_commands_without_mi_say_why(ust_env):
    rc, so, se = ust_env.ust("--mi", "json", "view", check=False)
    assert rc != 0 and so == "" and se.count("\n") == 1
    assert "`ust view` has no machine interface: it prints events" in se


def test_mi_json_and_xml_of_the_session_commands(ust_env, tmp_path):
    """set-session, status, add-context, disable-event, disable-channel, enable-event --function,
    list --apps / -u: the JSON carries each result, the XML validates against lttng's schema."""
    env = ust_env
    out = tmp_path / "out"
    env.ust("create", "s1", "-o", str(out))
    env.ust("create", "s2", "-o", str(tmp_path / "out2"))
    env.ust("enable-channel", "ch", "-s", "s1")
    env.ust("enable-channel", "ch2", "-s", "s1")
    env.ust("enable-event", "a:*,b:x", "-c", "ch", "-s", "s1")

    doc = _json(env, "set-session", "s1")
    assert doc == {"name": "set-session", "output": {"sessions": [{"name": "s1"}]}, "success": True}
    _xml(env, tmp_path, "set-session", "set-session", "s1")

    doc = _json(env, "add-context", "-t", "vpid", "-t", "vtid,perf:thread:page-fault", "-c", "ch")
    assert doc["output"]["contexts"] == [
        {"type": "VPID", "symbol": "vpid", "success": True}, {"type": "VTID", "symbol": "vtid", "success": True},
        {"perf": {"type": 1, "config": 2, "name": "perf_thread_page_fault"}, "symbol": "perf:thread:page-fault",
         "success": True}]
    _xml(env, tmp_path, "add-context", "add-context", "-t", "procname,vuid,contextvar:request", "-c", "ch2")
    assert "vuid" in env.client().get_session("s1")["channels"][1]["context"]

    doc = _json(env, "status")
    assert doc["name"] == "list" and "success" not in doc  # lttng's status writes its list document
    [s] = doc["output"]["sessions"]
    ch = s["domains"][0]["channels"][0]
    assert (s["name"], ch["name"], [e["name"] for e in ch["events"]]) == ("s1", "ch", ["a:*", "b:x"])
    _xml(env, tmp_path, "status", "status")

    doc = _json(env, "disable-event", "b:x", "-c", "ch")
    assert doc["output"] == {"channel": {"name": "ch", "events": [{"name": "b:x", "enabled": False,
                                                                   "success": True}]}}
    _xml(env, tmp_path, "disable-event", "disable-event", "a:*", "-c", "ch")
    assert [r["enabled"] for r in env.client().get_session("s1")["rules"]] == [False, False]

    doc = _json(env, "disable-channel", "ch2")
    assert doc["output"] == {"channels": [{"name": "ch2", "enabled": False, "success": True}]}
    _xml(env, tmp_path, "disable-channel", "disable-channel", "ch2")

    doc = _json(env, "enable-event", "--function", "json:dumps", "-c", "ch")
    [ev] = doc["output"]["events"]
    assert (ev["name"], ev["type"], ev["success"]) == ("json:dumps", "FUNCTION", True)
    _xml(env, tmp_path, "enable-event-function", "enable-event", "--function", "json:loads", "-c", "ch")
    doc = _json(env, "disable-event", "--function", "json:dumps", "-c", "ch")
    assert doc["output"]["channel"]["events"] == [{"name": "json:dumps", "enabled": False, "success": True}]

    app = env.app()
    env.wait_registered(app.pid)
    for args in (("list", "--apps"), ("list", "-u")):
        doc = _json(env, *args)
        [dom] = doc["output"]["domains"]
        [pid] = [p for p in dom["pids"] if p["id"] == app.pid]
        names = {e["name"]: e for e in pid["events"]}
        assert names["app:beta"]["loglevel"] == "TRACE_WARNING" and dom["type"] == "UST"
        _xml(env, tmp_path, "list-apps", *args)
    assert f"PID {app.pid}:" in env.ust("list", "-u")[1]  # the text form too, as `lttng list -u`

    # a failure: one line on stderr, and a document with an empty output whose success is false
    rc, so, se = _xml(env, tmp_path, "failed", "disable-channel", "nosuch", check=False)
    assert rc != 0 and se.count("\n") == 1 and "<output />" in so and "<success>false</success>" in so


@needs_bt
def test_mi_of_crash(ust_env, tmp_path):
    """`ust --mi json crash -x DIR` says which traces and streams were recovered, and how much."""
    from test_crash import _app, _crash_everything, _start

    shm = _start(ust_env, "--snapshot", "-o", ust_env.out)
    app = _app(ust_env)
    app.send("emit 20 0")
    _crash_everything(ust_env, [app])
    doc = _json(ust_env, "crash", "-x", str(tmp_path / "x"), shm)
    crash = doc["output"]["crash"]
    assert doc["success"] and crash["path"] == str(tmp_path / "x") and len(crash["traces"]) == 1
    assert sum(s["packets"] for s in crash["streams"]) >= 1 and all(s["success"] for s in crash["streams"])
    rc, so, se = ust_env.ust("--mi", "xml", "crash", "-x", str(tmp_path / "y"), shm)
    assert "<crash>" in so and "<dropped_events>0</dropped_events>" in so


NEW_STEPS = [
    "create s1 -o {out}/s1",
    "enable-channel -u ch --subbuf-size 64k",
    "enable-channel -u ch2",
    "enable-event -u a:*,b:x -c ch",
    "add-context -u -t vpid -t vtid -c ch",
    "add-context -u -t procname",
    "set-session s1",
    "status",
    "disable-event -u b:x -c ch",
    "disable-event -u -a -c ch",
    "disable-channel -u ch2",
    "list -u",
    "destroy -a",
]


@pytest.mark.skipif(not _lttng_usable(), reason="lttng-tools (lttng, lttng-sessiond) or unshare is not usable here")
def test_mi_new_commands_have_lttngs_elements(ust_env, tmp_path):
    """ust's documents have exactly the element paths of the real `lttng --mi xml` for the same steps."""
    home = tmp_path / "lttnghome"
    home.mkdir()
    steps = [s.format(out=tmp_path / "lttng") for s in NEW_STEPS]
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", MI_SCRIPT, "sh", str(home),
                        str(tmp_path / "lttng"), *steps], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    theirs = {}
    for chunk in r.stdout.split("=== ")[1:]:
        step, _, doc = chunk.partition("\n")
        theirs[step] = doc
    for step, lttng_step in zip(NEW_STEPS, steps):
        rc, so, se = ust_env.ust("--mi", "xml", *step.format(out=tmp_path / "ust").split())
        assert _mi_paths(so) == _mi_paths(theirs[lttng_step]), step


@pytest.mark.skipif(not HAVE_XSD, reason=f"lttng's MI schema is not installed ({XSD}): "
                                         "scripts/install-lttng-mi-xsd.sh installs it")
def test_every_mi_document_validates_against_lttngs_schema(ust_env, tmp_path):
    """The documents of the commands that had a machine interface before (test_lifecycle's steps),
    and a snapshot record, validate against lttng's MI schema."""
    from test_lifecycle import MI_STEPS

    for i, step in enumerate(MI_STEPS):
        _xml(ust_env, tmp_path, f"step{i}", *step.format(out=tmp_path).split())
    ust_env.ust("create", "sn2", "--snapshot", "-o", str(tmp_path / "snap2"))
    ust_env.ust("enable-event", "app:alpha")
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    ust_env.ust("start")
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.send("emit app:alpha 5 0")
    rc, so, se = _xml(ust_env, tmp_path, "record", "snapshot", "record")
    assert "<name>record</name>" in so


def test_mi_of_the_kernel_domain(ust_env, tmp_path):
    """`list -k`, `enable-event -k`, `add-context -k`, `disable-event -k` (where tracefs is usable)."""
    from ust.kernel import tracefs
    from ust.kernel.tracefs import KernelTracingError

    if os.geteuid() != 0:
        pytest.skip("kernel tracing needs root (tracefs instances)")
    try:
        tracefs.find_tracefs()
    except KernelTracingError as exc:
        pytest.skip(f"cannot use tracefs here: {exc}")
    doc = _json(ust_env, "list", "-k")
    [dom] = doc["output"]["domains"]
    kinds = {e["type"] for e in dom["events"]}
    assert dom["type"] == "KERNEL" and "sched:sched_switch" in {e["name"] for e in dom["events"]}
    assert kinds == {"TRACEPOINT", "SYSCALL"}
    _xml(ust_env, tmp_path, "list-k", "list", "-k")
    ust_env.ust("create", "k", "-o", str(tmp_path / "k"))
    doc = _json(ust_env, "enable-event", "-k", "sched:sched_switch")
    assert doc["output"]["events"] == [{"name": "sched:sched_switch", "type": "TRACEPOINT", "enabled": True,
                                        "success": True}]
    _xml(ust_env, tmp_path, "enable-k", "enable-event", "-k", "--syscall", "openat")
    _xml(ust_env, tmp_path, "context-k", "add-context", "-k", "-t", "pid")
    doc = _json(ust_env, "disable-event", "-k", "sched:sched_switch")
    assert doc["output"]["channel"]["events"][0]["name"] == "sched:sched_switch"
