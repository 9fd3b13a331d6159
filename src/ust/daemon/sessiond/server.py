"""The session daemon's server: its state, its socket, who may connect, and
the dispatch of a client's request to its command (``commands/``).

Threads: one per connection (a misbehaving client blocks only its own thread;
connections are capped at MAX_CONNECTIONS, and at MAX_CONNECTIONS_PER_UID for
any uid but root and the daemon's owner, who keep a reserve; a message must
complete within READ_TIMEOUT, a client connection idle for IDLE_TIMEOUT is
closed; the bodies being received share one INPUT_BUDGET). A connection whose
first message is ``register`` is an application's (``apps.serve_app``).

Locks: ``self.lock`` guards the tables (sessions, applications) and is never
held across a call to another process; each session has its own lock, held
while a command on that session runs, consumer and application round trips
included. A stalled consumer thus delays only the commands on its own
sessions. Commands sent to applications wait for their acknowledgement with a
timeout, never forever; an application whose socket stops draining is
dropped. The app reader threads take no lock, so an acknowledgement can
always be delivered to a waiting command.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import socket
import threading
import time
import traceback

from ust.daemon import paths, protocol
from ust.daemon.consumer_link import ConsumerLink
from ust.daemon.protocol import ConnectionClosed, check
from ust.daemon.sessiond import apps, commands
from ust.daemon.sessiond.commands.sessions import destroy_session
from ust.daemon.sessiond.limits import (
    IDLE_TIMEOUT, INPUT_BUDGET, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_UID, MAX_REFUSING_PER_UID, READ_TIMEOUT,
    TRUSTED_RESERVE,
)
from ust.daemon.sessiond.log import log
from ust.daemon.sessiond.model import Session
from ust.daemon.sessiond.triggers import TriggerTable
from ust.errors import ProtocolError, SessionError, UstError


class SessionDaemon:
    """The daemon's state (sessions, applications, consumer links) and its server."""

    def __init__(self, rundir: str, consumer: bool = True):
        self.rundir = rundir
        self.lock = threading.RLock()  # the tables only; never held across a call to another process
        self.sessions: dict[str, Session] = {}
        self.apps: dict[int, apps.App] = {}
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
        self.triggers = TriggerTable()

    # -- peers ---------------------------------------------------------------

    def peer_allowed(self, uid: int, gid: int) -> bool:
        me = os.getuid()
        if uid == me or uid == 0:
            return True
        return self.system and self.tracing_member(uid, gid)

    @staticmethod
    def tracing_member(uid: int, gid: int | None = None) -> bool:
        """Whether ``uid`` (connected with primary group ``gid``) is of the ``tracing`` group."""
        try:
            g = grp.getgrnam("tracing")
        except KeyError:
            return False
        if gid == g.gr_gid:
            return True
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return False
        return pw.pw_gid == g.gr_gid or pw.pw_name in g.gr_mem

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
        from ust.daemon.sessiond import kernel

        kernel.remove_stale()  # ftrace instances a crashed ust left behind (root only)
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
        log(f"listening on {sock_path}")
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
                    destroy_session(self, s)
                except Exception as exc:  # keep going: the others must still be flushed
                    log(f"destroying {s.name}: {exc}")
        with self.lock:
            for app in list(self.apps.values()):
                app.kill()
        with self.links_lock:
            links = list(self.links.values())
        for link in links:
            link.stop()
        from ust.daemon.sessiond import ktriggers

        ktriggers.shutdown(self)  # their consumers closed the readers: the instances can go
        for p in (paths.socket_path(self.rundir), paths.pid_path(self.rundir)):
            try:
                if p.endswith(".pid"):
                    with open(p) as f:
                        if f.read().strip() != str(os.getpid()):
                            continue
                os.unlink(p)
            except OSError:
                pass
        log("stopped")

    def trusted(self, uid: int) -> bool:
        """Root and the daemon's owner: they keep a reserve of connections and may shut it down."""
        return uid == 0 or uid == os.getuid()

    def _admit(self, uid: int) -> str | None:
        """Count a new connection of ``uid``, or say why not (``"full"``: drop it unanswered)."""
        with self.nconn_lock:
            if self.nconn >= MAX_CONNECTIONS + TRUSTED_RESERVE:
                return "full"
            if not self.trusted(uid):
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
                    apps.serve_app(self, conn, pid, uid, msg, gid)
                    return
                reply = self.handle(msg, uid)
                if not self.send_quietly(conn, reply):
                    return
                if msg.get("cmd") == "shutdown" and reply.get("ok"):
                    self.request_stop()
                    return
        except Exception:  # a bug must not take the daemon down with it
            log("connection handler failed:\n" + traceback.format_exc())
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
    def send_quietly(conn: socket.socket, reply: dict) -> bool:
        """Send ``reply``; False if the peer is gone (nothing more to tell it)."""
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
            command = commands.COMMANDS.get(cmd) if isinstance(cmd, str) else None
            if command is None:
                raise ProtocolError(f"unknown command {cmd!r}")
            args = dict(msg)
            del args["cmd"]
            check(args, command.schema)
            caller = os.getuid() if caller is None else caller
            if command.on_session:
                # One command at a time per session; other sessions are not held up.
                with self._locked(args.pop("session"), caller) as s:
                    result = command.run(self, s, **args)
            else:
                result = command.run(self, caller, **args)
            return protocol.ok_reply(**(result or {}))
        except UstError as exc:
            return protocol.error_reply(str(exc))
        except Exception as exc:
            log("request failed:\n" + traceback.format_exc())
            return protocol.error_reply(f"internal error: {type(exc).__name__}: {exc}")

    @staticmethod
    def visible(s: Session, caller: int) -> bool:
        return caller == 0 or caller == s.uid

    @contextlib.contextmanager
    def _locked(self, name: str, caller: int):
        """The session ``name`` of ``caller``, held for one command.

        Another user's session does not exist for the caller: same error, so
        its name is not revealed either."""
        with self.lock:
            s = self.sessions.get(name)
        if s is None or not self.visible(s, caller):
            raise SessionError(f"no session named {name!r}")
        with s.lock:
            if s.destroyed:
                raise SessionError(f"no session named {name!r}")
            yield s
