"""Bulk reading: one table of columns per event name, no object per event.

``read_columns(path)`` returns ``{event name: {column: numpy array}}`` with
columns ``timestamp`` (int64 ns from the Epoch), ``cycles`` (uint64),
``cpu_id``, then the stream/event context fields and the payload fields by
name. Integer and float fields become int64/uint64/float64 arrays, anything
else (strings, arrays, structs) an object array.

How: per stream class, one generated function decodes a whole packet
(header, contexts and every event class's payload inlined, like the text
path) and appends one tuple of values per event to that class's row list;
rows become columns at the end (``zip(*rows)`` + ``numpy.array``), and
events of several streams are put in time order by a stable argsort.

numpy is imported here only, when the function is called.
"""

from __future__ import annotations

import struct

from ust.errors import TraceFormatError

from . import _codegen
from ._codegen import _Gen, display_name
from .tsdl import EnumType, FloatType, IntType, StructType


def _scalar_kind(t):
    if isinstance(t, EnumType):
        t = t.container
    if isinstance(t, IntType):
        return "u" if not t.signed and t.size == 64 else "i"
    if isinstance(t, FloatType):
        return "f"
    return "O"


def _columns_of(st: StructType | None):
    return [] if st is None else [(display_name(n), _scalar_kind(t)) for n, t in st.fields]


class _PacketError(Exception):
    def __init__(self, offset, exc):
        self.offset = offset
        self.exc = exc


def compile_packet_rows(sc, what):
    """decode_packet(b, p, end, cur, cpu, rows) -> cur; rows: {eid: [list per column]}."""
    g = _Gen("dict", what, special_header=True)
    g.indent = 2
    g.emit("p0 = p")
    g.emit("eid = 0")
    if sc.event_header is not None:
        g.gen(sc.event_header, "h")
        g.flush()
        g.settle_bits()
    g.header = False
    ctx_vars = []
    if sc.event_context is not None:
        g.scopes.append({})
        for name, ft in sc.event_context.fields:
            v, _, entry = g.gen(ft, "c")
            g.scopes[-1][name] = (v, entry if not isinstance(entry, type(None)) else ft)
            ctx_vars.append(v)
        g.flush()
        g.settle_bits()
        g.scopes.pop()
    state = (g.mod, g.rem)
    first = True
    for eid, ec in sorted(sc.events.items()):
        g.emit(("if " if first else "elif ") + f"eid == {eid}:")
        first = False
        g.indent += 1
        g.mod, g.rem = state
        vars_ = list(ctx_vars)
        for st in (ec.context, ec.fields):
            if st is None:
                continue
            g.scopes.append({})
            for name, ft in st.fields:
                v, _, entry = g.gen(ft, "f")
                g.scopes[-1][name] = (v, entry)
                vars_.append(v)
            g.flush()
            g.settle_bits()
            g.scopes.pop()
        for i, v in enumerate(["cur", "cpu"] + vars_):
            g.emit(f"A{eid}_{i}({v})")
        g.indent -= 1
    if first:
        g.emit("if True:")
        g.emit("    raise LookupError('no event class')")
    g.emit("else:")
    g.emit("    raise LookupError('unknown event id %d' % eid)")
    g.emit("if p <= p0: raise LookupError('event of size zero')")
    head = ["def decode_packet(b, p, end, cur, cpu, rows):"]
    for eid, ec in sc.events.items():
        n = 2 + sum(len(st.fields) for st in (sc.event_context, ec.context, ec.fields) if st is not None)
        for i in range(n):
            head.append(f"    A{eid}_{i} = rows[{eid}][{i}].append")
    head += ["    p0 = p", "    try:", "     while p < end:"]
    tail = ["    except (struct_error, ValueError, IndexError, KeyError, LookupError, OverflowError) as exc:",
            "        raise PacketError(p0, exc) from None",
            "    return cur"]
    g.consts["struct_error"] = struct.error
    g.consts["PacketError"] = _PacketError
    src = "\n".join(head + g.lines + tail) + "\n"
    ns = dict(g.consts)
    exec(compile(src, f"<ust.ctf bulk decoder {what}>", "exec"), ns)
    return ns["decode_packet"]


def read_columns(path, names=None, on_discarded=None):
    """{event name: {column: numpy array}} for every event under ``path``.

    ``names``: only these event names (others are still decoded, not kept).
    """
    import numpy as np

    from .reader import open_traces

    import gc

    traces = open_traces(path)
    gc_was = gc.isenabled()
    gc.disable()  # millions of fresh containers: the cyclic GC would rescan them for nothing
    try:
        return _read_columns(np, traces, names, on_discarded)
    finally:
        if gc_was:
            gc.enable()


def _read_columns(np, traces, names, on_discarded):
    from .reader import _Compiling, _why, ordered_streams

    streams = ordered_streams(traces)
    # per (trace, stream class): row lists per event id; gathered by name at the end
    tables = {}  # name -> list of (trace, rows list, column spec)
    decoders = {}
    for s in streams:
        trace = s.trace
        cur = 0
        for pk in s.packets(on_discarded):
            sc = pk.codec.sc
            key = (id(trace), sc.id)
            ent = decoders.get(key)
            if ent is None:
                with _Compiling(trace):
                    fn = compile_packet_rows(sc, f"stream class {sc.id}")
                rows = {eid: [[] for _ in range(2 + sum(len(st.fields) for st in (sc.event_context, ec.context,
                                                                                   ec.fields) if st is not None))]
                        for eid, ec in sc.events.items()}
                ent = decoders[key] = (fn, rows, trace, sc)
            fn, rows, _, _ = ent
            if pk.ts_begin is not None:
                cur = pk.ts_begin
            try:
                cur = fn(pk.data, pk.events_start, pk.content_bits // 8, cur, pk.context.get("cpu_id"), rows)
            except _PacketError as e:
                raise TraceFormatError(f"corrupt or truncated event ({_why(e.exc)})", s.path,
                                       pk.offset + e.offset) from None
    for fn, rows, trace, sc in decoders.values():
        for eid, r in rows.items():
            if not r[0]:
                continue
            ec = sc.events[eid]
            if names is not None and ec.name not in names:
                continue
            cols = [("cycles", "u"), ("cpu_id", "i")] + _columns_of(sc.event_context) + \
                _columns_of(ec.context) + _columns_of(ec.fields)
            tables.setdefault(ec.name, []).append((trace, r, cols))
    out = {}
    for name, parts in tables.items():
        merged = {}
        for trace, rows, cols in parts:
            columns = rows
            for (cname, kind), values in zip(cols, columns):
                arr = _to_array(np, values, kind)
                merged.setdefault(cname, []).append(arr)
            cyc = np.array(columns[0], dtype=np.uint64)
            if trace.freq == 1_000_000_000:
                ts = cyc.astype(np.int64) + np.int64(trace.origin_ns)
            else:
                ts = np.array([trace.cycles_to_ns(int(c)) for c in columns[0]], dtype=np.int64)
            merged.setdefault("timestamp", []).append(ts)
        table = {}
        for cname, arrs in merged.items():
            table[cname] = arrs[0] if len(arrs) == 1 else np.concatenate(arrs)
        if len(parts) > 1:
            order = np.argsort(table["timestamp"], kind="stable")
            table = {k: v[order] for k, v in table.items()}
        ordered = {"timestamp": table.pop("timestamp")}
        ordered.update(table)
        out[name] = ordered
    return out


def _to_array(np, values, kind):
    if kind == "i":
        try:
            return np.array(values, dtype=np.int64)
        except (OverflowError, TypeError, ValueError):
            return _objects(np, values)
    if kind == "u":
        try:
            return np.array(values, dtype=np.uint64)
        except (OverflowError, TypeError, ValueError):
            return _objects(np, values)
    if kind == "f":
        return np.array(values, dtype=np.float64)
    return _objects(np, values)


def _objects(np, values):
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr
