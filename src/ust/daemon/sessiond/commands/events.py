"""Event rules of a session: enable-event, disable-event (the python domain included)."""

from __future__ import annotations

from ust.daemon.protocol import is_name, list_of, one_of, optional, string, uint
from ust.daemon.rules import DOMAINS, MAX_PYTHON_LEVEL, EventRule, check_pattern
from ust.daemon.sessiond import sync
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond.model import DEFAULT_CHANNEL, Session
from ust.errors import SessionError

group = CommandGroup()


def check_filter(expr: str) -> None:
    """Reject an invalid filter here, with the position of the error."""
    from ust.filter import compile_filter

    compile_filter(expr)  # raises FilterError (a UstError) with the position


@group.command("enable_event", {
    "session": is_name,
    "patterns": list_of(string(512), 256),
    "channel?": optional(is_name),
    "exclusions?": list_of(string(512), 256),
    "filter?": optional(string(4096)),
    "loglevel?": optional(uint(MAX_PYTHON_LEVEL + 1)),  # 0-14, or a Python level in the python domain
    "loglevel_only?": bool,
    "domain?": optional(one_of(*DOMAINS)),
})
def enable_event(daemon, s: Session, patterns: list[str], channel: str | None = None,
                 exclusions: list[str] = (), filter: str | None = None,
                 loglevel: int | None = None, loglevel_only: bool = False,
                 domain: str | None = None) -> dict:
    domain = domain or "ust"
    if not patterns:
        raise SessionError("no event pattern given")
    if domain == "ust" and loglevel is not None and loglevel > 14:
        raise SessionError(f"log level {loglevel} is out of range 0-14")
    for p in list(patterns) + list(exclusions):
        check_pattern(p)
    for x in exclusions:
        if not any("*" in p for p in patterns):
            raise SessionError(f"exclusion {x!r} needs a wildcard event pattern")
    if filter is not None:
        check_filter(filter)
    ch = s.channel(channel)
    added = []
    for p in patterns:
        rule = EventRule(
            pattern=p, channel=ch.name, exclusions=tuple(exclusions), filter=filter,
            loglevel_type="all" if loglevel is None else ("single" if loglevel_only else "range"),
            loglevel=-1 if loglevel is None else loglevel, domain=domain,
        )
        s.enable_rule(rule)
        added.append(rule.to_json())
    sync.sync_session(daemon, s)
    return {"rules": added}


@group.command("disable_event", {"session": is_name, "patterns": list_of(string(512), 256),
                                 "channel?": optional(is_name)})
def disable_event(daemon, s: Session, patterns: list[str], channel: str | None = None) -> dict:
    chan = channel or DEFAULT_CHANNEL
    if chan not in s.channels:
        raise SessionError(f"no channel named {chan!r} in session {s.name!r}")
    n = 0
    for r in s.rules:
        if r.channel == chan and r.enabled and ("*" in patterns and len(patterns) == 1 or r.pattern in patterns):
            r.enabled = False
            n += 1
    if n == 0:
        raise SessionError(f"no enabled event rule {', '.join(patterns)} in channel {chan!r}")
    sync.sync_session(daemon, s)
    return {"disabled": n}
