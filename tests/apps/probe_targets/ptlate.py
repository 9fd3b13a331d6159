"""Imported only when the app is told to: a probe named before the import applies."""


def late(v: int) -> int:
    return v + 1
