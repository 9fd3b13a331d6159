"""`ust plot TRACE -o out.png [--begin NAME --end NAME]`."""

from __future__ import annotations



def add_arguments(parser) -> None:
    parser.add_argument("trace", nargs="+", help="trace directory")
    parser.add_argument("-o", "--output", default="trace.png", metavar="PNG", help="output file (trace.png)")
    parser.add_argument("--begin", metavar="NAME", help="begin event for the latency histogram")
    parser.add_argument("--end", metavar="NAME", help="end event for the latency histogram")
    parser.add_argument("--key", metavar="FIELD", help="pair begin/end by this field instead of by thread")
    parser.add_argument("--bins", type=int, default=100, help="time bins of the rate plot (100)")


def run(args, out) -> int:
    from ust.analysis.plot import plot_trace
    from ust.errors import UstError

    if (args.begin is None) != (args.end is None):
        raise UstError("--begin and --end go together")
    if args.bins <= 0:
        raise UstError("--bins must be positive")
    plot_trace(args.trace, args.output, args.begin, args.end, args.key, args.bins, progress=True)
    out.write(f"wrote {args.output}\n")
    return 0
