"""``read_trace``'s fast path: whole packets decoded to ``Event`` records by
one generated function per stream class (header, contexts and every event
class inlined, like ``_fasttext`` does for text), streams merged in batches.
"""

from __future__ import annotations

from . import _codegen
from ._codegen import _Gen
from ._fasttext import PacketCursor


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
    """Events of one stream, for read_trace (merged by _fasttext.merged_text)."""

    CHUNK = 2048

    def __init__(self, stream, on_discarded, same_clock, event_type):
        super().__init__(stream, on_discarded, same_clock)
        self.event_type = event_type

    def _enter(self, pk):
        from .reader import SPECIAL_PACKET_FIELDS

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
