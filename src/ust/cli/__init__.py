"""The `ust` command: one entry point, one module per subcommand.

Each subcommand lives in ``ust.cli.<module>`` and exposes:

    HELP: str                                  # one line, shown by `ust --help`
    def add_arguments(parser) -> None          # fill an argparse parser
    def run(args, out) -> int                  # do the work; return the exit code

Errors a user can cause are raised as ``ust.errors.UstError`` (or a subclass);
``main`` prints them as one line, ``ust: error: ...``, and exits non-zero.
A traceback is shown only with ``UST_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand name -> module (relative to ust.cli). Modules that are not written
# yet are skipped, so the table can list the whole command set.
COMMANDS: dict[str, str] = {
    "create": "session_cmds",
    "destroy": "session_cmds",
    "list": "session_cmds",
    "status": "session_cmds",
    "set-session": "session_cmds",
    "enable-channel": "session_cmds",
    "enable-event": "session_cmds",
    "disable-event": "session_cmds",
    "disable-channel": "session_cmds",
    "add-context": "session_cmds",
    "start": "session_cmds",
    "stop": "session_cmds",
    "snapshot": "session_cmds",
    "run": "run",
    "view": "view",
    "stats": "stats",
    "latency": "latency",
    "export": "export",
    "plot": "plot",
    "help": "help_cmd",
}


def _load(name: str):
    try:
        return importlib.import_module(f"ust.cli.{COMMANDS[name]}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("ust.cli."):
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ust", description="ust: a user-space tracer for Python programs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name)
        if mod is None:
            continue
        # A module serving several commands exposes COMMAND_TABLE {name: (help, add_arguments, run)}.
        table = getattr(mod, "COMMAND_TABLE", None)
        if table is not None:
            if name not in table:
                continue
            help_text, add_arguments, run = table[name]
        else:
            help_text, add_arguments, run = mod.HELP, mod.add_arguments, mod.run
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


# The options whose value is a filter expression, per subcommand. A filter may
# start with '-' ("-x > 1", "-1 == v"); argparse would take such a value for an
# option and fail, where lttng (popt) takes the next argument whatever it is.
FILTER_OPTIONS = {"run": ("-f", "--filter"), "enable-event": ("-f", "--filter"), "view": ("--filter",)}


def glue_filter_values(argv: list[str]) -> list[str]:
    """Rewrite `--filter VALUE` as `--filter=VALUE` (`-f VALUE` as `-fVALUE`) when VALUE starts with '-'."""
    command = next((a for a in argv if not a.startswith("-")), None)
    options = FILTER_OPTIONS.get(command, ())
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return out + argv[i:]
        if a in options and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] != "--":
            out.append(f"{a}={argv[i + 1]}" if a.startswith("--") else a + argv[i + 1])
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None, out=None) -> int:
    from ust.errors import UstError

    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(glue_filter_values(sys.argv[1:] if argv is None else list(argv)))
    if getattr(args, "_run", None) is None:
        parser.print_help(out)
        return 1
    try:
        return int(args._run(args, out) or 0)
    except UstError as exc:
        if os.environ.get("UST_DEBUG"):
            raise
        print(f"ust: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `ust view | head`: the reader went away; end quietly.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
