"""The fast text path of ``ust view``: whole packets decoded by one generated
function, streams merged in batches by C-level sorts.

Per stream class (and text format), one function is generated::

    decode_packet(b, p, end, cur, pctx, out_cyc, out_txt) -> cur

It loops over the events of one packet with the event header, the stream
and event contexts and every event class's payload *inlined* (dispatch on the
event id by an if/elif chain), appending each event's clock value to
``out_cyc`` and its text (everything after the timestamp and delta) to
``out_txt``. There is no Python call per field and one per event at most
(strings, enums, lists).

Merging: each stream keeps a buffer of decoded events. With H the smallest
"last timestamp" among the buffers of live streams, every buffered event
earlier than H can be emitted: they are concatenated in stream order and
sorted by timestamp (a stable sort, so ties keep stream order, then file
order). The streams whose buffer ends at H load their next packet.
"""

from __future__ import annotations

from bisect import bisect_left

from ust.errors import TraceFormatError

from . import _codegen
from ._codegen import PacketError, _fstring, _Gen, _tmpl

_CHAIN_MAX = 48


def compile_packet_text(codec, fmt, trace):
    sc = codec.sc
    what = f"stream class {sc.id}"
    g = _Gen("text", what, special_header=True, names=fmt.names_payload)
    g.indent = 2
    lines_head = ["def decode_packet(b, p, end, cur, pctx, out_cyc, out_txt, limit):",
                  "    cyc_append = out_cyc.append",
                  "    txt_append = out_txt.append",
                  "    p0 = p",
                  "    try:",
                  "     while p < end:"]
    g.lines = []
    g.indent = 2
    g.emit("p0 = p")
    if sc.event_header is not None:
        if _codegen.lttng_header_kind(sc.event_header) is None:
            g.emit("eid = 0")
        g.gen(sc.event_header, "h")
        g.flush()
        g.settle_bits()
    else:
        g.emit("eid = 0")
    g.header = False
    pieces = []  # f-string template parts, \0expr\0 holes
    if sc.event_context is not None:
        g.names = fmt.names_context
        g.consts["fmt_list"] = _codegen.fmt_list if g.names else _codegen.fmt_list_nn
        sv, stxt, _ = g.gen(sc.event_context, "c")
        g.flush()
        g.settle_bits()
        pieces.append(fmt.scope_prefix("stream.event.context") + _tmpl(stxt))
    state = (g.mod, g.rem)
    events = sorted(sc.events.items())
    use_chain = len(events) <= _CHAIN_MAX
    if use_chain:
        first = True
        for eid, ec in events:
            g.emit(("if " if first else "elif ") + f"eid == {eid}:")
            first = False
            g.indent += 1
            g.mod, g.rem = state
            parts = list(pieces)
            if ec.context is not None:
                g.names = fmt.names_context
                _, etxt, _ = g.gen(ec.context, "x")
                g.flush()
                g.settle_bits()
                parts.append(fmt.scope_prefix("event.context") + _tmpl(etxt))
            if ec.fields is not None:
                g.names = fmt.names_payload
                _, ftxt, _ = g.gen(ec.fields, "f", inline=True)
                g.flush()
                g.settle_bits()
                parts.append(fmt.scope_prefix("event.fields") + _tmpl(ftxt))
            head = fmt.event_head(ec, trace)
            hname = g.const(head, "HEAD")
            tmpl = "\0" + hname + "\0\0pctx\0" + ", ".join(parts)
            g.emit(f"txt_append({_fstring(tmpl)})")
            g.indent -= 1
        g.emit("else:")
        g.emit("    raise LookupError('unknown event id %d' % eid)")
    else:
        # many event classes: a dict of per-class functions
        funcs = {}
        for eid, ec in events:
            funcs[eid] = _per_event_text(codec, fmt, trace, ec, pieces_prefix=bool(pieces))
        dname = g.const(funcs, "EVENTS")
        g.emit(f"fn = {dname}.get(eid)")
        g.emit("if fn is None: raise LookupError('unknown event id %d' % eid)")
        if pieces:
            g.emit(f"stxt = {_fstring(', '.join(pieces))}")
            g.emit("p, t = fn(b, p)")
            g.emit("txt_append(t[0] + pctx + stxt + t[1])")
        else:
            g.emit("p, t = fn(b, p)")
            g.emit("txt_append(t[0] + pctx + t[1])")
    if sc.event_header is None or _codegen.lttng_header_kind(sc.event_header) is None:
        g.emit("if p <= p0: raise LookupError('event of size zero')")
    g.emit("cyc_append(cur)")
    g.emit("limit -= 1")
    g.emit("if not limit: break")
    g.lines.extend(g.packet_error_clause("p0") + ["    return cur, p"])
    return g.define("decode_packet", lines_head + g.lines, f"packet decoder {what}")


def _per_event_text(codec, fmt, trace, ec, pieces_prefix):
    """(b, p) -> (p, (head, rest)) for one event class (many-classes fallback)."""
    g = _Gen("text", f"event {ec.name!r}", names=fmt.names_payload)
    parts = []
    if ec.context is not None:
        g.names = fmt.names_context
        _, etxt, _ = g.gen(ec.context, "x")
        g.flush()
        parts.append(fmt.scope_prefix("event.context") + _tmpl(etxt))
    if ec.fields is not None:
        g.names = fmt.names_payload
        _, ftxt, _ = g.gen(ec.fields, "f")
        g.flush()
        parts.append(fmt.scope_prefix("event.fields") + _tmpl(ftxt))
    g.settle_bits()
    rest = ", ".join(parts)
    if rest and pieces_prefix:
        rest = ", " + rest
    head = g.const(fmt.event_head(ec, trace), "HEAD")
    expr = f"({head}, {_fstring(rest) if rest else repr('')})"
    return _codegen._build(g, "decode_event", expr)


# --------------------------------------------------------------------------
# The same text, rendered by C (_decode.render_packet) from a small program
# per event class, when every type of the stream class is one it handles.
# --------------------------------------------------------------------------

R_LIT, R_PCTX, R_INT, R_FLOAT, R_STRING, R_TEXT, R_INTS, R_ENUM, R_ALIGN = range(1, 10)
_MAX_OP_ALIGN = 1 << 30  # bytes: the render program is an array of C ints


class _NoRender(Exception):
    pass


class _RenderBuilder:
    def __init__(self, lits, enums):
        self.ops = []
        self.lits = lits  # shared: bytes -> index
        self.enums = enums  # shared: list of callables
        self.regs = {}
        self.pending = []

    def lit(self, text):
        if text:
            self.pending.append(text)

    def flush(self):
        if self.pending:
            data = "".join(self.pending).encode("utf-8", "surrogateescape")
            self.pending = []
            idx = self.lits.setdefault(data, len(self.lits))
            self.ops += [R_LIT, idx]

    def op(self, *ops):
        self.flush()
        self.ops += list(ops)

    def align(self, bits):
        if bits % 8:
            if bits > 1:
                raise _NoRender
            return
        if bits > 8:
            if bits // 8 > _MAX_OP_ALIGN:
                raise _NoRender  # an int32 op cannot hold it: the generated Python decoders can
            self.op(R_ALIGN, bits // 8)

    def struct(self, st, names):
        if st.min_align > 8:
            self.align(st.min_align)
        if not st.fields:
            self.lit("{ }")
            return
        self.lit("{ ")
        for i, (name, t) in enumerate(st.fields):
            if i:
                self.lit(", ")
            if names:
                self.lit(_codegen.display_name(name) + " = ")
            self.field(name, t, names)
        self.lit(" }")

    def int_op(self, t, name):
        if t.size not in (8, 16, 32, 64) or t.align % 8 or t.byte_order != "le":
            raise _NoRender
        self.align(t.align)
        reg = -1
        if name is not None:
            if len(self.regs) >= 16 and name not in self.regs:
                reg = -1
            else:
                reg = self.regs.setdefault(name, len(self.regs))
        return reg

    def field(self, name, t, names):
        from .tsdl import ArrayType, EnumType, FloatType, IntType, SequenceType, StringType
        if isinstance(t, EnumType):
            c = t.container
            self.int_op(c, None)
            self.enums.append(_codegen.make_enum_fmt(t))
            self.op(R_ENUM, c.size // 8, int(c.signed), len(self.enums) - 1)
            return
        if isinstance(t, IntType):
            reg = self.int_op(t, name)
            self.op(R_INT, t.size // 8, int(t.signed), t.base, reg)
            return
        if isinstance(t, FloatType):
            if t.size not in (32, 64) or t.align % 8 or t.byte_order != "le":
                raise _NoRender
            self.align(t.align)
            self.op(R_FLOAT, t.size // 8)
            return
        if isinstance(t, StringType):
            self.op(R_STRING)
            return
        if isinstance(t, (ArrayType, SequenceType)):
            e = t.element
            if not isinstance(e, IntType) or e.size not in (8, 16, 32, 64) or e.align % 8 or e.byte_order != "le":
                raise _NoRender
            if isinstance(t, SequenceType):
                reg = self.regs.get(t.length_ref.split(".")[-1])
                if reg is None:
                    raise _NoRender
                n = 0
            else:
                reg, n = -1, t.length
            self.align(max(e.align, 8))
            if e.encoding != "none" and e.size == 8:
                self.op(R_TEXT, n, reg)
            else:
                self.op(R_INTS, n, reg, e.size // 8, int(e.signed), e.base, int(self.names_payload))
            return
        raise _NoRender  # nested structs, variants, ...


def compile_packet_render(codec, fmt, trace):
    """(kind, programs, lits, enum_fmts) for _decode.render_packet, or None."""
    import sys

    if _decode is None or not hasattr(_decode, "render_packet") or sys.byteorder != "little":
        return None
    sc = codec.sc
    if sc.event_header is None:
        return None
    kind = {"large": 1, "compact": 2}.get(_codegen.lttng_header_kind(sc.event_header))
    if kind is None:
        return None
    lits, enums = {}, []
    programs = [None] * (max(sc.events) + 1 if sc.events else 0)
    try:
        for eid, ec in sc.events.items():
            b = _RenderBuilder(lits, enums)
            b.names_payload = fmt.names_payload
            b.lit(fmt.event_head(ec, trace))
            b.op(R_PCTX)
            first = True
            for st, scope, names in ((sc.event_context, "stream.event.context", fmt.names_context),
                                     (ec.context, "event.context", fmt.names_context),
                                     (ec.fields, "event.fields", fmt.names_payload)):
                if st is None:
                    continue
                if not first:
                    b.lit(", ")
                first = False
                b.lit(fmt.scope_prefix(scope))
                b.names_payload = names
                b.struct(st, names)
            b.flush()
            import array
            programs[eid] = array.array("i", b.ops).tobytes()
    except _NoRender:
        return None
    lit_list = [None] * len(lits)
    for data, i in lits.items():
        lit_list[i] = data
    return kind, tuple(programs), tuple(lit_list), tuple(enums)


# --------------------------------------------------------------------------
# Streams -> merged lines
# --------------------------------------------------------------------------


class PacketCursor:
    """Decoded-but-not-consumed events of one stream, a chunk at a time.

    Parallel lists ``cyc`` (clock values), ``key`` (merge keys) and ``txt``
    (what is yielded: lines or events), valid from ``start``: merged_text
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
                from .reader import _Compiling
                with _Compiling(self.trace):
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
                from .reader import _why
                n = min(len(self.cyc), len(self.txt))  # a decoder may stop between its two appends
                del self.cyc[n:]
                del self.txt[n:]
                if n > n0 and not self.same_clock:
                    self._extend_keys(n0)
                return self._fail(TraceFormatError(f"corrupt or truncated event ({_why(e.exc)})",
                                                   self.stream.path, pk.offset + e.offset), n > n0)
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


class _StreamText(PacketCursor):
    """Lines of babeltrace2 text, for ``ust view``."""

    def __init__(self, stream, fmt, on_discarded, same_clock, use_c=True):
        super().__init__(stream, on_discarded, same_clock)
        self.use_c = use_c and _decode is not None
        self.fmt = fmt

    def _build(self, codec):
        render = compile_packet_render(codec, self.fmt, self.trace) if self.use_c else None
        return compile_packet_text(codec, self.fmt, self.trace), _has_more(codec), render

    def _enter(self, pk):
        codec = pk.codec
        self.dec = dec = self._decoder(codec, ("packet_text", id(self.fmt), self.use_c),
                                       lambda: self._build(codec))
        pctx = self.fmt.packet_context_text(codec.sc.packet_context, pk.context)
        if pctx and dec[1]:
            pctx += ", "
        self.pctx = pctx
        self.pctx_b = pctx.encode("utf-8", "surrogateescape")

    def _decode(self, pk, end):
        dec = self.dec
        render = dec[2]
        if render is not None:
            kind, programs, lits, enums = render
            try:
                self.cur, self.p = _decode.render_packet(pk.data, self.p, end, self.cur, kind, programs, lits, enums,
                                                         self.pctx_b, self.cyc, self.txt, self.CHUNK)
            except ValueError as exc:
                msg, _, off = str(exc).rpartition("|")
                raise PacketError(int(off or 0), ValueError(msg)) from None
        else:
            self.cur, self.p = dec[0](pk.data, self.p, end, self.cur, self.pctx, self.cyc, self.txt, self.CHUNK)

    def _extend_keys(self, n0):
        tr = self.trace
        if tr.freq == 1_000_000_000:
            o = tr.origin_ns
            self.key.extend([o + c for c in self.cyc[n0:]])
        else:
            self.key.extend([tr.cycles_to_ns(c) for c in self.cyc[n0:]])


def _has_more(codec):
    """Whether something follows the packet context on each line."""
    sc = codec.sc
    if sc.event_context is not None:
        return True
    return any(ec.fields is not None or ec.context is not None for ec in sc.events.values())


def merged_text(streams, fmt, on_discarded=None, use_c=True, factory=None):
    """Yield batches (keys, cycles, texts, origin) in time order.

    When every stream shares one clock (same origin and frequency), keys are
    the cycles themselves and ns = origin + cycles (1 GHz clocks); otherwise
    keys are ns from the Epoch and origin is None.
    """
    clocks = {(s.trace.origin_ns, s.trace.freq) for s in streams}
    same_clock = len(clocks) <= 1
    origin = None
    if same_clock and clocks:
        o, f = next(iter(clocks))
        origin = o if f == 1_000_000_000 else None
        if origin is None:
            same_clock = False
    if factory is None:
        ss = [_StreamText(s, fmt, on_discarded, same_clock, use_c) for s in streams]
    else:
        ss = [factory(s, same_clock) for s in streams]
    active = [s for s in ss if s.load()]
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


def iter_lines(streams, fmt, on_discarded=None, use_c=False):
    """Lists of output lines of ``ust view`` (fast path), with timestamps and deltas."""
    state = [None, 0, 0, ""]  # prev, base, next_sec, sec text
    for keys, cycs, txts, origin in merged_text(streams, fmt, on_discarded, use_c):
        yield format_batch(keys, cycs, txts, origin, fmt, state)


def format_batch(keys, cycs, txts, origin, fmt, state):
    """Timestamped lines of one merged batch (pure Python); state carries prev across batches."""
    prev, base, next_sec, stext = state
    cycles_mode = fmt.clock_cycles
    delta = fmt.delta
    nh = fmt.names_header
    sec_text = fmt.sec_text
    seconds = fmt.clock_seconds
    out = []
    append = out.append
    if cycles_mode:
        for c, t in zip(cycs, txts):
            if delta:
                d = "(+????????????)" if prev is None else "(+%012d)" % (c - prev)
                prev = c
                if nh:
                    append(f"timestamp = {c:020d}, delta = {d[1:-1]}, {t}\n")
                else:
                    append(f"[{c:020d}] {d} {t}\n")
            else:
                prev = c
                append(f"timestamp = {c:020d}, {t}\n" if nh else f"[{c:020d}] {t}\n")
        state[0] = prev
        return out
    o = origin or 0
    for k, t in zip(keys, txts):
        ns = k + o
        if not (base <= ns < next_sec):
            sec = ns // 1_000_000_000
            base = sec * 1_000_000_000
            next_sec = base + 1_000_000_000
            stext = str(sec) if seconds else sec_text(sec)
        if delta:
            if prev is None:
                d = "+?.?????????"
            else:
                dd = ns - prev
                if 0 <= dd < 1_000_000_000:
                    prev = ns
                    if nh:
                        append(f"timestamp = {stext}.{ns - base:09d}, delta = +0.{dd:09d}, {t}\n")
                    else:
                        append(f"[{stext}.{ns - base:09d}] (+0.{dd:09d}) {t}\n")
                    continue
                d = f"+{dd // 1_000_000_000}.{dd % 1_000_000_000:09d}"
            prev = ns
            if nh:
                append(f"timestamp = {stext}.{ns - base:09d}, delta = {d}, {t}\n")
            else:
                append(f"[{stext}.{ns - base:09d}] ({d}) {t}\n")
        else:
            prev = ns
            append(f"timestamp = {stext}.{ns - base:09d}, {t}\n" if nh else f"[{stext}.{ns - base:09d}] {t}\n")
    state[:] = [prev, base, next_sec, stext]
    return out


try:
    from . import _decode
except ImportError:  # not built: the pure-Python formatting above is used
    _decode = None


def iter_bytes(streams, fmt, on_discarded=None, use_c=True):
    """Encoded output of ``ust view`` (fast path) in chunks of bytes.

    Timestamps, deltas, joining and encoding are done by the C helper
    ``_decode.format_lines`` when it is built, else by ``iter_lines``.
    """
    if _decode is None or not use_c:
        for lines in iter_lines(streams, fmt, on_discarded, use_c=False):
            yield "".join(lines).encode("utf-8", "surrogateescape")
        return
    flags = 0
    if fmt.clock_cycles:
        flags |= _decode.CYCLES
    if fmt.clock_seconds:
        flags |= _decode.SECONDS
    if fmt.clock_gmt:
        flags |= _decode.GMT
    if fmt.clock_date:
        flags |= _decode.DATE
    if fmt.delta:
        flags |= _decode.DELTA
    if fmt.names_header:
        flags |= _decode.NAMES_HEADER
    state = [None, 0, 0, ""]
    fl = _decode.format_lines
    for keys, cycs, txts, origin in merged_text(streams, fmt, on_discarded):
        try:
            if fmt.clock_cycles:
                data, state[0] = fl(cycs, txts, 0, flags, state[0])
            else:
                data, state[0] = fl(keys, txts, origin or 0, flags, state[0])
            state[2] = 0  # the Python formatter's second cache is stale now
        except OverflowError:
            # a clock value beyond 64 bits or beyond the C library's time range
            state[1] = state[2] = 0
            data = "".join(format_batch(keys, cycs, txts, origin, fmt, state)).encode("utf-8", "surrogateescape")
        yield data
