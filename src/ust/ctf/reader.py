"""CTF 1.8 traces, stream files and packets: the source of the reader's pipeline.

Layering (no module imports one above it):
  * ``tsdl`` parses the metadata into a type model;
  * ``_codegen`` compiles each scope (packet header/context, event header,
    stream event context, event context, payload) into a Python function;
  * this module: ``open_traces`` finds every CTF trace under a directory (a
    directory holding a ``metadata`` file); ``StreamFile.packets`` walks the
    packets of one stream file (mmap), checking headers and sizes; ``Event``;
    ``StreamFile.events``, the simple event-by-event decoder the fast paths are
    tested against;
  * ``pipeline`` decodes packets in chunks and merges the streams by timestamp
    (nanoseconds from the Epoch): ``read_trace``; ``_fasttext`` (text), ``bulk``
    (columns) are its consumers.

Ties between streams (same timestamp) are broken by a stable stream order,
babeltrace2's as observed: trace UUID, trace name, stream class id, stream
instance id, then file name. Within one stream, file order is kept.

Every malformed input raises ``TraceFormatError(message, path, offset)``.
"""

from __future__ import annotations

import heapq
import mmap
from operator import itemgetter as _itemgetter
import os
import struct
from dataclasses import dataclass

from ust.errors import TraceFormatError

from . import _codegen
from ._codegen import PacketError
from .layout import PACKET_MAGIC  # the ring buffer's (ust._ring.LAYOUT), and CTF's
from .tsdl import MARKER_FORMAT_URI, read_metadata_file

# packet-context fields with a meaning of their own (babeltrace2 does not print them)
SPECIAL_PACKET_FIELDS = frozenset(
    ["timestamp_begin", "timestamp_end", "content_size", "packet_size", "packet_seq_num", "events_discarded"])
_DECODE_ERRORS = (struct.error, ValueError, IndexError, KeyError, OverflowError, MemoryError, TypeError)



class Event(tuple):
    """One event, an immutable record.

    ``timestamp`` is in ns from the Epoch (the clock's offset applied);
    ``cycles`` the raw clock value; ``fields``/``context`` are dicts (field
    names without CTF's leading underscore); ``stream``/``trace`` where it
    comes from; ``event_class`` its metadata.
    """

    __slots__ = ()

    def __new__(cls, name, timestamp, cycles, cpu_id, fields, context, stream, event_class):
        return tuple.__new__(cls, (name, timestamp, cycles, cpu_id, fields, context, stream, event_class))

    name = property(_itemgetter(0), doc="event name, e.g. 'provider:event'")
    timestamp = property(_itemgetter(1), doc="ns from the Epoch")
    cycles = property(_itemgetter(2), doc="raw clock value")
    cpu_id = property(_itemgetter(3), doc="CPU from the packet context, or None")
    fields = property(_itemgetter(4), doc="payload: dict")
    context = property(_itemgetter(5), doc="stream event context + event context (+ packet context): dict")
    stream = property(_itemgetter(6), doc="the StreamFile")
    event_class = property(_itemgetter(7), doc="the tsdl.EventClass")

    @property
    def trace(self):
        return self[6].trace

    @property
    def message(self):
        """A marker's message (``ust.mark``'s format applied to the fields), else None."""
        uri = self[7].model_emf_uri
        if not uri or not uri.startswith(MARKER_FORMAT_URI):
            return None
        from ust.instrument.marker import format_message

        return format_message(uri[len(MARKER_FORMAT_URI):], self[4].values())

    def __repr__(self):
        return f"Event({self.name!r}, timestamp={self.timestamp}, cpu_id={self.cpu_id}, fields={self.fields!r})"


@dataclass
class Discarded:
    """Events (or packets) the tracer reported lost, between two times."""

    stream: "StreamFile"
    count: int
    begin_cycles: int | None
    end_cycles: int | None
    packets: bool = False  # True: lost packets (sequence-number gap)


# --------------------------------------------------------------------------
# Traces
# --------------------------------------------------------------------------


class compiling:
    """Give decoder-generation errors (metadata the reader cannot handle) the metadata path."""

    def __init__(self, trace):
        self.path = os.path.join(trace.path, "metadata")

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None and issubclass(et, TraceFormatError) and ev.path is None:
            raise TraceFormatError(str(ev), self.path, None) from None
        return False


class Trace:
    """One CTF trace: a directory with a metadata file and stream files."""

    def __init__(self, path: str, root: str | None = None):
        self.path = path
        self.metadata = md = read_metadata_file(os.path.join(path, "metadata"))
        self.env = md.env
        self.clock = md.default_clock()
        self.origin_ns = self.clock.origin_ns() if self.clock else 0
        self.freq = self.clock.freq if self.clock else 1_000_000_000
        self.hostname = md.env.get("hostname")
        rel = os.path.relpath(path, root) if root else os.path.basename(path)
        name = rel if rel != "." else os.path.basename(os.path.abspath(path))
        if isinstance(self.hostname, str):
            name = f"{self.hostname}/{name}" if rel != "." else self.hostname
        self.name = name
        self.uuid = md.uuid
        self._codecs = {}
        with compiling(self):
            self._ph_dict = _codegen.compile_struct(md.packet_header, "dict", "packet header")
        self.streams = []
        names = []
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            raise TraceFormatError(f"cannot list trace directory: {exc.strerror}", path, None) from None
        for fn in names:
            if fn == "metadata" or fn.startswith("."):
                continue
            fp = os.path.join(path, fn)
            if os.path.isfile(fp):
                self.streams.append(StreamFile(self, fp))

    def cycles_to_ns(self, cycles: int) -> int:
        if self.freq == 1_000_000_000:
            return self.origin_ns + cycles
        return self.origin_ns + cycles * 1_000_000_000 // self.freq

    def codec(self, stream_id):
        c = self._codecs.get(stream_id)
        if c is None:
            sc = self.metadata.streams.get(stream_id)
            if sc is None:
                return None
            with compiling(self):
                c = self._codecs[stream_id] = StreamCodec(self, sc)
        return c


class StreamCodec:
    """Compiled decoders of one stream class, built lazily per mode."""

    def __init__(self, trace: Trace, sc):
        self.trace = trace
        self.sc = sc
        what = f"stream class {sc.id}"
        self.pc_dict = _codegen.compile_struct(sc.packet_context, "dict", f"{what} packet context")
        self.header = _codegen.compile_header(sc.event_header, f"{what} event header") if sc.event_header else None
        self._cache = {}

    def get(self, key, typ, mode, what, names=True):
        k = (key, mode, names)
        try:
            return self._cache[k]
        except KeyError:
            with compiling(self.trace):
                fn = self._cache[k] = _codegen.compile_struct(typ, mode, what, names)
            return fn

    def stream_context(self, mode, names=True):
        return self.get("sctx", self.sc.event_context, mode, f"stream class {self.sc.id} event context", names)

    def event(self, eid, mode, names=True):
        ec = self.sc.events.get(eid)
        if ec is None:
            return None, None, None
        ctx = self.get(("ectx", eid), ec.context, mode, f"event {ec.name!r} context", names)
        flds = self.get(("f", eid), ec.fields, mode, f"event {ec.name!r} payload", names)
        return ec, ctx, flds


class Packet:
    __slots__ = ("offset", "size", "content_bits", "header", "context", "data", "events_start", "ts_begin",
                 "ts_end", "stream_id", "codec")


_RELEASE_EVERY = 32 << 20


def _release_pages(mm, start, end):
    """Give back the mapped pages of [start, end) of a stream file already read, so a
    long file read start to end does not keep the whole file resident (RSS) while its
    packets are copied out one at a time. The mapping is read-only and file-backed:
    a page touched again is read back from the page cache. Returns the new start."""
    page = mmap.PAGESIZE
    lo = start - start % page
    hi = end - end % page
    if hi > lo and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError):
            return start
        return hi
    return start


class StreamFile:
    """One stream file of a trace: a sequence of packets."""

    def __init__(self, trace: Trace, path: str):
        self.trace = trace
        self.path = path
        self.name = os.path.basename(path)
        self.stream_class_id = None
        self.instance_id = None
        self.discarded_total = 0
        self.lost_packets = 0
        self._first = None  # (stream_class_id, instance_id) read from the first packet

    # -- packets -------------------------------------------------------------
    def packets(self, on_discarded=None):
        path = self.path
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise TraceFormatError(f"cannot open stream: {exc.strerror}", path, None) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                yield from self._packets(mm, size, on_discarded)
            finally:
                try:
                    mm.close()
                except BufferError:
                    pass

    def _packets(self, mm, size, on_discarded):
        trace = self.trace
        md = trace.metadata
        path = self.path
        off = 0
        released = 0  # the file's pages before this offset were given back (_release_pages)
        prev_disc = None
        prev_seq = None
        prev_end = None
        while off < size:
            pk = Packet()
            pk.offset = off
            hb = mm[off: off + 65536]
            p = 0
            header = {}
            try:
                if trace._ph_dict is not None:
                    p, header = trace._ph_dict(hb, 0)
            except _DECODE_ERRORS:
                raise TraceFormatError("truncated or corrupt packet header", path, off) from None
            magic = header.get("magic")
            if magic is not None and magic != PACKET_MAGIC:
                raise TraceFormatError(f"bad packet magic 0x{magic:08x}, expected 0x{PACKET_MAGIC:08X}", path, off)
            uid = header.get("uuid")
            if uid is not None and md.uuid is not None:
                try:
                    same = bytes(uid) == md.uuid
                except (TypeError, ValueError):  # the metadata made it something else than 16 bytes
                    same = False
                if not same:
                    raise TraceFormatError("packet UUID differs from the trace UUID", path, off)
            sid = header.get("stream_id")
            if sid is None:
                if len(md.streams) != 1:
                    raise TraceFormatError("packet header has no stream_id and the trace has several stream classes",
                                           path, off)
                sid = next(iter(md.streams))
            codec = trace.codec(sid)
            if codec is None:
                raise TraceFormatError(f"packet names unknown stream class {sid}", path, off)
            ctx = {}
            try:
                if codec.pc_dict is not None:
                    p, ctx = codec.pc_dict(hb, p)
            except _DECODE_ERRORS:
                raise TraceFormatError("truncated or corrupt packet context", path, off) from None
            remaining_bits = (size - off) * 8
            psize = ctx.get("packet_size", remaining_bits)
            csize = ctx.get("content_size", psize)
            if not isinstance(psize, int) or not isinstance(csize, int):
                raise TraceFormatError("bad packet size fields", path, off)
            if psize <= 0 or psize % 8:
                raise TraceFormatError(f"bad packet size {psize} bits", path, off)
            if csize > psize or csize < p * 8:
                raise TraceFormatError(f"bad content size {csize} bits (packet size {psize} bits, "
                                       f"headers {p * 8} bits)", path, off)
            if psize > remaining_bits:
                raise TraceFormatError(f"truncated packet: packet size is {psize // 8} bytes, "
                                       f"{remaining_bits // 8} remain in the file", path, off)
            if self._first is None:
                self._first = (sid, header.get("stream_instance_id"))
                self.stream_class_id, self.instance_id = self._first
            pk.size = psize // 8
            pk.content_bits = csize
            pk.header = header
            pk.context = ctx
            pk.stream_id = sid
            pk.codec = codec
            pk.events_start = p
            pk.ts_begin = ctx.get("timestamp_begin")
            pk.ts_end = ctx.get("timestamp_end")
            pk.data = mm[off: off + (csize + 7) // 8]
            disc = ctx.get("events_discarded")
            if disc is not None:
                if prev_disc is not None and disc > prev_disc:
                    n = disc - prev_disc
                    self.discarded_total += n
                    if on_discarded is not None:
                        on_discarded(Discarded(self, n, prev_end, pk.ts_end))
                elif prev_disc is None and disc:
                    self.discarded_total += disc
                prev_disc = disc
            seq = ctx.get("packet_seq_num")
            if seq is not None:
                if prev_seq is not None and seq > prev_seq + 1:
                    n = seq - prev_seq - 1
                    self.lost_packets += n
                    if on_discarded is not None:
                        on_discarded(Discarded(self, n, prev_end, pk.ts_begin, packets=True))
                prev_seq = seq
            prev_end = pk.ts_end
            yield pk
            off += psize // 8
            if off - released >= _RELEASE_EVERY:
                released = _release_pages(mm, released, off)

    # -- events ----------------------------------------------------------------
    def events(self, order=0, on_discarded=None):
        """Yield (ns, order, Event) for every event of this stream."""
        trace = self.trace
        origin = trace.origin_ns
        freq = trace.freq
        path = self.path
        cur = 0
        for pk in self.packets(on_discarded):
            codec = pk.codec
            hdr = codec.header
            sctx = codec.stream_context("dict")
            b = pk.data
            end = pk.content_bits // 8
            p = pk.events_start
            if pk.ts_begin is not None:
                cur = pk.ts_begin
            cpu = pk.context.get("cpu_id")
            pctx = {k[1:] if k.startswith("_") else k: v for k, v in pk.context.items()
                    if k not in SPECIAL_PACKET_FIELDS}
            evcache = {}
            p0 = p
            try:
                while p < end:
                    p0 = p
                    if hdr is not None:
                        p, eid, cur = hdr(b, p, cur)
                    else:
                        eid = 0
                    ent = evcache.get(eid)
                    if ent is None:
                        ec, ectx, efields = codec.event(eid, "dict")
                        if ec is None:
                            raise TraceFormatError(f"unknown event id {eid} in stream class {pk.stream_id}",
                                                   path, pk.offset + p0)
                        ent = evcache[eid] = (ec, ectx, efields)
                    ec, ectx, efields = ent
                    context = dict(pctx)
                    if sctx is not None:
                        p, c = sctx(b, p)
                        context.update(c)
                    if ectx is not None:
                        p, c = ectx(b, p)
                        context.update(c)
                    if efields is not None:
                        p, fields = efields(b, p)
                    else:
                        fields = {}
                    if p <= p0:
                        raise TraceFormatError("event of size zero (no event header): cannot advance", path,
                                               pk.offset + p0)
                    ns = origin + cur if freq == 1_000_000_000 else origin + cur * 1_000_000_000 // freq
                    yield ns, order, Event(ec.name, ns, cur, cpu, fields, context, self, ec)
            except _DECODE_ERRORS as exc:
                raise PacketError(p0, exc).format_error(path, pk.offset) from None

# --------------------------------------------------------------------------
# Finding traces
# --------------------------------------------------------------------------

MAX_DEPTH = 32


def find_trace_dirs(path: str) -> list[str]:
    """Every directory under path (itself included) that holds a metadata file."""
    if not os.path.exists(path):
        raise TraceFormatError("no such file or directory", path, None)
    if os.path.isfile(path):
        raise TraceFormatError("not a CTF trace directory (a file was given; expected a directory "
                               "holding a 'metadata' file)", path, None)
    found = []
    seen = set()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        st = os.stat(dirpath)
        key = (st.st_dev, st.st_ino)
        if key in seen or dirpath.count(os.sep) - path.count(os.sep) > MAX_DEPTH:
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames.sort()
        if "metadata" in filenames and os.path.isfile(os.path.join(dirpath, "metadata")):
            found.append(dirpath)
            dirnames[:] = [d for d in dirnames if d != "index"]
    if not found:
        raise TraceFormatError("no CTF trace found (no 'metadata' file under this directory)", path, None)
    return found


def open_traces(paths) -> list[Trace]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    traces = []
    for path in paths:
        path = os.fspath(path)
        for d in find_trace_dirs(path):
            traces.append(Trace(d, root=path))
    return traces


def ordered_streams(traces):
    streams = []
    for t in traces:
        streams.extend(t.streams)
    # stream identity comes from the first packet header: peek it
    keyed = []
    for s in streams:
        for _ in s.packets():
            break
        keyed.append(((s.trace.uuid or b"", s.trace.name,
                       s.stream_class_id if s.stream_class_id is not None else -1,
                       s.instance_id if s.instance_id is not None else -1, s.path), s))
    keyed.sort(key=lambda kv: kv[0])
    return [s for _, s in keyed]


def merge(iterables):
    """Merge iterators of tuples (key, order, ...) sorted by (key, order); order is unique per iterator."""
    heap = []
    for it in iterables:
        nxt = iter(it).__next__
        try:
            item = nxt()
        except StopIteration:
            continue
        heap.append([item[0], item[1], item, nxt])
    heapq.heapify(heap)
    replace = heapq.heapreplace
    while len(heap) > 1:
        top = heap[0]
        yield top[2]
        try:
            item = top[3]()
        except StopIteration:
            heapq.heappop(heap)
            continue
        top[0] = item[0]
        top[2] = item
        replace(heap, top)
    if heap:
        top = heap[0]
        yield top[2]
        nxt = top[3]
        while True:
            try:
                yield nxt()
            except StopIteration:
                return


__all__ = ["Event", "Trace", "StreamFile", "Discarded", "open_traces", "merge", "find_trace_dirs",
           "ordered_streams", "SPECIAL_PACKET_FIELDS"]
