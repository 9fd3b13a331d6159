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

BY_NAME = {
    name: value
    for name, value in globals().items()
    if name.isupper() and isinstance(value, int)
}
# Accept LTTng's spellings too (TRACE_ prefix, ERR/ERROR, WARN).
BY_NAME.update({"TRACE_" + k: v for k, v in list(BY_NAME.items())})
BY_NAME.update({"ERROR": ERR, "WARN": WARNING, "CRITICAL": CRIT})


def parse(value: "int | str") -> int:
    """A log level from its number or name (any case, with or without TRACE_)."""
    if isinstance(value, bool):
        raise ValueError(f"not a log level: {value!r}")
    if isinstance(value, int):
        if 0 <= value <= DEBUG:
            return value
        raise ValueError(f"log level must be 0..{DEBUG}, got {value}")
    key = str(value).strip().upper()
    if key.isdigit():
        return parse(int(key))
    if key in BY_NAME:
        return BY_NAME[key]
    raise ValueError(f"unknown log level {value!r} (expected one of EMERG ... DEBUG)")
