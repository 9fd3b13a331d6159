"""printf-style markers, the ``trace_mark`` analogue: types come from the format.

``ust.mark("myapp", "search_event", "DN %s", dn)`` declares (once) the event
``myapp:search_event`` with a string field ``DN`` and records it. The word
just before a conversion names its field (``"DN %s"`` -> ``DN``); a
conversion with no name before it is ``arg<i>``.
"""

from __future__ import annotations

import re
import sys

from ust.instrument import fields as F
from ust.instrument.tracepoint import declare

_CONV_PATTERN = (r"%(?P<flags>[-+ #0]*)(?P<width>\d+|\*)?(?:\.(?P<prec>\d+|\*))?(?P<len>hh|h|ll|l|L|q|j|z|t)?(?P<conv>[diouxXeEfFgGaAcsp%])")
_NAME_BEFORE_PATTERN = r"([A-Za-z_][A-Za-z0-9_]*)\s*[=:]?\s*$"

_TYPES = {
    "d": F.int64, "i": F.int64, "u": F.uint64, "o": F.uint64,
    "x": F.hex(F.uint64), "X": F.hex(F.uint64), "p": F.hex(F.uint64),
    "e": F.float64, "E": F.float64, "f": F.float64, "F": F.float64,
    "g": F.float64, "G": F.float64, "a": F.float64, "A": F.float64,
    "c": F.string, "s": F.string,
}

_cache: dict[tuple[str, str, str], object] = {}


def parse_format(fmt: str) -> list[tuple[str, F.FieldType]]:
    """The fields a format declares, in order."""
    conv_re = re.compile(_CONV_PATTERN)  # compiled on first use (cached by re), not at import
    name_before = re.compile(_NAME_BEFORE_PATTERN)
    fields: list[tuple[str, F.FieldType]] = []
    used: set[str] = set()
    pos = 0
    for m in conv_re.finditer(fmt):
        conv = m.group("conv")
        if conv == "%":
            pos = m.end()
            continue
        if m.group("width") == "*" or m.group("prec") == "*":
            raise ValueError(f"marker format {fmt!r}: '*' widths are not supported")
        before = name_before.search(fmt[pos:m.start()])
        name = before.group(1) if before else f"arg{len(fields)}"
        base = name
        k = 1
        while name in used:
            name = f"{base}_{k}"
            k += 1
        used.add(name)
        fields.append((name, _TYPES[conv]))
        pos = m.end()
    leftover = fmt.replace("%%", "")
    if leftover.count("%") != len(fields):
        raise ValueError(f"marker format {fmt!r} has a conversion ust does not understand")
    return fields


# C conversions -> Python's % operator (which has no length modifiers, %p or %a).
_PY_CONV = {"u": "d", "p": "#x", "a": "g", "A": "G"}
_py_formats: dict[str, str] = {}


def python_format(fmt: str) -> str:
    """The marker format as a Python %-format taking the event's field values in order."""
    out = _py_formats.get(fmt)
    if out is None:
        def conv(m: "re.Match[str]") -> str:
            c = m.group("conv")
            if c == "%":
                return "%%"
            prec = "." + m.group("prec") if m.group("prec") is not None else ""
            return "%" + m.group("flags") + (m.group("width") or "") + prec + _PY_CONV.get(c, c)

        out = _py_formats[fmt] = re.sub(_CONV_PATTERN, conv, fmt)
    return out


def format_message(fmt: str, values) -> str:
    """A marker event's message: its format applied to its field values (never raises)."""
    try:
        return python_format(fmt) % tuple(values)
    except (TypeError, ValueError, OverflowError):
        return fmt + " " + repr(tuple(values))


def marker(provider: str, name: str, fmt: str):
    """The tracepoint behind a marker (declared on first use)."""
    key = (provider, name, fmt)
    tp = _cache.get(key)
    if tp is None:
        tp = declare(f"{provider}:{name}", parse_format(fmt), kind="marker", extra={"format": fmt}).tp
        _cache[key] = tp
    return tp


def _mark_python(provider: str, name: str, fmt: str, *args) -> None:
    """Record a printf-style marker event; see the module doc."""
    tp = _cache.get((provider, name, fmt))
    if tp is None:
        tp = marker(provider, name, fmt)
    # %c takes a one-character string; numbers for %s are the caller's misuse
    tp(*args)


def _c_mark():
    """The C dispatch (ring/_mark.c: a per-call-site cache in front of marker()), if usable here."""
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None  # it relies on the GIL; importing it would turn the GIL back on
    try:
        from ust._ring import _mark
    except ImportError:
        return None
    _mark.set_resolver(marker)
    return _mark.mark


mark = _c_mark() or _mark_python
mark.__module__ = "ust"  # used as ust.mark (tests/test_api.py)
