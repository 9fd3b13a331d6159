"""Shared helpers of the analyses: who emitted an event, units, progress."""

from __future__ import annotations

import sys
import time


def hashable(v):
    """A decoded value as a dict key: whatever the metadata says a field is (an array, a
    struct), lists become tuples and dicts tuples of items."""
    if isinstance(v, list):
        return tuple(hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple((k, hashable(x)) for k, x in v.items())
    return v


def thread_of(ev):
    """(vpid, vtid, procname) of an event: its contexts, else its trace's env (hashable)."""
    ctx = ev.context
    env = ev.stream.trace.env
    vpid = ctx.get("vpid", ctx.get("pid", env.get("vpid")))
    vtid = ctx.get("vtid", ctx.get("tid"))
    proc = ctx.get("procname", env.get("procname"))
    return hashable(vpid), hashable(vtid), hashable(proc)


def group_key(ev, key=None):
    """Pairing group of an event: a field/context value, or its thread (else its stream)."""
    if key is not None:
        if key.startswith("$ctx."):
            return ("ctx", hashable(ev.context.get(key[5:])))
        return ("key", hashable(ev.fields.get(key, ev.context.get(key))))
    vpid, vtid, _ = thread_of(ev)
    if vtid is not None:
        return ("thread", id(ev.stream.trace) if vpid is None else vpid, vtid)
    if vpid is not None:
        return ("process", id(ev.stream.trace), vpid)
    return ("stream", ev.stream.path)


def fmt_ns(ns) -> str:
    """A duration for humans: 812 ns, 3.25 µs, 12.0 ms, 1.500 s."""
    ns = float(ns)
    a = abs(ns)
    if a < 1e3:
        return f"{ns:.0f} ns"
    if a < 1e6:
        return f"{ns / 1e3:.2f} µs"
    if a < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.3f} s"


class Progress:
    """'\\r<what>: N events' on a terminal's stderr, at most every 0.2 s; silent otherwise."""

    def __init__(self, what, stream=None):
        self.what = what
        self.stream = stream or sys.stderr
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False
        self.last = 0.0
        self.shown = False

    def update(self, n):
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= 0.2:
            self.last = now
            self.stream.write(f"\r{self.what}: {n:,} events")
            self.stream.flush()
            self.shown = True

    def done(self, n):
        if self.enabled and self.shown:
            self.stream.write(f"\r{self.what}: {n:,} events, done\n")
            self.stream.flush()


def jsonable(v, *, clean_text: bool = False):
    """A decoded field value as JSON can hold it: NaN/±inf as strings, bytes as
    hex; with clean_text, undecodable bytes kept in a str (lone surrogates)
    become U+FFFD, for consumers that reject surrogates."""
    if isinstance(v, dict):
        return {k: jsonable(x, clean_text=clean_text) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x, clean_text=clean_text) for x in v]
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if clean_text and isinstance(v, str):
        return v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return v
