"""Soak test of the ring buffer (not part of the suite): writer processes and
threads hammer one small buffer while a reader drains it concurrently; every
packet must parse exactly, every writer's values must only go up, and in
discard mode written + lost must equal called.

    python bench/soak_ring.py [seconds] [--overwrite]
"""

import struct
import subprocess
import sys
import time

from ust._ring import PACKET_HEADER_SIZE, Buffer

HEADER = struct.Struct("<I16sIQQQQQQQI")

CHILD = r"""
import sys, threading, ust
from ust._ring import Buffer, Channel
fd, writer, n, nthreads = map(int, sys.argv[1:5])
tp = ust.tracepoint("soak:v", {"v": ust.uint64, "pad": ust.string})
tp.attach(Channel([Buffer.attach(fd)]), 0)
def run(t):
    base = ((writer * 16 + t) << 40)
    for i in range(n):
        tp(base | i, "x" * (i % 37))
ts = [threading.Thread(target=run, args=(t,)) for t in range(nthreads)]
[t.start() for t in ts]; [t.join() for t in ts]
"""


def parse(packet, got):
    magic, _, _, _, tb, te, content, psize, seq, disc, cpu = HEADER.unpack_from(packet)
    assert magic == 0xC1FC1FC1 and content <= psize and psize // 8 == len(packet), "bad header"
    pos, end = PACKET_HEADER_SIZE, content // 8
    last_ts = tb
    while pos < end:
        (eid,) = struct.unpack_from("<H", packet, pos)
        if eid == 65535:
            eid, ts = struct.unpack_from("<IQ", packet, pos + 2)
            pos += 14
        else:
            (ts32,) = struct.unpack_from("<I", packet, pos + 2)
            ts = (last_ts & ~0xFFFFFFFF) | ts32
            if ts < last_ts:
                ts += 1 << 32
            pos += 6
        assert eid == 0, f"bad event id {eid}"
        assert ts >= last_ts, "timestamps went backwards"
        last_ts = ts
        (v,) = struct.unpack_from("<Q", packet, pos)
        pos += 8
        nul = packet.index(b"\0", pos)
        assert nul - pos == (v & 0xFFFFFFFFFF) % 37, "string length does not match its value"
        pos = nul + 1
        got.setdefault(v >> 40, []).append(v & 0xFFFFFFFFFF)
    assert pos == end, "events overrun the content"
    assert te >= last_ts or end == PACKET_HEADER_SIZE, "timestamp_end before the last event"
    return seq


def round_(overwrite, procs=3, threads=2, n=100_000):
    buf = Buffer.create(4096, 4, overwrite=overwrite, uuid=bytes(16))
    ps = [subprocess.Popen([sys.executable, "-c", CHILD, str(buf.fd), str(w), str(n), str(threads)],
                           pass_fds=[buf.fd]) for w in range(procs)]
    got, last_seq = {}, -1

    def drain():
        nonlocal last_seq
        while (p := buf.get_subbuf()) is not None:
            data = bytes(p)
            p.release()
            buf.put_subbuf()
            seq = parse(data, got)
            assert seq > last_seq, "packet sequence went backwards"
            last_seq = seq

    while any(p.poll() is None for p in ps):
        drain()
    assert all(p.returncode == 0 for p in ps)
    buf.flush()
    drain()
    for k, vals in got.items():
        assert vals == sorted(set(vals)), f"writer {k}: values not strictly increasing"
    c = buf.counters()
    total = sum(len(v) for v in got.values())
    if not overwrite:
        assert total + c["lost_full"] == procs * threads * n, (total, c)
    return total, c


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else 60
    overwrite = "--overwrite" in sys.argv
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        total, c = round_(overwrite)
        rounds += 1
        print(f"round {rounds}: {total} events read, lost_full {c['lost_full']}, "
              f"overwritten packets {c['packets_overwritten']}", flush=True)
    print(f"ok: {rounds} rounds, no torn packet, no disorder")


if __name__ == "__main__":
    main()
