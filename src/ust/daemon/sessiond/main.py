"""The entry point of ``ust-sessiond`` (and ``python -m ust.daemon.sessiond``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ust.daemon import paths
from ust.daemon.sessiond.server import SessionDaemon
from ust.errors import UstError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ust-sessiond", description="the ust session daemon")
    p.add_argument("--rundir", help="runtime directory (default: $UST_HOME, $XDG_RUNTIME_DIR/ust or ~/.ust)")
    p.add_argument("--daemonize", "-d", action="store_true", help="detach and run in the background")
    p.add_argument("--log", help="log file (with --daemonize; default <rundir>/sessiond.log)")
    args = p.parse_args(argv)
    rundir = os.path.abspath(args.rundir) if args.rundir else paths.user_rundir()
    if args.daemonize:
        _daemonize(args.log or os.path.join(rundir, paths.LOG_NAME), rundir)
    daemon = SessionDaemon(rundir)

    def on_signal(signum, frame):
        daemon.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        daemon.serve()
    except UstError as exc:
        print(f"ust-sessiond: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _daemonize(log: str, rundir: str) -> None:
    paths.ensure_private_dir(rundir)
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
