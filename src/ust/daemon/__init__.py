"""The daemons: ust-sessiond (sessions, applications), ust-consumerd (buffers to
files) and their control protocol. Nothing here is imported by an application
except ``protocol`` and ``paths`` (by the agent)."""
