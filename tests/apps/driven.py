"""A test application driven line by line on stdin.

Declares tracepoints (all with one int64 field ``v``), then for each line:
  emit NAME COUNT [START]   call NAME's tracepoint COUNT times with v = START, START+1, ...
  declare NAME LEVEL        declare one more tracepoint
  fork NAME COUNT [START]   fork a child that emits, exits; wait for it
  forkexit NAME COUNT [START]  the same, the child exiting as a program does (atexit hooks run)
  loop NAME                 emit forever (v = 0, 1, ...), printing "at V" every 1000
  agent                     print the agent status as JSON
  enabled NAME              answer "ok True" if NAME's tracepoint is attached to anything (a session, a trigger)
  exit
Answers each line with "ok ..." on stdout.
"""

import json
import os
import sys

import ust

TPS = {}


def declare(name, level):
    TPS[name] = ust.tracepoint(name, {"v": ust.int64}, level)


for name, level in [
    ("app:alpha", "INFO"), ("app:beta", "WARNING"), ("app:gamma", "DEBUG"), ("other:delta", "ERR"),
    ("lvl:crit", "CRIT"), ("lvl:warn", "WARNING"), ("lvl:info", "INFO"),
    ("only:info", "INFO"), ("only:err", "ERR"),
]:
    declare(name, level)

print(f"ready {os.getpid()}", flush=True)
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    cmd = words[0]
    if cmd == "emit":
        tp = TPS[words[1]]
        start = int(words[3]) if len(words) > 3 else 0
        for v in range(start, start + int(words[2])):
            tp(v)
        print("ok", flush=True)
    elif cmd == "declare":
        declare(words[1], words[2])
        print("ok", flush=True)
    elif cmd in ("fork", "forkexit"):
        tp = TPS[words[1]]
        start = int(words[3]) if len(words) > 3 else 0
        pid = os.fork()
        if pid == 0:
            for v in range(start, start + int(words[2])):
                tp(v)
            if cmd == "forkexit":
                sys.exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
        print(f"ok {pid}", flush=True)
    elif cmd == "loop":  # loop NAME [PAUSE_MS_PER_1000]
        import time

        tp = TPS[words[1]]
        pause = float(words[2]) / 1000 if len(words) > 2 else 0
        v = 0
        while True:
            tp(v)
            v += 1
            if v % 1000 == 0:
                print(f"at {v}", flush=True)
                if pause:
                    time.sleep(pause)
    elif cmd == "enabled":
        print(f"ok {TPS[words[1]].enabled}", flush=True)
    elif cmd == "agent":
        print("ok " + json.dumps(ust.agent.status()), flush=True)
    elif cmd == "exit":
        print("ok", flush=True)
        break
