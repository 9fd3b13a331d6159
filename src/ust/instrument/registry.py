"""Every tracepoint declared in this process, and who wants to know.

Declaring twice with the same fields returns the same tracepoint (modules are
re-imported, libraries declare lazily); declaring the same name with other
fields is an error at declaration, not a corrupt trace later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ust._ring import Tracepoint
from ust.instrument import forksafe
from ust.instrument.fields import EventDecl, naming_error



class TracepointHandle:
    """A declared tracepoint: its declaration and the C callable."""

    __slots__ = ("decl", "tp")

    def __init__(self, decl: EventDecl, tp: Tracepoint):
        self.decl = decl
        self.tp = tp

    def __repr__(self) -> str:
        return f"TracepointHandle({self.decl.name!r})"


class _Pending:
    """A declaration whose subscribers are still attaching it (see Registry.declare)."""

    __slots__ = ("handle", "owner", "done")

    def __init__(self, handle: TracepointHandle):
        self.handle = handle
        self.owner = threading.get_ident()
        self.done = threading.Event()


class Registry:
    """Declared tracepoints by name, and the callbacks told of each new one.

    Publication order: a new tracepoint is handed to no thread, the declaring
    one included, before every subscriber (each active session, the agent)
    has returned from attaching it. Until then it is *pending*: another thread
    declaring the same name waits for the subscribers instead of getting a
    tracepoint that records nothing yet. A subscriber that declares the same
    name again (same thread) gets the pending handle at once.
    """

    def __init__(self) -> None:
        self._lock = forksafe.Lock()
        self._by_name: dict[str, TracepointHandle] = {}
        self._pending: dict[str, _Pending] = {}
        self._subscribers: list[Callable[[TracepointHandle], None]] = []
        forksafe.after_in_child(self._after_fork_in_child)

    def declare(self, decl: EventDecl, specs: tuple) -> TracepointHandle:
        error = naming_error(decl.name, (f.name for f in decl.fields))
        if error:
            raise ValueError(error)
        with self._lock:
            old = self._by_name.get(decl.name)
            pending = None if old is not None else self._pending.get(decl.name)
            if pending is not None:
                old = pending.handle
            if old is not None:
                if old.decl.signature() != decl.signature() or old.decl.loglevel != decl.loglevel:
                    raise ValueError(
                        f"{decl.name} is already declared with other fields or log level: "
                        f"{_describe(old.decl)} vs {_describe(decl)}"
                    )
            else:
                pending = _Pending(TracepointHandle(decl, Tracepoint(decl.name, specs)))
                self._pending[decl.name] = pending
                subscribers = list(self._subscribers)
        if old is not None:
            if pending is not None and pending.owner != threading.get_ident():
                pending.done.wait()
            return old
        handle = pending.handle
        try:
            for cb in subscribers:
                try:
                    cb(handle)
                except Exception:  # a subscriber's bug must not break the application
                    pass
        finally:
            with self._lock:
                self._by_name[decl.name] = handle
                self._pending.pop(decl.name, None)
            pending.done.set()
        return handle

    def get(self, name: str) -> TracepointHandle | None:
        return self._by_name.get(name)

    def all(self) -> list[TracepointHandle]:
        with self._lock:
            return list(self._by_name.values()) + [p.handle for p in self._pending.values()]

    def subscribe(self, callback: Callable[[TracepointHandle], None]) -> list[TracepointHandle]:
        """Add a callback for new declarations; returns every tracepoint declared before it.

        Atomically: each tracepoint is either in the list returned or passed
        to the callback, never both nor neither (a declaration pending now is
        in the list: its subscribers were chosen before this one).
        """
        with self._lock:
            self._subscribers.append(callback)
            return list(self._by_name.values()) + [p.handle for p in self._pending.values()]

    def unsubscribe(self, callback: Callable[[TracepointHandle], None]) -> None:
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def _after_fork_in_child(self) -> None:
        # The threads attaching pending declarations do not exist in the child:
        # publish what they declared (attached as far as they got), as before.
        for name, pending in list(self._pending.items()):
            self._by_name[name] = pending.handle
        self._pending.clear()


def _describe(decl: EventDecl) -> str:
    return "(" + ", ".join(f"{f.name}: {f.type!r}" for f in decl.fields) + f"; loglevel {decl.loglevel})"


REGISTRY = Registry()
