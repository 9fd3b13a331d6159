"""LTTng's filter language: tokenizer, recursive-descent parser, closures.

Grammar: C's binary operators with C's precedence, as LTTng's filter parser
has them (lowest first; all left-associative)::

    ||    &&    |    ^    &    == !=    < <= > >=    << >>

    unary     := ("!" | "~" | "-" | "+") unary | primary
    primary   := "(" expr ")" | INTEGER | FLOAT | STRING | reference
    reference := ["$ctx." | "$app."] NAME ( "." NAME | "[" INTEGER "]" )*

So ``size & 1 == 0`` is ``size & (1 == 0)``, as in C and LTTng: write
``(size & 1) == 0``. The arithmetic operators ``+ - * / %`` are rejected
between operands, as LTTng rejects them.

Semantics follow LTTng: a comparison whose field is missing, or whose
operands have incompatible types (a string against a number), is false. A
bare reference is true when the value is a non-zero number. String literals
are globs: an unescaped ``*`` matches any run of characters, ``\\*`` is a
literal star; globs work with ``==`` and ``!=``. The bitwise operators take
integers (a float, a string or a missing field makes the comparison that uses
the result false) and compute on 64-bit two's complement like LTTng's
interpreter: ``>>`` is a logical shift, a shift count outside 0..63 has no
value.

``compile_filter(text)`` parses once and builds nested closures, so
``Filter.matches(fields, context)`` costs a few Python calls per event.
No ``eval``: the input never becomes code.
"""

from __future__ import annotations

import operator
import re

from ust.errors import FilterError

__all__ = ["Filter", "compile_filter"]

_MISSING = object()
_EMPTY: dict = {}
_NUM = (int, float)

# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

_OPS2 = ("==", "!=", "<=", ">=", "&&", "||", "<<", ">>")
_OPS1 = "<>!()[].-+&|^~"


class _Tok:
    __slots__ = ("kind", "value", "pos", "raw")

    def __init__(self, kind, value, pos, raw=None):
        self.kind = kind  # "int" "float" "str" "name" "ctx" "app" "op" "end"
        self.value = value
        self.pos = pos
        self.raw = raw


def _tokenize(s: str) -> list[_Tok]:
    toks = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c in " \t\r\n":
            i += 1
            continue
        if s.startswith(_OPS2, i):
            toks.append(_Tok("op", s[i:i + 2], i))
            i += 2
            continue
        if c.isdigit() or (c == "." and i + 1 < n and s[i + 1].isdigit()):
            j = i
            if s.startswith(("0x", "0X"), i):
                j = i + 2
                while j < n and s[j] in "0123456789abcdefABCDEF":
                    j += 1
                if j == i + 2:
                    raise FilterError("expected hexadecimal digits", s, j)
                toks.append(_Tok("int", int(s[i + 2:j], 16), i))
            else:
                while j < n and s[j].isdigit():
                    j += 1
                is_float = False
                if j < n and s[j] == ".":
                    is_float = True
                    j += 1
                    while j < n and s[j].isdigit():
                        j += 1
                if j < n and s[j] in "eE":
                    k = j + 1
                    if k < n and s[k] in "+-":
                        k += 1
                    if k < n and s[k].isdigit():
                        is_float = True
                        j = k
                        while j < n and s[j].isdigit():
                            j += 1
                text = s[i:j]
                if is_float:
                    toks.append(_Tok("float", float(text), i))
                elif len(text) > 1 and text[0] == "0":
                    try:
                        toks.append(_Tok("int", int(text, 8), i))
                    except ValueError:
                        raise FilterError(f"bad octal literal {text!r}", s, i) from None
                else:
                    toks.append(_Tok("int", int(text), i))
            if j < n and (s[j].isalnum() or s[j] == "_"):
                raise FilterError(f"unexpected character {s[j]!r} after a number", s, j)
            i = j
            continue
        if c == '"':
            j = i + 1
            parts = []  # list of str or None (None = wildcard)
            lit = []
            while True:
                if j >= n:
                    raise FilterError("unterminated string literal", s, i)
                d = s[j]
                if d == '"':
                    break
                if d == "\\":
                    if j + 1 >= n:
                        raise FilterError("unterminated string literal", s, i)
                    e = s[j + 1]
                    lit.append({"n": "\n", "t": "\t", "r": "\r", "0": "\0"}.get(e, e))
                    j += 2
                    continue
                if d == "*":
                    parts.append("".join(lit))
                    lit = []
                    parts.append(None)
                    j += 1
                    continue
                lit.append(d)
                j += 1
            parts.append("".join(lit))
            toks.append(_Tok("str", parts, i))
            i = j + 1
            continue
        if c == "$":
            m = re.compile(r"\$(ctx|app)\.", re.I).match(s, i)
            if not m:
                raise FilterError("expected '$ctx.' or '$app.'", s, i)
            toks.append(_Tok(m.group(1).lower(), None, i))
            i = m.end()
            continue
        if c.isalpha() or c == "_":
            j = i + 1
            while j < n and (s[j].isalnum() or s[j] in "_:"):
                j += 1
            toks.append(_Tok("name", s[i:j], i))
            i = j
            continue
        if c in _OPS1:
            toks.append(_Tok("op", c, i))
            i += 1
            continue
        raise FilterError(f"unexpected character {c!r}", s, i)
    toks.append(_Tok("end", None, n))
    return toks


# --------------------------------------------------------------------------
# AST
# --------------------------------------------------------------------------


class _Node:
    pass


class _Lit(_Node):
    def __init__(self, value, pos):
        self.value = value
        self.pos = pos


class _Glob(_Node):
    """A string literal; parts alternate literal text and None (wildcard)."""

    def __init__(self, parts, pos):
        self.parts = parts
        self.pos = pos
        self.is_glob = any(p is None for p in parts)
        self.text = "".join(p for p in parts if p is not None)


class _Ref(_Node):
    def __init__(self, scope, path, pos):
        self.scope = scope  # "field" or "ctx" or "app"
        self.path = path  # [str | int]
        self.pos = pos


class _Not(_Node):
    def __init__(self, operand):
        self.operand = operand


class _Unary(_Node):
    """Unary minus, plus or bitwise not ("-", "+", "~") of a non-literal operand."""

    def __init__(self, op, operand, pos):
        self.op = op
        self.operand = operand
        self.pos = pos


class _Bin(_Node):
    def __init__(self, op, left, right, pos):
        self.op = op
        self.left = left
        self.right = right
        self.pos = pos


_CMP = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge}
_SWAP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_MAX_DEPTH = 100

# C's binary operators, lowest precedence first (LTTng's filter grammar is C's)
_LEVELS = (("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="), ("<<", ">>"))
_PREC = {op: level for level, ops in enumerate(_LEVELS) for op in ops}
_BITWISE = frozenset(("|", "^", "&", "<<", ">>"))


def _wrap64(v: int) -> int:
    """v as a signed 64-bit two's complement integer (LTTng's interpreter registers)."""
    return ((v + (1 << 63)) & 0xFFFFFFFFFFFFFFFF) - (1 << 63)


class _Parser:
    def __init__(self, text):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.fields = []
        self.ctx = []

    def peek(self):
        return self.toks[self.i]

    def next(self):
        t = self.toks[self.i]
        if t.kind != "end":
            self.i += 1
        return t

    def is_op(self, v):
        t = self.toks[self.i]
        return t.kind == "op" and t.value == v

    def error(self, msg, tok=None):
        tok = tok or self.peek()
        return FilterError(msg, self.text, tok.pos)

    def parse(self):
        if self.peek().kind == "end":
            raise self.error("empty filter expression")
        node = self.expr()
        t = self.peek()
        if t.kind != "end":
            raise self.error(f"unexpected {_desc(t)}", t)
        if isinstance(node, _Glob):
            raise FilterError("a string literal needs a comparison operator", self.text, node.pos)
        return node

    def expr(self):
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error("expression nested too deeply")
        node = self.binary(0)
        self.depth -= 1
        return node

    def binary(self, min_prec):
        """Precedence climbing over C's binary operators (all left-associative)."""
        left = self.unary()
        while True:
            t = self.peek()
            prec = _PREC.get(t.value) if t.kind == "op" else None
            if prec is None:
                if t.kind == "op" and t.value in "+-":
                    raise self.error(f"arithmetic operator {t.value!r} is not supported in filters (LTTng's "
                                     "filters have none)", t)
                return left
            if prec < min_prec:
                return left
            self.next()
            right = self.binary(prec + 1)
            left = self.combine(t, left, right)

    def combine(self, t, left, right):
        op = t.value
        if op in _CMP:
            for side in (left, right):
                if isinstance(side, _Glob) and side.is_glob and op not in ("==", "!="):
                    raise FilterError("a glob pattern can only be compared with == or !=", self.text, side.pos)
            return _Bin(op, left, right, t.pos)
        for side in (left, right):
            if isinstance(side, _Glob):
                raise FilterError(f"a string cannot be an operand of {op!r}", self.text, side.pos)
        return _Bin(op, left, right, t.pos)

    def unary(self):
        t = self.peek()
        if t.kind == "op" and t.value in "!~-+":
            self.next()
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.error("expression nested too deeply")
            operand = self.unary()
            self.depth -= 1
            if isinstance(operand, _Glob):
                raise FilterError(f"a string cannot be an operand of {t.value!r}", self.text, operand.pos)
            if t.value == "!":
                return _Not(operand)
            if isinstance(operand, _Lit):  # fold constants: "-2" stays a literal (the fast paths need it)
                v = operand.value
                if t.value == "-":
                    return _Lit(_wrap64(-v) if isinstance(v, int) else -v, t.pos)
                if t.value == "+":
                    return _Lit(v, t.pos)
                if not isinstance(v, int):
                    raise FilterError("'~' needs an integer", self.text, t.pos)
                return _Lit(_wrap64(~v), t.pos)
            return _Unary(t.value, operand, t.pos)
        return self.operand()

    def operand(self):
        t = self.peek()
        if t.kind == "op" and t.value == "(":
            self.next()
            node = self.expr()
            if not self.is_op(")"):
                raise self.error(f"expected ')', got {_desc(self.peek())}")
            self.next()
            return node
        if t.kind in ("int", "float"):
            self.next()
            return _Lit(t.value, t.pos)
        if t.kind == "str":
            self.next()
            return _Glob(t.value, t.pos)
        if t.kind in ("ctx", "app"):
            self.next()
            name = self.next()
            if name.kind != "name":
                raise self.error(f"expected a context name, got {_desc(name)}", name)
            path = [name.value]
            self.suffixes(path)
            self.ctx.append(path[0])
            return _Ref(t.kind, path, t.pos)
        if t.kind == "name":
            self.next()
            path = [t.value]
            self.suffixes(path)
            self.fields.append(t.value)
            return _Ref("field", path, t.pos)
        raise self.error(f"expected a field, a number or a string, got {_desc(t)}", t)

    def suffixes(self, path):
        while True:
            if self.is_op("."):
                self.next()
                t = self.next()
                if t.kind != "name":
                    raise self.error(f"expected a field name after '.', got {_desc(t)}", t)
                path.append(t.value)
            elif self.is_op("["):
                self.next()
                t = self.next()
                if t.kind != "int":
                    raise self.error(f"expected an integer index, got {_desc(t)}", t)
                if not self.is_op("]"):
                    raise self.error(f"expected ']', got {_desc(self.peek())}")
                self.next()
                path.append(t.value)
            else:
                return


def _desc(t):
    if t.kind == "end":
        return "end of expression"
    if t.kind == "str":
        return "string literal"
    if t.kind in ("ctx", "app"):
        return f"'${t.kind}.'"
    return repr(t.value)


# --------------------------------------------------------------------------
# Compilation to closures
# --------------------------------------------------------------------------


def _getter(ref: _Ref):
    path = ref.path
    use_ctx = ref.scope != "field"
    first = path[0]
    rest = path[1:]
    if ref.scope == "field" and not rest:
        def get(f, c=_EMPTY):
            return f.get(first, _MISSING)
        return get
    if use_ctx and not rest:
        def get(f, c=_EMPTY):
            return c.get(first, _MISSING)
        return get

    def get(f, c=_EMPTY):
        v = (c if use_ctx else f).get(first, _MISSING)
        for k in rest:
            if v is _MISSING:
                return v
            try:
                if isinstance(k, int):
                    if not isinstance(v, (list, tuple, str)):
                        return _MISSING
                    v = v[k]
                else:
                    if not isinstance(v, dict):
                        return _MISSING
                    v = v.get(k, _MISSING)
            except IndexError:
                return _MISSING
        return v
    return get


def _glob_matcher(g: _Glob):
    if not g.is_glob:
        text = g.text
        return lambda v: v == text
    parts = g.parts
    # "prefix*" is the common case
    if len(parts) == 3 and parts[1] is None and parts[2] == "":
        prefix = parts[0]
        return lambda v: v.startswith(prefix)
    rx = re.compile("".join(".*" if p is None else re.escape(p) for p in parts), re.S)
    fm = rx.fullmatch
    return lambda v: fm(v) is not None


def _value_of(node):
    """A closure (f, c) -> value for an operand node (references and literals)."""
    if isinstance(node, _Ref):
        return _getter(node)
    if isinstance(node, _Lit):
        v = node.value
        return lambda f, c=_EMPTY: v
    if isinstance(node, _Glob):
        v = node.text
        return lambda f, c=_EMPTY: v
    if isinstance(node, _Bin) and node.op in _BITWISE:
        return _bitwise(node)
    if isinstance(node, _Unary):
        return _unary(node)
    pred = _compile(node)
    return lambda f, c=_EMPTY: 1 if pred(f, c) else 0


def _integer(v):
    """The integer an operand of a bitwise operator stands for, or None (a bool is 0 or 1, as in C)."""
    cls = v.__class__
    if cls is int:
        return v
    if cls is bool:
        return int(v)
    return None


def _shift_left(a, b):
    return _wrap64(a << b) if 0 <= b < 64 else _MISSING


def _shift_right(a, b):
    # LTTng's interpreter shifts the 64-bit pattern as unsigned (a logical shift)
    return _wrap64((a & 0xFFFFFFFFFFFFFFFF) >> b) if 0 <= b < 64 else _MISSING


_BIT_OPS = {
    "&": lambda a, b: _wrap64(a & b),
    "|": lambda a, b: _wrap64(a | b),
    "^": lambda a, b: _wrap64(a ^ b),
    "<<": _shift_left,
    ">>": _shift_right,
}


def _bitwise(node: _Bin):
    """A value closure for `a OP b` with a bitwise OP: an int, or _MISSING when an operand is not an integer."""
    get_a = _value_of(node.left)
    get_b = _value_of(node.right)
    fn = _BIT_OPS[node.op]
    if isinstance(node.right, _Lit) and isinstance(node.right.value, int) and node.op == "&":
        mask = node.right.value  # `field & MASK`, the common case: one lookup, one check

        def masked(f, c=_EMPTY):
            a = _integer(get_a(f, c))
            return _MISSING if a is None else _wrap64(a & mask)
        return masked

    def value(f, c=_EMPTY):
        a = _integer(get_a(f, c))
        b = _integer(get_b(f, c))
        if a is None or b is None:
            return _MISSING
        return fn(a, b)
    return value


def _unary(node: _Unary):
    get = _value_of(node.operand)
    if node.op == "~":
        def value(f, c=_EMPTY):
            a = _integer(get(f, c))
            return _MISSING if a is None else _wrap64(~a)
        return value
    negate = node.op == "-"

    def value(f, c=_EMPTY):
        v = get(f, c)
        cls = v.__class__
        if cls is bool:
            v = int(v)
        elif cls is not int and cls is not float:
            return _MISSING
        if not negate:
            return v
        return _wrap64(-v) if v.__class__ is int else -v
    return value


def _compare(node: _Bin):
    op = node.op
    left, right = node.left, node.right
    # normalize: put a literal on the right
    if isinstance(left, (_Lit, _Glob)) and not isinstance(right, (_Lit, _Glob)):
        left, right = right, left
        op = _SWAP[op]
    fn = _CMP[op]
    simple = isinstance(left, _Ref) and len(left.path) == 1
    if simple and isinstance(right, (_Lit, _Glob)):
        fast = _compare_simple(left, op, fn, right)
        if fast is not None:
            return fast
    get = _value_of(left)
    if isinstance(right, _Glob):
        match = _glob_matcher(right)
        neg = op == "!="
        if not right.is_glob and op not in ("==", "!="):
            text = right.text

            def m(f, c=_EMPTY):
                v = get(f, c)
                return v.__class__ is str and fn(v, text)
            return m
        if neg:
            def m(f, c=_EMPTY):
                v = get(f, c)
                return v.__class__ is str and not match(v)
        else:
            def m(f, c=_EMPTY):
                v = get(f, c)
                return v.__class__ is str and match(v)
        return m
    if isinstance(right, _Lit):
        k = right.value

        def m(f, c=_EMPTY):
            v = get(f, c)
            cls = v.__class__
            if cls is int or cls is float:
                return fn(v, k)
            if cls is bool:
                return fn(int(v), k)
            return False
        return m
    get2 = _value_of(right)

    def m(f, c=_EMPTY):
        a = get(f, c)
        b = get2(f, c)
        if a is _MISSING or b is _MISSING:
            return False
        if isinstance(a, _NUM) and isinstance(b, _NUM):
            return fn(a, b)
        if isinstance(a, str) and isinstance(b, str):
            return fn(a, b)
        return False
    return m


def _compare_simple(ref, op, fn, lit):
    """Closures for `name OP literal` with the lookup inlined (the common, hot case)."""
    name = ref.path[0]
    in_ctx = ref.scope != "field"
    if isinstance(lit, _Lit):
        k = lit.value
        if op == "==" and not in_ctx:
            def m(f, c=_EMPTY):
                v = f.get(name, _MISSING)
                cls = v.__class__
                return (cls is int or cls is float or cls is bool) and v == k
            return m
        if in_ctx:
            def m(f, c=_EMPTY):
                v = c.get(name, _MISSING)
                cls = v.__class__
                return (cls is int or cls is float or cls is bool) and fn(v, k)
            return m

        def m(f, c=_EMPTY):
            v = f.get(name, _MISSING)
            cls = v.__class__
            return (cls is int or cls is float or cls is bool) and fn(v, k)
        return m
    if op not in ("==", "!="):
        return None
    neg = op == "!="
    parts = lit.parts
    if not lit.is_glob:
        text = lit.text

        def test(v):
            return v == text
    elif len(parts) == 3 and parts[1] is None and parts[2] == "":
        prefix = parts[0]
        if not in_ctx and not neg:
            def m(f, c=_EMPTY):
                v = f.get(name, _MISSING)
                return v.__class__ is str and v.startswith(prefix)
            return m
        def test(v):
            return v.startswith(prefix)
    else:
        return None
    src_get = (lambda f, c: c.get(name, _MISSING)) if in_ctx else (lambda f, c: f.get(name, _MISSING))
    if neg:
        def m(f, c=_EMPTY):
            v = src_get(f, c)
            return v.__class__ is str and not test(v)
    else:
        def m(f, c=_EMPTY):
            v = src_get(f, c)
            return v.__class__ is str and test(v)
    return m


def _truth(get):
    """A predicate true when a value closure gives a non-zero number."""
    def truth(f, c=_EMPTY):
        v = get(f, c)
        if v.__class__ in (int, float, bool):
            return v != 0
        return False
    return truth


def _compile(node):
    if isinstance(node, _Bin):
        if node.op in ("&&", "||"):
            # flatten chains (a && b && c ...) so that evaluation depth stays flat
            operands = []
            stack = [node]
            while stack:
                n = stack.pop()
                if isinstance(n, _Bin) and n.op == node.op:
                    stack.append(n.right)
                    stack.append(n.left)
                else:
                    operands.append(_compile(n))
            if len(operands) == 2:
                a, b = operands
                if node.op == "&&":
                    return lambda f, c=_EMPTY: a(f, c) and b(f, c)
                return lambda f, c=_EMPTY: a(f, c) or b(f, c)
            if node.op == "&&":
                def all_of(f, c=_EMPTY):
                    for pr in operands:
                        if not pr(f, c):
                            return False
                    return True
                return all_of

            def any_of(f, c=_EMPTY):
                for pr in operands:
                    if pr(f, c):
                        return True
                return False
            return any_of
        if node.op in _BITWISE:
            return _truth(_bitwise(node))
        return _compare(node)
    if isinstance(node, _Unary):
        return _truth(_unary(node))
    if isinstance(node, _Not):
        a = _compile(node.operand)
        return lambda f, c=_EMPTY: not a(f, c)
    if isinstance(node, _Ref):
        return _truth(_getter(node))
    if isinstance(node, _Lit):
        v = bool(node.value)
        return lambda f, c=_EMPTY: v
    raise TypeError(node)


class Filter:
    """A compiled filter. ``matches(fields, context) -> bool``."""

    __slots__ = ("expression", "fields", "context_fields", "_pred", "matches")

    def __init__(self, expression: str, pred, fields, context_fields):
        self.expression = expression
        self.fields = frozenset(fields)
        self.context_fields = frozenset(context_fields)
        self._pred = pred

        # every compiled closure returns a bool and takes (fields, context={}):
        # matches is the closure itself, no wrapper call
        self.matches = pred

    def __repr__(self):
        return f"Filter({self.expression!r})"


def compile_filter(expr: str) -> Filter:
    """Parse an LTTng filter expression; raise FilterError with the 0-based position."""
    if not isinstance(expr, str):
        raise FilterError("a filter must be a string", repr(expr), 0)
    if len(expr) > 65536:
        raise FilterError("filter expression too long", expr[:64], 65536)
    p = _Parser(expr)
    try:
        tree = p.parse()
        pred = _compile(tree)
    except RecursionError:
        raise FilterError("expression nested too deeply", expr, 0) from None
    return Filter(expr, pred, p.fields, p.ctx)


def event_predicate(flt: "Filter | None", decl):
    """The callable the C fast path runs before recording an event: ``keep(*args) -> bool``.

    One adapter for every host (the embedded Session and the agent). The
    context values a filter names (``$ctx.vpid``, ``$ctx.thread_name``,
    ``$app.contextvar:NAME``) are read per event from ust.instrument.context's
    readers, the C ones from the C core's caches (_ring/contexts.h); the others are missing (false).
    """
    if flt is None:
        return None
    names = [f.name for f in decl.fields]
    matches = flt.matches
    readers = []
    if flt.context_fields:
        from ust.instrument.context import reader

        readers = [(n, r) for n in sorted(flt.context_fields) if (r := reader(n)) is not None]
    if not readers:
        def keep(*args) -> bool:
            return matches(dict(zip(names, args)), _EMPTY)
        return keep
    if len(readers) == 1:
        (ctx_name, read), = readers

        def keep_one(*args) -> bool:
            return matches(dict(zip(names, args)), {ctx_name: read()})
        return keep_one

    def keep_ctx(*args) -> bool:
        return matches(dict(zip(names, args)), {n: r() for n, r in readers})
    return keep_ctx


# --------------------------------------------------------------------------
# Captures (add-trigger --capture): one reference, its value sent with a notification
# --------------------------------------------------------------------------

MAX_CAPTURE_STRING = 1024  # characters of a captured string (and of a bytes value's elements)
MAX_CAPTURE_ITEMS = 256  # elements of a captured array, sequence or bytes value
MAX_CAPTURED_MATCHES = 64  # matches of one (trigger, event) whose values one agent report carries


class Capture:
    """A compiled capture: ``value(fields, context)`` gives the reference's value, None if unavailable."""

    __slots__ = ("expression", "context_fields", "_get")

    def __init__(self, expression: str, get, context_fields):
        self.expression = expression
        self.context_fields = frozenset(context_fields)
        self._get = get

    def value(self, fields, context=_EMPTY):
        return capture_value(self._get(fields, context))

    def __repr__(self):
        return f"Capture({self.expression!r})"


def compile_capture(expr: str) -> Capture:
    """Parse a capture: LTTng's references only (``field``, ``field[N]``, ``$ctx.NAME``, ``$app.P:T``)."""
    if not isinstance(expr, str) or not expr.strip() or len(expr) > 4096:
        raise FilterError(f"bad capture {str(expr)[:64]!r}: a capture names a field, $ctx.NAME or $app.NAME")
    try:
        p = _Parser(expr)
        t = p.peek()
        if t.kind not in ("name", "ctx", "app"):
            raise FilterError(f"a capture is a field or a context reference, got {_desc(t)}", expr, t.pos)
        node = p.operand()
        if p.peek().kind != "end":
            raise FilterError(f"a capture is one reference, unexpected {_desc(p.peek())}", expr, p.peek().pos)
    except FilterError as exc:
        raise FilterError(f"bad capture {expr!r}: {exc.reason}" + (f" at position {exc.position}"
                                                                  if exc.position is not None else "")) from None
    return Capture(expr, _getter(node), p.ctx)


def capture_value(v):
    """A captured value as the notification carries it: None (unavailable), a number, a bounded string,
    or a bounded list of scalars (an array, a sequence, bytes)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return list(bytes(v[:MAX_CAPTURE_ITEMS]))
    if isinstance(v, (list, tuple)):
        return [_capture_scalar(x) for x in v[:MAX_CAPTURE_ITEMS]]
    return _capture_scalar(v)


def _capture_scalar(v):
    if v is _MISSING or v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return int(v) if -(1 << 63) <= v < 1 << 64 else str(v)  # an IntEnum too; beyond 64 bits, its digits
    if isinstance(v, float):
        return v if v == v and abs(v) != float("inf") else str(v)  # JSON has no NaN nor infinity
    return (v if isinstance(v, str) else str(v))[:MAX_CAPTURE_STRING]


def event_capture(captures: "list[Capture]", decl):
    """The callable the trigger callback runs on a match: ``values(*args) -> list`` (one per capture)."""
    names = [f.name for f in decl.fields]
    readers = []
    wanted = sorted({n for c in captures for n in c.context_fields})
    if wanted:
        from ust.instrument.context import reader

        readers = [(n, r) for n in wanted if (r := reader(n)) is not None]
    getters = [c.value for c in captures]

    def values(*args) -> list:
        try:
            fields = dict(zip(names, args))
            ctx = {n: r() for n, r in readers} if readers else _EMPTY
            return [g(fields, ctx) for g in getters]
        except Exception:  # noqa: BLE001  never into the application: the values are then unavailable
            return [None] * len(getters)
    return values
