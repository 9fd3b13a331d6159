"""A small program to trace: a fake web service handling requests on threads.

    python examples/webapp.py [N]      # runs untraced (tracepoints cost ~nothing)
    ust run -- python examples/webapp.py
"""

import logging
import random
import sys
import threading
import time

import ust

request = ust.tracepoint(
    "webapp:request",
    {"method": ust.string, "path": ust.string, "status": ust.uint16, "latency_ms": ust.float64},
    loglevel=ust.INFO,
)
db_query = ust.tracepoint("webapp:db_query", {"table": ust.string, "rows": ust.uint32}, loglevel=ust.DEBUG)
cache = ust.tracepoint("webapp:cache", {"hit": ust.boolean, "key": ust.hex(ust.uint64)})

PATHS = ["/", "/users", "/users/42", "/search", "/static/app.js"]


def handle(rng: random.Random) -> None:
    path = rng.choice(PATHS)
    t0 = time.perf_counter()
    key = hash(path) & 0xFFFFFFFFFFFFFFFF
    hit = rng.random() < 0.7
    cache(hit, key)
    if not hit:
        db_query("users" if "users" in path else "pages", rng.randrange(100))
    status = 200 if rng.random() < 0.95 else 500
    if path == "/search":
        ust.mark("webapp", "search", "query %s results %d", "q" + str(rng.randrange(10)), rng.randrange(50))
    request(rng.choice(["GET", "GET", "POST"]), path, status, (time.perf_counter() - t0) * 1000)


def worker(seed: int, n: int) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        handle(rng)


def main(n: int = 2000) -> None:
    logging.basicConfig(level=logging.INFO)
    threads = [threading.Thread(target=worker, args=(seed, n), name=f"worker-{seed}") for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logging.getLogger("webapp").info("served %d requests", 4 * n)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
