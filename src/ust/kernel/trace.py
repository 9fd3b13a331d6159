"""The kernel trace of a session: ``<output>/kernel/`` (metadata + one stream per CPU).

The metadata is LTTng's kernel trace as far as tools look at it: the
environment of an lttng-modules trace (``domain = "kernel"``, ``tracer_name =
"lttng-modules"``, the kernel's release and version), the same clock class
as the session's ust trace (``monotonic``, the host's boot-id uuid, the
session's realtime offset: babeltrace2 then interleaves ``<output>/kernel``
and ``<output>/ust`` on one time line), the same packet context, the events
named as lttng-modules names them (ust.kernel.formats). Stream files are
``channel0_<cpu>``, as LTTng names a kernel session's default channel's.
The trace is a trace of the consumer core (``KernelTrace``), drained by its
engine like any other.
"""

from __future__ import annotations

import platform
import socket
import uuid as uuid_mod

from ust.consumer.trace import Trace
from ust.ctf import metadata as md

from . import formats as fmt

CHANNEL = "channel0"
LTTNG_MODULES_VERSION = (2, 13, 0)
# the event contexts, in the order of each event's context: tid is the record's
# common_pid; pid and procname come from ftrace's saved_tgids / saved_cmdlines
# (ust.kernel.tracefs.TaskTable)
CONTEXTS = ("tid", "pid", "procname")
REFUSED_CONTEXTS = {
    "prio": "an ftrace record carries no priority (sched_switch has prev_prio/next_prio as fields)",
}


def kernel_env(trace: md.TraceInfo) -> dict:
    uname = platform.uname()
    return {
        "hostname": socket.gethostname(),
        "domain": "kernel",
        "sysname": uname.system,
        "kernel_release": uname.release,
        "kernel_version": uname.version,
        "tracer_name": "lttng-modules",
        "tracer_major": LTTNG_MODULES_VERSION[0],
        "tracer_minor": LTTNG_MODULES_VERSION[1],
        "tracer_patchlevel": LTTNG_MODULES_VERSION[2],
        "trace_buffering_scheme": "global",
        "trace_name": trace.trace_name,
        "trace_creation_datetime": md._iso(trace.creation_time),
        "ust_tracer": "ust-python (ftrace)",
    }


def metadata_text(trace: md.TraceInfo, events: list[fmt.EventFormat], contexts: tuple[str, ...] = (),
                  statedump: bool = False) -> str:
    out = [md.preamble_text(trace, kernel_env(trace))]
    out.append("stream {\n\tid = 0;\n\tevent.header := struct event_header_large;\n"
               "\tpacket.context := struct packet_context;\n")
    int32 = "integer { size = 32; align = 8; signed = 1; encoding = none; base = 10; }"
    decls = {"tid": f"{int32} _tid;", "pid": f"{int32} _pid;",
             "procname": "integer { size = 8; align = 8; signed = 1; encoding = UTF8; base = 10; } _procname[16];"}
    fields = [decls[c] for c in CONTEXTS if c in contexts]
    if fields:
        out.append("\tevent.context := struct {\n" + "".join(f"\t\t{f}\n" for f in fields) + "\t};\n")
    out.append("};\n\n")
    for ev in sorted(events, key=lambda e: e.id):
        out.append(f"event {{\n\tname = {md._quote(ev.ctf_name)};\n\tid = {ev.id};\n\tstream_id = 0;\n")
        lines = [line for f in ev.fields for line in fmt.field_lines(ev, f)]
        body = "".join(f"\t\t{line}\n" for line in lines)
        out.append("\tfields := struct {\n" + body + "\t};\n" if lines else "\tfields := struct { };\n")
        out.append("};\n\n")
    if statedump:
        from .statedump import metadata_text as statedump_metadata

        out.append(statedump_metadata())
    return "".join(out)


class KernelTrace(Trace):
    """The kernel trace as the consumer core's drain engine sees it: one
    channel whose per-CPU sources are ftrace instances' CPUs
    (ust.kernel.source.FtraceSource), its metadata generated from the
    enabled events' formats instead of an event table."""

    def __init__(self, key: str, output, info: md.TraceInfo, contexts: tuple[str, ...] = CONTEXTS):
        super().__init__(key, output, info)
        self.contexts = tuple(c for c in CONTEXTS if c in contexts)  # the converter's order
        self.formats: dict[int, fmt.EventFormat] = {}
        self.statedump = False  # the lttng_statedump_* events are declared (ust.kernel.statedump)

    def metadata_text(self) -> str:
        return metadata_text(self.info, list(self.formats.values()), self.contexts, self.statedump)


def new_trace_info(name: str, clock_offset_ns: int | None = None, clock_uuid: bytes | None = None) -> md.TraceInfo:
    """A kernel trace's identity: its own uuid, the session's clock (offset and uuid)."""
    return md.TraceInfo(uuid=uuid_mod.uuid4().bytes,
                        clock_offset_ns=md.clock_offset_now() if clock_offset_ns is None else clock_offset_ns,
                        trace_name=name, buffering="global",
                        **({"clock_uuid": clock_uuid} if clock_uuid else {}))
