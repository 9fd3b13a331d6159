"""TSDL metadata (CTF 1.8) for the traces ust writes.

The layout matches LTTng-UST's on x86-64 (byte-packed, little-endian, the
same packet header and context, the *large* event header), so tools that know
LTTng traces read ours: babeltrace2, Trace Compass.
"""

from __future__ import annotations

import socket
import time
import uuid as uuid_mod
from dataclasses import dataclass, field

from ust.instrument import context as ctx
from ust.instrument.fields import EventDecl, FieldType

from . import layout
from .tsdl import MARKER_FORMAT_URI

TRACER_VERSION = (2, 13)


@dataclass
class StreamClass:
    id: int
    name: str  # the channel name
    context: tuple[str, ...] = ()  # context names, in trace order


@dataclass
class TraceInfo:
    uuid: bytes
    clock_offset_ns: int  # realtime - monotonic at session start
    trace_name: str = "ust"
    buffering: str = "uid"  # or "pid"
    buffering_id: int = 0
    env_extra: dict = field(default_factory=dict)
    creation_time: float = field(default_factory=time.time)
    clock_uuid: bytes = field(default_factory=lambda: host_clock_uuid())


def host_clock_uuid() -> bytes:
    """The uuid of this boot's monotonic clock, shared by every trace of the host.

    babeltrace2 places two traces on one time line only when their clock
    classes have the same name and uuid; LTTng takes the kernel's boot id for
    both its kernel and user-space traces, and so does ust (the ``ust`` and
    ``kernel`` traces of a session then interleave). A random uuid when the
    boot id cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return uuid_mod.UUID(f.read().strip()).bytes
    except (OSError, ValueError):
        return uuid_mod.uuid4().bytes


def clock_offset_now() -> int:
    """realtime - monotonic, in ns, measured as tightly as we can."""
    best = None
    for _ in range(5):
        m1 = time.monotonic_ns()
        r = time.time_ns()
        m2 = time.monotonic_ns()
        if best is None or m2 - m1 < best[0]:
            best = (m2 - m1, r - (m1 + m2) // 2)
    return best[1]


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _int_decl(size: int, signed: bool, base: int = 10, encoding: str = "none") -> str:
    return (
        f"integer {{ size = {size}; align = 8; signed = {int(signed)}; "
        f"encoding = {encoding}; base = {base}; }}"
    )


def _scalar_decl(t: FieldType) -> str:
    if t.kind == "int":
        return _int_decl(t.size, t.signed, t.base)
    if t.kind == "float":
        exp, mant = (8, 24) if t.size == 32 else (11, 53)
        return f"floating_point {{ exp_dig = {exp}; mant_dig = {mant}; align = 8; }}"
    if t.kind == "bool":
        return f'enum : {_int_decl(8, False)} {{ "false" = 0, "true" = 1 }}'
    if t.kind == "enum":
        items = []
        for label, lo, hi in t.mapping:
            items.append(f"{_quote(label)} = {lo}" if lo == hi else f"{_quote(label)} = {lo} ... {hi}")
        return f"enum : {_int_decl(t.size, t.signed, t.base)} {{ {', '.join(items)} }}"
    raise ValueError(f"not a scalar type: {t!r}")


def field_decl(name: str, t: FieldType) -> list[str]:
    """TSDL lines declaring one field (a sequence also declares its length)."""
    n = "_" + name  # babeltrace2 strips one leading underscore; avoids TSDL keywords
    if t.kind == "string":
        return [f"string {{ encoding = UTF8; }} {n};"]
    if t.kind == "bytes":
        return [
            f"{_int_decl(32, False)} _{n}_length;",
            f"{_int_decl(8, False, 16)} {n}[ _{n}_length ];",
        ]
    if t.kind == "array":
        return [f"{_scalar_decl(t.element)} {n}[{t.length}];"]
    if t.kind == "sequence":
        return [f"{_int_decl(32, False)} _{n}_length;", f"{_scalar_decl(t.element)} {n}[ _{n}_length ];"]
    return [f"{_scalar_decl(t)} {n};"]


def context_decl(name: str) -> list[str]:
    fname = ctx.field_name(name)
    if name == "procname":
        return [f"{_int_decl(8, True, 10, 'UTF8')} _procname[17];"]
    return field_decl(fname, ctx.field_type(name))


def _struct(lines: list[str], indent: str) -> str:
    return "".join(f"{indent}{line}\n" for line in lines)


def _iso(ts: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S+0000", time.gmtime(ts))


def env_text(env: dict) -> str:
    """The ``env`` block's lines (integers bare, everything else quoted)."""
    return "".join(
        f"\t{k} = {v};\n" if isinstance(v, int) else f"\t{k} = {_quote(str(v))};\n" for k, v in env.items()
    )


def preamble_text(trace: TraceInfo, env: dict) -> str:
    """Everything before the stream classes: the trace, its environment, the
    clock, the packet context and the event header. The ust and the kernel
    traces share it, so both have the same clock and the same packet layout."""
    u = str(uuid_mod.UUID(bytes=trace.uuid))
    out = [
        "/* CTF 1.8 */\n\n",
        layout.tsdl_typealiases(), "\n",
        "trace {\n\tmajor = 1;\n\tminor = 8;\n",
        f'\tuuid = "{u}";\n',
        "\tbyte_order = le;\n",
        "\tpacket.header := struct {\n", layout.tsdl_packet_header(), "\t};\n};\n\n",
        "env {\n", env_text(env), "};\n\n",
        "clock {\n\tname = \"monotonic\";\n",
        f'\tuuid = "{uuid_mod.UUID(bytes=trace.clock_uuid)}";\n',
        '\tdescription = "Monotonic Clock";\n\tfreq = 1000000000;\n',
        f"\toffset = {trace.clock_offset_ns};\n}};\n\n",
        layout.tsdl_clock_typealiases("monotonic"),
        layout.tsdl_packet_context(), "\n",
        layout.tsdl_event_header(), "\n",
    ]
    return "".join(out)


def metadata_text(trace: TraceInfo, streams: list[StreamClass], events: list[tuple[int, int, EventDecl]]) -> str:
    """The whole TSDL text. events: (event id, stream class id, declaration)."""
    env = {
        "domain": "ust",
        "tracer_name": "lttng-ust",  # what LTTng analyses (Trace Compass) key on
        "tracer_major": TRACER_VERSION[0],
        "tracer_minor": TRACER_VERSION[1],
        "tracer_buffering_scheme": trace.buffering,
        "tracer_buffering_id": trace.buffering_id,
        "architecture_bit_width": 64,
        "trace_name": trace.trace_name,
        "trace_creation_datetime": _iso(trace.creation_time),
        "hostname": socket.gethostname(),
        "ust_tracer": "ust-python",
    }
    env.update(trace.env_extra)
    out = [preamble_text(trace, env)]
    for s in streams:
        out.append(f"stream {{\n\tid = {s.id};\n\tevent.header := struct event_header_large;\n")
        out.append("\tpacket.context := struct packet_context;\n")
        if s.context:
            lines = [line for name in s.context for line in context_decl(name)]
            out.append("\tevent.context := struct {\n" + _struct(lines, "\t\t") + "\t};\n")
        out.append("};\n\n")
    for event_id, stream_id, decl in events:
        out.append(f"event {{\n\tname = {_quote(decl.name)};\n\tid = {event_id};\n\tstream_id = {stream_id};\n")
        out.append(f"\tloglevel = {decl.loglevel};\n")
        if decl.kind == "marker" and decl.extra.get("format"):
            # A marker's printf format (ust view --messages formats its events):
            # model.emf.uri is the one free-text event attribute babeltrace2 reads without a warning.
            out.append(f"\tmodel.emf.uri = {_quote(MARKER_FORMAT_URI + decl.extra['format'])};\n")
        lines = [line for f in decl.fields for line in field_decl(f.name, f.type)]
        if lines:
            out.append("\tfields := struct {\n" + _struct(lines, "\t\t") + "\t};\n")
        else:
            out.append("\tfields := struct { };\n")
        out.append("};\n\n")
    return "".join(out)
