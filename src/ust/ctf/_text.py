"""babeltrace2's text rendering: the parts that are not generated code.

The per-event payload/context text is produced by generated decoders
(``_codegen``, ``mode="text"``); this module renders the rest: timestamps,
deltas, the trace fields (hostname, procname, vpid ...), the event name and
the packet context (per packet, from decoded values).
"""

from __future__ import annotations

import time

from ust.instrument import loglevels

from ._codegen import _signed_mask, display_name, fmt_float, fmt_list, fmt_str, make_enum_fmt
from .reader import SPECIAL_PACKET_FIELDS
from .tsdl import ArrayType, EnumType, FloatType, IntType, SequenceType, StringType, StructType

def format_value(typ, v, names=True) -> str:
    if isinstance(typ, EnumType):
        return make_enum_fmt(typ)(v)
    if isinstance(typ, IntType):
        if typ.base == 10:
            return str(v)
        if typ.base == 16:
            return "0x%X" % (v & _signed_mask(typ.size, 4) if typ.signed else v)
        if typ.base == 8:
            return "0%o" % (v & _signed_mask(typ.size, 3) if typ.signed else v)
        if typ.signed:
            v &= (1 << typ.size) - 1
        return "0b" + format(v, f"0{typ.size}b")
    if isinstance(typ, FloatType):
        return fmt_float(v)
    if isinstance(typ, str) or isinstance(typ, StringType):
        return fmt_str(v)
    if isinstance(typ, (ArrayType, SequenceType)):
        if isinstance(v, str):
            return fmt_str(v)
        return fmt_list([format_value(typ.element, x, names) for x in v])
    if isinstance(typ, StructType):
        return format_struct(typ, v, names)
    return str(v)


def format_struct(typ: StructType, values: dict, names=True) -> str:
    parts = []
    for n, t in typ.fields:
        dn = display_name(n)
        if dn not in values:
            continue
        s = format_value(t, values[dn], names)
        parts.append(f"{dn} = {s}" if names else s)
    if not parts:
        return "{ }"
    return "{ " + ", ".join(parts) + " }"


def format_packet_context(sc_packet_context: StructType | None, values: dict, names=True) -> str:
    """The packet context's fields babeltrace2 prints (not those with a meaning of their own)."""
    if sc_packet_context is None:
        return ""
    fields = [(n, t) for n, t in sc_packet_context.fields if n not in SPECIAL_PACKET_FIELDS]
    if not fields:
        return ""
    return format_struct(StructType(fields), values, names)


# --------------------------------------------------------------------------
# Line format options
# --------------------------------------------------------------------------

NAME_CHOICES = ("payload", "context", "scope", "header", "none", "all", "args", "arg", "ctx")
FIELD_CHOICES = ("trace", "trace:hostname", "trace:domain", "trace:procname", "trace:vpid", "loglevel", "emf",
                 "callsite", "all")


class TextFormat:
    """What a line shows, like babeltrace2's sink.text.pretty options."""

    def __init__(self, names="payload,context", fields="trace:hostname,trace:procname,trace:vpid",
                 clock_cycles=False, clock_seconds=False, clock_date=False, clock_gmt=False, delta=True):
        from ust.errors import UstError

        n = set(x.strip() for x in names.split(",") if x.strip()) if names else set()
        bad = n - set(NAME_CHOICES)
        if bad:
            raise UstError(f"unknown --names item {sorted(bad)[0]!r} (choose from {', '.join(NAME_CHOICES)})")
        if "all" in n:
            n |= {"payload", "context", "scope", "header"}
        if "none" in n:
            n = set()
        self.names_payload = bool(n & {"payload", "args", "arg"})
        self.names_context = bool(n & {"context", "ctx"})
        self.names_scope = "scope" in n
        self.names_header = "header" in n
        f = set(x.strip() for x in fields.split(",") if x.strip()) if fields else set()
        bad = f - set(FIELD_CHOICES)
        if bad:
            raise UstError(f"unknown --fields item {sorted(bad)[0]!r} (choose from {', '.join(FIELD_CHOICES)})")
        if "all" in f:
            f |= set(FIELD_CHOICES)
        self.f_trace = "trace" in f
        self.f_hostname = "trace:hostname" in f
        self.f_domain = "trace:domain" in f
        self.f_procname = "trace:procname" in f
        self.f_vpid = "trace:vpid" in f
        self.f_loglevel = "loglevel" in f
        self.clock_cycles = clock_cycles
        self.clock_seconds = clock_seconds
        self.clock_date = clock_date
        self.clock_gmt = clock_gmt
        self.delta = delta
        self._sec_cache = (None, "")
        self._prefix_cache = {}

    # -- per trace / per event class -----------------------------------------
    def trace_prefix(self, trace) -> list:
        """[(label, text)] of the trace fields shown before the event name."""
        r = self._prefix_cache.get(id(trace))
        if r is not None:
            return r
        env = trace.env
        dom = []
        for flag, key, label in ((self.f_hostname, "hostname", "trace:hostname"),
                                 (self.f_domain, "domain", "trace:domain"),
                                 (self.f_procname, "procname", "trace:procname"),
                                 (self.f_vpid, "vpid", "trace:vpid")):
            if not flag or key not in env:
                continue
            v = env[key]
            dom.append((label, f"({v})" if key == "vpid" else str(v)))
        self._prefix_cache[id(trace)] = dom
        return dom

    def event_head(self, ec, trace) -> str:
        """Everything between the timestamp/delta and the first scope."""
        dom = list(self.trace_prefix(trace))
        if self.f_loglevel and ec.loglevel is not None:
            dom.append(("loglevel", f"{loglevels.NAMES.get(ec.loglevel, '')} ({ec.loglevel})"))
        if self.names_header:
            s = f"trace = {trace.name}, " if self.f_trace else ""
            if s and dom:
                s += ", "  # babeltrace2 2.0 prints an empty item here
            s += "".join(f"{label} = {text}, " for label, text in dom)
            return s + f"name = {ec.name}, "
        s = trace.name if self.f_trace else ""
        if dom:
            s += ":".join(text for _, text in dom) + " "
        return s + ec.name + ": "

    def packet_context_text(self, typ, values) -> str:
        t = format_packet_context(typ, values, self.names_context)
        if not t:
            return ""
        return self.scope_prefix("stream.packet.context") + t

    def scope_prefix(self, scope) -> str:
        return f"{scope} = " if self.names_scope else ""

    # -- time ------------------------------------------------------------------
    def ns_text(self, ns: int) -> str:
        sec, frac = divmod(ns, 1_000_000_000)
        if self.clock_seconds:
            return "%d.%09d" % (sec, frac)
        return "%s.%09d" % (self.sec_text(sec), frac)

    def sec_text(self, sec: int) -> str:
        """The whole-second part of a time of day (cached: it changes rarely)."""
        cs, ctext = self._sec_cache
        if cs != sec:
            try:
                tm = time.gmtime(sec) if self.clock_gmt else time.localtime(sec)
                ctext = time.strftime("%Y-%m-%d %H:%M:%S" if self.clock_date else "%H:%M:%S", tm)
            except (OverflowError, ValueError, OSError):
                ctext = str(sec)  # beyond the platform's time range: seconds since the Epoch
            self._sec_cache = (sec, ctext)
        return ctext

    def delta_text(self, prev, cur) -> str:
        if self.clock_cycles:
            if prev is None:
                return "(+????????????)"
            return "(+%012d)" % (cur - prev)
        if prev is None:
            return "(+?.?????????)"
        d = cur - prev
        return "(+%d.%09d)" % divmod(d, 1_000_000_000)
