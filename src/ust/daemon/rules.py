"""Event rules: which tracepoints a channel records (patterns, exclusions, log levels).

Pure functions shared by the session daemon and the tests.

Log levels are LTTng-UST's (``TRACE_EMERG`` = 0 … ``TRACE_DEBUG`` = 14, lower
is more severe). ``--loglevel LVL`` keeps events *at least as severe* as LVL;
``--loglevel-only LVL`` keeps events of exactly LVL. Python ``logging`` level
names (CRITICAL, ERROR, WARNING, INFO, DEBUG) are accepted and mapped like
LTTng's python domain maps them.

The python domain (``enable-event --python``), as LTTng's: a rule names
loggers (``*`` wildcards) and Python levels (CRITICAL 50 … DEBUG 10, higher is
more severe, any number accepted). Every log record is the one tracepoint
``lttng_python:event``; like lttng-sessiond, a python rule enables it with a
filter on its fields: ``logger_name == "PATTERN"`` and ``int_loglevel >= N``
(``== N`` with --loglevel-only), and the rule's own filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ust.errors import SessionError
from ust.instrument import loglevels

MAX_PATTERN = 512

PYTHON_EVENT = "lttng_python:event"  # the tracepoint every log record is (ust.instrument.logbridge)
# The python domain's levels are logging's own numbers (LTTng's LTTNG_LOGLEVEL_PYTHON_*).
PYTHON_DOMAIN_LEVELS = {"CRITICAL": 50, "FATAL": 50, "ERROR": 40, "WARNING": 30, "WARN": 30, "INFO": 20,
                        "DEBUG": 10, "NOTSET": 0}
MAX_PYTHON_LEVEL = (1 << 31) - 1
DOMAINS = ("ust", "python")


def parse_loglevel(text: str | int) -> int:
    """``TRACE_WARNING``, ``WARNING``, ``warning``, ``4``, ``ERROR`` -> an LTTng level."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        name = str(text).strip().upper()
        number = name[6:] if name.startswith("TRACE_") else name
        value = int(number) if number.isdigit() else loglevels.lookup(name)
        if value is None:
            raise SessionError(
                f"unknown log level {text!r}: expected one of {', '.join(loglevels.LEVELS)} (or a number 0-14)"
            )
    if not 0 <= value <= 14:
        raise SessionError(f"log level {value} is out of range 0-14")
    return value


def parse_python_loglevel(text: str | int) -> int:
    """A python-domain level: ``WARNING``, ``warning``, ``PYTHON_WARNING``, ``30``, ``25`` -> logging's number."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        name = str(text).strip().upper()
        if name.startswith("PYTHON_"):
            name = name[7:]
        if name.isdigit():
            value = int(name)
        elif name in PYTHON_DOMAIN_LEVELS:
            value = PYTHON_DOMAIN_LEVELS[name]
        else:
            raise SessionError(f"unknown python log level {text!r}: expected one of "
                               f"{', '.join(PYTHON_DOMAIN_LEVELS)} or a logging level number")
    if not 0 <= value <= MAX_PYTHON_LEVEL:
        raise SessionError(f"python log level {value} is out of range 0-{MAX_PYTHON_LEVEL}")
    return value


def python_loglevel_name(value: int) -> str:
    for name, v in PYTHON_DOMAIN_LEVELS.items():
        if v == value and name not in ("FATAL", "WARN"):
            return name
    return str(value)


def check_pattern(pattern: str) -> str:
    """An event name pattern: ``*`` is the only wildcard, anywhere."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise SessionError(f"invalid event pattern {pattern!r}: expected 1 to {MAX_PATTERN} characters")
    if any(c.isspace() for c in pattern) or "," in pattern:
        raise SessionError(f"invalid event pattern {pattern!r}: no spaces or commas")
    return pattern


def glob_to_regex(pattern: str) -> re.Pattern:
    """LTTng event-name globs: '*' matches any run of characters, '\\*' a literal star."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def glob_match(pattern: str, name: str) -> bool:
    if "*" not in pattern:
        return pattern == name
    return glob_to_regex(pattern).match(name) is not None


@dataclass
class EventRule:
    """One ``enable-event`` pattern in one channel."""

    pattern: str
    channel: str
    exclusions: tuple[str, ...] = ()
    filter: str | None = None
    loglevel_type: str = "all"  # "all", "range" (at least as severe), "single" (exactly)
    loglevel: int = -1
    enabled: bool = True
    domain: str = "ust"  # or "python": the pattern names loggers, the levels are Python's
    _rx: object = field(default=None, repr=False, compare=False)

    def matches(self, name: str, loglevel: int) -> bool:
        if not self.enabled:
            return False
        if self.domain == "python":
            return name == PYTHON_EVENT  # loggers and levels are in effective_filter()
        if not glob_match(self.pattern, name):
            return False
        if any(glob_match(x, name) for x in self.exclusions):
            return False
        if self.loglevel_type == "range":
            return loglevel <= self.loglevel
        if self.loglevel_type == "single":
            return loglevel == self.loglevel
        return True

    def effective_filter(self) -> str | None:
        """The filter this rule puts on the events it matches (None: every event).

        A ust rule's is its own; a python rule's also selects its loggers and
        levels from the record's fields, as lttng-sessiond does for agents.
        """
        if self.domain != "python":
            return self.filter
        parts = []
        if self.pattern != "*":
            parts.append(f'logger_name == "{_filter_literal(self.pattern)}"')
        parts.extend(f'logger_name != "{_filter_literal(x)}"' for x in self.exclusions)
        if self.loglevel_type == "range":
            parts.append(f"int_loglevel >= {self.loglevel}")
        elif self.loglevel_type == "single":
            parts.append(f"int_loglevel == {self.loglevel}")
        if self.filter:
            parts.append(f"({self.filter})")
        return " && ".join(parts) or None

    def same_rule(self, other: "EventRule") -> bool:
        return (self.domain, self.pattern, self.channel, self.exclusions, self.filter, self.loglevel_type,
                self.loglevel) == (other.domain, other.pattern, other.channel, other.exclusions, other.filter,
                                   other.loglevel_type, other.loglevel)

    def to_json(self) -> dict:
        return {
            "pattern": self.pattern,
            "channel": self.channel,
            "exclusions": list(self.exclusions),
            "filter": self.filter,
            "loglevel_type": self.loglevel_type,
            "loglevel": self.loglevel,
            "enabled": self.enabled,
            "domain": self.domain,
        }


def _filter_literal(pattern: str) -> str:
    """A logger-name pattern inside a filter's string literal: ``*`` stays a wildcard, ``\\*`` a star."""
    text = pattern.replace('"', '\\"')
    trailing = len(text) - len(text.rstrip("\\"))
    return text + "\\" if trailing % 2 else text  # a lone trailing backslash would escape the quote


def combined_filter(rules: list[EventRule]) -> str | None:
    """The filter of a tracepoint enabled by several rules: any rule records it."""
    filters = [r.effective_filter() for r in rules]
    if any(f is None for f in filters):
        return None
    filters = sorted(set(filters))
    if len(filters) == 1:
        return filters[0]
    return " || ".join(f"({f})" for f in filters)


def parse_size(text: str | int) -> int:
    """``4096``, ``4k``, ``4K``, ``4KiB``, ``2M``, ``1G`` -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = str(text).strip()
    m = re.fullmatch(r"(\d+)\s*([kKmMgG]?)(i?[bB])?", s)
    if not m:
        raise SessionError(f"invalid size {text!r}: expected a number with an optional k, M or G suffix")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(m.group(1)) * mult
