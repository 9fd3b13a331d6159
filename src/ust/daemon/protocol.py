"""The control protocol: versioned, length-prefixed JSON messages over unix sockets.

Wire format of one message (all integers big-endian)::

    magic    4 bytes  b"UST\\x00"
    version  uint16   PROTOCOL_VERSION
    flags    uint16   0 (reserved, must be 0)
    length   uint32   size of the body, at most MAX_BODY
    body     length bytes of UTF-8 JSON, an object

File descriptors travel as SCM_RIGHTS ancillary data attached to the header
bytes of their message. ``recv_msg`` gathers every descriptor received while
reading one message, so a sender never has to care how the kernel splits it.

Every message is a JSON object. Requests carry ``"cmd"``; replies carry
``"ok": true`` plus the result, or ``"ok": false, "error": "<one line>"``.
Fields are checked with ``check()`` against a small schema before anything
acts on them: a malformed message is answered with an error, it never crashes
a daemon (``ProtocolError`` is the one exception this module raises for bad
input; ``ConnectionClosed`` for a peer that went away).
"""

from __future__ import annotations

import array
import json
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable

from ust.errors import ProtocolError

MAGIC = b"UST\x00"
PROTOCOL_VERSION = 1
HEADER = struct.Struct("!4sHHI")
MAX_BODY = 1 << 20  # 1 MiB: a registration with thousands of tracepoints fits
MAX_FDS = 64
MAX_DEPTH = 32  # nesting of JSON arrays/objects in a body: a declaration needs fewer than 10


class ConnectionClosed(ProtocolError):
    """The peer closed the connection (cleanly or mid-message)."""


class IdleTimeout(ProtocolError):
    """No message started within the idle deadline (the connection is still framed)."""


class InputBudget:
    """A bound on the bytes of large message bodies being received at once, over
    all connections of a daemon: many slow senders of large bodies cannot make
    the daemon allocate more than ``total`` bytes for them. Bodies of at most
    ``small`` bytes (every ordinary request) do not count, so the senders of
    large ones cannot lock anybody out either (connections are capped)."""

    def __init__(self, total: int, small: int = 64 << 10):
        self.total = total
        self.small = small
        self.free = total
        self.lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self.lock:
            if n > self.free:
                return False
            self.free -= n
            return True

    def give(self, n: int) -> None:
        with self.lock:
            self.free += n


# ---------------------------------------------------------------------------
# encoding


def encode(msg: dict) -> bytes:
    """One message, header and body."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(msg).__name__}")
    body = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_BODY:
        raise ProtocolError(f"message too large: {len(body)} bytes, at most {MAX_BODY}")
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, 0, len(body)) + body


def decode_header(raw: bytes) -> int:
    """Check a header, return the body length."""
    magic, version, flags, length = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic: expected {MAGIC!r}, got {magic!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version}, this side speaks {PROTOCOL_VERSION}")
    if flags != 0:
        raise ProtocolError(f"bad flags: expected 0, got {flags:#x}")
    if length > MAX_BODY:
        raise ProtocolError(f"message too large: {length} bytes, at most {MAX_BODY}")
    return length


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_NESTING = re.compile(rb"[\[\]{}]")


def check_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` before decoding it.

    Iterative (strings removed first, then only the brackets are walked), so a
    hostile body of a million ``[`` costs a scan, never the decoder's recursion.
    """
    depth = 0
    for m in _JSON_NESTING.finditer(_JSON_STRING.sub(b"", body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise ProtocolError(f"body nests deeper than {limit} levels")
        else:
            depth -= 1


def decode_body(body: bytes) -> dict:
    try:
        check_depth(body)
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"body is not UTF-8 JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(msg).__name__}")
    return msg


# ---------------------------------------------------------------------------
# sockets


def send_msg(sock: socket.socket, msg: dict, fds: Iterable[int] = ()) -> None:
    """Send one message, with ``fds`` attached (SCM_RIGHTS)."""
    data = encode(msg)
    fds = list(fds)
    if len(fds) > MAX_FDS:
        raise ProtocolError(f"too many descriptors: {len(fds)}, at most {MAX_FDS}")
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        data = data[sent:]
    if data:
        sock.sendall(data)


def close_fds(fds: Iterable[int]) -> None:
    """Close received descriptors, ignoring any already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _wait_readable(sock: socket.socket, deadline: float | None) -> bool:
    if deadline is None:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if poller.poll(left * 1000):
            return True


def _recv_exact(sock: socket.socket, n: int, fds: list[int], first: bool, deadline: float | None = None) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got_bytes = 0
    size = array.array("i").itemsize
    while got_bytes < n:
        if not _wait_readable(sock, deadline):
            if first and not got_bytes:
                raise IdleTimeout("idle for too long")
            raise ProtocolError(f"timed out mid-message ({got_bytes} of {n} bytes)")
        try:
            nread, ancdata, flags, _ = sock.recvmsg_into([view[got_bytes:]], socket.CMSG_SPACE(MAX_FDS * size))
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(cdata[: len(cdata) - (len(cdata) % size)])
                fds.extend(got)
        if flags & getattr(socket, "MSG_CTRUNC", 0):
            raise ProtocolError("descriptors were truncated (too many attached)")
        if not nread:
            if first and not got_bytes:
                raise ConnectionClosed("connection closed")
            raise ConnectionClosed(f"connection closed mid-message ({got_bytes} of {n} bytes)")
        got_bytes += nread
    return bytes(buf)


def recv_msg(sock: socket.socket, idle: float | None = None, read: float | None = None,
             budget: InputBudget | None = None) -> tuple[dict, list[int]]:
    """Receive one message and the descriptors that came with it.

    Raises ``ConnectionClosed`` at end of stream and ``ProtocolError`` for a
    malformed message (the received descriptors are closed then). The caller
    owns the returned descriptors.

    Limits, for a daemon reading a peer it does not trust: ``idle`` seconds for
    a message to start (``IdleTimeout``), ``read`` seconds for a started one to
    complete, and ``budget``, shared by the connections, for its body.
    """
    fds: list[int] = []
    taken = 0
    try:
        start = None if idle is None else time.monotonic() + idle
        raw = _recv_exact(sock, HEADER.size, fds, True, start)
        deadline = None if read is None else time.monotonic() + read
        length = decode_header(raw)
        if budget is not None and length > budget.small:
            if not budget.take(length):
                raise ProtocolError("the daemon is receiving too much at once; try again later")
            taken = length
        body = _recv_exact(sock, length, fds, False, deadline) if length else b""
        return decode_body(body), fds
    except BaseException:
        close_fds(fds)
        raise
    finally:
        if taken:
            budget.give(taken)


def error_reply(message: str) -> dict:
    return {"ok": False, "error": str(message).splitlines()[0] if str(message) else "error"}


def ok_reply(**result: object) -> dict:
    return {"ok": True, **result}


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


# ---------------------------------------------------------------------------
# validation
#
# A schema maps a field name to a spec: a Python type (exact: bool is not an
# int), a tuple of types, or a callable returning an error string or None.
# Names ending in "?" are optional. Unknown fields are rejected, so a typo in
# a client is an error, not a silently ignored option.

NAME_MAX = 255


def is_name(value: object) -> str | None:
    """A session or channel name: 1..255 printable chars, no '/' and no leading '.'."""
    if not isinstance(value, str):
        return f"expected a name (string), got {type(value).__name__}"
    if not 0 < len(value) <= NAME_MAX:
        return f"a name has 1 to {NAME_MAX} characters, got {len(value)}"
    if "/" in value or value.startswith(".") or not value.isprintable() or value != value.strip():
        return f"invalid name {value!r}: no '/', no leading '.', no spaces at the ends"
    return None


def uint(limit: int = 1 << 63) -> object:
    def check_uint(value: object) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"expected an integer, got {type(value).__name__}"
        if not 0 <= value < limit:
            return f"expected an integer in 0..{limit - 1}, got {value}"
        return None

    return check_uint


def list_of(spec: object, max_len: int = 4096) -> object:
    def check_list(value: object) -> str | None:
        if not isinstance(value, list):
            return f"expected a list, got {type(value).__name__}"
        if len(value) > max_len:
            return f"expected at most {max_len} items, got {len(value)}"
        for i, item in enumerate(value):
            err = _check_one(item, spec)
            if err:
                return f"item {i}: {err}"
        return None

    return check_list


def optional(spec: object) -> object:
    def check_optional(value: object) -> str | None:
        return None if value is None else _check_one(value, spec)

    return check_optional


def one_of(*choices: object) -> object:
    def check_choice(value: object) -> str | None:
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            return f"expected one of {', '.join(map(repr, choices))}, got {value!r}"
        return None

    return check_choice


def string(max_len: int = 4096) -> object:
    def check_string(value: object) -> str | None:
        if not isinstance(value, str):
            return f"expected a string, got {type(value).__name__}"
        if len(value) > max_len:
            return f"string too long: {len(value)} characters, at most {max_len}"
        if "\x00" in value:
            return "string contains a NUL character"
        return None

    return check_string


def _check_one(value: object, spec: object) -> str | None:
    if isinstance(spec, type) or isinstance(spec, tuple):
        types = spec if isinstance(spec, tuple) else (spec,)
        if isinstance(value, bool) and bool not in types:
            return f"expected {'/'.join(t.__name__ for t in types)}, got bool"
        if not isinstance(value, types):
            return f"expected {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}"
        return None
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"expected an object, got {type(value).__name__}"
        try:
            check(value, spec)
        except ProtocolError as exc:
            return str(exc)
        return None
    return spec(value)


def check(msg: dict, schema: dict[str, object], ignore: Iterable[str] = ()) -> dict:
    """Validate ``msg`` against ``schema``; return it. Raises ProtocolError."""
    allowed = {k.rstrip("?") for k in schema} | set(ignore)
    for key in msg:
        if key not in allowed:
            raise ProtocolError(f"unexpected field {key!r}")
    for key, spec in schema.items():
        name = key.rstrip("?")
        if name not in msg:
            if key.endswith("?"):
                continue
            raise ProtocolError(f"missing field {name!r}")
        err = _check_one(msg[name], spec)
        if err:
            raise ProtocolError(f"field {name!r}: {err}")
    return msg


# ---------------------------------------------------------------------------
# tracepoint declarations as plain data: the one codec
#
# A declaration crosses processes as
#   {"name": "prov:event", "loglevel": int, "kind": str, "fields": [[name, type], ...], "format"?: str}
# where a type is {"kind", "size", "signed", "base", "length", "name",
# "element"?: type, "mapping"?: [[label, lo, hi], ...]}: from an agent to the
# sessiond and on to the consumer, and from a process of the embedded session
# to the others through its event-id file (ust.consumer.events.EventIdFile).
# Whoever decodes one checks it first (``decl_from_json``): it comes from a
# process that may be hostile, or from a file a crash may have cut. The checks
# are the declaring side's rules (``ust.instrument.fields``: names, sizes,
# element types, enum ranges), so whatever a process can declare passes and
# nothing the metadata generator cannot describe does.

_TYPE_KINDS = ("int", "float", "bool", "string", "bytes", "array", "sequence", "enum")
_SCALAR_NUMBER_KINDS = ("int", "float", "bool", "enum")  # what an array or a sequence holds
MAX_FIELDS = 1024
MAX_ARRAY_LENGTH = 65536  # ust.array()'s bound


def type_to_json(t: object) -> dict:
    out = {"kind": t.kind, "size": t.size, "signed": t.signed, "base": t.base, "length": t.length, "name": t.name}
    if t.element is not None:
        out["element"] = type_to_json(t.element)
    if t.mapping:
        out["mapping"] = [list(m) for m in t.mapping]
    return out


def decl_to_json(decl: object) -> dict:
    return {
        "name": decl.name,
        "loglevel": int(decl.loglevel),
        "kind": decl.kind,
        "fields": [[f.name, type_to_json(f.type)] for f in decl.fields],
        **({"format": decl.extra["format"]} if decl.kind == "marker" and _sendable_format(decl.extra.get("format"))
           else {}),
    }


MAX_MARKER_FORMAT = 4096  # a longer format is not sent: the marker is traced, only its message is not kept


def _sendable_format(fmt: object) -> bool:
    return isinstance(fmt, str) and 0 < len(fmt) <= MAX_MARKER_FORMAT


def _check_type(value: object, depth: int = 0) -> str | None:
    if depth > 2:
        return "field types nest too deep"
    schema = {
        "kind": one_of(*_TYPE_KINDS),
        "size": uint(65),
        "signed": bool,
        "base": one_of(2, 8, 10, 16),
        "length": uint(MAX_ARRAY_LENGTH + 1),
        "name": string(128),
        "element?": lambda v: _check_type(v, depth + 1),
        "mapping?": list_of(lambda m: None if (isinstance(m, list) and len(m) == 3 and isinstance(m[0], str)
                                                and all(isinstance(x, int) and not isinstance(x, bool) for x in m[1:]))
                            else "expected [label, lo, hi]", 4096),
    }
    return _check_one(value, schema) or _type_rule_error(value)


def _type_rule_error(t: dict) -> str | None:
    """What the constructors of ust.instrument.fields would have refused, for a well-formed type."""
    kind, size, element = t["kind"], t["size"], t.get("element")
    if kind in ("int", "enum") and size not in (8, 16, 32, 64):
        return f"an {kind} has 8, 16, 32 or 64 bits, not {size}"
    if kind == "float" and size not in (32, 64):
        return f"a float has 32 or 64 bits, not {size}"
    if kind in ("array", "sequence") and (element is None or element["kind"] not in _SCALAR_NUMBER_KINDS):
        return f"an {kind} holds numbers (int, float, bool, enum)"
    if kind == "array" and t["length"] == 0:
        return "an array has 1 to 65536 elements, not 0"
    if kind == "enum":
        if not t.get("mapping"):
            return "an enum needs at least one label"
        low, high = (-(1 << (size - 1)), (1 << (size - 1)) - 1) if t["signed"] else (0, (1 << size) - 1)
        for label, lo, hi in t["mapping"]:
            if not label or not low <= lo <= hi <= high:
                return f"enum label {label[:300]!r}: {lo}..{hi} is not a range of the {size}-bit container"
    return None


def _check_field(value: object) -> str | None:
    if not isinstance(value, list) or len(value) != 2:
        return "expected [name, type]"
    err = string(255)(value[0])
    return err or _check_type(value[1])


def check_decl(value: object) -> str | None:
    """What is wrong with one declaration in plain data, in one line; None if nothing."""
    err = _check_one(value, {"name": string(512), "loglevel": int, "kind": string(32),
                             "fields": list_of(_check_field, MAX_FIELDS), "format?": string(MAX_MARKER_FORMAT)})
    if err:
        return err
    from ust.instrument.fields import naming_error

    return naming_error(value["name"], (name for name, _ in value["fields"]))


def _type_from_json(d: dict) -> object:
    from ust.instrument.fields import FieldType

    return FieldType(
        d["kind"], d["size"], d["signed"], d["base"],
        element=_type_from_json(d["element"]) if d.get("element") else None,
        length=d["length"],
        mapping=tuple(tuple(m) for m in d.get("mapping", ())),
        name=d["name"],
    )


def decl_from_json(d: object) -> object:
    """The EventDecl ``d`` describes, once checked (ProtocolError: what is wrong, in one line)."""
    from ust.instrument.fields import EventDecl, Field

    err = check_decl(d)
    if err:
        raise ProtocolError(f"bad tracepoint declaration: {err}")
    return EventDecl(d["name"], tuple(Field(n, _type_from_json(t)) for n, t in d["fields"]), d["loglevel"],
                     d["kind"], {"format": d["format"]} if d.get("format") else None)


def decl_key(d: dict) -> str:
    """Identity of a declaration: two apps declaring the same event share one id."""
    return json.dumps([d["name"], d["loglevel"], d["fields"]], sort_keys=True, separators=(",", ":"))
