"""`ust view` against babeltrace2's recorded output (and the real one when installed)."""

import os
import shutil
import subprocess
import sys

import pytest

from reader_support import FIXTURE_NAMES, FIXTURES, run_cli

HAVE_BT2 = shutil.which("babeltrace2") is not None


def _norm_stderr(text):
    # babeltrace2 names the stream by the path it was given: compare the tail only
    out = []
    for line in text.splitlines():
        if "within stream" in line:
            head, _, tail = line.partition('within stream "')
            path, _, rest = tail.partition('"')
            line = head + 'within stream "' + "/".join(path.split("/")[-5:]) + '"' + rest
        out.append(line)
    return out


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_view_matches_babeltrace2_recording(name):
    rc, out, err = run_cli(["view", "--clock-cycles", "--no-delta", str(FIXTURES / name)])
    assert rc == 0
    assert out == (FIXTURES / f"{name}.expected.txt").read_bytes()
    assert _norm_stderr(err) == _norm_stderr((FIXTURES / f"{name}.stderr.txt").read_text())


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_filter_path_renders_identically(name):
    # a filter that keeps everything goes through the dict decoders first
    rc, out, _ = run_cli(["view", "--clock-cycles", "--no-delta", "--filter", "1 == 1 || !missing",
                          str(FIXTURES / name)])
    assert rc == 0
    assert out == (FIXTURES / f"{name}.expected.txt").read_bytes()


def test_filter_selects_events():
    rc, out, _ = run_cli(["view", "--clock-cycles", "--no-delta", "--filter",
                          'i8 == -3 || (str == "t1-i2-*" && $ctx.vtid > 0)', str(FIXTURES / "ust-uid-contexts")])
    lines = out.decode("utf-8", "replace").splitlines()
    assert lines and all(("i8 = -3," in ln) or ('str = "t1-i2-' in ln) for ln in lines)
    assert any("demo:text" in ln for ln in lines) and any("demo:ints" in ln for ln in lines)


def test_json_lines():
    import json
    rc, out, _ = run_cli(["view", "--json", str(FIXTURES / "ust-pid")])
    rows = [json.loads(x) for x in out.decode().splitlines()]
    assert len(rows) == 600
    assert rows[0]["name"] == "demo:ints" and rows[0]["fields"]["u64hex"] == 0xDEADBEEF00000000
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)


def test_bad_filter_is_one_line_error():
    rc, out, err = run_cli(["view", "--filter", "a == ", str(FIXTURES / "ust-pid")])
    assert rc != 0 and out == b""
    assert err.count("\n") == 1 and err.startswith("ust: error:") and "position" in err


def test_head_ends_quietly(tmp_path):
    from ust.ctf._synth import Synth
    s = Synth(tmp_path / "t")
    c = s.event_class("x:y", [("_v", "integer { size = 32; align = 8; signed = 0; }", "I")])
    s.write((1000 + i, c, (i,)) for i in range(200000))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(p) for p in sys.path if p]))
    p = subprocess.run(f"{sys.executable} -m ust.cli view {tmp_path / 't'} | head -1", shell=True,
                       capture_output=True, env=env, timeout=120)
    assert p.stdout.count(b"\n") == 1
    assert b"Traceback" not in p.stderr and b"Error" not in p.stderr


# --------------------------------------------------------------------------
# the real babeltrace2, when installed
# --------------------------------------------------------------------------

OPTION_SETS = [[], ["--clock-gmt"], ["--clock-seconds"], ["--clock-date"], ["-n", "none"], ["-n", "all"],
               ["-n", "scope"], ["-f", "all"], ["-f", "trace:domain,loglevel"], ["--clock-cycles"],
               ["-n", "all", "-f", "all"]]


def _bt2(args):
    p = subprocess.run(["babeltrace2", *args], capture_output=True, timeout=120)
    return p.stdout, p.stderr.decode()


@pytest.mark.skipif(not HAVE_BT2, reason="babeltrace2 not installed")
@pytest.mark.parametrize("name", FIXTURE_NAMES)
@pytest.mark.parametrize("opts", OPTION_SETS, ids=lambda o: " ".join(o) or "default")
def test_view_matches_live_babeltrace2(name, opts):
    path = str(FIXTURES / name)
    rc, out, err = run_cli(["view", *opts, path])
    bout, berr = _bt2([*opts, path])
    assert rc == 0
    assert out == bout
    assert _norm_stderr(err) == _norm_stderr(berr)


def _synthetic(path, header):
    from ust.ctf._synth import Synth
    s = Synth(path, header=header, packet_size=4096)
    a = s.event_class("t:ints", [
        ("_a", "integer { size = 32; align = 8; signed = 1; base = 16; }", "i"),
        ("_b", "integer { size = 8; align = 8; signed = 1; base = 8; }", "b"),
        ("_c", "integer { size = 16; align = 8; signed = 0; base = 2; }", "H")])
    b = s.event_class("t:str", [("_s", "string", "s"),
                                ("_d", "floating_point { exp_dig = 11; mant_dig = 53; align = 8; }", "d")])
    c = s.event_class("t:empty", [])
    # no empty string: babeltrace2 2.0.4 prints a stale value for "" (see docs/reader.md)
    strs = ["plain", 'quo"te', "back\\slash", "new\nline", "tab\there", "ctl\x01x", "del\x7f", "é ü ☃",
            "bad\udcc3byte"]
    evs = []
    ts = 1000
    for i in range(3000):
        ts += (i * 7919) % (1 << 26) + ((1 << 27) if i % 500 == 0 else 0)
        k = i % 3
        if k == 0:
            evs.append((ts, a, (-i, -(i % 128), i * 13 % 65536)))
        elif k == 1:
            evs.append((ts, b, (strs[i % len(strs)], i / 7.0 - 100 if i % 11 else float("inf"))))
        else:
            evs.append((ts, c, ()))
    s.write(evs, discarded_at={3: 10, 5: 25})
    return path


@pytest.mark.skipif(not HAVE_BT2, reason="babeltrace2 not installed")
@pytest.mark.parametrize("header", ["large", "compact"])
@pytest.mark.parametrize("opts", [[], ["--clock-cycles", "--no-delta"], ["-n", "none"]], ids=str)
def test_synthetic_trace_matches_live_babeltrace2(tmp_path, header, opts):
    """Escapes, bases, wrap-around of compact timestamps, empty payloads, discarded events."""
    path = str(_synthetic(tmp_path / "t", header))
    rc, out, err = run_cli(["view", *opts, path])
    bout, berr = _bt2([*opts, path])
    assert rc == 0
    assert out == bout
    assert _norm_stderr(err) == _norm_stderr(berr)


# --------------------------------------------------------------------------
# the C formatter (ust.ctf._decode) and its pure-Python fallback agree
# --------------------------------------------------------------------------

FORMAT_OPTIONS = [[], ["--clock-cycles"], ["--clock-cycles", "--no-delta"], ["--clock-seconds"], ["--clock-date"],
                  ["--clock-gmt"], ["--no-delta"], ["-n", "header"], ["-n", "all", "--clock-cycles"]]


@pytest.mark.parametrize("opts", FORMAT_OPTIONS + [["-n", "none"], ["-n", "scope"], ["-f", "all"]],
                         ids=lambda o: " ".join(o) or "default")
@pytest.mark.parametrize("source", ["synthetic-large", "synthetic-compact", "ust-uid-contexts"])
def test_c_renderer_and_python_decoders_agree(tmp_path, monkeypatch, opts, source):
    """_decode.render_packet/format_lines against the generated Python decoders."""
    from ust.ctf import _fasttext, pipeline
    if source.startswith("synthetic"):
        path = str(_synthetic(tmp_path / "t", source.split("-")[1]))
    else:
        path = str(FIXTURES / source)
    rc, with_c, err_c = run_cli(["view", *opts, path])
    monkeypatch.setattr(pipeline, "_decode", None)
    rc2, without_c, err_py = run_cli(["view", *opts, path])
    assert rc == rc2 == 0
    assert with_c == without_c
    assert err_c == err_py


@pytest.mark.parametrize("opts", FORMAT_OPTIONS, ids=lambda o: " ".join(o) or "default")
@pytest.mark.parametrize("tz", ["UTC", "America/Montreal", "Asia/Kolkata"])
def test_c_and_python_formatting_agree(monkeypatch, opts, tz):
    import time

    from ust.ctf import _fasttext, pipeline
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        path = str(FIXTURES / "ust-pid")
        rc, with_c, _ = run_cli(["view", *opts, path])
        monkeypatch.setattr(pipeline, "_decode", None)
        rc2, without_c, _ = run_cli(["view", *opts, path])
        assert rc == rc2 == 0
        assert with_c == without_c
        if HAVE_BT2:
            bout, _ = _bt2([*opts, path])
            assert with_c == bout
    finally:
        monkeypatch.undo()
        time.tzset()


def test_lost_packets_warning(tmp_path):
    """A packet sequence-number gap is reported like babeltrace2 does."""
    import struct

    from ust.ctf._synth import Synth
    s = Synth(tmp_path / "t", packet_size=4096)
    c = s.event_class("x:y", [("_v", "integer { size = 32; align = 8; signed = 0; }", "I")])
    s.write(((1000 + i * 1000, c, (i,)) for i in range(3000)))
    stream = tmp_path / "t" / "chan_0"
    data = bytearray(stream.read_bytes())
    for i, off in enumerate(range(0, len(data), 4096)):
        struct.pack_into("<Q", data, off + 64, i if i < 3 else i + 2)  # packet_seq_num: 0 1 2 5 6 ...
    stream.write_bytes(bytes(data))
    rc, out, err = run_cli(["view", "--clock-gmt", str(tmp_path / "t")])
    assert rc == 0
    assert err.startswith("WARNING: Tracer discarded 2 packets between [22:13:20.001200000] and "
                          "[22:13:20.001201000] in trace \"synth\"")
    if HAVE_BT2:
        bout, berr = _bt2(["--clock-gmt", str(tmp_path / "t")])
        assert out == bout and _norm_stderr(err) == _norm_stderr(berr)


def test_import_is_standard_library_only():
    code = ("import sys, sysconfig\n"
            "before = set(sys.modules)\n"
            "import ust.ctf, ust.filter, ust.analysis\n"
            "std = sysconfig.get_paths()['stdlib']\n"
            "bad = [m for m in set(sys.modules) - before if not m.startswith('ust')\n"
            "       and getattr(sys.modules[m], '__file__', None)\n"
            "       and not sys.modules[m].__file__.startswith(std)]\n"
            "print(bad)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(p) for p in sys.path if p]))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_huge_timestamps_do_not_crash(tmp_path):
    """Clock values near 2**64 (beyond time_t and int64 ns): printed, never a traceback."""
    from ust.ctf._synth import Synth
    s = Synth(tmp_path / "t")
    c = s.event_class("x:y", [("_v", "integer { size = 32; align = 8; signed = 0; }", "I")])
    s.write([(2**64 - 5000 + i, c, (i,)) for i in range(3)])
    for opts in ([], ["--clock-cycles"], ["--clock-date"], ["--json"]):
        rc, out, err = run_cli(["view", *opts, str(tmp_path / "t")])
        assert rc == 0, err
        assert out.count(b"\n") == 3
    rc, out, _ = run_cli(["view", "--clock-cycles", "--no-delta", str(tmp_path / "t")])
    assert out.splitlines()[0].startswith(b"[18446744073709546616] synth x:y:")


def test_big_endian_trace(tmp_path):
    """A big-endian trace (the generated Python decoders; the C paths are little-endian only)."""
    from ust.ctf._synth import Synth
    s = Synth(tmp_path / "t", byte_order="be", packet_size=4096, context=[
        ("_vtid", "integer { size = 32; align = 8; signed = 1; }", "i")])
    a = s.event_class("be:x", [("_a", "integer { size = 16; align = 8; signed = 1; base = 16; }", "h"),
                               ("_b", "integer { size = 64; align = 8; signed = 0; }", "Q"),
                               ("_d", "floating_point { exp_dig = 11; mant_dig = 53; align = 8; }", "d"),
                               ("_s", "string", "s")])
    s.write([(1000 + 77 * i, a, (-i, i * 2**40, i / 3, f"s{i}"), (i % 3,)) for i in range(2000)])
    rc, out, err = run_cli(["view", "--clock-cycles", "--no-delta", str(tmp_path / "t")])
    assert rc == 0, err
    first = out.splitlines()[1].decode()
    assert "{ vtid = 1 }, { a = 0xFFFF, b = 1099511627776, d = 0.333333, s = \"s1\" }" in first
    if HAVE_BT2:
        for opts in ([], ["--clock-cycles", "--no-delta"], ["-n", "none"]):
            rc, out, err = run_cli(["view", *opts, str(tmp_path / "t")])
            bout, berr = _bt2([*opts, str(tmp_path / "t")])
            assert out == bout
    import ust.ctf
    evs = list(ust.ctf.read_trace(tmp_path / "t"))
    assert evs[5].fields == {"a": -5, "b": 5 * 2**40, "d": 5 / 3, "s": "s5"} and evs[5].context == {"cpu_id": 0,
                                                                                                    "vtid": 2}
    try:
        import numpy  # noqa: F401
    except ImportError:
        return
    cols = ust.ctf.read_columns(tmp_path / "t")["be:x"]
    assert cols["b"].tolist() == [e.fields["b"] for e in evs] and cols["vtid"].tolist() == [e.context["vtid"] for e in evs]


def test_variants_and_nested_structs(tmp_path):
    """Payload variants (tagged by an enum) and nested structs: text like babeltrace2, values in the API."""
    from ust.ctf._synth import Synth
    s = Synth(tmp_path / "t", packet_size=4096)
    en = "enum : integer { size = 8; align = 8; signed = 0; } { A = 0, B = 1 }"
    var = "variant <_tag> { string A; integer { size = 32; align = 8; signed = 1; } B; }"
    st = "struct { integer { size = 16; align = 8; signed = 0; } x; }"
    a = s.event_class("v:a", [("_tag", en, "B"), ("_v", var, "s"), ("_n", st, "H")])
    b = s.event_class("v:b", [("_tag", en, "B"), ("_v", var, "i")])
    s.write([(1000 + i, b, (1, -i)) if i % 2 else (1000 + i, a, (0, f"str{i}", i)) for i in range(10)])
    rc, out, _ = run_cli(["view", "--clock-cycles", "--no-delta", str(tmp_path / "t")])
    lines = out.decode().splitlines()
    assert lines[0].endswith('{ tag = ( "A" : container = 0 ), v = { "str0" }, n = { x = 0 } }')
    assert lines[1].endswith('{ tag = ( "B" : container = 1 ), v = { -1 } }')
    import ust.ctf
    evs = list(ust.ctf.read_trace(tmp_path / "t"))
    assert evs[0].fields == {"tag": 0, "v": "str0", "n": {"x": 0}} and evs[1].fields == {"tag": 1, "v": -1}
    if HAVE_BT2:
        for opts in ([], ["-n", "none"]):
            rc, out, _ = run_cli(["view", *opts, str(tmp_path / "t")])
            assert out == _bt2([*opts, str(tmp_path / "t")])[0]


def test_ties_across_traces_and_streams(tmp_path):
    """Equal timestamps: babeltrace2's order (trace UUID, then stream instance id), the same in every path."""
    import uuid

    import ust.ctf
    from ust.ctf._synth import Synth
    for name, u in (("zz", "d6753e8a-74b4-4d76-877b-24463f620322"), ("aa", "ff2c6b87-2617-460b-be2c-d32ab57afc0c"),
                    ("mm", "ee7a4ffb-c1ee-462e-9e84-c91c468e315c")):
        s = Synth(tmp_path / name, packet_size=4096, hostname=name)
        s.uuid = uuid.UUID(u)
        a = s.event_class("x:a", [("_v", "integer { size = 32; align = 8; signed = 0; }", "I")])
        b = s.event_class("x:b", [("_v", "integer { size = 32; align = 8; signed = 0; }", "I")])
        s.write([(1000 + i * 10, b, (i,)) for i in range(20)], stream_name="chan_0", cpu=7)
        s.write([(1000 + i * 10, a, (i,)) for i in range(20)], stream_name="chan_1", cpu=3)
    rc, out, _ = run_cli(["view", "--clock-cycles", "--no-delta", str(tmp_path)])
    heads = [ln.split(b" { ")[0].split(b"] ")[1] + ln.split(b"cpu_id = ")[1][:1] for ln in out.splitlines()[:6]]
    assert heads == [b"zz x:a:3", b"zz x:b:7", b"mm x:a:3", b"mm x:b:7", b"aa x:a:3", b"aa x:b:7"]
    evs = list(ust.ctf.read_trace(tmp_path))
    assert [(e.trace.hostname, e.cpu_id) for e in evs[:6]] == [("zz", 3), ("zz", 7), ("mm", 3), ("mm", 7),
                                                                 ("aa", 3), ("aa", 7)]
    if HAVE_BT2:
        assert out == _bt2(["--clock-cycles", "--no-delta", str(tmp_path)])[0]


def test_many_event_classes(tmp_path, monkeypatch):
    """More event classes than the inlined if/elif chain takes: the per-class dispatch, and C, agree."""
    from ust.ctf import _fasttext, pipeline
    from ust.ctf._synth import Synth
    s = Synth(tmp_path / "t", packet_size=4096, context=[("_vtid", "integer { size = 32; align = 8; signed = 1; }",
                                                          "i")])
    cls = [s.event_class(f"m:e{k}", [("_v", "integer { size = 32; align = 8; signed = 1; }", "i"),
                                      ("_s", "string", "s")]) for k in range(70)]
    s.write([(100 + i * 3, cls[i % 70], (i, f"x{i}"), (i % 5,)) for i in range(2000)])
    rc, with_c, _ = run_cli(["view", str(tmp_path / "t")])
    monkeypatch.setattr(pipeline, "_decode", None)
    rc2, without_c, _ = run_cli(["view", str(tmp_path / "t")])
    assert rc == rc2 == 0 and with_c == without_c
    assert b"m:e69: { cpu_id = 0 }, { vtid = " in with_c
    if HAVE_BT2:
        assert with_c == _bt2([str(tmp_path / "t")])[0]


@pytest.mark.parametrize("use_c", [True, False])
def test_small_chunks(monkeypatch, use_c):
    """Packets decoded a few events at a time give the same output (chunk boundaries everywhere)."""
    import ust.ctf
    from ust.ctf import _fasttext, pipeline
    if not use_c:
        monkeypatch.setattr(pipeline, "_decode", None)
    monkeypatch.setattr(_fasttext._StreamText, "CHUNK", 7)
    monkeypatch.setattr(pipeline.StreamEvents, "CHUNK", 3)
    for name in FIXTURE_NAMES:
        rc, out, _ = run_cli(["view", "--clock-cycles", "--no-delta", str(FIXTURES / name)])
        assert out == (FIXTURES / f"{name}.expected.txt").read_bytes()
        n = sum(1 for _ in ust.ctf.read_trace(FIXTURES / name))
        assert n == out.count(b"\n")
