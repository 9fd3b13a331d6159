"""LTTng's session description XML (``NAME.lttng``, lttng-sessiond's session.xsd) <-> ust's sessions.

Pure functions, no daemon and no file: ``dump`` turns a session as the session daemon describes it
(``Client.get_session``: name, output, snapshot, active, channels, rules) into the document
``lttng save`` writes; ``parse`` reads such a document back into the same description plus the
lines saying what ust skipped. ``ust save``/``ust load`` (``ust.control.saved_sessions``) do the
files and the requests.

The user-space domain maps one to one. LTTng's python domain is one channel,
``lttng_python_channel``, whose rules name loggers; ust keeps its python rules in ordinary
channels, so every python rule is written in the PYTHON domain's ``lttng_python_channel`` (lttng
refuses any other name there) and read back into that channel; ``dump`` says when a rule thus
changes channel. Python rules carry the filter LTTng's client
builds from the logger name and level (``(logger_name == "db") && (int_loglevel >= 30)``); ``parse``
takes the user's own part back out of it.

What LTTng 2.13's schema cannot say is written so that ``lttng load`` still accepts the file and
ust reads it back: the contexts the schema has no name for (vuid, vgid, namespaces, cpu_id,
Python contexts) as application contexts of provider ``ust`` (``$app.ust:NAME``), as LTTng itself
names application-supplied contexts. What ust cannot do (kernel, JUL and log4j domains, live
mode, network outputs, non-virtual trackers, function probes in a file) is reported, one
line each, never silently dropped.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any

from ust.errors import SessionError

MAX_DOCUMENT = 16 << 20  # bytes: a session file is a few KiB; anything bigger is not one
MAX_NAME = 255  # session.xsd's name_type
PYTHON_CHANNEL = "lttng_python_channel"  # LTTng's one python-domain channel
DEFAULT_CHANNEL = "channel0"

# ust context name -> session.xsd's <type> (the contexts LTTng 2.13's schema names)
_SCHEMA_CONTEXTS = {
    "pid": "PID", "procname": "PROCNAME", "vpid": "VPID", "tid": "TID", "vtid": "VTID", "ppid": "PPID",
    "vppid": "VPPID", "pthread_id": "PTHREAD_ID",
}
# what lttng 2.13 writes for these although its schema lacks them (read, never written)
_UNSCHEMA_CONTEXTS = {
    "VUID": "vuid", "VEUID": "veuid", "VSUID": "vsuid", "VGID": "vgid", "VEGID": "vegid", "VSGID": "vsgid",
    "CGROUP_NS": "cgroup_ns", "IPC_NS": "ipc_ns", "MNT_NS": "mnt_ns", "NET_NS": "net_ns", "PID_NS": "pid_ns",
    "TIME_NS": "time_ns", "USER_NS": "user_ns", "UTS_NS": "uts_ns", "CPU_ID": "cpu_id",
}
_MI_CONTEXTS = {v: k for k, v in _UNSCHEMA_CONTEXTS.items()}  # in lttng's MI schema, not its session schema
APP_PROVIDER = "ust"  # <app><provider_name>: ust's contexts outside the schema


# ---------------------------------------------------------------------------
# dump


def _text(parent: ET.Element, tag: str, value: Any) -> ET.Element:
    e = ET.SubElement(parent, tag)
    e.text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return e


def context_element(name: str, mi: bool = False) -> tuple[str, Any]:
    """How lttng names context ``name``: ("type", "VPID"), ("perf", {type, config, name}) or
    ("app", {provider_name, ctx_name}) for ust's contexts outside lttng's list. ``mi``: for an MI
    document, whose schema also has the credentials, namespaces and cpu_id types (the session
    schema has not)."""
    from ust.instrument.context import PERF_COUNTERS

    if name in _SCHEMA_CONTEXTS:
        return "type", _SCHEMA_CONTEXTS[name]
    if mi and name in _MI_CONTEXTS:
        return "type", _MI_CONTEXTS[name]
    if name in PERF_COUNTERS:
        kind, config = PERF_COUNTERS[name]
        return "perf", {"type": kind, "config": config,
                        "name": name.replace(":", "_").replace("-", "_")}  # as lttng names the field
    return "app", {"provider_name": APP_PROVIDER, "ctx_name": name}


def _context_element(parent: ET.Element, name: str) -> None:
    ctx = ET.SubElement(parent, "context")
    tag, value = context_element(name)
    if isinstance(value, dict):
        e = ET.SubElement(ctx, tag)
        for k, v in value.items():
            _text(e, k, v)
    else:
        _text(ctx, tag, value)


def python_filter(rule: dict) -> str | None:
    """The filter LTTng's client gives a python-domain rule: the user's, the logger, the level."""
    escaped = rule["pattern"].replace("\\", "\\\\").replace('"', '\\"')
    text = f'logger_name == "{escaped}"'
    if rule.get("filter"):
        text = f'({rule["filter"]}) && ({text})'
    if rule["loglevel_type"] != "all":
        op = ">=" if rule["loglevel_type"] == "range" else "=="
        text = f"({text}) && (int_loglevel {op} {rule['loglevel']})"
    return text


def _channel_element(parent: ET.Element, ch: dict, rules: list[dict], python: bool) -> None:
    c = ET.SubElement(parent, "channel")
    _text(c, "name", ch["name"])
    _text(c, "enabled", bool(ch.get("enabled", True)))
    _text(c, "overwrite_mode", "OVERWRITE" if ch["overwrite"] else "DISCARD")
    _text(c, "subbuffer_size", ch["subbuf_size"])
    _text(c, "subbuffer_count", ch["num_subbuf"])
    _text(c, "switch_timer_interval", ch.get("switch_timer", 0))
    _text(c, "read_timer_interval", ch.get("read_timer", 0))
    _text(c, "output_type", "MMAP")
    _text(c, "blocking_timeout", 0)  # ust never blocks the application
    _text(c, "monitor_timer_interval", ch.get("monitor_timer", 1000000))
    _text(c, "tracefile_size", ch.get("tracefile_size", 0))
    _text(c, "tracefile_count", ch.get("tracefile_count", 0))
    _text(c, "live_timer_interval", 0)
    events = ET.SubElement(c, "events")
    for r in rules:
        e = ET.SubElement(events, "event")
        _text(e, "name", r["pattern"])
        _text(e, "enabled", bool(r.get("enabled", True)))
        _text(e, "type", "TRACEPOINT")
        _text(e, "loglevel_type", r["loglevel_type"].upper())
        if r["loglevel_type"] != "all":
            _text(e, "loglevel", r["loglevel"])
        flt = python_filter(r) if python else r.get("filter")
        if flt:
            _text(e, "filter", flt)
        if r.get("exclusions"):
            xs = ET.SubElement(e, "exclusions")
            for x in r["exclusions"]:
                _text(xs, "exclusion", x)
    contexts = ET.SubElement(c, "contexts")
    if not python:
        for name in ch.get("context", ()):
            _context_element(contexts, name)


def dump(session: dict) -> tuple[bytes, list[str]]:
    """The ``NAME.lttng`` document of one session, and a line per thing it could not hold."""
    notes = []
    buffer_type = "PER_PID" if session.get("buffers") == "pid" else "PER_UID"
    root = ET.Element("sessions")
    s = ET.SubElement(root, "session")
    _text(s, "name", session["name"])
    if session.get("shm_path"):
        _text(s, "shared_memory_path", session["shm_path"])
    domains = ET.SubElement(s, "domains")
    by_domain: dict[str, list[dict]] = {"ust": [], "python": []}
    for r in session.get("rules", ()):
        by_domain.setdefault(r.get("domain", "ust"), []).append(r)
    for dom_type, key in (("UST", "ust"), ("JUL", None), ("LOG4J", None), ("PYTHON", "python")):
        d = ET.SubElement(domains, "domain")
        _text(d, "type", dom_type)
        _text(d, "buffer_type", buffer_type)
        chans = ET.SubElement(d, "channels")
        if key is None:
            continue
        python_rules = by_domain["python"]
        if key == "ust":
            for ch in session.get("channels", ()):
                rules = [r for r in by_domain["ust"] if r["channel"] == ch["name"]]
                # a channel holding only python rules is python-domain only, like lttng_python_channel
                if rules or ch.get("context") or not any(r["channel"] == ch["name"] for r in python_rules):
                    _channel_element(chans, ch, rules, python=False)
        elif key == "python" and python_rules:
            # LTTng has one python channel, lttng_python_channel, and refuses any other name there:
            # every python rule is written in it, with the attributes of the ust channel it names
            # (that one, else the first channel holding python rules)
            by_name = {ch["name"]: ch for ch in session.get("channels", ())}
            ch = by_name.get(PYTHON_CHANNEL) or by_name.get(python_rules[0]["channel"])
            if ch is None:
                continue
            _channel_element(chans, dict(ch, name=PYTHON_CHANNEL), python_rules, python=True)
            moved = sorted({r["channel"] for r in python_rules} - {PYTHON_CHANNEL})
            if moved:
                notes.append(f"session {session['name']}: the python rules of channel(s) {', '.join(moved)} are "
                             f"saved in {PYTHON_CHANNEL} (LTTng's one python-domain channel)")
        if key == "ust":
            trackers = ET.SubElement(d, "process_attr_trackers")
            for attr, ids in sorted(session.get("trackers", {}).items()):
                values = ET.SubElement(ET.SubElement(trackers, f"{attr}_process_attr_tracker"), "process_attr_values")
                for i in ids:
                    _text(ET.SubElement(values, attr), "id", i)
    _text(s, "started", bool(session.get("active")))
    rotation = session.get("rotation") or {}
    if session.get("snapshot") or rotation.get("timer") or rotation.get("size"):
        attrs = ET.SubElement(s, "attributes")
        if session.get("snapshot"):
            _text(attrs, "snapshot_mode", True)
        if rotation.get("timer") or rotation.get("size"):
            schedules = ET.SubElement(attrs, "rotation_schedules")
            if rotation.get("timer"):
                _text(ET.SubElement(schedules, "periodic"), "time_us", rotation["timer"])
            if rotation.get("size"):
                _text(ET.SubElement(schedules, "size_threshold"), "bytes", rotation["size"])
    output = ET.SubElement(s, "output")
    if session.get("snapshot"):
        outs = ET.SubElement(output, "snapshot_outputs")
        for snap in session.get("snapshot_outputs", ()):
            o = ET.SubElement(outs, "output")
            _text(o, "name", snap["name"])
            _text(o, "max_size", snap.get("max_size", 0))
            consumer = ET.SubElement(o, "consumer_output")
            _text(consumer, "enabled", True)
            _text(ET.SubElement(consumer, "destination"), "path", snap["path"])
    else:
        consumer = ET.SubElement(output, "consumer_output")
        _text(consumer, "enabled", True)
        _text(ET.SubElement(consumer, "destination"), "path", session.get("output") or "")
    if session.get("probes"):
        notes.append(f"session {session['name']}: {len(session['probes'])} function probe(s) not saved "
                     "(LTTng's session format has no Python function probe)")
    ET.indent(root, space="\t")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode(), notes


# ---------------------------------------------------------------------------
# parse


class _Reader:
    """Typed access to one element's children, naming the file and element in every error."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, what: str) -> SessionError:
        return SessionError(f"{self.source}: {what}")

    def text(self, parent: ET.Element, tag: str, default: str | None = None) -> str | None:
        e = parent.find(tag)
        if e is None:
            return default
        return (e.text or "").strip()

    def integer(self, parent: ET.Element, tag: str, default: int = 0, lo: int = 0, hi: int = (1 << 64) - 1) -> int:
        t = self.text(parent, tag)
        if t is None:
            return default
        try:
            v = int(t)
        except ValueError:
            raise self.fail(f"<{tag}> is not an integer: {t[:40]!r}") from None
        if not lo <= v <= hi:
            raise self.fail(f"<{tag}> {v} is out of range {lo}..{hi}")
        return v

    def boolean(self, parent: ET.Element, tag: str, default: bool) -> bool:
        t = self.text(parent, tag)
        if t is None:
            return default
        if t in ("true", "1"):
            return True
        if t in ("false", "0"):
            return False
        raise self.fail(f"<{tag}> is not a boolean: {t[:40]!r}")

    def choice(self, parent: ET.Element, tag: str, allowed: tuple[str, ...], default: str) -> str:
        t = self.text(parent, tag, default)
        if t not in allowed:
            raise self.fail(f"<{tag}> {t[:40]!r} is not one of {', '.join(allowed)}")
        return t


def _user_python_filter(rule: dict, saved: str | None) -> str | None:
    """The user's part of the filter lttng wrote for a python rule (see ``python_filter``).

    lttng's client wraps the filter it is given in the logger and level parts, `lttng load`
    included: a file saved, loaded and saved again by lttng holds them twice; all are peeled off.
    """
    bare = dict(rule, filter=None)
    generated = python_filter(bare)
    name = python_filter(dict(bare, loglevel_type="all"))
    level = generated[len(f"({name}) && "):] if generated != name else ""
    shapes = [("(", f") && ({name})")] if not level else [("((", f") && ({name})) && {level}")]
    while saved:
        if saved == generated or (rule["pattern"] == "*" and saved == "1"):
            return None
        for head, tail in shapes:
            if saved.startswith(head) and saved.endswith(tail) and len(saved) > len(head) + len(tail):
                saved = saved[len(head):-len(tail)]
                break
        else:
            return saved  # not lttng's shape: kept whole (its logger and level parts are redundant, not wrong)
    return None


def _context_name(r: _Reader, ctx: ET.Element, channel: str, notes: list[str]) -> str | None:
    from ust.instrument.context import PERF_COUNTERS, is_known

    t = r.text(ctx, "type")
    if t is not None:
        for name, xml_name in _SCHEMA_CONTEXTS.items():
            if xml_name == t:
                return name
        if t in _UNSCHEMA_CONTEXTS:
            return _UNSCHEMA_CONTEXTS[t]
        notes.append(f"channel {channel}: context {t} skipped (no user-space Python counterpart)")
        return None
    perf = ctx.find("perf")
    if perf is not None:
        key = (r.integer(perf, "type", hi=(1 << 32) - 1), r.integer(perf, "config"))
        for name, value in PERF_COUNTERS.items():
            if value == key:
                return name
        notes.append(f"channel {channel}: perf counter {r.text(perf, 'name', '?')} skipped (unknown to ust)")
        return None
    app = ctx.find("app")
    if app is not None:
        provider, name = r.text(app, "provider_name", ""), r.text(app, "ctx_name", "")
        if provider == APP_PROVIDER and is_known(name):
            return name
        notes.append(f"channel {channel}: application context $app.{provider}:{name} skipped (unknown to ust)")
        return None
    notes.append(f"channel {channel}: an empty <context> skipped")
    return None


def _channel(r: _Reader, c: ET.Element, buffers: str, domain: str, notes: list[str]) -> tuple[dict, list[dict]]:
    name = r.text(c, "name")
    if not name or len(name) > MAX_NAME:
        raise r.fail("a <channel> without a valid <name>")
    if domain == "python" and name == "":
        name = PYTHON_CHANNEL
    ch = {
        "name": name,
        "enabled": r.boolean(c, "enabled", True),
        "overwrite": r.choice(c, "overwrite_mode", ("DISCARD", "OVERWRITE"), "DISCARD") == "OVERWRITE",
        "subbuf_size": r.integer(c, "subbuffer_size", 512 * 1024),
        "num_subbuf": r.integer(c, "subbuffer_count", 4),
        "switch_timer": r.integer(c, "switch_timer_interval", 0, hi=(1 << 32) - 1),
        "read_timer": r.integer(c, "read_timer_interval", 0, hi=(1 << 32) - 1),
        "monitor_timer": r.integer(c, "monitor_timer_interval", 1000000, hi=(1 << 40) - 1),
        "tracefile_size": r.integer(c, "tracefile_size", 0),
        "tracefile_count": r.integer(c, "tracefile_count", 0),
        "buffers": buffers,
        "context": [],
    }
    if r.integer(c, "live_timer_interval", 0, hi=(1 << 32) - 1):
        notes.append(f"channel {name}: live timer skipped (ust has no live mode yet)")
    if r.integer(c, "blocking_timeout", 0, lo=-1, hi=2147483648000):
        notes.append(f"channel {name}: blocking timeout skipped (ust never blocks the application)")
    contexts = c.find("contexts")
    for ctx in contexts if contexts is not None else ():
        cname = _context_name(r, ctx, name, notes)
        if cname and cname not in ch["context"]:
            ch["context"].append(cname)
    rules = []
    events = c.find("events")
    for e in events if events is not None else ():
        pattern = r.text(e, "name")
        if not pattern:
            raise r.fail(f"channel {name}: an <event> without a <name>")
        etype = r.text(e, "type", "TRACEPOINT")
        if etype not in ("TRACEPOINT", "ALL"):
            notes.append(f"channel {name}: event {pattern} of type {etype} skipped (ust records tracepoints)")
            continue
        lt = r.choice(e, "loglevel_type", ("ALL", "RANGE", "SINGLE"), "ALL").lower()
        rule = {
            "pattern": pattern,
            "channel": name,
            "enabled": r.boolean(e, "enabled", True),
            "loglevel_type": lt,
            "loglevel": -1 if lt == "all" else r.integer(e, "loglevel", -1, lo=-1, hi=(1 << 31) - 1),
            "filter": r.text(e, "filter") or None,
            "exclusions": [(x.text or "").strip() for x in e.iterfind("exclusions/exclusion")
                           if (x.text or "").strip()],
            "domain": domain,
        }
        if lt != "all" and rule["loglevel"] < 0:
            lt = rule["loglevel_type"] = "all"
        if domain == "python":
            rule["filter"] = _user_python_filter(rule, rule["filter"])
        rules.append(rule)
    return ch, rules


TRACKED = ("vpid", "vuid", "vgid")


def _tracked_ids(r: _Reader, tracker: ET.Element, attr: str) -> list[int]:
    """The ids of one inclusion set; user and group names are looked up here."""
    import grp
    import pwd

    ids = set()
    for v in tracker.iterfind(f"process_attr_values/{attr}"):
        if v.find("id") is not None:
            ids.add(r.integer(v, "id", hi=(1 << 32) - 1))
            continue
        name = r.text(v, "name", "")
        try:
            ids.add(pwd.getpwnam(name).pw_uid if attr == "vuid" else grp.getgrnam(name).gr_gid)
        except KeyError:
            raise r.fail(f"{attr} {name[:40]!r} is not a known {'user' if attr == 'vuid' else 'group'}") from None
    return sorted(ids)


def _session(r: _Reader, s: ET.Element) -> tuple[dict, list[str]]:
    name = r.text(s, "name")
    if not name or len(name) > MAX_NAME:
        raise r.fail("a <session> without a valid <name>")
    notes: list[str] = []
    desc: dict[str, Any] = {"name": name, "output": None, "snapshot": False, "active": False,
                            "buffers": "uid", "channels": [], "rules": [], "trackers": {}}
    if s.find("output/snapshot_outputs") is not None:
        desc["snapshot_outputs"] = []
    channels: dict[str, dict] = {}
    for d in s.iterfind("domains/domain"):
        dtype = r.choice(d, "type", ("KERNEL", "UST", "JUL", "LOG4J", "PYTHON"), "")
        chans = d.findall("channels/channel")
        if dtype in ("KERNEL", "JUL", "LOG4J"):
            if chans:
                notes.append(f"the {dtype.lower()} domain skipped ({len(chans)} channel(s): ust traces Python "
                             "user space)")
            continue
        buffers = "pid" if r.choice(d, "buffer_type", ("PER_PID", "PER_UID", "GLOBAL"), "PER_UID") == "PER_PID" \
            else "uid"
        if dtype == "UST":
            desc["buffers"] = buffers
        for c in chans:
            ch, rules = _channel(r, c, buffers, "python" if dtype == "PYTHON" else "ust", notes)
            if ch["name"] not in channels:
                channels[ch["name"]] = ch
            desc["rules"].extend(rules)
        skipped = [t.tag for t in d.findall("trackers/*")]  # lttng < 2.12's pid tracker
        for t in d.findall("process_attr_trackers/*"):
            attr = t.tag.replace("_process_attr_tracker", "")
            if dtype == "UST" and attr in TRACKED:
                desc["trackers"][attr] = _tracked_ids(r, t, attr)
            else:
                skipped.append(t.tag)
        if skipped:
            notes.append(f"{dtype.lower()} domain: process trackers skipped ({', '.join(skipped)}: ust tracks "
                         f"{', '.join(TRACKED)} in the user-space domain)")
    desc["channels"] = list(channels.values())
    desc["active"] = r.boolean(s, "started", False)
    attrs = s.find("attributes")
    if attrs is not None:
        desc["snapshot"] = r.boolean(attrs, "snapshot_mode", False)
        if r.integer(attrs, "live_timer_interval", 0, hi=(1 << 32) - 1):
            notes.append("live mode skipped (ust has no live mode yet): loaded as a normal session")
        for e in attrs.findall("rotation_schedules/*"):
            if e.tag == "periodic":
                desc.setdefault("rotation", {})["timer"] = r.integer(e, "time_us", 0)
            elif e.tag == "size_threshold":
                desc.setdefault("rotation", {})["size"] = r.integer(e, "bytes", 0)
            else:
                notes.append(f"rotation schedule <{e.tag[:40]}> skipped (unknown)")
    shm_path = r.text(s, "shared_memory_path")
    if shm_path:
        if not os.path.isabs(shm_path):
            raise r.fail(f"<shared_memory_path> must be an absolute path, got {shm_path[:80]!r}")
        desc["shm_path"] = shm_path
    out = s.find("output")
    if out is not None:
        dest = out.find("consumer_output/destination")
        if dest is None:
            snaps = out.findall("snapshot_outputs/output")
            dest = out.find("snapshot_outputs/output/consumer_output/destination")
            if len(snaps) > 1:
                notes.append(f"{len(snaps) - 1} more snapshot output(s) skipped (one per session, as lttng)")
            for snap in snaps[:1]:
                path = r.text(snap, "consumer_output/destination/path")
                if path:
                    desc["snapshot_outputs"] = [{"name": r.text(snap, "name") or "snapshot-1", "path": path,
                                                 "max_size": r.integer(snap, "max_size", 0)}]
            if desc["snapshot"] and not snaps:
                desc["snapshot_outputs"] = []
        if dest is not None:
            path = r.text(dest, "path")
            if path:
                desc["output"] = path
            elif dest.find("net_output") is not None:
                notes.append(f"network output {r.text(dest, 'net_output/control_uri', '?')} skipped "
                             "(no relay yet): the trace is written locally")
    for ch in desc["channels"]:
        if ch["buffers"] != desc["buffers"]:
            ch["buffers"] = desc["buffers"]
    return desc, [f"session {name}: {n}" for n in notes]


def parse(data: bytes, source: str = "<session file>") -> list[tuple[dict, list[str]]]:
    """The sessions of one ``.lttng`` document: (description, lines saying what was skipped) each.

    Malformed input raises ``SessionError`` naming ``source`` and the problem, in one line.
    A document type declaration is refused outright (entity expansion is a denial of service;
    lttng never writes one).
    """
    r = _Reader(source)
    if len(data) > MAX_DOCUMENT:
        raise r.fail(f"larger than {MAX_DOCUMENT >> 20} MiB: not a session file")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise r.fail("has a document type declaration: not a session file")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise r.fail(f"malformed XML ({exc})") from None
    if root.tag != "sessions":
        raise r.fail(f"the root element is <{root.tag[:40]}>, not <sessions>: not a session file")
    out = []
    for s in root.iterfind("session"):
        out.append(_session(r, s))
    if not out:
        raise r.fail("holds no <session>")
    return out
