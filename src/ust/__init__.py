"""ust: a user-space tracer for Python programs, LTTng-style, writing CTF 1.8.

Layering (each layer imports only those above it):
  ust._ring          the C core: ring buffer in shared memory, tracepoint call
  ust.instrument     field types, tracepoints, markers, registry, contexts
  ust.ctf            metadata, stream files, the reader
  ust.session        the embedded (daemon-less) session
  ust.agent/daemon/control/cli/analysis   the tracing system and tools

``import ust`` imports only the standard library.
"""

from ust.instrument.loglevels import (
    ALERT,
    CRIT,
    DEBUG,
    DEBUG_FUNCTION,
    DEBUG_LINE,
    DEBUG_MODULE,
    DEBUG_PROCESS,
    DEBUG_PROGRAM,
    DEBUG_SYSTEM,
    DEBUG_UNIT,
    EMERG,
    ERR,
    INFO,
    NOTICE,
    WARNING,
)

__version__ = "0.1.0"

# Imported on first use, to keep ``import ust`` cheap (it runs in every
# traced process, and in every `ust` command, which needs none of these):
# name -> module that defines it (and the name there, when it differs).
_LAZY = {
    "tracepoint": "ust.instrument.tracepoint",
    "strict": "ust.instrument.tracepoint",
    "TracepointArgumentWarning": "ust.instrument.tracepoint",
    "mark": "ust.instrument.marker",
    **{name: "ust.instrument.fields" for name in (
        "array", "boolean", "enum", "float32", "float64", "hex", "int8", "int16", "int32", "int64",
        "sequence", "string", "uint8", "uint16", "uint32", "uint64")},
    "bytes": "ust.instrument.fields:bytes_",
    "Session": "ust.session",
    "Tracepoint": "ust._ring",
    "read_trace": "ust.ctf",
    "install_logging": "ust.instrument.logbridge",
    "logging_handler": "ust.instrument.logbridge",
}


def __getattr__(name: str):
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'ust' has no attribute {name!r}")
    import importlib

    module, _, attr = where.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if __import__("os").environ.get("UST_LOGGING", "") not in ("", "0"):
    __getattr__("install_logging")()


__all__ = [
    "tracepoint", "Tracepoint", "mark", "strict", "TracepointArgumentWarning", "Session", "read_trace", "logging_handler", "install_logging",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "hex",
    "float32", "float64", "boolean", "string", "bytes", "array", "sequence", "enum",
    "EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG_SYSTEM", "DEBUG_PROGRAM",
    "DEBUG_PROCESS", "DEBUG_MODULE", "DEBUG_UNIT", "DEBUG_FUNCTION", "DEBUG_LINE", "DEBUG",
]

from ust import agent as _agent  # noqa: E402

if not _agent.is_tool():
    # An application declares tracepoints from any thread and may fork while
    # one does: a child would wait forever on the lock of a module another
    # thread was importing at fork time (Python's per-module import locks are
    # not reset in the child). So the declaration path is imported here, in
    # `import ust`, before the application's threads can race with fork; only
    # ust's own tools, which never declare, skip it.
    for _name in ("tracepoint", "mark", "int8"):
        __getattr__(_name)

# Register with the session daemons, if any run (a background thread; never blocks, never raises).
_agent.start()
