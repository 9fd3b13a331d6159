"""Triggers (``ust add-trigger``): a condition, evaluated in the applications, and actions run by the daemon.

The subset of lttng's triggers that has a meaning for ust (docs/lifecycle.md, "Triggers"):
condition ``event-rule-matches`` (user tracepoints, or the python domain's log records; evaluated
as below) or ``channel-buffer-usage-ge|le`` and ``session-consumed-size-ge`` (sampled from the
consumer by ``monitor``), actions
``notify``, ``start-session``, ``stop-session``, ``rotate-session``, ``snapshot-session``, each
with a rate policy (``every:N``, ``once-after:N``).

Evaluation: each application an event rule selects gets, per matching tracepoint, one *trigger
attachment* (agent commands ``trigger_attach`` / ``trigger_detach``): a callback on the
tracepoint's fast path, with the rule's filter, that counts the match and returns "do not
record". No buffer is written; a tracepoint no trigger and no session selects stays detached,
so a process without triggers pays nothing. The agent sends the counts it gathered
(``trigger_hits``, coalesced while its thread is busy); the daemon checks them (bounded, every
number checked, only the triggers the application's user may fire) and applies the rate
policies here, where every application's matches meet.

Actions run on one daemon thread (``actions``), never on an application's worker, as the
trigger's owner would run the command (``SessionDaemon.handle``, with its uid). Notifications
are kept per owner in a ring of ``MAX_NOTIFICATIONS`` (a slow subscriber learns how many it
missed) and read by long polls (``trigger_notifications``).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass, field

from ust.daemon.rules import EventRule
from ust.daemon.sessiond.log import log

ACTIONS = {"notify": None, "start-session": "start", "stop-session": "stop", "rotate-session": "rotate",
           "snapshot-session": "snapshot_record"}
MAX_TRIGGERS = 1024  # per user
MAX_NOTIFICATIONS = 4096  # kept per user for subscribers
MAX_HIT_ENTRIES = 4096  # (trigger, event) pairs in one report of an application
MAX_PENDING_ACTIONS = 4096
MAX_CAPTURES = 16  # --capture expressions per trigger
# Match counters an application shares with the daemon (``TriggerCounters``): one 64-bit slot per
# (trigger, event name) it evaluates, at most this many per process (beyond: reported, not shared).
COUNTER_SLOTS = 4096
MAX_UNREPORTED = 1 << 32  # matches one slot may add when its process is gone (a bound, not a belief)


@dataclass
class Action:
    type: str
    session: str | None
    policy: str  # "every" or "once-after"
    count: int
    fired: int = 0
    errors: int = 0
    last_error: str | None = None

    def firings(self, before: int, after: int) -> int:
        """How many times this action runs when the trigger's matches go from ``before`` to ``after``."""
        if self.policy == "every":
            return after // self.count - before // self.count
        return 1 if before < self.count <= after else 0

    def firing_matches(self, before: int, after: int, last: int) -> list[int]:
        """The match numbers, in ``before+1 .. after``, at which this action runs: the ``last`` latest."""
        if self.policy == "every":
            first = (before // self.count + 1) * self.count
            end = after // self.count * self.count
            return list(range(max(first, end - (last - 1) * self.count), end + 1, self.count))
        return [self.count] if before < self.count <= after else []

    @property
    def spent(self) -> bool:
        return self.policy == "once-after" and self.fired > 0

    def to_json(self) -> dict:
        return {"type": self.type, "session": self.session, "rate_policy": f"{self.policy}:{self.count}",
                "fired": self.fired, "errors": self.errors, "last_error": self.last_error}


@dataclass
class Trigger:
    name: str
    uid: int
    id: int  # the daemon's number for it, what the agents report
    rule: EventRule | None  # event-rule-matches; None for the others
    actions: list[Action]
    hits: int = 0
    captures: tuple[str, ...] = ()  # --capture expressions: each notification carries their values
    # channel-buffer-usage-ge|le, session-consumed-size-ge: {"type", "session", "channel",
    # "threshold_ratio" | "threshold_size"}, and the monitor's state (ust.daemon.sessiond.monitor)
    condition: dict | None = None
    satisfied: bool = False  # at the last sample: the condition fires when this becomes true
    next_sample: float = 0.0
    # --type kernel: its instance and readers (ust.daemon.sessiond.ktriggers.KernelTriggerState), and the
    # matches its ring dropped (full: nobody saw them; lttng's discarded notifications)
    kernel: object = None
    discarded: int = 0

    @property
    def spent(self) -> bool:
        """Every action fired its once-after: the applications stop evaluating it."""
        return all(a.spent for a in self.actions)

    def to_json(self) -> dict:
        r = self.rule
        if r is None:
            return {"name": self.name, "owner_uid": self.uid, "hits": self.hits, "condition": dict(self.condition),
                    "actions": [a.to_json() for a in self.actions]}
        out = {"name": self.name, "owner_uid": self.uid, "hits": self.hits,
               "condition": {"type": "event-rule-matches", "domain": r.domain, "pattern": r.pattern,
                             "exclusions": list(r.exclusions), "filter": r.filter,
                             "loglevel_type": r.loglevel_type, "loglevel": r.loglevel,
                             "captures": list(self.captures)},
               "actions": [a.to_json() for a in self.actions]}
        if self.kernel is not None:
            k = self.kernel
            out["condition"].update({"syscall": k.syscall, "events": list(k.events),
                                     "instance": k.instance.name if k.instance is not None else None})
            out["discarded"] = self.discarded
        return out


@dataclass
class _Subscribers:
    ring: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_NOTIFICATIONS))
    last: int = 0  # sequence number of the newest notification


class TriggerTable:
    """Every trigger of the daemon, what each application evaluates, the notifications and the action thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # a notification arrived
        self.by_key: dict[tuple[int, str], Trigger] = {}  # (owner uid, name)
        self.by_id: dict[int, Trigger] = {}
        self.next_id = 1
        self.subscribers: dict[int, _Subscribers] = {}
        self.pending: collections.deque = collections.deque()
        self.dropped_actions = 0
        self.worker: threading.Thread | None = None
        self.monitor: threading.Thread | None = None  # samples the buffer conditions (sessiond.monitor)
        self.kernel_collector: threading.Thread | None = None  # takes kernel triggers' matches (sessiond.ktriggers)

    # -- the table

    def add(self, uid: int, name: str | None, rule: EventRule | None, actions: list[Action],
            captures: tuple[str, ...] = (), condition: dict | None = None) -> Trigger:
        from ust.errors import SessionError

        with self.lock:
            if sum(1 for k in self.by_key if k[0] == uid) >= MAX_TRIGGERS:
                raise SessionError(f"at most {MAX_TRIGGERS} triggers per user")
            tid = self.next_id
            self.next_id += 1
            name = name or f"trigger{tid}"
            if (uid, name) in self.by_key:
                raise SessionError(f"a trigger named {name!r} already exists")
            t = Trigger(name=name, uid=uid, id=tid, rule=rule, actions=actions, captures=tuple(captures),
                        condition=condition)
            self.by_key[(uid, name)] = t
            self.by_id[tid] = t
            return t

    def remove(self, uid: int, name: str) -> Trigger | None:
        with self.lock:
            t = self.by_key.pop((uid, name), None)
            if t is not None:
                del self.by_id[t.id]
            return t

    def visible(self, caller: int) -> list[Trigger]:
        with self.lock:
            return sorted((t for t in self.by_key.values() if caller == 0 or t.uid == caller),
                          key=lambda t: (t.uid, t.name))

    # -- what an application evaluates

    def sync_app(self, daemon, app, wait: bool = True):
        """Attach to ``app`` the triggers whose rule selects its tracepoints; detach the others. With
        ``wait=False``: sent, and a function that waits for the acknowledgements is returned (or None)."""
        if not app.alive:
            return None
        with self.lock:
            wanted: dict[tuple[int, str], tuple[str | None, tuple[str, ...]]] = {}
            for t in self.by_id.values():
                if t.rule is None or t.spent or t.rule.domain == "kernel" or not (t.uid == 0 or t.uid == app.uid):
                    continue
                for k, d in list(app.decls.items()):
                    if t.rule.matches(d["name"], d["loglevel"]):
                        wanted[(t.id, k)] = (t.rule.effective_filter(), t.captures)
            have = app.triggers_attached
            msgs = [({"cmd": "trigger_detach", "trigger": tid, "decl_key": k}, []) for (tid, k) in have
                    if (tid, k) not in wanted]
            counters = None
            for (tid, k), (flt, caps) in wanted.items():
                if (tid, k) in have:
                    continue
                if counters is None:
                    counters = TriggerCounters.of(app)
                msg = {"cmd": "trigger_attach", "trigger": tid, "decl_key": k, "filter": flt,
                       **({"captures": list(caps)} if caps else {})}
                slot = counters.slot(tid, app.decls[k]["name"]) if counters is not None else None
                fds = []
                if slot is not None:
                    msg["slot"] = slot
                    if not counters.given:  # the shared counters go with the first attachment using them
                        counters.given = True
                        msg["counters"] = COUNTER_SLOTS
                        fds = [counters.fd]
                msgs.append((msg, fds))
            app.triggers_attached = dict(wanted)
        if not msgs:
            return None
        slots = app.send_many(msgs)

        def finish() -> None:
            for ack in app.wait_many(slots, len(msgs)):
                if ack is not None and not ack.get("ok"):
                    log(f"app {app.pid}: trigger: {str(ack.get('error'))[:300]}")

        if not wait:
            return finish
        finish()
        return None

    def sync_all(self, daemon) -> None:
        """Every application, in one round trip: all sent, then all acknowledged."""
        with daemon.lock:
            apps = list(daemon.apps.values())
        for finish in [self.sync_app(daemon, app, wait=False) for app in apps]:
            if finish is not None:
                finish()

    # -- matches reported by an application

    def on_hits(self, daemon, app, msg: dict) -> None:
        """An application's ``trigger_hits``: ``[[trigger id, event name, count(, captured)], ...]``, checked
        here; ``captured``: the values of the first matches (at most MAX_CAPTURED_MATCHES, one list per match,
        one value per --capture of the trigger), each checked (``check_captured``)."""
        hits = msg.get("hits")
        if not isinstance(hits, list) or len(hits) > MAX_HIT_ENTRIES:
            log(f"app {app.pid}: bad trigger_hits (not a list of at most {MAX_HIT_ENTRIES})")
            return
        spent = False
        with self.lock:
            given = {tid for tid, _ in app.triggers_attached}  # it may report only what it evaluates
            counters = getattr(app, "trigger_counters", None)
            counted = []
            for item in hits:  # every entry checked before any counts: a bad one drops the report whole
                if not (isinstance(item, list) and len(item) in (3, 4) and _uint(item[0])
                        and isinstance(item[1], str) and len(item[1]) <= 512 and _uint(item[2]) and item[2] > 0):
                    log(f"app {app.pid}: bad trigger_hits entry")
                    return
            for item in hits:
                t = self.by_id.get(item[0])
                if t is None or item[0] not in given or t.spent or t.rule is None:
                    continue  # removed meanwhile, or never given to this process
                captured = item[3] if len(item) == 4 else []
                if not check_captured(captured, len(t.captures), item[2]):
                    log(f"app {app.pid}: bad captured values for trigger {t.name}")
                    return
                counted.append((t, item, captured))
            if counters is not None:  # what the shared counters hold beyond these is unreported
                for item in hits:
                    counters.reported(item[0], item[1], item[2])
            for t, item, captured in counted:
                spent = self._count(daemon, t, item[2], {"event": item[1], "pid": app.pid}, captured) or spent
        if spent:  # stop the evaluation where it cannot fire any more
            self.spent_changed(daemon)

    def spent_changed(self, daemon) -> None:
        """A trigger is spent: stop its evaluation everywhere (applications, kernel instances)."""
        from ust.daemon.sessiond import ktriggers

        def stop() -> None:
            self.sync_all(daemon)
            ktriggers.stop_spent(daemon)

        threading.Thread(target=stop, name="triggers-sync", daemon=True).start()

    def on_kernel_matches(self, daemon, uid: int, reply: dict) -> None:
        """A consumer's ``kernel_trigger_matches`` (ust.kernel.matcher.Matcher.take): ``{"matches": [[trigger
        id, event, count, captured], ...], "discarded": [[trigger id, records], ...]}``, checked as an
        application's report is (the consumer runs as the triggers' owner): it may only count the kernel
        triggers whose matches it was given (``uid``: its own)."""
        matches, discarded = reply.get("matches"), reply.get("discarded")
        if not (isinstance(matches, list) and len(matches) <= MAX_HIT_ENTRIES and isinstance(discarded, list)
                and len(discarded) <= MAX_HIT_ENTRIES):
            log(f"kernel triggers: bad matches from the consumer of uid {uid}")
            return
        spent = False
        with self.lock:
            def mine(tid):
                t = self.by_id.get(tid) if _uint(tid) else None
                return t if t is not None and t.kernel is not None and t.kernel.uid == uid else None

            for item in discarded:  # the rings' totals: a restarted consumer says them again
                if isinstance(item, list) and len(item) == 2 and _count_ok(item[1]) and (t := mine(item[0])):
                    t.discarded = max(t.discarded, item[1])
            counted = []
            for item in matches:
                if not (isinstance(item, list) and len(item) == 4 and isinstance(item[1], str) and len(item[1]) <= 512
                        and _uint(item[2]) and item[2] > 0):
                    log(f"kernel triggers: bad match entry from the consumer of uid {uid}")
                    return
                t = mine(item[0])
                if t is None or t.spent:
                    continue  # removed meanwhile
                if not check_captured(item[3], len(t.captures), item[2]):
                    log(f"kernel triggers: bad captured values for trigger {t.name}")
                    return
                counted.append((t, item))
            for t, item in counted:
                spent = self._count(daemon, t, item[2], {"event": item[1], "domain": "kernel"}, item[3]) or spent
        if spent:
            self.spent_changed(daemon)

    def _count(self, daemon, t: Trigger, count: int, details: dict, captured: list = ()) -> bool:
        """Under the lock: ``count`` new matches of ``t`` (``captured``: the values of the first ones); its
        rate policies decide which actions run. Whether ``t`` is spent now."""
        if t.spent:
            return False  # spent by an earlier entry of the same report
        before, t.hits = t.hits, t.hits + count
        for a in t.actions:
            n = 0 if a.spent else a.firings(before, t.hits)
            if n:
                a.fired += n
                self._queue(daemon, t, a, details, before, captured)
        return t.spent

    def on_gone(self, daemon, app) -> None:
        """``app`` is gone (its last requests were handled before this): the matches its shared counters
        hold beyond what it reported count now — a process SIGKILLed right after matching loses none
        (their captured values, which only a report carries, are unavailable)."""
        counters = getattr(app, "trigger_counters", None)
        if counters is None:
            return
        spent = False
        with self.lock:
            for (tid, event), extra in counters.unreported().items():
                t = self.by_id.get(tid)
                if t is None or t.rule is None:
                    continue
                spent = self._count(daemon, t, extra, {"event": event, "pid": app.pid}) or spent
            counters.close()
            app.trigger_counters = None
        if spent:
            self.spent_changed(daemon)

    def fire(self, daemon, t: Trigger, details: dict) -> None:
        """A condition the daemon evaluates (ust.daemon.sessiond.monitor) became true: one match."""
        with self.lock:
            if self.by_id.get(t.id) is not t or t.spent:
                return
            before, t.hits = t.hits, t.hits + 1
            for a in t.actions:
                if not a.spent and a.firings(before, t.hits):
                    a.fired += 1
                    self._queue(daemon, t, a, details, before)

    def _queue(self, daemon, t: Trigger, a: Action, details: dict, before: int = 0, captured: list = ()) -> None:
        """Under the lock: notifications are posted at once (each with the values captured at the match that
        fired it, when the report carried them); session actions go to the action thread."""
        if a.type == "notify":
            subs = self.subscribers.setdefault(t.uid, _Subscribers())
            now = time.time()
            for match in a.firing_matches(before, t.hits, MAX_NOTIFICATIONS):
                subs.last += 1
                note = {"seq": subs.last, "trigger": t.name, **details, "time": now, "hits": match}
                if t.captures:
                    i = match - before - 1  # the report's matches are before+1 .. t.hits, in order
                    note["captures"] = dict(zip(t.captures, captured[i])) if i < len(captured) else None
                subs.ring.append(note)
            self.changed.notify_all()
            return
        # A session action fired n times by one report runs once: the same command n times in a row
        # does nothing more (a session started, stopped, rotated or snapshotted just now).
        if len(self.pending) >= MAX_PENDING_ACTIONS:
            self.dropped_actions += 1
            a.errors += 1
            a.last_error = "too many actions waiting: dropped"
            return
        self.pending.append((t, a))
        if self.worker is None:
            self.worker = threading.Thread(target=self._run_actions, args=(daemon,), name="trigger-actions",
                                           daemon=True)
            self.worker.start()
        self.changed.notify_all()

    def _run_actions(self, daemon) -> None:
        while not daemon.stopping.is_set():
            with self.lock:
                while not self.pending:
                    self.changed.wait(1.0)
                    if daemon.stopping.is_set():
                        return
                t, a = self.pending.popleft()
            reply = daemon.handle({"cmd": ACTIONS[a.type], "session": a.session}, caller=t.uid)
            if not reply.get("ok"):
                with self.lock:
                    a.errors += 1
                    a.last_error = str(reply.get("error"))[:300]
                log(f"trigger {t.name}: {a.type} {a.session}: {a.last_error}")

    # -- subscribers

    def notifications(self, caller: int, after: int | None, timeout: float, names: set[str] | None) -> dict:
        """The notifications of ``caller``'s triggers after sequence ``after`` (waiting up to ``timeout``
        seconds for one); ``after`` None: none, only where the stream is now."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                subs = self.subscribers.setdefault(caller, _Subscribers())
                if after is None:
                    return {"notifications": [], "last": subs.last, "missed": 0}
                out = [n for n in subs.ring if n["seq"] > after and (names is None or n["trigger"] in names)]
                oldest = subs.ring[0]["seq"] if subs.ring else subs.last + 1
                missed = max(0, oldest - after - 1) if subs.last > after else 0
                left = deadline - time.monotonic()
                if out or missed or left <= 0:
                    return {"notifications": out, "last": subs.last, "missed": missed}
                self.changed.wait(left)


class TriggerCounters:
    """The match counters an application shares with the daemon: a memfd of COUNTER_SLOTS 64-bit slots,
    one per (trigger, event name) it evaluates, given with its first ``trigger_attach`` (SCM_RIGHTS). The
    agent adds each match to its slot as it counts it for its next report (under the same lock), so
    when the process is gone — SIGKILLed before its agent's thread sent the last matches — what the
    slots hold beyond what it reported is the matches the daemon never heard of (``on_gone``). The
    application can write anything there: a slot is believed only as far as MAX_UNREPORTED matches
    more than its reports, as a report is (a hostile process could as well report them)."""

    def __init__(self) -> None:
        import mmap

        self.fd = os.memfd_create("ust-trigger-counters", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, COUNTER_SLOTS * 8)
            self.map = mmap.mmap(self.fd, COUNTER_SLOTS * 8)
        except BaseException:
            os.close(self.fd)
            raise
        self.slots: dict[tuple[int, str], int] = {}  # (trigger id, event name) -> slot, never reused
        self.sent: dict[tuple[int, str], int] = {}  # what the process reported for each
        self.given = False  # the memfd went with an attachment

    @classmethod
    def of(cls, app) -> "TriggerCounters | None":
        """``app``'s counters, made at its first attachment (None if they cannot be)."""
        counters = getattr(app, "trigger_counters", None)
        if counters is None and app.alive:
            try:
                counters = app.trigger_counters = cls()
            except OSError as exc:
                log(f"app {app.pid}: no shared trigger counters ({exc}): matches are reported only")
        return counters

    def slot(self, trigger: int, event: str) -> int | None:
        key = (trigger, event)
        if key not in self.slots and len(self.slots) < COUNTER_SLOTS:
            self.slots[key] = len(self.slots)
        return self.slots.get(key)

    def reported(self, trigger: int, event: str, count: int) -> None:
        key = (trigger, event)
        if key in self.slots:
            self.sent[key] = self.sent.get(key, 0) + count

    def unreported(self) -> dict[tuple[int, str], int]:
        """(trigger id, event) -> matches the slots hold beyond the reports (bounded)."""
        import struct

        out = {}
        for key, slot in self.slots.items():
            (total,) = struct.unpack_from("<Q", self.map, slot * 8)
            extra = total - self.sent.get(key, 0)
            if 0 < extra <= MAX_UNREPORTED:
                out[key] = extra
        return out

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def check_captured(captured: object, width: int, count: int) -> bool:
    """An application's captured values: a list of at most min(count, MAX_CAPTURED_MATCHES) matches, each a
    list of ``width`` values, each None, an integer of 64 bits, a float, a string of at most
    MAX_CAPTURE_STRING characters, or a list of at most MAX_CAPTURE_ITEMS of those scalars."""
    from ust.filter import MAX_CAPTURE_ITEMS, MAX_CAPTURED_MATCHES

    if not isinstance(captured, list) or len(captured) > min(count, MAX_CAPTURED_MATCHES):
        return False
    if captured and width == 0:
        return False
    for match in captured:
        if not isinstance(match, list) or len(match) != width:
            return False
        for v in match:
            if isinstance(v, list):
                if len(v) > MAX_CAPTURE_ITEMS or not all(_captured_scalar(x) for x in v):
                    return False
            elif not _captured_scalar(v):
                return False
    return True


def _captured_scalar(v: object) -> bool:
    from ust.filter import MAX_CAPTURE_STRING

    if v is None or isinstance(v, float):
        return True
    if isinstance(v, int) and not isinstance(v, bool):
        return -(1 << 63) <= v < 1 << 64
    return isinstance(v, str) and len(v) <= MAX_CAPTURE_STRING


def _count_ok(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63


def _uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32

