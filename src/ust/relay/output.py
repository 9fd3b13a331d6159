"""A network stream output: the consumer core's outputs for a trace streamed to
ust-relayd (docs/relay.md, docs/consumer.md "How the next issues plug in").

``RelaySession`` is one session's link to a relay, shared by the traces of
that session in one consumer: a control and a data connection, and what the
relay must be told again after a reconnection (the streams, the last
metadata of each trace). ``RelayTraceOutput`` and ``RelayStreamOutput`` are
a trace's and a stream's outputs over it.

Never a hang of the application nor of the session daemon: the drain engine
is the only thread that talks to the relay, with short timeouts. When the
relay cannot be reached, ``write_packet`` raises OSError: the packet stays
in its ring buffer, the buffer fills, and what does not fit is discarded and
counted by the ring, as for a slow disk. A reconnection is tried at most once
a second; after one, the relay is told the streams and the metadata again
before any packet, and carries on in the same session directory when it
has it (a restarted relay: the files it has, cut back to whole packets).

Packets lost in flight are sent again: ``sendall`` returning only means the
kernel took the bytes, and a connection that breaks (a network cut, a relay
killed) loses what its socket buffers held. So the last ``RETAIN_BYTES`` of
packets sent are kept; after a reconnection the relay says, per stream, how
many bytes it has (the ADD_STREAM reply), and every kept packet past that
is sent again. Only a loss larger than that shows as a gap in
``packet_seq_num`` (babeltrace2 reports discarded packets).
"""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import threading
import time

from ust.consumer.output import StreamOutput, TraceOutput
from ust.ctf.writer import PacketIndex, stream_file_name

from . import wire
from .sender import RelayClient

CONNECT_TIMEOUT = 2.0  # seconds: the drain engine waits at most this for a dead relay
RETRY_PERIOD = 1.0
ARCHIVE_TIMEOUT = 30.0  # s: a rotation waits this long for the relay to have the chunk's packets (it waits 25)
# Packets kept after sending, per session, to send again what a broken connection lost: more
# than a TCP connection holds in flight (the sender's and the receiver's autotuned buffers).
RETAIN_BYTES = 16 << 20


def stream_handle(path: str, name: str, metadata: bool) -> int:
    """A stream's handle on the relay, from what the stream is (its trace path, file name, kind):
    the same in a consumer that replaces a killed one, so that its ADD_STREAMs resume the streams
    its predecessor had made (the relay matches them by handle). 62 bits of a hash."""
    digest = hashlib.blake2b(f"{path}\0{name}\0{int(metadata)}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 2) or 1


class RelaySession:
    def __init__(self, host: str, control_port: int, data_port: int, session: str, hostname: str,
                 live_timer_us: int, created: float, identity: bytes | None = None):
        self.address = (host, control_port, data_port)
        self.session = session
        self.hostname = hostname
        self.live_timer_us = live_timer_us
        self.created = created
        self.lock = threading.RLock()
        self.client: RelayClient | None = None
        self.next_try = 0.0
        # what a (re)connected relay must know, in order: handle -> (trace path, file name,
        # stream class, is metadata); metadata handle -> its last text
        self.streams: dict[int, tuple[str, str, int, bool]] = {}
        self.metadata: dict[int, bytes] = {}
        self.closed_streams: set[int] = set()
        # closed here while the link was down (or its close failed): the relay is told at the
        # reconnection (the stream added again, its kept packets sent again, then closed), or it
        # would keep the stream open for good (viewers waiting on it, an archive waiting for it)
        self.unacked_closes: list[int] = []
        # (handle, offset sent at, packet, index) of the last packets sent, oldest first
        self.sent: collections.deque = collections.deque()
        self.sent_bytes = 0
        self.connections = 0  # successful connections (a test's and a log's figure)
        # A reconnection resumes this session on the relay. An identity given by the session daemon
        # (the same for the session's whole life) lets a consumer that replaces a killed one resume
        # it too, from its first connection: the same session for viewers, the same stream files.
        self.resumes = identity is not None
        self.identity = identity if identity is not None else os.urandom(wire.IDENTITY_SIZE)
        self.error = ""

    def _connected(self, now_or_never: bool = False) -> RelayClient:
        """The client, (re)connecting when due (``now_or_never``: at once, for a command that
        may wait, a rotation); OSError when the relay is unreachable."""
        if self.client is not None:
            return self.client
        now = time.monotonic()
        if now < self.next_try and not now_or_never:
            raise OSError(errno.ENOTCONN, f"relay {self.address[0]} unreachable: {self.error}")
        self.next_try = now + RETRY_PERIOD
        client = None
        try:
            client = RelayClient(*self.address, timeout=CONNECT_TIMEOUT)
            client.create_session(self.session, self.hostname, self.live_timer_us, self.created, self.identity,
                                  resume=self.connections > 0 or self.resumes)
            for handle, (path, name, stream_class, is_meta) in self.streams.items():
                if handle in self.closed_streams and handle not in self.unacked_closes:
                    continue
                client.add_stream(handle, stream_class, path, name, metadata=is_meta)
                if is_meta and handle in self.metadata:
                    client.send_metadata(handle, self.metadata[handle])
            self._send_again(client)
            for handle in self.unacked_closes:  # after their packets: the count includes those sent again
                client.close_stream(handle)
        except (OSError, wire.WireError) as exc:
            if client is not None:
                client.close()
            self.error = str(exc)
            raise OSError(errno.ENOTCONN, f"relay {self.address[0]} unreachable: {exc}") from None
        for handle in self.unacked_closes:
            self.metadata.pop(handle, None)
        self.unacked_closes.clear()
        self.client = client
        self.connections += 1
        self.error = ""
        return client

    def send_packet(self, handle: int, packet, index: PacketIndex) -> None:
        """Send one packet and keep a copy (``RETAIN_BYTES``): see ``_send_again``."""
        with self.lock:
            copy = bytes(packet)  # the ring buffer's memory is only valid during the call
            self.call(lambda c: c.send_packet(handle, copy, index))
            self.sent.append((handle, self.client.offsets[handle] - len(copy), copy, index))
            self.sent_bytes += len(copy)
            while self.sent_bytes > RETAIN_BYTES:
                self.sent_bytes -= len(self.sent.popleft()[2])

    def _send_again(self, client: RelayClient) -> None:
        """After a reconnection: every kept packet of a stream that the relay does not have
        (past the size its ADD_STREAM reply gave), sent again, in order. The relay's file is
        a prefix of what was sent (whole packets, in order), so a packet sent at an offset at
        or past that size never reached the file."""
        relay_has = dict(client.offsets)  # bytes per stream, as the ADD_STREAM replies said
        kept = collections.deque()
        for handle, offset, packet, index in self.sent:
            if handle not in relay_has or offset < relay_has[handle]:
                continue  # a closed stream, or a packet the relay has
            kept.append((handle, client.offsets[handle], packet, index))
            client.send_packet(handle, packet, index)
        # (only once all were sent: a failure midway keeps them all, for the next connection)
        self.sent = kept
        self.sent_bytes = sum(len(p) for _, _, p, _ in kept)

    def _broken(self, exc: Exception) -> OSError:
        """Drop the connection after a failure: the next call reconnects."""
        if self.client is not None:
            self.client.close()
            self.client = None
        self.error = str(exc)
        self.next_try = time.monotonic() + RETRY_PERIOD
        return OSError(errno.EPIPE, f"relay {self.address[0]}: {exc}")

    def connect_now(self) -> None:
        """Reconnect at once if the connection is down (not waiting for the retry period, which
        spares the drain engine): before a rotation, whose closes and archive must reach the
        relay, when a reply slow under load broke the connection a moment ago. OSError if the
        relay cannot be reached."""
        self.call(lambda c: None, now_or_never=True)

    def call(self, action, now_or_never: bool = False) -> None:
        with self.lock:
            client = self._connected(now_or_never)
            try:
                action(client)
            except (OSError, wire.WireError) as exc:
                raise self._broken(exc) from None

    def add_stream(self, path: str, name: str, stream_class: int, metadata: bool = False) -> int:
        with self.lock:
            handle = stream_handle(path, name, metadata)
            while handle in self.streams:  # (the same stream made twice: the relay refuses the second)
                handle = handle % ((1 << 62) - 1) + 1
            self.streams[handle] = (path, name, stream_class, metadata)
            if self.client is not None:
                try:
                    self.client.add_stream(handle, stream_class, path, name, metadata=metadata)
                except (OSError, wire.WireError) as exc:
                    self._broken(exc)  # told again at the reconnection
            return handle

    def send_metadata(self, handle: int, text: bytes) -> None:
        with self.lock:
            self.metadata[handle] = text
            try:
                self.call(lambda c: c.send_metadata(handle, text))
            except OSError:
                pass  # sent again, before any packet, at the reconnection

    def archive_chunk(self, chunk: str, archive: str) -> str:
        """Have the relay archive a finished chunk (its streams closed first); returns the
        archive's directory on the relay. OSError when the relay cannot be reached."""
        answer = []
        # (a link that broke during the switch is tried again at once: its reconnection tells the
        # relay the old streams' closes before the archive request)
        self.call(lambda c: answer.append(c.archive_chunk(chunk, archive, timeout=ARCHIVE_TIMEOUT)),
                  now_or_never=True)
        return answer[0]

    def close_stream(self, handle: int) -> None:
        with self.lock:
            self.closed_streams.add(handle)
            if self.client is not None:
                try:
                    self.client.close_stream(handle)
                    self.metadata.pop(handle, None)
                    return
                except (OSError, wire.WireError) as exc:
                    self._broken(exc)
            if handle not in self.unacked_closes:
                self.unacked_closes.append(handle)  # (its metadata kept: a restarted relay needs it again)

    def destroy(self) -> None:
        with self.lock:
            if self.client is not None:
                try:
                    self.client.destroy()
                except (OSError, wire.WireError):
                    pass
                self.client.close()
                self.client = None


class RelayStreamOutput(StreamOutput):
    def __init__(self, link: RelaySession, path: str, name: str, stream_class: int):
        self.link = link
        self.name = name
        self.path = path
        self.handle = link.add_stream(path, name, stream_class)
        self.packets = 0
        self.bytes_written = 0
        self.last_written = 0.0  # monotonic time of the last packet sent (the live timer's beacons)

    def describe(self) -> str:
        host, ctrl, _ = self.link.address
        return f"net://{host}:{ctrl}/{self.link.session}/{self.path}/{self.name}"

    def write_packet(self, packet, index: PacketIndex) -> None:
        self.link.send_packet(self.handle, packet, index)
        self.packets += 1
        self.bytes_written += index.packet_size
        self.last_written = time.monotonic()
        self.write_succeeded()

    def beacon(self, timestamp: int) -> None:
        """Nothing in this stream until ``timestamp`` (trace clock): the live timer
        of an idle stream, so that viewers move past it."""
        try:
            self.link.call(lambda c: c.beacon(self.handle, timestamp))
        except OSError:
            pass  # a viewer waits a little longer

    def close(self) -> None:
        self.link.close_stream(self.handle)


class RelayTraceOutput(TraceOutput):
    """A trace streamed to a relay: ``path`` is its place in the session's tree
    (``ust/uid/0/64-bit``), as it would be under a local output directory."""

    def __init__(self, link: RelaySession, path: str):
        self.link = link
        self.path = wire.check_path(path)
        self.metadata_handle = link.add_stream(self.path, "metadata", 0, metadata=True)

    def stream(self, channel, cpu: int) -> RelayStreamOutput:
        return RelayStreamOutput(self.link, self.path, stream_file_name(channel.name, cpu), channel.stream_id)

    def write_metadata(self, text: str) -> None:
        self.link.send_metadata(self.metadata_handle, text.encode())

    def close(self) -> None:
        self.link.close_stream(self.metadata_handle)
