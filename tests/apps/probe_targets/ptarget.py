"""Functions of every kind, probed by tests/test_probes.py (never imports ust)."""

import asyncio
import functools


def add(a: int, b: int) -> int:
    return a + b


def mixed(a: int, b: str = "x", *args, c: float = 1.0, d: bool = False, e: bytes = b"", **kw) -> int:
    return a


def untyped(x, y=None):
    return [x, y]


class K:
    def m(self, x: int) -> int:
        return x * 2

    @classmethod
    def cm(cls, y: int) -> int:
        return y + 1

    @staticmethod
    def sm(z: bool) -> bool:
        return not z

    @property
    def prop(self) -> int:
        return 7


def deco(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return fn(*a, **k)
    return wrapper


@deco
def decorated(q: int) -> int:
    return q * 3


def make_closure(n: int):
    def closure(k: int) -> int:
        return k + n
    return closure


CLOSURE = make_closure(100)


def outer(n: int) -> int:
    def inner(k: int) -> int:
        return k + n
    return inner(1)


def gen(n: int):
    for i in range(n):
        yield i
    return "done"


async def coro(x: int) -> int:
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return x


async def agen(n: int):
    for i in range(n):
        yield i
        await asyncio.sleep(0)


def boom(v: int) -> int:
    raise KeyError(v)


class BadRepr:
    def __repr__(self):
        raise TypeError("no repr")


def takes(obj):
    return 1


def big(v: int) -> int:
    return v


def recurse(n: int) -> int:
    return 0 if n == 0 else 1 + recurse(n - 1)
