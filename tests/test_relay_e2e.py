"""Streaming sessions end to end: real ust-sessiond and ust-consumerd, a real
traced application, a real ust-relayd; babeltrace2 and `ust view --live` follow."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import needs_babeltrace2
from daemon_util import SRC, counts, read_events, ust_env, values, wait_until  # noqa: F401
from relay_util import Relayd, attached_viewers, files_of, live_viewer


@pytest.fixture
def relayd(tmp_path):
    rundir = tmp_path / "relay-run"
    rundir.mkdir()
    relay = Relayd(tmp_path / "relay-out", rundir)
    yield relay
    if relay.alive():
        assert relay.stop() == 0, relay.stderr


def session_dir(relay, name):
    host = os.uname().nodename
    [d] = [d for d in os.listdir(os.path.join(relay.output, host)) if d.startswith(name + "-")]
    return os.path.join(relay.output, host, d)


@needs_babeltrace2
def test_live_session_followed_by_babeltrace2(ust_env, relayd, tmp_path):
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    _, out, _ = ust_env.ust("create", "s", "-U", relayd.net_url, "--live")
    assert "Live session s created." in out and relayd.net_url in out
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app.send("emit app:alpha 10")
    host = os.uname().nodename
    wait_until(lambda: any(d.startswith("s-") for d in os.listdir(os.path.join(relayd.output, host)))
               if os.path.isdir(os.path.join(relayd.output, host)) else False, what="the session on the relay")
    viewer = live_viewer(f"{relayd.live_url}/host/{host}/s", tmp_path / "live.txt")
    wait_until(lambda: attached_viewers(relayd) == 1, timeout=120, what="babeltrace2 attached")
    # the live timer delivers the partial packet: the viewer sees events while the session runs
    wait_until(lambda: (tmp_path / "live.txt").read_text().count("app:alpha") == 10, timeout=120,
               what="babeltrace2 printing the first events live")
    app.send("emit app:alpha 490")
    rc, _, err = ust_env.ust("view", check=False)  # no local trace to read: one line says what to do
    assert rc != 0 and "ust view --live" in err and err.count("\n") == 1, err
    ust_env.ust("destroy")
    err = viewer.communicate(timeout=300)[1]
    assert viewer.returncode == 0, err
    live = (tmp_path / "live.txt").read_text()
    assert live.count("app:alpha") == 500
    # the relay's copy reads the same
    events = read_events(session_dir(relayd, "s"))
    assert values(events, "app:alpha") == list(range(10)) + list(range(490))
    app.exit()


@needs_babeltrace2
def test_streamed_copy_equals_local_trace(ust_env, relayd, tmp_path):
    """The same application output recorded by a local session and by a streamed one
    at once: file by file, the relay's copy has what the local trace has."""
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    local = os.path.join(ust_env.out, "local")
    ust_env.ust("create", "loc", "-o", local)
    ust_env.ust("enable-event", "app:*", "-s", "loc")
    ust_env.ust("create", "net", "-C", f"tcp://127.0.0.1:{relayd.control}", "-D", f"tcp://127.0.0.1:{relayd.data}")
    ust_env.ust("enable-event", "app:*", "-s", "net")
    ust_env.ust("start", "loc")
    ust_env.ust("start", "net")
    app.send("emit app:alpha 3000")
    ust_env.ust("stop", "loc")
    ust_env.ust("stop", "net")
    ust_env.ust("destroy", "loc")
    ust_env.ust("destroy", "net")
    copy = session_dir(relayd, "net")
    a = subprocess.run(["babeltrace2", local], capture_output=True, text=True, check=True).stdout
    b = subprocess.run(["babeltrace2", copy], capture_output=True, text=True, check=True).stdout
    assert a.count("app:alpha") == b.count("app:alpha") == 3000
    # each session has its own clock offset: the same events, told apart only by their time stamps
    assert [line.split(") ", 1)[1] for line in a.splitlines()] == [line.split(") ", 1)[1] for line in b.splitlines()]
    relayd.stop()
    # the same tree of non-empty files (two sessions: two trace uuids, so not the same bytes;
    # tests/test_relay.py::test_relay_copy_is_byte_identical streams one trace's own packets)
    assert {k for k, v in files_of(local).items() if v} == {k for k, v in files_of(copy).items() if v}
    app.exit()


def test_relay_killed_and_restarted(ust_env, relayd, tmp_path):
    """The relay dies while a session streams: the application goes on without
    waiting, the ust commands answer, what cannot be sent is discarded and
    counted; the relay restarted on the same ports gets the stream again, in
    the same session directory."""
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    ust_env.ust("create", "s", "-U", relayd.net_url, "--live=50000")
    ust_env.ust("enable-channel", "c", "--subbuf-size", "4096", "--num-subbuf", "4")
    ust_env.ust("enable-event", "app:alpha", "-c", "c")
    ust_env.ust("start")
    app.send("emit app:alpha 100")
    host = os.uname().nodename
    wait_until(lambda: "app:alpha" in _relay_text(relayd.output), timeout=120, what="events on the relay")
    relayd.kill()
    app.send("emit app:alpha 20000")  # never blocks: 16 KiB of buffer, then discarded
    _, out, _ = ust_env.ust("status")  # the daemons answer while the relay is gone
    before = _relay_text(relayd.output).count("app:alpha")
    relayd.restart()
    wait_until(lambda: _relay_text(relayd.output).count("app:alpha") > before, timeout=120,
               what="the consumer reconnected and sent what its buffer kept")
    assert [d for d in os.listdir(os.path.join(relayd.output, host)) if not d.startswith(".")] == \
        [os.path.basename(session_dir(relayd, "s"))]  # resumed: the same directory
    app.send("emit app:alpha 50")
    ust_env.ust("stop")
    ust_env.ust("destroy")
    recorded = discarded = 0
    for d in [d for d in os.listdir(os.path.join(relayd.output, host)) if not d.startswith(".")]:
        r = subprocess.run(["babeltrace2", os.path.join(relayd.output, host, d)], capture_output=True, text=True,
                           check=True)
        recorded += r.stdout.count("app:alpha")
        discarded += sum(int(n) for n in re.findall(r"discarded (\d+) events", r.stderr))
    assert 150 <= recorded < 20150  # before the crash, what the buffer kept, after the restart
    assert recorded + discarded == 20150  # every event is there or counted
    app.exit()
    relayd.stop()
    from conftest import assert_packet_indexes

    assert assert_packet_indexes(session_dir(relayd, "s")) >= 1  # rebuilt by the restarted relay, then kept


def _relay_text(root) -> str:
    r = subprocess.run(["babeltrace2", str(root)], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


@needs_babeltrace2
def test_snapshot_record_to_a_relay(ust_env, relayd, tmp_path):
    app = ust_env.app()
    ust_env.wait_registered(app.pid)
    ust_env.ust("create", "snap", "--snapshot", "-o", os.path.join(ust_env.out, "snap"))
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app.send("emit app:alpha 300")
    _, out, _ = ust_env.ust("snapshot", "record", "--output", relayd.net_url)
    assert relayd.net_url in out
    wait_until(lambda: "app:alpha" in _relay_text(relayd.output), what="the snapshot on the relay")
    assert values(read_events(relayd.output), "app:alpha") == list(range(300))
    # named as lttng names snapshots: OUTPUT-NAME-YYYYmmdd-HHMMSS-N (the first: snapshot-1-...-0)
    assert any(re.fullmatch(r"snapshot-1-\d{8}-\d{6}-0", os.path.basename(d)) for d, _, _ in os.walk(relayd.output))
    relayd.kill()
    rc, _, err = ust_env.ust("snapshot", "record", "--output", relayd.net_url, check=False)
    assert rc != 0 and "unreachable" in err and err.count("\n") == 1, err
    ust_env.ust("destroy")
    app.exit()


def _by_vpid(text: str) -> list:
    """(vpid, v) of every event babeltrace2 printed."""
    return [(int(p), int(v)) for p, v in re.findall(r"vpid = (\d+).*?\bv = (-?\d+)", text)]


def _wait_at(app, target: int) -> None:
    while True:
        line = app.proc.stdout.readline()
        assert line, "the app stopped"
        if line.startswith("at ") and int(line.split()[1]) >= target:
            return


def _tree(root) -> set:
    """The files of each archive, its directory name replaced by its index (and a per-PID trace's
    directory without its time, each session's own)."""
    out = set()
    for a in os.listdir(os.path.join(root, "archives")):
        index = a.rsplit("-", 1)[1]
        for rel in files_of(os.path.join(root, "archives", a)):
            out.add((index, re.sub(r"-\d{8}-\d{6}$", "", os.path.dirname(rel)), os.path.basename(rel)))
    return out


@needs_babeltrace2
@pytest.mark.parametrize("buffers,live", [("uid", True), ("pid", False)])
def test_rotation_of_a_streamed_session(ust_env, relayd, tmp_path, buffers, live):
    """`ust rotate` on a session streamed to a relay, while two applications write: the relay
    writes each archive as lttng-relayd does (<session dir>/archives/<begin>-<end>-<index>/ust),
    each a trace babeltrace2 reads alone, together every event exactly once, in the same tree a
    local session rotated at the same moments writes; `ust rotate` prints the relay's path. A
    live viewer attached across the rotations goes on in each new chunk and gets every event."""
    env = ust_env
    local = os.path.join(env.out, "local")
    env.ust("create", "loc", "-o", local)
    env.ust("create", "net", "-U", relayd.net_url, *(["--live"] if live else []))
    for s in ("loc", "net"):
        env.ust("enable-channel", "c", "-s", s, "--subbuf-size", "64k", "--num-subbuf", "8", f"--buffers-{buffers}")
        env.ust("enable-event", "app:alpha", "-c", "c", "-s", s)
        env.ust("add-context", "-c", "c", "-t", "vpid", "-s", s)
    apps = [env.app(), env.app()]
    for app in apps:
        env.wait_registered(app.pid)
    env.ust("start", "loc")
    env.ust("start", "net")
    host = os.uname().nodename
    if live:
        wait_until(lambda: os.path.isdir(os.path.join(relayd.output, host)), what="the session on the relay")
        follower = subprocess.Popen([sys.executable, "-m", "ust.cli", "view", "--live",
                                     f"{relayd.live_url}/host/{host}/net"], env=env.env(UST_AGENT="0"),
                                    stdout=open(tmp_path / "follow.txt", "w"), stderr=subprocess.PIPE, text=True)
        bt2 = live_viewer(f"{relayd.live_url}/host/{host}/net", tmp_path / "bt2.txt")
        wait_until(lambda: attached_viewers(relayd) == 2, timeout=120, what="ust view --live and babeltrace2 attached")
    for app in apps:
        app.proc.stdin.write("loop app:alpha 20\n")  # writes forever, in bursts
        app.proc.stdin.flush()
    printed = []
    for target in (2000, 4000):
        for app in apps:
            _wait_at(app, target)
        env.ust("rotate", "loc")
        _, out, _ = env.ust("rotate", "net")
        m = re.fullmatch(r"Trace chunk archive for session net is now readable on the relay host "
                         r"\(net://\S+\) at (\S+)\n", out)
        assert m, out
        printed.append(m.group(1))
    for app in apps:
        _wait_at(app, 6000)
    _, out_loc, _ = env.ust("stop", "loc")
    _, out_net, _ = env.ust("stop", "net")
    for app in apps:
        app.proc.kill()
        app.proc.wait()
    env.ust("destroy", "loc")
    env.ust("destroy", "net")
    copy = session_dir(relayd, "net")
    archives = sorted(os.listdir(os.path.join(copy, "archives")), key=lambda a: int(a.rsplit("-", 1)[1]))
    assert [os.path.join(copy, "archives", a) for a in archives[:2]] == printed
    assert len(archives) == 3  # stop archived the last chunk

    def top(root):  # the session directory's entries, times left out
        return sorted(re.sub(r"\d{8}T\d{6}[+-]\d{4}", "T", d) for d in os.listdir(root))

    assert top(copy) == top(local)
    assert _tree(copy) == _tree(local)  # the same archives, the same files in each
    for root, stop_out in ((copy, out_net), (local, out_loc)):
        chunks = [_by_vpid(subprocess.run(["babeltrace2", os.path.join(root, "archives", a)], capture_output=True,
                                          text=True, check=True).stdout)
                  for a in sorted(os.listdir(os.path.join(root, "archives")), key=lambda a: int(a.rsplit("-", 1)[1]))]
        assert all(chunks)  # each archive alone is a trace with events
        every = [e for c in chunks for e in c]
        assert len(every) == len(set(every))  # none twice
        m = re.search(r"(\d+) events were discarded", stop_out)
        discarded = int(m.group(1)) if m else 0
        for app in apps:
            got = sorted(v for pid, v in every if pid == app.pid)
            assert got[-1] >= 6000 - 1
        assert sum(max(v for p, v in every if p == app.pid) + 1 for app in apps) - len(every) == discarded
    if live:
        recorded = sorted(e for a in archives for e in _by_vpid(subprocess.run(
            ["babeltrace2", os.path.join(copy, "archives", a)], capture_output=True, text=True, check=True).stdout))
        err = follower.communicate(timeout=300)[1]  # ust view --live follows the new chunks too
        assert follower.returncode == 0, err
        assert (tmp_path / "follow.txt").read_text().count("app:alpha") == len(recorded)
        err = bt2.communicate(timeout=300)[1]  # babeltrace2 follows the new chunks too, never on an older event
        assert bt2.returncode == 0, err
        assert sorted(_by_vpid((tmp_path / "bt2.txt").read_text())) == recorded


@needs_babeltrace2
def test_size_rotation_schedule_of_a_streamed_session(ust_env, relayd):
    """enable-rotation --size on a session streamed live: the session rotates by itself once its
    chunk holds SIZE bytes (what the consumer sent to the relay); the relay's archives hold every
    event exactly once."""
    env = ust_env
    env.ust("create", "r", "-U", relayd.net_url, "--live")
    env.ust("enable-channel", "c", "--subbuf-size", "64k", "--num-subbuf", "8")
    env.ust("enable-event", "app:alpha", "-c", "c")
    env.ust("enable-rotation", "--size", "128k")
    app = env.app()
    env.wait_registered(app.pid)
    env.ust("start")
    emitted = 0
    while not env.client().get_session("r")["rotation"]["archives"]:
        assert emitted < 2_000_000, "no rotation"
        app.send(f"emit app:alpha 500 {emitted}")
        emitted += 500
    _, out, _ = env.ust("stop")
    assert "discarded" not in out
    app.exit()
    archives = env.client().get_session("r")["rotation"]["archives"]
    assert len(archives) >= 2  # the size rotation(s), then stop's
    copy = session_dir(relayd, "r")
    assert all(os.path.dirname(a) == os.path.join(copy, "archives") for a in archives)  # the relay's paths
    got = sorted(v for a in archives for v in values(read_events(a)))
    assert got == list(range(emitted))
    env.ust("destroy")


def test_rotate_with_the_relay_down_is_one_line(ust_env, relayd):
    """`ust rotate` of a streamed session whose relay is gone: one line says the relay did not
    archive the chunk (the traces go on in the new chunk all the same); the daemons answer."""
    env = ust_env
    app = env.app()
    env.wait_registered(app.pid)
    env.ust("create", "r", "-U", relayd.net_url)
    env.ust("enable-event", "app:alpha")
    env.ust("start")
    app.send("emit app:alpha 10")
    relayd.kill()
    rc, out, err = env.ust("rotate", check=False)
    assert rc != 0 and err.count("\n") == 1 and "its relay did not archive the last one" in err, err
    _, out, _ = env.ust("status")
    env.ust("destroy")
    app.exit()


def test_a_replaced_consumer_resumes_the_same_relay_session(ust_env, relayd):
    """The consumer of a live streamed session is SIGKILLed; the session daemon replaces it. The new
    consumer resumes the session on the relay (the session daemon gives it the session's identity):
    the same relay session (same id: an attached viewer stays attached), the same stream files, every
    event there once. Before, the new process opened a second relay session beside the first."""
    import signal

    from ust.relay.viewer import LiveClient

    env = ust_env
    app = env.app()
    env.wait_registered(app.pid)
    env.ust("create", "s", "-U", relayd.net_url, "--live")
    env.ust("enable-event", "app:alpha")
    env.ust("start")
    app.send("emit app:alpha 100")
    host = os.uname().nodename
    wait_until(lambda: os.path.isdir(os.path.join(relayd.output, host)), what="the session on the relay")
    wait_until(lambda: len(read_events(session_dir(relayd, "s"))) == 100, timeout=120,
               what="the first events on the relay")
    v = LiveClient(relayd.address, relayd.live)
    v.create_session()
    [before] = [s for s in v.list_sessions() if s.name == "s"]
    status, _ = v.attach(before.id)
    c = env.client()
    old = c.ping()["consumer_pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: (c.ping()["consumer_pid"] or 0) not in (0, old), timeout=120, what="a new consumer")
    app.send("emit app:alpha 100 100")
    wait_until(lambda: len(read_events(session_dir(relayd, "s"))) == 200, timeout=120,
               what="the events written after the restart on the relay")
    [after] = [s for s in v.list_sessions() if s.name == "s"]  # one session, the same: the viewer is still on it
    assert (after.id, after.clients) == (before.id, 1)
    env.ust("destroy")
    assert values(read_events(session_dir(relayd, "s")), "app:alpha") == list(range(200))
    v.close()
    app.exit()


@needs_babeltrace2
def test_a_link_cut_at_a_rotations_switch_resumes_cleanly(ust_env, relayd, tmp_path):
    """The consumer's link to the relay is cut (both ends see the connections end) at `ust rotate`'s
    switch, just as the old chunk's first stream closes. The consumer closed the old streams while
    disconnected and, reconnected, never told the relay: they stayed open there (babeltrace2 following
    the session waited on them; the archive failed: "its relay did not archive the last one"). Now the
    rotation completes over the resumed link, the session goes on in its new chunk, babeltrace2
    follows it to its end, and the archives hold every event exactly once."""
    from relay_util import CuttingProxy

    env = ust_env
    proxy = CuttingProxy(relayd)
    try:
        app = env.app()
        env.wait_registered(app.pid)
        env.ust("create", "cut", "-U", proxy.net_url, "--live")
        env.ust("enable-event", "app:alpha")
        env.ust("start")
        app.send("emit app:alpha 100")
        host = os.uname().nodename
        wait_until(lambda: os.path.isdir(os.path.join(relayd.output, host)), what="the session on the relay")
        bt2 = live_viewer(f"{relayd.live_url}/host/{host}/cut", tmp_path / "bt2.txt")
        wait_until(lambda: (tmp_path / "bt2.txt").read_text().count("app:alpha") == 100, timeout=120,
                   what="babeltrace2 printing the first events")
        proxy.arm()
        _, out, _ = env.ust("rotate")
        assert proxy.cuts == 1
        assert "is now readable on the relay host" in out, out
        app.send("emit app:alpha 100 100")  # the new chunk, over the resumed link
        wait_until(lambda: (tmp_path / "bt2.txt").read_text().count("app:alpha") == 200, timeout=120,
                   what="babeltrace2 printing the events written after the cut rotation")
        env.ust("stop")
        env.ust("destroy")
        err = bt2.communicate(timeout=300)[1]
        assert bt2.returncode == 0, err
        copy = session_dir(relayd, "cut")
        archives = sorted(os.listdir(os.path.join(copy, "archives")), key=lambda a: int(a.rsplit("-", 1)[1]))
        assert len(archives) == 2  # the cut rotation's, then stop's
        got = [values(read_events(os.path.join(copy, "archives", a)), "app:alpha") for a in archives]
        assert got == [list(range(100)), list(range(100, 200))]
        assert sorted(int(v) for v in re.findall(r"\bv = (\d+)", (tmp_path / "bt2.txt").read_text())) == \
            list(range(200))
        app.exit()
    finally:
        proxy.close()


@needs_babeltrace2
def test_local_and_relay_traces_carry_lttng_packet_indexes(ust_env, relayd, tmp_path):
    """As lttng-consumerd and lttng-relayd, the consumer daemon (local traces) and the relay write
    LTTng's packet index beside each stream file (index/<file>.idx), which babeltrace2 reads instead
    of walking the packets: exactly the file's whole packets, also across a consumer SIGKILLed and
    replaced mid-session (the new one rebuilds each index from the file it carries on in) and
    tracefile rotation (one index per file, the oldest removed with its file). The indexes do not
    change what is read."""
    import shutil
    import signal

    from conftest import assert_packet_indexes

    env = ust_env
    local, rotated = os.path.join(env.out, "local"), os.path.join(env.out, "rotated")
    env.ust("create", "loc", "-o", local)
    env.ust("create", "rot", "-o", rotated)
    env.ust("create", "net", "-U", relayd.net_url, "--live")
    for s in ("loc", "net"):
        env.ust("enable-channel", "c", "-s", s, "--subbuf-size", "4k", "--num-subbuf", "16")
    env.ust("enable-channel", "c", "-s", "rot", "--subbuf-size", "4k", "--num-subbuf", "16",
            "--tracefile-size", "16k", "--tracefile-count", "3")
    for s in ("loc", "rot", "net"):
        env.ust("enable-event", "app:alpha", "-c", "c", "-s", s)
    app = env.app()
    env.wait_registered(app.pid)
    for s in ("loc", "rot", "net"):
        env.ust("start", s)
    app.send("emit app:alpha 1500")
    c = env.client()
    old = c.ping()["consumer_pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: (c.ping()["consumer_pid"] or 0) not in (0, old), timeout=120, what="a new consumer")
    app.send("emit app:alpha 1500 1500")
    for s in ("loc", "rot", "net"):
        env.ust("stop", s)
        env.ust("destroy", s)
    app.exit()
    relayd.stop()
    copy = session_dir(relayd, "net")
    assert assert_packet_indexes(local) >= 1
    assert assert_packet_indexes(copy) >= 1
    assert assert_packet_indexes(rotated) >= 3
    for trace in (local, copy):
        assert values(read_events(trace), "app:alpha") == list(range(3000))
        bare = tmp_path / os.path.basename(trace)
        shutil.copytree(trace, bare, ignore=shutil.ignore_patterns("index"))
        assert subprocess.run(["babeltrace2", trace], capture_output=True, text=True, check=True).stdout == \
            subprocess.run(["babeltrace2", str(bare)], capture_output=True, text=True, check=True).stdout
