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

import atexit
import os
import uuid as uuid_mod
from pathlib import Path

from ust._ring import drain_at_exit
from ust.consumer.drain import Drainer
from ust.consumer.events import EventIdFile
from ust.consumer.output import LocalTraceOutput
from ust.consumer.trace import ChannelSpec, Trace, trace_info
from ust.ctf import metadata as md
from ust.ctf.writer import lost_events, uid_trace_dir
from ust.daemon.rules import glob_to_regex
from ust.defaults import DEFAULT_NUM_SUBBUF, DEFAULT_SUBBUF_SIZE
from ust.filter import compile_filter, event_predicate
from ust.instrument import context as ctx
from ust.instrument import forksafe
from ust.instrument import loglevels
from ust.instrument.registry import REGISTRY, TracepointHandle

_active: list["Session"] = []
_exit_hooked = False


def _finish_running_sessions() -> None:
    """atexit: write out the sessions this process left running."""
    for s in list(_active):
        if s._pid == os.getpid():
            s._finish_at_exit()

EVENT_IDS_FILE = ".ust-event-ids"


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
        subbuf_size: int = DEFAULT_SUBBUF_SIZE,
        num_subbuf: int = DEFAULT_NUM_SUBBUF,
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
        self._filter = None
        if filter:
            self._filter = compile_filter(filter)  # raises FilterError with the position
        self.overwrite = mode == "overwrite"
        self.subbuf_size = _check_pow2("subbuf_size", subbuf_size, 4096)
        self.num_subbuf = _check_pow2("num_subbuf", num_subbuf, 2)
        self.c_context, self.py_context = ctx.normalize(context)
        ctx.check_available(self.c_context)
        self.channel_name = channel
        self.read_timer = read_timer
        self.switch_timer = switch_timer
        self.trace_dir = uid_trace_dir(self.output)
        self.uuid = uuid_mod.uuid4().bytes
        self.started = False
        self.stopped = False
        self._pid = os.getpid()
        self._lock = forksafe.Lock()
        self._attached: list[TracepointHandle] = []

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "Session":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Session":
        if self.started:
            raise RuntimeError("session already started")
        output = LocalTraceOutput(self.trace_dir, self.output, fresh=True)
        # The event-id file lives in the trace directory (hidden: readers skip
        # dot-files), not in a temporary directory: a session whose process is
        # SIGKILLed leaves nothing behind outside its own trace, and the next
        # session on the same output starts it over.
        self._ids_path = self.trace_dir / EVENT_IDS_FILE
        self._ids_path.unlink(missing_ok=True)
        self.ids = EventIdFile(self._ids_path)
        info = trace_info(self.uuid, md.clock_offset_now(),
                          {"trace_name": self.output.name or "ust", "buffering_id": os.getuid()})
        self.trace = Trace("embedded", output, info, events=self.ids)
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._drainer = Drainer(self._wakeup, name="ust-consumer")
        self._drainer.traces[self.trace.key] = self.trace
        spec = ChannelSpec(self.channel_name, 0, self.subbuf_size, self.num_subbuf, overwrite=self.overwrite,
                           context=self.c_context + self.py_context, read_timer=self.read_timer,
                           switch_timer=self.switch_timer or 0.0,
                           drain_live=not self.overwrite)  # a flight recorder is written out at stop only
        self._channel = self.trace.add_channel(spec, self._wakeup)
        self.channel = ctx.make_channel(self.buffers, self.c_context + self.py_context)
        self.started = True
        global _exit_hooked
        if not _exit_hooked:
            atexit.register(_finish_running_sessions)
            _exit_hooked = True
        _active.append(self)
        for handle in REGISTRY.subscribe(self._on_declare):
            self._on_declare(handle)
        # After the ids of the tracepoints declared so far: the drain thread
        # then takes the GIL for the metadata only when a new one is declared
        # (it watches the event-id file without the GIL).
        self.trace.write_metadata()
        self._drainer.start()
        return self

    @property
    def buffers(self) -> list:
        """The channel's ring buffers, one per CPU."""
        return self._channel.sources

    @property
    def files(self) -> list:
        """The stream files, one per CPU (ust.consumer.output.StreamFile)."""
        return self._channel.outputs

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
        self._drainer.stop()
        self.trace.flush(sync=False)
        self.trace.write_metadata(force=True)
        self.trace.close()  # the stream files, and the event-id file
        os.close(self._wakeup)
        if self in _active:
            _active.remove(self)

    def _finish_at_exit(self) -> None:
        """The interpreter exits with this session running: write out what is
        recorded, but leave the tracepoints attached — objects finalized after
        the atexit handlers (module teardown, the last collection) may still
        record. The C core writes their events once the interpreter is gone
        (drain_at_exit). No new event is attached: the metadata is final."""
        self.stopped = True
        REGISTRY.unsubscribe(self._on_declare)
        self._drainer.stop()
        self.trace.flush(sync=False)
        self.trace.write_metadata(force=True)
        for b, f in zip(self.buffers, self.files):
            b.set_wakeup_fd(-1)  # the eventfd closes below: no writer may write into a reused number
            drain_at_exit(b, f.release_fd())  # the C core owns the descriptor now
        os.close(self._wakeup)
        self.ids.close()
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
            if handle in self._attached:
                return
            handle.tp.attach(self.channel, event_id, event_predicate(self._filter, handle.decl))
            self._attached.append(handle)

    # -- results -----------------------------------------------------------

    def counters(self) -> dict:
        """Lost-event counts summed over the CPUs' buffers: lost_full (buffers
        full), lost_big (larger than a sub-buffer), lost_args (arguments that
        did not fit their fields), and lost, all of them."""
        total: dict = {}
        for b in self.buffers:
            for k, v in b.counters().items():
                if k.startswith(("lost_", "packets_")):
                    total[k] = total.get(k, 0) + v
        total["lost"] = lost_events(total)
        return total

    @property
    def lost(self) -> int:
        return self.counters()["lost"]


Session.__module__ = "ust"  # used as ust.Session (tests/test_api.py)
