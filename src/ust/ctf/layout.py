"""The packet and event layout of ust's traces, as the ring buffer defines it.

One definition: ``src/ust/_ring/layout.h`` (the C structs the ring buffer
writes, and a field table built from them with offsetof/sizeof), exported as
``ust._ring.LAYOUT``. From it, here: the TSDL declarations (``metadata.py``
writes them, ``_synth.py`` too), the ``struct`` format of a packet's header and
context (``writer.py``, ``_synth.py``), the packet magic (``reader.py``).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ust._ring._ring import LAYOUT as _LAYOUT


class Field(NamedTuple):
    scope: str  # packet.header, packet.context, event.header, event.header.compact, event.header.extended
    name: str
    offset: int  # bytes, from the start of the packet (packet scopes) or of the event header
    size: int  # bytes of one element
    count: int  # 1, or the array's length
    align: int  # bits
    signed: bool
    clock: bool  # maps to the clock (a timestamp)


FIELDS: tuple[Field, ...] = tuple(Field(*row) for row in _LAYOUT["fields"])
PACKET_MAGIC: int = _LAYOUT["magic"]
EVENT_ID_EXTENDED: int = _LAYOUT["extended_id"]
PACKET_HEADER_SIZE: int = _LAYOUT["packet_header_size"]  # packet header + packet context, bytes
PACKET_CONTEXT_OFFSET: int = _LAYOUT["packet_context_offset"]

_INT_CODES = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h", (4, False): "I", (4, True): "i",
              (8, False): "Q", (8, True): "q"}


def fields(scope: str) -> tuple[Field, ...]:
    return tuple(f for f in FIELDS if f.scope == scope)


def field(scope: str, name: str) -> Field:
    for f in FIELDS:
        if f.scope == scope and f.name == name:
            return f
    raise KeyError(f"{scope}.{name}")


def packet_struct(byte_order: str = "<", upto: str | None = None) -> struct.Struct:
    """The packet header and context as one ``struct.Struct`` (a uuid is one ``16s``), or
    their fields before the one named ``upto``."""
    codes = []
    for f in fields("packet.header") + fields("packet.context"):
        if f.name == upto:
            break
        codes.append(f"{f.count}s" if f.count > 1 and f.size == 1 else _INT_CODES[(f.size, f.signed)] * f.count)
    return struct.Struct(byte_order + "".join(codes))


def _type_name(f: Field) -> str:
    base = f"{'' if f.signed else 'u'}int{f.size * 8}"
    return f"{base}_clock_monotonic_t" if f.clock else f"{base}_t"


def _decl(f: Field) -> str:
    return f"{_type_name(f)} {f.name}" + (f"[{f.count}]" if f.count > 1 else "") + ";"


def tsdl_typealiases() -> str:
    """The integer type names the declarations below use (uintN_t, uintN_clock_monotonic_t for
    the clock's; the clock "monotonic" must be declared before the clock ones)."""
    plain = sorted({(f.size, f.signed) for f in FIELDS if not f.clock})
    return "".join(f"typealias integer {{ size = {s * 8}; align = 8; signed = {'true' if sg else 'false'}; }} "
                   f":= {'' if sg else 'u'}int{s * 8}_t;\n" for s, sg in plain)


def tsdl_clock_typealiases(clock: str = "monotonic") -> str:
    sizes = sorted({f.size for f in FIELDS if f.clock})
    return "".join(f"typealias integer {{\n\tsize = {s * 8}; align = 8; signed = false;\n\tmap = clock.{clock}.value;\n"
                   f"}} := uint{s * 8}_clock_{clock}_t;\n\n" for s in sizes)


def tsdl_packet_header(indent: str = "\t\t") -> str:
    """The body of the trace's ``packet.header := struct { ... }``."""
    return "".join(f"{indent}{_decl(f)}\n" for f in fields("packet.header"))


def tsdl_packet_context() -> str:
    """``struct packet_context { ... };``"""
    return "struct packet_context {\n" + "".join(f"\t{_decl(f)}\n" for f in fields("packet.context")) + "};\n"


def tsdl_event_header() -> str:
    """``struct event_header_large { ... } align(8);``: LTTng's large event header."""
    (tag,) = fields("event.header")
    compact = "".join(f"\t\t\t{_decl(f)}\n" for f in fields("event.header.compact"))
    extended = "".join(f"\t\t\t{_decl(f)}\n" for f in fields("event.header.extended"))
    return (f"struct event_header_large {{\n\tenum : {_type_name(tag)} {{ compact = 0 ... {EVENT_ID_EXTENDED - 1}, "
            f"extended = {EVENT_ID_EXTENDED} }} {tag.name};\n"
            f"\tvariant <{tag.name}> {{\n\t\tstruct {{\n{compact}\t\t}} compact;\n"
            f"\t\tstruct {{\n{extended}\t\t}} extended;\n\t}} v;\n}} align(8);\n")
