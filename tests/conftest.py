"""Shared test helpers: babeltrace2 is the oracle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BT2_PYTHON = os.environ.get("UST_BT2_PYTHON", "/usr/bin/python3")


def _have_bt2_python() -> bool:
    try:
        return subprocess.run([BT2_PYTHON, "-c", "import bt2"], capture_output=True).returncode == 0
    except OSError:
        return False


HAVE_BABELTRACE2 = shutil.which("babeltrace2") is not None
HAVE_BT2 = _have_bt2_python()

needs_babeltrace2 = pytest.mark.skipif(not HAVE_BABELTRACE2, reason="babeltrace2 is not installed")
needs_bt2 = pytest.mark.skipif(not HAVE_BT2, reason="babeltrace2's Python bindings (python3-bt2) are not installed")


def bt2_dump(trace: "str | os.PathLike") -> list[dict]:
    """Every event and discarded-events message of a trace, read by bt2."""
    r = subprocess.run([BT2_PYTHON, str(HERE / "bt2_dump.py"), str(trace)], capture_output=True, text=True)
    assert r.returncode == 0, f"bt2 could not read {trace}: {r.stderr[-2000:]}"
    return [json.loads(line) for line in r.stdout.splitlines()]


def babeltrace2_text(trace: "str | os.PathLike", *args: str) -> tuple[str, str]:
    """babeltrace2's text output and its stderr."""
    r = subprocess.run(["babeltrace2", *args, str(trace)], capture_output=True, text=True)
    assert r.returncode == 0, f"babeltrace2 failed on {trace}: {r.stderr[-2000:]}"
    return r.stdout, r.stderr


def events_of(dump: list[dict], name: str | None = None) -> list[dict]:
    return [e for e in dump if "name" in e and (name is None or e["name"] == name)]


def discarded_of(dump: list[dict]) -> int:
    return sum(e.get("discarded", 0) for e in dump)


def run_python(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, **kw)
