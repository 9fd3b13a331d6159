"""The client commands of the session daemon, one module per group.

Adding a command: write it in the module of its group (or a new module in
this package, which is found without being listed anywhere, so helpers adding
groups in parallel touch different files)::

    group = CommandGroup()

    @group.command("rotate", {"session": is_name, "size?": uint(1 << 50)})
    def rotate(daemon, s, size=None) -> dict:
        ...                      # under s.lock; raise SessionError for a one-line error
        return {"path": ...}     # merged into {"ok": true, ...}

A command whose schema has ``session`` gets that session (visible to the
caller, locked for the command); any other gets the caller's uid. The schema
is checked first (ust.daemon.protocol.check): unknown fields are errors.
"""

from __future__ import annotations

import importlib
import pkgutil

from ust.daemon.sessiond.commands._table import Command, CommandGroup


def _collect() -> dict[str, Command]:
    table: dict[str, Command] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, command in module.group.commands.items():
            if name in table:
                raise RuntimeError(f"command {name!r} defined in two modules")
            table[name] = command
    return table


COMMANDS: dict[str, Command] = _collect()

__all__ = ["COMMANDS", "Command", "CommandGroup"]
