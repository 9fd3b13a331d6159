"""The client of ust-sessiond (the liblttngctl analogue).

Every method is one request; errors come back as ``SessionError`` (the request
was refused: unknown session, duplicate name, ...) or ``DaemonError`` (no
daemon could be reached or started). Results are plain dicts, documented per
method, as they arrive from the daemon.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any, Iterable, TypedDict

from ust.daemon import paths, protocol
from ust.daemon.rules import parse_loglevel, parse_size
from ust.errors import DaemonError, ProtocolError, SessionError

START_TIMEOUT = 15.0
CURRENT_SESSION_FILE = "current-session"


class ChannelInfo(TypedDict):
    name: str
    subbuf_size: int
    num_subbuf: int
    overwrite: bool
    buffers: str  # "uid" | "pid"
    switch_timer: int  # µs
    read_timer: int  # µs
    tracefile_size: int
    tracefile_count: int
    context: list[str]
    enabled: bool


class RuleInfo(TypedDict):
    pattern: str
    channel: str
    exclusions: list[str]
    filter: str | None
    loglevel_type: str  # "all" | "range" | "single"
    loglevel: int
    enabled: bool


class SessionInfo(TypedDict):
    name: str
    output: str
    snapshot: bool
    active: bool
    buffers: str
    created: float
    channels: list[ChannelInfo]
    rules: list[RuleInfo]
    traces: list[str]  # trace directories created so far


class AppInfo(TypedDict):
    pid: int
    ppid: int
    uid: int
    procname: str
    cmdline: str  # the command line, as the process started
    registered: float
    tracepoints: list[dict]  # {"name", "loglevel", "kind"}


def _src_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sessiond_pid(rundir: str | None = None) -> int | None:
    """The pid of the running session daemon of ``rundir`` (default: the user's), or None."""
    return paths.read_pid(rundir)


def start_sessiond(rundir: str | None = None, timeout: float = START_TIMEOUT) -> int:
    """Start a session daemon in the background unless one runs; return its pid."""
    rundir = rundir or paths.user_rundir()
    pid = paths.read_pid(rundir)
    if pid is not None and _connectable(rundir):
        return pid
    paths.ensure_private_dir(rundir)
    env = dict(os.environ)
    env["PYTHONPATH"] = _src_dir() + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["UST_AGENT"] = "0"
    r = subprocess.run([sys.executable, "-m", "ust.daemon.sessiond", "--daemonize", "--rundir", rundir],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise DaemonError(f"could not start the session daemon: {r.stderr.strip() or r.returncode}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = paths.read_pid(rundir)
        if pid is not None and _connectable(rundir):
            return pid
        time.sleep(0.02)
    log = os.path.join(rundir, paths.LOG_NAME)
    raise DaemonError(f"the session daemon did not start within {timeout:.0f}s (see {log})")


def stop_sessiond(rundir: str | None = None, timeout: float = 30.0) -> bool:
    """SIGTERM the session daemon (it flushes and stops its consumer); wait for it. False if none ran."""
    import signal

    pid = paths.read_pid(rundir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    raise DaemonError(f"the session daemon (pid {pid}) did not stop within {timeout:.0f}s")


def _connectable(rundir: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(paths.socket_path(rundir))
        return True
    except OSError:
        return False
    finally:
        s.close()


def get_current_session(rundir: str | None = None) -> str | None:
    """The session `set-session` (or the last `create`) chose, like ~/.lttngrc."""
    try:
        with open(os.path.join(rundir or paths.user_rundir(), CURRENT_SESSION_FILE)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def set_current_session(name: str | None, rundir: str | None = None) -> None:
    rundir = rundir or paths.user_rundir()
    paths.ensure_private_dir(rundir)
    p = os.path.join(rundir, CURRENT_SESSION_FILE)
    if name is None:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        return
    tmp = p + ".tmp"
    with open(tmp, "w") as f:
        f.write(name + "\n")
    os.replace(tmp, p)


class Client:
    """A connection to the user's session daemon (started on first use when ``autostart``)."""

    def __init__(self, rundir: str | None = None, autostart: bool = True, timeout: float = 60.0):
        self.rundir = rundir or paths.user_rundir()
        self.autostart = autostart
        self.timeout = timeout
        self._sock: socket.socket | None = None

    # -- plumbing --------------------------------------------------------------------

    def connect(self) -> None:
        if self._sock is not None:
            return
        path = paths.socket_path(self.rundir)
        for attempt in (0, 1):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(path)
                self._sock = s
                return
            except OSError as exc:
                s.close()
                if attempt or not self.autostart:
                    raise DaemonError(f"no session daemon at {path} ({exc.strerror or exc}); "
                                      "start one with `ust-sessiond -d`") from None
                start_sessiond(self.rundir)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call(self, cmd: str, **args: Any) -> dict:
        """Send one raw request; return the reply (raises SessionError when refused)."""
        self.connect()
        msg = {"cmd": cmd, **{k: v for k, v in args.items() if v is not None}}
        try:
            protocol.send_msg(self._sock, msg)
            reply, fds = protocol.recv_msg(self._sock)
        except socket.timeout:
            self.close()
            raise DaemonError(f"the session daemon did not answer {cmd!r} within {self.timeout:.0f}s") from None
        except (OSError, ProtocolError) as exc:
            self.close()
            raise DaemonError(f"lost the session daemon during {cmd!r}: {exc}") from None
        for fd in fds:
            os.close(fd)
        if not reply.get("ok"):
            raise SessionError(str(reply.get("error", "request failed")))
        reply.pop("ok", None)
        return reply

    # -- the API ---------------------------------------------------------------------

    def ping(self) -> dict:
        """{"pid", "version", "consumer_pid"} of the daemon."""
        return self.call("ping")

    def create_session(self, name: str, output: str | None = None, snapshot: bool = False,
                       token: str | None = None) -> SessionInfo:
        """Create a session writing under ``output`` (default ~/ust-traces/NAME-DATE).

        ``snapshot``: a flight-recorder session (overwrite channels, written by
        ``snapshot_record`` only). ``token``: trace only the processes started
        with ``UST_RUN_TOKEN=token`` in their environment (what `ust run` uses).
        """
        if output is not None:
            output = os.path.abspath(os.path.expanduser(output))
        return self.call("create", name=name, output=output, snapshot=snapshot or None, token=token)["session"]

    def destroy_session(self, name: str) -> SessionInfo:
        """Stop (flushing the trace) and forget a session; its trace stays on disk."""
        return self.call("destroy", session=name)["session"]

    def list_sessions(self) -> list[SessionInfo]:
        return self.call("list")["sessions"]

    def get_session(self, name: str) -> SessionInfo:
        return self.call("session", session=name)["session"]

    def list_apps(self) -> list[AppInfo]:
        """The registered applications and their tracepoints."""
        return self.call("apps")["apps"]

    def enable_channel(self, session: str, channel: str, *, subbuf_size: int | str | None = None,
                       num_subbuf: int | None = None, overwrite: bool | None = None, buffers: str | None = None,
                       switch_timer: int | None = None, read_timer: int | None = None,
                       tracefile_size: int | str | None = None, tracefile_count: int | None = None) -> ChannelInfo:
        """Create a channel (or re-enable one). Sizes accept "4M"-style strings; timers are in µs.

        ``buffers``: "uid" (one set of buffers shared by all processes of a user,
        the default) or "pid" (one per process, each its own trace directory).
        """
        return self.call(
            "enable_channel", session=session, channel=channel,
            subbuf_size=None if subbuf_size is None else parse_size(subbuf_size),
            num_subbuf=num_subbuf, overwrite=overwrite, buffers=buffers, switch_timer=switch_timer,
            read_timer=read_timer, tracefile_size=None if tracefile_size is None else parse_size(tracefile_size),
            tracefile_count=tracefile_count,
        )["channel"]

    def disable_channel(self, session: str, channel: str) -> None:
        self.call("disable_channel", session=session, channel=channel)

    def enable_events(self, session: str, patterns: str | Iterable[str], *, channel: str | None = None,
                      exclusions: Iterable[str] = (), filter: str | None = None,
                      loglevel: str | int | None = None, loglevel_only: bool = False) -> list[RuleInfo]:
        """Enable event rules: ``patterns`` are names with ``*`` wildcards ("app:*" or "a:x,a:y").

        ``filter`` uses LTTng's filter language (rejected with the position of
        the error); ``loglevel`` keeps events at least as severe (or exactly, with
        ``loglevel_only``). The default channel "channel0" is created if needed.
        """
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",") if p]
        lvl = None if loglevel is None else parse_loglevel(loglevel)
        return self.call("enable_event", session=session, patterns=list(patterns), channel=channel,
                         exclusions=list(exclusions) or None, filter=filter, loglevel=lvl,
                         loglevel_only=loglevel_only or None)["rules"]

    def disable_events(self, session: str, patterns: str | Iterable[str], *, channel: str | None = None) -> int:
        """Disable the rules with these patterns ("*" or --all: every rule of the channel); returns how many."""
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",") if p]
        return self.call("disable_event", session=session, patterns=list(patterns), channel=channel)["disabled"]

    def enable_probes(self, session: str, functions: str | Iterable[str], *, event: str | None = None,
                      channel: str | None = None, filter: str | None = None, args: bool = True,
                      repr_limit: int | None = None) -> list[dict]:
        """Probe Python functions (``"module:Qual.name"``, ``*`` wildcards in the qualname; ``"*"``: every call).

        Each call of a probed function records ``BASE_entry`` (one field per
        parameter) and ``BASE_return`` (``retval``, ``exception``), BASE being
        ``event`` or ``module:qualname``; in running applications and in those
        that start or import the module later. ``filter`` is tested on the entry's fields.
        """
        if isinstance(functions, str):
            functions = [f for f in functions.split(",") if f]
        return self.call("enable_probe", session=session, targets=list(functions), event=event, channel=channel,
                         filter=filter, args=None if args else False, repr_limit=repr_limit)["probes"]

    def disable_probes(self, session: str, functions: str | Iterable[str], *, channel: str | None = None) -> int:
        """Remove probes: the functions run their original code again."""
        if isinstance(functions, str):
            functions = [f for f in functions.split(",") if f]
        return self.call("disable_probe", session=session, targets=list(functions), channel=channel)["disabled"]

    def add_context(self, session: str, types: Iterable[str], *, channel: str | None = None) -> list[str]:
        """Add context fields (vpid, vtid, procname, thread_name, cpu_id) to every event of a channel."""
        return self.call("add_context", session=session, types=list(types), channel=channel)["channels"]

    def start(self, session: str) -> SessionInfo:
        """Start tracing: running and future applications record what the rules select."""
        return self.call("start", session=session)["session"]

    def stop(self, session: str) -> SessionInfo:
        """Stop tracing; when this returns, the trace on disk is complete.

        The result has one more key, ``lost``: events discarded because a buffer was full.
        """
        reply = self.call("stop", session=session)
        return {**reply["session"], "lost": reply.get("lost", 0)}

    def snapshot_record(self, session: str, output: str | None = None) -> str:
        """Write the current contents of a snapshot session's buffers; returns the snapshot directory."""
        if output is not None:
            output = os.path.abspath(os.path.expanduser(output))
        return self.call("snapshot_record", session=session, output=output)["path"]

    def shutdown_daemon(self) -> None:
        """Ask the daemon to stop (every session is stopped and flushed first)."""
        self.call("shutdown")
        self.close()
