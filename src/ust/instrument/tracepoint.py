"""Declaring typed tracepoints: ``ust.tracepoint(name, fields, loglevel)``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from ust._ring import TracepointArgumentWarning, set_strict
from ust.instrument import fields as F
from ust.instrument import loglevels
from ust.instrument.registry import REGISTRY

DEFAULT_LOGLEVEL = loglevels.DEBUG_LINE  # LTTng's default for TRACEPOINT_EVENT


def strict(on: "bool | None" = None) -> bool:
    """Whether a traced call whose arguments do not fit its fields raises.

    Off (the default), turning tracing on never makes the application fail:
    such a call records nothing, is counted as a discarded event (in the
    trace, ``Session.counters()["lost_args"]``, ``ust stop`` and ``ust status``)
    and warns once per tracepoint with ``ust.TracepointArgumentWarning``. On,
    it raises TypeError, OverflowError or ValueError naming the event and the
    field, for developers and tests. ``UST_STRICT=1`` in the environment turns
    it on at import. ``strict()`` returns the current mode; ``strict(flag)``
    sets it and returns the previous one.
    """
    return set_strict(None if on is None else bool(on))


set_strict(os.environ.get("UST_STRICT", "") not in ("", "0"))


def c_spec(name: str, t: F.FieldType) -> tuple:
    """The tuple the C fast path reads (see _ring/tracepoint.c: parse_spec)."""
    elem = t.element if t.kind in ("array", "sequence") else None
    labels = {label: lo for label, lo, _hi in t.mapping} if t.kind == "enum" else None
    size = t.size // 8 if t.kind in ("int", "float", "enum") else (1 if t.kind == "bool" else 0)
    return (
        name,
        t.code,
        size,
        int(t.signed),
        elem.code if elem else 0,
        (elem.size // 8 if elem.kind != "bool" else 1) if elem else 0,
        int(elem.signed) if elem else 0,
        t.length,
        labels,
    )


def _normalize_fields(fields) -> tuple[F.Field, ...]:
    if fields is None:
        return ()
    items: Iterable
    if isinstance(fields, Mapping):
        items = fields.items()
    else:
        items = fields
    out = []
    for item in items:
        try:
            name, ftype = item
        except (TypeError, ValueError):
            raise TypeError(f"fields must be a dict or (name, type) pairs, got {item!r}") from None
        if not isinstance(ftype, F.FieldType):
            raise TypeError(f"field {name!r}: unknown type {ftype!r} (use ust.int32, ust.string, ...)")
        out.append(F.Field(name, ftype))
    return tuple(out)


def declare(name: str, fields=None, loglevel: "int | str" = DEFAULT_LOGLEVEL, *, kind: str = "tracepoint",
            extra: dict | None = None):
    """Declare a tracepoint and return its handle (``.tp`` is the callable)."""
    decl = F.EventDecl(name, _normalize_fields(fields), loglevels.parse(loglevel), kind, dict(extra or {}))
    specs = tuple(c_spec(f.name, f.type) for f in decl.fields)
    return REGISTRY.declare(decl, specs)


def tracepoint(name: str, fields=None, loglevel: "int | str" = DEFAULT_LOGLEVEL):
    """Declare a typed tracepoint and return it: a callable taking the field values.

    >>> req = ust.tracepoint("myapp:request", {"method": ust.string, "status": ust.uint16})
    >>> req("GET", 200)

    Disabled (no session records it), a call costs about an empty function
    call. Enabled, a call whose arguments do not fit the fields records
    nothing, is counted as a discarded event and warns once (see strict()).
    """
    return declare(name, fields, loglevel).tp


# Used as ust.X: say so in reprs, tracebacks and pickles (tests/test_api.py).
for _public in (tracepoint, strict):
    _public.__module__ = "ust"
del _public
