"""The registry of applications: their connections, their declarations, and
the worker thread each one gets while it has requests pending.

An application's connection is read by a thread that only routes
acknowledgements and queues the application's own requests (registration, new
tracepoints); a worker of that application's own runs them in order, so
applications never wait for each other and a command waiting for an
acknowledgement can never deadlock with the thread that would deliver it.
"""

from __future__ import annotations

import collections
import json
import socket
import struct
import threading
import time
import traceback

from ust.daemon import protocol
from ust.daemon.protocol import ConnectionClosed, check, list_of, optional, string, uint
from ust.daemon.sessiond import probes, sync
from ust.daemon.sessiond.limits import (
    APP_ACK_TIMEOUT, APP_QUEUE_BYTES, MAX_DECL_BYTES, MAX_DECL_BYTES_PER_APP, MAX_TRACEPOINTS_PER_APP, READ_TIMEOUT,
)
from ust.daemon.sessiond.log import log
from ust.errors import ProtocolError, UstError

APP_SCHEMAS = {
    "register": {
        "pid": uint(1 << 31),
        "ppid?": uint(1 << 31),
        "uid": uint(1 << 32),
        "procname": string(256),
        "token?": optional(string(128)),
        "cmdline?": string(512),
        "tracepoints": list_of(protocol.check_decl, 65536),
        "seq": uint(1 << 62),
    },
    "declare": {"tracepoints": list_of(protocol.check_decl, 65536), "seq": uint(1 << 62)},
}


class _Awaited:
    """A command sent to an application, until its acknowledgement arrives."""

    __slots__ = ("answered", "reply", "seq", "cmd")

    def __init__(self, seq: int, cmd: object):
        self.answered = threading.Event()
        self.reply: dict | None = None
        self.seq = seq
        self.cmd = cmd


class App:
    """A registered application: its connection and what it was told to do."""

    def __init__(self, sock: socket.socket, pid: int, uid: int, info: dict, gid: int = -1):
        self.sock = sock
        self.pid = pid
        self.uid = uid
        self.gid = gid  # the socket's (SO_PEERCRED), as pid and uid: what `track --vgid` matches
        self.ppid = info.get("ppid", 0)
        self.procname = info["procname"]
        self.token = info.get("token")
        self.cmdline = info.get("cmdline", "")
        self.decls: dict[str, dict] = {}  # decl_key -> decl json
        # Declarations not yet applied to every active session: not listed
        # (`ust list --apps`) until they are, so that whoever sees a
        # tracepoint listed can rely on it recording (the rule of the
        # in-process registry, issue 7 item 1, applied to the daemon).
        self.unsynced: set[str] = set()
        self.retrying = False  # a failed sync waits to be tried again (under work_lock; _retry_sync)
        self.sync_retry = 0.0  # the last wait before trying again, doubled at each failure
        self.decl_bytes = 0
        self.queued_bytes = 0  # its requests waiting for its worker (under work_lock)
        self.work: collections.deque = collections.deque()  # (kind, msg), run in order by its worker
        self.work_lock = threading.Lock()
        self.working = False
        self.registered = time.time()
        self.send_lock = threading.Lock()
        self.pending: dict[int, _Awaited] = {}  # by sequence number
        self.seq = 0
        self.alive = True
        # session name -> {"channels": set of trace-channel keys,
        #                  "attached": {(chan key, tp name): (event id, filter)}}
        self.state: dict[str, dict] = {}
        self.probes_sent: list[dict] = []  # the probe set last sent, and the app's answer
        self.probe_status: list[dict] = []
        self.probe_generation = 0  # of probe_status, as the application counts its changes (probes.keep_status)
        self.triggers_attached: dict[tuple[int, str], str | None] = {}  # (trigger id, decl key) -> filter sent
        self.trigger_counters = None  # the match counters it shares with us (triggers.TriggerCounters)

    def send_many(self, msgs: list[tuple[dict, list[int]]]) -> list[_Awaited]:
        """Send commands without waiting: the slots ``wait_many`` waits on (the
        agent answers in order, so a batch costs one round trip)."""
        slots = []
        for msg, fds in msgs:
            if not self.alive:
                break
            with self.send_lock:
                self.seq += 1
                seq = self.seq
                slot = _Awaited(seq, msg.get("cmd"))
                self.pending[seq] = slot
                try:
                    protocol.send_msg(self.sock, {**msg, "seq": seq}, fds)
                except (OSError, ProtocolError) as exc:
                    self.pending.pop(seq, None)
                    self.kill(f"send failed: {exc}")
                    break
            slots.append(slot)
        return slots

    def wait_many(self, slots: list[_Awaited], n: int) -> list[dict | None]:
        """The acknowledgements of ``n`` commands sent by ``send_many`` (None: no answer
        within APP_ACK_TIMEOUT, the application is dropped, or it was not sent)."""
        deadline = time.monotonic() + APP_ACK_TIMEOUT
        for slot in slots:
            if not slot.answered.wait(max(0.0, deadline - time.monotonic())):
                self.pending.pop(slot.seq, None)
                # A stopped or wedged application: drop it rather than make every
                # later command wait. Its agent reconnects when it runs again.
                self.kill(f"it did not acknowledge {slot.cmd} in {APP_ACK_TIMEOUT}s")
                break
        return [slot.reply for slot in slots] + [None] * (n - len(slots))

    def reply(self, seq: int, msg: dict) -> None:
        with self.send_lock:
            try:
                protocol.send_msg(self.sock, {**msg, "re": seq})
            except (OSError, ProtocolError) as exc:
                self.kill(f"send failed: {exc}")

    def deliver(self, seq: int, msg: dict) -> None:
        slot = self.pending.pop(seq, None)
        if slot is not None:
            slot.reply = msg
            slot.answered.set()

    def kill(self, failure: str | None = None) -> None:
        """Hang up on the application (its reader thread then deregisters it) and
        release every command waiting for it; ``failure``: why, logged."""
        if self.alive:
            self.alive = False
            if failure:
                log(f"app {self.pid} dropped: {failure}")
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for slot in list(self.pending.values()):
            slot.answered.set()

    def to_json(self) -> dict:
        return {
            "pid": self.pid,
            "ppid": self.ppid,
            "uid": self.uid,
            "procname": self.procname,
            "cmdline": self.cmdline,
            "registered": self.registered,
            "tracepoints": sorted(
                ({"name": d["name"], "loglevel": d["loglevel"], "kind": d["kind"]}
                 for k, d in self.decls.items() if k not in self.unsynced),
                key=lambda d: d["name"],
            ),
            "probes": self.probe_status,
        }

    # The probe rules (probes.py) reach the registry through the application
    # they are given, not through an import: the registry imports them.
    def add_declarations(self, daemon, decls: list[dict]) -> str | None:
        return add_decls(daemon, self, decls)

    def enqueue(self, daemon, kind: str, msg: object) -> None:
        enqueue(daemon, self, kind, msg)


def serve_app(daemon, conn: socket.socket, pid: int, uid: int, msg: dict, gid: int = -1) -> None:
    """Serve the connection of an application whose first message, ``msg``, is ``register``."""
    try:
        check(msg, {"cmd": str, **APP_SCHEMAS["register"]})
    except ProtocolError as exc:
        daemon.send_quietly(conn, {**protocol.error_reply(str(exc)), "re": msg.get("seq", 0)})
        return
    if msg["pid"] != pid or msg["uid"] != uid:
        daemon.send_quietly(conn, {**protocol.error_reply(
            f"registration says pid {msg['pid']} uid {msg['uid']}, the socket says pid {pid} uid {uid}"),
            "re": msg["seq"]})
        return
    # A send that cannot complete within 2 s means the app is stuck: drop it.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 2, 0))
    app = App(conn, pid, uid, msg, gid)
    enqueue(daemon, app, "register", msg)
    try:
        while True:
            try:
                # No idle deadline (an application may stay quiet for days),
                # but a message it starts must complete.
                m, fds = protocol.recv_msg(conn, read=READ_TIMEOUT, budget=daemon.budget)
            except (ConnectionClosed, OSError):
                break
            except ProtocolError as exc:
                log(f"app {pid}: {exc}; dropping it")
                break
            protocol.close_fds(fds)
            if "re" in m:
                if isinstance(m["re"], int):
                    app.deliver(m["re"], m)
                continue
            # This thread never waits for the worker: it also routes the
            # acknowledgements a command holding a session's lock waits
            # for, while the worker may be waiting for that lock (an agent
            # declares a burst of probe events while `start` attaches
            # them). The queue is bounded in bytes instead: an application
            # that floods it beyond what its declarations may hold is
            # dropped.
            size = len(json.dumps(m, separators=(",", ":")))
            with app.work_lock:
                app.queued_bytes += size
                flooding = app.queued_bytes > APP_QUEUE_BYTES
            if flooding:
                log(f"app {pid}: more than {APP_QUEUE_BYTES >> 20} MiB of requests waiting; dropping it")
                break
            enqueue(daemon, app, "app_request", (m, size))
    finally:
        # Whatever ended the loop, a dead peer is always deregistered.
        app.kill()
        enqueue(daemon, app, "gone", None)


def enqueue(daemon, app: App, kind: str, msg: object) -> None:
    """Run an application's request after its earlier ones, on a worker of
    its own (started when needed): applications never wait for each other,
    so a session stalled on its consumer holds up only the applications
    that session records."""
    with app.work_lock:
        app.work.append((kind, msg))
        if app.working:
            return
        app.working = True
    threading.Thread(target=_app_worker, args=(daemon, app), name=f"app-{app.pid}", daemon=True).start()


def _app_worker(daemon, app: App) -> None:
    while True:
        with app.work_lock:
            if not app.work:
                app.working = False
                return
            kind, msg = app.work.popleft()
        try:
            if kind == "register":
                _register(daemon, app, msg)
            elif kind == "app_request":
                request, size = msg
                try:
                    _app_request(daemon, app, request)
                finally:
                    with app.work_lock:
                        app.queued_bytes -= size
            elif kind == "sync":  # new declarations (a probe's events): every active session's rules
                sync_active(daemon, app)
            elif kind == "gone":
                daemon.triggers.on_gone(daemon, app)  # after its last reports: what they did not say
                with daemon.lock:
                    if daemon.apps.get(app.pid) is app:
                        del daemon.apps[app.pid]
                    daemon.decl_bytes -= app.decl_bytes
                    app.decl_bytes = 0
        except Exception:
            log(f"app {app.pid}: {kind} failed:\n" + traceback.format_exc())


def add_decls(daemon, app: App, decls: list[dict]) -> str | None:
    """Keep ``app``'s new declarations, within the caps; an error message for what did not fit."""
    refused = 0
    with daemon.lock:
        for d in decls:
            k = protocol.decl_key(d)
            if k in app.decls:
                continue
            if (len(app.decls) >= MAX_TRACEPOINTS_PER_APP or app.decl_bytes + len(k) > MAX_DECL_BYTES_PER_APP
                    or daemon.decl_bytes + len(k) > MAX_DECL_BYTES):
                refused += 1
                continue
            app.decls[k] = d
            app.unsynced.add(k)
            app.decl_bytes += len(k)
            daemon.decl_bytes += len(k)
    if refused:
        return (f"too many tracepoints: {refused} not registered (at most {MAX_TRACEPOINTS_PER_APP} "
                f"and {MAX_DECL_BYTES_PER_APP >> 20} MiB of declarations per application); "
                "they are not traced")
    return None


def sync_active(daemon, app: App) -> None:
    """Apply every active session's rules to ``app`` (its worker thread).

    Its declarations are listed once applied to every session. A session
    whose sync failed (its consumer did not describe the events: stopped,
    restarting) keeps them unlisted -- they are not attached there -- and the
    sync is tried again later (SYNC_RETRY), until it succeeds or the session
    stops."""
    with daemon.lock:
        sessions = [s for s in daemon.sessions.values() if s.active]
        applied = set(app.unsynced)
    synced = False
    try:
        synced = _sync_sessions(daemon, app, sessions)
        daemon.triggers.sync_app(daemon, app)
    finally:
        if synced:
            with daemon.lock:
                app.unsynced -= applied
            app.sync_retry = 0.0
        else:
            _retry_sync(daemon, app)


SYNC_RETRY = (0.5, 10.0)  # seconds before a failed sync is tried again: the first wait, the longest


def _retry_sync(daemon, app: App) -> None:
    """Queue ``sync_active`` again after a wait that doubles with each failure (one retry waiting at a
    time: a session that keeps failing costs one sync per SYNC_RETRY[1])."""
    with app.work_lock:
        if app.retrying or not app.alive:
            return
        app.retrying = True
        app.sync_retry = min(max(app.sync_retry * 2, SYNC_RETRY[0]), SYNC_RETRY[1])
        delay = app.sync_retry

    def again() -> None:
        with app.work_lock:
            app.retrying = False
        if app.alive:
            enqueue(daemon, app, "sync", None)

    timer = threading.Timer(delay, again)
    timer.daemon = True
    timer.start()


def _sync_sessions(daemon, app: App, sessions: list) -> bool:
    """False if some session's rules could not be applied (said in the log)."""
    synced = True
    for s in sessions:
        if not sync.app_in_session(s, app):
            continue  # decided without the session's lock: a stalled session does not hold others
        with s.lock:
            if s.active and not s.destroyed:
                try:
                    sync.sync_app(daemon, s, app)
                except UstError as exc:
                    log(f"app {app.pid}: session {s.name}: {exc}")
                    synced = False
    return synced


def _register(daemon, app: App, msg: dict) -> None:
    with daemon.lock:
        old = daemon.apps.get(app.pid)
        if old is not None and old is not app:
            old.kill()  # the same pid registers again: its agent reconnected, or the pid was reused
        if not app.alive:
            return  # it went away before the worker got to it
        daemon.apps[app.pid] = app
    error = add_decls(daemon, app, msg["tracepoints"])
    probes.sync(daemon, [app])
    sync_active(daemon, app)
    app.reply(msg["seq"], protocol.error_reply(error) if error else protocol.ok_reply())


def _app_request(daemon, app: App, msg: dict) -> None:
    cmd = msg.get("cmd")
    seq = msg.get("seq") if isinstance(msg.get("seq"), int) else 0
    if cmd == "trigger_hits":  # no answer: the agent does not wait (ust.daemon.sessiond.triggers)
        daemon.triggers.on_hits(daemon, app, msg)
        return
    if cmd == "probe_status":  # no answer either; after the declarations it follows, applied by now
        probes.keep_status(daemon, app, msg, report=True)
        return
    try:
        if cmd != "declare":
            raise ProtocolError(f"unknown application request {cmd!r}")
        check(msg, {"cmd": str, **APP_SCHEMAS["declare"]})
    except ProtocolError as exc:
        app.reply(seq, protocol.error_reply(str(exc)))
        return
    error = add_decls(daemon, app, msg["tracepoints"])
    sync_active(daemon, app)
    app.reply(seq, protocol.error_reply(error) if error else protocol.ok_reply())
