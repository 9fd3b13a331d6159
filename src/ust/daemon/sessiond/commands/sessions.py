"""A session's life: create, start, stop, snapshot, destroy; and what it lost."""

from __future__ import annotations

import os
import secrets
import pwd
import time

from ust.ctf.writer import time_stamp
from ust.daemon import protocol
from ust.daemon.protocol import is_name, optional, string, uint
from ust.daemon.sessiond import consumers, kernel, probes, sync
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond.model import Session
from ust.errors import SessionError

group = CommandGroup()


@group.command("create", {"name": is_name, "output?": optional(string()), "snapshot?": bool,
                          "token?": optional(string(128)), "no_output?": bool, "url?": optional(string(300)),
                          "live_timer?": optional(uint(1 << 40)), "shm_path?": optional(string())})
def create(daemon, caller: int, name: str, output: str | None = None, snapshot: bool = False,
           token: str | None = None, no_output: bool = False, url: str | None = None,
           live_timer: int | None = None, shm_path: str | None = None) -> dict:
    if no_output and (not snapshot or output is not None or url is not None or live_timer):
        raise SessionError("--no-output goes with --snapshot and without --output or a URL: "
                           "`ust snapshot add-output` or `snapshot record URL` say where")
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
    if shm_path is not None and not os.path.isabs(shm_path):
        raise SessionError(f"shared memory path must be an absolute path, got {shm_path!r}")
    s = Session(name=name, output=output if relay else os.path.normpath(output), uid=caller, snapshot=snapshot,
                token=token, relay=relay, live_timer=live_timer or 0, snapshot_output_deleted=no_output,
                shm_path=os.path.normpath(shm_path) if shm_path else None)
    with daemon.lock:
        if name in daemon.sessions:
            raise SessionError(f"a session named {name!r} already exists")
        daemon.sessions[name] = s
    return {"session": s.summary()}


MAX_LIVE_TIMER_US = 3600 * 10**6


def relay_of(url: str) -> dict:
    """{"host", "control", "data"} of a ``net://HOST[:CTRL[:DATA]]`` URL (SessionError if invalid)."""
    from ust.relay.sender import parse_net_url
    from ust.relay.wire import IDENTITY_SIZE, WireError

    try:
        host, control, data = parse_net_url(url)
    except WireError as exc:
        raise SessionError(str(exc)) from None
    # identity: the session's on the relay, for its whole life (hex): a consumer that replaces a
    # killed one resumes the same relay session with it (viewers stay attached: docs/relay.md)
    return {"host": host, "control": control, "data": data, "identity": secrets.token_hex(IDENTITY_SIZE)}


@group.command("destroy", {"session": is_name})
def destroy(daemon, s: Session) -> dict:
    if s.active:
        from ust.daemon.sessiond.commands import rotation

        if rotation.rotates(s):  # as lttng: destroying a rotating session archives its last chunk
            stop_session(daemon, s)
            rotation.end_chunk(daemon, s)
    destroy_session(daemon, s)
    summary = s.summary()
    summary["traces"] = s.trace_paths
    return {"session": summary}


def destroy_session(daemon, s: Session) -> None:
    """Stop ``s`` if active, flush and forget its traces. Under ``s.lock``."""
    if s.active:
        stop_session(daemon, s)
    kernel.on_destroy(daemon, s)
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
    if not any(r.enabled for r in s.rules) and not kernel.has_rules(s):
        raise SessionError(f"session {s.name!r} has no event rule enabled: use enable-event first")
    consumers.link(daemon, s)  # the owner's consumer runs (or the reason it cannot) before anything is sent
    if not s.consumer_keys():
        s.clock_offset = time.time_ns() - time.monotonic_ns()
    if not s.chunk_begin:
        s.chunk_begin = time.time()
    s.active = True
    try:
        kernel.on_start(daemon, s)
        probes.sync(daemon, held=s)
        sync.sync_session(daemon, s)
    except Exception:
        s.active = False
        kernel.on_stop(daemon, s)
        raise
    return {"session": s.summary()}


@group.command("stop", {"session": is_name})
def stop(daemon, s: Session) -> dict:
    if not s.active:
        raise SessionError(f"session {s.name!r} is not active")
    stop_session(daemon, s)
    probes.sync(daemon, held=s)
    archive = None
    from ust.daemon.sessiond.commands import rotation

    if rotation.rotates(s):  # `stop` ends the last chunk: every event is in an archive
        archive = rotation.end_chunk(daemon, s)
    return {"session": s.summary(), **consumers.losses(daemon, s), **({"archive": archive} if archive else {})}


def stop_session(daemon, s: Session) -> None:
    """Every application stops recording ``s``, then its consumer writes out what they committed."""
    s.active = False
    kernel.on_stop(daemon, s)  # the kernel's instance stops and its trace is written out
    # 1. Every application stops writing (detach): what is committed is final.
    sync.remove_apps(s, list(daemon.apps.values()))
    # 2. The consumer closes the partial packets and writes everything.
    link = consumers.link_if_running(daemon, s)
    if s.traces and link is not None:
        link.flush([t.key for t in s.traces.values()])


def trace_rel(s: Session, t) -> str:
    """A trace's path inside its session's tree (``ust/uid/0/64-bit``)."""
    if s.relay:
        return t.path[len(s.output) + 1:]
    return os.path.relpath(t.path, s.output)
