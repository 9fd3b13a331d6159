"""The event table of a trace: which event id of which stream is which event.

The metadata describes every event of this table; an event is recorded only
after the metadata describing it was written. Two tables, one interface
(``events()`` and ``version()``, which changes when an event is added):

* ``EventTable``: ids handed out by someone else (ust-consumerd is told them
  by the session daemon, which allocates them per trace and channel);
* ``EventIdFile``: ids allocated here, shared by every process that writes
  the trace (the embedded session and its forked children) through a flock'd
  append-only file, which the drain engine watches without the GIL.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from ust.instrument.fields import EventDecl, decl_from_dict, decl_to_dict

__all__ = ["EventTable", "EventIdFile"]


class EventTable:
    """Event ids given by the host (in memory)."""

    def __init__(self) -> None:
        self._events: dict[tuple[int, int], EventDecl] = {}  # (stream id, event id) -> declaration
        self._version = 0

    def describe(self, stream_id: int, event_id: int, decl: EventDecl) -> None:
        self._events[(stream_id, event_id)] = decl
        self._version += 1

    def version(self) -> int:
        return self._version

    def watch_fd(self) -> int:
        return -1  # changes only through describe(), by the host's own thread

    def events(self) -> list[tuple[int, int, EventDecl]]:
        return [(eid, sid, decl) for (sid, eid), decl in self._events.items()]

    def close(self) -> None:
        pass


class EventIdFile:
    """Event ids of one trace, shared by every process that writes it.

    Forked children may declare tracepoints their parent never saw; they get
    ids from this append-only file (one JSON line per event, id = line
    number), serialized with flock. The session reads it back to write the
    metadata.
    """

    def __init__(self, path: "str | os.PathLike"):
        self.path = Path(path)
        os.close(self._open_fd(os.O_RDWR | os.O_CREAT))
        self._known: dict[str, int] = {}
        self._watch_fd = -1

    def _open_fd(self, flags: int) -> int:
        # never through a symbolic link planted at its name (it lives in the trace directory)
        return os.open(self.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

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
        with open(self._open_fd(os.O_RDWR), "r+", encoding="utf-8") as f:
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
        with open(self._open_fd(os.O_RDONLY), "r", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                entries = self._read(f)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return [(i, e["stream_id"], decl_from_dict(e["decl"])) for i, e in enumerate(entries)]

    def version(self) -> int:
        """The file's size: it only grows, one line per event."""
        return os.stat(self.path).st_size

    def watch_fd(self) -> int:
        """A descriptor of the file, for the C drain to see it grow (drain_wait's watch)."""
        if self._watch_fd < 0:
            self._watch_fd = self._open_fd(os.O_RDONLY)
        return self._watch_fd

    def close(self) -> None:
        """Close the watch and remove the file (the trace is complete)."""
        if self._watch_fd >= 0:
            os.close(self._watch_fd)
            self._watch_fd = -1
        self.path.unlink(missing_ok=True)
