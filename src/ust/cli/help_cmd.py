"""`ust help [COMMAND]`: the help of one command, or the list of commands."""

from __future__ import annotations

import argparse

from ust.errors import UstError

HELP = "show the help of a command"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topic", metavar="COMMAND", nargs="?", help="the command to explain")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers there
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def run(args: argparse.Namespace, out) -> int:
    from ust.cli import build_parser

    parser = build_parser()
    if not args.topic:
        parser.print_help(out)
        return 0
    subs = _subparsers(parser)
    if args.topic not in subs:
        raise UstError(f"no command {args.topic!r}; the commands are: {', '.join(sorted(subs))}")
    subs[args.topic].print_help(out)
    return 0
