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
    ``discarded(d)`` (``read_trace``'s on_discarded callback) notes events the
    tracer lost: a call whose time span holds such a loss in its trace is not
    paired (its return may have gone, and a later return of the same function,
    recursion, would close it with the wrong entry); ``dropped`` counts the
    entries and returns left unpaired, for whatever reason.

    Generators and coroutines record their entry when their body starts and
    their return when it completes: in between they are suspended, and the
    frame that started them returns first. Such an entry, left above the
    entry a return closes, is set aside (``suspended``) rather than dropped,
    and a later return of the same function that finds no entry on the stack
    closes it: its call spans the generator's or coroutine's life. Of several
    suspended instances of one function in one stack (asyncio tasks traced
    without the asyncio_task context), the latest started closes first.
    """

    MAX_SUSPENDED = 4096  # per stack: generators never finished are forgotten beyond this

    def __init__(self) -> None:
        self.names = FunctionNames()
        self.stacks: dict[tuple, list] = {}
        self.suspended: dict[tuple, list] = {}
        self.active: dict[tuple, dict] = {}  # per stack: key -> its entries on it, in stack order (recursion)
        self.uncounted: dict[tuple, int] = {}  # key -> time of recursive calls whose outer call never returned
        self.losses: dict[int, list] = {}  # id(trace) -> [(begin ns, end ns)] of its lost events
        self.dropped = 0

    def discarded(self, d) -> None:
        trace = d.stream.trace
        b, e = d.begin_cycles, d.end_cycles
        self.losses.setdefault(id(trace), []).append(
            (trace.cycles_to_ns(b) if b is not None else 0, trace.cycles_to_ns(e) if e is not None else 1 << 63))

    def _lost_during(self, ev, begin: int) -> bool:
        end = ev.timestamp
        return any(b <= end and e >= begin for b, e in self.losses.get(id(ev.stream.trace), ()))

    def _group(self, ev, key) -> tuple:
        """The stack an event belongs to: its thread (vtid), else its process, else its stream; and its task."""
        g = group_key(ev)
        if g[0] == "stream" and key[0] == "id" and isinstance(key[1], int):
            # Whole-program ids are pid << 32 | n: without a vpid context (per-user buffers, one stream per
            # CPU shared by every process) the process is known all the same, and a call is not cut in two
            # when its thread moves to another CPU (another stream) while it runs.
            g = ("process", id(ev.stream.trace), key[1] >> 32)
        task = ev.context.get("asyncio_task")
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
        group = self._group(ev, key)
        stack = self.stacks.setdefault(group, [])
        active = self.active.setdefault(group, {})
        if is_entry:
            # key, begin, children's time, entry, depth, time of the recursive calls it encloses
            entry = [key, ev.timestamp, 0, ev, len(stack), 0]
            stack.append(entry)
            active.setdefault(key, []).append(entry)
            return True
        # Pop to the matching entry; the frames above it are suspended generators or coroutines (or calls
        # whose return was lost): set aside.
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == key:
                break
        else:
            return self._resumed(group, key, ev)
        if i < len(stack) - 1 and any(f[0] == key for f in self.suspended.get(group, ())):
            # the entry found lies under frames still running, so it is itself suspended (a generator
            # abandoned at a yield on 3.13, see _resumed) or lost its return: this return closes the instance
            # set aside instead (a generator resumed and finished by those frames)
            return self._resumed(group, key, ev)
        entry = stack[i]
        for f in reversed(stack[i:]):
            active[f[0]].pop()
        if i + 1 < len(stack):
            self._suspend(group, stack[i + 1:])
        del stack[i:]
        if self.losses and self._lost_during(ev, entry[1]):
            self.dropped += 1
            self._forget([entry], active)
            return True
        dur = ev.timestamp - entry[1]
        if stack:
            stack[-1][2] += dur
        fname = self.key_name(key)
        return Call(fname, entry[1], ev.timestamp, dur - entry[2], entry[3], ev, entry[4],
                    counted_ns=self._counted(active, key, dur), key=key)

    def _counted(self, active, key, dur: int) -> int:
        """The part of a call's duration its function's total takes: all of it, unless a call of the same
        function encloses it (recursion), whose duration will hold it; if that one never returns, it is
        counted then (``flush``)."""
        enclosing = active.get(key)
        if enclosing:
            enclosing[-1][5] += dur
            return 0
        return dur

    def _forget(self, frames, active=None) -> None:
        """Frames that leave the stack without their return: what they held for the totals goes to the call of
        the same function that encloses them (``active``: their stack's, once they are off it), else is
        counted as it is."""
        for f in frames:
            if f[5]:
                enclosing = active.get(f[0]) if active else None
                if enclosing:
                    enclosing[-1][5] += f[5]
                else:
                    self.uncounted[f[0]] = self.uncounted.get(f[0], 0) + f[5]
                f[5] = 0

    def flush(self) -> dict:
        """At the end of the trace: the recursive calls' time held by calls that never returned, per key."""
        for frames in (*self.stacks.values(), *self.suspended.values()):
            self._forget(frames)
        return self.uncounted

    def _suspend(self, group, frames) -> None:
        self._forget(frames, self.active[group])
        aside = self.suspended.setdefault(group, [])
        aside.extend(frames)
        if len(aside) > self.MAX_SUSPENDED:
            self.dropped += len(aside) - self.MAX_SUSPENDED
            del aside[:len(aside) - self.MAX_SUSPENDED]

    def _resumed(self, group, key, ev):
        """A return with no entry on the stack: a suspended generator's or coroutine's completion, if one of
        that function was set aside; else the return of a call begun before tracing (dropped)."""
        aside = self.suspended.get(group) or []
        # the latest first: an older one may never complete (3.13 closes a generator suspended at a plain
        # yield without running its frame: no return is recorded)
        for i in range(len(aside) - 1, -1, -1):
            if aside[i][0] == key:
                break
        else:
            self.dropped += 1
            return True
        entry = aside.pop(i)
        if self.losses and self._lost_during(ev, entry[1]):
            self.dropped += 1
            self._forget([entry], self.active[group])
            return True
        dur = ev.timestamp - entry[1]
        fname = self.key_name(key)
        # its callees while it ran after a resumption were pushed above the frame that resumed it: not known
        return Call(fname, entry[1], ev.timestamp, dur - entry[2], entry[3], ev, entry[4], suspended=True,
                    counted_ns=self._counted(self.active[group], key, dur), key=key)

    def key_name(self, key: tuple) -> str:
        """The name of a call's function, as known now."""
        return self.names.name(key[1]) if key[0] == "id" else key[1]

    def still_open(self) -> int:
        """Entries whose return has not been seen (calls running when the trace ended, or lost)."""
        return sum(len(s) for s in self.stacks.values()) + sum(len(s) for s in self.suspended.values())


@dataclass
class Call:
    name: str
    begin: int
    end: int
    self_ns: int
    entry: object
    ret: object
    depth: int
    suspended: bool = False  # a generator or coroutine that completed after its caller had returned
    counted_ns: int = 0  # the part of its duration in its function's total (0: a recursive call, see _counted)
    key: tuple = ()  # ("id", function id) or ("probe", event name)

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


def calls(path, progress=False, pairer=None):
    """Every completed call under ``path``, in order of return (``pairer``: a CallPairer to use)."""
    from ust.ctf import read_trace

    pairer = pairer if pairer is not None else CallPairer()
    prog = Progress("functions") if progress else None
    n = 0
    for ev in read_trace(path, pairer.discarded):
        n += 1
        if prog is not None and not n & 0xFFFF:
            prog.update(n)
        c = pairer.feed(ev)
        if c is not None and c is not True:
            yield c
    if prog is not None:
        prog.done(n)


class FunctionStats(dict):
    """name -> FunctionStat; ``unpaired``: entries and returns that made no call (see CallPairer),
    ``lost``: whether the tracer reported lost events."""

    unpaired = 0
    lost = False


def function_stats(path, progress=False) -> FunctionStats:
    by_key: dict[tuple, FunctionStat] = {}
    pairer = CallPairer()
    for c in calls(path, progress, pairer):
        st = by_key.get(c.key)
        if st is None:
            st = by_key[c.key] = FunctionStat()
        st.count += 1
        st.total_ns += c.counted_ns  # a recursive call's time is in its outermost call's
        st.self_ns += c.self_ns
        st.durations.append(c.duration)
    for key, ns in pairer.flush().items():
        if key in by_key:
            by_key[key].total_ns += ns
    # Named at the end: a function's name may come after its calls (the statedump written when the names'
    # event is attached, after the calls'); functions of one name (exec'd code, several processes) merge.
    out = FunctionStats()
    for key, st in by_key.items():
        name = pairer.key_name(key)
        have = out.get(name)
        if have is None:
            out[name] = st
        else:
            have.count += st.count
            have.total_ns += st.total_ns
            have.self_ns += st.self_ns
            have.durations += st.durations
    for st in out.values():
        st.durations.sort()
    out.unpaired = pairer.dropped + pairer.still_open()
    out.lost = bool(pairer.losses)
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
    unpaired = getattr(stats, "unpaired", 0)
    if unpaired:
        why = "events were lost (a call spanning a loss is left out), or " if getattr(stats, "lost", False) else ""
        lines.append(f"{unpaired} entries or returns made no call: {why}calls ran when tracing started or ended")
    return "\n".join(lines) + "\n"


def function_stats_dict(stats: dict[str, FunctionStat]) -> dict:
    return {name: {"calls": st.count, "total_ns": st.total_ns, "self_ns": st.self_ns,
                   "p50_ns": st.percentile(50), "p99_ns": st.percentile(99)} for name, st in stats.items()}


def function_latency(path, function: str, progress=False):
    """The durations of the calls of ``function`` ("module:qualname", or a probe's event name)."""
    from .latency import LatencyResult

    from ust.errors import UstError

    res = LatencyResult(function + " (entry)", function + " (return)", None)
    pairer = CallPairer()
    by_key: dict[tuple, list] = {}
    for c in calls(path, progress, pairer):
        by_key.setdefault(c.key, []).append((c.begin, c.end, None))
    for key, pairs in by_key.items():  # named at the end, as in function_stats
        if pairer.key_name(key) == function:
            res.pairs += pairs
    res.pairs.sort()
    if not res.pairs and function not in set(pairer.names.names.values()):
        # a misspelt name would otherwise read as a function that was never called
        raise UstError(f"no function {function!r} in this trace (`ust stats --functions` lists its functions)")
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
