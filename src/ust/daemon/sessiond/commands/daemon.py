"""Commands on the daemon itself and on what a caller may see: ping, stats, apps, list, shutdown."""

from __future__ import annotations

import os

from ust.daemon import protocol
from ust.daemon.sessiond import consumers
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.errors import SessionError

group = CommandGroup()


@group.command("ping", {})
def ping(daemon, caller: int) -> dict:
    with daemon.links_lock:
        link = daemon.links.get(consumers.consumer_uid(caller)) or daemon.links.get(os.getuid())
    return {"pid": os.getpid(), "version": protocol.PROTOCOL_VERSION,
            "consumer_pid": link.pid if link is not None else None}


@group.command("stats", {})
def stats(daemon, caller: int) -> dict:
    """The consumers' counters of every buffer of the caller's sessions (lost events, packets read...)."""
    with daemon.lock:
        sessions = [s for s in daemon.sessions.values() if daemon.visible(s, caller)]
    out: dict = {}
    running = [consumers.link_if_running(daemon, s) for s in sessions]
    for link in {id(lk): lk for lk in filter(None, running)}.values():
        keys = {t.key for s in sessions if consumers.link_if_running(daemon, s) is link
                for t in list(s.traces.values())}
        if keys:
            out.update({k: v for k, v in consumers.consumer_stats(link).items() if k in keys})
    return {"traces": out}


@group.command("shutdown", {})
def shutdown(daemon, caller: int) -> dict:
    if not daemon.trusted(caller):
        raise SessionError(f"permission denied: only root or uid {os.getuid()} may shut this daemon down")
    return {}


@group.command("list", {})
def list_sessions(daemon, caller: int) -> dict:
    with daemon.lock:
        sessions = [s for s in daemon.sessions.values() if daemon.visible(s, caller)]
    return {"sessions": [s.summary() for s in sessions]}


@group.command("apps", {})
def apps(daemon, caller: int) -> dict:
    """The registered applications the caller may trace (root: all)."""
    with daemon.lock:  # their declarations change under this lock
        found = [a.to_json() for a in daemon.apps.values() if caller == 0 or a.uid == caller]
    return {"apps": sorted(found, key=lambda a: a["pid"])}
