"""Function calls in a trace: entry/return pairs of probes and of whole-program tracing.

Two sources, one pairing:
  * ``ust run --functions`` / ``--function '*'``: python:function_entry/return
    carry an ``id``; python:function_info (id, qualname, module, file, line),
    recorded once per code object, names it;
  * function probes: ``BASE_entry`` / ``BASE_return`` events (the name is BASE).
Calls pair per thread (vpid/vtid contexts, else the stream) and, when the
channel has the asyncio_task context, per task: each keeps its own stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ._common import Progress, fmt_ns, group_key

ENTRY, RETURN, INFO = "python:function_entry", "python:function_return", "python:function_info"


class FunctionNames:
    """id -> "module:qualname", from the python:function_info statedump."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    def add(self, fields: dict) -> None:
        try:
            self.names[int(fields["id"])] = f"{fields.get('module', '?')}:{fields.get('qualname', '?')}"
        except (KeyError, TypeError, ValueError):
            pass

    def name(self, fid) -> str:
        return self.names.get(fid) or f"<function {fid}>"


class CallPairer:
    """Feed events in time order; completed calls come out.

    ``feed(ev)`` returns None for an event that is not a function event, True
    for one it keeps (an entry, a statedump), or a Call for a return.
    """

    def __init__(self) -> None:
        self.names = FunctionNames()
        self.stacks: dict[tuple, list] = {}

    def _group(self, ev) -> tuple:
        task = ev.context.get("asyncio_task")
        g = group_key(ev)
        return g + (task,) if task not in (None, "", 0) else g

    def feed(self, ev):
        name = ev.name
        if name == INFO:
            self.names.add(ev.fields)
            return True
        if name == ENTRY or name == RETURN:
            key = ("id", ev.fields.get("id"))
            is_entry = name == ENTRY
        elif name.endswith("_entry"):
            key, is_entry = ("probe", name[:-6]), True
        elif name.endswith("_return"):
            key, is_entry = ("probe", name[:-7]), False
        else:
            return None
        stack = self.stacks.setdefault(self._group(ev), [])
        if is_entry:
            stack.append([key, ev.timestamp, 0, ev])  # key, begin, children's time, entry event
            return True
        # Pop to the matching entry (a frame whose return was not recorded is dropped).
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == key:
                break
        else:
            return True  # a return without its entry (tracing started inside the call)
        entry = stack[i]
        del stack[i:]
        dur = ev.timestamp - entry[1]
        if stack:
            stack[-1][2] += dur
        fname = self.names.name(key[1]) if key[0] == "id" else key[1]
        return Call(fname, entry[1], ev.timestamp, dur - entry[2], entry[3], ev, len(stack))


@dataclass
class Call:
    name: str
    begin: int
    end: int
    self_ns: int
    entry: object
    ret: object
    depth: int

    @property
    def duration(self) -> int:
        return self.end - self.begin


@dataclass
class FunctionStat:
    count: int = 0
    total_ns: int = 0
    self_ns: int = 0
    durations: list = field(default_factory=list)

    def percentile(self, q: float) -> int:
        import math

        d = self.durations
        return d[min(len(d), max(1, math.ceil(q / 100.0 * len(d)))) - 1] if d else 0


def calls(path, progress=False):
    """Every completed call under ``path``, in order of return."""
    from ust.ctf import read_trace

    pairer = CallPairer()
    prog = Progress("functions") if progress else None
    n = 0
    for ev in read_trace(path):
        n += 1
        if prog is not None and not n & 0xFFFF:
            prog.update(n)
        c = pairer.feed(ev)
        if c is not None and c is not True:
            yield c
    if prog is not None:
        prog.done(n)


def function_stats(path, progress=False) -> dict[str, FunctionStat]:
    out: dict[str, FunctionStat] = {}
    for c in calls(path, progress):
        st = out.get(c.name)
        if st is None:
            st = out[c.name] = FunctionStat()
        st.count += 1
        st.total_ns += c.duration
        st.self_ns += c.self_ns
        st.durations.append(c.duration)
    for st in out.values():
        st.durations.sort()
    return out


def format_function_stats(stats: dict[str, FunctionStat], limit: int = 50) -> str:
    if not stats:
        return "no function calls in this trace (trace with `ust run --functions` or `enable-event --function`)\n"
    rows = sorted(stats.items(), key=lambda kv: (-kv[1].total_ns, kv[0]))[:limit]
    w = max([len(n) for n, _ in rows] + [8])
    lines = [f"{'function':<{w}}  {'calls':>9}  {'total':>10}  {'self':>10}  {'p50':>10}  {'p99':>10}"]
    for name, st in rows:
        lines.append(f"{name:<{w}}  {st.count:>9}  {fmt_ns(st.total_ns):>10}  {fmt_ns(st.self_ns):>10}  "
                     f"{fmt_ns(st.percentile(50)):>10}  {fmt_ns(st.percentile(99)):>10}")
    if len(stats) > limit:
        lines.append(f"... and {len(stats) - limit} more functions")
    return "\n".join(lines) + "\n"


def function_stats_dict(stats: dict[str, FunctionStat]) -> dict:
    return {name: {"calls": st.count, "total_ns": st.total_ns, "self_ns": st.self_ns,
                   "p50_ns": st.percentile(50), "p99_ns": st.percentile(99)} for name, st in stats.items()}


def function_latency(path, function: str, progress=False):
    """The durations of the calls of ``function`` ("module:qualname", or a probe's event name)."""
    from .latency import LatencyResult

    res = LatencyResult(function + " (entry)", function + " (return)", None)
    for c in calls(path, progress):
        if c.name == function:
            res.pairs.append((c.begin, c.end, None))
    res.durations = sorted(t1 - t0 for t0, t1, _ in res.pairs)
    return res


# -- `ust view`: the name after the id ---------------------------------------------

_ID = re.compile(rb"\bid = (\d+)")
_STR = {k: re.compile(rb"\b" + k + rb' = "((?:[^"\\]|\\.)*)"') for k in (b"qualname", b"module")}


def resolve_text(chunks):
    """babeltrace2-style text chunks, with `function = "module:qualname"` after each function event's id."""
    names: dict[bytes, bytes] = {}
    rest = b""
    for data in chunks:
        if not data:
            continue
        data = rest + data
        cut = data.rfind(b"\n") + 1
        data, rest = data[:cut], data[cut:]
        if b"python:function_" not in data:
            yield data
            continue
        out = []
        for line in data.splitlines(keepends=True):
            if b"python:function_info:" in line:
                m = _ID.search(line)
                q, mod = _STR[b"qualname"].search(line), _STR[b"module"].search(line)
                if m and q and mod:
                    names[m.group(1)] = mod.group(1) + b":" + q.group(1)
            elif b"python:function_entry:" in line or b"python:function_return:" in line:
                m = _ID.search(line)
                if m:
                    fname = names.get(m.group(1), b"?")
                    line = line[:m.end()] + b', function = "' + fname + b'"' + line[m.end():]
            out.append(line)
        yield b"".join(out)
    if rest:
        yield rest
