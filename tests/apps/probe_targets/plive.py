"""Targets of tests/test_probes_live.py: what an SRE probes on a running service (never imports ust)."""

import functools


class Account:
    def __init__(self) -> None:
        self._balance = 0

    @property
    def balance(self) -> int:
        return self._balance

    @balance.setter
    def balance(self, value: int) -> None:
        self._balance = value

    @balance.deleter
    def balance(self) -> None:
        self._balance = 0

    @functools.cached_property
    def report(self) -> str:
        return f"balance {self._balance}"


def two_lambdas() -> int:
    one = lambda y: y  # noqa: E731
    two = lambda a, b: a + b  # noqa: E731
    return one(1) + two(2, 3)


def hot(i: int) -> int:
    return i + 1


def nest(n: int) -> int:
    def inner(k: int, label: "str", items: list[int], *rest, flag: bool = False) -> int:
        return k + len(items)
    return inner(n, f"n{n}", [n], flag=n % 2 == 1)


def caller_name(x: int) -> str:
    import sys

    return sys._getframe(1).f_code.co_name


def warns(x: int) -> int:
    import warnings

    warnings.warn("careful", stacklevel=2)
    return x


def fails(x: int) -> int:
    raise ValueError(x)


async def job(x: int) -> int:
    import asyncio

    await asyncio.sleep(0)
    return x * 10


from json import dumps as to_json  # noqa: E402  (a function imported from another module)
