"""The compiled core: the ring buffer and the tracepoint call (see ring.c)."""

from ust._ring._ring import (
    PACKET_HEADER_SIZE,
    Buffer,
    Channel,
    Tracepoint,
    TracepointArgumentWarning,
    clock_now,
    drain_at_exit,
    refresh_process_facts,
    set_strict,
)

__all__ = ["Buffer", "Channel", "Tracepoint", "TracepointArgumentWarning", "clock_now", "drain_at_exit", "refresh_process_facts",
           "set_strict", "PACKET_HEADER_SIZE"]
