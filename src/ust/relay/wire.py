"""The ingest protocol: what consumers send to ust-relayd (docs/relay.md).

Every frame, in both directions (integers big-endian)::

    magic    4 bytes  b"USTR"
    version  uint16   WIRE_VERSION
    type     uint16   one of the message types below
    length   uint32   size of the body, at most MAX_BODY

A body is a fixed part (``struct`` formats below) followed, for some types,
by length-prefixed strings (uint16 length, UTF-8) and then raw bytes (the
rest of the body). Everything is checked here before the relay acts on it:
``decode`` returns a typed message or raises ``WireError`` (one line), after
which the relay answers with an error when it can and closes the connection.

Control connection (``-C`` port), one reply per request::

    CREATE_SESSION  live_timer_us u32, created u64 (unix s), flags u32 (1: RESUME),
                    identity (16 bytes, the sender's), name, hostname
                      -> OK session_id u64 + token (16 bytes) for data connections
                    RESUME (a sender reconnecting): carry on in the directory this
                    identity had, if the relay has it, else a new one
    ADD_STREAM      session u64, handle u64, stream_class u64, kind u8 (0 data, 1 metadata),
                    trace path (relative, '/'-separated), file name
                      -> OK size u64: bytes the stream's file already has (resumed), where
                         its next packet goes
    METADATA        session u64, handle u64 (a metadata stream), then the whole TSDL text -> OK
    BEACON          session u64, handle u64, timestamp u64 (nothing to send up to there),
                    [end u64: where the stream's file ends once every packet sent before
                    it arrived; optional] -> OK. The relay applies a beacon only once its
                    file is that long: the packets travel on another connection, and a
                    beacon must not let viewers move past a packet still on its way (or
                    lost in a broken connection and sent again after a RESUME)
    CLOSE_STREAM    session u64, handle u64, packets u64 (how many were sent on data) -> OK
    DESTROY_SESSION session u64 -> OK
    ARCHIVE_CHUNK   session u64, chunk (the finished chunk's directory: "" for the session's
                    own, else one name), archive (one name)
                      -> OK, then the archive's directory on the relay (UTF-8): once every
                         stream of the chunk has all its packets, ``<session>/[<chunk>/]ust``
                         is moved to ``<session>/archives/<archive>/ust`` (a rotation, as
                         lttng-relayd lays out trace chunks)

Data connections (``-D`` port), no replies (an error closes it); a session
may have several (at most 16: the relay receives each on a thread of its
own), and a stream's packets all take the same one, so they arrive in order::

    DATA_HELLO      session u64, token (16 bytes)
    PACKET          handle u64, offset u64, packet_size u64, content_size u64 (bytes),
                    timestamp_begin u64, timestamp_end u64, events_discarded u64,
                    stream_class u64, then the packet's bytes

The index fields of a PACKET must agree with the packet's own header and
context (magic, sizes, timestamps, discarded count, stream class), and
``offset`` must be where the stream's file ends: the relay checks them all.
"""

from __future__ import annotations

import re
import socket
import struct
from ust.ctf.writer import PACKET_HEADER_SIZE, PacketIndex
from ust.errors import UstError

MAGIC = b"USTR"
WIRE_VERSION = 1
HEADER = struct.Struct("!4sHHI")
MAX_BODY = 64 << 20  # a packet (a sub-buffer) of up to 64 MiB, the metadata of a huge program
MAX_NAME = 255
MAX_SESSION_NAME = 200  # <name>-<YYYYMMDD-HHMMSS>[-N] is one directory name of at most 255 bytes
MAX_HOSTNAME = 64
MAX_PATH_PARTS = 8
TOKEN_SIZE = 16

CREATE_SESSION = 1
ADD_STREAM = 2
METADATA = 3
BEACON = 4
CLOSE_STREAM = 5
DESTROY_SESSION = 6
ARCHIVE_CHUNK = 7
DATA_HELLO = 10
PACKET = 11
REPLY = 100

STATUS_OK = 0
STATUS_ERROR = 1

KIND_DATA = 0
KIND_METADATA = 1

_CREATE = struct.Struct(f"!IQI{16}s")
FLAG_RESUME = 1
IDENTITY_SIZE = 16
_ADD_STREAM = struct.Struct("!QQQB")
_SESSION_HANDLE = struct.Struct("!QQ")
_BEACON = struct.Struct("!QQQ")
_BEACON_END = struct.Struct("!Q")
_CLOSE = struct.Struct("!QQQ")
_SESSION = struct.Struct("!Q")
_HELLO = struct.Struct(f"!Q{TOKEN_SIZE}s")
INDEX = struct.Struct("!QQQQQQQQ")  # handle, offset, packet_size, content_size, ts_begin, ts_end, discarded, class
PACKET_FRAME = struct.Struct(HEADER.format + INDEX.format[1:])  # a PACKET frame's header and index, one unpack
_REPLY = struct.Struct("!IQ")  # status, value (session id)

# Names that become one directory or file name: no '/', no NUL, no leading
# '.', nothing unprintable, bounded.
_PART = re.compile(r"[A-Za-z0-9_+,=-][A-Za-z0-9_+,.=-]*\Z")


class WireError(UstError):
    """A frame or a field that breaks the protocol (one line)."""


def check_part(text: str, what: str, limit: int = MAX_NAME) -> str:
    """``text`` as one directory or file name, or WireError."""
    if not isinstance(text, str) or not 0 < len(text) <= limit or not _PART.match(text):
        raise WireError(f"invalid {what}: {text[:80]!r}" if isinstance(text, str) else f"invalid {what}")
    return text


def check_path(text: str, what: str = "trace path") -> str:
    """A relative '/'-separated path of valid parts (no '..', no absolute path)."""
    if not isinstance(text, str) or len(text) > 1024:
        raise WireError(f"invalid {what}")
    parts = text.split("/")
    if not 0 < len(parts) <= MAX_PATH_PARTS:
        raise WireError(f"invalid {what}: {text[:80]!r}")
    for p in parts:
        check_part(p, what)
    return text


def packet_index(data, length: int | None = None) -> PacketIndex:
    """The index of a whole valid packet read from its own header and context
    (``data`` begins with them; ``length``: the packet's size, default len(data)),
    or WireError."""
    length = len(data) if length is None else length
    try:
        index = PacketIndex.of(data)
    except ValueError as exc:
        raise WireError(str(exc)) from None
    if index.packet_size != length or not PACKET_HEADER_SIZE <= index.content_size <= index.packet_size \
            or index.timestamp_begin > index.timestamp_end:
        raise WireError("packet header does not describe a whole packet of this size")
    return index


def packet_frame(fixed) -> tuple[int, int, int, int, int]:
    """(handle, offset, packet size, timestamp_end, stream class) of the PACKET frame
    whose first ``PACKET_FRAME.size + PACKET_HEADER_SIZE`` bytes (its header, its
    index, the packet's header and context) are ``fixed``; every field checked, the
    index against the packet's own header (WireError)."""
    (magic, version, msg_type, length, handle, offset, *sent) = PACKET_FRAME.unpack_from(fixed)
    if magic != MAGIC or version != WIRE_VERSION:
        raise WireError("not a ust relay frame of this version")
    if msg_type != PACKET:
        raise WireError(f"message type {msg_type} does not belong on the data port")
    size = length - INDEX.size
    if not PACKET_HEADER_SIZE <= size <= MAX_BODY:
        raise WireError(f"packet of {size} bytes")
    if tuple(sent) != wire_index(packet_index(memoryview(fixed)[PACKET_FRAME.size:], size)):
        raise WireError("packet index does not match the packet's header")
    return handle, offset, size, sent[3], sent[5]


def wire_index(index: PacketIndex) -> tuple:
    """What a PACKET frame carries of an index, after the handle and offset."""
    return (index.packet_size, index.content_size, index.timestamp_begin, index.timestamp_end,
            index.events_discarded, index.stream_id)


# ---------------------------------------------------------------------------
# encoding


def frame(msg_type: int, body: bytes = b"") -> bytes:
    return HEADER.pack(MAGIC, WIRE_VERSION, msg_type, len(body)) + body


def _str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def create_session(name: str, hostname: str, live_timer_us: int, created: int, identity: bytes = bytes(16),
                   resume: bool = False) -> bytes:
    return frame(CREATE_SESSION, _CREATE.pack(live_timer_us, created, FLAG_RESUME if resume else 0, identity)
                 + _str(name) + _str(hostname))


def add_stream(session: int, handle: int, stream_class: int, kind: int, trace_path: str, file_name: str) -> bytes:
    return frame(ADD_STREAM, _ADD_STREAM.pack(session, handle, stream_class, kind) + _str(trace_path)
                 + _str(file_name))


def metadata(session: int, handle: int, text: bytes) -> bytes:
    return frame(METADATA, _SESSION_HANDLE.pack(session, handle) + text)


def beacon(session: int, handle: int, timestamp: int, end: int = 0) -> bytes:
    return frame(BEACON, _BEACON.pack(session, handle, timestamp) + _BEACON_END.pack(end))


def close_stream(session: int, handle: int, packets: int) -> bytes:
    return frame(CLOSE_STREAM, _CLOSE.pack(session, handle, packets))


def destroy_session(session: int) -> bytes:
    return frame(DESTROY_SESSION, _SESSION.pack(session))


def archive_chunk(session: int, chunk: str, archive: str) -> bytes:
    return frame(ARCHIVE_CHUNK, _SESSION.pack(session) + _str(chunk) + _str(archive))


def data_hello(session: int, token: bytes) -> bytes:
    return frame(DATA_HELLO, _HELLO.pack(session, token))


def packet_header(handle: int, offset: int, index: PacketIndex) -> bytes:
    """The frame header and fixed part of a PACKET; the packet's bytes follow."""
    return HEADER.pack(MAGIC, WIRE_VERSION, PACKET, INDEX.size + index.packet_size) + INDEX.pack(
        handle, offset, *wire_index(index))


def send_parts(sock: socket.socket, *parts) -> None:
    """Send the buffers ``parts`` (bytes or any buffer, a ring buffer's packet) in
    order, with as few system calls as the socket takes (sendmsg gathers them)."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def reply(status: int, value: int = 0, extra: bytes = b"", message: str = "") -> bytes:
    return frame(REPLY, _REPLY.pack(status, value) + extra + message.encode()[:1000])


# ---------------------------------------------------------------------------
# decoding


def _recv_exact(sock: socket.socket, n: int, into: bytearray | None = None) -> bytearray:
    buf = into if into is not None else bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n])
        if not k:
            raise ConnectionError("connection closed" if got == 0 else "connection closed mid-frame")
        got += k
    return buf


def recv_frame(sock: socket.socket, max_body: int = MAX_BODY) -> tuple[int, bytearray]:
    """(type, body) of the next frame; WireError for a bad header, ConnectionError at the end."""
    magic, version, msg_type, length = HEADER.unpack(_recv_exact(sock, HEADER.size))
    if magic != MAGIC:
        raise WireError("not a ust relay frame (bad magic)")
    if version != WIRE_VERSION:
        raise WireError(f"relay protocol version {version} is not {WIRE_VERSION}")
    if length > max_body:
        raise WireError(f"frame of {length} bytes is over the {max_body}-byte limit")
    return msg_type, _recv_exact(sock, length)


class _Reader:
    def __init__(self, body: bytearray):
        self.body = body
        self.pos = 0

    def fixed(self, st: struct.Struct) -> tuple:
        if self.pos + st.size > len(self.body):
            raise WireError("message body is too short")
        values = st.unpack_from(self.body, self.pos)
        self.pos += st.size
        return values

    def text(self, what: str, limit: int) -> str:
        (n,) = self.fixed(struct.Struct("!H"))
        if n > limit or self.pos + n > len(self.body):
            raise WireError(f"{what} is too long or cut")
        raw = bytes(self.body[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise WireError(f"{what} is not UTF-8") from None

    def rest(self) -> memoryview:
        view = memoryview(self.body)[self.pos:]
        self.pos = len(self.body)
        return view

    def end(self) -> None:
        if self.pos != len(self.body):
            raise WireError("message body is longer than its type")


def decode(msg_type: int, body: bytearray):
    """The fields of a message, checked: a tuple whose first item is the type.
    (PACKET frames are read by the relay's data path itself, which never holds
    a packet's body in memory.)"""
    r = _Reader(body)
    if msg_type == CREATE_SESSION:
        live, created, flags, identity = r.fixed(_CREATE)
        if flags & ~FLAG_RESUME:
            raise WireError(f"unknown session flags {flags:#x}")
        name = check_part(r.text("session name", MAX_SESSION_NAME), "session name", MAX_SESSION_NAME)
        host = check_part(r.text("host name", MAX_HOSTNAME), "host name", MAX_HOSTNAME)
        r.end()
        return msg_type, name, host, live, created, identity, bool(flags & FLAG_RESUME)
    if msg_type == ADD_STREAM:
        session, handle, stream_class, kind = r.fixed(_ADD_STREAM)
        if kind not in (KIND_DATA, KIND_METADATA):
            raise WireError(f"unknown stream kind {kind}")
        path = check_path(r.text("trace path", 1024))
        name = check_part(r.text("stream file name", MAX_NAME), "stream file name")
        r.end()
        return msg_type, session, handle, stream_class, kind, path, name
    if msg_type == METADATA:
        session, handle = r.fixed(_SESSION_HANDLE)
        text = bytes(r.rest())
        if b"\0" in text:
            raise WireError("metadata text holds a NUL byte")
        return msg_type, session, handle, text
    if msg_type == BEACON:
        values = r.fixed(_BEACON)
        end = r.fixed(_BEACON_END)[0] if r.pos < len(r.body) else 0  # (absent: a first-version sender)
        r.end()
        return (msg_type, *values, end)
    if msg_type == CLOSE_STREAM:
        values = r.fixed(_CLOSE)
        r.end()
        return (msg_type, *values)
    if msg_type == DESTROY_SESSION:
        values = r.fixed(_SESSION)
        r.end()
        return (msg_type, *values)
    if msg_type == ARCHIVE_CHUNK:
        (session,) = r.fixed(_SESSION)
        chunk = r.text("chunk directory", MAX_NAME)
        if chunk:
            check_part(chunk, "chunk directory")
        archive = check_part(r.text("archive name", MAX_NAME), "archive name")
        r.end()
        return msg_type, session, chunk, archive
    if msg_type == DATA_HELLO:
        values = r.fixed(_HELLO)
        r.end()
        return (msg_type, *values)
    if msg_type == REPLY:
        status, value = r.fixed(_REPLY)
        return msg_type, status, value, bytes(r.rest())
    raise WireError(f"unknown message type {msg_type}")
