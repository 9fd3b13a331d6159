"""ust-consumerd: owns the shared-memory buffers and drains them to CTF files.

Spawned by ust-sessiond with one end of a socketpair (``--fd N``); it serves
the sessiond's requests one at a time on it and exits when it closes.

* ``add_trace``      a trace directory (uid or pid owner), its uuid and clock offset;
                     with ``shm``, the directory its buffers are files in (--shm-path)
* ``add_channel``    creates one ``Buffer`` per CPU and answers with their fds
                     (SCM_RIGHTS); with ``attach`` (after a restart) maps the
                     fds it is given instead, and carries on where its dead
                     predecessor stopped (the read position is in the buffer)
* ``add_events``     new event ids: the metadata file is rewritten to describe them
                     *before* the sessiond lets any application record them
* ``flush``          closes every partial packet and writes everything: when it
                     answers, the trace on disk is complete
* ``snapshot``       flush + copy the current contents of overwrite buffers (not consumed)
* ``remove_traces``  flush, close, unmap (and delete the --shm-path files)
* ``clear``          ``ust clear``: what the buffers hold is consumed unwritten and the
                     stream files start over (the metadata stays)
* ``chunk_bytes``    what the traces' current chunk holds (size-based rotation)
* ``regenerate_metadata``  a new clock offset: the metadata is rewritten with it
* ``rotate``         a session's chunk switch: each trace goes on in a new
                     directory at a packet boundary (``Trace.switch_output``),
                     then the finished chunk is moved into ``archives/``
* ``add_kernel_trace``   a session's kernel trace: the sessiond's ftrace instance's
                     readers (each CPU's ``trace_pipe_raw`` and ``stats``, the task
                     tables), passed with SCM_RIGHTS and checked here, and the
                     formats of its events; drained as any trace (ust.kernel.trace)
* ``add_kernel_events``  formats of kernel events about to be enabled: the metadata
                     describes them before they are recorded
* ``add_kernel_trigger``     a kernel trigger's instance: its readers (each CPU's
                     ``trace_pipe_raw`` and ``stats``, checked) and its events' formats; its
                     matches are counted on a thread of their own (ust.kernel.matcher)
* ``remove_kernel_trigger``  stop counting them and close the readers
* ``kernel_trigger_matches`` the matches counted since the last time (the sessiond's
                     eventfd, ``--matches-fd``, is written when the first arrive)

This module is the protocol front of the consumer core (``ust.consumer``,
docs/consumer.md), which the embedded session hosts too: its drain engine
sleeps on one eventfd (written by applications when a packet completes while
the reader sleeps), fires the switch timers, and writes packets as they are:
no event is decoded or re-encoded here. A command runs with the engine
paused (``Drainer.paused``): one reader per buffer.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import traceback
from typing import Any

from ust.consumer.drain import Drainer
from ust.consumer.output import LocalTraceOutput
from ust.consumer.trace import ChannelSpec, Trace, trace_info
from ust.daemon import protocol
from ust.daemon.protocol import ConnectionClosed
from ust.relay.output import RelaySession, RelayTraceOutput
from ust.relay.wire import IDENTITY_SIZE
from ust.errors import ProtocolError, UstError


def _log(msg: str) -> None:
    print(f"ust-consumerd[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


UNPAUSED = frozenset({"kernel_trigger_matches", "ping"})  # commands that touch no trace: the drain goes on


class Consumer:
    """The protocol front of the consumer core (ust.consumer) for ust-sessiond."""

    def __init__(self, sock: socket.socket, wakeup_fd: int | None = None, matches_fd: int = -1):
        self.sock = sock
        self.matches_fd = matches_fd  # the sessiond's eventfd: kernel trigger matches are waiting
        self.matcher = None  # ust.kernel.matcher.Matcher, at the first kernel trigger
        # The sessiond's eventfd, shared with every application (it outlives us
        # when we are restarted), so writers can wake us when a packet completes.
        self.efd = wakeup_fd if wakeup_fd is not None else os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        os.set_blocking(self.efd, False)
        self.drainer = Drainer(self.efd, name="drain", log=_log)
        self.traces = self.drainer.traces  # key -> ust.consumer.trace.Trace
        self.relays: dict[str, RelaySession] = {}  # streamed session name -> its relay link

    # -- serving -------------------------------------------------------------------

    def serve(self) -> None:
        self.drainer.start()
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
        with self.drainer.paused():
            self.flush_all()
        self.close_all()

    def handle(self, msg: dict, fds: list[int]) -> tuple[dict, list[int]]:
        cmd = msg.get("cmd")
        try:
            fn = getattr(self, "cmd_" + str(cmd), None)
            if fn is None:
                raise ProtocolError(f"unknown consumer command {cmd!r}")
            args = {k: v for k, v in msg.items() if k not in ("cmd", "id")}
            if cmd in UNPAUSED:
                result, rfds = fn(fds, **args)
            else:
                with self.drainer.paused():
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
            out[key] = {ch.name: ch.bounded_counters() for ch in t.channels.values()}
        return {"traces": out}, []

    def cmd_quit(self, fds) -> tuple[dict, list]:
        self.flush_all()
        return {}, []

    def cmd_add_trace(self, fds, key: str, path: str, uuid: str, clock_offset: int, drain: bool,
                      env: dict, session: str = "", root: str | None = None,
                      relay: dict | None = None, shm: dict | None = None) -> tuple[dict, list]:
        if key not in self.traces:
            from ust.consumer.shm_path import ShmDirectory

            # --shm-path: the buffers are files in {"path"}, below the session's {"root"}
            shm_dir = ShmDirectory(shm["path"], shm["root"]) if shm is not None else None
            if relay is not None:  # streamed: the relay writes it (ust.relay.output)
                output = RelayTraceOutput(self._relay_session(session, relay), relay["path"])
            else:
                # As the session's owner (we run with their credentials), in a tree
                # nobody else can write: ust.ctf.writer checks it.
                output = LocalTraceOutput(path, root, indexed=True)  # as lttng-consumerd: index/*.idx
            info = trace_info(bytes.fromhex(uuid.replace("-", "")), clock_offset, env)
            # A snapshot session writes nothing while it runs: only its snapshots.
            self.traces[key] = Trace(key, output if drain else None, info, shm=shm_dir)
        return {}, []

    def cmd_add_channel(self, fds, trace: str, name: str, stream_id: int, subbuf_size: int, num_subbuf: int,
                        overwrite: bool, context: list, attach: bool = False, **timers: Any) -> tuple[dict, list]:
        t = self.traces[trace]
        if name in t.channels:
            return {}, [b.fd for b in t.channels[name].sources]
        spec = ChannelSpec(name, stream_id, subbuf_size, num_subbuf, overwrite=overwrite, context=tuple(context),
                           read_timer=(timers.get("read_timer") or 0) / 1e6,
                           switch_timer=(timers.get("switch_timer") or 0) / 1e6,
                           live_timer=(timers.get("live_timer") or 0) / 1e6,
                           tracefile_size=timers.get("tracefile_size") or 0,
                           tracefile_count=timers.get("tracefile_count") or 0)
        ch = t.add_channel(spec, self.efd, attach_fds=fds if attach else None)
        # Wake the drain loop: it may be asleep for a whole read-timer period
        # without having told the new buffers that it sleeps, and writers wake
        # only a reader that said so. An application writing as soon as it is
        # attached filled 2 MiB in those 200 ms (the "non-deterministic" loss
        # of a steady writer, issue 7).
        self.drainer.wake()
        return {"streams": len(ch.sources)}, ([] if attach else [b.fd for b in ch.sources])

    def cmd_add_events(self, fds, trace: str, channel: str, events: list) -> tuple[dict, list]:
        t = self.traces[trace]
        ch = t.channels[channel]
        for ev in events:
            t.events.describe(ch.stream_id, ev["id"], protocol.decl_from_json(ev["decl"]))
        t.write_metadata()
        return {}, []

    def cmd_flush(self, fds, traces: list) -> tuple[dict, list]:
        n = 0
        for key in traces:
            t = self.traces.get(key)
            if t is not None:
                n += t.flush(sync=True)
        return {"packets": n}, []

    def cmd_snapshot(self, fds, targets: dict, root: str | None = None,
                     relay: dict | None = None) -> tuple[dict, list]:
        if relay is not None:
            return {"packets": self._snapshot_to_relay(targets, relay)}, []
        n = 0
        for key, dest in targets.items():
            t = self.traces.get(key)
            if t is not None:
                n += t.snapshot(LocalTraceOutput(dest, root, fresh=True))
        return {"packets": n}, []

    def cmd_clear(self, fds, traces: list) -> tuple[dict, list]:
        """Empty the traces: every packet their buffers hold is consumed without being written, and
        (a trace written while it runs) its stream files start over, empty; the metadata stays. The
        packet-boundary cut is ``Trace.switch_output``'s, to an output that drops what it is given."""
        from ust.consumer.drain import drain_stream
        from ust.consumer.output import DiscardTraceOutput

        n = 0
        for key in traces:
            t = self.traces.get(key)
            if t is None:
                continue
            if not t.drains:  # a snapshot session: only its buffers
                for ch in t.channels.values():
                    for src in ch.sources:
                        src.flush()
                        n += drain_stream(src, DiscardTraceOutput.DROP)
                continue
            out = t.output
            t.switch_output(DiscardTraceOutput())  # what is committed now goes to the old files...
            streams = tuple(f"{ch.name}_" for ch in t.channels.values())  # <channel>_<cpu>[_<n>]
            for directory in (out.directory, os.path.join(out.directory, "index")):  # ...which are removed,
                try:                                                                   # with their indexes
                    names = os.listdir(directory)
                except FileNotFoundError:
                    continue
                for f in names:
                    if f.startswith(streams) and f != "metadata":
                        os.unlink(os.path.join(directory, f))
            n += t.switch_output(LocalTraceOutput(out.directory, out.root, fresh=True, indexed=True))
        return {"packets": n}, []

    def cmd_chunk_bytes(self, fds, traces: list) -> tuple[dict, list]:
        """The bytes written to the traces' current outputs (since their last chunk switch)."""
        n = 0
        for key in traces:
            t = self.traces.get(key)
            if t is not None:
                n += sum(getattr(out, "bytes_written", 0) for ch in t.channels.values() for out in ch.outputs)
        return {"bytes": n}, []

    def cmd_monitor(self, fds, traces: list) -> tuple[dict, list]:
        """What buffer-usage and consumed-size triggers sample: {trace: {channel: Channel.usage()}}."""
        out = {}
        for key in traces:
            t = self.traces.get(key)
            if t is not None:
                out[key] = {ch.name: ch.usage() for ch in t.channels.values()}
        return {"traces": out}, []

    def cmd_regenerate_metadata(self, fds, traces: list, clock_offset: int) -> tuple[dict, list]:
        """Describe the traces' clock with ``clock_offset`` (realtime - monotonic, re-sampled by
        the sessiond): the metadata is rewritten now (a snapshot session's, at its next snapshot)."""
        import dataclasses

        for key in traces:
            t = self.traces.get(key)
            if t is not None:
                t.info = dataclasses.replace(t.info, clock_offset_ns=int(clock_offset))
                t.write_metadata(force=True)
        return {}, []

    def cmd_kernel_statedump(self, fds, traces: list) -> tuple[dict, list]:
        """``regenerate statedump``: each kernel trace of ``traces`` writes the statedump again
        (KernelTrace.regenerate_statedump); how many did."""
        from ust.kernel.trace import KernelTrace

        n = 0
        for key in traces:
            t = self.traces.get(key)
            if isinstance(t, KernelTrace) and t.drains:
                t.regenerate_statedump()
                n += 1
        return {"kernel_traces": n}, []

    def cmd_rotate(self, fds, targets: dict, root: str, chunk: str, archive: str) -> tuple[dict, list]:
        """Switch every trace of ``targets`` ({key: its directory in the new chunk}) to a new
        output, at a packet boundary (every packet closed now ends in the old chunk, every later
        one in the new: none lost, none twice, while applications write), then move the old
        chunk, ``root/chunk/ust`` (``chunk`` "": the session's own directory), to
        ``root/archive/ust``: a complete trace. We run as the session's owner, in a tree
        ``make_trace_dir`` checked is theirs alone. A streamed session (``root`` its
        ``net://`` URL) does the same on its relay: the new chunk is a new relay output of
        each trace, and the relay moves the old chunk once all its packets arrived; the
        answer's ``path`` is then the archive's directory on the relay."""
        from ust.ctf.writer import make_trace_dir

        n = 0
        links = []
        for key in targets:  # a link that broke a moment ago is up again before the switch, if it can be
            t = self.traces.get(key)
            if t is not None and t.drains and isinstance(t.output, RelayTraceOutput) and t.output.link not in links:
                links.append(t.output.link)
                try:
                    t.output.link.connect_now()
                except OSError:
                    pass  # the switch goes on; the archive request says the relay is unreachable
        links = []
        for key, path in targets.items():
            t = self.traces.get(key)
            if t is None or not t.drains:
                continue
            if isinstance(t.output, RelayTraceOutput):
                link = t.output.link
                n += t.switch_output(RelayTraceOutput(link, path[len(root) + 1:]))
                if link not in links:
                    links.append(link)
            else:
                n += t.switch_output(LocalTraceOutput(path, root, fresh=True, indexed=True))
        if "://" in root:  # a streamed session's output is its relay's net:// URL
            if not archive.startswith("archives/"):
                raise ProtocolError(f"invalid archive {archive!r}")
            try:
                paths = [link.archive_chunk(chunk, archive[len("archives/"):]) for link in links]
            except OSError as exc:  # the traces are in the new chunk all the same: say so, not fail
                return {"packets": n, "path": None, "archive_error": str(exc)}, []
            return {"packets": n, "path": paths[0] if paths else None}, []
        base = os.path.join(root, chunk) if chunk else root
        dest = os.path.join(root, archive)
        make_trace_dir(dest, root)  # even empty (no application recorded in that chunk), as lttng
        for domain in ("ust", "kernel"):
            old = os.path.join(base, domain)
            if os.path.isdir(old) and not os.path.islink(old):
                os.rename(old, os.path.join(dest, domain))
        if chunk and os.path.isdir(os.path.join(root, chunk)):
            os.rmdir(os.path.join(root, chunk))
        return {"packets": n}, []

    def cmd_add_kernel_trace(self, fds, key: str, path: str, uuid: str, clock_offset: int, session: str,
                             drain: bool, contexts: list, cpus: int, page_size: int, keep_pages: int,
                             read_timer: float, formats: list, root: str | None = None, relay: dict | None = None,
                             attach: bool = False, live_timer: int = 0, tracked: list = ()) -> tuple[dict, list]:
        """A kernel trace over the readers the sessiond opened (``fds``: each CPU's
        trace_pipe_raw, then each CPU's stats, then saved_tgids and saved_cmdlines: the task
        tables, read when a context or a field asks a thread's process or name), each checked
        to be what it is said to be.
        ``attach``: a restarted consumer's, carrying on its predecessor's stream files."""
        from ust.kernel import tracefs
        from ust.kernel.trace import CONTEXTS, KernelTrace, new_trace_info

        if key in self.traces:
            return {}, []
        if not isinstance(contexts, list) or any(c not in CONTEXTS for c in contexts):
            raise ValueError(f"kernel contexts {contexts!r}: only {', '.join(CONTEXTS)}")
        if not _int_in(cpus, 1, protocol.MAX_FDS) or len(fds) != 2 * cpus + 2:
            raise ValueError(f"a kernel trace of {cpus!r} CPUs needs {cpus!r}×2+2 descriptors, got {len(fds)}")
        if not _int_in(page_size, 4096, 1 << 20) or not _int_in(keep_pages, 1, 1 << 24):
            raise ValueError(f"kernel page size {page_size!r} or kept pages {keep_pages!r} out of range")
        if not isinstance(read_timer, (int, float)) or not 0.001 <= read_timer <= 10 \
                or not _int_in(live_timer or 0, 0, 3600 * 10**6):
            raise ValueError(f"kernel read timer {read_timer!r} s or live timer {live_timer!r} µs out of range")
        for cpu in range(cpus):
            tracefs.check_reader_fd(fds[cpu], "raw", cpu)
            tracefs.check_reader_fd(fds[cpus + cpu], "stats", cpu)
        tracefs.check_reader_fd(fds[2 * cpus], "saved_tgids")
        tracefs.check_reader_fd(fds[2 * cpus + 1], "saved_cmdlines")
        output = None
        if drain:
            if relay is not None:  # streamed: the relay writes <session>/kernel (ust.relay.output)
                output = RelayTraceOutput(self._relay_session(session, relay), relay["path"])
            else:
                output = LocalTraceOutput(path, root, fresh=not attach, indexed=True)
        info = new_trace_info(session, int(clock_offset), uuid=bytes.fromhex(uuid.replace("-", "")))
        kept = [os.dup(fd) for fd in fds]  # ``handle`` closes what was received
        for fd in kept[:cpus]:
            os.set_blocking(fd, False)  # a read of a ring with nothing must not stop the engine
        try:
            task_table = tracefs.TaskTable(*kept[2 * cpus:])
            trace = KernelTrace(key, output, info, tuple(contexts), task_table)
        except BaseException:
            protocol.close_fds(kept)
            raise
        try:
            trace.learn(_formats(formats), _formats(list(tracked)))
        except BaseException:
            trace.close()
            protocol.close_fds(kept[:2 * cpus])
            raise
        try:  # the sources own the readers from here (closed with them, even if this fails)
            ch = trace.attach(kept[:cpus], kept[cpus:2 * cpus], page_size=page_size, keep_pages=keep_pages,
                              snapshot=not drain, read_timer=float(read_timer),
                              live_timer=(live_timer or 0) / 1e6)
        except BaseException:
            trace.close()
            raise
        if attach:
            _resume_streams(ch)
        elif drain:
            # before the sessiond starts the instance: the statedump, as this consumer (the
            # session owner) sees the processes, and every stream opened now
            trace.recording_starts()
        self.traces[key] = trace
        return {"streams": cpus}, []

    def cmd_add_kernel_events(self, fds, trace: str, formats: list, tracked: list = ()) -> tuple[dict, list]:
        from ust.kernel.trace import KernelTrace

        t = self.traces[trace]
        if not isinstance(t, KernelTrace):
            raise ValueError(f"trace {trace!r} is not a kernel trace")
        t.learn(_formats(formats), _formats(list(tracked)))
        return {}, []

    def cmd_add_kernel_trigger(self, fds, trigger: int, cpus: int, page_size: int, formats: list,
                               captures: list = (), attach: bool = False) -> tuple[dict, list]:
        """A kernel trigger's instance (ust.kernel.matcher): ``fds`` each CPU's trace_pipe_raw, then
        each CPU's stats, each checked to be what it is said to be; ``formats``: its events'."""
        from ust.filter import compile_capture
        from ust.kernel import formats as fmt
        from ust.kernel import tracefs
        from ust.kernel.matcher import KernelTrigger, Matcher

        if not _int_in(trigger, 0, 1 << 32) or not _int_in(cpus, 1, protocol.MAX_FDS // 2) or len(fds) != 2 * cpus:
            raise ValueError(f"a kernel trigger of {cpus!r} CPUs needs {cpus!r}×2 descriptors, got {len(fds)}")
        if not _int_in(page_size, 4096, 1 << 20):
            raise ValueError(f"kernel page size {page_size!r} out of range")
        if not isinstance(captures, list) or len(captures) > 16 or not all(isinstance(c, str) for c in captures):
            raise ValueError("kernel trigger captures must be a list of at most 16 strings")
        for c in captures:
            compile_capture(c)
        for cpu in range(cpus):
            tracefs.check_reader_fd(fds[cpu], "raw", cpu)
            tracefs.check_reader_fd(fds[cpus + cpu], "stats", cpu)
        events = [fmt.parse_format(text, system) for system, text in _formats(formats)]
        kept = [os.dup(fd) for fd in fds]  # ``handle`` closes what was received
        for fd in kept[:cpus]:
            os.set_blocking(fd, False)
        t = KernelTrigger(trigger, kept[:cpus], kept[cpus:], events, list(captures), page_size)
        try:
            if self.matcher is None:
                self.matcher = Matcher(self.matches_fd)
            self.matcher.add(t)
        except BaseException:
            t.close()
            raise
        return {"events": len(events)}, []

    def cmd_remove_kernel_trigger(self, fds, trigger: int) -> tuple[dict, list]:
        return {"removed": self.matcher is not None and self.matcher.remove(trigger)}, []

    def cmd_kernel_trigger_matches(self, fds) -> tuple[dict, list]:
        return (self.matcher.take() if self.matcher is not None else {"matches": [], "discarded": []}), []

    def _snapshot_to_relay(self, targets: dict, relay: dict) -> int:
        """A snapshot as a session of its own on the relay (its traces under ``targets``)."""
        link = RelaySession(relay["host"], relay["control"], relay["data"], relay["session"], relay["hostname"], 0,
                            relay.get("created") or 0)  # (a snapshot is never resumed: no identity)
        try:
            link.call(lambda client: None)  # reachable, or the command fails with why
            n = 0
            for key, dest in targets.items():
                t = self.traces.get(key)
                if t is not None:
                    n += t.snapshot(RelayTraceOutput(link, dest))
            return n
        finally:
            link.destroy()

    def cmd_remove_traces(self, fds, traces: list) -> tuple[dict, list]:
        for key in traces:
            t = self.traces.pop(key, None)
            if t is not None:
                t.flush(sync=True)
                t.close()
                if t.shm is not None:  # destroyed, not crashed: nothing to recover (as lttng)
                    t.shm.remove()
        self._end_relay_sessions()
        return {}, []

    def _relay_session(self, session: str, relay: dict) -> RelaySession:
        """The one link to the relay of a streamed session (its traces share it)."""
        link = self.relays.get(session)
        if link is None:
            identity = relay.get("identity")  # the session's, from the session daemon: a replaced consumer resumes
            if identity is not None and (not isinstance(identity, str) or len(identity) != 2 * IDENTITY_SIZE
                                         or any(c not in "0123456789abcdef" for c in identity)):
                raise ProtocolError(f"invalid relay identity {identity!r}")
            link = RelaySession(relay["host"], relay["control"], relay["data"], session, relay["hostname"],
                                relay.get("live_timer") or 0, relay.get("created") or 0,
                                identity=bytes.fromhex(identity) if identity else None)
            self.relays[session] = link
        return link

    def _end_relay_sessions(self) -> None:
        """Destroy, on their relays, the sessions whose traces are all gone."""
        live = {t.output.link for t in self.traces.values() if isinstance(t.output, RelayTraceOutput)}
        for name, link in list(self.relays.items()):
            if link not in live:
                link.destroy()
                del self.relays[name]

    # -- the end -------------------------------------------------------------------

    def flush_all(self) -> None:
        for t in self.traces.values():
            try:
                t.flush(sync=True)
            except Exception:
                _log("flush failed:\n" + traceback.format_exc())

    def close_all(self) -> None:
        if self.matcher is not None:
            self.matcher.close()
            self.matcher = None
        self.drainer.stop()
        for t in self.traces.values():
            t.close()
        self.traces.clear()
        self._end_relay_sessions()


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


MAX_FORMAT = 1 << 16  # bytes of one event's format file (the largest on a 6.x kernel is a few KiB)


def _formats(formats: object) -> list[tuple[str, str]]:
    """[(system, format text)] from a message (ValueError unless it is that, bounded)."""
    if not isinstance(formats, list):
        raise ValueError("kernel formats must be a list")
    out = []
    for item in formats:
        if (not isinstance(item, list) or len(item) != 2 or not all(isinstance(x, str) for x in item)
                or len(item[0]) > 256 or len(item[1]) > MAX_FORMAT):
            raise ValueError("a kernel format is [system, text] (at most 64 KiB)")
        out.append((item[0], item[1]))
    return out


def _resume_streams(ch) -> None:
    """A restarted consumer appends to its predecessor's kernel stream files: each stream
    carries on after the last whole packet there (sequence number, discarded count, time)."""
    from ust.consumer.output import StreamFile
    from ust.ctf.writer import last_packet_index

    for src, out in ch.streams():
        if isinstance(out, StreamFile) and out.written:
            index = last_packet_index(out.path)
            if index is not None:
                src.resume(index.packet_seq_num, index.events_discarded, index.timestamp_end)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ust-consumerd", description="the ust consumer daemon (spawned by ust-sessiond)")
    p.add_argument("--fd", type=int, required=True, help="the socket to the session daemon")
    p.add_argument("--wakeup-fd", type=int, help="the eventfd applications write when a packet completes")
    p.add_argument("--matches-fd", type=int, default=-1, help="the eventfd written when kernel trigger matches wait")
    args = p.parse_args(argv)
    os.umask(0o077)
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sessiond decides when we stop
    sock = socket.socket(fileno=args.fd)
    Consumer(sock, args.wakeup_fd, args.matches_fd).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
