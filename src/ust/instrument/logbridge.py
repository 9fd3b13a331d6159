"""The `logging` bridge: Python log records as trace events.

Records become ``lttng_python:event`` events with the same fields as LTTng's
Python agent writes (asctime, msg, logger_name, funcName, lineno,
int_loglevel, thread, threadName), so analyses written for LTTng's python
domain read ours.

    ust.logging_handler()          # a logging.Handler to add where you like
    ust.install_logging()          # or: every record of every logger (no handler added)
    UST_LOGGING=1 python app.py    # or, with no code change, when ust is imported
                                   # (``ust run`` imports it for you)

While no session records the event, ``emit`` returns after one attribute read.
"""

from __future__ import annotations

import logging
import time

from ust.instrument import fields as F
from ust.instrument import loglevels
from ust.instrument.tracepoint import declare

EVENT_NAME = "lttng_python:event"

_handle = None


def _tracepoint():
    global _handle
    if _handle is None:
        _handle = declare(
            EVENT_NAME,
            [
                ("asctime", F.string), ("msg", F.string), ("logger_name", F.string), ("funcName", F.string),
                ("lineno", F.int32), ("int_loglevel", F.int32), ("thread", F.int64), ("threadName", F.string),
            ],
            loglevels.DEBUG,  # every record passes a log-level rule; filter on int_loglevel instead
            kind="logging",
        )
    return _handle.tp


class TraceHandler(logging.Handler):
    """A logging handler that records each record as a trace event."""

    def __init__(self, level: int = logging.NOTSET):
        super().__init__(level)
        self.tp = _tracepoint()

    def emit(self, record: logging.LogRecord) -> None:
        tp = self.tp
        if not tp.enabled:
            return
        try:
            ct = time.localtime(record.created)
            asctime = time.strftime("%Y-%m-%d %H:%M:%S", ct) + ",%03d" % int(record.msecs)
            thread = record.thread or 0
            if thread >= 1 << 63:
                thread -= 1 << 64
            tp(asctime, record.getMessage(), record.name, record.funcName or "", int(record.lineno or 0) & 0x7FFFFFFF,
               int(record.levelno), thread, record.threadName or "")
        except Exception:
            # the tracer never raises into the application's logging call
            pass

    # logging's own locking is not needed: the tracepoint is thread-safe
    def handle(self, record: logging.LogRecord) -> bool:
        rv = self.filter(record)
        if rv:
            self.emit(record if rv is True else rv)
        return bool(rv)


def logging_handler(level: int = logging.NOTSET) -> TraceHandler:
    return TraceHandler(level)


_hooked: "TraceHandler | None" = None


def install_logging(logger: "logging.Logger | None" = None, level: int = logging.NOTSET) -> TraceHandler:
    """Record log records as events.

    With a ``logger``, add a TraceHandler to it (once). Without, record every
    record any logger handles, without adding a handler anywhere: a handler on
    the root logger would silence Python's last-resort output and turn
    ``logging.basicConfig()`` into a no-op, changing the program's behaviour.
    """
    global _hooked
    if logger is not None:
        for h in logger.handlers:
            if isinstance(h, TraceHandler):
                return h
        handler = TraceHandler(level)
        logger.addHandler(handler)
        return handler
    if _hooked is not None:
        return _hooked
    handler = TraceHandler(level)
    original = logging.Logger.callHandlers

    def callHandlers(self, record, _handler=handler, _original=original):  # noqa: N802 - logging's name
        if record.levelno >= _handler.level:
            _handler.handle(record)
        _original(self, record)

    logging.Logger.callHandlers = callHandlers
    _hooked = handler
    return handler
