"""Reader benchmark: `ust view` and the bulk API against babeltrace2.

    python bench/bench_reader.py [--events N] [--keep DIR]

Generates an LTTng-layout trace (two per-CPU streams, large event headers,
two event classes: three integers; an integer and a short string), then
times, in one run on this machine:

  * `ust view TRACE > /dev/null` vs `babeltrace2 TRACE > /dev/null`
  * `ust.ctf.read_columns` (bulk, NumPy columns) vs babeltrace2's Python
    bindings (bt2) iterating the same events, when bt2 is importable
  * `ust.ctf.read_trace` (one Python object per event), for reference

and prints the figures and ratios. Timings are wall-clock, best of N runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from ust.ctf._synth import Synth  # noqa: E402


def make_simple_trace(path, n):
    """Simple events only: three integers each (the bulk path's best case)."""
    s = Synth(path, hostname="bench", packet_size=1 << 20)
    a = s.event_class("bench:ints", [
        ("_a", "integer { size = 64; align = 8; signed = 1; }", "q"),
        ("_b", "integer { size = 32; align = 8; signed = 0; }", "I"),
        ("_c", "integer { size = 16; align = 8; signed = 0; base = 16; }", "H")])
    for cpu in (0, 1):
        def gen(cpu=cpu):
            ts = 1_000_000 + cpu * 37
            for i in range(n // 2):
                ts += 97 + (i % 13)
                yield ts, a, (-i, i & 0xFFFFFFFF, i & 0xFFFF)
        s.write(gen(), stream_name=f"chan_{cpu}", cpu=cpu)
    return path


def make_trace(path, n):
    s = Synth(path, hostname="bench", packet_size=1 << 20)
    a = s.event_class("bench:ints", [
        ("_a", "integer { size = 64; align = 8; signed = 1; }", "q"),
        ("_b", "integer { size = 32; align = 8; signed = 0; }", "I"),
        ("_c", "integer { size = 16; align = 8; signed = 0; base = 16; }", "H")])
    b = s.event_class("bench:msg", [
        ("_id", "integer { size = 32; align = 8; signed = 0; }", "I"),
        ("_msg", "string", "s")])
    msgs = ["hello", "request done", "cache miss", "ok"]
    for cpu in (0, 1):
        def gen(cpu=cpu):
            ts = 1_000_000 + cpu * 37
            for i in range(n // 2):
                ts += 97 + (i % 13)
                if i % 2:
                    yield ts, b, (i, msgs[i % 4])
                else:
                    yield ts, a, (-i, i & 0xFFFFFFFF, i & 0xFFFF)
        s.write(gen(), stream_name=f"chan_{cpu}", cpu=cpu)
    return path


BT2_SNIPPET = """
import bt2
k = 0
for msg in bt2.TraceCollectionMessageIterator(%r):
    if type(msg) is bt2._EventMessageConst:
        ev = msg.event
        _ = msg.default_clock_snapshot.ns_from_origin
        _ = [v for v in ev.payload_field.values()]
        k += 1
assert k == %d, k
"""


def _python_with_bt2():
    """A Python that can import bt2 (python3-bt2 installs it for the system Python)."""
    for py in (sys.executable, "/usr/bin/python3"):
        if py and os.path.exists(py):
            r = subprocess.run([py, "-c", "import bt2"], capture_output=True)
            if r.returncode == 0:
                return py
    return None


def timed(fn, repeat):
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best


def run_cmd(cmd):
    with open(os.devnull, "wb") as null:
        subprocess.run(cmd, stdout=null, stderr=subprocess.DEVNULL, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="write the trace here and keep it")
    args = ap.parse_args()
    tmp = args.keep or tempfile.mkdtemp(prefix="ust-bench-")
    trace = os.path.join(tmp, "trace")
    if not os.path.exists(os.path.join(trace, "metadata")):
        t0 = time.perf_counter()
        make_trace(trace, args.events)
        print(f"generated {args.events} events in {time.perf_counter() - t0:.1f} s: {trace}")
    simple = os.path.join(tmp, "simple")
    if not os.path.exists(os.path.join(simple, "metadata")):
        make_simple_trace(simple, args.events)
    n = args.events
    env_py = [sys.executable, "-m", "ust.cli"]
    os.environ["PYTHONPATH"] = os.path.join(HERE, "..", "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    res = {}
    res["ust view"] = timed(lambda: run_cmd(env_py + ["view", trace]), args.repeat)
    bt = shutil.which("babeltrace2")
    if bt:
        res["babeltrace2"] = timed(lambda: run_cmd([bt, trace]), args.repeat)
    import ust.ctf

    def bulk():
        cols = ust.ctf.read_columns(trace)
        assert sum(len(c["timestamp"]) for c in cols.values()) == n

    res["ust bulk (read_columns)"] = timed(bulk, args.repeat)

    def bulk_simple():
        cols = ust.ctf.read_columns(simple)
        assert sum(len(c["timestamp"]) for c in cols.values()) == n

    res["ust bulk, simple events"] = timed(bulk_simple, args.repeat)

    def objects():
        k = 0
        for _ in ust.ctf.read_trace(trace):
            k += 1
        assert k == n

    res["ust read_trace (objects)"] = timed(objects, 1)
    from ust.ctf import _fasttext
    print(f"C text formatter (ust.ctf._decode): {'built' if _fasttext._decode is not None else 'NOT built'}")
    bt2_python = _python_with_bt2()
    have_bt2 = bt2_python is not None
    if have_bt2:
        # babeltrace2's bindings, iterating every event and reading its time and payload
        code = (BT2_SNIPPET % (trace, n))
        res["bt2 python bindings"] = timed(lambda: subprocess.run([bt2_python, "-c", code], check=True), 1)
    print(f"\n{n} events (half 3 integers, half an integer and a string; 'simple': all 3 integers), "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for k, v in res.items():
        print(f"  {k:28s} {v:8.2f} s  {n / v / 1e6:7.2f} M events/s")
    if "babeltrace2" in res:
        print(f"  ratio ust view / babeltrace2: {res['ust view'] / res['babeltrace2']:.2f} (lower is faster)")
    if have_bt2:
        print(f"  ratio bt2 bindings / ust bulk: {res['bt2 python bindings'] / res['ust bulk (read_columns)']:.1f}x")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
