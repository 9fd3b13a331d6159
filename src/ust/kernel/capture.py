"""Capturing a session's kernel events: instance + sources + the consumer core.

``KernelCapture`` owns the session's ftrace instance (ust.kernel.tracefs)
and its kernel trace, a trace of the consumer core (ust.kernel.trace.
KernelTrace) whose channel's per-CPU sources read ``trace_pipe_raw``
(ust.kernel.source.FtraceSource: whole pages, converted to CTF packets in C:
no event is parsed in Python). The core's drain engine (ust.consumer.drain.
Drainer) moves the packets to the trace's output — local files, or, for
another user's session, files made with that user's credentials
(ust.kernel.owner_files) — exactly as it does for ring buffers; its
``final_drain`` writes the rest at stop, its ``snapshot`` a flight
recorder's contents. There is no other drain loop.

Lost events (docs/kernel.md, ust.kernel.source): the page's missed count in
overwrite mode, the stats' dropped events in discard mode, the remainder at
the end: the trace's discarded total equals the ring's own counters.
"""

from __future__ import annotations

import os
import threading
import time

from . import formats as fmt
from . import pages, statedump
from .source import FtraceSource
from .trace import CHANNEL, CONTEXTS, KernelTrace, new_trace_info
from .tracefs import DEFAULT_STATE_DIR, Instance, KernelTracingError, TaskTable

DEFAULT_BUFFER_KB = 4096  # per CPU: a second of a 2-CPU system-call flood (~40 MB/s) fits twice


class KernelCapture:
    """One session's kernel domain: configure, start, stop, snapshot, destroy.

    ``snapshot``: a flight recorder (the instance in overwrite mode, nothing
    written while it runs; ``snapshot_to`` writes what the ring holds).
    ``owner_uid``: the user whose trace it is, when not the caller (root
    tracing for a member of the tracing group): its files are made with that
    user's credentials. ``poll_interval``: the engine's longest sleep (ftrace
    pages do not wake it)."""

    def __init__(self, session: str, output: str, *, tracefs: str | None = None,
                 state_dir: str = DEFAULT_STATE_DIR, buffer_size_kb: int = DEFAULT_BUFFER_KB, overwrite: bool = False,
                 clock_offset_ns: int | None = None, clock_uuid: bytes | None = None,
                 contexts: tuple[str, ...] = CONTEXTS, poll_interval: float = 0.05, owner_uid: int | None = None,
                 snapshot: bool = False):
        self.owner_uid = owner_uid if owner_uid is not None and owner_uid != os.geteuid() else None
        if self.owner_uid is not None:
            import pwd

            try:
                pwd.getpwuid(self.owner_uid)
            except KeyError:  # before the instance: a bad uid leaves nothing behind
                raise KernelTracingError(f"uid {owner_uid} has no user entry: cannot write its kernel trace") \
                    from None
        unknown = [c for c in contexts if c not in CONTEXTS]
        if unknown:  # before the instance: nothing to undo
            raise KernelTracingError(f"kernel context {unknown[0]!r} is not available from ftrace records")
        self.snapshot = snapshot
        self.instance = Instance.create(session, tracefs=tracefs, state_dir=state_dir,
                                        buffer_size_kb=buffer_size_kb, overwrite=overwrite or snapshot)
        self.session = session
        self.output = output
        self.trace_info = new_trace_info(session, clock_offset_ns, clock_uuid)
        self.contexts = contexts
        self.tasks = None  # the pid/procname contexts' tid -> (tgid, comm)
        if "pid" in contexts or "procname" in contexts:
            self._use_task_table()
        self.poll_interval = poll_interval
        self.formats: dict[int, fmt.EventFormat] = {}
        self.plans: dict[int, tuple] = {}
        self._converter_class = pages.converter_class()
        self._converter = self._new_converter()
        self.trace: KernelTrace | None = None
        self.sources: list[FtraceSource] = []  # one per CPU
        self._drainer = None
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # the engine's (nobody writes it)
        self._lock = threading.Lock()  # configuration against start/stop/snapshot
        self.running = False

    # -- configuration ------------------------------------------------------
    def enable(self, patterns: list[str], *, syscalls: bool = False) -> list[str]:
        """Enable events by name/glob (or system calls); returns their CTF names."""
        events = self.instance.resolve(patterns, syscalls=syscalls)
        with self._lock, self._paused():
            self._learn(events)
            self.instance.set_enabled(events, True)
        return sorted({fmt.ctf_event_name(s, n) for s, n in events})

    def disable(self, patterns: list[str], *, syscalls: bool = False) -> list[str]:
        events = self.instance.resolve(patterns, syscalls=syscalls)
        self.instance.set_enabled(events, False)
        return sorted({fmt.ctf_event_name(s, n) for s, n in events})

    def _learn(self, events: list[tuple[str, str]]) -> None:
        """Parse the events' formats: their plans (conversion) and their metadata."""
        for system, name in events:
            ev = fmt.parse_format(self.instance.format_text(system, name), system)
            self.formats[ev.id] = ev
            self.plans[ev.id] = fmt.plan(ev)
            if self.tasks is None and any(op[0] in (fmt.OP_TGID, fmt.OP_CHILD_TGID) for op in self.plans[ev.id]):
                self._use_task_table()  # sched_process_fork's parent_pid / child_pid
        self._converter = self._new_converter()
        if self.trace is not None:
            self.trace.formats = dict(self.formats)
            self.trace.write_metadata(force=True)  # before any page of the new events is read

    def _use_task_table(self) -> None:
        """Thread -> (process, name) lookups from ftrace's tables (ust.kernel.tracefs.TaskTable),
        for the pid/procname contexts and the process id fields."""
        self.tasks = TaskTable(self.instance.tracefs)
        self.instance.set_record_tgid(True)
        for src in getattr(self, "sources", ()):  # enabled after the start: the sources exist
            src.on_idle = self.tasks.forget

    def _new_converter(self):
        c = self.contexts
        if self.tasks is None:
            return self._converter_class(self.plans, "tid" in c)
        return self._converter_class(self.plans, "tid" in c, "pid" in c, "procname" in c,
                                     self.tasks.tasks, self.tasks.task_of)

    def _paused(self):
        import contextlib

        return self._drainer.paused() if self._drainer is not None else contextlib.nullcontext()

    def _build(self) -> None:
        """The trace, its output and its sources (the readers), once."""
        from ust.consumer.trace import ChannelSpec

        cpus = self.instance.cpus()
        if cpus != list(range(len(cpus))):
            raise KernelTracingError(f"ftrace CPUs {cpus} are not numbered 0..{len(cpus) - 1}")
        output = None
        if not self.snapshot:
            output = self._output(self.output, len(cpus))
        trace = KernelTrace(f"kernel:{self.session}", output, self.trace_info, self.contexts)
        trace.formats = dict(self.formats)
        trace.statedump = not self.snapshot
        self.sources = [FtraceSource(self.instance, c, self.instance.open_raw(c), self.trace_info.uuid,
                                     lambda: self._converter, self.instance.page_size()) for c in cpus]
        keep = max(1, self.instance.buffer_size_kb() * 1024 // self.instance.page_size())
        for src in self.sources:
            src.overwrite = self.snapshot
            src.keep_pages = keep  # a snapshot keeps what the ring holds, for the next one
            if self.tasks is not None:
                src.on_idle = self.tasks.forget  # after each drain pass: thread ids get reused
        page = self.instance.page_size()
        spec = ChannelSpec(CHANNEL, 0, page, max(2, len(self.sources)), overwrite=self.snapshot,
                           read_timer=self.poll_interval, drain_live=not self.snapshot)
        trace.add_channel(spec, self._wakeup, sources=self.sources)
        self.trace = trace

    def _output(self, root: str, cpus: int):
        """``<root>/kernel``: the caller's own files, or the owner's."""
        directory = os.path.join(root, "kernel")
        if self.owner_uid is None:
            from ust.consumer.output import LocalTraceOutput

            return LocalTraceOutput(directory, root, fresh=True)
        from .owner_files import OwnerTraceOutput

        return OwnerTraceOutput(self.owner_uid, directory, root, CHANNEL, cpus)

    # -- life ---------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            if self.trace is None:
                self._build()
            now = time.monotonic_ns()  # the instance's clock (mono): nothing recorded is older
            if self.trace.statedump and not self.sources[0].started_ns:
                # what runs already, before the first event (lttng-modules' statedump at session start)
                events, count = statedump.events(now, self.trace.contexts)
                self.sources[0].prelude = (events, count, now)
            for src in self.sources:
                src.started_ns = src.started_ns or now
            self.instance.start()
            self.running = True
            if not self.snapshot:
                from ust.consumer.drain import Drainer

                self._drainer = Drainer(self._wakeup, name="ust-kernel-drain")
                self._drainer.traces[self.trace.key] = self.trace
                self._drainer.start()

    def stop(self) -> None:
        """Stop recording and write every event recorded so far (and the losses)."""
        with self._lock:
            if not self.running:
                return
            self.instance.stop()
            if self._drainer is not None:
                self._drainer.stop()
                self._drainer = None
            if not self.snapshot:
                self.trace.write_metadata(force=True)
                self.trace.flush(sync=True)
            self.running = False

    def snapshot_to(self, root: str) -> None:
        """Write what the ring holds now into ``<root>/kernel`` (a flight
        recorder's snapshot; the next snapshot has these events again, unless
        the ring has been overwritten since: ust.kernel.source)."""
        with self._lock:
            if self.trace is None:
                self._build()
            self.trace.snapshot(self._output(root, len(self.sources)))

    def destroy(self) -> None:
        """Stop, close the readers and the trace, remove the instance (idempotent)."""
        try:
            self.stop()
        finally:
            if self.trace is not None:
                self.trace.close()
            for src in self.sources:
                if src.fd >= 0:
                    os.close(src.fd)
                    src.fd = -1
            if self._wakeup >= 0:
                os.close(self._wakeup)
                self._wakeup = -1
            self.instance.remove()

    # -- what happened ------------------------------------------------------------
    @property
    def skipped(self) -> int:
        """Records of a type not declared in the metadata (none expected)."""
        return sum(src.skipped for src in self.sources)

    def discarded(self) -> dict[int, int]:
        """Per CPU, the lost events the trace says (over every output)."""
        return {src.cpu: src.charged for src in self.sources}

    def events(self) -> dict[int, int]:
        """Per CPU, the events written."""
        return {src.cpu: src.events for src in self.sources}

    def lost_by_ring(self) -> dict[int, int]:
        """Per CPU, what the ring's counters say was lost (for checks)."""
        return {src.cpu: src.ring_lost() for src in self.sources}


__all__ = ["KernelCapture", "KernelTracingError", "DEFAULT_BUFFER_KB"]
