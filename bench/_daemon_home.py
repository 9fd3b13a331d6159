"""A private UST_HOME for a benchmark that runs the real daemons. Import it before `import ust`:
the agent of the benchmark's own process then registers with that daemon."""

from __future__ import annotations

import os
import tempfile
import time

HOME = tempfile.mkdtemp(prefix="ust-bench-")
os.environ["UST_HOME"] = HOME
os.environ["UST_AGENT_RETRY"] = "0.05"
os.environ.pop("UST_AGENT", None)


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("bench: timed out waiting for the daemon")
        time.sleep(0.01)
