"""Kernel domain benchmark (root, tracefs): what the capture sustains and what it costs.

    python bench/bench_kernel.py [--seconds 3] [--buffer-kb 4096]

1. Page conversion alone: events/s of the C converter and of the Python
   reference on real pages (all system calls + sched_switch of this machine).
2. A system-call flood: one process per CPU calls getppid() as fast as it can
   for ``--seconds`` while a KernelCapture records their entries and exits
   (buffer ``--buffer-kb`` per CPU, discard mode): events written per second,
   events lost (the ring's own counters), the drain's CPU time.
3. The same flood through the daemons: ust-sessiond makes the instance and
   the session owner's ust-consumerd drains it (docs/kernel.md): events
   written per second, lost, the consumer's CPU time.
4. The cost to the traced program: ns per getppid() untraced, and traced (the
   same loop, its system calls recorded and drained), as a ratio of the two,
   both measured in this run.
5. The prio context: the conversion with it against tid-only on the same pages,
   and the flood with it (its records read beside the flood's, pages held back).
6. Kernel triggers (``add-trigger --type kernel:syscall``, counted in the owner's
   consumer: docs/lifecycle.md): the C counting of a trigger's pages against the
   conversion of the same pages (``count_matches`` vs ``Converter.page``); the cost
   per getppid() of a trigger whose filter keeps nothing and of one that keeps
   every call, against untraced, in this run; and a flood kept by a trigger: the
   matches counted + discarded against the calls, the consumer's CPU time.

7. The open calls' file names: the path probes' cost per open, and the sweep's pairing of
   probes and calls (scan, pair, convert with the names) against the conversion alone.

    python bench/bench_kernel.py --only triggers   # just 6
    python bench/bench_kernel.py --only paths      # just 7
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from ust.kernel import pages  # noqa: E402
from ust.kernel.capture import KernelCapture  # noqa: E402

FLOOD = r"""
import os, sys, time
sys.stdin.readline()
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    for _ in range(1000):
        os.getppid()
    n += 1000
print(n, flush=True)
"""

LOOP = r"""
import os, sys, time
n = int(sys.argv[1])
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        os.getppid()
    best = min(best, (time.perf_counter_ns() - t0) / n)
print(best)
"""


def conversion(out: str) -> None:
    c = KernelCapture(f"bench-conv-{os.getpid()}", out, buffer_size_kb=8192)
    try:
        c.enable(["sched_switch"])
        c.enable(["*"], syscalls=True)
        c.instance.start()
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            os.getppid()
        c.instance.stop()
        got = c.instance.read_pages()
        for name, cls in (("C", pages.converter_class()), ("Python", pages.PyConverter)):
            conv = cls(c.plans, True)
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                n = sum(conv.page(p)[1] for p in got)
                best = min(best, time.perf_counter() - t0)
            print(f"conversion ({name:6}): {n / best / 1e6:8.1f} M events/s ({len(got)} pages, {n} events)")
        times = {}
        counter = pages.match_counter()
        conv = pages.converter_class()(c.plans, True)
        for name, fn in (("convert", lambda p: conv.page(p)[1]),
                         ("count", lambda p: sum(counter(p, 0)[0].values()))):
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                n = sum(fn(p) for p in got)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
            print(f"trigger pages ({name:7}, C): {n / best / 1e6:8.1f} M records/s")
        print(f"trigger pages: counting takes {times['count'] / times['convert']:.2f}x the conversion's time")
    finally:
        c.destroy()


def prio_conversion(out: str) -> None:
    """The C conversion with the prio context against tid-only, on the same real pages."""
    from ust.kernel.prio import converter_config

    c = KernelCapture(f"bench-prio-{os.getpid()}", out, buffer_size_kb=8192)
    try:
        c.enable(["sched_switch"])
        c.enable(["*"], syscalls=True)
        c.instance.start()
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            os.getppid()
        c.instance.stop()
        got = c.instance.read_pages()
        cls = pages.converter_class()
        plain = cls(c.plans, True)
        prio = cls(c.plans, True, prio=converter_config(list(c.trace.formats.values())))
        times = {}
        for name, fn in (("tid", lambda p: plain.page(p)[1]),
                         ("tid+prio", lambda p: prio.page_prio(p, (-1, pages.PRIO_UNKNOWN), (), False, 1 << 63)[1])):
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                n = sum(fn(p) for p in got)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
            print(f"conversion ({name:8}): {n / best / 1e6:8.1f} M events/s")
        print(f"conversion: the prio context costs {times['tid+prio'] / times['tid']:.2f}x the tid-only time")
    finally:
        c.destroy()


def flood(out: str, seconds: float, buffer_kb: int, contexts: tuple = ("tid",)) -> None:
    ncpu = os.cpu_count() or 1
    procs = [subprocess.Popen([sys.executable, "-c", FLOOD, str(seconds)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(ncpu)]
    c = KernelCapture(f"bench-flood-{os.getpid()}", out, buffer_size_kb=buffer_kb, contexts=contexts)
    try:
        c.enable(["getppid"], syscalls=True)
        c.instance.set_pids([p.pid for p in procs])
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c.start()
        t0 = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        calls = sum(int(p.stdout.readline()) for p in procs)
        elapsed = time.monotonic() - t0
        c.stop()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        written = sum(c.events().values())
        lost = sum(c.lost_by_ring().values())
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        print(f"flood ({'+'.join(contexts)}): {ncpu} processes, {calls} getppid calls = {2 * calls} events in "
              f"{elapsed:.2f} s: "
              f"{written / elapsed / 1e6:.2f} M events/s written, {lost} lost "
              f"({100 * lost / max(2 * calls, 1):.2f} %), drain CPU {cpu:.2f} s "
              f"({100 * cpu / elapsed:.0f} % of one CPU)")
    finally:
        for p in procs:
            p.wait()
        c.destroy()


def _cpu_of(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_flood(home: str, seconds: float, buffer_kb: int) -> None:
    """The flood recorded through ust-sessiond and the owner's ust-consumerd."""
    from ust.control import Client, stop_sessiond

    env = dict(os.environ, UST_HOME=home, UST_AGENT="0",
               PYTHONPATH=os.path.join(os.path.dirname(HERE), "src"))

    def ust(*args):
        subprocess.run([sys.executable, "-m", "ust.cli", *args], env=env, check=True, capture_output=True, text=True)

    ncpu = os.cpu_count() or 1
    out = os.path.join(home, "trace")
    try:
        ust("create", "bflood", "-o", out)
        ust("enable-channel", "-k", "k", "--subbuf-size", f"{buffer_kb}k", "--num-subbuf", "1")
        ust("enable-event", "-k", "--syscall", "getppid")
        ust("start")
        consumer = Client(home).ping()["consumer_pid"]
        procs = [subprocess.Popen([sys.executable, "-c", FLOOD, str(seconds)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env) for _ in range(ncpu)]
        cpu0 = _cpu_of(consumer)
        t0 = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        calls = sum(int(p.stdout.readline()) for p in procs)
        elapsed = time.monotonic() - t0
        cpu = _cpu_of(consumer) - cpu0
        for p in procs:
            p.wait()
        ust("stop")

        r = subprocess.run(["babeltrace2", os.path.join(out, "kernel")], capture_output=True, text=True)
        written = r.stdout.count("syscall_e")
        lost = sum(int(line.split("discarded ")[1].split()[0]) for line in r.stderr.splitlines()
                   if "discarded" in line)
        print(f"flood via ust-consumerd: {ncpu} processes, {calls} getppid calls = {2 * calls} events in "
              f"{elapsed:.2f} s: {written / elapsed / 1e6:.2f} M events/s written, {lost} lost "
              f"({100 * lost / max(2 * calls, 1):.2f} %), consumer CPU {cpu:.2f} s "
              f"({100 * cpu / elapsed:.0f} % of one CPU)")
    finally:
        try:
            stop_sessiond(home, timeout=30)
        except Exception:
            pass


def cost(out: str, n: int = 200_000) -> None:
    def run():
        return float(subprocess.run([sys.executable, "-c", LOOP, str(n)], capture_output=True, text=True,
                                    check=True).stdout)

    off = run()
    c = KernelCapture(f"bench-cost-{os.getpid()}", out)
    try:
        c.enable(["getppid"], syscalls=True)
        c.start()
        on = run()
        c.stop()
        lost = sum(c.lost_by_ring().values())
    finally:
        c.destroy()
    print(f"cost: getppid() {off:.0f} ns untraced, {on:.0f} ns traced ({on / off:.2f}x), {lost} lost")


def triggers(home: str, seconds: float) -> None:
    """Kernel triggers through the daemons: what a trigger costs a getppid() (its filter in the kernel) and a
    flood of matches counted by the owner's consumer."""
    from ust.control import Client, stop_sessiond

    env = dict(os.environ, UST_HOME=home, UST_AGENT="0", PYTHONPATH=os.path.join(os.path.dirname(HERE), "src"))

    def ust(*args):
        subprocess.run([sys.executable, "-m", "ust.cli", *args], env=env, check=True, capture_output=True, text=True)

    def loop():
        return float(subprocess.run([sys.executable, "-c", LOOP, "200000"], capture_output=True, text=True,
                                    check=True, env=env).stdout)

    def trigger(name, flt):
        ust("add-trigger", "--name", name, "--condition", "event-rule-matches", "--type", "kernel:syscall:exit",
            "--name", "getppid", "--filter", flt, "--action", "notify", "--rate-policy", "once-after:4000000000")

    try:
        off = loop()
        trigger("none", "ret == 987654321")  # a pid no process has: the kernel's filter keeps nothing
        nothing = loop()
        ust("remove-trigger", "none")
        trigger("all", "ret >= 0")
        every = loop()
        print(f"trigger cost: getppid() {off:.0f} ns untraced, {nothing:.0f} ns with a trigger keeping nothing "
              f"({nothing / off:.2f}x), {every:.0f} ns with one keeping every call ({every / off:.2f}x)")
        c = Client(home)
        consumer = c.ping()["consumer_pid"]
        before = next(t for t in c.list_triggers() if t["name"] == "all")
        ncpu = os.cpu_count() or 1
        procs = [subprocess.Popen([sys.executable, "-c", FLOOD, str(seconds)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env) for _ in range(ncpu)]
        cpu0 = _cpu_of(consumer)
        t0 = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        calls = sum(int(p.stdout.readline()) for p in procs)
        elapsed = time.monotonic() - t0
        cpu = _cpu_of(consumer) - cpu0
        for p in procs:
            p.wait()
        deadline = time.monotonic() + 30
        while True:
            t = next(t for t in c.list_triggers() if t["name"] == "all")
            counted, discarded = t["hits"] - before["hits"], t["discarded"] - before["discarded"]
            if counted + discarded >= calls or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(f"trigger flood: {ncpu} processes, {calls} matching getppid calls in {elapsed:.2f} s "
              f"({calls / elapsed / 1e6:.2f} M/s): {counted} counted, {discarded} discarded "
              f"(+{counted + discarded - calls} other processes' calls), consumer CPU {cpu:.2f} s "
              f"({100 * cpu / elapsed:.0f} % of one CPU)")
    finally:
        try:
            stop_sessiond(home, timeout=30)
        except Exception:
            pass


OPEN_LOOP = """
import os, sys, time
n = int(sys.argv[1])
t = time.perf_counter()
for _ in range(n):
    os.close(os.open("/etc/hostname", os.O_RDONLY))
print((time.perf_counter() - t) / n * 1e9)
"""


def path_probe_cost(out: str, n: int = 20_000) -> None:
    """What the path probes (ust.kernel.paths: a uprobe on the C library's open functions) add
    to an open(): open+close traced with them, then with them disabled, same session, same run."""
    from ust.kernel import paths

    def run():
        return min(float(subprocess.run([sys.executable, "-c", OPEN_LOOP, str(n)], capture_output=True, text=True,
                                        check=True).stdout) for _ in range(3))

    off = run()
    c = KernelCapture(f"bench-paths-{os.getpid()}", out)
    try:
        c.enable(["openat", "close"], syscalls=True)
        if c.paths_unavailable:
            print(f"path probes: unavailable here ({c.paths_unavailable})")
            return
        c.start()
        probed = run()
        group = paths.group(c.instance.name)
        c.instance.set_enabled([e for e in c.instance.events() if e[0] == group], False)
        plain = run()
        c.stop()
    finally:
        c.destroy()
    print(f"path probes: open+close {off:.0f} ns untraced, {plain:.0f} ns traced, {probed:.0f} ns traced with the "
          f"path probes (+{probed - plain:.0f} ns a call, {probed / plain:.2f}x the traced call)")


def paired_conversion(out: str, n: int = 20_000) -> None:
    """The open calls' file names (ust.kernel.paths.Pairing, docs/kernel.md "File names"): on the
    same real pages of an open+close loop with the path probes, the conversion alone (the names
    left out) against the sweep's whole work (scan every page, pair the probes with the calls in
    time order, convert with the names), and what the pairing adds per open call."""
    Pairing = pages.pairing_class()

    c = KernelCapture(f"bench-pair-{os.getpid()}", out, buffer_size_kb=16384, contexts=("tid",))
    try:
        c.enable(["openat", "close"], syscalls=True)
        if c.paths_unavailable:
            print(f"paired conversion: path probes unavailable here ({c.paths_unavailable})")
            return
        c.instance.start()
        subprocess.run([sys.executable, "-c", OPEN_LOOP, str(n)], capture_output=True, check=True)
        c.instance.stop()
        got = c.instance.read_pages()
        conv = c.trace.converter
        times = {}
        opens = 0

        def paired():
            nonlocal opens
            pairing = Pairing()
            names = [conv.scan(p, pairing)[4] for p in got]
            pairing.pair()
            opens = pairing.names_given + pairing.names_unknown
            return sum(conv.page(p, ns)[1] for p, ns in zip(got, names))

        for name, fn in (("names left out", lambda: sum(conv.page(p)[1] for p in got)), ("paired", paired)):
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                events = fn()
                best = min(best, time.perf_counter() - t0)
            times[name] = best
            print(f"paired conversion ({name:14}): {events / best / 1e6:6.2f} M events/s ({len(got)} pages)")
        extra = times["paired"] - times["names left out"]
        print(f"paired conversion: {times['paired'] / times['names left out']:.2f}x the conversion's time, "
              f"+{extra / max(opens, 1) * 1e9:.0f} ns per open call ({opens} calls)")
    finally:
        c.destroy()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--buffer-kb", type=int, default=4096)
    ap.add_argument("--only", choices=("triggers", "paths"), help="run only this part")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_kernel: needs root (tracefs instances); skipped")
        return 0
    if args.only == "paths":
        with tempfile.TemporaryDirectory() as d:
            path_probe_cost(os.path.join(d, "paths"))
            paired_conversion(os.path.join(d, "pair"))
        return 0
    if args.only == "triggers":
        with tempfile.TemporaryDirectory() as d:
            conversion(os.path.join(d, "conv"))
            triggers(os.path.join(d, "triggers"), args.seconds)
        return 0
    with tempfile.TemporaryDirectory() as d:
        conversion(os.path.join(d, "conv"))
        flood(os.path.join(d, "flood"), args.seconds, args.buffer_kb)
        daemon_flood(os.path.join(d, "daemons"), args.seconds, args.buffer_kb)
        cost(os.path.join(d, "cost"))
        path_probe_cost(os.path.join(d, "paths"))
        paired_conversion(os.path.join(d, "pair"))
        prio_conversion(os.path.join(d, "prio-conv"))
        flood(os.path.join(d, "flood-prio"), args.seconds, args.buffer_kb, ("tid", "prio"))
        triggers(os.path.join(d, "triggers"), args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
