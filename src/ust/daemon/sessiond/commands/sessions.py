"""A session's life: create, start, stop, snapshot, destroy; and what it lost."""

from __future__ import annotations

import os
import pwd
import socket
import time

from ust.ctf.writer import time_stamp
from ust.daemon import protocol
from ust.daemon.protocol import is_name, optional, string, uint
from ust.daemon.sessiond import consumers, probes, sync
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond.model import Session
from ust.errors import SessionError

group = CommandGroup()


@group.command("create", {"name": is_name, "output?": optional(string()), "snapshot?": bool,
                          "token?": optional(string(128)), "url?": optional(string(300)),
                          "live_timer?": optional(uint(1 << 40))})
def create(daemon, caller: int, name: str, output: str | None = None, snapshot: bool = False,
           token: str | None = None, url: str | None = None, live_timer: int | None = None) -> dict:
    relay = None
    if live_timer is not None and not 1 <= live_timer <= MAX_LIVE_TIMER_US:
        raise SessionError(f"live timer must be 1 to {MAX_LIVE_TIMER_US} µs, got {live_timer}")
    if live_timer and url is None:
        url = "net://localhost"  # --live alone: the relay on this host, as lttng does
    if url is not None:
        if output is not None:
            raise SessionError("give an output directory or a relay URL, not both")
        relay = relay_of(url)
        output = f"net://{relay['host']}:{relay['control']}:{relay['data']}"
    elif output is None:
        stamp = time_stamp()
        try:
            home = pwd.getpwuid(caller).pw_dir
        except KeyError:
            raise SessionError(f"uid {caller} has no home directory: give an output directory") from None
        output = os.path.join(home, "ust-traces", f"{name}-{stamp}")
    if relay is None and not os.path.isabs(output):
        raise SessionError(f"output directory must be an absolute path, got {output!r}")
    s = Session(name=name, output=output if relay else os.path.normpath(output), uid=caller, snapshot=snapshot,
                token=token, relay=relay, live_timer=live_timer or 0)
    with daemon.lock:
        if name in daemon.sessions:
            raise SessionError(f"a session named {name!r} already exists")
        daemon.sessions[name] = s
    return {"session": s.summary()}


MAX_LIVE_TIMER_US = 3600 * 10**6


def relay_of(url: str) -> dict:
    """{"host", "control", "data"} of a ``net://HOST[:CTRL[:DATA]]`` URL (SessionError if invalid)."""
    from ust.relay.sender import parse_net_url
    from ust.relay.wire import WireError

    try:
        host, control, data = parse_net_url(url)
    except WireError as exc:
        raise SessionError(str(exc)) from None
    return {"host": host, "control": control, "data": data}


@group.command("destroy", {"session": is_name})
def destroy(daemon, s: Session) -> dict:
    destroy_session(daemon, s)
    summary = s.summary()
    summary["traces"] = s.trace_paths
    return {"session": summary}


def destroy_session(daemon, s: Session) -> None:
    """Stop ``s`` if active, flush and forget its traces. Under ``s.lock``."""
    if s.active:
        stop_session(daemon, s)
    link = consumers.link_if_running(daemon, s)
    if link is not None and s.traces:
        link.remove_traces([t.key for t in s.traces.values()])
    for t in s.traces.values():
        for ch in t.channels.values():
            protocol.close_fds(ch.fds)
    s.trace_paths = [t.path for t in s.traces.values()]
    s.traces.clear()
    s.destroyed = True
    with daemon.lock:
        if daemon.sessions.get(s.name) is s:
            del daemon.sessions[s.name]
    if s.probes:
        probes.sync(daemon, held=s)


@group.command("session", {"session": is_name})
def session(daemon, s: Session) -> dict:
    return {"session": {**s.summary(), **consumers.losses(daemon, s)}}


@group.command("start", {"session": is_name})
def start(daemon, s: Session) -> dict:
    if s.active:
        raise SessionError(f"session {s.name!r} is already active")
    if not any(r.enabled for r in s.rules):
        raise SessionError(f"session {s.name!r} has no event rule enabled: use enable-event first")
    consumers.link(daemon, s)  # the owner's consumer runs (or the reason it cannot) before anything is sent
    if not s.traces:
        s.clock_offset = time.time_ns() - time.monotonic_ns()
    s.active = True
    try:
        probes.sync(daemon, held=s)
        sync.sync_session(daemon, s)
    except Exception:
        s.active = False
        raise
    return {"session": s.summary()}


@group.command("stop", {"session": is_name})
def stop(daemon, s: Session) -> dict:
    if not s.active:
        raise SessionError(f"session {s.name!r} is not active")
    stop_session(daemon, s)
    probes.sync(daemon, held=s)
    return {"session": s.summary(), **consumers.losses(daemon, s)}


def stop_session(daemon, s: Session) -> None:
    """Every application stops recording ``s``, then its consumer writes out what they committed."""
    s.active = False
    # 1. Every application stops writing (detach): what is committed is final.
    pending = []
    for app in list(daemon.apps.values()):
        if s.name in app.state:
            pending.append((app, app.send_many([({"cmd": "remove_session", "session": s.name}, [])])))
            app.state.pop(s.name, None)
    for app, slots in pending:  # all sent, now all acknowledged
        app.wait_many(slots, 1)
    # 2. The consumer closes the partial packets and writes everything.
    link = consumers.link_if_running(daemon, s)
    if s.traces and link is not None:
        link.flush([t.key for t in s.traces.values()])


@group.command("snapshot_record", {"session": is_name, "output?": optional(string())})
def snapshot_record(daemon, s: Session, output: str | None = None) -> dict:
    if not s.snapshot:
        raise SessionError(f"session {s.name!r} is not a snapshot session (create it with --snapshot)")
    if not s.traces:
        raise SessionError(f"session {s.name!r} has no buffers yet: start it first")
    base = output or s.output
    stamp = time_stamp()
    name = f"snapshot-{s.snapshot_count}-{stamp}"
    if base.startswith(("net://", "net6://")):  # to a relay (docs/relay.md)
        relay = relay_of(base)
        targets = {t.key: f"{name}/{trace_rel(s, t)}" for t in s.traces.values()}
        consumers.link(daemon, s).snapshot(targets, None, relay={
            **relay, "session": s.name, "hostname": socket.gethostname(), "created": int(time.time())})
        s.snapshot_count += 1
        return {"path": f"net://{relay['host']}:{relay['control']}:{relay['data']}/{name}"}
    if not os.path.isabs(base):
        raise SessionError(f"snapshot output must be an absolute path or a net:// URL, got {base!r}")
    dest = os.path.join(base, name)
    s.snapshot_count += 1
    targets = {t.key: os.path.join(dest, trace_rel(s, t)) for t in s.traces.values()}
    consumers.link(daemon, s).snapshot(targets, base)
    return {"path": dest}


def trace_rel(s: Session, t) -> str:
    """A trace's path inside its session's tree (``ust/uid/0/64-bit``)."""
    if s.relay:
        return t.path[len(s.output) + 1:]
    return os.path.relpath(t.path, s.output)
