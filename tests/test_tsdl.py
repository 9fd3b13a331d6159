"""The TSDL parser."""

import pytest

from ust.ctf import tsdl
from ust.errors import TraceFormatError

from reader_support import FIXTURES

HEAD = "/* CTF 1.8 */\ntypealias integer { size = 32; align = 8; signed = false; } := unsigned int;\n" \
       "trace { major = 1; minor = 8; byte_order = be; };\n"


def test_fixture_metadata_packetized():
    for md_path in FIXTURES.rglob("metadata"):
        md = tsdl.read_metadata_file(str(md_path))
        assert md.byte_order == "le" and md.uuid and len(md.uuid) == 16
        assert md.clocks["monotonic"].freq == 1_000_000_000
        sc = md.streams[0]
        assert sc.packet_context.field("cpu_id").size == 32
        assert md.env["hostname"] == "vm"


def test_types_and_aliases():
    md = tsdl.parse(HEAD + """
    enum color : unsigned int { RED, GREEN = 5, "BLUE" = 10 ... 20, NEXT };
    struct pair { unsigned int a; integer { size = 3; align = 1; signed = true; base = hex; } b; } align(64);
    stream { id = 0; event.header := struct { unsigned int id; }; };
    event { name = "e"; id = 3; fields := struct {
        enum color c;
        struct pair p;
        string s;
        unsigned int n;
        unsigned int seq[n];
        unsigned int arr[2][3];
        variant <c> { string RED; unsigned int GREEN; } v;
        floating_point { exp_dig = 11; mant_dig = 53; byte_order = le; align = 8; } d;
    }; };
    """)
    ev = md.streams[0].events[3]
    f = dict(ev.fields.fields)
    assert f["c"].mappings == [("RED", 0, 0), ("GREEN", 5, 5), ("BLUE", 10, 20), ("NEXT", 21, 21)]
    assert f["c"].container.byte_order == "be"
    assert f["p"].min_align == 64 and f["p"].field("b").base == 16 and f["p"].field("b").signed
    assert isinstance(f["seq"], tsdl.SequenceType) and f["seq"].length_ref == "n"
    assert isinstance(f["arr"], tsdl.ArrayType) and f["arr"].length == 2 and f["arr"].element.length == 3
    assert isinstance(f["v"], tsdl.VariantType) and [n for n, _ in f["v"].options] == ["RED", "GREEN"]
    assert f["d"].byte_order == "le" and f["d"].size == 64


@pytest.mark.parametrize("text, where", [
    ("trace { major = 1; ", "end of metadata"),
    ("trace { major = 1; }; stream { id = 0; event.header := struct { nosuchtype x; }; };", "unknown type"),
    ("trace { byte_order = sideways; };", "byte_order"),
    ("trace { major = 1; }; event { name = \"x\"; fields := struct { integer { size = 0; } a; }; };", "size"),
    ("trace { major = 1; }; @", "unexpected character"),
    ("trace { major = 1; }; /* never closed", "unterminated"),
])
def test_errors_name_offset(text, where):
    with pytest.raises(TraceFormatError, match=where) as ei:
        tsdl.parse("/* CTF 1.8 */\n" + text, "meta")
    assert ei.value.path == "meta"


def test_packetized_truncated():
    data = (FIXTURES / "ust-pid").rglob("metadata").__next__().read_bytes()
    with pytest.raises(TraceFormatError, match="truncated") as ei:
        tsdl.unpacketize(data[:100], "m")
    assert ei.value.offset == 0


def test_deep_nesting_is_an_error_not_a_crash():
    text = HEAD + "event { name = \"e\"; fields := " + "struct { " * 500 + "unsigned int x;" + " } y;" * 499 + \
        " }; };"
    with pytest.raises(TraceFormatError):
        tsdl.parse(text)


def test_clock_offset_not_an_integer_is_a_format_error():
    # found by test_reader_fuzz: an identifier where the offset's integer was
    import pytest

    from ust.ctf.tsdl import parse
    from ust.errors import TraceFormatError

    text = '/* CTF 1.8 */\ntrace { major = 1; minor = 8; byte_order = le; };\n' \
           'clock { name = "monotonic"; freq = 1000000000; offset = _1795885630359539625; };\n'
    with pytest.raises(TraceFormatError, match="bad clock offset"):
        parse(text)
