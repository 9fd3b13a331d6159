"""ust-consumerd: owns the shared-memory buffers and drains them to CTF files.

Spawned by ust-sessiond with one end of a socketpair (``--fd N``); it serves
the sessiond's requests one at a time on it and exits when it closes.

* ``add_trace``      a trace directory (uid or pid owner), its uuid and clock offset
* ``add_channel``    creates one ``Buffer`` per CPU and answers with their fds
                     (SCM_RIGHTS); with ``attach`` (after a restart) maps the
                     fds it is given instead, and carries on where its dead
                     predecessor stopped (the read position is in the buffer)
* ``add_events``     new event ids: the metadata file is rewritten to describe them
                     *before* the sessiond lets any application record them
* ``flush``          closes every partial packet and writes everything: when it
                     answers, the trace on disk is complete
* ``snapshot``       flush + copy the current contents of overwrite buffers (not consumed)
* ``remove_traces``  flush, close, unmap

A drain thread sleeps on one eventfd (written by applications when a packet
completes while the reader sleeps) with the smallest read timer as timeout,
and fires the switch timers (``buf.flush()`` on idle channels).
Packets are written as they are: no event is decoded or re-encoded here.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from ust.ctf.writer import StreamFile, drain, final_drain, make_trace_dir, write_metadata
from ust.daemon import protocol
from ust.daemon.protocol import ConnectionClosed
from ust.errors import ProtocolError, UstError


def _log(msg: str) -> None:
    print(f"ust-consumerd[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# the core (ust._ring, ust.ctf): the one place this module touches it


def _ring():
    from ust._ring import _ring

    return _ring


def metadata_text(trace: "TraceOut") -> str:
    from ust.ctf import metadata as md
    from ust.instrument import context as ctx

    info = md.TraceInfo(
        uuid=bytes.fromhex(trace.uuid.replace("-", "")),
        clock_offset_ns=trace.clock_offset,
        trace_name=trace.env.get("trace_name", "ust"),
        buffering=trace.env.get("trace_buffering_scheme", "uid"),
        buffering_id=trace.env.get("buffering_id", 0),
        env_extra={k: v for k, v in trace.env.items()
                   if k in ("procname", "vpid", "hostname") and v not in (None, "")},
        creation_time=trace.created,
        clock_uuid=trace.clock_uuid,
    )
    streams, events = [], []
    for ch in sorted(trace.channels.values(), key=lambda c: c.stream_id):
        c_ctx, py_ctx = ctx.normalize(ch.context)
        streams.append(md.StreamClass(ch.stream_id, ch.name, c_ctx + py_ctx))
        events.extend((eid, ch.stream_id, decl) for eid, decl in sorted(ch.events.items()))
    return md.metadata_text(info, streams, events)


# ---------------------------------------------------------------------------
# counters from shared memory

REPAIR_PERIOD = 0.5  # seconds between two repairs of the buffers nobody drains (dead writers)
MAX_LOSS_RATE = 50_000_000  # events (or packets) per second one buffer could really lose
_COUNTED = ("lost_full", "lost_big", "packets_overwritten")


class BoundedCounters:
    """The loss counters of one buffer, as far as they can be believed.

    They live in the buffer's shared header, which every process writing the
    buffer can scribble on, another user's included (a per-UID buffer of a
    root session is shared with that user's processes). So a figure is only
    taken as a counter can really move: never down, never above 2^63, and up
    by at most MAX_LOSS_RATE per second since the last reading (a discarded
    event costs its writer far more than 20 ns). A hostile writer can still
    inflate its own buffer's figure at that rate, no further.
    """

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.values = dict.fromkeys(_COUNTED, 0)

    def read(self, raw: dict) -> dict:
        now = time.monotonic()
        allowance = int((now - self.at) * MAX_LOSS_RATE) + 1
        self.at = now
        out = {k: v if 0 <= v < 1 << 63 else 0 for k, v in raw.items()}
        for name in _COUNTED:
            value, last = out.get(name, 0), self.values[name]
            if value > last:
                self.values[name] = min(value, last + allowance)
            out[name] = self.values[name]
        return out


# ---------------------------------------------------------------------------
# streams and traces


@dataclass
class ChannelOut:
    name: str
    stream_id: int
    conf: dict
    context: list[str]
    buffers: list[Any] = field(default_factory=list)
    counters: list[BoundedCounters] = field(default_factory=list)  # one per buffer
    files: list[StreamFile] = field(default_factory=list)
    events: dict[int, Any] = field(default_factory=dict)  # id -> EventDecl
    next_switch: float = 0.0


@dataclass
class TraceOut:
    key: str
    path: str
    uuid: str
    clock_offset: int
    drain: bool
    env: dict
    channels: dict[str, ChannelOut] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    clock_uuid: bytes = field(default_factory=lambda: __import__("uuid").uuid4().bytes)


class Consumer:
    def __init__(self, sock: socket.socket, wakeup_fd: int | None = None):
        self.sock = sock
        self.lock = threading.Lock()
        self.traces: dict[str, TraceOut] = {}
        # The sessiond's eventfd, shared with every application (it outlives us
        # when we are restarted), so writers can wake us when a packet completes.
        self.efd = wakeup_fd if wakeup_fd is not None else os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        os.set_blocking(self.efd, False)
        self.stopping = False
        self.next_repair = 0.0

    # -- serving -------------------------------------------------------------------

    def serve(self) -> None:
        threading.Thread(target=self._drain_loop, name="drain", daemon=True).start()
        while True:
            try:
                msg, fds = protocol.recv_msg(self.sock)
            except ConnectionClosed:
                break
            except ProtocolError as exc:
                _log(f"bad request from the sessiond: {exc}")
                break
            reply, rfds = self.handle(msg, fds)
            reply["re"] = msg.get("id")  # the sessiond drops answers to requests it gave up on
            try:
                protocol.send_msg(self.sock, reply, rfds)
            except OSError:
                break
            if msg.get("cmd") == "quit":
                break
        # The sessiond is gone (quit, or killed): write out what the buffers hold.
        with self.lock:
            self.flush_all()
        self.close_all()

    def handle(self, msg: dict, fds: list[int]) -> tuple[dict, list[int]]:
        cmd = msg.get("cmd")
        try:
            fn = getattr(self, "cmd_" + str(cmd), None)
            if fn is None:
                raise ProtocolError(f"unknown consumer command {cmd!r}")
            args = {k: v for k, v in msg.items() if k not in ("cmd", "id")}
            with self.lock:
                result, rfds = fn(fds, **args)
            return protocol.ok_reply(**result), rfds
        except (UstError, OSError, ValueError, TypeError, KeyError) as exc:
            _log(f"{cmd} failed:\n{traceback.format_exc()}")
            return protocol.error_reply(f"{type(exc).__name__}: {exc}"), []
        finally:
            protocol.close_fds(fds)

    def cmd_ping(self, fds) -> tuple[dict, list]:
        return {"pid": os.getpid()}, []

    def cmd_stats(self, fds) -> tuple[dict, list]:
        out = {}
        for key, t in self.traces.items():
            out[key] = {ch.name: [bounded.read(b.counters()) for b, bounded in zip(ch.buffers, ch.counters)]
                        for ch in t.channels.values()}
        return {"traces": out}, []

    def cmd_quit(self, fds) -> tuple[dict, list]:
        self.flush_all()
        return {}, []

    def cmd_add_trace(self, fds, key: str, path: str, uuid: str, clock_offset: int, drain: bool,
                      env: dict, session: str = "", root: str | None = None) -> tuple[dict, list]:
        if key not in self.traces:
            # As the session's owner (we run with their credentials), in a tree
            # nobody else can write: ust.ctf.writer checks it.
            make_trace_dir(path, root)
            self.traces[key] = TraceOut(key, path, uuid, clock_offset, drain, env)
        return {}, []

    def cmd_add_channel(self, fds, trace: str, name: str, stream_id: int, subbuf_size: int, num_subbuf: int,
                        overwrite: bool, context: list, attach: bool = False, **timers: Any) -> tuple[dict, list]:
        t = self.traces[trace]
        if name in t.channels:
            return {}, [b.fd for b in t.channels[name].buffers]
        ring = _ring()
        ch = ChannelOut(name, stream_id, dict(timers, subbuf_size=subbuf_size, num_subbuf=num_subbuf,
                                              overwrite=overwrite), list(context))
        if attach:
            ch.buffers = [ring.Buffer.attach(fd) for fd in fds]
        else:
            uuid = bytes.fromhex(t.uuid.replace("-", ""))
            ncpu = os.sysconf("SC_NPROCESSORS_CONF") or 1
            ch.buffers = [
                ring.Buffer.create(subbuf_size, num_subbuf, overwrite=overwrite, stream_id=stream_id, cpu=cpu,
                                   uuid=uuid)
                for cpu in range(ncpu)
            ]
        ch.counters = [BoundedCounters() for _ in ch.buffers]
        for buf in ch.buffers:
            buf.set_wakeup_fd(self.efd)
        if t.drain:
            size, count = timers.get("tracefile_size", 0), timers.get("tracefile_count", 0)
            ch.files = [StreamFile(t.path, f"{name}_{cpu}", size, count) for cpu in range(len(ch.buffers))]
        t.channels[name] = ch
        self._write_metadata(t)
        # Wake the drain loop: it may be asleep for a whole read-timer period
        # without having told the new buffers that it sleeps, and writers wake
        # only a reader that said so. An application writing as soon as it is
        # attached filled 2 MiB in those 200 ms (the "non-deterministic" loss
        # of a steady writer, issue 7).
        os.eventfd_write(self.efd, 1)
        return {"streams": len(ch.buffers)}, ([] if attach else [b.fd for b in ch.buffers])

    def cmd_add_events(self, fds, trace: str, channel: str, events: list) -> tuple[dict, list]:
        t = self.traces[trace]
        ch = t.channels[channel]
        for ev in events:
            ch.events[ev["id"]] = protocol.decl_from_json(ev["decl"])
        self._write_metadata(t)
        return {}, []

    def cmd_flush(self, fds, traces: list) -> tuple[dict, list]:
        n = 0
        for key in traces:
            t = self.traces.get(key)
            if t is not None:
                n += self._flush(t)
        return {"packets": n}, []

    def cmd_snapshot(self, fds, targets: dict, root: str | None = None) -> tuple[dict, list]:
        n = 0
        for key, dest in targets.items():
            t = self.traces.get(key)
            if t is None:
                continue
            make_trace_dir(dest, root)
            self._write_metadata(t, dest)
            for ch in t.channels.values():
                for cpu, buf in enumerate(ch.buffers):
                    buf.flush()
                    out = StreamFile(dest, f"{ch.name}_{cpu}", truncate=True)
                    try:
                        # a copy: the buffers keep their contents, so the next
                        # snapshot holds these packets too if not overwritten
                        n += buf.snapshot_to(out.fd)[0]
                    finally:
                        out.close()
        return {"packets": n}, []

    def cmd_remove_traces(self, fds, traces: list) -> tuple[dict, list]:
        for key in traces:
            t = self.traces.pop(key, None)
            if t is not None:
                self._flush(t)
                self._close(t)
        return {}, []

    # -- work ----------------------------------------------------------------------

    def _write_metadata(self, t: TraceOut, directory: str | None = None) -> None:
        directory = directory or t.path
        if not t.drain and directory == t.path:
            return  # snapshot sessions write metadata with each snapshot only
        write_metadata(os.path.join(directory, "metadata"), metadata_text(t), sync=True)

    def _flush(self, t: TraceOut, final: bool = False) -> int:
        """Close partial packets and write everything (applications have stopped
        writing; see ust.ctf.writer.final_drain), then sync the files."""
        if not t.drain:
            return 0
        streams = [(buf, ch.files[cpu]) for ch in t.channels.values() for cpu, buf in enumerate(ch.buffers)]
        n = final_drain(streams)
        for _, out in streams:
            out.sync()
        return n

    def _close(self, t: TraceOut) -> None:
        for ch in t.channels.values():
            for f in ch.files:
                f.close()
            ch.buffers.clear()

    def flush_all(self) -> None:
        for t in self.traces.values():
            try:
                self._flush(t)
            except Exception:
                _log("flush failed:\n" + traceback.format_exc())

    def close_all(self) -> None:
        with self.lock:
            self.stopping = True
            for t in self.traces.values():
                self._close(t)
            self.traces.clear()

    def _drain_pass(self) -> int:
        n = 0
        for t in self.traces.values():
            if t.drain:
                for ch in t.channels.values():
                    for cpu, buf in enumerate(ch.buffers):
                        try:
                            n += drain(buf, ch.files[cpu])
                        except OSError as exc:
                            _log(f"writing {ch.name}_{cpu}: {exc}")
        return n

    def _repair_pass(self) -> None:
        # Overwrite buffers nobody drains (snapshot sessions): a writer killed
        # between reserve and commit would freeze its slot, and the flight
        # recorder with it, until the session ends (drained buffers are
        # repaired by the drain itself).
        for t in self.traces.values():
            if not t.drain:
                for ch in t.channels.values():
                    for buf in ch.buffers:
                        buf.repair_dead_writers()

    def _drain_loop(self) -> None:
        while True:
            with self.lock:
                if self.stopping:
                    return
                timeout = 0.2
                now = time.monotonic()
                for t in self.traces.values():
                    for ch in t.channels.values():
                        rt = ch.conf.get("read_timer") or 0
                        if rt:
                            timeout = min(timeout, rt / 1e6)
                        st = ch.conf.get("switch_timer") or 0
                        if st:
                            if now >= ch.next_switch:
                                if ch.next_switch:
                                    for buf in ch.buffers:
                                        buf.flush()
                                ch.next_switch = now + st / 1e6
                            timeout = min(timeout, max(0.0, ch.next_switch - now))
                got = self._drain_pass()
                if now >= self.next_repair:
                    self._repair_pass()
                    self.next_repair = now + REPAIR_PERIOD
                sleepers = [buf for t in self.traces.values() if t.drain
                            for ch in t.channels.values() for buf in ch.buffers]
                if not got:
                    for buf in sleepers:
                        buf.reader_sleep(True)
                    got = self._drain_pass()  # a packet may have completed meanwhile
            try:
                if not got:
                    select.select([self.efd], [], [], max(timeout, 0.001))
                    try:
                        os.eventfd_read(self.efd)
                    except BlockingIOError:
                        pass
            finally:
                with self.lock:
                    for buf in sleepers:
                        try:
                            buf.reader_sleep(False)
                        except Exception:
                            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ust-consumerd", description="the ust consumer daemon (spawned by ust-sessiond)")
    p.add_argument("--fd", type=int, required=True, help="the socket to the session daemon")
    p.add_argument("--wakeup-fd", type=int, help="the eventfd applications write when a packet completes")
    args = p.parse_args(argv)
    os.umask(0o077)
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sessiond decides when we stop
    sock = socket.socket(fileno=args.fd)
    Consumer(sock, args.wakeup_fd).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
