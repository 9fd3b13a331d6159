"""CTF 1.8: the reader of traces (ours and LTTng's).

``read_trace(path)`` yields ``Event`` objects merged in time order across
every stream of every trace under ``path``; ``read_columns(path)`` is the
bulk path (NumPy columns per event name, numpy imported only there).
Metadata generation and stream writing live in ``metadata``/``writer``.
"""

from .reader import Discarded, Event, Trace, open_traces, read_trace
from .bulk import read_columns

__all__ = ["read_trace", "read_columns", "open_traces", "Event", "Trace", "Discarded"]
