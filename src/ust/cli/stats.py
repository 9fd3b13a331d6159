"""`ust stats TRACE`: events per name, process and thread; rates; time span; losses."""

from __future__ import annotations

import json



def add_arguments(parser) -> None:
    parser.add_argument("trace", nargs="+", help="trace directory")
    parser.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    parser.add_argument("--functions", action="store_true",
                        help="per function (probes, `ust run --functions`): calls, total and self time, p50, p99")


def run(args, out) -> int:
    if args.functions:
        from ust.analysis.functions import format_function_stats, function_stats, function_stats_dict

        fst = function_stats(args.trace, progress=True)
        out.write(json.dumps(function_stats_dict(fst), indent=2) + "\n" if args.json else format_function_stats(fst))
        return 0
    from ust.analysis.stats import format_stats, stats_dict, trace_stats

    st = trace_stats(args.trace, progress=True)
    if args.json:
        out.write(json.dumps(stats_dict(st), indent=2) + "\n")
    else:
        out.write(format_stats(st))
    return 0
