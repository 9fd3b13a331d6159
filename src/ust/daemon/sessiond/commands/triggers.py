"""Triggers: add_trigger, list_triggers, remove_trigger, trigger_notifications (``ust.daemon.sessiond.triggers``)."""

from __future__ import annotations

from ust.daemon.protocol import is_name, list_of, one_of, optional, string, uint
from ust.daemon.rules import MAX_PYTHON_LEVEL, EventRule, check_pattern
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond import ktriggers, monitor
from ust.daemon.sessiond.commands.events import check_filter
from ust.daemon.sessiond.triggers import ACTIONS, MAX_CAPTURES, Action
from ust.errors import SessionError

group = CommandGroup()

MAX_WAIT_MS = 60_000  # one long poll; the client asks again

_ACTION = {"type": one_of(*ACTIONS), "session?": optional(is_name), "policy?": one_of("every", "once-after"),
           "count?": uint(1 << 32)}


_CONDITION = {"type": one_of(*monitor.CONDITIONS), "session": is_name, "channel?": optional(is_name),
              "threshold_ratio?": optional((int, float)), "threshold_size?": optional(uint(1 << 63))}


@group.command("add_trigger", {
    "name?": optional(is_name),
    "condition?": optional(_CONDITION),
    "domain?": one_of("ust", "python", "kernel"),
    "syscall?": optional(one_of(*ktriggers.SYSCALL_SITES)),
    "pattern?": string(512),
    "exclusions?": list_of(string(512), 256),
    "filter?": optional(string(4096)),
    "loglevel?": optional(uint(MAX_PYTHON_LEVEL + 1)),
    "loglevel_only?": bool,
    "captures?": list_of(string(4096), MAX_CAPTURES),
    "actions": list_of(_ACTION, 16),
})
def add_trigger(daemon, caller: int, actions: list[dict], domain: str = "ust", pattern: str = "*",
                name: str | None = None, exclusions: list[str] = (), filter: str | None = None,
                loglevel: int | None = None, loglevel_only: bool = False, captures: list[str] = (),
                condition: dict | None = None, syscall: str | None = None) -> dict:
    """event-rule-matches (domain, pattern, filter...) or, with ``condition``, a buffer-usage or
    consumed-size condition (ust.daemon.sessiond.monitor). Domain ``kernel``: kernel tracepoints, or
    with ``syscall`` (entry, exit, entry+exit) system calls (ust.daemon.sessiond.ktriggers)."""
    if domain == "kernel":
        ktriggers.check_allowed(daemon, caller)
        if loglevel is not None or exclusions:
            raise SessionError("a kernel event rule takes no --log-level nor --exclude-name")
    elif syscall is not None:
        raise SessionError("--type kernel:syscall is a kernel rule")
    made = _actions(daemon, caller, actions)
    if condition is not None:
        t = daemon.triggers.add(caller, name, None, made, condition=_check_condition(condition))
        monitor.watch(daemon)
        return {"trigger": t.to_json()}
    if domain == "ust" and loglevel is not None and loglevel > 14:
        raise SessionError(f"log level {loglevel} is out of range 0-14")
    for p in [pattern, *exclusions]:
        check_pattern(p)
    if exclusions and "*" not in pattern:
        raise SessionError(f"exclusion {exclusions[0]!r} needs a wildcard event pattern")
    if filter is not None:
        check_filter(filter)
    for expr in captures:
        check_capture(expr)
    rule = EventRule(pattern=pattern, channel="", exclusions=tuple(exclusions), filter=filter,
                     loglevel_type="all" if loglevel is None else ("single" if loglevel_only else "range"),
                     loglevel=-1 if loglevel is None else loglevel, domain=domain)
    t = daemon.triggers.add(caller, name, rule, made, tuple(captures))
    if domain == "kernel":
        try:
            ktriggers.attach(daemon, t, pattern, syscall, filter)
        except BaseException:
            daemon.triggers.remove(caller, t.name)
            raise
        return {"trigger": t.to_json()}
    daemon.triggers.sync_all(daemon)
    return {"trigger": t.to_json()}


def _check_condition(c: dict) -> dict:
    kind, ratio, size = c["type"], c.get("threshold_ratio"), c.get("threshold_size")
    if kind == "session-consumed-size-ge":
        if size is None or ratio is not None or c.get("channel") is not None:
            raise SessionError(f"condition {kind} takes --session and --threshold-size (no channel, no ratio)")
        return {"type": kind, "session": c["session"], "threshold_size": size}
    if c.get("channel") is None:
        raise SessionError(f"condition {kind} needs --channel")
    if (ratio is None) == (size is None):
        raise SessionError(f"condition {kind} needs one of --threshold-ratio and --threshold-size")
    if ratio is not None and not 0.0 <= ratio <= 1.0:
        raise SessionError(f"threshold ratio {ratio} is out of range 0..1")
    out = {"type": kind, "session": c["session"], "channel": c["channel"]}
    out.update({"threshold_ratio": float(ratio)} if ratio is not None else {"threshold_size": size})
    return out


def _actions(daemon, caller: int, actions: list[dict]) -> list[Action]:
    if not actions:
        raise SessionError("a trigger needs an action (--action notify, start-session S, ...)")
    made = []
    for a in actions:
        kind, session = a["type"], a.get("session")
        if (kind == "notify") != (session is None):
            raise SessionError(f"action {kind} " + ("takes no session" if kind == "notify" else "needs a session name"))
        if session is not None:
            with daemon.lock:
                s = daemon.sessions.get(session)
            if s is None or not daemon.visible(s, caller):
                raise SessionError(f"no session named {session!r}")
            if kind == "snapshot-session" and not s.snapshot:
                raise SessionError(f"session {session!r} is not a snapshot session (create it with --snapshot)")
        count = a.get("count", 1)
        if count < 1:
            raise SessionError("a rate policy's count is at least 1")
        made.append(Action(type=kind, session=session, policy=a.get("policy", "every"), count=count))
    return made


def check_capture(expr: str) -> None:
    """Reject a capture that is not one reference, in one line (a FilterError)."""
    from ust.filter import compile_capture

    compile_capture(expr)


@group.command("list_triggers", {})
def list_triggers(daemon, caller: int) -> dict:
    return {"triggers": [t.to_json() for t in daemon.triggers.visible(caller)]}


@group.command("remove_trigger", {"name": is_name})
def remove_trigger(daemon, caller: int, name: str) -> dict:
    t = daemon.triggers.remove(caller, name)
    if t is None:
        raise SessionError(f"no trigger named {name!r}")
    if t.kernel is not None:
        ktriggers.detach(t)  # its instance goes (the consumer closes its readers first)
    daemon.triggers.sync_all(daemon)
    return {"trigger": t.to_json()}


@group.command("trigger_notifications", {"after?": optional(uint(1 << 62)), "timeout_ms?": uint(MAX_WAIT_MS + 1),
                                         "triggers?": list_of(is_name, 1024)})
def trigger_notifications(daemon, caller: int, after: int | None = None, timeout_ms: int = 0,
                          triggers: list[str] | None = None) -> dict:
    return daemon.triggers.notifications(caller, after, timeout_ms / 1000, set(triggers) if triggers else None)
