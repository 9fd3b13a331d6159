"""LTTng's CTF packet index files: ``index/<stream file>.idx`` beside each stream file.

lttng-relayd and lttng-consumerd write one beside every stream file of a trace
they record (not of a snapshot); babeltrace2's ``source.ctf.fs`` reads it to
know a stream file's packets (offsets, sizes, time bounds, sequence numbers)
without walking their headers, and Trace Compass reads it too. A reader checks
it and falls back to walking the packets when it does not describe the whole
file, so an index must always end where its stream file's whole packets end.

The format (big-endian, CTF index 1.1): a 16-byte header -- magic 0xC1F1DCC1,
major 1, minor 1, the size of one entry (72) -- then one entry per packet, in
file order: offset (bytes), packet size and content size (bits), timestamp
begin and end, events discarded, stream class id, stream instance id, packet
sequence number.

``IndexFile`` keeps one up to date as packets are appended to its stream file
(``ust.consumer.output.StreamFile``, used by the consumer daemon and by the
relay); ``read_index`` reads and checks one.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

from ust.ctf.writer import PACKET_HEADER_SIZE, PacketIndex, make_trace_dir, open_new_file

MAGIC = 0xC1F1DCC1
MAJOR = 1
MINOR = 1
HEADER = struct.Struct(">IIII")
ENTRY = struct.Struct(">QQQQQQQQQ")
DIRECTORY = "index"


class IndexEntry(NamedTuple):
    offset: int  # bytes
    packet_size: int  # bits
    content_size: int  # bits
    timestamp_begin: int
    timestamp_end: int
    events_discarded: int
    stream_id: int
    stream_instance_id: int
    packet_seq_num: int


def entry(offset: int, index: PacketIndex) -> bytes:
    """The index entry of the packet at ``offset`` whose header says ``index``."""
    return ENTRY.pack(offset, 8 * index.packet_size, 8 * index.content_size, index.timestamp_begin,
                      index.timestamp_end, index.events_discarded, index.stream_id, index.stream_instance_id,
                      index.packet_seq_num)


def index_path(directory: "str | os.PathLike", name: str) -> str:
    return os.path.join(os.fspath(directory), DIRECTORY, f"{name}.idx")


class IndexFile:
    """The index of the stream file ``directory/name``, written as its packets are appended.

    ``stream_fd`` reads the stream file (the packets' headers are read back from
    it: the C drain appends packets the Python side never sees). ``fresh``: a new
    stream file (the index must not exist yet); else the index is rebuilt from the
    stream file's whole packets (a consumer or relay carrying on in it). The index
    directory is made as the trace's (``make_trace_dir``: no link, ours alone); the
    file is opened without following a link."""

    def __init__(self, directory: "str | os.PathLike", name: str, stream_fd: int, fresh: bool):
        self.path = index_path(directory, name)
        self.stream_fd = stream_fd
        make_trace_dir(os.path.dirname(self.path), directory)
        if fresh:
            self.fd = open_new_file(self.path, os.O_WRONLY | os.O_APPEND)
            self._write(HEADER.pack(MAGIC, MAJOR, MINOR, ENTRY.size))
        else:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600)
            self.rebuild(os.fstat(stream_fd).st_size)

    def rebuild(self, size: int) -> None:
        """Index the stream file's whole packets in its first ``size`` bytes, anew."""
        os.ftruncate(self.fd, 0)
        self._write(HEADER.pack(MAGIC, MAJOR, MINOR, ENTRY.size))
        self.appended(0, size)

    def appended(self, start: int, end: int) -> None:
        """Index the whole packets the stream file holds between ``start`` (where a packet
        begins) and ``end`` (what was just appended), read back from it."""
        out = []
        pos = start
        while pos + PACKET_HEADER_SIZE <= end:  # one read a packet: its header says its size
            index = PacketIndex.of(os.pread(self.stream_fd, PACKET_HEADER_SIZE, pos))
            if index.packet_size < PACKET_HEADER_SIZE or pos + index.packet_size > end:
                break  # (not a whole packet: none is indexed past it)
            out.append(entry(pos, index))
            pos += index.packet_size
        if out:
            self._write(b"".join(out))

    def sync(self) -> None:
        os.fsync(self.fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        """Remove the index (it could not be kept whole: a reader then walks the packets)."""
        self.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def read_index(path: "str | os.PathLike") -> list[IndexEntry]:
    """The entries of an index file, checked (header, entry size, offsets in order, time
    bounds); ValueError with one line otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < HEADER.size:
        raise ValueError(f"{path}: shorter than an index header")
    magic, major, minor, size = HEADER.unpack_from(data)
    if magic != MAGIC or major != MAJOR or size < ENTRY.size:
        raise ValueError(f"{path}: not a CTF index 1.x file (magic {magic:#x}, version {major}.{minor})")
    body = data[HEADER.size:]
    if len(body) % size:
        raise ValueError(f"{path}: {len(body)} bytes of entries of {size} bytes each")
    entries = [IndexEntry(*ENTRY.unpack_from(body, i)) for i in range(0, len(body), size)]
    for prev, cur in zip(entries, entries[1:]):
        if cur.offset != prev.offset + prev.packet_size // 8:
            raise ValueError(f"{path}: entry at offset {cur.offset} does not follow the one at {prev.offset}")
    for e in entries:
        if e.timestamp_end < e.timestamp_begin or e.packet_size % 8 or e.content_size > e.packet_size:
            raise ValueError(f"{path}: invalid entry at offset {e.offset}")
    return entries
