"""The public surface: `import ust` pulls in nothing outside the standard
library, every public name is exported once, and what is meant to be used as
`ust.X` says so (its __module__, its repr)."""

import inspect
import pickle
import subprocess
import sys

import ust


def test_import_ust_imports_only_the_standard_library():
    code = (
        "import sys; before = set(sys.modules); import ust; "
        "new = set(sys.modules) - before; "
        "std = sys.stdlib_module_names; "
        "bad = sorted(m for m in new if m.split('.')[0] not in std and m.split('.')[0] != 'ust'); "
        "print(','.join(bad))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


def test_public_names_are_exported_once_and_exist():
    assert len(ust.__all__) == len(set(ust.__all__))
    for name in ust.__all__:
        assert hasattr(ust, name), name
    # dir(ust) shows the public names, lazy ones included, and nothing public that __all__ leaves out
    public = {n for n in dir(ust) if not n.startswith("_")}
    assert set(ust.__all__) <= public
    modules = {n for n in public if inspect.ismodule(getattr(ust, n))}
    assert public - modules == set(ust.__all__)


def test_public_classes_and_functions_name_themselves_ust_x():
    """Like trio's test_exports: every class or function exported as ust.X has
    __module__ "ust" and a __qualname__ that finds it again from ust."""
    checked = []
    for name in ust.__all__:
        obj = getattr(ust, name)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        checked.append(name)
        assert obj.__module__ == "ust", (name, obj.__module__)
        assert getattr(ust, obj.__qualname__ if inspect.isclass(obj) else obj.__name__) is obj, name
    assert {"tracepoint", "mark", "Session", "read_trace", "Tracepoint", "TracepointArgumentWarning",
            "array", "enum"} <= set(checked)
    # a name that reports itself as ust.X can be pickled by reference and comes back the same
    for name in checked:
        obj = getattr(ust, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert pickle.loads(pickle.dumps(obj)) is obj, name


def test_public_values_repr_as_ust_x():
    assert repr(ust.int32) == "ust.int32" and repr(ust.bytes) == "ust.bytes"
    assert ust.WARNING == 4 and ust.DEBUG == 14


def test_tracepoint_type_is_ust_tracepoint():
    tp = ust.tracepoint("api:ev", {"x": ust.int32})
    assert type(tp) is ust.Tracepoint
    assert type(tp).__module__ + "." + type(tp).__qualname__ == "ust.Tracepoint"
    assert repr(tp) == "<ust.Tracepoint api:ev (disabled)>"
    assert tp.name == "api:ev" and not tp.enabled


def test_every_c_type_names_a_place_where_it_is_found():
    """Each type of the compiled modules names itself module.Name (tp_name), and
    that module has it under that name: reprs, pickles by reference and
    tracebacks point somewhere real."""
    import importlib

    import ust._ring._ring as ring

    types = [v for v in vars(ring).values() if isinstance(v, type) and v.__module__ != "builtins"]
    try:
        import ust._ring._probes as probes_mod

        types += [v for v in vars(probes_mod).values() if isinstance(v, type) and v.__module__ != "builtins"]
    except ImportError:  # optional extension
        pass
    assert {t.__name__ for t in types} >= {"Buffer", "Channel", "Tracepoint"}
    for t in types:
        assert getattr(importlib.import_module(t.__module__), t.__qualname__) is t, t
