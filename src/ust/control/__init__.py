"""ust.control: manage tracing from a program (what the `ust` command uses).

    from ust.control import Client
    with Client() as c:                      # starts ust-sessiond if none runs
        c.create_session("s", output="/tmp/t")
        c.enable_events("s", "myapp:*", filter="size > 100")
        c.start("s")
        ...
        c.stop("s")                          # the trace on disk is complete
        c.destroy_session("s")
"""

from ust.control._client import (
    AppInfo,
    ChannelInfo,
    Client,
    RuleInfo,
    SessionInfo,
    get_current_session,
    sessiond_pid,
    set_current_session,
    start_sessiond,
    stop_sessiond,
)

__all__ = [
    "AppInfo",
    "ChannelInfo",
    "Client",
    "RuleInfo",
    "SessionInfo",
    "get_current_session",
    "sessiond_pid",
    "set_current_session",
    "start_sessiond",
    "stop_sessiond",
]
