"""Markers keep their printf format: the trace stores it, `ust view --messages` and read_trace format it."""

import os
import subprocess
import sys

import ust
from conftest import babeltrace2_text, needs_babeltrace2
from daemon_util import ust_env  # noqa: F401 - a fixture

MARKS = ("import ust\n"
         "for i in range(3):\n"
         "    ust.mark('shop', 'sale', 'item %s sold %d times for %.2f EUR (%#x) 100%%', 'pen', i, 1.5 * i, 255)\n"
         "ust.mark('shop', 'quote', 'said \"%s\"\\\\n', 'hi')\n")
EXPECTED = ["item pen sold 0 times for 0.00 EUR (0xff) 100%", "item pen sold 1 times for 1.50 EUR (0xff) 100%",
            "item pen sold 2 times for 3.00 EUR (0xff) 100%", 'said "hi"\\n']


def _view_messages(trace) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "ust.cli", "view", "--messages", str(trace)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "UST_AGENT": "0"})
    assert r.returncode == 0, r.stderr
    return [line.split(": ", 1)[1] for line in r.stdout.splitlines()]


@needs_babeltrace2
def test_marker_format_is_stored_and_formatted_embedded(tmp_path):
    trace = tmp_path / "t"
    r = subprocess.run([sys.executable, "-c", f"import ust\nwith ust.Session({str(trace)!r}):\n"
                        + "".join("    " + line + "\n" for line in MARKS.splitlines())],
                       capture_output=True, text=True, env={**os.environ, "UST_AGENT": "0"}, timeout=120)
    assert r.returncode == 0, r.stderr
    out, err = babeltrace2_text(trace)
    assert err == ""  # babeltrace2 reads the format's attribute without a warning
    assert 'shop:sale: { cpu_id = ' in out and 'arg0 = "pen"' not in out
    assert [e.message for e in ust.read_trace(trace)] == EXPECTED
    assert _view_messages(trace) == EXPECTED


@needs_babeltrace2
def test_marker_format_travels_through_the_daemons(ust_env):
    out = os.path.join(ust_env.home, "run")
    r = subprocess.run([sys.executable, "-m", "ust.cli", "run", "-o", out, "--", sys.executable, "-c", MARKS],
                       env=ust_env.env(UST_AGENT="0"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    _, err = babeltrace2_text(out)
    assert err == ""
    assert _view_messages(out) == EXPECTED


def test_tracepoints_have_no_message(tmp_path):
    tp = ust.tracepoint("shop:plain", {"v": ust.int32})
    with ust.Session(tmp_path / "t", events=["shop:plain"]):
        tp(7)
    assert [(e.fields, e.message) for e in ust.read_trace(tmp_path / "t")] == [({"v": 7}, None)]


def test_mark_dispatch_many_call_sites_dynamic_strings_and_errors(tmp_path):
    """ust.mark's per-call-site cache (C): evicted entries, strings built per call, bad calls."""
    import pytest

    with ust.Session(tmp_path / "t", events=["dyn*:*"]):
        for i in range(3):
            for k in range(700):  # more call-site keys than cache slots: entries are evicted and re-resolved
                ust.mark("dyn" + str(k % 7), "ev" + str(k), "k %d i %d", k, i)
        with pytest.raises(TypeError):
            ust.mark("dyn0", "ev0")
        with pytest.raises(ValueError):
            ust.mark("dyn0", "bad", "%q", 1)
        with pytest.raises(TypeError):
            ust.mark("dyn0", "ev0", "k %d i %d", k=1)
        from ust.instrument.marker import _mark_python  # the fallback where the C dispatch is not built

        assert ust.mark is not _mark_python
        _mark_python("dyn0", "ev0", "k %d i %d", 0, 3)
    got = sorted((e.name, e.fields["k"], e.fields["i"]) for e in ust.read_trace(tmp_path / "t"))
    assert got == sorted([(f"dyn{k % 7}:ev{k}", k, i) for i in range(3) for k in range(700)] + [("dyn0:ev0", 0, 3)])
    assert {e.message for e in ust.read_trace(tmp_path / "t") if e.name == "dyn0:ev0"} == {
        "k 0 i 0", "k 0 i 1", "k 0 i 2", "k 0 i 3"}


@needs_babeltrace2
def test_a_marker_with_a_huge_format_is_still_traced_by_the_daemons(ust_env):
    """A format over the protocol's bound is not sent (no message), but never costs the app its tracing."""
    code = ("import ust\n"
            "ust.mark('big', 'fmt', 'v %d ' + 'x' * 5000, 1)\n"
            "ust.mark('big', 'small', 'v %d', 2)\n")
    out = os.path.join(ust_env.home, "run")
    r = subprocess.run([sys.executable, "-m", "ust.cli", "run", "-o", out, "--", sys.executable, "-c", code],
                       env=ust_env.env(UST_AGENT="0"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [(e.name, e.fields["v"], e.message) for e in ust.read_trace(out)] == [
        ("big:fmt", 1, None), ("big:small", 2, "v 2")]
