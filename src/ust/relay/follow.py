"""``ust view --live``: follow a live session through the viewer protocol and
print its events as ``ust view`` does, in time order over every stream, as
soon as no stream can still bring an earlier one.

The follower mirrors what it fetches into a private temporary directory (one
trace directory per trace of the session: its metadata and its stream files).
It prints in rounds: the *horizon* is the earliest time any open stream may
still write at (the end of its last packet fetched, or of its last
inactivity beacon); every event before the horizon is printed, in order, from
a round directory holding, per stream, the packets not yet printed whole.
New streams (a new CPU, a new per-PID process) join the next round; the
follower ends when the relay says the session is destroyed and every stream
was read to its end.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

from . import viewer_abi as va
from . import wire
from .viewer import LiveClient, LiveStream

DEFAULT_LIVE_PORT = 5344
POLL = 0.05  # seconds between two rounds that found nothing new


def parse_live_url(url: str) -> tuple[str, int, str, str]:
    """``net://HOST[:PORT]/host/HOSTNAME/SESSION`` -> (host, port, hostname, session)."""
    m = re.fullmatch(r"net6?://(\[[^\]]+\]|[^:/\[\]]+)(?::(\d+))?/host/([^/]+)/([^/]+)/?", url)
    if not m:
        raise wire.WireError(f"invalid live URL {url!r}: expected net://HOST[:PORT]/host/HOSTNAME/SESSION")
    return m.group(1).strip("[]"), int(m.group(2) or DEFAULT_LIVE_PORT), m.group(3), m.group(4)


class _Stream:
    def __init__(self, info: LiveStream, directory: str):
        self.info = info
        self.directory = directory
        self.path = os.path.join(directory, info.channel)
        self.packets: list[tuple[int, int, int]] = []  # (offset in the mirror, size, timestamp_end) not printed whole
        self.size = 0
        self.last_end = 0  # the horizon this stream allows
        self.hung_up = False


class Follower:
    def __init__(self, url: str, timeout: float = 30.0):
        host, port, self.hostname, self.session_name = parse_live_url(url)
        try:
            self.client = LiveClient(host, port, timeout)
        except OSError as exc:
            raise wire.WireError(f"cannot reach the relay's live port {host}:{port}: "
                                 f"{exc.strerror or exc}") from None
        self.mirror = tempfile.mkdtemp(prefix="ust-live-")
        self.streams: dict[int, _Stream] = {}
        self.metadata: dict[int, tuple[LiveStream, str]] = {}  # trace id -> (its metadata stream, directory)
        self.horizon = -1
        self.session_id = None
        self.ended = False

    def close(self) -> None:
        self.client.close()
        shutil.rmtree(self.mirror, ignore_errors=True)

    def attach(self, wait: float = 0.0) -> None:
        """Attach the session (waiting up to ``wait`` seconds for it to appear)."""
        if self.client.create_session() != va.CREATE_SESSION_OK:
            raise wire.WireError("the relay refused a viewer session")
        deadline = time.monotonic() + wait
        while True:
            found = [s for s in self.client.list_sessions()
                     if s.hostname == self.hostname and s.name == self.session_name]
            if found:
                break
            if time.monotonic() >= deadline:
                raise wire.WireError(f"no live session {self.session_name!r} of host {self.hostname!r} on the relay")
            time.sleep(POLL)
        self.session_id = found[0].id
        status, streams = self.client.attach(self.session_id)
        if status != va.ATTACH_OK:
            raise wire.WireError(f"cannot attach session {self.session_name!r} (status {status})")
        self._add(streams)

    def _add(self, streams: list[LiveStream]) -> None:
        for s in streams:
            # the stream's path is host/session-dir/trace-path: mirror the trace path only
            parts = [wire.check_part(p, "trace path") for p in s.path.split("/")[2:]]
            directory = os.path.join(self.mirror, *parts) if parts else self.mirror
            os.makedirs(directory, exist_ok=True)
            if s.metadata:
                self.metadata[s.trace_id] = (s, directory)
                self._fetch_metadata(s.trace_id)
            else:
                wire.check_part(s.channel, "stream name")
                self.streams[s.id] = _Stream(s, directory)

    def _fetch_metadata(self, trace_id: int) -> None:
        info, directory = self.metadata[trace_id]
        path = os.path.join(directory, "metadata")
        while True:
            status, data = self.client.metadata(info.id)
            if status != va.METADATA_OK:
                return
            with open(path, "ab") as f:
                f.write(data)

    def poll(self) -> bool:
        """Fetch what the relay has; True if anything new came."""
        got = False
        for st in list(self.streams.values()):
            while not st.hung_up:
                index = self.client.next_index(st.info.id)
                if index["flags"] & va.FLAG_NEW_METADATA:
                    self._fetch_metadata(st.info.trace_id)
                if index["flags"] & va.FLAG_NEW_STREAM:
                    self._new_streams()
                status = index["status"]
                if status == va.INDEX_OK:
                    size = index["packet_size"] // 8
                    pstatus, flags, data = self.client.packet(st.info.id, index["offset"], size)
                    if flags & va.FLAG_NEW_METADATA:
                        self._fetch_metadata(st.info.trace_id)
                    if pstatus != va.PACKET_OK:
                        raise wire.WireError(f"the relay could not send a packet of {st.info.channel}")
                    with open(st.path, "ab") as f:
                        f.write(data)
                    st.packets.append((st.size, size, index["timestamp_end"]))
                    st.size += size
                    st.last_end = max(st.last_end, index["timestamp_end"])
                    got = True
                    continue
                if status == va.INDEX_INACTIVE:
                    st.last_end = max(st.last_end, index["timestamp_end"])
                elif status == va.INDEX_HUP:
                    st.hung_up = True
                    got = True
                elif status == va.INDEX_ERR:
                    raise wire.WireError(f"the relay lost stream {st.info.channel}")
                break
        status = self._new_streams()
        if status == va.NEW_STREAMS_HUP and all(s.hung_up for s in self.streams.values()):
            self.ended = True
            got = True
        return got

    def _new_streams(self) -> int:
        status, streams = self.client.new_streams(self.session_id)
        if streams:
            self._add(streams)
        return status

    def clock_horizon(self) -> float:
        """The horizon in cycles of the streams' clock (inf once the session ended)."""
        open_ends = [s.last_end for s in self.streams.values() if not s.hung_up]
        if self.ended or not open_ends:
            return float("inf") if self.ended else -1
        return min(open_ends)

    def round_dir(self) -> str | None:
        """A trace tree of every packet not printed whole yet, or None."""
        if not any(s.packets for s in self.streams.values()):
            return None
        root = os.path.join(self.mirror, ".round")
        shutil.rmtree(root, ignore_errors=True)
        described = set()
        for _trace, (_info, directory) in self.metadata.items():
            # A trace announced before its metadata came (the sender adds the metadata
            # stream, then sends its text) is left out of this round: it has no packet yet.
            if not os.path.exists(os.path.join(directory, "metadata")):
                continue
            described.add(directory)
            rel = os.path.relpath(directory, self.mirror)
            dest = os.path.join(root, rel)
            os.makedirs(dest, exist_ok=True)
            shutil.copyfile(os.path.join(directory, "metadata"), os.path.join(dest, "metadata"))
        for s in self.streams.values():
            if not s.packets:
                continue
            if s.directory not in described:
                continue  # kept (printed_up_to skips it) until its metadata comes
            dest = os.path.join(root, os.path.relpath(s.directory, self.mirror), s.info.channel)
            with open(s.path, "rb") as src, open(dest, "wb") as out:
                src.seek(s.packets[0][0])
                out.write(src.read(s.size - s.packets[0][0]))
        return root

    def printed_up_to(self, horizon: float) -> None:
        """Forget the packets that end before ``horizon`` (all their events printed)."""
        for s in self.streams.values():
            if os.path.exists(os.path.join(s.directory, "metadata")):
                s.packets = [p for p in s.packets if p[2] >= horizon]


def follow(url: str, fmt, write, flush, filt=None, wait: float = 0.0) -> int:
    """Print a live session's events until it is destroyed. ``fmt``: a TextFormat.

    Each round reads what the relay has so far (a trace directory of whole
    packets) through the reader's one pipeline (``text_batches``) and prints
    the events in [the last round's horizon, this round's): the lines are
    ``format_batch``'s, whose state carries the previous event's time (the
    deltas) from one round to the next, as ``ust view`` prints one trace."""
    from ust.ctf import format_batch, open_traces, ordered_streams, text_batches

    f = Follower(url)
    try:
        f.attach(wait)
        printed_ns = None  # the horizon of the last round, in ns
        state = [None, 0, 0, ""]  # format_batch's: the previous event's time, the second's text
        while True:
            got = f.poll()
            horizon = f.clock_horizon()
            root = f.round_dir() if horizon >= 0 else None
            if root is not None:
                traces = open_traces([root])
                limit = None if horizon == float("inf") else traces[0].cycles_to_ns(int(horizon))
                # [previous limit, limit): an event at the horizon itself may still have
                # a twin in a packet not fetched yet (a packet may begin where the last ended)
                for keys, cycs, txts, origin in text_batches(ordered_streams(traces), fmt, None, True, filt):
                    o = origin or 0
                    pick = [i for i, k in enumerate(keys)
                            if (printed_ns is None or k + o >= printed_ns) and (limit is None or k + o < limit)]
                    if not pick:
                        continue
                    lines = format_batch([keys[i] for i in pick], [cycs[i] for i in pick],
                                         [txts[i] for i in pick], origin, fmt, state)
                    if lines:
                        write("".join(lines))
                        flush()
                if limit is not None:
                    printed_ns = limit if printed_ns is None else max(printed_ns, limit)
                f.printed_up_to(horizon)
            if f.ended:
                return 0
            if not got:
                time.sleep(POLL)
    finally:
        f.close()
