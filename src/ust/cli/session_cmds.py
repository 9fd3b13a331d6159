"""Session commands of `ust`: create, destroy, list, status, set-session,
enable-channel, enable-event, disable-event, add-context, start, stop, snapshot.

Each is a thin layer over ``ust.control.Client``: parse, call, print.
"""

from __future__ import annotations

import argparse
import os

from ust.control import Client, get_current_session, set_current_session
from ust.defaults import DEFAULT_NUM_SUBBUF, DEFAULT_SUBBUF_SIZE
from ust.errors import SessionError


def _client() -> Client:
    return Client()


def _session_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--session", metavar="NAME", help="session to act on (default: the current session)")


def _domain_args(p: argparse.ArgumentParser, python: bool = False) -> None:
    # lttng's domain flags, accepted so muscle memory works: ust's tracepoints
    # are the user-space domain; enable-event also has LTTng's python domain;
    # -k is the kernel's (ftrace: docs/kernel.md).
    p.add_argument("-k", "--kernel", action="store_true",
                   help="the kernel domain (root): kernel tracepoints and system calls, through ftrace")
    if python:
        p.add_argument("-u", "--userspace", action="store_true", help=argparse.SUPPRESS)
        p.add_argument("-p", "--python", action="store_true",
                       help="LTTng's python domain: the names are loggers (`*` wildcards), the levels are "
                            "Python's (CRITICAL, ERROR, WARNING, INFO, DEBUG or a number)")
    else:
        p.add_argument("-u", "--userspace", "-p", "--python", action="store_true", help=argparse.SUPPRESS)


def _current(args: argparse.Namespace, attr: str = "session") -> str:
    name = getattr(args, attr, None) or get_current_session()
    if not name:
        raise SessionError("no session given and no current session: create one with `ust create NAME`")
    return name


def _size(text: str | None) -> int | None:
    from ust.daemon.rules import parse_size

    return None if text is None else parse_size(text)  # errors: one line, from main()


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _fmt_size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------------------
# create / destroy / set-session


def add_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", nargs="?", help="session name (default: auto-YYYYmmdd-HHMMSS)")
    p.add_argument("-o", "--output", metavar="DIR", help="trace directory (default: ~/ust-traces/NAME-DATE)")
    p.add_argument("--snapshot", action="store_true", help="flight-recorder session: overwrite channels, "
                   "written by `ust snapshot record` only")
    p.add_argument("--no-output", action="store_true", help="with --snapshot: no snapshot output yet "
                   "(`ust snapshot add-output` or `snapshot record URL` say where)")
    # streaming to ust-relayd (docs/relay.md)
    p.add_argument("-U", "--set-url", metavar="URL", help="stream to a relay: net://HOST[:CTRL_PORT[:DATA_PORT]]")
    p.add_argument("-C", "--ctrl-url", metavar="URL", help="the relay's control port, tcp://HOST:PORT (with -D)")
    p.add_argument("-D", "--data-url", metavar="URL", help="the relay's data port, tcp://HOST:PORT (with -C)")
    p.add_argument("--live", nargs="?", const=100000, type=int, metavar="DELAY_US",
                   help="live session: idle packets flushed every DELAY_US µs (default 100000) so that "
                        "viewers (babeltrace2, ust view --live) see events within that delay; streams to "
                        "the relay on localhost unless -U/-C/-D say where")
    p.add_argument("--shm-path", metavar="DIR", help="ring buffers in files under DIR (in NAME-DATE) instead of "
                   "anonymous shared memory: they outlive a crash of every process, and `ust crash DIR` "
                   "recovers their events")


def _relay_url(args) -> str | None:
    """The net:// URL of -U, or of -C and -D together."""
    from ust.errors import SessionError

    if args.ctrl_url is None and args.data_url is None:
        return args.set_url
    if args.set_url or args.ctrl_url is None or args.data_url is None:
        raise SessionError("give -U URL, or -C URL and -D URL together")
    import re

    parts = []
    for url in (args.ctrl_url, args.data_url):
        m = re.fullmatch(r"tcp6?://(\[[^\]]+\]|[^:/\[\]]+):(\d+)/?", url)
        if not m:
            raise SessionError(f"invalid relay URL {url!r}: expected tcp://HOST:PORT")
        parts.append((m.group(1), m.group(2)))
    if parts[0][0] != parts[1][0]:
        raise SessionError("the control and data URLs must name the same relay host")
    return f"net://{parts[0][0]}:{parts[0][1]}:{parts[1][1]}"


def session_shm_path(args: argparse.Namespace, name: str) -> str | None:
    """``--shm-path DIR``: the session's own directory in it, DIR/NAME-DATE (as lttng's create)."""
    from ust.ctf.writer import time_stamp

    if args.shm_path is None:
        return None
    return os.path.join(os.path.abspath(os.path.expanduser(args.shm_path)), f"{name}-{time_stamp()}")


def run_create(args: argparse.Namespace, out) -> int:
    from ust.ctf.writer import time_stamp

    name = args.name or "auto-" + time_stamp()
    url = _relay_url(args)
    with _client() as c:
        s = c.create_session(name, output=args.output, snapshot=args.snapshot, no_output=args.no_output,
                             url=url, live_timer=args.live, shm_path=session_shm_path(args, name))
    set_current_session(name)
    kind = "Snapshot session" if s["snapshot"] else "Live session" if s.get("live_timer") else "Session"
    print(f"{kind} {name} created.", file=out)
    if url or args.live:
        print(f"Traces will be streamed to {s['output']}", file=out)
    elif not args.no_output:
        print(f"Traces will be written in {s['output']}", file=out)
    if s.get("shm_path"):
        print(f"Shared memory path set to {s['shm_path']}", file=out)
    return 0


def add_destroy(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", nargs="?", help="session to destroy (default: the current session)")
    p.add_argument("-a", "--all", action="store_true", help="destroy every session")


def run_destroy(args: argparse.Namespace, out) -> int:
    with _client() as c:
        if args.all:
            names = [s["name"] for s in c.list_sessions()]
        else:
            names = [args.name or _current(args, "name")]
        for name in names:
            s = c.destroy_session(name)
            print(f"Session {name} destroyed.", file=out)
            if s["traces"]:
                print(f"Trace written in {s['output']}", file=out)
            if get_current_session() == name:
                set_current_session(None)
    return 0


def add_set_session(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the session later commands act on")


def run_set_session(args: argparse.Namespace, out) -> int:
    with _client() as c:
        c.get_session(args.name)  # must exist
    set_current_session(args.name)
    print(f"Session set to {args.name}", file=out)
    return 0


# ---------------------------------------------------------------------------
# list / status


def _print_lost(s: dict, out) -> None:
    """The session's discarded events, by cause (``lost`` counts them all)."""
    full = s.get("lost", 0) - s.get("lost_args", 0)
    if full:
        print(f"Warning: {full} events were discarded (buffers full): use larger or more sub-buffers "
              "(enable-channel --subbuf-size/--num-subbuf)", file=out)
    if s.get("lost_args"):
        print(f"Warning: {s['lost_args']} events were discarded: their arguments did not fit the tracepoint's "
              "fields (the application was warned once per tracepoint; UST_STRICT=1 makes it raise)", file=out)
    if s.get("overwritten"):
        print(f"Warning: {s['overwritten']} packets were overwritten before they were read (overwrite mode)",
              file=out)
    k = s.get("kernel") or {}
    if k.get("lost") and not k.get("overwrite"):
        print(f"Warning: {k['lost']} kernel events were discarded (the kernel's ring was full): use a larger "
              "kernel channel (enable-channel -k --subbuf-size/--num-subbuf)", file=out)


def _print_session(s: dict, out, current: str | None, mem_usage: bool = False) -> None:
    from ust.instrument.loglevels import name_of as loglevel_name

    state = "active" if s["active"] else "inactive"
    mark = " (current)" if s["name"] == current else ""
    snap = " [snapshot]" if s["snapshot"] else ""
    print(f"Tracing session {s['name']}{mark}: [{state}]{snap}", file=out)
    print(f"    Trace output: {s['output']}", file=out)
    if s.get("shm_path"):
        print(f"    Shared memory path: {s['shm_path']} (`ust crash` recovers it after a crash)", file=out)
    print(f"    Buffers: per-{s['buffers']}", file=out)
    for attr, ids in sorted(s.get("trackers", {}).items()):  # absent: every process (not shown, as lttng)
        print(f"    Tracked {attr}s: {', '.join(map(str, ids)) if ids else 'none'}", file=out)
    _print_lost(s, out)
    if not s["channels"]:
        print("\n    No channel.", file=out)
    for ch in s["channels"]:
        mode = "overwrite" if ch["overwrite"] else "discard"
        en = "enabled" if ch["enabled"] else "disabled"
        print(f"\n    - {ch['name']}: [{en}]", file=out)
        print(f"        sub-buffers: {ch['num_subbuf']} x {_fmt_size(ch['subbuf_size'])}, {mode} mode", file=out)
        timers = f"switch timer {ch['switch_timer']} us, read timer {ch['read_timer']} us"
        print(f"        {timers}", file=out)
        if ch["tracefile_size"]:
            count = ch["tracefile_count"] or "unlimited"
            print(f"        trace files: {_fmt_size(ch['tracefile_size'])} each, {count} kept", file=out)
        if ch["context"]:
            print(f"        context: {', '.join(ch['context'])}", file=out)
        if mem_usage:
            m = s.get("memory", {}).get(ch["name"], {"bytes": 0, "buffers": 0})
            print(f"        memory: {_fmt_size(m['bytes'])} in {m['buffers']} ring buffer"
                  f"{'s' if m['buffers'] != 1 else ''} (each {ch['num_subbuf']} x {_fmt_size(ch['subbuf_size'])})",
                  file=out)
        rules = [r for r in s["rules"] if r["channel"] == ch["name"]]
        print("        Event rules:" if rules else "        No event rule.", file=out)
        for r in rules:
            extra = []
            if r["exclusions"]:
                extra.append("excluding " + ", ".join(r["exclusions"]))
            if r.get("domain") == "python":
                extra.append("python logger")
                if r["loglevel_type"] != "all":
                    extra.append(_python_levels(r))
            elif r["loglevel_type"] == "range":
                extra.append(f"loglevel <= {loglevel_name(r['loglevel'])}")
            elif r["loglevel_type"] == "single":
                extra.append(f"loglevel == {loglevel_name(r['loglevel'])}")
            if r["filter"]:
                extra.append(f"filter: {r['filter']}")
            en = "enabled" if r["enabled"] else "disabled"
            tail = f" ({'; '.join(extra)})" if extra else ""
            print(f"          {r['pattern']} [{en}]{tail}", file=out)
    k = s.get("kernel")
    if k:
        mode = "overwrite" if k["overwrite"] else "discard"
        inst = f", ftrace instance {k['instance']}" if k.get("instance") else ""
        print(f"\n    - kernel: {k['buffer_size_kb']} KiB per CPU, {mode} mode{inst}", file=out)
        if k["contexts"]:
            print(f"        context: {', '.join(k['contexts'])}", file=out)
        print("        Event rules:" if k["rules"] else "        No event rule.", file=out)
        for r in k["rules"]:
            en = "enabled" if r["enabled"] else "disabled"
            print(f"          {r['pattern']}{' (system call)' if r['syscall'] else ''} [{en}]", file=out)


def add_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", nargs="?", help="show this session's channels and event rules")
    p.add_argument("--apps", action="store_true", help="list the running applications and their tracepoints "
                   "(also -u, as lttng's `list -u`)")
    p.add_argument("--mem-usage", action="store_true", help="with a session: the shared memory each channel's "
                   "ring buffers take")
    _domain_args(p)


def run_list(args: argparse.Namespace, out) -> int:
    if args.kernel and not args.name:
        with _client() as c:
            avail = c.kernel_list()
        print("Kernel events:", file=out)
        for name in avail["events"]:
            print(f"      {name} (type: tracepoint)", file=out)
        print("\nKernel system calls (enable-event -k --syscall NAME):", file=out)
        for name in avail["syscalls"]:
            print(f"      {name}", file=out)
        return 0
    with _client() as c:
        if args.apps or (args.userspace and not args.name):  # `lttng list -u`: the applications' events
            from ust.instrument.loglevels import name_of as loglevel_name

            apps = c.list_apps()
            if not apps:
                print("No application registered.", file=out)
            for a in apps:
                cmd = f": {a['cmdline']}" if a.get("cmdline") else ""
                print(f"PID {a['pid']}: {a['procname']} (uid {a['uid']}){cmd}", file=out)
                for tp in a["tracepoints"]:
                    print(f"    {tp['name']} (loglevel: {loglevel_name(tp['loglevel'])}) ({tp['kind']})", file=out)
                for pr in a.get("probes", ()):
                    print(f"    probe {pr['target']}: {pr['state']}" + (f" ({pr['detail']})" if pr["detail"] else ""),
                          file=out)
            return 0
        current = get_current_session()
        if args.name:
            _print_session(c.get_session(args.name), out, current, args.mem_usage)
            return 0
        sessions = c.list_sessions()
        if not sessions:
            print("No session. Create one with `ust create NAME`.", file=out)
            return 0
        print("Available tracing sessions:", file=out)
        for i, s in enumerate(sessions, 1):
            state = "active" if s["active"] else "inactive"
            mark = " (current)" if s["name"] == current else ""
            snap = " [snapshot]" if s["snapshot"] else ""
            print(f"  {i}) {s['name']} ({s['output']}) [{state}]{snap}{mark}", file=out)
        print("\nUse `ust list NAME` for a session's channels and event rules.", file=out)
    return 0


def add_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mem-usage", action="store_true", help="the shared memory each channel's ring buffers take")


def run_status(args: argparse.Namespace, out) -> int:
    name = get_current_session()
    if not name:
        raise SessionError("no current session: create one with `ust create NAME` or choose one with `ust set-session`")
    with _client() as c:
        _print_session(c.get_session(name), out, name, args.mem_usage)
    return 0


# ---------------------------------------------------------------------------
# channels, events, contexts


def add_enable_channel(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="channel name")
    _session_arg(p)
    _domain_args(p)
    p.add_argument("--subbuf-size", metavar="SIZE",
                   help=f"sub-buffer size, a power of two (4k, 256k, 1M; default {DEFAULT_SUBBUF_SIZE // 1024}k)")
    p.add_argument("--num-subbuf", type=int, metavar="N",
                   help=f"number of sub-buffers, a power of two (default {DEFAULT_NUM_SUBBUF})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_const", const=True, dest="overwrite",
                      help="flight recorder: overwrite the oldest data when full")
    mode.add_argument("--discard", action="store_const", const=False, dest="overwrite",
                      help="drop new events when full (the default)")
    buf = p.add_mutually_exclusive_group()
    buf.add_argument("--buffers-uid", action="store_const", const="uid", dest="buffers",
                     help="one set of buffers per user, shared by its processes (the default)")
    buf.add_argument("--buffers-pid", action="store_const", const="pid", dest="buffers",
                     help="one set of buffers per process")
    p.add_argument("--switch-timer", type=int, metavar="USEC", help="flush partial packets every USEC µs")
    p.add_argument("--read-timer", type=int, metavar="USEC", help="poll the buffers every USEC µs")
    p.add_argument("--monitor-timer", type=int, metavar="USEC", help="sample the buffers' usage every USEC µs "
                   "for buffer-usage triggers (default 1000000; 0: never)")
    p.add_argument("--tracefile-size", metavar="SIZE", help="rotate stream files at SIZE bytes")
    p.add_argument("--tracefile-count", type=int, metavar="N", help="keep at most N files per stream")


def run_enable_channel(args: argparse.Namespace, out) -> int:
    session = _current(args)
    if args.kernel:
        if (args.buffers or args.switch_timer or args.read_timer or args.tracefile_size or args.tracefile_count
                or args.monitor_timer is not None):
            raise SessionError("a kernel channel takes only --subbuf-size, --num-subbuf, --overwrite/--discard")
        size = None
        if args.subbuf_size is not None or args.num_subbuf is not None:
            size = (_size(args.subbuf_size) or DEFAULT_SUBBUF_SIZE) * (args.num_subbuf or DEFAULT_NUM_SUBBUF)
        with _client() as c:
            k = c.kernel_enable_channel(session, buffer_size=size, overwrite=args.overwrite)
        mode = "overwrite" if k["overwrite"] else "discard"
        print(f"Kernel channel {args.name} enabled in session {session} ({k['buffer_size_kb']} KiB per CPU, "
              f"{mode})", file=out)
        return 0
    with _client() as c:
        c.enable_channel(session, args.name, subbuf_size=_size(args.subbuf_size), num_subbuf=args.num_subbuf,
                         overwrite=args.overwrite, buffers=args.buffers, switch_timer=args.switch_timer,
                         read_timer=args.read_timer, tracefile_size=_size(args.tracefile_size),
                         tracefile_count=args.tracefile_count, monitor_timer=args.monitor_timer)
    print(f"Channel {args.name} enabled in session {session}", file=out)
    return 0


def add_enable_event(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", metavar="PATTERN[,PATTERN...]", nargs="?",
                   help="event names; `*` matches anything (app:*, *request*); loggers with --python")
    _session_arg(p)
    _domain_args(p, python=True)
    p.add_argument("-c", "--channel", metavar="NAME", help="channel (default: channel0, created if needed)")
    p.add_argument("-a", "--all", action="store_true", help="every event (the pattern `*`)")
    p.add_argument("-x", "--exclude", action="append", metavar="NAME[,NAME...]",
                   help="names (with `*`) not to enable, with a wildcard pattern")
    p.add_argument("-f", "--filter", metavar="EXPR", help="record only events for which EXPR is true "
                   "(LTTng's filter language: 'size > 100 && name == \"x*\"')")
    lvl = p.add_mutually_exclusive_group()
    lvl.add_argument("--loglevel", metavar="LEVEL", help="events at least as severe as LEVEL (TRACE_WARNING, ERROR...)")
    lvl.add_argument("--loglevel-only", metavar="LEVEL", help="events of exactly LEVEL")
    _probe_args(p)
    p.add_argument("--syscall", action="store_true",
                   help="with -k: the names are system calls (openat, read, `*`; -a: all of them), recorded as "
                        "syscall_entry_NAME / syscall_exit_NAME")


def _probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--function", metavar="MODULE:QUALNAME[,...]",
                   help="probe Python functions: MODULE:QUALNAME_entry/_return events on each call (`*` wildcards "
                        "in the qualname; '*' alone: every call, as python:function_entry/return); PATTERN is "
                        "then the event name to use instead")
    p.add_argument("--no-args", action="store_true", help="with --function: record no argument values")
    p.add_argument("--repr-limit", type=int, metavar="N", help="with --function: cut repr() of values to N characters")


def _run_enable_probe(args: argparse.Namespace, session: str, out) -> int:
    if args.all or args.exclude or args.loglevel or args.loglevel_only:
        raise SessionError("--function takes no --all, --exclude or log level")
    functions = _split([args.function])
    with _client() as c:
        probes = c.enable_probes(session, functions, event=args.patterns, channel=args.channel, filter=args.filter,
                                 args=not args.no_args, repr_limit=args.repr_limit)
    for p in probes:
        extra = f" (filter: {p['filter']})" if p["filter"] else ""
        print(f"Function probe {p['target']} enabled in channel {p['channel']}: events {', '.join(p['events'])}"
              f"{extra}", file=out)
    return 0


def _run_kernel_event(args: argparse.Namespace, session: str, out, enable: bool) -> int:
    if getattr(args, "function", None) is not None or args.channel or getattr(args, "exclude", None) \
            or getattr(args, "filter", None) or getattr(args, "loglevel", None) \
            or getattr(args, "loglevel_only", None):
        raise SessionError("a kernel event rule takes no --function, --channel, --exclude, --filter or log level")
    patterns = ["*"] if args.all else _split([args.patterns] if args.patterns else [])
    if not patterns:
        raise SessionError("give a kernel event name (or --syscall NAME), or --all")
    kind = "System call" if args.syscall else "Kernel event"
    with _client() as c:
        if not enable:
            n = c.kernel_disable_events(session, patterns, syscall=args.syscall)
            print(f"{n} kernel event rule{'s' if n != 1 else ''} disabled in session {session}", file=out)
            return 0
        rules = c.kernel_enable_events(session, patterns, syscall=args.syscall)
    for r in rules:
        print(f"{kind} {r['pattern']} enabled in session {session}", file=out)
    return 0


def enable_event_rules(args: argparse.Namespace, session: str) -> list[dict]:
    """The event rules of `ust enable-event PATTERNS|--all` (and its --mi form), enabled: what the daemon answers."""
    patterns = ["*"] if args.all else _split([args.patterns] if args.patterns else [])
    if not patterns:
        raise SessionError("give an event pattern, or --all")
    level = args.loglevel if args.loglevel is not None else args.loglevel_only
    with _client() as c:
        return c.enable_events(session, patterns, channel=args.channel, exclusions=_split(args.exclude),
                               filter=args.filter, loglevel=level, loglevel_only=args.loglevel_only is not None,
                               python=args.python)


def run_enable_event(args: argparse.Namespace, out) -> int:
    session = _current(args)
    if args.kernel:
        return _run_kernel_event(args, session, out, enable=True)
    if args.syscall:
        raise SessionError("--syscall goes with -k (the kernel domain)")
    if args.function is not None:
        return _run_enable_probe(args, session, out)
    if args.no_args or args.repr_limit is not None:
        raise SessionError("--no-args and --repr-limit go with --function")
    rules = enable_event_rules(args, session)
    for r in rules:
        if r.get("domain") == "python":
            levels = f" ({_python_levels(r)})" if r["loglevel_type"] != "all" else ""
            print(f"Python logger {r['pattern']} enabled in channel {r['channel']}{levels}", file=out)
            continue
        extra = f" (filter: {r['filter']})" if r["filter"] else ""
        if r["exclusions"]:
            extra += f" (excluding {', '.join(r['exclusions'])})"
        print(f"Event {r['pattern']} enabled in channel {r['channel']}{extra}", file=out)
    return 0


def _python_levels(rule: dict) -> str:
    """A python rule's levels: Python's, higher is more severe."""
    from ust.daemon.rules import python_loglevel_name

    op = ">=" if rule["loglevel_type"] == "range" else "=="
    return f"level {op} {python_loglevel_name(rule['loglevel'])}"


def add_disable_event(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", metavar="PATTERN[,PATTERN...]", nargs="?", help="patterns given to enable-event")
    _session_arg(p)
    _domain_args(p)
    p.add_argument("-c", "--channel", metavar="NAME", help="channel (default: channel0)")
    p.add_argument("-a", "--all", action="store_true", help="every event rule of the channel")
    p.add_argument("--function", metavar="MODULE:QUALNAME[,...]",
                   help="remove these function probes (PATTERN: only the one with that event name)")
    p.add_argument("--syscall", action="store_true", help="with -k: the names are system calls")


def run_disable_event(args: argparse.Namespace, out) -> int:
    session = _current(args)
    if args.kernel:
        return _run_kernel_event(args, session, out, enable=False)
    if args.function is not None:
        with _client() as c:
            n = c.disable_probes(session, _split([args.function]), channel=args.channel, event=args.patterns)
        print(f"{n} function probe{'s' if n != 1 else ''} removed from session {session}", file=out)
        return 0
    patterns = ["*"] if args.all else _split([args.patterns] if args.patterns else [])
    if not patterns:
        raise SessionError("give an event pattern, or --all")
    with _client() as c:
        n = c.disable_events(session, patterns, channel=args.channel)
    print(f"{n} event rule{'s' if n != 1 else ''} disabled in session {session}", file=out)
    return 0


def add_disable_channel(p: argparse.ArgumentParser) -> None:
    p.add_argument("channels", metavar="NAME[,NAME...]", help="channels to disable")
    _session_arg(p)
    _domain_args(p)


def run_disable_channel(args: argparse.Namespace, out) -> int:
    session = _current(args)
    if args.kernel:
        raise SessionError("the kernel channel cannot be disabled: disable its events (disable-event -k -a)")
    names = _split([args.channels])
    if not names:
        raise SessionError("give a channel name")
    with _client() as c:
        for name in names:
            c.disable_channel(session, name)
    for name in names:
        print(f"Channel {name} disabled in session {session}", file=out)
    return 0


def add_add_context(p: argparse.ArgumentParser) -> None:
    _session_arg(p)
    _domain_args(p)
    p.add_argument("-c", "--channel", metavar="NAME", help="channel (default: every channel)")
    p.add_argument("-t", "--type", action="append", metavar="TYPE", dest="types",
                   help="context field: vpid, vtid, procname, perf:thread:page-fault, contextvar:NAME... "
                        "(with -k: tid, pid, procname, prio) "
                        "(--list shows them all)")
    p.add_argument("-l", "--list", action="store_true", help="list the available context types and exit")


def run_add_context(args: argparse.Namespace, out) -> int:
    from ust.instrument import context as ctx

    if args.list:
        for name, about in ctx.describe():
            print(f"{name:<36} {about}", file=out)
        return 0
    if not args.types:
        raise SessionError("give a context type with -t TYPE (`ust add-context --list` lists them)")
    session = _current(args)
    types = _split(args.types)
    if args.kernel:
        if args.channel:
            raise SessionError("a kernel context applies to the session's kernel channel: no --channel")
        with _client() as c:
            got = c.kernel_add_context(session, types)
        print(f"Kernel context {', '.join(types)} added to session {session} (kernel contexts: {', '.join(got)})",
              file=out)
        return 0
    for t in types:
        if not ctx.is_known(t):
            raise SessionError(f"unknown context type {t!r} (`ust add-context --list` lists them)")
    with _client() as c:
        chans = c.add_context(session, types, channel=args.channel)
    print(f"Context {', '.join(types)} added to channel{'s' if len(chans) != 1 else ''} {', '.join(chans)}",
          file=out)
    return 0


# ---------------------------------------------------------------------------
# start / stop / snapshot


def add_start_stop(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", nargs="?", help="session (default: the current session)")


def run_start(args: argparse.Namespace, out) -> int:
    name = args.name or _current(args, "name")
    with _client() as c:
        c.start(name)
    print(f"Tracing started for session {name}", file=out)
    return 0


def run_stop(args: argparse.Namespace, out) -> int:
    name = args.name or _current(args, "name")
    with _client() as c:
        s = c.stop(name)
    print(f"Tracing stopped for session {name}", file=out)
    _print_lost(s, out)
    if s.get("archive"):
        print(f"Trace chunk archive for session {name} is now readable at {s['archive']}", file=out)
    elif not s["snapshot"]:
        print(f"Trace written in {s['output']}", file=out)
    return 0


def add_snapshot(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    rec = sub.add_parser("record", help="write the current contents of the buffers",
                         description="write the current contents of a snapshot session's buffers "
                                     "without stopping it, to OUTPUT/NAME-YYYYmmdd-HHMMSS-N")
    _session_arg(rec)
    rec.add_argument("url", metavar="URL", nargs="?", help="where, this time (a path, file://PATH or a relay's "
                     "net://HOST[:CTRL[:DATA]]; default: the session's snapshot output)")
    rec.add_argument("-o", "--output", metavar="DIR", help=argparse.SUPPRESS)  # ust's older spelling of URL
    rec.add_argument("-n", "--name", metavar="NAME", help="name of the snapshot (default: the output's)")
    rec.add_argument("-m", "--max-size", metavar="SIZE", help=argparse.SUPPRESS)
    add = sub.add_parser("add-output", help="set the snapshot output (after del-output)",
                         description="set a snapshot session's output: where `snapshot record` writes")
    _session_arg(add)
    add.add_argument("url", metavar="URL", help="a path, file://PATH or net://HOST[:CTRL[:DATA]]")
    add.add_argument("-n", "--name", metavar="NAME", help="name of the output (default: snapshot-1)")
    add.add_argument("-m", "--max-size", metavar="SIZE", help=argparse.SUPPRESS)
    lst = sub.add_parser("list-output", help="show the snapshot output", description="show a snapshot "
                         "session's output")
    _session_arg(lst)
    rm = sub.add_parser("del-output", help="remove the snapshot output", description="remove a snapshot "
                        "session's output, by id or name")
    _session_arg(rm)
    rm.add_argument("output", metavar="ID|NAME", help="the output's id (1) or name")


def run_snapshot(args: argparse.Namespace, out) -> int:
    action = getattr(args, "action", None)
    if action is None:
        raise SessionError("expected `ust snapshot record|add-output|list-output|del-output`")
    session = _current(args)
    with _client() as c:
        if action == "record":
            if args.url and args.output:
                raise SessionError("give the destination once (URL or -o)")
            path = c.snapshot_record(session, output=args.url or args.output, name=args.name,
                                     max_size=args.max_size)
            print(f"Snapshot recorded in {path}", file=out)
        elif action == "add-output":
            o = c.snapshot_add_output(session, args.url, name=args.name, max_size=args.max_size)
            print(f"Snapshot output successfully added for session {session}", file=out)
            print(f"  [{o['id']}] {o['name']}: {o['path']} (max size: {o['max_size']} bytes)", file=out)
        elif action == "list-output":
            outputs = c.snapshot_list_output(session)
            print(f"Snapshot output list for session {session}", file=out)
            for o in outputs:
                print(f"  [{o['id']}] {o['name']}: {o['path']} (max size: {o['max_size']} bytes)", file=out)
            if not outputs:
                print("  None", file=out)
        else:
            o = c.snapshot_del_output(session, args.output)
            print(f"Snapshot output id {o['id']} successfully deleted for session {session}", file=out)
    return 0


# name -> (add_arguments, run); the help lines are in ust.cli.COMMANDS
COMMAND_TABLE = {
    "create": (add_create, run_create),
    "destroy": (add_destroy, run_destroy),
    "list": (add_list, run_list),
    "status": (add_status, run_status),
    "set-session": (add_set_session, run_set_session),
    "enable-channel": (add_enable_channel, run_enable_channel),
    "enable-event": (add_enable_event, run_enable_event),
    "disable-event": (add_disable_event, run_disable_event),
    "disable-channel": (add_disable_channel, run_disable_channel),
    "add-context": (add_add_context, run_add_context),
    "start": (add_start_stop, run_start),
    "stop": (add_start_stop, run_stop),
    "snapshot": (add_snapshot, run_snapshot),
}
