"""Dynamic probes of a session (``enable-event --function``): enable-probe, disable-probe.

What a probe is and how applications are told: ``ust.daemon.sessiond.probes``.
"""

from __future__ import annotations

from ust.daemon.protocol import is_name, list_of, optional, string, uint
from ust.daemon.rules import EventRule
from ust.daemon.sessiond import probes, sync
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond.commands.events import check_filter
from ust.daemon.sessiond.model import DEFAULT_CHANNEL, Session
from ust.errors import SessionError

group = CommandGroup()


@group.command("enable_probe", {
    "session": is_name,
    "targets": list_of(string(512), 256),
    "event?": optional(string(512)),
    "channel?": optional(is_name),
    "filter?": optional(string(4096)),
    "args?": bool,
    "repr_limit?": uint(65537),
})
def enable_probe(daemon, s: Session, targets: list[str], event: str | None = None, channel: str | None = None,
                 filter: str | None = None, args: bool = True, repr_limit: int = 256) -> dict:
    if not targets:
        raise SessionError("no function given")
    if event is not None:
        if len(targets) != 1 or "*" in targets[0]:
            raise SessionError(f"an event name ({event}) needs exactly one function, without wildcards")
        if ":" not in event:
            raise SessionError(f"event name {event!r} must be 'provider:name'")
    if not 1 <= repr_limit <= 65536:
        raise SessionError(f"--repr-limit must be 1 to 65536, got {repr_limit}")
    if filter is not None:
        check_filter(filter)
    ch = s.channel(channel)
    # What a refusal puts back: the probes this command replaces (one per target, event name and channel:
    # the same events again with other options) and the rules it adds or enables. Bad input loses nothing.
    probes_before = list(s.probes)
    rules_before = [(r, r.enabled) for r in s.rules]
    added = []
    for t in targets:
        patterns = probes.rule_patterns(t, event)
        spec = {"target": t, "event": event, "args": bool(args), "repr_limit": int(repr_limit), "filter": filter,
                "channel": ch.name}
        # Another event name on a function probed already is another probe, as two enable-event with two
        # names are two event rules in LTTng: both record each call (docs/probes.md).
        s.probes[:] = [p for p in s.probes if not (p["target"] == t and p["channel"] == ch.name
                                                   and p["event"] == event)]
        s.probes.append(spec)
        for pat in patterns:
            s.enable_rule(EventRule(pattern=pat, channel=ch.name))
        added.append({**spec, "events": patterns})
    sync.sync_session(daemon, s)
    refused = probes.sync(daemon, targets=set(targets), held=s)
    if refused:
        s.probes[:] = probes_before
        s.rules[:] = [r for r, _ in rules_before]
        for r, enabled in rules_before:
            r.enabled = enabled
        probes.sync(daemon, held=s)
        sync.sync_session(daemon, s)
        raise SessionError(refused[0])
    return {"probes": added}


@group.command("disable_probe", {"session": is_name, "targets": list_of(string(512), 256),
                                 "channel?": optional(is_name), "event?": optional(string(512))})
def disable_probe(daemon, s: Session, targets: list[str], channel: str | None = None,
                  event: str | None = None) -> dict:
    """The probes on ``targets`` in the channel; only the one recording ``event`` (its event name, or
    MODULE:QUALNAME for a probe without one) when given: the others on the same function go on."""
    name = channel or DEFAULT_CHANNEL
    gone = [p for p in s.probes if p["target"] in targets and p["channel"] == name
            and (event is None or (p["event"] or p["target"]) == event)]
    if not gone:
        named = f" named {event}" if event is not None else ""
        raise SessionError(f"no probe on {', '.join(targets)}{named} in channel {name!r} of session {s.name!r}")
    ch = s.channel(name, create=False)
    s.probes[:] = [p for p in s.probes if p not in gone]
    still = {pat for p in s.probes if p["channel"] == ch.name
             for pat in probes.rule_patterns(p["target"], p["event"])}
    drop = {pat for p in gone for pat in probes.rule_patterns(p["target"], p["event"])} - still
    s.rules[:] = [r for r in s.rules if not (r.channel == ch.name and r.pattern in drop and r.filter is None
                                               and not r.exclusions and r.loglevel_type == "all")]
    probes.sync(daemon, held=s)
    sync.sync_session(daemon, s)
    return {"disabled": len(gone)}
