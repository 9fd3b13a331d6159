"""The ring buffer itself: packets, lost counts, overwrite, the spare sub-buffer,
sharing across processes through a passed file descriptor."""

import os
import struct
import subprocess
import sys

import pytest

import ust
from ust._ring import PACKET_HEADER_SIZE, Buffer, Channel

HEADER = struct.Struct("<I16sIQQQQQQQI")  # magic uuid stream_id instance ts_begin ts_end content packet seq discarded cpu
UUID = bytes(range(16))


def header(packet):
    return dict(zip(
        ("magic", "uuid", "stream_id", "instance", "ts_begin", "ts_end", "content_size", "packet_size",
         "seq", "discarded", "cpu"),
        HEADER.unpack_from(packet),
    ))


def make(subbuf=4096, n=4, overwrite=False, cpu=0):
    buf = Buffer.create(subbuf, n, overwrite=overwrite, stream_id=3, cpu=cpu, uuid=UUID)
    return buf, Channel([buf])


tp_u32 = ust.tracepoint("ring:u32", {"v": ust.uint32})
tp_blob = ust.tracepoint("ring:blob", {"b": ust.bytes})


def take_all(buf, force=False):
    out = []
    while (p := buf.get_subbuf(force=force)) is not None:
        out.append(bytes(p))
        p.release()
        buf.put_subbuf()
    return out


def values_in(packet):
    """Decode ring:u32 events (id 0, compact or extended header)."""
    h = header(packet)
    pos, end, vals = PACKET_HEADER_SIZE, h["content_size"] // 8, []
    while pos < end:
        (eid,) = struct.unpack_from("<H", packet, pos)
        pos += 6 if eid != 65535 else 14
        vals.append(struct.unpack_from("<I", packet, pos)[0])
        pos += 4
    assert pos == end, "events overrun the packet's content"
    return vals


def test_geometry_is_checked():
    with pytest.raises(ValueError):
        Buffer.create(1000, 4)
    with pytest.raises(ValueError):
        Buffer.create(4096, 3)
    with pytest.raises(ValueError):
        Buffer.create(4096, 4, uuid=b"short")
    r, w = os.pipe()
    with pytest.raises(ValueError):
        Buffer.attach(r)  # not a ring buffer
    os.close(r), os.close(w)


def test_empty_buffer_has_no_packet_and_flush_closes_the_partial_one():
    buf, ch = make()
    assert buf.get_subbuf() is None
    assert buf.flush() is False  # nothing open
    tp_u32.attach(ch, 0)
    try:
        for i in range(10):
            tp_u32(i)
    finally:
        tp_u32.detach(ch)
    assert buf.get_subbuf() is None  # the packet is still open
    assert buf.flush() is True
    (packet,) = take_all(buf)
    h = header(packet)
    assert h["magic"] == 0xC1FC1FC1 and h["uuid"] == UUID and h["stream_id"] == 3
    assert h["seq"] == 0 and h["discarded"] == 0 and h["content_size"] == len(packet) * 8
    assert h["ts_begin"] <= h["ts_end"]
    assert values_in(packet) == list(range(10))


def test_discard_mode_counts_exactly_what_it_drops():
    buf, ch = make(4096, 2)
    tp_u32.attach(ch, 0)
    try:
        for i in range(5000):  # 10 bytes each: far more than 2 x 4 KiB
            tp_u32(i)
    finally:
        tp_u32.detach(ch)
    buf.flush()
    packets = take_all(buf)
    kept = [v for p in packets for v in values_in(p)]
    lost = buf.counters()["lost_full"]
    assert lost > 0
    assert len(kept) + lost == 5000
    assert kept == list(range(len(kept)))  # discard keeps the oldest
    assert header(packets[-1])["discarded"] == lost


def test_event_larger_than_a_subbuffer_is_counted_apart():
    buf, ch = make(4096, 2)
    tp_blob.attach(ch, 1)
    try:
        tp_blob(b"x" * 5000)
        tp_blob(b"small")
    finally:
        tp_blob.detach(ch)
    c = buf.counters()
    assert c["lost_big"] == 1 and c["lost_full"] == 0
    buf.flush()
    (packet,) = take_all(buf)
    assert header(packet)["discarded"] == 1


def test_overwrite_keeps_the_newest_and_the_reader_spare_is_never_overwritten():
    buf, ch = make(4096, 4, overwrite=True)
    tp_u32.attach(ch, 0)
    try:
        for i in range(3000):
            tp_u32(i)
        held = buf.get_subbuf()  # the oldest complete packet, now the reader's
        snapshot = bytes(held)
        for i in range(3000, 20000):  # lap the buffer many times
            tp_u32(i)
        assert bytes(held) == snapshot  # the writer never touched what we hold
        held.release()
        buf.put_subbuf()
    finally:
        tp_u32.detach(ch)
    buf.flush()
    packets = take_all(buf)
    vals = [v for p in packets for v in values_in(p)]
    assert vals[-1] == 19999  # the newest event is kept
    assert vals == list(range(vals[0], 20000))  # a contiguous run of the newest
    assert buf.counters()["packets_overwritten"] > 0
    seqs = [header(p)["seq"] for p in packets]
    assert seqs == sorted(seqs)


CHILD = r"""
import mmap, os, sys, ust
from ust._ring import Buffer, Channel
fd, counter_path, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
buf = Buffer.attach(fd)
tp = ust.tracepoint("ring:u32", {"v": ust.uint32})
tp.attach(Channel([buf]), 0)
with open(counter_path, "r+b") as f:
    done = mmap.mmap(f.fileno(), 8)
    i = 0
    while True:
        tp(i)
        i += 1
        done[:8] = i.to_bytes(8, "little")  # i events committed
        if mode == "count" and i == 1000:
            break
"""


def _child(buf, tmp_path, mode):
    counter = tmp_path / "counter"
    counter.write_bytes(bytes(8))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(buf.fd), str(counter), mode], pass_fds=[buf.fd])
    return proc, counter


def test_a_buffer_is_shared_with_another_process_through_its_fd(tmp_path):
    buf, _ = make(1 << 16, 4)
    proc, _ = _child(buf, tmp_path, "count")
    assert proc.wait() == 0
    buf.flush()
    vals = [v for p in take_all(buf) for v in values_in(p)]
    assert vals == list(range(1000))


def test_a_writer_killed_with_sigkill_loses_nothing_it_committed(tmp_path):
    buf, _ = make(1 << 20, 32)  # 32 MiB: room for everything the child writes
    proc, counter = _child(buf, tmp_path, "forever")
    while int.from_bytes(counter.read_bytes()[:8], "little") < 50000:
        pass
    proc.kill()
    proc.wait()
    committed = int.from_bytes(counter.read_bytes()[:8], "little")
    buf.flush()
    vals = [v for p in take_all(buf, force=True) for v in values_in(p)]
    assert vals[:committed] == list(range(committed))
    assert len(vals) <= committed + 1  # at most the one in flight when it died


def blobs_in(packet):
    h = header(packet)
    pos, end, out = PACKET_HEADER_SIZE, h["content_size"] // 8, []
    while pos < end:
        (eid,) = struct.unpack_from("<H", packet, pos)
        pos += 6 if eid != 65535 else 14
        (n,) = struct.unpack_from("<I", packet, pos)
        out.append(packet[pos + 4:pos + 4 + n])
        pos += 4 + n
    assert pos == end
    return out


def test_events_of_every_size_fill_packets_to_every_boundary():
    buf, ch = make(4096, 256)
    sent = [bytes([k % 251]) * (k % 301) for k in range(3000)]
    tp_blob.attach(ch, 1)
    try:
        for b in sent:
            tp_blob(b)
    finally:
        tp_blob.detach(ch)
    buf.flush()
    packets = take_all(buf)
    assert [h["seq"] for h in map(header, packets)] == list(range(len(packets)))
    assert [b for p in packets for b in blobs_in(p)] == sent
    assert buf.counters()["lost_full"] == 0


def test_a_new_reader_recovers_after_a_reader_died_holding_a_packet():
    buf, ch = make(4096, 4)
    tp_u32.attach(ch, 0)
    try:
        for i in range(1000):
            tp_u32(i)
        held = buf.get_subbuf()  # this reader "dies" holding packet 0
        first = values_in(bytes(held))
        held.release()
        other = Buffer.attach(buf.fd)  # a restarted consumer maps the same buffer
        for i in range(1000, 3000):
            tp_u32(i)
    finally:
        tp_u32.detach(ch)
    other.flush()
    vals = [v for p in take_all(other) for v in values_in(p)]
    assert vals and vals[-1] == vals[0] + len(vals) - 1  # a clean, contiguous run after the lost packet
    assert vals[0] == first[-1] + 1
    assert other.counters()["lost_full"] > 0  # the buffer was full while nobody read


STRESS_CHILD = r"""
import sys, ust
from ust._ring import Buffer, Channel
fd, writer, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tp = ust.tracepoint("ring:u32", {"v": ust.uint32})
tp.attach(Channel([Buffer.attach(fd)]), 0)
for i in range(n):
    tp((writer << 28) | i)
"""


@pytest.mark.parametrize("overwrite", [False, True])
def test_concurrent_reader_and_two_writer_processes_never_see_a_torn_packet(overwrite):
    """Two processes write one buffer while this process reads it: every
    packet read parses exactly and each writer's values only go up."""
    buf, _ = make(4096, 4, overwrite=overwrite)
    n = 200_000
    procs = [subprocess.Popen([sys.executable, "-c", STRESS_CHILD, str(buf.fd), str(w), str(n)],
                              pass_fds=[buf.fd]) for w in (1, 2)]
    got = {1: [], 2: []}
    packets = []

    def read_some():
        while (p := buf.get_subbuf()) is not None:
            packets.append(bytes(p))
            p.release()
            buf.put_subbuf()

    while any(p.poll() is None for p in procs):
        read_some()
    assert all(p.returncode == 0 for p in procs)
    buf.flush()
    read_some()
    last_seq = -1
    for packet in packets:
        h = header(packet)
        assert h["magic"] == 0xC1FC1FC1 and h["seq"] > last_seq
        last_seq = h["seq"]
        for v in values_in(packet):  # values_in checks the layout as it goes
            got[v >> 28].append(v & 0xFFFFFFF)
    c = buf.counters()
    for w in (1, 2):
        assert got[w] == sorted(set(got[w])), "a writer's values went backwards or repeated: torn read"
        if not overwrite and not c["lost_full"]:
            assert got[w][-1] == n - 1
        # (overwrite: one writer's last packets may be overwritten by the other's, as they should)
    if not overwrite:
        assert len(got[1]) + len(got[2]) + c["lost_full"] == 2 * n


def test_snapshots_do_not_consume_and_are_never_torn(tmp_path):
    buf, ch = make(4096, 4, overwrite=True)
    tp_u32.attach(ch, 0)

    def snapshot(name):
        path = tmp_path / name
        with open(path, "wb") as f:
            packets, nbytes = buf.snapshot_to(f.fileno())
        data = path.read_bytes()
        assert len(data) == nbytes
        out, pos = [], 0
        while pos < len(data):
            h = header(data[pos:])
            out.extend(values_in(data[pos:pos + h["packet_size"] // 8]))
            pos += h["packet_size"] // 8
        return out

    try:
        for i in range(5000):
            tp_u32(i)
        buf.flush()
        first = snapshot("a")
        again = snapshot("b")
        for i in range(5000, 5100):
            tp_u32(i)
        buf.flush()
        third = snapshot("c")
    finally:
        tp_u32.detach(ch)
    assert first and first[-1] == 4999 and first == list(range(first[0], 5000))
    assert again == first  # nothing was consumed
    assert third[-1] == 5099 and third == list(range(third[0], 5100))
    assert third[0] <= 4999  # overlaps the previous snapshot, as LTTng's do
    assert buf.counters()["consumed"] == 0


def test_snapshots_taken_while_two_processes_write_are_never_torn(tmp_path):
    buf, _ = make(4096, 8, overwrite=True)
    procs = [subprocess.Popen([sys.executable, "-c", STRESS_CHILD, str(buf.fd), str(w), "300000"],
                              pass_fds=[buf.fd]) for w in (1, 2)]
    snapshots = 0
    path = tmp_path / "snap"
    while any(p.poll() is None for p in procs):
        buf.flush()
        with open(path, "wb") as f:
            buf.snapshot_to(f.fileno())
        data = path.read_bytes()
        got, pos, last_seq = {1: [], 2: []}, 0, -1
        while pos < len(data):
            h = header(data[pos:])
            assert h["magic"] == 0xC1FC1FC1 and h["seq"] > last_seq
            last_seq = h["seq"]
            for v in values_in(data[pos:pos + h["packet_size"] // 8]):
                got[v >> 28].append(v & 0xFFFFFFF)
            pos += h["packet_size"] // 8
        for w in (1, 2):
            assert got[w] == sorted(set(got[w])), "torn or disordered snapshot"
        snapshots += 1
    assert all(p.returncode == 0 for p in procs)
    assert snapshots > 0


# -- issue 8: a writer killed mid-event in a buffer nobody drains (flight recorder) ------------------------


def _snapshot_values(buf, path):
    """Flush, snapshot to `path`, and return the ring:u32 values in it."""
    buf.flush()
    with open(path, "wb") as f:
        buf.snapshot_to(f.fileno())
    data, vals, pos = path.read_bytes(), [], 0
    while pos < len(data):
        h = header(data[pos:])
        assert h["magic"] == 0xC1FC1FC1
        vals.extend(values_in(data[pos:pos + h["packet_size"] // 8]))
        pos += h["packet_size"] // 8
    return vals


def _kill_mid_event(buf, n, at, extra_env=None):
    """A child process writes ring:u32 0..n-1 into buf and is SIGKILLed
    between the reserve and the commit of its at-th event. Returns its pid."""
    import select
    import signal

    env = dict(os.environ, UST_TEST_PAUSE_AFTER_RESERVE=f"{at}:600000", **(extra_env or {}))
    p = subprocess.Popen([sys.executable, "-c", STRESS_CHILD, str(buf.fd), "0", str(n)], pass_fds=[buf.fd], env=env,
                         stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stderr], [], [], 120)
    assert ready and "paused after reserve" in p.stderr.readline()
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stderr.close()
    return p.pid


def _write_from_child(buf, writer, n):
    p = subprocess.Popen([sys.executable, "-c", STRESS_CHILD, str(buf.fd), str(writer), str(n)], pass_fds=[buf.fd])
    assert p.wait() == 0


def test_a_writer_killed_mid_event_does_not_freeze_an_undrained_overwrite_buffer(tmp_path):
    """Overwrite mode, nobody draining (a snapshot session): a writer is
    SIGKILLed between reserve and commit. Its slot's lap can never complete by
    itself, and writers may enter a slot only when its previous lap is
    complete: the buffer froze for good (every later event dropped). The
    snapshot path repairs the dead writer's packet (its event cut out, counted
    lost_dead), so later writers lap the buffer again and a later snapshot
    holds the newest events."""
    buf, _ = make(4096, 4, overwrite=True)
    _kill_mid_event(buf, 1000, 300)
    _write_from_child(buf, 1, 20000)  # closes the dead writer's packet, then laps to its slot
    _snapshot_values(buf, tmp_path / "a")  # repairs the packet
    _write_from_child(buf, 2, 20000)
    vals = _snapshot_values(buf, tmp_path / "b")
    mine = [v & 0xFFFFFFF for v in vals if v >> 28 == 2]
    assert mine and mine[-1] == 19999, f"the buffer stayed frozen: newest {mine[-1:] or None}"
    assert mine == list(range(mine[0], 20000))
    c = buf.counters()
    assert c["lost_dead"] == 1 and c["packets_reclaimed"] == 1


PID_REUSE = r"""
import os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import test_ring as t
from pathlib import Path

tmp = Path(sys.argv[2])
buf, _ = t.make(4096, 4, overwrite=True)
dead = t._kill_mid_event(buf, 1000, 300)
# Give the dead writer's pid to a new, live process: in this private pid
# namespace nobody else forks, and ns_last_pid says which pid comes next.
for _ in range(5):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(dead - 1))
    heir = subprocess.Popen(["sleep", "600"])
    if heir.pid == dead:
        break
    heir.kill()
    heir.wait()
assert heir.pid == dead, f"pid {dead} not reused (got {heir.pid})"
try:
    t._write_from_child(buf, 1, 20000)
    t._snapshot_values(buf, tmp / "a")
    t._write_from_child(buf, 2, 20000)
    vals = t._snapshot_values(buf, tmp / "b")
finally:
    heir.kill()
    heir.wait()
mine = [v & 0xFFFFFFF for v in vals if v >> 28 == 2]
c = buf.counters()
print("newest", mine[-1] if mine else None, "contiguous", mine == list(range(mine[0], 20000)) if mine else False,
      "lost_dead", c["lost_dead"], "reclaimed", c["packets_reclaimed"])
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a private pid namespace and ns_last_pid)")
def test_a_dead_writer_whose_pid_was_reused_is_still_recognised_as_dead(tmp_path):
    """A writer is SIGKILLed between reserve and commit, and a new process
    gets its pid (in a private pid namespace, by setting ns_last_pid). The
    pid alone said "alive": the packet waited for ever (in an undrained
    overwrite buffer, the whole buffer froze). The writer table holds the
    writer's start time too, the new process's differs, and the packet is
    repaired."""
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", PID_REUSE, here,
                        str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["newest", "19999", "contiguous", "True", "lost_dead", "1", "reclaimed", "1"]


def test_a_channel_is_initialized_once():
    """Attached tracepoints read a channel's buffers and its `plain` flag (no context: the 8-byte lean
    write, decided when the attachment is published) without a lock: initializing it again, which would
    free the buffer array under them and change the flag, is refused in one line."""
    buf, ch = make()
    tp = ust.tracepoint("ring:once", {"v": ust.uint64})
    tp.attach(ch, 0)
    with pytest.raises(TypeError, match="a Channel is initialized once"):
        ch.__init__([buf], context=("vtid",))
    try:
        tp(5)  # still the channel it was: an event without context
    finally:
        tp.detach(ch)
    assert buf.flush() is True
    (packet,) = take_all(buf)
    assert header(packet)["content_size"] == (PACKET_HEADER_SIZE + 6 + 8) * 8


def _paused_writer(buf, n, pause):
    """A child process writing ring:u32 0..n-1 into buf, paused as ``pause``
    (UST_TEST_PAUSE_AFTER_RESERVE) says; returns once it announced the pause."""
    import select

    env = dict(os.environ, UST_TEST_PAUSE_AFTER_RESERVE=pause)
    p = subprocess.Popen([sys.executable, "-c", STRESS_CHILD, str(buf.fd), "0", str(n)], pass_fds=[buf.fd], env=env,
                         stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stderr], [], [], 120)
    assert ready and "ust-test: paused" in p.stderr.readline()
    return p


def test_a_flush_while_the_opener_of_a_packet_is_between_reserve_and_header_keeps_its_event():
    """The live timer (another process) closes the partial packet just after a writer reserved
    the space that opens it, before that writer wrote the packet header. The opener then wrote
    the whole header, sizes included: the closer's content size was overwritten with the bare
    header's, and the packet read as an 84-byte one without the event (one event lost, no loss
    counted: 1 live rotation in 4 lost one). The opener writes only the fields that begin a packet;
    the closer's stay."""
    buf, _ = make(4096, 4)
    p = _paused_writer(buf, 3, "1:300")  # the first reservation opens packet 0, then pauses 300 ms
    assert buf.flush()  # closes packet 0 while its opener sleeps
    assert p.wait(timeout=120) == 0
    p.stderr.close()
    buf.flush()
    packets = take_all(buf)
    assert [v for pk in packets for v in values_in(pk)] == [0, 1, 2]
    first = header(packets[0])
    assert first["content_size"] // 8 > PACKET_HEADER_SIZE and first["ts_end"] >= first["ts_begin"]
    assert buf.counters()["lost_full"] == 0


def test_quiet_until_gives_a_beacon_time_only_when_no_event_older_can_still_come():
    """The live barrier's reader side: an idle stream (every reserved byte read) gets a time, at or
    after every event it ever held; a stream with a packet not yet read gets none (the packet tells),
    nor one whose writer is between its clock read and its reservation of a new packet (SIGSTOPped
    there), whose event could be older than a time read now; once that writer reserved, the packet
    begins after any time given before."""
    import signal

    buf, _ = make(4096, 4)
    assert buf.quiet_until() > 0  # nothing ever written
    p = _paused_writer(buf, 3, "1:0:opening")  # stopped between its clock and its reservation
    _, status = os.waitpid(p.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    assert buf.quiet_until() == 0
    os.kill(p.pid, signal.SIGCONT)
    assert p.wait(timeout=120) == 0
    p.stderr.close()
    assert buf.quiet_until() == 0  # an open packet
    buf.flush()
    assert buf.quiet_until() == 0  # a closed packet not read yet
    [packet] = take_all(buf)
    assert values_in(packet) == [0, 1, 2]
    t = buf.quiet_until()
    assert t >= header(packet)["ts_end"]


# 64 processes (UST_MAX_WRITERS) that each write one event into the buffer whose descriptor they are
# given, so that each holds a writer-table entry, then wait, alive, until their stdin closes.
TABLE_FILLERS = r"""
import os, sys, ust
from ust._ring import Buffer, Channel
tp = ust.tracepoint("ring:u32", {"v": ust.uint32})
tp.attach(Channel([Buffer.attach(int(sys.argv[1]))]), 0)
done_r, done_w = os.pipe()
kids = []
for k in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:
        os.close(done_r)
        tp(k)
        os.write(done_w, b"x")
        sys.stdin.read()
        os._exit(0)
    kids.append(pid)
os.close(done_w)
got = 0
while got < len(kids):
    got += len(os.read(done_r, 64))
print("ready", flush=True)
sys.stdin.read()
for pid in kids:
    os.waitpid(pid, 0)
"""


def test_a_writer_without_a_table_entry_killed_while_opening_a_packet_does_not_stop_beacons():
    """The live barrier for a writer without a writer-table entry (64 other processes hold them all):
    it announced its opening window in a shared count, which its death inside the window left raised
    for good, so its stream never had a beacon again (a live viewer waited on it until its next
    packet, maybe forever). It now announces by its owner word in an overflow entry, and the reader
    tells it is dead as for a table entry: no beacon while it lives there (stopped), beacons again
    once it is dead."""
    import signal

    buf, _ = make(4096, 4)
    fillers = subprocess.Popen([sys.executable, "-c", TABLE_FILLERS, str(buf.fd), "64"], pass_fds=[buf.fd],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert fillers.stdout.readline().strip() == "ready"
        buf.flush()
        assert sorted(v for pk in take_all(buf) for v in values_in(pk)) == list(range(64))
        assert buf.quiet_until() > 0  # idle, nobody opening
        p = _paused_writer(buf, 3, "1:0:opening")  # the 65th writer: stopped inside its window
        _, status = os.waitpid(p.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        assert buf.quiet_until() == 0  # alive, it may still reserve with the time it read: no beacon
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=120)
        p.stderr.close()
        assert buf.quiet_until() > 0, "the stream has no beacon any more"
        assert buf.quiet_until() > 0  # (and its overflow entry was freed for the next)
    finally:
        fillers.stdin.close()
        fillers.wait(timeout=120)
        fillers.stdout.close()
    assert buf.counters()["lost_full"] == 0
