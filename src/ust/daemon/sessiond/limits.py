"""The session daemon's bounds on what its peers may make it hold (docs/security.md)."""

from __future__ import annotations

import os


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


MAX_CONNECTIONS = 512
MAX_CONNECTIONS_PER_UID = 256  # one user cannot take every connection (applications included)
MAX_REFUSING_PER_UID = 16  # refusals being answered; beyond, a connection is closed unanswered
TRUSTED_RESERVE = 32  # connections only root and the daemon's owner may use
IDLE_TIMEOUT = _env_number("UST_SESSIOND_IDLE_TIMEOUT", 600.0)  # a client connection without a request
READ_TIMEOUT = _env_number("UST_SESSIOND_READ_TIMEOUT", 10.0)  # a message, once started, must complete
INPUT_BUDGET = 64 << 20  # bytes of message bodies being received at once, all connections together
MAX_TRACEPOINTS_PER_APP = int(_env_number("UST_MAX_TRACEPOINTS_PER_APP", 4096))
MAX_DECL_BYTES_PER_APP = 4 << 20  # encoded declarations kept for one application
MAX_DECL_BYTES = 64 << 20  # ... and for all of them
APP_QUEUE_BYTES = 4 << 20  # encoded requests of one application waiting for its worker
APP_ACK_TIMEOUT = 3.0
