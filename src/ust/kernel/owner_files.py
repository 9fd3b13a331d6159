"""A kernel trace's files, created with their owner's credentials.

The kernel domain runs in root's session daemon; a session of a member of
the ``tracing`` group (through the system daemon) must still get trace files
that its owner made, in directories its owner controls, opened without
following links (docs/security.md). So root never creates them itself: a
short-lived helper, running as the owner (uid, gid, groups), creates
``<output>/kernel`` and the stream files (ust.ctf.writer's checks: the owner's
directories, no symbolic link, O_NOFOLLOW|O_EXCL) and hands the open file
descriptors back over a socket; the drain then writes packets into them.
Metadata is written by the same helper (atomically, as every metadata file).

``LocalFiles`` does the same in the caller's process, for its own files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from ust.ctf.writer import make_trace_dir, open_new_file, write_metadata
from ust.errors import UstError

HELPER_TIMEOUT = 60.0


class LocalFiles:
    """The caller's own files."""

    def open_streams(self, directory: str, root: str, names: list[str]) -> list[int]:
        make_trace_dir(directory, root)
        return [open_new_file(os.path.join(directory, n), os.O_WRONLY | os.O_APPEND) for n in names]

    def write_metadata(self, path: str, text: str) -> None:
        write_metadata(path, text, sync=True)


class OwnerFiles:
    """Files of user ``uid``, made by a helper running with that user's credentials."""

    def __init__(self, uid: int):
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
                    reply, fds = {"error": "the helper died"}, []
            err = proc.stderr.read(2000).decode("utf-8", "replace")
            proc.wait(HELPER_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if "error" in reply:
            for fd in fds:
                os.close(fd)
            detail = reply["error"] if reply["error"] != "the helper died" else (err.strip().splitlines() or
                                                                                   ["the helper died"])[-1]
            raise UstError(f"kernel trace of uid {self.uid}: {str(detail)[:300]}")
        return reply, fds

    def open_streams(self, directory: str, root: str, names: list[str]) -> list[int]:
        reply, fds = self._run({"op": "streams", "directory": directory, "root": root, "names": names})
        if len(fds) != len(names):
            for fd in fds:
                os.close(fd)
            raise UstError(f"kernel trace of uid {self.uid}: the helper returned {len(fds)} files, "
                           f"not {len(names)}")
        return fds

    def write_metadata(self, path: str, text: str) -> None:
        self._run({"op": "metadata", "path": path}, stdin=text)


def _helper(sock_fd: int, request: str) -> int:
    """The helper's side (running as the owner): do the request, answer with fds or an error."""
    from ust.daemon import protocol

    sock = socket.socket(fileno=sock_fd)
    try:
        req = json.loads(request)
        local = LocalFiles()
        if req["op"] == "streams":
            fds = local.open_streams(req["directory"], req["root"], list(req["names"]))
            protocol.send_msg(sock, {"ok": True}, fds)
        elif req["op"] == "metadata":
            local.write_metadata(req["path"], sys.stdin.read())
            protocol.send_msg(sock, {"ok": True})
        else:
            protocol.send_msg(sock, {"error": f"unknown request {req['op']!r}"})
    except (UstError, OSError, ValueError, KeyError) as exc:
        protocol.send_msg(sock, {"error": str(exc)})
    return 0


if __name__ == "__main__":
    sys.exit(_helper(int(sys.argv[1]), sys.argv[2]))
