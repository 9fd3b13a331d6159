"""A test application writing app:alpha (one int64 field ``v``) at a paced rate.

Lines on stdin:
  emit COUNT START [PAUSE_MS_PER_1000]  v = START, START+1, ..., sleeping after every 1000 events
  rate COUNT RATE                        COUNT events at RATE events/s (paced in batches of 1000)
  agent                                  the agent status as JSON
  exit
Answers each line with "ok ..." on stdout.
"""

import json
import os
import sys
import time

import ust

tp = ust.tracepoint("app:alpha", {"v": ust.int64})
print(f"ready {os.getpid()}", flush=True)
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "emit":
        count, start = int(words[1]), int(words[2])
        pause = float(words[3]) / 1000 if len(words) > 3 else 0.0
        for v in range(start, start + count):
            tp(v)
            if pause and v % 1000 == 999:
                time.sleep(pause)
        print("ok", flush=True)
    elif words[0] == "rate":
        count, rate = int(words[1]), float(words[2])
        t0 = time.monotonic()
        v = 0
        late = 0.0
        while v < count:
            for _ in range(min(1000, count - v)):
                tp(v)
                v += 1
            ahead = t0 + v / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            else:
                late = max(late, -ahead)
        print(f"ok {time.monotonic() - t0:.3f} {late:.3f}", flush=True)
    elif words[0] == "agent":
        print("ok " + json.dumps(ust.agent.status()), flush=True)
    elif words[0] == "exit":
        print("ok", flush=True)
        break
