"""Declaring typed tracepoints: ``ust.tracepoint(name, fields, loglevel)``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ust.instrument import fields as F
from ust.instrument import loglevels
from ust.instrument.registry import REGISTRY

DEFAULT_LOGLEVEL = loglevels.DEBUG_LINE  # LTTng's default for TRACEPOINT_EVENT


def c_spec(name: str, t: F.FieldType) -> tuple:
    """The tuple the C fast path reads (see ring.c: parse_spec)."""
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
    call. A call whose arguments do not fit the fields raises TypeError or
    OverflowError naming the event and the field, and records nothing.
    """
    return declare(name, fields, loglevel).tp
