"""`ust export TRACE --format chrome|parquet -o OUT`."""

from __future__ import annotations

import os


def add_arguments(parser) -> None:
    parser.add_argument("trace", nargs="+", help="trace directory")
    parser.add_argument("--format", choices=("chrome", "parquet"), default="chrome")
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="output file (chrome; default trace.json) or directory (parquet; default parquet/)")
    parser.add_argument("--begin", metavar="NAME", help="chrome: begin event of slices")
    parser.add_argument("--end", metavar="NAME", help="chrome: end event of slices")


def run(args, out) -> int:
    from ust.analysis.export import export_chrome, export_parquet
    from ust.errors import UstError

    if (args.begin is None) != (args.end is None):
        raise UstError("--begin and --end go together")
    if args.format == "chrome":
        dest = args.output or "trace.json"
        n = export_chrome(args.trace, dest, args.begin, args.end, progress=True)
        out.write(f"wrote {n} trace events to {dest}\n")
    else:
        dest = args.output or "parquet"
        files = export_parquet(args.trace, dest, progress=True)
        names = {os.path.basename(os.path.dirname(f)) for f in files}
        out.write(f"wrote {len(names)} event names ({len(files)} files) to {dest}/ "
                  f"(read it with one glob: {os.path.join(dest, '*', '*.parquet')})\n")
    return 0
