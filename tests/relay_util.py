"""Helpers for the relay tests: a real ust-relayd, traces to stream, viewers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from daemon_util import ROOT, SRC, wait_until

TRACE_APP = r"""
import os, sys, threading
import ust
tp = ust.tracepoint("relay:ev", {"n": ust.uint32, "who": ust.string})
other = ust.tracepoint("relay:other", {"x": ust.int64})
def work(k):
    for i in range(3000):
        tp(i, f"thread{k}")
        if i % 7 == 0:
            other(-i)
with ust.Session(sys.argv[1], events=["relay:*"], context=["vtid"], subbuf_size=4096, num_subbuf=64,
                 mode="discard"):
    ts = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in ts: t.start()
    for t in ts: t.join()
"""


def make_trace(path) -> None:
    env = dict(os.environ, PYTHONPATH=SRC, UST_AGENT="0")
    r = subprocess.run([sys.executable, "-c", TRACE_APP, str(path)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr


class Relayd:
    """A real ust-relayd on ephemeral loopback ports."""

    def __init__(self, output, rundir, *extra: str, address: str = "127.0.0.1", prefix: tuple = (),
                 ports: tuple = (0, 0, 0), env: dict | None = None):
        self.output = str(output)
        self.pid_file = os.path.join(str(rundir), "relayd.pid")
        env = dict(os.environ, PYTHONPATH=SRC, UST_HOME=str(rundir), **(env or {}))
        self.log = os.path.join(str(rundir), "relayd.log")  # a file: a pipe nobody reads would block the relay
        self.stderr = ""
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "ust.relay.relayd", "-C", f"tcp://{address}:{ports[0]}", "-D",
             f"tcp://{address}:{ports[1]}", "-L", f"tcp://{address}:{ports[2]}", "-o", self.output, "--pid-file",
             self.pid_file, *extra],
            env=env, stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True, cwd=ROOT)
        line = self.proc.stdout.readline().split()
        self.proc.stdout.close()
        assert line[:2] == ["ust-relayd:", "control"], (line, open(self.log).read())
        self.control = int(line[2].rsplit(":", 1)[1])
        self.data = int(line[4].rsplit(":", 1)[1])
        self.live = int(line[6].rsplit(":", 1)[1])
        self.address = address
        wait_until(lambda: os.path.exists(self.pid_file), what="the relay's pid file")

    @property
    def live_url(self) -> str:
        return f"net://{self.address}:{self.live}"

    @property
    def net_url(self) -> str:
        return f"net://{self.address}:{self.control}:{self.data}"

    def client(self):
        from ust.relay.sender import RelayClient

        return RelayClient(self.address, self.control, self.data)

    def kill(self) -> None:
        """SIGKILL: a relay that crashes."""
        self.proc.kill()
        self.proc.wait(timeout=60)

    def restart(self) -> None:
        """A new relay on the same ports and output."""
        self.__init__(self.output, os.path.dirname(self.pid_file), address=self.address,
                      ports=(self.control, self.data, self.live))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        with open(self.log) as f:
            self.stderr = f.read()
        return rc


def live_viewer(url: str, out_path, end_when_gone: bool = True) -> subprocess.Popen:
    """babeltrace2 following a live session, its text into ``out_path``."""
    args = ["babeltrace2"] + ([f"--log-level={os.environ['UST_TEST_BT2_LOG']}"] if os.environ.get("UST_TEST_BT2_LOG") else []) + ["-i", "lttng-live", url]
    if end_when_gone:
        args.append("--params=session-not-found-action=end")
    return subprocess.Popen(args, stdout=open(out_path, "w"), stderr=subprocess.PIPE, text=True)


def files_of(root, indexes: bool = True) -> dict[str, bytes]:
    """Every file under ``root`` by its relative path (``indexes=False``: not the packet indexes,
    ``index/*.idx``, which the relay writes and an embedded session's trace has not)."""
    out = {}
    for directory, _dirs, files in os.walk(root):
        if not indexes and os.path.basename(directory) == "index":
            continue
        for f in files:
            p = os.path.join(directory, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def attached_viewers(relay) -> int:
    """Viewers attached to the relay's sessions, as LIST_SESSIONS tells."""
    from ust.relay.viewer import LiveClient

    v = LiveClient(relay.address, relay.live)
    try:
        return sum(s.clients for s in v.list_sessions())
    finally:
        v.close()


class CuttingProxy:
    """A TCP relay between consumers and a real ust-relayd (its control and data ports), which cuts
    every connection it carries -- the consumer's and the relay's sides both see them end -- when,
    armed, it sees a CLOSE_STREAM frame go to the relay, before passing it on: a link that breaks
    at a rotation's switch. ``cuts`` counts the cuts; it disarms itself after each."""

    def __init__(self, relay: "Relayd"):
        import socket
        import threading

        from ust.relay import wire

        self.wire = wire
        self.relay = relay
        self.lock = threading.Lock()
        self.armed = False
        self.cuts = 0
        self.conns: list = []  # open now
        self.every: list = []
        self.listeners = []
        self.ports = []
        for target in (relay.control, relay.data):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            self.listeners.append(s)
            self.ports.append(s.getsockname()[1])
            threading.Thread(target=self._accept, args=(s, target, target == relay.control), daemon=True).start()

    @property
    def net_url(self) -> str:
        return f"net://127.0.0.1:{self.ports[0]}:{self.ports[1]}"

    def arm(self) -> None:
        with self.lock:
            self.armed = True

    def _accept(self, listener, target: int, control: bool) -> None:
        import socket
        import threading

        while True:
            try:
                down, _ = listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", target))
            with self.lock:
                self.conns += [down, up]
                self.every += [down, up]
            threading.Thread(target=self._pump, args=(down, up, control), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, False), daemon=True).start()

    def _pump(self, src, dst, frames: bool) -> None:
        """Copy src to dst; with ``frames`` (a control connection, consumer to relay), frame by frame."""
        wire = self.wire
        try:
            while True:
                if not frames:
                    data = src.recv(1 << 16)
                    if not data:
                        break
                    dst.sendall(data)
                    continue
                head = wire._recv_exact(src, wire.HEADER.size)
                _magic, _version, msg_type, length = wire.HEADER.unpack(head)
                body = wire._recv_exact(src, length)
                with self.lock:
                    cut = self.armed and msg_type == wire.CLOSE_STREAM
                    if cut:
                        self.armed = False
                        self.cuts += 1
                if cut:
                    self.cut()
                    return
                dst.sendall(bytes(head) + bytes(body))
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(2)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(2)
            except OSError:
                pass

    def close(self) -> None:
        for s in self.listeners:
            s.close()
        self.cut()
        for s in self.every:
            s.close()
