"""The packet and event layout is defined once (ust/_ring/layout.h, ust._ring.LAYOUT):
its users (the TSDL generator, the writer, the reader, the test synthesiser) agree
with it, and babeltrace2 reads what the ring buffer writes as the table says."""

import os
import re
import shutil
import struct

import pytest

from ust.ctf import layout

HAVE_BT2 = shutil.which("babeltrace2") is not None
PACKET_SCOPES = ("packet.header", "packet.context")


def _packet_fields():
    return layout.fields("packet.header") + layout.fields("packet.context")


def test_table_is_the_packed_structs():
    # contiguous, byte-packed, in declaration order: what the C structs are
    at = 0
    for f in _packet_fields():
        assert f.offset == at, f
        assert f.align == 8 and f.size in (1, 2, 4, 8)
        at += f.size * f.count
    assert at == layout.PACKET_HEADER_SIZE
    from ust._ring import PACKET_HEADER_SIZE  # the ring buffer's own constant

    assert at == PACKET_HEADER_SIZE
    assert layout.fields("packet.context")[0].offset == layout.PACKET_CONTEXT_OFFSET
    (tag,) = layout.fields("event.header")
    compact = layout.fields("event.header.compact")
    extended = layout.fields("event.header.extended")
    assert tag.offset == 0 and compact[0].offset == extended[0].offset == tag.size
    assert tag.size * 8 == 16 and layout.EVENT_ID_EXTENDED == (1 << 16) - 1
    assert sum(f.size for f in (tag, *compact)) == 6 and sum(f.size for f in (tag, *extended)) == 14
    assert layout.PACKET_MAGIC == 0xC1FC1FC1


def _metadata():
    from ust.ctf.metadata import StreamClass, TraceInfo, metadata_text
    from ust.ctf.tsdl import parse

    info = TraceInfo(uuid=bytes(range(16)), clock_offset_ns=5, creation_time=0.0)
    return parse(metadata_text(info, [StreamClass(0, "channel0")], []))


def _tsdl_rows(struct_type, scope, base=0):
    """(scope, name, offset, size, count, align, signed, clock) of a byte-aligned struct's fields."""
    from ust.ctf.tsdl import ArrayType, IntType

    rows, at = [], base
    for name, t in struct_type.fields:
        count = 1
        if isinstance(t, ArrayType):
            count, t = t.length, t.element
        assert isinstance(t, IntType) and t.byte_order == "le" and t.align % 8 == 0
        at += -at % (t.align // 8)
        rows.append((scope, name, at, t.size // 8, count, t.align, t.signed, t.clock is not None))
        at += t.size // 8 * count
    return rows


def test_tsdl_generator_declares_the_table():
    md = _metadata()
    sc = md.streams[0]
    rows = _tsdl_rows(md.packet_header, "packet.header")
    rows += _tsdl_rows(sc.packet_context, "packet.context", base=rows[-1][2] + rows[-1][3] * rows[-1][4])
    assert rows == [tuple(f) for f in _packet_fields()]
    # the event header: the id (enum's container) and the variant's two options
    (id_name, id_enum), (_, variant) = sc.event_header.fields
    assert id_name == "id" and id_enum.container.size == 16
    assert dict((lab, (lo, hi)) for lab, lo, hi in id_enum.mappings) == {
        "compact": (0, layout.EVENT_ID_EXTENDED - 1), "extended": (layout.EVENT_ID_EXTENDED,) * 2}
    opts = dict(variant.options)
    for option in ("compact", "extended"):
        assert _tsdl_rows(opts[option], f"event.header.{option}", base=2) == [
            tuple(f) for f in layout.fields(f"event.header.{option}")]


def test_synthesiser_and_reader_agree_with_the_table(tmp_path):
    """_synth writes packets with the table's struct; the reader, from the TSDL, decodes
    the same values (so both follow the table)."""
    from ust.ctf import open_traces
    from ust.ctf._synth import Synth

    s = Synth(str(tmp_path / "t"), packet_size=4096)
    a = s.event_class("t:x", [("_a", "integer { size = 32; align = 8; signed = 0; }", "I")])
    s.write([(1000 + 10 * i, a, (i,)) for i in range(600)], cpu=3)
    (trace,) = open_traces(str(tmp_path / "t"))
    (stream,) = trace.streams
    raw = open(stream.path, "rb").read()
    pk_struct = layout.packet_struct("<")
    names = [f.name for f in _packet_fields()]
    n = 0
    for pk in stream.packets():
        values = dict(zip(names, pk_struct.unpack_from(raw, pk.offset)))
        assert values.pop("uuid") == bytes(pk.header["uuid"]) == trace.uuid
        for name, v in values.items():
            assert (pk.header if name in pk.header else pk.context)[name] == v, name
        n += 1
    assert n > 1


def _bt2_packets(path):
    """babeltrace2's view of each packet (sink.text.details): stream id, begin and end
    clock values, cpu_id, in file order (one stream file)."""
    import subprocess

    out = subprocess.run(["babeltrace2", str(path), "-c", "sink.text.details"], capture_output=True, text=True,
                         check=True).stdout
    packets = []
    for block in out.split("\n\n"):
        m = re.match(r"\[([\d,]+) cycles.*\n\{Trace \d+, Stream class ID \d+, Stream ID (\d+)\}\nPacket (beginning|end)",
                     block)
        if not m:
            continue
        cycles, sid, what = int(m.group(1).replace(",", "")), int(m.group(2)), m.group(3)
        if what == "beginning":
            cpu = re.search(r"cpu_id: (\d+)", block)
            packets.append({"stream_instance_id": sid, "timestamp_begin": cycles,
                            "cpu_id": int(cpu.group(1)) if cpu else None})
        else:
            packets[-1]["timestamp_end"] = cycles
    return packets


@pytest.mark.skipif(not HAVE_BT2, reason="babeltrace2 not installed")
def test_babeltrace2_reads_the_ring_buffers_packets_as_the_table_says(tmp_path):
    """A trace written by the ring buffer (C structs): the raw bytes at the table's offsets
    are what babeltrace2 decodes from the generated metadata."""
    import ust

    tp = ust.tracepoint("layouttest:ev", {"i": ust.uint32, "s": ust.string})
    path = tmp_path / "t"
    with ust.Session(str(path), events=["layouttest:*"], subbuf_size=4096):
        for i in range(400):
            tp(i, "x" * (i % 50))
    files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f != "metadata" and "index" not in d]
    streams = [f for f in files if os.path.getsize(f)]
    assert streams
    for stream in streams:
        raw = open(stream, "rb").read()
        pk_struct = layout.packet_struct("<")
        names = [f.name for f in _packet_fields()]
        mine, at = [], 0
        while at < len(raw):
            v = dict(zip(names, pk_struct.unpack_from(raw, at)))
            assert v["magic"] == layout.PACKET_MAGIC
            mine.append({k: v[k] for k in ("stream_instance_id", "timestamp_begin", "cpu_id", "timestamp_end")})
            at += v["packet_size"] // 8
        single = tmp_path / "one" / os.path.basename(stream)
        single.mkdir(parents=True)
        shutil.copy(os.path.join(os.path.dirname(stream), "metadata"), single / "metadata")
        shutil.copy(stream, single / os.path.basename(stream))
        assert _bt2_packets(single) == mine
