"""The session daemon's side of dynamic probes (``enable-event --function``).

A probe is part of a session: ``{target, event, args, repr_limit, filter,
channel}``. Enabling one adds two event rules, ``BASE_entry`` and
``BASE_return`` (BASE: the event name given, else ``MODULE:QUALNAME``, with
the target's wildcards), so the events it declares in an application are
attached like any tracepoint. What a process is asked to probe is the union
of the probes of the active sessions it belongs to: a probe costs nothing
while no session that wants it runs. The filter is evaluated by the probe in
the application, at entry (the return of a dropped call is dropped too), so
it is not put on the rules.

Every application is told its whole set (``probes`` command), and answers with
the state of each probe (installed, pending import, refused, error), shown by
``ust list --apps``; a state that changes later (a pending probe installed when
its module is imported) it reports itself (``probe_status``, ``keep_status``).
"""

from __future__ import annotations

from ust.daemon.rules import check_pattern
from ust.daemon.sessiond import sync as rules_sync
from ust.errors import SessionError

WHOLE_PROGRAM = ("python:function_entry", "python:function_info", "python:function_return")
MAX_STATUS = 256


def _parse(target: str) -> tuple[str, str]:
    from ust.instrument.probes import ProbeError, parse_target

    try:
        return parse_target(target)
    except ProbeError as exc:
        raise SessionError(str(exc)) from None


def rule_patterns(target: str, event: str | None) -> list[str]:
    module, qual = _parse(target)
    if module == "*":
        return list(WHOLE_PROGRAM)
    base = event or f"{module}:{qual}"
    return [check_pattern(f"{base}_entry"), check_pattern(f"{base}_return")]


def wanted(daemon, app) -> list[dict]:
    """The probes ``app`` must have: those of the active sessions it is in (enabled channels)."""
    out: dict[tuple, dict] = {}
    with daemon.lock:  # the table only; each session's probes are read as they are
        sessions = list(daemon.sessions.values())
    for s in sessions:
        if not s.active or not rules_sync.app_in_session(s, app):
            continue
        for p in s.probes:
            conf = s.channels.get(p["channel"])
            if conf is None or not conf.enabled:
                continue
            d = {k: p[k] for k in ("target", "event", "args", "repr_limit", "filter")}
            out.setdefault(tuple(sorted((k, str(v)) for k, v in d.items())), d)
    return [out[k] for k in sorted(out)]


def sync(daemon, apps=None, targets: set | None = None, held=None) -> list[str]:
    """Send each application its probe set if it changed; the refusals for ``targets`` (one line each).

    ``held``: the session whose lock the caller holds (a command on it), or
    None (an application's worker, which holds none). The events the probes
    declared are attached at once in ``held``; the other active sessions get
    them through the application's worker, which takes their locks one at a
    time (taking them here, under ``held``'s, could deadlock with a command
    on another session doing the same)."""
    if apps is None:
        with daemon.lock:
            apps = list(daemon.apps.values())
    pending = []
    for app in list(apps):
        want = wanted(daemon, app)
        if want == app.probes_sent or not app.alive:
            continue
        app.probes_sent = want
        pending.append((app, app.send_many([({"cmd": "probes", "probes": want}, [])])))
    refused = []
    for app, slots in pending:
        ack = app.wait_many(slots, 1)[0]
        keep_status(daemon, app, ack)
        decls = declarations_from_reply(ack)
        if decls:
            error = app.add_declarations(daemon, decls)
            if error:
                refused.append(f"process {app.pid}: {error}")
            if held is not None and held.active and not held.destroyed and rules_sync.app_in_session(held, app):
                rules_sync.sync_app(daemon, held, app)
            if held is not None:
                app.enqueue(daemon, "sync", None)
        if ack is not None and not ack.get("ok"):
            refused.append(f"process {app.pid}: {str(ack.get('error'))[:300]}")
        for st in status_from_reply(ack):
            if targets and st["target"] in targets and st["state"] == "refused":
                refused.append(st["detail"])
    return refused


def declarations_from_reply(reply: dict | None) -> list[dict]:
    """The tracepoints the probes declared, each checked like a registration's."""
    from ust.daemon.protocol import check_decl

    if not reply or not isinstance(reply.get("tracepoints"), list):
        return []
    return [d for d in reply["tracepoints"][:65536] if check_decl(d) is None]


def keep_status(daemon, app, reply: dict | None, report: bool = False) -> None:
    """What ``ust list --apps`` shows of ``app``'s probes: its answer to a probe set, or its ``report`` of
    a change made since (``probe_status``: a module imported later installed a pending probe). The
    application counts its changes (``generation``), and an answer and a report may cross on their way
    (the report is queued behind the application's requests): the older one is dropped. A report without
    a generation or a list of states is dropped too; an answer without them (an error, none at all)
    leaves no state."""
    generation = reply.get("generation") if isinstance(reply, dict) else None
    if not isinstance(generation, int) or isinstance(generation, bool) or not 0 <= generation < 1 << 62:
        generation = None
    if report and (generation is None or not isinstance(reply.get("probes"), list)):
        return
    status = status_from_reply(reply)
    with daemon.lock:
        if generation is None:
            app.probe_status = status
        elif generation >= app.probe_generation:
            app.probe_status, app.probe_generation = status, generation


def status_from_reply(reply: dict | None) -> list[dict]:
    """The application's answer, checked and bounded (it comes from another process)."""
    if not reply or not isinstance(reply.get("probes"), list):
        return []
    out = []
    for st in reply["probes"][:MAX_STATUS]:
        if not isinstance(st, dict):
            continue
        out.append({k: str(st.get(k, ""))[:300] for k in ("target", "event", "state", "detail")})
    return out
