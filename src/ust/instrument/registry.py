"""Every tracepoint declared in this process, and who wants to know.

Declaring twice with the same fields returns the same tracepoint (modules are
re-imported, libraries declare lazily); declaring the same name with other
fields is an error at declaration, not a corrupt trace later.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from ust._ring import Tracepoint
from ust.instrument.fields import EventDecl

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*:[A-Za-z_<][A-Za-z0-9_.\-<>]*$")  # <locals>: probes on nested functions
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TracepointHandle:
    """A declared tracepoint: its declaration and the C callable."""

    __slots__ = ("decl", "tp")

    def __init__(self, decl: EventDecl, tp: Tracepoint):
        self.decl = decl
        self.tp = tp

    def __repr__(self) -> str:
        return f"TracepointHandle({self.decl.name!r})"


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, TracepointHandle] = {}
        self._subscribers: list[Callable[[TracepointHandle], None]] = []

    def declare(self, decl: EventDecl, specs: tuple) -> TracepointHandle:
        if not isinstance(decl.name, str) or not _NAME_RE.match(decl.name):
            raise ValueError(f"tracepoint name must be 'provider:event' (letters, digits, _ . -), got {decl.name!r}")
        seen = set()
        for f in decl.fields:
            if not _FIELD_RE.match(f.name):
                raise ValueError(f"{decl.name}: field name must be an identifier, got {f.name!r}")
            if f.name in seen:
                raise ValueError(f"{decl.name}: duplicate field {f.name!r}")
            seen.add(f.name)
        with self._lock:
            old = self._by_name.get(decl.name)
            if old is not None:
                if old.decl.signature() != decl.signature() or old.decl.loglevel != decl.loglevel:
                    raise ValueError(
                        f"{decl.name} is already declared with other fields or log level: "
                        f"{_describe(old.decl)} vs {_describe(decl)}"
                    )
                return old
            handle = TracepointHandle(decl, Tracepoint(decl.name, specs))
            self._by_name[decl.name] = handle
            subscribers = list(self._subscribers)
        for cb in subscribers:
            try:
                cb(handle)
            except Exception:  # a subscriber's bug must not break the application
                pass
        return handle

    def get(self, name: str) -> TracepointHandle | None:
        return self._by_name.get(name)

    def all(self) -> list[TracepointHandle]:
        with self._lock:
            return list(self._by_name.values())

    def subscribe(self, callback: Callable[[TracepointHandle], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[TracepointHandle], None]) -> None:
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)


def _describe(decl: EventDecl) -> str:
    return "(" + ", ".join(f"{f.name}: {f.type!r}" for f in decl.fields) + f"; loglevel {decl.loglevel})"


REGISTRY = Registry()
