"""Relay benchmark: how fast does ust-relayd take packets on loopback, where does
the time go, and how fast do live viewers get them?

    python bench/bench_relay.py [--seconds 3] [--sizes 64k,256k,1M] [--connections 1,2]
                                [--outputs tmpfs,disk] [--viewers 8] [--no-pipeline]

1. Ingest, for each sub-buffer size (LTTng's realistic ones) and each output
   (tmpfs: ``/dev/shm``; disk: a directory on the disk, ``--disk-dir``): a
   sender streams real packets (from a trace recorded first with that
   sub-buffer size) to a real ust-relayd over loopback as fast as it can, on
   4 streams spread over ``--connections`` data connections, for ``--seconds``.
   Reported: MB/s and events/s *received and written* (timed until the
   relay's files hold every byte sent), the CPU seconds the relay and the
   sender spend per GB (``relay_MB_s_per_core``: what one core of the relay
   takes, whatever else runs on this machine), and, same run, the output's
   own raw write speed: ``dd`` writing files of the same sizes with the same
   block size, before and after (``dd_MB_s``, their mean; ``vs_dd`` is the
   ratio), and the CPU seconds dd spends per GB (``relay_cpu_vs_dd_cpu``: what
   the relay costs a byte against what writing it costs dd, a ratio this
   shared machine's load hardly moves). On the disk, also until the files are synced (``synced_MB_s``)
   against ``dd conv=fsync`` (``dd_synced_MB_s``): the disk-bound figure (the
   others fit in the page cache).
2. The loopback's own ceiling: a plain sendall of the same packets to a reader
   that drops them.
3. Viewers: ``--viewers`` Python viewers (ust.relay.viewer) attached to one
   session read every packet of it at once; MB/s all together.
4. The whole pipeline (unless ``--no-pipeline``): real daemons, a session
   streamed to the relay, one application per CPU writing events as fast as
   it can; events/s and MB/s that reach the relay, and the CPU seconds per GB
   of the applications, the session and consumer daemons, and the relay: who
   bounds a real streamed session.

The live lag and the tracepoint cost of a streamed session against a local one
are in bench_live.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = os.path.join(ROOT, "src")
sys.path.insert(0, SRC)

EVENTS = 400000
STREAMS = 4
APP = r"""
import sys, ust
tp = ust.tracepoint("bench:ev", {"i": ust.int32, "s": ust.string})
with ust.Session(sys.argv[1], events=["bench:*"], subbuf_size=int(sys.argv[2]), num_subbuf=8):
    for i in range(int(sys.argv[3])):
        tp(i, "0123456789")
"""
# The pipeline's application: waits to be told, writes as fast as it can, says how long it took.
PIPE_APP = r"""
import sys, time, ust
tp = ust.tracepoint("bench:ev", {"i": ust.int32, "s": ust.string})
n = int(sys.argv[1])
deadline = time.monotonic() + 60
while not any(c["attached"] for c in ust.agent.status().get("connections", [])):
    if time.monotonic() > deadline:
        sys.exit("bench: the daemon never attached the tracepoint")
    time.sleep(0.01)
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
for i in range(n):
    tp(i, "0123456789")
print(time.perf_counter() - t0, flush=True)
sys.stdin.readline()
"""


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def size_name(n: int) -> str:
    return f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}k"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def record(path: str, subbuf: int) -> tuple[list[bytes], float, str]:
    """The packets of a trace recorded with ``subbuf``-byte sub-buffers (whole ones),
    its events per byte, and its metadata."""
    subprocess.run([sys.executable, "-c", APP, path, str(subbuf), str(EVENTS)],
                   env=dict(os.environ, PYTHONPATH=SRC, UST_AGENT="0"), check=True)
    from ust.ctf.writer import packet_spans
    from ust.relay.sender import trace_streams

    packets = []
    metadata = b""
    for _rel, directory, names in trace_streams(path):
        with open(os.path.join(directory, "metadata"), "rb") as f:
            metadata = f.read()
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                data = f.read()
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            packets += [data[o:o + n] for o, n in packet_spans(fd, len(data))]
            os.close(fd)
    total = sum(len(p) for p in packets)
    packets = [p for p in packets if len(p) * 2 >= subbuf] or packets  # the full ones: the steady state
    return packets, EVENTS / total, metadata


def start_relay(out: str):
    p = subprocess.Popen([sys.executable, "-m", "ust.relay.relayd", "-C", "tcp://127.0.0.1:0", "-D",
                          "tcp://127.0.0.1:0", "-L", "tcp://127.0.0.1:0", "-o", out, "--pid-file",
                          os.path.join(out, "..", f"relayd-{os.getpid()}.pid")],
                         env=dict(os.environ, PYTHONPATH=SRC), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    words = p.stdout.readline().split()
    return p, [int(words[i].rsplit(":", 1)[1]) for i in (2, 4, 6)]


def stop_relay(relay) -> None:
    relay.terminate()
    relay.wait()


def loopback_ceiling(packets: list[bytes], seconds: float) -> float:
    """MB/s of a plain sendall of the same packets to a reader that drops them."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def sink():
        c, _ = srv.accept()
        while c.recv(1 << 20):
            pass
        c.close()

    t = threading.Thread(target=sink)
    t.start()
    s = socket.create_connection(srv.getsockname())
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for p in packets:
            s.sendall(p)
            sent += len(p)
    s.close()
    t.join()
    elapsed = time.perf_counter() - start
    srv.close()
    return sent / elapsed / 1e6


def dd_speed(directory: str, sizes: list[int], block: int, sync: bool = False) -> tuple[float, float]:
    """MB/s of dd writing, one after the other, new files of ``sizes`` bytes in
    ``block``-byte writes (what the relay wrote, as the plain tool writes it);
    ``sync``: each file synced to the disk before dd ends (conv=fsync). Also the
    CPU seconds dd spent per GB: unlike the wall clock, it hardly moves with what
    else runs on the machine."""
    written = 0
    start = time.perf_counter()
    cpu = children_cpu_seconds()
    for i, size in enumerate(sizes):
        path = os.path.join(directory, f"dd-{i}")
        subprocess.run(["dd", "if=/dev/zero", f"of={path}", f"bs={block}", f"count={max(1, size // block)}"]
                       + (["conv=fsync"] if sync else []), check=True, capture_output=True)
        written += max(1, size // block) * block
    elapsed = time.perf_counter() - start
    cpu = children_cpu_seconds() - cpu
    for i in range(len(sizes)):
        os.unlink(os.path.join(directory, f"dd-{i}"))
    return written / elapsed / 1e6, cpu / (written / 1e9)


def wait_written(out_dir: str, sent: int) -> None:
    """Until the relay's stream files under ``out_dir`` hold the ``sent`` bytes (a
    cheap poll: a viewer asking for every index would take the relay's CPU)."""
    paths: list[str] = []
    while True:
        if len(paths) < STREAMS:
            paths = [os.path.join(d, f) for d, _, fs in os.walk(out_dir) for f in fs if f.startswith("channel0_")]
        if sum(os.stat(p).st_size for p in paths) >= sent:
            return
        time.sleep(0.001)


def ingest(out_dir: str, packets: list[bytes], metadata: bytes, seconds: float, connections: int,
           keep: bool = False, durable: bool = False):
    """One ingest run; its figures (and, with ``keep``, the relay and client still up)."""
    from ust.relay.sender import RelayClient

    relay, (ctrl, data, live) = start_relay(out_dir)
    c = RelayClient("127.0.0.1", ctrl, data, data_connections=connections)
    c.create_session("bench", "benchhost", 100000)
    c.add_stream(100, 0, "ust", "metadata", metadata=True)
    c.send_metadata(100, metadata)
    for h in range(STREAMS):
        c.add_stream(h, 0, "ust", f"channel0_{h}")
    sent = n = 0
    relay_cpu, own_cpu = cpu_seconds(relay.pid), own_cpu_seconds()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for p in packets:
            c.send_packet(n % STREAMS, p)
            sent += len(p)
            n += 1
    sent_at = time.perf_counter() - start
    wait_written(out_dir, sent)
    elapsed = time.perf_counter() - start
    if durable:  # and on the disk itself: the relay's files synced (by us, through any descriptor of them)
        for d, _, fs in os.walk(out_dir):
            for f in fs:
                fd = os.open(os.path.join(d, f), os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
        synced = time.perf_counter() - start
    relay_cpu, own_cpu = cpu_seconds(relay.pid) - relay_cpu, own_cpu_seconds() - own_cpu
    gb = sent / 1e9
    figures = {
        "MB_s": round(sent / elapsed / 1e6), "sent_MB_s": round(sent / sent_at / 1e6),
        "relay_cpu_s_per_GB": round(relay_cpu / gb, 2), "sender_cpu_s_per_GB": round(own_cpu / gb, 2),
        "relay_MB_s_per_core": round(gb * 1e3 / relay_cpu) if relay_cpu else None,
        "packets": n, "bytes": sent,
    }
    if durable:
        figures["synced_MB_s"] = round(sent / synced / 1e6)
    file_sizes = [c.offsets[h] for h in range(STREAMS)]
    if keep:
        return figures, file_sizes, (relay, c, live)
    for h in range(STREAMS):
        c.close_stream(h)
    c.destroy()
    c.close()
    stop_relay(relay)
    return figures, file_sizes, None


def viewers_read(live: int, session: int, count: int) -> tuple[float, bool, int]:
    """``count`` viewers read the whole session at once: (MB/s in all, all read everything, bytes)."""
    from ust.relay import viewer_abi as va
    from ust.relay.viewer import LiveClient

    def read_all(result, i):
        v = LiveClient("127.0.0.1", live)
        v.create_session()
        _, streams = v.attach(session)
        got = 0
        for s in streams:
            if s.metadata:
                continue
            while True:
                idx = v.next_index(s.id)
                if idx["status"] != va.INDEX_OK:
                    break
                _st, _flags, body = v.packet(s.id, idx["offset"], idx["packet_size"] // 8)
                got += len(body)
        v.close()
        result[i] = got

    results = [0] * count
    t0 = time.perf_counter()
    threads = [threading.Thread(target=read_all, args=(results, i)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(results) / (time.perf_counter() - t0) / 1e6, len(set(results)) == 1, results[0]


def warm(directory: str) -> None:
    """Write and remove 1 GiB there first: a virtual machine's memory is backed by
    its host lazily, and the first touch of a page costs far more than the next."""
    subprocess.run(["dd", "if=/dev/zero", f"of={os.path.join(directory, 'warm')}", "bs=1M", "count=1024"],
                   check=True, capture_output=True)
    os.unlink(os.path.join(directory, "warm"))


def pipeline(out_dir: str, subbuf: int, events: int) -> dict:
    """Real daemons, a session streamed to a relay, one writer per CPU: who bounds it?"""
    tmp = tempfile.mkdtemp(prefix="ust-bench-pipe-")
    home = os.path.join(tmp, "home")
    os.mkdir(home, 0o700)
    env = dict(os.environ, PYTHONPATH=SRC, UST_HOME=home, UST_AGENT_RETRY="0.05")
    env.pop("UST_AGENT", None)
    relay, (ctrl, data, _live) = start_relay(out_dir)

    def ust(*a):
        subprocess.run([sys.executable, "-m", "ust.cli", *a], env=dict(env, UST_AGENT="0"), check=True,
                       capture_output=True, text=True)

    apps = []
    try:
        ust("create", "pipe", "-U", f"net://127.0.0.1:{ctrl}:{data}")
        ust("enable-channel", "c", "--subbuf-size", str(subbuf), "--num-subbuf", "8")
        ust("enable-event", "bench:*", "-c", "c")
        ust("start")
        with open(os.path.join(home, "sessiond.pid")) as f:
            sessiond = int(f.read())
        daemons = [sessiond]  # and its children (the consumer daemons), whichever thread started them
        for task in os.listdir(f"/proc/{sessiond}/task"):
            with open(f"/proc/{sessiond}/task/{task}/children") as f:
                daemons += [int(x) for x in f.read().split()]
        writers = os.cpu_count() or 1
        apps = [subprocess.Popen([sys.executable, "-c", PIPE_APP, str(events)], env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(writers)]
        for a in apps:
            if a.stdout.readline().strip() != "ready":
                raise SystemExit("bench: a pipeline application did not start")
        cpu0 = {"apps": sum(cpu_seconds(a.pid) for a in apps), "daemons": sum(cpu_seconds(p) for p in daemons),
                "relay": cpu_seconds(relay.pid)}
        start = time.perf_counter()
        for a in apps:
            a.stdin.write("go\n")
            a.stdin.flush()
        app_seconds = max(float(a.stdout.readline()) for a in apps)
        cpu1 = {"apps": sum(cpu_seconds(a.pid) for a in apps), "daemons": sum(cpu_seconds(p) for p in daemons)}
        ust("stop")  # flushes: every packet is on the relay when it returns
        elapsed = time.perf_counter() - start
        cpu1["daemons"] = sum(cpu_seconds(p) for p in daemons)
        cpu1["relay"] = cpu_seconds(relay.pid)
        for a in apps:
            a.stdin.write("end\n")
            a.stdin.flush()
            a.wait()
        received = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out_dir) for f in fs
                       if f != "metadata" and not f.startswith("."))
        gb = received / 1e9
        return {
            "subbuf": size_name(subbuf), "writers": writers, "events": events * writers,
            "events_s_written_by_apps": round(events * writers / app_seconds),
            "relay_received_MB_s": round(received / elapsed / 1e6), "bytes": received,
            "cpu_s_per_GB": {k: round((cpu1[k] - cpu0[k]) / gb, 2) for k in cpu0},
        }
    finally:
        for a in apps:
            if a.poll() is None:
                a.kill()
                a.wait()
        subprocess.run([sys.executable, "-m", "ust.cli", "destroy", "-a"], env=dict(env, UST_AGENT="0"),
                       capture_output=True)
        subprocess.run([sys.executable, "-c", "from ust.control import stop_sessiond; stop_sessiond()"],
                       env=env, capture_output=True)
        stop_relay(relay)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sizes", default="64k,256k,1M", help="sub-buffer sizes (LTTng's realistic ones)")
    ap.add_argument("--connections", default="1,2", help="data connections per session to compare")
    ap.add_argument("--outputs", default="tmpfs,disk")
    ap.add_argument("--tmpfs-dir", default="/dev/shm")
    ap.add_argument("--disk-dir", default="/var/tmp", help="a directory on the disk")
    ap.add_argument("--viewers", type=int, default=8)
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--pipeline-events", type=int, default=5_000_000, help="events per writer")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    connections = [int(c) for c in args.connections.split(",")]
    where = {"tmpfs": args.tmpfs_dir, "disk": args.disk_dir}
    tmp = tempfile.mkdtemp(prefix="ust-bench-relay-")
    report: dict = {"ingest": []}
    try:
        for output in args.outputs.split(","):
            warm(where[output])
        for subbuf in sizes:
            packets, events_per_byte, metadata = record(os.path.join(tmp, f"local-{subbuf}"), subbuf)
            for output in args.outputs.split(","):
                for conns in connections:
                    out_dir = tempfile.mkdtemp(prefix="ust-bench-relay-out-", dir=where[output])
                    try:
                        # dd before and after, same file sizes (the first run's guess, then the relay's):
                        # their mean is the raw speed around the relay's run on this shared machine
                        guess = [int(args.seconds * 1e9 / STREAMS)] * STREAMS
                        dd_before, dd_cpu_before = dd_speed(out_dir, guess, subbuf)
                        figures, file_sizes, _ = ingest(out_dir, packets, metadata, args.seconds, conns,
                                                        durable=output == "disk")
                        dd_after, dd_cpu_after = dd_speed(out_dir, file_sizes, subbuf)
                        dd, dd_cpu = (dd_before + dd_after) / 2, (dd_cpu_before + dd_cpu_after) / 2
                        if output == "disk":
                            dd_synced, _ = dd_speed(out_dir, file_sizes, subbuf, sync=True)
                    finally:
                        shutil.rmtree(out_dir, ignore_errors=True)
                    row = {"subbuf": size_name(subbuf), "output": output, "data_connections": conns, **figures,
                           "events_s": round(figures["MB_s"] * 1e6 * events_per_byte), "dd_MB_s": round(dd),
                           "vs_dd": round(figures["MB_s"] / dd, 2), "dd_cpu_s_per_GB": round(dd_cpu, 2),
                           "relay_cpu_vs_dd_cpu": round(figures["relay_cpu_s_per_GB"] / dd_cpu, 2)}
                    if output == "disk":
                        row["dd_synced_MB_s"] = round(dd_synced)
                        row["synced_vs_dd_synced"] = round(figures["synced_MB_s"] / dd_synced, 2)
                    del row["packets"], row["bytes"]
                    report["ingest"].append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
        report["loopback_plain_tcp_MB_s"] = round(loopback_ceiling(packets, min(args.seconds, 3.0)))
        # viewers: the last size, on tmpfs, a shorter session
        out_dir = tempfile.mkdtemp(prefix="ust-bench-relay-out-", dir=where["tmpfs"])
        try:
            _, _, (relay, c, live) = ingest(out_dir, packets, metadata, 1.0, connections[-1], keep=True)
            try:
                mb_s, whole, got = viewers_read(live, c.session, args.viewers)
                report["viewers"] = {"count": args.viewers, "MB_s_total": round(mb_s),
                                     "each_read_the_whole_session": whole and got == sum(c.offsets.values())}
            finally:
                c.close()
                stop_relay(relay)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        if not args.no_pipeline:
            out_dir = tempfile.mkdtemp(prefix="ust-bench-relay-out-", dir=where["tmpfs"])
            try:
                report["pipeline"] = pipeline(out_dir, sizes[-1], args.pipeline_events)
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
