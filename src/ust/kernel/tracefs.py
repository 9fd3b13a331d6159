"""tracefs: finding it, and one ftrace instance per session.

A session never touches the top-level ftrace buffer (the user's own
``trace-cmd``/``perf`` use stays undisturbed): it makes its own instance,
``instances/ust-<session>``, with its own clock (``mono``: CLOCK_MONOTONIC,
the clock of ust's user-space traces), buffer size, overwrite mode and
enabled events. Instances of concurrent sessions do not see each other's
events.

An instance outlives the process that made it (it is a kernel object): the
owner holds an exclusive ``flock`` on a claim file named after the instance
(``<state dir>/<instance>.lock``) for as long as it lives, so a daemon
starting after a crash knows which ``ust-*`` instances nobody owns any more
(it can take their lock) and removes them (``remove_stale_instances``).
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import re

from ust.errors import UstError

from .formats import PROBE_GROUP_PREFIX

INSTANCE_PREFIX = "ust-"
DEFAULT_STATE_DIR = "/run/ust/kernel"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,200}$")


class KernelTracingError(UstError):
    """The kernel domain cannot do what was asked (one line, says why)."""


def _mounted_tracefs() -> str | None:
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "tracefs" and os.path.isdir(os.path.join(parts[1], "instances")):
            return parts[1].replace("\\040", " ")
    return None


def find_tracefs(mount: bool = True) -> str:
    """The directory where tracefs is mounted; mounts it on /sys/kernel/tracing
    (root only) when it is nowhere. Raises KernelTracingError (one line)."""
    found = _mounted_tracefs()
    if found:
        return found
    if not mount:
        raise KernelTracingError("tracefs is not mounted")
    target = "/sys/kernel/tracing"
    if not os.path.isdir(target):
        raise KernelTracingError(f"tracefs is not mounted and {target} does not exist (no ftrace in this kernel?)")
    import subprocess

    try:
        proc = subprocess.run(["mount", "-t", "tracefs", "nodev", target], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelTracingError(f"cannot mount tracefs on {target}: {exc}") from None
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise KernelTracingError(f"cannot mount tracefs on {target}: {why[-1] if why else 'mount failed'}"
                                 " (kernel tracing needs root)")
    found = _mounted_tracefs()
    if not found:
        raise KernelTracingError(f"tracefs mounted on {target} but not visible in /proc/self/mounts")
    return found


def check_name(session: str) -> str:
    """The instance name of a session (``ust-<session>``); the session name
    must be a plain file name."""
    if not isinstance(session, str) or not _NAME_RE.match(session) or session in (".", ".."):
        raise KernelTracingError(f"session name {session!r} cannot name an ftrace instance "
                                 "(letters, digits, '_', '.', '+', '-' only)")
    return INSTANCE_PREFIX + session


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def available_events(tracefs: str) -> list[tuple[str, str]]:
    """(system, event) of every kernel tracepoint (``ust list -k``)."""
    out = []
    for line in _read(os.path.join(tracefs, "available_events")).splitlines():
        system, _, name = line.partition(":")
        if name and not system.startswith(PROBE_GROUP_PREFIX):  # (sessions' path probes: ust.kernel.paths)
            out.append((system, name))
    return out


def syscall_names(tracefs: str) -> list[str]:
    """Names of the system calls the kernel has entry and exit tracepoints for."""
    events_dir = os.path.join(tracefs, "events", "syscalls")
    try:
        names = os.listdir(events_dir)
    except FileNotFoundError:
        return []
    enter = {n[len("sys_enter_"):] for n in names if n.startswith("sys_enter_")}
    leave = {n[len("sys_exit_"):] for n in names if n.startswith("sys_exit_")}
    return sorted(enter & leave)


def resolve(patterns: list[str], events: list[tuple[str, str]], syscalls_known: list[str], *,
            syscalls: bool = False) -> list[tuple[str, str]]:
    """(system, event) matched by names or globs (``sched_switch``, ``sched:*``,
    ``sched_wak*``; a bare name never matches the ``syscalls`` and ``ftrace``
    systems); with ``syscalls``, the names are system call names (``openat``,
    ``*``) and both tracepoints of each match. A pattern that matches nothing
    is an error naming it."""
    out: list[tuple[str, str]] = []
    events = [(s, e) for s, e in events if not s.startswith(PROBE_GROUP_PREFIX)]  # ust's own (paths.py)
    if syscalls:
        for pat in patterns:
            hits = [n for n in syscalls_known if fnmatch.fnmatchcase(n, pat)]
            if not hits:
                raise KernelTracingError(f"no system call matches {pat!r}")
            for n in hits:
                out += [("syscalls", "sys_enter_" + n), ("syscalls", "sys_exit_" + n)]
    else:
        for pat in patterns:
            system, sep, ev = pat.partition(":")
            if sep:
                hits = [(s, e) for s, e in events if fnmatch.fnmatchcase(s, system) and fnmatch.fnmatchcase(e, ev)]
            else:
                hits = [(s, e) for s, e in events if fnmatch.fnmatchcase(e, pat) and s not in ("ftrace", "syscalls")]
            if not hits:
                raise KernelTracingError(f"no kernel event matches {pat!r} (see ust list -k)")
            out += hits
    seen: set = set()
    return [x for x in out if not (x in seen or seen.add(x))]


def _claim(state_dir: str, name: str) -> int:
    """Open and lock ``<state_dir>/<name>.lock``; the fd is the claim (held until closed)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    st = os.stat(state_dir, follow_symlinks=False)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise KernelTracingError(f"kernel state directory {state_dir} is not ours alone: refusing to use it")
    fd = os.open(os.path.join(state_dir, name + ".lock"),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise KernelTracingError(f"ftrace instance {name} is in use by another live ust process") from None
    return fd


def _rmdir_instance(path: str) -> None:
    """Remove an instance directory; tracing is switched off and its events
    disabled first (the kernel refuses while a reader holds a file open)."""
    for sub, text in (("tracing_on", "0"), ("events/enable", "0")):
        try:
            _write(os.path.join(path, sub), text)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def remove_stale_instances(tracefs: str | None = None, state_dir: str = DEFAULT_STATE_DIR, *, busy: bool = False):
    """Remove every ``ust-*`` instance whose owner is gone (its claim file is
    not locked, or missing); returns their names. A daemon calls this when it
    starts, so a crash (SIGKILL included) leaves no instance behind for long.

    An instance whose owner is gone but a file of which is still open (the kernel
    refuses to remove it: a dead daemon's consumer writing out what is left) stays;
    with ``busy``, returns ``(names removed, [Instance])``, those instances claimed
    (their ``remove()`` can be tried again, until it succeeds)."""
    tracefs = tracefs or find_tracefs()
    removed = []
    still_open = []
    inst_dir = os.path.join(tracefs, "instances")
    for name in sorted(os.listdir(inst_dir)):
        if not name.startswith(INSTANCE_PREFIX):
            continue
        try:
            fd = _claim(state_dir, name)
        except KernelTracingError:
            continue  # a live owner
        try:
            _rmdir_instance(os.path.join(inst_dir, name))
            removed.append(name)
        except OSError as exc:
            if busy and exc.errno == errno.EBUSY:
                still_open.append(Instance(tracefs, name, fd, state_dir))
                continue
        os.close(fd)
    from . import paths

    paths.remove_orphans(tracefs, INSTANCE_PREFIX)  # path probes of instances gone (a dead owner's)
    return (removed, still_open) if busy else removed


class Instance:
    """One session's ftrace instance (created by ``Instance.create``).

    Everything is set while tracing is off; ``start``/``stop`` switch the
    instance's ``tracing_on``. ``remove`` deletes it (idempotent)."""

    def __init__(self, tracefs: str, name: str, claim_fd: int, state_dir: str):
        self.tracefs = tracefs
        self.name = name
        self.path = os.path.join(tracefs, "instances", name)
        self._claim_fd = claim_fd
        self._state_dir = state_dir

    @classmethod
    def create(cls, session: str, *, tracefs: str | None = None, state_dir: str = DEFAULT_STATE_DIR,
               buffer_size_kb: int | None = None, overwrite: bool = False) -> "Instance":
        name = check_name(session)
        tracefs = tracefs or find_tracefs()
        claim = _claim(state_dir, name)
        path = os.path.join(tracefs, "instances", name)
        try:
            if os.path.isdir(path):
                _rmdir_instance(path)  # ours by the claim: a leftover of a dead owner
            try:
                os.mkdir(path)
            except PermissionError:
                raise KernelTracingError("cannot create an ftrace instance: kernel tracing needs root") from None
            self = cls(tracefs, name, claim, state_dir)
            self._set("tracing_on", "0")
            self._set("trace_clock", "mono")
            self._set("options/overwrite", "1" if overwrite else "0")
            if buffer_size_kb:
                self.set_buffer_size_kb(buffer_size_kb)
            return self
        except BaseException:
            if os.path.isdir(path):
                _rmdir_instance(path)
            os.close(claim)
            raise

    def _set(self, rel: str, value: str) -> None:
        try:
            _write(os.path.join(self.path, rel), value)
        except OSError as exc:
            raise KernelTracingError(f"ftrace instance {self.name}: cannot write {value!r} to {rel}: "
                                     f"{exc.strerror or exc}") from None

    def _get(self, rel: str) -> str:
        return _read(os.path.join(self.path, rel))

    # -- configuration ------------------------------------------------------
    def set_buffer_size_kb(self, kb: int) -> None:
        if not isinstance(kb, int) or kb < 4:
            raise KernelTracingError(f"kernel buffer size must be at least 4 KiB per CPU, got {kb!r}")
        self._set("buffer_size_kb", str(kb))

    def buffer_size_kb(self) -> int:
        """KiB per CPU of the ring ("7 (expanded: 1408)" before the first use: the expanded size)."""
        text = self._get("buffer_size_kb")
        if "expanded:" in text:
            text = text.split("expanded:")[1].strip(" )\n")
        return int(text.split()[0])

    def set_record_tgid(self, on: bool) -> None:
        """ftrace saves each traced thread's tgid (``saved_tgids``: the pid context)."""
        self._set("options/record-tgid", "1" if on else "0")

    def set_overwrite(self, overwrite: bool) -> None:
        self._set("options/overwrite", "1" if overwrite else "0")

    def set_pids(self, pids: list[int]) -> None:
        """Record only the events of these threads (``set_event_pid``; empty: everyone)."""
        self._set("set_event_pid", " ".join(str(int(p)) for p in pids) if pids else "")

    @property
    def clock(self) -> str:
        text = self._get("trace_clock")
        m = re.search(r"\[(\S+)\]", text)
        return m.group(1) if m else text.strip()

    def cpus(self) -> list[int]:
        return sorted(int(n[3:]) for n in os.listdir(os.path.join(self.path, "per_cpu")) if n[3:].isdigit())

    def events(self) -> list[tuple[str, str]]:
        """(system, event) of every event the instance has."""
        return self._event_dirs()

    def _event_dirs(self) -> list[tuple[str, str]]:
        out = []
        base = os.path.join(self.path, "events")
        for system in os.listdir(base):
            sdir = os.path.join(base, system)
            if not os.path.isdir(sdir):
                continue
            for name in os.listdir(sdir):
                if os.path.isdir(os.path.join(sdir, name)):
                    out.append((system, name))
        return out

    def resolve(self, patterns: list[str], *, syscalls: bool = False) -> list[tuple[str, str]]:
        """(system, event) of this instance matched by ``patterns`` (see ``resolve``)."""
        return resolve(patterns, self._event_dirs(), syscall_names(self.tracefs), syscalls=syscalls)

    def set_enabled(self, events: list[tuple[str, str]], enabled: bool = True) -> None:
        for system, name in events:
            self._set(f"events/{system}/{name}/enable", "1" if enabled else "0")

    def set_filter(self, system: str, name: str, text: str) -> None:
        """ftrace's filter of one event (its own language: ust.kernel.kfilter makes it); the kernel's
        refusal is one line."""
        try:
            _write(os.path.join(self.path, f"events/{system}/{name}/filter"), text)
        except OSError as exc:
            raise KernelTracingError(f"ftrace refused the filter {text!r} of {system}:{name}: "
                                     f"{exc.strerror or exc}") from None

    def enabled_events(self) -> list[tuple[str, str]]:
        out = []
        for system, name in self._event_dirs():
            try:
                if self._get(f"events/{system}/{name}/enable").strip().startswith("1"):
                    out.append((system, name))
            except OSError:
                continue
        return sorted(out)

    def format_text(self, system: str, name: str) -> str:
        return self._get(f"events/{system}/{name}/format")

    def header_page(self) -> str:
        return self._get("events/header_page")

    def page_size(self) -> int:
        """Bytes per ring-buffer page (a read of trace_pipe_raw returns one)."""
        try:
            kb = int(self._get("buffer_subbuf_size_kb").split()[0])
            return max(kb * 1024, os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, IndexError):
            return os.sysconf("SC_PAGE_SIZE")

    def stats(self, cpu: int) -> dict[str, int]:
        """``per_cpu/cpuN/stats`` as numbers (entries, overrun, dropped events, ...)."""
        return parse_stats(self._get(f"per_cpu/cpu{cpu}/stats"))

    def lost_events(self, cpu: int) -> int:
        """Events the CPU's ring lost: overwritten (overwrite mode) or dropped (discard mode)."""
        s = self.stats(cpu)
        return s.get("overrun", 0) + s.get("dropped events", 0)

    def open_raw(self, cpu: int) -> int:
        """A non-blocking fd on ``per_cpu/cpuN/trace_pipe_raw`` (pages, consumed as read)."""
        return os.open(os.path.join(self.path, f"per_cpu/cpu{cpu}/trace_pipe_raw"),
                       os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)

    def open_stats(self, cpu: int) -> int:
        """An fd on ``per_cpu/cpuN/stats``: each read from offset 0 (``read_stats``) is the counters now."""
        return os.open(os.path.join(self.path, f"per_cpu/cpu{cpu}/stats"), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)

    def open_readers(self, tasks: bool) -> tuple[list[int], list[int], list[int]]:
        """What a consumer needs to drain the instance, opened here (where tracefs may be
        opened): each CPU's ``trace_pipe_raw`` and ``stats``, and (``tasks``: the pid and
        procname contexts) the top-level ``saved_tgids`` and ``saved_cmdlines``."""
        cpus = self.cpus()
        if cpus != list(range(len(cpus))):
            raise KernelTracingError(f"ftrace CPUs {cpus} are not numbered 0..{len(cpus) - 1}")
        raw: list[int] = []
        stats: list[int] = []
        task_fds: list[int] = []
        try:
            for cpu in cpus:
                raw.append(self.open_raw(cpu))
                stats.append(self.open_stats(cpu))
            if tasks:
                task_fds = TaskTable.open_files(self.tracefs)
        except BaseException:
            for fd in raw + stats:
                os.close(fd)
            raise
        return raw, stats, task_fds

    def set_buffer_percent(self, percent: int) -> None:
        """A reader polling ``trace_pipe_raw`` is woken when a CPU's ring is this full (0: at every event)."""
        self._set("buffer_percent", str(int(percent)))

    def read_pages(self) -> list[bytes]:
        """Every page the instance holds now, all CPUs (consumed): for tests and benchmarks."""
        got = []
        size = self.page_size()
        for cpu in self.cpus():
            fd = self.open_raw(cpu)
            try:
                while True:
                    try:
                        got.append(os.read(fd, size))
                    except BlockingIOError:
                        break
            finally:
                os.close(fd)
        return got

    # -- life ---------------------------------------------------------------
    def start(self) -> None:
        self._set("tracing_on", "1")

    def stop(self) -> None:
        self._set("tracing_on", "0")

    def remove(self) -> None:
        """Delete the instance (readers must be closed first) and drop the claim."""
        if self._claim_fd is None:
            return
        try:
            _rmdir_instance(self.path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise KernelTracingError(f"cannot remove ftrace instance {self.name}: {exc.strerror}") from None
        from . import paths

        paths.remove_group(self.tracefs, paths.group(self.name))  # its path probes, now enabled nowhere
        try:
            os.unlink(os.path.join(self._state_dir, self.name + ".lock"))
        except OSError:
            pass
        os.close(self._claim_fd)
        self._claim_fd = None

    def exists(self) -> bool:
        return os.path.isdir(self.path)


def parse_stats(text: str) -> dict[str, int]:
    """``per_cpu/cpuN/stats`` (``overrun: 3`` lines) as numbers."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        try:
            out[key.strip()] = int(value.split()[0])
        except (ValueError, IndexError):
            continue
    return out


def read_stats(fd: int) -> dict[str, int]:
    """The counters of a CPU's ring now, from its open ``stats`` file (tracefs makes the text
    again at every read from offset 0)."""
    return parse_stats(os.pread(fd, 4096, 0).decode("ascii", "replace"))


def pread_all(fd: int, limit: int) -> bytes:
    """A tracefs file from its start (at most ``limit`` bytes), through an open descriptor: the
    file is made again from offset 0 (a seq_file), so one descriptor serves every read."""
    chunks, size = [], 0
    while size < limit:
        chunk = os.pread(fd, min(1 << 16, limit - size), size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# What each descriptor a consumer is given must be (ust.daemon.consumerd validates them):
# the file name of its path on a tracefs mount.
_RAW_RE = re.compile(r"/instances/ust-[A-Za-z0-9_.+-]{1,200}/per_cpu/cpu(\d+)/trace_pipe_raw$")
_STATS_RE = re.compile(r"/instances/ust-[A-Za-z0-9_.+-]{1,200}/per_cpu/cpu(\d+)/stats$")


def _fd_mount_type(fd: int) -> str:
    """The file system type of the mount an open descriptor is on (/proc/self/fdinfo's mnt_id)."""
    mnt_id = None
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("mnt_id:"):
                mnt_id = line.split()[1]
    if mnt_id is None:
        return ""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == mnt_id and " - " in line:
                return line.split(" - ", 1)[1].split()[0]
    return ""


def check_reader_fd(fd: int, kind: str, cpu: int | None = None) -> None:
    """Check that ``fd`` (received from another process) is what it is said to be: a read-only
    tracefs file — ``raw`` (a ust instance's ``per_cpu/cpuN/trace_pipe_raw``), ``stats`` (its
    ``stats``), ``saved_tgids`` or ``saved_cmdlines`` (top level) — of CPU ``cpu``.
    KernelTracingError (one line) otherwise."""
    import stat as stat_mod

    try:
        st = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        path = os.readlink(f"/proc/self/fd/{fd}")
        fs = _fd_mount_type(fd)
    except OSError as exc:
        raise KernelTracingError(f"kernel reader descriptor {fd}: {exc.strerror or exc}") from None
    ok = stat_mod.S_ISREG(st.st_mode) and flags & os.O_ACCMODE == os.O_RDONLY and fs == "tracefs"
    if ok and kind in ("raw", "stats"):
        m = (_RAW_RE if kind == "raw" else _STATS_RE).search(path)
        ok = m is not None and (cpu is None or int(m.group(1)) == cpu)
    elif ok:
        ok = kind in ("saved_tgids", "saved_cmdlines") and os.path.basename(path) == kind
    if not ok:
        raise KernelTracingError(f"kernel reader descriptor {fd} is not a read-only tracefs {kind} file"
                                 f"{'' if cpu is None else f' of CPU {cpu}'} ({path!r} on {fs or 'unknown'})")


class TaskTable:
    """tid -> (tgid, comm) for the kernel trace's ``pid`` and ``procname`` contexts.

    From ftrace's own records: ``saved_tgids`` (every thread that ran while an
    instance had ``options/record-tgid`` on: a table as large as pid_max, no
    misses) and ``saved_cmdlines`` (the name each thread had at its latest
    recorded event; ``saved_cmdlines_size`` entries, the oldest forgotten).
    Both files are read at the first lookup of a drain pass (``forget`` after
    each); they keep every thread ever saved, so an entry may be an older
    thread's of the same id (ids wrap at ``pid_max``). A thread of a page read
    after them (``page_read``) may be newer than them: it is looked up in
    ``/proc`` (alive: exact), and once gone in the files read again (ftrace saved
    it when woken at its fork, or at a switch, before its record could be read;
    one read per page at most). A thread the files do not know is looked up in
    ``/proc`` too; else pid -1 and an empty procname (documented in
    docs/kernel.md). The idle task (tid 0) is pid 0, ``swapper``.
    """

    MAX_FILE = 64 << 20  # a bound on what is read from either file

    FILES = ("saved_tgids", "saved_cmdlines")

    def __init__(self, tgids_fd: int, cmdlines_fd: int):
        # Open descriptors, read from offset 0 each time: the consumer may not open tracefs
        # itself (a tracing-group member's), so it is given them (sessiond/kernel.py).
        self.fds = (tgids_fd, cmdlines_fd)
        self.tasks: dict[int, tuple[int, bytes]] = {0: (0, b"swapper")}
        self._files: tuple[dict, dict] = ({}, {})  # the files as last read: tid -> tgid, tid -> comm
        self._loaded = False
        # a page read from the rings since the files were read: its records' threads may have been saved
        # after that (a read again can answer them); none: a read again would answer nothing new
        self._page_since_load = True

    def forget(self) -> None:
        """Read the files again at the next lookup (after a drain pass)."""
        if self._loaded:
            self.tasks.clear()  # in place: the converters hold this dict
            self.tasks[0] = (0, b"swapper")
        self._loaded = False

    def page_read(self) -> None:
        """A page was read from a ring: a thread of its records unknown to the files read
        before may be in them now (see task_of)."""
        self._page_since_load = True

    @classmethod
    def open_files(cls, tracefs: str) -> list[int]:
        """The descriptors a TaskTable reads (``saved_tgids``, ``saved_cmdlines``)."""
        fds: list[int] = []
        try:
            for name in cls.FILES:
                fds.append(os.open(os.path.join(tracefs, name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def close(self) -> None:
        for fd in self.fds:
            if fd >= 0:
                os.close(fd)
        self.fds = (-1, -1)

    def _read_top(self, which: int) -> str:
        try:
            data = pread_all(self.fds[which], self.MAX_FILE)
        except OSError:
            return ""  # the rest is looked up in /proc
        return data.decode("utf-8", "replace")

    def _load(self) -> None:
        self._page_since_load = False  # before reading: a page read meanwhile asks for another read
        tgids: dict[int, int] = {}
        for line in self._read_top(0).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                tgids[int(parts[0])] = int(parts[1])
        comms: dict[int, bytes] = {}
        for line in self._read_top(1).splitlines():
            tid, _, comm = line.partition(" ")
            if tid.isdigit():
                comms[int(tid)] = comm.encode()[:15]
        # not copied into self.tasks (which the converter believes without asking): an entry may be an older
        # thread's of the same id (ids wrap at pid_max, the files keep every thread ever saved), which
        # task_of checks when the thread may be newer than the files
        self._files = (tgids, comms)

    def task_of(self, tid: int) -> tuple[int, bytes]:
        if not self._loaded:
            self._load()
            self._loaded = True
        tgids, comms = self._files
        tgid, comm = tgids.get(tid), comms.get(tid)
        # The files read after every page read so far know each thread of those pages that ftrace saved
        # (a task is saved when it is woken — a new one at its fork, right after the fork's record — or
        # switched), and newer than any older thread of its id. Otherwise the thread may be newer than
        # the files: /proc answers while it lives; one gone is looked up in the files read again, at most
        # once per page read (a fixed count of reads per pass, spent by a busy system's short-lived
        # processes, left a thread made late in the pass to the entry of an older thread of its id, and a
        # fork's child_pid was its tid).
        if self._page_since_load or tgid is None or comm is None:
            live_tgid, live_comm = _proc_task(tid)
            if live_tgid >= 0:
                tgid = live_tgid
            elif self._page_since_load:
                # gone: its exit's switch-out (or its fork's wakeup) saved it; /proc first, the files
                # after, so no thread falls between
                self._load()
                tgids, comms = self._files
                tgid, comm = tgids.get(tid), comms.get(tid)
            tgid = tgid if tgid is not None else live_tgid
            comm = comm if comm is not None else live_comm
        entry = (tgid, comm)
        self.tasks[tid] = entry
        return entry


def _proc_task(tid: int) -> tuple[int, bytes]:
    """(tgid, comm) of a live thread from /proc, or (-1, b"")."""
    tgid, comm = -1, b""
    if tid <= 0:
        return tgid, comm
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f.read(8192).splitlines():
                if line.startswith(b"Tgid:"):
                    tgid = int(line.split()[1])
                    break
        with open(f"/proc/{tid}/comm", "rb") as f:
            comm = f.read(64).rstrip(b"\n")[:15]
    except (OSError, ValueError, IndexError):
        pass
    return tgid, comm
