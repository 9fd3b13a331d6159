"""Buffer-usage and consumed-size trigger conditions: sampled from the consumers, evaluated here.

lttng's conditions ``channel-buffer-usage-ge`` / ``-le`` (a channel's ring buffers are at least /
at most so full: ``threshold_ratio`` of a buffer's capacity, or ``threshold_size`` bytes) and
``session-consumed-size-ge`` (the session's consumer has written at least ``threshold_size``
bytes since the session began). As LTTng's monitor timer, one daemon thread samples each watched
channel every ``monitor_timer`` µs of that channel (``enable-channel --monitor-timer``, 1 s by
default, 0: never; at least MIN_PERIOD apart), one consumer round trip per session
(``consumerd.cmd_monitor``: each buffer's unread bytes, from the ring's own write and read
positions, and what the consumer wrote; its answer is checked, ``consumers.channel_usage``).

A channel's usage is that of its fullest buffer for ``-ge`` and of its emptiest for ``-le``, over
every CPU and every owner (per-UID or per-PID traces). A condition fires when it *becomes* true:
at the first sample where it holds after one where it did not (so a flight recorder that stays
full fires once, and again only after it went under the threshold). The firing is one match of
the trigger: its rate policies and actions are those of ``ust.daemon.sessiond.triggers``.
"""

from __future__ import annotations

import threading
import time

from ust.daemon.sessiond import consumers
from ust.daemon.sessiond.log import log
from ust.errors import UstError

CONDITIONS = ("channel-buffer-usage-ge", "channel-buffer-usage-le", "session-consumed-size-ge")
MIN_PERIOD = 0.1  # seconds between two samples of a channel, whatever its monitor timer
IDLE_PERIOD = 1.0  # at most, between two looks at the trigger table

_started_lock = threading.Lock()


def watch(daemon) -> None:
    """Start the monitor thread if it is not running (it ends when no trigger needs it)."""
    table = daemon.triggers
    with _started_lock:
        if table.monitor is not None and table.monitor.is_alive():
            return
        table.monitor = threading.Thread(target=_loop, args=(daemon,), name="trigger-monitor", daemon=True)
        table.monitor.start()


def _loop(daemon) -> None:
    table = daemon.triggers
    while not daemon.stopping.is_set():
        with table.lock:
            watched = [t for t in table.by_id.values() if t.condition is not None and not t.spent]
        if not watched:
            with _started_lock:
                with table.lock:
                    if not any(t.condition is not None and not t.spent for t in table.by_id.values()):
                        table.monitor = None
                        return
            continue
        now = time.monotonic()
        groups: dict[tuple[int, str], list] = {}
        for t in watched:
            if t.next_sample <= now:
                groups.setdefault((t.uid, t.condition["session"]), []).append(t)
        for (uid, name), triggers in groups.items():
            sample = _sample(daemon, uid, name)
            for t in triggers:
                period = _period(t, sample)
                t.next_sample = now + (period or IDLE_PERIOD)
                if sample is None or period is None:
                    continue  # no such session (yet), not active, or this channel is not monitored
                result = evaluate(t.condition, sample)
                if result is None:
                    continue
                satisfied, details = result
                if satisfied and not t.satisfied:
                    table.fire(daemon, t, details)
                t.satisfied = satisfied
        nxt = min((t.next_sample for t in watched), default=now + IDLE_PERIOD)
        daemon.stopping.wait(min(IDLE_PERIOD, max(0.01, nxt - time.monotonic())))


def _sample(daemon, uid: int, name: str) -> dict | None:
    """{"usage": {channel: [usage per trace]}, "timers": {channel: µs}} of the session ``name`` that
    ``uid`` sees, or None when it does not exist, is not active, or its consumer is not running."""
    with daemon.lock:
        s = daemon.sessions.get(name)
    if s is None or not daemon.visible(s, uid) or not s.active:
        return None
    if not s.lock.acquire(timeout=IDLE_PERIOD):
        return None  # a command holds it: next round
    try:
        if s.destroyed or not s.active or not s.traces:
            return None
        keys = [t.key for t in s.traces.values()]
        timers = {c.name: c.monitor_timer for c in s.channels.values()}
        link = consumers.link_if_running(daemon, s)
    finally:
        s.lock.release()
    if link is None:
        return None
    try:
        return {"usage": consumers.channel_usage(link, keys), "timers": timers}
    except UstError as exc:
        log(f"session {name}: buffer usage not sampled: {exc}")
        return None
    except Exception as exc:  # a bug must not end the monitor thread for every trigger
        log(f"session {name}: buffer usage not sampled: {type(exc).__name__}: {exc}")
        return None


def _period(t, sample: dict | None) -> float | None:
    """Seconds until the trigger's next sample: its channel's monitor timer (a session's condition: the
    shortest of its channels'); None when that is 0 (never sampled, as lttng's)."""
    if sample is None:
        return IDLE_PERIOD
    timers = sample["timers"]
    if t.condition["type"] == "session-consumed-size-ge":
        on = [v for v in timers.values() if v]
        us = min(on) if on else 0
    else:
        us = timers.get(t.condition["channel"], 0)
    return max(MIN_PERIOD, us / 1e6) if us else None


def evaluate(cond: dict, sample: dict) -> tuple[bool, dict] | None:
    """Whether ``cond`` holds in ``sample``, and what the notification says; None: nothing to evaluate
    (the channel has no buffers yet)."""
    usage = sample["usage"]
    session = cond["session"]
    if cond["type"] == "session-consumed-size-ge":
        consumed = sum(u["consumed"] for traces in usage.values() for u in traces)
        return consumed >= cond["threshold_size"], {"session": session, "consumed_size": consumed}
    traces = usage.get(cond["channel"])
    if not traces:
        return None
    capacity = traces[0]["capacity"]
    threshold = cond["threshold_size"] if cond.get("threshold_ratio") is None else cond["threshold_ratio"] * capacity
    if cond["type"] == "channel-buffer-usage-ge":
        used = max(u["highest"] for u in traces)
        holds = used >= threshold
    else:
        used = min(u["lowest"] for u in traces)
        holds = used <= threshold
    return holds, {"session": session, "channel": cond["channel"], "buffer_usage": used,
                   "buffer_capacity": capacity, "buffer_usage_ratio": round(used / capacity, 6) if capacity else 0.0}
