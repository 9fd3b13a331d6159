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


def assert_packet_indexes(root: "str | os.PathLike") -> int:
    """Every stream file of every trace under ``root`` has LTTng's packet index
    (``index/<file>.idx``) listing exactly its whole packets, as their headers say, and
    babeltrace2 builds each stream's packet index from that file (it would say so and
    walk the packets instead if it did not describe the whole file). Returns how many
    stream files were checked."""
    from ust.ctf.index import IndexEntry, index_path, read_index
    from ust.ctf.writer import PACKET_HEADER_SIZE, PacketIndex, packet_spans

    checked = nonempty = 0
    for directory, _dirs, files in os.walk(root):
        if "metadata" not in files:
            continue
        for name in files:
            if name == "metadata" or name.startswith("."):
                continue
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                expected = []
                for offset, length in packet_spans(f.fileno(), size):
                    i = PacketIndex.of(os.pread(f.fileno(), PACKET_HEADER_SIZE, offset))
                    expected.append(IndexEntry(offset, 8 * length, 8 * i.content_size, i.timestamp_begin,
                                               i.timestamp_end, i.events_discarded, i.stream_id,
                                               i.stream_instance_id, i.packet_seq_num))
            assert sum(e.packet_size // 8 for e in expected) == size, f"{path} does not end on a whole packet"
            assert read_index(index_path(directory, name)) == expected, f"the index of {path} is not its packets'"
            checked += 1
            nonempty += size > 0
    r = subprocess.run(["babeltrace2", "--log-level=I", str(root)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Invalid LTTng trace index" not in r.stderr and "Indexing stream file" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.count("Building index from .idx file of stream file") == nonempty, r.stderr[-2000:]
    return checked


def events_of(dump: list[dict], name: str | None = None) -> list[dict]:
    return [e for e in dump if "name" in e and (name is None or e["name"] == name)]


def discarded_of(dump: list[dict]) -> int:
    return sum(e.get("discarded", 0) for e in dump)


def run_python(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, **kw)
