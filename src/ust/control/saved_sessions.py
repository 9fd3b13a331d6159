"""`ust save` and `ust load`: sessions to and from LTTng session files (``NAME.lttng``).

Done by the client, with the requests any client has (``get_session`` to save; ``create``,
``enable_channel``, ``enable_event``, ``add_context``, ``start`` to load): the files are the
user's, written with the user's own credentials and never through a symbolic link, and a load
is the same sequence of requests the user could type. The document format is
``ust.control.session_xml``'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ust.control import session_xml
from ust.daemon import paths
from ust.errors import SessionError

SUFFIX = ".lttng"


@dataclass
class Outcome:
    """One session saved or loaded: its name, its file, what was skipped, or why it failed."""

    name: str
    path: str
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _file_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise SessionError(f"session name {name!r} cannot be a file name")
    return name + SUFFIX


def _write_new(directory: str, name: str, data: bytes, force: bool) -> str:
    """Write ``directory/name`` atomically: a private temporary file (never through a link), then
    renamed over the old file (``force``) or linked to a name that must not exist yet."""
    final = os.path.join(directory, name)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise SessionError(f"{final} exists: use -f to overwrite it") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return final


def save(client, names: list[str] | None, directory: str | None = None, force: bool = False) -> list[Outcome]:
    """Write each session (None: every session) to ``directory/NAME.lttng``; one Outcome each."""
    directory = os.path.abspath(os.path.expanduser(directory or paths.sessions_dir()))
    if names is None:
        sessions = client.list_sessions()
        if not sessions:
            raise SessionError("no session to save")
    else:
        sessions = [client.get_session(n) for n in names]
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise SessionError(f"cannot create {directory}: {exc.strerror}") from None
    if not os.path.isdir(directory):
        raise SessionError(f"{directory} is not a directory")
    out = []
    for s in sessions:
        o = Outcome(s["name"], "")
        try:
            data, o.notes = session_xml.dump(s)
            o.path = _write_new(directory, _file_name(s["name"]), data, force)
        except SessionError as exc:
            o.error = str(exc)
        except OSError as exc:
            o.error = f"cannot write {os.path.join(directory, s['name'] + SUFFIX)}: {exc.strerror}"
        out.append(o)
    return out


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(session_xml.MAX_DOCUMENT + 1)
    except OSError as exc:
        raise SessionError(f"cannot read {path}: {exc.strerror}") from None
    return data


def _files(source: str | None) -> list[str]:
    """The session files to read: ``source`` itself, the ``*.lttng`` of a directory, or (None) those of
    the user's directory then the system one."""
    if source is not None:
        source = os.path.abspath(os.path.expanduser(source))
        if os.path.isdir(source):
            return [os.path.join(source, n) for n in sorted(os.listdir(source))
                    if n.endswith(SUFFIX) and not n.startswith(".")]
        if not os.path.exists(source):
            raise SessionError(f"{source}: no such file or directory")
        return [source]
    files = []
    for d in (paths.sessions_dir(), paths.system_sessions_dir()):
        if os.path.isdir(d):
            files += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(SUFFIX)
                      and not n.startswith(".")]
    return files


def _output_of(url: str) -> str:
    """``--override-url``: a local path or ``file://PATH`` (network URLs need a relay ust has not)."""
    if url.startswith("file://"):
        url = url[len("file://"):]
    elif "://" in url:
        raise SessionError(f"--override-url {url!r}: ust writes traces locally only yet (file://PATH or a path)")
    if not os.path.isabs(os.path.expanduser(url)):
        raise SessionError(f"--override-url {url!r}: expected an absolute path")
    return os.path.abspath(os.path.expanduser(url))


def read_sessions(source: str | None) -> list[tuple[dict, list[str], str]]:
    """Every session of the files ``load`` would read: (description, skipped lines, file).
    A session found in several files is taken from the first (the user's directory before the system's)."""
    files = _files(source)
    seen = set()
    out = []
    for path in files:
        for desc, notes in session_xml.parse(_read(path), path):
            if desc["name"] not in seen:
                seen.add(desc["name"])
                out.append((desc, notes, path))
    return out


def _apply(client, desc: dict) -> list[str]:
    """Create the session ``desc`` describes with ordinary requests; return what could not be applied."""
    notes: list[str] = []
    name = desc["name"]
    client.create_session(name, output=desc.get("output"), snapshot=desc.get("snapshot", False),
                          shm_path=desc.get("shm_path"))
    try:
        for ch in desc["channels"]:
            client.enable_channel(name, ch["name"], subbuf_size=ch["subbuf_size"], num_subbuf=ch["num_subbuf"],
                                  overwrite=ch["overwrite"], buffers=ch["buffers"],
                                  switch_timer=ch["switch_timer"], read_timer=ch["read_timer"],
                                  tracefile_size=ch["tracefile_size"], tracefile_count=ch["tracefile_count"],
                                  monitor_timer=ch.get("monitor_timer"))
        for r in desc["rules"]:
            level = None if r["loglevel_type"] == "all" else r["loglevel"]
            client.enable_events(name, [r["pattern"]], channel=r["channel"], exclusions=r["exclusions"],
                                 filter=r["filter"], loglevel=level, loglevel_only=r["loglevel_type"] == "single",
                                 python=r["domain"] == "python")
        for ch in desc["channels"]:
            for ctx in ch["context"]:
                try:
                    client.add_context(name, [ctx], channel=ch["name"])
                except SessionError as exc:
                    notes.append(f"session {name}: channel {ch['name']}: context {ctx} skipped ({exc})")
        if desc.get("snapshot") and "snapshot_outputs" in desc:
            wanted = desc["snapshot_outputs"][:1]
            default = [{"name": "snapshot-1", "path": client.get_session(name)["output"], "max_size": 0}]
            if [(o["name"], o["path"]) for o in wanted] != [(o["name"], o["path"]) for o in default]:
                client.snapshot_del_output(name, 1)
                for o in wanted:
                    if o.get("max_size"):
                        notes.append(f"session {name}: snapshot output {o['name']}: max size {o['max_size']} "
                                     "skipped (ust's snapshots hold the whole buffers)")
                    client.snapshot_add_output(name, o["path"], name=o["name"])
        for attr, ids in desc.get("trackers", {}).items():
            if ids:
                client.track(name, attr, ids)
            else:
                client.untrack(name, attr, all=True)
        rotation = desc.get("rotation") or {}
        if rotation.get("timer") or rotation.get("size"):
            client.enable_rotation(name, timer=rotation.get("timer") or None, size=rotation.get("size") or None)
        for r in desc["rules"]:
            if not r["enabled"]:
                client.disable_events(name, [r["pattern"]], channel=r["channel"])
        for ch in desc["channels"]:
            if not ch["enabled"]:
                client.disable_channel(name, ch["name"])
        if desc.get("active"):
            client.start(name)
    except BaseException:
        try:
            client.destroy_session(name)  # never leave half a session behind
        except Exception:
            pass
        raise
    return notes


def load(client, name: str | None = None, source: str | None = None, force: bool = False,
         override_url: str | None = None, override_name: str | None = None) -> list[Outcome]:
    """Create the sessions of the session files (``name``: only that one); one Outcome each.

    ``force`` replaces (destroys, then creates) a session of the same name; without it such a
    session is an error. ``override_url``/``override_name`` change the output and the name of a
    single loaded session.
    """
    output = _output_of(override_url) if override_url else None
    found = read_sessions(source)
    if name is not None:
        found = [f for f in found if f[0]["name"] == name]
        if not found:
            where = source or f"{paths.sessions_dir()} or {paths.system_sessions_dir()}"
            raise SessionError(f"no session {name!r} in {where}")
    if not found:
        raise SessionError(f"no session file in {source or paths.sessions_dir()}")
    if override_name is not None and len(found) != 1:
        raise SessionError("--override-name needs a single session: give its name")
    existing = {s["name"] for s in client.list_sessions()}
    out = []
    for desc, notes, path in found:
        desc = dict(desc)
        if override_name is not None:
            desc["name"] = override_name
        if output is not None:
            desc["output"] = output
        o = Outcome(desc["name"], path, list(notes))
        try:
            if desc["name"] in existing:
                if not force:
                    raise SessionError(f"a session named {desc['name']!r} already exists (use -f to replace it)")
                client.destroy_session(desc["name"])
            o.notes += _apply(client, desc)
        except SessionError as exc:
            o.error = str(exc)
        out.append(o)
    return out
