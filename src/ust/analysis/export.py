"""Export a trace: Chrome trace JSON (Perfetto, chrome://tracing) and Parquet."""

from __future__ import annotations

import json
import os
import tempfile

from ust.errors import UstError

from ust.ctf import display_name

from ._common import Progress, jsonable, thread_of


def _jsonable(v):
    return jsonable(v, clean_text=True)


def export_chrome(path, out, begin=None, end=None, progress=False) -> int:
    """Write the Chrome trace-event JSON of every event under ``path`` to the file ``out``.

    One track per process/thread (pid = vpid, tid = vtid when the trace has
    those contexts; else the trace and the CPU). Events are instants; with
    ``begin``/``end`` event names, each pair on a thread becomes a complete
    slice ("X") named after the begin event; without them, function calls
    (probe ``X_entry``/``X_return``, python:function_entry/return) do, named
    after the function. Timestamps are microseconds from
    the first event (``otherData.origin_ns`` holds that event's time in ns
    from the Epoch). Returns the number of trace events written.
    """
    from ust.ctf import read_trace

    prog = Progress("export") if progress else None
    # written beside ``out`` and renamed over it when complete: a damaged trace (an
    # error midway) leaves neither a cut JSON file nor a destroyed previous export
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(out)))
    try:
        from .functions import CallPairer

        pairer = CallPairer()  # function entry/return pairs (probes, --functions) become slices
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            written = _write_chrome(f, read_trace(path, pairer.discarded), begin, end, prog, pairer)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return written


def _write_chrome(f, events, begin, end, prog, pairer=None) -> int:
    """The Chrome trace JSON of ``events``, written to ``f``; returns the trace events written."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
    names_seen = {}
    t0 = None
    n = 0
    written = 0
    open_slices = {}
    trace_ids = {}
    async_ids = 0
    from .functions import CallPairer, ENTRY, RETURN

    from .sched import ThreadSched

    if pairer is None:
        pairer = CallPairer()  # function entry/return pairs (probes, --functions) become slices

    def trace_pid(trace):
        return trace_ids.setdefault(id(trace), 1 + len(trace_ids))

    pid_of_thread = {}  # (trace, vtid) -> the pid in its whole-program ids, when the trace has no vpid

    def track(ev, vpid, vtid):
        """(pid, tid, thread name to give when the track has no thread id) of an event's track."""
        if vpid is None and vtid is not None:
            # no vpid context (per-user buffers, several processes): a thread's whole-program ids name its
            # process (pid << 32 | n); its other events go with it once one was seen
            thread = (id(ev.stream.trace), vtid)
            if ev.name in (ENTRY, RETURN) and isinstance(ev.fields.get("id"), int):
                vpid = pid_of_thread.setdefault(thread, ev.fields["id"] >> 32)
            else:
                vpid = pid_of_thread.get(thread)
        if vpid is None:
            vpid = trace_pid(ev.stream.trace)
        if vtid is not None:
            return vpid, vtid, None
        if ev.name in (ENTRY, RETURN) and isinstance(ev.fields.get("id"), int):
            # no thread context: a whole-program call goes on its process's track (its id is pid << 32 | n,
            # and the pairer pairs it per process), not on the track of the CPU it happened to return on
            pid = ev.fields["id"] >> 32
            if ev.context.get("vpid", ev.stream.trace.env.get("vpid")) is None:
                vpid = pid
            return vpid, pid, f"process {pid} (no thread context)"
        cpu = ev.cpu_id if ev.cpu_id is not None else 0
        return vpid, cpu, f"cpu {cpu}"
    sched: dict = {}  # kernel tid -> ThreadSched with its intervals (a kernel trace's sched_switch)
    app_threads: dict = {}  # tid of a user-space event -> its track's pid
    f.write('{"displayTimeUnit":"ns","traceEvents":[\n')
    first = True

    def put(obj):
        nonlocal first, written
        if not first:
            f.write(",\n")
        first = False
        f.write(dumps(obj))
        written += 1

    for ev in events:
        n += 1
        if prog is not None and not n & 0xFFFF:
            prog.update(n)
        if t0 is None:
            t0 = ev.timestamp
        vpid, vtid, proc = thread_of(ev)
        trace = ev.stream.trace
        kernel = trace.env.get("domain") == "kernel"
        if kernel and ev.name == "sched_switch":
            for k in {ev.fields.get("prev_tid"), ev.fields.get("next_tid")} - {None}:
                st = sched.get(k) or sched.setdefault(k, ThreadSched(k, intervals=[]))
                st.feed(ev.fields, ev.timestamp)
        vpid, tid, label = track(ev, vpid, vtid)
        if not kernel and vtid is not None:
            app_threads.setdefault(vtid, vpid)
        if (vpid, tid) not in names_seen:
            names_seen[(vpid, tid)] = True
            if proc:
                put({"name": "process_name", "ph": "M", "pid": vpid, "tid": tid, "args": {"name": proc}})
            if label is not None:
                put({"name": "thread_name", "ph": "M", "pid": vpid, "tid": tid, "args": {"name": label}})
        ts = (ev.timestamp - t0) / 1000.0
        if begin is None:
            call = pairer.feed(ev)
            if call is True:
                continue  # an entry (its slice is written at the return), a statedump
            if call is not None:
                bts = (call.begin - t0) / 1000.0
                args = {"entry": _jsonable(call.entry.fields), "return": _jsonable(ev.fields)}
                if call.suspended:
                    # a generator's or coroutine's life overlaps its callers' slices: an async slice of its
                    # own (a track beside the thread's), the thread's complete slices must nest
                    async_ids += 1
                    common = {"name": call.name, "cat": "function", "pid": vpid, "tid": tid, "id": async_ids}
                    put({**common, "ph": "b", "ts": bts, "args": args})
                    put({**common, "ph": "e", "ts": ts})
                    continue
                put({"name": call.name, "cat": "function", "ph": "X", "ts": bts, "dur": ts - bts, "pid": vpid,
                     "tid": tid, "args": args})
                continue
        if begin is not None and ev.name == begin:
            open_slices.setdefault((vpid, tid), []).append((ts, ev))
            if ev.name != end:
                continue
        if end is not None and ev.name == end:
            stack = open_slices.get((vpid, tid))
            if stack:
                bts, bev = stack.pop()
                args = {"begin": _jsonable(bev.fields), "end": _jsonable(ev.fields)}
                put({"name": bev.name, "cat": bev.name.split(":")[0], "ph": "X", "ts": bts,
                     "dur": ts - bts, "pid": vpid, "tid": tid, "args": args})
                continue
        put({"name": ev.name, "cat": ev.name.split(":")[0], "ph": "i", "s": "t", "ts": ts, "pid": vpid,
             "tid": tid, "args": _jsonable(ev.fields)})
    # calls still running at the end (or whose return was lost), generators never finished: instants
    for stack in (*pairer.stacks.values(), *pairer.suspended.values()):
        for entry in stack:
            key, bev = entry[0], entry[3]
            bvpid, bvtid, _ = thread_of(bev)
            bvpid, btid, _ = track(bev, bvpid, bvtid)
            name = pairer.key_name(key)
            put({"name": name, "cat": "function", "ph": "i", "s": "t",
                 "ts": (bev.timestamp - t0) / 1000.0, "pid": bvpid, "tid": btid,
                 "args": {"entry": _jsonable(bev.fields), "unfinished": True}})
    # each Python thread's states, from the kernel's point of view, on its own track
    for tid, vpid in app_threads.items():
        st = sched.get(tid)
        for b, e, state in (st.intervals if st is not None else ()):
            put({"name": state, "cat": "sched", "ph": "X", "ts": (b - t0) / 1000.0, "dur": (e - b) / 1000.0,
                 "pid": vpid, "tid": tid})
    f.write('\n],"otherData":' + json.dumps({"origin_ns": t0, "generator": "ust export"}) + "}\n")
    if prog is not None:
        prog.done(n)
    return written


PARQUET_CHUNK_EVENTS = 1 << 17  # events decoded at a time (a stream file's worth at most)
PARQUET_ROW_GROUP = 1 << 17  # rows buffered per event name before a row group is written


def export_parquet(path, out_dir, progress=False, chunk_events=PARQUET_CHUNK_EVENTS,
                   row_group=PARQUET_ROW_GROUP) -> list:
    """Write a Parquet dataset of every event under ``path``, partitioned by event name:
    ``<out_dir>/event=<name>/part-<n>.parquet`` (Hive layout, one glob for DuckDB/Spark).

    Streamed: the trace is decoded ``chunk_events`` at a time and each name's rows are
    written as row groups of about ``row_group`` rows, so memory stays bounded whatever
    the trace size. Columns: ``timestamp`` (timestamp[ns], UTC), ``cycles`` (the raw
    clock value), ``cpu_id``, ``event_name``, then the contexts and the payload at their
    declared types (integers at their width and signedness, enums as their labels,
    floats, strings; arrays, sequences, structs and variants as JSON text).
    The files are written in a hidden directory inside ``out_dir`` and moved into
    place at the end: an error midway leaves no partial dataset. Needs pyarrow and numpy.
    Returns the files written.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UstError("parquet export needs pyarrow: pip install pyarrow (or 'ust[analysis]')") from None
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise UstError("parquet export needs numpy: pip install numpy (or 'ust[analysis]')") from None
    import shutil

    from ust.ctf import iter_column_chunks

    os.makedirs(out_dir, exist_ok=True)
    if any(e.startswith("event=") for e in os.listdir(out_dir)):
        raise UstError(f"{out_dir}: already holds a parquet export (event=* directories); "
                       "remove them or choose another directory")
    prog = Progress("export") if progress else None
    work = tempfile.mkdtemp(prefix=".ust-export-", dir=out_dir)
    ds = _ParquetDataset(pa, pq, work, row_group)
    total = 0
    types = {}  # (trace id, event name) -> {column: declared type}
    try:
        try:
            for trace, tables in iter_column_chunks(path, chunk_events):
                for name, cols in tables.items():
                    key = (id(trace), name)
                    if key not in types:
                        types[key] = _declared_types(trace, name)
                    ds.add(name, _arrow_table(pa, types[key], name, cols))
                    total += len(cols["timestamp"])
                if prog is not None:
                    prog.update(total)
        finally:
            ds.close()
        written = []
        for d in sorted(os.listdir(work)):
            os.rename(os.path.join(work, d), os.path.join(out_dir, d))
            written += [os.path.join(out_dir, d, f) for f in sorted(os.listdir(os.path.join(out_dir, d)))]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if prog is not None:
        prog.done(total)
    return written


class _ParquetDataset:
    """One Parquet writer per (event name, schema), rows buffered up to a row group per name."""

    def __init__(self, pa, pq, root, row_group):
        self.pa, self.pq, self.root, self.row_group = pa, pq, root, row_group
        self.writers = {}  # (name, schema text) -> (ParquetWriter, file object)
        self.pending = {}  # same key -> [tables]
        self.pending_rows = {}
        self.parts = {}  # directory -> next part number
        self.buffered = 0

    def add(self, name, table):
        key = (name, str(table.schema))
        self.pending.setdefault(key, []).append(table)
        n = self.pending_rows[key] = self.pending_rows.get(key, 0) + table.num_rows
        self.buffered += table.num_rows
        if n >= self.row_group:
            self._write(key)
        if self.buffered >= 2 * self.row_group:  # many names, each short of a row group: bound the total
            for k in list(self.pending):
                self._write(k)

    def _write(self, key):
        tables = self.pending.pop(key, None)
        if not tables:
            return
        self.buffered -= self.pending_rows.pop(key)
        w = self.writers.get(key)
        if w is None:
            w = self.writers[key] = self._open(key[0], tables[0].schema)
        w[0].write_table(self.pa.concat_tables(tables), row_group_size=max(self.row_group, 1))

    def _open(self, name, schema):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        d = os.path.join(self.root, "event=" + safe)
        if d not in self.parts:
            os.mkdir(d, 0o755)
        n = self.parts.get(d, 0)
        self.parts[d] = n + 1
        fd = os.open(os.path.join(d, f"part-{n}.parquet"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        f = os.fdopen(fd, "wb")
        return self.pq.ParquetWriter(f, schema), f

    def close(self):
        try:
            for k in list(self.pending):
                self._write(k)
        finally:
            for w, f in self.writers.values():
                w.close()
                f.close()
            self.writers = {}


def _declared_types(trace, name):
    """{column: tsdl type} of the event class ``name`` in ``trace`` (contexts, then payload)."""
    for sc in trace.metadata.streams.values():
        for ec in sc.events.values():
            if ec.name == name:
                types = {}
                for st in (sc.event_context, ec.context, ec.fields):
                    if st is not None:
                        for fname, t in st.fields:
                            types[display_name(fname)] = t
                return types
    return {}


def _arrow_table(pa, types, name, cols):
    import numpy as np

    n = len(cols["timestamp"])
    arrays = {}
    try:
        arrays["timestamp"] = pa.array(cols["timestamp"], type=pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        # clock values beyond what int64 ns holds (a corrupt trace): no timestamp, the raw value stays
        arrays["timestamp"] = pa.nulls(n, pa.timestamp("ns", tz="UTC"))
    arrays["cycles"] = _as_arrow(pa, cols["cycles"], pa.uint64())
    cpu = cols["cpu_id"]
    arrays["cpu_id"] = (pa.array(cpu, mask=(cpu == -1)).cast(pa.int32()) if cpu.dtype.kind == "i"
                        else _as_arrow(pa, cpu, pa.int32()))
    arrays["event_name"] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([name]))
    for cname, values in cols.items():
        if cname in ("timestamp", "cycles", "cpu_id"):
            continue
        arrays[cname] = _typed_column(pa, values, types.get(cname))
    return pa.table(arrays)


def _typed_column(pa, values, t):
    from ust.ctf.tsdl import EnumType, FloatType, IntType, StringType

    if isinstance(t, EnumType):
        return _enum_labels(pa, values, t)
    if isinstance(t, IntType):
        size = t.size if t.size in (8, 16, 32, 64) else 64
        return _as_arrow(pa, values, getattr(pa, ("int" if t.signed else "uint") + str(size))())
    if isinstance(t, FloatType):
        return _as_arrow(pa, values, pa.float32() if t.exp_dig + t.mant_dig == 32 else pa.float64())
    if isinstance(t, StringType):
        try:
            return pa.array(values, type=pa.string())
        except (UnicodeError, pa.ArrowInvalid, pa.ArrowTypeError):
            # undecodable bytes kept as lone surrogates: U+FFFD, as in the chrome export
            return pa.array([_jsonable(x) for x in values.tolist()], type=pa.string())
    # arrays, sequences, structs, variants (or a column the metadata does not name): JSON text
    # (a text array - a char array of UTF-8 encoding - is decoded as a str: kept as text)
    return pa.array([x if x is None else _jsonable(x) if isinstance(x, str)
                     else json.dumps(_jsonable(x), separators=(",", ":")) for x in values.tolist()],
                    type=pa.string())


def _as_arrow(pa, values, typ):
    """``values`` at type ``typ``; a value that does not fit (a corrupt trace) makes the column text."""
    try:
        if values.dtype == object:
            return pa.array(values.tolist(), type=typ)
        return pa.array(values).cast(typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        return pa.array([None if x is None else str(x) for x in values.tolist()], type=pa.string())


def _enum_labels(pa, values, t):
    """An enum column as its labels (dictionary-encoded; null for a value no mapping names)."""
    import numpy as np

    if values.dtype == object:
        uniq = sorted(set(values.tolist()), key=repr)
        index = {v: i for i, v in enumerate(uniq)}
        inverse = np.fromiter((index[v] for v in values.tolist()), dtype=np.int32, count=len(values))
    else:
        uniq, inverse = np.unique(values, return_inverse=True)
        uniq = uniq.tolist()
    labels = []
    for v in uniq:
        names = t.labels(v) if isinstance(v, int) else []
        labels.append(" | ".join(names) if names else None)
    unnamed = np.array([lab is None for lab in labels] + [False], dtype=bool)
    inverse = np.asarray(inverse, dtype=np.int32).reshape(-1)
    dictionary = pa.array([lab or "" for lab in labels], type=pa.string())
    idx = pa.array(inverse, mask=unnamed[inverse] if len(labels) else None)
    return pa.DictionaryArray.from_arrays(idx, dictionary)
