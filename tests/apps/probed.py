"""A service whose functions tests probe from outside; driven line by line on stdin.

  run SCENARIO   call the functions of ptarget (every kind), answer "ok"
  late           import ptlate and call ptlate.late(41)
  held           import ptheld, which answers "ok importing" and waits for a line before it ends
  check          print whether probed functions kept their identity and signature
  exit
"""

import asyncio
import inspect
import json
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_targets"))

import ust  # noqa: E402,F401  (the agent)
import ptarget as T  # noqa: E402

ORIG = {"add": T.add, "m": T.K.__dict__["m"], "sig": str(inspect.signature(T.add)),
        "code": T.add.__code__}


async def _async_all():
    out = [await T.coro(5)]
    out.append([x async for x in T.agen(2)])
    tasks = [asyncio.create_task(T.coro(i)) for i in range(3)]
    out.append(await asyncio.gather(*tasks))
    return out


def scenario(name: str) -> None:
    if name == "kinds":
        T.add(1, 2)
        T.mixed(3, "s", 9, c=2.5, d=True, e=b"\x01\x02", z=4)
        T.untyped("hello", [1, 2])
        k = T.K()
        k.m(21)
        T.K.cm(4)
        T.K.sm(True)
        _ = k.prop
        T.decorated(5)
        T.CLOSURE(1)
        T.make_closure(5)(2)  # a closure made after the probe was installed
        T.outer(2)
        list(T.gen(2))
        asyncio.run(_async_all())
        try:
            T.boom(7)
        except KeyError:
            pass
        T.takes(T.BadRepr())
        T.big(1 << 70)
    elif name == "add":
        T.add(1, 2)
    elif name == "threads":
        ts = [threading.Thread(target=lambda i=i: [T.add(i, j) for j in range(50)], name=f"w{i}") for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    elif name == "many":
        for i in range(200):
            T.add(i, 1)
    elif name == "held":
        sys.modules["ptheld"].held(2)


print(f"ready {os.getpid()}", flush=True)
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "run":
        scenario(words[1])
        print("ok", flush=True)
    elif words[0] == "late":
        import ptlate

        ptlate.late(41)
        print("ok", flush=True)
    elif words[0] == "held":
        import ptheld  # noqa: F401

        print("ok", flush=True)
    elif words[0] == "check":
        same = {"identity": T.add is ORIG["add"] and T.K.__dict__["m"] is ORIG["m"],
                "signature": str(inspect.signature(T.add)) == ORIG["sig"],
                "original_code": T.add.__code__ is ORIG["code"]}
        if sys.version_info >= (3, 12):
            tool = next((t for t in range(6) if sys.monitoring.get_tool(t) == "ust"), None)
            same["monitoring_events"] = 0 if tool is None else sys.monitoring.get_local_events(tool, T.add.__code__)
        print("ok " + json.dumps(same), flush=True)
    elif words[0] == "exit":
        print("ok", flush=True)
        break
