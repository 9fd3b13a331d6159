"""A small multi-process "service" to trace with the daemons.

    python examples/service.py [--workers N] [--iterations N] [--delay S] [--go FILE] [--stop FILE]

Each worker emits ``service:request`` (id, path, size) and, every 10th
request, ``service:slow`` at WARNING; the main process emits
``service:tick``. With ``--go FILE`` the workers wait for FILE to exist before
emitting; with ``--stop FILE`` they run until FILE exists (else
``--iterations`` requests each). Prints "ready <pid>" when its tracepoints
are declared.
"""

import argparse
import os
import sys
import time

import ust

request = ust.tracepoint("service:request", {"id": ust.int64, "path": ust.string, "size": ust.uint32}, ust.INFO)
slow = ust.tracepoint("service:slow", {"id": ust.int64, "ms": ust.float64}, ust.WARNING)
tick = ust.tracepoint("service:tick", {"n": ust.int32}, ust.DEBUG)


def wait_for(path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def work(worker, args):
    wait_for(args.go)
    i = 0
    while True:
        if args.stop:
            if os.path.exists(args.stop):
                break
        elif i >= args.iterations:
            break
        request(worker * 1_000_000 + i, f"/item/{i % 7}", i * 10)
        if i % 10 == 0:
            slow(worker * 1_000_000 + i, i / 10)
        i += 1
        if args.delay:
            time.sleep(args.delay)
    return i


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=0, help="forked worker processes (0: work in this process)")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--go")
    p.add_argument("--stop")
    args = p.parse_args()
    print(f"ready {os.getpid()}", flush=True)
    if args.workers == 0:
        n = work(0, args)
        tick(n)
        print(f"done {n}", flush=True)
        return 0
    pids = []
    for w in range(1, args.workers + 1):
        pid = os.fork()
        if pid == 0:
            n = work(w, args)
            print(f"worker {w} done {n}", flush=True)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    tick(len(pids))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
