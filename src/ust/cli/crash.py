"""`ust crash [-x DIR | -e READER] SHM_PATH`: the events a crashed session's buffers hold (lttng-crash).

SHM_PATH is the directory given to `ust create --shm-path` (or any directory under it). Without
``-x`` the recovered traces are printed as `ust view` prints a trace (or given to ``-e READER``),
from a temporary directory removed afterwards; with ``-x DIR`` they are written there, one CTF
trace per buffer owner, laid out as the session's output. The recovery is
``ust.consumer.crash.recover``; each problem it met is one line on stderr, and the exit status is
1 if some stream could not be recovered, as lttng-crash's.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shm_path", metavar="SHM_PATH", help="the session's --shm-path directory")
    p.add_argument("-x", "--extract", metavar="DIR", help="write the recovered traces in DIR (a new or empty "
                   "directory) instead of printing their events")
    p.add_argument("-e", "--viewer", metavar="READER", help="read the recovered traces with this command "
                   "(the trace directory is its last argument; default: print them as `ust view`)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="say what was recovered from each buffer")


def recover(args: argparse.Namespace, dest: str):
    """Recover into ``dest``; the problems go to stderr, one line each."""
    from ust.consumer.crash import recover as do_recover

    report = do_recover(args.shm_path, dest)
    for line in report.errors:
        print(f"ust: warning: {line}", file=sys.stderr)
    if args.verbose:
        for s in report.streams:
            if s.error is None:
                print(f"ust: {s.name}: {s.packets} packet(s) recovered, {s.events_dropped} event(s) being "
                      f"written at the crash dropped", file=sys.stderr)
    return report


def run(args: argparse.Namespace, out) -> int:
    import shutil
    import tempfile

    if args.extract is not None:
        if args.viewer is not None:
            from ust.errors import UstError

            raise UstError("give -x DIR or -e READER, not both")
        report = recover(args, args.extract)
        print(f"Recovered {report.packets} packet(s) of {len(report.traces)} trace(s) in {args.extract}",
              file=out)
        return 1 if any(s.error for s in report.streams) else 0
    tmp = tempfile.mkdtemp(prefix="ust-crash-")
    try:
        report = recover(args, tmp)
        status = 1 if any(s.error for s in report.streams) else 0
        if args.viewer is not None:
            return _external(args.viewer, tmp) or status
        from ust.cli import view

        p = argparse.ArgumentParser()
        view.add_arguments(p)
        return view.run(p.parse_args([tmp]), out) or status
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _external(viewer: str, trace_dir: str) -> int:
    import shlex
    import subprocess

    from ust.errors import UstError

    argv = shlex.split(viewer)
    if not argv:
        raise UstError("-e: empty reader command")
    try:
        return subprocess.call(argv + [trace_dir])
    except OSError as exc:
        raise UstError(f"cannot run {argv[0]}: {exc.strerror}") from None
