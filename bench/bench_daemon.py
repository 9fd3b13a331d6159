"""Daemon benchmark: tracepoint cost with daemon-managed buffers vs the embedded
session, and the cost of `ust run` around a program.

    python bench/bench_daemon.py [--quick]

Both sessions record into the same ring buffer (ust._ring): the daemon's in
shared memory created by ust-consumerd and drained by it in another process,
the embedded one drained by a thread of this process. Figures are ratios
measured in one run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from _daemon_home import HOME, wait_for  # before `import ust`: the agent of this process uses its daemon

import ust  # noqa: E402
from ust.control import Client, stop_sessiond  # noqa: E402

from _timing import best_ns_per_call, empty, loop_of  # noqa: E402


def tracepoint_costs(n: int, repeats: int) -> dict:
    out_dir = os.path.join(HOME, "traces")
    c = Client(HOME)
    c.create_session("bench", output=os.path.join(out_dir, "daemon"))
    c.enable_channel("bench", "channel0", subbuf_size="1M", num_subbuf=16)
    c.enable_events("bench", "bench:daemon")
    c.start("bench")
    tp_daemon = ust.tracepoint("bench:daemon", {"i": ust.int32, "s": ust.string}, ust.INFO)
    tp_embedded = ust.tracepoint("bench:embedded", {"i": ust.int32, "s": ust.string}, ust.INFO)
    wait_for(lambda: any(x["attached"] for x in ust.agent.status().get("connections", [])))

    res = {"empty": best_ns_per_call(loop_of(empty), n, repeats)}
    res["disabled"] = best_ns_per_call(loop_of(tp_embedded), n, repeats)
    res["daemon"] = best_ns_per_call(loop_of(tp_daemon), n, repeats)
    c.stop("bench")
    with ust.Session(os.path.join(out_dir, "embedded"), events=["bench:embedded"], subbuf_size=1 << 20,
                     num_subbuf=16) as s:
        res["embedded"] = best_ns_per_call(loop_of(tp_embedded), n, repeats)
    res["embedded_lost"] = s.lost
    c.destroy_session("bench")
    return res


APP = """
import sys, ust
tps = [ust.tracepoint(f"lat:e{i}", {"v": ust.int32}) for i in range(20)]
print("ready", flush=True)
sys.stdin.read()
"""


def toggle_latency(napps: int, rounds: int) -> dict:
    """How long enable-event / disable-event take to reach running applications.

    The request returns once every application acknowledged (attached or
    detached), so its round trip bounds the time to take effect.
    """
    env = dict(os.environ)
    apps = [subprocess.Popen([sys.executable, "-c", APP], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True) for _ in range(napps)]
    try:
        for a in apps:
            a.stdout.readline()
        c = Client(HOME)
        wait_for(lambda: sum(1 for a in c.list_apps() if len(a["tracepoints"]) >= 20) >= napps)
        c.create_session("lat", output=os.path.join(HOME, "lat"))
        c.enable_events("lat", "lat:e0")
        c.start("lat")
        on, off = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            c.enable_events("lat", "lat:*")
            on.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c.disable_events("lat", "lat:*")
            off.append(time.perf_counter() - t0)
        c.destroy_session("lat")
        return {"enable": statistics.median(on), "disable": statistics.median(off),
                "enable_max": max(on), "disable_max": max(off)}
    finally:
        for a in apps:
            a.kill()
            a.wait()


def run_overhead(runs: int) -> dict:
    env = dict(os.environ)
    env["UST_HOME"] = HOME

    def timed(cmd):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    plain = timed([sys.executable, "-c", "pass"])
    plain_import = timed([sys.executable, "-c", "import ust"])
    out = os.path.join(HOME, "run-trace")
    run = timed([sys.executable, "-m", "ust.cli", "run", "-q", "-o", out, "--", sys.executable, "-c", "pass"])
    run_import = timed([sys.executable, "-m", "ust.cli", "run", "-q", "-o", out, "--", sys.executable, "-c",
                        "import ust"])
    return {"plain": plain, "plain_import": plain_import, "run": run, "run_import": run_import}


def command_startup(runs: int) -> dict:
    """Wall time of `ust` commands (the console script, as a user runs it) against `python -c pass`,
    interleaved so that the machine's load weighs on each alike: (median, best) per command."""
    env = dict(os.environ)
    env["UST_HOME"] = HOME
    script = os.path.join(os.path.dirname(sys.executable), "ust")
    ust_cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "ust.cli"]
    cmds = {"pass": [sys.executable, "-c", "pass"], "version": ust_cmd + ["version"],
            "list": ust_cmd + ["list"], "help": ust_cmd + ["--help"]}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def print_command_startup(runs: int) -> None:
    st = command_startup(runs)
    base = st["pass"][0]
    print(f"ust command start-up (median / best of {runs}, sessiond running):")
    for name, label in (("pass", "python -c pass"), ("version", "ust version"), ("list", "ust list"),
                        ("help", "ust --help")):
        med, best = st[name]
        extra = "" if name == "pass" else f"   {med / base:.1f}x python -c pass"
        print(f"  {label:<28} {med * 1e3:7.1f} ms / {best * 1e3:.1f} ms{extra}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--commands", action="store_true", help="only the `ust` command start-up figures")
    args = p.parse_args()
    n, repeats, runs = (200_000, 3, 5) if args.quick else (1_000_000, 5, 11)
    try:
        c = Client(HOME)
        c.ping()  # starts ust-sessiond (and its consumer)
        if args.commands:
            print_command_startup(21)
            return 0
        r = tracepoint_costs(n, repeats)
        print(f"bench_daemon: {n} events x {repeats} repeats, best run")
        print(f"  empty Python call            {r['empty']:7.1f} ns")
        print(f"  disabled tracepoint          {r['disabled']:7.1f} ns   {r['disabled'] / r['empty']:.2f}x empty")
        print(f"  enabled, embedded session    {r['embedded']:7.1f} ns   {r['embedded'] / r['empty']:.2f}x empty")
        print(f"  enabled, daemon buffers      {r['daemon']:7.1f} ns   {r['daemon'] / r['empty']:.2f}x empty, "
              f"{r['daemon'] / r['embedded']:.2f}x embedded")
        napps = 4
        lat = toggle_latency(napps, 5 if args.quick else 20)
        print(f"enable/disable of 20 tracepoints in {napps} running apps (request returns when all acknowledged):")
        print(f"  enable-event 'lat:*'         {lat['enable'] * 1e3:7.1f} ms median, {lat['enable_max'] * 1e3:.1f} max")
        print(f"  disable-event 'lat:*'        {lat['disable'] * 1e3:7.1f} ms median, "
              f"{lat['disable_max'] * 1e3:.1f} max")
        o = run_overhead(runs)
        print(f"ust run overhead (median of {runs}, sessiond already running):")
        print(f"  python -c pass               {o['plain'] * 1e3:7.1f} ms")
        print(f"  ust run -- python -c pass    {o['run'] * 1e3:7.1f} ms   +{(o['run'] - o['plain']) * 1e3:.1f} ms")
        print(f"  python -c 'import ust'       {o['plain_import'] * 1e3:7.1f} ms")
        print(f"  ust run -- python -c 'import ust' {o['run_import'] * 1e3:7.1f} ms   "
              f"+{(o['run_import'] - o['plain_import']) * 1e3:.1f} ms")
        print_command_startup(runs)
    finally:
        stop_sessiond(HOME)
        shutil.rmtree(HOME, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
