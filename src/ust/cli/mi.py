"""`ust --mi xml|json COMMAND`: LTTng's machine interface, for scripts.

``--mi xml`` writes the document ``lttng --mi xml`` writes for the same command (namespace
https://lttng.org/xml/ns/lttng-mi, schema version 4.1, the element names and order of
lttng 2.13's output for a user-space session), so a script written against lttng reads ust.
``--mi json`` writes the same tree as JSON: an element with children is an object, a list
element (``sessions``, ``channels``, ``events``...) is an array of its items, a leaf keeps its
type (numbers, booleans, strings). Both are built from one tree (``Many`` marks the lists).

The commands with a machine interface are those of ``MI_COMMANDS``; the others refuse
``--mi`` in one line (``MI_COMMANDS``: version, list, create, destroy, start, stop, enable-channel,
enable-event, snapshot, save, load, track, untrack, rotate, enable-rotation, disable-rotation, clear,
regenerate, add-trigger, list-triggers, remove-trigger, wait-trigger, set-session, status, disable-event,
disable-channel, add-context, crash; ``NO_MI`` says why the others have none). A failure prints its one-line
error on stderr and a document whose ``output`` is empty and ``success`` false, and exits non-zero, as lttng
does. docs/mi.md lists each command's document.
"""

from __future__ import annotations

import argparse
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from ust.errors import SessionError

NAMESPACE = "https://lttng.org/xml/ns/lttng-mi"
SCHEMA_VERSION = "4.1"
SCHEMA_LOCATION = f"{NAMESPACE} https://lttng.org/xml/schemas/lttng-mi/4/lttng-mi-4.1.xsd"
FORMATS = ("xml", "json")


@dataclass
class Many:
    """A list element: ``<tag>`` holding one ``<item>`` per value (JSON: an array)."""

    item: str
    values: list


@dataclass
class Repeated:
    """Elements repeated in place, each named by the key holding this (JSON: an array under that key)."""

    values: list


# ---------------------------------------------------------------------------
# rendering


def _leaf(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _to_xml(parent: ET.Element, tag: str, value: Any) -> None:
    if isinstance(value, Repeated):
        for v in value.values:
            _to_xml(parent, tag, v)
        return
    e = ET.SubElement(parent, tag)
    if isinstance(value, dict):
        for k, v in value.items():
            _to_xml(e, k, v)
    elif isinstance(value, Many):
        for v in value.values:
            _to_xml(e, value.item, v)
    else:
        e.text = _leaf(value)


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (Many, Repeated)):
        return [_to_json(v) for v in value.values]
    return value


def render(fmt: str, command: str, output: dict | None, success: bool | None) -> str:
    """The whole document of one command: its name, its output, whether it succeeded."""
    doc: dict[str, Any] = {"name": command}
    if output is not None:
        doc["output"] = output
    if success is not None:
        doc["success"] = success
    if fmt == "json":
        return json.dumps({"command": _to_json(doc)}, indent=2)
    root = ET.Element("command", {"xmlns": NAMESPACE, "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
                                  "xsi:schemaLocation": SCHEMA_LOCATION, "schemaVersion": SCHEMA_VERSION})
    for k, v in doc.items():
        _to_xml(root, k, v)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


# ---------------------------------------------------------------------------
# the elements, as lttng's MI names them


def session_brief(s: dict) -> dict:
    return {"name": s["name"], "path": "" if s.get("snapshot") else s["output"], "enabled": bool(s["active"]),
            "snapshot_mode": 1 if s.get("snapshot") else 0, "live_timer_interval": 0}


def _channel_attributes(ch: dict, lost: int = 0) -> dict:
    return {"overwrite_mode": "OVERWRITE" if ch["overwrite"] else "DISCARD", "subbuffer_size": ch["subbuf_size"],
            "subbuffer_count": ch["num_subbuf"], "switch_timer_interval": ch["switch_timer"],
            "read_timer_interval": ch["read_timer"], "monitor_timer_interval": ch.get("monitor_timer", 0), "blocking_timeout": 0,
            "output_type": "MMAP", "tracefile_size": ch["tracefile_size"],
            "tracefile_count": ch["tracefile_count"], "live_timer_interval": 0, "discarded_events": lost,
            "lost_packets": 0}


def _level_name(rule: dict) -> str:
    if rule.get("domain") == "python":
        from ust.daemon.rules import python_loglevel_name

        return "PYTHON_" + python_loglevel_name(rule["loglevel"])
    from ust.instrument.loglevels import name_of

    return name_of(rule["loglevel"])


def event_element(rule: dict, success: bool | None = None) -> dict:
    """An event rule; with ``success`` (enable-event's answer) lttng writes no filter."""
    e: dict[str, Any] = {"name": rule["pattern"], "type": "TRACEPOINT", "enabled": bool(rule["enabled"])}
    if rule["loglevel_type"] != "all":
        e["loglevel_type"] = rule["loglevel_type"].upper()
        e["loglevel"] = _level_name(rule)
    if rule.get("filter") and success is None:
        e["filter_expression"] = rule["filter"]
    e["exclusions"] = Many("exclusion", list(rule.get("exclusions") or ()))
    if success is not None:
        e["success"] = success
    return e


def session_detail(s: dict) -> dict:
    """``lttng --mi xml list SESSION``: the session with its user-space and python domains."""
    buffer_type = "PER_PID" if s["buffers"] == "pid" else "PER_UID"
    channels = []
    for ch in s["channels"]:
        rules = [r for r in s["rules"] if r["channel"] == ch["name"] and r.get("domain", "ust") == "ust"]
        channels.append({"name": ch["name"], "enabled": bool(ch["enabled"]),
                         "attributes": _channel_attributes(ch),
                         "events": Many("event", [event_element(r) for r in rules])})
    domains = [{"type": "UST", "buffer_type": buffer_type, "process_attr_trackers": {},
                "channels": Many("channel", channels)}]
    python = [r for r in s["rules"] if r.get("domain") == "python"]
    if python:
        domains.append({"type": "PYTHON", "buffer_type": buffer_type,
                        "events": Many("event", [event_element(r) for r in python])})
    return {**session_brief(s), "domains": Many("domain", domains)}


def version_element() -> dict:
    from ust import __version__

    parts = [int(p) if p.isdigit() else 0 for p in __version__.split(".")[:3]] + [0, 0, 0]
    return {"string": __version__, "major": parts[0], "minor": parts[1], "commit": "", "patchLevel": parts[2],
            "name": "ust", "description": "A user-space tracer for Python programs, LTTng-compatible.",
            "url": "https://lttng.org", "license": "ust is free software under the MIT licence"}


# ---------------------------------------------------------------------------
# the commands: each returns its <output> (the same client calls as the text commands)


def _client():
    from ust.control import Client

    return Client()


def mi_version(args: argparse.Namespace) -> dict:
    return {"version": version_element()}


def mi_list(args: argparse.Namespace) -> dict:
    with _client() as c:
        if getattr(args, "kernel", False) and not args.name:
            return {"domains": Many("domain", [_kernel_domain(c.kernel_list())])}
        if getattr(args, "apps", False) or (getattr(args, "userspace", False) and not args.name):
            return {"domains": Many("domain", [_apps_domain(c.list_apps())])}
        if args.name:
            return {"sessions": Many("session", [session_detail(c.get_session(args.name))])}
        return {"sessions": Many("session", [session_brief(s) for s in c.list_sessions()])}


def mi_create(args: argparse.Namespace) -> dict:
    from ust.control import set_current_session
    from ust.ctf.writer import time_stamp

    from ust.cli.session_cmds import _relay_url, session_shm_path

    name = args.name or "auto-" + time_stamp()
    with _client() as c:
        s = c.create_session(name, output=args.output, snapshot=args.snapshot, no_output=args.no_output,
                             url=_relay_url(args), live_timer=args.live, shm_path=session_shm_path(args, name))
    set_current_session(name)
    return {"session": session_brief(s)}


def mi_destroy(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current
    from ust.control import get_current_session, set_current_session

    out = []
    with _client() as c:
        names = [s["name"] for s in c.list_sessions()] if args.all else [args.name or _current(args, "name")]
        for name in names:
            out.append(session_brief(c.destroy_session(name)))
            if get_current_session() == name:
                set_current_session(None)
    return {"sessions": Many("session", out)}


def _start_stop(args: argparse.Namespace, start: bool) -> dict:
    from ust.cli.session_cmds import _current

    name = args.name or _current(args, "name")
    with _client() as c:
        s = c.start(name) if start else c.stop(name)
    return {"sessions": Many("session", [{"name": name, "enabled": bool(s["active"])}])}


def mi_start(args: argparse.Namespace) -> dict:
    return _start_stop(args, True)


def mi_stop(args: argparse.Namespace) -> dict:
    return _start_stop(args, False)


def mi_enable_channel(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current, _size

    session = _current(args)
    with _client() as c:
        ch = c.enable_channel(session, args.name, subbuf_size=_size(args.subbuf_size), num_subbuf=args.num_subbuf,
                              overwrite=args.overwrite, buffers=args.buffers, switch_timer=args.switch_timer,
                              read_timer=args.read_timer, tracefile_size=_size(args.tracefile_size),
                              tracefile_count=args.tracefile_count, monitor_timer=args.monitor_timer)
    return {"channels": Many("channel", [{"name": ch["name"], "enabled": bool(ch["enabled"]),
                                          "attributes": _channel_attributes(ch), "success": True}])}


def mi_enable_event(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current, enable_event_rules

    session = _current(args)
    if args.kernel or args.function is not None:
        return _enable_event_special(args, session)
    if args.syscall:
        raise SessionError("--syscall goes with -k (the kernel domain)")
    rules = enable_event_rules(args, session)
    return {"events": Many("event", [event_element(r, success=True) for r in rules])}


def _snapshot_output(o: dict, session: str | None = None) -> dict:
    e: dict[str, Any] = {"id": o["id"], "name": o["name"], "ctrl_url": o["path"]}
    if session is None:
        e["data_url"] = ""
    else:
        e["session_name"] = session
    e["max_size"] = o["max_size"]
    return e


def mi_snapshot(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current

    action = getattr(args, "action", None)
    if action is None:
        raise SessionError("expected `ust snapshot record|add-output|list-output|del-output`")
    session = _current(args)
    with _client() as c:
        if action == "record":
            c.snapshot_record(session, output=args.url or args.output, name=args.name, max_size=args.max_size)
            result: dict = {"snapshot": {}}
        elif action == "add-output":
            o = c.snapshot_add_output(session, args.url, name=args.name, max_size=args.max_size)
            result = {"snapshot": _snapshot_output(o, session)}
        elif action == "list-output":
            outputs = c.snapshot_list_output(session)
            result = {"session": {"name": session, "snapshots": Many("snapshot", [_snapshot_output(o)
                                                                                for o in outputs])}}
        else:
            o = c.snapshot_del_output(session, args.output)
            result = {"snapshot": {"id": o["id"], "session_name": session}}
    return {"snapshot_action": {"name": action, "output": result}}


def _tracker(args: argparse.Namespace, track: bool) -> dict:
    from ust.cli.lifecycle_cmds import _ids
    from ust.cli.session_cmds import _current

    session = _current(args)
    given = [(attr, getattr(args, attr)) for attr in ("vpid", "vuid", "vgid") if getattr(args, attr) is not None]
    if not given:
        raise SessionError("give --vpid, --vuid or --vgid (with values, or with --all)")
    trackers: dict[str, Any] = {}
    with _client() as c:
        for attr, text in given:
            ids = _ids(attr, text)
            if bool(ids) == args.all:
                raise SessionError(f"--{attr}: give values or --all, not both and not neither")
            (c.track if track else c.untrack)(session, attr, ids, all=args.all)
            values = [{"type": {"all": True}, "success": True}] if args.all else \
                [{"type": {"id": i}, "success": True} for i in ids]
            trackers[f"{attr}_process_attr_tracker"] = {"process_attr_values": Many(attr, values)}
    return {"process_attr_trackers": trackers}


def mi_track(args: argparse.Namespace) -> dict:
    return _tracker(args, True)


def mi_untrack(args: argparse.Namespace) -> dict:
    return _tracker(args, False)


def _saved_or_loaded(kind: str, outcomes, path: str) -> dict:
    failed = [o for o in outcomes if o.error]
    if failed:
        raise SessionError(f"session {failed[0].name}: {failed[0].error}")
    body: dict[str, Any] = {}
    for o in outcomes:  # lttng names one session (or none with --all); a list would break its schema
        body["session"] = {"name": o.name}
        break
    body["path"] = path
    if kind == "load":
        body["overrides"] = {}
    return {kind: body}


def mi_save(args: argparse.Namespace) -> dict:
    from ust.control.saved_sessions import save
    from ust.daemon import paths

    with _client() as c:
        outcomes = save(c, None if args.all or not args.name else [args.name], args.output, args.force)
    return _saved_or_loaded("save", outcomes, args.output or paths.sessions_dir())


def mi_load(args: argparse.Namespace) -> dict:
    from ust.control.saved_sessions import load
    from ust.daemon import paths

    with _client() as c:
        outcomes = load(c, None if args.all else args.name, args.input, args.force, args.override_url,
                        args.override_name)
    return _saved_or_loaded("load", outcomes, args.input or paths.sessions_dir())


def mi_rotate(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current

    name = args.name or _current(args, "name")
    with _client() as c:
        path = c.rotate(name)
    return {"rotation": {"session_name": name, "state": "COMPLETED",
                         "location": {"local": {"absolute_path": path}}}}


def _schedules(args: argparse.Namespace, enable: bool) -> dict:
    from ust.cli.lifecycle_cmds import parse_period
    from ust.cli.session_cmds import _current
    from ust.daemon.rules import parse_size

    session = _current(args)
    with _client() as c:
        if enable:
            if args.timer is None and args.size is None:
                raise SessionError("give --timer PERIOD or --size SIZE")
            timer = parse_period(args.timer) if args.timer is not None else None
            size = parse_size(args.size) if args.size is not None else None
            c.enable_rotation(session, timer=timer, size=size)
        else:
            before = c.get_session(session)["rotation"]
            c.disable_rotation(session, timer=args.timer, size=args.size)
            timer = before["timer"] if args.timer else None
            size = before["size"] if args.size else None
    results = []
    if timer:
        results.append({"rotation_schedule": {"periodic": {"time_us": timer}}, "success": True})
    if size:
        results.append({"rotation_schedule": {"size_threshold": {"bytes": size}}, "success": True})
    return {"rotation_schedule_results": {"session_name": session, "rotation_schedule_result": Repeated(results)}}


def mi_enable_rotation(args: argparse.Namespace) -> dict:
    return _schedules(args, True)


def mi_disable_rotation(args: argparse.Namespace) -> dict:
    return _schedules(args, False)


def mi_clear(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current

    with _client() as c:
        names = [s["name"] for s in c.list_sessions()] if args.all else [args.name or _current(args, "name")]
        out = []
        for name in names:
            c.clear(name)
            out.append(session_brief(c.get_session(name)))
    return {"sessions": Many("session", out)}


def mi_regenerate(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current

    session = _current(args)
    with _client() as c:
        c.regenerate(session, args.what)
    return {"regenerate_action": {"name": args.what}}


# ---------------------------------------------------------------------------
# the trigger commands (ust.cli.trigger_cmds): lttng's trigger elements (mi-lttng-4.1.xsd)

_MI_ACTIONS = {"notify": "action_notify", "start-session": "action_start_session",
               "stop-session": "action_stop_session", "rotate-session": "action_rotate_session",
               "snapshot-session": "action_snapshot_session"}


def _mi_capture(expr: str) -> dict:
    """A --capture expression as lttng's event_expr: payload field, channel context, app context, array
    element (``NAME[N]``, nested for each index)."""
    import re

    m = re.fullmatch(r"\s*(\$ctx\.|\$app\.)?([^\[\s]+)((?:\s*\[\s*\d+\s*\])*)\s*", expr)
    if m is None:  # a dotted path lttng cannot name: the whole expression as a payload field
        return {"event_expr_payload_field": {"name": expr}}
    scope, name, indexes = m.groups()
    if scope == "$app.":
        provider, _, type_name = name.partition(":")
        e = {"event_expr_app_specific_context_field": {"provider_name": provider, "type_name": type_name}}
    elif scope == "$ctx.":
        e = {"event_expr_channel_context_field": {"name": name}}
    else:
        e = {"event_expr_payload_field": {"name": name}}
    for index in re.findall(r"\d+", indexes or ""):
        e = {"event_expr_array_field_element": {"event_expr": e, "index": int(index)}}
    return e


def mi_trigger(t: dict, with_errors: bool = False) -> dict:
    """One trigger as lttng's MI ``<trigger>`` (``with_errors``: list-triggers' error counters)."""
    c = t["condition"]
    if c["type"] == "event-rule-matches":
        rule: dict = {"name_pattern": c["pattern"]}
        if c["filter"]:
            rule["filter_expression"] = c["filter"]
        if c["loglevel_type"] != "all":
            kind = "log_level_rule_at_least_as_severe_as" if c["loglevel_type"] == "range" else "log_level_rule_exactly"
            rule["log_level_rule"] = {kind: {"level": c["loglevel"]}}
        if c["exclusions"]:
            rule["name_pattern_exclusions"] = Many("name_pattern_exclusion", list(c["exclusions"]))
        if c["domain"] == "kernel" and c.get("syscall"):  # lttng's order: emission site, pattern, filter
            rule = {"emission_site": c["syscall"], **rule}
        kind = {"ust": "event_rule_user_tracepoint", "python": "event_rule_python_logging",
                "kernel": "event_rule_kernel_syscall" if c.get("syscall") else "event_rule_kernel_tracepoint"}[c["domain"]]
        cond: dict = {"condition_event_rule_matches": {
            "event_rule": {kind: rule},
            "capture_descriptors": Many("event_expr", [_mi_capture(x) for x in c.get("captures", [])])}}
    elif c["type"] == "session-consumed-size-ge":
        cond = {"condition_session_consumed_size": {"session_name": c["session"],
                                                    "threshold_bytes": c["threshold_size"]}}
    else:
        threshold = ({"threshold_ratio": c["threshold_ratio"]} if c.get("threshold_ratio") is not None
                     else {"threshold_bytes": c["threshold_size"]})
        kind = "condition_buffer_usage_high" if c["type"] == "channel-buffer-usage-ge" else "condition_buffer_usage_low"
        cond = {kind: {"session_name": c["session"], "channel_name": c["channel"], "domain": "UST", **threshold}}
    if with_errors:
        cond["error_query_results"] = Many("error_query_result", [_mi_counter(
            "discarded tracer messages", "Count of messages discarded by the tracer due to a communication error "
            "with the session daemon", t.get("discarded", 0))])  # a kernel trigger's: its full ring's drops
    actions = []
    for a in t["actions"]:
        policy, n = a["rate_policy"].split(":")
        body: dict = {} if a["type"] == "notify" else {"session_name": a["session"]}
        body["rate_policy"] = ({"rate_policy_every_n": {"interval": int(n)}} if policy == "every"
                               else {"rate_policy_once_after_n": {"threshold": int(n)}})
        action: dict = {_MI_ACTIONS[a["type"]]: body}
        if with_errors:
            action["error_query_results"] = Many("error_query_result", [_mi_counter(
                "total execution failures", "Aggregated count of errors encountered when executing the action",
                a["errors"])])
        actions.append(action)
    out = {"name": t["name"], "owner_uid": t["owner_uid"], "condition": cond,
           "action": {"action_list": Many("action", actions)}}
    if with_errors:
        out["error_query_results"] = Many("error_query_result", [])
    return out


def _mi_counter(name: str, description: str, value: int) -> dict:
    return {"name": name, "description": description, "error_query_result_counter": {"value": value}}


def mi_add_trigger(args: argparse.Namespace) -> dict:
    from ust.cli.trigger_cmds import parse_add_trigger

    with _client() as c:
        return {"trigger": mi_trigger(c.add_trigger(**parse_add_trigger(args.in_order)))}


def mi_list_triggers(args: argparse.Namespace) -> dict:
    with _client() as c:
        return {"triggers": Many("trigger", [mi_trigger(t, with_errors=True) for t in c.list_triggers()])}


def mi_remove_trigger(args: argparse.Namespace) -> dict:
    with _client() as c:
        return {"trigger": mi_trigger(c.remove_trigger(args.name))}


def mi_wait_trigger(args: argparse.Namespace) -> dict:
    """ust's own (lttng has no such command): ``<notifications>``, one ``<notification>`` per one received,
    its fields as Client.notifications gives them (captures: ``<capture>`` with ``expression`` and ``value``)."""
    import io

    from ust.cli.trigger_cmds import run_wait_trigger

    got = []
    run_wait_trigger(args, io.StringIO(), got.append)
    return {"notifications": Many("notification", [_mi_notification(n) for n in got])}


def _mi_notification(n: dict) -> dict:
    e = {k: v for k, v in n.items() if k != "captures"}
    if "captures" in n:
        caps = n["captures"] or {}
        e["captures"] = Many("capture", [{"expression": k, "value": json.dumps(v)} for k, v in caps.items()])
    return e


def mi_set_session(args: argparse.Namespace) -> dict:
    from ust.control import set_current_session

    with _client() as c:
        c.get_session(args.name)  # must exist
    set_current_session(args.name)
    return {"sessions": Many("session", [{"name": args.name}])}


def mi_status(args: argparse.Namespace) -> dict:
    """lttng's status is its `list CURRENT` (the document is named list)."""
    from ust.control import get_current_session

    name = get_current_session()
    if not name:
        raise SessionError("no current session: create one with `ust create NAME` or choose one with "
                           "`ust set-session`")
    with _client() as c:
        return {"sessions": Many("session", [session_detail(c.get_session(name))])}


def _apps_domain(apps: list) -> dict:
    """`lttng list -u`: the registered applications and their tracepoints."""
    from ust.instrument.loglevels import name_of

    pids = [{"id": a["pid"], "name": a["procname"],
             "events": Many("event", [{"name": tp["name"], "type": "TRACEPOINT", "enabled": True,
                                       "loglevel_type": "ALL", "loglevel": name_of(tp["loglevel"])}
                                      for tp in a["tracepoints"]])} for a in apps]
    return {"type": "UST", "buffer_type": "PER_PID", "pids": Many("pid", pids)}


def _kernel_domain(avail: dict) -> dict:
    """`lttng list -k` (and its system calls, `list -k --syscall`, in the same list)."""
    events = [{"name": n, "type": "TRACEPOINT", "enabled": False} for n in avail["events"]]
    events += [{"name": n, "type": "SYSCALL", "enabled": False} for n in avail["syscalls"]]
    return {"type": "KERNEL", "buffer_type": "GLOBAL", "events": Many("event", events)}


def _disabled_events(channel: str, names: list[str]) -> dict:
    return {"channel": {"name": channel, "events": Many("event", [{"name": n, "enabled": False, "success": True}
                                                                   for n in names])}}


def mi_disable_event(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current, _split

    session = _current(args)
    channel = args.channel or "channel0"
    with _client() as c:
        if args.kernel:
            patterns = ["*"] if args.all else _split([args.patterns] if args.patterns else [])
            if not patterns:
                raise SessionError("give a kernel event name (or --syscall NAME), or --all")
            c.kernel_disable_events(session, patterns, syscall=args.syscall)
            return _disabled_events(channel, patterns)
        if args.function is not None:
            functions = _split([args.function])
            c.disable_probes(session, functions, channel=args.channel, event=args.patterns)
            return _disabled_events(channel, functions)
        patterns = ["*"] if args.all else _split([args.patterns] if args.patterns else [])
        if not patterns:
            raise SessionError("give an event pattern, or --all")
        c.disable_events(session, patterns, channel=args.channel)
    return _disabled_events(channel, patterns)


def mi_disable_channel(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current, _split

    session = _current(args)
    if args.kernel:
        raise SessionError("the kernel channel cannot be disabled: disable its events (disable-event -k -a)")
    names = _split([args.channels])
    if not names:
        raise SessionError("give a channel name")
    with _client() as c:
        for name in names:
            c.disable_channel(session, name)
    return {"channels": Many("channel", [{"name": n, "enabled": False, "success": True} for n in names])}


def mi_add_context(args: argparse.Namespace) -> dict:
    from ust.cli.session_cmds import _current, _split
    from ust.control.session_xml import context_element
    from ust.instrument import context as ctx

    if args.list:
        raise SessionError("--mi: `add-context --list` has no machine interface (as lttng's)")
    if not args.types:
        raise SessionError("give a context type with -t TYPE (`ust add-context --list` lists them)")
    session = _current(args)
    types = _split(args.types)
    with _client() as c:
        if args.kernel:
            if args.channel:
                raise SessionError("a kernel context applies to the session's kernel channel: no --channel")
            c.kernel_add_context(session, types)
        else:
            for t in types:
                if not ctx.is_known(t):
                    raise SessionError(f"unknown context type {t!r} (`ust add-context --list` lists them)")
            c.add_context(session, types, channel=args.channel)
    contexts = []
    for t in types:
        tag, value = context_element(t, mi=True)
        contexts.append({tag: value, "symbol": t, "success": True})
    return {"contexts": Many("context", contexts)}


def _enable_event_special(args: argparse.Namespace, session: str) -> dict:
    """enable-event -k (kernel tracepoints, system calls) and --function (Python function probes)."""
    from ust.cli.session_cmds import _split

    with _client() as c:
        if args.kernel:
            patterns = ["*"] if args.all else _split([args.patterns] if args.patterns else [])
            if not patterns:
                raise SessionError("give a kernel event name (or --syscall NAME), or --all")
            rules = c.kernel_enable_events(session, patterns, syscall=args.syscall)
            kind = "SYSCALL" if args.syscall else "TRACEPOINT"
            return {"events": Many("event", [{"name": r["pattern"], "type": kind, "enabled": True, "success": True}
                                             for r in rules])}
        if args.all or args.exclude or args.loglevel or args.loglevel_only:
            raise SessionError("--function takes no --all, --exclude or log level")
        probes = c.enable_probes(session, _split([args.function]), event=args.patterns, channel=args.channel,
                                 filter=args.filter, args=not args.no_args, repr_limit=args.repr_limit)
    return {"events": Many("event", [{"name": p["target"], "type": "FUNCTION", "enabled": True,
                                      "attributes": {"function_attributes": {"symbol_name": p["target"]}},
                                      "success": True} for p in probes])}


def mi_crash(args: argparse.Namespace) -> dict:
    """`ust crash -x DIR` (lttng-crash has no MI: the elements are ust's, see docs/mi.md)."""
    from ust.cli.crash import recover

    if args.extract is None:
        raise SessionError("--mi: `ust crash` without -x prints events (as `ust view`): give -x DIR")
    report = recover(args, args.extract)
    return {"crash": {
        "path": os.path.abspath(args.extract),
        "traces": Many("trace", [{"path": t} for t in report.traces]),
        "streams": Many("stream", [{"name": st.name, "packets": st.packets, "dropped_packets": st.dropped,
                                    "dropped_events": st.events_dropped, "success": st.error is None,
                                    **({"error": st.error} if st.error else {})} for st in report.streams])}}


# command -> its <output>; `list` documents carry no <success> (as lttng's)
MI_COMMANDS = {
    "version": mi_version, "list": mi_list, "create": mi_create, "destroy": mi_destroy, "start": mi_start,
    "stop": mi_stop, "enable-channel": mi_enable_channel, "enable-event": mi_enable_event,
    "snapshot": mi_snapshot, "save": mi_save, "load": mi_load, "track": mi_track, "untrack": mi_untrack,
    "rotate": mi_rotate, "enable-rotation": mi_enable_rotation, "disable-rotation": mi_disable_rotation,
    "clear": mi_clear, "regenerate": mi_regenerate, "set-session": mi_set_session, "status": mi_status,
    "disable-event": mi_disable_event, "disable-channel": mi_disable_channel, "add-context": mi_add_context,
    "crash": mi_crash,
    "add-trigger": mi_add_trigger, "list-triggers": mi_list_triggers, "remove-trigger": mi_remove_trigger,
    "wait-trigger": mi_wait_trigger,
}
NO_SUCCESS = frozenset({"list", "version", "status", "list-triggers"})
# the command's name in the document, where lttng's differs (its status writes its list document)
DOCUMENT_NAME = {"status": "list", "list-triggers": "list-trigger"}
# The commands without a machine interface, and why (`ust --mi xml COMMAND` says so in one line).
NO_MI = {
    "view": "it prints events (as lttng's view, which has no MI either): read the trace with babeltrace2 or "
            "`ust view --json`",
    "run": "it runs a program, whose output is its own",
    "help": "it prints a manual page (as lttng's help)",
    "stats": "it is an analysis: `ust stats --json` is its machine-readable form",
    "latency": "it is an analysis: `ust latency --json` is its machine-readable form",
    "export": "it writes a file in the format asked for",
    "plot": "it draws a PNG",
}


def run(fmt: str, command: str, args: argparse.Namespace, out) -> int:
    """Run ``command`` for a script: print its document; errors also as one line on stderr."""
    import sys

    from ust.errors import UstError

    if command not in MI_COMMANDS:
        why = f": {NO_MI[command]}" if command in NO_MI else f" (it has: {', '.join(sorted(MI_COMMANDS))})"
        raise SessionError(f"--mi: `ust {command}` has no machine interface{why}")
    try:
        output = MI_COMMANDS[command](args)
    except UstError as exc:
        print(f"ust: error: {exc}", file=sys.stderr)
        # an empty <output/>, as lttng's (its schema requires the element)
        print(render(fmt, DOCUMENT_NAME.get(command, command), {}, False), file=out)
        return 2
    print(render(fmt, DOCUMENT_NAME.get(command, command), output, None if command in NO_SUCCESS else True),
          file=out)
    return 0
