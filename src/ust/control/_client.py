"""The client of ust-sessiond (the liblttngctl analogue).

Every method is one request; errors come back as ``SessionError`` (the request
was refused: unknown session, duplicate name, ...) or ``DaemonError`` (no
daemon could be reached or started). Results are plain dicts, documented per
method, as they arrive from the daemon.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, Iterable, TypedDict

from ust.daemon import paths, protocol
from ust.errors import DaemonError, ProtocolError, SessionError

START_TIMEOUT = 15.0
CURRENT_SESSION_FILE = "current-session"

# Every request has a deadline, so a stopped (SIGSTOP) or wedged daemon gives a
# one-line error instead of a hang. Connecting only needs the daemon's kernel
# backlog; a query is answered from memory; the requests that flush buffers or
# wait for applications and the consumer (which the daemon bounds at 60 s) get more.
CONNECT_TIMEOUT = 5.0
QUERY_TIMEOUT = 10.0
SLOW_TIMEOUT = 90.0
SLOW_COMMANDS = frozenset({"create", "destroy", "enable_channel", "disable_channel", "enable_event",
                           "disable_event", "add_context", "start", "stop", "snapshot_record", "shutdown",
                           "track", "untrack", "rotate", "clear", "regenerate", "add_trigger",
                           "remove_trigger"})


class ChannelInfo(TypedDict):
    name: str
    subbuf_size: int
    num_subbuf: int
    overwrite: bool
    buffers: str  # "uid" | "pid"
    switch_timer: int  # µs
    read_timer: int  # µs
    monitor_timer: int  # µs: how often buffer-usage trigger conditions sample the channel (0: never)
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
    domain: str  # "ust" | "python"


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
    import subprocess  # here: every `ust` command imports this module, few start a daemon

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


def _connect(path: str) -> socket.socket:
    """A connection to the daemon's socket, within CONNECT_TIMEOUT.

    A daemon that listens but does not accept (stopped, or its backlog full:
    the kernel then refuses at once with EAGAIN) is waited for, then reported
    as such (DaemonError); OSError means no daemon listens there at all.
    """
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            s.connect(path)
            return s
        except (socket.timeout, BlockingIOError):
            s.close()
            if time.monotonic() >= deadline:
                raise DaemonError(f"the session daemon at {path} accepted no connection within "
                                  f"{CONNECT_TIMEOUT:.0f}s (stopped or overloaded?)") from None
            time.sleep(0.05)
        except BaseException:
            s.close()
            raise


def _connectable(rundir: str) -> bool:
    try:
        _connect(paths.socket_path(rundir)).close()
        return True
    except DaemonError:
        raise  # a daemon is there but does not answer: never start a second one
    except OSError:
        return False


class _Deadline:
    """The client's socket as protocol.send_msg/recv_msg use it, under one deadline for the whole
    exchange (a socket timeout alone bounds each recv, and a daemon sending a byte at a time could
    stretch a reply forever)."""

    def __init__(self, sock: socket.socket, seconds: float):
        self.sock = sock
        self.deadline = time.monotonic() + seconds

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(left)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)

    def sendmsg(self, *args: Any) -> int:
        self._arm()
        return self.sock.sendmsg(*args)

    def recvmsg(self, *args: Any) -> tuple:
        self._arm()
        return self.sock.recvmsg(*args)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recvmsg_into(self, *args: Any) -> tuple:
        self._arm()
        return self.sock.recvmsg_into(*args)


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

    def __init__(self, rundir: str | None = None, autostart: bool = True, timeout: float | None = None):
        """``timeout``: the reply deadline of every request, in seconds (default: QUERY_TIMEOUT for
        queries, SLOW_TIMEOUT for the requests that wait for the consumer or applications)."""
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
            try:
                self._sock = _connect(path)
                return
            except DaemonError:
                raise
            except OSError as exc:
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
        seconds = self.timeout
        if seconds is None:
            seconds = SLOW_TIMEOUT if cmd in SLOW_COMMANDS else QUERY_TIMEOUT
        sock = _Deadline(self._sock, seconds)
        try:
            protocol.send_msg(sock, msg)
            reply, fds = protocol.recv_msg(sock)
        except socket.timeout:
            self.close()
            pid = paths.read_pid(self.rundir)
            who = f"the session daemon (pid {pid})" if pid else "the session daemon"
            raise DaemonError(f"{who} did not answer {cmd!r} within {seconds:.0f}s "
                              "(stopped or overloaded?)") from None
        except (OSError, ProtocolError) as exc:
            self.close()
            raise DaemonError(f"lost the session daemon during {cmd!r}: {exc}") from None
        for fd in fds:
            os.close(fd)
        if not reply.get("ok"):
            raise SessionError(str(reply.get("error", "request failed")))
        reply.pop("ok", None)
        return reply

    def _result(self, key: str, cmd: str, **args: Any) -> Any:
        """One field of the reply to a request; a reply without it is the daemon's fault, said in one line."""
        reply = self.call(cmd, **args)
        if key not in reply:
            raise DaemonError(f"the session daemon answered {cmd!r} without {key!r}")
        return reply[key]

    # -- the API ---------------------------------------------------------------------

    def ping(self) -> dict:
        """{"pid", "version", "consumer_pid"} of the daemon."""
        return self.call("ping")

    def create_session(self, name: str, output: str | None = None, snapshot: bool = False,
                       token: str | None = None, no_output: bool = False, url: str | None = None,
                       live_timer: int | None = None, shm_path: str | None = None) -> SessionInfo:
        """Create a session writing under ``output`` (default ~/ust-traces/NAME-DATE).

        ``snapshot``: a flight-recorder session (overwrite channels, written by
        ``snapshot_record`` only). ``token``: trace only the processes started
        with ``UST_RUN_TOKEN=token`` in their environment (what `ust run` uses). ``no_output``
        (snapshot sessions): no snapshot output until ``snapshot_add_output``.
        ``url``: stream to a relay instead, ``net://HOST[:CONTROL_PORT[:DATA_PORT]]``
        (docs/relay.md). ``live_timer``: a live session (µs between flushes of
        idle packets; with no ``url``, the relay on localhost). ``shm_path``: the ring buffers
        are files under that directory (`ust create --shm-path DIR` gives ``DIR/NAME-DATE``), which
        outlive a crash of every process; ``ust crash`` (``ust.consumer.crash``) recovers their events.
        """
        if output is not None:
            output = os.path.abspath(os.path.expanduser(output))
        if shm_path is not None:
            shm_path = os.path.abspath(os.path.expanduser(shm_path))
        return self._result("session", "create", name=name, output=output, snapshot=snapshot or None,
                            token=token, no_output=no_output or None, url=url, live_timer=live_timer,
                            shm_path=shm_path)

    def destroy_session(self, name: str) -> SessionInfo:
        """Stop (flushing the trace) and forget a session; its trace stays on disk."""
        return self._result("session", "destroy", session=name)

    def list_sessions(self) -> list[SessionInfo]:
        return self._result("sessions", "list")

    def get_session(self, name: str) -> SessionInfo:
        return self._result("session", "session", session=name)

    def list_apps(self) -> list[AppInfo]:
        """The registered applications and their tracepoints."""
        return self._result("apps", "apps")

    def enable_channel(self, session: str, channel: str, *, subbuf_size: int | str | None = None,
                       num_subbuf: int | None = None, overwrite: bool | None = None, buffers: str | None = None,
                       switch_timer: int | None = None, read_timer: int | None = None,
                       tracefile_size: int | str | None = None, tracefile_count: int | None = None,
                       monitor_timer: int | None = None) -> ChannelInfo:
        """Create a channel (or re-enable one). Sizes accept "4M"-style strings; timers are in µs.

        ``buffers``: "uid" (one set of buffers shared by all processes of a user,
        the default) or "pid" (one per process, each its own trace directory).
        """
        from ust.daemon.rules import parse_size

        return self._result(
            "channel", "enable_channel", session=session, channel=channel,
            subbuf_size=None if subbuf_size is None else parse_size(subbuf_size),
            num_subbuf=num_subbuf, overwrite=overwrite, buffers=buffers, switch_timer=switch_timer,
            read_timer=read_timer, tracefile_size=None if tracefile_size is None else parse_size(tracefile_size),
            tracefile_count=tracefile_count, monitor_timer=monitor_timer,
        )

    def disable_channel(self, session: str, channel: str) -> None:
        self.call("disable_channel", session=session, channel=channel)

    def enable_events(self, session: str, patterns: str | Iterable[str], *, channel: str | None = None,
                      exclusions: Iterable[str] = (), filter: str | None = None,
                      loglevel: str | int | None = None, loglevel_only: bool = False,
                      python: bool = False) -> list[RuleInfo]:
        """Enable event rules: ``patterns`` are names with ``*`` wildcards ("app:*" or "a:x,a:y").

        ``filter`` uses LTTng's filter language (rejected with the position of
        the error); ``loglevel`` keeps events at least as severe (or exactly, with
        ``loglevel_only``). The default channel "channel0" is created if needed.
        With ``python``, LTTng's python domain: the patterns name loggers and
        the levels are Python's (``"WARNING"``, ``30``).
        """
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",") if p]
        from ust.daemon.rules import parse_loglevel, parse_python_loglevel

        parse = parse_python_loglevel if python else parse_loglevel
        lvl = None if loglevel is None else parse(loglevel)
        return self._result("rules", "enable_event", session=session, patterns=list(patterns), channel=channel,
                            exclusions=list(exclusions) or None, filter=filter, loglevel=lvl,
                            loglevel_only=loglevel_only or None, domain="python" if python else None)

    def disable_events(self, session: str, patterns: str | Iterable[str], *, channel: str | None = None) -> int:
        """Disable the rules with these patterns ("*" or --all: every rule of the channel); returns how many."""
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",") if p]
        return self._result("disabled", "disable_event", session=session, patterns=list(patterns),
                            channel=channel)

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

    def disable_probes(self, session: str, functions: str | Iterable[str], *, channel: str | None = None,
                       event: str | None = None) -> int:
        """Remove probes: the functions run their original code again. With ``event``, only the probe
        recording that event name (``module:qualname`` for one enabled without a name): the function's
        other probes go on."""
        if isinstance(functions, str):
            functions = [f for f in functions.split(",") if f]
        return self.call("disable_probe", session=session, targets=list(functions), channel=channel,
                         event=event)["disabled"]

    def add_context(self, session: str, types: Iterable[str], *, channel: str | None = None) -> list[str]:
        """Add context fields (vpid, vtid, procname, thread_name, cpu_id) to every event of a channel."""
        return self._result("channels", "add_context", session=session, types=list(types), channel=channel)

    # -- the kernel domain (root; see docs/kernel.md) -----------------------------

    def kernel_enable_events(self, session: str, patterns: str | Iterable[str], *, syscall: bool = False) -> list[dict]:
        """Enable kernel tracepoints ("sched_switch", "sched_*", "irq:*") or, with ``syscall``,
        system calls ("openat", "*": their syscall_entry_/syscall_exit_ events)."""
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",") if p]
        return self._result("rules", "kernel_enable_event", session=session, patterns=list(patterns),
                            syscall=syscall or None)

    def kernel_disable_events(self, session: str, patterns: str | Iterable[str], *, syscall: bool = False) -> int:
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",") if p]
        return self._result("disabled", "kernel_disable_event", session=session, patterns=list(patterns),
                            syscall=syscall or None)

    def kernel_enable_channel(self, session: str, *, buffer_size: int | str | None = None,
                              overwrite: bool | None = None) -> dict:
        """The kernel ring of the session: ``buffer_size`` per CPU ("4M"), overwrite or discard."""
        from ust.daemon.rules import parse_size

        kb = None if buffer_size is None else max(parse_size(buffer_size) // 1024, 1)
        return self._result("kernel", "kernel_enable_channel", session=session, buffer_size_kb=kb,
                            overwrite=overwrite)

    def kernel_add_context(self, session: str, types: Iterable[str]) -> list[str]:
        return self._result("contexts", "kernel_add_context", session=session, types=list(types))

    def kernel_list(self) -> dict:
        """{"events": ["sched:sched_switch", ...], "syscalls": ["openat", ...]}: what the kernel offers."""
        reply = self.call("kernel_list")
        return {"events": list(reply.get("events", [])), "syscalls": list(reply.get("syscalls", []))}

    def start(self, session: str) -> SessionInfo:
        """Start tracing: running and future applications record what the rules select."""
        return self._result("session", "start", session=session)

    def stop(self, session: str) -> SessionInfo:
        """Stop tracing; when this returns, the trace on disk is complete.

        The result has three more keys: ``lost``, the events discarded (buffers full, events
        too big, writers killed mid-event, arguments that did not fit), ``lost_args``, those
        of the last kind, and ``overwritten``, packets an overwrite-mode buffer lost before
        they were read.
        """
        reply = self.call("stop", session=session)
        if not isinstance(reply.get("session"), dict):
            raise DaemonError("the session daemon answered 'stop' without 'session'")
        return {**reply["session"], "lost": reply.get("lost", 0), "lost_args": reply.get("lost_args", 0),
                "overwritten": reply.get("overwritten", 0), "archive": reply.get("archive")}

    def snapshot_record(self, session: str, output: str | None = None, name: str | None = None,
                        max_size: int | str | None = None) -> str:
        """Write the current contents of a snapshot session's buffers; returns the snapshot directory,
        ``OUTPUT/NAME-YYYYmmdd-HHMMSS-N`` (default: the session's snapshot output and its name;
        ``output``: a directory, file://PATH, or a relay's ``net://HOST[:CTRL[:DATA]]``)."""
        from ust.daemon.rules import parse_size

        if output is not None and "://" not in output:
            output = os.path.abspath(os.path.expanduser(output))
        return self._result("path", "snapshot_record", session=session, output=output, name=name,
                            max_size=None if max_size is None else parse_size(max_size))

    def snapshot_add_output(self, session: str, url: str, name: str | None = None,
                            max_size: int | str | None = None) -> dict:
        """Set a snapshot session's output (a path, file://PATH or net://HOST[:CTRL[:DATA]]) after
        `snapshot_del_output`."""
        from ust.daemon.rules import parse_size

        if "://" not in url:
            url = os.path.abspath(os.path.expanduser(url))
        return self._result("output", "snapshot_add_output", session=session, url=url, name=name,
                            max_size=None if max_size is None else parse_size(max_size))

    def snapshot_list_output(self, session: str) -> list[dict]:
        """The snapshot outputs of a session: [{"id", "name", "path", "max_size"}]."""
        return self._result("outputs", "snapshot_list_output", session=session)

    def snapshot_del_output(self, session: str, output: str | int) -> dict:
        """Remove a snapshot output, by id or name."""
        return self._result("output", "snapshot_del_output", session=session, output=str(output))

    def track(self, session: str, attr: str, ids: Iterable[int] = (), all: bool = False) -> dict:
        """Add ``ids`` to the session's ``attr`` ("vpid", "vuid", "vgid") inclusion set (``all``: every
        process again); returns every set, {attr: [ids]} (an attribute absent: every process)."""
        return self._result("trackers", "track", session=session, attr=attr, ids=list(ids) or None,
                            all=all or None)

    def untrack(self, session: str, attr: str, ids: Iterable[int] = (), all: bool = False) -> dict:
        """Remove ``ids`` from the session's ``attr`` inclusion set (``all``: empty it, no process records)."""
        return self._result("trackers", "untrack", session=session, attr=attr, ids=list(ids) or None,
                            all=all or None)

    def regenerate(self, session: str, what: str) -> dict:
        """``"metadata"``: re-sample the clock offset and rewrite the metadata; returns {"clock_offset"}."""
        return self.call("regenerate", session=session, what=what)

    # -- triggers (docs/lifecycle.md, "Triggers")

    def add_trigger(self, pattern: str | None, actions: Iterable, *, name: str | None = None, python: bool = False,
                    filter: str | None = None, exclusions: Iterable[str] = (), loglevel: str | int | None = None,
                    loglevel_only: bool = False, captures: Iterable[str] = (), condition: dict | None = None,
                    kernel: bool = False, syscall: str | None = None) -> dict:
        """A trigger on condition event-rule-matches (``pattern`` with ``filter``, ``exclusions``, ``loglevel``
        as in ``enable_events``; ``python``: loggers of the python domain) with ``actions``, each
        ``"notify"`` or ``(TYPE, SESSION)`` or ``(TYPE, SESSION, "every:N" | "once-after:N")``, TYPE one of
        start-session, stop-session, rotate-session, snapshot-session (``("notify", None, POLICY)`` for a
        rate-limited notify). ``captures``: lttng's ``--capture`` references (``field``, ``field[N]``,
        ``$ctx.NAME``, ``$app.NAME``) whose values each notification carries (``"captures": {expr: value}``).
        The name defaults to ``triggerN``. Returns the trigger as listed.

        ``condition`` instead of an event rule (``pattern`` None): ``{"type": "channel-buffer-usage-ge" |
        "channel-buffer-usage-le", "session", "channel", "threshold_ratio": 0..1 | "threshold_size": BYTES}``
        or ``{"type": "session-consumed-size-ge", "session", "threshold_size"}`` (sizes accept "100M").

        ``kernel``: kernel tracepoints (``pattern`` as ``enable-event -k``'s), or with ``syscall`` ("entry",
        "exit", "entry+exit") system calls by name; root's, or a tracing-group member's through the system
        daemon (docs/lifecycle.md, "Kernel triggers")."""
        from ust.daemon.rules import parse_loglevel, parse_python_loglevel, parse_size

        if condition is not None:
            c = dict(condition)
            if c.get("threshold_size") is not None:
                c["threshold_size"] = parse_size(c["threshold_size"])
            return self._result("trigger", "add_trigger", name=name, condition=c,
                                actions=[_action(a) for a in actions])

        lvl = None if loglevel is None else (parse_python_loglevel if python else parse_loglevel)(loglevel)
        domain = "kernel" if kernel else "python" if python else "ust"
        return self._result("trigger", "add_trigger", name=name, domain=domain, syscall=syscall,
                            pattern=pattern, exclusions=list(exclusions) or None, filter=filter, loglevel=lvl,
                            loglevel_only=loglevel_only or None, captures=list(captures) or None,
                            actions=[_action(a) for a in actions])

    def list_triggers(self) -> list[dict]:
        """The caller's triggers (root: every user's): name, owner_uid, condition, actions, hits."""
        return self._result("triggers", "list_triggers")

    def remove_trigger(self, name: str) -> dict:
        return self._result("trigger", "remove_trigger", name=name)

    def notifications(self, triggers: Iterable[str] | None = None, timeout: float | None = None) -> "Subscription":
        """Subscribe to the notifications of the caller's triggers (those named, else all) from now on:
        an iterator of ``{"trigger", "event", "pid", "time", "hits", "seq"}`` (the number of the match that
        fired it, and ``"captures"``: ``{expression: value}`` for a trigger with captures, None if the
        application matched too fast to send them all) (``{"missed": N}`` when a
        subscriber too slow lost N of them). A kernel trigger's have ``"domain": "kernel"`` and no ``pid``
        (capture ``$ctx.tid``). It ends after ``timeout`` seconds without one (None: never).
        It holds this client's connection while it waits: give it a Client of its own."""
        return Subscription(self, list(triggers) if triggers else None, timeout)

    def clear(self, session: str) -> None:
        """Empty the session's buffers and its current trace files (a snapshot session: its buffers)."""
        self.call("clear", session=session)

    def rotate(self, session: str) -> str:
        """Archive the session's current trace chunk (``OUTPUT/archives/<begin>-<end>-<index>``, a complete
        trace) and go on in a new one, while applications write; returns the archive's directory."""
        return self._result("path", "rotate", session=session)

    def enable_rotation(self, session: str, timer: int | None = None, size: int | str | None = None) -> dict:
        """Rotate every ``timer`` µs and/or when the current chunk holds ``size`` bytes ("64M")."""
        from ust.daemon.rules import parse_size

        return self.call("enable_rotation", session=session, timer=timer,
                         size=None if size is None else parse_size(size))

    def disable_rotation(self, session: str, timer: bool = False, size: bool = False) -> dict:
        return self.call("disable_rotation", session=session, timer=timer or None, size=size or None)

    def shutdown_daemon(self) -> None:
        """Ask the daemon to stop (every session is stopped and flushed first)."""
        self.call("shutdown")
        self.close()


POLL_MS = 5000  # one long poll, well inside the client's timeout


def _action(a: object) -> dict:
    """``"notify"`` / ``(type, session[, policy])`` -> the request's action object."""
    if isinstance(a, str):
        a = (a,)
    if not isinstance(a, (tuple, list)) or not 1 <= len(a) <= 3:
        raise SessionError(f"bad trigger action {a!r}: expected 'notify' or (type, session[, rate policy])")
    out = {"type": a[0], "session": a[1] if len(a) > 1 else None}
    if len(a) > 2 and a[2] is not None:
        out["policy"], out["count"] = parse_rate_policy(a[2])
    return out


def parse_rate_policy(text: str) -> tuple[str, int]:
    """lttng's ``every:N`` / ``once-after:N`` (N >= 1)."""
    kind, _, n = str(text).partition(":")
    if kind not in ("every", "once-after") or not n.isdigit() or not 1 <= int(n) < 1 << 32:
        raise SessionError(f"bad rate policy {text!r}: expected every:N or once-after:N, N at least 1")
    return kind, int(n)


class Subscription:
    """The notifications of triggers, in order, from the moment it was made (``Client.notifications``)."""

    def __init__(self, client: Client, triggers: list[str] | None, timeout: float | None):
        self.client, self.triggers, self.timeout = client, triggers, timeout
        self.after = client.call("trigger_notifications")["last"]
        self.queue: list[dict] = []

    def __iter__(self) -> "Subscription":
        return self

    def __next__(self) -> dict:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not self.queue:
            wait = POLL_MS if deadline is None else int(max(0.0, deadline - time.monotonic()) * 1000)
            r = self.client.call("trigger_notifications", after=self.after, timeout_ms=min(wait, POLL_MS),
                                 triggers=self.triggers)
            if r.get("missed"):
                self.queue.append({"missed": r["missed"]})
            self.queue.extend(r["notifications"])
            self.after = r["last"]  # everything up to it was answered (or filtered out by name)
            if self.queue:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise StopIteration
        return self.queue.pop(0)
