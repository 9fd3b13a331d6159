"""`ust help [COMMAND]`: the help of one command, or the list of commands; `ust version`."""

from __future__ import annotations

import argparse

from ust.errors import UstError


def add_help(p: argparse.ArgumentParser) -> None:
    p.add_argument("topic", metavar="COMMAND", nargs="?", help="the command to explain")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers there
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def run_help(args: argparse.Namespace, out) -> int:
    from ust.cli import COMMANDS, build_parser

    if not args.topic:
        build_parser(only="").print_help(out)
        return 0
    if args.topic not in COMMANDS:
        raise UstError(f"no command {args.topic!r}; the commands are: {', '.join(sorted(COMMANDS))}")
    _subparsers(build_parser(only=args.topic))[args.topic].print_help(out)
    return 0


def add_version(p: argparse.ArgumentParser) -> None:
    pass


def run_version(args: argparse.Namespace, out) -> int:
    """The shape of `lttng version`: the version line, then the licence notice."""
    from ust.cli import version_line

    print(version_line(), file=out)
    print(file=out)
    print("This is free software (MIT licence); see the source for copying conditions. There is NO\n"
          "warranty; not even for MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.", file=out)
    return 0


# name -> (add_arguments, run); the help lines are in ust.cli.COMMANDS
COMMAND_TABLE = {
    "help": (add_help, run_help),
    "version": (add_version, run_version),
}
