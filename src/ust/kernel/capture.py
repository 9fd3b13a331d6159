"""Capturing a session's kernel events: instance + readers + the kernel trace.

``KernelCapture`` owns the session's ftrace instance (ust.kernel.tracefs) and
its kernel trace (ust.kernel.trace). While tracing, a drain thread reads each
CPU's ``trace_pipe_raw`` (non-blocking reads of whole pages, consumed as
read) and turns every page into one CTF packet (ust.kernel.pages, in C when
the extension has it): no event is parsed in Python on this path.

Lost events are counted exactly and placed where they happened as far as the
kernel says: in overwrite mode the page itself says how many events were
overwritten before it (RB_MISSED_STORED); in discard mode the kernel does not
mark pages, it counts ``dropped events`` in ``per_cpu/cpuN/stats``, which the
drain reads after each batch of pages and charges to an empty packet after
them (the drops are newer than what the full ring held). At
stop, whatever the stats count that the packets do not (a page whose missed
count had no room to be stored) goes into one last empty packet, so the
trace's discarded total equals the ring's own counters.
"""

from __future__ import annotations

import errno
import os
import threading

from . import formats as fmt
from . import pages
from .source import FtraceSource
from .trace import CONTEXTS, KernelTraceWriter, new_trace_info
from .tracefs import DEFAULT_STATE_DIR, Instance, KernelTracingError

DEFAULT_BUFFER_KB = 4096  # per CPU: a second of a 2-CPU system-call flood (~40 MB/s) fits twice


class KernelCapture:
    """One session's kernel domain: configure, start, stop, destroy."""

    def __init__(self, session: str, output: str, *, tracefs: str | None = None,
                 state_dir: str = DEFAULT_STATE_DIR, buffer_size_kb: int = DEFAULT_BUFFER_KB, overwrite: bool = False,
                 clock_offset_ns: int | None = None, clock_uuid: bytes | None = None,
                 contexts: tuple[str, ...] = CONTEXTS, poll_interval: float = 0.05, owner_uid: int | None = None):
        """``owner_uid``: the user whose trace it is, when not the caller (root
        tracing for a member of the tracing group): its files are created with
        that user's credentials (ust.kernel.owner_files)."""
        self.files = None
        if owner_uid is not None and owner_uid != os.geteuid():
            from .owner_files import OwnerFiles

            self.files = OwnerFiles(owner_uid)  # before the instance: a bad uid leaves nothing behind
        self.instance = Instance.create(session, tracefs=tracefs, state_dir=state_dir,
                                        buffer_size_kb=buffer_size_kb, overwrite=overwrite)
        self.output = output
        self.trace_info = new_trace_info(session, clock_offset_ns, clock_uuid)
        self.contexts = contexts
        self.poll_interval = poll_interval
        self.writer: KernelTraceWriter | None = None
        self.formats: dict[int, fmt.EventFormat] = {}
        self.plans: dict[int, tuple] = {}
        self.sources: list[FtraceSource] = []  # one per CPU
        self._converter_class = pages.converter_class()
        self._converter = self._converter_class({}, "tid" in contexts)
        self._page_size = self.instance.page_size()
        self._lock = threading.Lock()  # one drainer at a time (thread, stop, flush)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.running = False

    # -- configuration ------------------------------------------------------
    def enable(self, patterns: list[str], *, syscalls: bool = False) -> list[str]:
        """Enable events by name/glob (or system calls); returns their CTF names."""
        events = self.instance.resolve(patterns, syscalls=syscalls)
        with self._lock:
            self._learn(events)
            self.instance.set_enabled(events, True)
            self._write_metadata()
        return sorted({fmt.ctf_event_name(s, n) for s, n in events})

    def disable(self, patterns: list[str], *, syscalls: bool = False) -> list[str]:
        events = self.instance.resolve(patterns, syscalls=syscalls)
        self.instance.set_enabled(events, False)
        return sorted({fmt.ctf_event_name(s, n) for s, n in events})

    def _learn(self, events: list[tuple[str, str]]) -> None:
        for system, name in events:
            ev = fmt.parse_format(self.instance.format_text(system, name), system)
            self.formats[ev.id] = ev
            self.plans[ev.id] = fmt.plan(ev)
        self._converter = self._converter_class(self.plans, "tid" in self.contexts)

    def _write_metadata(self) -> None:
        if self.writer is not None:
            self.writer.write_metadata(list(self.formats.values()))

    # -- life ---------------------------------------------------------------
    def _open(self, output: str) -> None:
        """Write from now on into ``<output>/kernel`` (opening the readers the first time)."""
        if self.writer is not None:
            self.writer.close()
        cpus = self.instance.cpus()
        self.writer = KernelTraceWriter(output, self.trace_info, cpus, self.contexts, self.files)
        if not self.sources:
            self.sources = [FtraceSource(self.instance, c, self.instance.open_raw(c), self.trace_info.uuid,
                                         lambda: self._converter, self._page_size) for c in cpus]
        for src in self.sources:
            src.start_output()

    def start(self) -> None:
        if self.running:
            return
        with self._lock:
            if self.writer is None:
                self._open(self.output)
            self._write_metadata()
            self.instance.start()
            self.running = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._drain_loop, name="ust-kernel-drain", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop recording and write every event recorded so far (and the losses)."""
        if not self.running:
            return
        self.instance.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._drain_all(final=True)
            self._write_metadata()
            self.running = False

    def snapshot_to(self, output: str) -> None:
        """Write what the ring holds now into ``<output>/kernel`` (a flight
        recorder's snapshot; what is written is consumed from the ring)."""
        with self._lock:
            self._open(output)
            self._drain_all(final=True)
            self._write_metadata()
            self.writer.close()

    def destroy(self) -> None:
        """Stop, close the readers, remove the instance (idempotent)."""
        try:
            self.stop()
        finally:
            for src in self.sources:
                if src.fd >= 0:
                    os.close(src.fd)
                    src.fd = -1
            if self.writer is not None:
                self.writer.close()
            self.instance.remove()

    # -- the drain ----------------------------------------------------------
    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                n = self._drain_all()
            if not n:
                self._stop.wait(self.poll_interval)

    def _drain_all(self, final: bool = False) -> int:
        """Write every packet the sources have (``final``: and the last losses);
        returns how many. The consumer core's drain engine does the same for
        its sources (ust.kernel.source.FtraceSource has their interface)."""
        n = 0
        for src in self.sources:
            if final:
                src.flush(final=True)
            stream = self.writer.streams[src.cpu]
            while (packet := src.get_subbuf()) is not None:
                try:
                    stream.write(packet)
                except BaseException:
                    src.unget_subbuf()
                    raise
                src.put_subbuf()
                n += 1
        return n

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


__all__ = ["KernelCapture", "KernelTracingError"]
