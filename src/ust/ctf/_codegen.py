"""Compile CTF types into specialized Python decoders.

Each event class (and each stream's header/context) becomes one Python
function, generated as source and ``exec``'d once: runs of fixed-size fields
become a single precompiled ``struct.Struct.unpack_from``, strings one
``bytes.index``, arrays of scalars one ``unpack_from`` with a repeat count.
No per-field interpretation happens at read time.

Two flavours are generated from the same type:
  * ``mode="dict"``: ``f(b, p) -> (p, value)`` where value is a dict of Python
    values (enums as ints, arrays as lists, UTF-8 int arrays as str);
  * ``mode="text"``: ``f(b, p) -> (p, text)`` where text is babeltrace2's
    pretty rendering of the struct (``{ a = 1, b = "x" }``);
  * ``mode="both"``: ``f(b, p) -> (p, (value, text))``: each field decoded
    once, then given as a value and as text (``ust view --filter`` matches
    the values and prints the text of the events that match).

``b`` is the bytes of one packet (content only), ``p`` a byte offset in it:
CTF alignment is relative to the packet start. Sub-byte fields (bitfields,
e.g. the compact event header's 5-bit id) are handled by tracking the bit
offset statically, since their sizes are known when the code is generated.

Reading past the end of the packet raises ``struct.error``/``ValueError``/
``IndexError``; the reader turns those into ``TraceFormatError``.
"""

from __future__ import annotations

import struct

from ust.errors import TraceFormatError

from .tsdl import (ArrayType, EnumType, FloatType, IntType, SequenceType, StringType, StructType, VariantType)

_INT_CODES = {(8, False): "B", (8, True): "b", (16, False): "H", (16, True): "h", (32, False): "I",
              (32, True): "i", (64, False): "Q", (64, True): "q"}
_FLOAT_CODES = {32: "f", 64: "d"}


class Unsupported(TraceFormatError):
    pass


class PacketError(Exception):
    """Raised by the packet decoders (generated, or C): where in the packet, and why."""

    def __init__(self, offset, exc):
        self.offset = offset
        self.exc = exc

    @classmethod
    def from_c(cls, exc: ValueError) -> "PacketError":
        """The error of a ``_decode`` function: ValueError("what|offset")."""
        msg, _, off = str(exc).rpartition("|")
        return cls(int(off or 0), ValueError(msg))

    def format_error(self, path: str, packet_offset: int) -> TraceFormatError:
        """The one wrap of a decode error: what the reader raises, with the byte in the file."""
        return TraceFormatError(f"corrupt or truncated event ({_why(self.exc)})", path, packet_offset + self.offset)


def _why(exc) -> str:
    if isinstance(exc, (struct.error, IndexError)):
        return "data runs past the end of the packet"
    if isinstance(exc, ValueError) and "substring" in str(exc):
        return "unterminated string"
    return str(exc) or type(exc).__name__


def display_name(name: str) -> str:
    """CTF 1.8: a leading underscore of a field name is not part of the name."""
    return name[1:] if name.startswith("_") else name


# --------------------------------------------------------------------------
# Text helpers used by generated code (babeltrace2's pretty rendering)
# --------------------------------------------------------------------------

_ESC = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", '"': '\\"', "\v": "\\v", "\f": "\\f", "\a": "\\a",
        "\b": "\\b"}


def fmt_str(s: str) -> str:
    if s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    out = []
    for ch in s:
        e = _ESC.get(ch)
        if e is not None:
            out.append(e)
        elif ch < " " or ch == "\x7f":
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def fmt_float(v: float) -> str:
    s = "%g" % v
    return s


def fmt_list(items) -> str:
    if not items:
        return "[ ]"
    return "[ " + ", ".join([f"[{i}] = {x}" for i, x in enumerate(items)]) + " ]"


def fmt_list_nn(items) -> str:
    """An array without its indices (babeltrace2 with field names off)."""
    if not items:
        return "[ ]"
    return "[ " + ", ".join([str(x) for x in items]) + " ]"


def make_enum_fmt(enum: EnumType):
    cache = {}

    def fmt(v):
        r = cache.get(v)
        if r is None:
            labels = enum.labels(v)
            if not labels:
                lab = "<unknown>"
            elif len(labels) == 1:
                lab = fmt_str(labels[0])
            else:
                lab = "{ " + ", ".join(fmt_str(x) for x in labels) + " }"
            r = f"( {lab} : container = {v} )"
            if len(cache) < 4096:
                cache[v] = r
        return r

    return fmt


def decode_text(raw: bytes) -> str:
    """Bytes of a CTF string (up to its NUL) as str; bad UTF-8 survives as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------


def _signed_mask(size, digit_bits):
    """Negative numbers in hex/octal: two's complement over whole digits (like babeltrace2)."""
    bits = -(-size // digit_bits) * digit_bits
    return (1 << bits) - 1


# What a generated decoder catches from malformed data, wrapped in a PacketError.
DECODE_ERRORS = "(struct_error, ValueError, IndexError, KeyError, LookupError, OverflowError)"


class _Gen:
    def __init__(self, mode: str, what: str, special_header: bool = False, names: bool = True):
        self.mode = mode
        self.names = names
        self.what = what
        self.lines: list[str] = []
        self.indent = 1
        self.consts: dict[str, object] = {
            "fmt_str": fmt_str, "fmt_float": fmt_float, "decode_text": decode_text,
            "fmt_list": fmt_list if names else fmt_list_nn,
            "Unsupported": Unsupported, "VariantError": ValueError,
        }
        self.nvar = 0
        self.run: list[tuple[str, str, str]] = []  # pending (var, code, byteorder)
        self.run_order = "<"
        self.bit = 0  # static bit offset from p (pending sub-byte position)
        self.mod = 1  # p % mod == rem is known statically
        self.rem = 0
        self.scopes: list[dict[str, tuple[str, object]]] = []
        self.header = special_header
        self.deferred: list[str] = []

    # -- helpers -------------------------------------------------------------

    def packet_error_clause(self, offset: str) -> list[str]:
        """The except clause closing a packet loop's ``try``: errors carry ``offset``."""
        self.consts["struct_error"] = struct.error
        self.consts["PacketError"] = PacketError
        return [f"    except {DECODE_ERRORS} as exc:", f"        raise PacketError({offset}, exc) from None"]

    def emit_unknown_event(self, first: bool) -> None:
        """Close an if/elif dispatch on ``eid``."""
        if first:
            self.emit("if True:")
            self.emit("    raise LookupError('no event class')")
        self.emit("else:")
        self.emit("    raise LookupError('unknown event id %d' % eid)")

    def define(self, fname: str, lines: list[str], label: str):
        """Compile generated source (with this generator's constants) into function ``fname``."""
        text = "\n".join(lines) + "\n"
        ns = dict(self.consts)
        # the label names an event of the trace: a hostile name may hold a NUL, which a file name may not
        label = label.replace("\0", "\\0")
        try:
            exec(compile(text, f"<ust.ctf {label}>", "exec"), ns)
        except (SyntaxError, ValueError) as exc:  # a bug in the generator, or an impossible name
            raise Unsupported(f"cannot compile the {label}: {exc}") from None
        fn = ns[fname]
        fn.__source__ = text
        return fn
    def var(self, hint="v"):
        self.nvar += 1
        return f"{hint}{self.nvar}"

    def const(self, obj, hint="K"):
        for k, v in self.consts.items():
            if v is obj:
                return k
        name = f"{hint}{len(self.consts)}"
        self.consts[name] = obj
        return name

    def emit(self, line):
        self.lines.append("    " * self.indent + line)

    def flush(self):
        if not self.run:
            return
        fmt = self.run_order + "".join(c for _, c, _ in self.run)
        S = struct.Struct(fmt)
        sname = self.const(S, "S")
        names = [v for v, _, _ in self.run]
        if len(names) == 1:
            self.emit(f"{names[0]}, = {sname}.unpack_from(b, p)")
        else:
            self.emit(f"{', '.join(names)} = {sname}.unpack_from(b, p)")
        self.emit(f"p += {S.size}")
        self._advance(S.size)
        self.run = []
        for line in self.deferred:
            self.emit(line)
        self.deferred = []

    def emit_after(self, var, line):
        """Emit line once var is decoded (now, or right after its run is unpacked)."""
        if any(v == var for v, _, _ in self.run):
            self.deferred.append(line)
        else:
            self.emit(line)

    def _advance(self, nbytes):
        if self.mod > 1:
            self.rem = (self.rem + nbytes) % self.mod

    def unknown_pos(self):
        self.mod, self.rem = 1, 0

    def align_bits(self, align_bits):
        """Align p to align_bits (>= 8) or, below 8, leave the bit position."""
        if align_bits <= 1:
            return
        if align_bits < 8:
            r = self.bit % align_bits
            if r:
                self.bit += align_bits - r
            return
        # byte alignment: settle pending bits first
        if self.bit:
            self.flush()
            nb = (self.bit + 7) // 8
            self.emit(f"p += {nb}")
            self._advance(nb)
            self.bit = 0
        a = align_bits // 8
        if a == 1:
            return
        if self.mod % a == 0 and self.rem % a == 0:
            return
        self.flush()
        if self.mod % a == 0:
            pad = (-self.rem) % a
            if pad:
                self.emit(f"p += {pad}")
            self.rem = 0
            self.mod = max(self.mod, a)
            return
        self.emit(f"p = (p + {a - 1}) & {-a}")
        self.mod, self.rem = a, 0

    def settle_bits(self):
        if self.bit:
            self.flush()
            nb = (self.bit + 7) // 8
            self.emit(f"p += {nb}")
            self._advance(nb)
            self.bit = 0

    def lookup(self, ref: str):
        parts = ref.split(".")
        # strip absolute scope prefixes: event.fields.x, stream.event.context.x ...
        for prefix in (["event", "fields"], ["event", "context"], ["stream", "event", "context"],
                       ["stream", "event", "header"], ["stream", "packet", "context"], ["trace", "packet", "header"]):
            if parts[: len(prefix)] == prefix and len(parts) > len(prefix):
                parts = parts[len(prefix):]
                break
        for scope in reversed(self.scopes):
            if parts[0] in scope:
                var, typ = scope[parts[0]]
                if len(parts) == 1:
                    return var, typ
                # a field inside a nested struct
                sub = typ
                for name in parts[1:]:
                    if not isinstance(sub, _Nested) or name not in sub.members:
                        break
                    var, sub = sub.members[name]
                else:
                    return var, sub
        raise Unsupported(f"cannot resolve reference {ref!r} in {self.what}")

    # -- types ---------------------------------------------------------------------
    def gen(self, typ, name_hint="v", inline=False):
        """Emit code decoding one value of typ; return (value_expr, text_expr, scope_entry).

        inline: a struct's value is returned as an expression, not assigned."""
        if isinstance(typ, EnumType):
            var, _ = self.gen_int(typ.container, name_hint)
            fmt = self.const(make_enum_fmt(typ), "E")
            return var, f"{fmt}({var})", typ
        if isinstance(typ, IntType):
            var, text = self.gen_int(typ, name_hint)
            return var, text, typ
        if isinstance(typ, FloatType):
            return self.gen_float(typ, name_hint)
        if isinstance(typ, StringType):
            self.align_bits(8)
            self.flush()
            var = self.var(name_hint)
            self.emit("e = b.index(0, p)")
            self.emit(f"{var} = b[p:e].decode('utf-8', 'surrogateescape')")
            self.emit("p = e + 1")
            self.unknown_pos()
            return var, self.str_text(var), typ
        if isinstance(typ, StructType):
            return self.gen_struct(typ, name_hint, inline)
        if isinstance(typ, ArrayType):
            return self.gen_array(typ.element, str(typ.length), typ.length, name_hint, typ)
        if isinstance(typ, SequenceType):
            lvar, ltyp = self.lookup(typ.length_ref)
            if not isinstance(ltyp, (IntType, EnumType)):
                raise Unsupported(f"sequence length {typ.length_ref!r} is not an integer in {self.what}")
            return self.gen_array(typ.element, lvar, None, name_hint, typ)
        if isinstance(typ, VariantType):
            return self.gen_variant(typ, name_hint)
        raise Unsupported(f"unsupported type {type(typ).__name__} in {self.what}")

    def gen_int(self, t: IntType, hint):
        self.align_bits(t.align)
        var = self.var(hint)
        order = "<" if t.byte_order == "le" else ">"
        code = _INT_CODES.get((t.size, t.signed))
        if self.bit == 0 and code is not None:
            if self.run and self.run_order != order:
                self.flush()
            self.run_order = order
            self.run.append((var, code, order))
        else:
            self.flush()
            # general case: bitfield or odd byte size, from a static bit offset
            first = self.bit // 8
            shift_in = self.bit % 8
            nbytes = (shift_in + t.size + 7) // 8
            endian = "little" if order == "<" else "big"
            mask = (1 << t.size) - 1
            lo = f"p + {first}" if first else "p"
            self.emit(f"{var} = int.from_bytes(b[{lo}:p + {first + nbytes}], '{endian}')")
            self.emit(f"if len(b) < p + {first + nbytes}: raise IndexError")
            if endian == "little":
                if shift_in:
                    self.emit(f"{var} = ({var} >> {shift_in}) & {mask}")
                elif t.size % 8:
                    self.emit(f"{var} &= {mask}")
            else:
                sh = nbytes * 8 - shift_in - t.size
                self.emit(f"{var} = ({var} >> {sh}) & {mask}" if sh else f"{var} &= {mask}")
            if t.signed:
                self.emit(f"if {var} >> {t.size - 1}: {var} -= {1 << t.size}")
            self.bit += t.size
            if self.bit % 8 == 0:
                nb = self.bit // 8
                self.emit(f"p += {nb}")
                self._advance(nb)
                self.bit = 0
        if self.header and t.clock is not None:
            # the clock value: a full one, or its low bits (wrap-around: at
            # most one wrap since the previous timestamp of the stream)
            if t.size >= 64:
                self.emit_after(var, f"cur = {var}")
            else:
                m = (1 << t.size) - 1
                self.emit_after(var, f"low = cur & {m}; cur = cur - low + {var} if {var} >= low "
                                     f"else cur - low + {var} + {m + 1}")
        return var, self.int_text(t, var)

    def str_text(self, var):
        """Text of a string value (a temporary): quoted as is unless it needs escapes."""
        if self.mode == "dict":
            return var
        if self.mode == "both":
            # an expression, evaluated by the text's f-string: only for the events a filter keeps
            return f"fmt_str({var})"
        t = "t" + var
        self.emit(f"""{t} = '"' + {var} + '"' if {var}.isprintable() and '"' not in {var} and '\\\\' not in {var} """
                  f"""else fmt_str({var})""")
        return t

    def gen_lttng_header(self, t, kind):
        """Hand-tuned decoding of LTTng's event headers: one unpack in the common case."""
        self.align_bits(t.align)
        if kind == "large":
            S = self.const(struct.Struct("<HI"), "S")
            X = self.const(struct.Struct("<IQ"), "S")
            self.emit(f"eid, ts = {S}.unpack_from(b, p)")
            self.emit("if eid != 65535:")
            self.emit("    p += 6")
            self.emit("    low = cur & 4294967295")
            self.emit("    cur = cur - low + ts if ts >= low else cur - low + ts + 4294967296")
            self.emit("else:")
            self.emit(f"    eid, cur = {X}.unpack_from(b, p + 2)")
            self.emit("    p += 14")
        else:
            S = self.const(struct.Struct("<I"), "S")
            X = self.const(struct.Struct("<IQ"), "S")
            self.emit(f"ts, = {S}.unpack_from(b, p)")
            self.emit("eid = ts & 31")
            self.emit("if eid != 31:")
            self.emit("    ts >>= 5")
            self.emit("    p += 4")
            self.emit("    low = cur & 134217727")
            self.emit("    cur = cur - low + ts if ts >= low else cur - low + ts + 134217728")
            self.emit("else:")
            self.emit(f"    eid, cur = {X}.unpack_from(b, p + 1)")
            self.emit("    p += 13")
        self.unknown_pos()
        return "None", "None", _Nested({})

    def int_text(self, t: IntType, var):
        """Text template of an integer (a _T with \\0 holes)."""
        if t.base == 10:
            return _T(f"\0{var}\0")
        if t.base == 16:
            return _T(f"0x\0({var} & {_signed_mask(t.size, 4)}):X\0" if t.signed else f"0x\0{var}:X\0")
        if t.base == 8:
            return _T(f"0\0({var} & {_signed_mask(t.size, 3)}):o\0" if t.signed else f"0\0{var}:o\0")
        v = f"({var} & {(1 << t.size) - 1})" if t.signed else var
        return _T(f"0b\0{v}:0{t.size}b\0")

    def int_expr(self, t: IntType, var):
        """Text of an integer as a Python expression."""
        return _tmpl_expr(self.int_text(t, var))

    def gen_float(self, t: FloatType, hint):
        self.align_bits(t.align)
        var = self.var(hint)
        code = _FLOAT_CODES.get(t.size)
        if code is None or self.bit:
            raise Unsupported(f"unsupported floating point size {t.size} in {self.what}")
        order = "<" if t.byte_order == "le" else ">"
        if self.run and self.run_order != order:
            self.flush()
        self.run_order = order
        self.run.append((var, code, order))
        return var, _T(f"\0{var}:g\0"), t

    def gen_array(self, elem, count_expr, count_static, hint, typ):
        var = self.var(hint)
        is_text = isinstance(elem, IntType) and elem.encoding != "none" and elem.size == 8
        scalar_code = None
        if isinstance(elem, (IntType, EnumType)):
            it = elem.container if isinstance(elem, EnumType) else elem
            if it.size % 8 == 0 and it.align % 8 == 0:
                scalar_code = _INT_CODES.get((it.size, it.signed))
                order = "<" if it.byte_order == "le" else ">"
                esize = it.size // 8
        elif isinstance(elem, FloatType) and elem.size in (32, 64):
            scalar_code = _FLOAT_CODES[elem.size]
            order = "<" if elem.byte_order == "le" else ">"
            esize = elem.size // 8
        self.align_bits(max(elem.align, 8) if (scalar_code or is_text) else elem.align)
        if is_text:
            self.flush()
            self.settle_bits()
            n = count_expr
            self.emit(f"if p + {n} > len(b): raise IndexError")
            self.emit(f"r = b[p:p + {n}]")
            self.emit("z = r.find(0)")
            self.emit(f"{var} = (r if z < 0 else r[:z]).decode('utf-8', 'surrogateescape')")
            self.emit(f"p += {n}")
            if count_static is not None:
                self._advance(count_static)
            else:
                self.unknown_pos()
            return var, self.str_text(var), typ
        if scalar_code is not None:
            self.flush()
            self.settle_bits()
            n = count_expr
            if count_static is not None:
                S = struct.Struct(f"{order}{count_static}{scalar_code}")
                sname = self.const(S, "S")
                self.emit(f"{var} = list({sname}.unpack_from(b, p))")
                self.emit(f"p += {S.size}")
                self._advance(S.size)
            else:
                self.emit(f"if p + {n} * {esize} > len(b): raise IndexError")
                self.emit(f"{var} = list(unpack_from('{order}%d{scalar_code}' % {n}, b, p))")
                self.emit(f"p += {n} * {esize}")
                self.consts["unpack_from"] = struct.unpack_from
                self.unknown_pos()
            if isinstance(elem, EnumType):
                fmt = self.const(make_enum_fmt(elem), "E")
                return var, f"fmt_list([{fmt}(x) for x in {var}])", typ
            if isinstance(elem, FloatType):
                return var, f"fmt_list([fmt_float(x) for x in {var}])", typ
            if isinstance(elem, IntType) and elem.base != 10:
                return var, f"fmt_list([{self.int_expr(elem, 'x')} for x in {var}])", typ
            return var, f"fmt_list({var})", typ
        # general element: loop over a nested generated function
        sub = compile_type(elem, self.mode, f"{self.what} element", self.names)
        fname = self.const(sub, "F")
        self.flush()
        self.settle_bits()
        n = count_expr
        self.emit(f"if {n} > len(b) * 8: raise IndexError")
        self.emit(f"{var} = []")
        if self.mode == "both":
            tvar = self.var("t")
            self.emit(f"{tvar} = []")
            self.emit(f"for _ in range({n}):")
            self.emit(f"    p, (x, xt) = {fname}(b, p)")
            self.emit(f"    {var}.append(x)")
            self.emit(f"    {tvar}.append(xt)")
            self.unknown_pos()
            return var, f"fmt_list({tvar})", typ
        self.emit(f"for _ in range({n}):")
        self.emit(f"    p, x = {fname}(b, p)")
        self.emit(f"    {var}.append(x)")
        self.unknown_pos()
        if self.mode == "text":
            return var, f"fmt_list({var})", typ
        return var, var, typ

    def gen_struct(self, t: StructType, hint, inline=False):
        if self.header and self.bit == 0 and not self.run:
            kind = lttng_header_kind(t)
            if kind is not None:
                return self.gen_lttng_header(t, kind)
        if t.min_align > 1:
            self.align_bits(t.min_align)
        scope: dict = {}
        self.scopes.append(scope)
        parts = []  # (display name, value expr, text expr)
        for name, ft in t.fields:
            v, txt, entry = self.gen(ft, "v")
            if isinstance(entry, _Nested):
                scope[name] = (v, entry)
            else:
                scope[name] = (v, ft)
            parts.append((display_name(name), v, txt))
            if self.header and name == "id" and isinstance(ft, (IntType, EnumType)):
                self.emit_after(v, f"eid = {v}")
        self.scopes.pop()
        nested = _Nested({n: scope[n] for n, _ in t.fields})
        if self.header:
            return "None", "None", nested
        value = text = None
        if self.mode != "text":
            value = "{" + ", ".join(f"{n!r}: {v}" for n, v, _ in parts) + "}"
        if self.mode != "dict":
            if not parts:
                text = '"{ }"'
            elif self.names:
                text = _T("{ " + ", ".join(f"{n} = {_tmpl(txt)}" for n, _, txt in parts) + " }")
            else:
                text = _T("{ " + ", ".join(_tmpl(txt) for n, _, txt in parts) + " }")
        self.flush()
        if self.mode != "both":
            expr = value if self.mode == "dict" else text
            if inline:
                return expr, expr, nested
            var = self.var("s")
            self.emit(f"{var} = {_tmpl_expr(expr)}")
            nested.var = var
            return var, var, nested
        if inline:
            return value, text, nested
        var, tvar = self.var("s"), self.var("t")
        self.emit(f"{var} = {value}")
        self.emit(f"{tvar} = {_tmpl_expr(text)}")
        nested.var = var
        return var, tvar, nested

    def gen_variant(self, t: VariantType, hint):
        if t.tag_ref is None:
            raise Unsupported(f"untagged variant in {self.what}")
        tvar, ttyp = self.lookup(t.tag_ref)
        if not isinstance(ttyp, EnumType):
            raise Unsupported(f"variant tag {t.tag_ref!r} is not an enumeration in {self.what}")
        self.flush()
        var = self.var("w")
        text_var = self.var("t") if self.mode == "both" else var
        state0 = (self.bit, self.mod, self.rem)
        ends = []
        first = True
        for oname, otyp in t.options:
            ranges = [(lo, hi) for lab, lo, hi in ttyp.mappings if lab == oname]
            if not ranges:
                continue
            cond = " or ".join(f"{tvar} == {lo}" if lo == hi else f"{lo} <= {tvar} <= {hi}" for lo, hi in ranges)
            self.emit(("if " if first else "elif ") + cond + ":")
            first = False
            self.indent += 1
            self.bit, self.mod, self.rem = state0
            v, txt, entry = self.gen(otyp, "o")
            self.flush()
            if self.header:
                self.emit("pass")
            else:
                if self.mode != "text":
                    self.emit(f"{var} = {v}")
                if self.mode != "dict":
                    # babeltrace2 prints the selected option's value without its name
                    self.emit(f"{text_var} = {_fstring('{ ' + _tmpl(txt) + ' }')}")
            ends.append((self.bit, self.mod, self.rem))
            self.indent -= 1
        if first:
            raise Unsupported(f"variant with no option selectable by {t.tag_ref!r} in {self.what}")
        self.emit("else:")
        self.emit(f"    raise VariantError('variant tag value %d selects no option' % {tvar})")
        bits = {e[0] for e in ends}
        if len(bits) != 1:
            raise Unsupported(f"variant options end at different bit offsets in {self.what}")
        self.bit = bits.pop()
        if len({(e[1], e[2]) for e in ends}) == 1:
            self.mod, self.rem = ends[0][1], ends[0][2]
        else:
            self.unknown_pos()
        return var, text_var, t


def lttng_header_kind(t: StructType):
    """'large' or 'compact' when t is exactly LTTng's event header of that kind (little-endian)."""
    try:
        (n1, e), (n2, v) = t.fields
    except ValueError:
        return None
    if n1 != "id" or n2 != "v" or not isinstance(e, EnumType) or not isinstance(v, VariantType) or v.tag_ref != "id":
        return None
    c = e.container
    if c.byte_order != "le" or c.signed:
        return None
    maps = sorted(e.mappings, key=lambda m: m[1])
    opts = dict(v.options)
    if set(opts) != {"compact", "extended"}:
        return None
    comp, ext = opts["compact"], opts["extended"]
    if not (isinstance(comp, StructType) and isinstance(ext, StructType)):
        return None

    def sig(st):
        return [(n, x.size, x.align, x.signed, x.byte_order, x.clock is not None) if isinstance(x, IntType)
                else None for n, x in st.fields]
    ext_ok = sig(ext) == [("id", 32, 8, False, "le", False), ("timestamp", 64, 8, False, "le", True)]
    if c.size == 16 and c.align == 8 and maps == [("compact", 0, 65534), ("extended", 65535, 65535)] and ext_ok \
            and sig(comp) == [("timestamp", 32, 8, False, "le", True)]:
        return "large"
    if c.size == 5 and c.align == 1 and maps == [("compact", 0, 30), ("extended", 31, 31)] and ext_ok \
            and sig(comp) == [("timestamp", 27, 1, False, "le", True)]:
        return "compact"
    return None


class _Nested:
    def __init__(self, members):
        self.members = members
        self.var = None


class _T(str):
    """A text template: literal text with \\0expr[:spec]\\0 holes."""


def _tmpl(txt) -> str:
    """A text (template or plain expression) as a template."""
    return txt if isinstance(txt, _T) else f"\0{txt}\0"


def _tmpl_expr(txt) -> str:
    """A text (template or plain expression) as a Python expression."""
    if not isinstance(txt, _T):
        return txt
    parts = txt.split("\0")
    if len(parts) == 3 and parts[0] == parts[2] == "" and ":" not in parts[1]:
        return parts[1]
    return _fstring(txt)


def _fstring(template: str) -> str:
    """Turn 'a = \\0expr\\0, ...' into an f-string literal with {expr} holes."""
    out = []
    parts = template.split("\0")
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(part.replace("{", "{{").replace("}", "}}"))
        else:
            out.append("{" + part + "}")
    s = "".join(out)
    return "f" + repr(s) if "'" not in s else "f" + '"""' + s + '"""'


def _build(gen: _Gen, fname: str, body_result: str, extra_return: str = ""):
    src = [f"def {fname}(b, p):"] + gen.lines + [f"    return p, {body_result}{extra_return}"]
    return gen.define(fname, src, f"decoder {gen.what}")


def compile_type(typ, mode: str, what: str, names: bool = True):
    """f(b, p) -> (p, value) for any type (value: dict/str per mode)."""
    g = _Gen(mode, what, names=names)
    v, txt, _ = g.gen(typ, "r")
    g.flush()
    g.settle_bits()
    if mode == "both":
        return _build(g, "decode", f"({v}, {_tmpl_expr(txt)})")
    return _build(g, "decode", v if mode == "dict" else _tmpl_expr(txt))


def compile_struct(typ: StructType | None, mode: str, what: str, names: bool = True):
    """Decoder of a scope struct, or None when the struct is absent."""
    if typ is None:
        return None
    return compile_type(typ, mode, what, names)


def compile_header(typ: StructType, what: str):
    """f(b, p, cur) -> (p, event_id, cur) for an event header.

    ``cur`` is the stream's current clock value, updated from the header's
    timestamp. The event id is the last integer field named ``id`` decoded
    (the extended id of LTTng's headers, inside the variant, comes after the
    enum and wins).
    """
    g = _Gen("dict", what, special_header=True)
    g.emit("eid = 0")
    g.gen(typ, "h")
    g.flush()
    g.settle_bits()
    src = ["def decode_header(b, p, cur):"] + g.lines + ["    return p, eid, cur"]
    return g.define("decode_header", src, f"decoder {what}")
