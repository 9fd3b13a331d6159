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
    ("a == 5 && b == -2", True), ("a == 4 || b == -2", True), ("!(a == 4)", True), ("!a == 4", True),
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
    ("$foo.x == 1", 0), ("a == 0x", 7), ('"a*" < s', 0), ("a[x] == 1", 2), ("12ab == 1", 2), ("- a", 2),
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
@given(st.text(alphabet='ab$ctx.01"*\\=!<>&|() -+', max_size=40))
def test_fuzz_never_crashes(text):
    try:
        f = compile_filter(text)
    except FilterError as exc:
        assert exc.position is not None and 0 <= exc.position <= len(text)
        return
    assert f.matches({"a": 1, "b": "x"}, {"ctx": 2}) in (True, False)
