"""Writing traces: the directory layout, stream files, and event ids.

Packets leave the ring buffer exactly as the writers laid them out: the
consumer copies each complete sub-buffer's first ``packet_size`` bytes to the
stream file, never re-encoding an event.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from ust.instrument.fields import EventDecl, decl_from_dict, decl_to_dict


def uid_trace_dir(root: "str | os.PathLike", uid: int | None = None) -> Path:
    """<root>/ust/uid/<uid>/64-bit: where per-UID buffers are written."""
    return Path(root) / "ust" / "uid" / str(os.getuid() if uid is None else uid) / "64-bit"


def pid_trace_dir(root: "str | os.PathLike", procname: str, pid: int, started: float | None = None) -> Path:
    """<root>/ust/pid/<procname>-<pid>-<YYYYMMDD-HHMMSS>: per-PID buffers."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started or time.time()))
    return Path(root) / "ust" / "pid" / f"{procname}-{pid}-{stamp}"


def stream_file_name(channel: str, cpu: int) -> str:
    return f"{channel}_{cpu}"


class StreamFile:
    """One stream file; packets are appended as they come out of the buffer."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.bytes_written = 0
        self.packets = 0

    def write_packet(self, packet: memoryview) -> None:
        view = packet
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.bytes_written += len(packet)
        self.packets += 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def drain(buffer, out: StreamFile, *, force: bool = False, limit: int | None = None) -> int:
    """Move every complete packet from ``buffer`` to ``out``; returns how many.

    The copy loop runs in C without the GIL. With force (all writers gone),
    also take packets a dead writer left short.
    """
    packets, nbytes = buffer.drain_to(out.fd, force=force, limit=-1 if limit is None else limit)
    out.packets += packets
    out.bytes_written += nbytes
    return packets


class EventIdFile:
    """Event ids of one trace, shared by every process that writes it.

    Forked children may declare tracepoints their parent never saw; they get
    ids from this append-only file (one JSON line per event, id = line
    number), serialized with flock. The session reads it back to write the
    metadata.
    """

    def __init__(self, path: "str | os.PathLike"):
        self.path = Path(path)
        self.path.touch(mode=0o600, exist_ok=True)
        self._known: dict[str, int] = {}

    def _read(self, f) -> list[dict]:
        f.seek(0)
        out = []
        for line in f.read().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def event_id(self, decl: EventDecl, stream_id: int = 0) -> int:
        key = f"{stream_id}/{decl.name}"
        if key in self._known:
            return self._known[key]
        with open(self.path, "r+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                entries = self._read(f)
                for i, e in enumerate(entries):
                    if e["stream_id"] == stream_id and e["decl"]["name"] == decl.name:
                        self._known[key] = i
                        return i
                f.seek(0, os.SEEK_END)
                f.write(json.dumps({"stream_id": stream_id, "decl": decl_to_dict(decl)}) + "\n")
                f.flush()
                self._known[key] = len(entries)
                return len(entries)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def events(self) -> list[tuple[int, int, EventDecl]]:
        with open(self.path, "r", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                entries = self._read(f)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return [(i, e["stream_id"], decl_from_dict(e["decl"])) for i, e in enumerate(entries)]


def write_metadata(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
