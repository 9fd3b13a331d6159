"""The `ust` command: one entry point, one module per subcommand.

Each subcommand lives in ``ust.cli.<module>`` and exposes:

    def add_arguments(parser) -> None          # fill an argparse parser
    def run(args, out) -> int                  # do the work; return the exit code

(a module serving several commands exposes ``COMMAND_TABLE {name: (add_arguments, run)}``
instead). Its one-line help is in ``COMMANDS`` below, so that `ust --help` lists
every command without importing any: a command imports only its own module,
which imports what it needs when it runs (`ust list` must not pay for the
reader or the analyses; a `ust` command costs ~15 ms over `python -c pass`).

Errors a user can cause are raised as ``ust.errors.UstError`` (or a subclass);
``main`` prints them as one line, ``ust: error: ...``, and exits non-zero.
A traceback is shown only with ``UST_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand name -> (module relative to ust.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "create": ("session_cmds", "create a tracing session"),
    "destroy": ("session_cmds", "destroy a tracing session (its trace stays on disk)"),
    "list": ("session_cmds", "list sessions, a session's channels and rules, or running applications"),
    "status": ("session_cmds", "show the current session"),
    "set-session": ("session_cmds", "choose the current session"),
    "enable-channel": ("session_cmds", "create a channel (buffer sizes, mode, timers, trace files)"),
    "enable-event": ("session_cmds", "enable events by name pattern, with filters and log levels"),
    "disable-event": ("session_cmds", "disable event rules"),
    "disable-channel": ("session_cmds", "disable channels: their events stop being recorded"),
    "add-context": ("session_cmds", "add context fields (vpid, vtid, procname...) to events"),
    "start": ("session_cmds", "start tracing"),
    "stop": ("session_cmds", "stop tracing; the trace is complete when it returns"),
    "snapshot": ("session_cmds", "snapshot record: write a snapshot session's buffers; add-output, list-output, "
                                 "del-output: where"),
    "save": ("lifecycle_cmds", "save sessions to LTTng session files (NAME.lttng)"),
    "load": ("lifecycle_cmds", "load sessions from LTTng session files (written by `ust save` or `lttng save`)"),
    "track": ("lifecycle_cmds", "record only these processes: add to a session's --vpid/--vuid/--vgid "
                                "inclusion sets"),
    "untrack": ("lifecycle_cmds", "remove processes from a session's --vpid/--vuid/--vgid inclusion sets"),
    "clear": ("lifecycle_cmds", "empty a session's buffers and current trace files (snapshot sessions: buffers)"),
    "regenerate": ("lifecycle_cmds", "re-sample the clock offset (metadata), re-emit function names (statedump)"),
    "rotate": ("lifecycle_cmds", "archive the current trace chunk (a complete trace) and go on in a new one"),
    "enable-rotation": ("lifecycle_cmds", "rotate a session every PERIOD (--timer) or every SIZE bytes (--size)"),
    "disable-rotation": ("lifecycle_cmds", "remove a session's rotation schedule"),
    "add-trigger": ("trigger_cmds", "when an event matches a rule: notify, or start/stop/rotate/snapshot a session"),
    "list-triggers": ("trigger_cmds", "list the triggers, their matches and actions"),
    "remove-trigger": ("trigger_cmds", "remove a trigger"),
    "wait-trigger": ("trigger_cmds", "wait for notifications of triggers (notify actions) and print them"),
    "crash": ("crash", "recover the events of a crashed session's buffers (created with --shm-path)"),
    "run": ("run", "trace a program (and its children) from its first line to its exit"),
    "view": ("view", "print the events of traces, or of the current session's trace "
                     "(babeltrace2's text format, or JSON lines)"),
    "stats": ("stats", "statistics of a trace: events per name, process and thread, rates, time span, "
                       "discarded events"),
    "latency": ("latency", "latency between begin/end event pairs: count, min, mean, p50, p90, p99, max, "
                           "histogram"),
    "export": ("export", "export a trace: Chrome/Perfetto trace JSON, or Parquet (one table per event name)"),
    "plot": ("plot", "plot a trace to PNG: event rate per name over time, latency histogram (needs matplotlib)"),
    "version": ("help_cmd", "show the version of ust"),
    "help": ("help_cmd", "show the help of a command"),
}


def _handlers(name: str):
    """(add_arguments, run) of one command, importing its module."""
    mod = importlib.import_module(f"ust.cli.{COMMANDS[name][0]}")
    table = getattr(mod, "COMMAND_TABLE", None)
    if table is not None:
        return table[name]
    return mod.add_arguments, mod.run


def version_line() -> str:
    from ust import __version__

    return f"ust (ust Trace Control) {__version__}"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command (None), of one command (its name: the others are not even
    listed, each costs an ArgumentParser), or of none ("": every command listed, none loaded)."""
    parser = argparse.ArgumentParser(prog="ust", description="ust: a user-space tracer for Python programs")
    parser.add_argument("-V", "--version", action="version", version=version_line(),
                        help="show the version of ust and exit")
    parser.add_argument("-m", "--mi", metavar="TYPE", choices=("xml", "json"),
                        help="machine interface: print LTTng's MI document (xml) or the same as JSON (json); "
                             "every control command has one (docs/mi.md), not view, run, help and the "
                             "analyses")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        if only and name != only:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            add_arguments, run = _handlers(name)
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


# The options whose value is a filter expression, per subcommand. A filter may
# start with '-' ("-x > 1", "-1 == v"); argparse would take such a value for an
# option and fail, where lttng (popt) takes the next argument whatever it is.
FILTER_OPTIONS = {"run": ("-f", "--filter"), "enable-event": ("-f", "--filter"), "view": ("--filter",),
                  "add-trigger": ("-f", "--filter")}


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


def _command_of(argv: list[str]) -> str:
    """The subcommand when argv starts with one (`ust list ...`, `ust --mi xml list ...`); else ""
    (`ust -h`, `ust bogus`)."""
    argv = _without_mi(argv)[1]
    return argv[0] if argv and argv[0] in COMMANDS else ""


def _without_mi(argv: list[str]) -> tuple[str | None, list[str]]:
    """The leading global `--mi TYPE` (`-m TYPE`, `--mi=TYPE`) and the arguments after it."""
    if argv and argv[0] in ("--mi", "-m") and len(argv) > 1:
        return argv[1], argv[2:]
    if argv and argv[0].startswith("--mi="):
        return argv[0][5:], argv[1:]
    return None, argv


def main(argv: list[str] | None = None, out=None) -> int:
    from ust.errors import UstError

    out = out or sys.stdout
    argv = glue_filter_values(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(only=_command_of(argv))
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(out)
        return 1
    try:
        if args.mi:
            from ust.cli import mi

            return mi.run(args.mi, args.command, args, out)
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
