"""A small CTF 1.8 trace writer for tests and benchmarks (not the tracer's).

It writes LTTng's layout (packet header, packet context, large or compact
event header) with plain-text metadata, so that tests can build traces with
exactly the features they exercise (timestamp wrap-around, escapes in
strings, discarded events ...) and compare ``ust view`` with babeltrace2.
"""

from __future__ import annotations

import os
import struct
import uuid as _uuid

from . import layout


def _braces(text: str) -> str:
    """Text placed in _METADATA_HEAD as is (its braces escaped for str.format)."""
    return text.replace("{", "{{").replace("}", "}}")


# ust's own layout (ust/_ring/layout.h, through ctf/layout.py), and LTTng's compact event header
_METADATA_HEAD = """/* CTF 1.8 */

""" + _braces(layout.tsdl_typealiases()) + """typealias integer {{ size = 5; align = 1; signed = false; }} := uint5_t;
typealias integer {{ size = 27; align = 1; signed = false; }} := uint27_t;

trace {{
	major = 1;
	minor = 8;
	uuid = "{uuid}";
	byte_order = {byte_order};
	packet.header := struct {{
""" + _braces(layout.tsdl_packet_header()) + """	}};
}};

env {{
	hostname = "{hostname}";
	domain = "ust";
	tracer_name = "ust";
}};

clock {{
	name = "monotonic";
	freq = {freq};
	offset = {offset};
}};

typealias integer {{ size = 27; align = 1; signed = false; map = clock.monotonic.value; }} := uint27_clock_monotonic_t;
typealias integer {{ size = 32; align = 8; signed = false; map = clock.monotonic.value; }} := uint32_clock_monotonic_t;
typealias integer {{ size = 64; align = 8; signed = false; map = clock.monotonic.value; }} := uint64_clock_monotonic_t;

""" + _braces(layout.tsdl_packet_context()) + """

struct event_header_compact {{
	enum : uint5_t {{ compact = 0 ... 30, extended = 31 }} id;
	variant <id> {{
		struct {{ uint27_clock_monotonic_t timestamp; }} compact;
		struct {{ uint32_t id; uint64_clock_monotonic_t timestamp; }} extended;
	}} v;
}} align(8);

""" + _braces(layout.tsdl_event_header()) + """

stream {{
	id = 0;
	event.header := struct event_header_{header};
	packet.context := struct packet_context;{context}
}};
"""

_PACKET = {bo: layout.packet_struct(bo) for bo in "<>"}  # packet header + packet context
HEADER_SIZE = layout.PACKET_HEADER_SIZE


class Synth:
    """Write one trace: ``Synth(dir).event_class(...)`` then ``write(events)``.

    ``fields`` of an event class: list of (name, tsdl_type, struct_code or
    "s" for a string). Events: (timestamp, class_id, values, cpu).
    """

    def __init__(self, path, header="large", hostname="synth", offset=1_700_000_000_000_000_000,
                 packet_size=65536, context=None, byte_order="le", freq=1_000_000_000):
        self.path = path
        self.header = header
        self.uuid = _uuid.uuid4()
        self.hostname = hostname
        self.offset = offset
        self.packet_size = packet_size
        self.classes = []
        self.context = context or []  # stream event context: [(name, tsdl type, code)]
        if byte_order not in ("le", "be") or (byte_order == "be" and header != "large"):
            raise ValueError("byte_order: 'le', or 'be' with the large header")
        self.byte_order = byte_order
        self.bo = "<" if byte_order == "le" else ">"
        self.freq = freq

    def event_class(self, name, fields, loglevel=13):
        cid = len(self.classes)
        self.classes.append((name, fields, loglevel))
        return cid

    def metadata(self):
        ctx = ""
        if self.context:
            ctx = "\n\tevent.context := struct {\n" + "".join(f"\t\t{t} {n};\n" for n, t, _ in self.context) + "\t};"
        out = [_METADATA_HEAD.format(uuid=self.uuid, hostname=self.hostname, offset=self.offset,
                                     header=self.header, context=ctx, byte_order=self.byte_order, freq=self.freq)]
        for cid, (name, fields, ll) in enumerate(self.classes):
            decl = "".join(f"\t\t{t} {n};\n" for n, t, _ in fields)
            out.append(f'event {{\n\tname = "{name}";\n\tid = {cid};\n\tstream_id = 0;\n\tloglevel = {ll};\n'
                       f'\tfields := struct {{\n{decl}\t}};\n}};\n\n')
        return "".join(out)

    def _encode(self, cid, values, ctx=()):
        fields = self.classes[cid][1]
        out = []
        for (_, _, code), v in zip(self.context, ctx):
            out.append(v.encode("utf-8", "surrogateescape") + b"\0" if code == "s" else struct.pack(self.bo + code, v))
        for (_, _, code), v in zip(fields, values):
            if code == "s":
                out.append(v.encode("utf-8", "surrogateescape") + b"\0")
            else:
                out.append(struct.pack(self.bo + code, v))
        return b"".join(out)

    def _header(self, cid, ts, prev_ts):
        if self.header == "large":
            if cid < layout.EVENT_ID_EXTENDED and prev_ts >= 0 and 0 <= ts - prev_ts < (1 << 32):
                return struct.pack(self.bo + "HI", cid, ts & 0xFFFFFFFF)
            return struct.pack(self.bo + "HIQ", layout.EVENT_ID_EXTENDED, cid, ts)
        if cid < 31 and prev_ts >= 0 and 0 <= ts - prev_ts < (1 << 27):
            return struct.pack("<I", cid | ((ts & ((1 << 27) - 1)) << 5))
        return struct.pack("<BIQ", 31, cid, ts)

    def write(self, events, stream_name="chan_0", cpu=0, discarded_at=None):
        """events: iterable of (ts, cid, values[, context values]), sorted by ts.

        discarded_at: {packet_index: cumulative events_discarded} to report.
        """
        os.makedirs(self.path, exist_ok=True)
        with open(os.path.join(self.path, "metadata"), "w") as f:
            f.write(self.metadata())
        psize = self.packet_size
        with open(os.path.join(self.path, stream_name), "wb") as f:
            buf = []
            used = HEADER_SIZE
            first_ts = None
            prev_ts = 0
            seq = 0
            disc = 0
            last_ts = 0

            def flush(end_ts):
                nonlocal buf, used, first_ts, seq, disc
                if discarded_at and seq in discarded_at:
                    disc = discarded_at[seq]
                body = b"".join(buf)
                content = HEADER_SIZE + len(body)
                head = _PACKET[self.bo].pack(layout.PACKET_MAGIC, self.uuid.bytes, 0, cpu, first_ts or 0, end_ts,
                                             content * 8, psize * 8, seq, disc, cpu)
                f.write(head + body + b"\0" * (psize - content))
                seq += 1
                buf = []
                used = HEADER_SIZE
                first_ts = None

            for ev in events:
                ts, cid, values = ev[:3]
                payload = self._encode(cid, values, ev[3] if len(ev) > 3 else ())
                hdr = self._header(cid, ts, prev_ts if first_ts is not None else -1)
                if used + len(hdr) + len(payload) > psize:
                    flush(last_ts)
                    hdr = self._header(cid, ts, -1)
                if first_ts is None:
                    first_ts = ts
                    hdr = self._header(cid, ts, -1) if self.header == "large" else hdr
                buf.append(hdr)
                buf.append(payload)
                used += len(hdr) + len(payload)
                prev_ts = ts
                last_ts = ts
            if buf:
                flush(last_ts)
