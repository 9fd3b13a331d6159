"""Packet index files: what keeping ``index/<file>.idx`` costs a stream file.

    python bench/bench_index.py [--mb 256] [--dir /dev/shm]

Real packets (a ring buffer filled by the tracepoint, its packets taken) are
appended to a stream file the two ways the consumer daemon and the relay
append them -- one ``write_packet`` each, and the C drain's way (the bytes
written to the descriptor, then ``drained``) -- without an index (the
baseline) and with one (``StreamFile(indexed=True)``), alternated, best of
three. Printed: CPU microseconds per packet and the ratio indexed / baseline,
per packet size. ``--dir`` on a tmpfs measures the CPU, not a disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

import ust  # noqa: E402
from ust._ring import Buffer, Channel  # noqa: E402
from ust.consumer.output import StreamFile  # noqa: E402


def packets_of(subbuf: int, count: int) -> list[bytes]:
    """``count`` full packets of ``subbuf`` bytes, as the ring buffer writes them."""
    buf = Buffer.create(subbuf, 4, stream_id=0, uuid=bytes(16))
    tp = ust.tracepoint("bench:index", {"v": ust.uint64})
    ch = Channel([buf])
    tp.attach(ch, 0)
    out: list[bytes] = []
    i = 0
    try:
        while len(out) < count:
            for _ in range(subbuf // 16):
                tp(i)
                i += 1
            while (p := buf.get_subbuf()) is not None:
                out.append(bytes(p))
                p.release()
                buf.put_subbuf()
    finally:
        tp.detach(ch)
    return out[:count]


def run(directory: str, packets: list[bytes], indexed: bool, drained: bool, batch: int = 16) -> float:
    """CPU seconds to append ``packets`` to a new stream file."""
    d = tempfile.mkdtemp(dir=directory)
    try:
        t0 = time.process_time()
        f = StreamFile(d, "c_0", truncate=True, indexed=indexed)
        if drained:
            for k in range(0, len(packets), batch):
                chunk = packets[k:k + batch]
                data = b"".join(chunk)
                view = memoryview(data)
                while view:
                    view = view[os.write(f.fd, view):]
                f.drained(len(chunk), len(data), 0)
        else:
            for p in packets:
                f.write_packet(p)
        f.close()
        return time.process_time() - t0
    finally:
        shutil.rmtree(d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=256, help="bytes of packets per run (MiB)")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    args = ap.parse_args()
    print(f"{'packet':>8} {'path':>12} {'plain us/pkt':>13} {'indexed us/pkt':>15} {'ratio':>6}")
    for subbuf in (4096, 65536, 1 << 20):
        count = max(64, (args.mb << 20) // subbuf)
        packets = packets_of(subbuf, min(count, (64 << 20) // subbuf)) * max(1, count // ((64 << 20) // subbuf))
        for drained in (False, True):
            best = {False: float("inf"), True: float("inf")}
            for _ in range(3):
                for indexed in (False, True):
                    best[indexed] = min(best[indexed], run(args.dir, packets, indexed, drained))
            n = len(packets)
            print(f"{subbuf // 1024:>6}Ki {'C drain' if drained else 'write_packet':>12} "
                  f"{1e6 * best[False] / n:>13.2f} {1e6 * best[True] / n:>15.2f} {best[True] / best[False]:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
