"""TSDL (CTF 1.8 metadata) parser: text or packetized metadata -> a type model.

Layers, top to bottom:
  * ``unpacketize``: packetized metadata (magic 0x75d11d57) -> text;
  * ``Lexer``: text -> tokens (identifiers, integers, strings, punctuation);
  * ``Parser``: recursive descent over the TSDL grammar subset that tracers
    emit (typealias/typedef, named struct/enum/variant, the trace, env,
    clock, stream, event and callsite blocks);
  * the type model (``IntType``, ``FloatType``, ``StringType``, ``EnumType``,
    ``StructType``, ``ArrayType``, ``SequenceType``, ``VariantType``) and the
    ``Metadata`` object the reader uses.

Every error is a ``TraceFormatError`` naming the metadata file and the byte
offset (in the metadata *text*) where parsing failed.
"""

from __future__ import annotations

import struct
import uuid as _uuid
from dataclasses import dataclass, field

from ust.errors import TraceFormatError

METADATA_MAGIC = 0x75D11D57
_MD_HEADER = struct.Struct("<I16sIIIBBBBB")  # 37 bytes
MAX_METADATA = 64 << 20


# --------------------------------------------------------------------------
# Type model
# --------------------------------------------------------------------------


class CType:
    align = 8  # bits

    def fixed_size(self):
        """Size in bits when every instance has it, else None."""
        return None


@dataclass(eq=False)
class IntType(CType):
    size: int
    align: int = 8
    signed: bool = False
    byte_order: str = "le"
    base: int = 10
    encoding: str = "none"
    clock: str | None = None  # name of the clock this integer maps to

    def fixed_size(self):
        return self.size


@dataclass(eq=False)
class FloatType(CType):
    exp_dig: int
    mant_dig: int
    align: int = 8
    byte_order: str = "le"

    @property
    def size(self):
        return self.exp_dig + self.mant_dig

    def fixed_size(self):
        return self.size


@dataclass(eq=False)
class StringType(CType):
    encoding: str = "UTF8"
    align: int = 8


@dataclass(eq=False)
class EnumType(CType):
    container: IntType
    mappings: list  # [(label, lo, hi)]

    @property
    def align(self):
        return self.container.align

    def fixed_size(self):
        return self.container.size

    def labels(self, value):
        return [lab for lab, lo, hi in self.mappings if lo <= value <= hi]


@dataclass(eq=False)
class StructType(CType):
    fields: list  # [(name, CType)]
    min_align: int = 1

    @property
    def align(self):
        a = self.min_align
        for _, t in self.fields:
            a = max(a, t.align)
        return a

    def fixed_size(self):
        total = 0
        for _, t in self.fields:
            s = t.fixed_size()
            if s is None or t.align > 8 or s % 8:
                return None
            total += s
        return total

    def field(self, name):
        for n, t in self.fields:
            if n == name:
                return t
        return None


@dataclass(eq=False)
class ArrayType(CType):
    element: CType
    length: int

    @property
    def align(self):
        return self.element.align

    def fixed_size(self):
        s = self.element.fixed_size()
        if s is None or s % 8 or self.element.align > 8:
            return None
        return s * self.length


@dataclass(eq=False)
class SequenceType(CType):
    element: CType
    length_ref: str

    @property
    def align(self):
        return self.element.align


@dataclass(eq=False)
class VariantType(CType):
    tag_ref: str | None
    options: list  # [(name, CType)]

    @property
    def align(self):
        return 1  # a variant has no alignment of its own; its chosen option has

    def option(self, name):
        for n, t in self.options:
            if n == name:
                return t
        return None


@dataclass
class Clock:
    name: str
    freq: int = 1_000_000_000
    offset_s: int = 0
    offset: int = 0
    uuid: str | None = None
    description: str = ""
    precision: int = 0
    absolute: bool = False

    def origin_ns(self) -> int:
        """Nanoseconds from the Epoch of this clock's value 0."""
        return self.offset_s * 1_000_000_000 + self.offset * 1_000_000_000 // self.freq

    def cycles_to_ns(self, cycles: int) -> int:
        if self.freq == 1_000_000_000:
            return self.origin_ns() + cycles
        return self.origin_ns() + cycles * 1_000_000_000 // self.freq


@dataclass
class StreamClass:
    id: int
    packet_context: StructType | None = None
    event_header: StructType | None = None
    event_context: StructType | None = None
    events: dict = field(default_factory=dict)  # id -> EventClass


MARKER_FORMAT_URI = "ust:format:"  # model.emf.uri of a marker event (ust.mark): this, then its printf format


@dataclass
class EventClass:
    name: str
    id: int
    stream_id: int
    loglevel: int | None = None
    context: StructType | None = None
    fields: StructType | None = None
    model_emf_uri: str | None = None


@dataclass
class Metadata:
    major: int = 1
    minor: int = 8
    uuid: bytes | None = None
    byte_order: str = "le"
    packet_header: StructType | None = None
    env: dict = field(default_factory=dict)
    clocks: dict = field(default_factory=dict)
    streams: dict = field(default_factory=dict)  # id -> StreamClass
    text: str = ""

    def default_clock(self) -> Clock | None:
        if not self.clocks:
            return None
        return next(iter(self.clocks.values()))


# --------------------------------------------------------------------------
# Packetized metadata
# --------------------------------------------------------------------------


def read_metadata_file(path: str) -> Metadata:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_METADATA + 1)
    except OSError as exc:
        raise TraceFormatError(f"cannot read metadata: {exc.strerror}", path, None) from None
    if len(data) > MAX_METADATA:
        raise TraceFormatError("metadata larger than 64 MiB", path, MAX_METADATA)
    text = unpacketize(data, path)
    return parse(text, path)


def unpacketize(data: bytes, path: str = "metadata") -> str:
    """Text of a metadata file, plain or packetized."""
    if len(data) >= 4 and struct.unpack_from("<I", data)[0] == METADATA_MAGIC:
        order = "<"
    elif len(data) >= 4 and struct.unpack_from(">I", data)[0] == METADATA_MAGIC:
        order = ">"
    else:
        if not data.startswith(b"/* CTF") and b"trace" not in data[:65536]:
            raise TraceFormatError("not CTF metadata (no packet magic and no '/* CTF' text header)", path, 0)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TraceFormatError("metadata is not UTF-8 text", path, exc.start) from None
    hdr = struct.Struct(order + "I16sIIIBBBBB")
    parts = []
    off = 0
    n = len(data)
    while off < n:
        if n - off < hdr.size:
            raise TraceFormatError("truncated metadata packet header", path, off)
        magic, _uuid, _cksum, content, size, compression, encryption, cksum_scheme, _maj, _min = hdr.unpack_from(data, off)
        if magic != METADATA_MAGIC:
            raise TraceFormatError(f"bad metadata packet magic 0x{magic:08x}", path, off)
        if compression or encryption or cksum_scheme:
            raise TraceFormatError("compressed/encrypted/checksummed metadata is not supported", path, off)
        if size % 8 or content % 8 or content > size or content < hdr.size * 8 or size == 0:
            raise TraceFormatError(f"bad metadata packet sizes (content {content} bits, packet {size} bits)", path, off)
        if off + content // 8 > n:
            raise TraceFormatError("truncated metadata packet", path, off)
        parts.append(data[off + hdr.size: off + content // 8])
        off += size // 8
    raw = b"".join(parts)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError("metadata is not UTF-8 text", path, exc.start) from None


# --------------------------------------------------------------------------
# Lexer
# --------------------------------------------------------------------------

# token kinds
ID, INT, STR, PUNCT, EOF = "id", "int", "str", "punct", "eof"

_PUNCT3 = ("...",)
_PUNCT2 = (":=", "->")
_PUNCT1 = set("{}[]()<>;:,=.+-*")


class Token:
    __slots__ = ("kind", "value", "pos")

    def __init__(self, kind, value, pos):
        self.kind = kind
        self.value = value
        self.pos = pos

    def __repr__(self):
        return f"Token({self.kind}, {self.value!r}, {self.pos})"


def tokenize(text: str, path: str = "metadata") -> list[Token]:
    toks = []
    i = 0
    n = len(text)
    append = toks.append
    while i < n:
        c = text[i]
        if c in " \t\r\n\f\v":
            i += 1
            continue
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise TraceFormatError("unterminated comment in metadata", path, i)
            i = j + 2
            continue
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c.isalpha() or c == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            append(Token(ID, text[i:j], i))
            i = j
            continue
        if c.isdigit():
            j = i
            if text.startswith(("0x", "0X"), i):
                j = i + 2
                while j < n and text[j] in "0123456789abcdefABCDEF":
                    j += 1
                digits, base = text[i + 2: j], 16
            else:
                while j < n and text[j].isdigit():
                    j += 1
                digits = text[i:j]
                base = 8 if len(digits) > 1 and digits[0] == "0" else 10
            try:
                value = int(digits, base)
            except ValueError:
                raise TraceFormatError(f"bad integer literal {text[i:j]!r}", path, i) from None
            while j < n and text[j] in "uUlL":
                j += 1
            append(Token(INT, value, i))
            i = j
            continue
        if c == '"':
            j = i + 1
            buf = []
            while True:
                if j >= n:
                    raise TraceFormatError("unterminated string in metadata", path, i)
                d = text[j]
                if d == '"':
                    break
                if d == "\\" and j + 1 < n:
                    e = text[j + 1]
                    buf.append({"n": "\n", "t": "\t", "r": "\r", "0": "\0"}.get(e, e))
                    j += 2
                    continue
                buf.append(d)
                j += 1
            append(Token(STR, "".join(buf), i))
            i = j + 1
            continue
        if c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise TraceFormatError("unterminated character literal", path, i)
            s = text[i + 1: j]
            append(Token(INT, ord(s[-1]) if s else 0, i))
            i = j + 1
            continue
        if text.startswith("...", i):
            append(Token(PUNCT, "...", i))
            i += 3
            continue
        two = text[i: i + 2]
        if two in _PUNCT2:
            append(Token(PUNCT, two, i))
            i += 2
            continue
        if c in _PUNCT1:
            append(Token(PUNCT, c, i))
            i += 1
            continue
        raise TraceFormatError(f"unexpected character {c!r} in metadata", path, i)
    append(Token(EOF, None, n))
    return toks


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------

_TYPE_KEYWORDS = {"integer", "floating_point", "string", "enum", "struct", "variant"}
_BLOCKS = {"trace", "env", "clock", "stream", "event", "callsite"}
_MAX_DEPTH = 64


class _Scope:
    def __init__(self, parent=None):
        self.parent = parent
        self.aliases = {}
        self.structs = {}
        self.enums = {}
        self.variants = {}

    def lookup(self, kind, name):
        s = self
        while s is not None:
            d = getattr(s, kind)
            if name in d:
                return d[name]
            s = s.parent
        return None


class Parser:
    def __init__(self, text: str, path: str = "metadata"):
        self.text = text
        self.path = path
        self.toks = tokenize(text, path)
        self.i = 0
        self.scope = _Scope()
        self.md = Metadata(text=text)
        self.depth = 0
        self._byte_order_set = False
        self._pending_events = []

    # -- token helpers ---------------------------------------------------
    def error(self, msg, tok=None):
        tok = tok or self.toks[self.i]
        return TraceFormatError(f"metadata: {msg}", self.path, tok.pos)

    def peek(self, k=0):
        j = min(self.i + k, len(self.toks) - 1)
        return self.toks[j]

    def next(self):
        t = self.toks[self.i]
        if t.kind != EOF:
            self.i += 1
        return t

    def at(self, value, k=0):
        t = self.peek(k)
        return t.kind in (PUNCT, ID) and t.value == value

    def expect(self, value):
        t = self.next()
        if t.kind not in (PUNCT, ID) or t.value != value:
            raise self.error(f"expected {value!r}, got {_show(t)}", t)
        return t

    def accept(self, value):
        if self.at(value):
            return self.next()
        return None

    def ident(self):
        t = self.next()
        if t.kind != ID:
            raise self.error(f"expected an identifier, got {_show(t)}", t)
        return t.value

    # -- top level ---------------------------------------------------------
    def prescan_byte_order(self):
        """'native' means the trace's byte order, even for types declared
        before the trace block (LTTng declares its typealiases first)."""
        toks = self.toks
        depth = 0
        in_trace = False
        for j, tk in enumerate(toks):
            if tk.kind == PUNCT and tk.value == "{":
                if depth == 0 and j and toks[j - 1].kind == ID and toks[j - 1].value == "trace":
                    in_trace = True
                depth += 1
            elif tk.kind == PUNCT and tk.value == "}":
                depth -= 1
                if depth == 0:
                    in_trace = False
            elif (in_trace and depth == 1 and tk.kind == ID and tk.value == "byte_order"
                  and j + 2 < len(toks) and toks[j + 1].value == "="):
                self.md.byte_order = self._order(toks[j + 2].value) if toks[j + 2].value != "native" else "le"
                return

    def parse(self) -> Metadata:
        self.prescan_byte_order()
        while self.peek().kind != EOF:
            self.top_statement()
        md = self.md
        for ev in self._pending_events:
            sc = md.streams.get(ev.stream_id)
            if sc is None:
                if ev.stream_id == 0 and not md.streams:
                    sc = md.streams[0] = StreamClass(0)
                else:
                    raise TraceFormatError(f"metadata: event {ev.name!r} names unknown stream {ev.stream_id}", self.path, None)
            if ev.id in sc.events:
                raise TraceFormatError(f"metadata: duplicate event id {ev.id} in stream {ev.stream_id}", self.path, None)
            sc.events[ev.id] = ev
        if not md.streams and not self._pending_events:
            raise TraceFormatError("metadata declares no stream and no event", self.path, None)
        return md

    def top_statement(self):
        t = self.peek()
        if t.kind == ID and t.value in _BLOCKS and self.at("{", 1):
            self.next()
            self.next()
            getattr(self, "block_" + t.value)()
            self.expect(";")
            return
        self.declaration_statement()

    def declaration_statement(self):
        """typealias / typedef / named type definition / field, ending with ';'."""
        t = self.peek()
        if t.kind == ID and t.value == "typealias":
            self.next()
            target = self.type_specifier()
            target = self.declarator_suffix(target, allow_name=False)
            self.expect(":=")
            names = []
            while not self.at(";"):
                tk = self.next()
                if tk.kind != ID and not (tk.kind == PUNCT and tk.value == "*"):
                    raise self.error(f"expected an alias name, got {_show(tk)}", tk)
                names.append(tk.value)
            if not names:
                raise self.error("empty typealias name")
            self.scope.aliases[" ".join(names)] = target
            self.expect(";")
            return None
        if t.kind == ID and t.value == "typedef":
            self.next()
            base = self.type_specifier()
            name = self.ident()
            typ = self.declarator_suffix(base)
            self.scope.aliases[name] = typ
            self.expect(";")
            return None
        base = self.type_specifier()
        if self.accept(";"):
            return None  # a named type definition only
        name = self.ident()
        typ = self.declarator_suffix(base)
        self.expect(";")
        return name, typ

    def declarator_suffix(self, typ, allow_name=True):
        dims = []
        while self.accept("["):
            tk = self.peek()
            if tk.kind == INT:
                self.next()
                dims.append(tk.value)
            else:
                dims.append(self.path_ref())
            self.expect("]")
        for d in reversed(dims):
            if isinstance(d, int):
                if d > 1 << 28:
                    raise self.error("array too long")
                typ = ArrayType(typ, d)
            else:
                typ = SequenceType(typ, d)
        return typ

    def path_ref(self):
        parts = [self.ident()]
        while self.at(".") or self.at("->"):
            self.next()
            parts.append(self.ident())
        return ".".join(parts)

    # -- types -----------------------------------------------------------------
    def type_specifier(self):
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error("types nested too deeply")
        try:
            return self._type_specifier()
        finally:
            self.depth -= 1

    def _type_specifier(self):
        t = self.peek()
        if t.kind != ID:
            raise self.error(f"expected a type, got {_show(t)}", t)
        kw = t.value
        if kw == "const":
            self.next()
            return self.type_specifier()
        if kw == "integer":
            self.next()
            return self.integer_type(self.attributes())
        if kw == "floating_point":
            self.next()
            a = self.attributes()
            try:
                return FloatType(int(a.get("exp_dig", 8)), int(a.get("mant_dig", 24)), int(a.get("align", 8)),
                                 self._order(a.get("byte_order")))
            except (TypeError, ValueError):
                raise self.error("bad floating_point attributes", t) from None
        if kw == "string":
            self.next()
            enc = "UTF8"
            if self.at("{"):
                enc = str(self.attributes().get("encoding", "UTF8"))
            return StringType(enc)
        if kw == "enum":
            return self.enum_type()
        if kw == "struct":
            return self.struct_type()
        if kw == "variant":
            return self.variant_type()
        # an alias name, possibly several words ("unsigned long")
        j = self.i
        words = []
        best = None
        while self.toks[j].kind == ID:
            words.append(self.toks[j].value)
            j += 1
            typ = self.scope.lookup("aliases", " ".join(words))
            if typ is not None:
                best = (j, typ)
        if best is None:
            raise self.error(f"unknown type {kw!r}", t)
        self.i = best[0]
        return best[1]

    def _order(self, v):
        if v is None or v == "native":
            return self.md.byte_order
        if v in ("le", "little"):
            return "le"
        if v in ("be", "big", "network"):
            return "be"
        raise self.error(f"bad byte_order {v!r}")

    def integer_type(self, a):
        try:
            size = int(a["size"])
        except (KeyError, TypeError, ValueError):
            raise self.error("integer without a valid size") from None
        if not 1 <= size <= 64:
            raise self.error(f"integer size {size} out of range 1..64")
        signed = a.get("signed", False)
        signed = signed in (1, True, "true", "TRUE")
        base = a.get("base", 10)
        base = {"decimal": 10, "dec": 10, "d": 10, "i": 10, "u": 10, "hexadecimal": 16, "hex": 16, "x": 16, "X": 16,
                "p": 16, "octal": 8, "oct": 8, "o": 8, "binary": 2, "b": 2}.get(base, base)
        if base not in (2, 8, 10, 16):
            raise self.error(f"bad integer base {base!r}")
        align = a.get("align", 8 if size % 8 == 0 else 1)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise self.error(f"bad alignment {align!r}")
        enc = a.get("encoding", "none")
        enc = "none" if enc in ("none", 0) else str(enc)
        clock = None
        m = a.get("map")
        if isinstance(m, str) and m.startswith("clock."):
            clock = m.split(".")[1]
        return IntType(size, align, signed, self._order(a.get("byte_order")), base, enc, clock)

    def attributes(self):
        """'{ key = value; ... }' -> dict (values: int, str, identifier path)."""
        self.expect("{")
        a = {}
        while not self.accept("}"):
            key = self.path_ref()
            self.expect("=")
            a[key] = self.value()
            self.expect(";")
        return a

    def value(self):
        t = self.peek()
        neg = False
        if t.kind == PUNCT and t.value in "+-":
            self.next()
            neg = t.value == "-"
            t = self.peek()
        if t.kind == INT:
            self.next()
            return -t.value if neg else t.value
        if neg:
            raise self.error("expected an integer after '-'", t)
        if t.kind == STR:
            self.next()
            return t.value
        if t.kind == ID:
            return self.path_ref()
        raise self.error(f"expected a value, got {_show(t)}", t)

    def enum_type(self):
        self.expect("enum")
        name = None
        if self.peek().kind == ID and not self.at(":", 0):
            name = self.ident()
        if self.accept(":"):
            container = self.type_specifier()
        elif self.at("{"):
            container = self.scope.lookup("aliases", "int")
            if container is None:
                raise self.error("enum without a container type")
        else:
            typ = self.scope.lookup("enums", name)
            if typ is None:
                raise self.error(f"unknown enum {name!r}")
            return typ
        if not isinstance(container, IntType):
            raise self.error("enum container must be an integer")
        self.expect("{")
        mappings = []
        nxt = 0
        while not self.accept("}"):
            t = self.next()
            if t.kind not in (ID, STR):
                raise self.error(f"expected an enumerator, got {_show(t)}", t)
            label = t.value
            if self.accept("="):
                lo = self.int_value()
                hi = lo
                if self.accept("..."):
                    hi = self.int_value()
            else:
                lo = hi = nxt
            if hi < lo:
                lo, hi = hi, lo
            mappings.append((label, lo, hi))
            nxt = hi + 1
            if not self.accept(","):
                self.expect("}")
                break
        typ = EnumType(container, mappings)
        if name:
            self.scope.enums[name] = typ
        return typ

    def int_value(self):
        v = self.value()
        if not isinstance(v, int):
            raise self.error(f"expected an integer, got {v!r}")
        return v

    def struct_type(self):
        self.expect("struct")
        name = None
        if self.peek().kind == ID:
            name = self.ident()
        if not self.at("{"):
            typ = self.scope.lookup("structs", name)
            if typ is None:
                raise self.error(f"unknown struct {name!r}")
            return typ
        self.expect("{")
        fields = self.field_list()
        min_align = 1
        if self.accept("align"):
            self.expect("(")
            min_align = self.int_value()
            self.expect(")")
            if min_align <= 0 or min_align & (min_align - 1):
                raise self.error(f"bad struct alignment {min_align}")
        typ = StructType(fields, min_align)
        if name:
            self.scope.structs[name] = typ
        return typ

    def field_list(self):
        self.scope = _Scope(self.scope)
        fields = []
        names = set()
        try:
            while not self.accept("}"):
                if self.peek().kind == EOF:
                    raise self.error("unexpected end of metadata inside a compound type")
                r = self.declaration_statement()
                if r is not None:
                    if r[0] in names:
                        raise self.error(f"duplicate field {r[0]!r}")
                    names.add(r[0])
                    fields.append(r)
        finally:
            self.scope = self.scope.parent
        return fields

    def variant_type(self):
        self.expect("variant")
        name = None
        tag = None
        if self.peek().kind == ID:
            name = self.ident()
        if self.accept("<"):
            tag = self.path_ref()
            self.expect(">")
        if not self.at("{"):
            typ = self.scope.lookup("variants", name)
            if typ is None:
                raise self.error(f"unknown variant {name!r}")
            if tag is not None:
                typ = VariantType(tag, typ.options)
            return typ
        self.expect("{")
        options = self.field_list()
        typ = VariantType(tag, options)
        if name:
            self.scope.variants[name] = typ
        return typ

    # -- blocks ------------------------------------------------------------------
    def block_entries(self):
        """Entries of a block: 'k = v;' and 'k := type;' and type declarations."""
        values, types = {}, {}
        while not self.accept("}"):
            t = self.peek()
            if t.kind == EOF:
                raise self.error("unexpected end of metadata inside a block")
            if t.kind == ID and (t.value not in ("typealias", "typedef") and
                                 t.value not in _TYPE_KEYWORDS or self.at(".", 1)):
                # key path (may be a type keyword? no: keys are plain identifiers)
                save = self.i
                key = self.path_ref()
                if self.accept("="):
                    values[key] = self.value()
                    self.expect(";")
                    continue
                if self.accept(":="):
                    typ = self.type_specifier()
                    types[key] = self.declarator_suffix(typ)
                    self.expect(";")
                    continue
                self.i = save
            self.declaration_statement()
        return values, types

    def block_trace(self):
        values, types = self.block_entries()
        md = self.md
        md.major = values.get("major", 1)
        md.minor = values.get("minor", 8)
        if "uuid" in values:
            try:
                md.uuid = _uuid.UUID(str(values["uuid"])).bytes
            except ValueError:
                raise self.error(f"bad trace uuid {values['uuid']!r}") from None
        ph = types.get("packet.header")
        if ph is not None and not isinstance(ph, StructType):
            raise self.error("packet.header must be a struct")
        md.packet_header = ph

    def block_env(self):
        values, _ = self.block_entries()
        self.md.env.update(values)

    def block_clock(self):
        values, _ = self.block_entries()
        name = values.get("name")
        if not isinstance(name, str):
            raise self.error("clock without a name")
        freq = values.get("freq", 1_000_000_000)
        if not isinstance(freq, int) or freq <= 0:
            raise self.error(f"bad clock frequency {freq!r}")
        ints = {}
        for key in ("offset_s", "offset", "precision"):
            v = values.get(key, 0) or 0
            try:
                ints[key] = int(v)
            except (TypeError, ValueError):
                raise self.error(f"bad clock {key} {v!r}: not an integer") from None
        clk = Clock(name, freq, ints["offset_s"], ints["offset"], values.get("uuid"),
                    str(values.get("description", "")), ints["precision"], values.get("absolute") in (1, "true", "TRUE"))
        self.md.clocks[name] = clk

    def block_callsite(self):
        self.block_entries()

    def block_stream(self):
        values, types = self.block_entries()
        sid = values.get("id", 0)
        if not isinstance(sid, int):
            raise self.error("bad stream id")
        if sid in self.md.streams:
            raise self.error(f"duplicate stream id {sid}")
        sc = StreamClass(sid)
        for key, attr in (("packet.context", "packet_context"), ("event.header", "event_header"),
                          ("event.context", "event_context")):
            t = types.get(key)
            if t is not None and not isinstance(t, StructType):
                raise self.error(f"{key} must be a struct")
            setattr(sc, attr, t)
        self.md.streams[sid] = sc

    def block_event(self):
        values, types = self.block_entries()
        name = values.get("name")
        if not isinstance(name, str):
            raise self.error("event without a name")
        eid = values.get("id", 0)
        sid = values.get("stream_id", 0)
        if not isinstance(eid, int) or not isinstance(sid, int):
            raise self.error(f"bad id of event {name!r}")
        ll = values.get("loglevel")
        ctx = types.get("context")
        flds = types.get("fields")
        for t in (ctx, flds):
            if t is not None and not isinstance(t, StructType):
                raise self.error(f"context/fields of event {name!r} must be structs")
        self._pending_events.append(EventClass(name, eid, sid, ll if isinstance(ll, int) else None, ctx, flds,
                                               values.get("model.emf.uri")))


def _show(t: Token) -> str:
    if t.kind == EOF:
        return "end of metadata"
    return repr(t.value)


def parse(text: str, path: str = "metadata") -> Metadata:
    """Parse TSDL text into a ``Metadata``."""
    try:
        return Parser(text, path).parse()
    except RecursionError:
        raise TraceFormatError("metadata: types nested too deeply", path, None) from None
