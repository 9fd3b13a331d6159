"""The session daemon's side of ust-consumerd: spawn, supervise, talk.

The consumer is a child process connected by a socketpair. Requests are
serialized (one in flight). Everything the consumer was told (traces, channels
with their buffer descriptors, events) is kept in a replay log, so when the
consumer dies a new one is spawned, receives the *same* shared-memory buffers
and carries on draining them: applications never notice, and what they
committed while no consumer ran is still in the buffers.

One link per session owner: a consumer runs with the credentials of the user
whose sessions it writes (the system daemon spawns it with that user's uid,
gid and groups), so every trace file is created by its owner and a path the
owner chose can never make root write anywhere (docs/security.md).

A consumer that does not answer within the request timeout (stopped, busy)
fails that request only: requests carry an id, the late answer is read and
dropped before the next one, and the consumer is used again once it answers.
Only a consumer caught mid-message (the framing is lost) is killed and
replaced.
"""

from __future__ import annotations

import os
import pwd
import select
import socket
import subprocess
import sys
import threading
import time

from ust.daemon import protocol
from ust.errors import DaemonError, ProtocolError

READY_TIMEOUT = 15.0
REQUEST_TIMEOUT = float(os.environ.get("UST_CONSUMER_TIMEOUT") or 60.0)


class Owner:
    """The credentials a consumer runs with."""

    def __init__(self, uid: int):
        self.uid = uid
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            raise DaemonError(f"uid {uid} has no user entry: cannot run a consumer for it") from None
        self.name = pw.pw_name
        self.gid = pw.pw_gid
        self.home = pw.pw_dir
        self.groups = os.getgrouplist(pw.pw_name, pw.pw_gid)


def _log(msg: str) -> None:
    print(f"ust-sessiond[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


class ConsumerLink:
    def __init__(self, rundir: str, owner: Owner | None = None):
        self.rundir = rundir
        self.owner = owner  # None: the daemon's own credentials
        self.cv = threading.Condition()
        self.request_id = 0  # answers carry it: a late answer is recognized and dropped
        self.sock: socket.socket | None = None
        self.proc: subprocess.Popen | None = None
        self.ready = False
        self.stopping = False
        self.restarts = 0
        # replay log: trace key -> {"trace": msg, "channels": [(msg, fds)], "events": [msg]}
        self.log: dict[str, dict] = {}
        self.thread: threading.Thread | None = None
        # One eventfd for the life of the sessiond: consumers come and go,
        # applications keep writing to this one to wake the current consumer.
        self.wakeup_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Written by the consumer when kernel trigger matches wait (the daemon's ktriggers thread
        # watches it); the same one for every consumer of this link, as wakeup_fd.
        self.matches_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.kernel_triggers: dict[int, tuple[dict, list[int]]] = {}  # replayed to a restarted consumer

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.ready else None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._supervise, name="consumer-supervisor", daemon=True)
        self.thread.start()
        with self.cv:
            self.cv.wait_for(lambda: self.ready or self.stopping, READY_TIMEOUT)

    def _spawn(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        drop = self.owner is not None and self.owner.uid != os.getuid()
        if drop:
            # Nothing of the daemon's environment for another user's process.
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.owner.home,
                   "USER": self.owner.name, "LOGNAME": self.owner.name, "PYTHONPATH": src}
            creds = dict(user=self.owner.uid, group=self.owner.gid, extra_groups=self.owner.groups, cwd="/")
        else:
            env = dict(os.environ)
            env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            creds = {}
        env["UST_AGENT"] = "0"  # the consumer must never trace itself
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ust.daemon.consumerd", "--fd", str(child.fileno()),
                 "--wakeup-fd", str(self.wakeup_fd), "--matches-fd", str(self.matches_fd)],
                pass_fds=[child.fileno(), self.wakeup_fd, self.matches_fd], env=env, stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE if drop else None, **creds,
            )
        finally:
            child.close()
        if drop:
            threading.Thread(target=self._relay_log, args=(self.proc.stderr,), name="consumer-log",
                             daemon=True).start()
        parent.settimeout(REQUEST_TIMEOUT)
        self.sock = parent
        self._call_locked({"cmd": "ping"})

    def _relay_log(self, pipe) -> None:
        """Another user's consumer does not get the daemon's log file: its lines
        are passed on, labelled with its uid, printable and at most 1000 characters."""
        with pipe:
            for raw in pipe:
                line = "".join(c if c.isprintable() else "?" for c in raw.decode("utf-8", "replace").rstrip("\n"))
                print(f"ust-consumerd[uid {self.owner.uid}]: {line[:1000]}", file=sys.stderr, flush=True)

    def _replay(self) -> None:
        for entry in self.log.values():
            if "fds" in entry:  # a kernel trace: the same readers, appending to the same files
                self._call_locked({**entry["trace"], "attach": True}, entry["fds"])
            else:
                self._call_locked(entry["trace"])
            for msg, fds in entry["channels"]:
                self._call_locked({**msg, "attach": True}, fds)
            if entry["events"]:
                for ev in entry["events"]:
                    self._call_locked(ev)
        for msg, fds in self.kernel_triggers.values():  # the same readers: what the rings hold waits there
            self._call_locked({**msg, "attach": True}, fds)

    def _supervise(self) -> None:
        backoff = 0.1
        while True:
            with self.cv:
                if self.stopping:
                    return
                try:
                    self._spawn()
                    self._replay()
                    self.ready = True
                    backoff = 0.1
                except (OSError, ProtocolError, DaemonError) as exc:
                    _log(f"consumer failed to start: {exc}")
                    self._kill_locked()
                self.cv.notify_all()
                proc = self.proc
            if proc is not None and self.ready:
                proc.wait()
            with self.cv:
                self.ready = False
                if self.stopping:
                    self.cv.notify_all()
                    return
                code = proc.returncode if proc is not None else None
                _log(f"consumer daemon exited (status {code}); restarting it")
                self.restarts += 1
                self._close_sock()
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _close_sock(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def _kill_locked(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_sock()

    def stop(self) -> None:
        with self.cv:
            self.stopping = True
            if self.ready and self.sock is not None:
                try:
                    self._call_locked({"cmd": "quit"})
                except (OSError, ProtocolError, DaemonError):
                    pass
            proc = self.proc
        if proc is not None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with self.cv:
            self._close_sock()
            for entry in self.log.values():
                for _, fds in entry["channels"]:
                    protocol.close_fds(fds)
            self.log.clear()

    # -- requests ------------------------------------------------------------------

    def _call_locked(self, msg: dict, fds: list[int] = ()) -> tuple[dict, list[int]]:
        if self.sock is None:
            raise DaemonError("the consumer daemon is not running")
        self.request_id += 1
        rid = self.request_id
        deadline = time.monotonic() + REQUEST_TIMEOUT  # for the whole exchange, late answers included
        try:
            protocol.send_msg(self.sock, {**msg, "id": rid}, fds)
            while True:
                # Wait for an answer to start without reading anything, so a
                # timeout here leaves the stream framed and the consumer usable.
                ready, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise DaemonError(f"the consumer daemon did not answer {msg.get('cmd')} within "
                                      f"{REQUEST_TIMEOUT:g}s (stopped or overloaded?); it is used again "
                                      "once it answers")
                reply, rfds = protocol.recv_msg(self.sock, read=max(1.0, deadline - time.monotonic()))
                if reply.get("re") == rid:
                    break
                protocol.close_fds(rfds)  # the answer to a request that timed out
        except (OSError, ProtocolError) as exc:
            # Framing lost (or the consumer died): replace it; the supervisor
            # respawns one and replays the log.
            self.ready = False
            self._kill_locked()
            raise DaemonError(f"lost the consumer daemon during {msg.get('cmd')}: {exc}") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            protocol.close_fds(rfds)
            raise DaemonError(f"consumer daemon: {reply.get('error', 'request failed')}")
        return reply, rfds

    def call(self, msg: dict, fds: list[int] = (), retry: bool = True) -> tuple[dict, list[int]]:
        """One request; if the consumer dies under it, wait for its successor and retry once."""
        with self.cv:
            for attempt in (0, 1):
                if not self.cv.wait_for(lambda: self.ready or self.stopping, READY_TIMEOUT) or self.stopping:
                    raise DaemonError("the consumer daemon is not running")
                try:
                    return self._call_locked(msg, fds)
                except DaemonError:
                    if not retry or attempt:
                        raise
                    if self.proc is not None and self.proc.poll() is None:
                        raise
                    self.cv.wait_for(lambda: not self.ready or self.stopping, 2.0)
        raise DaemonError("unreachable")

    def add_trace(self, msg: dict) -> None:
        full = {"cmd": "add_trace", **msg}
        with self.cv:
            self.call(full)
            self.log[msg["key"]] = {"trace": full, "channels": [], "events": []}

    def add_channel(self, trace: str, conf: dict) -> list[int]:
        """Create the channel's buffers (one per CPU); returns their descriptors (ours to keep)."""
        msg = {"cmd": "add_channel", "trace": trace, **conf}
        with self.cv:
            _, fds = self.call(msg)
            self.log[trace]["channels"].append((msg, list(fds)))
        return fds

    def add_kernel_trace(self, msg: dict, fds: list[int]) -> None:
        """A kernel trace over an ftrace instance's readers (``fds``: ours to keep, and to
        hand again to a restarted consumer)."""
        full = {"cmd": "add_kernel_trace", **msg}
        with self.cv:
            self.call(full, fds)
            self.log[msg["key"]] = {"trace": full, "fds": fds, "channels": [], "events": []}

    def add_kernel_events(self, trace: str, formats: list, tracked: list) -> None:
        """Formats of kernel events about to be enabled (``tracked``: for the prio context only)."""
        msg = {"cmd": "add_kernel_events", "trace": trace, "formats": formats, "tracked": tracked}
        with self.cv:
            self.call(msg)
            self.log[trace]["events"].append(msg)

    def add_kernel_trigger(self, msg: dict, fds: list[int]) -> None:
        """A kernel trigger's instance readers (``fds``: ours to keep, and to hand again to a restarted
        consumer; the caller closes them after ``remove_kernel_trigger``)."""
        full = {"cmd": "add_kernel_trigger", **msg}
        with self.cv:
            self.call(full, fds)
            self.kernel_triggers[msg["trigger"]] = (full, fds)

    def remove_kernel_trigger(self, trigger: int) -> None:
        with self.cv:
            self.kernel_triggers.pop(trigger, None)
            self.call({"cmd": "remove_kernel_trigger", "trigger": trigger})

    def add_events(self, trace: str, channel: str, events: list[dict]) -> None:
        msg = {"cmd": "add_events", "trace": trace, "channel": channel, "events": events}
        with self.cv:
            self.call(msg)
            self.log[trace]["events"].append(msg)

    def flush(self, traces: list[str]) -> None:
        self.call({"cmd": "flush", "traces": traces})

    def snapshot(self, targets: dict[str, str], root: str | None, relay: dict | None = None) -> None:
        msg = {"cmd": "snapshot", "targets": targets, "root": root}
        if relay is not None:
            msg["relay"] = relay  # targets are then paths in a relay session (ust.relay.output)
        self.call(msg)

    def clear(self, traces: list[str]) -> None:
        """Empty the buffers (consumed unwritten) and the stream files of these traces."""
        self.call({"cmd": "clear", "traces": traces})

    def chunk_bytes(self, traces: list[str]) -> int:
        """Bytes written to these traces since their last chunk switch (0 if the answer is not a count:
        the consumer runs as the session's owner, its answers are checked like any peer's)."""
        reply, fds = self.call({"cmd": "chunk_bytes", "traces": traces})
        protocol.close_fds(fds)
        n = reply.get("bytes")
        return n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 63 else 0

    def kernel_statedump(self, traces: list[str]) -> None:
        """The kernel traces write their statedump again (``regenerate statedump``)."""
        self.call({"cmd": "kernel_statedump", "traces": traces})

    def regenerate_metadata(self, traces: list[str], clock_offset: int) -> None:
        with self.cv:
            self.call({"cmd": "regenerate_metadata", "traces": traces, "clock_offset": clock_offset})
            for key in traces:
                if key in self.log:
                    self.log[key]["trace"]["clock_offset"] = clock_offset

    def rotate(self, targets: dict[str, str], root: str, chunk: str, archive: str) -> tuple[str | None, str]:
        """A chunk switch (ust-consumerd's ``rotate``); a restarted consumer reopens the new paths.
        Returns the archive's directory on the relay (a streamed session), else None, and why
        the relay did not archive it ("" if it did)."""
        with self.cv:
            reply, _ = self.call({"cmd": "rotate", "targets": targets, "root": root, "chunk": chunk,
                                  "archive": archive})
            for key, path in targets.items():
                if key in self.log:
                    trace = self.log[key]["trace"]
                    trace["path"] = path
                    if trace.get("relay"):  # its place in the relay session's tree
                        trace["relay"] = {**trace["relay"], "path": path[len(root) + 1:]}
            path, error = reply.get("path"), reply.get("archive_error")
            return (path if isinstance(path, str) and 0 < len(path) < 4096 else None,
                    error[:500] if isinstance(error, str) else "")

    def remove_traces(self, traces: list[str]) -> None:
        with self.cv:
            try:
                self.call({"cmd": "remove_traces", "traces": traces})
            finally:
                for key in traces:
                    self.log.pop(key, None)  # the session closes the fds it holds
