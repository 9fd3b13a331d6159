"""Consumer benchmark: does the drain keep up with a steady writer?

    python bench/bench_consumer.py [--rate 1000000] [--seconds 30] [--subbuf-size 512k --num-subbuf 4]

One application writes ``--rate`` events/s (int32 + 10-character string, 21
bytes an event), paced in batches of 1000, for ``--seconds``, with the default
buffers (4 x 512 KiB per CPU) unless told otherwise; first into an embedded
``ust.Session`` (drained by a thread of the same process), then into a daemon
session (drained by ust-consumerd in another process). It reports, for each,
the events written, the events lost (the buffers' exact counters, and the
events babeltrace2 would count as discarded), the rate achieved and how late
the writer's pacing ran at worst. Lost must be 0.

``--kernel`` (root): the daemon session also records the kernel's getppid()
system calls while one process per CPU floods them, so ust-consumerd drains
ftrace CPUs beside the ring buffers (docs/kernel.md: the ring buffers stay in
the C loop); run with and without it to compare the ust side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

# The application: writes COUNT events at RATE/s, paced in batches of 1000.
APP = r"""
import json, os, sys, time
import ust
mode, out, rate, seconds, subbuf, nsub = sys.argv[1:7]
rate, seconds, subbuf, nsub = float(rate), float(seconds), int(subbuf), int(nsub)
tp = ust.tracepoint("bench:steady", {"i": ust.int32, "s": ust.string}, ust.INFO)
session = None
if mode == "embedded":
    session = ust.Session(out, events=["bench:steady"], subbuf_size=subbuf, num_subbuf=nsub).start()
else:
    deadline = time.monotonic() + 30
    while not any(c["attached"] for c in ust.agent.status().get("connections", [])):
        if time.monotonic() > deadline:
            sys.exit("bench: the daemon never attached the tracepoint")
        time.sleep(0.01)
count = int((rate if rate > 0 else 4e6) * seconds)  # rate 0: as fast as it can
s10 = "abcdefghij"
t0 = time.monotonic()
v = late = 0
while v < count:
    for i in range(v, min(v + 1000, count)):
        tp(i, s10)
    v = min(v + 1000, count)
    ahead = t0 + v / rate - time.monotonic() if rate > 0 else 0
    if ahead > 0:
        time.sleep(ahead)
    else:
        late = max(late, -ahead)
elapsed = time.monotonic() - t0
lost = None
if session is not None:
    session.stop()
    lost = session.lost
print(json.dumps({"written": count, "elapsed": elapsed, "late": late, "lost": lost}), flush=True)
"""


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def discarded_in_trace(trace: str) -> int:
    """The events the trace says were discarded (what babeltrace2 reports):
    the last packet's events_discarded of every stream file."""
    sys.path.insert(0, SRC)
    from ust.ctf.writer import last_events_discarded

    total = 0
    for d, _, files in os.walk(trace):
        total += sum(last_events_discarded(os.path.join(d, f)) for f in files
                     if f != "metadata" and not f.startswith("."))
    return total


def run_embedded(args, work: str) -> dict:
    out = os.path.join(work, "embedded")
    env = dict(os.environ, PYTHONPATH=SRC, UST_AGENT="0")
    r = subprocess.run([sys.executable, "-c", APP, "embedded", out, str(args.rate), str(args.seconds),
                        str(args.subbuf), str(args.nsub)], env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"bench: embedded app failed:\n{r.stderr}")
    res = json.loads(r.stdout)
    res["trace_discarded"] = discarded_in_trace(out)
    return res


def run_daemon(args, work: str) -> dict:
    home = os.path.join(work, "home")
    os.makedirs(home)
    os.environ["UST_HOME"] = home
    sys.path.insert(0, SRC)
    from ust.control import Client, stop_sessiond

    out = os.path.join(work, "daemon")
    try:
        with Client(home) as c:  # starts the per-user daemon
            c.create_session("steady", output=out)
            c.enable_channel("steady", "channel0", subbuf_size=args.subbuf, num_subbuf=args.nsub)
            c.enable_events("steady", "bench:steady")
            flooders = []
            if args.kernel:
                c.kernel_enable_events("steady", ["getppid"], syscall=True)
            c.start("steady")
            if args.kernel:
                flood = ("import os, time\nend = time.monotonic() + float(%r)\nn = 0\n"
                         "while time.monotonic() < end:\n    [os.getppid() for _ in range(1000)]\n    n += 1000\n"
                         "print(n)\n" % args.seconds)
                flooders = [subprocess.Popen([sys.executable, "-c", flood], stdout=subprocess.PIPE, text=True)
                            for _ in range(os.cpu_count() or 1)]
            env = dict(os.environ, PYTHONPATH=SRC, UST_HOME=home, UST_AGENT_RETRY="0.05")
            env.pop("UST_AGENT", None)
            r = subprocess.run([sys.executable, "-c", APP, "daemon", out, str(args.rate), str(args.seconds),
                                str(args.subbuf), str(args.nsub)], env=env, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(f"bench: daemon app failed:\n{r.stderr}")
            res = json.loads(r.stdout)
            res["syscalls"] = sum(int(f.communicate()[0]) for f in flooders)
            stopped = c.stop("steady")
            res["lost"] = stopped["lost"]
            res["kernel_lost"] = (stopped.get("kernel") or {}).get("lost", 0)
            c.destroy_session("steady")
    finally:
        stop_sessiond(home)
    res["trace_discarded"] = discarded_in_trace(out)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=1_000_000, help="events/s (0: unpaced, as fast as it can)")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--subbuf-size", default="512k")
    p.add_argument("--num-subbuf", type=int, default=4)
    p.add_argument("--only", choices=("embedded", "daemon"))
    p.add_argument("--kernel", action="store_true", help="the daemon session records a getppid() flood too (root)")
    args = p.parse_args()
    args.subbuf, args.nsub = parse_size(args.subbuf_size), args.num_subbuf
    work = tempfile.mkdtemp(prefix="ust-bench-consumer-")
    try:
        print(f"steady writer: {args.rate:,.0f} events/s (0: unpaced) for {args.seconds:g} s, "
              f"buffers {args.nsub} x {args.subbuf // 1024} KiB per CPU")
        for name, fn in (("embedded", run_embedded), ("daemon", run_daemon)):
            if args.only and args.only != name:
                continue
            r = fn(args, work)
            pacing = f"  pacing late by {r['late'] * 1e3:.1f} ms at worst" if args.rate > 0 else ""
            kernel = (f"  kernel: {2 * r['syscalls']:,} events of a getppid() flood, {r['kernel_lost']:,} lost"
                      if r.get("syscalls") else "")
            print(f"  {name:9s} written {r['written']:>11,}  lost {r['lost']:>8,} "
                  f"({100 * r['lost'] / r['written']:.2f} %, in the trace: {r['trace_discarded']:,})  "
                  f"achieved {r['written'] / r['elapsed']:>11,.0f}/s{pacing}{kernel}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
