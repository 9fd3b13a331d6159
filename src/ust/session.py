"""The embedded session: tracing without daemons, for one process tree.

    with ust.Session("out/trace", events=["myapp:*"]):
        ...

The session creates one shared-memory buffer per CPU (the same ring buffer
the daemons use), attaches the matching tracepoints, drains the buffers to
CTF stream files from a background thread while the program runs, and on exit
flushes everything and writes the metadata. Forked children write into the
same buffers (they are shared mappings); what they commit before they exit
is in the trace.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import tempfile
import threading
import time
import uuid as uuid_mod
from pathlib import Path

from ust._ring import Buffer, Channel
from ust.ctf import metadata as md
from ust.ctf.writer import (EventIdFile, StreamFile, drain, final_drain, make_trace_dir, stream_file_name,
                            uid_trace_dir, write_metadata)
from ust.instrument import context as ctx
from ust.instrument import loglevels
from ust.instrument.registry import REGISTRY, TracepointHandle

_active: list["Session"] = []


def glob_to_regex(pattern: str) -> "re.Pattern[str]":
    """LTTng event-name globs: '*' matches any run of characters, '\\*' a star."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _check_pow2(name: str, value: int, low: int) -> int:
    if not isinstance(value, int) or value < low or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= {low}, got {value!r}")
    return value


class Session:
    """A daemon-less tracing session writing a CTF trace under ``output``."""

    def __init__(
        self,
        output: "str | os.PathLike",
        events=("*",),
        *,
        exclude=(),
        loglevel: "int | str | None" = None,
        loglevel_only: bool = False,
        filter: "str | None" = None,
        mode: str = "discard",
        subbuf_size: int = 256 * 1024,
        num_subbuf: int = 8,
        context=(),
        channel: str = "channel0",
        read_timer: float = 0.2,
        switch_timer: "float | None" = None,
    ):
        if mode not in ("discard", "overwrite"):
            raise ValueError(f"mode must be 'discard' or 'overwrite', got {mode!r}")
        if isinstance(events, str):
            events = [events]
        self.output = Path(output)
        self.patterns = [glob_to_regex(p) for p in events]
        self.exclude = [glob_to_regex(p) for p in ([exclude] if isinstance(exclude, str) else exclude)]
        self.loglevel = None if loglevel is None else loglevels.parse(loglevel)
        self.loglevel_only = loglevel_only
        self.filter_text = filter
        self._filter = None
        if filter:
            from ust.filter import compile_filter  # raises FilterError with the position

            self._filter = compile_filter(filter)
        self.overwrite = mode == "overwrite"
        self.subbuf_size = _check_pow2("subbuf_size", subbuf_size, 4096)
        self.num_subbuf = _check_pow2("num_subbuf", num_subbuf, 2)
        self.c_context, self.py_context = ctx.normalize(context)
        self.channel_name = channel
        self.read_timer = read_timer
        self.switch_timer = switch_timer
        self.trace_dir = uid_trace_dir(self.output)
        self.uuid = uuid_mod.uuid4().bytes
        self.started = False
        self.stopped = False
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._attached: list[TracepointHandle] = []
        self.packets_written = 0
        self.bytes_written = 0

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "Session":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Session":
        if self.started:
            raise RuntimeError("session already started")
        make_trace_dir(self.trace_dir, self.output)
        self.trace = md.TraceInfo(self.uuid, md.clock_offset_now(), trace_name=self.output.name or "ust",
                                  buffering_id=os.getuid())
        self.stream_class = md.StreamClass(0, self.channel_name, self.c_context + self.py_context)
        ncpu = os.sysconf("SC_NPROCESSORS_CONF") or 1
        self.buffers = [
            Buffer.create(self.subbuf_size, self.num_subbuf, overwrite=self.overwrite, stream_id=0, cpu=cpu,
                          uuid=self.uuid)
            for cpu in range(ncpu)
        ]
        self.files = [StreamFile(self.trace_dir, stream_file_name(self.channel_name, cpu), truncate=True)
                      for cpu in range(ncpu)]
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        for b in self.buffers:
            b.set_wakeup_fd(self._wakeup)
        self.channel = Channel(self.buffers, self.c_context, [ctx.py_callable(n) for n in self.py_context])
        self._tmp = tempfile.mkdtemp(prefix="ust-session-")
        self.ids = EventIdFile(Path(self._tmp) / "events")
        self._metadata_size = -1
        self._write_metadata()
        self._stop_event = threading.Event()
        self._consumer = threading.Thread(target=self._consume, name="ust-consumer", daemon=True)
        self.started = True
        _active.append(self)
        REGISTRY.subscribe(self._on_declare)
        for handle in REGISTRY.all():
            self._on_declare(handle)
        self._consumer.start()
        return self

    def stop(self) -> None:
        if not self.started or self.stopped:
            return
        if os.getpid() != self._pid:
            return  # a forked child leaving the with-block: the parent owns the session
        self.stopped = True
        REGISTRY.unsubscribe(self._on_declare)
        with self._lock:
            for handle in self._attached:
                handle.tp.detach(self.channel)
            self._attached.clear()
        self._stop_event.set()
        os.eventfd_write(self._wakeup, 1)
        self._consumer.join()
        self._final_drain()
        self._write_metadata(force=True)
        for f in self.files:
            f.close()
        os.close(self._wakeup)
        shutil.rmtree(self._tmp, ignore_errors=True)
        if self in _active:
            _active.remove(self)

    # -- events ------------------------------------------------------------

    def matches(self, handle: TracepointHandle) -> bool:
        name = handle.decl.name
        if not any(p.match(name) for p in self.patterns) or any(p.match(name) for p in self.exclude):
            return False
        if self.loglevel is not None:
            level = handle.decl.loglevel
            return level == self.loglevel if self.loglevel_only else level <= self.loglevel
        return True

    def _on_declare(self, handle: TracepointHandle) -> None:
        if self.stopped or not self.matches(handle):
            return
        event_id = self.ids.event_id(handle.decl, 0)
        with self._lock:
            if self.stopped:
                return
            handle.tp.attach(self.channel, event_id, self._filter_for(handle))
            self._attached.append(handle)

    def _filter_for(self, handle: TracepointHandle):
        if self._filter is None:
            return None
        names = [f.name for f in handle.decl.fields]
        filt = self._filter

        def keep(*args) -> bool:
            return filt.matches(dict(zip(names, args)), {})

        return keep

    # -- draining ----------------------------------------------------------

    def _drain_all(self) -> int:
        return sum(drain(b, f) for b, f in zip(self.buffers, self.files))

    def _consume(self) -> None:
        next_switch = time.monotonic() + self.switch_timer if self.switch_timer else None
        while not self._stop_event.is_set():
            if not self.overwrite:
                if self._drain_all():
                    continue
                for b in self.buffers:
                    b.reader_sleep(True)
                got = self._drain_all()  # re-check: a packet may have completed meanwhile
            else:
                got = 0
            if not got:
                timeout = self.read_timer
                if next_switch is not None:
                    timeout = max(0.0, min(timeout, next_switch - time.monotonic()))
                select.select([self._wakeup], [], [], timeout)
                try:
                    os.eventfd_read(self._wakeup)
                except BlockingIOError:
                    pass
            for b in self.buffers:
                b.reader_sleep(False)
            if next_switch is not None and time.monotonic() >= next_switch:
                for b in self.buffers:
                    b.flush()
                next_switch = time.monotonic() + self.switch_timer
            self._write_metadata()

    def _final_drain(self) -> None:
        final_drain(list(zip(self.buffers, self.files)))

    def _write_metadata(self, force: bool = False) -> None:
        # The event-id file only grows: its size says whether an event was added
        # (the drain thread asks at every wake-up; a stat is all that costs).
        size = os.stat(self.ids.path).st_size
        if not force and size == self._metadata_size:
            return
        self._metadata_size = size
        events = self.ids.events()
        write_metadata(self.trace_dir / "metadata", md.metadata_text(self.trace, [self.stream_class], events))

    # -- results -----------------------------------------------------------

    def counters(self) -> dict:
        """Lost-event counts summed over the CPUs' buffers."""
        total: dict = {}
        for b in self.buffers:
            for k, v in b.counters().items():
                if k in ("lost_full", "lost_big", "packets_overwritten", "packets_read"):
                    total[k] = total.get(k, 0) + v
        total["lost"] = total.get("lost_full", 0) + total.get("lost_big", 0)
        return total

    @property
    def lost(self) -> int:
        return self.counters()["lost"]
