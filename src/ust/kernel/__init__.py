"""The kernel domain: the kernel's own tracer (ftrace, through tracefs), no module.

  tracefs   finding tracefs, one ftrace instance per session, stale instances
  formats   events/*/format parsing, LTTng's event and field names
  pages     ftrace ring-buffer pages -> CTF packets (reference of the C converter)
  trace     <output>/kernel: metadata and per-CPU stream files
  capture   KernelCapture: a session's instance, readers and trace

See docs/kernel.md. Nothing here is imported by ``import ust``.
"""
