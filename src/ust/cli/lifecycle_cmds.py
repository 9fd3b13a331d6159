"""Session lifecycle commands of `ust`: save, load (LTTng's session files, ``NAME.lttng``).

Thin layers over ``ust.control.saved_sessions``: parse, call, print; one line per session, one
line per thing skipped (``Warning: ...``), one line per failure (and a non-zero exit).
"""

from __future__ import annotations

import argparse
import sys

from ust.errors import SessionError


def add_save(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="SESSION", nargs="?", help="the session to save (default: every session)")
    p.add_argument("-a", "--all", action="store_true", help="save every session (the default)")
    p.add_argument("-o", "--output-path", metavar="DIR", dest="output",
                   help="directory of the session files (default: $UST_HOME/sessions, else ~/.ust/sessions)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing session files")


def _report(outcomes, verb: str, out) -> int:
    failed = 0
    for o in outcomes:
        for note in o.notes:
            print(f"Warning: {note}", file=sys.stderr)
        if o.error:
            failed += 1
            print(f"ust: error: session {o.name}: {o.error}", file=sys.stderr)
        else:
            print(f"Session {o.name} {verb} {o.path}", file=out)
    return 2 if failed else 0


def run_save(args: argparse.Namespace, out) -> int:
    from ust.control import Client
    from ust.control.saved_sessions import save

    if args.all and args.name:
        raise SessionError("give a session name or --all, not both")
    with Client() as c:
        outcomes = save(c, None if args.all or not args.name else [args.name], args.output, args.force)
    return _report(outcomes, "saved to", out)


def add_load(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="SESSION", nargs="?", help="the session to load (default: every session found)")
    p.add_argument("-a", "--all", action="store_true", help="load every session found (the default)")
    p.add_argument("-i", "--input-path", metavar="PATH", dest="input",
                   help="a session file, or a directory of them (default: $UST_HOME/sessions, else "
                        "~/.ust/sessions, then /etc/ust/sessions)")
    p.add_argument("-f", "--force", action="store_true", help="replace sessions of the same name")
    p.add_argument("--override-url", metavar="URL", help="the trace output of the loaded session "
                   "(file://PATH or an absolute path)")
    p.add_argument("--override-name", metavar="NAME", help="the name of the loaded session (one session only)")


def run_load(args: argparse.Namespace, out) -> int:
    from ust.control import Client
    from ust.control.saved_sessions import load

    if args.all and args.name:
        raise SessionError("give a session name or --all, not both")
    with Client() as c:
        outcomes = load(c, None if args.all else args.name, args.input, args.force, args.override_url,
                        args.override_name)
    return _report(outcomes, "loaded from", out)


# name -> (add_arguments, run); the help lines are in ust.cli.COMMANDS
COMMAND_TABLE = {
    "save": (add_save, run_save),
    "load": (add_load, run_load),
}


# ---------------------------------------------------------------------------
# track / untrack

_TRACKER_NAMES = {"vpid": "virtual process ID", "vuid": "virtual user ID", "vgid": "virtual group ID"}


def add_track(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--session", metavar="NAME", help="session to act on (default: the current session)")
    p.add_argument("-u", "--userspace", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-a", "--all", action="store_true", help="with --vpid/--vuid/--vgid without values: every "
                   "process (track), or none (untrack)")
    p.add_argument("-p", "--vpid", "--pid", nargs="?", const="", metavar="PID[,PID...]", dest="vpid",
                   help="process ids")
    p.add_argument("--vuid", nargs="?", const="", metavar="UID[,UID...]", help="user ids or names")
    p.add_argument("--vgid", nargs="?", const="", metavar="GID[,GID...]", help="group ids or names")


def _ids(attr: str, text: str) -> list[int]:
    import grp
    import pwd

    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if item.isdigit():
            out.append(int(item))
            continue
        try:
            if attr == "vuid":
                out.append(pwd.getpwnam(item).pw_uid)
            elif attr == "vgid":
                out.append(grp.getgrnam(item).gr_gid)
            else:
                raise KeyError(item)
        except KeyError:
            what = {"vpid": "process id", "vuid": "user", "vgid": "group"}[attr]
            raise SessionError(f"invalid {attr} value {item!r}: not a {what}") from None
    return out


def _run_tracker(args: argparse.Namespace, out, track: bool) -> int:
    from ust.cli.session_cmds import _current
    from ust.control import Client

    session = _current(args)
    given = [(attr, getattr(args, attr)) for attr in ("vpid", "vuid", "vgid") if getattr(args, attr) is not None]
    if not given:
        raise SessionError("give --vpid, --vuid or --vgid (with values, or with --all)")
    with Client() as c:
        for attr, text in given:
            ids = _ids(attr, text)
            if bool(ids) == args.all:
                raise SessionError(f"--{attr}: give values or --all, not both and not neither")
            (c.track if track else c.untrack)(session, attr, ids, all=args.all)
            name = _TRACKER_NAMES[attr]
            if args.all:
                print(f"All {name}s are tracked in session {session}" if track else
                      f"No {name} is tracked in session {session} (its inclusion set is empty)", file=out)
            for i in ids:
                verb, prep = ("Added", "to") if track else ("Removed", "from")
                print(f"{verb} {i} {prep} the {name} tracker inclusion set of session {session}", file=out)
    return 0


def run_track(args: argparse.Namespace, out) -> int:
    return _run_tracker(args, out, True)


def run_untrack(args: argparse.Namespace, out) -> int:
    return _run_tracker(args, out, False)


COMMAND_TABLE.update({
    "track": (add_track, run_track),
    "untrack": (add_track, run_untrack),
})


# ---------------------------------------------------------------------------
# rotate / enable-rotation / disable-rotation

_PERIOD_UNITS = {"us": 1, "ms": 1000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}


def parse_period(text: str) -> int:
    """lttng's PERIOD: µs, or a number with us, ms, s, m or h -> µs."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*(us|ms|s|m|h)?\s*", text or "")
    if not m:
        raise SessionError(f"invalid period {text!r}: expected a number of µs, or with us, ms, s, m or h (60s)")
    return int(m.group(1)) * _PERIOD_UNITS[m.group(2) or "us"]


def add_rotate(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="SESSION", nargs="?", help="the session (default: the current session)")
    p.add_argument("-n", "--no-wait", action="store_true", help=argparse.SUPPRESS)  # ust's rotation is immediate


def run_rotate(args: argparse.Namespace, out) -> int:
    from ust.cli.session_cmds import _current
    from ust.control import Client

    name = args.name or _current(args, "name")
    with Client() as c:
        path = c.rotate(name)
        output = c.get_session(name)["output"]
    if output.startswith("net"):  # the archive is on the relay's host: its path there, as lttng says it
        print(f"Trace chunk archive for session {name} is now readable on the relay host ({output}) at {path}",
              file=out)
    else:
        print(f"Trace chunk archive for session {name} is now readable at {path}", file=out)
    return 0


def add_enable_rotation(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--session", metavar="NAME", help="session to act on (default: the current session)")
    p.add_argument("--timer", metavar="PERIOD", help="rotate every PERIOD (µs, or 500ms, 60s, 5m, 1h)")
    p.add_argument("--size", metavar="SIZE", help="rotate when the current chunk holds SIZE bytes (64M)")


def run_enable_rotation(args: argparse.Namespace, out) -> int:
    from ust.cli.session_cmds import _current
    from ust.control import Client
    from ust.daemon.rules import parse_size

    if args.timer is None and args.size is None:
        raise SessionError("give --timer PERIOD or --size SIZE")
    session = _current(args)
    timer = parse_period(args.timer) if args.timer is not None else None
    size = parse_size(args.size) if args.size is not None else None
    with Client() as c:
        c.enable_rotation(session, timer=timer, size=size)
    if timer:
        print(f"Enabled periodic rotations every {timer} us on session {session}", file=out)
    if size:
        print(f"Enabled size-based rotations every {size} bytes written on session {session}", file=out)
    return 0


def add_disable_rotation(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--session", metavar="NAME", help="session to act on (default: the current session)")
    p.add_argument("--timer", action="store_true", help="remove the periodic schedule")
    p.add_argument("--size", action="store_true", help="remove the size schedule")


def run_disable_rotation(args: argparse.Namespace, out) -> int:
    from ust.cli.session_cmds import _current
    from ust.control import Client

    session = _current(args)
    with Client() as c:
        c.disable_rotation(session, timer=args.timer, size=args.size)
    if args.timer:
        print(f"Disabled periodic rotation on session {session}", file=out)
    if args.size:
        print(f"Disabled size-based rotation on session {session}", file=out)
    return 0


COMMAND_TABLE.update({
    "rotate": (add_rotate, run_rotate),
    "enable-rotation": (add_enable_rotation, run_enable_rotation),
    "disable-rotation": (add_disable_rotation, run_disable_rotation),
})


def add_clear(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="SESSION", nargs="?", help="the session (default: the current session)")
    p.add_argument("-a", "--all", action="store_true", help="clear every session")


def run_clear(args: argparse.Namespace, out) -> int:
    from ust.cli.session_cmds import _current
    from ust.control import Client

    with Client() as c:
        names = [s["name"] for s in c.list_sessions()] if args.all else [args.name or _current(args, "name")]
        for name in names:
            c.clear(name)
            print(f"Session {name} cleared", file=out)
    return 0


COMMAND_TABLE["clear"] = (add_clear, run_clear)


def add_regenerate(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=("metadata", "statedump"), help="metadata: re-sample the clock offset and "
                   "rewrite the metadata; statedump: every traced application writes its "
                   "python:function_info events again, the kernel trace its lttng_statedump_* events")
    p.add_argument("-s", "--session", metavar="NAME", help="session to act on (default: the current session)")


def run_regenerate(args: argparse.Namespace, out) -> int:
    from ust.cli.session_cmds import _current
    from ust.control import Client

    session = _current(args)
    with Client() as c:
        c.regenerate(session, args.what)
    what = "Metadata" if args.what == "metadata" else "State dump"
    print(f"{what} successfully regenerated for session {session}", file=out)
    return 0


COMMAND_TABLE["regenerate"] = (add_regenerate, run_regenerate)
