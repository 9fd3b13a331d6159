"""The in-app agent: registers this process with the session daemons.

``import ust`` calls ``start()``. It returns at once (a daemon thread does the
work), never raises, and does nothing when ``UST_AGENT=0``. Without a session
daemon the agent retries quietly in the background and tracepoints stay off.
"""

from ust.agent._agent import start, status

__all__ = ["start", "status"]
