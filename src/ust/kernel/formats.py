"""ftrace event formats (``events/SYSTEM/NAME/format``) and their CTF form.

Each kernel event is declared in the kernel trace's metadata from its format
file, under the names lttng-modules gives the events both tracers have, so
tools written for LTTng kernel traces (Trace Compass, lttng-analyses-style
scripts, ``ust stats``) read ours:

  * ``syscalls:sys_enter_NAME`` / ``sys_exit_NAME`` become
    ``syscall_entry_NAME`` / ``syscall_exit_NAME`` (``__syscall_nr`` dropped;
    the exit's ``ret`` kept);
  * in the ``sched`` system a thread id is ``tid`` (ftrace says ``pid`` for
    what is a thread id): ``prev_pid`` -> ``prev_tid``, ``pid`` -> ``tid``,
    ``child_pid`` -> ``child_tid``...;
  * every other event keeps the ftrace names (they are the tracepoint's names,
    which lttng-modules uses too: ``irq_handler_entry``, ``block_rq_issue``).

The ``common_*`` fields are not event fields: ``common_type`` is the event id
and ``common_pid`` is the ``tid`` context.

A ``Plan`` says how a record's bytes become the CTF payload: fixed fields are
copied as they are (byte-packed, little-endian, like the rest of the trace);
a ``__data_loc``/``__rel_loc`` string (its offset/length word points later in
the record) becomes a NUL-terminated CTF string, other dynamic arrays a
sequence of bytes with a uint32 length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# ops of a Plan (shared with the C page converter, ust/kernel/_ftrace.c: keep in sync)
OP_COPY = 0  # (OP_COPY, offset, size): copy size bytes
OP_STRING = 1  # (OP_STRING, offset, relative): __data_loc / __rel_loc char[] -> string
OP_BYTES = 2  # (OP_BYTES, offset, relative): other __data_loc arrays -> uint32 length + bytes
# derived values: what lttng-modules records and an ftrace record says another way (lttng_layout)
OP_TGID = 3  # (OP_TGID, offset, 0): the int32 thread id at offset -> its process id (tgid), int32
OP_INT32_MINUS = 4  # (OP_INT32_MINUS, offset, n): the int32 at offset minus n, int32
OP_RWBS = 5  # (OP_RWBS, offset, size): block rwbs text (char[size]) -> lttng-modules' RWBS_FLAG_* mask, uint32
# (OP_CHILD_TGID, child tid offset, parent tid offset): a new task's process, int32: the parent's process if the
# task tables say the child is in it (a thread), else the child itself (a new process: tgid = tid) — the only
# two answers a fork can have, so a table entry left by an older thread of the same id is never believed
OP_CHILD_TGID = 6
# (OP_PATH, pointer offset, 0): a system call's user-space path argument -> the string the thread passed
# there, as a path probe read it (ust.kernel.paths), else "" (not known): lttng-modules records the string
OP_PATH = 7
PATH_SYSCALLS = ("open", "openat", "openat2", "creat")  # entries whose ``filename`` becomes a string (OP_PATH)
PROBE_GROUP_PREFIX = "ustp_"  # a session's path probes' ftrace group (ust.kernel.paths): never a user's event

STATEDUMP_FIRST_ID = 65530  # event ids from here up are the statedump's (ust.kernel.statedump), not ftrace's
MAX_RT_PRIO = 100  # lttng-modules records a task's prio minus this (a normal task is 20, not 120)
# lttng-modules' block RWBS_FLAG_* bits (instrumentation/events/block.h)
RWBS_WRITE, RWBS_DISCARD, RWBS_READ, RWBS_RAHEAD = 1 << 0, 1 << 1, 1 << 2, 1 << 3
RWBS_SECURE, RWBS_SYNC, RWBS_META, RWBS_FLUSH, RWBS_FUA, RWBS_PREFLUSH = 1 << 7, 1 << 5, 1 << 6, 1 << 8, 1 << 9, 1 << 10

_FIELD_RE = re.compile(
    r"^\s*field:(?P<decl>.+?);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>-?\d+);"
)


class FormatError(ValueError):
    """A format file ust does not understand (one line)."""


@dataclass
class Field:
    name: str  # the ftrace name
    ctype: str  # the C type as the format file gives it
    offset: int
    size: int
    signed: bool
    count: int = 0  # elements of a fixed array (0: not an array)
    dynamic: str = ""  # "data_loc" or "rel_loc" for dynamic arrays
    derive: int = OP_COPY  # a derived value's op (OP_TGID, OP_INT32_MINUS, OP_RWBS): its CTF field is an integer
    derive_arg: int = 0
    ctf: str = ""  # the CTF name when not ctf_field_name's (a derived field)

    @property
    def is_char(self) -> bool:
        base = self.ctype.replace("[]", "").replace("const ", "").replace("unsigned ", "").replace("signed ", "").strip()
        return base == "char"

    @property
    def is_pointer(self) -> bool:
        return "*" in self.ctype


@dataclass
class EventFormat:
    system: str
    name: str  # the ftrace name
    id: int
    fields: list[Field] = field(default_factory=list)  # the event's own fields (no common_*)
    common: dict = field(default_factory=dict)  # common_* name -> Field

    @property
    def ctf_name(self) -> str:
        return ctf_event_name(self.system, self.name)


def ctf_event_name(system: str, name: str) -> str:
    if system == "syscalls":
        if name.startswith("sys_enter_"):
            return "syscall_entry_" + name[len("sys_enter_"):]
        if name.startswith("sys_exit_"):
            return "syscall_exit_" + name[len("sys_exit_"):]
    return name


def ctf_field_name(system: str, name: str) -> str:
    if system == "sched":
        if name == "pid":
            return "tid"
        if name.endswith("_pid"):
            return name[:-len("pid")] + "tid"
    return name


def parse_format(text: str, system: str = "") -> EventFormat:
    """An EventFormat from the text of a format file (FormatError if malformed)."""
    name = event_id = None
    fields: list[Field] = []
    common: dict = {}
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line[5:].strip()
        elif line.startswith("ID:"):
            try:
                event_id = int(line[3:].strip())
            except ValueError:
                raise FormatError(f"bad ID line in the format of {system}:{name}: {line.strip()!r}") from None
        elif line.strip().startswith("field:"):
            m = _FIELD_RE.match(line)
            if not m:
                raise FormatError(f"unparsable field line in the format of {system}:{name}: {line.strip()!r}")
            decl = m.group("decl").strip()
            dynamic = ""
            for marker in ("__data_loc", "__rel_loc"):
                if decl.startswith(marker + " "):
                    dynamic = marker[2:]
                    decl = decl[len(marker):].strip()
            count = 0
            am = re.match(r"^(?P<type>.*?)\s*(?P<name>\w+)\s*\[(?P<n>\d*)\]$", decl)
            if am:
                ctype, fname = am.group("type"), am.group("name")
                if am.group("n") and not dynamic:
                    count = int(am.group("n"))
            else:
                nm = re.match(r"^(?P<type>.*?)(?P<name>\w+)$", decl)
                if not nm:
                    raise FormatError(f"unparsable field declaration in {system}:{name}: {decl!r}")
                ctype, fname = nm.group("type").strip(), nm.group("name")
            f = Field(fname, ctype.strip(), int(m.group("offset")), int(m.group("size")),
                      m.group("signed") == "1", count, dynamic)
            if fname.startswith("common_"):
                common[fname] = f
            elif not (system == "syscalls" and fname == "__syscall_nr"):
                fields.append(f)
    if name is None or event_id is None:
        raise FormatError(f"format of {system or '?'} event has no name or ID")
    if not 0 <= event_id < STATEDUMP_FIRST_ID:
        raise FormatError(f"event {system}:{name} has an ID out of range: {event_id} "
                          f"(ust takes {STATEDUMP_FIRST_ID} and up for its statedump events)")
    return lttng_layout(EventFormat(system, name, event_id, fields, common))


_PRIO_FIELDS = ("prio", "prev_prio", "next_prio", "oldprio", "newprio")


def lttng_layout(ev: EventFormat) -> EventFormat:
    """Give the fields lttng-modules' meaning and its extra fields where an
    ftrace record says the same thing another way (docs/kernel.md):

      * sched priorities are the kernel's prio minus MAX_RT_PRIO (20 for a
        normal task, as lttng-modules records them; ftrace says 120);
      * sched_process_fork gets ``parent_pid`` / ``child_pid``, the process
        (tgid) of ``parent_tid`` / ``child_tid``, from ftrace's task tables
        (OP_TGID, OP_CHILD_TGID);
      * block ``rwbs`` (ftrace: text such as "WS") is lttng-modules' bit mask.
    """
    if ev.system == "sched":
        out = []
        ids = {f.name: f for f in ev.fields if f.size == 4 and not f.count and not f.dynamic}
        for f in ev.fields:
            if f.name in _PRIO_FIELDS and f.name in ids:
                f.derive, f.derive_arg = OP_INT32_MINUS, MAX_RT_PRIO
            out.append(f)
            if ev.name == "sched_process_fork" and "parent_pid" in ids and "child_pid" in ids:
                # lttng-modules has each side's tid (ftrace's *_pid) and its process (tgid)
                if f.name == "parent_pid":
                    out.append(Field(f.name, "pid_t", f.offset, 4, True, derive=OP_TGID, ctf="parent_pid"))
                elif f.name == "child_pid":
                    out.append(Field(f.name, "pid_t", f.offset, 4, True, derive=OP_CHILD_TGID,
                                     derive_arg=ids["parent_pid"].offset, ctf="child_pid"))
        ev.fields = out
    elif ev.system == "syscalls" and ev.name.startswith("sys_enter_") \
            and ev.name[len("sys_enter_"):] in PATH_SYSCALLS:
        for f in ev.fields:
            if f.name == "filename" and f.size == 8 and f.is_pointer and not f.dynamic and not f.count:
                f.derive = OP_PATH
    elif ev.system == "block":
        for f in ev.fields:
            if f.name == "rwbs" and f.count and f.is_char:
                f.derive, f.derive_arg = OP_RWBS, f.size
    return ev


def rwbs_mask(text: bytes) -> int:
    """lttng-modules' RWBS_FLAG_* mask of ftrace's rwbs text (the kernel's
    blk_fill_rwbs: an optional F (preflush), the operation — W, R, D, DE
    (secure erase), F (flush), N (other) — then F (FUA), A, S, M)."""
    cut = text.find(b"\0")
    t = text if cut < 0 else text[:cut]
    mask = i = 0
    if len(t) >= 2 and t[0:1] == b"F" and t[1:2] in b"WRDFN":
        mask |= RWBS_PREFLUSH
        i = 1
    op = t[i:i + 1]
    if op == b"W":
        mask |= RWBS_WRITE
    elif op == b"R":
        mask |= RWBS_READ
    elif op == b"D":
        mask |= RWBS_DISCARD
        if t[i + 1:i + 2] == b"E":
            mask |= RWBS_SECURE
            i += 1
    elif op == b"F":
        mask |= RWBS_FLUSH
    elif op != b"N":
        return mask  # not an rwbs text: what was understood
    for c in t[i + 1:]:
        mask |= {0x46: RWBS_FUA, 0x41: RWBS_RAHEAD, 0x53: RWBS_SYNC, 0x4D: RWBS_META}.get(c, 0)
    return mask


def _int_decl(bits: int, signed: bool, base: int = 10, encoding: str = "none") -> str:
    return (f"integer {{ size = {bits}; align = 8; signed = {int(signed)}; "
            f"encoding = {encoding}; base = {base}; }}")


def field_lines(ev: EventFormat, f: Field) -> list[str]:
    """TSDL lines declaring one field (babeltrace2 strips the leading '_')."""
    n = "_" + (f.ctf or ctf_field_name(ev.system, f.name))
    if f.derive in (OP_TGID, OP_CHILD_TGID, OP_INT32_MINUS):
        return [f"{_int_decl(32, True)} {n};"]
    if f.derive == OP_RWBS:
        return [f"{_int_decl(32, False)} {n};"]
    if f.derive == OP_PATH:
        return [f"string {{ encoding = UTF8; }} {n};"]
    if f.dynamic:
        if f.is_char:
            return [f"string {{ encoding = UTF8; }} {n};"]
        return [f"{_int_decl(32, False)} _{n}_length;", f"{_int_decl(8, False, 16)} {n}[ _{n}_length ];"]
    if f.count:
        elem = f.size // f.count if f.count and f.size % f.count == 0 else 1
        if f.is_char:
            return [f"{_int_decl(8, True, 10, 'UTF8')} {n}[{f.size}];"]
        if elem in (1, 2, 4, 8):
            return [f"{_int_decl(elem * 8, f.signed, 16 if f.is_pointer else 10)} {n}[{f.count}];"]
        return [f"{_int_decl(8, False, 16)} {n}[{f.size}];"]
    if f.size in (1, 2, 4, 8):
        return [f"{_int_decl(f.size * 8, f.signed, 16 if f.is_pointer else 10)} {n};"]
    return [f"{_int_decl(8, False, 16)} {n}[{f.size}];"]  # an opaque blob (a struct by value)


def plan(ev: EventFormat) -> tuple:
    """The conversion of one record's payload: a tuple of (op, offset, arg)
    (see OP_*); adjacent copies are merged."""
    ops: list[list[int]] = []
    for f in ev.fields:
        if f.derive != OP_COPY:
            ops.append([f.derive, f.offset, f.derive_arg])
        elif f.dynamic:
            ops.append([OP_STRING if f.is_char else OP_BYTES, f.offset, 1 if f.dynamic == "rel_loc" else 0])
        elif ops and ops[-1][0] == OP_COPY and ops[-1][1] + ops[-1][2] == f.offset:
            ops[-1][2] += f.size
        else:
            ops.append([OP_COPY, f.offset, f.size])
    return tuple(tuple(op) for op in ops)


def path_probe(ev: EventFormat) -> tuple[int, int, int] | None:
    """(id, pointer offset, path data_loc offset) of a path probe's format (ust.kernel.paths: a
    ``ustp_*`` uprobe event with a u64 ``ptr`` and a ``__data_loc char[] path``), else None."""
    if not ev.system.startswith(PROBE_GROUP_PREFIX):
        return None
    fields = {f.name: f for f in ev.fields}
    ptr, path = fields.get("ptr"), fields.get("path")
    if ptr is None or path is None or ptr.size != 8 or ptr.count or ptr.dynamic \
            or path.dynamic != "data_loc" or not path.is_char:
        return None
    return ev.id, ptr.offset, path.offset


def uses_task_table(plan_ops: tuple) -> bool:
    """Whether a plan reads ftrace's task tables (a field that is a thread's process:
    OP_TGID, OP_CHILD_TGID — sched_process_fork's parent_pid / child_pid)."""
    return any(op[0] in (OP_TGID, OP_CHILD_TGID) for op in plan_ops)


def records_tgid(contexts, formats: list[tuple[str, str]]) -> bool:
    """Whether an instance recording these events (``(system, format text)``) for a trace with
    these contexts must save each thread's process (``options/record-tgid``: ftrace's
    ``saved_tgids``, read by ust.kernel.tracefs.TaskTable): for the pid context, or for a field
    that is a thread's process."""
    return "pid" in contexts or any(uses_task_table(plan(parse_format(text, system))) for system, text in formats)


def record_values(ev: EventFormat, rec: bytes) -> dict:
    """A record's payload as {CTF field name: value} — what a kernel trigger's ``--capture`` reads
    (ust.kernel.matcher), for its first matches only: integers, text (char arrays, ``__data_loc``
    strings) as str, other arrays as lists of integers; lttng-modules' derived values as the trace
    has them (priorities, rwbs), except a thread's process (no task tables here: left out, so
    unavailable). A field the record is too short for is left out."""
    import struct

    out: dict = {}
    for f in ev.fields:
        name = f.ctf or ctf_field_name(ev.system, f.name)
        if f.derive in (OP_TGID, OP_CHILD_TGID):
            continue
        if f.dynamic:
            if f.offset + 4 > len(rec):
                continue
            loc = struct.unpack_from("<I", rec, f.offset)[0]
            start = (loc & 0xFFFF) + (f.offset + 4 if f.dynamic == "rel_loc" else 0)
            data = rec[start:start + (loc >> 16)] if start + (loc >> 16) <= len(rec) else b""
            out[name] = data.split(b"\0", 1)[0].decode("utf-8", "replace") if f.is_char else list(data)
            continue
        if f.offset + f.size > len(rec):
            continue
        raw = rec[f.offset:f.offset + f.size]
        if f.derive == OP_RWBS:
            out[name] = rwbs_mask(raw)
        elif f.count and f.is_char:
            out[name] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif f.count and f.size % f.count == 0 and f.size // f.count in (1, 2, 4, 8):
            width = f.size // f.count
            out[name] = [int.from_bytes(raw[i:i + width], "little", signed=f.signed) for i in range(0, f.size, width)]
        elif f.size in (1, 2, 4, 8):
            value = int.from_bytes(raw, "little", signed=f.signed)
            out[name] = value - f.derive_arg if f.derive == OP_INT32_MINUS else value
        else:
            out[name] = list(raw)
    return out
