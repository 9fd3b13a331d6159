"""Traces written by ust itself (ust.Session, embedded): read back like babeltrace2 reads them.

Needs the rest of ust (tracepoints, the ring buffer extension): skipped where
it is not there (e.g. on the reader branch alone).
"""

import shutil
import subprocess

import pytest

from reader_support import run_cli

ust = pytest.importorskip("ust")
if not hasattr(ust, "Session") or not hasattr(ust, "tracepoint"):
    pytest.skip("ust.Session/ust.tracepoint not available", allow_module_level=True)
pytest.importorskip("ust._ring._ring")

HAVE_BT2 = shutil.which("babeltrace2") is not None

TP = None


def _tracepoints():
    global TP
    if TP is None:
        TP = (
            ust.tracepoint("rdtest:ints", {"a": ust.int8, "b": ust.uint8, "c": ust.int16, "d": ust.uint16,
                                           "e": ust.int32, "f": ust.uint32, "g": ust.int64, "h": ust.uint64,
                                           "x": ust.hex(ust.uint32)}),
            ust.tracepoint("rdtest:misc", {"s": ust.string, "ok": ust.boolean, "f32": ust.float32,
                                           "f64": ust.float64, "raw": ust.bytes,
                                           "arr": ust.array(ust.int32, 3), "seq": ust.sequence(ust.uint16),
                                           "color": ust.enum(ust.uint8, {"RED": 0, "GREEN": (1, 5)})}),
        )
    return TP


def _write(path):
    ints, misc = _tracepoints()
    with ust.Session(path, events=["rdtest:*"], context=["vpid", "vtid", "procname"]):
        for i in range(300):
            ints(-i % 128, i % 256, -i, i, -i * 1000, i * 1000, -i * 10**12, i * 10**12, i)
            misc(f"s{i} é\t\"q\"", bool(i % 2), i / 4, -i / 3, bytes([i % 256, 0, 255]), [i, -i, 0],
                 list(range(i % 4)), i % 7)
    return path


def test_ust_trace_reads_back(tmp_path):
    import ust.ctf
    path = _write(tmp_path / "t")
    evs = list(ust.ctf.read_trace(path))
    assert len(evs) == 600
    ints = [e for e in evs if e.name == "rdtest:ints"]
    misc = [e for e in evs if e.name == "rdtest:misc"]
    assert ints[5].fields == {"a": -5 % 128, "b": 5, "c": -5, "d": 5, "e": -5000, "f": 5000, "g": -5 * 10**12,
                              "h": 5 * 10**12, "x": 5}
    m = misc[5].fields
    assert m["s"] == 's5 é\t"q"' and m["arr"] == [5, -5, 0] and m["seq"] == [0]
    assert m["color"] == 5 and m["f64"] == pytest.approx(-5 / 3)
    assert "vtid" in misc[5].context
    ts = [e.timestamp for e in evs]
    assert ts == sorted(ts)


@pytest.mark.skipif(not HAVE_BT2, reason="babeltrace2 not installed")
@pytest.mark.parametrize("opts", [[], ["--clock-cycles", "--no-delta"], ["-n", "none"]], ids=str)
def test_ust_trace_view_matches_babeltrace2(tmp_path, opts):
    path = str(_write(tmp_path / "t"))
    rc, out, err = run_cli(["view", *opts, path])
    b = subprocess.run(["babeltrace2", *opts, path], capture_output=True, timeout=120)
    assert rc == 0
    assert b.stderr == b""
    assert out == b.stdout
