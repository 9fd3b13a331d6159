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
import os
import signal
import subprocess
import sys

from ust.control import Client
from ust.ctf.writer import new_trace_dir, time_stamp
from ust.defaults import DEFAULT_NUM_SUBBUF, DEFAULT_SUBBUF_SIZE
from ust.errors import SessionError



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--event", action="append", metavar="PATTERN",
                   help="events to record (repeatable, `*` wildcards; default: every event)")
    p.add_argument("-o", "--output", metavar="DIR", help="trace directory (default: ./ust-trace-PROG-DATE)")
    p.add_argument("-f", "--filter", metavar="EXPR", help="record only the events for which EXPR is true")
    p.add_argument("--loglevel", metavar="LEVEL", help="events at least as severe as LEVEL "
                   "(with -l, also log records: a Python level, WARNING or 30)")
    p.add_argument("-t", "--context", action="append", metavar="TYPE", help="context fields to add (vpid, vtid...)")
    p.add_argument("--buffers-pid", action="store_true", help="one trace directory per process")
    p.add_argument("--subbuf-size", metavar="SIZE", help=f"sub-buffer size (default {DEFAULT_SUBBUF_SIZE // 1024}k)")
    p.add_argument("--num-subbuf", type=int, metavar="N", help=f"number of sub-buffers (default {DEFAULT_NUM_SUBBUF})")
    p.add_argument("-l", "--logging", action="store_true",
                   help="record the program's `logging` records (lttng_python:event), no code change needed")
    p.add_argument("--no-inject", action="store_true",
                   help="do not import ust into Python programs that do not import it themselves")
    p.add_argument("--functions", action="store_true",
                   help="record every Python call (python:function_entry/return; names in python:function_info; "
                        "adds the vtid context, so that each thread's calls pair apart)")
    p.add_argument("--include", action="append", metavar="PATTERN",
                   help="with --functions: only functions matching MODULE:QUALNAME (`*` wildcards; repeatable)")
    p.add_argument("--exclude", action="append", metavar="PATTERN",
                   help="with --functions: not the functions matching MODULE:QUALNAME (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but the program's output")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD ARGS...", help="the program to run")


def _summary(path: str) -> tuple[int, collections.Counter, int] | None:
    """(events, count per name, discarded events), read with ust's own reader; None if unreadable."""
    try:
        from ust.ctf import read_trace
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


class _Signals:
    """SIGTERM, SIGHUP and SIGINT handling of `ust run`, installed before the session exists.

    Before the program runs, a signal is only noted: `run` then destroys the
    session and exits as if killed by it, never leaving a session behind. Once
    the program runs, SIGTERM and SIGHUP sent to us are passed on to it, and
    SIGINT (which the terminal also sends to the program, our process group)
    is ignored: we only outlive the program, to close the trace. A signal
    noted while ``Popen`` was starting the program is passed on when it returns.
    """

    FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.pending: list[int] = []
        self.old = {s: signal.signal(s, self._handle) for s in self.FORWARDED}

    def _handle(self, signum: int, frame) -> None:
        proc = self.proc
        if proc is None:
            self.pending.append(signum)
        elif signum != signal.SIGINT:
            proc.send_signal(signum)

    def fatal(self) -> int | None:
        """The first signal received before the program started, if any."""
        return self.pending[0] if self.pending else None

    def started(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        # a handler that ran before the line above only noted its signal
        while self.pending:
            signum = self.pending.pop(0)
            if signum != signal.SIGINT:
                proc.send_signal(signum)

    def restore(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def run(args: argparse.Namespace, out) -> int:
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SessionError("no program to run: `ust run [-e PATTERN] [--] CMD ARGS...`")
    stamp = time_stamp()
    prog = os.path.basename(cmd[0]) or "prog"
    if prog.startswith("python") and len(cmd) > 1 and not cmd[1].startswith("-"):
        prog = os.path.basename(cmd[1])
    if (args.include or args.exclude) and not args.functions:
        raise SessionError("--include and --exclude go with --functions")
    for opt, patterns in (("--include", args.include), ("--exclude", args.exclude)):
        for pattern in patterns or ():
            module, sep, qualname = pattern.partition(":")
            if not sep or not module or not qualname or "\n" in pattern:
                # matched against "module:qualname" whole: without the colon it matches nothing, silently
                hint = (f": '{pattern}:*' for a module's functions, '{pattern}.*:*' for its submodules"
                        if not sep else "")
                raise SessionError(f"{opt} {pattern!r} is not MODULE:QUALNAME (`*` wildcards){hint}")
    # The default name is predictable: create it here, so it is ours (another
    # user may have made that name first in a shared directory: take the next).
    output = os.path.abspath(args.output) if args.output else new_trace_dir(f"ust-trace-{prog}-{stamp}")
    token = os.urandom(16).hex()
    name = f"run-{prog}-{os.getpid()}-{stamp}"
    signals = _Signals()  # before the session exists: a signal from now on never leaves it behind
    try:
        return _run(args, cmd, output, token, name, signals)
    finally:
        signals.restore()


def _killed_by(signum: int) -> int:
    """Exit the way the signal would have ended us (after cleaning up)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum  # not reached for a fatal signal


def _run(args: argparse.Namespace, cmd: list[str], output: str, token: str, name: str, signals: _Signals) -> int:
    with Client() as c:
        if signals.fatal():
            return _killed_by(signals.fatal())
        c.create_session(name, output=output, token=token)
        try:
            if args.buffers_pid or args.subbuf_size or args.num_subbuf:
                c.enable_channel(name, "channel0", buffers="pid" if args.buffers_pid else None,
                                 subbuf_size=args.subbuf_size, num_subbuf=args.num_subbuf)
            contexts = [t for v in args.context or () for t in v.split(",") if t]
            if args.functions and "vtid" not in contexts:
                # Calls pair per thread: without the thread's id, the calls of threads that share a CPU's
                # stream would be mixed in one stack by the reader (a call costs ~2 x 100 ns more for it)
                contexts.append("vtid")
            if contexts:
                c.add_context(name, contexts)
            c.enable_events(name, [p for e in (args.event or ["*"]) for p in e.split(",") if p],
                            filter=args.filter, loglevel=args.loglevel)
            if args.logging:  # every logger, at the Python level --loglevel names (LTTng's python domain)
                c.enable_events(name, ["*"], filter=args.filter, loglevel=args.loglevel, python=True)
            if args.functions and args.event:
                c.enable_events(name, ["python:function_*"])
            c.start(name)
        except BaseException:
            c.destroy_session(name)
            raise
        if signals.fatal():
            c.destroy_session(name)
            return _killed_by(signals.fatal())
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
        if args.functions:
            env["UST_FUNCTIONS"] = "1"
            env["UST_FUNCTIONS_INCLUDE"] = "\n".join(args.include or ())
            env["UST_FUNCTIONS_EXCLUDE"] = "\n".join(args.exclude or ())
        try:
            proc = subprocess.Popen(cmd, env=env)
        except OSError as exc:
            c.destroy_session(name)
            raise SessionError(f"cannot run {cmd[0]!r}: {exc.strerror or exc}") from None
        signals.started(proc)
        status = proc.wait()
        stopped = c.stop(name)
        s = c.destroy_session(name)
    if not s["traces"] and not args.output:
        try:  # the default directory made above, still empty: nothing to leave behind
            os.rmdir(output)
        except OSError:
            pass
    if not args.quiet and not s["traces"]:
        # like lttng, no trace directory exists until an application records: say so
        # rather than name a directory that is not there
        print(f"ust: nothing recorded, no trace written: {os.path.basename(cmd[0])} and its children "
              "hit no enabled tracepoint", file=sys.stderr)
    elif not args.quiet:
        where = "\n  ".join(s["traces"])
        print(f"ust: trace written in {output}", file=sys.stderr)
        if s["traces"]:
            print(f"  {where}", file=sys.stderr)
            summary = _summary(output)
            if summary is not None:
                total, counts, lost = summary
                misfit = min(lost, stopped.get("lost_args", 0))
                causes = []
                if lost - misfit:
                    causes.append(f"{lost - misfit} for full buffers: use larger buffers")
                if misfit:
                    causes.append(f"{misfit} whose arguments did not fit their fields")
                discarded = f" ({lost} discarded: {'; '.join(causes)})" if lost else ""
                print(f"ust: {total} events{discarded}", file=sys.stderr)
                for ev, n in counts.most_common(10):
                    print(f"  {n:>10}  {ev}", file=sys.stderr)
                if len(counts) > 10:
                    print(f"  ... and {len(counts) - 10} more kinds", file=sys.stderr)
    if status < 0:
        return 128 - status
    return status
