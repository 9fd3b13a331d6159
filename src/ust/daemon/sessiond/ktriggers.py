"""Kernel triggers (``add-trigger --type kernel | kernel:syscall[:entry|:exit|:entry+exit]``).

This kernel has no hist triggers (ftrace's in-kernel counting), so a kernel trigger is counted
where the kernel capture already runs, in the owner's consumer (docs/lifecycle.md, "Kernel
triggers"):

* the daemon (root) makes the trigger an ftrace instance of its own, ``ust-.trigger-<daemon
  pid>-<id>`` (a name no session's instance can have: session names never begin with a dot), claimed like a
  session's (a daemon starting after a crash removes it); ``buffer_size_kb`` TRIGGER_BUFFER_KB,
  discard mode, ``buffer_percent`` 0 (a reader is woken at the first record);
* the rule's filter is translated to ftrace's filter language per event (ust.kernel.kfilter)
  and written to each event's ``filter`` file: the kernel records only matches (an event for
  which the filter is always false is not enabled; what ftrace cannot evaluate is refused);
* the instance's readers (each CPU's ``trace_pipe_raw`` and ``stats``) and the events' formats
  go to the owner's consumer (``add_kernel_trigger``), which counts the records per event in C
  and reads the first matches' values for ``--capture`` (ust.kernel.matcher); it writes the
  link's eventfd when matches wait, and the thread here (``_collect``) takes them
  (``kernel_trigger_matches``) into the trigger table, whose rate policies and actions are those
  of every trigger. A restarted consumer is given the same readers (what the rings hold waited);
* a spent trigger's instance is switched off; ``remove-trigger`` closes the readers in the
  consumer, then removes the instance; the daemon's shutdown removes them all.

Who may: as the kernel domain, root, or a member of the ``tracing`` group through the system
daemon (her consumer counts her triggers' matches, with her credentials).
"""

from __future__ import annotations

import os
import select
import threading
from dataclasses import dataclass, field
from typing import Any

from ust.daemon import protocol
from ust.daemon.sessiond import consumers
from ust.daemon.sessiond.log import log
from ust.errors import SessionError, UstError

TRIGGER_BUFFER_KB = 1024  # per CPU: matches only (the filter is the kernel's); ~36,000 getppid exits
SYSCALL_SITES = ("entry", "exit", "entry+exit")
COLLECT_PERIOD = 1.0  # s: the longest wait of the collecting thread (it rechecks what it watches)


@dataclass
class KernelTriggerState:
    """What a kernel trigger holds (``Trigger.kernel``)."""

    syscall: str | None  # None: tracepoints; else the syscall site (entry, exit, entry+exit)
    events: list[str] = field(default_factory=list)  # "system:event" enabled in its instance
    instance: Any = None  # ust.kernel.tracefs.Instance
    fds: list[int] = field(default_factory=list)  # our copies of the readers given to the consumer
    link: Any = None  # the owner's ConsumerLink
    uid: int = 0  # the consumer's (consumers.consumer_uid of the owner)


def instance_name(trigger_id: int) -> str:
    """The part after ``ust-`` of the trigger's instance (tracefs.check_name): this daemon's pid in it, as
    trigger numbers start again with each daemon (and two root daemons may run: the system one, a user's)."""
    return f".trigger-{os.getpid()}-{trigger_id}"


def check_allowed(daemon, uid: int) -> None:
    """A one-line SessionError unless ``uid`` may have kernel triggers (as kernel tracing)."""
    if os.geteuid() != 0:
        raise SessionError("kernel triggers need root: this session daemon does not run as root "
                           "(use root's daemon: sudo ust ...)")
    if uid != 0 and not (daemon.system and daemon.tracing_member(uid)):
        raise SessionError(f"kernel triggers need root: uid {uid} may not trace the kernel "
                           "(root, or a member of the tracing group through the system daemon)")


def _plan(inst, pattern: str, syscall: str | None, flt: str | None) -> list[tuple[str, str, str, Any]]:
    """(system, event, format text, ftrace filter or None) of each event the trigger enables."""
    from ust.kernel import formats as fmt
    from ust.kernel import kfilter

    events = inst.resolve([pattern], syscalls=syscall is not None)
    if syscall is not None:
        keep = {"entry": ("sys_enter_",), "exit": ("sys_exit_",), "entry+exit": ("sys_enter_", "sys_exit_")}[syscall]
        events = [(s, n) for s, n in events if n.startswith(keep)]
    plan = []
    named: set[str] = set()
    for system, name in events:
        text = inst.format_text(system, name)
        ev = fmt.parse_format(text, system)
        named.update(f.ctf or fmt.ctf_field_name(system, f.name) for f in ev.fields)
        ftrace = True if flt is None else kfilter.translate(flt, ev)
        if ftrace is not False:
            plan.append((system, name, text, None if ftrace is True else ftrace))
    if flt is not None:
        missing = sorted(kfilter.referenced_fields(flt) - named)
        if missing:
            raise SessionError(f"kernel filter {flt!r}: no event the rule selects has a field {missing[0]!r}")
    return plan


def attach(daemon, t, pattern: str, syscall: str | None, flt: str | None) -> None:
    """Make trigger ``t``'s instance, give its readers to the owner's consumer, start it (the
    trigger is in the table: on failure the caller removes it)."""
    from ust.kernel import formats as fmt
    from ust.kernel.tracefs import Instance

    state = KernelTriggerState(syscall=syscall, uid=consumers.consumer_uid(t.uid))
    t.kernel = state
    try:
        inst = state.instance = Instance.create(instance_name(t.id), buffer_size_kb=TRIGGER_BUFFER_KB)
        plan = _plan(inst, pattern, syscall, flt)
        for system, name, _, ftrace in plan:
            if ftrace is not None:
                inst.set_filter(system, name, ftrace)
        inst.set_buffer_percent(0)
        raw, stats, _ = inst.open_readers(False)
        state.fds = raw + stats
        if len(state.fds) > protocol.MAX_FDS:
            raise SessionError(f"kernel triggers: {len(raw)} CPUs are more than the consumer protocol can pass "
                               f"the readers of ({protocol.MAX_FDS} descriptors a message)")
        state.link = consumers.link_for(daemon, t.uid)
        state.link.add_kernel_trigger({"trigger": t.id, "cpus": len(raw), "page_size": inst.page_size(),
                                       "formats": [[s, text] for s, _, text, _ in plan],
                                       "captures": list(t.captures)}, state.fds)
        state.events = [f"{s}:{n}" for s, n, _, _ in plan]
        inst.set_enabled([(s, n) for s, n, _, _ in plan], True)
        inst.start()
    except BaseException as exc:
        detach(t)
        if isinstance(exc, (OSError, fmt.FormatError)):
            raise SessionError(f"kernel trigger: {getattr(exc, 'strerror', None) or exc}") from None
        raise  # a UstError says what in one line
    watch(daemon)


def detach(t) -> None:
    """Close the trigger's readers in the consumer and here, then remove its instance."""
    state = t.kernel
    if state is None:
        return
    if state.link is not None:
        try:
            state.link.remove_kernel_trigger(t.id)
        except UstError as exc:
            log(f"kernel trigger {t.name}: the consumer did not close its readers: {exc}")
    protocol.close_fds(state.fds)
    state.fds, state.link = [], None
    if state.instance is not None:
        from ust.daemon.sessiond.kernel import remove_instance

        remove_instance(state.instance, f"kernel trigger {t.name}")
        state.instance = None


def stop_spent(daemon) -> None:
    """Switch off the instances of spent kernel triggers (nothing they record could fire)."""
    with daemon.triggers.lock:
        spent = [t for t in daemon.triggers.by_id.values() if t.kernel is not None and t.spent]
    for t in spent:
        inst = t.kernel.instance
        if inst is not None:
            try:
                inst.stop()
            except UstError as exc:
                log(f"kernel trigger {t.name}: {exc}")


def shutdown(daemon) -> None:
    """The daemon stops (its consumers have): every kernel trigger's instance goes."""
    with daemon.triggers.lock:
        kernel = [t for t in daemon.triggers.by_id.values() if t.kernel is not None]
    for t in kernel:
        t.kernel.link = None  # the consumer is gone
        detach(t)


# -- the matches -------------------------------------------------------------------------

_started_lock = threading.Lock()


def watch(daemon) -> None:
    """Start the collecting thread if it is not running (it ends when no kernel trigger is left)."""
    table = daemon.triggers
    with _started_lock:
        if table.kernel_collector is not None and table.kernel_collector.is_alive():
            return
        table.kernel_collector = threading.Thread(target=_collect, args=(daemon,), name="kernel-triggers",
                                                  daemon=True)
        table.kernel_collector.start()


def _collect(daemon) -> None:
    table = daemon.triggers
    while not daemon.stopping.is_set():
        with _started_lock:
            with table.lock:
                links = {}
                for t in table.by_id.values():
                    if t.kernel is not None and t.kernel.link is not None:
                        links[t.kernel.link.matches_fd] = (t.kernel.link, t.kernel.uid)
                if not any(t.kernel is not None for t in table.by_id.values()):
                    table.kernel_collector = None
                    return
        if not links:
            daemon.stopping.wait(0.1)
            continue
        try:
            ready, _, _ = select.select(list(links), [], [], COLLECT_PERIOD)
        except (OSError, ValueError):
            continue
        for fd in ready:
            try:
                os.eventfd_read(fd)
            except OSError:
                pass
            link, uid = links[fd]
            try:
                reply, fds = link.call({"cmd": "kernel_trigger_matches"})
            except UstError as exc:
                log(f"kernel triggers: matches not collected from the consumer of uid {uid}: {exc}")
                continue
            protocol.close_fds(fds)
            try:
                table.on_kernel_matches(daemon, uid, reply)
            except Exception as exc:  # a bug must not end the thread for every trigger
                log(f"kernel triggers: {type(exc).__name__}: {exc}")
