"""The in-app agent: one daemon thread per reachable session daemon.

Nothing here runs in the application's threads except ``start()`` (creates a
thread) and the registry callback (queues a declaration and pokes a pipe).
The application never waits for a daemon — except under ``ust run``
(``UST_AGENT_SYNC=1``), where tracing must start at the program's first line:
then ``start()`` waits (at most SYNC_TIMEOUT) for the registration, and each
tracepoint declaration waits for the daemon to have enabled it.

Per connection the agent keeps:
  channels  key -> (Channel, session, shared, buffers)
  attached  (key, decl_key) -> (event_id, [handles], filter)
Commands from the sessiond are idempotent, so after a fork the child (which
inherits its parent's shared per-UID mappings) re-registers and is told the
same things again without recording an event twice.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time


from ust.agent._tool import is_tool
from ust.daemon import paths, protocol
from ust.daemon.protocol import ConnectionClosed
from ust.instrument import forksafe, ownthread

SYNC_TIMEOUT = 5.0


def _debug(msg: str) -> None:
    if os.environ.get("UST_AGENT_DEBUG"):
        print(f"ust-agent[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def _registry():
    try:
        from ust.instrument.registry import REGISTRY
    except ImportError:
        return None
    return REGISTRY


def _procname() -> str:
    try:
        with open("/proc/self/comm") as f:
            return f.read().strip() or "python"
    except OSError:
        return os.path.basename(sys.executable) or "python"


def _handle_key(handle: object) -> str:
    return protocol.decl_key(protocol.decl_to_json(handle.decl))


class Agent:
    def __init__(self, inherited: dict | None = None):
        self.sync = os.environ.get("UST_AGENT_SYNC") == "1"
        self.retry = float(os.environ.get("UST_AGENT_RETRY", "1.0"))
        self.lock = forksafe.Lock()
        self.handles: dict[str, list] = {}  # decl_key -> handles
        self.decls: dict[str, dict] = {}  # decl_key -> decl json
        self.conns: list[Connection] = []
        self.dead = False  # set in a forked child: this agent's threads do not exist there
        inherited = inherited or {}
        for rundir in paths.agent_rundirs():
            self.conns.append(Connection(self, rundir, inherited.get(rundir)))

    def start(self) -> None:
        reg = _registry()
        if reg is not None:
            for h in reg.subscribe(self._declared):
                self._add_handle(h)
        for c in self.conns:
            c.adopt_triggers()  # after a fork: the parent's trigger evaluation goes on in this process
            c.thread.start()
        if self.sync:
            deadline = time.monotonic() + SYNC_TIMEOUT
            for c in self.conns:
                c.registered.wait(max(0.0, deadline - time.monotonic()))

    def _add_handle(self, h: object) -> str | None:
        try:
            d = protocol.decl_to_json(h.decl)
        except Exception:
            return None
        k = protocol.decl_key(d)
        with self.lock:
            self.handles.setdefault(k, []).append(h)
            new = k not in self.decls
            self.decls[k] = d
        return k if new else None

    def _declared(self, handle: object) -> None:
        """REGISTRY callback, in the declaring thread: queue, never block (but in sync mode)."""
        if self.dead:
            return
        try:
            k = self._add_handle(handle)
            if k is None:
                # Same declaration again: attach the new handle where its twin is.
                for c in self.conns:
                    c.post(("twin", handle))
                return
            waits = []
            # A probe installed by a daemon command declares in an agent thread: it cannot wait for itself.
            sync = self.sync and not threading.current_thread().name.startswith("ust-agent:")
            for c in self.conns:
                ev = threading.Event() if sync else None
                c.post(("declare", k, ev))
                if ev is not None and c.connected.is_set():
                    waits.append(ev)
            deadline = time.monotonic() + SYNC_TIMEOUT
            for ev in waits:
                ev.wait(max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # never let tracing break the application
            _debug(f"declare failed: {exc}")

    def snapshot_for_fork(self) -> dict:
        """In the child after fork: keep the shared mappings, drop the private ones."""
        out = {}
        for c in self.conns:
            out[c.rundir] = c.fork_state()
        return out


FLUSH_AT_EXIT = 1.0  # seconds an exiting process may wait for its last trigger matches to be sent
MAX_CAPTURED_BYTES = 256 << 10  # of captured values in one report (a message is at most 1 MiB)


class Connection:
    """The agent's link with one session daemon, in its own thread."""

    def __init__(self, agent: Agent, rundir: str, inherited: dict | None):
        self.agent = agent
        self.rundir = rundir
        self.sock: socket.socket | None = None
        self.registered = threading.Event()  # the first attempt is over (sync start waits on it)
        self.connected = threading.Event()  # registered with a daemon right now
        self.outbox: list = []
        self.outbox_lock = forksafe.Lock()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.seq = 0
        self.waiters: dict[int, threading.Event] = {}
        self.probes_told = 0  # the generation of the probe states the daemon was last told (probes.status_for)
        inherited = inherited or {}
        self.channels: dict[str, tuple] = inherited.get("channels", {})
        self.attached: dict[tuple[str, str], tuple[int, list, object]] = inherited.get("attached", {})
        self.confirmed: set | None = set() if inherited else None
        self.wakeup_fd: int = inherited.get("wakeup_fd", -1)
        # Triggers (ust.daemon.sessiond.triggers): one callback per tracepoint declaration, on a channel of
        # its own that is never written; the matches it counts wait for this thread in the shared counters
        # (below) or, for a trigger without a slot, in trigger_hits.
        # A forked child evaluates its parent's triggers from the fork on (adopt_triggers), counting in its
        # own name; once registered, it keeps those the daemon attached again (trigger_confirmed).
        self.trigger_channel = inherited.get("trigger_channel")
        # decl key -> {trigger id: (filter, captures)}
        self.triggers: dict[str, dict[int, tuple]] = inherited.get("triggers", {})
        self.trigger_confirmed: set | None = set() if self.triggers else None  # (trigger id, decl key)
        self.trigger_handles: dict[str, list] = {}  # decl key -> handles its callback is attached to
        self.trigger_hits: dict[tuple[int, str], int] = {}  # (trigger id, event name) -> matches not sent
        self.trigger_captured: dict[tuple[int, str], list] = {}  # idem -> values of the first ones (--capture)
        self.trigger_hits_lock = forksafe.Lock()
        # The match counters shared with the daemon (ust.daemon.sessiond.triggers.TriggerCounters): each
        # match is counted in its (trigger, event)'s slot (each report says what the slots grew by), which
        # the daemon reads when this process is gone, so a SIGKILL right after matching loses none. Not inherited: a forked child counts in its
        # own, given when it registers (until then, its matches are only in its reports).
        self.trigger_counts = None  # memoryview of 64-bit slots
        self.trigger_slots: dict[tuple[int, str], int | None] = {}  # (trigger id, decl key) -> slot
        self.trigger_slot_keys: dict[int, tuple[int, str]] = {}  # slot -> (trigger id, event name)
        self.trigger_sent: dict[int, int] = {}  # slot -> its value the reports said so far
        self.trigger_dirty = False  # matches counted since the last report (the dict's or a slot's)
        # ust's own: none of its calls is recorded (instrument/ownthread.py)
        self.thread = ownthread.Thread(target=self._run, name=f"ust-agent:{rundir}", daemon=True)

    # -- called from other threads ----------------------------------------------

    def post(self, item: tuple) -> None:
        with self.outbox_lock:
            self.outbox.append(item)
        if self.agent.dead:
            return
        try:
            os.write(self.wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def post_from_tracepoint(self, item: tuple) -> None:
        """``post`` from inside a tracepoint call (a trigger's callback): the wake-up keeps the GIL, so the
        agent's thread cannot run, and the daemon cannot act on the match, before the call has recorded
        the event in the sessions (the C core records right after the callbacks, with no Python between):
        a trigger that snapshots a flight recorder gets the event that fired it."""
        with self.outbox_lock:
            self.outbox.append(item)
        if not self.agent.dead:
            _WAKE[0](self.wake_w)

    def fork_state(self) -> dict:
        channels = {k: v for k, v in self.channels.items() if v[2]}
        attached = {}
        for (key, dk), (eid, handles, flt) in self.attached.items():
            if key in channels:
                attached[(key, dk)] = (eid, handles, flt)
            else:
                ch = self.channels.get(key)
                for h in handles:
                    try:
                        h.tp.detach(ch[0])
                    except Exception:
                        pass
        triggers = {dk: dict(t) for dk, t in self.triggers.items()}
        self._detach_triggers()  # the parent's callbacks count for the parent: the child attaches its own
        return {"channels": channels, "attached": attached, "wakeup_fd": self.wakeup_fd,
                "triggers": triggers, "trigger_channel": self.trigger_channel if triggers else None}

    def adopt_triggers(self) -> None:
        """In a forked child, before its agent thread runs: attach its own callbacks for the triggers its
        parent evaluated, so that a match right after the fork counts (reported once registered)."""
        for dk in list(self.triggers):
            self._attach_trigger(dk)

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        path = paths.socket_path(self.rundir)
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                self.sock.connect(path)
            except OSError:
                self._close()
                if self.agent.sync and not self.registered.is_set():
                    self.registered.set()  # no daemon: do not hold the application
                self._drop_all()
                time.sleep(self.agent.retry)
                continue
            try:
                self._session()
            except (OSError, ConnectionClosed, protocol.ProtocolError) as exc:
                _debug(f"connection to {path} lost: {exc}")
            except Exception as exc:
                _debug(f"agent error: {exc!r}")
            self._close()
            self._drop_all()
            time.sleep(self.agent.retry)

    def _close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def _send(self, msg: dict) -> int:
        self.seq += 1
        protocol.send_msg(self.sock, {**msg, "seq": self.seq})
        return self.seq

    def _session(self) -> None:
        with self.agent.lock:
            decls = list(self.agent.decls.values())
            known = set(self.agent.decls)
        with self.outbox_lock:  # declarations queued so far are in this registration
            self.outbox = [x for x in self.outbox if x[0] != "declare" or x[1] not in known or x[2] is not None]
        reg_seq = self._send({
            "cmd": "register", "pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(),
            "procname": _procname(), "token": os.environ.get("UST_RUN_TOKEN"), "tracepoints": decls,
            "cmdline": " ".join(getattr(sys, "orig_argv", sys.argv))[:512],
        })
        while True:
            probes = sys.modules.get("ust.instrument.probes")  # (never imported: no probe to look after)
            look_again = probes.PROBES.look_again_in() if probes is not None else None
            r, _, _ = select.select([self.sock, self.wake_r], [], [], look_again)
            if look_again is not None:  # a probed module was being imported: probe it once it is whole
                probes.PROBES.look_again()
            if self.wake_r in r:
                try:
                    os.read(self.wake_r, 4096)
                except BlockingIOError:
                    pass
                with self.outbox_lock:
                    items, self.outbox = self.outbox, []
                for item in items:
                    self._outgoing(item)
            if self.sock in r:
                msg, fds = protocol.recv_msg(self.sock)
                try:
                    if "re" in msg:
                        self._reply(msg, reg_seq)
                    else:
                        self._command(msg, fds)
                finally:
                    protocol.close_fds(fds)

    def _outgoing(self, item: tuple) -> None:
        if item[0] == "declare":
            _, k, ev = item
            d = self.agent.decls.get(k)
            seq = self._send({"cmd": "declare", "tracepoints": [d]})
            if ev is not None:
                self.waiters[seq] = ev
        elif item[0] == "trigger_hits":
            with self.trigger_hits_lock:
                hits, captured = self._take_trigger_hits()
                more = self.trigger_dirty  # a slot grew by more than a report says: the rest next
            if hits:
                self._send({"cmd": "trigger_hits", "hits": _hits_report(hits, captured)})
            if more:
                self.post(("trigger_hits",))
            if len(item) > 1:
                item[1].set()  # flush_triggers waits for it
        elif item[0] == "probe_status":
            # A probe's state changed since the daemon's last probe set (its module imported later): said
            # after the declarations of its events, queued before this, so that the daemon has attached them
            # when it lists the probe as installed.
            probes = sys.modules.get("ust.instrument.probes")
            report = probes.status_for(self.rundir) if probes is not None else None
            if report is not None and report["generation"] > self.probes_told:
                self.probes_told = report["generation"]
                self._send({"cmd": "probe_status", **report})
        elif item[0] == "twin":
            h = item[1]
            k = _handle_key(h)
            if k in self.triggers and h not in self.trigger_handles.get(k, ()):
                self._attach_trigger(k)
            for (key, dk), (eid, handles, flt) in self.attached.items():
                if dk == k and h not in handles:
                    self._attach_one(h, self.channels[key][0], eid, flt)
                    handles.append(h)

    def _reply(self, msg: dict, reg_seq: int) -> None:
        seq = msg.get("re")
        if seq == reg_seq:
            if not msg.get("ok"):
                _debug(f"registration refused: {msg.get('error')}")
            if self.confirmed is not None:
                # After a fork: what the daemon did not confirm is not ours any more.
                for key in [k for k in self.attached if k not in self.confirmed]:
                    self._detach(key)
                for key in [k for k in self.channels if not any(a[0] == k for a in self.attached)]:
                    self.channels.pop(key, None)
                self.confirmed = None
            if self.trigger_confirmed is not None:
                # The same for the inherited triggers (the daemon attached the child's before answering).
                for dk, wanted in list(self.triggers.items()):
                    for tid in [t for t in wanted if (t, dk) not in self.trigger_confirmed]:
                        self._cmd_trigger_detach({"trigger": tid, "decl_key": dk}, [])
                self.trigger_confirmed = None
            self.connected.set()
            self.registered.set()
            return
        ev = self.waiters.pop(seq, None)
        if ev is not None:
            ev.set()

    # -- commands from the sessiond --------------------------------------------------

    def _command(self, msg: dict, fds: list[int]) -> None:
        seq = msg.get("seq", 0)
        try:
            fn = getattr(self, "_cmd_" + str(msg.get("cmd")), None)
            if fn is None:
                raise protocol.ProtocolError(f"unknown agent command {msg.get('cmd')!r}")
            reply = protocol.ok_reply(**(fn(msg, fds) or {}))
        except Exception as exc:
            reply = protocol.error_reply(f"{type(exc).__name__}: {exc}")
        protocol.send_msg(self.sock, {**reply, "re": seq})

    def _cmd_add_channel(self, msg: dict, fds: list[int]) -> None:
        key = msg["key"]
        if key in self.channels:
            return
        from ust._ring import Buffer
        from ust.instrument import context as ctx

        nbuf = int(msg.get("ncpu", len(fds)))
        buffers = [Buffer.attach(fd) for fd in fds[:nbuf]]
        if msg.get("wakeup") and len(fds) > nbuf:
            # The consumer's wake-up eventfd, one per daemon: keep one copy per
            # connection (never closed: a buffer may still hold its number).
            if self.wakeup_fd < 0:
                self.wakeup_fd = os.dup(fds[nbuf])
                os.set_inheritable(self.wakeup_fd, False)
            for b in buffers:
                b.set_wakeup_fd(self.wakeup_fd)
        channel = ctx.make_channel(buffers, msg.get("context", ()))
        self.channels[key] = (channel, msg["session"], bool(msg.get("shared")), buffers)

    def _filter(self, expr: str | None) -> object:
        if not expr:
            return None
        from ust.filter import compile_filter

        return compile_filter(expr)

    def _attach_one(self, h: object, channel: object, eid: int, flt: object) -> None:
        from ust.filter import event_predicate

        h.tp.attach(channel, eid, event_predicate(flt, h.decl))

    def _cmd_attach(self, msg: dict, fds: list[int]) -> None:
        key, dk, eid = msg["key"], msg["decl_key"], msg["event_id"]
        if self.confirmed is not None:
            self.confirmed.add((key, dk))
        cur = self.attached.get((key, dk))
        if cur is not None:
            if cur[0] == eid and not msg.get("filter"):
                return
            self._detach((key, dk))
        channel = self.channels[key][0]
        flt = self._filter(msg.get("filter"))
        handles = list(self.agent.handles.get(dk, ()))
        for h in handles:
            self._attach_one(h, channel, eid, flt)
        self.attached[(key, dk)] = (eid, handles, flt)
        decl = self.agent.decls.get(dk)
        if cur is None and handles and isinstance(decl, dict) and decl.get("name") == "python:function_info":
            # Whole-program tracing numbers each function at first sight, and a busy program sees many
            # before the daemon attaches its names' event (installed first, attached after): the names
            # seen so far are written now, as a statedump (a channel that had them gets them again).
            # Not under ProbeSet.lock: the thread starting the tracer holds it while it declares the
            # event, and with the synchronous agent (`ust run`) it waits for this attachment meanwhile.
            whole = getattr(getattr(sys.modules.get("ust.instrument.probes"), "PROBES", None), "whole", None)
            if whole is not None:
                whole.statedump()

    def _detach(self, akey: tuple) -> None:
        entry = self.attached.pop(akey, None)
        ch = self.channels.get(akey[0])
        if entry is None or ch is None:
            return
        for h in entry[1]:
            try:
                h.tp.detach(ch[0])
            except Exception:
                pass

    def _cmd_detach(self, msg: dict, fds: list[int]) -> None:
        key = msg["key"]
        for akey in [a for a in self.attached if a[0] == key and self.attached[a][0] == msg["event_id"]]:
            self._detach(akey)

    def _cmd_probes(self, msg: dict, fds: list[int]) -> dict:
        """The daemon's whole set of probes for this process (see ust.instrument.probes)."""
        from ust.instrument.probes import PROBES, apply_for

        PROBES.on_change = _probes_changed

        with self.agent.lock:
            before = set(self.agent.decls)
        status = apply_for(self.rundir, msg.get("probes"))
        self.probes_told = max(self.probes_told, status["generation"])
        with self.agent.lock:
            new = [d for k, d in self.agent.decls.items() if k not in before]
        # The daemon attaches them in this order, one message each, while the program runs: returns first,
        # so that a call begun in between leaves a return without its entry (which a reader drops), not
        # an entry without its return (which stays open under the thread's later calls); the names last
        # (their attachment writes the names seen so far: _cmd_attach).
        new.sort(key=lambda d: 0 if str(d.get("name")).endswith("_return") else
                 2 if d.get("name") == "python:function_info" else 1)
        # The events the probes declared ride with the answer: the daemon attaches them before
        # `enable-event --function` returns (their "declare" messages follow, and change nothing).
        return {**status, "tracepoints": new}

    # -- triggers: counted here, fired by the daemon

    def _cmd_trigger_attach(self, msg: dict, fds: list[int]) -> None:
        tid, dk, flt, caps = msg.get("trigger"), msg.get("decl_key"), msg.get("filter"), msg.get("captures", [])
        if (not isinstance(tid, int) or not isinstance(dk, str) or not (flt is None or isinstance(flt, str))
                or not isinstance(caps, list) or not all(isinstance(c, str) for c in caps)):
            raise protocol.ProtocolError("trigger_attach: expected trigger (int), decl_key (str), filter, captures")
        slot, size = msg.get("slot"), msg.get("counters")
        if size is not None:
            self._map_trigger_counts(size, fds)
        if not (isinstance(slot, int) and self.trigger_counts is not None and 0 <= slot < len(self.trigger_counts)):
            slot = None
        if self.trigger_confirmed is not None:
            self.trigger_confirmed.add((tid, dk))
        wanted = self.triggers.setdefault(dk, {})
        same_slot = self.trigger_slots.get((tid, dk)) == slot
        self.trigger_slots[(tid, dk)] = slot
        if slot is not None:
            decl = self.agent.decls.get(dk)
            name = decl["name"] if isinstance(decl, dict) else None
            if name is None:  # an unknown declaration: nothing of it is counted in a slot
                self.trigger_slots[(tid, dk)] = slot = None
            else:
                with self.trigger_hits_lock:
                    self.trigger_slot_keys[slot] = (tid, name)
        if wanted.get(tid) == (flt, tuple(caps)) and dk in self.trigger_handles and same_slot:
            return  # inherited from the parent, already evaluated here
        wanted[tid] = (flt, tuple(caps))
        self._attach_trigger(dk)

    def _map_trigger_counts(self, size: object, fds: list[int]) -> None:
        """Map the daemon's shared match counters (``size`` 64-bit slots, the memfd in ``fds``)."""
        import mmap

        if not (isinstance(size, int) and 0 < size <= 1 << 16 and len(fds) == 1):
            raise protocol.ProtocolError("trigger_attach: counters need a size and one descriptor")
        if os.fstat(fds[0]).st_size < size * 8:
            raise protocol.ProtocolError("trigger_attach: the counters' memory is smaller than said")
        # the old mapping (if any) is dropped, not closed: callbacks built on it may still run once
        self.trigger_counts = memoryview(mmap.mmap(fds[0], size * 8)).cast("Q")

    def _cmd_trigger_detach(self, msg: dict, fds: list[int]) -> None:
        dk = msg.get("decl_key")
        wanted = self.triggers.get(dk) if isinstance(dk, str) else None
        if wanted is None:
            return
        wanted.pop(msg.get("trigger"), None)
        self.trigger_slots.pop((msg.get("trigger"), dk), None)
        if wanted:
            self._attach_trigger(dk)
        else:
            del self.triggers[dk]
            self._detach_trigger(dk)

    def _attach_trigger(self, dk: str) -> None:
        """(Re)attach the callback of declaration ``dk`` for its triggers (attach replaces: one per channel)."""
        from ust.filter import compile_capture, event_capture, event_predicate

        if self.trigger_channel is None:
            from ust._ring import Buffer, Channel

            self.trigger_channel = Channel([Buffer.create(4096, 2)])  # required by attach, never written
            _flush_triggers_at_exit_once()
            _prepare_wake()  # here, not in the application's thread (ctypes is imported once)
        handles = list(self.agent.handles.get(dk, ()))
        for h in handles:
            checks = [(tid, event_predicate(self._filter(flt), h.decl),
                       event_capture([compile_capture(c) for c in caps], h.decl) if caps else None,
                       self.trigger_slots.get((tid, dk)))
                      for tid, (flt, caps) in self.triggers[dk].items()]
            h.tp.attach(self.trigger_channel, 0, self._trigger_callback(h.decl.name, checks))
        self.trigger_handles[dk] = handles

    def _trigger_callback(self, event: str, checks: list):
        """What runs in the application's thread at each call of the tracepoint: count the triggers whose
        filter keeps the event, poke the agent's thread if it was idle, record nothing."""
        from ust.filter import MAX_CAPTURED_MATCHES as captured_max

        lock, post = self.trigger_hits_lock, self.post_from_tracepoint
        counts, sent = self.trigger_counts, self.trigger_sent  # the shared counters (None: not given)
        hits, captured = self.trigger_hits, self.trigger_captured

        def on_event(*args) -> bool:
            matched = []
            for tid, keep, capture, slot in checks:
                try:
                    if keep is None or keep(*args):
                        matched.append((tid, capture, slot))
                except Exception:  # noqa: BLE001  a filter that fails is false, as in LTTng
                    pass
            if matched:
                with lock:
                    idle = not self.trigger_dirty
                    if idle:
                        self.trigger_dirty = True
                    for tid, capture, slot in matched:
                        if slot is not None:  # counted in the shared slot: the report takes what it grew by
                            n = counts[slot]
                            counts[slot] = n + 1
                            if capture is not None:
                                n -= sent.get(slot, 0)  # the match's number in this report
                        else:
                            key = (tid, event)
                            n = hits.get(key, 0)
                            hits[key] = n + 1
                        if capture is not None and n < captured_max:
                            # the values of the report's first matches, in order (the daemon pairs them
                            # with the match numbers its rate policy fires at)
                            captured.setdefault((tid, event), []).append(capture(*args))
                if idle:
                    post(("trigger_hits",))
            return False

        return on_event

    def _take_trigger_hits(self) -> tuple[dict, dict]:
        """Under the lock: the matches since the last report — the dict's, and what each shared slot grew by
        (at most 2**32 - 1 a report: the rest goes in the next) — and their captured values."""
        hits, captured = dict(self.trigger_hits), dict(self.trigger_captured)
        self.trigger_hits.clear()  # in place: the callbacks hold these
        self.trigger_captured.clear()
        self.trigger_dirty = False
        counts, sent = self.trigger_counts, self.trigger_sent
        if counts is not None:
            for slot, key in self.trigger_slot_keys.items():
                grew = min(counts[slot] - sent.get(slot, 0), (1 << 32) - 1)
                if grew > 0:
                    hits[key] = hits.get(key, 0) + grew
                    sent[slot] = sent.get(slot, 0) + grew
                    self.trigger_dirty = self.trigger_dirty or counts[slot] > sent[slot]
        return hits, captured

    def flush_triggers(self, timeout: float = FLUSH_AT_EXIT) -> None:
        """At exit: the matches counted but not sent yet go to the daemon (a program that logs an error and
        exits fires its trigger), waiting at most ``timeout`` and only when there are some."""
        with self.trigger_hits_lock:
            pending = self.trigger_dirty
        # Not necessarily registered yet (a child that exits right after its fork): the report waits in
        # the outbox for the connection, or is released by _drop_all if there is none.
        if not pending or self.agent.dead or not self.thread.is_alive():
            return
        sent = threading.Event()
        self.post(("trigger_hits", sent))
        sent.wait(timeout)

    def _detach_trigger(self, dk: str) -> None:
        for h in self.trigger_handles.pop(dk, ()):
            try:
                h.tp.detach(self.trigger_channel)
            except Exception:  # noqa: BLE001
                pass

    def _detach_triggers(self) -> None:
        for dk in list(self.trigger_handles):
            self._detach_trigger(dk)
        self.triggers.clear()
        self.trigger_slots.clear()
        with self.trigger_hits_lock:
            # the daemon that gave the counters is gone (or this is a forked child): new ones, new slots
            self.trigger_counts = None
            self.trigger_slot_keys = {}
            self.trigger_sent = {}
            self.trigger_hits.clear()
            self.trigger_captured.clear()
            self.trigger_dirty = False

    def _cmd_statedump(self, msg: dict, fds: list[int]) -> dict:
        """``ust regenerate statedump``: the function names again, if this process traces functions."""
        probes = sys.modules.get("ust.instrument.probes")  # never imported: nothing to re-emit
        return {"emitted": probes.statedump() if probes is not None else 0}

    def _cmd_remove_session(self, msg: dict, fds: list[int]) -> None:
        keys = [k for k, v in self.channels.items() if v[1] == msg["session"]]
        for akey in [a for a in self.attached if a[0] in keys]:
            self._detach(akey)
        for k in keys:
            self.channels.pop(k, None)

    def _drop_all(self) -> None:
        """The daemon went away: stop recording into its buffers, remove its probes, release waiters."""
        self.connected.clear()
        if "ust.instrument.probes" in sys.modules:
            try:
                sys.modules["ust.instrument.probes"].apply_for(self.rundir, [])
            except Exception as exc:
                _debug(f"probes not removed: {exc!r}")
        with self.outbox_lock:
            for item in self.outbox:
                if item[0] == "declare" and item[2] is not None:
                    item[2].set()
                elif item[0] == "trigger_hits" and len(item) > 1:
                    item[1].set()  # an exiting process waits for nothing now
        for akey in list(self.attached):
            self._detach(akey)
        self._detach_triggers()
        self.channels.clear()
        self.confirmed = None
        self.trigger_confirmed = None
        self.wakeup_fd = -1  # the next daemon sends its own
        self.probes_told = 0  # and is told the probe states anew
        for ev in self.waiters.values():
            ev.set()
        self.waiters.clear()


# ---------------------------------------------------------------------------
# process-wide

_AGENT: Agent | None = None
_AGENT_PID = 0
_FORK_HOOKED = False


def _probes_changed() -> None:
    """``ProbeSet.on_change``, in the application's thread that imported a probed module: every daemon is
    told, by its connection's thread (never waited for here)."""
    a = _AGENT
    if a is None or _AGENT_PID != os.getpid() or a.dead:
        return
    for c in a.conns:
        c.post(("probe_status",))


def _plain_wake(fd: int) -> None:
    try:
        os.write(fd, b"x")
    except OSError:
        pass


_WAKE = [_plain_wake]  # how a trigger callback wakes the agent's thread: _prepare_wake's


def _prepare_wake() -> None:
    """Make the trigger callbacks' wake-up a write to the (non-blocking) wake-up pipe that keeps the GIL
    (os.write releases it), if ctypes is there (else the plain write: the event may follow the report)."""
    if _WAKE[0] is not _plain_wake:
        return
    try:
        import ctypes

        write = ctypes.PyDLL(None).write  # a PyDLL call keeps the GIL
        write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
        write.restype = ctypes.c_ssize_t

        def wake(fd: int) -> None:
            write(fd, b"x", 1)  # a full pipe (EAGAIN) already wakes the thread

        _WAKE[0] = wake
    except Exception:  # noqa: BLE001
        pass


def _hits_report(hits: dict, captured: dict) -> list:
    """``[[trigger id, event, count(, [values of each of the first matches])], ...]``, the captured values
    within MAX_CAPTURED_BYTES (past it, matches are counted without their values)."""
    import json

    out, budget = [], MAX_CAPTURED_BYTES
    for key, n in hits.items():
        entry = [key[0], key[1], n]
        if key in captured:
            kept = []
            for v in captured[key]:
                size = len(json.dumps(v, separators=(",", ":"), default=str))
                if size > budget:
                    break
                budget -= size
                kept.append(v)
            entry.append(kept)
        out.append(entry)
    return out


_AT_EXIT_HOOKED = False


def _flush_triggers_at_exit_once() -> None:
    """One atexit hook per process, inherited by a forked child: the current agent's last trigger matches."""
    global _AT_EXIT_HOOKED
    if not _AT_EXIT_HOOKED:
        import atexit

        atexit.register(_flush_triggers_at_exit)
        _AT_EXIT_HOOKED = True


def _flush_triggers_at_exit() -> None:
    a = _AGENT
    if a is not None and _AGENT_PID == os.getpid():
        for c in a.conns:
            c.flush_triggers()


def start() -> None:
    """Start the agent (idempotent, cheap, never raises, no-op when UST_AGENT=0)."""
    global _AGENT, _AGENT_PID, _FORK_HOOKED
    try:
        if os.environ.get("UST_AGENT", "1") == "0" or is_tool():
            return
        if _AGENT is not None and _AGENT_PID == os.getpid():
            return
        if not _FORK_HOOKED:
            forksafe.after_in_child(_after_fork)  # runs once ust's locks are free in the child
            _FORK_HOOKED = True
        _AGENT = Agent()
        _AGENT_PID = os.getpid()
        if _AGENT.sync:
            # start() runs inside `import ust`: a thread importing a ust
            # submodule now would wait for that import to finish (Python's
            # module locks), while we wait for the thread. Import first what
            # the agent thread needs to apply the daemon's commands.
            import ust._ring  # noqa: F401
            import ust.filter  # noqa: F401
            import ust.instrument.context  # noqa: F401
        _AGENT.start()
        if os.environ.get("UST_FUNCTIONS"):
            # `ust run --functions`: every call from here on, in this (the main) thread and the next ones.
            from ust.instrument.probes import start_whole_program_from_env

            start_whole_program_from_env()
    except Exception as exc:
        _debug(f"agent not started: {exc!r}")


def _after_fork() -> None:
    global _AGENT, _AGENT_PID
    try:
        old = _AGENT
        if old is None or _AGENT_PID == os.getpid():
            return
        old.dead = True
        inherited = old.snapshot_for_fork()
        for c in old.conns:
            for fd in (c.wake_r, c.wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if c.sock is not None:
                try:
                    c.sock.close()
                except OSError:
                    pass
        try:
            reg = _registry()
            if reg is not None and hasattr(reg, "unsubscribe"):
                reg.unsubscribe(old._declared)
        except Exception:
            pass
        agent = Agent(inherited)
        # Under `ust run` (sync) the child waits for its registration too, as
        # LTTng-UST's fork handler does: its first events are recorded even
        # with per-PID buffers. Otherwise it never waits.
        agent.sync = old.sync
        _AGENT = agent
        _AGENT_PID = os.getpid()
        agent.start()
    except Exception as exc:
        _debug(f"agent not restarted after fork: {exc!r}")


def status() -> dict:
    """What the agent is connected to (for tests and `ust list --apps`)."""
    a = _AGENT
    if a is None or _AGENT_PID != os.getpid():
        return {"running": False}
    return {
        "running": True,
        "connections": [
            {"rundir": c.rundir, "registered": c.registered.is_set(), "channels": sorted(c.channels),
             "attached": len(c.attached)} for c in a.conns
        ],
    }
