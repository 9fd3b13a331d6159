"""The kernel trace's ``prio`` context: each event's thread priority, exact or unknown.

lttng-modules writes ``task_prio(current)`` (``p->prio - 100``: nice 0 is 20,
real-time priorities are negative) into every event. An ftrace record carries
no priority, so ust follows it (docs/kernel.md, "The prio context"):

* a ``sched_switch`` record says the outgoing thread's prio (its own
  context) and the incoming one's: from it on, the CPU's current thread and
  its prio are known exactly;
* a ``sched_pi_setprio`` record (priority inheritance) says a thread's new
  prio, exactly, from that time on;
* a priority-setting system call (``setpriority``, ``sched_setscheduler``,
  ``sched_setparam``, ``sched_setattr``, ``nice``) makes its target's prio
  unknown from its entry until the target's next ``sched_switch`` in (its
  new value is not in any record);
* lost events (discard mode's dropped events, overwrite mode's missed
  pages) make what they could have hidden unknown.

These events are enabled in the instance for the context (and written only
if the session asked for them too). A change recorded on one CPU must be
applied to a thread running on another at the right time, so the engine
reads every CPU before converting any (ust.kernel.sweep: ``Sweep.sweep``) and
holds back each CPU's pages newer than the *watermark*: the oldest time up to
which every CPU has been read, minus ``MARGIN_NS`` for a record being written
when its CPU was read. A snapshot, which cannot wait, writes ``unknown``
after the watermark instead. ``PRIO_UNKNOWN`` (INT32_MIN, which lttng-modules never
writes) says unknown.
"""

from __future__ import annotations

from . import formats as fmt
from .pages import PRIO_UNKNOWN

__all__ = ["PRIO_UNKNOWN", "TRACKED", "SETTERS", "tracked_events", "converter_config"]

# What the prio context needs recorded, beside what the session asked for.
TRACKED = [("sched", "sched_switch"), ("sched", "sched_pi_setprio")]
# The system calls that set priorities: (name, its `which` argument or "", its target argument).
SETTERS = [("setpriority", "which", "who"), ("sched_setscheduler", "", "pid"), ("sched_setparam", "", "pid"),
           ("sched_setattr", "", "pid"), ("nice", "", "")]


def tracked_events(available: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (system, event) of TRACKED and of the setters' entries this kernel has."""
    have = set(available)
    out = [e for e in TRACKED if e in have]
    out += [("syscalls", f"sys_enter_{name}") for name, _, _ in SETTERS if ("syscalls", f"sys_enter_{name}") in have]
    return out


def converter_config(formats: list[fmt.EventFormat]) -> tuple:
    """The Converter's ``prio`` configuration (event ids and field offsets) from the formats
    of the tracked events (those this kernel does not have are left out)."""
    by_name = {(ev.system, ev.name): ev for ev in formats}

    def offset(ev: fmt.EventFormat, name: str) -> int:
        for f in ev.fields:
            if f.name == name and f.size in (4, 8) and not f.dynamic and not f.count:
                return f.offset  # an int (or a long's low half: little-endian)
        raise fmt.FormatError(f"{ev.system}:{ev.name} has no integer field {name!r}")

    switch = by_name.get(("sched", "sched_switch"))
    pi = by_name.get(("sched", "sched_pi_setprio"))
    setters = []
    for name, which, who in SETTERS:
        ev = by_name.get(("syscalls", f"sys_enter_{name}"))
        if ev is not None:
            # nice(inc) changes the caller's: no target argument (who 0: the caller)
            setters.append((ev.id, offset(ev, which) if which else 0, offset(ev, who) if who else 0))
    return ((switch.id, offset(switch, "prev_prio"), offset(switch, "next_pid"), offset(switch, "next_prio"))
            if switch else None,
            (pi.id, offset(pi, "pid"), offset(pi, "newprio")) if pi else None,
            tuple(setters))
