"""The embedded default: trace examples/webapp.py with an in-process session
(no daemons), then print the first events of the trace and a summary.

    python examples/demo.py [OUTPUT_DIR]
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import ust

sys.path.insert(0, str(Path(__file__).resolve().parent))
import webapp  # noqa: E402  (declares its tracepoints at import)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/demo-trace")
    if out.exists():
        shutil.rmtree(out)
    with ust.Session(out, events=["webapp:*"], context=["vpid", "vtid", "procname"]) as session:
        webapp.main(500)
    counts = session.counters()
    print(f"trace written to {out} (lost events: {counts['lost']})")
    viewer = shutil.which("babeltrace2")
    if viewer:
        text = subprocess.run([viewer, str(out)], capture_output=True, text=True, check=True).stdout.splitlines()
        print(f"babeltrace2 reads {len(text)} events; the first five:")
        for line in text[:5]:
            print("  " + line)
    else:
        try:
            events = list(ust.read_trace(out))
            print(f"{len(events)} events; the first five:")
            for ev in events[:5]:
                print(f"  [{ev.timestamp}] {ev.name}: {ev.fields}")
        except Exception as exc:  # the reader may not be available yet
            print(f"(install babeltrace2 to view the trace: {exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
