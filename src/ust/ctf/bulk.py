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

import os


from ._codegen import PacketError, _Gen, display_name
from .tsdl import ArrayType, EnumType, FloatType, IntType, SequenceType, StringType, StructType


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
    g.emit_unknown_event(first)
    g.emit("if p <= p0: raise LookupError('event of size zero')")
    head = ["def decode_packet(b, p, end, cur, cpu, rows):"]
    for eid, ec in sc.events.items():
        n = 2 + sum(len(st.fields) for st in (sc.event_context, ec.context, ec.fields) if st is not None)
        for i in range(n):
            head.append(f"    A{eid}_{i} = rows[{eid}][{i}].append")
    head += ["    p0 = p", "    try:", "     while p < end:"]
    tail = g.packet_error_clause("p0") + ["    return cur"]
    return g.define("decode_packet", head + g.lines + tail, f"bulk decoder {what}")


# --------------------------------------------------------------------------
# Fast path: event positions found in C (_decode.scan_events), fixed-layout
# event classes gathered by numpy, the others decoded at their offsets.
# --------------------------------------------------------------------------

OP_FIXED, OP_STRING, OP_ALIGN, OP_SEQ = 1, 2, 3, 4
_NP_CODES = {(8, True): "i1", (8, False): "u1", (16, True): "<i2", (16, False): "<u2", (32, True): "<i4",
             (32, False): "<u4", (64, True): "<i8", (64, False): "<u8"}


class _NoProgram(Exception):
    pass


class _ProgramBuilder:
    """Skip program (see _decode.c) and, while every field is fixed, the row layout."""

    def __init__(self):
        self.ops = []
        self.epoch = 0  # increments at each variable-size item
        self.pos = 0  # bytes since the start of the epoch
        self.row = []  # [(column, numpy format, offset)] while fixed
        self.fixed = True
        self.scopes = []

    def fixed_bytes(self, n):
        if n > 1 << 30 or self.pos + n > 1 << 30:
            raise _NoProgram  # a skip that does not fit an int32 op: the Python path
        if self.ops and self.ops[-2:-1] == [OP_FIXED] and len(self.ops) >= 2 and self._last_is_fixed:
            self.ops[-1] += n
        else:
            self.ops += [OP_FIXED, n]
        self._last_is_fixed = True
        self.pos += n

    _last_is_fixed = False

    def variable(self, *op):
        self.ops += list(op)
        self._last_is_fixed = False
        self.epoch += 1
        self.pos = 0
        self.fixed = False

    def struct(self, st, top=False):
        if st is None:
            return
        if st.min_align > 8:
            self.align(st.min_align)
        scope = {}
        self.scopes.append(scope)
        for name, t in st.fields:
            scope[name] = (self.epoch, self.pos, t)
            self.field(t, display_name(name) if top else None)
        self.scopes.pop()

    def align(self, bits):
        if bits % 8 or bits <= 8:
            if bits % 8 and bits > 1:
                raise _NoProgram
            return
        if bits // 8 > 1 << 30:
            raise _NoProgram  # an alignment that does not fit an int32 op: the Python path
        self.variable(OP_ALIGN, bits // 8)

    def field(self, t, column):
        if isinstance(t, EnumType):
            t = t.container
        if isinstance(t, (IntType, FloatType)):
            size = t.size
            if size % 8 or t.align % 8:
                raise _NoProgram
            self.align(t.align)
            if self.fixed and column is not None:
                if isinstance(t, IntType):
                    code = _NP_CODES.get((size, t.signed))
                    if code is None or t.byte_order != "le":
                        self.fixed = False
                    else:
                        self.row.append((column, code, self.pos))
                elif size in (32, 64) and t.byte_order == "le":
                    self.row.append((column, "<f4" if size == 32 else "<f8", self.pos))
                else:
                    self.fixed = False
            elif column is None:
                self.fixed = False
            self.fixed_bytes(size // 8)
            return
        if isinstance(t, StringType):
            self.variable(OP_STRING)
            return
        if isinstance(t, ArrayType):
            es = t.element.fixed_size()
            if es is not None and es % 8 == 0 and t.element.align <= 8:
                self.fixed = False
                self.fixed_bytes(es // 8 * t.length)
                return
            self.fixed = False
            for _ in range(min(t.length, 1 << 16)):
                self.field(t.element, None)
            if t.length > 1 << 16:
                raise _NoProgram
            return
        if isinstance(t, SequenceType):
            es = t.element.fixed_size()
            if es is None or es % 8 or t.element.align > 8:
                raise _NoProgram
            ref = t.length_ref.split(".")[-1]
            for scope in reversed(self.scopes):
                if ref in scope:
                    epoch, pos, lt = scope[ref]
                    break
            else:
                raise _NoProgram
            if isinstance(lt, EnumType):
                lt = lt.container
            if epoch != self.epoch or not isinstance(lt, IntType) or lt.size % 8 or lt.byte_order != "le":
                raise _NoProgram
            self.variable(OP_SEQ, lt.size // 8, self.pos - pos, es // 8)
            return
        if isinstance(t, StructType):
            self.fixed = False
            self.struct(t)
            return
        raise _NoProgram  # variants (in payloads) and anything else: the Python path


def _programs(sc, contexts_only=False):
    """(header kind, programs tuple, {eid: row layout or None}) or None when C cannot scan this class.

    ``contexts_only``: the row layouts hold the context fields only (a class whose
    contexts are all fixed is gathered by numpy whatever its payload)."""
    import array
    import sys

    from ._codegen import lttng_header_kind
    if sys.byteorder != "little" or sc.event_header is None:
        return None
    kind = {"large": 1, "compact": 2}.get(lttng_header_kind(sc.event_header))
    if kind is None:
        return None
    progs = [None] * (max(sc.events) + 1 if sc.events else 0)
    rows = {}
    for eid, ec in sc.events.items():
        b = _ProgramBuilder()
        try:
            for st in (sc.event_context, ec.context, ec.fields):
                b.struct(st, top=True)
        except _NoProgram:
            return None
        progs[eid] = array.array("i", b.ops).tobytes()
        if contexts_only:
            nctx = sum(len(st.fields) for st in (sc.event_context, ec.context) if st is not None)
            if len(b.row) >= nctx:  # the row stops at the first field that is not fixed
                row = b.row[:nctx]
                import numpy as np
                rows[eid] = (row, max([off + np.dtype(code).itemsize for _, code, off in row], default=0))
            else:
                rows[eid] = None
            continue
        rows[eid] = (b.row, b.pos) if b.fixed else None
    return kind, tuple(progs), rows


def read_columns(path, names=None, on_discarded=None):
    """{event name: {column: numpy array}} for every event under ``path``.

    ``names``: only these event names (others are still decoded, not kept).
    """
    for _trace, out in _column_chunks(path, names, on_discarded, None):
        return out
    return {}


def iter_column_chunks(path, chunk_events=1 << 20, names=None, on_discarded=None, traces=None, payload=True):
    """Yield ``(trace, {event name: {column: numpy array}})`` chunks of about
    ``chunk_events`` events each (a packet is never split), in bounded memory.

    Each chunk holds the events of one stream file (in time order within the
    chunk); chunks are not in global time order. The columns are those of
    :func:`read_columns`; a chunk's ``trace`` is the trace its events belong to.
    ``traces``: traces already opened (``reader.open_traces``), instead of ``path``.
    ``payload=False``: the payload fields may be left out (not decoded where the C
    scanner finds the events; they are there when a trace needs the Python decoder).
    """
    if chunk_events is None or chunk_events < 1:
        raise ValueError("chunk_events must be a positive number of events")
    yield from _column_chunks(path, names, on_discarded, chunk_events, traces, payload)


def _column_chunks(path, names, on_discarded, chunk_events, traces=None, payload=True):
    import gc

    import numpy as np

    from .reader import open_traces

    if traces is None:
        traces = open_traces(path)
    gc_was = gc.isenabled()
    gc.disable()  # millions of fresh containers: the cyclic GC would rescan them for nothing
    try:
        yield from _read_columns(np, traces, names, on_discarded, chunk_events, payload)
    finally:
        if gc_was:
            gc.enable()


def _read_columns(np, traces, names, on_discarded, chunk_events, payload=True):
    """Generator of (trace, tables): one item for the whole trace set when ``chunk_events``
    is None (trace None), else one per ``chunk_events`` events of a stream file and one
    at each stream file's end (so a chunk never maps or holds more than one file)."""
    from .pipeline import _decode
    from .reader import compiling, ordered_streams

    streams = ordered_streams(traces)
    parts = {}  # event name -> [dict column -> array] (one per stream and class)
    infos = {}  # (trace id, stream class id) -> per-class state
    # events located by the C scanner, per (trace, stream class), over all its stream files:
    # offsets are in the concatenation of those files (file_base + offset in the file)
    scans = {}  # key -> ([eids], [offsets], [cycles], [cpus], [paths], [file sizes], trace)
    for s in streams:
        trace = s.trace
        cur = 0
        lists = {}  # key -> {eid: [list per column]} (Python-decoded rows of this stream)
        file_base = {}  # key -> base offset of this file in the key's concatenation
        pending = 0  # events in this chunk so far
        for pk in s.packets(on_discarded):
            if chunk_events is not None and pending >= chunk_events:
                _flush_lists(np, parts, names, infos, lists, trace)
                yield trace, _flush_scans(np, parts, names, infos, scans)
                parts, scans, lists, file_base, pending = {}, {}, {}, {}, 0
            sc = pk.codec.sc
            key = (id(trace), sc.id)
            info = infos.get(key)
            if info is None:
                with compiling(trace):
                    prog = _programs(sc, not payload) if _decode is not None else None
                    info = infos[key] = _ClassInfo(pk.codec, prog, not payload)
            if pk.ts_begin is not None:
                cur = pk.ts_begin
            cpu = pk.context.get("cpu_id")
            end = pk.content_bits // 8
            rows = lists.get(key)
            if rows is None:
                rows = lists[key] = {eid: [[] for _ in range(info.ncols[eid])] for eid in sc.events}
            if info.prog is None:
                try:
                    cur = info.py_packet(pk.data, pk.events_start, end, cur, cpu, rows)
                    pending += max(1, (end - pk.events_start) // 32)  # about: no count from this path
                except PacketError as e:
                    raise e.format_error(s.path, pk.offset) from None
                continue
            kind, progs, _layouts = info.prog
            try:
                eids_b, offs_b, cycs_b, cur = _decode.scan_events(pk.data, pk.events_start, end, cur, kind, progs)
            except ValueError as exc:
                raise PacketError.from_c(exc).format_error(s.path, pk.offset) from None
            if not eids_b:
                continue
            pending += len(eids_b) // 4
            sc_scan = scans.get(key)
            if sc_scan is None:
                sc_scan = scans[key] = ([], [], [], [], [], [], trace)
            base = file_base.get(key)
            if base is None:
                base = file_base[key] = sum(sc_scan[5])
                sc_scan[4].append(s.path)
                sc_scan[5].append(os.path.getsize(s.path))
            eids = np.frombuffer(eids_b, dtype=np.uint32)
            offs = np.frombuffer(offs_b, dtype=np.uint32)
            sc_scan[0].append(eids)
            sc_scan[1].append(offs.astype(np.int64) + (base + pk.offset))
            sc_scan[2].append(np.frombuffer(cycs_b, dtype=np.uint64))
            sc_scan[3].append(np.full(len(eids), -1 if cpu is None else cpu, dtype=np.int64))
            if info.variable:
                sel = np.flatnonzero(np.isin(eids, info.variable_arr(np)))
                if len(sel):
                    info.decode_at(pk.data, eids[sel].tolist(), offs[sel].tolist(),
                                   np.frombuffer(cycs_b, dtype=np.uint64)[sel].tolist(), cpu, rows, s.path,
                                   pk.offset)
        _flush_lists(np, parts, names, infos, lists, trace)  # this stream's tables
        if chunk_events is not None:
            yield trace, _flush_scans(np, parts, names, infos, scans)
            parts, scans = {}, {}
    if chunk_events is None:
        yield None, _flush_scans(np, parts, names, infos, scans)


def _flush_lists(np, parts, names, infos, lists, trace):
    """The Python-decoded rows of one stream, as column parts."""
    for key, rows in lists.items():
        info = infos[key]
        for eid, r in rows.items():
            if r[0]:
                _add_part(np, parts, names, info, eid, r, trace)


def _flush_scans(np, parts, names, infos, scans):
    """Gather the C-scanned events into parts, then the parts into one time-ordered table per name."""
    for key, (e_l, o_l, c_l, cpu_l, paths, sizes, trace) in scans.items():
        info = infos[key]
        eids = np.concatenate(e_l)
        offs = np.concatenate(o_l)
        cycs = np.concatenate(c_l)
        cpus = np.concatenate(cpu_l)
        raw = None
        for eid, layout in info.prog[2].items():
            if layout is None:
                continue
            ec = info.sc.events[eid]
            if names is not None and ec.name not in names:
                continue
            mask = eids == eid
            if not mask.any():
                continue
            if raw is None:
                maps = [np.memmap(p, dtype=np.uint8, mode="r") for p in paths]
                raw = maps[0] if len(maps) == 1 else np.concatenate(maps)
                del maps
            fields, size = layout
            if mask.all():
                o, c, cpu = offs, cycs, cpus
            else:
                o, c, cpu = offs[mask], cycs[mask], cpus[mask]
            if len(paths) > 1 and len(c) > 1 and not bool(np.all(c[1:] >= c[:-1])):
                # several stream files: time order before gathering, so no column is reordered later
                order = np.argsort(c, kind="stable")
                o, c, cpu = o[order], c[order], cpu[order]
            cols = {"cycles": c, "cpu_id": cpu}
            if fields:
                # every window of `size` bytes of the file, without copying; rows = n windows
                win = np.lib.stride_tricks.as_strided(raw, shape=(raw.size - size + 1, size), strides=(1, 1),
                                                      writeable=False)
                block = win[o]
                dt = np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                               "offsets": [f[2] for f in fields], "itemsize": size})
                rec = block.view(dt).reshape(-1)
                for fname, code, _ in fields:
                    kind = np.dtype(code).kind
                    target = np.float64 if kind == "f" else (np.uint64 if code.endswith("u8") else np.int64)
                    cols[fname] = rec[fname].astype(target)
            _add_columns(np, parts, ec.name, cols, trace)
        del raw
    out = {}
    for name, plist in parts.items():
        if len(plist) == 1:
            table = plist[0]
        else:
            table = {k: np.concatenate([p[k] for p in plist]) for k in plist[0]}
            ts = table["timestamp"]
            if not bool(np.all(ts[1:] >= ts[:-1])):
                order = np.argsort(ts, kind="stable")
                table = {k: v[order] for k, v in table.items()}
        ordered = {"timestamp": table.pop("timestamp")}
        ordered.update(table)
        out[name] = ordered
    return out


class _ClassInfo:
    """Per (trace, stream class): scan programs, Python decoders, column counts."""

    def __init__(self, codec, prog, contexts_only=False):
        self.codec = codec
        self.sc = sc = codec.sc
        self.prog = prog
        # the payload is left out only where the C scanner finds the events (the Python
        # packet decoder reads whole events anyway)
        self.contexts_only = contexts_only = contexts_only and prog is not None

        def structs(ec):
            return (sc.event_context, ec.context) if contexts_only else (sc.event_context, ec.context, ec.fields)
        self.ncols = {eid: 2 + sum(len(st.fields) for st in structs(ec) if st is not None)
                      for eid, ec in sc.events.items()}
        self.cols = {eid: [("cycles", "u"), ("cpu_id", "i")] + [c for st in structs(ec) for c in _columns_of(st)]
                     for eid, ec in sc.events.items()}
        self.variable = set()
        if prog is None:
            self.py_packet = compile_packet_rows(sc, f"stream class {sc.id}")
        else:
            self.variable = {eid for eid, lay in prog[2].items() if lay is None}
        self._var_arr = None
        self._row_fns = {}

    def variable_arr(self, np):
        if self._var_arr is None:
            self._var_arr = np.array(sorted(self.variable), dtype=np.uint32)
        return self._var_arr

    def decode_at(self, b, eids, offs, cycs, cpu, rows, path, pkoff):
        """Decode the events of variable-layout classes at the offsets the C scanner found.

        One generated function per event class appends each field straight to
        its column list: no object per event besides the values themselves.
        """
        by_class = {}
        for eid, p, cyc in zip(eids, offs, cycs):
            ent = by_class.get(eid)
            if ent is None:
                ent = by_class[eid] = ([], [])
            ent[0].append(p)
            ent[1].append(cyc)
        for eid, (ps, cs) in by_class.items():
            fn = self._row_fns.get(eid)
            if fn is None:
                fn = self._row_fns[eid] = compile_event_rows(self.sc, self.sc.events[eid], self.contexts_only)
            try:
                fn(b, ps, cs, cpu, rows[eid])
            except PacketError as e:
                raise e.format_error(path, pkoff) from None


def compile_event_rows(sc, ec, contexts_only=False):
    """rows_at(b, offsets, cycles, cpu, cols): decode one event class at each offset into column lists
    (with ``contexts_only``, its contexts only: the payload is not read)."""
    g = _Gen("dict", f"event {ec.name!r} rows")
    g.indent = 2
    vars_ = []
    for st in (sc.event_context, ec.context) if contexts_only else (sc.event_context, ec.context, ec.fields):
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
    for i, v in enumerate(["cyc", "cpu"] + vars_):
        g.emit(f"A{i}({v})")
    head = ["def rows_at(b, offsets, cycles, cpu, cols):"]
    for i in range(2 + len(vars_)):
        head.append(f"    A{i} = cols[{i}].append")
    head += ["    p = 0", "    try:", "     for p, cyc in zip(offsets, cycles):"]
    tail = g.packet_error_clause("p")
    return g.define("rows_at", head + g.lines + tail, f"bulk rows {ec.name}")


def _add_part(np, parts, names, info, eid, r, trace):
    ec = info.sc.events[eid]
    if names is not None and ec.name not in names:
        return
    cols = {}
    for (cname, kind), values in zip(info.cols[eid], r):
        cols[cname] = _to_array(np, values, kind)
    _add_columns(np, parts, ec.name, cols, trace)


def _add_columns(np, parts, name, cols, trace):
    cyc = cols["cycles"]
    if cyc.dtype != np.uint64:
        cyc = cols["cycles"] = _to_array(np, [int(c) for c in cyc.tolist()], "u")
    origin = trace.origin_ns
    fast = trace.freq == 1_000_000_000 and cyc.dtype == np.uint64
    if fast and cyc.size:
        # int64 ns from the Epoch unless the clock values are absurd (corrupt traces: beyond year 2262)
        fast = -(1 << 63) <= int(cyc.min()) + origin and int(cyc.max()) + origin < (1 << 63)
    if fast:
        ts = cyc.astype(np.int64) + np.int64(origin)
    else:
        ts = _to_array(np, [trace.cycles_to_ns(int(c)) for c in cyc.tolist()], "i")
    table = {"timestamp": ts}
    table.update(cols)
    parts.setdefault(name, []).append(table)


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
