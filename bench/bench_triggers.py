"""Trigger benchmark: what an event-rule-matches trigger costs the application, per call of a tracepoint it
selects, against the baseline call and a session-recorded event, in one run (ratios: the machine is shared).

    python bench/bench_triggers.py [--quick]

The trigger's callback runs in the application's thread (docs/lifecycle.md, "Triggers"): the filter, the
count, and with --capture the values of the first matches of each report. The agent's thread sends the
reports meanwhile, as it would in production.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from _daemon_home import HOME, wait_for  # before `import ust`: the agent of this process uses its daemon

import ust  # noqa: E402
from ust.control import Client, stop_sessiond  # noqa: E402

from _timing import best_ns_per_call, empty, loop_of  # noqa: E402


def costs(n: int, repeats: int) -> dict:
    c = Client(HOME)
    tp = ust.tracepoint("bench:trig", {"i": ust.int32, "s": ust.string}, ust.INFO)
    res = {"empty": best_ns_per_call(loop_of(empty), n, repeats),
           "disabled": best_ns_per_call(loop_of(tp), n, repeats)}
    for name, kw in (("trigger", {}), ("trigger_filter", {"filter": "i == 1"}),
                     ("trigger_capture", {"captures": ["i", "s"]})):
        c.add_trigger("bench:trig", ["notify"], name=name, **kw)
        wait_for(lambda: tp.enabled)
        res[name] = best_ns_per_call(loop_of(tp), n, repeats)
        c.remove_trigger(name)
        wait_for(lambda: not tp.enabled)
    c.create_session("bench", output=os.path.join(HOME, "traces"))
    c.enable_channel("bench", "channel0", subbuf_size="1M", num_subbuf=16)
    c.enable_events("bench", "bench:trig")
    c.start("bench")
    wait_for(lambda: tp.enabled)
    res["recorded"] = best_ns_per_call(loop_of(tp), n, repeats)
    c.stop("bench")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, repeats = (20_000, 3) if args.quick else (200_000, 7)
    try:
        r = costs(n, repeats)
    finally:
        try:
            stop_sessiond(HOME, timeout=30)
        except Exception as exc:  # noqa: BLE001
            print(f"bench: daemon not stopped: {exc}", file=sys.stderr)
        shutil.rmtree(HOME, ignore_errors=True)
    base = r["empty"]
    print(f"{'per call':<34}{'ns':>8}{'x empty':>10}{'x recorded':>12}")
    for k, label in (("empty", "empty function (baseline)"), ("disabled", "tracepoint, nothing attached"),
                     ("recorded", "tracepoint, recorded by a session"), ("trigger", "trigger (notify)"),
                     ("trigger_filter", "trigger with a filter"), ("trigger_capture", "trigger, 2 captures")):
        print(f"{label:<34}{r[k]:>8.0f}{r[k] / base:>10.2f}{r[k] / r['recorded']:>12.2f}")


if __name__ == "__main__":
    main()
