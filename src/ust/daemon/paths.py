"""Where the daemons live: the runtime directory and its files."""

from __future__ import annotations

import os
import stat

from ust.errors import DaemonError

SYSTEM_RUNDIR = "/var/run/ust"
SOCKET_NAME = "sessiond.sock"
PID_NAME = "sessiond.pid"
LOG_NAME = "sessiond.log"


def user_rundir() -> str:
    """``$UST_HOME``, else ``$XDG_RUNTIME_DIR/ust``, else ``~/.ust``."""
    home = os.environ.get("UST_HOME")
    if home:
        return os.path.abspath(home)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "ust")
    return os.path.join(os.path.expanduser("~"), ".ust")


def socket_path(rundir: str | None = None) -> str:
    return os.path.join(rundir or user_rundir(), SOCKET_NAME)


def pid_path(rundir: str | None = None) -> str:
    return os.path.join(rundir or user_rundir(), PID_NAME)


def system_rundir() -> str:
    """The system daemon's runtime directory: ``$UST_SYSTEM_HOME``, else /var/run/ust."""
    return os.path.abspath(os.environ.get("UST_SYSTEM_HOME") or SYSTEM_RUNDIR)


def agent_rundirs() -> list[str]:
    """Every runtime directory an agent tries: the user's, then the system one.

    The system one is tried when it exists and either ``UST_SYSTEM_HOME`` names
    it or ``UST_HOME`` is unset (a private UST_HOME means "only this daemon").
    """
    dirs = [user_rundir()]
    system = system_rundir()
    explicit = bool(os.environ.get("UST_SYSTEM_HOME"))
    if (explicit or os.environ.get("UST_HOME") is None) and os.path.isdir(system) and system not in dirs:
        dirs.append(system)
    return dirs


def ensure_private_dir(path: str) -> None:
    """Create ``path`` mode 0700, or check an existing one is ours and private."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise DaemonError(f"runtime directory {path} is not a directory")
    if st.st_uid != os.getuid():
        raise DaemonError(f"runtime directory {path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def read_pid(rundir: str | None = None) -> int | None:
    """The pid in ``sessiond.pid`` if that process is alive, else None."""
    try:
        with open(pid_path(rundir)) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


SYSTEM_SESSIONS_DIR = "/etc/ust/sessions"


def sessions_dir() -> str:
    """Where `ust save` writes and `ust load` first looks: ``$UST_HOME/sessions``, else ``~/.ust/sessions``.

    Not under ``$XDG_RUNTIME_DIR`` (the runtime directory's default): saved sessions must outlive a login.
    """
    home = os.environ.get("UST_HOME")
    return os.path.join(os.path.abspath(home) if home else os.path.join(os.path.expanduser("~"), ".ust"),
                        "sessions")


def system_sessions_dir() -> str:
    """The sessions every user's `ust load` also reads (like lttng's /etc/lttng/sessions):
    ``$UST_SYSTEM_SESSIONS``, else /etc/ust/sessions."""
    return os.path.abspath(os.environ.get("UST_SYSTEM_SESSIONS") or SYSTEM_SESSIONS_DIR)
