"""Writing traces: the directory layout, stream files, and event ids.

Packets leave the ring buffer exactly as the writers laid them out: the
consumer copies each complete sub-buffer's first ``packet_size`` bytes to the
stream file, never re-encoding an event.

Both hosts (the embedded session and ust-consumerd) create trace directories
and files only through this module, which trusts nothing it did not create:
``make_trace_dir`` refuses a directory of the output tree that another user
owns or can write, and a symbolic link anywhere in it; files are then opened
with ``O_NOFOLLOW`` (and ``O_EXCL`` when new), so nobody can point a trace
file at something else (docs/security.md).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import struct
import sys
import time
from pathlib import Path

from ust.errors import UstError
from ust.instrument.fields import EventDecl, decl_from_dict, decl_to_dict

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
_PACKET_PREFIX = struct.Struct("<I16sIQQQQQ")
_CTF_MAGIC = 0xC1FC1FC1


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


def last_events_discarded(path: "str | os.PathLike") -> int:
    """events_discarded of a stream file's last whole packet: the events its
    stream lost (cumulative), as babeltrace2 reports them."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        last = 0
        for pos, _ in packet_spans(fd, os.fstat(fd).st_size):
            last = _EVENTS_DISCARDED.unpack(os.pread(fd, _EVENTS_DISCARDED.size, pos + _PACKET_PREFIX.size))[1]
        return last
    finally:
        os.close(fd)


def lost_events(counters: dict) -> int:
    """Events a buffer lost, from Buffer.counters(): the sum of every ``lost_*``
    counter (buffer full, event too big, writer killed mid-event, ...)."""
    return sum(v for k, v in counters.items() if k.startswith("lost_"))


def _warn(msg: str) -> None:
    print(f"ust: {msg}", file=sys.stderr, flush=True)


class StreamFile:
    """``<dir>/<name>``: packets appended as they leave the buffer.

    With ``size``, the stream is rotated into ``<name>_<n>`` files of at most
    ``size`` bytes, keeping the newest ``count`` (LTTng's --tracefile-size and
    --tracefile-count); a consumer restarted on the same trace carries on
    after the newest file its predecessor wrote. ``truncate`` starts over.
    """

    def __init__(self, directory: "str | os.PathLike", name: str, size: int = 0, count: int = 0,
                 truncate: bool = False):
        self.directory = os.fspath(directory)
        self.name = name
        self.size = size
        self.count = count
        self.truncate = truncate
        self.index = 0
        self.written = 0  # bytes in the current file (rotation)
        self.bytes_written = 0  # bytes this object wrote, in all files
        self.packets = 0
        self.write_error = 0  # errno of the last failed write, until one succeeds
        self.loss_reported = False  # final_drain said what this failure cost
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
            _warn(f"{self._path(self.index)}: cut off a partial packet of {self.written - whole} bytes at its end")
            self.written = whole

    def write_packet(self, packet) -> None:
        n = len(packet)
        if self.size and self.written and self.written + n > self.size:
            os.close(self.fd)
            self.index += 1
            if self.count and self.index >= self.count:
                try:
                    os.unlink(self._path(self.index - self.count))
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
        """Account for what Buffer.drain_to / drain_wait wrote, and its error."""
        self._wrote(packets, nbytes)
        if err:
            self.write_failed(err)
        elif packets:
            self.write_succeeded()

    def _wrote(self, packets: int, nbytes: int) -> None:
        self.written += nbytes
        self.bytes_written += nbytes
        self.packets += packets

    def write_failed(self, err: int) -> None:
        """A write failed with errno ``err`` (its packet stayed in the buffer):
        said once, not at every retry; the buffer fills, and what does not fit
        is discarded and counted, like events a slow reader could not take."""
        if err != self.write_error:
            _warn(f"cannot write {self.path}: {os.strerror(err)}: its packets stay in the buffer; events "
                  "that do not fit are discarded (and counted) until writing succeeds again")
        self.write_error = err

    def write_succeeded(self) -> None:
        if self.write_error:
            _warn(f"writing {self.path} again")
            self.write_error = 0
            self.loss_reported = False

    def sync(self) -> None:
        if self.fd >= 0:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                self.write_failed(exc.errno or 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def drain(buffer, out: StreamFile, *, force: bool = False) -> int:
    """Move every complete packet from ``buffer`` to ``out``; returns how many.

    Without rotation the copy loop runs in C without the GIL; a rotating file
    takes the packets one by one. With force (all writers gone), also take
    packets a dead writer left short. A packet whose write fails (a full
    disk) stays in the buffer, the file ends on the packet before it, and
    the failure is reported once (StreamFile.write_failed), never raised.
    """
    if not out.size:
        packets, nbytes, err = buffer.drain_to(out.fd, force=force)
        out.drained(packets, nbytes, err)
        return packets
    n = 0
    while (packet := buffer.get_subbuf(force=force)) is not None:
        try:
            out.write_packet(packet)
        except OSError as exc:
            packet.release()
            buffer.unget_subbuf()
            out.write_failed(exc.errno or 0)
            break
        packet.release()
        buffer.put_subbuf()
        n += 1
    if n:
        out.write_succeeded()
    return n


def incomplete(buffer) -> bool:
    """Does a discard-mode buffer still hold a closed packet it could not hand over?"""
    if buffer.overwrite:
        return False
    c = buffer.counters()
    return c["write_offset"] - c["consumed"] >= buffer.subbuf_size


FLUSH_GRACE = 0.2


def final_drain(streams, grace: float = FLUSH_GRACE) -> int:
    """Close partial packets and write everything out; ``streams``: (buffer, StreamFile).

    For when the applications have stopped writing. A writer may still be
    between reserve and commit (a thread of ours, a child still running): it
    gets ``grace`` seconds to commit. After that, what stays uncommitted
    belongs to a dead writer (a SIGKILLed process) and is taken as it is
    (force), so nothing committed around it is lost.
    """
    n = 0
    for buf, out in streams:
        buf.flush()
        n += drain(buf, out)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(incomplete(buf) for buf, _ in streams):
        time.sleep(0.005)
        for buf, out in streams:
            n += drain(buf, out)
    for buf, out in streams:
        buf.flush(final=True)  # an empty packet carrying the last lost-event count
        n += drain(buf, out)
        n += drain(buf, out, force=True)
    unwritten = [(buf, out) for buf, out in streams if out.write_error and not out.loss_reported]
    if unwritten:
        for _, out in unwritten:
            out.loss_reported = True  # once, not at every later flush (stop, then destroy)
        left = sum(unwritten_bytes(buf) for buf, _ in unwritten)
        lost = sum(lost_events(buf.counters()) for buf, _ in unwritten)
        _warn(f"{len(unwritten)} stream file(s) could not be written to the end "
              f"({os.strerror(unwritten[0][1].write_error)}): {left} bytes of packets were left unwritten, "
              f"and {lost} events were discarded")
    return n


def unwritten_bytes(buffer) -> int:
    """Bytes of packets the buffer still holds (a reader that could not write them)."""
    c = buffer.counters()
    return max(0, c["write_offset"] - c["consumed"])


class EventIdFile:
    """Event ids of one trace, shared by every process that writes it.

    Forked children may declare tracepoints their parent never saw; they get
    ids from this append-only file (one JSON line per event, id = line
    number), serialized with flock. The session reads it back to write the
    metadata.
    """

    def __init__(self, path: "str | os.PathLike"):
        self.path = Path(path)
        os.close(self._open_fd(os.O_RDWR | os.O_CREAT))
        self._known: dict[str, int] = {}

    def _open_fd(self, flags: int) -> int:
        # never through a symbolic link planted at its name (it lives in the trace directory)
        return os.open(self.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    def _read(self, f) -> list[dict]:
        f.seek(0)
        out = []
        for line in f.read().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def event_id(self, decl: EventDecl, stream_id: int = 0) -> int:
        key = f"{stream_id}/{decl.name}"
        if key in self._known:
            return self._known[key]
        with open(self._open_fd(os.O_RDWR), "r+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                entries = self._read(f)
                for i, e in enumerate(entries):
                    if e["stream_id"] == stream_id and e["decl"]["name"] == decl.name:
                        self._known[key] = i
                        return i
                f.seek(0, os.SEEK_END)
                f.write(json.dumps({"stream_id": stream_id, "decl": decl_to_dict(decl)}) + "\n")
                f.flush()
                self._known[key] = len(entries)
                return len(entries)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def events(self) -> list[tuple[int, int, EventDecl]]:
        with open(self._open_fd(os.O_RDONLY), "r", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                entries = self._read(f)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return [(i, e["stream_id"], decl_from_dict(e["decl"])) for i, e in enumerate(entries)]


def write_metadata(path: "str | os.PathLike", text: str, sync: bool = False) -> None:
    """Replace the metadata file atomically (a reader sees the old or the new one)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    fd = open_new_file(tmp)
    try:
        view = memoryview(text.encode())
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
