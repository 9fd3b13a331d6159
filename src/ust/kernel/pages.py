"""ftrace ring-buffer pages -> CTF packets.

A read of ``per_cpu/cpuN/trace_pipe_raw`` returns one ring-buffer page (the
kernel's ``buffer_data_page``, described by ``events/header_page``):

  u64 time_stamp      the time of the page's first event (clock of the instance)
  u64 commit          bytes of event data; bit 31 (RB_MISSED_EVENTS): events
                      were lost before this page; bit 30 (RB_MISSED_STORED):
                      their count (an unsigned long) follows the data
  data[]              the events

Each event starts with a 32-bit word: ``type_len`` (5 low bits) and
``time_delta`` (27 high bits, ns since the previous event). type_len 1..28: a
record of type_len*4 bytes follows; 0: the next u32 is the record length + 4,
the record follows it; 29: padding (delta 0: the rest of the page is empty;
else a discarded record of ``array[0]`` bytes); 30: TIME_EXTEND (the delta
continues in the next u32, bits 27 and up); 31: TIME_STAMP (an absolute
time, same layout; its bits 59 and up come from the page's time stamp).

One page becomes one CTF packet of the kernel trace, with LTTng's packet
context (ust.ctf.metadata.preamble_text): timestamp_begin/end, sizes,
packet_seq_num, the stream's cumulative events_discarded, cpu_id. Each record
becomes an ``event_header_large`` (compact: a 16-bit id and the low 32 bits
of the time while events are less than 2^32 ns apart; extended otherwise),
the optional ``tid`` context (the record's ``common_pid``) and the payload
of the event's Plan (ust.kernel.formats). The event id is the ftrace id.
"""

from __future__ import annotations

import struct

from .formats import MAX_RT_PRIO, OP_CHILD_TGID, OP_INT32_MINUS, OP_PATH, OP_RWBS, OP_TGID, rwbs_mask, uses_task_table

CTF_MAGIC = 0xC1FC1FC1
RB_MISSED_EVENTS = 1 << 31
RB_MISSED_STORED = 1 << 30
_COMMIT_MASK = (1 << 30) - 1
_MASK64 = (1 << 64) - 1  # times are u64, wrapping as the C walker's
PAGE_HEADER = 16  # time_stamp + commit (64-bit kernel)
TS_MSB_SHIFT = 59

_PACKET = struct.Struct("<I16sIQQQQQQQI")  # header + LTTng packet context
PACKET_HEADER_SIZE = _PACKET.size
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")
_COMPACT = struct.Struct("<HI")
_EXTENDED = struct.Struct("<HIQ")
_PAGE = struct.Struct("<QQ")


class PageError(ValueError):
    """A page whose layout is impossible (cut, or corrupt): it is skipped."""


def page_time(page: bytes) -> int:
    """A page's time stamp (its header's: no record of it is older)."""
    return _PAGE.unpack_from(page, 0)[0]


def page_missed(page: bytes) -> tuple[int, int, bool]:
    """(data length, missed events, missed count known) of a page."""
    _, commit = _PAGE.unpack_from(page, 0)
    size = commit & _COMMIT_MASK
    missed = 0
    known = True
    if commit & RB_MISSED_EVENTS:
        if commit & RB_MISSED_STORED and PAGE_HEADER + size + 8 <= len(page):
            missed = _U64.unpack_from(page, PAGE_HEADER + size)[0]
        else:
            known = False
    return size, missed, known


COMM_LEN = 16  # the procname context: char[16], as the kernel's TASK_COMM_LEN


PRIO_UNKNOWN = -(1 << 31)  # the prio context when ust cannot know it (docs/kernel.md)
TRACK_SWITCH, TRACK_PI, TRACK_SETTER = 1, 2, 3


def _field32(rec: bytes, off: int, otherwise: int) -> int:
    return _I32.unpack_from(rec, off)[0] if off and off + 4 <= len(rec) else otherwise


class PrioRules:
    """Which records tell or change a thread's priority (the C Converter's ``prio``
    configuration: ust.kernel.prio.converter_config)."""

    def __init__(self, config):
        switch, pi, setters = config
        self.track: dict[int, int] = {}
        self.switch = self.pi = None
        if switch is not None:
            self.track[switch[0]] = TRACK_SWITCH
            self.switch = switch[1:]
        if pi is not None:
            self.track[pi[0]] = TRACK_PI
            self.pi = pi[1:]
        self.setters = {}
        for event_id, which, who in setters:
            self.track[event_id] = TRACK_SETTER
            self.setters[event_id] = (which, who)

    def setter_target(self, event_id: int, rec: bytes) -> int:
        """The thread a priority-setting call targets: its tid, or -1 for any."""
        which, who_off = self.setters[event_id]
        caller = _field32(rec, 4, -1)
        if which and _field32(rec, which, -1) != 0:
            return -1
        who = _field32(rec, who_off, -1)
        return caller if who == 0 else -1 if who < 0 else who

    def step(self, st: dict, event_id: int, ts: int, rec: bytes) -> int:
        """The record's prio context, and the state after it (st: tid, prio, changes, next,
        taint, horizon): the same rules as the C prio_step."""
        changes = st["changes"]
        while st["next"] < len(changes) and changes[st["next"]][0] <= ts:
            when, who, value = changes[st["next"]]
            st["next"] += 1
            if who == -1 or who == st["tid"]:
                st["prio"] = PRIO_UNKNOWN if when == ts else value
        tid = _field32(rec, 4, -1)
        track = self.track.get(event_id, 0)
        value = st["prio"] if st["tid"] == tid and not st["taint"] and ts <= st["horizon"] else PRIO_UNKNOWN
        if track == TRACK_SWITCH:
            prev_off, next_pid_off, next_prio_off = self.switch
            prev_prio = _field32(rec, prev_off, PRIO_UNKNOWN)
            next_prio = _field32(rec, next_prio_off, PRIO_UNKNOWN)
            value = PRIO_UNKNOWN if prev_prio == PRIO_UNKNOWN else prev_prio - MAX_RT_PRIO
            st["tid"] = _field32(rec, next_pid_off, -1)
            st["prio"] = PRIO_UNKNOWN if next_prio == PRIO_UNKNOWN or st["taint"] else next_prio - MAX_RT_PRIO
        elif track == TRACK_PI:
            pid_off, newprio_off = self.pi
            newprio = _field32(rec, newprio_off, PRIO_UNKNOWN)
            if _field32(rec, pid_off, -1) == st["tid"]:
                st["prio"] = PRIO_UNKNOWN if newprio == PRIO_UNKNOWN or st["taint"] else newprio - MAX_RT_PRIO
        elif track == TRACK_SETTER:
            target = self.setter_target(event_id, rec)
            if target == -1 or target == st["tid"]:
                st["prio"] = PRIO_UNKNOWN
        return value

    def change(self, event_id: int, rec: bytes):
        """(tid, prio) a record of another CPU tells the prio contexts, or None."""
        track = self.track.get(event_id, 0)
        if track == TRACK_PI:
            who = _field32(rec, self.pi[0], -1)
            value = _field32(rec, self.pi[1], PRIO_UNKNOWN)
            return (-1 if who < 0 else who), (PRIO_UNKNOWN if value == PRIO_UNKNOWN or who < 0
                                              else value - MAX_RT_PRIO)
        if track == TRACK_SETTER:
            return self.setter_target(event_id, rec), PRIO_UNKNOWN
        return None


def _page_end(page: bytes) -> int:
    """Where a page's data ends (PageError if its header is impossible)."""
    if len(page) < PAGE_HEADER:
        raise PageError(f"page of {len(page)} bytes is shorter than its header")
    size = _PAGE.unpack_from(page, 0)[1] & _COMMIT_MASK
    if PAGE_HEADER + size > len(page):
        raise PageError(f"page commit {size} runs past the page ({len(page)} bytes)")
    return PAGE_HEADER + size


def records(page: bytes):
    """(time, record bytes) of each record of a page, in order, then (the time the
    walk ended at, None); a cut or corrupt record ends the page. Check the page
    with _page_end first."""
    end = _page_end(page)
    ts = _PAGE.unpack_from(page, 0)[0]
    pos = PAGE_HEADER
    while pos + 4 <= end:
        word = _U32.unpack_from(page, pos)[0]
        type_len = word & 31
        delta = word >> 5
        if type_len == 29:  # padding
            if delta == 0:
                break
            if pos + 8 > end:
                break
            pos += 4 + _U32.unpack_from(page, pos + 4)[0]
            continue
        if type_len == 30:  # time extend
            if pos + 8 > end:
                break
            ts = (ts + (delta | (_U32.unpack_from(page, pos + 4)[0] << 27))) & _MASK64  # (C's uint64_t)
            pos += 8
            continue
        if type_len == 31:  # absolute time stamp
            if pos + 8 > end:
                break
            abs_ts = delta | (_U32.unpack_from(page, pos + 4)[0] << 27)
            base = page_ts = _PAGE.unpack_from(page, 0)[0]
            msb = base >> TS_MSB_SHIFT << TS_MSB_SHIFT
            if msb:
                abs_ts |= msb
                if abs_ts < page_ts:
                    abs_ts += 1 << TS_MSB_SHIFT
            ts = abs_ts & _MASK64
            pos += 8
            continue
        if type_len == 0:
            if pos + 8 > end:
                break
            length = _U32.unpack_from(page, pos + 4)[0]
            if length < 4:
                break
            data = pos + 8
            dlen = length - 4
            nxt = pos + 4 + length
        else:
            data = pos + 4
            dlen = type_len * 4
            nxt = data + dlen
        if dlen < 8 or nxt > end:
            break  # a cut or corrupt record ends the page's events
        ts = (ts + delta) & _MASK64
        pos = nxt
        yield ts, page[data:data + dlen]
    yield ts, None  # the time the walk ended at


def convert_page(page: bytes, plans: dict, with_tid: bool, task=None, prio: PrioRules | None = None,
                 state: dict | None = None, tgid_of=None, paths=None, names=None) -> tuple[bytearray, int, int, int, int]:
    """The CTF events of one page: (event bytes, events written, events of an
    unknown type skipped, first time, last time). Pure Python reference of
    the C converter (``ust.kernel._ftrace.Converter``), which must agree.
    ``task(tid)``: the pid/procname context bytes; ``tgid_of(tid)``: a
    thread's process, for the OP_TGID / OP_CHILD_TGID fields.
    With ``prio``, ``state`` (tid, prio, changes, next, taint, horizon) is
    followed through the page and each event gets its prio context.
    ``paths``: {probe id: (pointer offset, path offset)}: a path probe's record is not written;
    ``names``: the file names of the page's open calls' entries (OP_PATH), in order (bytes or None;
    past its end: ""), as ust.kernel.paths paired them."""
    _page_end(page)
    out = bytearray()
    count = skipped = 0
    first = None
    walk = records(page)
    page_ts, commit = _PAGE.unpack_from(page, 0)
    last = prev = page_ts
    if prio is not None and commit & RB_MISSED_EVENTS:
        state["tid"], state["prio"] = -1, PRIO_UNKNOWN  # a sched_switch may be among what was lost
    ts = page_ts
    calls = 0
    for ts, rec in walk:
        if rec is None:
            break
        event_id = rec[0] | rec[1] << 8
        prio_context = prio.step(state, event_id, ts, rec) if prio is not None else PRIO_UNKNOWN
        if paths is not None and event_id in paths:
            continue
        ops = plans.get(event_id)
        if ops is None:
            if prio is None or event_id not in prio.track:
                skipped += 1
            continue
        if first is None:
            first = ts
        if (ts - prev) & _MASK64 < 1 << 32:  # (unsigned, as C: a time going back is not compact)
            out += _COMPACT.pack(event_id, ts & 0xFFFFFFFF)
        else:
            out += _EXTENDED.pack(65535, event_id, ts)
        prev = last = ts
        if with_tid:
            out += rec[4:8]
        if task is not None:  # the pid / procname contexts of the record's thread
            out += task(_I32.unpack_from(rec, 4)[0])
        if prio is not None:
            out += _I32.pack(prio_context)
        dlen = len(rec)
        path = None
        for op, off, arg in ops:
            if op == 0:
                chunk = rec[off:off + arg]
                out += chunk
                if len(chunk) < arg:  # a record shorter than its format: zeros (for all of it past the end)
                    out += bytes(arg - len(chunk))
                continue
            if op in (OP_TGID, OP_CHILD_TGID, OP_INT32_MINUS):  # a record shorter than its format: 0 read
                derived = _I32.unpack_from(rec, off)[0] if off + 4 <= dlen else 0
                if op == OP_TGID:
                    derived = tgid_of(derived)
                elif op == OP_CHILD_TGID:
                    parent = tgid_of(_I32.unpack_from(rec, arg)[0] if arg + 4 <= dlen else 0)
                    derived = parent if tgid_of(derived) == parent else derived
                else:
                    derived -= arg
                out += _I32.pack(((derived + (1 << 31)) & 0xFFFFFFFF) - (1 << 31))
                continue
            if op == OP_RWBS:
                out += _U32.pack(rwbs_mask(bytes(rec[off:min(off + arg, dlen)])))
                continue
            if op == OP_PATH:
                if path is None:
                    path = (names[calls] if names is not None and calls < len(names) else None) or b""
                    if not isinstance(path, bytes):
                        raise TypeError("names must hold bytes (or None)")
                    calls += 1
                    cut = path.find(b"\0")
                    path = path if cut < 0 else path[:cut]
                out += path + b"\0"
                continue
            loc = _U32.unpack_from(rec, off)[0] if off + 4 <= dlen else 0
            start = (loc & 0xFFFF) + (off + 4 if arg else 0)
            n = loc >> 16
            blob = rec[start:start + n] if start + n <= dlen else b""
            if op == 1:
                cut = blob.find(b"\0")
                out += (blob if cut < 0 else blob[:cut]) + b"\0"
            else:
                out += _U32.pack(len(blob)) + blob
        count += 1
    return out, count, skipped, ts if first is None else first, last


def probe_fields(rec: bytes, ptr_off: int, loc_off: int):
    """A path probe's record: (pointer, path up to its NUL), or None when the record is too short
    for them (ignored, as if not recorded)."""
    dlen = len(rec)
    if ptr_off + 8 > dlen or loc_off + 4 > dlen:
        return None
    loc = _U32.unpack_from(rec, loc_off)[0]
    start, n = loc & 0xFFFF, loc >> 16
    if start + n > dlen:
        return None
    blob = bytes(rec[start:start + n])
    cut = blob.find(b"\0")
    return _U64.unpack_from(rec, ptr_off)[0], (blob if cut < 0 else blob[:cut])


class PyConverter:
    """The pure-Python Converter (same interface as ust.kernel._ftrace.Converter):
    ``tasks`` maps a tid to its (tgid, comm); ``task_of(tid)`` answers a tid
    not in it (the pid and procname contexts)."""

    def __init__(self, plans: dict, with_tid: bool = True, with_pid: bool = False, with_procname: bool = False,
                 tasks: dict | None = None, task_of=None, prio=None, paths=None):
        self.plans = dict(plans)
        self.paths = None
        if paths is not None:
            self.paths = {int(i): (int(p), int(s)) for i, p, s in paths}
        # per event id, the offset of an open call's pointer (its OP_PATH), for scan
        self.path_calls = {i: next(off for op, off, _ in ops if op == OP_PATH)
                           for i, ops in self.plans.items() if any(op == OP_PATH for op, _, _ in ops)}
        self.with_tid = with_tid
        self.task = self.tgid_of = None
        if isinstance(tasks, dict) and callable(task_of):
            def tgid_of(tid: int) -> int:
                entry = tasks.get(tid)
                return (entry if entry is not None else task_of(tid))[0]

            self.tgid_of = tgid_of
        elif any(uses_task_table(ops) for ops in self.plans.values()):
            raise TypeError("a process id field needs a tasks dict and task_of")
        if with_pid or with_procname:
            if not isinstance(tasks, dict) or not callable(task_of):
                raise TypeError("the pid/procname contexts need a tasks dict and task_of")

            def task(tid: int) -> bytes:
                entry = tasks.get(tid)
                tgid, comm = entry if entry is not None else task_of(tid)
                return ((_I32.pack(tgid) if with_pid else b"")
                        + (comm[:COMM_LEN - 1].ljust(COMM_LEN, b"\0") if with_procname else b""))

            self.task = task

        self.prio = PrioRules(prio) if prio is not None else None
        self.records = 0  # the records of the last page converted (all types)

    def page(self, page: bytes, names=None):
        if self.prio is not None:
            raise TypeError("a Converter with the prio context converts with page_prio()")
        result = convert_page(page, self.plans, self.with_tid, self.task, tgid_of=self.tgid_of, paths=self.paths,
                              names=names)
        self.records = sum(1 for _, rec in records(page) if rec is not None)
        return result

    def page_prio(self, page: bytes, state: tuple, changes, taint: bool, horizon: int, names=None):
        if self.prio is None:
            raise TypeError("this Converter has no prio context")
        st = {"tid": state[0], "prio": state[1], "changes": list(changes), "next": 0, "taint": taint,
              "horizon": horizon}
        result = convert_page(page, self.plans, self.with_tid, self.task, self.prio, st, self.tgid_of, self.paths,
                              names)
        self.records = sum(1 for _, rec in records(page) if rec is not None)
        return (*result, (st["tid"], st["prio"]))

    def scan(self, page: bytes, pairing=None):
        _page_end(page)
        changes = []
        found = []  # the path probes' records and the open calls' entries (ust.kernel.paths pairs them)
        first = None
        for ts, rec in records(page):
            if rec is None:
                break
            if first is None:
                first = ts
            event_id = rec[0] | rec[1] << 8
            tid = _I32.unpack_from(rec, 4)[0]
            if self.paths is not None and event_id in self.paths:
                fields = probe_fields(rec, *self.paths[event_id])
                if fields is not None:
                    found.append((ts, tid, *fields))
                continue
            if self.paths is not None and event_id in self.path_calls:
                off = self.path_calls[event_id]
                found.append((ts, tid, _U64.unpack_from(rec, off)[0] if off + 8 <= len(rec) else -1, None))
                continue
            change = self.prio.change(event_id, rec) if self.prio is not None else None
            if change is not None:
                changes.append((ts, *change))
        missed = bool(_PAGE.unpack_from(page, 0)[1] & RB_MISSED_EVENTS)
        if pairing is not None:  # queued there: the list of the page's names instead
            found = pairing.page(found)
        return (ts if first is None else first), ts, missed, changes, found


def count_matches(page: bytes, keep: int) -> tuple[dict, list, bool]:
    """A kernel trigger's page: (records per event id, [(event id, record bytes)] of the first
    ``keep``, the page follows lost events). Python reference of ``_ftrace.count_matches``."""
    if not 0 <= keep <= 4096:
        raise ValueError("keep must be in 0..4096")
    counts: dict = {}
    kept = []
    for _, rec in records(page):
        if rec is None:
            break
        event_id = _U16.unpack_from(rec, 0)[0]
        counts[event_id] = counts.get(event_id, 0) + 1
        if len(kept) < keep:
            kept.append((event_id, bytes(rec)))
    return counts, kept, bool(_PAGE.unpack_from(page, 0)[1] & RB_MISSED_EVENTS)


def match_counter():
    """``_ftrace.count_matches`` when the extension is built, else ``count_matches``."""
    try:
        from ust.kernel._ftrace import count_matches as counter
    except ImportError:
        return count_matches
    return counter


def page_records(page: bytes) -> int:
    """How many records a page holds (what ``stats``' "read events" counts; PageError for an
    impossible header). The C one (``_ftrace.page_records``) when built."""
    try:
        from ust.kernel._ftrace import page_records as c_page_records
    except ImportError:
        return sum(1 for _, rec in records(page) if rec is not None)
    try:
        return c_page_records(page)
    except ValueError as exc:
        raise PageError(str(exc)) from None


def pairing_class():
    """The open calls' pairing that goes with ``converter_class()``: the C one when the extension
    is built, else ust.kernel.paths.Pairing (its reference)."""
    try:
        from ust.kernel._ftrace import Pairing
    except ImportError:
        from .paths import Pairing
    return Pairing


def converter_class():
    """The C Converter when the extension is built, else PyConverter."""
    try:
        from ust.kernel._ftrace import Converter
    except ImportError:
        return PyConverter
    return Converter


def packet(uuid: bytes, stream_id: int, cpu: int, seq: int, discarded: int, begin: int, end: int,
           events: bytes) -> bytes:
    """One whole CTF packet (no padding: packet_size = content_size)."""
    bits = (PACKET_HEADER_SIZE + len(events)) * 8
    return _PACKET.pack(CTF_MAGIC, uuid, stream_id, cpu, begin, end, bits, bits, seq, discarded, cpu) + events
