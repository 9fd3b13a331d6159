"""The package's shape: no import cycle in ust, the reader's one pipeline, its public API."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reader_support import FIXTURES, run_cli

SRC = Path(__file__).resolve().parent.parent / "src"


def _modules():
    """{module name: path} of every module of the ust package."""
    mods = {}
    for path in sorted((SRC / "ust").rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(node) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): imports for annotations only,
    never run."""
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree):
    """Every import statement that can run: at module level, in functions (a lazy import
    is still an edge of the cycle it closes), not under ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def _import_graph(mods):
    """{module: set of ust modules it imports}, from its import statements."""
    graph = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = name.split(".") if is_pkg else name.split(".")[:-1]
        targets = set()
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)] + ([node.module] if node.module else [])
                    base = ".".join(base)
                else:
                    base = node.module or ""
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.add(sub if sub in mods else base)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_graph_finds_a_cycle():
    """The walker itself: a lazy import closing a circle is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]


def test_imports_for_annotations_only_are_not_edges():
    tree = ast.parse("import ust.a\nif TYPE_CHECKING:\n    import ust.b\nelse:\n    import ust.c\n"
                     "def f():\n    import ust.d\n")
    assert sorted(a.name for n in _import_nodes(tree) for a in n.names) == ["ust.a", "ust.c", "ust.d"]


def test_no_import_cycle_in_ust():
    cycles = set(_cycles(_import_graph(_modules())))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_every_module_imports_alone():
    """Each ust module imports in a fresh interpreter (no module works only because
    another imported something first)."""
    names = [n for n in _modules() if not n.endswith("__main__")]
    code = ("import importlib, subprocess, sys\n"
            "bad = []\n"
            "for name in sys.argv[1:]:\n"
            "    r = subprocess.run([sys.executable, '-c', 'import importlib, sys; importlib.import_module(sys.argv[1])',"
            " name], capture_output=True, text=True, env={**__import__('os').environ, 'UST_AGENT': '0'})\n"
            "    if r.returncode: bad.append(name + ': ' + r.stderr.strip().splitlines()[-1])\n"
            "print('\\n'.join(bad))\n")
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(SRC)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_cli_and_analyses_use_the_readers_public_api():
    """ust.cli and ust.analysis import no private module of ust.ctf, only ust.ctf's names."""
    import ust.ctf

    mods = _modules()
    graph = _import_graph(mods)
    bad = []
    for name, targets in graph.items():
        if not name.startswith(("ust.cli", "ust.analysis")):
            continue
        for t in targets:
            if t.startswith("ust.ctf.") and t.split(".")[2].startswith("_"):
                bad.append(f"{name} imports {t}")
        for node in ast.walk(ast.parse(mods[name].read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "ust.ctf":
                for a in node.names:
                    if a.name not in ust.ctf.__all__:
                        bad.append(f"{name} imports ust.ctf.{a.name}, not in ust.ctf.__all__")
    assert not bad
    for name in ust.ctf.__all__:
        assert getattr(ust.ctf, name) is not None


@pytest.mark.parametrize("name", ["ust-uid-contexts", "ust-pid"])
def test_filter_decodes_each_event_once(name):
    """`ust view --filter`: one decoder per stream class gives the filter its values and
    the text (before: each event decoded to dicts for the filter, then again to text)."""
    from ust.ctf import TextFormat, open_traces, view_bytes
    from ust.filter import compile_filter

    traces = open_traces(str(FIXTURES / name))
    out = b"".join(view_bytes(traces, TextFormat(), filt=compile_filter("1 == 1")))
    assert out
    compiled = [key for t in traces for codec in t._codecs.values() for key in codec._cache]
    # only the stream classes' whole-packet text decoders: no per-event-class value decoder
    assert compiled and all(key[0] == "packet_text" for key in compiled), compiled


def test_filter_output_is_the_matching_events_lines():
    """Filtered text = the unfiltered text's lines of the events the filter matches
    (matched on the values read_trace gives)."""
    import ust.ctf
    from ust.filter import compile_filter

    path = str(FIXTURES / "ust-uid-contexts")
    expr = 'i8 == -3 || (str == "t1-i2-*" && $ctx.vtid > 0)'
    f = compile_filter(expr)
    keep = [f.matches(ev.fields, ev.context) for ev in ust.ctf.read_trace(path)]
    _, everything, _ = run_cli(["view", "--clock-cycles", "--no-delta", path])
    _, filtered, _ = run_cli(["view", "--clock-cycles", "--no-delta", "--filter", expr, path])
    lines = everything.splitlines(keepends=True)
    assert len(lines) == len(keep) and 0 < sum(keep) < len(keep)
    assert filtered == b"".join(line for line, k in zip(lines, keep) if k)


@pytest.mark.parametrize("header", ["large", "compact"])
@pytest.mark.parametrize("expr", ["1 == 1", "s == \"*\" || a != 12345 || $ctx.cpu_id >= 0"])
def test_filter_keeping_everything_prints_what_view_prints(tmp_path, header, expr):
    """Strings with escapes and undecodable bytes, integers in every base, floats, empty
    payloads, discarded events: the filtered decoders' text is the plain one's, byte for byte."""
    from test_view import _synthetic

    path = str(_synthetic(tmp_path / "t", header))
    rc, plain, err = run_cli(["view", path])
    rc2, filtered, err2 = run_cli(["view", "--filter", expr, path])
    assert rc == rc2 == 0 and plain and filtered == plain and err2 == err
