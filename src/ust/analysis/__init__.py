"""Analyses of traces: each is a plain function, and a `ust` subcommand.

    trace_stats(path)                    -> TraceStats   (`ust stats`)
    latency(path, begin, end, key=None)  -> LatencyResult (`ust latency`)
    export_chrome(path, out, ...)        Chrome/Perfetto JSON (`ust export --format chrome`)
    export_parquet(path, out_dir)        one Parquet file per event name (needs pyarrow)
    plot_trace(path, out, ...)           PNG (needs matplotlib)
"""

from .export import export_chrome, export_parquet
from .latency import LatencyResult, format_latency, latency
from .plot import plot_trace
from .stats import TraceStats, format_stats, stats_dict, trace_stats

__all__ = ["trace_stats", "format_stats", "stats_dict", "TraceStats", "latency", "format_latency",
           "LatencyResult", "export_chrome", "export_parquet", "plot_trace"]
