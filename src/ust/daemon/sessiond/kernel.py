"""A session's kernel domain in the session daemon (lttng's ``-k``).

What a session asked of the kernel (``KernelConf``: event rules, buffer size
and mode, contexts) is kept here until ``start``, which makes the session's
ftrace instance and its capture (ust.kernel.capture.KernelCapture: the
instance ``ust-<session>``, the readers, ``<output>/kernel``); ``stop``
writes out what the instance holds; ``destroy`` removes the instance. A
snapshot session keeps its instance in overwrite mode and writes it out only
on ``snapshot record`` (into the snapshot's directory).

Who may: the kernel domain reads every process's scheduling and system
calls: the daemon must run as root, and the session be root's or, through
the system daemon, a member of the ``tracing`` group's (whose kernel trace
files are made with the member's own credentials: ust.kernel.owner_files).
Anyone else gets a one-line error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ust.daemon.sessiond.log import log
from ust.errors import SessionError, UstError
from ust.kernel.capture import DEFAULT_BUFFER_KB
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
    capture: Any = None  # KernelCapture while the instance exists

    def summary(self) -> dict:
        out = {"rules": [r.to_json() for r in self.rules], "buffer_size_kb": self.buffer_size_kb,
               "overwrite": self.overwrite, "contexts": list(self.contexts)}
        cap = self.capture
        if cap is not None:
            out["instance"] = cap.instance.name
            out["lost"] = sum(cap.discarded().values())
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


def _capture(daemon, s, k: KernelConf):
    """The session's capture, made on first use (tracefs mounted, instance created)."""
    if k.capture is None:
        from ust.kernel.capture import KernelCapture

        k.capture = KernelCapture(s.name, s.output, buffer_size_kb=k.buffer_size_kb, overwrite=k.overwrite,
                                  clock_offset_ns=s.clock_offset, contexts=tuple(["tid"] + k.contexts),
                                  owner_uid=s.uid,  # another user's trace files: made as that user
                                  snapshot=s.snapshot)
    return k.capture


def _apply(k: KernelConf) -> None:
    """Make the instance's enabled events what the rules say."""
    cap = k.capture
    if cap is None:
        return
    want: dict[bool, list[str]] = {False: [], True: []}
    off: dict[bool, list[str]] = {False: [], True: []}
    for r in k.rules:
        (want if r.enabled else off)[r.syscall].append(r.pattern)
    for syscall in (False, True):
        if off[syscall]:
            cap.disable(off[syscall], syscalls=syscall)
        if want[syscall]:
            cap.enable(want[syscall], syscalls=syscall)


def _wrap(fn, *args):
    try:
        return fn(*args)
    except SessionError:
        raise
    except UstError as exc:
        raise SessionError(str(exc)) from None
    except OSError as exc:
        raise SessionError(f"kernel tracing: {exc.strerror or exc}") from None


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
    if k.capture is not None:
        _wrap(_apply, k)
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
    _wrap(_apply, k)
    return n


def set_channel(daemon, s, buffer_size_kb: int | None, overwrite: bool | None) -> dict:
    k = conf(daemon, s)
    if k.capture is not None:
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
    if k.capture is not None:
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


# -- the session's life (ust.daemon.sessiond.commands.sessions) -------------------

def on_start(daemon, s) -> None:
    k = s.kernel
    if not has_rules(s):
        return
    check_allowed(daemon, s)
    cap = _wrap(_capture, daemon, s, k)
    _wrap(_apply, k)
    _wrap(cap.start)  # a snapshot session's: the ring keeps the latest, read at snapshot time


def on_stop(daemon, s) -> None:
    k = s.kernel
    if k is None or k.capture is None:
        return
    _wrap(k.capture.stop)


def on_snapshot(daemon, s, dest: str) -> None:
    """Write what the kernel ring holds now into ``<dest>/kernel`` (it is consumed)."""
    k = s.kernel
    if k is None or k.capture is None:
        return
    _wrap(k.capture.snapshot_to, dest)


def on_destroy(daemon, s) -> None:
    k = s.kernel
    if k is None or k.capture is None:
        return
    try:
        k.capture.destroy()
    except Exception as exc:  # the session goes anyway; the next daemon start removes a leftover
        log(f"kernel: removing the instance of {s.name}: {exc}")
    k.capture = None


def remove_stale() -> None:
    """At daemon start (root): remove the ftrace instances of dead ust processes."""
    if os.geteuid() != 0:
        return
    try:
        from ust.kernel import tracefs

        removed = tracefs.remove_stale_instances()
    except Exception as exc:
        log(f"kernel: cannot look for stale ftrace instances: {exc}")
        return
    for name in removed:
        log(f"kernel: removed stale ftrace instance {name}")
