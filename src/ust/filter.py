"""LTTng's filter language: tokenizer, recursive-descent parser, closures.

Grammar (lowest precedence first)::

    expr       := and_expr ( "||" and_expr )*
    and_expr   := not_expr ( "&&" not_expr )*
    not_expr   := "!" not_expr | comparison
    comparison := operand ( ("==" | "!=" | "<" | "<=" | ">" | ">=") operand )?
    operand    := "(" expr ")" | ["-" | "+"] (INTEGER | FLOAT) | STRING | reference
    reference  := ["$ctx." | "$app."] NAME ( "." NAME | "[" INTEGER "]" )*

Semantics follow LTTng: a comparison whose field is missing, or whose
operands have incompatible types (a string against a number), is false. A
bare reference is true when the value is a non-zero number. String literals
are globs: an unescaped ``*`` matches any run of characters, ``\\*`` is a
literal star; globs work with ``==`` and ``!=``.

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

_OPS2 = ("==", "!=", "<=", ">=", "&&", "||")
_OPS1 = "<>!()[].-+"


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
        return node

    def expr(self):
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error("expression nested too deeply")
        node = self.and_expr()
        while self.is_op("||"):
            t = self.next()
            node = _Bin("||", node, self.and_expr(), t.pos)
        self.depth -= 1
        return node

    def and_expr(self):
        node = self.not_expr()
        while self.is_op("&&"):
            t = self.next()
            node = _Bin("&&", node, self.not_expr(), t.pos)
        return node

    def not_expr(self):
        if self.is_op("!"):
            self.next()
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise self.error("expression nested too deeply")
            node = _Not(self.not_expr())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self):
        left = self.operand()
        t = self.peek()
        if t.kind == "op" and t.value in _CMP:
            self.next()
            right = self.operand()
            if isinstance(left, (_Lit, _Glob)) and isinstance(right, (_Lit, _Glob)):
                pass  # constant comparison: allowed, folded at compile time
            for side in (left, right):
                if isinstance(side, _Glob) and side.is_glob and t.value not in ("==", "!="):
                    raise FilterError("a glob pattern can only be compared with == or !=", self.text, side.pos)
            return _Bin(t.value, left, right, t.pos)
        if isinstance(left, _Glob):
            raise self.error("a string literal needs a comparison operator", t)
        return left

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
        if t.kind == "op" and t.value in "-+":
            self.next()
            n = self.peek()
            if n.kind not in ("int", "float"):
                raise self.error(f"expected a number after {t.value!r}, got {_desc(n)}", n)
            self.next()
            return _Lit(-n.value if t.value == "-" else n.value, t.pos)
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
            if t.kind == "ctx":
                self.ctx.append(path[0])
            else:
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
    pred = _compile(node)
    return lambda f, c=_EMPTY: 1 if pred(f, c) else 0


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
        return _compare(node)
    if isinstance(node, _Not):
        a = _compile(node.operand)
        return lambda f, c=_EMPTY: not a(f, c)
    if isinstance(node, _Ref):
        get = _getter(node)

        def truth(f, c=_EMPTY):
            v = get(f, c)
            if v.__class__ in (int, float, bool):
                return v != 0
            return False
        return truth
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
