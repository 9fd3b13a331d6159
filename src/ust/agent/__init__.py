"""The in-app agent: registers this process with the session daemons.

``import ust`` calls ``start()``. It returns at once (a daemon thread does the
work), never raises, and does nothing when ``UST_AGENT=0`` or in ust's own
tools (the ``ust`` command and the daemons), which then do not even import the
agent's module (every `ust` command would pay for it). Without a session
daemon the agent retries quietly in the background and tracepoints stay off.
"""

import os

from ust.agent._tool import is_tool


def start() -> None:
    """Start the agent (idempotent, cheap, never raises, no-op when UST_AGENT=0 or in a tool)."""
    if os.environ.get("UST_AGENT", "1") == "0" or is_tool():
        return
    try:
        from ust.agent._agent import start as start_agent
    except Exception:  # never raise into the application
        return
    start_agent()


def status() -> dict:
    """What the agent is connected to (for tests and `ust list --apps`)."""
    from ust.agent._agent import status as agent_status

    return agent_status()


__all__ = ["is_tool", "start", "status"]
