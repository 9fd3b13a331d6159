"""LTTng's filter language."""

import pytest
from hypothesis import given, settings, strategies as st

from ust.errors import FilterError
from ust.filter import compile_filter

F = {"a": 5, "b": -2, "x": 1.5, "s": "hello world", "star": "a*b", "nested": {"k": 3}, "arr": [1, 2, 3],
     "zero": 0}
C = {"vpid": 42, "procname": "python3", "app:ctx": 7}


@pytest.mark.parametrize("expr, expected", [
    ("a == 5", True), ("a != 5", False), ("a < 6", True), ("a <= 5", True), ("a > 5", False), ("a >= 5", True),
    ("5 == a", True), ("6 > a", True), ("b == -2", True), ("x > 1.4 && x < 1.6", True), ("x == 1.5", True),
    ("a == 0x5", True), ("a == 05", True), ("a == 5.0", True),
    ('s == "hello world"', True), ('s == "hello*"', True), ('s == "*world"', True), ('s == "h*o*d"', True),
    ('s != "hello*"', False), ('s == "bye*"', False), ('star == "a\\*b"', True), ('s == "hello"', False),
    ('s == "a\\*b"', False), ('s < "i"', True),
    ("a == 5 && b == -2", True), ("a == 4 || b == -2", True), ("!(a == 4)", True), ("!a == 4", False),
    ("a", True), ("zero", False), ("!zero", True), ("missing == 1", False), ("!(missing == 1)", True),
    ("missing != 1", False), ('a == "5"', False), ("s == 5", False),
    ("$ctx.vpid == 42", True), ('$ctx.procname == "py*"', True), ("$ctx.nope == 1", False),
    ("$app.app:ctx == 7", True), ("nested.k == 3", True), ("arr[1] == 2", True), ("arr[9] == 2", False),
    ("a == b", False), ("a > b", True), ("((a == 5))", True), ("1 == 1", True),
    ("a == 5 && b == -2 && x > 1 && s == \"h*\" && $ctx.vpid == 42", True),
])
def test_semantics(expr, expected):
    assert compile_filter(expr).matches(F, C) is expected


def test_referenced_names():
    f = compile_filter('a == 1 && (s == "x*" || $ctx.vpid > 3) && nested.k == 1')
    assert f.fields == {"a", "s", "nested"} and f.context_fields == {"vpid"}


@pytest.mark.parametrize("expr, pos", [
    ("", 0), ("a ==", 4), ("a == 1 &&", 9), ("(a == 1", 7), ("a == 1)", 6), ('s == "abc', 5), ("a @ 1", 2),
    ("$foo.x == 1", 0), ("a == 0x", 7), ('"a*" < s', 0), ("a[x] == 1", 2), ("12ab == 1", 2), ("- ", 2),
    ("a + 1 == 6", 2), ("a - 1", 2), ('(s & "x") == 0', 5), ('~"x" == 1', 1), ("~1.5 == 1", 0), ('"x" && a', 0),
    ("a & ", 4), ("a << << 1", 5),
])
def test_errors_have_positions(expr, pos):
    with pytest.raises(FilterError) as ei:
        compile_filter(expr)
    assert ei.value.position == pos, str(ei.value)


def test_long_chains_do_not_recurse():
    f = compile_filter(" && ".join(["a == 5"] * 5000))
    assert f.matches(F, C)
    with pytest.raises(FilterError):
        compile_filter("(" * 5000 + "a" + ")" * 5000)


def _py_eval(expr_tree, f):
    kind = expr_tree[0]
    if kind == "cmp":
        _, name, op, k = expr_tree
        if name not in f:
            return False
        v = f[name]
        return {"==": v == k, "!=": v != k, "<": v < k, "<=": v <= k, ">": v > k, ">=": v >= k}[op]
    if kind == "not":
        return not _py_eval(expr_tree[1], f)
    a, b = _py_eval(expr_tree[1], f), _py_eval(expr_tree[2], f)
    return (a and b) if kind == "and" else (a or b)


def _render(t):
    kind = t[0]
    if kind == "cmp":
        return f"{t[1]} {t[2]} {t[3]}"
    if kind == "not":
        return f"!({_render(t[1])})"
    return f"({_render(t[1])}) {'&&' if kind == 'and' else '||'} ({_render(t[2])})"


_leaf = st.tuples(st.just("cmp"), st.sampled_from(["a", "b", "c", "gone"]),
                  st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), st.integers(-5, 5))
_tree = st.recursive(_leaf, lambda kids: st.one_of(
    st.tuples(st.just("not"), kids), st.tuples(st.just("and"), kids, kids), st.tuples(st.just("or"), kids, kids)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_tree, st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(-6, 6)))
def test_agrees_with_a_reference_evaluator(tree, fields):
    assert compile_filter(_render(tree)).matches(fields, {}) == _py_eval(tree, fields)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='ab$ctx.01"*\\=!<>&|() -+~^', max_size=40))
def test_fuzz_never_crashes(text):
    try:
        f = compile_filter(text)
    except FilterError as exc:
        assert exc.position is not None and 0 <= exc.position <= len(text)
        return
    assert f.matches({"a": 1, "b": "x"}, {"ctx": 2}) in (True, False)


# C's (and LTTng's) precedence, lowest first: || && | ^ & (== !=) (< <= > >=) (<< >>), then unary ! ~ - +.
# Each row: an expression and the same expression fully parenthesised; both must agree on every input,
# and the row's value on F pins which grouping was chosen.
F2 = {"a": 6, "b": 3, "c": 1, "neg": -8, "x": 2.5, "s": "str", "t": True}


@pytest.mark.parametrize("expr, grouped, expected", [
    ("a & 1 == 0", "a & (1 == 0)", False),  # == binds tighter than &: not (a & 1) == 0
    ("(a & 1) == 0", "((a & 1) == 0)", True),
    ("a | b ^ c", "a | (b ^ c)", True),
    ("a ^ b & c", "a ^ (b & c)", True),
    ("a & b | c", "(a & b) | c", True),
    ("a | c && 0", "(a | c) && 0", False),
    ("0 && a | c", "0 && (a | c)", False),
    ("a || b && 0", "a || (b && 0)", True),
    ("1 << 2 == 4", "1 << (2 == 4)", True),  # shifts bind tighter than ==: (1 << 2) == 4
    ("1 << 2 < 5", "(1 << 2) < 5", True),
    ("a >> 1 == b", "(a >> 1) == b", True),
    ("a < b == 0", "(a < b) == 0", True),
    ("!a == 0", "(!a) == 0", True),
    ("~a & 1", "(~a) & 1", True),
    ("-a == -6", "(-a) == -6", True),
    ("- -a == 6", "-(-a) == 6", True),
    ("a & b & c", "(a & b) & c", False),
    ("a == 6 == 1", "(a == 6) == 1", True),
    ("b << c << c", "(b << c) << c", True),
])
def test_precedence_table(expr, grouped, expected):
    assert compile_filter(expr).matches(F2, {}) is expected
    assert compile_filter(grouped).matches(F2, {}) is expected


@pytest.mark.parametrize("expr, expected", [
    ("(a & 2) == 2", True), ("(a & 1) == 1", False), ("(a | 1) == 7", True), ("(a ^ 5) == 3", True),
    ("~a == -7", True), ("(a << 2) == 24", True), ("(a >> 1) == 3", True),
    ("(neg >> 60) == 15", True),  # logical shift of the 64-bit pattern, as LTTng
    ("(neg >> 0) == -8", True), ("(1 << 63) < 0", True), ("(1 << 64) == 0", False), ("(a << -1) == 0", False),
    ("(a >> 64) == 0", False), ("(x & 1) == 0", False), ("(s & 1) == 0", False), ("(missing & 1) == 0", False),
    ("!((missing & 1) == 0)", True), ("(t & 1) == 1", True), ("a & 6", True), ("a & 1", False), ("~-1", False),
    ("(0x7fffffffffffffff + 0) == 1", None),
    ("$ctx.vpid & 1", False), ("($ctx.vpid | 1) == 43", True), ("-x == -2.5", True), ('-s == 1', False),
    ("(a & 0xff) == 6 && (b & 1) == 1", True),
])
def test_bitwise_evaluation(expr, expected):
    if expected is None:
        with pytest.raises(FilterError):
            compile_filter(expr)
        return
    assert compile_filter(expr).matches(F2, C) is expected


def _c_eval(t, f):
    """Reference: evaluate a bitwise tree like C on int64 (every leaf is present and an integer)."""
    if isinstance(t, int):
        return t
    if isinstance(t, str):
        return f[t]
    op, a, b = t
    a, b = _c_eval(a, f), _c_eval(b, f)
    r = {"&": a & b, "|": a | b, "^": a ^ b}[op]
    return r


_bleaf = st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(0, 255))
_btree = st.recursive(_bleaf, lambda kids: st.tuples(st.sampled_from(["&", "|", "^"]), kids, kids), max_leaves=10)


def _brender(t):
    if isinstance(t, (int, str)):
        return str(t)
    return f"({_brender(t[1])} {t[0]} {_brender(t[2])})"


@settings(max_examples=200, deadline=None)
@given(_btree, st.integers(0, 255), st.fixed_dictionaries({"a": st.integers(-300, 300), "b": st.integers(0, 300),
                                                           "c": st.integers(-5, 5)}))
def test_bitwise_agrees_with_c(tree, k, fields):
    assert compile_filter(f"{_brender(tree)} == {k}").matches(fields, {}) == (_c_eval(tree, fields) == k)
