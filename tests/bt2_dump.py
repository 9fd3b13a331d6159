"""Dump a CTF trace as JSON lines with babeltrace2's Python bindings (bt2).

Run with the Python that has bt2 (Debian's /usr/bin/python3), not the venv:
this is the oracle the tests compare ust against. One line per event:
{"name", "ts", "payload", "context", "packet_context"}; one per discarded-
events message: {"discarded": count}.
"""

import json
import math
import sys

import bt2


def conv(f):
    if f is None:
        return None
    if isinstance(f, bt2._StructureFieldConst):
        return {k: conv(v) for k, v in f.items()}
    if isinstance(f, bt2._ArrayFieldConst):
        return [conv(v) for v in f]
    if isinstance(f, bt2._StringFieldConst):
        return str(f)
    if isinstance(f, bt2._EnumerationFieldConst):
        return {"value": int(f), "labels": sorted(f.labels)}
    if isinstance(f, bt2._IntegerFieldConst):
        return int(f)
    if isinstance(f, bt2._RealFieldConst):
        v = float(f)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(f, bt2._BoolFieldConst):
        return bool(f)
    return repr(f)


def main(path):
    out = sys.stdout
    for msg in bt2.TraceCollectionMessageIterator(path):
        if type(msg) is bt2._EventMessageConst:
            ev = msg.event
            pc = ev.packet.context_field if ev.packet is not None else None
            out.write(json.dumps({
                "name": ev.name,
                "ts": msg.default_clock_snapshot.value,
                "payload": conv(ev.payload_field) or {},
                "context": conv(ev.common_context_field) or {},
                "cpu_id": int(pc["cpu_id"]) if pc is not None and "cpu_id" in pc else None,
            }) + "\n")
        elif type(msg) is bt2._DiscardedEventsMessageConst:
            out.write(json.dumps({"discarded": msg.count}) + "\n")
        elif type(msg) is bt2._DiscardedPacketsMessageConst:
            out.write(json.dumps({"discarded_packets": msg.count}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
