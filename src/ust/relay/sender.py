"""The consumer side of the ingest protocol: a connection to ust-relayd for one
session, and a replayer that streams a trace written on disk (docs/relay.md)."""

from __future__ import annotations

import os
import re
import select
import socket
import time

from ust.ctf.writer import PACKET_HEADER_SIZE, PacketIndex, packet_spans

from . import wire

DEFAULT_CONTROL_PORT = 5342
DEFAULT_DATA_PORT = 5343


def parse_net_url(url: str) -> tuple[str, int, int]:
    """``net://HOST[:CTRL[:DATA]]`` (also ``net6://[ADDR]...``) -> (host, control port, data port)."""
    m = re.fullmatch(r"net6?://(\[[^\]]+\]|[^:/\[\]]+)(?::(\d+))?(?::(\d+))?/?", url)
    if not m:
        raise wire.WireError(f"invalid relay URL {url!r}: expected net://HOST[:CONTROL_PORT[:DATA_PORT]]")
    ctrl = int(m.group(2)) if m.group(2) else DEFAULT_CONTROL_PORT
    data = int(m.group(3)) if m.group(3) else (ctrl + 1 if m.group(2) else DEFAULT_DATA_PORT)
    if ctrl > 65535 or data > 65535:
        raise wire.WireError(f"invalid port in {url!r}")
    return m.group(1).strip("[]"), ctrl, data


DATA_CONNECTIONS = 2  # per session: the relay receives each on a thread of its own


class RelayClient:
    """One session streamed to a relay: a control connection and ``data_connections``
    data connections. A stream's packets always take the same data connection
    (its handle modulo their number), so they arrive in order; several of them
    let the relay receive and write on several cores at once (one thread each)."""

    def __init__(self, host: str, control_port: int, data_port: int, timeout: float = 30.0,
                 data_connections: int = DATA_CONNECTIONS):
        self.address = host
        self.ports = (control_port, data_port)
        self.timeout = timeout
        self.data_connections = max(1, data_connections)
        self.control = socket.create_connection((host, control_port), timeout=timeout)
        self.control.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.data: socket.socket | None = None  # the first data connection
        self.data_links: list[socket.socket] = []
        self.data_watch: list = []  # a select.poll per data link: has the relay closed it?
        self.session = 0
        self.offsets: dict[int, int] = {}  # bytes sent per stream handle
        self.packets: dict[int, int] = {}

    def _call(self, frame: bytes) -> tuple[int, bytes]:
        self.control.sendall(frame)
        msg_type, body = wire.recv_frame(self.control)
        msg = wire.decode(msg_type, body)
        if msg[0] != wire.REPLY:
            raise wire.WireError(f"relay answered with message type {msg[0]}")
        _, status, value, rest = msg
        if status != wire.STATUS_OK:
            raise wire.WireError(f"relay: {rest.decode(errors='replace')}")
        return value, rest

    def create_session(self, name: str, hostname: str, live_timer_us: int = 0, created: float | None = None,
                       identity: bytes = bytes(wire.IDENTITY_SIZE), resume: bool = False) -> int:
        """A session on the relay; ``resume`` with the ``identity`` of an earlier one
        (a reconnection): the relay carries on in that session's directory."""
        when = int(created if created is not None else time.time())
        self.session, rest = self._call(wire.create_session(name, hostname, live_timer_us, when, identity, resume))
        token = rest[:wire.TOKEN_SIZE]
        for _ in range(self.data_connections):
            link = socket.create_connection((self.address, self.ports[1]), timeout=self.timeout)
            self.data_links.append(link)
            link.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link.sendall(wire.data_hello(self.session, token))
            watch = select.poll()
            watch.register(link, select.POLLIN)
            self.data_watch.append(watch)
        self.data = self.data_links[0]
        return self.session

    def add_stream(self, handle: int, stream_class: int, trace_path: str, file_name: str,
                   metadata: bool = False) -> None:
        kind = wire.KIND_METADATA if metadata else wire.KIND_DATA
        size, _ = self._call(wire.add_stream(self.session, handle, stream_class, kind, trace_path, file_name))
        self.offsets[handle] = size  # a resumed stream goes on after what the relay has
        self.packets[handle] = 0

    def send_metadata(self, handle: int, text: bytes) -> None:
        self._call(wire.metadata(self.session, handle, text))

    def send_packet(self, handle: int, packet, index: PacketIndex | None = None) -> None:
        """One whole packet, exactly as the ring buffer laid it out, on its stream's
        data connection: the frame's header and the packet in one sendmsg (no
        copy in Python, and no tiny segment of its own for the header)."""
        index = index or wire.packet_index(packet)
        body = memoryview(packet).cast("B")
        if len(body) != index.packet_size:
            raise wire.WireError(f"a packet of {len(body)} bytes whose header says {index.packet_size}")
        which = handle % len(self.data_links)
        link = self.data_links[which]
        _check_open(self.data_watch[which])
        wire.send_parts(link, wire.packet_header(handle, self.offsets[handle], index), body)
        self.offsets[handle] += len(body)
        self.packets[handle] += 1

    def beacon(self, handle: int, timestamp: int) -> None:
        self._call(wire.beacon(self.session, handle, timestamp, self.offsets.get(handle, 0)))

    def close_stream(self, handle: int) -> None:
        self._call(wire.close_stream(self.session, handle, self.packets.get(handle, 0)))

    def archive_chunk(self, chunk: str, archive: str, timeout: float | None = None) -> str:
        """A rotation on the relay (wire.ARCHIVE_CHUNK): the archive's directory there."""
        if timeout is not None:
            self.control.settimeout(timeout)
        try:
            _, rest = self._call(wire.archive_chunk(self.session, chunk, archive))
        finally:
            self.control.settimeout(self.timeout)
        return rest.decode(errors="replace")

    def destroy(self) -> None:
        self._call(wire.destroy_session(self.session))

    def close(self) -> None:
        for s in (*self.data_links, self.control):
            s.close()
        self.data_links.clear()
        self.data_watch.clear()
        self.data = None


def _check_open(watch: "select.poll") -> None:
    """Raise ConnectionError when the relay closed the data connection ``watch``
    polls (it never writes on one: anything readable is its end). A packet handed
    to a socket whose peer is gone is lost once sent, while a packet not sent
    stays in its ring buffer for the reconnection: so look before each packet (a
    relay killed or restarted has closed it by then). poll, not select: a
    consumer's descriptors may be numbered beyond select's 1024."""
    if watch.poll(0):
        raise ConnectionError("the relay closed the data connection")


def trace_streams(root: "str | os.PathLike") -> list[tuple[str, str, list[str]]]:
    """(trace path relative to ``root``, its directory, its stream file names) of every
    trace (a directory with a ``metadata`` file) under a session's output directory."""
    root = os.fspath(root)
    out = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        if "metadata" in files:
            rel = os.path.relpath(directory, root).replace(os.sep, "/")
            names = sorted(f for f in files if f != "metadata" and not f.startswith("."))
            out.append((rel, directory, names))
    return out


def replay_trace(client: RelayClient, root: "str | os.PathLike", on_packet=None, destroy: bool = True,
                 beacons: bool = True, lazy: bool = False) -> int:
    """Stream every packet of the trace(s) under ``root`` through ``client`` (a created
    session), in time order over all streams, then close them. Returns packets sent.

    ``on_packet(n)`` is called before the n-th packet (a test's pacing hook). With
    ``beacons``, before each packet every other stream is told it has nothing until
    its own next packet (as a live consumer's timer tells of idle streams), so a
    viewer can print up to the packet being sent. With ``lazy``, a trace and a
    stream are announced just before their first packet (processes and CPUs that
    join a running session), else all of them first."""
    handles = iter(range(1, 1 << 62))
    pending = []  # (timestamp_begin, handle, path, offset, length)
    streams = {}  # handle -> (trace path, directory, file name, stream class)
    for rel, directory, names in trace_streams(root):
        for name in names:
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                spans = list(packet_spans(fd, os.fstat(fd).st_size))
                if not spans:
                    continue
                handle = next(handles)
                for offset, length in spans:
                    index = PacketIndex.of(os.pread(fd, PACKET_HEADER_SIZE, offset))
                    streams.setdefault(handle, (rel, directory, name, index.stream_id))
                    pending.append((index.timestamp_begin, handle, path, offset, length))
            finally:
                os.close(fd)
    pending.sort()
    metadata_handles: dict[str, int] = {}
    announced: set[int] = set()

    def announce(handle: int) -> None:
        rel, directory, name, stream_class = streams[handle]
        if rel not in metadata_handles:
            meta = metadata_handles[rel] = next(handles)
            client.add_stream(meta, 0, rel, "metadata", metadata=True)
            with open(os.path.join(directory, "metadata"), "rb") as f:
                client.send_metadata(meta, f.read())
        client.add_stream(handle, stream_class, rel, name)
        announced.add(handle)

    for handle in (streams if not lazy else [pending[0][1]] if pending else []):
        announce(handle)  # lazy: the first stream only, so that viewers can attach before packet 0
    next_begin: dict[int, list[int]] = {}
    for begin, handle, *_ in pending:
        next_begin.setdefault(handle, []).append(begin)
    told: dict[int, int] = {}
    for n, (begin, handle, path, offset, length) in enumerate(pending):
        if on_packet is not None:
            on_packet(n)
        if handle not in announced:
            announce(handle)  # just before its first packet: a viewer never waits on an empty stream
        next_begin[handle].pop(0)
        if beacons:
            for other, begins in next_begin.items():
                quiet_until = min(begins[0], begin) if begins else begin
                if other != handle and other in announced and quiet_until > told.get(other, -1):
                    client.beacon(other, quiet_until)
                    told[other] = quiet_until
        with open(path, "rb") as f:
            f.seek(offset)
            client.send_packet(handle, f.read(length))
    for handle in [*streams, *metadata_handles.values()]:
        client.close_stream(handle)
    if destroy:
        client.destroy()
    return len(pending)
