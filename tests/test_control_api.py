"""ust.control used directly by a program (no CLI): the whole cycle, typed results."""

import os

import ust.control as control
from daemon_util import needs_bt, read_events, ust_env, values, wait_until  # noqa: F401


def test_exports():
    for name in control.__all__:
        assert getattr(control, name) is not None
    assert sorted(control.__all__) == sorted(set(control.__all__))


@needs_bt
def test_program_manages_tracing(ust_env):
    with control.Client(ust_env.home) as c:
        assert c.ping()["consumer_pid"]
        info = c.create_session("api", output=ust_env.out)
        assert info["name"] == "api" and not info["active"] and info["output"] == ust_env.out
        ch = c.enable_channel("api", "big", subbuf_size="64k", num_subbuf=8, buffers="uid")
        assert ch["subbuf_size"] == 65536 and ch["overwrite"] is False
        rules = c.enable_events("api", "app:alpha,app:gamma", channel="big", filter="v < 3", loglevel="DEBUG")
        assert [r["pattern"] for r in rules] == ["app:alpha", "app:gamma"]
        assert c.add_context("api", ["vtid"], channel="big") == ["big"]
        app = ust_env.app()
        ust_env.wait_registered(app.pid)
        assert c.start("api")["active"]
        wait_until(lambda: '"attached": 2' in app.send("agent"), what="rules applied")
        app.send("emit app:alpha 10")
        app.send("emit app:gamma 10 100")
        assert c.disable_events("api", "app:gamma", channel="big") == 1
        app.send("emit app:gamma 10 0")
        stopped = c.stop("api")
        assert not stopped["active"] and stopped["lost"] == 0
        assert values(read_events(ust_env.out)) == [0, 1, 2]
        apps = c.list_apps()
        assert [a["pid"] for a in apps] == [app.pid]
        assert {"name": "app:alpha", "loglevel": 6, "kind": "tracepoint"} in apps[0]["tracepoints"]
        gone = c.destroy_session("api")
        assert gone["traces"] == [os.path.join(ust_env.out, "ust", "uid", str(os.getuid()), "64-bit")]
        assert c.list_sessions() == []


def test_current_session_file(ust_env):
    assert control.get_current_session(ust_env.home) is None
    control.set_current_session("x", ust_env.home)
    assert control.get_current_session(ust_env.home) == "x"
    control.set_current_session(None, ust_env.home)
    assert control.get_current_session(ust_env.home) is None


def test_no_autostart_is_a_clear_error(ust_env):
    import pytest

    from ust.errors import DaemonError

    with pytest.raises(DaemonError, match="no session daemon at"):
        control.Client(ust_env.home, autostart=False).ping()
    assert control.sessiond_pid(ust_env.home) is None
    pid = control.start_sessiond(ust_env.home)
    assert control.sessiond_pid(ust_env.home) == pid
    assert control.stop_sessiond(ust_env.home)
    assert control.sessiond_pid(ust_env.home) is None
