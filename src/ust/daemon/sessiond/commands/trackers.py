"""Which processes a session records: track, untrack (LTTng's process attribute inclusion sets).

Each of vpid, vuid, vgid has an inclusion set; a process records a session only if its ids are
in every set. A set starts as "every process" (the attribute is absent from
``Session.trackers``); ``track`` of ids makes it those ids (then adds to it), ``track --all``
makes it every process again, ``untrack --all`` makes it empty (no process). An active session
applies the change at once, to running applications and to those that register later.
"""

from __future__ import annotations

from ust.daemon.protocol import is_name, list_of, one_of, uint
from ust.daemon.sessiond import sync
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond.model import Session
from ust.errors import SessionError

group = CommandGroup()

ATTRIBUTES = ("vpid", "vuid", "vgid")
MAX_IDS = 4096  # per set: more is a list of processes nobody typed
_SCHEMA = {"session": is_name, "attr": one_of(*ATTRIBUTES), "ids?": list_of(uint(1 << 32), MAX_IDS),
           "all?": bool}


def _apply(daemon, s: Session) -> None:
    """Processes now outside the sets stop recording ``s``; those now inside start."""
    if not s.active:
        return
    apps = list(daemon.apps.values())
    sync.remove_apps(s, [a for a in apps if not sync.app_in_session(s, a)])
    sync.sync_session(daemon, s)


@group.command("track", _SCHEMA)
def track(daemon, s: Session, attr: str, ids: list[int] = (), all: bool = False) -> dict:
    if all == bool(ids):
        raise SessionError("give ids to track, or --all (not both)")
    if all:
        s.trackers.pop(attr, None)
    else:
        values = s.trackers.setdefault(attr, set())
        if len(values | set(ids)) > MAX_IDS:
            raise SessionError(f"at most {MAX_IDS} {attr} values per session")
        values.update(ids)
    _apply(daemon, s)
    return {"trackers": {a: sorted(v) for a, v in s.trackers.items()}}


@group.command("untrack", _SCHEMA)
def untrack(daemon, s: Session, attr: str, ids: list[int] = (), all: bool = False) -> dict:
    if all == bool(ids):
        raise SessionError("give ids to untrack, or --all (not both)")
    if all:
        s.trackers[attr] = set()
    else:
        values = s.trackers.get(attr)
        if values is None:
            raise SessionError(f"the {attr} inclusion set of session {s.name!r} holds every process: "
                               f"track the ones to keep instead (or `untrack --all --{attr}` first)")
        missing = sorted(set(ids) - values)
        if missing:
            raise SessionError(f"{attr} {', '.join(map(str, missing))} not in the inclusion set of session "
                               f"{s.name!r}")
        values.difference_update(ids)
    _apply(daemon, s)
    return {"trackers": {a: sorted(v) for a, v in s.trackers.items()}}
