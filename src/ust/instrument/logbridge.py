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
        # LTTng's agent declares these types (see its lttng_ust_python.h and
        # tests/fixtures/lttng-2.13/ust-python-agent): unsigned 32-bit lineno,
        # level and thread (the thread id's low 32 bits), log level DEBUG_LINE.
        _handle = declare(
            EVENT_NAME,
            [
                ("asctime", F.string), ("msg", F.string), ("logger_name", F.string), ("funcName", F.string),
                ("lineno", F.uint32), ("int_loglevel", F.uint32), ("thread", F.uint32), ("threadName", F.string),
            ],
            loglevels.DEBUG_LINE,  # rules select records by logger and Python level (the python domain)
            kind="logging",
        )
        # The bridge has its own slow path for records logging never makes
        # itself (None, out-of-range values: coerced, see _emit_checked), so
        # its calls raise on a misfit instead of being counted as discarded.
        _handle.tp.raises = True
    return _handle.tp


# asctime as logging.Formatter writes it by default ("%Y-%m-%d %H:%M:%S,mmm"):
# the part before the comma is the same for every record of one second, so it
# is formatted once per second (a (second, text) pair, replaced whole: threads
# read either the old pair or the new one), and the milliseconds come from a table.
_second: tuple = (None, "")
_MSECS = tuple("%03d" % i for i in range(1000))


def _second_text(sec: int, created: float) -> tuple:
    global _second
    _second = (sec, time.strftime("%Y-%m-%d %H:%M:%S,", time.localtime(created)))
    return _second


def _asctime(record: logging.LogRecord) -> str:
    sec = int(record.created)
    cached = _second
    if cached[0] != sec:
        cached = _second_text(sec, record.created)
    return cached[1] + _MSECS[int(record.msecs)]


_FORMATTER = logging.Formatter()


def _with_traceback(asctime: str, record: logging.LogRecord) -> str:
    """asctime followed by the traceback and stack, as LTTng's agent records them.

    LTTng's handler formats ``%(asctime)s`` with logging.Formatter, which
    appends the exception's traceback and the stack to it: analyses written
    for LTTng look for them there.
    """
    if record.exc_info and not record.exc_text:
        record.exc_text = _FORMATTER.formatException(record.exc_info)  # cached, as Formatter.format does
    if record.exc_text:
        asctime += "\n" + record.exc_text
    if record.stack_info:
        asctime += "\n" + _FORMATTER.formatStack(record.stack_info)
    return asctime


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
            # The common case, inline (this is the bridge's whole cost): the
            # message logging's formatter already computed for this record, if
            # a handler formatted it (see install_logging), and the values as
            # logging sets them.
            created = record.created
            cached = _second
            if cached[0] != int(created):
                cached = _second_text(int(created), created)
            asctime = cached[1] + _MSECS[int(record.msecs)]
            if record.exc_info or record.exc_text or record.stack_info:
                asctime = _with_traceback(asctime, record)
            msg = record.__dict__.get("message")
            if msg is None:
                msg = record.getMessage()
            tp(asctime, msg, record.name, record.funcName, record.lineno, record.levelno,
               record.thread & 0xFFFFFFFF, record.threadName)
        except Exception:
            self._emit_checked(record)

    def _emit_checked(self, record: logging.LogRecord) -> None:
        """A record with unusual values (None, negative, out of range): coerce each, never raise."""
        try:
            self.tp(_with_traceback(_asctime(record), record), str(record.getMessage()), str(record.name),
                    str(record.funcName or ""), int(record.lineno or 0) & 0xFFFFFFFF,
                    int(record.levelno or 0) & 0xFFFFFFFF, int(record.thread or 0) & 0xFFFFFFFF,
                    str(record.threadName or ""))
        except Exception:
            pass  # the tracer never raises into the application's logging call

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

    def callHandlers(self, record, _handler=handler, _tp=handler.tp, _original=original):  # noqa: N802
        # (logging's name.) The application's handlers first: if one formats
        # the record, its message is reused. While no session records the
        # event, this costs one attribute read.
        try:
            _original(self, record)
        finally:
            if _tp.enabled and record.levelno >= _handler.level:
                if _handler.filters:
                    _handler.handle(record)
                else:
                    _handler.emit(record)

    logging.Logger.callHandlers = callHandlers
    _hooked = handler
    return handler


# Used as ust.X: say so in reprs, tracebacks and pickles (tests/test_api.py).
for _public in (logging_handler, install_logging):
    _public.__module__ = "ust"
del _public
