"""What the session daemon knows: sessions, their channels and rules, and the
traces (buffers and files) they created, one per owner (a uid or a pid)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ust.daemon.rules import EventRule
from ust.defaults import DEFAULT_NUM_SUBBUF, DEFAULT_SUBBUF_SIZE
from ust.errors import SessionError

DEFAULT_CHANNEL = "channel0"


@dataclass
class ChannelConf:
    name: str
    subbuf_size: int = DEFAULT_SUBBUF_SIZE
    num_subbuf: int = DEFAULT_NUM_SUBBUF
    overwrite: bool = False
    buffers: str = "uid"  # "uid" or "pid"
    switch_timer: int = 0  # microseconds, 0 = off
    read_timer: int = 200_000  # microseconds
    monitor_timer: int = 1_000_000  # µs between samples for buffer-usage triggers (lttng's default), 0 = none
    tracefile_size: int = 0
    tracefile_count: int = 0
    context: list[str] = field(default_factory=list)
    enabled: bool = True

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TraceChannel:
    conf: ChannelConf
    stream_id: int
    fds: list[int]
    events: dict[str, int] = field(default_factory=dict)  # decl_key -> event id


@dataclass
class Trace:
    """The buffers and files of one session for one owner (a uid or a pid)."""

    key: str
    path: str
    owner: tuple[str, int]
    uuid: str
    channels: dict[str, TraceChannel] = field(default_factory=dict)


@dataclass
class Session:
    name: str
    output: str
    uid: int = 0  # the owner: only it (and root) sees and controls the session
    snapshot: bool = False
    token: str | None = None  # only apps started with this UST_RUN_TOKEN (ust run)
    channels: dict[str, ChannelConf] = field(default_factory=dict)
    rules: list[EventRule] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)  # enable-event --function (sessiond/probes.py)
    active: bool = False
    created: float = field(default_factory=time.time)
    clock_offset: int = 0
    traces: dict[tuple[str, int], Trace] = field(default_factory=dict)
    snapshot_count: int = 0
    trace_paths: list = field(default_factory=list)  # after destroy
    lock: Any = field(default_factory=threading.RLock, repr=False)  # held by a command on this session
    destroyed: bool = False
    # `ust track`: LTTng's inclusion sets, "vpid"/"vuid"/"vgid" -> the ids tracked; an attribute
    # absent tracks every process (the default), an empty set none
    trackers: dict[str, set] = field(default_factory=dict)
    # a snapshot session's output, `ust snapshot add-output`: {"name", "path", "max_size"}; None for
    # the default one (the session's output, named snapshot-1), absent after del-output
    snapshot_output: dict | None = None
    snapshot_output_deleted: bool = False
    snapshot_next_id: int = 2  # outputs are numbered as lttng's: the default is 1, each added one the next
    # rotation (commands/rotation.py): the trace chunk being written, in ``output/chunk_dir``
    # ("" for the first: the session's directory itself), since ``chunk_begin``
    chunk: int = 0
    chunk_dir: str = ""
    chunk_begin: float = 0.0
    archives: list = field(default_factory=list)  # the archived chunks' directories, oldest first
    rotation_timer: int = 0  # µs, 0: off (enable-rotation --timer)
    rotation_size: int = 0  # bytes, 0: off (enable-rotation --size)
    kernel: Any = None  # the kernel domain's KernelConf (sessiond/kernel.py), once -k is used
    # Streaming (docs/relay.md): the relay's {"host", "control", "data"}; ``output``
    # is then its net:// URL, for display only. live_timer: µs, 0 = not live.
    relay: dict | None = None
    live_timer: int = 0
    # `ust create --shm-path DIR`: the session's directory of buffer files, DIR/NAME-DATE (the
    # command adds NAME-DATE, as lttng's), where the consumer creates the buffers as files
    # (ust.consumer.shm_path); None: memfds
    shm_path: str | None = None

    def consumer_keys(self) -> list[str]:
        """The keys of the session's traces in its consumer: user-space ones, then the kernel's."""
        keys = [t.key for t in list(self.traces.values())]
        if self.kernel is not None and self.kernel.key:
            keys.append(self.kernel.key)
        return keys

    def chunk_root(self) -> str:
        """The directory the current trace chunk is written in."""
        return os.path.join(self.output, self.chunk_dir) if self.chunk_dir else self.output

    def memory(self) -> dict[str, dict]:
        """Per channel: the shared memory its ring buffers take (``bytes``) and how many per-CPU
        buffers (``buffers``), over every trace (one per user, or per process with per-pid buffers)."""
        out: dict[str, dict] = {}
        for t in list(self.traces.values()):
            for name, tc in list(t.channels.items()):
                m = out.setdefault(name, {"bytes": 0, "buffers": 0})
                m["bytes"] += tc.conf.subbuf_size * tc.conf.num_subbuf * len(tc.fds)
                m["buffers"] += len(tc.fds)
        return out

    def snapshot_out(self) -> dict | None:
        """The snapshot output `snapshot record` writes to, or None (deleted)."""
        if self.snapshot_output_deleted:
            return None
        return self.snapshot_output or {"id": 1, "name": "snapshot-1", "path": self.output, "max_size": 0}

    def tracks(self, pid: int, uid: int, gid: int) -> bool:
        """Whether the inclusion sets let a process with these ids record this session."""
        ids = {"vpid": pid, "vuid": uid, "vgid": gid}
        return all(ids[attr] in values for attr, values in self.trackers.items())

    @property
    def buffers(self) -> str:
        for ch in self.channels.values():
            return ch.buffers
        return "uid"

    def channel(self, name: str | None, create: bool = True) -> ChannelConf:
        """The channel ``name`` (the default one if None), created with defaults if allowed."""
        name = name or DEFAULT_CHANNEL
        ch = self.channels.get(name)
        if ch is None:
            if not create:
                raise SessionError(f"no channel named {name!r} in session {self.name!r}")
            if self.active:
                raise SessionError(f"cannot add channel {name!r}: session {self.name!r} is active (stop it first)")
            ch = ChannelConf(name=name, overwrite=self.snapshot, buffers=self.buffers)
            self.channels[name] = ch
        return ch

    def enable_rule(self, rule: EventRule) -> None:
        """Add ``rule``, or enable the same rule if the session has it already."""
        for r in self.rules:
            if r.same_rule(rule):
                r.enabled = True
                return
        self.rules.append(rule)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "output": self.output,
            "snapshot": self.snapshot,
            "live_timer": self.live_timer,
            "shm_path": self.shm_path,
            "active": self.active,
            "buffers": self.buffers,
            "created": self.created,
            "uid": self.uid,
            # copies first: a command on the session may change it meanwhile
            "channels": [ch.to_json() for ch in list(self.channels.values())],
            "rules": [r.to_json() for r in list(self.rules)],
            "probes": [dict(p) for p in list(self.probes)],
            "traces": [t.path for t in list(self.traces.values())],
            "trackers": {attr: sorted(values) for attr, values in list(self.trackers.items())},
            "snapshot_outputs": [dict(o) for o in [self.snapshot_out()] if o and self.snapshot],
            "memory": self.memory(),
            "rotation": {"chunk": self.chunk, "archives": list(self.archives), "timer": self.rotation_timer,
                         "size": self.rotation_size},
            **({"kernel": self.kernel.summary()} if self.kernel is not None else {}),
        }
