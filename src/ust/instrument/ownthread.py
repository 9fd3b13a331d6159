"""ust's own threads in an application (the agent's, an embedded session's reader): never traced.

The tracer must not trace itself, as LTTng's agent never records its own work: the agent's socket,
selectors and json calls, applying the daemon's commands while whole-program tracing runs, were recorded
as if the program made them, and a probe on a function the agent calls too (json:dumps) recorded the
agent's calls. A ust thread is made with ``Thread`` below, which marks it before its first Python frame
runs (threading's own bootstrap included): the C core sets the interpreter's flag for a tracer's thread
(``tstate->tracing``, which sys.monitoring, profile functions and the frame-evaluation hook all check
already: no per-call cost anywhere), and ``BUSY`` keeps the probes' Python paths out.
"""

from __future__ import annotations

import threading

try:  # here, in the thread that imports this module: a new thread importing would wait for `import ust`
    from ust._ring._probes import own_thread as _own_thread
except ImportError:  # pragma: no cover - a build without the C core records nothing anyway
    _own_thread = None

# Set while ust's own code runs on this thread: while a probe converts values (its Python path, so that a
# probed __repr__ does not recurse), and for good on a ust thread. Probes record nothing while it is set.
BUSY = threading.local()


def mark() -> None:
    """The calling thread is ust's own from now until it ends: none of its calls is recorded."""
    BUSY.on = True
    if _own_thread is not None:
        _own_thread()


class Thread(threading.Thread):
    """A ``threading.Thread`` that is ust's own (``mark``) from its first Python frame."""

    def _bootstrap(self) -> None:  # the first Python frame of a thread (threading, 3.11 to 3.13)
        mark()
        super()._bootstrap()

    def run(self) -> None:  # if a later Python starts threads otherwise
        mark()
        super().run()
