"""`ust run [-e PATTERN]... [-o DIR] [--] CMD ARGS...`: trace one program, strace-style.

Creates a session that records only this program and its descendants (they
inherit ``UST_RUN_TOKEN``), starts it, runs the program with its agent in
synchronous mode (``UST_AGENT_SYNC=1``: tracing is on from the first line;
a ``sitecustomize`` put first on ``PYTHONPATH`` imports ``ust`` into every
Python process started, so even programs that never import it register, and
``--logging`` records their ``logging`` records),
stops and destroys the session when the program exits, then prints where the
trace is and how many events of each kind it holds. Exits with the program's
status.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import signal
import subprocess
import sys
import uuid

from ust.control import Client
from ust.ctf.writer import new_trace_dir
from ust.errors import SessionError

HELP = "trace a program (and its children) from its first line to its exit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--event", action="append", metavar="PATTERN",
                   help="events to record (repeatable, `*` wildcards; default: every event)")
    p.add_argument("-o", "--output", metavar="DIR", help="trace directory (default: ./ust-trace-PROG-DATE)")
    p.add_argument("-f", "--filter", metavar="EXPR", help="record only the events for which EXPR is true")
    p.add_argument("--loglevel", metavar="LEVEL", help="events at least as severe as LEVEL")
    p.add_argument("-t", "--context", action="append", metavar="TYPE", help="context fields to add (vpid, vtid...)")
    p.add_argument("--buffers-pid", action="store_true", help="one trace directory per process")
    p.add_argument("--subbuf-size", metavar="SIZE", help="sub-buffer size (default 128k)")
    p.add_argument("--num-subbuf", type=int, metavar="N", help="number of sub-buffers (default 4)")
    p.add_argument("-l", "--logging", action="store_true",
                   help="record the program's `logging` records (lttng_python:event), no code change needed")
    p.add_argument("--no-inject", action="store_true",
                   help="do not import ust into Python programs that do not import it themselves")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but the program's output")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD ARGS...", help="the program to run")


def _summary(path: str) -> tuple[int, collections.Counter, int] | None:
    """(events, count per name, discarded events), read with ust's own reader; None if unreadable."""
    try:
        from ust.ctf.reader import read_trace
    except ImportError:
        return None
    counts: collections.Counter = collections.Counter()
    lost = [0]

    def on_discarded(d) -> None:
        if not getattr(d, "packets", False):
            lost[0] += d.count

    try:
        for ev in read_trace(path, on_discarded):
            counts[ev.name] += 1
    except Exception:  # the summary is a courtesy: never fail the run over it
        return None
    return sum(counts.values()), counts, lost[0]


def run(args: argparse.Namespace, out) -> int:
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SessionError("no program to run: `ust run [-e PATTERN] [--] CMD ARGS...`")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    prog = os.path.basename(cmd[0]) or "prog"
    if prog.startswith("python") and len(cmd) > 1 and not cmd[1].startswith("-"):
        prog = os.path.basename(cmd[1])
    # The default name is predictable: create it here, so it is ours (another
    # user may have made that name first in a shared directory: take the next).
    output = os.path.abspath(args.output) if args.output else new_trace_dir(f"ust-trace-{prog}-{stamp}")
    token = uuid.uuid4().hex
    name = f"run-{prog}-{os.getpid()}-{stamp}"
    with Client() as c:
        c.create_session(name, output=output, token=token)
        try:
            if args.buffers_pid or args.subbuf_size or args.num_subbuf:
                c.enable_channel(name, "channel0", buffers="pid" if args.buffers_pid else None,
                                 subbuf_size=args.subbuf_size, num_subbuf=args.num_subbuf)
            if args.context:
                c.add_context(name, [t for v in args.context for t in v.split(",") if t])
            c.enable_events(name, [p for e in (args.event or ["*"]) for p in e.split(",") if p],
                            filter=args.filter, loglevel=args.loglevel)
            c.start(name)
        except BaseException:
            c.destroy_session(name)
            raise
        env = dict(os.environ)
        env["UST_RUN_TOKEN"] = token
        env["UST_AGENT_SYNC"] = "1"
        env["UST_AGENT"] = "1"
        env["UST_HOME"] = c.rundir
        if not args.no_inject:
            inject = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "agent", "_inject")
            env["PYTHONPATH"] = inject + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if args.logging:
            env["UST_LOGGING"] = "1"
        try:
            proc = subprocess.Popen(cmd, env=env)
        except OSError as exc:
            c.destroy_session(name)
            raise SessionError(f"cannot run {cmd[0]!r}: {exc.strerror or exc}") from None
        # Ctrl-C reaches the program from the terminal (same process group): we
        # only outlive it, to close the trace. Signals sent to us alone are passed on.
        old = {s: signal.signal(s, lambda signum, frame: proc.send_signal(signum))
               for s in (signal.SIGTERM, signal.SIGHUP)}
        old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            status = proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        c.stop(name)
        s = c.destroy_session(name)
    if not args.quiet:
        where = "\n  ".join(s["traces"]) if s["traces"] else "(no event was recorded)"
        print(f"ust: trace written in {output}", file=sys.stderr)
        if s["traces"]:
            print(f"  {where}", file=sys.stderr)
            summary = _summary(output)
            if summary is not None:
                total, counts, lost = summary
                discarded = f" ({lost} discarded: use larger buffers)" if lost else ""
                print(f"ust: {total} events{discarded}", file=sys.stderr)
                for ev, n in counts.most_common(10):
                    print(f"  {n:>10}  {ev}", file=sys.stderr)
                if len(counts) > 10:
                    print(f"  ... and {len(counts) - 10} more kinds", file=sys.stderr)
    if status < 0:
        return 128 - status
    return status
