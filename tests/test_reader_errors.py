"""A damaged trace: the reader gives every event before the damage, then one error.

Real traces recorded by the embedded session, damaged on disk (a corrupt event
in the middle of a packet, a file cut mid-packet), read by `ust view`,
`read_trace` and babeltrace2 (the oracle: it prints the events before a bad
event, then fails).
"""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import needs_babeltrace2
from reader_support import run_cli

PAYLOAD = b"x" * 20

RECORD = """
import os, sys, threading, ust
tp = ust.tracepoint("cut:ev", {"i": ust.int64, "s": ust.string})
cpus = sorted(os.sched_getaffinity(0))[:2]
with ust.Session(sys.argv[1], events=["cut:*"], subbuf_size=16384, num_subbuf=64) as s:
    if sys.argv[2] == "one":
        os.sched_setaffinity(0, {cpus[0]})
        for i in range(3000):
            tp(i, "x" * 20)
    else:  # two streams, the events of each interleaved in time with the other's
        turn = [threading.Event(), threading.Event()]
        def writer(k):
            os.sched_setaffinity(0, {cpus[k]})
            for j in range(30):
                turn[k].wait(); turn[k].clear()
                for i in range(50):
                    tp(k * 100000 + j * 50 + i, "x" * 20)
                turn[1 - k].set()
        ts = [threading.Thread(target=writer, args=(k,)) for k in (0, 1)]
        for t in ts: t.start()
        turn[0].set()
        for t in ts: t.join()
assert s.lost == 0, s.lost
"""


def _record(path, streams):
    r = subprocess.run([sys.executable, "-c", RECORD, str(path), streams], capture_output=True, text=True,
                       env={**os.environ, "UST_AGENT": "0"}, timeout=120)
    assert r.returncode == 0, r.stderr
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                   if f.startswith("channel") and os.path.getsize(os.path.join(d, f)))
    return files


def _corrupt_event(stream_file, value):
    """Give the event whose payload is (value, 'x'*20) an event id no class has."""
    with open(stream_file, "r+b") as f:
        data = f.read()
        pos = data.find(value.to_bytes(8, "little") + PAYLOAD)
        assert pos > 0
        id_at = pos - 6  # large header: id u16, timestamp u32, then the payload
        assert data[id_at:id_at + 2] == b"\0\0"
        f.seek(id_at)
        f.write((7).to_bytes(2, "little"))


def _bt2(path):
    r = subprocess.run(["babeltrace2", str(path)], capture_output=True)
    return r.returncode, r.stdout


def _read_all(path):
    """(events read_trace yields, the exception it ends with)."""
    import ust.ctf

    n = 0
    try:
        for _ in ust.ctf.read_trace(path):
            n += 1
    except Exception as exc:  # noqa: BLE001 - the test looks at what it is
        return n, exc
    return n, None


@needs_babeltrace2
@pytest.mark.parametrize("use_c", [True, False], ids=["c-renderer", "python-decoders"])
@pytest.mark.parametrize("streams", ["one", "two"])
def test_events_before_a_corrupt_event_are_printed(tmp_path, monkeypatch, use_c, streams):
    from ust.ctf import pipeline

    if not use_c:
        monkeypatch.setattr(pipeline, "_decode", None)
    trace = tmp_path / "t"
    files = _record(trace, streams)
    assert len(files) == (1 if streams == "one" else 2)
    _, intact = _bt2(trace)
    bad_value = 1234 if streams == "one" else 100000 + 20 * 50 + 7  # mid-packet, mid-file
    _corrupt_event(files[-1], bad_value)
    rc_bt, expected = _bt2(trace)
    assert rc_bt != 0
    n_expected = expected.count(b"\n")
    assert 0 < n_expected < intact.count(b"\n")
    assert intact.startswith(expected)
    for opts in ([], ["--json"], ["--filter", "i >= 0"]):
        rc, out, err = run_cli(["view", *opts, str(trace)])
        assert rc != 0, opts
        assert err.startswith("ust: error: ") and err.count("\n") == 1, err
        assert "at byte" in err and ("unknown event id" in err), err
        if opts == []:
            assert out == expected  # byte for byte what babeltrace2 printed before failing
        else:
            assert out.count(b"\n") == n_expected, opts
    n, exc = _read_all(trace)
    assert n == n_expected
    assert type(exc).__name__ == "TraceFormatError" and "unknown event id" in str(exc)


@needs_babeltrace2
def test_a_file_cut_mid_packet_prints_the_whole_packets_before(tmp_path):
    trace = tmp_path / "t"
    (f,) = _record(trace, "one")
    _, intact = _bt2(trace)
    import ust.ctf.reader as reader

    (t,) = reader.open_traces(str(trace))
    (stream,) = [s for s in t.streams if s.path == f]
    offsets = [pk.offset for pk in stream.packets()]
    assert len(offsets) >= 4
    cut_at = offsets[3] + 100  # inside the fourth packet
    with open(f, "r+b") as fh:
        fh.truncate(cut_at)
    # the events of the first three packets, as babeltrace2 printed them from the intact trace
    shutil.copytree(trace, tmp_path / "three")
    with open(os.path.join(tmp_path / "three", os.path.relpath(f, trace)), "r+b") as fh:
        fh.truncate(offsets[3])
    rc3, three = _bt2(tmp_path / "three")
    assert rc3 == 0 and three.count(b"\n") > 0 and intact.startswith(three)
    for opts in ([], ["--json"], ["--filter", "i >= 0"]):
        rc, out, err = run_cli(["view", *opts, str(trace)])
        assert rc != 0
        if opts == []:
            assert out == three
        else:
            assert out.count(b"\n") == three.count(b"\n"), opts
        assert err.startswith("ust: error: ") and err.count("\n") == 1 and "truncated packet" in err, err
    n, exc = _read_all(trace)
    assert n == three.count(b"\n") and "truncated packet" in str(exc)


@needs_babeltrace2
def test_events_before_a_bad_packet_header_in_one_of_two_streams(tmp_path):
    """A packet with a bad magic in the middle of one stream: every event up to that stream's last good
    one, from both streams in time order, then the error (babeltrace2 indexes the files first and
    prints nothing)."""
    import ust.ctf.reader as reader

    trace = tmp_path / "t"
    files = _record(trace, "two")
    assert len(files) == 2
    (t,) = reader.open_traces(str(trace))
    (stream,) = [s for s in t.streams if s.path == files[-1]]
    offsets = [pk.offset for pk in stream.packets()]
    assert len(offsets) >= 3
    bad = offsets[len(offsets) // 2]
    # what comes before: the trace with that stream cut at the bad packet, as babeltrace2 prints it,
    # up to the last event of the cut stream
    shutil.copytree(trace, tmp_path / "before")
    with open(os.path.join(tmp_path / "before", os.path.relpath(files[-1], trace)), "r+b") as fh:
        fh.truncate(bad)
    rc_b, before = _bt2(tmp_path / "before")
    assert rc_b == 0
    lines = before.splitlines(keepends=True)
    stream_values = {f"i = {v}".encode() for v in _values_in(files[-1], bad)}
    last = max(i for i, line in enumerate(lines) if any(v + b"," in line for v in stream_values))
    expected = b"".join(lines[:last + 1])
    with open(files[-1], "r+b") as fh:
        fh.seek(bad)
        fh.write(b"\0\0\0\0")
    for opts in ([], ["--json"]):
        rc, out, err = run_cli(["view", *opts, str(trace)])
        assert rc != 0
        assert err.startswith("ust: error: ") and "bad packet magic" in err and err.count("\n") == 1, err
        if opts == []:
            assert out == expected
        else:
            assert out.count(b"\n") == last + 1
    n, exc = _read_all(trace)
    assert n == last + 1 and "bad packet magic" in str(exc)


def _values_in(stream_file, end):
    """The `i` payload values recorded in a stream file before byte ``end``."""
    with open(stream_file, "rb") as f:
        data = f.read(end)
    values = []
    pos = data.find(PAYLOAD)
    while pos >= 8:
        values.append(int.from_bytes(data[pos - 8:pos], "little", signed=True))
        pos = data.find(PAYLOAD, pos + len(PAYLOAD) + 1)
    return values


def test_export_of_a_damaged_trace_keeps_the_previous_file(tmp_path):
    """`ust export` of a trace that fails midway: one-line error, the previous export intact, no cut
    JSON and no temporary file left."""
    trace = tmp_path / "t"
    (f,) = _record(trace, "one")
    out = tmp_path / "t.json"
    rc, _, err = run_cli(["export", str(trace), "--format", "chrome", "-o", str(out)])
    assert rc == 0, err
    good = out.read_bytes()
    _corrupt_event(f, 1234)
    rc, _, err = run_cli(["export", str(trace), "--format", "chrome", "-o", str(out)])
    assert rc != 0 and err.startswith("ust: error: ") and err.count("\n") == 1, err
    assert out.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["t", "t.json"]
