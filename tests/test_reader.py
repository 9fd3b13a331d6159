"""The reader API, and its errors on bad input."""

import os

import pytest

import ust.ctf
from ust.errors import TraceFormatError

from reader_support import FIXTURE_NAMES, FIXTURES, copy_fixture, run_cli


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_read_trace_counts_and_order(name):
    events = list(ust.ctf.read_trace(FIXTURES / name))
    expected = (FIXTURES / f"{name}.expected.txt").read_bytes().splitlines()
    assert len(events) == len(expected)
    ts = [e.timestamp for e in events]
    assert ts == sorted(ts)
    for ev, line in zip(events, expected):
        assert line.startswith(b"[%020d] " % ev.cycles)
        assert (" " + ev.name + ": ").encode() in line


def test_event_values():
    ev = next(iter(ust.ctf.read_trace(FIXTURES / "ust-uid-contexts")))
    assert ev.name == "demo:ints"
    assert ev.cpu_id == 1
    assert ev.fields == {"i8": 0, "u8": 0, "i16": 0, "u16": 0, "i32": 0, "u32": 0, "i64": 0,
                         "u64hex": 0xDEADBEEF00000000}
    assert ev.context["vpid"] == 7779 and ev.context["procname"] == "appx"
    # ns from the Epoch: the clock offset applied
    assert ev.timestamp == 1795885630359539625 + 262669144518 == ev.cycles + 1795885630359539625


def test_all_field_kinds():
    evs = {}
    for ev in ust.ctf.read_trace(FIXTURES / "ust-uid-contexts"):
        evs.setdefault(ev.name, ev)
    assert evs["demo:text"].fields["str"] == "t1-i0-héllo"
    assert evs["demo:text"].fields["seqtext"] == "t1-i0-héllo"
    assert evs["demo:arrays"].fields["arr4"] == [1, -2, 3, -4]
    assert evs["demo:enums"].fields["color"] == 0
    assert evs["demo:floats"].fields == {"f32": 0.0, "f64": 0.0}


def test_discarded_events_callback():
    seen = []
    list(ust.ctf.read_trace(FIXTURES / "ust-uid-contexts", on_discarded=seen.append))
    assert [(d.count, d.packets) for d in seen] == [(540, False)]


def test_per_pid_traces_merge():
    evs = list(ust.ctf.read_trace(FIXTURES / "ust-pid"))
    traces = {e.trace.env["vpid"] for e in evs}
    assert traces == {15772, 15777}


def test_compact_header_wraparound(tmp_path):
    from ust.ctf._synth import Synth
    s = Synth(tmp_path / "t", header="compact", packet_size=4096)
    c = s.event_class("x:y", [("_v", "integer { size = 64; align = 8; signed = 0; }", "Q")])
    ts = [1000 + i * ((1 << 26) + 12345) for i in range(500)]  # several 27-bit wraps
    s.write((t, c, (t,)) for t in ts)
    got = list(ust.ctf.read_trace(tmp_path / "t"))
    assert [e.cycles for e in got] == ts
    assert all(e.fields["v"] == e.cycles for e in got)


# --------------------------------------------------------------------------
# bad input: one TraceFormatError naming the file and byte
# --------------------------------------------------------------------------


def _read_all(path):
    return sum(1 for _ in ust.ctf.read_trace(path))


def test_missing_directory(tmp_path):
    with pytest.raises(TraceFormatError, match="no such file"):
        _read_all(tmp_path / "nope")


def test_not_ctf(tmp_path):
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(TraceFormatError):
        _read_all(tmp_path / "file.txt")
    with pytest.raises(TraceFormatError, match="no CTF trace"):
        _read_all(tmp_path)
    (tmp_path / "metadata").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(200))
    with pytest.raises(TraceFormatError) as ei:
        _read_all(tmp_path)
    assert ei.value.offset is not None


def test_garbage_metadata(tmp_path):
    d = copy_fixture("ust-pid", tmp_path)
    md = next(d.rglob("metadata"))
    md.write_text("/* CTF 1.8 */\ntrace { major = 1; minor = 8; byte_order = le; };\nstream { id = 0; ")
    with pytest.raises(TraceFormatError) as ei:
        _read_all(d)
    assert str(md) in str(ei.value) and ei.value.offset is not None


def test_truncated_stream(tmp_path):
    d = copy_fixture("ust-uid-contexts", tmp_path)
    stream = next(d.rglob("chan_1"))
    data = stream.read_bytes()
    stream.write_bytes(data[: len(data) - 5000])
    with pytest.raises(TraceFormatError, match="truncated") as ei:
        _read_all(d)
    assert ei.value.path == str(stream) and ei.value.offset == 65536


def test_corrupt_packet_header(tmp_path):
    d = copy_fixture("ust-snapshot", tmp_path)
    stream = next(d.rglob("chan_0"))
    data = bytearray(stream.read_bytes())
    data[4096:4100] = b"\xde\xad\xbe\xef"
    stream.write_bytes(bytes(data))
    with pytest.raises(TraceFormatError, match="magic") as ei:
        _read_all(d)
    assert ei.value.offset == 4096


def test_cli_error_is_one_line(tmp_path):
    d = copy_fixture("ust-snapshot", tmp_path)
    stream = next(d.rglob("chan_0"))
    stream.write_bytes(stream.read_bytes()[:5000])
    rc, out, err = run_cli(["view", str(d)])
    assert rc != 0
    assert err.count("\n") == 1 and err.startswith("ust: error: ") and " at byte 4096: " in err
    assert "Traceback" not in err


def _reference_events(path):
    """The simple event-by-event decoder and k-way merge (StreamFile.events)."""
    from ust.ctf.reader import merge, open_traces, ordered_streams
    streams = ordered_streams(open_traces(path))
    return [ev for _, _, ev in merge([s.events(i) for i, s in enumerate(streams)])]


def _synthetic_sources(tmp_path):
    from ust.ctf._synth import Synth
    out = []
    for header in ("large", "compact"):
        s = Synth(tmp_path / header, header=header, packet_size=4096, context=[
            ("_vtid", "integer { size = 32; align = 8; signed = 1; }", "i"), ("_name", "string", "s")])
        a = s.event_class("x:a", [("_v", "integer { size = 64; align = 8; signed = 1; }", "q")])
        b = s.event_class("x:b", [("_s", "string", "s"), ("_f", "floating_point { exp_dig = 8; mant_dig = 24; "
                                                                 "align = 8; }", "f")])
        s.write([(10 + i * 99991 + (i * 7919) % 1000, a if i % 2 else b, (i,) if i % 2 else (f"s{i}", i / 2), (i, "n"))
                 for i in range(1500)], stream_name="chan_0", cpu=0)
        s.write([(10 + i * 777, a, (-i,), (7, "m")) for i in range(1500)], stream_name="chan_1", cpu=1)
        out.append(tmp_path / header)
    s = Synth(tmp_path / "be", byte_order="be", freq=1_000_000)
    c = s.event_class("x:c", [("_v", "integer { size = 16; align = 8; signed = 1; }", "h")])
    s.write([(5 + i, c, (-i,)) for i in range(300)])
    out.append(tmp_path / "be")
    return out


def test_fast_path_equals_reference(tmp_path):
    paths = [FIXTURES / n for n in FIXTURE_NAMES] + _synthetic_sources(tmp_path)
    for path in paths:
        fast = list(ust.ctf.read_trace(path))
        ref = _reference_events(path)
        assert len(fast) == len(ref), path
        for a, b in zip(fast, ref):
            assert (a.name, a.timestamp, a.cycles, a.cpu_id, a.fields, a.context, a.stream.path) == \
                (b.name, b.timestamp, b.cycles, b.cpu_id, b.fields, b.context, b.stream.path), path


def _resident_kb_of_mapping(path):
    """Resident kB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total = 0
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if not head[0].endswith(":"):  # a mapping's line: range perms offset dev inode [path]
                inside = line.rstrip("\n").endswith(" " + str(path))
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total


def test_long_stream_file_not_kept_resident(tmp_path):
    """Reading a long stream file start to end gives its pages back as it goes: the
    file's resident part stays far below its size (bulk export of big traces)."""
    from ust.ctf._synth import Synth
    from ust.ctf.reader import open_traces

    s = Synth(tmp_path / "t", packet_size=1 << 20)
    big = s.event_class("big:text", [("_s", "string", "s")])
    text = "x" * 4000
    s.write(((1000 + i, big, (text,)) for i in range(30_000)), stream_name="chan_0", cpu=0)
    (trace,) = open_traces(tmp_path / "t")
    (stream,) = trace.streams
    size_kb = os.path.getsize(stream.path) // 1024
    assert size_kb > 100_000
    peak = 0
    n = 0
    for pk in stream.packets():
        n += 1
        if n % 16 == 0:
            peak = max(peak, _resident_kb_of_mapping(stream.path))
    peak = max(peak, _resident_kb_of_mapping(stream.path))
    assert n > 100 and 0 < peak < 48 * 1024, (peak, size_kb)
