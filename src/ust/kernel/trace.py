"""The kernel trace of a session: ``<output>/kernel/`` (metadata + one stream per CPU).

The metadata is LTTng's kernel trace as far as tools look at it: the
environment of an lttng-modules trace (``domain = "kernel"``, ``tracer_name =
"lttng-modules"``, the kernel's release and version), the same clock class
as the session's ust trace (``monotonic``, the host's boot-id uuid, the
session's realtime offset: babeltrace2 then interleaves ``<output>/kernel``
and ``<output>/ust`` on one time line), the same packet context, the events
named as lttng-modules names them (ust.kernel.formats). Stream files are
``channel0_<cpu>``, as LTTng names a kernel session's default channel's.
"""

from __future__ import annotations

import os
import platform
import socket
import uuid as uuid_mod

from ust.ctf import metadata as md

from . import formats as fmt
from . import pages
from .owner_files import LocalFiles

CHANNEL = "channel0"
LTTNG_MODULES_VERSION = (2, 13, 0)
CONTEXTS = ("tid",)  # what an ftrace record carries for every event (common_pid)


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


def metadata_text(trace: md.TraceInfo, events: list[fmt.EventFormat], contexts: tuple[str, ...] = ()) -> str:
    out = [md.preamble_text(trace, kernel_env(trace))]
    out.append("stream {\n\tid = 0;\n\tevent.header := struct event_header_large;\n"
               "\tpacket.context := struct packet_context;\n")
    if "tid" in contexts:
        out.append("\tevent.context := struct {\n\t\tinteger { size = 32; align = 8; signed = 1; "
                   "encoding = none; base = 10; } _tid;\n\t};\n")
    out.append("};\n\n")
    for ev in sorted(events, key=lambda e: e.id):
        out.append(f"event {{\n\tname = {md._quote(ev.ctf_name)};\n\tid = {ev.id};\n\tstream_id = 0;\n")
        lines = [line for f in ev.fields for line in fmt.field_lines(ev, f)]
        body = "".join(f"\t\t{line}\n" for line in lines)
        out.append("\tfields := struct {\n" + body + "\t};\n" if lines else "\tfields := struct { };\n")
        out.append("};\n\n")
    return "".join(out)


class StreamFile:
    """One CPU's stream file: whole packets appended."""

    def __init__(self, fd: int, cpu: int):
        self.cpu = cpu
        self.fd = fd

    def write(self, packet) -> None:
        view = memoryview(packet)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class KernelTraceWriter:
    """``<output>/kernel``: its metadata and per-CPU stream files, created by
    ``files`` (ust.kernel.owner_files: the caller's own, or another user's)."""

    def __init__(self, output: str, trace: md.TraceInfo, cpus: list[int], contexts: tuple[str, ...] = CONTEXTS,
                 files=None):
        self.directory = os.path.join(output, "kernel")
        self.files = files or LocalFiles()
        self.trace = trace
        self.contexts = tuple(c for c in contexts if c in CONTEXTS)
        fds = self.files.open_streams(self.directory, output, [f"{CHANNEL}_{cpu}" for cpu in cpus])
        self.streams = {cpu: StreamFile(fd, cpu) for cpu, fd in zip(cpus, fds)}

    def write_metadata(self, events: list[fmt.EventFormat]) -> None:
        self.files.write_metadata(os.path.join(self.directory, "metadata"),
                                  metadata_text(self.trace, events, self.contexts))

    def close(self) -> None:
        for s in self.streams.values():
            s.close()


def new_trace_info(name: str, clock_offset_ns: int | None = None, clock_uuid: bytes | None = None) -> md.TraceInfo:
    """A kernel trace's identity: its own uuid, the session's clock (offset and uuid)."""
    return md.TraceInfo(uuid=uuid_mod.uuid4().bytes,
                        clock_offset_ns=md.clock_offset_now() if clock_offset_ns is None else clock_offset_ns,
                        trace_name=name, buffering="global",
                        **({"clock_uuid": clock_uuid} if clock_uuid else {}))
