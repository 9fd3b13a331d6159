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

import os
import platform
import socket
import uuid as uuid_mod

from ust.consumer.trace import Trace
from ust.ctf import metadata as md

from . import formats as fmt
from . import pages, statedump

CHANNEL = "channel0"
LTTNG_MODULES_VERSION = (2, 13, 0)
# the event contexts, in the order of each event's context: tid is the record's
# common_pid; pid and procname come from ftrace's saved_tgids / saved_cmdlines
# (ust.kernel.tracefs.TaskTable)
CONTEXTS = ("tid", "pid", "procname", "prio")  # prio: followed from scheduler records (ust.kernel.prio)
DEFAULT_CONTEXTS = ("tid", "pid", "procname")  # KernelCapture's (prio costs records and a hold-back)
REFUSED_CONTEXTS: dict[str, str] = {}  # context -> why ftrace cannot give it (said in the error)


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
                  with_statedump: bool = False) -> str:
    out = [md.preamble_text(trace, kernel_env(trace))]
    out.append("stream {\n\tid = 0;\n\tevent.header := struct event_header_large;\n"
               "\tpacket.context := struct packet_context;\n")
    int32 = "integer { size = 32; align = 8; signed = 1; encoding = none; base = 10; }"
    decls = {"tid": f"{int32} _tid;", "pid": f"{int32} _pid;",
             "procname": "integer { size = 8; align = 8; signed = 1; encoding = UTF8; base = 10; } _procname[16];",
             "prio": f"{int32} _prio;"}  # -2147483648: unknown (docs/kernel.md)
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
    if with_statedump:
        out.append(statedump.metadata_text())
    return "".join(out)


class KernelTrace(Trace):
    """The kernel trace as the consumer core's drain engine sees it: one
    channel whose per-CPU sources are an ftrace instance's CPUs
    (ust.kernel.source.FtraceSource), its metadata generated from the
    enabled events' formats instead of an event table.

    The one place a kernel trace is put together, wherever it is drained:
    ust-consumerd (given the instance's descriptors by the session daemon)
    and the standalone ``KernelCapture`` both call ``learn`` with the
    events' format files, ``attach`` with the readers and, for a trace
    written as it is recorded, ``recording_starts`` before the instance
    first starts. ``tasks``: the TaskTable (ftrace's saved_tgids and
    saved_cmdlines) of the pid/procname contexts and of the fields that are a
    thread's process (sched_process_fork's: formats.uses_task_table); it is
    closed with the trace."""

    def __init__(self, key: str, output, info: md.TraceInfo, contexts: tuple[str, ...] = ("tid",), tasks=None):
        super().__init__(key, output, info)
        self.contexts = tuple(c for c in CONTEXTS if c in contexts)  # the converter's order
        self.formats: dict[int, fmt.EventFormat] = {}
        self.plans: dict[int, tuple] = {}
        self.tracked: dict[int, fmt.EventFormat] = {}  # recorded for the prio context or paths only (not written)
        self.tasks = tasks
        # the Sweep reading every CPU before converting any (ust.kernel.sweep), once attached, when the prio
        # context or the open calls' file names (path probes) need it
        self.tracker = None
        self._converter_class = pages.converter_class()
        self.converter = self._new_converter()
        self.statedump = False  # the lttng_statedump_* events are declared (a trace written as recorded)
        self.output_began = 0  # the latest time a stream of the current output began (0: not known)

    def metadata_text(self) -> str:
        return metadata_text(self.info, list(self.formats.values()), self.contexts, self.statedump)

    def learn(self, formats: list[tuple[str, str]], tracked: list[tuple[str, str]] = ()) -> list[fmt.EventFormat]:
        """Take the ``(system, format file text)`` of events about to be enabled: their
        conversion plans and their metadata, rewritten now (before any of their records is
        read); ``tracked``: those enabled for the prio context only (read, not written).
        Raises ValueError for a format that cannot be parsed."""
        learned = [fmt.parse_format(text, system) for system, text in formats]
        if self.tasks is None:  # checked before anything changes
            for ev in learned:
                if fmt.uses_task_table(fmt.plan(ev)):
                    raise ValueError(f"kernel event {ev.system}:{ev.name} needs ftrace's task tables "
                                     "(saved_tgids, saved_cmdlines), which this trace was not given")
        for ev in learned:
            self.formats[ev.id] = ev
            self.plans[ev.id] = fmt.plan(ev)
        for system, text in tracked:
            ev = fmt.parse_format(text, system)
            self.tracked[ev.id] = ev
        self.converter = self._new_converter()
        if self.channels:
            self._ensure_sweep()
            self.write_metadata(force=True)
        return learned

    def _path_probes(self) -> tuple:
        return tuple(p for ev in self.tracked.values() if (p := fmt.path_probe(ev)) is not None)

    def _ensure_sweep(self) -> None:
        """Read the CPUs together (ust.kernel.sweep) when the prio context or path probes need it:
        from the attach, or from when path probes are first learned (the engine paused)."""
        sources = self._sources()
        prio = "prio" in self.contexts
        probes = bool(self._path_probes())
        if not sources or not (prio or probes):
            return
        from .sweep import Sweep

        Pairing = pages.pairing_class()  # (goes with the Converter: both C when built)

        if self.tracker is None:
            self.tracker = Sweep(prio=prio, pairing=Pairing() if probes else None)
            self.tracker.attach(sources)
            for src in sources:
                src.tracker = self.tracker
        elif probes and self.tracker.pairing is None:
            self.tracker.pairing = Pairing()

    def _new_converter(self):
        c = self.contexts
        kw = {"paths": self._path_probes()}
        if "prio" in c:
            from .prio import converter_config

            kw["prio"] = converter_config([*self.tracked.values(), *self.formats.values()])
        if self.tasks is None:
            return self._converter_class(self.plans, "tid" in c, **kw)
        return self._converter_class(self.plans, "tid" in c, "pid" in c, "procname" in c,
                                     self.tasks.tasks, self.tasks.task_of, **kw)

    def attach(self, raw_fds: list[int], stats_fds: list[int], *, page_size: int, keep_pages: int,
               snapshot: bool, read_timer: float, live_timer: float = 0.0):
        """The channel: one source per CPU over its ``trace_pipe_raw`` and ``stats``
        descriptors (which the sources own from now on: closed with the trace)."""
        from ust.consumer.trace import ChannelSpec

        from .source import FtraceSource

        sources = [FtraceSource(cpu, raw, stats, self.info.uuid, lambda: self.converter, page_size)
                   for cpu, (raw, stats) in enumerate(zip(raw_fds, stats_fds))]
        self.statedump = not snapshot  # declared before any packet (a restarted consumer's files have it)
        for src in sources:
            src.overwrite = snapshot
            src.keep_pages = keep_pages  # a snapshot keeps what the ring holds, for the next one
            if self.tasks is not None:
                src.on_idle = self.tasks.forget  # after each drain pass: thread ids get reused
                src.on_page = self.tasks.page_read  # its threads may be newer than the tables read
        spec = ChannelSpec(CHANNEL, 0, page_size, max(2, len(sources)), overwrite=snapshot,
                           read_timer=read_timer, live_timer=live_timer, drain_live=not snapshot)
        try:
            ch = self.add_channel(spec, -1, sources=sources)
        except BaseException:
            for src in sources:
                src.close()
            raise
        self._ensure_sweep()
        self._open_record_logs(fresh=False)  # (a restarted consumer reads its predecessor's: resume)
        return ch

    def _open_record_logs(self, fresh: bool) -> None:
        """Each local stream file's record log (``.<stream>.ring`` beside it, as the owner, no link
        followed: ust.kernel.source), for a replaced consumer to state exactly what was lost."""
        from ust.consumer.output import StreamFile

        for ch in self.channels.values():
            for src, out in ch.streams():
                if src.record_log >= 0:
                    os.close(src.record_log)
                    src.record_log = -1
                if isinstance(out, StreamFile):
                    try:
                        src.record_log = os.open(os.path.join(out.directory, f".{out.name}.ring"),
                                                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                                                 | (os.O_TRUNC if fresh else 0), 0o600)
                    except OSError:
                        pass  # (then a replaced consumer cannot state that loss: as before)

    def recording_starts(self) -> None:
        """Recording is about to start for the first time (call it after ``attach``, before the
        instance starts, for a trace written as it is recorded; not for a snapshot session's,
        nor a restarted consumer's): every stream's first packet begins now, as LTTng's streams
        do (readers that keep only the time every stream covers, such as lttng-analyses, then
        keep the first events; and a live viewer gets it before any beacon of the stream), and
        CPU 0's holds the statedump (ust.kernel.statedump: the processes and disks as /proc
        and /sys show them to this process, as lttng-modules writes at a session's start)."""
        from ust._ring._ring import clock_now

        sources = self._sources()
        now = clock_now()  # the instance's clock (mono): nothing it records is older
        events, count = statedump.events(now, self.contexts)
        self.output_began = now
        for src in sources:
            src.prelude = (events, count, now) if src is sources[0] else (b"", 0, now)

    def _sources(self) -> list:
        return [src for ch in self.channels.values() for src in ch.sources]

    def read_through(self) -> int:
        """A time (the trace clock) before which every record of every CPU has been taken out of the
        rings by the drain (FtraceSource.read_through): what the rings held then no longer takes their
        room (in discard mode, what comes next is dropped only if it fills them again). 0 before each
        CPU's first drain pass
        (and always for a snapshot session's trace, whose rings are read at snapshots only)."""
        return min((src.read_through for src in self._sources()), default=0)

    def restate(self, began: int, *, open_streams: bool) -> None:
        """The statedump again, as lttng-modules writes it at each new chunk, after ``clear``
        and at ``regenerate statedump``: every chunk of a kernel trace is self-contained (an
        analysis of it alone knows the processes running before it). Call it with the engine
        paused, after a drain pass begun after ``began`` (the switch's, or ``regenerate``'s).

        The statedump (read from /proc now) goes next in the stream whose next packet can be
        the latest (FtraceSource.safe_time: no stream goes back in time, none has a record
        still to come that is older); ``open_streams`` (a new output): every other stream
        opens with an empty packet at its own such time, so the chunk's streams all begin
        about when it does (as at recording_starts). Not for a snapshot session's trace."""
        if not self.statedump:
            return
        sources = self._sources()
        if not sources:
            return
        at = [src.safe_time(began) for src in sources]
        top = max(range(len(sources)), key=at.__getitem__)
        events, count = statedump.events(at[top], self.contexts)
        if open_streams:
            self.output_began = at[top]
        for i, src in enumerate(sources):
            if i == top:
                src.prelude = (events, count, at[i])
            elif open_streams:
                src.prelude = (b"", 0, at[i])

    def switch_output(self, output) -> int:
        """As ``Trace.switch_output`` (a rotation's new chunk, ``clear``'s fresh files); the new
        output of a trace written as recorded begins with a statedump (``restate``)."""
        from ust._ring._ring import clock_now

        began = clock_now()
        if self.statedump:  # the old output's streams end together (KernelSource.closing)
            for src in self._sources():
                src.closing = (began, self.output_began)
        n = super().switch_output(output)
        self._open_record_logs(fresh=True)
        self.restate(began, open_streams=True)
        return n

    def regenerate_statedump(self) -> int:
        """``ust regenerate statedump``: what every stream holds now is written, then the
        statedump goes next (``restate``). Returns the packets written. Engine paused."""
        from ust._ring._ring import clock_now
        from ust.consumer.drain import drain_stream

        if not self.statedump or self.output is None:
            return 0
        began = clock_now()
        n = sum(drain_stream(src, out) for ch in self.channels.values() for src, out in ch.streams())
        self.restate(began, open_streams=False)
        return n

    def snapshot(self, output) -> int:
        """As ``Trace.snapshot``; with the prio context or path probes every CPU's ring is read
        first, so what each CPU records is applied to the others' events (ust.kernel.sweep)."""
        if self.tracker is not None:
            from ust._ring._ring import clock_now

            sources = [src for ch in self.channels.values() for src in ch.sources]
            read_at = {}
            for src in sources:
                src._keep_ring_pages()
                read_at[src.cpu] = clock_now()
            plans = self.tracker.snapshot_plan({src.cpu: [(p, lost) for p, lost in src._kept_pages]
                                                for src in sources}, read_at, self.converter)
            for src in sources:
                src.snapshot_conversion = plans[src.cpu]
        return super().snapshot(output)

    def close(self) -> None:
        try:
            super().close()
        finally:
            for ch in self.channels.values():
                for src in ch.sources:
                    src.close()
            if self.tasks is not None:
                self.tasks.close()


def new_trace_info(name: str, clock_offset_ns: int | None = None, clock_uuid: bytes | None = None,
                   uuid: bytes | None = None) -> md.TraceInfo:
    """A kernel trace's identity: its own uuid (new, unless given), the session's clock (offset and uuid)."""
    return md.TraceInfo(uuid=uuid or uuid_mod.uuid4().bytes,
                        clock_offset_ns=md.clock_offset_now() if clock_offset_ns is None else clock_offset_ns,
                        trace_name=name, buffering="global",
                        **({"clock_uuid": clock_uuid} if clock_uuid else {}))
