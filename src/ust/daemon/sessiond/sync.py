"""Applying a session's rules to an application: the one function every
command, registration and late declaration ends in (``sync_app``).

It computes what an application should record for an active session (the
channels it maps, the tracepoints it has attached with their event id and
filter) and sends the difference, so a rule applies the same way to
applications registered before or after it.
"""

from __future__ import annotations

import os
import socket
import uuid as uuidlib

from ust.ctf.writer import pid_trace_dir, uid_trace_dir
from ust.daemon import protocol
from ust.daemon.rules import combined_filter
from ust.daemon.sessiond import consumers
from ust.daemon.sessiond.log import log
from ust.daemon.sessiond.model import ChannelConf, Session, Trace, TraceChannel
from ust.errors import UstError


def app_in_session(s: Session, app) -> bool:
    # A user's session records only that user's processes; root's, any; `ust track` narrows it.
    return (app.alive and (s.uid == 0 or app.uid == s.uid) and (s.token is None or s.token == app.token)
            and s.tracks(app.pid, app.uid, app.gid))


def remove_apps(s: Session, apps) -> None:
    """``apps`` stop recording ``s`` (what they committed stays, for the consumer); each has
    acknowledged when this returns."""
    pending = []
    for app in apps:
        if s.name in app.state:
            pending.append((app, app.send_many([({"cmd": "remove_session", "session": s.name}, [])])))
            app.state.pop(s.name, None)
    for app, slots in pending:  # all sent, now all acknowledged
        app.wait_many(slots, 1)


def sync_session(daemon, s: Session) -> None:
    """Apply active session ``s``'s rules to every application."""
    if not s.active:
        return
    # Send to every application first, then collect: one round trip in all.
    finishers = [sync_app(daemon, s, app, wait=False) for app in list(daemon.apps.values())]
    for finish in finishers:
        if finish is not None:
            finish()


def _trace_for(daemon, s: Session, app) -> Trace:
    owner = ("pid", app.pid) if s.buffers == "pid" else ("uid", app.uid)
    t = s.traces.get(owner)
    if t is not None:
        return t
    # the trace's place in the session's tree, whether that is a directory or a relay's
    if owner[0] == "uid":
        rel = uid_trace_dir("", app.uid).as_posix()
    else:
        rel = pid_trace_dir("", app.procname, app.pid).as_posix()
    if s.relay:
        rel = f"{s.chunk_dir}/{rel}" if s.chunk_dir else rel  # in the current chunk on the relay too
    path = f"{s.output}/{rel}" if s.relay else os.path.join(s.chunk_root(), rel)
    key = f"{s.name}/{owner[0]}-{owner[1]}"
    t = Trace(key=key, path=path, owner=owner, uuid=str(uuidlib.uuid4()))
    msg = {
        "key": key, "path": path, "root": s.output, "uuid": t.uuid, "clock_offset": s.clock_offset,
        "drain": not s.snapshot, "session": s.name,
        "env": {"trace_name": s.name, "trace_buffering_scheme": owner[0], "buffering_id": owner[1],
                **({"procname": app.procname, "vpid": app.pid} if owner[0] == "pid" else {})},
    }
    if s.shm_path:
        msg["shm"] = {"path": os.path.join(s.shm_path, rel), "root": s.shm_path}
    if s.relay:
        msg["relay"] = {**s.relay, "path": rel, "hostname": socket.gethostname(), "live_timer": s.live_timer,
                        "created": int(s.created)}
    consumers.link(daemon, s).add_trace(msg)
    s.traces[owner] = t
    return t


def _trace_channel(daemon, s: Session, t: Trace, conf: ChannelConf) -> TraceChannel:
    tc = t.channels.get(conf.name)
    if tc is None:
        stream_id = len(t.channels)
        fds = consumers.link(daemon, s).add_channel(t.key, {
            "name": conf.name, "stream_id": stream_id, "subbuf_size": conf.subbuf_size,
            "num_subbuf": conf.num_subbuf, "overwrite": conf.overwrite, "switch_timer": conf.switch_timer,
            "read_timer": conf.read_timer, "tracefile_size": conf.tracefile_size,
            "tracefile_count": conf.tracefile_count, "context": list(conf.context), "live_timer": s.live_timer,
        })
        tc = TraceChannel(conf=conf, stream_id=stream_id, fds=fds)
        t.channels[conf.name] = tc
    return tc


def sync_app(daemon, s: Session, app, wait: bool = True):
    """Make ``app`` record exactly what the rules of active session ``s`` select.

    With ``wait=False`` the commands are sent and a function that waits for
    their acknowledgements (and records the outcome) is returned.
    """
    if not s.active or not app_in_session(s, app):
        return
    # What the rules select, per channel: tracepoint decl -> filter.
    wanted: dict[str, list[tuple[dict, str | None]]] = {}
    for conf in s.channels.values():
        if not conf.enabled:
            continue
        rules = [r for r in s.rules if r.channel == conf.name and r.enabled]
        for d in list(app.decls.values()):
            hits = [r for r in rules if r.matches(d["name"], d["loglevel"])]
            if hits:
                wanted.setdefault(conf.name, []).append((d, combined_filter(hits)))
    if not wanted and s.name not in app.state:
        return
    t = _trace_for(daemon, s, app)
    app_state = app.state.setdefault(s.name, {"channels": set(), "attached": {}})
    desired: dict[tuple[str, str, str], tuple[int, str | None]] = {}
    msgs: list[tuple[dict, list[int]]] = []
    new_channels: list[tuple[int, str]] = []  # (message index, channel key)
    for chan_name, items in wanted.items():
        conf = s.channels[chan_name]
        tc = _trace_channel(daemon, s, t, conf)
        ckey = f"{t.key}/{chan_name}"
        if ckey not in app_state["channels"]:
            msgs.append(({
                "cmd": "add_channel", "session": s.name, "key": ckey, "context": list(conf.context),
                "shared": t.owner[0] == "uid", "ncpu": len(tc.fds), "wakeup": True,
            }, tc.fds + [consumers.link(daemon, s).wakeup_fd]))
            new_channels.append((len(msgs) - 1, ckey))
        new_events = []
        for d, flt in items:
            k = protocol.decl_key(d)
            eid = tc.events.get(k)
            if eid is None:
                eid = len(tc.events)
                tc.events[k] = eid
                new_events.append({"id": eid, "decl": d})
            desired[(ckey, d["name"], k)] = (eid, flt)
        if new_events:
            # Metadata first: an event is never in a stream before it is described.
            try:
                consumers.link(daemon, s).add_events(t.key, chan_name, new_events)
            except UstError:
                # Not described (yet): the ids are handed out again next time.
                for ev in new_events:
                    tc.events.pop(protocol.decl_key(ev["decl"]), None)
                raise
    attached = app_state["attached"]
    todo = []
    for key in [k for k in attached if k not in desired or attached[k] != desired[k]]:
        ckey, name, _ = key
        msgs.append(({"cmd": "detach", "key": ckey, "tracepoint": name, "event_id": attached[key][0]}, []))
        del attached[key]
    for key, (eid, flt) in desired.items():
        if key in attached:
            continue
        ckey, name, _ = key
        msgs.append(({"cmd": "attach", "key": ckey, "tracepoint": name, "event_id": eid, "filter": flt,
                      "decl_key": key[2]}, []))
        todo.append((len(msgs) - 1, key, (eid, flt)))
    if not msgs:
        return None
    slots = app.send_many(msgs)

    def finish() -> None:
        acks = app.wait_many(slots, len(msgs))
        for i, ckey in new_channels:
            ack = acks[i]
            if ack and ack.get("ok"):
                app_state["channels"].add(ckey)
            elif ack:
                log(f"app {app.pid} could not map channel {ckey}: {ack.get('error')}")
        for i, key, value in todo:
            ack = acks[i]
            if ack and ack.get("ok"):
                attached[key] = value
            elif ack:
                log(f"app {app.pid}: attach {key[1]} failed: {ack.get('error')}")

    if wait:
        finish()
        return None
    return finish
