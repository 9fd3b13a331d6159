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
