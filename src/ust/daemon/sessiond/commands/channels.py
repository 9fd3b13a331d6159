"""Channels of a session and the context fields they record: enable-channel, disable-channel, add-context."""

from __future__ import annotations

from typing import Any

from ust.daemon.protocol import is_name, list_of, one_of, optional, uint
from ust.daemon.sessiond import sync
from ust.daemon.sessiond.commands._table import CommandGroup
from ust.daemon.sessiond.model import DEFAULT_CHANNEL, ChannelConf, Session
from ust.errors import SessionError

group = CommandGroup()

_CHANNEL_FIELDS = {
    "subbuf_size?": uint(1 << 31),
    "num_subbuf?": uint(1 << 20),
    "overwrite?": bool,
    "buffers?": one_of("uid", "pid"),
    "switch_timer?": uint(1 << 40),
    "read_timer?": uint(1 << 40),
    "monitor_timer?": uint(1 << 40),
    "tracefile_size?": uint(1 << 50),
    "tracefile_count?": uint(1 << 20),
}


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def check_context(value: object) -> str | None:
    from ust.instrument import context as ctx

    if ctx.is_known(value):
        return None
    return f"unknown context {str(value)[:300]!r} (see `ust add-context --list`)"


@group.command("enable_channel", {"session": is_name, "channel": is_name, **_CHANNEL_FIELDS})
def enable_channel(daemon, s: Session, channel: str, **conf: Any) -> dict:
    if channel in s.channels:
        ch = s.channels[channel]
        if conf:
            raise SessionError(f"channel {channel!r} already exists in session {s.name!r}; "
                               "its settings cannot be changed")
        ch.enabled = True
        sync.sync_session(daemon, s)
        return {"channel": ch.to_json()}
    if s.active:
        raise SessionError(f"cannot add channel {channel!r}: session {s.name!r} is active (stop it first)")
    ch = ChannelConf(name=channel, overwrite=s.snapshot)
    for k, v in conf.items():
        setattr(ch, k, v)
    if s.snapshot and not ch.overwrite:
        raise SessionError("a snapshot session needs overwrite channels (drop --discard)")
    if not _pow2(ch.subbuf_size) or ch.subbuf_size < 4096:
        raise SessionError(f"sub-buffer size must be a power of two of at least 4096 bytes, got {ch.subbuf_size}")
    if not _pow2(ch.num_subbuf) or ch.num_subbuf < 2:
        raise SessionError(f"number of sub-buffers must be a power of two of at least 2, got {ch.num_subbuf}")
    if ch.tracefile_size and ch.tracefile_size < ch.subbuf_size:
        raise SessionError(f"tracefile size ({ch.tracefile_size}) must be at least the sub-buffer size "
                           f"({ch.subbuf_size})")
    if ch.tracefile_count and not ch.tracefile_size:
        raise SessionError("--tracefile-count needs --tracefile-size")
    if s.channels and ch.buffers != s.buffers:
        raise SessionError(f"session {s.name!r} uses per-{s.buffers} buffers; all its channels must")
    s.channels[channel] = ch
    return {"channel": ch.to_json()}


@group.command("disable_channel", {"session": is_name, "channel": is_name})
def disable_channel(daemon, s: Session, channel: str) -> dict:
    ch = s.channel(channel, create=False)
    ch.enabled = False
    sync.sync_session(daemon, s)
    return {}


@group.command("add_context", {"session": is_name, "types": list_of(check_context, 64),
                               "channel?": optional(is_name)})
def add_context(daemon, s: Session, types: list[str], channel: str | None = None) -> dict:
    if s.active:
        raise SessionError(f"cannot add context: session {s.name!r} is active (stop it first)")
    if s.traces:
        raise SessionError(f"cannot add context: session {s.name!r} was already started")
    # like lttng: a named channel must exist (only the default one is created,
    # in a session without channels); no name means every channel
    if channel:
        chans = [s.channel(channel, create=not s.channels and channel == DEFAULT_CHANNEL)]
    else:
        chans = list(s.channels.values()) or [s.channel(None)]
    from ust.instrument import context as ctx

    try:
        for ch in chans:
            ctx.normalize(ch.context + types)  # the limits on the whole list
        ctx.check_available(types)
    except ValueError as exc:
        raise SessionError(str(exc)) from None
    for ch in chans:
        for t in types:
            if t not in ch.context:
                ch.context.append(t)
    return {"channels": [c.name for c in chans]}
