"""The tracepoint call never reads memory Python may have freed (issue 8, item 3).

Between validating its arguments and copying them into the buffer, the call
used to run Python — a later argument's __bool__, a contextvar value's
__str__, the filter, the thread_name context — and with it, possibly another
thread: a bytearray or a list resized meanwhile left the call copying from
freed memory. Each test runs the application in a subprocess so that a
segfault fails the test instead of killing pytest, and reads the trace back
with babeltrace2: every recorded value must be one the application really
held (never bytes from a freed block).
"""

import pytest

from conftest import bt2_dump, events_of, needs_bt2, run_python

pytestmark = needs_bt2

PRELUDE = """
import contextvars, sys, threading
import ust
out = sys.argv[1]
"""


def _run(tmp_path, body: str, dump=False) -> list[dict]:
    r = run_python(PRELUDE + body, str(tmp_path), timeout=300)
    assert r.returncode == 0, f"the application died (rc {r.returncode}): {r.stderr[-2000:]}"
    return bt2_dump(tmp_path) if dump else events_of(bt2_dump(tmp_path))


def _blob(ev) -> bytes:
    return bytes(ev["payload"]["data"])


def test_bool_of_a_later_argument_resizes_the_bytearray(tmp_path):
    # 1 MiB bytearray: its block is mmapped, so the clear() in __bool__ unmaps it.
    evs = _run(tmp_path, """
tp = ust.tracepoint("uaf:bool", {"data": ust.bytes, "flag": ust.boolean})
ba = bytearray(b"A" * (1 << 20))
class Shrinks(int):
    def __bool__(self):
        ba.clear()
        ba.extend(b"B" * 16)
        junk = [b"Z" * (1 << 20) for _ in range(4)]
        return True
with ust.Session(out, subbuf_size=4 << 20, num_subbuf=2):
    tp(ba, Shrinks(1))
""")
    assert len(evs) == 1
    assert _blob(evs[0]) == b"B" * 16  # the value after every conversion ran
    assert evs[0]["payload"]["flag"]["value"] == 1


def test_contextvar_str_resizes_the_bytearray(tmp_path):
    evs = _run(tmp_path, """
tp = ust.tracepoint("uaf:ctxvar", {"data": ust.bytes})
ba = bytearray(b"A" * (1 << 20))
class Shrinks:
    def __str__(self):
        ba.clear()
        ba.extend(b"C" * 8)
        junk = [b"Z" * (1 << 20) for _ in range(4)]
        return "req-1"
var = contextvars.ContextVar("request")
var.set(Shrinks())
with ust.Session(out, subbuf_size=4 << 20, num_subbuf=2, context=["contextvar:request"]):
    tp(ba)
""")
    assert len(evs) == 1
    assert _blob(evs[0]) == b"C" * 8
    assert "req-1" in str(evs[0]["context"])


def test_bool_of_a_list_element_shrinks_the_list(tmp_path):
    # The first element's __bool__ empties the list: the call used to read the
    # other 99,999 items through the freed item array.
    dump = _run(tmp_path, """
tp = ust.tracepoint("uaf:list", {"flags": ust.sequence(ust.boolean)})
class Clears(int):
    def __bool__(self):
        lst.clear()
        junk = [object() for _ in range(100000)]
        return True
lst = [Clears(1)] + [True] * 99999
with ust.Session(out, subbuf_size=1 << 20, num_subbuf=2) as s:
    tp([True, False])
    tp(lst)
assert s.counters()["lost_args"] == 1, s.counters()
""", dump=True)
    # The list changed size under the call: its arguments no longer fit, so
    # the event is not recorded (nor half-garbage) but counted as discarded.
    assert [e["payload"]["flags"] for e in events_of(dump)] == [[{"value": 1, "labels": ["true"]},
                                                                  {"value": 0, "labels": ["false"]}]]
    # One discarded-events message (babeltrace2 gives no count for a loss in
    # a stream's first packet: it has no earlier packet to subtract).
    assert [e["discarded"] for e in dump if "discarded" in e] in ([1], [None])


# Another thread resizes the objects while the call runs Python — the filter,
# the thread_name context (here a Thread subclass's name property that sleeps)
# — and that Python lets other threads run, as any Python may (a sleep, I/O,
# the switch interval). Each recorded value must be one
# the objects held at some instant: all A's (3000) or all B's (1000), never
# 3000 bytes read through a pointer taken before a shrink.
THREADED = """
import time
sys.setswitchinterval(1e-5)
A, B = b"A" * 3000, b"B" * 1000
ba = bytearray(A)
lst = [7] * 3000
stop = False
def to_b():
    ba[:] = B
    lst[:] = [9] * 1000
def to_a():
    ba[:] = A
    lst[:] = [7] * 3000
def resize():
    while not stop:
        to_b()  # a call: the GIL may change hands in either state
        to_a()
class Worker(threading.Thread):
    @property
    def name(self):
        time.sleep(0.0002)
        return "worker"
    @name.setter
    def name(self, value):
        pass
tp = ust.tracepoint("uaf:thread", {"n": ust.int32, "data": ust.bytes, "items": ust.sequence(ust.uint8)})
def record():
    for i in range(1500):
        tp(i, ba, lst)
t = threading.Thread(target=resize)
t.start()
try:
    with ust.Session(out, subbuf_size=1 << 20, num_subbuf=8, **SESSION):
        w = Worker(target=record)
        w.start()
        w.join()
finally:
    stop = True
    t.join()
"""


@pytest.mark.parametrize("session", [
    "dict(context=['thread_name'])",
    "dict(filter='n >= 0')",
], ids=["thread_name", "filter"])
def test_another_thread_resizes_during_python_in_the_call(tmp_path, session):
    evs = _run(tmp_path, f"SESSION = {session}\n" + THREADED)
    assert len(evs) >= 1000  # most calls recorded (none lost to full buffers here)
    for ev in evs:
        data = _blob(ev)
        assert data in (b"A" * 3000, b"B" * 1000), (
            f"event {ev['payload']['n']} recorded {len(data)} bytes never held: {data[:8]!r}...{data[-8:]!r}")
        items = ev["payload"]["items"]
        assert items in ([7] * 3000, [9] * 1000), f"event {ev['payload']['n']} recorded items {set(items)}"
