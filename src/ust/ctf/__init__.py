"""CTF 1.8: the reader of traces (ours and LTTng's).

``read_trace(path)`` yields ``Event`` objects merged in time order across
every stream of every trace under ``path``; ``read_columns(path)`` is the
bulk path (NumPy columns per event name, numpy imported only there).
Metadata generation and stream writing live in ``metadata``/``writer``.

The names below are the reader's public API: the CLI and the analyses import
these, never a private module (tests/test_reader_layout.py checks it).
"""

_LAZY = {
    "read_trace": ".pipeline", "iter_events": ".pipeline",
    "open_traces": ".reader", "ordered_streams": ".reader", "Event": ".reader", "Trace": ".reader",
    "Discarded": ".reader",
    "read_columns": ".bulk", "iter_column_chunks": ".bulk",
    "TextFormat": "._text", "format_struct": "._text",
    "view_bytes": "._fasttext", "text_batches": "._fasttext", "format_batch": "._fasttext",
    "display_name": "._codegen",
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


__all__ = sorted(_LAZY)
