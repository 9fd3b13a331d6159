"""Stream outputs: where the packets of a stream go, and where a trace's metadata goes.

The drain engine (``ust.consumer.drain``) hands every packet of a stream to
its ``StreamOutput`` and every metadata text of a trace to its
``TraceOutput``; it never knows whether they end in a local file, a relay
daemon or a rotated chunk. An output says how it takes packets:

* ``direct_fd()`` >= 0: a descriptor the C drain may append whole packets
  to without the GIL (``Buffer.drain_to``, ``_ring.drain_wait``); the output
  is then told what was written (``drained``). A local file without size
  rotation does this: it is the fast path of both hosts.
* otherwise ``write_packet(packet, index)``, one packet at a time, with its
  ``PacketIndex`` (what a relay or an index file needs). Raising OSError
  leaves the packet in its buffer (retried later, never lost by us).

Local files are the first implementation (``LocalTraceOutput`` and its
``StreamFile``s): O_NOFOLLOW, O_EXCL for new files, LTTng's tracefile size
and count, the torn tail of a restarted consumer cut, write errors reported
once, ``sync`` on flush. docs/consumer.md says how the next outputs plug in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ust.ctf.index import IndexFile, index_path
from ust.ctf.writer import (PacketIndex, TraceDirError, make_trace_dir, open_new_file, stream_file_name, warn,
                            whole_packets_size, write_metadata)

if TYPE_CHECKING:
    from ust.consumer.trace import ChannelSpec

__all__ = ["StreamOutput", "TraceOutput", "StreamFile", "LocalTraceOutput", "DiscardTraceOutput", "PacketIndex"]


class StreamOutput:
    """Where one stream's packets go (one per ring buffer: a channel's CPU).

    Every method is called by one thread at a time (the drain engine's, or
    the host's while the engine is paused). The write-error state is kept
    here so that a failure is reported once, not at every retry.
    """

    name: str = ""
    write_error = 0  # errno of the last failed write, until one succeeds
    loss_reported = False  # final_drain said what this failure cost

    def describe(self) -> str:
        """What messages about this stream call it."""
        return self.name

    def direct_fd(self) -> int:
        """A descriptor the C drain may append whole packets to, or -1."""
        return -1

    def write_packet(self, packet, index: PacketIndex) -> None:
        """Take one whole packet (a buffer-protocol object, valid during the
        call only). Raise OSError to leave it in its buffer."""
        raise NotImplementedError

    def drained(self, packets: int, nbytes: int, err: int) -> None:
        """Account for what the C drain wrote to direct_fd(), and its errno."""
        if err:
            self.write_failed(err)
        elif packets:
            self.write_succeeded()

    def write_failed(self, err: int) -> None:
        """A write failed with errno ``err`` (its packet stayed in the buffer):
        said once, not at every retry; the buffer fills, and what does not fit
        is discarded and counted, like events a slow reader could not take."""
        if err != self.write_error:
            warn(f"cannot write {self.describe()}: {os.strerror(err)}: its packets stay in the buffer; events "
                 "that do not fit are discarded (and counted) until writing succeeds again")
        self.write_error = err

    def write_succeeded(self) -> None:
        if self.write_error:
            warn(f"writing {self.describe()} again")
            self.write_error = 0
            self.loss_reported = False

    def sync(self) -> None:
        """Make what was written durable (or delivered): called at the host's flush."""

    def close(self) -> None:
        """No more packets (the stream is removed, or its trace moves to a new output)."""


class TraceOutput:
    """Where one trace goes: its stream outputs and its metadata."""

    def stream(self, channel: "ChannelSpec", cpu: int) -> StreamOutput:
        """The output of a new stream: CPU ``cpu`` of ``channel`` (its name,
        stream id, tracefile size and count, timers)."""
        raise NotImplementedError

    def write_metadata(self, text: str) -> None:
        """Replace the trace's metadata by ``text`` (atomically: a reader sees
        the old or the new one). Called before any event it adds is recorded."""
        raise NotImplementedError

    def sync(self) -> None:
        """Make the metadata durable: called at the host's flush, after the streams'."""

    def close(self) -> None:
        """The trace is done (its streams are closed first)."""


class StreamFile(StreamOutput):
    """``<dir>/<name>``: packets appended as they leave the buffer.

    With ``size``, the stream is rotated into ``<name>_<n>`` files of at most
    ``size`` bytes, keeping the newest ``count`` (LTTng's --tracefile-size and
    --tracefile-count); a consumer restarted on the same trace carries on
    after the newest file its predecessor wrote. ``truncate`` starts over.
    ``indexed``: each file gets LTTng's packet index, ``index/<file>.idx``
    (ust.ctf.index), kept ending where the file's whole packets end.
    """

    def __init__(self, directory: "str | os.PathLike", name: str, size: int = 0, count: int = 0,
                 truncate: bool = False, indexed: bool = False):
        self.directory = os.fspath(directory)
        self.name = name
        self.size = size
        self.count = count
        self.truncate = truncate
        self.indexed = indexed
        self.index_file: IndexFile | None = None
        self.read_fd = -1  # the index reads the packets' headers back through it
        self.index = 0
        self.written = 0  # bytes in the current file (rotation)
        self.bytes_written = 0  # bytes this object wrote, in all files
        self.packets = 0
        self.fd = -1
        if size and not truncate:
            prefix = f"{name}_"
            indexes = [int(f[len(prefix):]) for f in os.listdir(self.directory)
                       if f.startswith(prefix) and f[len(prefix):].isdigit()]
            self.index = max(indexes, default=0)
        self._open()

    @property
    def path(self) -> Path:
        return Path(self._path(self.index))

    def _path(self, index: int) -> str:
        if self.size:
            return os.path.join(self.directory, f"{self.name}_{index}")
        return os.path.join(self.directory, self.name)

    def _open(self) -> None:
        path = self._path(self.index)
        if self.truncate:
            self.fd = open_new_file(path, os.O_WRONLY | os.O_APPEND)
        else:  # appending after a restarted consumer's predecessor: never through a link
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        self.written = os.fstat(self.fd).st_size
        if self.written:
            self._cut_torn_tail()
        if self.indexed:
            self._open_index()

    def _open_index(self) -> None:
        # a second descriptor of the same open file (ours is write-only), without a path lookup
        self.read_fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.index_file = IndexFile(self.directory, os.path.basename(self._path(self.index)), self.read_fd,
                                        fresh=self.truncate)
        except (OSError, ValueError, TraceDirError) as exc:
            self._index_failed(exc)

    def _index_failed(self, exc: Exception) -> None:
        """An index that cannot be kept whole is removed (readers then walk the packets): said once."""
        if self.index_file is not None:
            self.index_file.discard()
            self.index_file = None
        warn(f"{self._path(self.index)}: no packet index ({getattr(exc, 'strerror', None) or exc}): "
             "readers walk its packets")

    def _cut_torn_tail(self) -> None:
        """Appending to a file whose last packet is cut (its consumer was killed
        in the middle of a write) would bury the cut packet in the middle of the
        stream, where it makes babeltrace2 reject everything after it: the file
        is cut back to its last whole packet first."""
        # Read through a second descriptor of the same open file (ours is
        # write-only): /proc/self/fd reopens it without a path lookup.
        rfd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            whole = whole_packets_size(rfd, self.written)
        finally:
            os.close(rfd)
        if whole < self.written:
            os.ftruncate(self.fd, whole)
            warn(f"{self._path(self.index)}: cut off a partial packet of {self.written - whole} bytes at its end")
            self.written = whole

    def direct_fd(self) -> int:
        # A rotated stream must see each packet (to start the next file on a
        # packet boundary): only a plain file takes the C drain's appends.
        return -1 if self.size else self.fd

    def write_packet(self, packet, index: PacketIndex | None = None) -> None:
        n = len(packet)
        if self.size and self.written and self.written + n > self.size:
            self.close()
            self.index += 1
            if self.count and self.index >= self.count:
                old = self._path(self.index - self.count)
                for path in (old, index_path(self.directory, os.path.basename(old))):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            self._open()
        view = memoryview(packet)
        start = self.written
        try:
            while view:
                done = os.write(self.fd, view)
                view = view[done:]
        except OSError:
            if len(view) < n:  # a file always ends on a packet boundary
                os.ftruncate(self.fd, start)
            raise
        self._wrote(1, n)

    def drained(self, packets: int, nbytes: int, err: int) -> None:
        self._wrote(packets, nbytes)
        super().drained(packets, nbytes, err)

    def _wrote(self, packets: int, nbytes: int) -> None:
        if self.index_file is not None and nbytes:
            try:
                self.index_file.appended(self.written, self.written + nbytes)
            except (OSError, ValueError) as exc:  # (the packets are written: not failed for their index)
                self._index_failed(exc)
        self.written += nbytes
        self.bytes_written += nbytes
        self.packets += packets

    def describe(self) -> str:
        return str(self.path)  # the file being written: it changes with rotation

    def sync(self) -> None:
        if self.fd >= 0:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                self.write_failed(exc.errno or 0)
        if self.index_file is not None:
            try:
                self.index_file.sync()
            except OSError as exc:
                self._index_failed(exc)

    def release_fd(self) -> int:
        """Hand the descriptor over (to the C core's drain at exit): this object no longer closes it.
        (Not for an indexed file: what the C core writes then would not be indexed.)"""
        assert self.index_file is None
        fd, self.fd = self.fd, -1
        return fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.index_file is not None:
            self.index_file.close()
            self.index_file = None
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


class LocalTraceOutput(TraceOutput):
    """A trace in a local directory: ``<directory>/metadata`` and one file per stream.

    The directory is created (with those between ``root``, the session's
    output directory, and it) by ``ust.ctf.writer.make_trace_dir``, which
    refuses a tree another user could write or a symbolic link in it.
    ``fresh``: stream files start over (the embedded session, a snapshot);
    else they are appended to (a restarted consumer carries on its
    predecessor's files).
    """

    def __init__(self, directory: "str | os.PathLike", root: "str | os.PathLike | None" = None, *,
                 fresh: bool = False, indexed: bool = False):
        self.directory = os.fspath(directory)
        self.root = None if root is None else os.fspath(root)
        self.fresh = fresh
        self.indexed = indexed
        make_trace_dir(self.directory, root)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.directory, "metadata")

    def stream(self, channel: "ChannelSpec", cpu: int) -> StreamFile:
        return StreamFile(self.directory, stream_file_name(channel.name, cpu), channel.tracefile_size,
                          channel.tracefile_count, truncate=self.fresh, indexed=self.indexed)

    def write_metadata(self, text: str) -> None:
        write_metadata(self.metadata_path, text)

    def sync(self) -> None:
        try:
            fd = os.open(self.metadata_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _DroppedStream(StreamOutput):
    """Takes every packet and keeps none (``ust clear``)."""

    name = "(cleared)"

    def write_packet(self, packet, index: PacketIndex) -> None:
        pass


class DiscardTraceOutput(TraceOutput):
    """A trace output that drops everything: what ``ust clear`` switches a trace to while its
    files start over (``ust.daemon.consumerd``)."""

    DROP = _DroppedStream()

    def stream(self, channel, cpu: int) -> StreamOutput:
        return _DroppedStream()

    def write_metadata(self, text: str) -> None:
        pass
