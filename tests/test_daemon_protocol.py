"""The control protocol over socketpair(): framing, fd passing, validation."""

import os
import socket
import struct

import pytest

from ust.daemon import protocol
from ust.daemon.protocol import ConnectionClosed, check, is_name, list_of, one_of, optional, string, uint
from ust.daemon.rules import EventRule, combined_filter, glob_match, parse_loglevel, parse_size
from ust.errors import ProtocolError, SessionError


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_roundtrip(pair):
    a, b = pair
    protocol.send_msg(a, {"cmd": "x", "n": [1, 2, {"k": "é"}]})
    msg, fds = protocol.recv_msg(b)
    assert msg == {"cmd": "x", "n": [1, 2, {"k": "é"}]} and fds == []


def test_fd_passing(pair):
    a, b = pair
    r, w = os.pipe()
    try:
        protocol.send_msg(a, {"cmd": "fd"}, [r, w])
        msg, fds = protocol.recv_msg(b)
        assert len(fds) == 2
        os.write(fds[1], b"hello")
        assert os.read(fds[0], 5) == b"hello"
        for fd in fds:
            os.close(fd)
    finally:
        os.close(r)
        os.close(w)


def test_many_messages_split_reads(pair):
    a, b = pair
    data = b"".join(protocol.encode({"i": i}) for i in range(20))
    for i in range(0, len(data), 7):
        a.sendall(data[i:i + 7])
    for i in range(20):
        assert protocol.recv_msg(b)[0] == {"i": i}


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"XXXX" + struct.pack("!HHI", 1, 0, 2) + b"{}", "bad magic"),
        (protocol.MAGIC + struct.pack("!HHI", 99, 0, 2) + b"{}", "unsupported protocol version 99"),
        (protocol.MAGIC + struct.pack("!HHI", 1, 4, 2) + b"{}", "bad flags"),
        (protocol.MAGIC + struct.pack("!HHI", 1, 0, protocol.MAX_BODY + 1), "too large"),
        (protocol.MAGIC + struct.pack("!HHI", 1, 0, 2) + b"[]", "must be a JSON object"),
        (protocol.MAGIC + struct.pack("!HHI", 1, 0, 2) + b"\xff\xfe", "not UTF-8 JSON"),
    ],
)
def test_malformed(pair, raw, error):
    a, b = pair
    a.sendall(raw)
    with pytest.raises(ProtocolError, match=error):
        protocol.recv_msg(b)


def test_closed_mid_message(pair):
    a, b = pair
    a.sendall(protocol.encode({"cmd": "x"})[:-3])
    a.close()
    with pytest.raises(ConnectionClosed, match="mid-message"):
        protocol.recv_msg(b)


def test_encode_refuses_oversize():
    with pytest.raises(ProtocolError, match="too large"):
        protocol.encode({"x": "a" * (protocol.MAX_BODY + 1)})


def test_schema():
    schema = {"name": is_name, "n?": uint(10), "l?": list_of(string(5)), "m?": one_of("a", "b"), "o?": optional(int)}
    assert check({"name": "s", "n": 3, "l": ["ab"], "m": "a", "o": None}, schema)
    for bad, err in [
        ({}, "missing field 'name'"),
        ({"name": "s", "zz": 1}, "unexpected field 'zz'"),
        ({"name": "a/b"}, "invalid name"),
        ({"name": ""}, "1 to 255"),
        ({"name": "s", "n": True}, "expected an integer, got bool"),
        ({"name": "s", "n": 10}, "0..9"),
        ({"name": "s", "l": ["abcdef"]}, "too long"),
        ({"name": "s", "m": "c"}, "expected one of"),
        ({"name": "s", "o": "x"}, "expected int"),
    ]:
        with pytest.raises(ProtocolError, match=err):
            check(bad, schema)


def test_decl_roundtrip():
    import ust
    from ust.instrument.fields import EventDecl, Field

    d = EventDecl("p:e", (Field("a", ust.int32), Field("b", ust.sequence(ust.uint8)),
                          Field("c", ust.enum(ust.uint8, {"X": 1, "Y": (2, 4)}))), 6)
    j = protocol.decl_to_json(d)
    assert protocol.check_decl(j) is None
    back = protocol.decl_from_json(j)
    assert back.signature() == d.signature() and back.loglevel == 6
    assert protocol.check_decl({**j, "name": "nocolon"}) is not None
    assert protocol.check_decl({**j, "fields": [["a", {"kind": "weird"}]]}) is not None


def test_rules():
    assert glob_match("app:*", "app:x") and not glob_match("app:*", "other:x")
    assert glob_match("*req*", "svc:request") and glob_match("a.b:c", "a.b:c") and not glob_match("a?b", "axb")
    r = EventRule("app:*", "ch", exclusions=("app:b*",), loglevel_type="range", loglevel=4)
    assert r.matches("app:a", 4) and r.matches("app:a", 2)
    assert not r.matches("app:a", 6) and not r.matches("app:beta", 2)
    assert EventRule("x", "ch", loglevel_type="single", loglevel=6).matches("x", 6)
    assert not EventRule("x", "ch", loglevel_type="single", loglevel=6).matches("x", 4)
    f1, f2 = EventRule("x", "c", filter="a > 1"), EventRule("x", "c", filter="b")
    assert combined_filter([f1, f2]) == "(a > 1) || (b)"
    assert combined_filter([f1, EventRule("x", "c")]) is None
    assert parse_loglevel("TRACE_WARNING") == 4 == parse_loglevel("warning") == parse_loglevel(4)
    assert parse_loglevel("ERROR") == 3
    with pytest.raises(SessionError, match="unknown log level"):
        parse_loglevel("LOUD")
    assert parse_size("4M") == 4 << 20 and parse_size("64k") == 65536 and parse_size("4096") == 4096
    assert parse_size("1GiB") == 1 << 30
    with pytest.raises(SessionError, match="invalid size"):
        parse_size("4Q")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_protocol_error(data):
    """Whatever arrives, recv_msg returns a dict or raises ProtocolError: never anything else."""
    a, b = socket.socketpair()
    try:
        a.sendall(data)
        a.close()
        while True:
            try:
                msg, fds = protocol.recv_msg(b)
            except ProtocolError:
                break
            assert isinstance(msg, dict) and fds == []
    finally:
        b.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_any_object_roundtrips(msg):
    a, b = socket.socketpair()
    try:
        protocol.send_msg(a, msg)
        assert protocol.recv_msg(b) == (msg, [])
    finally:
        a.close()
        b.close()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["cmd", "name", "session", "patterns", "zz", "output", "snapshot"]),
                       json_values, max_size=5))
def test_sessiond_handle_never_raises(msg):
    """The request handler answers anything with ok or a one-line error (no daemon needed)."""
    from ust.daemon.sessiond import SessionDaemon

    d = SessionDaemon("/nonexistent", consumer=False)
    reply = d.handle(msg)
    assert isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert "\n" not in reply["error"] and not reply["error"].startswith("internal error"), reply


def test_one_glob_and_one_loglevel_table_serve_the_daemon_and_the_embedded_session(tmp_path):
    """The daemon's rules and ust.Session match names with the same glob (a
    '\\*' is a literal star there too) and read log levels from the same table."""
    from ust.daemon.rules import glob_to_regex
    from ust.instrument import loglevels
    from ust.session import Session

    assert glob_match("a\\*", "a*") and not glob_match("a\\*", "ab")
    s = Session(str(tmp_path / "t"), events=["a\\*", "svc:*"], exclude="svc:x*", loglevel="fatal")
    assert [p.pattern for p in s.patterns] == [glob_to_regex("a\\*").pattern, glob_to_regex("svc:*").pattern]
    assert s.loglevel == loglevels.CRIT == parse_loglevel("FATAL") == parse_loglevel("trace_crit")
    for level in range(15):
        assert parse_loglevel(loglevels.name_of(level)) == loglevels.parse(loglevels.name_of(level)) == level
    assert loglevels.name_of(4) == "TRACE_WARNING" and loglevels.name_of(99) == "99"


def test_every_command_the_client_sends_is_in_the_sessiond_table():
    """The command table is gathered from the modules of sessiond/commands/:
    a group left out (or a name defined twice) would show here."""
    import ast

    import ust.control._client as client
    from ust.daemon.sessiond.commands import COMMANDS, CommandGroup

    tree = ast.parse(open(client.__file__).read())
    where = {"call": 0, "_result": 1}  # the position of the command's name in Client.call / Client._result
    sent = set(client.SLOW_COMMANDS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in where:
            name = node.args[where[node.func.attr]] if len(node.args) > where[node.func.attr] else None
            if isinstance(name, ast.Constant):
                sent.add(name.value)
    assert len(sent) >= 15 and sent <= set(COMMANDS), sent - set(COMMANDS)
    assert all(c.name == name and isinstance(c.schema, dict) and callable(c.run) for name, c in COMMANDS.items())
    group = CommandGroup()
    group.command("twice", {})(lambda daemon, caller: {})
    with pytest.raises(ValueError, match="defined twice"):
        group.command("twice", {})(lambda daemon, caller: {})
