"""The embedded session end to end: threads, forked processes, lost counts
compared with babeltrace2's, the flight recorder, a killed child."""

import collections
import math
import os
import signal
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ust
from conftest import babeltrace2_text, bt2_dump, discarded_of, events_of, needs_babeltrace2, needs_bt2

work = ust.tracepoint("sess:work", {"worker": ust.uint32, "i": ust.uint32, "tag": ust.string})


def _hammer(worker, n):
    for i in range(n):
        work(worker, i, "t%d" % (i % 10))


@needs_bt2
def test_threads_and_forked_processes_share_one_per_uid_buffer_and_lose_nothing(tmp_path):
    n_threads, n_procs, n = 4, 2, 20000
    with ust.Session(tmp_path / "t", events=["sess:*"], context=["vpid", "vtid"], subbuf_size=1 << 20,
                     num_subbuf=8) as s:
        threads = [threading.Thread(target=_hammer, args=(w, n)) for w in range(n_threads)]
        for t in threads:
            t.start()
        pids = []
        for w in range(n_threads, n_threads + n_procs):
            pid = os.fork()
            if pid == 0:
                try:
                    _hammer(w, n)
                finally:
                    os._exit(0)
            pids.append(pid)
        for t in threads:
            t.join()
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
    assert s.lost == 0
    dump = bt2_dump(tmp_path / "t")
    assert discarded_of(dump) == 0
    per_worker = collections.defaultdict(list)
    vpids = collections.defaultdict(set)
    for e in events_of(dump, "sess:work"):
        per_worker[e["payload"]["worker"]].append(e["payload"]["i"])
        vpids[e["payload"]["worker"]].add(e["context"]["vpid"])
    assert sorted(per_worker) == list(range(n_threads + n_procs))
    for w, seq in per_worker.items():
        assert sorted(seq) == list(range(n)), f"worker {w} lost or duplicated events"
    assert {p for w in range(n_threads) for p in vpids[w]} == {os.getpid()}
    child_pids = {p for w in range(n_threads, n_threads + n_procs) for p in vpids[w]}
    assert child_pids == set(pids)
    # timestamps never go backwards within a stream (babeltrace2 would complain too)
    ts = [e["ts"] for e in events_of(dump)]
    assert len(ts) == (n_threads + n_procs) * n


@needs_bt2
def test_small_buffers_lost_count_equals_babeltrace2s_and_nothing_goes_missing(tmp_path):
    n_threads, n = 4, 30000
    with ust.Session(tmp_path / "t", events=["sess:*"], subbuf_size=4096, num_subbuf=2, read_timer=1.0) as s:
        threads = [threading.Thread(target=_hammer, args=(w, n)) for w in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    dump = bt2_dump(tmp_path / "t")
    written = len(events_of(dump, "sess:work"))
    assert s.lost > 0, "the test needs a buffer that overflows"
    assert discarded_of(dump) == s.lost
    assert written + s.lost == n_threads * n
    out, err = babeltrace2_text(tmp_path / "t")
    assert out.count("\n") == written
    assert err.count("WARNING") >= 1 and "discarded" in err


@needs_bt2
def test_overwrite_session_keeps_the_newest_events(tmp_path):
    os.sched_setaffinity(0, {0})  # one stream, so "newest" is a single sequence
    try:
        with ust.Session(tmp_path / "t", events=["sess:*"], mode="overwrite", subbuf_size=4096,
                         num_subbuf=4) as s:
            _hammer(0, 20000)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count())))
    vals = [e["payload"]["i"] for e in events_of(bt2_dump(tmp_path / "t"), "sess:work")]
    assert vals[-1] == 19999
    assert 0 < len(vals) < 20000
    assert vals == list(range(vals[0], 20000))
    assert s.counters()["packets_overwritten"] > 0


@needs_babeltrace2
def test_overwrite_losses_before_the_first_packet_on_disk_are_in_the_trace(tmp_path):
    """A flight recorder written out at stop: the packets overwritten before
    the first one on disk were reported by `ust stop` only. babeltrace2
    reports a loss as a gap of packet_seq_num between two packets, never
    before the first, so the stream starts with an empty packet of seq 0 (the
    stream's start): babeltrace2, and `ust view` like it, report the gap."""
    import re

    from reader_support import run_cli

    os.sched_setaffinity(0, {0})  # one stream
    try:
        with ust.Session(tmp_path / "t", events=["sess:*"], mode="overwrite", subbuf_size=4096,
                         num_subbuf=4) as s:
            _hammer(0, 20000)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count())))
    overwritten = s.counters()["packets_overwritten"]
    assert overwritten > 1
    out, err = babeltrace2_text(tmp_path / "t")
    reported = [int(n) for n in re.findall(r"discarded (\d+) packets?\b", err)]
    # the empty packet of seq 0 stands for the first packet overwritten
    assert reported == [overwritten - 1], err
    rc, ust_out, ust_err = run_cli(["view", str(tmp_path / "t")])
    assert rc == 0 and ust_out.decode() == out and ust_err == err


@needs_bt2
def test_a_forked_child_killed_with_sigkill_loses_nothing_it_committed(tmp_path):
    import mmap

    shared = mmap.mmap(-1, 8)
    with ust.Session(tmp_path / "t", events=["sess:*"], subbuf_size=1 << 20, num_subbuf=16):
        pid = os.fork()
        if pid == 0:
            i = 0
            while True:
                work(9, i, "k")
                i += 1
                shared[:8] = struct.pack("<Q", i)
        while struct.unpack("<Q", shared[:8])[0] < 20000:
            pass
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        committed = struct.unpack("<Q", shared[:8])[0]
    vals = sorted(e["payload"]["i"] for e in events_of(bt2_dump(tmp_path / "t"), "sess:work"))
    assert vals[:committed] == list(range(committed))


@needs_bt2
def test_tracepoints_declared_after_start_and_in_a_child_are_recorded(tmp_path):
    with ust.Session(tmp_path / "t", events=["late:*"]):
        late = ust.tracepoint("late:parent", {"x": ust.int8})
        late(1)
        pid = os.fork()
        if pid == 0:
            try:
                ust.tracepoint("late:child", {"s": ust.string})("from the child")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        ust.tracepoint("other:ignored", {})()
    names = [(e["name"], e["payload"]) for e in events_of(bt2_dump(tmp_path / "t"))]
    assert sorted(names, key=str) == sorted([("late:parent", {"x": 1}), ("late:child", {"s": "from the child"})],
                                            key=str)


@needs_bt2
def test_wildcards_exclusions_and_loglevels_select_events(tmp_path):
    a = ust.tracepoint("sel:alpha", {}, loglevel=ust.ERR)
    b = ust.tracepoint("sel:beta", {}, loglevel=ust.DEBUG)
    c = ust.tracepoint("sel:gamma", {}, loglevel=ust.INFO)
    with ust.Session(tmp_path / "t", events=["sel:*"], exclude=["sel:gamma"], loglevel=ust.INFO):
        a(), b(), c()
    assert [e["name"] for e in events_of(bt2_dump(tmp_path / "t"))] == ["sel:alpha"]


@needs_babeltrace2
def test_session_switch_timer_flushes_idle_packets(tmp_path):
    import time

    with ust.Session(tmp_path / "t", events=["sess:*"], switch_timer=0.05) as s:
        work(1, 1, "idle")
        deadline = time.monotonic() + 10
        while s.files[0].packets + s.files[-1].packets == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        flushed_while_running = sum(f.packets for f in s.files)
    assert flushed_while_running >= 1


# -- property-based round trip of serialization -------------------------------

SCALARS = {
    "int8": (ust.int8, st.integers(-128, 127)),
    "uint16": (ust.uint16, st.integers(0, 65535)),
    "int32": (ust.int32, st.integers(-2**31, 2**31 - 1)),
    "uint64": (ust.uint64, st.integers(0, 2**64 - 1)),
    "int64": (ust.int64, st.integers(-2**63, 2**63 - 1)),
    "float64": (ust.float64, st.floats(allow_nan=True)),
    "float32": (ust.float32, st.floats(width=32, allow_nan=False)),
    "string": (ust.string, st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)),
    "bytes": (ust.bytes, st.binary(max_size=40)),
    "seq": (ust.sequence(ust.int16), st.lists(st.integers(-2**15, 2**15 - 1), max_size=30)),
    "arr": (ust.array(ust.uint8, 3), st.lists(st.integers(0, 255), min_size=3, max_size=3)),
}


def _expect(kind, v):
    if kind in ("float64", "float32"):
        if kind == "float32":
            v = struct.unpack("<f", struct.pack("<f", v))[0]
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if kind == "string":
        return v.split("\x00")[0]
    if kind == "bytes":
        return list(v)
    return v


@needs_bt2
def test_serialization_round_trips_for_random_schemas_and_values(tmp_path):
    recorded = []
    counter = iter(range(10**6))

    @st.composite
    def schema_and_values(draw):
        kinds = draw(st.lists(st.sampled_from(sorted(SCALARS)), min_size=0, max_size=6))
        values = [draw(SCALARS[k][1]) for k in kinds]
        return kinds, values

    with ust.Session(tmp_path / "t", events=["prop:*"], subbuf_size=1 << 20) as s:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(schema_and_values())
        def record(case):
            kinds, values = case
            name = f"prop:e{next(counter)}"
            tp = ust.tracepoint(name, [(f"f{i}", SCALARS[k][0]) for i, k in enumerate(kinds)])
            tp(*values)
            recorded.append((name, kinds, values))

        record()
    assert s.lost == 0
    got = {e["name"]: e["payload"] for e in events_of(bt2_dump(tmp_path / "t"))}
    assert len(got) == len(recorded)
    for name, kinds, values in recorded:
        payload = got[name]
        for i, (k, v) in enumerate(zip(kinds, values)):
            assert payload[f"f{i}"] == _expect(k, v), (name, k, v)


def test_session_left_running_at_exit_keeps_events_of_teardown_finalizers(tmp_path):
    """Issue 8 item 11: an embedded session still running when the interpreter
    exits writes out what was recorded — including events that objects'
    __del__ record while the interpreter tears down (they were dropped)."""
    from conftest import bt2_dump, events_of, run_python

    r = run_python("""
import sys, ust
tp = ust.tracepoint("td:ev", {"v": ust.int32})
class Late:
    def __init__(self, v): self.v = v
    def __del__(self): tp(self.v)
keep = [Late(v) for v in range(100, 105)]
session = ust.Session(sys.argv[1]).start()
tp(1)
""", str(tmp_path / "t"), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Exception ignored" not in r.stderr, r.stderr
    vs = sorted(e["payload"]["v"] for e in events_of(bt2_dump(tmp_path / "t")))
    assert vs == [1, 100, 101, 102, 103, 104]
