"""ust-relayd end to end: a real relay, traces streamed to it, real babeltrace2
following them live on its LTTng live port."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import needs_babeltrace2
from daemon_util import wait_until
from relay_util import Relayd, files_of, live_viewer, make_trace
from ust.relay import viewer_abi as va
from ust.relay import wire
from ust.relay.sender import replay_trace, trace_streams
from ust.relay.viewer import LiveClient


@pytest.fixture(scope="module")
def local_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "trace"
    make_trace(path)
    return path


@pytest.fixture
def relayd(tmp_path):
    rundir = tmp_path / "run"
    rundir.mkdir()
    relay = Relayd(tmp_path / "relay-out", rundir)
    yield relay
    rc = relay.stop()
    assert rc == 0, relay.stderr
    assert not os.path.exists(relay.pid_file), "the pid file outlives the relay"


def session_dir(relay, host):
    [name] = [d for d in os.listdir(os.path.join(relay.output, host)) if not d.startswith(".")]
    return os.path.join(relay.output, host, name)


def clients_of(relay, name):
    viewer = LiveClient("127.0.0.1", relay.live)
    try:
        return sum(s.clients for s in viewer.list_sessions() if s.name == name)
    finally:
        viewer.close()


def rude_viewer(relay, session_id):
    """A viewer that asks for a packet and leaves without reading the answer."""
    v = LiveClient("127.0.0.1", relay.live)
    v.create_session()
    _, streams = v.attach(session_id)
    for s in streams:
        if not s.metadata:
            index = v.next_index(s.id)
            if index["status"] == va.INDEX_OK:
                v.sock.sendall(va.request(va.GET_PACKET, va.GET_PACKET_REQUEST.pack(
                    s.id, index["offset"], index["packet_size"] // 8)))
                break
    v.close()


def stream_with_viewers(relay, trace, tmp_path, viewers=1, host="hostA", name="demo", rude=False, lazy=False):
    """Create the session and its streams, attach ``viewers`` babeltrace2, then send
    the packets and end the session: the viewers' texts."""
    client = relay.client()
    client.create_session(name, host, live_timer_us=100000)
    procs = []

    def on_packet(n):
        if n == 0:  # every stream and the metadata are on the relay: attach the viewers now
            for i in range(viewers):
                procs.append(live_viewer(f"{relay.live_url}/host/{host}/{name}", tmp_path / f"live{i}.txt"))
            wait_until(lambda: clients_of(relay, name) == viewers, timeout=120, what="the viewers attached")
        if n == 5 and rude:
            rude_viewer(relay, client.session)

    sent = replay_trace(client, trace, on_packet=on_packet, lazy=lazy)
    client.close()
    assert sent > 10
    texts = []
    for i, p in enumerate(procs):
        err = p.communicate(timeout=300)[1]
        assert p.returncode == 0, err
        texts.append((tmp_path / f"live{i}.txt").read_text())
    return texts


@needs_babeltrace2
def test_babeltrace2_live_prints_what_it_prints_locally(relayd, local_trace, tmp_path):
    [live] = stream_with_viewers(relayd, local_trace, tmp_path)
    local = subprocess.run(["babeltrace2", str(local_trace)], capture_output=True, text=True, check=True).stdout
    assert live.count("relay:ev") == 9000
    assert live == local


@pytest.fixture(scope="module")
def per_pid_trace(tmp_path_factory):
    """Two processes' traces in one session directory, as a per-PID session writes them."""
    root = tmp_path_factory.mktemp("perpid") / "session"
    for i, name in enumerate(("app-101-20260101-000000", "app-202-20260101-000001")):
        make_trace(root / "tmp" / str(i))
        [trace_dir] = [d for d, _, files in os.walk(root / "tmp" / str(i)) if "metadata" in files]
        os.makedirs(root / "ust" / "pid", exist_ok=True)
        os.rename(trace_dir, root / "ust" / "pid" / name)
    import shutil

    shutil.rmtree(root / "tmp")
    return root


@needs_babeltrace2
def test_streams_and_processes_joining_a_live_session(relayd, per_pid_trace, tmp_path):
    """Per-PID traces whose streams appear while babeltrace2 follows (NEW_STREAM,
    GET_NEW_STREAMS, a second trace's metadata): it prints what it prints locally."""
    [live] = stream_with_viewers(relayd, per_pid_trace, tmp_path, lazy=True)
    local = subprocess.run(["babeltrace2", str(per_pid_trace)], capture_output=True, text=True, check=True).stdout
    assert live.count("relay:ev") == 2 * 9000
    assert live == local


@needs_babeltrace2
def test_relay_copy_is_byte_identical(relayd, local_trace, tmp_path):
    stream_with_viewers(relayd, local_trace, tmp_path, viewers=0)
    wait_until(lambda: not [s for s in LiveClient("127.0.0.1", relayd.live).list_sessions()],
               what="the session ended on the relay")
    relayd.stop()  # files synced and closed
    copy = files_of(session_dir(relayd, "hostA"), indexes=False)
    local = files_of(local_trace)
    assert copy.keys() == {k for k, v in local.items() if v}  # empty stream files are not streamed
    for name, data in copy.items():
        assert data == local[name], name


def _bytes_acked(sock) -> int:
    """What the peer's TCP acknowledged on ``sock`` (struct tcp_info: tcpi_bytes_acked,
    after 8 one-byte fields, 24 u32 and two u64)."""
    import socket
    import struct

    return struct.unpack_from("Q", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 120)[0]


def test_streams_spread_over_data_connections_arrive_whole(relayd, per_pid_trace):
    """Several data connections for one session (the relay receives each on a thread of
    its own): each stream keeps to one of them, so every file is the local one, byte
    for byte, whatever the order the connections are read in."""
    from ust.relay.sender import RelayClient

    client = RelayClient("127.0.0.1", relayd.control, relayd.data, data_connections=3)
    client.create_session("spread", "hostS", 0)
    replay_trace(client, per_pid_trace, beacons=False)  # two processes: two streams at least
    carried = [_bytes_acked(link) for link in client.data_links]
    client.close()
    assert sum(1 for n in carried if n > 4096) >= 2, carried  # the streams did take several connections
    wait_until(lambda: not [s for s in LiveClient("127.0.0.1", relayd.live).list_sessions()],
               what="the session ended on the relay")
    relayd.stop()
    copy = files_of(session_dir(relayd, "hostS"), indexes=False)
    local = files_of(per_pid_trace)
    assert copy.keys() == {k for k, v in local.items() if v}
    for name, data in copy.items():
        assert data == local[name], name


@needs_babeltrace2
def test_many_viewers_on_one_session(relayd, local_trace, tmp_path):
    """Four babeltrace2 at once (LTTng allows one), and one viewer leaving mid-reply."""
    texts = stream_with_viewers(relayd, local_trace, tmp_path, viewers=4, rude=True)
    local = subprocess.run(["babeltrace2", str(local_trace)], capture_output=True, text=True, check=True).stdout
    assert all(t == local for t in texts)


@needs_babeltrace2
def test_babeltrace2_lists_sessions_of_every_host(relayd):
    clients = []
    for host, name in (("hostA", "s1"), ("hostB", "s2")):
        c = relayd.client()
        c.create_session(name, host, live_timer_us=250000)
        clients.append(c)
    r = subprocess.run(["babeltrace2", "--input-format=lttng-live", relayd.live_url], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{relayd.live_url}/host/hostA/s1 (timer = 250000" in r.stdout
    assert f"{relayd.live_url}/host/hostB/s2 (timer = 250000" in r.stdout
    for c in clients:
        c.destroy()
        c.close()


def test_viewer_protocol_statuses(relayd, local_trace):
    """What babeltrace2 does not exercise: detach, unknown ids, not-live sessions, a
    viewer attaching before the streams exist gets them as new streams."""
    live = relayd.client()
    sid_live = live.create_session("live", "h", live_timer_us=100000)
    dead = relayd.client()
    sid_dead = dead.create_session("notlive", "h", live_timer_us=0)
    v = LiveClient("127.0.0.1", relayd.live)
    assert v.attach(sid_live)[0] == va.ATTACH_NO_SESSION  # CREATE_SESSION first
    assert v.create_session() == va.CREATE_SESSION_OK
    assert v.attach(sid_dead)[0] == va.ATTACH_NOT_LIVE
    assert v.attach(12345)[0] == va.ATTACH_UNK
    assert v.attach(sid_live, seek=7)[0] == va.ATTACH_SEEK_ERR
    status, streams = v.attach(sid_live)
    assert (status, streams) == (va.ATTACH_OK, [])
    assert v.new_streams(sid_live)[0] == va.NEW_STREAMS_NO_NEW
    live.add_stream(1, 0, "ust/uid/0/64-bit", "metadata", metadata=True)
    live.send_metadata(1, b"/* CTF 1.8 */\n\n")
    status, streams = v.new_streams(sid_live)
    assert status == va.NEW_STREAMS_OK and [s.metadata for s in streams] == [True]
    assert v.metadata(streams[0].id) == (va.METADATA_OK, b"/* CTF 1.8 */\n\n")
    assert v.metadata(streams[0].id)[0] == va.METADATA_NO_NEW
    assert v.next_index(streams[0].id)["status"] == va.INDEX_ERR  # not a data stream
    assert v.packet(999, 0, 10)[0] == va.PACKET_ERR
    assert v.detach(sid_live) == va.DETACH_OK
    assert v.detach(sid_live) == va.DETACH_UNK
    live.destroy()
    assert [s.name for s in v.list_sessions()] == ["notlive"]
    v.close()
    for c in (live, dead):
        c.close()


def test_daemonized_relay_pid_file_and_sigterm(tmp_path):
    import signal
    import sys

    from daemon_util import SRC

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = dict(os.environ, PYTHONPATH=SRC, UST_HOME=str(home))
    r = subprocess.run([sys.executable, "-m", "ust.relay.relayd", "-d", "-C", "tcp://127.0.0.1:0", "-D",
                        "tcp://127.0.0.1:0", "-L", "tcp://127.0.0.1:0", "-o", str(tmp_path / "out")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pid_file = home / "relayd.pid"
    pid = wait_until(lambda: pid_file.exists() and int(pid_file.read_text() or 0), what="the pid file")
    live = int(r.stdout.split()[6].rsplit(":", 1)[1])
    v = LiveClient("127.0.0.1", live)  # it serves
    assert v.list_sessions() == []
    v.close()
    os.kill(pid, signal.SIGTERM)

    def gone():
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

    wait_until(gone, what="the relay to stop on SIGTERM")
    assert not pid_file.exists()


def test_bad_options_are_one_line(tmp_path):
    import sys

    from daemon_util import SRC

    env = dict(os.environ, PYTHONPATH=SRC, UST_HOME=str(tmp_path))
    for args in (["-C", "udp://x:1"], ["-L", "tcp://127.0.0.1:99999"]):
        r = subprocess.run([sys.executable, "-m", "ust.relay.relayd", *args, "-o", str(tmp_path / "o")],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "ust-relayd: error:" in r.stderr, r.stderr


@needs_babeltrace2
def test_rewritten_metadata_reaches_viewers_as_an_append(relayd, tmp_path):
    """A consumer rewrites the metadata whole (a new channel adds a stream block
    before the events); a live viewer gets only what is new, and the log it
    reads parses."""
    from ust.ctf import metadata as md
    from ust.instrument.fields import EventDecl, Field, FieldType

    info = md.TraceInfo(uuid=bytes(16), clock_offset_ns=0)
    ev = EventDecl("a:one", (Field("n", FieldType("int", 32)),), 13)
    ev2 = EventDecl("a:two", (Field("s", FieldType("string")),), 13)
    v1 = md.metadata_text(info, [md.StreamClass(0, "c0")], [(0, 0, ev)]).encode()
    v2 = md.metadata_text(info, [md.StreamClass(0, "c0"), md.StreamClass(1, "c1", ("vtid",))],
                          [(0, 0, ev), (1, 1, ev2)]).encode()
    assert not v2.startswith(v1)
    client = relayd.client()
    client.create_session("m", "h", 100000)
    client.add_stream(1, 0, "ust", "metadata", metadata=True)
    client.send_metadata(1, v1)
    v = LiveClient("127.0.0.1", relayd.live)
    v.create_session()
    _, [meta] = v.attach(client.session)
    assert v.metadata(meta.id) == (va.METADATA_OK, v1)
    client.send_metadata(1, v2)
    status, delta = v.metadata(meta.id)
    assert status == va.METADATA_OK and b"id = 1;" in delta and b"a:two" in delta and b"a:one" not in delta
    log = tmp_path / "viewer"
    log.mkdir()
    (log / "metadata").write_bytes(v1 + delta)
    r = subprocess.run(["babeltrace2", str(log)], capture_output=True, text=True)  # parses it, no packets
    assert r.returncode == 0, r.stderr
    # the file on the relay is the producer's text, as it wrote it locally
    with open(os.path.join(session_dir(relayd, "h"), "ust", "metadata"), "rb") as f:
        assert f.read() == v2
    v.close()
    client.close()


@pytest.mark.parametrize("layout", ["per-uid", "per-pid-joining"])
def test_ust_view_live_prints_what_ust_view_prints(relayd, local_trace, per_pid_trace, tmp_path, layout):
    """ust's own follower: started before the session has all its packets (per-PID:
    nor all its streams and processes), it prints while the session streams, as
    `ust view` prints the local trace, and ends when the session is destroyed."""
    import sys

    from daemon_util import SRC

    from ust.ctf.writer import packet_spans
    from ust.relay.sender import trace_streams

    trace, lazy = (local_trace, False) if layout == "per-uid" else (per_pid_trace, True)
    client = relayd.client()
    client.create_session("followed", "hostF", live_timer_us=100000)
    env = dict(os.environ, PYTHONPATH=SRC, UST_AGENT="0")
    proc = []
    total = 0
    for _rel, directory, names in trace_streams(trace):
        for name in names:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            total += len(list(packet_spans(fd, os.fstat(fd).st_size)))
            os.close(fd)
    half = total // 2

    def on_packet(n):
        if n == 0:
            proc.append(subprocess.Popen(
                [sys.executable, "-m", "ust.cli", "view", "--live", f"{relayd.live_url}/host/hostF/followed"],
                env=env, stdout=open(tmp_path / "live.txt", "w"), stderr=subprocess.PIPE, text=True))
            wait_until(lambda: clients_of(relayd, "followed") == 1, timeout=120, what="ust view attached")
        if n == half:  # live: events are printed while the session still streams
            wait_until(lambda: (tmp_path / "live.txt").stat().st_size > 0, timeout=120, what="live output")

    replay_trace(client, trace, on_packet=on_packet, lazy=lazy)
    client.close()
    err = proc[0].communicate(timeout=300)[1]
    assert proc[0].returncode == 0, err
    local = subprocess.run([sys.executable, "-m", "ust.cli", "view", str(trace)], env=env,
                           capture_output=True, text=True, check=True).stdout
    live = (tmp_path / "live.txt").read_text()
    assert live.count("relay:ev") == (9000 if layout == "per-uid" else 18000)
    assert live == local


def test_ust_view_live_unreachable_relay_is_one_line(tmp_path):
    import sys

    from daemon_util import SRC

    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = subprocess.run([sys.executable, "-m", "ust.cli", "view", "--live", f"net://127.0.0.1:{port}/host/h/s"],
                       env=dict(os.environ, PYTHONPATH=SRC, UST_AGENT="0", UST_HOME=str(tmp_path)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "cannot reach the relay" in r.stderr, r.stderr


def test_ended_sessions_hold_no_descriptors(relayd, local_trace, tmp_path):
    """A relay runs for months: the files of ended sessions are closed."""
    fds = lambda: len(os.listdir(f"/proc/{relayd.proc.pid}/fd"))  # noqa: E731
    baseline = fds()
    for i in range(3):
        client = relayd.client()
        client.create_session(f"s{i}", "h", live_timer_us=100000)
        replay_trace(client, local_trace)
        client.close()
    wait_until(lambda: fds() <= baseline, what="the relay's descriptors back to their baseline")


def test_sigterm_with_a_packet_half_received_stops_cleanly(relayd, local_trace):
    """SIGTERM while a data connection is in the middle of a packet, a viewer in the
    middle of a command and a control connection idle: the relay exits 0 at once (not
    after the 60 s mid-frame deadline), its pid file gone, and the stream's file ends on
    the last whole packet."""
    from ust.ctf.writer import packet_spans

    candidates = []
    for rel, directory, names in trace_streams(local_trace):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                data = f.read()
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                spans = list(packet_spans(fd, len(data)))
            finally:
                os.close(fd)
            candidates.append((len(spans), rel, name, data, spans))
    _, rel, name, data, spans = max(candidates, key=lambda c: c[0])
    assert len(spans) >= 2
    names = [name]
    client = relayd.client()
    client.create_session("halfway", "h", live_timer_us=100000)
    client.add_stream(1, 0, rel, names[0])
    (o1, l1), (o2, l2) = spans[:2]
    client.send_packet(1, data[o1:o1 + l1])
    second = data[o2:o2 + l2]
    client.data.sendall(wire.packet_header(1, l1, wire.packet_index(second)))
    client.data.sendall(second[:len(second) // 2])  # ... and the rest never comes
    out = os.path.join(session_dir(relayd, "h"), *rel.split("/"), names[0])
    wait_until(lambda: os.path.getsize(out) >= l1, what="the first packet on the relay")
    viewer = LiveClient("127.0.0.1", relayd.live)
    viewer.sock.sendall(bytes(6))  # a third of a command header
    assert relayd.stop() == 0, relayd.stderr
    assert not os.path.exists(relayd.pid_file)
    with open(out, "rb") as f:
        assert f.read() == data[o1:o1 + l1]
    viewer.close()
    client.close()


class ReconnectingClient:
    """A sender whose connections break mid-session and that comes back as a consumer does
    (ust.relay.output.RelaySession): RESUME with its identity, its streams and metadata told
    again, each stream going on where the relay's file ends."""

    def __init__(self, relay):
        self.relay = relay
        self.identity = os.urandom(16)
        self.streams = {}  # handle -> add_stream's arguments
        self.metadata = {}
        self.client = relay.client()

    def create_session(self, name, host, live_timer_us):
        self.args = (name, host, live_timer_us)
        return self.client.create_session(name, host, live_timer_us, identity=self.identity)

    def add_stream(self, handle, *args, **kw):
        self.streams[handle] = (args, kw)
        self.client.add_stream(handle, *args, **kw)

    def send_metadata(self, handle, text):
        self.metadata[handle] = text
        self.client.send_metadata(handle, text)

    def reconnect(self):
        """The connections break (no DESTROY_SESSION), a new one resumes the session. (Once
        what was sent arrived: this client does not send lost packets again, as a consumer's
        RelaySession does; test_relay_netns.py::test_network_cut_while_streaming covers that.)"""
        name, host, _ = self.args

        def arrived():
            root = session_dir(self.relay, host)
            return all(os.path.getsize(os.path.join(root, *args[1].split("/"), args[2])) >= self.client.offsets[h]
                       for h, (args, kw) in self.streams.items() if not kw.get("metadata"))

        wait_until(arrived, timeout=120, what="the packets sent on the old connection on the relay")
        self.client.close()
        self.client = self.relay.client()
        name, host, timer = self.args
        self.client.create_session(name, host, timer, identity=self.identity, resume=True)
        for handle, (args, kw) in self.streams.items():
            self.client.add_stream(handle, *args, **kw)
            if handle in self.metadata:
                self.client.send_metadata(handle, self.metadata[handle])

    def __getattr__(self, name):  # send_packet, beacon, close_stream, destroy, close, session
        return getattr(self.client, name)


@needs_babeltrace2
def test_resumed_session_is_the_same_session_for_viewers(relayd, local_trace, tmp_path):
    """A sender's connections break twice mid-session and it resumes (same relay process): a
    viewer attached throughout follows one session (same id, one listed) and prints exactly what
    babeltrace2 prints for the local trace; one session directory."""
    from ust.ctf.writer import packet_spans
    from ust.relay.sender import trace_streams

    total = 0
    for _, directory, names in trace_streams(local_trace):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                total += len(list(packet_spans(f.fileno(), os.fstat(f.fileno()).st_size)))
    client = ReconnectingClient(relayd)
    sid = client.create_session("demo", "hostA", live_timer_us=100000)
    procs = []
    listed = []

    def on_packet(n):
        if n == 0:
            procs.append(live_viewer(f"{relayd.live_url}/host/hostA/demo", tmp_path / "live.txt"))
            wait_until(lambda: clients_of(relayd, "demo") == 1, timeout=120, what="the viewer attached")
        if n in (total // 3, 2 * total // 3):
            client.reconnect()
            v = LiveClient("127.0.0.1", relayd.live)
            listed.append([(s.id, s.name, s.clients) for s in v.list_sessions()])
            v.close()

    replay_trace(client, local_trace, on_packet=on_packet)
    client.close()
    err = procs[0].communicate(timeout=300)[1]
    assert procs[0].returncode == 0, err
    assert listed == [[(sid, "demo", 1)]] * 2  # the same session, still attached
    local = subprocess.run(["babeltrace2", str(local_trace)], capture_output=True, text=True, check=True).stdout
    assert (tmp_path / "live.txt").read_text() == local
    copy = session_dir(relayd, "hostA")
    assert {k: v for k, v in files_of(copy, indexes=False).items()} == {k: v for k, v in files_of(local_trace).items() if v}


def test_a_sender_that_does_not_come_back_ends_its_session(tmp_path):
    """A consumer's session (it has an identity, so it may resume) whose connections broke
    without DESTROY_SESSION stays listed for the resume grace period, then ends; a sender
    without an identity ends its session at once."""
    rundir = tmp_path / "run"
    rundir.mkdir()
    relay = Relayd(tmp_path / "out", rundir, env={"UST_RELAY_RESUME_GRACE": "15"})
    try:
        for identity, name in ((os.urandom(16), "consumer"), (bytes(16), "plain")):
            c = relay.client()
            c.create_session(name, "h", 100000, identity=identity)
            c.add_stream(1, 0, "ust", "metadata", metadata=True)
            c.send_metadata(1, b"/* CTF 1.8 */\n\n")
            assert clients_of(relay, name) == 0 and _listed(relay, name)
            c.close()  # no DESTROY_SESSION
        wait_until(lambda: not _listed(relay, "plain"), what="the plain sender's session ended")
        assert _listed(relay, "consumer")  # waiting for its sender (15 s)
        wait_until(lambda: not _listed(relay, "consumer"), timeout=60, what="the grace period's end")
    finally:
        assert relay.stop() == 0, relay.stderr


def _listed(relay, name) -> bool:
    v = LiveClient("127.0.0.1", relay.live)
    try:
        return any(s.name == name for s in v.list_sessions())
    finally:
        v.close()


def test_a_beacon_never_lets_viewers_past_a_packet_still_on_its_way(relayd, local_trace):
    """Packets and beacons travel on two connections: a beacon ("nothing in this stream until T")
    that arrives before a packet sent ahead of it (or lost in a broken connection and sent again
    after a RESUME) must not let a viewer move past that packet (babeltrace2 then fails: a message
    older than one it printed). The beacon says where the stream's file ends once the packets sent
    before it arrived; the relay applies it only from then on."""
    from ust.ctf.writer import PACKET_HEADER_SIZE, PacketIndex, packet_spans
    from ust.relay import wire
    from ust.relay.sender import trace_streams

    [(rel, directory, names)] = trace_streams(local_trace)
    name = next(n for n in names if os.path.getsize(os.path.join(directory, n)))
    with open(os.path.join(directory, name), "rb") as f:
        offset, length = next(packet_spans(f.fileno(), os.fstat(f.fileno()).st_size))
        packet = os.pread(f.fileno(), length, offset)
    with open(os.path.join(directory, "metadata"), "rb") as f:
        metadata = f.read()
    index = PacketIndex.of(packet[:PACKET_HEADER_SIZE])
    client = relayd.client()
    sid = client.create_session("race", "hostA", live_timer_us=100000)
    client.add_stream(1, 0, "ust", "metadata", metadata=True)
    client.send_metadata(1, metadata)
    client.add_stream(2, index.stream_id, "ust", name)
    v = LiveClient("127.0.0.1", relayd.live)
    v.create_session()
    _, streams = v.attach(sid)
    [data] = [s for s in streams if not s.metadata]
    client.offsets[2] += len(packet)  # the packet is on its way (sent, not arrived)...
    client.beacon(2, index.timestamp_end + 1)  # ...and the beacon after it arrives first
    assert v.next_index(data.id)["status"] == va.INDEX_RETRY  # not INACTIVE: the packet comes first
    client.data.sendall(wire.packet_header(2, 0, wire.packet_index(packet)) + packet)
    got = wait_until(lambda: (lambda i: i if i["status"] != va.INDEX_RETRY else None)(v.next_index(data.id)),
                     what="the packet on the relay")
    assert got["status"] == va.INDEX_OK and got["packet_size"] == 8 * len(packet)
    assert v.next_index(data.id)["status"] == va.INDEX_INACTIVE  # the beacon, once its packets are in
    v.close()
    client.close()


# A writer process for the live barrier test: ring:u32 events 0..n-1 into the buffer whose descriptor it
# is given (UST_TEST_PAUSE_AFTER_RESERVE="1:0:opening" stops it between its first clock and reservation).
PAUSED_WRITER = r"""
import sys, ust
from ust._ring import Buffer, Channel
tp = ust.tracepoint("ring:u32", {"v": ust.uint32})
tp.attach(Channel([Buffer.attach(int(sys.argv[1]))]), 0)
for i in range(int(sys.argv[2])):
    tp(i)
"""


def _streamed_trace(relayd, name):
    """A trace of one channel of one ring buffer, streamed live to ``relayd`` through the consumer core
    (RelaySession, Trace), and a viewer attached to it: (trace, channel, buffer, viewer, data stream id)."""
    import time

    from ust._ring import Buffer
    from ust.consumer.trace import ChannelSpec, Trace, trace_info
    from ust.relay.output import RelaySession, RelayTraceOutput

    uuid = bytes(range(16))
    link = RelaySession("127.0.0.1", relayd.control, relayd.data, name, "hostA", 100000, time.time())
    trace = Trace("t", RelayTraceOutput(link, "ust/uid/0/64-bit"), trace_info(uuid, 0, {}))
    buf = Buffer.create(4096, 4, stream_id=0, uuid=uuid)
    ch = trace.add_channel(ChannelSpec("c", 0, 4096, 4, live_timer=0.1), -1, sources=[buf])
    v = LiveClient("127.0.0.1", relayd.live)
    v.create_session()
    [sid] = [s.id for s in v.list_sessions() if s.name == name]
    _, streams = v.attach(sid)
    [data] = [s.id for s in streams if not s.metadata]
    return trace, ch, buf, v, data


def _next_packet(v, stream_id, seen_beacons):
    """The next packet's index, recording the times of the INACTIVE answers (beacons) met on the way."""
    def ask():
        i = v.next_index(stream_id)
        if i["status"] == va.INDEX_INACTIVE:
            seen_beacons.append(i["timestamp_end"])
        return i if i["status"] == va.INDEX_OK else None
    return wait_until(ask, timeout=60, what="a packet on the relay")


def test_a_live_beacon_never_passes_a_writer_between_its_clock_and_its_reservation(relayd):
    """The live barrier: a writer reads its clock to open a packet in an idle stream, and is delayed
    before its reservation (preempted, stopped); the live timer fires meanwhile. The timer took its
    beacon's time from the clock, so the beacon ("nothing in this stream until T") came after the
    event the writer then reserved: a viewer that moved past T met an older event (babeltrace2 stops:
    "timestamp is less than the last returned"). The beacon now comes from the ring: none while a
    writer is opening a packet, and every event reserved later is at or after the beacon's time."""
    import select
    import signal

    from ust.consumer.drain import _live_tick, drain_stream

    trace, ch, buf, v, data = _streamed_trace(relayd, "barrier")
    beacons: list[int] = []
    p = subprocess.Popen([sys.executable, "-c", PAUSED_WRITER, str(buf.fd), "3"], pass_fds=[buf.fd],
                         env=dict(os.environ, UST_TEST_PAUSE_AFTER_RESERVE="1:0:opening"),
                         stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([p.stderr], [], [], 120)
        assert ready and "paused before opening" in p.stderr.readline()
        _, status = os.waitpid(p.pid, os.WUNTRACED)  # stopped (SIGSTOP) inside its window
        assert os.WIFSTOPPED(status)
        _live_tick(ch)  # the stream is idle, its writer between its clock and its reservation
        first = v.next_index(data)
        if first["status"] == va.INDEX_INACTIVE:
            beacons.append(first["timestamp_end"])
        os.kill(p.pid, signal.SIGCONT)
        assert p.wait(timeout=120) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    buf.flush()
    [(src, out)] = ch.streams()
    drain_stream(src, out)
    packet = _next_packet(v, data, beacons)
    assert all(b <= packet["timestamp_begin"] for b in beacons), \
        f"a beacon at {max(beacons)} let viewers past an event at {packet['timestamp_begin']}"
    _live_tick(ch)  # the writer is done and its packet read: the stream is idle, a beacon is given
    later = wait_until(lambda: (lambda i: i if i["status"] == va.INDEX_INACTIVE else None)(v.next_index(data)),
                       what="a beacon once the writer is done")
    assert later["timestamp_end"] >= packet["timestamp_end"]
    v.close()
    trace.close()


def test_a_rotation_tells_viewers_of_the_new_chunk_with_the_old_chunks_last_packets(relayd):
    """A rotation (Trace.switch_output) of a live trace: a viewer must know the new chunk's streams
    before it reads the old streams' last packets (the relay flags NEW_STREAM on their index), or it
    may print a stream flushed late past the first events of another CPU's new stream, which it was
    not told about yet (babeltrace2 stops on an older message). The new streams and their metadata
    are now made before the old streams end: the viewer here asks for the old stream's last packet
    the moment it was sent, inside the rotation."""
    import ust
    from ust._ring import Channel
    from ust.relay.output import RelayStreamOutput, RelayTraceOutput

    trace, ch, buf, v, data = _streamed_trace(relayd, "order")
    told = []

    class AskedAtOnce(RelayStreamOutput):  # the real output; a viewer asks the relay as each packet leaves
        def write_packet(self, packet, index):
            super().write_packet(packet, index)
            told.append(wait_until(lambda: (lambda i: i if i["status"] == va.INDEX_OK else None)(
                v.next_index(data)), what="the packet on the relay"))

    ch.outputs[0].__class__ = AskedAtOnce
    tp = ust.tracepoint("relay:order", {"v": ust.uint32})
    channel = Channel([buf])
    tp.attach(channel, 0)
    tp(1)  # a partial packet: the rotation's flush closes it, its last packet in the old chunk
    tp.detach(channel)
    trace.switch_output(RelayTraceOutput(trace.output.link, "chunk-1/ust/uid/0/64-bit"))
    [index] = told
    assert index["flags"] & va.FLAG_NEW_STREAM, "the old chunk's last packet was read before the new chunk was told"
    v.close()
    trace.close()


def test_a_rotation_reconnects_at_once_a_link_that_broke_a_moment_ago(relayd):
    """Under load a relay's reply may come after the link's 2 s timeout: the link breaks and is
    tried again at most once a second (sparing the drain engine). A rotation in that second
    failed at once ("relay unreachable"), its old streams never closed on the relay. The consumer
    now reconnects a broken link at once before it switches (RelaySession.connect_now): the same
    relay session, resumed."""
    trace, ch, buf, v, data = _streamed_trace(relayd, "again")
    link = trace.output.link
    sessions = [s.id for s in v.list_sessions() if s.name == "again"]
    link._broken(OSError("timed out"))  # what a reply too slow does (ust.relay.output)
    with pytest.raises(OSError):
        link.call(lambda c: None)  # within the retry period: not tried
    link.connect_now()
    assert link.client is not None and link.connections == 2
    assert [s.id for s in v.list_sessions() if s.name == "again"] == sessions  # resumed, not a new one
    v.close()
    trace.close()


def _break_link(link):
    """The link's connections cut from the consumer's side (the relay sees them end, as when a
    network or a relay drops them): what the consumer sends next fails."""
    import socket

    for s in (link.client.control, *link.client.data_links):
        s.shutdown(socket.SHUT_RDWR)


def test_a_link_broken_during_a_rotations_switch_ends_the_old_streams_on_the_relay(relayd, tmp_path):
    """The link breaks inside Trace.switch_output, after the old chunk's last packet, before its
    close. The consumer closed its old streams while disconnected and, reconnected, told the relay
    only its open streams: the old chunk's streams stayed open on the relay for good (a viewer got
    RETRY/INACTIVE forever on them and could not go past their last beacon; the archive waited 25 s
    for them and failed). Now a reconnected link tells the relay the closes it missed (the stream
    added again, its kept packets sent again, then closed), and the rotation's archive reconnects at
    once: the viewer sees the old stream end, the chunk is archived whole."""
    import ust
    from ust._ring import Channel
    from ust.relay.output import RelayStreamOutput, RelayTraceOutput

    trace, ch, buf, v, data = _streamed_trace(relayd, "cut")
    link = trace.output.link

    class CutBeforeClose(RelayStreamOutput):  # the real output; the link breaks before the close is sent
        def close(self):
            _break_link(self.link)
            super().close()

    old = ch.outputs[0]
    old.__class__ = CutBeforeClose
    tp = ust.tracepoint("relay:cut", {"v": ust.uint32})
    channel = Channel([buf])
    tp.attach(channel, 0)
    tp(7)  # the old chunk's last packet: sent by the switch, then the link breaks
    trace.switch_output(RelayTraceOutput(link, "chunk-1/ust/uid/0/64-bit"))
    archive = link.archive_chunk("", "first")  # as the consumer's rotate does: at once, not in a second
    assert link.connections == 2
    statuses = []

    def old_stream_ended():
        i = v.next_index(data)
        statuses.append(i["status"])
        return i["status"] == va.INDEX_HUP

    wait_until(old_stream_ended, timeout=60, what="the old chunk's stream ending for the viewer")
    assert va.INDEX_OK in statuses  # (its packet was read first)
    archived = os.path.join(archive, "ust", "uid", "0", "64-bit", old.name)
    assert old.packets >= 1 and os.path.getsize(archived) == old.bytes_written  # every packet it sent
    tp(8)  # the new chunk goes on over the resumed link
    tp.detach(channel)
    trace.flush(sync=False)
    v.close()
    trace.close()


def test_streams_a_resuming_sender_does_not_add_again_end_at_the_archive(relayd, local_trace):
    """The relay's side of a link lost during a rotation: a sender (a consumer replaced, or one of an
    earlier version) takes its session over (RESUME) without adding again a stream of the finished
    chunk that its lost connection had open. Nothing can write that stream any more (the old
    connections were shut down at the take-over), but the relay kept it open: the archive waited 25 s
    for it and failed, a viewer got RETRY/INACTIVE on it for good. It now ends at the archive with the
    packets it has: the archive succeeds at once and the viewer sees the stream end."""
    from ust.ctf.writer import packet_spans

    [(_, directory, names)] = trace_streams(local_trace)
    name = next(n for n in names if os.path.getsize(os.path.join(directory, n)))

    with open(os.path.join(directory, name), "rb") as f:
        offset, length = next(iter(packet_spans(f.fileno(), os.fstat(f.fileno()).st_size)))
        f.seek(offset)
        packet = f.read(length)
    with open(os.path.join(directory, "metadata"), "rb") as f:
        metadata = f.read()
    identity = os.urandom(wire.IDENTITY_SIZE)
    first = relayd.client()
    sid = first.create_session("orphan", "hostA", live_timer_us=100000, identity=identity)
    first.add_stream(1, 0, "ust", "metadata", metadata=True)
    first.send_metadata(1, metadata)
    first.add_stream(2, wire.packet_index(packet).stream_id, "ust", name)
    first.send_packet(2, packet)
    v = LiveClient("127.0.0.1", relayd.live)
    v.create_session()
    _, streams = v.attach(sid)
    [data] = [s.id for s in streams if not s.metadata]
    wait_until(lambda: v.next_index(data)["status"] == va.INDEX_OK, what="the packet on the relay")
    first.close()  # the link is lost with the stream open
    second = relayd.client()
    assert second.create_session("orphan", "hostA", live_timer_us=100000, identity=identity, resume=True) == sid
    second.add_stream(3, 0, "chunk-1/ust", "metadata", metadata=True)  # the new chunk only
    second.send_metadata(3, metadata)
    archive = second.archive_chunk("", "first", timeout=60)
    assert wait_until(lambda: v.next_index(data)["status"] == va.INDEX_HUP, what="the stream's end")
    assert os.path.getsize(os.path.join(archive, "ust", name)) == len(packet)
    second.destroy()
    second.close()
    v.close()
