"""ust-sessiond: the session daemon, one module per role.

It owns the tracing sessions (channels, event rules, contexts), the registry of
live applications, and the consumer daemons it spawns and supervises.

* ``model``     sessions, channels, traces (what the daemon knows)
* ``server``    ``SessionDaemon``: its state, socket, admission, connections,
                the dispatch of a client request to its command
* ``commands/`` the client commands, one module per group (how to add one:
                ``commands/__init__.py``)
* ``apps``      the registry of applications: connections, declarations, workers
* ``sync``      ``sync_app``: applying a session's rules to an application
* ``probes``    dynamic probes: what each application is asked to probe
* ``consumers`` the consumer daemon of each session owner, its counters
* ``limits``    the bounds on what peers may make the daemon hold
* ``main``      the entry point

Threads: the acceptor and one thread per connection (``server``); per
application, a reader thread and, while it has requests pending, a worker
(``apps``); per session owner, a consumer supervisor
(``ust.daemon.consumer_link``), which runs and restarts that user's
ust-consumerd with the user's credentials.

Ownership: a session belongs to the uid that created it; only that uid (and
root) sees and controls it, and a session of a non-root user records only
that user's applications (docs/security.md).
"""

from ust.daemon.sessiond.main import main
from ust.daemon.sessiond.model import DEFAULT_CHANNEL, ChannelConf, Session
from ust.daemon.sessiond.server import SessionDaemon

__all__ = ["DEFAULT_CHANNEL", "ChannelConf", "Session", "SessionDaemon", "main"]
