"""`ust latency TRACE --begin NAME --end NAME [--key FIELD]`."""

from __future__ import annotations

import json



def add_arguments(parser) -> None:
    parser.add_argument("trace", nargs="+", help="trace directory")
    parser.add_argument("--begin", metavar="NAME", help="name of the begin event")
    parser.add_argument("--end", metavar="NAME", help="name of the end event")
    parser.add_argument("--function", metavar="MODULE:QUALNAME",
                        help="durations of this function's calls (probes, `ust run --functions`), instead of "
                             "--begin/--end")
    parser.add_argument("--syscall", metavar="NAME",
                        help="durations of this system call per thread (a kernel trace: syscall_entry_NAME -> "
                             "syscall_exit_NAME), instead of --begin/--end")
    parser.add_argument("--key", metavar="FIELD",
                        help="pair by this field's value (payload or context; $ctx.NAME) instead of by thread")
    parser.add_argument("--bins", type=int, default=20, help="histogram bins (default 20)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args, out) -> int:
    from ust.analysis.latency import format_latency, latency
    from ust.errors import UstError

    if args.bins <= 0:
        raise UstError("--bins must be positive")
    if args.syscall is not None:
        if args.begin or args.end or args.function:
            raise UstError("--syscall replaces --begin, --end and --function")
        args.begin, args.end = f"syscall_entry_{args.syscall}", f"syscall_exit_{args.syscall}"
    if args.function is not None:
        if args.begin or args.end or args.key:
            raise UstError("--function replaces --begin, --end and --key")
        from ust.analysis.functions import function_latency

        res = function_latency(args.trace, args.function, progress=True)
    elif not args.begin or not args.end:
        raise UstError("give --begin NAME and --end NAME, or --function MODULE:QUALNAME")
    else:
        res = latency(args.trace, args.begin, args.end, args.key, progress=True)
    if args.json:
        d = res.summary()
        d.update(begin=res.begin, end=res.end, key=res.key, unmatched_begin=res.unmatched_begin,
                 unmatched_end=res.unmatched_end)
        out.write(json.dumps(d) + "\n")
    else:
        out.write(format_latency(res, bins=args.bins))
    return 0 if res.count or not (res.unmatched_begin or res.unmatched_end) else 1
