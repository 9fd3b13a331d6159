"""Log levels, LTTng's (syslog-like, 0 = most severe), and the Python mapping."""

EMERG = 0
ALERT = 1
CRIT = 2
ERR = 3
WARNING = 4
NOTICE = 5
INFO = 6
DEBUG_SYSTEM = 7
DEBUG_PROGRAM = 8
DEBUG_PROCESS = 9
DEBUG_MODULE = 10
DEBUG_UNIT = 11
DEBUG_FUNCTION = 12
DEBUG_LINE = 13
DEBUG = 14

# LTTng's names, most severe first (what `ust list` and `ust view` print, with TRACE_).
LEVELS = {
    name: value
    for name, value in globals().items()
    if name.isupper() and isinstance(value, int)
}
# Python logging's spellings, at the LTTng level they are recorded at.
ALIASES = {"CRITICAL": CRIT, "FATAL": CRIT, "ERROR": ERR, "WARN": WARNING}
NAMES = {value: "TRACE_" + name for name, value in LEVELS.items()}


def lookup(name: str) -> "int | None":
    """The level a name spells (any case, with or without TRACE_), or None."""
    key = name.strip().upper()
    if key.startswith("TRACE_"):
        key = key[6:]
    return LEVELS.get(key, ALIASES.get(key))


def name_of(level: int) -> str:
    """LTTng's name of a level (TRACE_WARNING), or the number itself when it has none."""
    return NAMES.get(level, str(level))


def parse(value: "int | str") -> int:
    """A log level from its number or name (any case, with or without TRACE_)."""
    if isinstance(value, bool):
        raise ValueError(f"not a log level: {value!r}")
    if isinstance(value, int):
        if 0 <= value <= DEBUG:
            return value
        raise ValueError(f"log level must be 0..{DEBUG}, got {value}")
    key = str(value).strip()
    if key.isdigit():
        return parse(int(key))
    level = lookup(key)
    if level is not None:
        return level
    raise ValueError(f"unknown log level {value!r} (expected one of EMERG ... DEBUG)")
