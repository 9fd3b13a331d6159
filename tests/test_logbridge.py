"""The logging bridge: log records become lttng_python:event events."""

import logging
import threading

import ust
from conftest import bt2_dump, events_of, needs_bt2


@needs_bt2
def test_log_records_are_recorded_with_lttng_python_fields(tmp_path):
    log = logging.getLogger("bridge.test")
    log.setLevel(logging.DEBUG)
    handler = ust.logging_handler()
    log.addHandler(handler)
    try:
        log.info("before the session")  # not recorded: nothing enabled
        with ust.Session(tmp_path / "t", events=["lttng_python:*"]):
            log.warning("hello %s", "wörld")
            log.debug("debug %d", 42)
            threading.Thread(target=log.error, args=("from a thread",), name="side").start()
        log.info("after the session")
    finally:
        log.removeHandler(handler)
    evs = [e["payload"] for e in events_of(bt2_dump(tmp_path / "t"), "lttng_python:event")]
    assert [e["msg"] for e in evs] == ["hello wörld", "debug 42", "from a thread"]
    assert [e["int_loglevel"] for e in evs] == [30, 10, 40]
    assert {e["logger_name"] for e in evs} == {"bridge.test"}
    assert evs[2]["threadName"] == "side"
    assert evs[0]["funcName"] == "test_log_records_are_recorded_with_lttng_python_fields"


@needs_bt2
def test_ust_logging_env_turns_the_bridge_on_without_code_change(tmp_path):
    code = (
        "import logging, sys, ust\n"
        "with ust.Session(sys.argv[1], events=['lttng_python:*']):\n"
        "    logging.getLogger('app').warning('no code change')\n"
        "logging.basicConfig(format='configured %(message)s')\n"
        "logging.getLogger('app').warning('after basicConfig')\n"
    )
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t")], capture_output=True, text=True,
                       env={**os.environ, "UST_LOGGING": "1"})
    assert r.returncode == 0, r.stderr
    evs = events_of(bt2_dump(tmp_path / "t"), "lttng_python:event")
    assert [e["payload"]["msg"] for e in evs] == ["no code change"]
    # the program's own logging behaves as without ust: last-resort output, then basicConfig
    assert r.stderr.splitlines() == ["no code change", "configured after basicConfig"]


def _python_event_fields(metadata_path) -> list[str]:
    """The lttng_python:event field declarations of a metadata file (packetized or text), normalized."""
    import re

    text = open(metadata_path, "rb").read().decode("latin-1")
    start = text.index('name = "lttng_python:event";')
    body = text[text.index("fields := struct {", start) + len("fields := struct {"):]
    body = body[:body.index("};")]
    body = body.replace("string { encoding = UTF8; }", "string")  # UTF-8 is a string's default encoding
    loglevel = re.search(r"loglevel = (\d+);", text[start:]).group(1)
    return [f"loglevel {loglevel}"] + [" ".join(line.split()) for line in body.strip().splitlines()]


def test_field_types_and_loglevel_are_those_of_lttngs_python_agent(tmp_path):
    import os

    lttng = os.path.join(os.path.dirname(__file__), "fixtures", "lttng-2.13", "ust-python-agent", "ust", "uid",
                         "0", "64-bit", "metadata")
    log = logging.getLogger("bridge.types")
    handler = ust.logging_handler()
    log.addHandler(handler)
    try:
        with ust.Session(tmp_path / "t", events=["lttng_python:*"]) as s:
            log.warning("one")
    finally:
        log.removeHandler(handler)
    assert _python_event_fields(s.trace_dir / "metadata") == _python_event_fields(lttng)


@needs_bt2
def test_traceback_and_stack_follow_asctime_as_lttng_records_them(tmp_path):
    """LTTng's handler formats '%(asctime)s' with logging.Formatter, which appends the traceback."""
    log = logging.getLogger("bridge.exc")
    handler = ust.logging_handler()
    log.addHandler(handler)
    try:
        with ust.Session(tmp_path / "t", events=["lttng_python:*"]):
            try:
                {}["missing"]
            except KeyError:
                log.exception("lookup failed for %s", "missing")
            log.warning("where am I", stack_info=True)
    finally:
        log.removeHandler(handler)
    evs = [e["payload"] for e in events_of(bt2_dump(tmp_path / "t"), "lttng_python:event")]
    assert [e["msg"] for e in evs] == ["lookup failed for missing", "where am I"]
    first, tb = evs[0]["asctime"].split("\n", 1)
    assert len(first) == len("2026-01-01 00:00:00,000")
    assert tb.startswith("Traceback (most recent call last):") and tb.endswith("KeyError: 'missing'")
    assert "Stack (most recent call last):" in evs[1]["asctime"]
    assert evs[0]["thread"] == threading.get_ident() & 0xFFFFFFFF


@needs_bt2
def test_install_logging_records_every_logger_with_the_formatted_message(tmp_path):
    """The hook records after the application's handlers (reusing their formatted message), never raises."""
    import io

    code_log = logging.getLogger("bridge.hooked")
    code_log.setLevel(logging.DEBUG)
    stream = io.StringIO()
    h = logging.StreamHandler(stream)
    h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    code_log.addHandler(h)
    code_log.propagate = False
    from ust.instrument import logbridge

    plain = logging.Logger.callHandlers
    ust.install_logging()
    try:
        with ust.Session(tmp_path / "t", events=["lttng_python:*"]):
            code_log.info("n=%d", 1)
            code_log.debug("plain")
            rec = code_log.makeRecord("bridge.hooked", logging.INFO, "f.py", None, "odd %s", ("record",), None)
            rec.funcName = None  # values logging never sets itself: still recorded, coerced
            code_log.handle(rec)
    finally:
        code_log.removeHandler(h)
        logging.Logger.callHandlers = plain  # the hook is process-wide: other tests run without it
        logbridge._hooked = None
    assert stream.getvalue() == "INFO n=1\nDEBUG plain\nINFO odd record\n"
    evs = [e["payload"] for e in events_of(bt2_dump(tmp_path / "t"), "lttng_python:event")]
    assert [e["msg"] for e in evs] == ["n=1", "plain", "odd record"]
    assert evs[2]["funcName"] == "" and evs[2]["lineno"] == 0
