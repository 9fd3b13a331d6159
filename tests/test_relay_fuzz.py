"""Hostile input on the relay's three ports: names that try to leave the output
directory, symbolic links planted in it, random and mutated frames, viewers
that vanish mid-reply. Each gets an error and a closed connection; the relay
goes on serving everybody else."""

from __future__ import annotations

import os
import random
import resource
import socket
import struct

import pytest

from daemon_util import wait_until
from relay_util import Relayd
from ust.relay import viewer_abi as va
from ust.relay import wire
from ust.relay.sender import RelayClient
from ust.relay.viewer import LiveClient


@pytest.fixture
def relayd(tmp_path):
    rundir = tmp_path / "run"
    rundir.mkdir()
    relay = Relayd(tmp_path / "out", rundir)
    yield relay
    assert relay.alive(), "the relay died"
    assert relay.stop() == 0, relay.stderr


def call(sock, frame):
    """(status, text) of a control request."""
    return call3(sock, frame)[::2]


def call3(sock, frame):
    """(status, value, rest) of a control request."""
    sock.sendall(frame)
    _, status, value, rest = wire.decode(*wire.recv_frame(sock))
    return status, value, rest


def all_paths(root):
    out = set()
    for d, dirs, files in os.walk(root):
        out.update(os.path.join(d, n) for n in dirs + files)
    return out


HOSTILE = ["..", ".", "../x", "a/b", "/etc", "x\0y", "", "é" * 10, "a" * 300, ".hidden", "a\nb", "a b"]
HOSTILE_PATHS = ["../../etc", "/abs", "a//b", "a/../b", "a/" * 9 + "a", "ust/\0", "ust/..", "."]


def outside(tmp_path, relayd):
    return {p for p in all_paths(tmp_path) if not p.startswith((relayd.output, str(tmp_path / "run")))}


def test_hostile_names_write_nothing_outside(relayd, tmp_path):
    before = outside(tmp_path, relayd)
    for bad in HOSTILE:
        for name, host in ((bad, "h"), ("s", bad)):
            s = socket.create_connection(("127.0.0.1", relayd.control))
            status, text = call(s, wire.create_session(name, host, 1, 1))
            assert status == wire.STATUS_ERROR and text, (name, host)
            s.close()
    cases = [(p, "c_0") for p in HOSTILE_PATHS] + [("ust", f) for f in ("..", "a/b", ".x", "", "metadata", "index")]
    for path, file_name in cases:
        s = socket.create_connection(("127.0.0.1", relayd.control))
        status, sid, _ = call3(s, wire.create_session("ok", "h", 1, 1))
        assert status == wire.STATUS_OK
        status, text = call(s, wire.add_stream(sid, 7, 0, wire.KIND_DATA, path, file_name))
        assert status == wire.STATUS_ERROR, (path, file_name)
        s.close()
    assert outside(tmp_path, relayd) == before
    real_out = os.path.realpath(relayd.output) + os.sep
    for p in all_paths(relayd.output):
        assert os.path.realpath(p).startswith(real_out), p
    assert relayd.alive()


def test_hostile_archive_names_are_refused(relayd, tmp_path):
    """A rotation's chunk and archive names (ARCHIVE_CHUNK) are single names in the session's
    directory: anything else is a one-line error, the connection is closed, nothing is written
    outside the output directory (nor any archive made)."""
    before = outside(tmp_path, relayd)
    for chunk, archive in [(bad, "a-0") for bad in HOSTILE if bad] + [("", bad) for bad in HOSTILE]:
        s = socket.create_connection(("127.0.0.1", relayd.control))
        status, sid, _ = call3(s, wire.create_session("ok", "h", 1, 1))
        assert status == wire.STATUS_OK
        status, text = call(s, wire.archive_chunk(sid, chunk, archive))
        assert status == wire.STATUS_ERROR and text and b"\n" not in text, (chunk, archive)
        assert _closed(s)
        s.close()
    assert outside(tmp_path, relayd) == before
    assert not [p for p in all_paths(relayd.output) if "archives" in p]
    # a valid one, for a session with nothing in that chunk: an empty archive, as lttng makes
    s = socket.create_connection(("127.0.0.1", relayd.control))
    status, sid, _ = call3(s, wire.create_session("ok", "h", 1, 1))
    status, value, path = call3(s, wire.archive_chunk(sid, "", "a-0"))
    assert status == wire.STATUS_OK and os.path.isdir(path) and path.decode().startswith(relayd.output)
    s.close()


def test_symlink_planted_in_output_is_refused(relayd, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.makedirs(relayd.output, exist_ok=True)
    os.symlink(target, os.path.join(relayd.output, "evil"))
    s = socket.create_connection(("127.0.0.1", relayd.control))
    status, text = call(s, wire.create_session("s", "evil", 1, 1))
    assert status == wire.STATUS_ERROR and b"symbolic link" in text
    assert os.listdir(target) == []
    # the same connection (a refusal, not a protocol error) and the relay go on
    status, _ = call(s, wire.create_session("s", "good", 1, 1))
    assert status == wire.STATUS_OK
    s.close()


def test_packets_that_lie_are_refused(relayd):
    client = relayd.client()
    client.create_session("s", "h", 100000)
    client.add_stream(1, 0, "ust", "metadata", metadata=True)
    client.add_stream(2, 0, "ust", "c_0")
    # a packet header and context as ring.h lays them out (magic, uuid, stream id, instance,
    # begin, end, content and packet size in bits, seq, discarded, cpu)
    head = struct.pack("<I16sIQQQQQQQI", 0xC1FC1FC1, b"\0" * 16, 0, 0, 10, 20, 8 * 100, 8 * 128, 0, 0, 0)
    good = head + bytes(128 - len(head))
    client.send_packet(2, good)
    bad = bytearray(good)
    struct.pack_into("<Q", bad, 48, 8 * 4096)  # packet_size beyond the bytes sent
    with pytest.raises(wire.WireError):
        client.send_packet(2, bytes(bad))  # checked by the sender's own encoder too
    # sent raw: wrong offset (a gap in the file)
    client.data.sendall(wire.packet_header(2, 999, wire.packet_index(good)) + good)
    wait_until(lambda: _closed(client.data), what="the data connection closed")
    v = LiveClient("127.0.0.1", relayd.live)
    assert v.create_session() == va.CREATE_SESSION_OK
    client.send_metadata(1, b"/* CTF 1.8 */\n\n")  # (a viewer is told of a trace's streams once it has metadata)
    status, streams = v.attach(client.session)
    data = [s for s in streams if not s.metadata][0]
    assert v.next_index(data.id)["packet_size"] == 8 * 128  # the good packet, nothing else
    assert v.next_index(data.id)["status"] == va.INDEX_RETRY
    v.close()
    client.close()


def _tiny_packet() -> bytes:
    """A whole 128-byte packet: its header and context as ring.h lays them out."""
    head = struct.pack("<I16sIQQQQQQQI", 0xC1FC1FC1, b"\0" * 16, 0, 0, 10, 20, 8 * 100, 8 * 128, 0, 0, 0)
    return head + bytes(128 - len(head))


def test_data_connections_per_session_are_bounded(relayd):
    """Each data connection holds a relay thread and a pipe: a session gets at most
    MAX_DATA_CONNECTIONS_PER_SESSION; the one over is closed, the others carry on."""
    from ust.relay.relayd import MAX_DATA_CONNECTIONS_PER_SESSION

    client = RelayClient("127.0.0.1", relayd.control, relayd.data,
                         data_connections=MAX_DATA_CONNECTIONS_PER_SESSION + 1)
    client.create_session("many", "hostM", 0)
    closed: list[int] = []
    wait_until(lambda: closed.extend(i for i, link in enumerate(client.data_links)
                                     if i not in closed and _closed(link)) or len(closed) >= 1,
               what="a data connection over the bound closed")
    assert len(closed) == 1
    handle = next(h for h in range(1, 100) if h % len(client.data_links) not in closed)
    client.add_stream(handle, 0, "ust", "c_0")
    client.send_packet(handle, _tiny_packet())
    path = os.path.join(relayd.output, "hostM")
    wait_until(lambda: [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
                        if f == "c_0"] == [128], what="the packet on the relay")
    assert "more than" in open(relayd.log).read()
    client.close()


def test_sender_whose_descriptors_are_beyond_1024(relayd):
    """A consumer holds many descriptors (ring buffers, applications): a data
    connection numbered beyond select()'s limit still sends (the sender polls it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("the descriptor limit is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = []
    try:
        while len(fillers) < 1100 and (not fillers or fillers[-1] < 1100):
            fillers.append(os.open("/dev/null", os.O_RDONLY))
        client = RelayClient("127.0.0.1", relayd.control, relayd.data)
        client.create_session("many", "hostF", 0)
        client.add_stream(1, 0, "ust", "c_0")
        assert all(link.fileno() > 1024 for link in client.data_links)
        client.send_packet(1, _tiny_packet())
        path = os.path.join(relayd.output, "hostF")
        wait_until(lambda: [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
                            if f == "c_0"] == [128], what="the packet on the relay")
        client.close()
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_one_stream_written_from_two_data_connections_is_refused(relayd):
    """A session may have several data connections, but a stream's file has one
    writer at a time and grows only at its end: a packet for the same place sent on
    a second connection closes that connection, and the file keeps whole packets."""
    client = RelayClient("127.0.0.1", relayd.control, relayd.data, data_connections=2)
    client.create_session("s", "h", 100000)
    client.add_stream(2, 0, "ust", "c_0")
    good = _tiny_packet()
    first, second = client.data_links
    first.sendall(wire.packet_header(2, 0, wire.packet_index(good)) + good)
    path = os.path.join(relayd.output, "h")
    [session] = [d for d in os.listdir(path) if not d.startswith(".")]
    stream_file = os.path.join(path, session, "ust", "c_0")
    wait_until(lambda: os.path.getsize(stream_file) == 128, what="the first packet in the file")
    second.sendall(wire.packet_header(2, 0, wire.packet_index(good)) + good)  # the same offset again
    wait_until(lambda: _closed(second), what="the second data connection closed")
    first.sendall(wire.packet_header(2, 128, wire.packet_index(good)) + good)  # the first one goes on
    wait_until(lambda: os.path.getsize(stream_file) == 256, what="two packets in the file")
    with open(stream_file, "rb") as f:
        assert f.read() == good + good
    client.close()


def _closed(sock) -> bool:
    sock.settimeout(0.1)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


VALID_CONTROL = [
    wire.create_session("f", "h", 100, 1),
    wire.add_stream(1, 1, 0, 0, "ust/uid", "c_0"),
    wire.metadata(1, 1, b"/* CTF */"),
    wire.beacon(1, 1, 5),
    wire.close_stream(1, 1, 0),
    wire.destroy_session(1),
    wire.archive_chunk(1, "", "a-0"),
]


def mutated(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            b = b[:rng.randrange(len(b) + 1)]
        elif op == 2:
            b += os.urandom(rng.randint(1, 40))
        else:
            struct.pack_into("!I", b, 8, rng.choice([0, 1, 7, 1 << 20, 0xFFFFFFFF])) if len(b) >= 12 else None
    return bytes(b)


def viewer_junk(rng: random.Random) -> bytes:
    cmd = rng.choice(list(va.REQUEST_SIZE) + [0, 10, 0xFFFFFFFF])
    size = rng.choice([va.REQUEST_SIZE.get(cmd, 0), 0, 8, 20, 1 << 40])
    connect = va.request(va.CONNECT, va.CONNECT_MSG.pack(0, 2, 4, 1))
    body = va.CMD.pack(size, cmd, 0) + os.urandom(min(size, 64))
    return (connect if rng.random() < 0.7 else b"") + body


def test_fuzzed_frames_on_every_port(relayd, tmp_path):
    rng = random.Random(1234)
    for i in range(300):
        port = rng.choice([relayd.control, relayd.data, relayd.live])
        if port == relayd.live:
            payload = viewer_junk(rng)
        elif rng.random() < 0.2:
            payload = os.urandom(rng.randint(1, 100))
        else:
            payload = mutated(rng, rng.choice(VALID_CONTROL + [wire.data_hello(1, b"x" * 16)]))
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(30)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)  # a half-sent frame ends here: the relay must not wait forever
            while s.recv(65536):
                pass
        except OSError:
            pass
        finally:
            s.close()
    # a viewer that asks for a packet and leaves without reading it
    assert relayd.alive()
    c = relayd.client()
    c.create_session("after", "h", 100000)
    c.add_stream(1, 0, "ust", "metadata", metadata=True)
    c.send_metadata(1, b"/* CTF 1.8 */\n\n")
    v = LiveClient("127.0.0.1", relayd.live)
    v.create_session()
    assert v.attach(c.session)[0] == va.ATTACH_OK
    assert "after" in [s.name for s in v.list_sessions()]
    v.close()
    c.close()
