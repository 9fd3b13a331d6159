"""ust: a user-space tracer for Python programs, LTTng-style, writing CTF 1.8.

Layering (each layer imports only those above it):
  ust._ring          the C core: ring buffer in shared memory, tracepoint call
  ust.instrument     field types, tracepoints, markers, registry, contexts
  ust.ctf            metadata, stream files, the reader
  ust.session        the embedded (daemon-less) session
  ust.agent/daemon/control/cli/analysis   the tracing system and tools

``import ust`` imports only the standard library.
"""

from ust.instrument.fields import (
    array,
    boolean,
    bytes_ as bytes,  # noqa: A001 - the field type users write as ust.bytes
    enum,
    float32,
    float64,
    hex,  # noqa: A001
    int8,
    int16,
    int32,
    int64,
    sequence,
    string,
    uint8,
    uint16,
    uint32,
    uint64,
)
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
from ust.instrument.marker import mark
from ust.instrument.tracepoint import TracepointArgumentWarning, strict, tracepoint

__version__ = "0.1.0"

# Imported on first use, to keep ``import ust`` cheap (it runs in every
# traced process): name -> module that defines it.
_LAZY = {
    "Session": "ust.session",
    "read_trace": "ust.ctf",
    "install_logging": "ust.instrument.logbridge",
    "logging_handler": "ust.instrument.logbridge",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ust' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if __import__("os").environ.get("UST_LOGGING", "") not in ("", "0"):
    __getattr__("install_logging")()


__all__ = [
    "tracepoint", "mark", "strict", "TracepointArgumentWarning", "Session", "read_trace", "logging_handler", "install_logging",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "hex",
    "float32", "float64", "boolean", "string", "bytes", "array", "sequence", "enum",
    "EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG_SYSTEM", "DEBUG_PROGRAM",
    "DEBUG_PROCESS", "DEBUG_MODULE", "DEBUG_UNIT", "DEBUG_FUNCTION", "DEBUG_LINE", "DEBUG",
]

# Register with the session daemons, if any run (a background thread; never blocks, never raises).
from ust import agent as _agent  # noqa: E402

_agent.start()
