"""--shm-path benchmark: the enabled tracepoint with the daemon's buffers in memfds vs in files
(`ust create --shm-path`, on tmpfs and on the disk's filesystem), and how fast `ust crash`
recovers a crashed session's buffers.

    python bench/bench_shm_path.py [--quick]

Ratios against the memfd session measured in the same run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from _daemon_home import HOME, wait_for  # before `import ust`: the agent of this process uses its daemon

import ust  # noqa: E402
from ust.control import Client, stop_sessiond  # noqa: E402

from _timing import best_ns_per_call, loop_of  # noqa: E402


def session_cost(c: Client, name: str, shm_path: str | None, n: int, repeats: int) -> float:
    c.create_session(name, output=os.path.join(HOME, "traces", name), shm_path=shm_path)
    c.enable_channel(name, "channel0", subbuf_size="1M", num_subbuf=16)
    c.enable_events(name, f"bench:{name}")
    c.start(name)
    tp = ust.tracepoint(f"bench:{name}", {"i": ust.int32, "s": ust.string}, ust.INFO)
    wait_for(lambda: tp.enabled)
    cost = best_ns_per_call(loop_of(tp), n, repeats)
    c.stop(name)
    c.destroy_session(name)
    return cost


def recovery_rate(shm_root: str) -> tuple[float, int]:
    """(MB/s, bytes) of `recover` over a snapshot session's full buffers, its writers gone."""
    from ust.consumer.crash import recover

    c = Client(HOME)
    c.create_session("fl", output=os.path.join(HOME, "fl"), snapshot=True, shm_path=os.path.join(shm_root, "fl"))
    c.enable_channel("fl", "channel0", subbuf_size="1M", num_subbuf=16)
    c.enable_events("fl", "bench:fl")
    c.start("fl")
    tp = ust.tracepoint("bench:fl", {"i": ust.int32, "s": ust.string}, ust.INFO)
    wait_for(lambda: tp.enabled)
    loop_of(tp)(400_000)  # ~ 12 MiB: every buffer of this CPU full, lapped
    # The buffer files stay as they are while the session lives: recover a copy of them (as after a crash).
    copy = os.path.join(shm_root, "copy")
    shutil.copytree(os.path.join(shm_root, "fl"), copy)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(copy) for f in fs)
    t0 = time.perf_counter()
    recover(copy, os.path.join(HOME, "recovered"))
    dt = time.perf_counter() - t0
    c.destroy_session("fl")
    return size / dt / 1e6, size


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    n, repeats = (100_000, 3) if args.quick else (400_000, 7)
    tmpfs = tempfile.mkdtemp(prefix="ust-bench-shm-", dir="/dev/shm")
    disk = os.path.join(HOME, "shm-on-disk")
    try:
        c = Client(HOME)
        costs = {}
        for rnd in range(4):  # interleaved: the machine's load weighs on each alike
            for name, path in (("memfd", None), ("tmpfs", tmpfs), ("disk", disk)):
                cost = session_cost(c, f"{name}{rnd}", path, n, repeats)
                costs[name] = min(costs.get(name, cost), cost)
        rate, size = recovery_rate(tmpfs)
        print(f"enabled tracepoint, memfd buffers:          {costs['memfd']:7.1f} ns  1.00x")
        for name in ("tmpfs", "disk"):
            print(f"enabled tracepoint, --shm-path on {name:5}:    {costs[name]:7.1f} ns  "
                  f"{costs[name] / costs['memfd']:.2f}x")
        print(f"ust crash recovery: {size / 1e6:.1f} MB of buffer files at {rate:.0f} MB/s")
    finally:
        stop_sessiond(HOME)
        shutil.rmtree(HOME, ignore_errors=True)
        shutil.rmtree(tmpfs, ignore_errors=True)


if __name__ == "__main__":
    main()
