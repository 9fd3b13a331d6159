"""The public surface: `import ust` pulls in nothing outside the standard
library, and every public name is exported once."""

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


def test_tracepoint_is_a_c_callable_with_a_dotted_name():
    tp = ust.tracepoint("api:ev", {"x": ust.int32})
    assert type(tp).__module__ + "." + type(tp).__qualname__ in ("ust.Tracepoint",)
    assert tp.name == "api:ev" and not tp.enabled
