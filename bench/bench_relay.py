"""Relay benchmark: how fast does ust-relayd take packets on loopback, and how
fast do live viewers get them?

    python bench/bench_relay.py [--seconds 5] [--streams 4] [--viewers 8]

1. Throughput: a sender streams real packets (from a trace recorded first,
   512 KiB sub-buffers) to a real ust-relayd over loopback as fast as it can,
   on ``--streams`` streams, for ``--seconds``; reported: MB/s and events/s
   received *and written* (timed until the relay has committed the last byte,
   which a live viewer sees), next to a plain TCP copy of the same bytes to a
   discarding reader (the loopback's own ceiling on this machine, same run).
2. Viewers: ``--viewers`` Python viewers (ust.relay.viewer) attached to one
   session read every packet of it; reported: MB/s each and all together.
"""

from __future__ import annotations

import argparse
import json
import os
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

APP = r"""
import sys, ust
tp = ust.tracepoint("bench:ev", {"i": ust.int32, "s": ust.string})
with ust.Session(sys.argv[1], events=["bench:*"], subbuf_size=512 * 1024, num_subbuf=8):
    for i in range(400000):
        tp(i, "0123456789")
"""


def record(path: str) -> tuple[list[bytes], int]:
    """The trace's packets, and its event count."""
    subprocess.run([sys.executable, "-c", APP, path], env=dict(os.environ, PYTHONPATH=SRC, UST_AGENT="0"),
                   check=True)
    from ust.ctf.writer import packet_spans
    from ust.relay.sender import trace_streams

    packets = []
    for _rel, directory, names in trace_streams(path):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                data = f.read()
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            packets += [data[o:o + n] for o, n in packet_spans(fd, len(data))]
            os.close(fd)
    return packets, 400000


def start_relay(out: str):
    p = subprocess.Popen([sys.executable, "-m", "ust.relay.relayd", "-C", "tcp://127.0.0.1:0", "-D",
                          "tcp://127.0.0.1:0", "-L", "tcp://127.0.0.1:0", "-o", out, "--pid-file",
                          os.path.join(out, "..", "relayd.pid")],
                         env=dict(os.environ, PYTHONPATH=SRC), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    words = p.stdout.readline().split()
    return p, [int(words[i].rsplit(":", 1)[1]) for i in (2, 4, 6)]


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


def file_write_ceiling(directory: str, packets: list[bytes], seconds: float) -> float:
    """MB/s of plain write()s of the same packets to a file where the relay writes."""
    path = os.path.join(directory, "ceiling")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for p in packets:
            os.write(fd, p)
            written += len(p)
    elapsed = time.perf_counter() - start
    os.close(fd)
    os.unlink(path)
    return written / elapsed / 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--viewers", type=int, default=8)
    ap.add_argument("--output", help="where the relay writes (default: a temporary directory; "
                    "/dev/shm takes the disk out of the figure)")
    args = ap.parse_args()
    from ust.relay.sender import RelayClient
    from ust.relay.viewer import LiveClient
    from ust.relay import viewer_abi as va

    tmp = tempfile.mkdtemp(prefix="ust-bench-relay-")
    packets, events = record(os.path.join(tmp, "local"))
    per_packet_events = events / len(packets)
    out_dir = tempfile.mkdtemp(prefix="ust-bench-relay-out-", dir=args.output) if args.output else \
        os.path.join(tmp, "out")
    disk = file_write_ceiling(out_dir if args.output else tmp, packets, min(args.seconds, 3.0))
    relay, (ctrl, data, live) = start_relay(out_dir)
    try:
        c = RelayClient("127.0.0.1", ctrl, data)
        c.create_session("bench", "benchhost", 100000)
        c.add_stream(0, 0, "ust", "metadata", metadata=True)
        with open(os.path.join(tmp, "local", "ust", "uid", str(os.getuid()), "64-bit", "metadata"), "rb") as f:
            c.send_metadata(0, f.read())
        for h in range(1, args.streams + 1):
            c.add_stream(h, 0, "ust", f"channel0_{h - 1}")
        sent = n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            for p in packets:
                c.send_packet(1 + n % args.streams, p)
                sent += len(p)
                n += 1
        for h in range(1, args.streams + 1):
            c.close_stream(h)
        # received and written: a viewer sees the last packet of every stream
        v = LiveClient("127.0.0.1", live)
        v.create_session()
        _, streams = v.attach(c.session)
        size_of = {s.id: c.offsets[int(s.channel.rsplit("_", 1)[1]) + 1] for s in streams if not s.metadata}
        pending = dict(size_of)
        while pending:
            for sid in list(pending):
                idx = v.next_index(sid)
                if idx["status"] == va.INDEX_OK:
                    if idx["offset"] + idx["packet_size"] // 8 >= size_of[sid]:
                        del pending[sid]
                elif idx["status"] == va.INDEX_HUP:
                    del pending[sid]
        elapsed = time.perf_counter() - start
        v.close()
        ingest_mb = sent / elapsed / 1e6
        ceiling = loopback_ceiling(packets, min(args.seconds, 3.0))

        # viewers reading the whole session at once
        def read_all(result, i):
            v = LiveClient("127.0.0.1", live)
            v.create_session()
            _, streams = v.attach(c.session)
            got = 0
            for s in streams:
                if s.metadata:
                    continue
                while True:
                    idx = v.next_index(s.id)
                    if idx["status"] != va.INDEX_OK:
                        break
                    st, _flags, body = v.packet(s.id, idx["offset"], idx["packet_size"] // 8)
                    got += len(body)
            v.close()
            result[i] = got

        results = [0] * args.viewers
        t0 = time.perf_counter()
        threads = [threading.Thread(target=read_all, args=(results, i)) for i in range(args.viewers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        view_elapsed = time.perf_counter() - t0
        c.destroy()
        c.close()
        report = {
            "packets": n, "bytes": sent, "seconds": round(elapsed, 2),
            "relay_ingest_MB_s": round(ingest_mb, 1),
            "relay_ingest_events_s": round(n * per_packet_events / elapsed),
            "loopback_plain_tcp_MB_s": round(ceiling, 1),
            "ingest_vs_plain_tcp": round(ingest_mb / ceiling, 2),
            "plain_file_write_MB_s": round(disk, 1),
            "ingest_vs_plain_file_write": round(ingest_mb / disk, 2),
            "viewers": args.viewers,
            "viewers_MB_s_total": round(sum(results) / view_elapsed / 1e6, 1),
            "viewer_read_whole_session": all(r == sent for r in results),
        }
        print(json.dumps(report, indent=1))
    finally:
        relay.terminate()
        relay.wait()
        subprocess.run(["rm", "-rf", tmp] + ([out_dir] if args.output else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
