"""A client of the live port (LTTng's viewer protocol): what ``ust view --live``
and the tests use to talk to ust-relayd as babeltrace2 does."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from . import viewer_abi as va
from . import wire


@dataclass
class LiveSession:
    id: int
    live_timer: int
    clients: int
    streams: int
    hostname: str
    name: str


@dataclass
class LiveStream:
    id: int
    trace_id: int
    metadata: bool
    path: str
    channel: str


class LiveClient:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(va.request(va.CONNECT, va.CONNECT_MSG.pack(2**64 - 1, va.VIEWER_MAJOR, va.VIEWER_MINOR,
                                                                     va.CLIENT_COMMAND)))
        self.viewer_id, major, self.minor, _ = va.CONNECT_MSG.unpack(self._recv(va.CONNECT_MSG.size))
        if major != va.VIEWER_MAJOR:
            raise wire.WireError(f"relay speaks viewer protocol {major}, not {va.VIEWER_MAJOR}")

    def _recv(self, n: int) -> bytes:
        return bytes(wire._recv_exact(self.sock, n)) if n else b""

    def _streams(self, count: int) -> list[LiveStream]:
        out = []
        for _ in range(count):
            sid, tid, meta, path, chan = va.STREAM.unpack(self._recv(va.STREAM.size))
            out.append(LiveStream(sid, tid, bool(meta), va.cstr(path), va.cstr(chan)))
        return out

    def list_sessions(self) -> list[LiveSession]:
        self.sock.sendall(va.request(va.LIST_SESSIONS))
        (count,) = va.COUNT.unpack(self._recv(va.COUNT.size))
        out = []
        for _ in range(count):
            sid, timer, clients, streams, host, name = va.SESSION.unpack(self._recv(va.SESSION.size))
            out.append(LiveSession(sid, timer, clients, streams, va.cstr(host), va.cstr(name)))
        return out

    def create_session(self) -> int:
        self.sock.sendall(va.request(va.CREATE_SESSION))
        return va.STATUS.unpack(self._recv(va.STATUS.size))[0]

    def attach(self, session_id: int, seek: int = va.SEEK_BEGINNING) -> tuple[int, list[LiveStream]]:
        self.sock.sendall(va.request(va.ATTACH_SESSION, va.ATTACH_REQUEST.pack(session_id, 0, seek)))
        status, count = va.STATUS_COUNT.unpack(self._recv(va.STATUS_COUNT.size))
        return status, self._streams(count)

    def new_streams(self, session_id: int) -> tuple[int, list[LiveStream]]:
        self.sock.sendall(va.request(va.GET_NEW_STREAMS, va.ID.pack(session_id)))
        status, count = va.STATUS_COUNT.unpack(self._recv(va.STATUS_COUNT.size))
        return status, self._streams(count)

    def detach(self, session_id: int) -> int:
        self.sock.sendall(va.request(va.DETACH_SESSION, va.ID.pack(session_id)))
        return va.STATUS.unpack(self._recv(va.STATUS.size))[0]

    def metadata(self, stream_id: int) -> tuple[int, bytes]:
        self.sock.sendall(va.request(va.GET_METADATA, va.ID.pack(stream_id)))
        length, status = va.METADATA_REPLY.unpack(self._recv(va.METADATA_REPLY.size))
        if length > 64 << 20:
            raise wire.WireError(f"relay sent a metadata length of {length}")
        return status, self._recv(length)

    def next_index(self, stream_id: int) -> dict:
        self.sock.sendall(va.request(va.GET_NEXT_INDEX, va.ID.pack(stream_id)))
        (offset, size, content, begin, end, discarded, sclass, status,
         flags) = va.INDEX.unpack(self._recv(va.INDEX.size))
        return {"offset": offset, "packet_size": size, "content_size": content, "timestamp_begin": begin,
                "timestamp_end": end, "events_discarded": discarded, "stream_class": sclass, "status": status,
                "flags": flags}

    def packet(self, stream_id: int, offset: int, length: int) -> tuple[int, int, bytes]:
        self.sock.sendall(va.request(va.GET_PACKET, va.GET_PACKET_REQUEST.pack(stream_id, offset, length)))
        status, n, flags = va.PACKET_REPLY.unpack(self._recv(va.PACKET_REPLY.size))
        if n > 64 << 20:
            raise wire.WireError(f"relay sent a packet length of {n}")
        return status, flags, self._recv(n if status == va.PACKET_OK else 0)

    def close(self) -> None:
        self.sock.close()
