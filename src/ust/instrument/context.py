"""Context fields a channel may add to every event.

C contexts are written by the fast path (cheap); Python contexts call a
function per event (costlier: a few hundred ns) and are recorded as strings.
The order in the trace is fixed: the C ones in C_ORDER, then the Python ones
in the order asked.
"""

from __future__ import annotations

import threading

from ust.instrument import fields as F

C_ORDER = ("vpid", "vtid", "procname", "cpu_id")

C_TYPES = {
    "vpid": F.int32,
    "vtid": F.int32,
    "procname": F.array(F.int8, 17),  # declared as UTF-8 text in the metadata, like LTTng
    "cpu_id": F.uint32,
}


def _thread_name() -> str:
    return threading.current_thread().name


def _asyncio_task() -> str:
    import asyncio

    try:
        task = asyncio.current_task()
    except RuntimeError:
        return ""
    return task.get_name() if task is not None else ""


PY_CONTEXTS = {
    "thread_name": _thread_name,
    "asyncio_task": _asyncio_task,
}

KNOWN = C_ORDER + tuple(PY_CONTEXTS)


def normalize(names) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split and order context names: (C contexts, Python contexts)."""
    names = list(dict.fromkeys(names or ()))
    for n in names:
        if n not in KNOWN and not n.startswith("contextvar:"):
            raise ValueError(f"unknown context {n!r} (known: {', '.join(KNOWN)}, contextvar:NAME)")
    c = tuple(n for n in C_ORDER if n in names)
    py = tuple(n for n in names if n not in C_ORDER)
    return c, py


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


def field_name(name: str) -> str:
    return name.replace(":", "_").replace(".", "_").replace("-", "_")
