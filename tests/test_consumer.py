"""The consumer side: drain, loss accounting, dead writers, torn files, crashed sessions."""

from __future__ import annotations

import glob
import os
import re
import struct
import signal
import subprocess
import sys
import tempfile
import textwrap

from conftest import babeltrace2_text, needs_babeltrace2
from daemon_util import read_events, ust_env, values, wait_until  # noqa: F401  (ust_env is a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
PACED = os.path.join(HERE, "apps", "paced.py")
SRC = os.path.join(os.path.dirname(HERE), "src")


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["UST_AGENT"] = "0"
    env.update(extra)
    return env


# -- issue 8 item 11: a crashed embedded session leaves nothing behind ---------------------------


@needs_babeltrace2
def test_sigkilled_embedded_session_leaves_no_temporary_directory(tmp_path):
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    out = tmp_path / "trace"
    code = textwrap.dedent(f"""
        import sys, time, ust
        s = ust.Session({str(out)!r}, events=["crash:*"]).start()
        tp = ust.tracepoint("crash:ev", {{"v": ust.int32}})
        for i in range(100):
            tp(i)
        print("ready", flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], env=child_env(TMPDIR=str(private_tmp)),
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert os.listdir(private_tmp) == [], "the session left files in the temporary directory"
    # What it wrote is a trace babeltrace2 opens, and a new session on the same output starts cleanly.
    babeltrace2_text(out)
    code2 = textwrap.dedent(f"""
        import ust
        with ust.Session({str(out)!r}, events=["crash:*"]):
            tp = ust.tracepoint("crash:ev", {{"v": ust.int32}})
            for i in range(7):
                tp(i)
    """)
    r = subprocess.run([sys.executable, "-c", code2], env=child_env(TMPDIR=str(private_tmp)),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text, _ = babeltrace2_text(out)
    assert text.count("crash:ev") == 7
    assert os.listdir(private_tmp) == []


# -- issue 8 item 9: events_discarded is monotonic per stream and sums to our count ---------------

PACKET_HEADER = struct.Struct("<I16sIQQQQQQQI")  # _ring/layout.h's ust_packet_header


def packet_headers(path) -> list[tuple]:
    """(packet_seq_num, events_discarded, packet bytes) of every packet of a stream file."""
    data = open(path, "rb").read()
    out, pos = [], 0
    while pos < len(data):
        magic, _uuid, _sid, _inst, _tb, _te, _content, size, seq, discarded, _cpu = \
            PACKET_HEADER.unpack_from(data, pos)
        assert magic == 0xC1FC1FC1, f"{path}: bad magic at {pos}"
        out.append((seq, discarded, size // 8))
        pos += size // 8
    return out


@needs_babeltrace2
def test_events_discarded_monotonic_and_exact_with_many_writers(tmp_path):
    """Four processes of two threads each write into a tiny shared buffer: packets
    close while other writers are losing events. Every stream's events_discarded
    never goes down and its last value is the stream's own lost count, so
    babeltrace2's discarded total equals the session's."""
    out = tmp_path / "trace"
    code = textwrap.dedent(f"""
        import os, sys, threading, ust
        s = ust.Session({str(out)!r}, events=["disc:*"], subbuf_size=4096, num_subbuf=2)
        s.start()
        tp = ust.tracepoint("disc:ev", {{"v": ust.int64, "s": ust.string}})
        def work():
            for i in range(40000):
                tp(i, "x" * (i % 23))
        kids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                ts = [threading.Thread(target=work) for _ in range(2)]
                [t.start() for t in ts]
                [t.join() for t in ts]
                os._exit(0)
            kids.append(pid)
        for pid in kids:
            os.waitpid(pid, 0)
        s.stop()
        print(s.counters()["lost"], flush=True)
        print(*[b.counters()["lost_full"] + b.counters()["lost_big"] for b in s.buffers], flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    lost = int(lines[0])
    per_stream = [int(x) for x in lines[1].split()]
    assert lost > 0, "the buffer was never full: the test did not exercise losses"
    trace_dir = out / "ust" / "uid" / str(os.getuid()) / "64-bit"
    for cpu, stream_lost in enumerate(per_stream):
        headers = packet_headers(trace_dir / f"channel0_{cpu}")
        discarded = [d for _, d, _ in headers]
        drops = [(a, b) for a, b in zip(discarded, discarded[1:]) if b < a]
        assert not drops, f"channel0_{cpu}: events_discarded went down: {drops[:5]}"
        assert (discarded[-1] if discarded else 0) == stream_lost
    _, err = babeltrace2_text(out)
    reported = sum(int(n) for n in re.findall(r"discarded (\d+) events?\b", err))
    assert reported == lost


@needs_babeltrace2
def test_events_discarded_never_goes_down_when_a_closer_is_delayed(ust_env):
    """A writer delayed between the CAS that closes a packet and writing the
    packet's header (the test hook sleeps there) while another process fills
    the next packet and loses events: the delayed packet must not carry a larger
    count than the next one (babeltrace2 printed "discarded 18446744073709534413
    events"), and the counts sum to what `ust stop` reports."""
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-channel", "channel0", "--subbuf-size", "4k", "--num-subbuf", "4")
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    delayed = ust_env.app(PACED, UST_TEST_PAUSE_AFTER_RESERVE="3:500:close")
    busy = ust_env.app(PACED)
    for app in (delayed, busy):
        os.sched_setaffinity(app.pid, {0})  # both write channel0_0
        ust_env.wait_registered(app.pid)
        wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    busy.proc.stdin.write("emit 300000 0 2\n")  # 1000 events, 2 ms pause, ... for about a second
    busy.proc.stdin.flush()
    delayed.send("emit 3000 1000000 2")
    assert busy.proc.stdout.readline().startswith("ok")
    _, out, _ = ust_env.ust("stop")
    m = re.search(r"Warning: (\d+) events were discarded", out)
    lost = int(m.group(1)) if m else 0
    assert lost > 0
    trace_dir = glob.glob(os.path.join(ust_env.out, "ust", "uid", "*", "64-bit"))[0]
    total = 0
    for stream in sorted(glob.glob(os.path.join(trace_dir, "channel0_*"))):
        discarded = [d for _, d, _ in packet_headers(stream)]
        drops = [(a, b) for a, b in zip(discarded, discarded[1:]) if b < a]
        assert not drops, f"{stream}: events_discarded went down: {drops[:5]}"
        total += discarded[-1] if discarded else 0
    assert total == lost
    _, err = babeltrace2_text(ust_env.out)
    assert sum(int(n) for n in re.findall(r"discarded (\d+) events?\b", err)) == lost
    _, stats, _ = ust_env.ust("stats", ust_env.out)
    assert f"discarded events: {lost}" in stats, stats  # `ust stats` over-counted


@needs_babeltrace2
def test_stop_reports_overwritten_packets(ust_env):
    """Overwrite mode loses whole packets: `ust stop` says how many, and the
    count is exactly the packets missing from the stream files (packet_seq_num
    gaps, including those before the first packet on disk: a stream whose
    first packets were lost starts with an empty packet of seq 0 standing for
    packet 0, so that babeltrace2 reports the gap after it)."""
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-channel", "channel0", "--subbuf-size", "4k", "--num-subbuf", "2", "--overwrite")
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app = ust_env.app(PACED)
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    # The consumer is stopped while the application writes, so the writer laps
    # the 8 KiB buffer many times whatever the machine's load (a consumer given
    # the CPU at the right moments kept up with it on a loaded machine).
    consumer = ust_env.client().ping()["consumer_pid"]
    os.kill(consumer, signal.SIGSTOP)
    try:
        app.send("emit 200000 0")
    finally:
        os.kill(consumer, signal.SIGCONT)
    _, out, _ = ust_env.ust("stop")
    m = re.search(r"Warning: (\d+) packets were overwritten", out)
    assert m, out
    trace_dir = glob.glob(os.path.join(ust_env.out, "ust", "uid", "*", "64-bit"))[0]
    missing = markers = 0
    for stream in glob.glob(os.path.join(trace_dir, "channel0_*")):
        headers = packet_headers(stream)
        if len(headers) > 1 and headers[0][0] == 0 and headers[0][2] == PACKET_HEADER.size and headers[1][0] > 1:
            headers = headers[1:]  # the gap marker: packet 0 was lost too
            markers += 1
        seqs = [seq for seq, _, _ in headers]
        if seqs:
            missing += seqs[-1] + 1 - len(seqs)
    assert missing > 0 and int(m.group(1)) == missing
    _, err = babeltrace2_text(ust_env.out)
    reported = sum(int(n) for n in re.findall(r"discarded (\d+) packets?\b", err))
    assert reported == missing - markers  # each marker stands for one lost packet itself


# -- issue 7 item 4: the consumer keeps up with a steady writer, with the default buffers ---------

STEADY_RATE = 250_000  # events/s: a quarter of the benchmark's, for a loaded 2-core machine
STEADY_SECONDS = 5


def test_default_buffers_are_lttngs():
    import ust
    from ust.daemon.sessiond import ChannelConf

    s = ust.Session("/nonexistent/never-started")
    assert (s.subbuf_size, s.num_subbuf) == (512 * 1024, 4)
    assert (ChannelConf("c").subbuf_size, ChannelConf("c").num_subbuf) == (512 * 1024, 4)


def _no_loss_in_trace(trace) -> None:
    from ust.ctf.writer import last_events_discarded

    streams = [p for p in glob.glob(os.path.join(str(trace), "ust", "uid", "*", "64-bit", "channel0_*"))]
    assert streams
    assert [last_events_discarded(p) for p in streams] == [0] * len(streams)
    r = subprocess.run(["babeltrace2", "--output-format=dummy", str(trace)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@needs_babeltrace2
def test_steady_writer_loses_nothing_embedded(tmp_path):
    code = textwrap.dedent(f"""
        import sys, ust
        sys.path.insert(0, {os.path.join(HERE, "apps")!r})
        s = ust.Session({str(tmp_path / "trace")!r}, events=["app:*"]).start()
        sys.argv = ["paced"]
        sys.stdin = iter(["rate {STEADY_RATE * STEADY_SECONDS} {STEADY_RATE}", "exit"])
        import paced
        s.stop()
        print("lost", s.lost)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["lost", "0"], r.stdout
    _no_loss_in_trace(tmp_path / "trace")


@needs_babeltrace2
def test_steady_writer_loses_nothing_daemon(ust_env):
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")  # channel0 with the default buffers
    ust_env.ust("start")
    app = ust_env.app(PACED)
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.proc.stdin.write(f"rate {STEADY_RATE * STEADY_SECONDS} {STEADY_RATE}\n")
    app.proc.stdin.flush()
    assert app.proc.stdout.readline().startswith("ok")
    _, out, _ = ust_env.ust("stop")
    assert "discarded" not in out, out
    _no_loss_in_trace(ust_env.out)


def test_embedded_drain_needs_the_gil_rarely(tmp_path):
    """The application's thread holds the GIL (it spins, paced at 250k events/s,
    never sleeping) and gives it up only every 100 ms (the switch interval). The
    drain thread drains and sleeps in C without the GIL and needs it about once
    a second: it keeps up (2 MiB of buffer = 400 ms at this rate). Before, it
    needed the GIL half a dozen times per wake-up, 100 ms each."""
    code = textwrap.dedent(f"""
        import sys, time, ust
        sys.setswitchinterval(0.1)
        tp = ust.tracepoint("spin:ev", {{"i": ust.int32, "s": ust.string}})
        s = ust.Session({str(tmp_path / "trace")!r}, events=["spin:*"]).start()
        rate, count = 250_000, 750_000
        t0 = time.monotonic()
        v = 0
        while v < count:
            if time.monotonic() < t0 + v / rate:
                continue  # spin: keep the GIL
            for i in range(v, v + 100):
                tp(i, "abcdefghij")
            v += 100
        s.stop()
        print("lost", s.lost)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["lost", "0"], r.stdout


# -- issue 8 item 7: a full disk or a killed consumer never leaves a cut packet -----------------


def _mount_tmpfs(path, size: str) -> None:
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode:
        import pytest

        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


def _stream_files_end_on_packets(trace) -> int:
    from ust.ctf.writer import whole_packets_size

    n = 0
    for stream in glob.glob(os.path.join(str(trace), "ust", "uid", "*", "64-bit", "channel0_*")):
        size = os.path.getsize(stream)
        fd = os.open(stream, os.O_RDONLY)
        try:
            assert whole_packets_size(fd, size) == size, f"{stream} ends with a cut packet"
        finally:
            os.close(fd)
        n += size
    return n


@needs_babeltrace2
def test_full_disk_keeps_the_trace_readable_and_is_reported_once(ust_env):
    """The trace goes to a 1 MiB tmpfs and the application writes ~8 MB. Every
    stream file ends on a packet boundary (babeltrace2 reads all of it), the
    consumer says so once per stream file and once at the end with the events
    lost (not a traceback per retry), and stop and destroy succeed the first time."""
    mnt = os.path.join(ust_env.home, "small")
    _mount_tmpfs(mnt, "1m")
    try:
        out = os.path.join(mnt, "trace")
        ust_env.ust("create", "s", "-o", out)
        ust_env.ust("enable-channel", "channel0", "--subbuf-size", "64k", "--num-subbuf", "4")
        ust_env.ust("enable-event", "app:alpha")
        ust_env.ust("start")
        app = ust_env.app(PACED)
        ust_env.wait_registered(app.pid)
        wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
        app.send("emit 400000 0 1")
        _, stop_out, _ = ust_env.ust("stop")
        lost = int(re.search(r"Warning: (\d+) events were discarded", stop_out).group(1))
        assert lost > 0
        assert _stream_files_end_on_packets(out) > 0
        text, _ = babeltrace2_text(out)
        v = [int(x) for x in re.findall(r"\bv = (\d+)", text)]
        assert v and v == sorted(v) and len(set(v)) == len(v)
        assert len(v) + lost <= 400000
        ust_env.ust("destroy", "s")  # first time
        log = open(os.path.join(ust_env.home, "sessiond.log")).read()
        assert "Traceback" not in log, log[-3000:]
        ncpu = os.cpu_count() or 1
        assert 1 <= log.count("No space left on device") <= ncpu + 1, log[-3000:]
        assert re.search(r"and \d+ events were discarded", log), log[-3000:]
    finally:
        subprocess.run(["umount", "-l", mnt])


@needs_babeltrace2
def test_restarted_consumer_cuts_a_torn_last_packet(ust_env):
    """A consumer SIGKILLed in the middle of a write leaves part of a packet at
    the end of a stream file (here: the consumer is killed for real, and the
    cut write it would have left is appended to a stream file while no
    consumer runs). The consumer the sessiond starts next cuts it off before
    appending: babeltrace2 reads every event, before and after."""
    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    app = ust_env.app(PACED)
    ust_env.wait_registered(app.pid)
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    app.send("emit 5000 0")
    ust_env.ust("stop")
    ust_env.ust("start")
    wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied again")
    c = ust_env.client()
    old = c.ping()["consumer_pid"]
    os.kill(old, signal.SIGKILL)
    streams = [p for p in glob.glob(os.path.join(ust_env.out, "ust", "uid", "*", "64-bit", "channel0_*"))
               if os.path.getsize(p)]
    with open(streams[0], "rb") as f:
        first_packet_start = f.read(3000)
    with open(streams[0], "ab") as f:
        f.write(first_packet_start)  # what a write cut after 3000 bytes leaves
    wait_until(lambda: (c.ping()["consumer_pid"] or old) != old, what="a new consumer")
    app.send("emit 5000 5000")
    ust_env.ust("stop")
    v = values(read_events(ust_env.out))
    assert sorted(v) == list(range(10000))
    assert _stream_files_end_on_packets(ust_env.out) > 0


# -- issue 8 item 5: a writer killed between reserve and commit does not stall the stream --------


@needs_babeltrace2
def test_writers_killed_mid_event_do_not_stall_a_shared_stream(ust_env):
    """Five applications sharing a per-UID stream with a bystander are each
    stopped between reserve and commit (the test hook) and SIGKILLed there.
    Their packets can never complete by themselves; the consumer sees the
    writers are dead, repairs the packets (the dead reservations are cut out,
    each counted as one discarded event) and the stream goes on: the
    bystander loses nothing, and babeltrace2 reads the whole trace."""
    import select as select_mod

    ust_env.ust("create", "s", "-o", ust_env.out)
    ust_env.ust("enable-channel", "channel0", "--subbuf-size", "256k", "--num-subbuf", "4")
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    bystander = ust_env.app(PACED)
    victims = []
    for i in range(5):
        p = subprocess.Popen([sys.executable, PACED], env=ust_env.env(UST_TEST_PAUSE_AFTER_RESERVE=f"{200 + 37 * i}:600000"),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             bufsize=1)
        ust_env.procs.append(p)
        from daemon_util import App

        victims.append(App(p))
    for app in [bystander] + victims:
        os.sched_setaffinity(app.pid, {0})  # one shared stream: channel0_0
        ust_env.wait_registered(app.pid)
        wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    bystander.proc.stdin.write("rate 100000 20000\n")  # 5 s
    bystander.proc.stdin.flush()
    for i, v in enumerate(victims):
        v.proc.stdin.write(f"emit 100000 {1_000_000 * (i + 1)}\n")
        v.proc.stdin.flush()
    for v in victims:  # each stops between reserve and commit
        ready, _, _ = select_mod.select([v.proc.stderr], [], [], 120)
        assert ready and "paused after reserve" in v.proc.stderr.readline()
        v.proc.send_signal(signal.SIGKILL)
        v.proc.wait()
    assert bystander.proc.stdout.readline().startswith("ok")
    _, out, _ = ust_env.ust("stop")
    events = read_events(ust_env.out)  # babeltrace2: no error
    mine = [x for x in values(events) if x < 1_000_000]
    assert mine == list(range(100000)), f"the bystander lost {100000 - len(mine)} events"
    stats = ust_env.client().call("stats")["traces"]
    bufs = [b for t in stats.values() for ch in t.values() for b in ch]
    assert sum(b["lost_dead"] for b in bufs) == 5  # the five events in flight
    assert sum(b["packets_reclaimed"] for b in bufs) >= 1
    for stream in glob.glob(os.path.join(ust_env.out, "ust", "uid", "*", "64-bit", "channel0_*")):
        discarded = [d for _, d, _ in packet_headers(stream)]
        assert all(b >= a for a, b in zip(discarded, discarded[1:]))


@needs_babeltrace2
def test_new_channel_is_drained_from_its_first_packet(ust_env):
    """An application writing 50k events/s (~1 MB/s) the moment a session
    starts, into 4 x 128 KiB (~0.5 s at this rate), with a 10 s read timer:
    the consumer must be listening for its wake-ups from the first packet,
    not only after its current sleep (the drain loop returns at least once a
    second: a consumer relying on that loses ~half of every second's events).
    The rate leaves a consumer that does listen ~0.4 s to be scheduled, which
    a loaded machine gives it; at 1M events/s (25 ms) it did not always.
    Four sessions: each start falls at another moment of the consumer's sleep."""
    app = ust_env.app(PACED)
    ust_env.wait_registered(app.pid)
    for i in range(4):
        ust_env.ust("create", f"s{i}", "-o", os.path.join(ust_env.out, str(i)))
        ust_env.ust("enable-channel", "channel0", "-s", f"s{i}", "--subbuf-size", "128k", "--num-subbuf", "4",
                    "--read-timer", "10000000")
        ust_env.ust("enable-event", "app:alpha", "-s", f"s{i}")
        ust_env.ust("start", f"s{i}")
        app.send("rate 150000 50000")
        _, out, _ = ust_env.ust("stop", f"s{i}")
        assert "discarded" not in out, f"session {i}: {out}"
        ust_env.ust("destroy", f"s{i}")


@needs_babeltrace2
def test_writer_killed_mid_event_does_not_freeze_a_flight_recorder(ust_env):
    """A snapshot session (overwrite mode, nobody drains): an application is
    SIGKILLed between reserve and commit in a per-UID stream it shares with a
    bystander. Writers may enter a slot only when its previous lap is
    complete, so the dead reservation froze the slot and, once the bystander
    came round to it, the whole stream, until the session ended. The
    consumer's periodic pass repairs the packet without a snapshot being
    asked for, and a snapshot afterwards holds the bystander's newest events."""
    import select as select_mod

    from daemon_util import App

    ust_env.ust("create", "s", "--snapshot", "-o", ust_env.out)
    ust_env.ust("enable-channel", "channel0", "--subbuf-size", "4k", "--num-subbuf", "4")
    ust_env.ust("enable-event", "app:alpha")
    ust_env.ust("start")
    bystander = ust_env.app(PACED)
    p = subprocess.Popen([sys.executable, PACED], env=ust_env.env(UST_TEST_PAUSE_AFTER_RESERVE="150:600000"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    ust_env.procs.append(p)
    victim = App(p)
    for app in (bystander, victim):
        os.sched_setaffinity(app.pid, {0})  # one shared stream: channel0_0
        ust_env.wait_registered(app.pid)
        wait_until(lambda: '"attached": 1' in app.send("agent"), what="rule applied")
    victim.proc.stdin.write("emit 1000 1000000\n")
    victim.proc.stdin.flush()
    ready, _, _ = select_mod.select([victim.proc.stderr], [], [], 120)
    assert ready and "paused after reserve" in victim.proc.stderr.readline()
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    bystander.send("emit 20000 0")  # closes the dead writer's packet, laps round to its slot and stalls there

    def reclaimed():
        stats = ust_env.client().call("stats")["traces"]
        return sum(b["packets_reclaimed"] for t in stats.values() for ch in t.values() for b in ch)

    wait_until(lambda: reclaimed() >= 1, timeout=60, what="the consumer's repair of the dead writer's packet")
    bystander.send("emit 10 50000")
    _, out, _ = ust_env.ust("snapshot", "record")
    v = values(read_events(out.split("Snapshot recorded in ")[1].strip()))  # babeltrace2: no error
    assert v[-10:] == list(range(50000, 50010)), "the flight recorder stayed frozen"
