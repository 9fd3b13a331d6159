"""Locks that survive fork(), and ust's one at-fork hook.

fork() copies only the forking thread: a lock another thread held at that
moment stays held forever in the child, and the child's first declaration (or
the agent's after-fork restart) would wait on it for good. Every lock ust
takes is made here (``forksafe.Lock()``, a plain ``threading.Lock``):

* before fork, the forking thread takes each of them (so the state they
  guard is consistent in the child); ust never nests them, so any order is
  deadlock-free, and each critical section is short (no I/O, no waiting);
* after fork, the parent releases them; the child releases every one that
  is held (a ``threading.Lock`` may be released by any thread), including one
  the prepare step gave up on after PREPARE_TIMEOUT.

Then the child runs the callbacks registered with ``after_in_child``, in
registration order (the registry's before the agent's, which uses it).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

PREPARE_TIMEOUT = 2.0  # a lock held longer than this by another thread is not waited for

_locks: "weakref.WeakSet[threading.Lock]" = weakref.WeakSet()
_locks_guard = threading.Lock()  # guards _locks itself; taken first before fork
_child_callbacks: list[Callable[[], None]] = []
_taken: list = []


def Lock() -> threading.Lock:  # noqa: N802 - reads like threading.Lock
    """A threading.Lock that is released in both processes after a fork."""
    lock = threading.Lock()
    with _locks_guard:
        _locks.add(lock)
    return lock


def after_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in a forked child, after ust's locks are free again."""
    _child_callbacks.append(callback)


def _before() -> None:
    _locks_guard.acquire()
    for lock in list(_locks):
        if lock.acquire(timeout=PREPARE_TIMEOUT):
            _taken.append(lock)


def _after_in_parent() -> None:
    for lock in _taken:
        lock.release()
    _taken.clear()
    _locks_guard.release()


def _after_in_child() -> None:
    _taken.clear()
    for lock in list(_locks):
        if lock.locked():
            lock.release()
    _locks_guard.release()
    for cb in list(_child_callbacks):
        try:
            cb()
        except Exception:  # a fork hook must never break the child
            pass


os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
