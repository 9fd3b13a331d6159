"""The text consumer of the reader's pipeline (``pipeline.py``): ``ust view``.

Per stream class (and text format, and filter), one function is generated::

    decode_packet(b, p, end, cur, pctx, out_cyc, out_txt, limit, pvals=None) -> (cur, p)

It loops over the events of one packet with the event header, the stream
and event contexts and every event class's payload *inlined* (dispatch on the
event id by an if/elif chain), appending each event's clock value to
``out_cyc`` and its text (everything after the timestamp and delta) to
``out_txt``. There is no Python call per field and one per event at most
(strings, enums, lists). With a filter, each field is decoded once into a
value that the filter sees and a text built only for the events it keeps.

When the C helper is built and handles the stream class, ``render_packet``
does the same from a small program per event class (no filter). The batches
that ``pipeline.merge_batches`` merges get their timestamps, deltas and
encoding from ``format_lines`` (C) or ``format_batch`` (Python).
"""

from __future__ import annotations

from . import _codegen, pipeline
from ._codegen import PacketError, _fstring, _Gen, _tmpl
from .pipeline import PacketCursor, merge_batches, shared_clock
from .reader import SPECIAL_PACKET_FIELDS, ordered_streams

_CHAIN_MAX = 48


def compile_packet_text(codec, fmt, trace, filt=None):
    """decode_packet(b, p, end, cur, pctx, out_cyc, out_txt, limit, pvals=None) -> (cur, p).

    With ``filt`` (a ``ust.filter.Filter``), each field is decoded once into a
    value and its text (``_codegen``'s "both" mode): the values go to
    ``filt.matches(fields, context)`` (``pvals``: the packet context's values),
    and only the events that match are appended."""
    sc = codec.sc
    what = f"stream class {sc.id}"
    g = _Gen("text" if filt is None else "both", what, special_header=True, names=fmt.names_payload)
    g.indent = 2
    if filt is not None:
        g.consts["matches"] = filt.matches
        g.consts["NO_CONTEXT"] = {}
    lines_head = ["def decode_packet(b, p, end, cur, pctx, out_cyc, out_txt, limit, pvals=None):",
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
    ctx_values = ["**pvals"]  # the filter's context dict, merged from the scopes' values
    zero_size_check = sc.event_header is None or _codegen.lttng_header_kind(sc.event_header) is None
    if sc.event_context is not None:
        g.names = fmt.names_context
        g.consts["fmt_list"] = _codegen.fmt_list if g.names else _codegen.fmt_list_nn
        sv, stxt, _ = g.gen(sc.event_context, "c")
        ctx_values.append("**" + sv)
        g.flush()
        g.settle_bits()
        pieces.append(fmt.scope_prefix("stream.event.context") + _tmpl(stxt))
    state = (g.mod, g.rem)
    events = sorted(sc.events.items())
    use_chain = len(events) <= _CHAIN_MAX or filt is not None
    if use_chain:
        first = True
        for eid, ec in events:
            g.emit(("if " if first else "elif ") + f"eid == {eid}:")
            first = False
            g.indent += 1
            g.mod, g.rem = state
            parts = list(pieces)
            ctx = list(ctx_values)
            fvalue = "{}"
            if ec.context is not None:
                g.names = fmt.names_context
                xv, etxt, _ = g.gen(ec.context, "x")
                g.flush()
                g.settle_bits()
                parts.append(fmt.scope_prefix("event.context") + _tmpl(etxt))
                ctx.append("**" + xv)
            if ec.fields is not None:
                g.names = fmt.names_payload
                _, ftxt, fscope = g.gen(ec.fields, "f", inline=True)
                if filt is not None:
                    # the fields the filter names, and only those: the others need no dict entry
                    fvalue = "{" + ", ".join(f"{_codegen.display_name(n)!r}: {var}"
                                             for n, (var, _) in fscope.members.items()
                                             if _codegen.display_name(n) in filt.fields) + "}"
                g.flush()
                g.settle_bits()
                parts.append(fmt.scope_prefix("event.fields") + _tmpl(ftxt))
            head = fmt.event_head(ec, trace)
            hname = g.const(head, "HEAD")
            tmpl = "\0" + hname + "\0\0pctx\0" + ", ".join(parts)
            if filt is None:
                g.emit(f"txt_append({_fstring(tmpl)})")
            else:
                if zero_size_check:
                    g.emit("if p <= p0: raise LookupError('event of size zero')")
                ctx_expr = "{" + ", ".join(ctx) + "}" if filt.context_fields else "NO_CONTEXT"
                g.emit(f"if matches({fvalue}, {ctx_expr}):")
                g.emit(f"    txt_append({_fstring(tmpl)})")
                g.emit("    cyc_append(cur)")
                g.emit("    limit -= 1")
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
    if filt is None:
        if zero_size_check:
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

    _decode = pipeline._decode
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


class _StreamText(PacketCursor):
    """Lines of babeltrace2 text, for ``ust view`` (``filt``: only the events that match)."""

    def __init__(self, stream, fmt, on_discarded, same_clock, use_c=True, filt=None):
        super().__init__(stream, on_discarded, same_clock)
        # the C renderer does not give values to a filter: with one, the generated decoders
        self.use_c = use_c and pipeline._decode is not None and filt is None
        self.fmt = fmt
        self.filt = filt

    def _build(self, codec):
        render = compile_packet_render(codec, self.fmt, self.trace) if self.use_c else None
        return compile_packet_text(codec, self.fmt, self.trace, self.filt), _has_more(codec), render

    def _enter(self, pk):
        codec = pk.codec
        self.dec = dec = self._decoder(codec, ("packet_text", id(self.fmt), self.use_c, id(self.filt)),
                                       lambda: self._build(codec))
        pctx = self.fmt.packet_context_text(codec.sc.packet_context, pk.context)
        if pctx and dec[1]:
            pctx += ", "
        self.pctx = pctx
        self.pctx_b = pctx.encode("utf-8", "surrogateescape")
        if self.filt is not None:
            self.pvals = {k: v for k, v in pk.context.items() if k not in SPECIAL_PACKET_FIELDS}

    def _decode(self, pk, end):
        dec = self.dec
        render = dec[2]
        if render is not None:
            kind, programs, lits, enums = render
            try:
                self.cur, self.p = pipeline._decode.render_packet(pk.data, self.p, end, self.cur, kind, programs,
                                                                  lits, enums, self.pctx_b, self.cyc, self.txt,
                                                                  self.CHUNK)
            except ValueError as exc:
                raise PacketError.from_c(exc) from None
        elif self.filt is not None:
            self.cur, self.p = dec[0](pk.data, self.p, end, self.cur, self.pctx, self.cyc, self.txt, self.CHUNK,
                                      self.pvals)
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


def text_batches(streams, fmt, on_discarded=None, use_c=True, filt=None):
    """The pipeline's batches of text (keys, cycles, texts, origin) for ``ust view``."""
    same_clock, origin = shared_clock(streams)
    cursors = [_StreamText(s, fmt, on_discarded, same_clock, use_c, filt) for s in streams]
    return merge_batches(cursors, origin)


def iter_lines(streams, fmt, on_discarded=None, use_c=False, filt=None):
    """Lists of output lines of ``ust view``, with timestamps and deltas (pure Python)."""
    state = [None, 0, 0, ""]  # prev, base, next_sec, sec text
    for keys, cycs, txts, origin in text_batches(streams, fmt, on_discarded, use_c, filt):
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


def iter_bytes(streams, fmt, on_discarded=None, use_c=True, filt=None):
    """Encoded output of ``ust view`` in chunks of bytes (``filt``: only the events that match).

    Timestamps, deltas, joining and encoding are done by the C helper
    ``_decode.format_lines`` when it is built, else by ``iter_lines``.
    """
    _decode = pipeline._decode
    if _decode is None or not use_c:
        for lines in iter_lines(streams, fmt, on_discarded, use_c=False, filt=filt):
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
    for keys, cycs, txts, origin in text_batches(streams, fmt, on_discarded, True, filt):
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


def view_bytes(traces, fmt, on_discarded=None, filt=None):
    """``ust view``'s output of opened traces, in chunks of UTF-8 bytes (``filt``: a
    ``ust.filter.Filter``; only the events that match, each decoded once)."""
    return iter_bytes(ordered_streams(traces), fmt, on_discarded, filt=filt)
