"""Writing traces: the directory layout, files, and the packet layout.

Packets leave the ring buffer exactly as the writers laid them out: the
consumer (``ust.consumer``) copies each complete sub-buffer's first
``packet_size`` bytes to its stream output, never re-encoding an event.

Both hosts of the consumer (the embedded session and ust-consumerd) create
trace directories and files only through this module, which trusts nothing
it did not create: ``make_trace_dir`` refuses a directory of the output tree
that another user owns or can write, and a symbolic link anywhere in it;
files are then opened with ``O_NOFOLLOW`` (and ``O_EXCL`` when new), so
nobody can point a trace file at something else (docs/security.md).
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import sys
import time
from pathlib import Path
from typing import NamedTuple

from ust.errors import UstError

from . import layout

TRACE_DIR_MODE = 0o750


class TraceDirError(UstError):
    """A trace directory that is not safe to write in (one line, names it)."""


def _open_own_dir(name: str, dir_fd: int | None, shown: str) -> int:
    """Create directory ``name`` (relative to ``dir_fd``) unless it exists, open it
    without following a symbolic link, and check it is ours and closed to others."""
    try:
        os.mkdir(name, TRACE_DIR_MODE, dir_fd=dir_fd)
    except FileExistsError:
        pass
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise TraceDirError(f"trace directory {shown} is a symbolic link or not a directory: "
                                "refusing to write in it") from None
        raise
    st = os.fstat(fd)
    problem = None
    if st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to uid {os.geteuid()}"
    elif st.st_mode & 0o022:
        problem = f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    if problem:
        os.close(fd)
        raise TraceDirError(f"trace directory {shown} {problem}: refusing to write in it")
    return fd


def make_trace_dir(path: "str | os.PathLike", root: "str | os.PathLike | None" = None) -> None:
    """Create ``path`` and the directories between ``root`` (the session's
    output directory, default ``path``) and it, mode 0750.

    The parents of ``root`` are created as an ordinary ``mkdir -p`` (the
    owner chose them); ``root`` and everything below it must be directories
    of the caller's effective uid that no other user can write, reached
    without a symbolic link: then nobody else can plant anything where the
    trace files go. Raises TraceDirError (one line) otherwise.
    """
    path = os.path.abspath(os.fspath(path))
    root = os.path.abspath(os.fspath(root)) if root is not None else path
    rel = os.path.relpath(path, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{path} is not inside {root}")
    os.makedirs(os.path.dirname(root), mode=TRACE_DIR_MODE, exist_ok=True)
    fd = _open_own_dir(root, None, root)
    try:
        shown = root
        for part in ([] if rel == os.curdir else rel.split(os.sep)):
            shown = os.path.join(shown, part)
            inner = _open_own_dir(part, fd, shown)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def new_trace_dir(path: "str | os.PathLike") -> str:
    """Create a directory that did not exist: ``path``, else ``path-1``, ``path-2``...

    For a default output name someone else could predict (and pre-create, in
    a shared directory): what this returns was made by the caller, mode 0750."""
    base = os.path.abspath(os.fspath(path))
    for n in range(1000):
        candidate = base if n == 0 else f"{base}-{n}"
        try:
            os.mkdir(candidate, TRACE_DIR_MODE)
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise TraceDirError(f"cannot create trace directory {candidate}: {exc.strerror or exc}") from None
    raise TraceDirError(f"cannot create a new trace directory next to {base}: 1000 names taken")


def open_new_file(path: "str | os.PathLike", flags: int = os.O_WRONLY, mode: int = 0o600) -> int:
    """Create ``path``, which must not exist (a stale one is removed first, a
    symbolic link included, never followed)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def uid_trace_dir(root: "str | os.PathLike", uid: int | None = None) -> Path:
    """<root>/ust/uid/<uid>/64-bit: where per-UID buffers are written."""
    return Path(root) / "ust" / "uid" / str(os.getuid() if uid is None else uid) / "64-bit"


def time_stamp(when: float | None = None) -> str:
    """LTTng's YYYYMMDD-HHMMSS, local time (now by default): the suffix of
    default session names, trace and snapshot directories."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(when))


def file_name_part(text: str) -> str:
    """An application's name as part of a directory name: it chose it, so no
    '/', no leading '.', nothing unprintable."""
    cleaned = "".join(c if c.isalnum() or c in "-_+.," else "_" for c in text)[:64]
    return "_" + cleaned[1:] if cleaned.startswith(".") else cleaned or "_"


def pid_trace_dir(root: "str | os.PathLike", procname: str, pid: int, started: float | None = None) -> Path:
    """<root>/ust/pid/<procname>-<pid>-<YYYYMMDD-HHMMSS>: per-PID buffers
    (procname made safe as a file name)."""
    return Path(root) / "ust" / "pid" / f"{file_name_part(procname)}-{pid}-{time_stamp(started)}"


def stream_file_name(channel: str, cpu: int) -> str:
    return f"{channel}_{cpu}"


# The start of a packet as the ring buffer writes it (_ring/layout.h): magic, uuid,
# stream_id, stream_instance_id, timestamp_begin, timestamp_end, content_size,
# packet_size (bits).
_PACKET_PREFIX = layout.packet_struct("<", upto="packet_seq_num")
_PACKET_SIZE_INDEX = 7
_CTF_MAGIC = layout.PACKET_MAGIC
# The whole packet header and context: the prefix, then packet_seq_num,
# events_discarded, cpu_id.
_PACKET_HEADER = layout.packet_struct("<")
PACKET_HEADER_SIZE = _PACKET_HEADER.size  # what PacketIndex.of reads of a packet


class PacketIndex(NamedTuple):
    """What a packet's header says about it: what an index entry (LTTng's
    ``.idx`` files, the relay protocol) holds, besides the packet's offset
    in its stream, which the output knows."""

    stream_id: int
    stream_instance_id: int
    timestamp_begin: int
    timestamp_end: int
    content_size: int  # bytes
    packet_size: int  # bytes
    packet_seq_num: int
    events_discarded: int
    cpu_id: int

    @classmethod
    def of(cls, packet) -> "PacketIndex":
        """The index of a whole packet as the ring buffer wrote it (ValueError if it is not one)."""
        if len(packet) < _PACKET_HEADER.size:
            raise ValueError(f"a packet of {len(packet)} bytes is shorter than its header")
        (magic, _uuid, stream_id, instance, ts_begin, ts_end, content_bits, packet_bits, seq, discarded,
         cpu) = _PACKET_HEADER.unpack_from(packet)
        if magic != _CTF_MAGIC:
            raise ValueError(f"not a CTF packet (magic {magic:#x})")
        return cls(stream_id, instance, ts_begin, ts_end, content_bits // 8, packet_bits // 8, seq, discarded, cpu)


def packet_spans(fd: int, size: int):
    """(offset, length) of each whole packet at the start of a stream file of
    ``size`` bytes, stopping at the first cut or invalid one."""
    pos = 0
    while pos + _PACKET_PREFIX.size <= size:
        fields = _PACKET_PREFIX.unpack(os.pread(fd, _PACKET_PREFIX.size, pos))
        length = fields[7] // 8
        if fields[0] != _CTF_MAGIC or length < _PACKET_PREFIX.size + _EVENTS_DISCARDED.size or pos + length > size:
            return
        yield pos, length
        pos += length


def whole_packets_size(fd: int, size: int) -> int:
    """How many bytes at the start of a stream file are whole packets."""
    end = 0
    for pos, length in packet_spans(fd, size):
        end = pos + length
    return end


_EVENTS_DISCARDED = struct.Struct("<QQ")  # packet_seq_num, events_discarded, after _PACKET_PREFIX


def last_packet_index(path: "str | os.PathLike") -> PacketIndex | None:
    """The index of a stream file's last whole packet (None: no whole packet)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        last = None
        for pos, _ in packet_spans(fd, os.fstat(fd).st_size):
            last = pos
        return None if last is None else PacketIndex.of(os.pread(fd, PACKET_HEADER_SIZE, last))
    finally:
        os.close(fd)


def last_events_discarded(path: "str | os.PathLike") -> int:
    """events_discarded of a stream file's last whole packet: the events its
    stream lost (cumulative), as babeltrace2 reports them."""
    index = last_packet_index(path)
    return 0 if index is None else index.events_discarded


def lost_events(counters: dict) -> int:
    """Events a buffer lost, from Buffer.counters(): the sum of every ``lost_*``
    counter (buffer full, event too big, writer killed mid-event, ...)."""
    return sum(v for k, v in counters.items() if k.startswith("lost_"))


def warn(msg: str) -> None:
    """A one-line warning of the tracer on stderr (the application keeps running)."""
    print(f"ust: {msg}", file=sys.stderr, flush=True)


def write_metadata(path: "str | os.PathLike", text: str) -> None:
    """Replace the metadata file atomically (a reader sees the old or the new
    one). Not synced: the trace's output syncs it with the stream files, at
    the host's flush (``ust.consumer.output.LocalTraceOutput.sync``)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    fd = open_new_file(tmp)
    try:
        view = memoryview(text.encode())
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)
