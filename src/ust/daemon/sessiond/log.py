"""The session daemon's log: one line per message on its stderr (its log file when daemonized)."""

from __future__ import annotations

import os
import sys


def log(msg: str) -> None:
    print(f"ust-sessiond[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)
