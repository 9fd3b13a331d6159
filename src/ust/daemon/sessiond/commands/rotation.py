"""Session rotation: rotate, enable-rotation, disable-rotation (LTTng's trace chunks); clear and
regenerate metadata and statedump (the other commands that act on a session's written trace).

A session writes its trace in a *chunk*: the first in the session's directory itself
(``OUTPUT/ust/...``, as without rotation), each later one in ``OUTPUT/<begin>-<index>/``.
``rotate`` switches every trace of the session to a new chunk at a packet boundary (the
consumer's ``rotate``: ``ust.consumer.trace.Trace.switch_output``, no copy of the drain loop)
and moves the finished one to ``OUTPUT/archives/<begin>-<end>-<index>/ust/``: a complete
trace babeltrace2 reads alone; together the archives hold every event exactly once, while
applications keep writing, per-uid and per-pid alike. ``stop`` ends the last chunk the same way
once a session rotated or has a rotation schedule. Times are LTTng's (``%Y%m%dT%H%M%S%z``).

``clear`` empties the current chunk: the buffers' contents are consumed unwritten and the stream
files start over (the metadata stays, the archives too); a snapshot session's buffers only.

Schedules (``enable-rotation --timer PERIOD | --size SIZE``) are checked by one daemon thread
(``scheduler``) every ``CHECK_PERIOD``; the size is what the consumer wrote to the current chunk.
"""

from __future__ import annotations

import os
import threading
import time

from ust.daemon.protocol import is_name, one_of, uint
from ust.daemon.sessiond import consumers, kernel, sync
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond.log import log
from ust.daemon.sessiond.model import Session
from ust.errors import SessionError, UstError

group = CommandGroup()

CHECK_PERIOD = 0.25  # s: how often the schedules are looked at
MIN_TIMER = 100_000  # µs: a shorter period would rotate faster than chunks can be written


class RelayArchiveError(SessionError):
    """A streamed session switched to its new chunk, but its relay did not archive the last one."""


def chunk_time(when: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S%z", time.localtime(when))


def rotate_session(daemon, s: Session) -> str:
    """Archive the current chunk of ``s`` and go on in a new one; returns the archive's directory.
    Under ``s.lock``."""
    if s.snapshot:
        raise SessionError(f"session {s.name!r} is a snapshot session: it does not rotate (snapshot record "
                           "writes its buffers)")
    if not s.chunk_begin:
        raise SessionError(f"session {s.name!r} was never started: nothing to rotate")
    now = time.time()
    begin = s.chunk_begin or s.created
    new_dir = f"{chunk_time(now)}-{s.chunk + 1}"
    old_root = s.chunk_root()
    new_root = os.path.join(s.output, new_dir)
    targets = {t.key: os.path.join(new_root, os.path.relpath(t.path, old_root)) for t in s.traces.values()}
    targets.update(kernel.rotate_target(s, new_root))
    archive = os.path.join("archives", f"{chunk_time(begin)}-{chunk_time(now)}-{s.chunk}")
    relay_path, relay_error = consumers.link(daemon, s).rotate(targets, s.output, s.chunk_dir, archive)
    for t in s.traces.values():
        t.path = targets[t.key]
    kernel.rotated(s, targets)
    s.chunk += 1
    s.chunk_dir = new_dir
    s.chunk_begin = now
    # a streamed session's archive is on its relay: the path as the relay gave it (as lttng prints it)
    if relay_error:
        raise RelayArchiveError(f"session {s.name!r} goes on in a new chunk, but its relay did not archive the "
                                f"last one: {relay_error}")
    path = relay_path if s.relay and relay_path else os.path.join(s.output, archive)
    s.archives.append(path)
    return path


def end_chunk(daemon, s: Session) -> str | None:
    """``stop`` and ``destroy`` of a rotating session archive its last chunk: the archive's
    directory, or None when the relay of a streamed session could not (logged: the session still
    stops and is destroyed)."""
    try:
        return rotate_session(daemon, s)
    except RelayArchiveError as exc:
        log(str(exc))
        return None


def rotates(s: Session) -> bool:
    """Whether ``stop`` ends the chunk: the session rotated, or has a schedule."""
    return bool(s.chunk or s.rotation_timer or s.rotation_size) and not s.snapshot and bool(s.consumer_keys())


@group.command("rotate", {"session": is_name})
def rotate(daemon, s: Session) -> dict:
    return {"path": rotate_session(daemon, s)}


@group.command("clear", {"session": is_name})
def clear(daemon, s: Session) -> dict:
    if s.consumer_keys():
        consumers.link(daemon, s).clear(s.consumer_keys())
    return {"session": s.summary()}


@group.command("regenerate", {"session": is_name, "what": one_of("metadata", "statedump")})
def regenerate(daemon, s: Session, what: str) -> dict:
    """``metadata``: re-sample the clock offset (realtime - monotonic: after the wall clock was
    set) and rewrite every trace's metadata with it. ``statedump``: every application the active
    session records writes its ``python:function_info`` events again (``statedump`` agent command),
    and its kernel trace the ``lttng_statedump_*`` events (its consumer: kernel.regenerate_statedump)."""
    if what == "statedump":
        return _statedump(daemon, s)
    from ust.ctf.metadata import clock_offset_now

    s.clock_offset = clock_offset_now()
    if s.consumer_keys():
        consumers.link(daemon, s).regenerate_metadata(s.consumer_keys(), s.clock_offset)
    return {"clock_offset": s.clock_offset}


def _statedump(daemon, s: Session) -> dict:
    if not s.active:
        raise SessionError(f"session {s.name!r} is not active: a statedump would record nowhere")
    with daemon.lock:
        apps = [a for a in daemon.apps.values() if s.name in a.state and sync.app_in_session(s, a)]
    pending = [(app, app.send_many([({"cmd": "statedump"}, [])])) for app in apps]  # all sent, then all waited
    kernel_dumped = kernel.regenerate_statedump(daemon, s)
    emitted = 0
    answered = 0
    for app, slots in pending:
        ack = app.wait_many(slots, 1)[0]
        if ack and ack.get("ok"):
            answered += 1
            n = ack.get("emitted")
            if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 32:  # another process's word
                emitted += n
    return {"apps": answered, "emitted": emitted, "kernel": kernel_dumped}


@group.command("enable_rotation", {"session": is_name, "timer?": uint(1 << 40), "size?": uint(1 << 50)})
def enable_rotation(daemon, s: Session, timer: int = 0, size: int = 0) -> dict:
    if s.snapshot:
        raise SessionError(f"session {s.name!r} is a snapshot session: it does not rotate")
    if not timer and not size:
        raise SessionError("give --timer PERIOD or --size SIZE")
    if timer and timer < MIN_TIMER:
        raise SessionError(f"rotation period {timer} µs is too short (at least {MIN_TIMER} µs)")
    if size and size < 4096:
        raise SessionError(f"rotation size {size} is too small (at least 4096 bytes)")
    if timer:
        s.rotation_timer = timer
    if size:
        s.rotation_size = size
    scheduler(daemon)
    return {"timer": s.rotation_timer, "size": s.rotation_size}


@group.command("disable_rotation", {"session": is_name, "timer?": bool, "size?": bool})
def disable_rotation(daemon, s: Session, timer: bool = False, size: bool = False) -> dict:
    if not timer and not size:
        raise SessionError("give --timer or --size (the schedule to remove)")
    if timer and not s.rotation_timer or size and not s.rotation_size:
        which = "timer" if timer and not s.rotation_timer else "size"
        raise SessionError(f"session {s.name!r} has no {which} rotation schedule")
    if timer:
        s.rotation_timer = 0
    if size:
        s.rotation_size = 0
    return {"timer": s.rotation_timer, "size": s.rotation_size}


# ---------------------------------------------------------------------------
# the schedules


def _due(daemon, s: Session, now: float) -> bool:
    if not s.active or not s.consumer_keys():
        return False
    if s.rotation_timer and now - (s.chunk_begin or s.created) >= s.rotation_timer / 1e6:
        return True
    if not s.rotation_size:
        return False
    link = consumers.link_if_running(daemon, s)
    # what the consumer wrote to this chunk (never a walk of the owner's directory: it is theirs)
    return link is not None and link.chunk_bytes(s.consumer_keys()) >= s.rotation_size


def _scheduler_loop(daemon) -> None:
    while not daemon.stopping.wait(CHECK_PERIOD):
        with daemon.lock:
            sessions = [s for s in daemon.sessions.values() if s.rotation_timer or s.rotation_size]
        for s in sessions:
            if not s.lock.acquire(timeout=CHECK_PERIOD):
                continue  # a command holds it: next round
            try:
                if not s.destroyed and _due(daemon, s, time.time()):
                    rotate_session(daemon, s)
            except UstError as exc:
                log(f"session {s.name}: scheduled rotation failed: {exc}")
            finally:
                s.lock.release()


_started: set = set()
_started_lock = threading.Lock()


def scheduler(daemon) -> None:
    """Start the daemon's schedule thread (once)."""
    with _started_lock:
        if id(daemon) in _started:
            return
        _started.add(id(daemon))
    threading.Thread(target=_scheduler_loop, args=(daemon,), name="rotation", daemon=True).start()
