"""Traces whose calls the reader must pair right (tests/test_probes.py, the reading side of --functions).

argv[1] = scenario:
  threads      (under `ust run --functions`) a() in one thread and b() in another, interleaved on purpose:
               a's entry, b's entry, a's return, b's return
  suspended    (under `ust run --functions`) 10 asyncio tasks of task(i), and a generator started in one function
               and finished in another: each body starts in a frame that returns before the body completes
  abandoned    (under `ust run --functions`) a generator abandoned while suspended (3.13 records no return for
               it), then another of the same function started in start() and finished in finish()
  busy         (a driven app: "ready PID", then "ok" to each line until "exit") a thread calls work() without
               a pause, so that whole-program tracing sees its functions the moment it is installed
  spawn        (under `ust run --functions`) work() in two processes started by multiprocessing (spawn)
  migrate OUT  whole-program tracing into an embedded session without contexts (one stream per CPU): outer()
               begins on CPU 0 and returns on CPU 1 (its thread moved meanwhile)
  alone        (under `ust run --functions`) one thread calling inner() until the daemon has attached the
               whole-program events, then declaring a tracepoint (the agent's thread sends it to the daemon and
               reads its answer, while traced) and calling inner() again
  losses OUT   a probe on the recursive r(n: int) -> int (returns n) into an embedded session in discard mode
               with tiny buffers: the writer outruns the reader, events are lost in the middle of recursions
"""
import asyncio
import os
import sys
import threading
import time


def r(n: int) -> int:
    return n if n == 0 else r(n - 1) + 1


def on_cpu(cpu):
    """Move this thread to ``cpu`` (sched_setaffinity migrates the caller before it returns; checked)."""
    import ctypes

    os.sched_setaffinity(0, {cpu})
    getcpu = ctypes.CDLL(None).sched_getcpu
    while getcpu() != cpu:
        time.sleep(0.001)


def inner():
    return 1


def outer():
    on_cpu(1)
    return inner()


started, a_waiting = threading.Event(), threading.Event()


def a():
    started.set()
    a_waiting.wait()  # until b has begun: a returns inside b's call


def b():
    a_waiting.set()
    time.sleep(0.5)


def b_thread():
    started.wait()
    b()


async def task(i):
    await asyncio.sleep(0.001 * (i % 3))
    return inner()


async def amain():
    return await asyncio.gather(*(task(i) for i in range(10)))


def numbers():
    yield 1
    yield 2


def work():
    return inner()


def start():
    g = numbers()
    next(g)  # the generator's entry; start() returns while it is suspended
    return g


def finish(g):
    return list(g)  # its return


def main():
    scenario = sys.argv[1]
    if scenario == "busy":
        import ust  # noqa: F401  (registers with the daemon)

        stop = threading.Event()

        def spin():
            while not stop.is_set():
                work()

        t = threading.Thread(target=spin)
        t.start()
        print("ready", os.getpid(), flush=True)
        for line in sys.stdin:
            print("ok", flush=True)
            if line.strip() == "exit":
                break
        stop.set()
        t.join()
        return
    if scenario == "abandoned":
        g = numbers()
        next(g)
        del g
        finish(start())
        return
    if scenario == "spawn":
        import multiprocessing

        procs = [multiprocessing.get_context("spawn").Process(target=work) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        return
    if scenario == "suspended":
        asyncio.run(amain())
        finish(start())
        return
    if scenario == "alone":
        import ust.agent

        def attached():
            inner()
            return sum(c["attached"] for c in ust.agent.status().get("connections", [])) >= 3

        deadline = time.monotonic() + 60
        while not attached() and time.monotonic() < deadline:
            time.sleep(0.01)
        ust.tracepoint("app:declared_late", {"v": ust.int64})(1)  # under `ust run`: waits for the agent
        inner()
        return
    if scenario == "threads":
        t = threading.Thread(target=b_thread)
        t.start()
        a()
        t.join()
        return
    import ust
    from ust.instrument import probes

    out = sys.argv[2]
    if scenario == "migrate":
        on_cpu(0)
        with ust.Session(out, events=["python:*"]):
            whole = probes.WholeProgram(include=["__main__:outer", "__main__:inner"], exclude=[])
            whole.start()
            outer()
            whole.stop()
    elif scenario == "losses":
        with ust.Session(out, events=["t:*"], mode="discard", subbuf_size=4096, num_subbuf=2):
            probes.PROBES.apply([probes.ProbeSpec("__main__:r", event="t:r")])
            for _ in range(300):
                r(150)
            probes.PROBES.apply([])
    print("ok")


if __name__ == "__main__":
    main()
