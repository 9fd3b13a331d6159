"""Export a trace: Chrome trace JSON (Perfetto, chrome://tracing) and Parquet."""

from __future__ import annotations

import json
import os
import tempfile

from ust.errors import UstError

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
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            written = _write_chrome(f, read_trace(path), begin, end, prog)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return written


def _write_chrome(f, events, begin, end, prog) -> int:
    """The Chrome trace JSON of ``events``, written to ``f``; returns the trace events written."""
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
    names_seen = {}
    t0 = None
    n = 0
    written = 0
    open_slices = {}
    trace_ids = {}
    from .functions import CallPairer

    pairer = CallPairer()  # function entry/return pairs (probes, --functions) become slices
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
        if vpid is None:
            vpid = trace_ids.setdefault(id(trace), 1 + len(trace_ids))
        tid = vtid if vtid is not None else (ev.cpu_id if ev.cpu_id is not None else 0)
        if (vpid, tid) not in names_seen:
            names_seen[(vpid, tid)] = True
            if proc:
                put({"name": "process_name", "ph": "M", "pid": vpid, "tid": tid, "args": {"name": proc}})
            if vtid is None:
                put({"name": "thread_name", "ph": "M", "pid": vpid, "tid": tid,
                     "args": {"name": f"cpu {tid}"}})
        ts = (ev.timestamp - t0) / 1000.0
        if begin is None:
            call = pairer.feed(ev)
            if call is True:
                continue  # an entry (its slice is written at the return), a statedump
            if call is not None:
                bts = (call.begin - t0) / 1000.0
                put({"name": call.name, "cat": "function", "ph": "X", "ts": bts, "dur": ts - bts, "pid": vpid,
                     "tid": tid, "args": {"entry": _jsonable(call.entry.fields), "return": _jsonable(ev.fields)}})
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
    for stack in pairer.stacks.values():  # calls still running at the end: their entries, as instants
        for _key, _begin, _children, bev in stack:
            bvpid, bvtid, _ = thread_of(bev)
            put({"name": bev.name, "cat": bev.name.split(":")[0], "ph": "i", "s": "t",
                 "ts": (bev.timestamp - t0) / 1000.0, "pid": bvpid if bvpid is not None else 1,
                 "tid": bvtid if bvtid is not None else (bev.cpu_id or 0), "args": _jsonable(bev.fields)})
    f.write('\n],"otherData":' + json.dumps({"origin_ns": t0, "generator": "ust export"}) + "}\n")
    if prog is not None:
        prog.done(n)
    return written


def export_parquet(path, out_dir, progress=False) -> list:
    """One Parquet file per event name (``<out_dir>/<name>.parquet``); needs pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UstError("parquet export needs pyarrow: pip install pyarrow (or 'ust[analysis]')") from None
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise UstError("parquet export needs numpy: pip install numpy (or 'ust[analysis]')") from None
    from ust.ctf import read_columns

    prog = Progress("export") if progress else None
    tables = read_columns(path)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    total = 0
    for name, cols in sorted(tables.items()):
        arrays = {}
        for cname, arr in cols.items():
            if arr.dtype == object:
                arrays[cname] = pa.array([_jsonable(x) for x in arr.tolist()])
            else:
                arrays[cname] = pa.array(arr)
        table = pa.table(arrays)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        fp = os.path.join(out_dir, safe + ".parquet")
        pq.write_table(table, fp)
        written.append(fp)
        total += table.num_rows
        if prog is not None:
            prog.update(total)
    if prog is not None:
        prog.done(total)
    return written
