"""Capturing a session's kernel events in this process: instance + trace + a drain engine.

``KernelCapture`` is the kernel domain without the daemons (tests,
benchmarks, a root script): it owns an ftrace instance (ust.kernel.tracefs)
and a kernel trace (ust.kernel.trace.KernelTrace: the consumer core's
``Trace`` whose per-CPU sources read ``trace_pipe_raw`` and convert each
page to a CTF packet in C), drained by the core's engine (ust.consumer.
drain.Drainer) into ``<output>/kernel``. The daemons split the same parts
between two processes: ust-sessiond makes the instance and passes its
readers to the session owner's ust-consumerd, which builds the same
KernelTrace (docs/kernel.md).

Lost events (docs/kernel.md, ust.kernel.source): the page's missed count in
overwrite mode, the stats' dropped events in discard mode, the remainder at
the end: the trace's discarded total equals the ring's own counters.
"""

from __future__ import annotations

import os
import threading

from . import formats as fmt
from .trace import CONTEXTS, DEFAULT_CONTEXTS, KernelTrace, new_trace_info
from .tracefs import DEFAULT_STATE_DIR, Instance, KernelTracingError, TaskTable

DEFAULT_BUFFER_KB = 4096  # per CPU: a second of a 2-CPU system-call flood (~40 MB/s) fits twice
BUFFER_PERCENT = 25  # a reader polling a CPU's trace_pipe_raw is woken when its ring is this full
READ_TIMER = 0.05  # s: the longest sleep of an engine draining a kernel trace (trickles: ftrace pages
# wake a poller only at BUFFER_PERCENT)


def keep_pages(instance: Instance) -> int:
    """How many pages a snapshot keeps per CPU: as many as the ring holds."""
    return max(1, instance.buffer_size_kb() * 1024 // instance.page_size())


class KernelCapture:
    """One session's kernel domain in this process: configure, start, stop, snapshot, destroy.

    ``snapshot``: a flight recorder (the instance in overwrite mode, nothing
    written while it runs; ``snapshot_to`` writes what the ring holds).
    ``poll_interval``: the engine's longest sleep."""

    def __init__(self, session: str, output: str, *, tracefs: str | None = None,
                 state_dir: str = DEFAULT_STATE_DIR, buffer_size_kb: int = DEFAULT_BUFFER_KB, overwrite: bool = False,
                 clock_offset_ns: int | None = None, clock_uuid: bytes | None = None,
                 contexts: tuple[str, ...] = DEFAULT_CONTEXTS, poll_interval: float = READ_TIMER, snapshot: bool = False):
        unknown = [c for c in contexts if c not in CONTEXTS]
        if unknown:  # before the instance: nothing to undo
            raise KernelTracingError(f"kernel context {unknown[0]!r} is not available from ftrace records")
        self.snapshot = snapshot
        self.instance = Instance.create(session, tracefs=tracefs, state_dir=state_dir,
                                        buffer_size_kb=buffer_size_kb, overwrite=overwrite or snapshot)
        self.session = session
        self.output = output
        self.contexts = contexts
        self.poll_interval = poll_interval
        if fmt.records_tgid(contexts, []):
            self.instance.set_record_tgid(True)
        self.instance.set_buffer_percent(BUFFER_PERCENT)
        self.sources: list = []  # one per CPU
        self.paths_unavailable = ""  # why the open calls' file names cannot be recorded here (ust.kernel.paths)
        self._drainer = None
        self._lock = threading.Lock()  # configuration against start/stop/snapshot
        self.running = False
        self.built = False
        try:  # read only when a context or a field asks a thread's process or name
            tasks = TaskTable(*TaskTable.open_files(self.instance.tracefs))
        except BaseException:
            self.instance.remove()
            raise
        # Its output and sources come at the first start (or snapshot): _build.
        self.trace: KernelTrace | None = KernelTrace(f"kernel:{session}", None,
                                                     new_trace_info(session, clock_offset_ns, clock_uuid),
                                                     contexts, tasks)
        if "prio" in contexts:  # the records the prio context is followed from (ust.kernel.prio)
            from .prio import tracked_events

            try:
                tracked = tracked_events(self.instance.events())
                self.trace.learn([], [(sy, self.instance.format_text(sy, n)) for sy, n in tracked])
                self.instance.set_enabled(tracked, True)
            except BaseException:
                self.trace.close()
                self.instance.remove()
                raise

    @property
    def plans(self) -> dict[int, tuple]:
        """The conversion plans of the events enabled so far (by ftrace event id)."""
        return self.trace.plans

    # -- configuration ------------------------------------------------------
    def enable(self, patterns: list[str], *, syscalls: bool = False) -> list[str]:
        """Enable events by name/glob (or system calls); returns their CTF names."""
        from .paths import probes_for

        events = self.instance.resolve(patterns, syscalls=syscalls)
        texts = [(system, self.instance.format_text(system, name)) for system, name in events]
        probes, self.paths_unavailable = probes_for(self.instance, events)  # open calls' file names
        with self._lock, self._paused():
            # the metadata describes them before they are recorded; the path probes are read, not written
            self.trace.learn(texts, [(sy, self.instance.format_text(sy, n)) for sy, n in probes])
            self.instance.set_enabled(probes, True)
            if fmt.records_tgid(self.contexts, texts):  # before they are recorded too
                self.instance.set_record_tgid(True)
            self.instance.set_enabled(events, True)
        return sorted({fmt.ctf_event_name(s, n) for s, n in events})

    def disable(self, patterns: list[str], *, syscalls: bool = False) -> list[str]:
        events = self.instance.resolve(patterns, syscalls=syscalls)
        self.instance.set_enabled(events, False)
        return sorted({fmt.ctf_event_name(s, n) for s, n in events})

    def _paused(self):
        import contextlib

        return self._drainer.paused() if self._drainer is not None else contextlib.nullcontext()

    def _build(self) -> None:
        """The trace, its output and its sources (the readers), once."""
        raw, stats, _ = self.instance.open_readers(False)
        try:
            if not self.snapshot:
                self.trace.output = self._output(self.output)
        except BaseException:
            for fd in raw + stats:
                os.close(fd)
            raise
        ch = self.trace.attach(raw, stats, page_size=self.instance.page_size(),
                               keep_pages=keep_pages(self.instance), snapshot=self.snapshot,
                               read_timer=self.poll_interval)
        self.sources = ch.sources
        self.built = True

    @staticmethod
    def _output(root: str):
        from ust.consumer.output import LocalTraceOutput

        return LocalTraceOutput(os.path.join(root, "kernel"), root, fresh=True)

    # -- life ---------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            if not self.built:
                self._build()
                if not self.snapshot:
                    self.trace.recording_starts()  # the statedump, before the instance starts
            self.instance.start()
            self.running = True
            if not self.snapshot:
                from ust.consumer.drain import Drainer

                self._drainer = Drainer(-1, name="ust-kernel-drain")
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
            if not self.built:
                self._build()
            self.trace.snapshot(self._output(root))

    def destroy(self) -> None:
        """Stop, close the readers and the trace, remove the instance (idempotent)."""
        try:
            self.stop()
        finally:
            if self.trace is not None:
                self.trace.close()  # the readers too: the kernel keeps an instance a file of is open
                self.trace = None
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

    def read_through(self) -> int:
        """A time (ust._ring._ring.clock_now's) before which every record was taken out of the
        rings (KernelTrace.read_through): a caller that had the rings fill up can wait for it to
        pass a time taken afterwards before it counts on their room again."""
        return self.trace.read_through() if self.trace is not None else 0

    def lost_by_ring(self) -> dict[int, int]:
        """Per CPU, what the ring's counters say was lost (for checks)."""
        return {src.cpu: src.ring_lost() for src in self.sources}


__all__ = ["KernelCapture", "KernelTracingError", "DEFAULT_BUFFER_KB"]
