"""Targets of tests/test_probes_inline.py: functions whose own code runs after a `return` (a `finally:`, a
context manager's exit), which 3.11's inline probes must record as the caller sees them."""

import asyncio
import contextlib


class Boom(Exception):
    pass


@contextlib.contextmanager
def exploding():
    yield
    raise Boom("exit")


def finally_raises(x):
    try:
        return x
    finally:
        raise Boom("finally")


def with_exit_raises(x):
    with exploding():
        return x


def finally_returns(x):
    try:
        return x
    finally:
        return x + 1  # noqa: B012


def finally_swallows(x):
    try:
        raise Boom("body")
    finally:
        return x  # noqa: B012


def caught_after(x):
    try:
        with exploding():
            return x
    except Boom:
        pass
    return -x


def break_in_finally(x):
    for i in range(3):
        try:
            return i
        finally:
            if i < 2:
                continue  # noqa: B012
    return -1


def recurses_in_finally(x: int):
    try:
        return x
    finally:
        if x > 0:
            recurses_in_finally(x - 1)


def guarded_generator(x):
    with contextlib.suppress(Boom):
        yield x
        return x * 2
    return -1


async def guarded_coroutine(x):
    async with contextlib.AsyncExitStack():
        try:
            return x
        finally:
            raise Boom("async finally")


def raises_last(x):
    y = x + 1
    raise ValueError(y)


def plain(x):
    y = x + 1
    if y:
        z = 2  # noqa: F841


async def awaits_in_finally(x):
    try:
        return x
    finally:
        await asyncio.sleep(0.001 * (x % 3))


def stops_inside():
    yield 1
    raise StopIteration  # the caller gets a RuntimeError (PEP 479)
