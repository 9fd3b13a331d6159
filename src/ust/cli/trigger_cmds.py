"""Trigger commands of `ust`: add-trigger, list-triggers, remove-trigger, wait-trigger (lttng's syntax).

``add-trigger`` reads its options in order, as lttng's does: ``--name`` before ``--condition`` names
the trigger, after it the event rule; ``--rate-policy`` applies to the ``--action`` before it.
"""

from __future__ import annotations

import argparse
import json

from ust.errors import SessionError

ACTION_TYPES = ("notify", "start-session", "stop-session", "rotate-session", "snapshot-session")
CONDITIONS = ("event-rule-matches", "channel-buffer-usage-ge", "channel-buffer-usage-le", "session-consumed-size-ge")
RULE_OPTIONS = ("type", "name", "filter", "log_level", "exclude_name", "capture")  # event-rule-matches'
BUFFER_OPTIONS = ("session", "channel", "threshold_ratio", "threshold_size")  # the other conditions'


class _InOrder(argparse.Action):
    """Keep every option with its place: lttng's add-trigger options mean different things by position."""

    def __call__(self, parser, namespace, values, option_string=None):
        seq = list(getattr(namespace, "in_order", None) or [])
        seq.append((self.dest, values))
        namespace.in_order = seq


def add_add_trigger(p: argparse.ArgumentParser) -> None:
    p.set_defaults(in_order=None)
    for flags, kw in ((("--name",), {"metavar": "NAME", "help": "before --condition: the trigger's name (default "
                                     "triggerN); after it: the event name pattern (with * wildcards)"}),
                      (("--condition",), {"metavar": "TYPE", "help": "event-rule-matches, channel-buffer-usage-ge, "
                                          "channel-buffer-usage-le or session-consumed-size-ge"}),
                      (("--session", "-s"), {"metavar": "NAME", "help": "buffer conditions: the session"}),
                      (("--channel", "-c"), {"metavar": "NAME", "help": "buffer-usage conditions: the channel"}),
                      (("--threshold-ratio",), {"metavar": "R", "dest": "threshold_ratio",
                                                "help": "buffer usage as a fraction of a buffer's size, 0..1"}),
                      (("--threshold-size",), {"metavar": "SIZE", "dest": "threshold_size",
                                               "help": "buffer usage or consumed size in bytes (k, M, G)"}),
                      (("--type", "-t"), {"metavar": "TYPE", "help": "user (tracepoints, the default), python "
                                          "(loggers of the python domain), kernel (kernel tracepoints) or "
                                          "kernel:syscall[:entry|:exit|:entry+exit] (system calls)"}),
                      (("--filter", "-f"), {"metavar": "EXPR", "help": "filter expression (lttng's language)"}),
                      (("--log-level", "--loglevel", "-l"), {"metavar": "LEVEL", "dest": "log_level",
                                                             "help": "LEVEL.. (at least as severe), LEVEL "
                                                             "(exactly) or .. (any)"}),
                      (("--exclude-name", "-x"), {"metavar": "NAME", "dest": "exclude_name",
                                                  "help": "exclude these event names (repeatable, or comma separated)"}),
                      (("--capture",), {"metavar": "EXPR", "help": "a field (NAME, NAME[N]) or context ($ctx.NAME, "
                                        "$app.NAME) whose value each notification carries (repeatable)"}),
                      (("--action",), {"metavar": "ACTION", "nargs": "+", "help": "notify | start-session S | "
                                       "stop-session S | rotate-session S | snapshot-session S (repeatable)"}),
                      (("--rate-policy",), {"metavar": "POLICY", "dest": "rate_policy",
                                            "help": "every:N or once-after:N, for the --action before it"})):
        p.add_argument(*flags, action=_InOrder, **kw)


def parse_add_trigger(in_order: list[tuple[str, object]]) -> dict:
    """The options, in order -> the keyword arguments of ``Client.add_trigger``. One-line errors."""
    from ust.control._client import parse_rate_policy

    name, condition, actions = None, None, []
    rule: dict = {}
    for opt, value in in_order or ():
        if opt == "name" and condition is None:
            name = value
        elif opt == "condition":
            if condition is not None:
                raise SessionError("one --condition per trigger")
            if value not in CONDITIONS:
                raise SessionError(f"unknown condition {value!r} (one of {', '.join(CONDITIONS)})")
            condition = value
        elif opt == "action":
            kind, *rest = value
            if kind not in ACTION_TYPES:
                raise SessionError(f"unknown action {kind!r} (one of {', '.join(ACTION_TYPES)})")
            if (kind == "notify") != (not rest) or len(rest) > 1:
                raise SessionError(f"action {kind} " + ("takes no argument" if kind == "notify"
                                                         else "takes one session name"))
            actions.append([kind, rest[0] if rest else None, None])
        elif opt == "rate_policy":
            if not actions:
                raise SessionError("--rate-policy applies to the --action before it: none given")
            parse_rate_policy(value)
            actions[-1][2] = value
        elif condition is None:
            raise SessionError(f"--{opt.replace('_', '-')} belongs to a condition: give --condition first")
        elif actions:
            raise SessionError(f"--{opt.replace('_', '-')} after --action: the condition's options come first")
        elif opt not in (RULE_OPTIONS if condition == "event-rule-matches" else BUFFER_OPTIONS):
            raise SessionError(f"--{opt.replace('_', '-')} does not apply to condition {condition}")
        elif opt == "exclude_name":  # repeatable, as lttng's, and comma separated
            rule["exclude_name"] = rule.get("exclude_name", []) + [x for x in value.split(",") if x]
        elif opt == "capture":  # repeatable, in order: the notification's values follow it
            rule["capture"] = rule.get("capture", []) + [value]
        else:
            if opt in rule:
                raise SessionError(f"--{opt.replace('_', '-')} given twice")
            rule[opt] = value
    if condition is None:
        raise SessionError("missing --condition (event-rule-matches)")
    if not actions:
        raise SessionError("missing --action (notify, start-session S, stop-session S, rotate-session S, "
                           "snapshot-session S)")
    if condition != "event-rule-matches":
        return {"name": name, "pattern": None, "condition": _buffer_condition(condition, rule),
                "actions": [tuple(a) for a in actions]}
    kind = rule.get("type", "user")
    if kind not in ("user", "python") and not kind.startswith("kernel"):
        raise SessionError(f"event rule type {kind!r} is not supported: user, python, kernel, kernel:tracepoint, "
                           "kernel:syscall[:entry|:exit|:entry+exit] (docs/lifecycle.md)")
    kw = {"name": name, "pattern": rule.get("name", "*"), "python": kind == "python", "filter": rule.get("filter"),
          "exclusions": rule.get("exclude_name", []),
          "actions": [tuple(a) for a in actions]}
    if kind.startswith("kernel"):
        del kw["python"]
        kw["kernel"] = True
        syscall = parse_kernel_type(kind)
        if syscall is not None:
            kw["syscall"] = syscall
    if rule.get("capture"):
        kw["captures"] = rule["capture"]
    level = rule.get("log_level")
    if level is not None and level != "..":
        kw["loglevel"], kw["loglevel_only"] = (level[:-2], False) if level.endswith("..") else (level, True)
    return kw


def parse_kernel_type(kind: str) -> str | None:
    """lttng's ``--type`` of a kernel rule -> None (tracepoints) or the syscall site. SessionError
    (one line) for the kernel types ust has not (kprobe, uprobe)."""
    if kind in ("kernel", "kernel:tracepoint"):
        return None
    if kind == "kernel:syscall":
        return "entry+exit"
    if kind.startswith("kernel:syscall:") and kind[len("kernel:syscall:"):] in ("entry", "exit", "entry+exit"):
        return kind[len("kernel:syscall:"):]
    raise SessionError(f"event rule type {kind!r} is not supported: user, python, kernel, kernel:tracepoint, "
                       "kernel:syscall[:entry|:exit|:entry+exit] (no kprobe nor uprobe: this kernel's ftrace "
                       "has neither)")


def _buffer_condition(kind: str, opts: dict) -> dict:
    """The options of a buffer-usage or consumed-size condition -> ``Client.add_trigger``'s ``condition``."""
    from ust.daemon.rules import parse_size

    if "session" not in opts:
        raise SessionError(f"condition {kind} needs --session")
    cond = {"type": kind, "session": opts["session"], "channel": opts.get("channel")}
    if "threshold_ratio" in opts:
        try:
            cond["threshold_ratio"] = float(opts["threshold_ratio"])
        except ValueError:
            raise SessionError(f"bad --threshold-ratio {opts['threshold_ratio']!r}: expected a number in 0..1") from None
    if "threshold_size" in opts:
        cond["threshold_size"] = parse_size(opts["threshold_size"])
    return cond


def run_add_trigger(args: argparse.Namespace, out) -> int:
    from ust.control import Client

    with Client() as c:
        t = c.add_trigger(**parse_add_trigger(args.in_order))
    print(f"Added trigger `{t['name']}`.", file=out)
    return 0


def add_list_triggers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON document")


def describe(t: dict) -> list[str]:
    """lttng list-triggers' layout."""
    c = t["condition"]
    if c["type"] != "event-rule-matches":
        lines = [f"- name: {t['name']}", f"  owner uid: {t['owner_uid']}", f"  condition: {_condition_line(c)}",
                 f"    matches: {t['hits']}"]
        return lines + _describe_actions(t)
    if c["domain"] == "kernel":
        kind = "kernel tracepoint" if c.get("syscall") is None else f"kernel syscall ({c['syscall']})"
    else:
        kind = "user tracepoint" if c["domain"] == "ust" else "python logging"
    parts = [f"type: {kind}"]
    if c["exclusions"]:
        parts.append(f"exclusions: {', '.join(c['exclusions'])}")
    if c["filter"]:
        parts.append(f"filter: {c['filter']}")
    if c["loglevel_type"] != "all":
        parts.append(f"log level {'at least' if c['loglevel_type'] == 'range' else 'is'} {c['loglevel']}")
    lines = [f"- name: {t['name']}", f"  owner uid: {t['owner_uid']}", "  condition: event rule matches",
             f"    rule: {c['pattern']} ({', '.join(parts)})"]
    if c.get("captures"):
        lines.append("    captures:")
        lines += [f"      - {x}" for x in c["captures"]]
    lines.append(f"    matches: {t['hits']}")
    if "discarded" in t:
        lines.append(f"    discarded: {t['discarded']} (the trigger's ring was full)")
    return lines + _describe_actions(t)


def _condition_line(c: dict) -> str:
    if c["type"] == "session-consumed-size-ge":
        return f"session consumed size\n    session name: {c['session']}\n    threshold: {c['threshold_size']} bytes"
    which = "high" if c["type"] == "channel-buffer-usage-ge" else "low"
    threshold = (f"ratio {c['threshold_ratio']:g}" if c.get("threshold_ratio") is not None
                 else f"{c['threshold_size']} bytes")
    return (f"buffer usage {which}\n    session name: {c['session']}\n    channel name: {c['channel']}\n"
            f"    threshold: {threshold}")


def _describe_actions(t: dict) -> list[str]:
    lines = []
    for a in t["actions"]:
        what = "notify" if a["type"] == "notify" else f"{a['type'].replace('-', ' ')} `{a['session']}`"
        policy = "" if a["rate_policy"] == "every:1" else f", rate policy: {a['rate_policy'].replace(':', ' ')}"
        lines.append(f"  action:{what}{policy}")
        lines.append(f"    fired: {a['fired']}")
        lines.append(f"    errors: {a['errors'] or 'none'}" + (f" (last: {a['last_error']})" if a["errors"] else ""))
    return lines


def run_list_triggers(args: argparse.Namespace, out) -> int:
    from ust.control import Client

    with Client() as c:
        triggers = c.list_triggers()
    if args.json:
        print(json.dumps(triggers, indent=2), file=out)
        return 0
    for t in triggers:
        print("\n".join(describe(t)), file=out)
    return 0


def add_remove_trigger(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the trigger to remove")


def run_remove_trigger(args: argparse.Namespace, out) -> int:
    from ust.control import Client

    with Client() as c:
        c.remove_trigger(args.name)
    print(f"Removed trigger `{args.name}`.", file=out)
    return 0


def add_wait_trigger(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", metavar="NAME", nargs="*", help="the triggers to wait for (default: every one)")
    p.add_argument("-n", "--count", type=int, default=1, metavar="N",
                   help="exit after N notifications (0: never; default 1)")
    p.add_argument("-t", "--timeout", type=float, metavar="SECONDS", help="give up after SECONDS without one")
    p.add_argument("--json", action="store_true", help="one JSON object per notification")


def run_wait_trigger(args: argparse.Namespace, out, collect=None) -> int:
    """``collect``: given each notification instead of printing it (--mi)."""
    from ust.control import Client

    if args.count < 0:
        raise SessionError(f"--count must be 0 or more, got {args.count}")
    got = 0
    with Client() as c:
        names = args.names or None
        if names:
            known = {t["name"] for t in c.list_triggers()}
            missing = [n for n in names if n not in known]
            if missing:
                raise SessionError(f"no trigger named {missing[0]!r}")
        for n in c.notifications(names, timeout=args.timeout):
            if collect is not None:
                collect(n)
            elif args.json:
                print(json.dumps(n), file=out, flush=True)
            elif "missed" in n:
                print(f"Warning: {n['missed']} notifications were missed (subscriber too slow)", file=out, flush=True)
            else:
                print(describe_notification(n), file=out, flush=True)
            got += "missed" not in n
            if args.count and got >= args.count:
                return 0
    raise SessionError(f"no notification within {args.timeout:g} s" if got == 0 else
                       f"{got} of {args.count} notifications within {args.timeout:g} s")


def describe_notification(n: dict) -> str:
    """One line for a notification of wait-trigger."""
    head = f"Trigger `{n['trigger']}` fired: "
    if "consumed_size" in n:
        return head + f"session {n['session']} consumed {n['consumed_size']} bytes (match {n['hits']})"
    if "buffer_usage" in n:
        return head + (f"channel {n['channel']} of session {n['session']} at {n['buffer_usage']} of "
                       f"{n['buffer_capacity']} bytes ({n['buffer_usage_ratio']:.0%}) (match {n['hits']})")
    where = "in the kernel" if n.get("domain") == "kernel" else f"in process {n['pid']}"
    return head + f"{n['event']} {where} (match {n['hits']})" + describe_captures(n)


def describe_captures(n: dict) -> str:
    if "captures" not in n:
        return ""
    if n["captures"] is None:
        return ", captures: unavailable (too many matches at once)"
    return ", captures: " + ", ".join(f"{k} = {'unavailable' if v is None else json.dumps(v)}"
                                      for k, v in n["captures"].items())


COMMAND_TABLE = {
    "add-trigger": (add_add_trigger, run_add_trigger),
    "list-triggers": (add_list_triggers, run_list_triggers),
    "remove-trigger": (add_remove_trigger, run_remove_trigger),
    "wait-trigger": (add_wait_trigger, run_wait_trigger),
}

