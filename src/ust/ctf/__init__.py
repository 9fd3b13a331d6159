"""CTF 1.8: the reader of traces (ours and LTTng's).

``read_trace(path)`` yields ``Event`` objects merged in time order across
every stream of every trace under ``path``; ``read_columns(path)`` is the
bulk path (NumPy columns per event name, numpy imported only there).
Metadata generation and stream writing live in ``metadata``/``writer``.
"""

_LAZY = {
    "read_trace": ".reader", "open_traces": ".reader", "Event": ".reader", "Trace": ".reader",
    "Discarded": ".reader", "read_columns": ".bulk",
}


def __getattr__(name: str):
    # The reader is imported on first use: ``import ust`` (which writes traces
    # through ust.ctf.metadata/writer) must stay cheap.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ust.ctf' has no attribute {name!r}")

__all__ = ["read_trace", "read_columns", "open_traces", "Event", "Trace", "Discarded"]
