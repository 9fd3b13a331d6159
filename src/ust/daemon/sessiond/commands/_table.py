"""What a client command is: its name, the schema of its arguments, the function that runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    name: str
    schema: dict  # checked by ust.daemon.protocol.check before ``run`` is called
    run: Callable[..., dict | None]

    @property
    def on_session(self) -> bool:
        """A command naming a session runs as ``run(daemon, session, **args)``, with
        that session's lock held; any other as ``run(daemon, caller_uid, **args)``."""
        return "session" in self.schema


class CommandGroup:
    """The commands of one module; ``@group.command(name, schema)`` adds one."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}

    def command(self, name: str, schema: dict) -> Callable:
        def add(fn: Callable) -> Callable:
            if name in self.commands:
                raise ValueError(f"command {name!r} defined twice")
            self.commands[name] = Command(name, schema, fn)
            return fn

        return add
