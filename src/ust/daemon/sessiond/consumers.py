"""The session daemon's consumers: one ust-consumerd per session owner
(``ust.daemon.consumer_link`` spawns and supervises it), and what their
answers say about a session's losses."""

from __future__ import annotations

import os

from ust.daemon import protocol
from ust.daemon.consumer_link import ConsumerLink, Owner
from ust.errors import SessionError, UstError


def consumer_uid(owner_uid: int) -> int:
    """Whose credentials write a session's files: its owner's (a daemon not
    running as root has only its own)."""
    return owner_uid if os.getuid() == 0 else os.getuid()


def link(daemon, s) -> ConsumerLink:
    """The consumer of ``s``'s owner, started on first use."""
    return link_for(daemon, s.uid)


def link_for(daemon, owner_uid: int) -> ConsumerLink:
    """The consumer of the user ``owner_uid`` (a session's owner, a kernel trigger's), started on first use."""
    if not daemon.use_consumer:
        raise SessionError("this session daemon runs without a consumer")
    uid = consumer_uid(owner_uid)
    with daemon.links_lock:
        found = daemon.links.get(uid)
        if found is None:
            if daemon.stopping.is_set():
                raise SessionError("the session daemon is stopping")
            owner = None if uid == os.getuid() else Owner(uid)
            found = ConsumerLink(daemon.rundir, owner)
            found.start()
            if found.pid is None:
                found.stop()
                raise SessionError(f"cannot start a consumer daemon for uid {uid} (see the session daemon's log)")
            daemon.links[uid] = found
    return found


def link_if_running(daemon, s) -> ConsumerLink | None:
    with daemon.links_lock:
        return daemon.links.get(consumer_uid(s.uid))


def count(value: object) -> int:
    """A counter from a consumer's answer: a non-negative int, else nothing."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64 else 0


def consumer_stats(consumer: ConsumerLink) -> dict:
    """{trace key: {channel: [counters per buffer]}} from a consumer, of the expected shape only
    (a consumer runs as the session's owner: its answers are checked like any peer's)."""
    reply, fds = consumer.call({"cmd": "stats"})
    protocol.close_fds(fds)
    traces = reply.get("traces")
    if not isinstance(traces, dict):
        return {}
    return {k: {c: [b for b in bufs if isinstance(b, dict)] for c, bufs in chans.items() if isinstance(bufs, list)}
            for k, chans in traces.items() if isinstance(chans, dict)}


USAGE_KEYS = ("capacity", "highest", "lowest", "consumed")


def channel_usage(consumer: ConsumerLink, traces: list[str]) -> dict[str, list[dict]]:
    """{channel: [Channel.usage() of each of these traces]} (bytes: each buffer's capacity, the highest and
    lowest unread, the consumed total) from a consumer, the entries of the expected shape and order only."""
    reply, fds = consumer.call({"cmd": "monitor", "traces": traces})
    protocol.close_fds(fds)
    got = reply.get("traces")
    out: dict[str, list[dict]] = {}
    for key in traces:
        chans = got.get(key) if isinstance(got, dict) else None
        if not isinstance(chans, dict):
            continue
        for name, u in chans.items():
            if not (isinstance(name, str) and isinstance(u, dict)):
                continue
            u = {k: count(u.get(k)) for k in USAGE_KEYS}
            if u["lowest"] <= u["highest"] <= u["capacity"]:
                out.setdefault(name, []).append(u)
    return out


def losses(daemon, s) -> dict:
    """The session's losses over every buffer so far: ``lost``, the events
    discarded (as the trace's discarded counts say), ``lost_args``, those whose
    arguments did not fit their tracepoint's fields, and ``overwritten``, the
    packets an overwrite-mode buffer lost before anyone read them (their events
    were never counted: only their number is known). The consumer's answer is
    checked like any peer's (it runs as the session's owner)."""
    lost = {"lost": 0, "lost_args": 0, "overwritten": 0}
    consumer = link_if_running(daemon, s)
    if not s.traces or consumer is None:
        return lost
    try:
        stats = consumer_stats(consumer)
    except UstError:
        return lost
    from ust.ctf.writer import lost_events

    keys = {t.key for t in s.traces.values()}
    for key, chans in stats.items():
        if key in keys:
            for bufs in chans.values():
                for b in bufs:
                    counts = {k: count(v) for k, v in b.items() if k.startswith(("lost_", "packets_"))}
                    lost["lost"] += lost_events(counts)
                    lost["lost_args"] += counts.get("lost_args", 0)
                    lost["overwritten"] += counts.get("packets_overwritten", 0)
    return lost
