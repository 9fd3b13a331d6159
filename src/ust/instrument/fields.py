"""Field types of typed tracepoints: the TRACE_EVENT field macros, as values.

A field type says three things, all fixed at declaration:
  * how the C fast path serializes a Python argument (``code`` and ``size``),
  * how the CTF metadata declares it (read by ``ust.ctf.metadata``),
  * how the argument is validated (range of integers, element type of arrays).

Wire layout (little-endian, byte-packed like LTTng-UST on x86 — every CTF
``align`` is 8 bits):
  integer / enum  size/8 bytes, two's complement
  float32/64      IEEE 754, 4 or 8 bytes
  boolean         1 byte, 0 or 1 (declared as an enum FALSE/TRUE over uint8)
  string          UTF-8 bytes then NUL (an embedded NUL ends the string)
  bytes           uint32 length, then the bytes (a sequence of hex uint8)
  array(T, n)     n elements of T
  sequence(T)     uint32 length, then the elements of T
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Codes shared with the C fast path (_ring/tracepoint.c: the F_* codes of FieldSpec). Keep in sync.
CODE_SINT = 1
CODE_UINT = 2
CODE_FLOAT = 3
CODE_BOOL = 4
CODE_STRING = 5
CODE_BYTES = 6
CODE_ARRAY = 7
CODE_SEQUENCE = 8
CODE_ENUM = 9


class FieldType:
    """A field type (immutable). ``size`` is in bits for scalars; ``length`` for arrays.

    A plain class rather than a dataclass: ``import ust`` must stay cheap, and
    dataclasses pulls in inspect.
    """

    __slots__ = ("kind", "size", "signed", "base", "element", "length", "mapping", "name")

    def __init__(self, kind: str, size: int = 0, signed: bool = False, base: int = 10,
                 element: "FieldType | None" = None, length: int = 0, mapping: tuple = (), name: str = ""):
        # kind: "int", "float", "bool", "string", "bytes", "array", "sequence", "enum"
        for attr, value in (("kind", kind), ("size", size), ("signed", signed), ("base", base),
                            ("element", element), ("length", length), ("mapping", mapping), ("name", name)):
            object.__setattr__(self, attr, value)

    def __setattr__(self, name, value):
        raise AttributeError("FieldType is immutable")

    def _key(self) -> tuple:
        return (self.kind, self.size, self.signed, self.base, self.element, self.length, self.mapping)

    def __eq__(self, other) -> bool:
        return isinstance(other, FieldType) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"ust.{self.name}" if self.name else f"FieldType({self.kind})"

    @property
    def code(self) -> int:
        return {
            "int": CODE_SINT if self.signed else CODE_UINT,
            "float": CODE_FLOAT,
            "bool": CODE_BOOL,
            "string": CODE_STRING,
            "bytes": CODE_BYTES,
            "array": CODE_ARRAY,
            "sequence": CODE_SEQUENCE,
            "enum": CODE_ENUM,
        }[self.kind]

    @property
    def is_scalar_number(self) -> bool:
        return self.kind in ("int", "float", "bool", "enum")


def _int(bits: int, signed: bool) -> FieldType:
    return FieldType("int", bits, signed, 10, name=("" if signed else "u") + f"int{bits}")


int8, int16, int32, int64 = (_int(b, True) for b in (8, 16, 32, 64))
uint8, uint16, uint32, uint64 = (_int(b, False) for b in (8, 16, 32, 64))
float32 = FieldType("float", 32, True, name="float32")
float64 = FieldType("float", 64, True, name="float64")
boolean = FieldType("bool", 8, False, name="boolean")
string = FieldType("string", name="string")
bytes_ = FieldType("bytes", name="bytes")


def hex(t: FieldType) -> FieldType:  # noqa: A001 - mirrors the display-base name users expect
    """The same integer type, displayed in base 16 (LTTng's ctf_integer_hex)."""
    if t.kind != "int":
        raise TypeError(f"ust.hex() expects an integer type, got {t!r}")
    return FieldType("int", t.size, t.signed, 16, name=f"hex({t.name})")


def array(element: FieldType, length: int) -> FieldType:
    """A fixed-length array of a numeric scalar type."""
    if not isinstance(element, FieldType) or not element.is_scalar_number:
        raise TypeError(f"ust.array() expects a numeric scalar element type, got {element!r}")
    if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= 65536:
        raise ValueError(f"ust.array() length must be an int in 1..65536, got {length!r}")
    return FieldType("array", element=element, length=length, name=f"array({element.name}, {length})")


def sequence(element: FieldType) -> FieldType:
    """A variable-length sequence of a numeric scalar type (uint32 length prefix)."""
    if not isinstance(element, FieldType) or not element.is_scalar_number:
        raise TypeError(f"ust.sequence() expects a numeric scalar element type, got {element!r}")
    return FieldType("sequence", element=element, name=f"sequence({element.name})")


def enum(container: FieldType, labels: Mapping[str, "int | tuple[int, int]"]) -> FieldType:
    """An enumeration over an integer type: {"NAME": value or (lo, hi)}.

    A tracepoint argument for an enum field may be the integer value or a label.
    """
    if not isinstance(container, FieldType) or container.kind != "int":
        raise TypeError(f"ust.enum() expects an integer container type, got {container!r}")
    if not labels:
        raise ValueError("ust.enum() needs at least one label")
    lo_lim, hi_lim = int_range(container)
    items = []
    for label, value in labels.items():
        if not isinstance(label, str) or not label:
            raise TypeError(f"ust.enum() labels must be non-empty strings, got {label!r}")
        if isinstance(value, tuple):
            if len(value) != 2:
                raise ValueError(f"ust.enum() range for {label!r} must be (lo, hi), got {value!r}")
            lo, hi = value
        else:
            lo = hi = value
        for v in (lo, hi):
            if not isinstance(v, int) or isinstance(v, bool) or not lo_lim <= v <= hi_lim:
                raise ValueError(f"ust.enum() value {v!r} of {label!r} does not fit in {container!r}")
        if lo > hi:
            raise ValueError(f"ust.enum() range for {label!r} is empty: {lo} > {hi}")
        items.append((label, lo, hi))
    return FieldType(
        "enum", container.size, container.signed, container.base, element=container, mapping=tuple(items), name="enum"
    )


def int_range(t: FieldType) -> tuple[int, int]:
    if t.signed:
        return -(1 << (t.size - 1)), (1 << (t.size - 1)) - 1
    return 0, (1 << t.size) - 1


class Field:
    """A named field of an event."""

    __slots__ = ("name", "type")

    def __init__(self, name: str, type: FieldType):  # noqa: A002 - the natural name
        self.name = name
        self.type = type

    def __eq__(self, other) -> bool:
        return isinstance(other, Field) and (self.name, self.type) == (other.name, other.type)

    def __hash__(self) -> int:
        return hash((self.name, self.type))

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self.type!r})"


class EventDecl:
    """What a tracepoint declares: everything the metadata needs to describe it."""

    __slots__ = ("name", "fields", "loglevel", "kind", "extra")

    def __init__(self, name: str, fields: "tuple[Field, ...]", loglevel: int, kind: str = "tracepoint",
                 extra: "dict | None" = None):
        self.name = name  # "provider:event"
        self.fields = tuple(fields)
        self.loglevel = loglevel
        self.kind = kind  # or "marker", "logging", "probe"
        self.extra = dict(extra or {})

    def __eq__(self, other) -> bool:
        return isinstance(other, EventDecl) and (self.name, self.fields, self.loglevel, self.kind) == (
            other.name, other.fields, other.loglevel, other.kind)

    def __repr__(self) -> str:
        return f"EventDecl({self.name!r}, {len(self.fields)} fields, loglevel={self.loglevel})"

    @property
    def provider(self) -> str:
        return self.name.split(":", 1)[0]

    def signature(self) -> tuple:
        return tuple((f.name, f.type) for f in self.fields)


# ---------------------------------------------------------------------------
# Names: the one rule for whoever declares (ust.instrument.registry) and
# whoever receives a declaration from another process (the declaration codec,
# ust.daemon.protocol). ``<`` and ``>``: probes on nested functions (<locals>).

TRACEPOINT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*:[A-Za-z_<][A-Za-z0-9_.\-<>]*")
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def naming_error(name: object, field_names: Iterable[object]) -> str | None:
    """What is wrong with a declaration's names, in one line; None if nothing."""
    if not isinstance(name, str) or not TRACEPOINT_NAME.fullmatch(name):
        return f"tracepoint name must be 'provider:event' (letters, digits, _ . -), got {str(name)[:300]!r}"
    seen = set()
    for field_name in field_names:
        if not isinstance(field_name, str) or not FIELD_NAME.fullmatch(field_name):
            return f"{name}: field name must be an identifier, got {str(field_name)[:300]!r}"
        if field_name in seen:
            return f"{name}: duplicate field {field_name!r}"
        seen.add(field_name)
    return None


# Used as ust.X: say so in reprs, tracebacks and pickles (tests/test_api.py).
for _public in (hex, array, sequence, enum):
    _public.__module__ = "ust"
del _public
