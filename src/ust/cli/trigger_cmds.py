"""Trigger commands of `ust`: add-trigger, list-triggers, remove-trigger, wait-trigger (lttng's syntax).

``add-trigger`` reads its options in order, as lttng's does: ``--name`` before ``--condition`` names
the trigger, after it the event rule; ``--rate-policy`` applies to the ``--action`` before it.
"""

from __future__ import annotations

import argparse
import json

from ust.errors import SessionError

ACTION_TYPES = ("notify", "start-session", "stop-session", "rotate-session", "snapshot-session")


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
                      (("--condition",), {"metavar": "TYPE", "help": "event-rule-matches"}),
                      (("--type", "-t"), {"metavar": "TYPE", "help": "user (tracepoints, the default) or python "
                                          "(loggers of the python domain)"}),
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
            if value != "event-rule-matches":
                raise SessionError(f"condition {value!r} is not supported: ust triggers have event-rule-matches "
                                   "(docs/lifecycle.md)")
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
    kind = rule.get("type", "user")
    if kind not in ("user", "python"):
        raise SessionError(f"event rule type {kind!r} is not supported: user or python (docs/lifecycle.md)")
    kw = {"name": name, "pattern": rule.get("name", "*"), "python": kind == "python", "filter": rule.get("filter"),
          "exclusions": rule.get("exclude_name", []),
          "actions": [tuple(a) for a in actions]}
    if rule.get("capture"):
        kw["captures"] = rule["capture"]
    level = rule.get("log_level")
    if level is not None and level != "..":
        kw["loglevel"], kw["loglevel_only"] = (level[:-2], False) if level.endswith("..") else (level, True)
    return kw


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
    parts = [f"type: {'user tracepoint' if c['domain'] == 'ust' else 'python logging'}"]
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


def run_wait_trigger(args: argparse.Namespace, out) -> int:
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
            if args.json:
                print(json.dumps(n), file=out, flush=True)
            elif "missed" in n:
                print(f"Warning: {n['missed']} notifications were missed (subscriber too slow)", file=out, flush=True)
            else:
                print(f"Trigger `{n['trigger']}` fired: {n['event']} in process {n['pid']} (match {n['hits']})"
                      + describe_captures(n), file=out, flush=True)
            got += "missed" not in n
            if args.count and got >= args.count:
                return 0
    raise SessionError(f"no notification within {args.timeout:g} s" if got == 0 else
                       f"{got} of {args.count} notifications within {args.timeout:g} s")


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
