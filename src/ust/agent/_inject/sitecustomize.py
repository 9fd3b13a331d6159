"""Put first on PYTHONPATH by `ust run`: every Python process it starts (and
their Python children) imports ``ust`` before its first line, so its agent
registers and tracing starts there (and ``UST_LOGGING=1`` takes effect with
no code change). Then any other ``sitecustomize`` on the path runs as usual.
"""

import os
import sys


def _chain() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if os.environ.get("UST_RUN_TOKEN"):
    try:
        import ust  # noqa: F401  (starts the agent)
    except Exception:  # another interpreter, ust not importable: run untraced
        pass
try:
    _chain()
except Exception:
    pass
