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
from ust.instrument.logbridge import install_logging, logging_handler
from ust.instrument.marker import mark
from ust.instrument.tracepoint import tracepoint
from ust.session import Session

__version__ = "0.1.0"

if __import__("os").environ.get("UST_LOGGING", "") not in ("", "0"):
    install_logging()


def read_trace(path):
    """Iterate over the events of the trace(s) under ``path`` in timestamp order."""
    from ust.ctf import read_trace as _read

    return _read(path)


__all__ = [
    "tracepoint", "mark", "Session", "read_trace", "logging_handler", "install_logging",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "hex",
    "float32", "float64", "boolean", "string", "bytes", "array", "sequence", "enum",
    "EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG_SYSTEM", "DEBUG_PROGRAM",
    "DEBUG_PROCESS", "DEBUG_MODULE", "DEBUG_UNIT", "DEBUG_FUNCTION", "DEBUG_LINE", "DEBUG",
]

# Register with the session daemons, if any run (a background thread; never blocks, never raises).
from ust import agent as _agent  # noqa: E402

_agent.start()
