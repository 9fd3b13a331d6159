"""`ust view [TRACE...] [-s SESSION]`: print the events of a trace like babeltrace2 does.

Without a path, like `lttng view`, the trace of a session: the one named with
``-s``, else the current one (`ust create` / `ust set-session`), read from its
output directory as far as the consumer has written it.
"""

from __future__ import annotations

import sys



def add_arguments(parser) -> None:
    parser.add_argument("trace", nargs="*", help="trace directory (searched recursively for CTF traces; "
                        "default: the current session's trace)")
    parser.add_argument("-s", "--session", metavar="NAME", help="view this session's trace")
    parser.add_argument("--clock-cycles", action="store_true", help="print timestamps in clock cycles")
    parser.add_argument("--clock-seconds", action="store_true", help="print timestamps as [sec.ns]")
    parser.add_argument("--clock-date", action="store_true", help="print the date with the time of day")
    parser.add_argument("--clock-gmt", action="store_true", help="print the time of day in UTC, not local time")
    parser.add_argument("--no-delta", action="store_true", help="do not print the time since the previous event")
    parser.add_argument("-n", "--names", default="payload,context", metavar="LIST",
                        help="field names to print: payload, context, scope, header, all, none "
                             "(comma-separated; default: payload,context)")
    parser.add_argument("-f", "--fields", default="trace:hostname,trace:procname,trace:vpid", metavar="LIST",
                        help="extra fields: trace, trace:hostname, trace:domain, trace:procname, trace:vpid, "
                             "loglevel, all (default: trace:hostname,trace:procname,trace:vpid)")
    parser.add_argument("--filter", metavar="EXPR", help="only events matching this LTTng filter expression")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--live", nargs="?", const="", metavar="URL",
                        help="follow a live session on a relay until it is destroyed: "
                             "net://HOST[:PORT]/host/HOSTNAME/SESSION (default: the current session on "
                             "this host, through the relay on localhost)")
    parser.add_argument("--messages", action="store_true",
                        help="markers (ust.mark) as their formatted message, like printf would have printed it")


def _session_output(name: str | None) -> str:
    """The trace directory of a session (default: the current one), as `lttng view` finds it."""
    from ust.control import Client, get_current_session
    from ust.errors import SessionError

    name = name or get_current_session()
    if not name:
        raise SessionError("no trace given and no current session: `ust view TRACE_DIR`, or create a session "
                           "with `ust create NAME`")
    with Client(autostart=False) as c:
        s = c.get_session(name)
    if s["output"].startswith(("net://", "net6://")):
        raise SessionError(f"session {name!r} is streamed to the relay at {s['output']}: follow it with "
                           "`ust view --live`, or read the relay's output directory")
    if not s["traces"]:
        raise SessionError(f"session {name!r} has recorded nothing yet (no trace in {s['output']}): "
                           "start it, and run an application")
    return s["output"]


def _binary_writer(out):
    """A write(str) that keeps undecodable trace bytes as they were."""
    buf = getattr(out, "buffer", None)
    if buf is not None:
        try:
            out.flush()
        except (OSError, ValueError):
            pass

        def write(s):
            buf.write(s.encode("utf-8", "surrogateescape"))

        def flush():
            buf.flush()
        return write, flush

    def write(s):
        out.write(s.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))

    def flush():
        try:
            out.flush()
        except (AttributeError, OSError, ValueError):
            pass
    return write, flush


def discarded_printer(fmt, err=None):
    """on_discarded callback printing babeltrace2-like warnings on stderr."""
    err = err or sys.stderr

    def show(d):
        trace = d.stream.trace
        import os

        def when(c):
            if c is None:
                return "?"
            return fmt.ns_text(trace.cycles_to_ns(c))
        uuid = ""
        if trace.uuid:
            import uuid as _u
            uuid = f" (UUID: {_u.UUID(bytes=trace.uuid)})"
        what = f"discarded {d.count} packets" if d.packets else f"discarded {d.count} events"
        sc = d.stream.stream_class_id if d.stream.stream_class_id is not None else 0
        sid = d.stream.instance_id if d.stream.instance_id is not None else 0
        err.write(f"WARNING: Tracer {what} between [{when(d.begin_cycles)}] and [{when(d.end_cycles)}] "
                  f"in trace \"{trace.name}\"{uuid} within stream \"{os.path.abspath(d.stream.path)}\" "
                  f"(stream class ID: {sc}, stream ID: {sid}).\n")
        try:
            err.flush()
        except (OSError, ValueError, AttributeError):
            pass
    return show


def run(args, out) -> int:
    """One pipeline (``ust.ctf``: packets -> decoded chunks -> merged batches), three consumers:
    text (babeltrace2's, the C renderer when no filter), JSON lines and marker messages (from
    ``Event`` records). With ``--filter`` each event is decoded once, its values matched."""
    import gc

    from ust.ctf import TextFormat, iter_events, open_traces, view_bytes

    filt = None
    if args.filter:
        from ust.filter import compile_filter
        filt = compile_filter(args.filter)
    fmt = TextFormat(names=args.names, fields=args.fields, clock_cycles=args.clock_cycles,
                     clock_seconds=args.clock_seconds, clock_date=args.clock_date, clock_gmt=args.clock_gmt,
                     delta=not args.no_delta)
    if args.live is not None:
        return _follow_live(args, fmt, filt, out)
    traces = open_traces(args.trace or [_session_output(args.session)])
    on_disc = discarded_printer(fmt)
    interactive = False
    try:
        interactive = out.isatty()
    except (AttributeError, ValueError):
        pass
    if args.json:
        chunks = _encoded(_json_lines(iter_events(traces, on_disc), filt))
    elif args.messages:
        chunks = _encoded(_message_lines(iter_events(traces, on_disc), fmt, filt))
    else:
        chunks = view_bytes(traces, fmt, on_disc, filt)
        if any('"python:function_info"' in t.metadata.text for t in traces):
            from ust.analysis.functions import resolve_text

            chunks = resolve_text(chunks)  # whole-program function ids -> names
    # the decoders make millions of short-lived tuples, all freed by reference
    # counting: the cyclic GC would only rescan them (~25% of the time)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        _pump_bytes(chunks, out, interactive)
    finally:
        if gc_was:
            gc.enable()
    return 0


def _follow_live(args, fmt, filt, out) -> int:
    """`ust view --live [URL]`: print a live session's events as they arrive (ust.relay.follow)."""
    import socket

    from ust.relay.follow import follow

    url = args.live
    if not url:
        from ust.control import get_current_session
        from ust.errors import SessionError

        name = args.session or get_current_session()
        if not name:
            raise SessionError("ust view --live: no URL and no current session (ust create NAME --live)")
        url = f"net://localhost/host/{socket.gethostname()}/{name}"
    write, flush = _binary_writer(out)
    return follow(url, fmt, write, flush, filt)


def _encoded(lines, batch=2048):
    """Lines as chunks of UTF-8 bytes (undecodable trace bytes kept: surrogateescape)."""
    chunk = []
    try:
        for line in lines:
            chunk.append(line)
            if len(chunk) >= batch:
                yield "".join(chunk).encode("utf-8", "surrogateescape")
                chunk.clear()
    except Exception:
        # a bad packet ends the lines with an error: what came before it is printed first
        if chunk:
            yield "".join(chunk).encode("utf-8", "surrogateescape")
        raise
    if chunk:
        yield "".join(chunk).encode("utf-8", "surrogateescape")


def _pump_bytes(chunks, out, interactive):
    """Write encoded chunks; the first line at once, and line by line on a terminal."""
    write, flush = _binary_writer(out)
    buf = getattr(out, "buffer", None)
    try:
        first = True
        for data in chunks:
            if not data:
                continue
            if buf is None:
                write(data.decode("utf-8", "surrogateescape"))
                continue
            if interactive:
                for line in data.splitlines(keepends=True):
                    buf.write(line)
                    buf.flush()
                continue
            if first:
                # the first line at once, whatever follows
                first = False
                nl = data.find(b"\n") + 1
                buf.write(data[:nl])
                buf.flush()
                data = data[nl:]
            buf.write(data)
    finally:
        flush()


def _json_lines(records, filt):
    import json

    from ust.analysis._common import jsonable as _jsonable

    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for ev in records:
        if filt is not None and not filt.matches(ev.fields, ev.context):
            continue
        obj = {"timestamp": ev.timestamp, "cycles": ev.cycles, "name": ev.name, "cpu_id": ev.cpu_id,
               "trace": ev.stream.trace.name, "context": _jsonable(ev.context), "fields": _jsonable(ev.fields)}
        try:
            yield dumps(obj) + "\n"
        except (ValueError, TypeError):
            yield json.dumps(obj, default=str) + "\n"


def _message_lines(events, fmt, filt):
    """One line per event: time, delta, name, then a marker's message or the payload."""
    from ust.ctf import format_struct

    prev = None
    for ev in events:
        if filt is not None and not filt.matches(ev.fields, ev.context):
            continue
        head = f"[{fmt.ns_text(ev.timestamp)}] "
        if fmt.delta:
            head += fmt.delta_text(prev, ev.timestamp) + " "
        prev = ev.timestamp
        msg = ev.message
        if msg is None:
            cls = ev.event_class.fields
            msg = format_struct(cls, ev.fields) if cls is not None else "{ }"
        yield f"{head}{ev.name}: {msg}\n"
