"""The reader's pipeline: packets -> decoded chunks -> batches merged in time order.

    StreamFile.packets()        (reader: packet headers and contexts checked, discarded events)
      -> PacketCursor           (one per stream file: a packet decoder fills a chunk of events)
      -> merge_batches()        (streams merged by timestamp, in batches: stable sorts)
      -> a consumer             (what a decoded event is, and what is done with the batches)

The consumers are cursors of their own kind: ``StreamEvents`` (``Event``
records: ``read_trace``, ``ust view --json``/``--messages``, the analyses that
need every value), and ``_fasttext``'s text cursor (``ust view``, with or
without ``--filter``: each event decoded once). The bulk reader (``bulk``)
takes the packets of one stream at a time and needs no merge.

A decode error is wrapped once, by ``PacketError.format_error``.
"""

from __future__ import annotations

from bisect import bisect_left

from ust.errors import TraceFormatError

from . import _codegen
from ._codegen import PacketError, _Gen
from .reader import SPECIAL_PACKET_FIELDS, Event, compiling, open_traces, ordered_streams

try:
    from . import _decode  # the optional C helper (setup.py: optional=True)
except ImportError:  # not built: every path has a pure-Python fallback
    _decode = None


class PacketCursor:
    """Decoded-but-not-consumed events of one stream, a chunk at a time.

    Parallel lists ``cyc`` (clock values), ``key`` (merge keys) and ``txt``
    (what is yielded: lines or events), valid from ``start``: merge_batches
    consumes them. A subclass says how a packet is decoded: ``_enter(pk)``
    once per packet (pick the decoder, the packet's context), ``_decode(pk,
    end)`` to decode up to CHUNK events into cyc/txt, and ``_extend_keys(n0)``
    when keys are not the cycles themselves.
    """

    # events decoded per call: keeps memory proportional to a chunk, not to a packet
    CHUNK = 65536

    def __init__(self, stream, on_discarded, same_clock):
        self.stream = stream
        self.trace = stream.trace
        self.packets = stream.packets(on_discarded)
        self.cyc = []
        self.key = self.cyc if same_clock else []
        self.txt = []
        self.start = 0
        self.done = False
        self.cur = 0
        self.same_clock = same_clock
        self._decoders = {}
        self.pk = None
        self.p = 0
        # a bad packet: raised once the events decoded before it have been consumed
        self.error: TraceFormatError | None = None

    def _decoder(self, codec, cache_key, build):
        """The decoder of a stream class, compiled once per codec (build())."""
        dec = self._decoders.get(id(codec))
        if dec is None:
            dec = codec._cache.get(cache_key)
            if dec is None:
                with compiling(self.trace):
                    dec = codec._cache[cache_key] = build()
            self._decoders[id(codec)] = dec
        return dec

    def load(self):
        """Decode the next chunk of events into the buffer; False at the end.

        A corrupt event or packet ends the stream like babeltrace2 does: the
        events decoded before it stay in the buffer, and the error is raised
        once they are consumed (at the next load(), or at once if none is left).
        """
        if self.error is not None:
            raise self.error
        while True:
            pk = self.pk
            if pk is None or self.p >= pk.content_bits // 8:
                try:
                    pk = self.pk = next(self.packets)
                except StopIteration:
                    self.pk = None
                    self.done = True
                    return False
                except TraceFormatError as exc:  # a bad packet header or size
                    return self._fail(exc, False)
                self._enter(pk)
                if pk.ts_begin is not None:
                    self.cur = pk.ts_begin
                self.p = pk.events_start
                if self.p >= pk.content_bits // 8:
                    continue
            if self.start:
                del self.cyc[: self.start]
                del self.txt[: self.start]
                if not self.same_clock:
                    del self.key[: self.start]
                self.start = 0
            n0 = len(self.cyc)
            try:
                self._decode(pk, pk.content_bits // 8)
            except PacketError as e:
                n = min(len(self.cyc), len(self.txt))  # a decoder may stop between its two appends
                del self.cyc[n:]
                del self.txt[n:]
                if n > n0 and not self.same_clock:
                    self._extend_keys(n0)
                return self._fail(e.format_error(self.stream.path, pk.offset), n > n0)
            if len(self.cyc) > n0:
                if not self.same_clock:
                    self._extend_keys(n0)
                return True

    def _fail(self, error, added):
        """End the stream at ``error``: raised now if nothing decoded is left to consume, else
        at the next load(). Returns whether this load added events."""
        self.error = error
        if self.start >= len(self.cyc):
            raise error from None
        return added


def shared_clock(streams):
    """(same_clock, origin) of the streams to merge.

    When every stream shares one clock (same origin and frequency, 1 GHz), merge
    keys are the cycles themselves and ns = origin + cycles: same_clock is True.
    Otherwise keys are ns from the Epoch and origin is None.
    """
    clocks = {(s.trace.origin_ns, s.trace.freq) for s in streams}
    same_clock = len(clocks) <= 1
    origin = None
    if same_clock and clocks:
        o, f = next(iter(clocks))
        origin = o if f == 1_000_000_000 else None
        if origin is None:
            same_clock = False
    return same_clock, origin


def merge_batches(cursors, origin):
    """Yield batches (keys, cycles, items, origin) in time order from PacketCursors
    built with ``shared_clock``'s same_clock (``origin`` its second value).
    Items are what the cursors decode: text, events, ..."""
    same_clock = cursors[0].same_clock if cursors else True
    active = [s for s in cursors if s.load()]
    if len(active) == 1:
        st = active[0]
        while True:
            k = st.key[st.start:]
            yield k, (k if same_clock else st.cyc[st.start:]), st.txt[st.start:], origin
            st.start = len(st.cyc)
            if not st.load():
                return
    while active:
        # a stream that failed (s.error) takes part up to its last good event, then
        # its next load() raises: what comes after the failure is not printed
        lasts = [s.key[-1] + (s.error is not None) for s in active if not s.done]
        h = min(lasts) if lasts else None
        keys, cycs, txts = [], [], []
        for s in active:
            i = len(s.key) if h is None else bisect_left(s.key, h, s.start)
            if i > s.start:
                keys.extend(s.key[s.start:i])
                if not same_clock:
                    cycs.extend(s.cyc[s.start:i])
                txts.extend(s.txt[s.start:i])
                s.start = i
        if keys:
            order = sorted(range(len(keys)), key=keys.__getitem__)
            keys = [keys[i] for i in order]
            txts = [txts[i] for i in order]
            cycs = keys if same_clock else [cycs[i] for i in order]
            yield keys, cycs, txts, origin
        if h is None:
            return
        nxt = []
        for s in active:
            if not s.done and s.error is None and s.key[-1] == h:
                s.load()
            if s.start < len(s.key):
                nxt.append(s)
            elif not s.done and s.load():
                nxt.append(s)
        active = nxt


def compile_packet_events(codec, trace, event_type):
    """decode_packet(b, p, end, cur, pctx, cpu, stream, out_cyc, out_ev, limit) -> (cur, p).

    Decodes at most ``limit`` events from offset p (a chunk: fewer live
    objects at once keeps the cyclic GC cheap)."""
    sc = codec.sc
    what = f"stream class {sc.id}"
    g = _Gen("dict", what, special_header=True)
    g.indent = 2
    g.emit("p0 = p")
    lttng = sc.event_header is not None and _codegen.lttng_header_kind(sc.event_header) is not None
    if not lttng:
        g.emit("eid = 0")
    if sc.event_header is not None:
        g.gen(sc.event_header, "h")
        g.flush()
        g.settle_bits()
    g.header = False
    sitems = ""
    if sc.event_context is not None:
        expr, _, _ = g.gen(sc.event_context, "c", inline=True)
        g.flush()
        g.settle_bits()
        sitems = expr[1:-1]
    state = (g.mod, g.rem)
    if trace.freq == 1_000_000_000:
        ns_expr = f"cur + {trace.origin_ns}"
    else:
        g.consts["to_ns"] = trace.cycles_to_ns
        ns_expr = "to_ns(cur)"
    first = True
    for eid, ec in sorted(sc.events.items()):
        g.emit(("if " if first else "elif ") + f"eid == {eid}:")
        first = False
        g.indent += 1
        g.mod, g.rem = state
        eitems = ""
        if ec.context is not None:
            expr, _, _ = g.gen(ec.context, "x", inline=True)
            g.flush()
            g.settle_bits()
            eitems = expr[1:-1]
        fexpr = "{}"
        if ec.fields is not None:
            fexpr, _, _ = g.gen(ec.fields, "f", inline=True)
            g.flush()
            g.settle_bits()
        ctx = "{**pctx" + "".join(", " + x for x in (sitems, eitems) if x) + "}"
        name = g.const(ec.name, "NAME")
        ecn = g.const(ec, "EC")
        g.emit(f"ev_append(new(Event, ({name}, {ns_expr}, cur, cpu, {fexpr}, {ctx}, stream, {ecn})))")
        g.indent -= 1
    g.emit_unknown_event(first)
    if not lttng:
        g.emit("if p <= p0: raise LookupError('event of size zero')")
    g.emit("cyc_append(cur)")
    g.emit("limit -= 1")
    g.emit("if not limit: break")
    head = ["def decode_packet(b, p, end, cur, pctx, cpu, stream, out_cyc, out_ev, limit):",
            "    cyc_append = out_cyc.append",
            "    ev_append = out_ev.append",
            "    p0 = p",
            "    try:",
            "     while p < end:"]
    tail = g.packet_error_clause("p0") + ["    return cur, p"]
    g.consts.update(new=tuple.__new__, Event=event_type)
    return g.define("decode_packet", head + g.lines + tail, f"event decoder {what}")


class StreamEvents(PacketCursor):
    """Events of one stream, as ``Event`` records."""

    CHUNK = 2048

    def __init__(self, stream, on_discarded, same_clock, event_type):
        super().__init__(stream, on_discarded, same_clock)
        self.event_type = event_type

    def _enter(self, pk):
        codec = pk.codec
        self.dec = self._decoder(codec, "packet_events",
                                 lambda: compile_packet_events(codec, self.trace, self.event_type))
        self.pctx = {k: v for k, v in pk.context.items() if k not in SPECIAL_PACKET_FIELDS}
        self.cpu = pk.context.get("cpu_id")

    def _decode(self, pk, end):
        self.cur, self.p = self.dec(pk.data, self.p, end, self.cur, self.pctx, self.cpu, self.stream, self.cyc,
                                    self.txt, self.CHUNK)

    def _extend_keys(self, n0):
        self.key.extend([ev[1] for ev in self.txt[n0:]])


def iter_events(traces, on_discarded=None):
    """Events of opened traces, in time order."""
    streams = ordered_streams(traces)
    same_clock, origin = shared_clock(streams)
    cursors = [StreamEvents(s, on_discarded, same_clock, Event) for s in streams]
    for _keys, _cycs, evs, _origin in merge_batches(cursors, origin):
        yield from evs


def read_trace(path, on_discarded=None):
    """Events of every CTF trace under ``path`` (one or several), in time order.

    Whole packets are decoded by generated functions and streams merged in
    batches; ``StreamFile.events`` is the simple event-by-event reference the
    tests compare it with.
    """
    return iter_events(open_traces(path), on_discarded)


read_trace.__module__ = "ust"  # used as ust.read_trace (tests/test_api.py)
