"""Snapshot sessions: their output (add-output, list-output, del-output) and `snapshot record`.

As LTTng: a snapshot session has one snapshot output, by default ``snapshot-1`` (id 1) writing
to the session's output directory; ``add-output`` replaces a deleted one (with the next id, named
``snapshot-ID`` unless named); each record writes
``<output path>/<name>-<YYYYmmdd-HHMMSS>-<N>/`` (N counts the session's snapshots), ``name``
being the output's or the one given to ``record``. A size limit (``--max-size``) is refused: ust
has no partial snapshot yet, and a limit that is not kept would be a lie.
"""

from __future__ import annotations

import os
import socket
import time

from ust.ctf.writer import time_stamp
from ust.daemon.protocol import is_name, optional, string, uint
from ust.daemon.sessiond import consumers, kernel
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond.commands.sessions import relay_of, trace_rel
from ust.daemon.sessiond.model import Session
from ust.errors import SessionError

group = CommandGroup()


def _snapshot_session(s: Session) -> None:
    if not s.snapshot:
        raise SessionError(f"session {s.name!r} is not a snapshot session (create it with --snapshot)")


def _is_relay(url: str) -> bool:
    return url.startswith(("net://", "net6://"))


def _path(url: str) -> str:
    """A snapshot destination: an absolute path, file://PATH, or a relay's net://HOST[:CTRL[:DATA]]
    (checked, kept as given: docs/relay.md)."""
    if _is_relay(url):
        relay_of(url)  # SessionError if it is not a valid relay URL
        return url
    path = url[len("file://"):] if url.startswith("file://") else url
    if "://" in path:
        raise SessionError(f"snapshot output {url!r}: a path, file://PATH or net://HOST[:CTRL[:DATA]]")
    if not os.path.isabs(path):
        raise SessionError(f"snapshot output must be an absolute path, got {url!r}")
    return os.path.normpath(path)


def _no_max_size(max_size: int) -> None:
    if max_size:
        raise SessionError("--max-size is not supported: ust's snapshots hold the whole buffers")


@group.command("snapshot_add_output", {"session": is_name, "url": string(), "name?": optional(is_name),
                                       "max_size?": uint(1 << 50)})
def add_output(daemon, s: Session, url: str, name: str | None = None, max_size: int = 0) -> dict:
    _snapshot_session(s)
    _no_max_size(max_size)
    if s.snapshot_out() is not None:
        current = s.snapshot_out()
        raise SessionError(f"session {s.name!r} has a snapshot output already ({current['name']}: "
                           f"{current['path']}): `ust snapshot del-output` it first")
    s.snapshot_output = {"id": s.snapshot_next_id, "name": name or f"snapshot-{s.snapshot_next_id}",
                         "path": _path(url), "max_size": 0}
    s.snapshot_next_id += 1
    s.snapshot_output_deleted = False
    return {"output": dict(s.snapshot_output)}


@group.command("snapshot_list_output", {"session": is_name})
def list_output(daemon, s: Session) -> dict:
    _snapshot_session(s)
    out = s.snapshot_out()
    return {"outputs": [dict(out)] if out else []}


@group.command("snapshot_del_output", {"session": is_name, "output": string(256)})
def del_output(daemon, s: Session, output: str) -> dict:
    _snapshot_session(s)
    out = s.snapshot_out()
    if out is None or output not in (str(out["id"]), out["name"]):
        raise SessionError(f"no snapshot output {output!r} in session {s.name!r}")
    s.snapshot_output = None
    s.snapshot_output_deleted = True
    return {"output": dict(out)}


@group.command("snapshot_record", {"session": is_name, "output?": optional(string()), "name?": optional(is_name),
                                   "max_size?": uint(1 << 50)})
def snapshot_record(daemon, s: Session, output: str | None = None, name: str | None = None,
                    max_size: int = 0) -> dict:
    _snapshot_session(s)
    _no_max_size(max_size)
    if not s.consumer_keys():
        raise SessionError(f"session {s.name!r} has no buffers yet: start it first")
    configured = s.snapshot_out()
    if output is None and configured is None:
        raise SessionError(f"session {s.name!r} has no snapshot output: add one with `ust snapshot add-output` "
                           "or give a URL to record")
    base = _path(output) if output is not None else configured["path"]
    label = name or (configured["name"] if configured else "snapshot-1")
    snapshot_name = f"{label}-{time_stamp()}-{s.snapshot_count}"
    s.snapshot_count += 1
    if _is_relay(base):  # a session of its own on the relay (docs/relay.md)
        relay = relay_of(base)
        targets = {t.key: f"{snapshot_name}/{trace_rel(s, t)}" for t in s.traces.values()}
        targets.update(kernel.snapshot_targets(s, snapshot_name))
        consumers.link(daemon, s).snapshot(targets, None, relay={
            **relay, "session": s.name, "hostname": socket.gethostname(), "created": int(time.time())})
        return {"path": f"net://{relay['host']}:{relay['control']}:{relay['data']}/{snapshot_name}"}
    dest = os.path.join(base, snapshot_name)
    targets = {t.key: os.path.join(dest, trace_rel(s, t)) for t in s.traces.values()}
    targets.update(kernel.snapshot_targets(s, dest))
    consumers.link(daemon, s).snapshot(targets, base)
    return {"path": dest}
