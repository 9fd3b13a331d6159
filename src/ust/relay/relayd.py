"""ust-relayd: receives trace streams from consumers on any number of hosts,
writes them under ``DIR/<hostname>/<session>-<YYYYMMDD-HHMMSS>/``, and serves
them live to viewers speaking LTTng's viewer protocol (docs/relay.md).

Three listening ports: control (sessions, streams, metadata, beacons), data
(packets) and live (viewers). One thread per connection; the shared state
(sessions, streams, what has been written) sits behind one condition lock,
held only to update or read counters, never across a socket or a file write.
A connection that breaks the protocol gets an error (when its protocol has
one) and is closed; nobody else notices.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import fcntl
import hmac
import itertools
import os
import re
import secrets
import selectors
import signal
import socket
import struct
import sys
import threading
import time

from ust.consumer.output import StreamFile
from ust.ctf.index import DIRECTORY as INDEX_DIRECTORY
from ust.ctf.writer import (PACKET_HEADER_SIZE, PacketIndex, TraceDirError, make_trace_dir, new_trace_dir,
                            open_new_file, time_stamp, write_metadata)
from ust.daemon import paths
from ust.daemon.protocol import InputBudget
from ust.errors import UstError

from . import viewer_abi as va
from . import wire

DEFAULT_CONTROL_PORT = 5342
DEFAULT_DATA_PORT = 5343
DEFAULT_LIVE_PORT = 5344
MAX_CONNECTIONS = 512
MAX_VIEWER_READ = 16 << 20  # one GET_PACKET reply at most
MAX_METADATA_REPLY = 1 << 20
MAX_CONTROL_BODY = 16 << 20  # metadata text
STOP_WAIT = 10.0  # at SIGTERM, how long connection threads get to finish the packet they write
STOP_WATCHDOG = 45.0  # a stop that takes longer dumps every thread's stack to the log and exits 1
MID_FRAME_TIMEOUT = 60.0  # a frame begun must end within this (a peer may idle between frames, not inside one)
INPUT_BUDGET = 256 << 20
SPLICE_PIPE_SIZE = 1 << 20
MAX_SESSIONS_PER_CONNECTION = 64
MAX_SESSIONS = 4096
MAX_STREAMS_PER_SESSION = 1024  # each data stream holds two descriptors
MAX_DATA_CONNECTIONS_PER_SESSION = 16  # a sender uses two (ust.relay.sender.DATA_CONNECTIONS)
MAX_VIEWER_METADATA = 64 << 20  # per trace: what viewers may be sent in all
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 30, 10, 3  # a silent dead peer is dropped after ~60 s
# A consumer's session whose control connection broke without DESTROY_SESSION waits this long
# for the consumer to come back (RESUME) before it ends: viewers keep following the same session.
RESUME_GRACE = 120.0
ARCHIVE_WAIT = 25.0  # s: how long ARCHIVE_CHUNK waits for the chunk's packets still on the data port
PID_NAME = "relayd.pid"


class RelayError(UstError):
    """A relay that cannot start (bad URL, port taken, output not safe)."""


def parse_tcp_url(url: str, default_host: str, default_port: int) -> tuple[str, int]:
    """``tcp://ADDR:PORT``, ``tcp://ADDR``, ``tcp6://[ADDR]:PORT`` or a bare port -> (addr, port)."""
    if url.isdigit():
        return default_host, int(url)
    m = re.fullmatch(r"tcp6?://(\[[^\]]+\]|[^:/\[\]]+)(?::(\d+))?", url)
    if not m:
        raise RelayError(f"invalid URL {url!r}: expected tcp://ADDRESS[:PORT]")
    host = m.group(1).strip("[]")
    port = int(m.group(2)) if m.group(2) else default_port
    if port > 65535:
        raise RelayError(f"invalid port in {url!r}")
    return host, port


# ---------------------------------------------------------------------------
# state


class Trace:
    """One CTF trace of a session (a metadata file and its stream files)."""

    def __init__(self, trace_id: int, path: str, directory: str):
        self.id = trace_id
        self.path = path  # relative to the session directory
        self.directory = directory
        self.metadata = b""  # the whole text as last received (the file's content)
        # What viewers read: an append-only log. Each new text adds what it
        # declares that the log does not have yet (a metadata text is rebuilt
        # whole by its producer; a live viewer only ever appends).
        self.viewer_metadata = bytearray()
        self.blocks: set[bytes] = set()

    def update_metadata(self, text: bytes) -> None:
        if len(self.viewer_metadata) + len(text) > MAX_VIEWER_METADATA:
            raise wire.WireError(f"metadata of trace {self.path} over {MAX_VIEWER_METADATA} bytes in all")
        if text.startswith(self.metadata) and self.viewer_metadata == self.metadata:
            self.viewer_metadata += text[len(self.metadata):]
            self.blocks.update(_blocks(text[len(self.metadata):]))
        else:
            for block in _blocks(text):
                if block not in self.blocks:
                    self.blocks.add(block)
                    self.viewer_metadata += block
        self.metadata = text


def _blocks(text: bytes) -> list[bytes]:
    """Top-level TSDL declarations: metadata.py separates them by a blank line."""
    parts = text.split(b"\n\n")
    return [p + b"\n\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


class Stream:
    def __init__(self, stream_id: int, session: "Session", trace: Trace, handle: int, kind: int,
                 stream_class: int, name: str):
        self.id = stream_id  # the viewer's stream id (unique in the relay)
        self.session = session
        self.trace = trace
        self.handle = handle  # the sender's
        self.kind = kind
        self.stream_class = stream_class
        self.name = name
        self.path = os.path.join(trace.directory, name)
        self.file: StreamFile | None = None
        self.splice_fd = -1
        self.write_lock = threading.Lock()
        self.committed = 0  # bytes of whole packets in the file: what viewers may read
        self.packets = 0
        self.packets_before = 0  # received before the sender's current connection (a resumed stream)
        self.generation = session.generation  # the session's connection that added it last
        self.close_at: int | None = None  # packets the sender said it sent on its connection, once closed
        self.closed = False
        self.archived = False  # its chunk was archived (rotation)
        self.last_end = 0  # timestamp_end of the last packet
        self.beacon: int | None = None  # nothing more up to this time (live timer, idle stream)...
        self.beacon_end = 0  # ...once the file is this long (the packets sent before it arrived)

    @property
    def complete(self) -> bool:
        return self.closed and (self.close_at is None or self.packets - self.packets_before >= self.close_at)


class Owner(list):
    """The sessions a control connection created or resumed (the connection: ``conn``)."""

    def __init__(self, conn: socket.socket):
        super().__init__()
        self.conn = conn


class Session:
    def __init__(self, session_id: int, name: str, hostname: str, live_timer: int, directory: str,
                 identity: bytes = bytes(wire.IDENTITY_SIZE)):
        self.id = session_id
        self.name = name
        self.hostname = hostname
        self.live_timer = live_timer
        self.directory = directory
        self.identity = identity  # the sender's: a reconnecting sender resumes this session (RESUME)
        self.owner: Owner | None = None  # the control connection that may act on it
        self.generation = 0  # how many times a reconnecting sender took it over
        self.data_conns: set[socket.socket] = set()  # the owner's data connections: the only writers
        self.token = secrets.token_bytes(wire.TOKEN_SIZE)
        self.traces: dict[str, Trace] = {}
        self.streams: dict[int, Stream] = {}  # by the sender's handle
        self.destroyed = False
        self.resumed = False  # carries on in a directory an earlier connection wrote
        self.viewers = 0
        self.attached: set = set()  # the Viewers attached to it

    @property
    def complete(self) -> bool:
        return self.destroyed and all(s.complete for s in self.streams.values())


class Relay:
    def __init__(self, output: str, control: tuple[str, int], data: tuple[str, int], live: tuple[str, int]):
        self.output = os.path.abspath(output)
        self.addresses = {"control": control, "data": data, "live": live}
        self.cond = threading.Condition()
        self.sessions: dict[int, Session] = {}
        self.ids = itertools.count(1)
        self.budget = InputBudget(INPUT_BUDGET)
        self.listeners: dict[str, socket.socket] = {}
        self.connections: set[socket.socket] = set()
        self.stopping = threading.Event()
        # (the environment's: a test's shorter wait)
        self.resume_grace = float(os.environ.get("UST_RELAY_RESUME_GRACE") or RESUME_GRACE)
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    # -- listening ---------------------------------------------------------

    def listen(self) -> None:
        make_trace_dir(self.output)
        for role, (host, port) in self.addresses.items():
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                s.close()
                self.close_listeners()
                raise RelayError(f"cannot listen on {role} port tcp://{host}:{port}: {exc.strerror or exc}") from None
            s.listen(64)
            self.listeners[role] = s

    def urls(self) -> dict[str, str]:
        out = {}
        for role, s in self.listeners.items():
            host, port = s.getsockname()[:2]
            out[role] = f"tcp://{'[' + host + ']' if ':' in host else host}:{port}"
        return out

    def close_listeners(self) -> None:
        for s in self.listeners.values():
            s.close()
        self.listeners.clear()

    def serve(self) -> None:
        handlers = {"control": self.serve_control, "data": self.serve_data, "live": self.serve_live}
        sel = selectors.DefaultSelector()
        for role, s in self.listeners.items():
            sel.register(s, selectors.EVENT_READ, role)
        sel.register(self.wake_r, selectors.EVENT_READ, None)
        try:
            while not self.stopping.is_set():
                for key, _ in sel.select():
                    if key.data is None:
                        _drain_pipe(self.wake_r)  # a signal's byte, or request_stop's
                        continue
                    try:
                        conn, _addr = key.fileobj.accept()
                    except OSError:
                        continue
                    with self.cond:
                        if len(self.connections) >= MAX_CONNECTIONS:
                            conn.close()
                            continue
                        self.connections.add(conn)
                    threading.Thread(target=self._run, args=(handlers[key.data], conn), daemon=True,
                                     name=f"relay-{key.data}").start()
        finally:
            sel.close()
            self.close_listeners()
            self.shutdown()

    def request_stop(self) -> None:
        self.stopping.set()
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def shutdown(self) -> None:
        """Stop: connections closed, every stream file synced and closed.

        Bounded: a connection thread in the middle of a packet is woken by the
        socket's shutdown and cuts its file back to the last whole packet; one that
        still holds its stream after STOP_WAIT is left behind (its file is closed by
        our exit; a resumed session cuts it back to whole packets anyway)."""
        with self.cond:
            conns = list(self.connections)
            sessions = list(self.sessions.values())
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + STOP_WAIT
        for session in sessions:
            for stream in session.streams.values():
                if not stream.write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    _log(f"stopping while {stream.path} is still being written: left as it is")
                    continue
                try:
                    _close_stream_files(stream)
                finally:
                    stream.write_lock.release()

    def _run(self, handler, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A peer whose network vanished (no FIN, no RST) is found out by keepalive
            # probes, so its sessions end and its thread goes, instead of waiting forever.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
            handler(conn)
        except (ConnectionError, OSError):
            pass
        except wire.WireError as exc:
            _log(f"closing a connection: {exc}")
        finally:
            with self.cond:
                self.connections.discard(conn)
            conn.close()

    # -- ingest: control ---------------------------------------------------

    def _recv(self, conn: socket.socket, max_body: int) -> tuple[int, bytearray]:
        magic, version, msg_type, length = wire.HEADER.unpack(wire._recv_exact(conn, wire.HEADER.size))
        if magic != wire.MAGIC:
            raise wire.WireError("not a ust relay frame (bad magic)")
        if version != wire.WIRE_VERSION:
            raise wire.WireError(f"relay protocol version {version} is not {wire.WIRE_VERSION}")
        if length > max_body:
            raise wire.WireError(f"frame of {length} bytes is over the {max_body}-byte limit")
        counted = length > self.budget.small
        if counted and not self.budget.take(length):
            raise wire.WireError("too many large frames arriving at once: the relay is out of input memory")
        conn.settimeout(MID_FRAME_TIMEOUT)
        try:
            return msg_type, wire._recv_exact(conn, length)
        finally:
            conn.settimeout(None)
            if counted:
                self.budget.give(length)

    def serve_control(self, conn: socket.socket) -> None:
        owned = Owner(conn)
        try:
            while True:
                msg_type, body = self._recv(conn, MAX_CONTROL_BODY)
                try:
                    msg = wire.decode(msg_type, body)
                    answer = self.control(msg, owned)
                except (wire.WireError, TraceDirError, OSError) as exc:
                    conn.sendall(wire.reply(wire.STATUS_ERROR, message=str(exc)))
                    if isinstance(exc, wire.WireError):
                        raise
                    continue
                conn.sendall(answer)
        finally:
            waiting = []
            with self.cond:
                for session in [s for s in owned if s.owner is owned]:  # (not those taken over)
                    session.owner = None
                    if any(session.identity) and not self.stopping.is_set():
                        waiting.append(session)  # a consumer: it may come back (RESUME)
                    else:
                        self._destroy(session)  # the sender is gone: what it sent is all there will be
            for session in waiting:
                timer = threading.Timer(self.resume_grace, self._expire, (session, session.generation))
                timer.daemon = True
                timer.start()
            for session in owned:
                self._finish(session)

    def _expire(self, session: Session, generation: int) -> None:
        """The end of a session whose sender did not come back within RESUME_GRACE."""
        with self.cond:
            if session.generation != generation or session.owner is not None or session.destroyed:
                return
            self._destroy(session)
        self._finish(session)
        _log(f"session {session.hostname}/{session.name} ({session.id}) ended: its sender did not come back")

    def control(self, msg: tuple, owned: Owner) -> bytes:
        kind = msg[0]
        if kind == wire.CREATE_SESSION:
            _, name, host, live, created, identity, resume = msg
            with self.cond:
                self.visible_sessions()  # forgets the ended ones
                if len(owned) >= MAX_SESSIONS_PER_CONNECTION or len(self.sessions) >= MAX_SESSIONS:
                    raise wire.WireError("too many sessions")
            session = self.create_session(name, host, live, created, identity, resume, owned)
            if session not in owned:
                owned.append(session)
            return wire.reply(wire.STATUS_OK, session.id, session.token)
        if kind not in (wire.ADD_STREAM, wire.METADATA, wire.BEACON, wire.CLOSE_STREAM, wire.DESTROY_SESSION,
                        wire.ARCHIVE_CHUNK):
            raise wire.WireError(f"message type {kind} does not belong on the control port")
        session = next((s for s in owned if s.id == msg[1] and s.owner is owned), None)
        if session is None:
            raise wire.WireError(f"session {msg[1]} was not created on this connection")
        if kind == wire.ADD_STREAM:
            _, _, handle, stream_class, skind, path, name = msg
            stream = self.add_stream(session, handle, stream_class, skind, path, name)
            return wire.reply(wire.STATUS_OK, stream.file.written if stream.file else 0)
        elif kind == wire.METADATA:
            _, _, handle, text = msg
            stream = self._stream(session, handle, wire.KIND_METADATA)
            with self.cond:
                stream.trace.update_metadata(text)
                self.cond.notify_all()
            write_metadata(os.path.join(stream.trace.directory, "metadata"), text.decode("utf-8", "replace"))
        elif kind == wire.BEACON:
            _, _, handle, ts, end = msg
            stream = self._stream(session, handle, wire.KIND_DATA)
            with self.cond:
                stream.beacon = ts
                stream.beacon_end = end
        elif kind == wire.CLOSE_STREAM:
            _, _, handle, packets = msg
            stream = self._stream(session, handle, None)
            with self.cond:
                stream.closed = True
                stream.close_at = packets
            self._finish(session)
        elif kind == wire.ARCHIVE_CHUNK:
            _, _, chunk, archive = msg
            return wire.reply(wire.STATUS_OK, extra=self.archive_chunk(session, chunk, archive).encode())
        else:
            with self.cond:
                self._destroy(session)
            owned.remove(session)
            self._finish(session)
        return wire.reply(wire.STATUS_OK)

    def _stream(self, session: Session, handle: int, kind: int | None) -> Stream:
        stream = session.streams.get(handle)
        if stream is None or (kind is not None and stream.kind != kind):
            raise wire.WireError(f"no such stream {handle} in session {session.name}")
        return stream

    def create_session(self, name: str, host: str, live: int, created: int, identity: bytes = bytes(16),
                       resume: bool = False, owner: Owner | None = None) -> Session:
        if resume and any(identity):
            session = self._take_over(name, host, identity, owner)
            if session is not None:
                return session
        host_dir = os.path.join(self.output, host)
        make_trace_dir(host_dir, self.output)
        when = created if 0 < created < 1 << 40 else time.time()
        base = f"{name}-{time_stamp(when)}"
        directory = self._resumable(host_dir, base, identity) if resume and any(identity) else None
        resumed = directory is not None
        if directory is None:
            directory = new_trace_dir(os.path.join(host_dir, base))
            # who may resume it: hidden next to it, so the session's tree holds only the trace
            fd = open_new_file(os.path.join(host_dir, f".{os.path.basename(directory)}.id"))
            try:
                os.write(fd, identity)
            finally:
                os.close(fd)
        with self.cond:
            session = Session(next(self.ids), name, host, live, directory, identity)
            session.resumed = resumed
            session.owner = owner
            self.sessions[session.id] = session
        _log(f"session {host}/{name} ({session.id}) -> {directory}")
        return session

    def _take_over(self, name: str, host: str, identity: bytes, owner: Owner | None) -> Session | None:
        """The running session ``identity`` created, now the new connection's: the same
        session for viewers, its streams going on in their files. The sender reconnects
        only when its connections broke, but this relay may not know yet (a network cut
        sends no FIN): the old connections are shut down, so they write nothing more."""
        with self.cond:
            session = next((s for s in self.sessions.values() if not s.destroyed and s.name == name
                            and s.hostname == host and hmac.compare_digest(s.identity, identity)), None)
            if session is None:
                return None
            old = session.owner
            stale = list(session.data_conns) + ([old.conn] if old is not None else [])
            session.data_conns.clear()  # receive_packet refuses their packets from now on
            session.generation += 1
            session.owner = owner
            session.token = secrets.token_bytes(wire.TOKEN_SIZE)
        for conn in stale:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        _log(f"session {host}/{name} ({session.id}) resumed by its sender")
        return session

    def _resumable(self, host_dir: str, base: str, identity: bytes) -> str | None:
        """The directory of the session ``identity`` created (``base``, ``base-1``...),
        if no running session writes it."""
        with self.cond:
            # not while an earlier connection may still write there: a data connection cut
            # mid-packet ends (and cuts its file back) only when its peer's FIN or the
            # mid-frame timeout comes, and two writers of one file would destroy each other's packets
            busy = {s.directory for s in self.sessions.values()
                    if not s.destroyed or any(st.file is not None and st.file.fd >= 0 for st in s.streams.values())}
        for n in range(1000):
            name = base if n == 0 else f"{base}-{n}"
            try:
                fd = os.open(os.path.join(host_dir, f".{name}.id"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                if n > 0:
                    return None
                continue
            except OSError:
                continue
            try:
                mine = hmac.compare_digest(os.read(fd, 64), identity)
            finally:
                os.close(fd)
            directory = os.path.join(host_dir, name)
            if mine and directory not in busy and os.path.isdir(directory):
                return directory
        return None

    def add_stream(self, session: Session, handle: int, stream_class: int, kind: int, path: str,
                   name: str) -> Stream:
        known = session.streams.get(handle)
        if known is not None:
            if known.generation == session.generation or known.trace.path != path or known.kind != kind \
                    or known.stream_class != stream_class or (kind == wire.KIND_DATA and known.name != name):
                raise wire.WireError(f"stream {handle} already exists")
            return self._resume_stream(known)
        if len(session.streams) >= MAX_STREAMS_PER_SESSION:
            raise wire.WireError(f"more than {MAX_STREAMS_PER_SESSION} streams in one session")
        trace = session.traces.get(path)
        if trace is None:
            directory = os.path.join(session.directory, *path.split("/"))
            make_trace_dir(directory, session.directory)
            trace = Trace(next(self.ids), path, directory)
        if kind == wire.KIND_METADATA:
            name = "metadata"
        elif name in ("metadata", INDEX_DIRECTORY):  # (index/: the streams' packet indexes)
            raise wire.WireError(f"a data stream cannot be named {name}")
        if any(s.trace is trace and s.name == name for s in session.streams.values()):
            raise wire.WireError(f"{path}/{name} already exists")
        stream = Stream(next(self.ids), session, trace, handle, kind, stream_class, name)
        if kind == wire.KIND_DATA:
            # resumed: append to what the previous connection (or relay) wrote, cut back to
            # whole packets; else a file that must not exist
            _open_stream_files(stream, truncate=not session.resumed)
        with self.cond:
            session.traces[path] = trace
            session.streams[handle] = stream
            self.cond.notify_all()
        return stream

    def _resume_stream(self, stream: Stream) -> Stream:
        """A stream its sender adds again on a new connection (``_take_over``): it goes on
        after its last whole packet (an old connection cut mid-packet has left the file cut
        back to it, under the write lock taken here)."""
        with stream.write_lock:
            if stream.kind == wire.KIND_DATA and (stream.file is None or stream.file.fd < 0):
                _open_stream_files(stream, truncate=False)
            with self.cond:
                stream.generation = stream.session.generation
                stream.closed = False
                stream.close_at = None
                stream.packets_before = stream.packets
                if stream.file is not None:
                    stream.committed = stream.file.written
                self.cond.notify_all()
        return stream

    def archive_chunk(self, session: Session, chunk: str, archive: str) -> str:
        """A rotation: once every stream of the finished chunk has all its packets, its
        ``ust`` (and ``kernel``) directories become ``archives/<archive>/ust`` (``/kernel``);
        returns the archive's directory. Its streams' files stay open where they are (viewers
        still reading them follow)."""
        base = f"{chunk}/" if chunk else ""
        prefixes = [base + domain for domain in ("ust", "kernel")]

        def of_chunk(path: str) -> str | None:
            return next((p for p in prefixes if path == p or path.startswith(p + "/")), None)

        with self.cond:
            traces = [t for p, t in session.traces.items() if of_chunk(p)]
            streams = [st for st in session.streams.values() if st.trace in traces]
            # A stream of the chunk its sender did not add again when it took the session over
            # (_take_over) was its previous connection's: that connection is gone (shut down), so
            # nothing more will come for it; it ends here with what it has, as lttng-relayd ends
            # the streams of a consumer connection that died, rather than being waited for.
            orphans = [st for st in streams if st.generation < session.generation and not st.closed]
            for st in orphans:
                st.closed = True
                st.close_at = None
            if orphans:
                self.cond.notify_all()
        if orphans:
            self._finish(session)
            _log(f"session {session.hostname}/{session.name} ({session.id}): {len(orphans)} stream(s) of "
                 f"chunk {chunk or '(first)'} its sender did not resume ended with what they have")
        with self.cond:
            if not self.cond.wait_for(lambda: all(st.complete for st in streams), timeout=ARCHIVE_WAIT):
                raise OSError(errno.ETIMEDOUT, f"the packets of chunk {chunk or '(first)'} did not all arrive")
        dest = os.path.join(session.directory, "archives", archive)
        if any(os.path.lexists(os.path.join(dest, p[len(base):])) for p in prefixes):
            raise OSError(errno.EEXIST, f"archive {archive} exists already")
        make_trace_dir(dest, session.directory)
        for prefix in prefixes:
            source = os.path.join(session.directory, *prefix.split("/"))
            if os.path.isdir(source) and not os.path.islink(source):
                os.rename(source, os.path.join(dest, prefix[len(base):]))
        with self.cond:
            for t in traces:
                prefix = of_chunk(t.path)
                t.directory = os.path.join(dest, prefix[len(base):], *t.path[len(prefix):].split("/"))
                del session.traces[t.path]  # a new stream of that path would be a new trace
            for st in streams:
                st.path = os.path.join(st.trace.directory, st.name)
                st.archived = True
            self._prune(session)
        if chunk:
            try:
                os.rmdir(os.path.join(session.directory, chunk))
            except OSError:
                pass
        _log(f"session {session.hostname}/{session.name} ({session.id}): chunk archived in {dest}")
        return dest

    def _prune(self, session: Session) -> None:
        """Under the lock: forget the archived, complete streams every attached viewer was
        told about (a session rotating forever holds only its current chunk's streams)."""
        for handle, st in list(session.streams.items()):
            if st.archived and st.complete and all(st.id in v.streams for v in session.attached):
                del session.streams[handle]

    def _finish(self, session: Session) -> None:
        """Close the files of the streams of ``session`` that are complete (not under the lock)."""
        for stream in list(session.streams.values()):
            with stream.write_lock:
                with self.cond:
                    done = stream.complete
                if done:
                    _close_stream_files(stream)

    def _destroy(self, session: Session) -> None:
        """Under the lock: no more data will come for ``session``."""
        session.destroyed = True
        for stream in session.streams.values():
            if not stream.closed:
                stream.closed = True
                stream.close_at = None
        self.cond.notify_all()

    # -- ingest: data ------------------------------------------------------

    def serve_data(self, conn: socket.socket) -> None:
        msg_type, body = self._recv(conn, 64)
        msg = wire.decode(msg_type, body)
        if msg[0] != wire.DATA_HELLO:
            raise wire.WireError("a data connection starts with DATA_HELLO")
        with self.cond:
            session = self.sessions.get(msg[1])
        if session is None or not hmac.compare_digest(session.token, msg[2]):
            raise wire.WireError("DATA_HELLO names no session this relay gave out")
        with self.cond:  # each holds a thread and a pipe of up to SPLICE_PIPE_SIZE in flight
            if len(session.data_conns) >= MAX_DATA_CONNECTIONS_PER_SESSION:
                raise wire.WireError(f"more than {MAX_DATA_CONNECTIONS_PER_SESSION} data connections for "
                                     f"session {session.name}")
            session.data_conns.add(conn)  # _take_over shuts it down if its sender comes back
        # Packets go from the socket to their file through a pipe (splice: the
        # kernel moves the pages, Python never copies a packet's body); only the
        # frame header, the index and the packet's header are read here, to be
        # checked before anything is written. A blocking socket whose reads time
        # out (SO_RCVTIMEO) bounds the time one frame may take.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(MID_FRAME_TIMEOUT), 0))
        pipe = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, SPLICE_PIPE_SIZE)
            except OSError:
                pass  # the default pipe size works, in more steps
            fixed = bytearray(wire.PACKET_FRAME.size + PACKET_HEADER_SIZE)
            while True:
                _recv_frame_start(conn, fixed)
                self.receive_packet(session, conn, fixed, pipe)
        finally:
            os.close(pipe[0])
            os.close(pipe[1])
            with self.cond:
                session.data_conns.discard(conn)

    def receive_packet(self, session: Session, conn: socket.socket, fixed: bytearray, pipe) -> None:
        """One PACKET frame whose header, index and packet header are in ``fixed``;
        its remaining bytes are still in ``conn``."""
        handle, offset, size, end, stream_class = wire.packet_frame(fixed)
        head = memoryview(fixed)[wire.PACKET_FRAME.size:]
        stream = session.streams.get(handle)
        if stream is None or stream.kind != wire.KIND_DATA:
            raise wire.WireError(f"packet for unknown stream {handle}")
        if stream.stream_class != stream_class:
            raise wire.WireError(f"packet of stream class {stream_class} in a stream of class {stream.stream_class}")
        with stream.write_lock:
            with self.cond:
                if stream.complete:
                    raise wire.WireError(f"packet for closed stream {stream.name}")
                if conn not in session.data_conns:
                    raise wire.WireError(f"session {session.name} was resumed on another connection")
            out = stream.file
            if out is None or offset != out.written:
                raise wire.WireError(f"packet at offset {offset} of {stream.name}, which has "
                                     f"{out.written if out else 0} bytes")
            try:
                _pwrite_all(stream.splice_fd, head, offset)
                _splice_exact(conn.fileno(), pipe, stream.splice_fd, size - len(head), offset + len(head))
            except BaseException as exc:
                try:
                    os.ftruncate(out.fd, out.written)  # a file always ends on a packet boundary
                except OSError:
                    pass
                if isinstance(exc, OSError) and exc.errno not in (errno.EAGAIN, errno.ECONNRESET, errno.EPIPE):
                    out.write_failed(exc.errno or 0)
                    raise wire.WireError(f"cannot write {stream.path}: {exc.strerror}") from None
                raise
            out.drained(1, size, 0)
            with self.cond:
                stream.committed = out.written
                stream.packets += 1
                stream.last_end = max(stream.last_end, end)
                done = stream.complete  # its close came first, on the control port
                self.cond.notify_all()
            if done:
                _close_stream_files(stream)

    # -- live --------------------------------------------------------------

    def serve_live(self, conn: socket.socket) -> None:
        Viewer(self, conn).serve()

    def visible_sessions(self) -> list[Session]:
        """Under the lock: sessions a viewer may list and attach (not ended, and not
        removed while an attached viewer still reads one)."""
        for sid in [sid for sid, s in self.sessions.items() if s.complete and not s.viewers]:
            del self.sessions[sid]
        return [s for s in self.sessions.values() if not s.complete]


class Viewer:
    """One viewer connection: the sessions it attached, the streams it was told
    about, where it is in each."""

    def __init__(self, relay: Relay, conn: socket.socket):
        self.relay = relay
        self.conn = conn
        self.connected = False
        self.created = False
        self.attached: dict[int, Session] = {}
        self.streams: dict[int, Stream] = {}  # announced, by viewer stream id
        self.position: dict[int, int] = {}
        self.metadata_sent: dict[int, int] = {}  # by trace id
        self.fds: dict[int, int] = {}

    def serve(self) -> None:
        try:
            while True:
                head = wire._recv_exact(self.conn, va.CMD.size)
                size, cmd, _version = va.CMD.unpack(head)
                expected = va.REQUEST_SIZE.get(cmd)
                if expected is None or size != expected:
                    raise wire.WireError(f"viewer command {cmd} with {size} bytes of payload")
                self.conn.settimeout(MID_FRAME_TIMEOUT)  # the payload, then our reply: not forever
                payload = bytes(wire._recv_exact(self.conn, size)) if size else b""
                if cmd != va.CONNECT and not self.connected:
                    raise wire.WireError("viewer command before CONNECT")
                self.conn.sendall(self.handle(cmd, payload))
                self.conn.settimeout(None)
        finally:
            self.detach_all()

    def detach_all(self) -> None:
        with self.relay.cond:
            for session in self.attached.values():
                session.viewers -= 1
                session.attached.discard(self)
            self.attached.clear()
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def handle(self, cmd: int, payload: bytes) -> bytes:
        relay = self.relay
        if cmd == va.CONNECT:
            _vsid, major, minor, ctype = va.CONNECT_MSG.unpack(payload)
            if self.connected or major != va.VIEWER_MAJOR or ctype not in (va.CLIENT_COMMAND,
                                                                           va.CLIENT_NOTIFICATION):
                raise wire.WireError(f"viewer CONNECT {major}.{minor} type {ctype} refused")
            self.connected = True
            return va.CONNECT_MSG.pack(next(relay.ids), va.VIEWER_MAJOR, min(minor, va.VIEWER_MINOR), ctype)
        if cmd == va.CREATE_SESSION:
            self.created = True
            return va.STATUS.pack(va.CREATE_SESSION_OK)
        with relay.cond:
            if cmd == va.LIST_SESSIONS:
                sessions = relay.visible_sessions()
                out = [va.COUNT.pack(len(sessions))]
                for s in sessions:
                    data = sum(1 for st in s.streams.values() if st.kind == wire.KIND_DATA)
                    out.append(va.SESSION.pack(s.id, s.live_timer, s.viewers, data, s.hostname.encode(),
                                               s.name.encode()))
                return b"".join(out)
            if cmd == va.ATTACH_SESSION:
                return self.attach(*va.ATTACH_REQUEST.unpack(payload))
            if cmd == va.DETACH_SESSION:
                (sid,) = va.ID.unpack(payload)
                session = self.attached.pop(sid, None)
                if session is None:
                    return va.STATUS.pack(va.DETACH_UNK)
                session.viewers -= 1
                session.attached.discard(self)
                for st in [st for st in self.streams.values() if st.session is session]:
                    del self.streams[st.id]
                    fd = self.fds.pop(st.id, None)
                    if fd is not None:
                        os.close(fd)
                return va.STATUS.pack(va.DETACH_OK)
            if cmd == va.GET_NEW_STREAMS:
                (sid,) = va.ID.unpack(payload)
                session = self.attached.get(sid)
                if session is None:
                    return va.STATUS_COUNT.pack(va.NEW_STREAMS_ERR, 0)
                new = self.announce(session)
                if new:
                    return va.STATUS_COUNT.pack(va.NEW_STREAMS_OK, len(new)) + b"".join(new)
                status = va.NEW_STREAMS_HUP if session.complete else va.NEW_STREAMS_NO_NEW
                return va.STATUS_COUNT.pack(status, 0)
            if cmd == va.GET_METADATA:
                return self.get_metadata(*va.ID.unpack(payload))
            if cmd == va.GET_NEXT_INDEX:
                return self.next_index(*va.ID.unpack(payload))
        if cmd == va.GET_PACKET:
            return self.get_packet(*va.GET_PACKET_REQUEST.unpack(payload))
        raise wire.WireError(f"unknown viewer command {cmd}")

    def attach(self, sid: int, _offset: int, seek: int) -> bytes:
        if not self.created:
            return va.STATUS_COUNT.pack(va.ATTACH_NO_SESSION, 0)
        session = self.relay.sessions.get(sid)
        if session is None or session.complete:
            return va.STATUS_COUNT.pack(va.ATTACH_UNK, 0)
        if not session.live_timer:
            return va.STATUS_COUNT.pack(va.ATTACH_NOT_LIVE, 0)
        if seek not in (va.SEEK_BEGINNING, va.SEEK_LAST):
            return va.STATUS_COUNT.pack(va.ATTACH_SEEK_ERR, 0)
        if sid not in self.attached:
            self.attached[sid] = session
            session.viewers += 1
            session.attached.add(self)
        new = self.announce(session)
        return va.STATUS_COUNT.pack(va.ATTACH_OK, len(new)) + b"".join(new)

    def announce(self, session: Session) -> list[bytes]:
        """Under the lock: the streams of ``session`` this viewer was not told about
        (metadata streams first), now told. Every stream starts at its first packet."""
        out = []
        # a trace's streams are told once it has metadata: a viewer (babeltrace2) told of a
        # trace whose first metadata request answers nothing never asks again (a new chunk's
        # trace is added before its metadata arrives)
        fresh = [s for s in session.streams.values() if s.id not in self.streams and s.trace.viewer_metadata]
        fresh.sort(key=lambda s: (s.kind != wire.KIND_METADATA, s.id))
        for s in fresh:
            self.streams[s.id] = s
            self.position[s.id] = 0
            self.metadata_sent.setdefault(s.trace.id, 0)
            path = f"{session.hostname}/{os.path.basename(session.directory)}/{s.trace.path}"
            out.append(va.STREAM.pack(s.id, s.trace.id, int(s.kind == wire.KIND_METADATA), path.encode()[:4095],
                                      s.name.encode()))
        if fresh:
            self.relay._prune(session)
        return out

    def flags(self, stream: Stream) -> int:
        flags = 0
        if len(stream.trace.viewer_metadata) > self.metadata_sent.get(stream.trace.id, 0):
            flags |= va.FLAG_NEW_METADATA
        if any(s.id not in self.streams and s.trace.viewer_metadata for s in stream.session.streams.values()):
            flags |= va.FLAG_NEW_STREAM
        return flags

    def get_metadata(self, stream_id: int) -> bytes:
        stream = self.streams.get(stream_id)
        if stream is None or stream.kind != wire.KIND_METADATA:
            return va.METADATA_REPLY.pack(0, va.METADATA_ERR)
        log = stream.trace.viewer_metadata
        sent = self.metadata_sent[stream.trace.id]
        if sent >= len(log):
            return va.METADATA_REPLY.pack(0, va.METADATA_NO_NEW)
        chunk = bytes(log[sent:sent + MAX_METADATA_REPLY])
        self.metadata_sent[stream.trace.id] = sent + len(chunk)
        return va.METADATA_REPLY.pack(len(chunk), va.METADATA_OK) + chunk

    def next_index(self, stream_id: int) -> bytes:
        stream = self.streams.get(stream_id)
        if stream is None or stream.kind != wire.KIND_DATA:
            return va.INDEX.pack(0, 0, 0, 0, 0, 0, 0, va.INDEX_ERR, 0)
        flags = self.flags(stream)
        pos = self.position[stream_id]
        if pos < stream.committed and stream.trace.viewer_metadata:
            size, content, begin, end, discarded, sclass = self._index_at(stream, pos)
            self.position[stream_id] = pos + size // 8
            return va.INDEX.pack(pos, size, content, begin, end, discarded, sclass, va.INDEX_OK, flags)
        if stream.complete:
            return va.INDEX.pack(0, 0, 0, 0, 0, 0, stream.stream_class, va.INDEX_HUP, flags)
        if stream.beacon is not None and stream.beacon >= stream.last_end and pos >= stream.committed \
                and stream.committed >= stream.beacon_end:
            return va.INDEX.pack(0, 0, 0, 0, stream.beacon, 0, stream.stream_class, va.INDEX_INACTIVE, flags)
        return va.INDEX.pack(0, 0, 0, 0, 0, 0, stream.stream_class, va.INDEX_RETRY, flags)

    def _index_at(self, stream: Stream, pos: int) -> tuple:
        """The viewer's index fields of the packet at ``pos`` (sizes in bits), read
        from its header (checked when it was received)."""
        i = PacketIndex.of(os.pread(self._fd(stream), PACKET_HEADER_SIZE, pos))
        return 8 * i.packet_size, 8 * i.content_size, i.timestamp_begin, i.timestamp_end, i.events_discarded, \
            i.stream_id

    def _fd(self, stream: Stream) -> int:
        fd = self.fds.get(stream.id)
        if fd is None:
            fd = os.open(stream.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            self.fds[stream.id] = fd
        return fd

    def get_packet(self, stream_id: int, offset: int, length: int) -> bytes:
        with self.relay.cond:
            stream = self.streams.get(stream_id)
            if stream is None or stream.kind != wire.KIND_DATA:
                return va.PACKET_REPLY.pack(va.PACKET_ERR, 0, 0)
            flags = self.flags(stream)
            committed = stream.committed
            complete = stream.complete
        if offset >= committed and complete:
            return va.PACKET_REPLY.pack(va.PACKET_EOF, 0, flags)
        if length == 0 or length > MAX_VIEWER_READ or offset + length > committed:
            return va.PACKET_REPLY.pack(va.PACKET_ERR, 0, flags)
        data = os.pread(self._fd(stream), length, offset)
        if len(data) != length:
            return va.PACKET_REPLY.pack(va.PACKET_ERR, 0, flags)
        return va.PACKET_REPLY.pack(va.PACKET_OK, length, flags) + data


def _open_stream_files(stream: Stream, truncate: bool) -> None:
    """Open a data stream's file (``truncate``: a new one; else carry on after its last whole packet)."""
    stream.file = StreamFile(stream.trace.directory, stream.name, truncate=truncate, indexed=True)
    stream.committed = stream.file.written
    # splice() refuses an O_APPEND file: a second description of the same
    # file (no path lookup), written at explicit offsets
    stream.splice_fd = os.open(f"/proc/self/fd/{stream.file.fd}", os.O_WRONLY | os.O_CLOEXEC)


def _close_stream_files(stream: Stream) -> None:
    """Sync and close a stream's file (under its write lock: no packet is being written)."""
    if stream.file is not None and stream.file.fd >= 0:
        stream.file.sync()
        stream.file.close()
    if stream.splice_fd >= 0:
        os.close(stream.splice_fd)
        stream.splice_fd = -1


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _recv_frame_start(conn: socket.socket, buf: bytearray) -> None:
    """Fill ``buf`` from a blocking socket with a receive timeout: waiting for a
    frame to begin may last forever (an idle session), a frame begun may not."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        try:
            k = conn.recv_into(view[got:])
        except BlockingIOError:
            if got == 0:
                continue
            raise wire.WireError("a frame stalled midway") from None
        if not k:
            raise ConnectionError("connection closed")
        got += k


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view = view[done:]
        offset += done


def _splice_exact(sock_fd: int, pipe, out_fd: int, n: int, offset: int) -> None:
    """Move ``n`` bytes from a socket to a file at ``offset`` through ``pipe``, in the kernel."""
    pipe_r, pipe_w = pipe
    while n:
        moved = os.splice(sock_fd, pipe_w, min(n, SPLICE_PIPE_SIZE), flags=os.SPLICE_F_MOVE)
        if moved == 0:
            raise ConnectionError("connection closed mid-packet")
        left = moved
        while left:
            done = os.splice(pipe_r, out_fd, left, offset_dst=offset, flags=os.SPLICE_F_MOVE)
            left -= done
            offset += done
        n -= moved


# ---------------------------------------------------------------------------
# entry point


def _log(msg: str) -> None:
    print(f"ust-relayd: {msg}", file=sys.stderr, flush=True)


def write_pid_file(path: str) -> None:
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ust-relayd", description="the ust relay daemon: receives trace streams "
                                "from ust consumers and serves them live to LTTng viewers")
    p.add_argument("-C", "--control-port", default=f"tcp://0.0.0.0:{DEFAULT_CONTROL_PORT}", metavar="URL",
                   help=f"control port (default tcp://0.0.0.0:{DEFAULT_CONTROL_PORT})")
    p.add_argument("-D", "--data-port", default=f"tcp://0.0.0.0:{DEFAULT_DATA_PORT}", metavar="URL",
                   help=f"data port (default tcp://0.0.0.0:{DEFAULT_DATA_PORT})")
    p.add_argument("-L", "--live-port", default=f"tcp://localhost:{DEFAULT_LIVE_PORT}", metavar="URL",
                   help=f"live viewer port (default tcp://localhost:{DEFAULT_LIVE_PORT})")
    p.add_argument("-o", "--output", default=os.path.join(os.path.expanduser("~"), "ust-traces"), metavar="DIR",
                   help="where traces are written (default ~/ust-traces)")
    p.add_argument("-d", "--daemonize", action="store_true", help="detach and run in the background")
    p.add_argument("--pid-file", help=f"pid file (default <rundir>/{PID_NAME})")
    p.add_argument("--log", help="log file with --daemonize (default <rundir>/relayd.log)")
    args = p.parse_args(argv)
    try:
        relay = Relay(args.output,
                      parse_tcp_url(args.control_port, "0.0.0.0", DEFAULT_CONTROL_PORT),
                      parse_tcp_url(args.data_port, "0.0.0.0", DEFAULT_DATA_PORT),
                      parse_tcp_url(args.live_port, "localhost", DEFAULT_LIVE_PORT))
        relay.listen()
    except (UstError, OSError) as exc:
        print(f"ust-relayd: error: {exc}", file=sys.stderr)
        return 1
    # Handlers before anything else is served: a SIGTERM at any moment stops us.
    # The wake-up descriptor makes a signal wake the main loop's select even if a
    # connection thread took it, so the handler runs without waiting for traffic.
    def on_signal(signum, frame):
        if not relay.stopping.is_set():
            # A stop must end: if something still blocks it after STOP_WATCHDOG, the
            # log gets every thread's stack (for the bug report) and we exit 1.
            faulthandler.dump_traceback_later(STOP_WATCHDOG, exit=True)
        relay.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.set_wakeup_fd(relay.wake_w, warn_on_full_buffer=False)
    rundir = paths.user_rundir()
    pid_file = os.path.abspath(args.pid_file) if args.pid_file else os.path.join(rundir, PID_NAME)
    urls = relay.urls()
    print(f"ust-relayd: control {urls['control']} data {urls['data']} live {urls['live']} "
          f"output {relay.output}", flush=True)
    if args.daemonize:
        from ust.daemon.sessiond.main import _daemonize

        _daemonize(args.log or os.path.join(rundir, "relayd.log"), rundir)
    elif not args.pid_file:
        paths.ensure_private_dir(rundir)
    write_pid_file(pid_file)
    try:
        relay.serve()
    finally:
        try:
            os.unlink(pid_file)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
