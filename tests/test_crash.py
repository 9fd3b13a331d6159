"""`ust create --shm-path` and `ust crash` (issue 13): a session's buffers outlive a crash of every
process, and their events are recovered as a CTF trace babeltrace2 reads.

Each test runs real daemons and a real application, then SIGKILLs them all at once (the consumer
is frozen first, so that what is in the buffers stays there: a consumer that outlived the session
daemon would write it out, as it should), and compares what `ust crash` recovers with what the
application wrote.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import babeltrace2_text
from daemon_util import HERE, SRC, App, needs_bt, read_events, ust_env, values, wait_until  # noqa: F401

PACED = os.path.join(HERE, "apps", "paced.py")


def _crash_everything(env, apps) -> None:
    """SIGKILL the applications, the consumer and the session daemon, the consumer frozen first."""
    from ust.control import sessiond_pid

    consumer = env.client().ping()["consumer_pid"]
    sessiond = sessiond_pid(env.home)
    os.kill(consumer, signal.SIGSTOP)
    for pid in [a.pid for a in apps] + [sessiond, consumer]:
        os.kill(pid, signal.SIGKILL)
    for a in apps:
        a.proc.wait(30)
    wait_until(lambda: not _alive(consumer) and not _alive(sessiond), what="the daemons' death")


def _consumer_idle(env) -> bool:
    """Every buffer's complete packets have been taken (and written) by the consumer."""
    stats = env.client().call("stats")["traces"]
    buffers = [b for t in stats.values() for ch in t.values() for b in ch]
    return bool(buffers) and any(b["packets_read"] for b in buffers) and \
        all(b["write_offset"] - b["consumed"] < 16384 for b in buffers)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] not in "ZX"
    except FileNotFoundError:
        return False


def _start(env, *create_args, channel=("--subbuf-size", "16k", "--num-subbuf", "8"), buffers="--buffers-uid"):
    shm = os.path.join(env.home, "shm")
    env.ust("create", "s", *create_args, "--shm-path", shm)
    env.ust("enable-channel", "channel0", *channel, buffers)
    env.ust("enable-event", "app:alpha")
    env.ust("start")
    return shm


def _app(env, **extra):
    p = subprocess.Popen([sys.executable, PACED], env=env.env(**extra), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    env.procs.append(p)
    app = App(p)
    os.sched_setaffinity(app.pid, {0})  # one stream: the order of its events is the order written
    env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    return app


@needs_bt
@pytest.mark.parametrize("buffers", ["--buffers-uid", "--buffers-pid"])
def test_crash_recovers_what_the_consumer_had_not_written(ust_env, buffers):
    """Discard mode: the trace on disk and the recovered trace together hold every event the
    application wrote, each once, the last partly-filled packet's included."""
    shm = _start(ust_env, "-o", ust_env.out, buffers=buffers)
    app = _app(ust_env)
    app.send("emit 3000 0")
    # The next events stay in the buffers: the consumer is frozen before they are written, once it
    # has taken every complete packet (frozen between taking a packet and writing it, it would
    # lose that packet: neither in the trace nor in the buffer).
    consumer = ust_env.client().ping()["consumer_pid"]
    wait_until(lambda: _consumer_idle(ust_env), what="the consumer to take the complete packets")
    os.kill(consumer, signal.SIGSTOP)
    app.send("emit 2000 3000")
    _crash_everything(ust_env, [app])

    kind = "uid" if buffers == "--buffers-uid" else "pid"
    [session_dir] = glob.glob(os.path.join(shm, "s-*"))
    assert glob.glob(os.path.join(session_dir, "ust", kind, "*", "*" if kind == "uid" else "", "metadata")) or \
        glob.glob(os.path.join(session_dir, "ust", kind, "*", "metadata"))
    for f in glob.glob(os.path.join(session_dir, "**", "channel0_*"), recursive=True):
        st = os.lstat(f)
        assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.geteuid()
    extracted = os.path.join(ust_env.home, "extracted")
    _, out, err = ust_env.ust("crash", "-x", extracted, shm)
    assert "Recovered" in out and err == ""
    recovered = values(read_events(extracted))  # babeltrace2 reads it, no warning
    written = values(read_events(ust_env.out))
    assert recovered, "nothing recovered"
    assert 4999 in recovered  # the packet being filled at the crash
    assert sorted(written + recovered) == list(range(5000))
    # the recovered trace is laid out as the session's output
    assert glob.glob(os.path.join(extracted, "s-*", "ust", kind, "*"))


@needs_bt
@pytest.mark.parametrize("buffers", ["--buffers-uid", "--buffers-pid"])
def test_crash_recovers_a_flight_recorder(ust_env, buffers):
    """Overwrite mode (a snapshot session, never written out): the newest events, up to the last
    one, in order, from the oldest packet still in the buffer; the overwritten ones are reported
    by babeltrace2 as discarded packets."""
    shm = _start(ust_env, "--snapshot", "-o", ust_env.out, channel=("--subbuf-size", "4k", "--num-subbuf", "4"),
                 buffers=buffers)
    app = _app(ust_env)
    app.send("emit 20000 0")
    _crash_everything(ust_env, [app])
    extracted = os.path.join(ust_env.home, "extracted")
    ust_env.ust("crash", "-x", extracted, shm)
    out, err = babeltrace2_text(extracted)
    v = values(read_events_text(out))
    assert v and v[-1] == 19999
    assert v == list(range(v[0], 20000))
    assert re.search(r"discarded \d+ packets", err)


@needs_bt
def test_crash_drops_the_event_being_written(ust_env):
    """An event reserved but not committed when everything died is cut out, never half-read; the
    events before it are recovered, and the loss is counted (babeltrace2 reports it)."""
    shm = _start(ust_env, "-o", ust_env.out)
    app = _app(ust_env, UST_TEST_PAUSE_AFTER_RESERVE="700:600000")
    consumer = ust_env.client().ping()["consumer_pid"]
    os.kill(consumer, signal.SIGSTOP)
    app.proc.stdin.write("emit 1000 0\n")
    app.proc.stdin.flush()
    ready, _, _ = select.select([app.proc.stderr], [], [], 120)
    assert ready and "paused after reserve" in app.proc.stderr.readline()
    _crash_everything(ust_env, [app])
    extracted = os.path.join(ust_env.home, "extracted")
    ust_env.ust("crash", "-x", extracted, shm)
    out, err = babeltrace2_text(extracted)
    recovered = values(read_events_text(out))
    written = values(read_events(ust_env.out)) if glob.glob(os.path.join(ust_env.out, "ust")) else []
    assert sorted(written + recovered) == list(range(699))  # v = 699 was being written
    assert re.search(r"discarded 1 event", err), err


@needs_bt
def test_crash_views_by_default(ust_env):
    """Without -x, `ust crash` prints the events as `ust view` does, and leaves nothing behind."""
    shm = _start(ust_env, "--snapshot", "-o", ust_env.out)
    app = _app(ust_env)
    app.send("emit 50 0")
    _crash_everything(ust_env, [app])
    before = set(os.listdir("/tmp"))
    _, out, _ = ust_env.ust("crash", shm)
    lines = [line for line in out.splitlines() if "app:alpha" in line]
    assert len(lines) == 50 and "v = 49" in lines[-1]
    r = subprocess.run([sys.executable, "-m", "ust.cli", "crash", "-e", "babeltrace2 --names=none", shm],
                       env=ust_env.env(UST_AGENT="0"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and len([line for line in r.stdout.splitlines() if "app:alpha" in line]) == 50
    assert not [n for n in set(os.listdir("/tmp")) - before if n.startswith("ust-crash-")]


def test_shm_files_are_removed_by_destroy(ust_env):
    """As lttng: a session destroyed normally leaves no buffer file behind."""
    shm = _start(ust_env, "-o", ust_env.out)
    app = _app(ust_env)
    app.send("emit 10 0")
    assert glob.glob(os.path.join(shm, "s-*", "ust", "uid", "*", "64-bit", "channel0_0"))
    ust_env.ust("destroy", "s")
    assert not [f for _, _, files in os.walk(shm) for f in files]


def test_crash_bad_input_is_one_line(ust_env, tmp_path):
    def crash(*args):
        return ust_env.ust("crash", *args, check=False)

    shm = tmp_path / "shm"
    shm.mkdir()
    rc, _, err = crash(str(tmp_path / "nope"))
    assert rc != 0 and err.count("\n") == 1 and "No such file" in err
    rc, _, err = crash(str(shm))
    assert rc != 0 and err.count("\n") == 1 and "no trace found" in err
    trace = shm / "ust" / "uid" / "0" / "64-bit"
    trace.mkdir(parents=True)
    (trace / "metadata").write_text("/* CTF 1.8 */ this is not TSDL")
    (trace / "channel0_0").write_bytes(b"\0" * 8192)
    rc, _, err = crash("-x", str(tmp_path / "x1"), str(shm))
    assert rc == 2 and "nothing recovered" in err and "metadata: cannot be parsed" in err and err.count("\n") == 1
    rc, _, err = crash("-x", str(shm / "x2"), str(shm))
    assert rc != 0 and "is inside" in err and err.count("\n") == 1



# ---------------------------------------------------------------------------
# hostile or corrupt files


def read_events_text(text: str) -> list[tuple[str, str]]:
    from daemon_util import _EVENT_RE

    events = []
    for line in text.splitlines():
        m = _EVENT_RE.match(line)
        assert m, f"unexpected babeltrace2 line {line!r}"
        events.append((m.group(1).rstrip(":"), m.group(2)))
    return events


FUZZ_DRIVER = r"""
import json, os, random, shutil, sys
sys.path.insert(0, sys.argv[1])
from ust.consumer.crash import CrashError, recover
from ust.ctf import read_trace
from ust.errors import UstError

src, work, seed, rounds = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
files = []
for d, _, names in os.walk(src):
    files += [os.path.join(d, n) for n in names if n.startswith("channel0_")]
results = []
for i in range(rounds):
    case = os.path.join(work, f"case{i}")
    shutil.copytree(src, case)
    target = os.path.join(case, os.path.relpath(rng.choice(files), src))
    data = bytearray(open(target, "rb").read())
    kind = rng.choice(["header", "slots", "data", "any", "truncate"])
    if kind == "truncate":
        del data[rng.randrange(len(data)):]
    else:
        lo, hi = {"header": (0, 4096), "slots": (4096, 8192), "data": (8192, len(data)), "any": (0, len(data))}[kind]
        for _ in range(rng.randint(1, 16)):
            pos = rng.randrange(lo, min(hi, len(data)))
            data[pos] = rng.randrange(256) if rng.random() < 0.7 else 0xFF
    open(target, "wb").write(bytes(data))
    out = os.path.join(work, f"out{i}")
    try:
        report = recover(case, out)
    except UstError as exc:
        results.append({"case": i, "kind": kind, "error": str(exc)})
        continue
    n = sum(1 for _ in read_trace(out))  # ust's reader reads every event recovered
    results.append({"case": i, "kind": kind, "events": n, "out": out, "errors": report.errors})
print(json.dumps(results))
"""


@needs_bt
def test_crash_recovery_fuzz(ust_env, tmp_path):
    """Corrupt buffer files (bytes flipped in the header, the slot table or the data, or cut short):
    the recovery never crashes nor hangs, each problem is one line, and what it recovers is a trace
    both ust's reader and babeltrace2 read."""
    shm = _start(ust_env, "--snapshot", "-o", ust_env.out, channel=("--subbuf-size", "4k", "--num-subbuf", "4"))
    app = _app(ust_env)
    app.send("emit 3000 0")
    _crash_everything(ust_env, [app])
    work = tmp_path / "fuzz"
    work.mkdir()
    seed = random.randrange(1 << 30)
    r = subprocess.run([sys.executable, "-c", FUZZ_DRIVER, SRC, shm, str(work), str(seed), "120"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"the recovery crashed (seed {seed}): {r.stderr[-2000:]}"
    results = json.loads(r.stdout)
    assert len(results) == 120
    for res in results:
        for line in [res.get("error", "")] + res.get("errors", []):
            assert "\n" not in line and "Traceback" not in line
        if "out" in res:
            rc = subprocess.run(["babeltrace2", res["out"]], capture_output=True, text=True, timeout=120)
            assert rc.returncode == 0, f"seed {seed}, case {res}: babeltrace2 failed: {rc.stderr[-1500:]}"
    assert any(res.get("events") for res in results), "nothing was ever recovered"


def test_geometry_of_a_hostile_header_is_refused(tmp_path):
    """A header whose sizes wrap around (a sub-buffer of 2^63 bytes) placed the data outside the
    mapping: now refused in one line."""
    import struct

    from ust._ring._ring import Buffer

    path = tmp_path / "buf"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        Buffer.create(4096, 2, fd=fd)
    finally:
        os.close(fd)
    data = bytearray(path.read_bytes())
    # magic u64, version u32, overwrite u32, subbuf_size u64, num_subbuf u64, slots_offset, data_offset, total
    _, _, _, _, nsub, slots, doff, total = struct.unpack_from("<QIIQQQQQ", data)
    struct.pack_into("<QQ", data, 16, 1 << 63, nsub)
    struct.pack_into("<Q", data, 40, (total - (1 << 63)) % (1 << 64))
    path.write_bytes(bytes(data))
    with open(path, "rb+") as f, pytest.raises(ValueError, match="inconsistent geometry"):
        Buffer.attach(f.fileno())


def test_shm_path_is_saved_and_loaded(ust_env, tmp_path):
    """`ust save` writes the session's shm path as lttng does (<shared_memory_path>, valid against
    lttng's session.xsd when installed); `ust load` gives the loaded session its buffers there."""
    shm = os.path.join(ust_env.home, "shm")
    _, out, _ = ust_env.ust("create", "s", "-o", ust_env.out, "--shm-path", shm)
    [session_dir] = [s["shm_path"] for s in ust_env.client().list_sessions()]
    assert f"Shared memory path set to {session_dir}" in out  # as lttng's create says it
    assert f"Shared memory path: {session_dir}" in ust_env.ust("list", "s")[1]
    assert os.path.dirname(session_dir) == shm and os.path.basename(session_dir).startswith("s-")
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("save", "s", "-o", str(tmp_path))
    text = (tmp_path / "s.lttng").read_text()
    assert f"<shared_memory_path>{session_dir}</shared_memory_path>" in text
    schema = "/usr/share/xml/lttng/session.xsd"
    if os.path.exists(schema) and shutil.which("xmllint"):
        r = subprocess.run(["xmllint", "--noout", "--schema", schema, str(tmp_path / "s.lttng")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    ust_env.ust("destroy", "s")
    ust_env.ust("load", "s", "-i", str(tmp_path))
    assert ust_env.client().get_session("s")["shm_path"] == session_dir
    ust_env.ust("start", "s")
    app = _app(ust_env)
    app.send("emit 5 0")
    assert glob.glob(os.path.join(session_dir, "ust", "uid", "*", "64-bit", "channel0_0"))
    assert glob.glob(os.path.join(session_dir, "ust", "uid", "*", "64-bit", "metadata"))


@needs_bt
def test_crash_drops_packets_whose_times_babeltrace2_cannot_convert(ust_env, tmp_path):
    """Found by the fuzz test: a header's last or first timestamp set near 2^64 (the time the open
    packet is closed at, the gap marker's beginning) made babeltrace2 refuse the whole trace
    ("Cannot convert clock cycles to nanoseconds from origin"). Such packets are dropped now;
    babeltrace2 reads the others."""
    import struct

    shm = _start(ust_env, "--snapshot", "-o", ust_env.out, channel=("--subbuf-size", "4k", "--num-subbuf", "4"))
    app = _app(ust_env)
    app.send("emit 5000 0")
    _crash_everything(ust_env, [app])
    [stream] = glob.glob(os.path.join(shm, "s-*", "ust", "uid", "*", "64-bit", "channel0_0"))
    with open(stream, "r+b") as f:  # struct ust_shm_header: last_timestamp at 136, first_timestamp at 240
        f.seek(136)
        f.write(struct.pack("<Q", (1 << 64) - 5))
        f.seek(240)
        f.write(struct.pack("<Q", (1 << 63) + 5))
    extracted = tmp_path / "x"
    _, _, err = ust_env.ust("crash", "-x", str(extracted), shm)
    assert "corrupt packet(s) dropped" in err
    out, _ = babeltrace2_text(extracted)
    v = values(read_events_text(out))
    assert v and v == list(range(v[0], v[0] + len(v)))  # the whole packets before the open one
