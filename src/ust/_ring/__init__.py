"""The compiled core: the ring buffer and the tracepoint call (see ring.c)."""

from ust._ring._ring import (CONTEXT_KINDS, PACKET_HEADER_SIZE, Buffer, Channel, Tracepoint, clock_now,
                             context_value, perf_check, perf_value, process_changed, refresh_process_facts)

__all__ = ["Buffer", "Channel", "Tracepoint", "clock_now", "refresh_process_facts", "PACKET_HEADER_SIZE",
           "CONTEXT_KINDS", "context_value", "perf_check", "perf_value", "process_changed"]
