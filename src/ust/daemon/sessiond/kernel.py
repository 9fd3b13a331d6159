"""A session's kernel domain in the session daemon (lttng's ``-k``).

What a session asked of the kernel (``KernelConf``: event rules, buffer size
and mode, contexts) is kept here until ``start``, which makes the session's
ftrace instance (``ust-<session>``, ust.kernel.tracefs) and hands its
readers — each CPU's ``trace_pipe_raw`` and ``stats``, and the task tables
(``saved_tgids``, ``saved_cmdlines``: the pid/procname contexts, and
fields that are a thread's process such as sched_process_fork's; always
given, as an event enabled later may need them, and read only when asked)
— to the session owner's consumer
(``add_kernel_trace``, SCM_RIGHTS), with the format files of the events it
is about to enable. The consumer (running as the owner) drains them into
``<output>/kernel`` as it drains user-space buffers, so rotation, snapshots,
clear and streaming to a relay are the same code for both (docs/kernel.md).
The daemon keeps the instance (its claim lock, its events, tracing on or
off) and its own copies of the readers, to hand them again to a restarted
consumer. ``destroy`` removes the instance after the consumer closed them.

Who may: the kernel domain reads every process's scheduling and system
calls: the daemon must run as root, and the session be root's or, through
the system daemon, a member of the ``tracing`` group's (whose consumer, and
so her kernel trace files, run with her own credentials). Anyone else gets
a one-line error.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid as uuid_mod
from dataclasses import dataclass, field
from typing import Any

from ust.daemon import protocol
from ust.daemon.sessiond import consumers
from ust.daemon.sessiond.log import log
from ust.errors import SessionError, UstError
from ust.kernel import formats as fmt
from ust.kernel.capture import BUFFER_PERCENT, DEFAULT_BUFFER_KB, READ_TIMER, keep_pages
from ust.kernel.trace import CONTEXTS, REFUSED_CONTEXTS


@dataclass
class KernelRule:
    pattern: str
    syscall: bool = False
    enabled: bool = True

    def to_json(self) -> dict:
        return {"pattern": self.pattern, "syscall": self.syscall, "enabled": self.enabled, "domain": "kernel"}


@dataclass
class KernelConf:
    rules: list[KernelRule] = field(default_factory=list)
    buffer_size_kb: int = DEFAULT_BUFFER_KB
    overwrite: bool = False
    contexts: list[str] = field(default_factory=list)
    instance: Any = None  # ust.kernel.tracefs.Instance while it exists
    key: str = ""  # the consumer's trace, once given (add_kernel_trace)
    path: str = ""  # where the consumer writes it (the current chunk's ``kernel``)
    fds: list[int] = field(default_factory=list)  # our copies of the readers given to the consumer
    learned: set = field(default_factory=set)  # (system, event) whose formats the consumer has
    tracked: set = field(default_factory=set)  # (system, event) it has for the prio context only
    lost: int = 0  # events the ring lost, as the trace says (updated at stop)

    def summary(self) -> dict:
        out = {"rules": [r.to_json() for r in self.rules], "buffer_size_kb": self.buffer_size_kb,
               "overwrite": self.overwrite, "contexts": list(self.contexts)}
        if self.instance is not None:
            out["instance"] = self.instance.name
            out["lost"] = self.lost
        return out


def check_allowed(daemon, s) -> None:
    """A one-line SessionError unless kernel tracing is allowed for ``s``."""
    if os.geteuid() != 0:
        raise SessionError("kernel tracing needs root: this session daemon does not run as root "
                           "(use root's daemon: sudo ust ...)")
    if s.uid != 0 and not (daemon.system and daemon.tracing_member(s.uid)):
        raise SessionError(f"kernel tracing needs root: uid {s.uid} may not trace the kernel "
                           "(root, or a member of the tracing group through the system daemon)")


def conf(daemon, s, create: bool = True) -> KernelConf | None:
    """The session's kernel domain (made on first use); every change is checked
    against who may, now (a member who left the tracing group may not go on)."""
    if create:
        check_allowed(daemon, s)
        if s.kernel is None:
            s.kernel = KernelConf(overwrite=s.snapshot)
    return s.kernel


def has_rules(s) -> bool:
    return s.kernel is not None and any(r.enabled for r in s.kernel.rules)


def trace_key(s) -> str:
    """The consumer's key of the session's kernel trace ("": none yet)."""
    return s.kernel.key if s.kernel is not None else ""


def _instance(s, k: KernelConf):
    """The session's ftrace instance, made on first use (tracefs mounted)."""
    if k.instance is None:
        from ust.kernel.tracefs import Instance

        inst = Instance.create(s.name, buffer_size_kb=k.buffer_size_kb, overwrite=k.overwrite or s.snapshot)
        try:
            if fmt.records_tgid(k.contexts, []):
                inst.set_record_tgid(True)
            inst.set_buffer_percent(BUFFER_PERCENT)
        except BaseException:
            inst.remove()
            raise
        k.instance = inst
    return k.instance


def _wanted(k: KernelConf) -> tuple[list, list]:
    """(events the enabled rules select, events only disabled rules name), resolved now."""
    inst = k.instance
    on: list = []
    off: list = []
    for r in k.rules:
        (on if r.enabled else off).extend(inst.resolve([r.pattern], syscalls=r.syscall))
    return on, [e for e in off if e not in on]


def _formats(k: KernelConf, events, known: set) -> list[list[str]]:
    """[system, format text] of the events not in ``known`` (what the consumer has)."""
    return [[system, k.instance.format_text(system, name)] for system, name in events if (system, name) not in known]


def _tracked(s, k: KernelConf, on: list) -> list:
    """The events recorded but not written: those the prio context is followed from (enabled
    whatever the rules say), and the path probes giving the open calls' file names
    (ust.kernel.paths) when the rules record one."""
    from ust.kernel.paths import probes_for

    out = []
    if "prio" in k.contexts:
        from ust.kernel.prio import tracked_events

        out += tracked_events(k.instance.events())
    probes, why = probes_for(k.instance, on)
    if why:
        log(f"kernel: session {s.name}: the open calls' file names will be empty: {why}")
    return out + probes


# A message body is at most protocol.MAX_BODY: formats go in batches of at most this many bytes.
FORMAT_BATCH = protocol.MAX_BODY // 2


def _batches(formats: list[list[str]]) -> list[list[list[str]]]:
    out: list[list[list[str]]] = [[]]
    size = 0
    for item in formats:
        n = len(item[0]) + len(item[1]) + 16
        if out[-1] and size + n > FORMAT_BATCH:
            out.append([])
            size = 0
        out[-1].append(item)
        size += n
    return out


def _open_trace(daemon, s, k: KernelConf, formats: list[list[str]], tracked: list[list[str]]) -> None:
    """Give the session's consumer the instance's readers and the first formats."""
    inst = k.instance
    contexts = ["tid"] + [c for c in k.contexts if c != "tid"]
    raw, stats, task_fds = inst.open_readers(True)
    if len(raw + stats + task_fds) > protocol.MAX_FDS:
        protocol.close_fds(raw + stats + task_fds)
        raise SessionError(f"kernel tracing: {len(raw)} CPUs are more than the consumer protocol can pass "
                           f"the readers of ({protocol.MAX_FDS} descriptors a message)")
    fds = raw + stats + task_fds
    key = f"{s.name}/kernel"
    path = f"{s.output}/kernel" if s.relay else os.path.join(s.chunk_root(), "kernel")
    batches = _batches(formats)
    msg = {"key": key, "path": path, "root": s.output if not s.relay else None, "uuid": str(uuid_mod.uuid4()),
           "clock_offset": s.clock_offset, "session": s.name, "drain": not s.snapshot, "contexts": contexts,
           "cpus": len(raw), "page_size": inst.page_size(), "keep_pages": keep_pages(inst),
           "read_timer": READ_TIMER, "live_timer": s.live_timer, "formats": batches[0], "tracked": tracked}
    if s.relay:
        msg["relay"] = {**s.relay, "path": "kernel", "hostname": socket.gethostname(), "live_timer": s.live_timer,
                        "created": int(s.created)}
    link = consumers.link(daemon, s)
    try:
        link.add_kernel_trace(msg, fds)
    except BaseException:
        protocol.close_fds(fds)
        raise
    k.key, k.path, k.fds = key, path, fds
    for batch in batches[1:]:
        link.add_kernel_events(key, batch, [])


def _apply(daemon, s, k: KernelConf) -> None:
    """Make the instance's enabled events what the rules say; the consumer learns the
    formats of newly enabled events before they are (its metadata describes them first)."""
    on, off = _wanted(k)
    tracked = [e for e in _tracked(s, k, on) if e not in on]
    off = [e for e in off if e not in tracked]
    formats = _formats(k, on, k.learned)
    tracked_formats = _formats(k, tracked, k.tracked)
    if formats and fmt.records_tgid(k.contexts, [tuple(f) for f in formats]):
        k.instance.set_record_tgid(True)  # ftrace saves each thread's process before they are recorded
    if not k.key:
        _open_trace(daemon, s, k, formats, tracked_formats)
    elif formats or tracked_formats:
        link = consumers.link(daemon, s)
        for i, batch in enumerate(_batches(formats)):
            link.add_kernel_events(k.key, batch, tracked_formats if i == 0 else [])
    k.learned.update(on)
    k.tracked.update(tracked)
    if off:
        k.instance.set_enabled(off, False)
    if on or tracked:
        k.instance.set_enabled(on + tracked, True)


def _wrap(fn, *args):
    try:
        return fn(*args)
    except SessionError:
        raise
    except UstError as exc:
        raise SessionError(str(exc)) from None
    except OSError as exc:
        raise SessionError(f"kernel tracing: {exc.strerror or exc}") from None
    except fmt.FormatError as exc:  # a format file ust cannot read (the consumer would refuse it too)
        raise SessionError(f"kernel tracing: {exc}") from None


# -- commands (ust.daemon.sessiond.commands.kernel) ------------------------------

def enable(daemon, s, patterns: list[str], syscall: bool) -> list[dict]:
    k = conf(daemon, s)
    from ust.kernel import tracefs

    def check():
        # resolved now, against the running kernel: a name that matches nothing is an error now
        ts = tracefs.find_tracefs()
        events = [] if syscall else tracefs.available_events(ts)
        tracefs.resolve(patterns, events, tracefs.syscall_names(ts) if syscall else [], syscalls=syscall)

    _wrap(check)
    added = []
    for p in patterns:
        rule = next((r for r in k.rules if r.pattern == p and r.syscall == syscall), None)
        if rule is None:
            rule = KernelRule(p, syscall)
            k.rules.append(rule)
        rule.enabled = True
        added.append(rule.to_json())
    if k.key:
        _wrap(_apply, daemon, s, k)
    return added


def disable(daemon, s, patterns: list[str], syscall: bool) -> int:
    k = conf(daemon, s, create=False)
    n = 0
    for r in (k.rules if k else []):
        if r.enabled and r.syscall == syscall and (patterns == ["*"] or r.pattern in patterns):
            r.enabled = False
            n += 1
    if n == 0:
        raise SessionError(f"no enabled kernel event rule {', '.join(patterns)} in session {s.name!r}")
    if k.key:
        _wrap(_apply, daemon, s, k)
    return n


def set_channel(daemon, s, buffer_size_kb: int | None, overwrite: bool | None) -> dict:
    k = conf(daemon, s)
    if k.instance is not None:
        raise SessionError(f"the kernel channel of session {s.name!r} cannot change once started")
    if buffer_size_kb is not None:
        if buffer_size_kb < 4:
            raise SessionError(f"kernel buffer size must be at least 4 KiB per CPU, got {buffer_size_kb} KiB")
        k.buffer_size_kb = buffer_size_kb
    if overwrite is not None:
        if s.snapshot and not overwrite:
            raise SessionError("a snapshot session needs an overwrite kernel channel (drop --discard)")
        k.overwrite = overwrite
    return k.summary()


def add_context(daemon, s, types: list[str]) -> list[str]:
    k = conf(daemon, s)
    if k.instance is not None:
        raise SessionError(f"cannot add kernel context: session {s.name!r} was already started")
    for t in types:
        if t not in CONTEXTS:
            why = REFUSED_CONTEXTS.get(t, "ftrace records do not carry it")
            raise SessionError(f"kernel context {t!r} is not available from ftrace records: {why} "
                               f"(available: {', '.join(CONTEXTS)})")
        if t not in k.contexts:
            k.contexts.append(t)
    return list(k.contexts)


def available() -> dict:
    from ust.kernel import tracefs

    def listing():
        ts = tracefs.find_tracefs()
        return {"events": [f"{s}:{n}" for s, n in tracefs.available_events(ts) if s != "syscalls"],
                "syscalls": tracefs.syscall_names(ts)}

    return _wrap(listing)


# -- the session's life (ust.daemon.sessiond.commands.sessions, rotation, snapshots) --

def on_start(daemon, s) -> None:
    k = s.kernel
    if not has_rules(s):
        return
    check_allowed(daemon, s)
    again = bool(k.key)  # started before: the trace goes on, with a statedump (as each lttng start)
    _wrap(_instance, s, k)
    _wrap(_apply, daemon, s, k)
    if again:
        try:
            regenerate_statedump(daemon, s)
        except UstError as exc:  # the trace goes on without it: said, not fatal to the start
            log(f"kernel: session {s.name}: no statedump at this start: {exc}")
    _wrap(k.instance.start)  # a snapshot session's: the ring keeps the latest, read at snapshot time


def regenerate_statedump(daemon, s) -> bool:
    """The session's kernel trace writes its statedump again (the consumer reads /proc as the
    owner: KernelTrace.regenerate_statedump), as lttng-modules does at ``regenerate statedump``
    and at each start. Whether there was a kernel trace written as recorded to do it."""
    k = s.kernel
    if k is None or not k.key or s.snapshot:
        return False
    link = consumers.link_if_running(daemon, s)
    if link is None:
        return False
    link.kernel_statedump([k.key])
    return True


def on_stop(daemon, s) -> None:
    """Recording stops, then the consumer writes out what the instance holds (and the losses)."""
    k = s.kernel
    if k is None or k.instance is None:
        return
    _wrap(k.instance.stop)
    link = consumers.link_if_running(daemon, s)
    if link is None or not k.key:
        return
    link.flush([k.key])
    try:
        stats = consumers.consumer_stats(link).get(k.key, {})
    except UstError:
        return
    k.lost = sum(consumers.count(b.get("lost_full")) for bufs in stats.values() for b in bufs)


def snapshot_targets(s, dest: str) -> dict[str, str]:
    """{the kernel trace's key: ``<dest>/kernel``} for ``snapshot record`` (relay: a relative path)."""
    return {s.kernel.key: f"{dest}/kernel"} if trace_key(s) else {}


def rotate_target(s, new_root: str) -> dict[str, str]:
    """{the kernel trace's key: ``<new chunk>/kernel``} for a rotation."""
    return {s.kernel.key: os.path.join(new_root, "kernel")} if trace_key(s) else {}


def rotated(s, targets: dict[str, str]) -> None:
    if trace_key(s) in targets:
        s.kernel.path = targets[s.kernel.key]


def on_destroy(daemon, s) -> None:
    """The consumer closes the readers (the kernel keeps an instance while a file of it is open),
    then the instance goes."""
    k = s.kernel
    if k is None or k.instance is None:
        return
    link = consumers.link_if_running(daemon, s)
    if link is not None and k.key:
        try:
            link.remove_traces([k.key])
        except UstError as exc:
            log(f"kernel: the consumer did not close the kernel trace of {s.name}: {exc}")
    protocol.close_fds(k.fds)
    k.fds, k.key = [], ""
    remove_instance(k.instance, f"session {s.name}")
    k.instance = None


def remove_instance(instance, owner: str) -> None:
    """Remove an ftrace instance whose readers were closed; one still open (a consumer closing it
    late) is removed in the background once it can be (remove_stale otherwise, later)."""
    try:
        instance.remove()
    except Exception as exc:
        log(f"kernel: removing the instance of {owner}: {exc}")
        _retry_removal(instance)


BUSY_RETRY = 60.0  # s: how long an instance still open (a dying consumer flushing it) is waited for


def _retry_removal(instance) -> None:
    """Remove ``instance`` once the files still open on it are closed (in the background)."""
    def again():
        deadline = time.monotonic() + BUSY_RETRY
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                instance.remove()
                return
            except Exception:
                continue
        log(f"kernel: gave up removing ftrace instance {instance.name} (files of it still open)")

    threading.Thread(target=again, name="kernel-instance-removal", daemon=True).start()


def remove_stale() -> None:
    """At daemon start (root): remove the ftrace instances of dead ust processes. One a dead
    daemon's consumer still reads (it writes out what is left, then exits) is removed as soon
    as it is closed, in the background."""
    if os.geteuid() != 0:
        return
    try:
        from ust.kernel import tracefs

        removed, busy = tracefs.remove_stale_instances(busy=True)
    except Exception as exc:
        log(f"kernel: cannot look for stale ftrace instances: {exc}")
        return
    for name in removed:
        log(f"kernel: removed stale ftrace instance {name}")
    for instance in busy:
        log(f"kernel: stale ftrace instance {instance.name} is still open: removing it once it is closed")
        _retry_removal(instance)
