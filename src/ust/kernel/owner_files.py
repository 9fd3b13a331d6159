"""A kernel trace's files, created with their owner's credentials.

The kernel domain runs in root's session daemon; a session of a member of
the ``tracing`` group (through the system daemon) must still get trace files
that its owner made, in directories its owner controls, opened without
following links (docs/security.md). So root never creates them itself: a
short-lived helper, running as the owner (uid, gid, groups), makes the
trace's output with the consumer core's local files
(``ust.consumer.output.LocalTraceOutput``: ust.ctf.writer's checks, the
owner's directories, no symbolic link, O_NOFOLLOW|O_EXCL) and hands the open
stream files back over a socket; metadata is written by the same helper.

``OwnerTraceOutput`` is that output as the consumer core sees it (a
``TraceOutput`` whose streams append to the descriptors received).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from ust.consumer.output import StreamFile, StreamOutput, TraceOutput
from ust.ctf.writer import stream_file_name
from ust.errors import UstError

HELPER_TIMEOUT = 60.0


class _FdStream(StreamFile):
    """A stream file the owner's helper opened: the core's StreamFile (appends,
    accounting, sync, close) over the descriptor received, never rotated."""

    def __init__(self, fd: int, directory: str, name: str):  # noqa: super().__init__ would open a path
        self.directory, self.name = directory, name
        self.size = self.count = 0
        self.truncate = True
        self.index = self.written = self.bytes_written = self.packets = 0
        self.fd = fd


class OwnerTraceOutput(TraceOutput):
    """``directory`` (below ``root``, the session's output) made by user ``uid``;
    its streams (``channel`` on ``cpus``) opened at once, by one helper."""

    def __init__(self, uid: int, directory: str, root: str, channel: str, cpus: int):
        import pwd

        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            raise UstError(f"uid {uid} has no user entry: cannot write its kernel trace") from None
        self.uid, self.gid = uid, pw.pw_gid
        self.groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": pw.pw_dir, "PYTHONPATH": src,
                    "UST_AGENT": "0"}
        self.directory, self.root = directory, root
        names = [stream_file_name(channel, cpu) for cpu in range(cpus)]
        _, fds = self._run({"op": "streams", "directory": directory, "root": root, "channel": channel,
                            "cpus": cpus})
        if len(fds) != cpus:
            for fd in fds:
                os.close(fd)
            raise UstError(f"kernel trace of uid {uid}: the helper returned {len(fds)} files, not {cpus}")
        self.streams = {(channel, cpu): _FdStream(fd, directory, name)
                        for cpu, (fd, name) in enumerate(zip(fds, names))}

    def stream(self, channel, cpu: int) -> StreamOutput:
        return self.streams[(channel.name, cpu)]

    def write_metadata(self, text: str) -> None:
        self._run({"op": "metadata", "directory": self.directory, "root": self.root}, stdin=text)

    def close(self) -> None:
        for s in self.streams.values():
            s.close()

    def _run(self, request: dict, stdin: str = "") -> tuple[dict, list[int]]:
        from ust.daemon import protocol

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "ust.kernel.owner_files", str(child.fileno()),
                                     json.dumps(request)],
                                    pass_fds=[child.fileno()], env=self.env, stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, user=self.uid,
                                    group=self.gid, extra_groups=self.groups, cwd="/")
        finally:
            child.close()
        try:
            with parent:
                parent.settimeout(HELPER_TIMEOUT)
                proc.stdin.write(stdin.encode())
                proc.stdin.close()
                try:
                    reply, fds = protocol.recv_msg(parent)
                except Exception:
                    reply, fds = {}, []
            err = proc.stderr.read(2000).decode("utf-8", "replace").strip().splitlines()
            proc.wait(HELPER_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            detail = reply.get("error") or (err[-1] if err else "the helper died")
            raise UstError(f"kernel trace of uid {self.uid}: {str(detail)[:300]}")
        return reply, fds


def _helper(sock_fd: int, request: str) -> int:
    """The helper's side (running as the owner): do the request, answer with fds or an error."""
    from ust.consumer.output import LocalTraceOutput
    from ust.consumer.trace import ChannelSpec
    from ust.daemon import protocol

    sock = socket.socket(fileno=sock_fd)
    try:
        req = json.loads(request)
        out = LocalTraceOutput(req["directory"], req["root"], fresh=True)
        if req["op"] == "streams":
            spec = ChannelSpec(str(req["channel"]), 0, 4096, 2)
            files = [out.stream(spec, cpu) for cpu in range(int(req["cpus"]))]
            protocol.send_msg(sock, {"ok": True}, [f.release_fd() for f in files])
        elif req["op"] == "metadata":
            out.write_metadata(sys.stdin.read())
            out.sync()
            protocol.send_msg(sock, {"ok": True})
        else:
            protocol.send_msg(sock, {"error": f"unknown request {req['op']!r}"})
    except (UstError, OSError, ValueError, KeyError) as exc:
        protocol.send_msg(sock, {"error": str(exc)})
    return 0


if __name__ == "__main__":
    sys.exit(_helper(int(sys.argv[1]), sys.argv[2]))
