"""`ust stats TRACE`: events per name, process and thread; rates; time span; losses."""

from __future__ import annotations

import json



def add_arguments(parser) -> None:
    parser.add_argument("trace", nargs="+", help="trace directory")
    parser.add_argument("--json", action="store_true", help="print the statistics as one JSON object")


def run(args, out) -> int:
    from ust.analysis.stats import format_stats, stats_dict, trace_stats

    st = trace_stats(args.trace, progress=True)
    if args.json:
        out.write(json.dumps(stats_dict(st), indent=2) + "\n")
    else:
        out.write(format_stats(st))
    return 0
