"""The kernel domain's commands (lttng's ``-k``): events, system calls, the
channel, contexts, and the list of what the kernel offers (sessiond/kernel.py)."""

from __future__ import annotations

import os

from ust.daemon.protocol import is_name, list_of, optional, string, uint
from ust.daemon.sessiond import kernel
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond.model import Session
from ust.errors import SessionError

group = CommandGroup()


@group.command("kernel_enable_event", {"session": is_name, "patterns": list_of(string(512), 256),
                                       "syscall?": bool})
def kernel_enable_event(daemon, s: Session, patterns: list[str], syscall: bool = False) -> dict:
    if not patterns:
        raise SessionError("no kernel event given")
    return {"rules": kernel.enable(daemon, s, patterns, syscall)}


@group.command("kernel_disable_event", {"session": is_name, "patterns": list_of(string(512), 256),
                                        "syscall?": bool})
def kernel_disable_event(daemon, s: Session, patterns: list[str], syscall: bool = False) -> dict:
    return {"disabled": kernel.disable(daemon, s, patterns, syscall)}


@group.command("kernel_enable_channel", {"session": is_name, "buffer_size_kb?": optional(uint(1 << 30)),
                                         "overwrite?": optional(bool)})
def kernel_enable_channel(daemon, s: Session, buffer_size_kb: int | None = None,
                          overwrite: bool | None = None) -> dict:
    return {"kernel": kernel.set_channel(daemon, s, buffer_size_kb, overwrite)}


@group.command("kernel_add_context", {"session": is_name, "types": list_of(string(64), 16)})
def kernel_add_context(daemon, s: Session, types: list[str]) -> dict:
    return {"contexts": kernel.add_context(daemon, s, types)}


@group.command("kernel_list", {})
def kernel_list(daemon, caller: int) -> dict:
    if os.geteuid() != 0 or (caller != 0 and not (daemon.system and daemon.tracing_member(caller))):
        raise SessionError("kernel tracing needs root: only root (or the tracing group, through the system "
                           "daemon) may list the kernel's events")
    return kernel.available()
