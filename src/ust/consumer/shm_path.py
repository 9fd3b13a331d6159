"""A trace's ring buffers in files (``ust create --shm-path DIR``), for crash recovery.

Without ``--shm-path`` a trace's ring buffers are anonymous memfds: when every
process mapping them is gone (the applications, the consumer, the session
daemon, all killed at once) their contents go too. With it, each buffer is a
file, ``<trace dir>/<channel>_<cpu>``, mapped ``MAP_SHARED`` by the same
processes as the memfd would be: what the writers committed stays in the file
(in the page cache, or on disk) after they all die, and ``ust crash``
(``ust.consumer.crash``) recovers it as a CTF trace. The trace's metadata is
written beside them, ``<trace dir>/metadata``, each time it changes and before
any application may record the events it describes, so it always describes
every event the buffers hold.

The tree is laid out as the trace output's (``ust/uid/<uid>/64-bit``,
``ust/pid/<procname>-<pid>-<date>``) under ``<DIR>/<session>-<date>``, as
lttng's. It is created by the consumer, which runs with the session owner's
credentials, through ``ust.ctf.writer``: directories of that owner alone
(mode 0750, no symbolic link on the way), files created ``O_EXCL |
O_NOFOLLOW``, mode 0600. ``remove`` deletes the files when the session is
destroyed (lttng does the same); a crash leaves them for ``ust crash``.
"""

from __future__ import annotations

import os

from ust._ring._ring import Buffer
from ust.ctf.writer import make_trace_dir, open_new_file, stream_file_name, write_metadata

__all__ = ["ShmDirectory", "METADATA"]

METADATA = "metadata"


class ShmDirectory:
    """One trace's directory of buffer files under a session's shm path (``root``)."""

    def __init__(self, directory: str, root: str):
        self.directory = os.path.abspath(directory)
        self.root = os.path.abspath(root)
        make_trace_dir(self.directory, self.root)

    def create_buffers(self, channel: str, count: int, subbuf_size: int, num_subbuf: int, *, overwrite: bool,
                       stream_id: int, uuid: bytes) -> list:
        """One ring buffer per CPU, each in a new file ``<channel>_<cpu>`` (mode 0600)."""
        buffers = []
        for cpu in range(count):
            path = os.path.join(self.directory, stream_file_name(channel, cpu))
            fd = open_new_file(path, os.O_RDWR)
            try:
                buffers.append(Buffer.create(subbuf_size, num_subbuf, overwrite=overwrite, stream_id=stream_id,
                                             cpu=cpu, uuid=uuid, fd=fd))
            finally:
                os.close(fd)
        return buffers

    def write_metadata(self, text: str) -> None:
        write_metadata(os.path.join(self.directory, METADATA), text)

    def remove(self) -> None:
        """Delete the buffer files and the metadata (every file of the directory: it is the
        trace's alone, and a restarted consumer did not create the files it maps), then the
        directories up to the session's shm directory that are left empty (another trace of the
        session may still use its own)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            names = []
        for name in names:
            try:
                os.unlink(os.path.join(self.directory, name))
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass
        d = self.directory
        while True:
            try:
                os.rmdir(d)
            except OSError:
                return  # not empty (another trace's), or gone
            if d == self.root or os.path.dirname(d) == d:
                return
            d = os.path.dirname(d)
