"""Context fields a channel may add to every event: LTTng's user-space contexts.

C contexts are written by the fast path from values the C core (_ring/contexts.c) reads cheaply or
caches (see _ring/contexts.h): process and thread ids,
credentials, namespace inodes, the process name, the CPU, perf counters.
Python contexts call a function per event (costlier: a few hundred ns) and
are recorded as strings: thread_name, asyncio_task, contextvar:NAME.

The order in the trace is fixed: the C ones in C_ORDER, then the perf
counters and the Python ones in the order asked.

Names, field names and TSDL types are LTTng-UST's (an analysis written for an
LTTng trace reads ours). `pid`/`tid` are the ids in the initial pid namespace
(equal to vpid/vtid outside containers); `ppid`/`vppid` are the parent as the
process sees it (getppid). LTTng's `ip` (the tracepoint call's instruction
pointer) has no meaningful Python counterpart: see docs/core-api.md.
"""

from __future__ import annotations

import sys
import threading

from ust.instrument import fields as F

# the order the C core writes them in (its ctx_kinds table; tests check they agree)
C_ORDER = ("vpid", "pid", "vtid", "tid", "vppid", "ppid", "pthread_id", "procname", "cpu_id",
           "vuid", "veuid", "vsuid", "vgid", "vegid", "vsgid",
           "cgroup_ns", "ipc_ns", "mnt_ns", "net_ns", "pid_ns", "time_ns", "user_ns", "uts_ns")

_IDS = ("vuid", "veuid", "vsuid", "vgid", "vegid", "vsgid")
_NAMESPACES = ("cgroup_ns", "ipc_ns", "mnt_ns", "net_ns", "pid_ns", "time_ns", "user_ns", "uts_ns")

C_TYPES = {
    **{n: F.int32 for n in ("vpid", "pid", "vtid", "tid", "vppid", "ppid")},  # pid_t
    "pthread_id": F.uint64,  # unsigned long
    "procname": F.array(F.int8, 17),  # declared as UTF-8 text in the metadata, like LTTng
    "cpu_id": F.int32,  # int, as LTTng-UST declares it
    **{n: F.uint32 for n in _IDS},  # uid_t, gid_t
    **{n: F.uint64 for n in _NAMESPACES},  # ino_t
}

# -- perf counters: LTTng's perf:thread:NAME, counted for the thread that records

_HW, _SW, _CACHE = 0, 1, 3  # perf_event_attr.type
_PERF_HW = {
    "cpu-cycles": 0, "cycles": 0, "instructions": 1, "cache-references": 2, "cache-misses": 3,
    "branch-instructions": 4, "branches": 4, "branch-misses": 5, "bus-cycles": 6,
    "stalled-cycles-frontend": 7, "idle-cycles-frontend": 7, "stalled-cycles-backend": 8,
    "idle-cycles-backend": 8,
}
_PERF_SW = {
    "cpu-clock": 0, "task-clock": 1, "page-fault": 2, "faults": 2, "context-switches": 3, "cs": 3,
    "cpu-migrations": 4, "migrations": 4, "minor-faults": 5, "major-faults": 6, "alignment-faults": 7,
    "emulation-faults": 8,
}
_CACHES = {"L1-dcache": 0, "L1-icache": 1, "LLC": 2, "dTLB": 3, "iTLB": 4, "branch": 5}
_CACHE_OPS = {"load": 0, "store": 1, "prefetch": 2}

PERF_COUNTERS: dict[str, tuple[int, int]] = {}  # "perf:thread:NAME" -> (type, config)
for _n, _c in _PERF_HW.items():
    PERF_COUNTERS[f"perf:thread:{_n}"] = (_HW, _c)
for _n, _c in _PERF_SW.items():
    PERF_COUNTERS[f"perf:thread:{_n}"] = (_SW, _c)
for _cache, _id in _CACHES.items():
    for _op, _op_id in _CACHE_OPS.items():
        PERF_COUNTERS[f"perf:thread:{_cache}-{_op}s"] = (_CACHE, _id | _op_id << 8)
        PERF_COUNTERS[f"perf:thread:{_cache}-{_op}-misses"] = (_CACHE, _id | _op_id << 8 | 1 << 16)


_PERF_FIELDS = {name.replace(":", "_").replace("-", "_"): name for name in PERF_COUNTERS}


def _thread_name() -> str:
    return threading.current_thread().name


def _asyncio_task() -> str:
    # no import and no exception when the thread runs no event loop (the common case)
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return ""
    loop = asyncio._get_running_loop()
    if loop is None:
        return ""
    task = asyncio.current_task(loop)
    return task.get_name() if task is not None else ""


PY_CONTEXTS = {
    "thread_name": _thread_name,
    "asyncio_task": _asyncio_task,
}

KNOWN = C_ORDER + tuple(PY_CONTEXTS)
MAX_NAME = 255
MAX_PERF = 32  # _ring/contexts.h's perf counter slots per process
MAX_PY = 16  # _ring/channel.h's room for Python context values per event


def is_known(name: object) -> bool:
    """A context name ust can record (contextvar:NAME with a non-empty NAME of at most MAX_NAME)."""
    if not isinstance(name, str):
        return False
    if name in KNOWN or name in PERF_COUNTERS:
        return True
    return name.startswith("contextvar:") and 0 < len(name) - 11 <= MAX_NAME and name.isprintable()


def normalize(names) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split and order context names: (C contexts and perf counters, Python contexts)."""
    names = list(dict.fromkeys(names or ()))
    for n in names:
        if not is_known(n):
            raise ValueError(f"unknown context {n!r} (see `ust add-context --list`)")
    perf = tuple(n for n in names if n in PERF_COUNTERS)
    py = tuple(n for n in names if n not in C_ORDER and n not in PERF_COUNTERS)
    if len({PERF_COUNTERS[n] for n in perf}) > MAX_PERF:
        raise ValueError(f"at most {MAX_PERF} different perf counters per channel")
    if len(py) > MAX_PY:
        raise ValueError(f"at most {MAX_PY} Python contexts (thread_name, asyncio_task, contextvar:NAME) per channel")
    return tuple(n for n in C_ORDER if n in names) + perf, py


def check_available(names) -> None:
    """Raise ValueError (one line) for a perf counter this machine cannot count."""
    from ust._ring import perf_check

    for n in names:
        if n in PERF_COUNTERS:
            try:
                perf_check(*PERF_COUNTERS[n])
            except OSError as exc:
                raise ValueError(f"context {n}: this machine cannot count it ({exc.strerror})") from None


def field_type(name: str) -> F.FieldType:
    if name in C_TYPES:
        return C_TYPES[name]
    if name in PERF_COUNTERS:
        return F.uint64
    return F.string


def make_channel(buffers, names):
    """The writer side of a channel recording these contexts (both hosts build channels here)."""
    from ust._ring import Channel

    c, py = normalize(names)
    if any(n in _IDS or n in _NAMESPACES or n in ("pid", "tid") for n in c):
        watch_process_changes()
    return Channel(buffers, [PERF_COUNTERS.get(n, n) for n in c], [py_callable(n) for n in py])


def py_callable(name: str):
    if name in PY_CONTEXTS:
        return PY_CONTEXTS[name]
    var_name = name.split(":", 1)[1]

    def read_contextvar() -> str:
        import contextvars

        for var, value in contextvars.copy_context().items():
            if var.name == var_name:
                return str(value)
        return ""

    return read_contextvar


def reader(name: str):
    """A zero-argument callable giving the calling thread's value of a context (for filters), or None.

    C contexts come from the values the fast path writes (_ring/contexts.c's caches), not
    from /proc; a perf counter (by its name or its field name, as LTTng's
    filters write it: ``$ctx.perf_thread_page_fault``) from the thread's counter.
    """
    if name in C_TYPES:
        from functools import partial

        from ust._ring import context_value

        if name in _IDS or name in _NAMESPACES or name in ("pid", "tid"):
            watch_process_changes()
        return partial(context_value, name)
    perf = PERF_COUNTERS.get(name) or PERF_COUNTERS.get(_PERF_FIELDS.get(name, ""))
    if perf is not None:
        from functools import partial

        from ust._ring import perf_value

        return partial(perf_value, *perf)
    if name in PY_CONTEXTS or (name.startswith("contextvar:") and is_known(name)):
        return py_callable(name)
    return None


def field_name(name: str) -> str:
    return name.replace(":", "_").replace(".", "_").replace("-", "_")


def describe() -> list[tuple[str, str]]:
    """(name, what it records) of every context, for `ust add-context --list`."""
    about = {
        "vpid": "process id (in its pid namespace)", "pid": "process id in the initial pid namespace",
        "vtid": "thread id (in its pid namespace)", "tid": "thread id in the initial pid namespace",
        "vppid": "parent process id", "ppid": "parent process id (as the process sees it)",
        "pthread_id": "pthread_self() of the thread", "procname": "process name (16 bytes)",
        "cpu_id": "CPU the event was recorded on",
        **{n: f"{'real' if n[1:] in ('uid', 'gid') else 'effective' if n[1] == 'e' else 'saved'} "
              f"{'user' if 'uid' in n else 'group'} id" for n in _IDS},
        **{n: f"inode of the {n[:-3]} namespace" for n in _NAMESPACES},
        "thread_name": "Python thread name (string)", "asyncio_task": "current asyncio task name (string)",
    }
    rows = [(n, about[n]) for n in C_ORDER + tuple(PY_CONTEXTS)]
    rows.append(("contextvar:NAME", "value of the contextvars.ContextVar named NAME (string)"))
    rows.extend((n, "perf counter of the thread (" + ("hardware" if t != _SW else "software") + ")")
                for n, (t, _) in PERF_COUNTERS.items())
    return rows


# -- credentials and namespaces: the C core caches them per process -------------

_WATCHED = ("setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid", "setregid", "setresgid",
            "unshare", "setns")
_watching = False
_watch_lock = threading.Lock()


def watch_process_changes() -> None:
    """Make os.setuid & co., os.unshare and os.setns tell the C core to re-read its cached ids.

    LTTng-UST does the same by wrapping the libc calls (liblttng-ust's setuid
    and unshare overrides); a process that changes them through ctypes is not seen.
    """
    global _watching
    with _watch_lock:
        if _watching:
            return
        import functools
        import os

        from ust._ring import process_changed

        for name in _WATCHED:
            original = getattr(os, name, None)
            if original is None:
                continue

            def make(original):
                @functools.wraps(original)
                def wrapper(*args, **kwargs):
                    try:
                        return original(*args, **kwargs)
                    finally:
                        process_changed()
                return wrapper

            setattr(os, name, make(original))
        _watching = True
