"""The compiled core: the ring buffer and the tracepoint call (one C file per role: see common.h)."""

from ust._ring._ring import (CONTEXT_KINDS, PACKET_HEADER_SIZE, Buffer, Channel, Tracepoint,
                             TracepointArgumentWarning, clock_now, context_value, drain_at_exit, perf_check,
                             perf_value, process_changed, refresh_process_facts, set_strict)

__all__ = ["Buffer", "Channel", "Tracepoint", "TracepointArgumentWarning", "clock_now", "drain_at_exit",
           "refresh_process_facts", "set_strict", "PACKET_HEADER_SIZE", "CONTEXT_KINDS", "context_value",
           "perf_check", "perf_value", "process_changed"]
