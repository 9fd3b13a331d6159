"""LTTng's python domain: log records selected by logger and Python level, through the daemons."""

import os
import subprocess
import sys
import textwrap

import pytest

from daemon_util import needs_bt, read_events, ust_env  # noqa: F401 - ust_env is a fixture
from ust.daemon.rules import EventRule, combined_filter, parse_python_loglevel
from ust.errors import SessionError

# One record per (logger, level); the message says which.
APP = textwrap.dedent("""
    import logging
    logging.getLogger().setLevel(logging.DEBUG)
    for name in ("app", "app.db", "app.web", "other"):
        log = logging.getLogger(name)
        for level in (10, 20, 25, 30, 40, 50):
            log.log(level, "%s %d", name, level)
""")


def _records(out: str) -> list[str]:
    msgs = []
    for name, rest in read_events(out):
        assert name == "lttng_python:event"
        msgs.append(rest.split('msg = "', 1)[1].split('"', 1)[0])
    return sorted(msgs, key=lambda m: (m.split()[0], int(m.split()[1])))


def _run_app(ust_env):
    r = subprocess.run([sys.executable, "-c", "import ust\n" + APP],
                       env=ust_env.env(UST_AGENT_SYNC="1", UST_LOGGING="1"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


@needs_bt
def test_ust_run_logging_with_a_python_loglevel(ust_env):
    """`ust run -l --loglevel WARNING` recorded nothing: the event's own log level was compared."""
    out = os.path.join(ust_env.home, "run")
    r = subprocess.run([sys.executable, "-m", "ust.cli", "run", "-l", "--loglevel", "WARNING", "-o", out, "--",
                        sys.executable, "-c", APP], env=ust_env.env(UST_AGENT="0"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert _records(out) == [f"{n} {lv}" for n in ("app", "app.db", "app.web", "other") for lv in (30, 40, 50)]


@needs_bt
def test_enable_event_python_by_logger_and_level(ust_env):
    ust_env.ust("create", "py", "-o", ust_env.out)
    _, text, _ = ust_env.ust("enable-event", "--python", "app.db,app.w*", "--loglevel", "ERROR")
    assert "Python logger app.db enabled in channel channel0 (level >= ERROR)" in text
    ust_env.ust("enable-event", "-p", "other", "--loglevel-only", "25")
    _, listing, _ = ust_env.ust("list", "py")
    assert "app.w* [enabled] (python logger; level >= ERROR)" in listing
    assert "other [enabled] (python logger; level == 25)" in listing
    ust_env.ust("start")
    _run_app(ust_env)
    ust_env.ust("stop")
    assert _records(ust_env.out) == ["app.db 40", "app.db 50", "app.web 40", "app.web 50", "other 25"]


@needs_bt
def test_enable_event_python_all_loggers_with_exclusion_and_filter(ust_env):
    ust_env.ust("create", "py", "-o", ust_env.out)
    ust_env.ust("enable-event", "--python", "-a", "-x", "app.*", "--filter", 'msg != "other 20"',
                "--loglevel", "info")
    ust_env.ust("start")
    _run_app(ust_env)
    ust_env.ust("stop")
    assert _records(ust_env.out) == ["app 20", "app 25", "app 30", "app 40", "app 50",
                                     "other 25", "other 30", "other 40", "other 50"]


def test_python_levels_names_and_numbers():
    assert [parse_python_loglevel(x) for x in ("CRITICAL", "error", "PYTHON_WARNING", "warn", "Info", "DEBUG",
                                               "NOTSET", "25", 35)] == [50, 40, 30, 30, 20, 10, 0, 25, 35]
    for bad in ("TRACE_DEBUG_LINE", "loud", -1):
        with pytest.raises(SessionError):
            parse_python_loglevel(bad)


def test_python_rules_become_lttng_python_event_filters():
    db = EventRule("app.db", "c", loglevel_type="range", loglevel=40, domain="python")
    web = EventRule("we\"b*", "c", loglevel_type="single", loglevel=20, domain="python", filter="lineno > 3")
    assert db.matches("lttng_python:event", 13) and not db.matches("app.db", 13)
    assert combined_filter([db, web]) == ('(logger_name == "app.db" && int_loglevel >= 40) || '
                                          '(logger_name == "we\\"b*" && int_loglevel == 20 && (lineno > 3))')
    everything = EventRule("*", "c", domain="python")
    assert combined_filter([db, everything]) is None
