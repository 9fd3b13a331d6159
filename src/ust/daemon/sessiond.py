"""ust-sessiond: the session daemon.

It owns the tracing sessions (channels, event rules, contexts), the registry of
live applications, and the consumer daemon it spawns and supervises.

Threads
-------
* the acceptor: one thread per connection (a misbehaving client blocks only
  its own thread; connections are capped at MAX_CONNECTIONS, and at
  MAX_CONNECTIONS_PER_UID for any uid but root and the daemon's owner, who
  keep a reserve; a message must complete within READ_TIMEOUT, a client
  connection idle for IDLE_TIMEOUT is closed; the bodies being received share
  one INPUT_BUDGET);
* per application, a reader thread that only routes acknowledgements and
  queues the application's own requests (registration, new tracepoints);
* per application with requests pending, a worker thread that runs them in
  order (applications never wait for each other);
* per session owner, a consumer supervisor (``ConsumerLink``), which runs and
  restarts that user's ust-consumerd (with the user's credentials).

Ownership: a session belongs to the uid that created it; only that uid (and
root) sees and controls it, and a session of a non-root user records only
that user's applications (docs/security.md).

Locks: ``self.lock`` guards the tables (sessions, applications) and is never
held across a call to another process; each session has its own lock, held
while a command on that session runs, consumer and application round trips
included. A stalled consumer thus delays only the commands on its own
sessions. Commands sent to applications wait for their acknowledgement with a
timeout, never forever; an application whose socket stops draining is
dropped. The app reader threads take no lock, so an acknowledgement can
always be delivered to a waiting command.

The central operation is ``_sync_app(session, app)``: it computes what an
application should record for a session (channels it maps, tracepoints it has
attached with their event id and filter) and sends the difference. start,
enable-event, disable-event and registration all end in it, so a rule applies
the same way to applications registered before or after it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import grp
import json
import os
import pwd
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from ust.ctf.writer import pid_trace_dir, time_stamp, uid_trace_dir
from ust.daemon import paths, probe_rules, protocol
from ust.daemon.consumer_link import ConsumerLink, Owner
from ust.daemon.protocol import (
    ConnectionClosed, check, is_name, list_of, one_of, optional, string, uint,
)
from ust.daemon.rules import DOMAINS, MAX_PYTHON_LEVEL, EventRule, check_pattern, combined_filter
from ust.defaults import DEFAULT_NUM_SUBBUF, DEFAULT_SUBBUF_SIZE
from ust.errors import ProtocolError, SessionError, UstError



def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


MAX_CONNECTIONS = 512
MAX_CONNECTIONS_PER_UID = 256  # one user cannot take every connection (applications included)
MAX_REFUSING_PER_UID = 16  # refusals being answered; beyond, a connection is closed unanswered
TRUSTED_RESERVE = 32  # connections only root and the daemon's owner may use
IDLE_TIMEOUT = _env_number("UST_SESSIOND_IDLE_TIMEOUT", 600.0)  # a client connection without a request
READ_TIMEOUT = _env_number("UST_SESSIOND_READ_TIMEOUT", 10.0)  # a message, once started, must complete
INPUT_BUDGET = 64 << 20  # bytes of message bodies being received at once, all connections together
MAX_TRACEPOINTS_PER_APP = int(_env_number("UST_MAX_TRACEPOINTS_PER_APP", 4096))
MAX_DECL_BYTES_PER_APP = 4 << 20  # encoded declarations kept for one application
MAX_DECL_BYTES = 64 << 20  # ... and for all of them
APP_QUEUE_BYTES = 4 << 20  # encoded requests of one application waiting for its worker
APP_ACK_TIMEOUT = 3.0


def check_context(value: object) -> str | None:
    from ust.instrument import context as ctx

    if ctx.is_known(value):
        return None
    return f"unknown context {str(value)[:300]!r} (see `ust add-context --list`)"

DEFAULT_CHANNEL = "channel0"


def _log(msg: str) -> None:
    print(f"ust-sessiond[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# ---------------------------------------------------------------------------
# state


@dataclass
class ChannelConf:
    name: str
    subbuf_size: int = DEFAULT_SUBBUF_SIZE
    num_subbuf: int = DEFAULT_NUM_SUBBUF
    overwrite: bool = False
    buffers: str = "uid"  # "uid" or "pid"
    switch_timer: int = 0  # microseconds, 0 = off
    read_timer: int = 200_000  # microseconds
    tracefile_size: int = 0
    tracefile_count: int = 0
    context: list[str] = field(default_factory=list)
    enabled: bool = True

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TraceChannel:
    conf: ChannelConf
    stream_id: int
    fds: list[int]
    events: dict[str, int] = field(default_factory=dict)  # decl_key -> event id


@dataclass
class Trace:
    """The buffers and files of one session for one owner (a uid or a pid)."""

    key: str
    path: str
    owner: tuple[str, int]
    uuid: str
    channels: dict[str, TraceChannel] = field(default_factory=dict)


@dataclass
class Session:
    name: str
    output: str
    uid: int = 0  # the owner: only it (and root) sees and controls the session
    snapshot: bool = False
    token: str | None = None  # only apps started with this UST_RUN_TOKEN (ust run)
    channels: dict[str, ChannelConf] = field(default_factory=dict)
    rules: list[EventRule] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)  # enable-event --function (daemon/probe_rules.py)
    active: bool = False
    created: float = field(default_factory=time.time)
    clock_offset: int = 0
    traces: dict[tuple[str, int], Trace] = field(default_factory=dict)
    snapshot_count: int = 0
    trace_paths: list = field(default_factory=list)  # after destroy
    lock: Any = field(default_factory=threading.RLock, repr=False)  # held by a command on this session
    destroyed: bool = False

    @property
    def buffers(self) -> str:
        for ch in self.channels.values():
            return ch.buffers
        return "uid"

    def enable_rule(self, rule: EventRule) -> None:
        """Add ``rule``, or enable the same rule if the session has it already."""
        for r in self.rules:
            if r.same_rule(rule):
                r.enabled = True
                return
        self.rules.append(rule)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "output": self.output,
            "snapshot": self.snapshot,
            "active": self.active,
            "buffers": self.buffers,
            "created": self.created,
            "uid": self.uid,
            # copies first: a command on the session may change it meanwhile
            "channels": [ch.to_json() for ch in list(self.channels.values())],
            "rules": [r.to_json() for r in list(self.rules)],
            "probes": [dict(p) for p in list(self.probes)],
            "traces": [t.path for t in list(self.traces.values())],
        }


class App:
    """A registered application: its connection and what it was told to do."""

    def __init__(self, sock: socket.socket, pid: int, uid: int, info: dict):
        self.sock = sock
        self.pid = pid
        self.uid = uid
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
        self.decl_bytes = 0
        self.queued_bytes = 0  # its requests waiting for its worker (under work_lock)
        self.work: collections.deque = collections.deque()  # (kind, msg), run in order by its worker
        self.work_lock = threading.Lock()
        self.working = False
        self.registered = time.time()
        self.send_lock = threading.Lock()
        self.pending: dict[int, list] = {}  # seq -> [event, reply]
        self.seq = 0
        self.alive = True
        # session name -> {"channels": set of trace-channel keys,
        #                  "attached": {(chan key, tp name): (event id, filter)}}
        self.state: dict[str, dict] = {}
        self.probes_sent: list[dict] = []  # the probe set last sent, and the app's answer
        self.probe_status: list[dict] = []

    def command(self, msg: dict, fds: list[int] = ()) -> dict | None:
        """Send a command; wait for its acknowledgement (APP_ACK_TIMEOUT). None: no answer."""
        return self.pipeline([(msg, fds)])[0]

    def pipeline(self, msgs: list[tuple[dict, list[int]]]) -> list[dict | None]:
        """Send several commands at once, then wait for every acknowledgement.

        The agent answers in order; one round trip instead of len(msgs).
        """
        return self.wait_many(self.send_many(msgs), len(msgs))

    def send_many(self, msgs: list[tuple[dict, list[int]]]) -> list[list]:
        slots = []
        for msg, fds in msgs:
            if not self.alive:
                break
            with self.send_lock:
                self.seq += 1
                seq = self.seq
                slot = [threading.Event(), None, seq, msg.get("cmd")]
                self.pending[seq] = slot
                try:
                    protocol.send_msg(self.sock, {**msg, "seq": seq}, fds)
                except (OSError, ProtocolError) as exc:
                    self.pending.pop(seq, None)
                    self.kill(f"send failed: {exc}")
                    break
            slots.append(slot)
        return slots

    def wait_many(self, slots: list[list], n: int) -> list[dict | None]:
        deadline = time.monotonic() + APP_ACK_TIMEOUT
        for slot in slots:
            if not slot[0].wait(max(0.0, deadline - time.monotonic())):
                self.pending.pop(slot[2], None)
                # A stopped or wedged application: drop it rather than make every
                # later command wait. Its agent reconnects when it runs again.
                _log(f"app {self.pid} did not acknowledge {slot[3]} in {APP_ACK_TIMEOUT}s; dropping it")
                self.kill("unresponsive")
                break
        return [slot[1] for slot in slots] + [None] * (n - len(slots))

    def reply(self, seq: int, msg: dict) -> None:
        with self.send_lock:
            try:
                protocol.send_msg(self.sock, {**msg, "re": seq})
            except (OSError, ProtocolError) as exc:
                self.kill(f"send failed: {exc}")

    def deliver(self, seq: int, msg: dict) -> None:
        slot = self.pending.pop(seq, None)
        if slot is not None:
            slot[1] = msg
            slot[0].set()

    def kill(self, why: str = "") -> None:
        if self.alive:
            self.alive = False
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for slot in list(self.pending.values()):
            slot[0].set()

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


# ---------------------------------------------------------------------------
# request schemas (clients)

_CHANNEL_FIELDS = {
    "subbuf_size?": uint(1 << 31),
    "num_subbuf?": uint(1 << 20),
    "overwrite?": bool,
    "buffers?": one_of("uid", "pid"),
    "switch_timer?": uint(1 << 40),
    "read_timer?": uint(1 << 40),
    "tracefile_size?": uint(1 << 50),
    "tracefile_count?": uint(1 << 20),
}

SCHEMAS: dict[str, dict] = {
    "ping": {},
    "create": {"name": is_name, "output?": optional(string()), "snapshot?": bool, "token?": optional(string(128))},
    "destroy": {"session": is_name},
    "list": {},
    "session": {"session": is_name},
    "apps": {},
    "enable_channel": {"session": is_name, "channel": is_name, **_CHANNEL_FIELDS},
    "disable_channel": {"session": is_name, "channel": is_name},
    "enable_event": {
        "session": is_name,
        "patterns": list_of(string(512), 256),
        "channel?": optional(is_name),
        "exclusions?": list_of(string(512), 256),
        "filter?": optional(string(4096)),
        "loglevel?": optional(uint(MAX_PYTHON_LEVEL + 1)),  # 0-14, or a Python level in the python domain
        "loglevel_only?": bool,
        "domain?": optional(one_of(*DOMAINS)),
    },
    "disable_event": {"session": is_name, "patterns": list_of(string(512), 256), "channel?": optional(is_name)},
    "add_context": {"session": is_name, "types": list_of(check_context, 64), "channel?": optional(is_name)},
    "start": {"session": is_name},
    "stop": {"session": is_name},
    "snapshot_record": {"session": is_name, "output?": optional(string())},
    "shutdown": {},
    "stats": {},
    **probe_rules.SCHEMAS,
}

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


# ---------------------------------------------------------------------------
# the daemon


class SessionDaemon:
    def __init__(self, rundir: str, consumer: bool = True):
        self.rundir = rundir
        self.lock = threading.RLock()  # the tables only; never held across a call to another process
        self.sessions: dict[str, Session] = {}
        self.apps: dict[int, App] = {}
        self.stopping = threading.Event()
        self.nconn = 0
        self.nconn_by_uid: dict[int, int] = {}
        self.refusing_by_uid: dict[int, int] = {}
        self.nconn_lock = threading.Lock()
        self.budget = protocol.InputBudget(INPUT_BUDGET)
        self.decl_bytes = 0
        self.listener: socket.socket | None = None
        self.system = os.getuid() == 0 and os.path.abspath(rundir) == paths.system_rundir()
        self.use_consumer = consumer
        self.links: dict[int, ConsumerLink] = {}  # consumer uid -> its link
        self.links_lock = threading.Lock()

    # -- consumers -------------------------------------------------------------

    def _consumer_uid(self, owner_uid: int) -> int:
        """Whose credentials write a session's files: its owner's (a daemon not
        running as root has only its own)."""
        return owner_uid if os.getuid() == 0 else os.getuid()

    def _link(self, s: Session) -> ConsumerLink:
        """The consumer of ``s``'s owner, started on first use."""
        if not self.use_consumer:
            raise SessionError("this session daemon runs without a consumer")
        uid = self._consumer_uid(s.uid)
        with self.links_lock:
            link = self.links.get(uid)
            if link is None:
                if self.stopping.is_set():
                    raise SessionError("the session daemon is stopping")
                owner = None if uid == os.getuid() else Owner(uid)
                link = ConsumerLink(self.rundir, owner)
                link.start()
                if link.pid is None:
                    link.stop()
                    raise SessionError(f"cannot start a consumer daemon for uid {uid} (see the session daemon's log)")
                self.links[uid] = link
        return link

    def _link_if_running(self, s: Session) -> ConsumerLink | None:
        with self.links_lock:
            return self.links.get(self._consumer_uid(s.uid))

    # -- peers ---------------------------------------------------------------

    def peer_allowed(self, uid: int, gid: int) -> bool:
        me = os.getuid()
        if uid == me or uid == 0:
            return True
        if self.system:
            try:
                g = grp.getgrnam("tracing")
            except KeyError:
                return False
            if gid == g.gr_gid:
                return True
            import pwd

            try:
                return pwd.getpwuid(uid).pw_name in g.gr_mem
            except KeyError:
                return False
        return False

    # -- serving ---------------------------------------------------------------

    def serve(self) -> None:
        paths.ensure_private_dir(self.rundir)
        sock_path = paths.socket_path(self.rundir)
        # One daemon per runtime directory, even when two `ust` commands start
        # one at the same time: the lock is held for the daemon's lifetime.
        self._lock_fd = os.open(os.path.join(self.rundir, "sessiond.lock"),
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise UstError(f"a session daemon already runs in {self.rundir}") from None
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(sock_path)
            probe.close()
            raise UstError(f"a session daemon already listens on {sock_path}")
        except (ConnectionRefusedError, FileNotFoundError):
            probe.close()
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.listener.bind(sock_path)
        finally:
            os.umask(old)
        if self.system:
            try:
                os.chown(sock_path, 0, grp.getgrnam("tracing").gr_gid)
                os.chmod(sock_path, 0o660)
                os.chmod(self.rundir, 0o750)
                os.chown(self.rundir, 0, grp.getgrnam("tracing").gr_gid)
            except KeyError:
                pass
        self.listener.listen(64)
        if self.use_consumer:
            with self.links_lock:
                self.links[os.getuid()] = ConsumerLink(self.rundir)
                self.links[os.getuid()].start()
        # The pid file is written last: its presence means "ready to serve".
        tmp = paths.pid_path(self.rundir) + ".tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with open(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, paths.pid_path(self.rundir))
        _log(f"listening on {sock_path}")
        # accept() wakes up twice a second: SIGTERM may be delivered to any of
        # the daemon's threads, and Python runs its handler in the main thread
        # only when that thread next runs, which a blocking accept() could
        # postpone until the next connection.
        self.listener.settimeout(0.5)
        try:
            while not self.stopping.is_set():
                try:
                    conn, _ = self.listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    if self.stopping.is_set():
                        break
                    raise
                conn.settimeout(None)
                try:
                    creds = protocol.peer_credentials(conn)
                except OSError:
                    conn.close()
                    continue
                refusal = self._admit(creds[1])
                if refusal == "full":
                    conn.close()  # beyond every reserve: not even a thread for it
                    continue
                threading.Thread(target=self._connection, args=(conn, creds, refusal), daemon=True).start()
        finally:
            self.shutdown()

    def request_stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                self.listener.close()
            except OSError:
                pass

    def shutdown(self) -> None:
        """Stop every active session (traces complete on disk), then the consumers."""
        with self.lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            with s.lock:
                if s.destroyed:
                    continue
                try:
                    self._destroy(s)
                except Exception as exc:  # keep going: the others must still be flushed
                    _log(f"destroying {s.name}: {exc}")
        with self.lock:
            for app in list(self.apps.values()):
                app.kill("daemon stops")
        with self.links_lock:
            links = list(self.links.values())
        for link in links:
            link.stop()
        for p in (paths.socket_path(self.rundir), paths.pid_path(self.rundir)):
            try:
                if p.endswith(".pid"):
                    with open(p) as f:
                        if f.read().strip() != str(os.getpid()):
                            continue
                os.unlink(p)
            except OSError:
                pass
        _log("stopped")

    def _trusted(self, uid: int) -> bool:
        return uid == 0 or uid == os.getuid()

    def _admit(self, uid: int) -> str | None:
        """Count a new connection of ``uid``, or say why not (``"full"``: drop it unanswered)."""
        with self.nconn_lock:
            if self.nconn >= MAX_CONNECTIONS + TRUSTED_RESERVE:
                return "full"
            if not self._trusted(uid):
                refusal = None
                if self.nconn >= MAX_CONNECTIONS:
                    refusal = f"too many connections ({MAX_CONNECTIONS}); try again later"
                elif self.nconn_by_uid.get(uid, 0) >= MAX_CONNECTIONS_PER_UID:
                    refusal = f"too many connections from uid {uid} (at most {MAX_CONNECTIONS_PER_UID})"
                if refusal is not None:
                    # Answering takes a thread for a moment: a few at a time per uid.
                    if self.refusing_by_uid.get(uid, 0) >= MAX_REFUSING_PER_UID:
                        return "full"
                    self.refusing_by_uid[uid] = self.refusing_by_uid.get(uid, 0) + 1
                    return refusal
            self.nconn += 1
            self.nconn_by_uid[uid] = self.nconn_by_uid.get(uid, 0) + 1
            return None

    def _refused(self, uid: int) -> None:
        with self.nconn_lock:
            left = self.refusing_by_uid.get(uid, 1) - 1
            if left:
                self.refusing_by_uid[uid] = left
            else:
                self.refusing_by_uid.pop(uid, None)

    def _release(self, uid: int) -> None:
        with self.nconn_lock:
            self.nconn -= 1
            left = self.nconn_by_uid.get(uid, 1) - 1
            if left:
                self.nconn_by_uid[uid] = left
            else:
                self.nconn_by_uid.pop(uid, None)

    def _connection(self, conn: socket.socket, creds: tuple[int, int, int], refusal: str | None) -> None:
        pid, uid, gid = creds
        try:
            if refusal is not None:
                try:
                    self._reply_and_hang_up(conn, protocol.error_reply(refusal))
                finally:
                    self._refused(uid)
                return
            if not self.peer_allowed(uid, gid):
                self._reply_and_hang_up(conn, protocol.error_reply(f"permission denied for uid {uid}"))
                return
            conn.settimeout(None)
            while not self.stopping.is_set():
                try:
                    msg, fds = protocol.recv_msg(conn, idle=IDLE_TIMEOUT, read=READ_TIMEOUT, budget=self.budget)
                except (ConnectionClosed, protocol.IdleTimeout):
                    return
                except OSError:
                    return
                except ProtocolError as exc:
                    # Framing is lost after a bad header: answer, then hang up.
                    self._reply_and_hang_up(conn, protocol.error_reply(f"bad message: {exc}"))
                    return
                protocol.close_fds(fds)  # clients never send descriptors
                if msg.get("cmd") == "register":
                    self._app_connection(conn, pid, uid, msg)
                    return
                reply = self.handle(msg, uid)
                if not self._send(conn, reply):
                    return
                if msg.get("cmd") == "shutdown" and reply.get("ok"):
                    self.request_stop()
                    return
        except Exception:  # a bug must not take the daemon down with it
            _log("connection handler failed:\n" + traceback.format_exc())
        finally:
            if refusal is None:
                self._release(uid)
            try:
                conn.close()
            except OSError:
                pass

    @staticmethod
    def _reply_and_hang_up(conn: socket.socket, reply: dict) -> None:
        """Answer, then close without a reset: closing with unread input would
        make the kernel reset the connection and the peer could lose the answer.
        Two seconds at most, however slowly the peer sends."""
        deadline = time.monotonic() + 2.0
        try:
            conn.settimeout(1.0)
            protocol.send_msg(conn, reply)
            conn.shutdown(socket.SHUT_WR)
            total = 0
            while total < protocol.MAX_BODY + protocol.HEADER.size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                conn.settimeout(left)
                chunk = conn.recv(65536)
                if not chunk:
                    break
                total += len(chunk)
        except (OSError, ProtocolError):
            pass

    @staticmethod
    def _send(conn: socket.socket, reply: dict) -> bool:
        try:
            protocol.send_msg(conn, reply)
            return True
        except (OSError, ProtocolError):
            return False

    # -- client requests ---------------------------------------------------------

    def handle(self, msg: dict, caller: int | None = None) -> dict:
        """Answer one client request of uid ``caller``. Never raises."""
        try:
            cmd = msg.get("cmd")
            if not isinstance(cmd, str) or cmd not in SCHEMAS:
                raise ProtocolError(f"unknown command {cmd!r}")
            args = dict(msg)
            del args["cmd"]
            check(args, SCHEMAS[cmd])
            fn = getattr(self, "cmd_" + cmd)
            caller = os.getuid() if caller is None else caller
            if "session" in SCHEMAS[cmd]:
                # One command at a time per session; other sessions are not held up.
                with self._locked(args.pop("session"), caller) as s:
                    result = fn(s, **args)
            else:
                result = fn(caller, **args)
            return protocol.ok_reply(**(result or {}))
        except UstError as exc:
            return protocol.error_reply(str(exc))
        except Exception as exc:
            _log("request failed:\n" + traceback.format_exc())
            return protocol.error_reply(f"internal error: {type(exc).__name__}: {exc}")

    @staticmethod
    def _visible(s: Session, caller: int) -> bool:
        return caller == 0 or caller == s.uid

    @contextlib.contextmanager
    def _locked(self, name: str, caller: int):
        """The session ``name`` of ``caller``, held for one command.

        Another user's session does not exist for the caller: same error, so
        its name is not revealed either."""
        with self.lock:
            s = self.sessions.get(name)
        if s is None or not self._visible(s, caller):
            raise SessionError(f"no session named {name!r}")
        with s.lock:
            if s.destroyed:
                raise SessionError(f"no session named {name!r}")
            yield s

    def cmd_ping(self, caller: int) -> dict:
        with self.links_lock:
            link = self.links.get(self._consumer_uid(caller)) or self.links.get(os.getuid())
        return {"pid": os.getpid(), "version": protocol.PROTOCOL_VERSION,
                "consumer_pid": link.pid if link is not None else None}

    def cmd_stats(self, caller: int) -> dict:
        """The consumers' counters of every buffer of the caller's sessions (lost events, packets read...)."""
        with self.lock:
            sessions = [s for s in self.sessions.values() if self._visible(s, caller)]
        out: dict = {}
        for link in {id(lk): lk for lk in filter(None, map(self._link_if_running, sessions))}.values():
            keys = {t.key for s in sessions if self._link_if_running(s) is link for t in list(s.traces.values())}
            if keys:
                out.update({k: v for k, v in _consumer_stats(link).items() if k in keys})
        return {"traces": out}

    def cmd_shutdown(self, caller: int) -> dict:
        if not self._trusted(caller):
            raise SessionError(f"permission denied: only root or uid {os.getuid()} may shut this daemon down")
        return {}

    def cmd_create(self, caller: int, name: str, output: str | None = None, snapshot: bool = False,
                   token: str | None = None) -> dict:
        if output is None:
            stamp = time_stamp()
            try:
                home = pwd.getpwuid(caller).pw_dir
            except KeyError:
                raise SessionError(f"uid {caller} has no home directory: give an output directory") from None
            output = os.path.join(home, "ust-traces", f"{name}-{stamp}")
        if not os.path.isabs(output):
            raise SessionError(f"output directory must be an absolute path, got {output!r}")
        s = Session(name=name, output=os.path.normpath(output), uid=caller, snapshot=snapshot, token=token)
        with self.lock:
            if name in self.sessions:
                raise SessionError(f"a session named {name!r} already exists")
            self.sessions[name] = s
        return {"session": s.summary()}

    def cmd_destroy(self, s: Session) -> dict:
        self._destroy(s)
        summary = s.summary()
        summary["traces"] = s.trace_paths
        return {"session": summary}

    def _destroy(self, s: Session) -> None:
        """Under ``s.lock``."""
        if s.active:
            self._stop(s)
        link = self._link_if_running(s)
        if link is not None and s.traces:
            link.remove_traces([t.key for t in s.traces.values()])
        for t in s.traces.values():
            for ch in t.channels.values():
                protocol.close_fds(ch.fds)
        s.trace_paths = [t.path for t in s.traces.values()]
        s.traces.clear()
        s.destroyed = True
        with self.lock:
            if self.sessions.get(s.name) is s:
                del self.sessions[s.name]
        if s.probes:
            probe_rules.sync(self, held=s)

    def cmd_list(self, caller: int) -> dict:
        with self.lock:
            sessions = [s for s in self.sessions.values() if self._visible(s, caller)]
        return {"sessions": [s.summary() for s in sessions]}

    def cmd_session(self, s: Session) -> dict:
        return {"session": {**s.summary(), **self._lost(s)}}

    def cmd_apps(self, caller: int) -> dict:
        """The registered applications the caller may trace (root: all)."""
        with self.lock:  # their declarations change under this lock
            apps = [a.to_json() for a in self.apps.values() if caller == 0 or a.uid == caller]
        return {"apps": sorted(apps, key=lambda a: a["pid"])}

    def _channel(self, s: Session, name: str | None, create: bool = True) -> ChannelConf:
        name = name or DEFAULT_CHANNEL
        ch = s.channels.get(name)
        if ch is None:
            if not create:
                raise SessionError(f"no channel named {name!r} in session {s.name!r}")
            if s.active:
                raise SessionError(f"cannot add channel {name!r}: session {s.name!r} is active (stop it first)")
            ch = ChannelConf(name=name, overwrite=s.snapshot, buffers=s.buffers)
            s.channels[name] = ch
        return ch

    def cmd_enable_channel(self, s: Session, channel: str, **conf: Any) -> dict:
        if channel in s.channels:
            ch = s.channels[channel]
            if conf:
                raise SessionError(f"channel {channel!r} already exists in session {s.name!r}; "
                                   "its settings cannot be changed")
            ch.enabled = True
            self._sync_all(s)
            return {"channel": ch.to_json()}
        if s.active:
            raise SessionError(f"cannot add channel {channel!r}: session {s.name!r} is active (stop it first)")
        ch = ChannelConf(name=channel, overwrite=s.snapshot)
        for k, v in conf.items():
            setattr(ch, k, v)
        if s.snapshot and not ch.overwrite:
            raise SessionError("a snapshot session needs overwrite channels (drop --discard)")
        if not _pow2(ch.subbuf_size) or ch.subbuf_size < 4096:
            raise SessionError(f"sub-buffer size must be a power of two of at least 4096 bytes, got {ch.subbuf_size}")
        if not _pow2(ch.num_subbuf) or ch.num_subbuf < 2:
            raise SessionError(f"number of sub-buffers must be a power of two of at least 2, got {ch.num_subbuf}")
        if ch.tracefile_size and ch.tracefile_size < ch.subbuf_size:
            raise SessionError(f"tracefile size ({ch.tracefile_size}) must be at least the sub-buffer size "
                               f"({ch.subbuf_size})")
        if ch.tracefile_count and not ch.tracefile_size:
            raise SessionError("--tracefile-count needs --tracefile-size")
        if s.channels and ch.buffers != s.buffers:
            raise SessionError(f"session {s.name!r} uses per-{s.buffers} buffers; all its channels must")
        s.channels[channel] = ch
        return {"channel": ch.to_json()}

    def cmd_disable_channel(self, s: Session, channel: str) -> dict:
        ch = self._channel(s, channel, create=False)
        ch.enabled = False
        self._sync_all(s)
        return {}

    def cmd_enable_event(self, s: Session, patterns: list[str], channel: str | None = None,
                         exclusions: list[str] = (), filter: str | None = None,
                         loglevel: int | None = None, loglevel_only: bool = False,
                         domain: str | None = None) -> dict:
        domain = domain or "ust"
        if not patterns:
            raise SessionError("no event pattern given")
        if domain == "ust" and loglevel is not None and loglevel > 14:
            raise SessionError(f"log level {loglevel} is out of range 0-14")
        for p in list(patterns) + list(exclusions):
            check_pattern(p)
        for x in exclusions:
            if not any("*" in p for p in patterns):
                raise SessionError(f"exclusion {x!r} needs a wildcard event pattern")
        if filter is not None:
            _validate_filter(filter)
        ch = self._channel(s, channel)
        added = []
        for p in patterns:
            rule = EventRule(
                pattern=p, channel=ch.name, exclusions=tuple(exclusions), filter=filter,
                loglevel_type="all" if loglevel is None else ("single" if loglevel_only else "range"),
                loglevel=-1 if loglevel is None else loglevel, domain=domain,
            )
            s.enable_rule(rule)
            added.append(rule.to_json())
        self._sync_all(s)
        return {"rules": added}

    def cmd_disable_event(self, s: Session, patterns: list[str], channel: str | None = None) -> dict:
        chan = channel or DEFAULT_CHANNEL
        if chan not in s.channels:
            raise SessionError(f"no channel named {chan!r} in session {s.name!r}")
        n = 0
        for r in s.rules:
            if r.channel == chan and r.enabled and ("*" in patterns and len(patterns) == 1 or r.pattern in patterns):
                r.enabled = False
                n += 1
        if n == 0:
            raise SessionError(f"no enabled event rule {', '.join(patterns)} in channel {chan!r}")
        self._sync_all(s)
        return {"disabled": n}

    def cmd_enable_probe(self, s: Session, targets: list[str], event: str | None = None,
                         channel: str | None = None, filter: str | None = None, args: bool = True,
                         repr_limit: int = 256) -> dict:
        return probe_rules.enable(self, s, targets, event, channel, filter, args, repr_limit)

    def cmd_disable_probe(self, s: Session, targets: list[str], channel: str | None = None) -> dict:
        return probe_rules.disable(self, s, targets, channel)

    def cmd_add_context(self, s: Session, types: list[str], channel: str | None = None) -> dict:
        if s.active:
            raise SessionError(f"cannot add context: session {s.name!r} is active (stop it first)")
        if s.traces:
            raise SessionError(f"cannot add context: session {s.name!r} was already started")
        # like lttng: a named channel must exist (only the default one is created,
        # in a session without channels); no name means every channel
        if channel:
            chans = [self._channel(s, channel, create=not s.channels and channel == DEFAULT_CHANNEL)]
        else:
            chans = list(s.channels.values()) or [self._channel(s, None)]
        from ust.instrument import context as ctx

        try:
            for ch in chans:
                ctx.normalize(ch.context + types)  # the limits on the whole list
            ctx.check_available(types)
        except ValueError as exc:
            raise SessionError(str(exc)) from None
        for ch in chans:
            for t in types:
                if t not in ch.context:
                    ch.context.append(t)
        return {"channels": [c.name for c in chans]}

    def cmd_start(self, s: Session) -> dict:
        if s.active:
            raise SessionError(f"session {s.name!r} is already active")
        if not any(r.enabled for r in s.rules):
            raise SessionError(f"session {s.name!r} has no event rule enabled: use enable-event first")
        self._link(s)  # the owner's consumer runs (or the reason it cannot) before anything is sent
        if not s.traces:
            s.clock_offset = time.time_ns() - time.monotonic_ns()
        s.active = True
        try:
            probe_rules.sync(self, held=s)
            self._sync_all(s)
        except Exception:
            s.active = False
            raise
        return {"session": s.summary()}

    def cmd_stop(self, s: Session) -> dict:
        if not s.active:
            raise SessionError(f"session {s.name!r} is not active")
        self._stop(s)
        probe_rules.sync(self, held=s)
        return {"session": s.summary(), **self._lost(s)}

    def _lost(self, s: Session) -> dict:
        """The session's losses over every buffer so far: ``lost``, the events
        discarded (as the trace's discarded counts say), ``lost_args``, those whose
        arguments did not fit their tracepoint's fields, and ``overwritten``, the
        packets an overwrite-mode buffer lost before anyone read them (their events
        were never counted: only their number is known). The consumer's answer is
        checked like any peer's (it runs as the session's owner)."""
        lost = {"lost": 0, "lost_args": 0, "overwritten": 0}
        link = self._link_if_running(s)
        if not s.traces or link is None:
            return lost
        try:
            stats = _consumer_stats(link)
        except UstError:
            return lost
        from ust.ctf.writer import lost_events

        keys = {t.key for t in s.traces.values()}
        for key, chans in stats.items():
            if key in keys:
                for bufs in chans.values():
                    for b in bufs:
                        counts = {k: _count(v) for k, v in b.items() if k.startswith(("lost_", "packets_"))}
                        lost["lost"] += lost_events(counts)
                        lost["lost_args"] += counts.get("lost_args", 0)
                        lost["overwritten"] += counts.get("packets_overwritten", 0)
        return lost

    def _stop(self, s: Session) -> None:
        s.active = False
        # 1. Every application stops writing (detach): what is committed is final.
        pending = []
        for app in list(self.apps.values()):
            if s.name in app.state:
                pending.append((app, app.send_many([({"cmd": "remove_session", "session": s.name}, [])])))
                app.state.pop(s.name, None)
        for app, slots in pending:  # all sent, now all acknowledged
            app.wait_many(slots, 1)
        # 2. The consumer closes the partial packets and writes everything.
        link = self._link_if_running(s)
        if s.traces and link is not None:
            link.flush([t.key for t in s.traces.values()])

    def cmd_snapshot_record(self, s: Session, output: str | None = None) -> dict:
        if not s.snapshot:
            raise SessionError(f"session {s.name!r} is not a snapshot session (create it with --snapshot)")
        if not s.traces:
            raise SessionError(f"session {s.name!r} has no buffers yet: start it first")
        base = output or s.output
        if not os.path.isabs(base):
            raise SessionError(f"snapshot output must be an absolute path, got {base!r}")
        stamp = time_stamp()
        dest = os.path.join(base, f"snapshot-{s.snapshot_count}-{stamp}")
        s.snapshot_count += 1
        targets = {t.key: os.path.join(dest, os.path.relpath(t.path, s.output)) for t in s.traces.values()}
        self._link(s).snapshot(targets, base)
        return {"path": dest}

    # -- applications ------------------------------------------------------------

    def _app_connection(self, conn: socket.socket, pid: int, uid: int, msg: dict) -> None:
        try:
            check(msg, {"cmd": str, **APP_SCHEMAS["register"]})
        except ProtocolError as exc:
            self._send(conn, {**protocol.error_reply(str(exc)), "re": msg.get("seq", 0)})
            return
        if msg["pid"] != pid or msg["uid"] != uid:
            self._send(conn, {**protocol.error_reply(
                f"registration says pid {msg['pid']} uid {msg['uid']}, the socket says pid {pid} uid {uid}"),
                "re": msg["seq"]})
            return
        # A send that cannot complete within 2 s means the app is stuck: drop it.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 2, 0))
        app = App(conn, pid, uid, msg)
        self._enqueue(app, "register", msg)
        try:
            while True:
                try:
                    # No idle deadline (an application may stay quiet for days),
                    # but a message it starts must complete.
                    m, fds = protocol.recv_msg(conn, read=READ_TIMEOUT, budget=self.budget)
                except (ConnectionClosed, OSError):
                    break
                except ProtocolError as exc:
                    _log(f"app {pid}: {exc}; dropping it")
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
                    _log(f"app {pid}: more than {APP_QUEUE_BYTES >> 20} MiB of requests waiting; dropping it")
                    break
                self._enqueue(app, "app_request", (m, size))
        finally:
            # Whatever ended the loop, a dead peer is always deregistered.
            app.kill("disconnected")
            self._enqueue(app, "gone", None)

    def _enqueue(self, app: App, kind: str, msg: object) -> None:
        """Run an application's request after its earlier ones, on a worker of
        its own (started when needed): applications never wait for each other,
        so a session stalled on its consumer holds up only the applications
        that session records."""
        with app.work_lock:
            app.work.append((kind, msg))
            if app.working:
                return
            app.working = True
        threading.Thread(target=self._app_worker, args=(app,), name=f"app-{app.pid}", daemon=True).start()

    def _app_worker(self, app: App) -> None:
        while True:
            with app.work_lock:
                if not app.work:
                    app.working = False
                    return
                kind, msg = app.work.popleft()
            try:
                if kind == "register":
                    self._register(app, msg)
                elif kind == "app_request":
                    request, size = msg
                    try:
                        self._app_request(app, request)
                    finally:
                        with app.work_lock:
                            app.queued_bytes -= size
                elif kind == "sync":  # new declarations (a probe's events): every active session's rules
                    self._sync_active(app)
                elif kind == "gone":
                    with self.lock:
                        if self.apps.get(app.pid) is app:
                            del self.apps[app.pid]
                        self.decl_bytes -= app.decl_bytes
                        app.decl_bytes = 0
            except Exception:
                _log(f"app {app.pid}: {kind} failed:\n" + traceback.format_exc())

    def _add_decls(self, app: App, decls: list[dict]) -> str | None:
        """Keep ``app``'s new declarations, within the caps; an error message for what did not fit."""
        refused = 0
        with self.lock:
            for d in decls:
                k = protocol.decl_key(d)
                if k in app.decls:
                    continue
                if (len(app.decls) >= MAX_TRACEPOINTS_PER_APP or app.decl_bytes + len(k) > MAX_DECL_BYTES_PER_APP
                        or self.decl_bytes + len(k) > MAX_DECL_BYTES):
                    refused += 1
                    continue
                app.decls[k] = d
                app.unsynced.add(k)
                app.decl_bytes += len(k)
                self.decl_bytes += len(k)
        if refused:
            return (f"too many tracepoints: {refused} not registered (at most {MAX_TRACEPOINTS_PER_APP} "
                    f"and {MAX_DECL_BYTES_PER_APP >> 20} MiB of declarations per application); "
                    "they are not traced")
        return None

    def _sync_active(self, app: App) -> None:
        """Apply every active session's rules to ``app`` (its worker thread)."""
        with self.lock:
            sessions = [s for s in self.sessions.values() if s.active]
            applied = set(app.unsynced)
        try:
            self._sync_sessions(app, sessions)
        finally:
            with self.lock:
                app.unsynced -= applied

    def _sync_sessions(self, app: App, sessions: list[Session]) -> None:
        for s in sessions:
            if not self._app_in_session(s, app):
                continue  # decided without the session's lock: a stalled session does not hold others
            with s.lock:
                if s.active and not s.destroyed:
                    try:
                        self._sync_app(s, app)
                    except UstError as exc:
                        _log(f"app {app.pid}: session {s.name}: {exc}")

    def _register(self, app: App, msg: dict) -> None:
        with self.lock:
            old = self.apps.get(app.pid)
            if old is not None and old is not app:
                old.kill("replaced")
            if not app.alive:
                return  # it went away before the worker got to it
            self.apps[app.pid] = app
        error = self._add_decls(app, msg["tracepoints"])
        probe_rules.sync(self, [app])
        self._sync_active(app)
        app.reply(msg["seq"], protocol.error_reply(error) if error else protocol.ok_reply())

    def _app_request(self, app: App, msg: dict) -> None:
        cmd = msg.get("cmd")
        seq = msg.get("seq") if isinstance(msg.get("seq"), int) else 0
        try:
            if cmd != "declare":
                raise ProtocolError(f"unknown application request {cmd!r}")
            check(msg, {"cmd": str, **APP_SCHEMAS["declare"]})
        except ProtocolError as exc:
            app.reply(seq, protocol.error_reply(str(exc)))
            return
        error = self._add_decls(app, msg["tracepoints"])
        self._sync_active(app)
        app.reply(seq, protocol.error_reply(error) if error else protocol.ok_reply())

    # -- applying rules ------------------------------------------------------------

    def _sync_all(self, s: Session) -> None:
        if not s.active:
            return
        # Send to every application first, then collect: one round trip in all.
        finishers = [self._sync_app(s, app, wait=False) for app in list(self.apps.values())]
        for finish in finishers:
            if finish is not None:
                finish()

    @staticmethod
    def _app_in_session(s: Session, app: App) -> bool:
        # A user's session records only that user's processes; root's, any.
        return app.alive and (s.uid == 0 or app.uid == s.uid) and (s.token is None or s.token == app.token)

    def _trace_for(self, s: Session, app: App) -> Trace:
        owner = ("pid", app.pid) if s.buffers == "pid" else ("uid", app.uid)
        t = s.traces.get(owner)
        if t is not None:
            return t
        if owner[0] == "uid":
            path = str(uid_trace_dir(s.output, app.uid))
        else:
            path = str(pid_trace_dir(s.output, app.procname, app.pid))
        key = f"{s.name}/{owner[0]}-{owner[1]}"
        t = Trace(key=key, path=path, owner=owner, uuid=str(uuidlib.uuid4()))
        self._link(s).add_trace({
            "key": key, "path": path, "root": s.output, "uuid": t.uuid, "clock_offset": s.clock_offset,
            "drain": not s.snapshot, "session": s.name,
            "env": {"trace_name": s.name, "trace_buffering_scheme": owner[0], "buffering_id": owner[1],
                    **({"procname": app.procname, "vpid": app.pid} if owner[0] == "pid" else {})},
        })
        s.traces[owner] = t
        return t

    def _trace_channel(self, s: Session, t: Trace, conf: ChannelConf) -> TraceChannel:
        tc = t.channels.get(conf.name)
        if tc is None:
            stream_id = len(t.channels)
            fds = self._link(s).add_channel(t.key, {
                "name": conf.name, "stream_id": stream_id, "subbuf_size": conf.subbuf_size,
                "num_subbuf": conf.num_subbuf, "overwrite": conf.overwrite, "switch_timer": conf.switch_timer,
                "read_timer": conf.read_timer, "tracefile_size": conf.tracefile_size,
                "tracefile_count": conf.tracefile_count, "context": list(conf.context),
            })
            tc = TraceChannel(conf=conf, stream_id=stream_id, fds=fds)
            t.channels[conf.name] = tc
        return tc

    def _sync_app(self, s: Session, app: App, wait: bool = True):
        """Make ``app`` record exactly what the rules of active session ``s`` select.

        With ``wait=False`` the commands are sent and a function that waits for
        their acknowledgements (and records the outcome) is returned.
        """
        if not s.active or not self._app_in_session(s, app):
            return
        # What the rules select, per channel: tracepoint decl -> filter.
        wanted: dict[str, list[tuple[dict, str | None]]] = {}
        for conf in s.channels.values():
            if not conf.enabled:
                continue
            rules = [r for r in s.rules if r.channel == conf.name and r.enabled]
            for d in list(app.decls.values()):
                hits = [r for r in rules if r.matches(d["name"], d["loglevel"])]
                if hits:
                    wanted.setdefault(conf.name, []).append((d, combined_filter(hits)))
        if not wanted and s.name not in app.state:
            return
        t = self._trace_for(s, app)
        st = app.state.setdefault(s.name, {"channels": set(), "attached": {}})
        desired: dict[tuple[str, str, str], tuple[int, str | None]] = {}
        msgs: list[tuple[dict, list[int]]] = []
        new_channels: list[tuple[int, str]] = []  # (message index, channel key)
        for chan_name, items in wanted.items():
            conf = s.channels[chan_name]
            tc = self._trace_channel(s, t, conf)
            ckey = f"{t.key}/{chan_name}"
            if ckey not in st["channels"]:
                msgs.append(({
                    "cmd": "add_channel", "session": s.name, "key": ckey, "context": list(conf.context),
                    "shared": t.owner[0] == "uid", "ncpu": len(tc.fds), "wakeup": True,
                }, tc.fds + [self._link(s).wakeup_fd]))
                new_channels.append((len(msgs) - 1, ckey))
            new_events = []
            for d, flt in items:
                k = protocol.decl_key(d)
                eid = tc.events.get(k)
                if eid is None:
                    eid = len(tc.events)
                    tc.events[k] = eid
                    new_events.append({"id": eid, "decl": d})
                desired[(ckey, d["name"], k)] = (eid, flt)
            if new_events:
                # Metadata first: an event is never in a stream before it is described.
                try:
                    self._link(s).add_events(t.key, chan_name, new_events)
                except UstError:
                    # Not described (yet): the ids are handed out again next time.
                    for ev in new_events:
                        tc.events.pop(protocol.decl_key(ev["decl"]), None)
                    raise
        attached = st["attached"]
        todo = []
        for key in [k for k in attached if k not in desired or attached[k] != desired[k]]:
            ckey, name, _ = key
            msgs.append(({"cmd": "detach", "key": ckey, "tracepoint": name, "event_id": attached[key][0]}, []))
            del attached[key]
        for key, (eid, flt) in desired.items():
            if key in attached:
                continue
            ckey, name, _ = key
            msgs.append(({"cmd": "attach", "key": ckey, "tracepoint": name, "event_id": eid, "filter": flt,
                          "decl_key": key[2]}, []))
            todo.append((len(msgs) - 1, key, (eid, flt)))
        if not msgs:
            return None
        slots = app.send_many(msgs)

        def finish() -> None:
            acks = app.wait_many(slots, len(msgs))
            for i, ckey in new_channels:
                ack = acks[i]
                if ack and ack.get("ok"):
                    st["channels"].add(ckey)
                elif ack:
                    _log(f"app {app.pid} could not map channel {ckey}: {ack.get('error')}")
            for i, key, value in todo:
                ack = acks[i]
                if ack and ack.get("ok"):
                    attached[key] = value
                elif ack:
                    _log(f"app {app.pid}: attach {key[1]} failed: {ack.get('error')}")

        if wait:
            finish()
            return None
        return finish


def _count(value: object) -> int:
    """A counter from a consumer's answer: a non-negative int, else nothing."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64 else 0


def _consumer_stats(link: ConsumerLink) -> dict:
    """{trace key: {channel: [counters per buffer]}} from a consumer, of the expected shape only
    (a consumer runs as the session's owner: its answers are checked like any peer's)."""
    reply, fds = link.call({"cmd": "stats"})
    protocol.close_fds(fds)
    traces = reply.get("traces")
    if not isinstance(traces, dict):
        return {}
    return {k: {c: [b for b in bufs if isinstance(b, dict)] for c, bufs in chans.items() if isinstance(bufs, list)}
            for k, chans in traces.items() if isinstance(chans, dict)}


def _validate_filter(expr: str) -> None:
    """Reject an invalid filter here, with the position of the error."""
    from ust.filter import compile_filter

    compile_filter(expr)  # raises FilterError (a UstError) with the position


# ---------------------------------------------------------------------------
# entry point


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


if __name__ == "__main__":
    sys.exit(main())
