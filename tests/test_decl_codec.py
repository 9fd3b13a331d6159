"""The one declaration codec (ust.daemon.protocol): the wire between agents,
sessiond and consumer, and the embedded session's event-id file, with one
validating decoder whose rules are the declaring side's."""

import json
import os
import socket

import pytest

import ust
from daemon_util import ust_env  # noqa: F401 - fixture
from ust.consumer.events import EventIdFile
from ust.daemon import protocol
from ust.errors import ProtocolError, TraceFormatError
from ust.instrument.fields import EventDecl, Field


def _every_type_decl() -> EventDecl:
    return EventDecl("codec:every", (
        Field("i", ust.int8), Field("u", ust.uint64), Field("h", ust.hex(ust.uint32)),
        Field("f", ust.float32), Field("d", ust.float64), Field("b", ust.boolean),
        Field("s", ust.string), Field("raw", ust.bytes),
        Field("a", ust.array(ust.int16, 3)), Field("q", ust.sequence(ust.float64)),
        Field("e", ust.enum(ust.int8, {"NEG": (-128, -1), "ZERO": 0, "POS": (1, 127)})),
        Field("ae", ust.array(ust.enum(ust.uint8, {"X": 1}), 2)),
    ), 4)


def test_every_declarable_type_roundtrips():
    decl = _every_type_decl()
    data = protocol.decl_to_json(decl)
    assert protocol.check_decl(data) is None
    back = protocol.decl_from_json(json.loads(json.dumps(data)))
    assert back == decl and back.signature() == decl.signature() and back.kind == "tracepoint"
    marker = EventDecl("codec:mark", (Field("msg", ust.string),), 13, "marker", {"format": "%s!"})
    back = protocol.decl_from_json(protocol.decl_to_json(marker))
    assert back == marker and back.extra == {"format": "%s!"}


def _with_field(ftype: dict, name: str = "x") -> dict:
    return {"name": "evil:ev", "loglevel": 6, "kind": "tracepoint", "fields": [[name, ftype]]}


def _int(size=32, signed=True) -> dict:
    return {"kind": "int", "size": size, "signed": signed, "base": 10, "length": 0, "name": ""}


REFUSED = {
    # a field name is written into the TSDL metadata as is: an identifier only
    "metadata injection in a field name": (_with_field(_int(), 'x; }; event { name = "forged"; id = 0'),
                                           "field name must be an identifier"),
    "newline after a field name": (_with_field(_int(), "x\n"), "field name must be an identifier"),
    "duplicate field": ({**_with_field(_int()), "fields": [["x", _int()], ["x", _int()]]}, "duplicate field"),
    "tracepoint name without a provider": ({**_with_field(_int()), "name": "evil"}, "'provider:event'"),
    "tracepoint name with a newline": ({**_with_field(_int()), "name": "evil:ev\n"}, "'provider:event'"),
    "13-bit integer": (_with_field(_int(13)), "8, 16, 32 or 64 bits"),
    "16-bit float": (_with_field({**_int(16), "kind": "float"}), "32 or 64 bits"),
    "array of strings": (_with_field({**_int(0), "kind": "array", "length": 2,
                                      "element": {**_int(0), "kind": "string"}}), "holds numbers"),
    "sequence without element": (_with_field({**_int(0), "kind": "sequence"}), "holds numbers"),
    "empty array": (_with_field({**_int(0), "kind": "array", "element": _int()}), "1 to 65536"),
    "enum without labels": (_with_field({**_int(8), "kind": "enum", "element": _int(8)}), "at least one label"),
    "enum range outside its container": (_with_field({**_int(8, False), "kind": "enum", "element": _int(8, False),
                                                      "mapping": [["BIG", 0, 256]]}), "not a range"),
    "enum range upside down": (_with_field({**_int(8), "kind": "enum", "element": _int(8),
                                            "mapping": [["DOWN", 5, 1]]}), "not a range"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_decoder_refuses_what_no_process_can_declare(case):
    data, why = REFUSED[case]
    error = protocol.check_decl(data)
    assert error is not None and why in error and "\n" not in error
    with pytest.raises(ProtocolError, match="bad tracepoint declaration") as info:
        protocol.decl_from_json(data)
    assert "\n" not in str(info.value)


def test_the_declaring_side_applies_the_same_name_rule():
    with pytest.raises(ValueError, match="'provider:event'"):
        ust.tracepoint("codec:trailing_newline\n", {"x": ust.int32})
    with pytest.raises(ValueError, match="identifier"):
        ust.tracepoint("codec:bad_field", {"x\n": ust.int32})


def test_event_id_file_uses_the_codec_and_reports_a_cut_line(tmp_path):
    path = tmp_path / "ids"
    ids = EventIdFile(path)
    decl = _every_type_decl()
    assert ids.event_id(decl) == 0
    [line] = path.read_text().splitlines()
    assert json.loads(line)["decl"] == protocol.decl_to_json(decl)  # the one encoder
    assert EventIdFile(path).events() == [(0, 0, decl)]
    # A writer killed mid-line, then another process appending after it.
    with open(path, "a") as f:
        f.write(line[: len(line) // 2])
    with pytest.raises(TraceFormatError) as info:
        EventIdFile(path).events()
    message = str(info.value)
    assert str(path) in message and "corrupt event-id entry 1" in message and "\n" not in message
    # ... and a line that parses but declares what no process can
    path.write_text(line + "\n" + json.dumps({"stream_id": 0, "decl": REFUSED["13-bit integer"][0]}) + "\n")
    with pytest.raises(TraceFormatError, match="corrupt event-id entry 1: bad tracepoint declaration"):
        EventIdFile(path).event_id(EventDecl("codec:other", (), 6))


def test_sessiond_refuses_a_registration_that_would_forge_metadata(ust_env):  # noqa: F811 - fixture
    """A field name is written into the consumer's TSDL: an application naming a
    field `x; }; event {...` must not get it there."""
    data, _ = REFUSED["metadata injection in a field name"]
    c = ust_env.client()
    c.ping()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(ust_env.home, "sessiond.sock"))
    try:
        protocol.send_msg(s, {"cmd": "register", "pid": os.getpid(), "uid": os.getuid(), "procname": "evil",
                              "tracepoints": [data], "seq": 1})
        reply, _ = protocol.recv_msg(s)
    finally:
        s.close()
    assert not reply["ok"] and "field name must be an identifier" in reply["error"]
    assert not any(a["pid"] == os.getpid() for a in c.list_apps())
