"""Traced with `ust run --functions` by tests/test_probes.py: recursion, threads, asyncio tasks, an exception."""

import asyncio
import threading


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def fails():
    raise ValueError("x")


def in_thread():
    fib(4)


async def step(i):
    await asyncio.sleep(0.001 * i)
    return fib(2)


async def main_async():
    return await asyncio.gather(*(asyncio.create_task(step(i), name=f"task{i}") for i in range(3)))


if __name__ == "__main__":
    fib(5)
    t = threading.Thread(target=in_thread, name="worker")
    t.start()
    t.join()
    try:
        fails()
    except ValueError:
        pass
    asyncio.run(main_async())
