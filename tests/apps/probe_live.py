"""A service probed from outside by tests/test_probes_live.py; driven line by line on stdin.

  run CODE   exec CODE (``\\n`` for new lines) in the service's namespace; answer "ok " + json(R)
  exit
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_targets"))

import ust  # noqa: E402,F401  (the agent)
import plive  # noqa: E402,F401

NS = {"plive": plive, "R": None}
print(f"ready {os.getpid()}", flush=True)
for line in sys.stdin:
    if line.startswith("run "):
        NS["R"] = None
        exec(line[4:].rstrip("\n").replace("\\n", "\n"), NS)
        print("ok " + json.dumps(NS["R"]), flush=True)
    elif line.strip() == "exit":
        print("ok", flush=True)
        break
