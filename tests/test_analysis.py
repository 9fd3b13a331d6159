"""stats, latency, export, plot: as functions and as subcommands."""

import json

import pytest

import ust.ctf
import ust.errors
import ust.analysis.stats

from ust.analysis import export_chrome, latency, trace_stats
from ust.ctf._synth import Synth

from reader_support import FIXTURES, copy_fixture, run_cli

CTX = [("_vpid", "integer { size = 32; align = 8; signed = 1; }", "i"),
       ("_vtid", "integer { size = 32; align = 8; signed = 1; }", "i"),
       ("_procname", "string", "s")]


def _req_trace(path):
    """Two threads doing requests: begin/end pairs with known durations (ns)."""
    s = Synth(path, context=CTX)
    b = s.event_class("app:begin", [("_req", "integer { size = 32; align = 8; signed = 0; }", "I")])
    e = s.event_class("app:end", [("_req", "integer { size = 32; align = 8; signed = 0; }", "I")])
    evs = []
    durations = []
    t = 1000
    for i in range(100):
        tid = 11 if i % 2 else 12
        d = 1000 * (i + 1)
        durations.append(d)
        evs.append((t, b, (i,), (10, tid, "app")))
        evs.append((t + d, e, (i,), (10, tid, "app")))
        t += 10  # overlapping requests on two threads: per-thread pairing matters
    evs.sort(key=lambda x: x[0])
    s.write(evs)
    return path, sorted(durations)


def test_stats_fixture():
    st = trace_stats(FIXTURES / "ust-uid-contexts")
    assert st.total.count == 1460
    assert st.discarded_events == 540
    assert {k: c.count for k, c in st.by_name.items()} == {n: 292 for n in
                                                            ("demo:ints", "demo:floats", "demo:text",
                                                             "demo:arrays", "demo:enums")}
    assert sum(c.count for c in st.by_thread.values()) == 1460
    assert {k[1] for k in st.by_thread} == {7788, 7789}
    assert st.total.first_ns < st.total.last_ns


def _stats_event_by_event(path):
    """The statistics as the event-by-event path counts them (the reference)."""
    from ust.analysis import stats as S
    from ust.ctf.reader import open_traces, ordered_streams

    st = S.TraceStats()
    traces = open_traces(path)
    st.traces, st.streams = len(traces), len(ordered_streams(traces))

    def lost(d):
        if d.packets:
            st.lost_packets += d.count
        else:
            st.discarded_events += d.count
    S._count_events(st, traces, lost, None)
    return S.stats_dict(st)


def _shadow_trace(path, shadow=True, byte_order="le"):
    """Two streams, threads switching often; a payload field named like a context
    (vtid) in one class (with ``shadow``), one named pid with no pid context in another."""
    s = Synth(path, context=CTX if shadow else CTX[1:], packet_size=4096, offset=1_000,  # no vpid: pid is not it
              byte_order=byte_order)
    a = s.event_class("app:a", [("_vtid" if shadow else "_x", "integer { size = 32; align = 8; signed = 0; }",
                                 "I")])
    b = s.event_class("app:b", [("_pid", "integer { size = 16; align = 8; signed = 0; }", "H"),
                                ("_msg", "string", "s")])
    for cpu in (0, 1):
        evs = []
        for i in range(3000):
            tid = 20 + (i * 7 + cpu) % 5
            evs.append((1000 + 10 * i + cpu, a if i % 3 else b, (999,) if i % 3 else (i, "m" * (i % 4)),
                        (10 + tid % 2, tid, f"p{tid % 2}")[0 if shadow else 1:]))
        s.write(evs, stream_name=f"chan_{cpu}", cpu=cpu, discarded_at={2: 7})
    return path


@pytest.mark.parametrize("name", ["ust-uid-contexts", "ust-pid", "ust-snapshot", "ust-python-agent", "shadow",
                                  "payload-pid", "requests", "big-endian"])
def test_stats_columns_match_event_by_event(tmp_path, name, monkeypatch):
    """`ust stats` counts from the bulk reader's columns: the same statistics as event by event
    (per name, process, thread; first/last; losses), including a payload field named like a context."""
    pytest.importorskip("numpy")
    if name in ("shadow", "payload-pid", "big-endian"):  # big-endian: no context gathered by numpy
        path = _shadow_trace(tmp_path / "t", shadow=name == "shadow",
                             byte_order="be" if name == "big-endian" else "le")
    elif name == "requests":
        path, _ = _req_trace(tmp_path / "t")
    else:
        path = FIXTURES / name
    expected = _stats_event_by_event(path)
    if name != "shadow":  # the columns path is the one counting (the shadowed context: event by event)
        monkeypatch.setattr(ust.analysis.stats, "_count_events", None)
    got = ust.analysis.stats.stats_dict(trace_stats(path))
    assert got == expected
    assert got["total"]["count"] > 0


def test_stats_per_pid_processes():
    st = trace_stats(FIXTURES / "ust-pid")
    assert {k[0]: c.count for k, c in st.by_process.items()} == {15772: 300, 15777: 300}


def test_stats_cli_json():
    rc, out, _ = run_cli(["stats", "--json", str(FIXTURES / "ust-snapshot")])
    d = json.loads(out)
    assert rc == 0 and d["total"]["count"] == 181


def test_latency_per_thread(tmp_path):
    path, durations = _req_trace(tmp_path / "t")
    # pairing by thread is LIFO per thread; requests overlap, so compare with the key pairing too
    by_key = latency(path, "app:begin", "app:end", key="req")
    assert by_key.durations == durations
    assert by_key.unmatched_begin == by_key.unmatched_end == 0
    s = by_key.summary()
    assert s["min"] == 1000 and s["max"] == 100000 and s["p50"] == 50000 and s["p99"] == 99000
    per_thread = latency(path, "app:begin", "app:end")
    assert per_thread.count == 100 and per_thread.unmatched_begin == 0


def test_latency_cli(tmp_path):
    path, _ = _req_trace(tmp_path / "t")
    rc, out, _ = run_cli(["latency", str(path), "--begin", "app:begin", "--end", "app:end", "--key", "req"])
    text = out.decode()
    assert rc == 0 and "100 pairs" in text and "p99" in text and "#" in text


def test_export_chrome(tmp_path):
    path, _ = _req_trace(tmp_path / "t")
    dest = tmp_path / "out.json"
    export_chrome(path, dest, begin="app:begin", end="app:end")
    doc = json.loads(dest.read_text())
    evs = doc["traceEvents"]
    slices = [e for e in evs if e["ph"] == "X"]
    assert len(slices) == 100
    assert {e["tid"] for e in slices} == {11, 12} and all(e["pid"] == 10 for e in slices)
    assert any(e["ph"] == "M" and e["args"]["name"] == "app" for e in evs)


def test_export_chrome_fixture_cli(tmp_path):
    dest = tmp_path / "x.json"
    rc, out, _ = run_cli(["export", str(FIXTURES / "ust-pid"), "--format", "chrome", "-o", str(dest)])
    doc = json.loads(dest.read_text())
    inst = [e for e in doc["traceEvents"] if e["ph"] == "i"]
    assert rc == 0 and len(inst) == 600
    assert {e["pid"] for e in inst} == {15772, 15777}


def test_export_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    rc, out, err = run_cli(["export", str(FIXTURES / "ust-uid-contexts"), "--format", "parquet",
                            "-o", str(tmp_path / "pq")])
    assert rc == 0, err
    t = pq.read_table(tmp_path / "pq" / "event=demo_ints" / "part-0.parquet")
    assert t.num_rows == 292 and "u64hex" in t.column_names and "vtid" in t.column_names


def test_export_parquet_dataset_typed_for_duckdb(tmp_path):
    """One Hive-partitioned dataset read with one glob; timestamps, widths, signedness, enum labels."""
    pytest.importorskip("pyarrow")
    duckdb = pytest.importorskip("duckdb")
    rc, out, err = run_cli(["export", str(FIXTURES / "ust-uid-contexts"), "--format", "parquet",
                            "-o", str(tmp_path / "pq")])
    assert rc == 0, err
    glob = str(tmp_path / "pq" / "*" / "*.parquet")
    con = duckdb.connect()
    counts = dict(con.sql(f"select event_name, count(*) from read_parquet('{glob}', hive_partitioning=true, "
                          "union_by_name=true) group by all").fetchall())
    assert counts == {"demo:ints": 292, "demo:floats": 292, "demo:text": 292, "demo:arrays": 292,
                      "demo:enums": 292}
    types = dict(con.sql(f"select column_name, column_type from (describe select * from "
                         f"read_parquet('{glob}', hive_partitioning=true, union_by_name=true))").fetchall())
    assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE" or types["timestamp"].startswith("TIMESTAMP")
    assert types["cycles"] == "UBIGINT"
    assert (types["i8"], types["u8"], types["i16"], types["u16"], types["i32"], types["u32"], types["i64"],
            types["u64hex"]) == ("TINYINT", "UTINYINT", "SMALLINT", "USMALLINT", "INTEGER", "UINTEGER",
                                 "BIGINT", "UBIGINT")
    assert types["color"] == "VARCHAR" and types["procname"] == "VARCHAR"
    # the same values as the reader: timestamps (ns from the Epoch) and the enum's labels
    ev = [e for e in ust.ctf.read_trace(FIXTURES / "ust-uid-contexts") if e.name == "demo:enums"]
    rows = con.sql(f"select epoch_ns(timestamp), cycles, color, procname from read_parquet('{glob}', "
                   "hive_partitioning=true, union_by_name=true) where event = 'demo_enums' "
                   "order by timestamp").fetchall()
    assert [r[0] for r in rows] == [e.timestamp for e in ev]
    assert {r[2] for r in rows} >= {"RED", "GREENISH", "BLUE"}
    assert rows[0][3] == "appx"


def test_export_parquet_streams_by_chunks(tmp_path):
    """Decoded a few events at a time, written as several row groups: the same rows as the bulk reader."""
    pq = pytest.importorskip("pyarrow.parquet")
    from ust.analysis.export import export_parquet

    files = export_parquet(FIXTURES / "ust-uid-contexts", tmp_path / "pq", chunk_events=16, row_group=40)
    f = tmp_path / "pq" / "event=demo_ints" / "part-0.parquet"
    assert str(f) in files
    meta = pq.ParquetFile(f).metadata
    assert meta.num_row_groups > 3 and meta.num_rows == 292
    t = pq.read_table(f).sort_by("timestamp")
    cols = ust.ctf.read_columns(FIXTURES / "ust-uid-contexts")["demo:ints"]
    assert t.column("i64").to_pylist() == cols["i64"].tolist()
    assert t.column("cycles").to_pylist() == cols["cycles"].tolist()
    # a second export into the same directory is refused, not mixed in
    with pytest.raises(ust.errors.UstError, match="already holds"):
        export_parquet(FIXTURES / "ust-uid-contexts", tmp_path / "pq")


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path, _ = _req_trace(tmp_path / "t")
    rc, out, err = run_cli(["plot", str(path), "-o", str(tmp_path / "p.png"), "--begin", "app:begin",
                            "--end", "app:end"])
    assert rc == 0, err
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_optional_dependency_missing_is_a_clear_error(tmp_path, monkeypatch):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith(("matplotlib", "pyarrow")):
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake)
    rc, _, err = run_cli(["plot", str(FIXTURES / "ust-pid"), "-o", str(tmp_path / "p.png")])
    assert rc != 0 and "matplotlib" in err and err.count("\n") == 1
    rc, _, err = run_cli(["export", str(FIXTURES / "ust-pid"), "--format", "parquet", "-o", str(tmp_path)])
    assert rc != 0 and "pyarrow" in err


def test_bulk_columns_agree_with_events():
    np = pytest.importorskip("numpy")
    import ust.ctf
    cols = ust.ctf.read_columns(FIXTURES / "ust-pid")
    evs = list(ust.ctf.read_trace(FIXTURES / "ust-pid"))
    for name, table in cols.items():
        mine = [e for e in evs if e.name == name]
        assert table["timestamp"].tolist() == [e.timestamp for e in mine]
        for field in mine[0].fields:
            assert table[field].tolist() == [e.fields[field] for e in mine]
    assert isinstance(cols["demo:ints"]["i64"], np.ndarray)


@pytest.mark.parametrize("name", ["ust-pid", "ust-uid-contexts", "ust-snapshot", "ust-python-agent"])
def test_bulk_c_scan_and_python_agree(monkeypatch, name):
    pytest.importorskip("numpy")
    import ust.ctf
    from ust.ctf import pipeline
    with_c = ust.ctf.read_columns(FIXTURES / name)
    monkeypatch.setattr(pipeline, "_decode", None)
    without_c = ust.ctf.read_columns(FIXTURES / name)
    assert with_c.keys() == without_c.keys()
    evs = list(ust.ctf.read_trace(FIXTURES / name))
    for ev_name, table in with_c.items():
        other = without_c[ev_name]
        assert list(table) == list(other)
        for col in table:
            assert table[col].tolist() == other[col].tolist(), (ev_name, col)
        mine = [e for e in evs if e.name == ev_name]
        assert table["timestamp"].tolist() == [e.timestamp for e in mine]
        for ctx in mine[0].context:
            if ctx in table:
                assert table[ctx].tolist() == [e.context[ctx] for e in mine]


@pytest.mark.parametrize("header", ["large", "compact"])
def test_bulk_synthetic_headers(tmp_path, header):
    pytest.importorskip("numpy")
    import ust.ctf
    s = Synth(tmp_path / "t", header=header, packet_size=4096, context=CTX)
    a = s.event_class("x:fixed", [("_v", "integer { size = 64; align = 8; signed = 1; }", "q"),
                                  ("_f", "floating_point { exp_dig = 8; mant_dig = 24; align = 8; }", "f")])
    b = s.event_class("x:text", [("_s", "string", "s"), ("_n", "integer { size = 16; align = 8; signed = 0; }", "H")])
    evs = []
    t = 5
    for i in range(3000):
        t += (i * 104729) % (1 << 25)
        if i % 3:
            evs.append((t, a, (-i * 1000, i / 4), (1, 2 + i % 2, "p")))
        else:
            evs.append((t, b, ("s%d" % i, i % 65536), (1, 2, "p")))
    s.write(evs)
    cols = ust.ctf.read_columns(tmp_path / "t")
    ref = list(ust.ctf.read_trace(tmp_path / "t"))
    fx = [e for e in ref if e.name == "x:fixed"]
    assert cols["x:fixed"]["v"].tolist() == [e.fields["v"] for e in fx]
    assert cols["x:fixed"]["f"].tolist() == [e.fields["f"] for e in fx]
    assert cols["x:fixed"]["vtid"].tolist() == [e.context["vtid"] for e in fx]
    assert cols["x:fixed"]["cycles"].tolist() == [e.cycles for e in fx]
    tx = [e for e in ref if e.name == "x:text"]
    assert cols["x:text"]["s"].tolist() == [e.fields["s"] for e in tx]


def test_export_parquet_undecodable_text_and_enum_labels(tmp_path):
    """Undecodable bytes in a string become U+FFFD (Parquet text is UTF-8); an unnamed enum value is null."""
    pq = pytest.importorskip("pyarrow.parquet")
    s = Synth(tmp_path / "t")
    c = s.event_class("app:msg", [
        ("_msg", "string", "s"),
        ("_state", "enum : integer { size = 8; align = 8; signed = 0; } { IDLE = 0, BUSY = 1 ... 3 }", "B")])
    s.write([(1000 + i, c, (["ok", "bad\udcff"][i % 2], i % 5)) for i in range(10)])
    rc, _, err = run_cli(["export", str(tmp_path / "t"), "--format", "parquet", "-o", str(tmp_path / "pq")])
    assert rc == 0, err
    t = pq.read_table(tmp_path / "pq" / "event=app_msg" / "part-0.parquet")
    assert t.column("msg").to_pylist()[:2] == ["ok", "bad\ufffd"]
    assert t.column("state").to_pylist()[:5] == ["IDLE", "BUSY", "BUSY", "BUSY", None]
    assert t.column("event_name").to_pylist()[0] == "app:msg"


def test_column_chunks_bounded_and_complete(tmp_path):
    """iter_column_chunks: chunks no bigger than asked (plus a packet), one stream file each,
    together the same rows as read_columns."""
    np = pytest.importorskip("numpy")
    from ust.ctf.bulk import iter_column_chunks

    path = _shadow_trace(tmp_path / "s", shadow=False)  # 2 x 3000 events
    whole = ust.ctf.read_columns(path)
    chunks = list(iter_column_chunks(path, chunk_events=500))
    per_packet = 4096 // 12  # the most events a 4 KiB packet holds (12 bytes: the smallest event)
    assert len(chunks) >= 6
    for _trace, tables in chunks:
        n = sum(len(t["timestamp"]) for t in tables.values())
        assert 0 < n <= 500 + per_packet
        assert len({int(c) for t in tables.values() for c in t["cpu_id"]}) == 1  # one stream file
    for name, cols in whole.items():
        got = np.concatenate([t[name]["timestamp"] for _, t in chunks if name in t])
        assert sorted(got.tolist()) == cols["timestamp"].tolist()
        for col in cols:
            merged = np.concatenate([t[name][col] for _, t in chunks if name in t])
            order = np.argsort(np.concatenate([t[name]["timestamp"] for _, t in chunks if name in t]),
                               kind="stable")
            assert merged[order].tolist() == cols[col].tolist(), col


def test_export_parquet_damaged_trace_leaves_nothing(tmp_path):
    """A truncated stream: one error line naming it, and no partial dataset (nor work directory) left."""
    pytest.importorskip("pyarrow")
    d = copy_fixture("ust-uid-contexts", tmp_path)
    stream = next(d.rglob("chan_1"))
    stream.write_bytes(stream.read_bytes()[:-5000])
    out = tmp_path / "pq"
    rc, _, err = run_cli(["export", str(d), "--format", "parquet", "-o", str(out)])
    assert rc != 0 and "truncated" in err and str(stream) in err and err.count("\n") == 1
    assert list(out.iterdir()) == []
