"""The consumer side: drain, loss accounting, dead writers, torn files, crashed sessions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap

from conftest import babeltrace2_text, needs_babeltrace2

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["UST_AGENT"] = "0"
    env.update(extra)
    return env


# -- issue 8 item 11: a crashed embedded session leaves nothing behind ---------------------------


@needs_babeltrace2
def test_sigkilled_embedded_session_leaves_no_temporary_directory(tmp_path):
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    out = tmp_path / "trace"
    code = textwrap.dedent(f"""
        import sys, time, ust
        s = ust.Session({str(out)!r}, events=["crash:*"]).start()
        tp = ust.tracepoint("crash:ev", {{"v": ust.int32}})
        for i in range(100):
            tp(i)
        print("ready", flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], env=child_env(TMPDIR=str(private_tmp)),
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert os.listdir(private_tmp) == [], "the session left files in the temporary directory"
    # What it wrote is a trace babeltrace2 opens, and a new session on the same output starts cleanly.
    babeltrace2_text(out)
    code2 = textwrap.dedent(f"""
        import ust
        with ust.Session({str(out)!r}, events=["crash:*"]):
            tp = ust.tracepoint("crash:ev", {{"v": ust.int32}})
            for i in range(7):
                tp(i)
    """)
    r = subprocess.run([sys.executable, "-c", code2], env=child_env(TMPDIR=str(private_tmp)),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text, _ = babeltrace2_text(out)
    assert text.count("crash:ev") == 7
    assert os.listdir(private_tmp) == []
