"""`ust crash`: recover the events a crashed session's ring buffers hold (lttng-crash's counterpart).

A session created with ``--shm-path DIR`` keeps its ring buffers in files
(``ust.consumer.shm_path``): when the applications, the consumer and the
session daemon all die at once, what the writers committed is still there,
with the trace's metadata beside it. ``recover(DIR, DEST)`` finds every trace
under DIR (a directory holding ``metadata``) and writes it to the same place
under DEST as a CTF trace babeltrace2 reads:

* Each buffer file is copied into a private memfd first and only the copy is
  read and repaired: the evidence is never modified, and a file that changes
  under us (another process still writing it) cannot make the reader see two
  versions of a header.
* The copy is mapped like any buffer (``Buffer.attach``, whose geometry checks
  keep every index inside the mapping) and told that its writers are gone
  (``writers_gone``): the packet being filled is closed at the time of its
  last reserved event, then every packet is taken in order as a consumer would
  (``drain_to(force=True)``). The commit counters tell what is whole: a packet
  short of bytes is repaired from the writers' in-flight reservations (the
  events being written at the crash are cut out and counted as discarded),
  or dropped when nothing explains the shortfall; never written half-read.
* In discard mode this is what the consumer had not yet written to the trace
  output (that part is on disk already); in overwrite mode (a flight
  recorder), everything the buffer still holds, oldest packet first.
* Nothing read is trusted: the files are opened without following links,
  must be regular files of a bounded size, and each stream's positions must
  be consistent with its geometry; the metadata is parsed before anything is
  extracted, and each extracted packet is decoded with ust's reader: a packet
  that does not decode (a corrupt event, a foreign uuid) is dropped, the
  others are kept. Each problem is one line in the report.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field

from ust.consumer.shm_path import METADATA
from ust.ctf.writer import make_trace_dir, open_new_file, write_metadata
from ust.errors import UstError

__all__ = ["CrashError", "StreamReport", "Report", "find_traces", "recover"]

MAX_BUFFER_FILE = 1 << 36  # 64 GiB: 4096 sub-buffers of 1 GiB, the ring buffer's largest, and then some
MAX_METADATA = 64 << 20  # as the reader's (ust.ctf.tsdl)
MAX_DEPTH = 16


class CrashError(UstError):
    """Nothing could be recovered (one line)."""


@dataclass
class StreamReport:
    name: str
    packets: int = 0
    dropped: int = 0  # packets that did not decode (corrupt), removed
    events_dropped: int = 0  # events being written at the crash, cut out (counted as discarded)
    error: str | None = None  # the stream could not be read at all


@dataclass
class Report:
    traces: list[str] = field(default_factory=list)  # the recovered trace directories under DEST
    streams: list[StreamReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line each

    @property
    def packets(self) -> int:
        return sum(s.packets for s in self.streams)


# ---------------------------------------------------------------------------
# finding what to recover


def find_traces(shm_path: str) -> list[str]:
    """Every directory under ``shm_path`` (itself included) holding a ``metadata`` file; symbolic
    links are not followed, and the walk stops MAX_DEPTH directories down."""
    root = os.path.abspath(shm_path)
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise CrashError(f"{shm_path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CrashError(f"{shm_path}: not a directory (give the --shm-path directory of the session)")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if os.path.relpath(dirpath, root).count(os.sep) >= MAX_DEPTH:
            dirnames[:] = []
        if METADATA in filenames:
            found.append(dirpath)
        dirnames.sort()
    return sorted(found)


def _open_regular(path: str, limit: int) -> tuple[int, int]:
    """(fd, size) of a regular file reached without a symbolic link, at most ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CrashError("not a regular file")
        if st.st_size > limit:
            raise CrashError(f"{st.st_size} bytes: larger than any ring buffer ({limit})")
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_metadata(path: str) -> str:
    fd, size = _open_regular(path, MAX_METADATA)
    try:
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CrashError("metadata is not UTF-8 text") from None


# ---------------------------------------------------------------------------
# one stream


# The start of struct ust_shm_header (_ring/shm.h): magic, version, overwrite, subbuf_size,
# num_subbuf, slots_offset, data_offset, total_size. Read here only to copy no more than the
# buffer's own size (a file grown past it does not cost memory); Buffer.attach checks it all.
_HEADER_PREFIX = struct.Struct("<QIIQQQQQ")


def _private_copy(path: str) -> int:
    """A memfd holding the file's bytes as they are now (at most the size its header gives)."""
    fd, size = _open_regular(path, MAX_BUFFER_FILE)
    head = os.pread(fd, _HEADER_PREFIX.size, 0)
    if len(head) == _HEADER_PREFIX.size:
        size = min(size, _HEADER_PREFIX.unpack(head)[7])
    mem = os.memfd_create("ust-crash", os.MFD_CLOEXEC)
    try:
        copied = 0
        while copied < size:
            n = os.sendfile(mem, fd, copied, size - copied)
            if n == 0:
                break  # the file shrank meanwhile: what was copied is what there is
            copied += n
        os.ftruncate(mem, copied)
        return mem
    except BaseException:
        os.close(mem)
        raise
    finally:
        os.close(fd)


def _consistent(c: dict, overwrite: bool, subbuf_size: int, num_subbuf: int) -> str | None:
    """Why the stream's positions cannot be a ring buffer's (None: they can)."""
    w, consumed = c["write_offset"], c["consumed"]
    if consumed > w or consumed % subbuf_size:
        return f"inconsistent positions (read {consumed}, written {w})"
    if not overwrite and w - consumed > subbuf_size * num_subbuf:
        return f"inconsistent positions (read {consumed}, written {w}: more than the buffer holds)"
    return None


def _extract_stream(src: str, dest: str, report: StreamReport) -> None:
    """Recover one buffer file into the stream file ``dest``."""
    from ust._ring._ring import Buffer

    mem = _private_copy(src)
    try:
        try:
            buf = Buffer.attach(mem, writers_gone=True)
        except ValueError as exc:
            raise CrashError(str(exc)) from None
    finally:
        os.close(mem)  # the Buffer holds its own descriptor
    before = buf.counters()
    problem = _consistent(before, buf.overwrite, buf.subbuf_size, buf.num_subbuf)
    if problem:
        raise CrashError(problem)
    # The packet being filled ends with its last reserved event (a later boot's clock means
    # nothing to this trace); in discard mode an empty packet then carries the final lost count
    # (in overwrite mode it would take the oldest packet's place, so not there).
    buf.flush(timestamp=before["last_timestamp"])
    # The events being written at the crash are cut out now, so that the count of them is in
    # the final packet's events_discarded (the drain below would repair them too, but after).
    buf.repair_dead_writers()
    if not buf.overwrite:
        buf.flush(final=True, timestamp=before["last_timestamp"])
    out = open_new_file(dest)
    try:
        packets, _bytes, err = buf.drain_to(out, force=True)
        if err:
            raise CrashError(f"cannot write {dest}: {os.strerror(err)}")
    finally:
        os.close(out)
    report.packets = packets
    report.events_dropped = buf.counters()["lost_dead"] - before["lost_dead"]


def _validate_stream(trace_dir: str, name: str, report: StreamReport) -> None:
    """Decode every event of the extracted stream with ust's reader (the pipeline's packet
    decoder) and check the order of time babeltrace2 requires (each packet begins no earlier than
    the previous one ended; its events lie between its beginning and its end, in order; every
    time fits in babeltrace2's signed 64-bit nanoseconds; sequence numbers go up, discarded-event
    counts never down); the packets that fail are removed. A
    packet header that cannot be framed ends the stream there."""
    from ust.ctf.pipeline import compile_packet_events
    from ust.ctf.reader import Event, PacketError, StreamFile, Trace
    from ust.errors import TraceFormatError

    path = os.path.join(trace_dir, name)
    trace = Trace(trace_dir)
    sf = StreamFile(trace, path)
    decoders: dict = {}
    keep: list[tuple[int, int]] = []
    end_of_framing = None
    last_end = last_seq = last_discarded = -1
    packets = sf.packets()
    while True:
        try:
            pk = next(packets)
        except StopIteration:
            break
        except TraceFormatError as exc:  # a header the ring buffer's checks let through: framing lost
            end_of_framing = exc.offset or 0
            break
        dec = decoders.get(id(pk.codec))
        if dec is None:
            dec = decoders[id(pk.codec)] = compile_packet_events(pk.codec, trace, Event)
        begin, end = pk.ts_begin or 0, pk.ts_end if pk.ts_end is not None else (1 << 64) - 1
        cycles: list[int] = []
        try:
            dec(pk.data, pk.events_start, pk.content_bits // 8, begin, {}, None, sf, cycles, [], -1)
        except (PacketError, TraceFormatError, LookupError, ValueError, TypeError, OverflowError, MemoryError):
            continue
        seq, discarded = pk.context.get("packet_seq_num", 0), pk.context.get("events_discarded", 0)
        if (begin < last_end or end < begin or trace.cycles_to_ns(end) >= 1 << 63  # babeltrace2: int64 ns
                or any(c < begin or c > end for c in cycles)
                or cycles != sorted(cycles) or seq <= last_seq or discarded < last_discarded):
            continue
        last_end, last_seq, last_discarded = end, seq, discarded
        keep.append((pk.offset, pk.size))
    packets.close()
    total = os.stat(path).st_size
    if end_of_framing is None and sum(size for _, size in keep) == total:
        return
    _rewrite(path, keep)
    dropped = report.packets - len(keep)
    report.packets = len(keep)
    report.dropped += max(dropped, 0)


def _rewrite(path: str, spans: list[tuple[int, int]]) -> None:
    """Keep only the byte ranges ``spans`` (packets, in order) of the file."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        at = 0
        for offset, size in spans:
            if offset != at:
                done = 0
                while done < size:
                    chunk = os.pread(fd, min(1 << 20, size - done), offset + done)
                    if not chunk:
                        break
                    os.pwrite(fd, chunk, at + done)
                    done += len(chunk)
            at += size
        os.ftruncate(fd, at)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# the whole directory


def recover(shm_path: str, dest: str) -> Report:
    """Recover every trace under ``shm_path`` into ``dest`` (created, or an empty directory of
    ours). Raises CrashError when there is nothing to recover at all; each other problem is a
    line of ``Report.errors`` (and whatever else is valid is recovered)."""
    root = os.path.abspath(shm_path)
    dest = os.path.abspath(dest)
    traces = find_traces(root)
    if not traces:
        raise CrashError(f"{shm_path}: no trace found (no metadata file under it): is it a session's "
                         "--shm-path directory?")
    if os.path.commonpath([root, dest]) == root:
        raise CrashError(f"the output directory {dest} is inside {shm_path}")
    make_trace_dir(dest)
    if os.listdir(dest):
        raise CrashError(f"{dest} is not empty: give a new directory")
    report = Report()
    for trace_dir in traces:
        rel = os.path.relpath(trace_dir, root)
        out_dir = os.path.normpath(os.path.join(dest, rel))
        shown = rel if rel != "." else os.path.basename(root)
        try:
            text = _read_metadata(os.path.join(trace_dir, METADATA))
            _check_metadata(text)
        except (CrashError, OSError) as exc:
            report.errors.append(f"{shown}: metadata: {_why(exc)}: trace skipped")
            continue
        make_trace_dir(out_dir, dest)
        write_metadata(os.path.join(out_dir, METADATA), text)
        report.traces.append(out_dir)
        for name in sorted(os.listdir(trace_dir)):
            src = os.path.join(trace_dir, name)
            if name == METADATA or name.startswith(".") or not stat.S_ISREG(os.lstat(src).st_mode):
                continue
            s = StreamReport(os.path.join(shown, name))
            report.streams.append(s)
            try:
                _extract_stream(src, os.path.join(out_dir, name), s)
                _validate_stream(out_dir, name, s)
            except (CrashError, OSError) as exc:
                s.error = _why(exc)
                report.errors.append(f"{s.name}: {s.error}: stream skipped")
                try:
                    os.unlink(os.path.join(out_dir, name))
                except FileNotFoundError:
                    pass
                continue
            if s.dropped:
                report.errors.append(f"{s.name}: {s.dropped} corrupt packet(s) dropped")
    if not report.traces:
        raise CrashError("nothing recovered: " + "; ".join(report.errors[:3]))
    return report


def _check_metadata(text: str) -> None:
    from ust.ctf.tsdl import parse
    from ust.errors import TraceFormatError

    try:
        parse(text)
    except (TraceFormatError, UstError, ValueError, RecursionError) as exc:
        raise CrashError(f"cannot be parsed ({str(exc)[:200]})") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
