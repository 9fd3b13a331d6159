"""A kernel trigger's ``--filter`` in ftrace's own filter language (``events/SYS/NAME/filter``).

A kernel trigger's instance records only its matches (ust.kernel.matcher counts them): the
filter is evaluated by the kernel, written in ftrace's syntax. ust's filters are LTTng's
language (ust.filter); the subset ftrace can evaluate is translated here, per event (each event
has its own fields and names), and the rest is refused in one line:

* comparisons of a field with a literal: integers with ``== != < <= > >=``, text with ``==`` and
  ``!=``, a glob (``"a*"``) with ftrace's ``~``; combined with ``&& || !`` and parentheses; a bare
  field is ``field != 0``;
* fields by the names the kernel trace gives them (lttng-modules': ``tid`` for sched's ``pid``,
  ``prev_tid``...), priorities as lttng-modules records them (the kernel's prio minus 100: the
  literal is moved, not the field); ``$ctx.tid`` / ``$ctx.vtid`` (``common_pid``),
  ``$ctx.procname`` (``comm``, the running task's), ``$ctx.cpu_id`` (``CPU``);
* refused: floats, bitwise and unary operators, array elements, two fields compared, ``$app.``
  and the other contexts, the fields lttng-modules derives from ftrace's task tables
  (sched_process_fork's ``parent_pid``/``child_pid``) or texts (block ``rwbs``), ordering of
  text, and text ftrace cannot quote or would read as a pattern (``"``, ``\\``, ``?``, ``[``, a
  leading ``!`` in a glob, a literal ``*`` in a glob).

As LTTng's, a comparison with a field the event lacks, or of a number with text, is false: an
event for which the whole filter is false is not enabled, one for which it is true gets no filter.
"""

from __future__ import annotations

from ust.errors import FilterError
from ust.filter import _CMP, _SWAP, _Bin, _Glob, _Lit, _Not, _Parser, _Ref, _Unary

from . import formats as fmt

# $ctx.NAME -> (ftrace's filter field, kind)
CONTEXTS = {"tid": ("common_pid", "int"), "vtid": ("common_pid", "int"), "procname": ("comm", "str"),
            "cpu_id": ("CPU", "int")}


class _Missing(Exception):
    """A field the event does not have: the comparison is false."""


def parse(expr: str):
    """The filter's tree (FilterError, one line, for what is not LTTng's language)."""
    p = _Parser(expr)
    try:
        return p.parse()
    except RecursionError:
        raise FilterError("expression nested too deeply", expr, 0) from None


def translate(expr: str, ev: fmt.EventFormat) -> str | bool:
    """The ftrace filter of ``expr`` for ``ev``: its text, True (every record matches: no filter)
    or False (none can: the event is not enabled). FilterError (one line) for what ftrace's filter
    cannot say."""
    return _Translator(expr, ev).node(parse(expr))


def referenced_fields(expr: str) -> set[str]:
    """The payload fields ``expr`` names."""
    p = _Parser(expr)
    p.parse()
    return set(p.fields)


class _Translator:
    def __init__(self, expr: str, ev: fmt.EventFormat):
        self.expr = expr
        self.ev = ev
        self.fields = {f.ctf or fmt.ctf_field_name(ev.system, f.name): f for f in ev.fields}

    def refuse(self, what: str, node=None) -> FilterError:
        pos = getattr(node, "pos", None)
        where = f" (position {pos})" if pos is not None else ""
        return FilterError(f"kernel filter {self.expr!r}: {what}{where}: ftrace's filter cannot evaluate it")

    def node(self, n) -> str | bool:
        if isinstance(n, _Bin) and n.op in ("&&", "||"):
            left, right = self.node(n.left), self.node(n.right)
            if n.op == "&&":
                if left is False or right is False:
                    return False
                if left is True or right is True:
                    return right if left is True else left
                return f"({left}) && ({right})"
            if left is True or right is True:
                return True
            if left is False or right is False:
                return right if left is False else left
            return f"({left}) || ({right})"
        if isinstance(n, _Not):
            inner = self.node(n.operand)
            return (not inner) if isinstance(inner, bool) else f"!({inner})"
        if isinstance(n, _Bin) and n.op in _CMP:
            return self.compare(n)
        if isinstance(n, _Ref):
            try:
                name, kind, shift = self.field(n)
            except _Missing:
                return False
            return f"{name} != {shift}" if kind == "int" else False  # a bare field: a non-zero number
        if isinstance(n, _Lit):
            if isinstance(n.value, float):
                raise self.refuse("a floating-point literal", n)
            return bool(n.value)
        if isinstance(n, _Bin):
            raise self.refuse(f"the operator {n.op!r}", n)
        if isinstance(n, _Unary):
            raise self.refuse(f"the operator {n.op!r} on a field", n)
        raise self.refuse("this expression", n)

    def compare(self, n: _Bin) -> str | bool:
        op, ref, lit = n.op, n.left, n.right
        if isinstance(ref, (_Lit, _Glob)) and not isinstance(lit, (_Lit, _Glob)):
            ref, lit, op = lit, ref, _SWAP[op]
        if not isinstance(ref, _Ref) or not isinstance(lit, (_Lit, _Glob)):
            raise self.refuse("a comparison that is not of a field with a literal", n)
        if isinstance(lit, _Lit) and isinstance(lit.value, float):
            raise self.refuse("a floating-point literal", lit)
        try:
            name, kind, shift = self.field(ref)
        except _Missing:
            return False
        if kind == "int":
            if not isinstance(lit, _Lit):
                return False  # a number against text: false, as LTTng's
            return f"{name} {op} {lit.value + shift}"
        if not isinstance(lit, _Glob):
            return False
        if op not in ("==", "!="):
            raise self.refuse(f"text compared with {op!r}", n)
        if any(c in lit.text for c in '"\\'):
            raise self.refuse("a string with '\"' or '\\'", lit)
        if not lit.is_glob:
            return f'{name} {op} "{lit.text}"'
        pattern = "".join("*" if p is None else p for p in lit.parts)
        if any(c in lit.text for c in "?[]*") or pattern.startswith("!"):
            raise self.refuse("a glob with '?', '[', ']', a literal '*' or a leading '!'", lit)
        glob = f'{name} ~ "{pattern}"'
        return glob if op == "==" else f"!({glob})"

    def field(self, ref: _Ref) -> tuple[str, str, int]:
        """(ftrace's name, "int" | "str", what to add to a literal) of a reference."""
        if len(ref.path) != 1:
            raise self.refuse("an array element or a sub-field", ref)
        name = ref.path[0]
        if ref.scope == "ctx":
            if name not in CONTEXTS:
                raise self.refuse(f"the context $ctx.{name} (ftrace's filter has $ctx.tid, $ctx.vtid, "
                                  "$ctx.procname and $ctx.cpu_id)", ref)
            return (*CONTEXTS[name], 0)
        if ref.scope != "field":
            raise self.refuse(f"the application context ${ref.scope}.{name}", ref)
        f = self.fields.get(name)
        if f is None:
            raise _Missing(name)
        if f.derive in (fmt.OP_TGID, fmt.OP_CHILD_TGID):
            raise self.refuse(f"the field {name!r} (a thread's process, which ftrace's record of "
                              f"{self.ev.name} does not hold)", ref)
        if f.derive == fmt.OP_RWBS:
            raise self.refuse(f"the field {name!r} (lttng-modules' mask of ftrace's rwbs text)", ref)
        if f.is_char and (f.count or f.dynamic):
            return f.name, "str", 0
        if f.count or f.dynamic or f.size not in (1, 2, 4, 8):
            raise self.refuse(f"the field {name!r} (an array)", ref)
        return f.name, "int", f.derive_arg if f.derive == fmt.OP_INT32_MINUS else 0
