"""LTTng's live viewer protocol (lttng-relayd's live port), as its viewers speak it.

Learnt from lttng-tools' ``lttng-viewer-abi.h`` and babeltrace2's
``lttng-live`` source; written anew. Every integer is big-endian, every
structure byte-packed. A request is a command header (``data_size`` u64,
``cmd`` u32, ``cmd_version`` u32) followed by ``data_size`` bytes of payload;
each command has exactly one reply, whose layout the command fixes.
"""

from __future__ import annotations

import struct

VIEWER_MAJOR = 2
VIEWER_MINOR = 4  # what babeltrace2 2.0 speaks: DETACH exists, no trace chunks

PATH_MAX = 4096
NAME_MAX = 255
HOST_NAME_MAX = 64

# commands
CONNECT = 1
LIST_SESSIONS = 2
ATTACH_SESSION = 3
GET_NEXT_INDEX = 4
GET_PACKET = 5
GET_METADATA = 6
GET_NEW_STREAMS = 7
CREATE_SESSION = 8
DETACH_SESSION = 9

# flags of GET_NEXT_INDEX and GET_PACKET replies
FLAG_NEW_METADATA = 1 << 0
FLAG_NEW_STREAM = 1 << 1

ATTACH_OK, ATTACH_ALREADY, ATTACH_UNK, ATTACH_NOT_LIVE, ATTACH_SEEK_ERR, ATTACH_NO_SESSION = range(1, 7)
INDEX_OK, INDEX_RETRY, INDEX_HUP, INDEX_ERR, INDEX_INACTIVE, INDEX_EOF = range(1, 7)
PACKET_OK, PACKET_RETRY, PACKET_ERR, PACKET_EOF = range(1, 5)
METADATA_OK, METADATA_NO_NEW, METADATA_ERR = range(1, 4)
CLIENT_COMMAND, CLIENT_NOTIFICATION = 1, 2
SEEK_BEGINNING, SEEK_LAST = 1, 2
NEW_STREAMS_OK, NEW_STREAMS_NO_NEW, NEW_STREAMS_ERR, NEW_STREAMS_HUP = range(1, 5)
CREATE_SESSION_OK, CREATE_SESSION_ERR = 1, 2
DETACH_OK, DETACH_UNK, DETACH_ERR = 1, 2, 3

CMD = struct.Struct("!QII")  # data_size, cmd, cmd_version
CONNECT_MSG = struct.Struct("!QIII")  # viewer_session_id, major, minor, type
SESSION = struct.Struct(f"!QIII{HOST_NAME_MAX}s{NAME_MAX}s")  # id, live_timer, clients, streams, host, name
COUNT = struct.Struct("!I")
ATTACH_REQUEST = struct.Struct("!QQI")  # session_id, offset, seek
STATUS_COUNT = struct.Struct("!II")  # status, streams_count (ATTACH and GET_NEW_STREAMS replies)
STREAM = struct.Struct(f"!QQI{PATH_MAX}s{NAME_MAX}s")  # id, ctf_trace_id, metadata_flag, path, channel
ID = struct.Struct("!Q")  # GET_NEXT_INDEX, GET_METADATA, GET_NEW_STREAMS, DETACH requests
INDEX = struct.Struct("!QQQQQQQII")  # offset, packet_size, content_size, ts_begin, ts_end, discarded,
#                                      stream_id (class), status, flags
GET_PACKET_REQUEST = struct.Struct("!QQI")  # stream_id, offset, len
PACKET_REPLY = struct.Struct("!III")  # status, len, flags
METADATA_REPLY = struct.Struct("!QI")  # len, status
STATUS = struct.Struct("!I")

# The payload size of each command's request: anything else is a protocol error.
REQUEST_SIZE = {
    CONNECT: CONNECT_MSG.size,
    LIST_SESSIONS: 0,
    ATTACH_SESSION: ATTACH_REQUEST.size,
    GET_NEXT_INDEX: ID.size,
    GET_PACKET: GET_PACKET_REQUEST.size,
    GET_METADATA: ID.size,
    GET_NEW_STREAMS: ID.size,
    CREATE_SESSION: 0,
    DETACH_SESSION: ID.size,
}


def cstr(data: bytes) -> str:
    """A fixed-size C string field as text (up to its first NUL)."""
    return data.split(b"\0", 1)[0].decode(errors="replace")


def request(cmd: int, payload: bytes = b"") -> bytes:
    return CMD.pack(len(payload), cmd, 0) + payload
