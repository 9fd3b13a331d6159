"""File names of the open system calls: path probes (uprobes on the C library).

lttng-modules records ``syscall_entry_openat``'s ``filename`` as the string;
ftrace's syscall events record the pointer only, and lttng-iousagetop (which
names files by what they were opened as) needs the string. ftrace can fetch
a user-space string with a dynamic event, but this kernel (like many
distribution kernels) is built without kprobe events and without event
probes (``CONFIG_KPROBE_EVENTS``, ``CONFIG_EPROBE_EVENTS``: the ``e:`` syntax
``README`` lists is refused, "Invalid argument"); it has uprobe events. So ust
puts a uprobe at the entry of each C library function that takes a path and
makes one of these calls (``open64``, ``openat64``, ``creat64``, their
``_2`` fortify variants and glibc's internal ``__open64_nocancel``), which
records the calling thread, the pointer and the string read there (``ptr``,
``path``) just before the system call.

The converter (``_ftrace.c``, ``pages.py``) does not write these records. A
thread's probe record and its call's are on different CPUs when it moved in
between, and each CPU's pages are converted on their own: so the trace reads
every CPU before converting any (ust.kernel.sweep), ``Converter.scan`` hands
out each page's probe records and open calls' entries, and ``Pairing`` takes
them in time order over all CPUs: the ``filename`` of a thread's
``sys_enter_open*`` record gets the path of the thread's probe record just
before it when their pointers are the same (formats.OP_PATH), else "" (not
known: a call that did not go through these functions — a static binary,
another C library, a raw ``syscall()`` — or records lost in between).

The probes are a session's: ftrace group ``ustp_<hash of the instance
name>`` (so concurrent sessions do not clash), created in the global
``uprobe_events`` when an open-family entry is enabled, enabled only in the
session's instance, removed with it (``remove_group``: ``Instance.remove``)
and, for a dead owner's, by the next daemon's stale-instance cleanup
(``remove_orphans``: a group whose instance is gone). A uprobe makes every
call of the function, in every process using that C library, trap to the
kernel while it is enabled (a microsecond or so); it is enabled only while
the session records an open call.

Only the C library this process uses is probed (found in /proc/self/maps):
processes using another one (a container's) get "".
"""

from __future__ import annotations

import hashlib
import os
import struct

from .formats import PATH_SYSCALLS, PROBE_GROUP_PREFIX

# (function, the register holding its path argument: x86-64's first or second integer argument)
FUNCTIONS = (("open64", "di"), ("__open64_2", "di"), ("__open64_nocancel", "di"),
             ("openat64", "si"), ("__openat64_2", "si"), ("creat64", "di"))
ARCH_REGISTERS = {"x86_64"}  # the register names above are x86-64's


class PathProbeError(OSError):
    """The path probes cannot be made here (one line: why)."""


def group(instance_name: str) -> str:
    """The ftrace group of an instance's path probes (a valid event group name: hex)."""
    return PROBE_GROUP_PREFIX + hashlib.sha256(instance_name.encode()).hexdigest()[:20]


def wanted(events: list[tuple[str, str]]) -> bool:
    """Whether these (system, event) include an open-family system call entry."""
    return any(s == "syscalls" and e.startswith("sys_enter_") and e[len("sys_enter_"):] in PATH_SYSCALLS
               for s, e in events)


def libc_path() -> str:
    """The C library this process maps (its real path), or PathProbeError."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    base = os.path.basename(path)
                    if base.startswith("libc.so") or (base.startswith("libc-") and base.endswith(".so")):
                        return os.path.realpath(path)
    except OSError as exc:
        raise PathProbeError(f"cannot read /proc/self/maps: {exc.strerror}") from None
    raise PathProbeError("no C library mapped in this process (static build?)")


_OFFSETS: dict[tuple, dict[str, int]] = {}  # (path, inode, mtime, names) -> symbol_offsets' answer


def symbol_offsets(path: str, names: set[str]) -> dict[str, int]:
    """{name: file offset} of the dynamic symbols ``names`` of an ELF64 little-endian shared
    object (the offset a uprobe takes: the symbol's address mapped back through its PT_LOAD).
    Remembered while the file is the same."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        key = (path, st.st_ino, st.st_mtime_ns, frozenset(names))
        if key in _OFFSETS:
            return dict(_OFFSETS[key])
        data = f.read()
    _OFFSETS[key] = _symbol_offsets(path, data, names)
    return dict(_OFFSETS[key])


def _symbol_offsets(path: str, data: bytes, names: set[str]) -> dict[str, int]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise PathProbeError(f"{path} is not a 64-bit little-endian ELF file")
    try:
        phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
        loads = []
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
            if p_type == 1:  # PT_LOAD
                loads.append((p_vaddr, p_offset, p_filesz))
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        out: dict[str, int] = {}
        for sec in sections:
            if sec[1] != 11:  # SHT_DYNSYM
                continue
            strtab = sections[sec[6]]
            for j in range(sec[5] // 24):
                st_name, _, _, st_shndx, st_value, _ = struct.unpack_from("<IBBHQQ", data, sec[4] + j * 24)
                if not st_value or not st_shndx:
                    continue
                start = strtab[4] + st_name
                name = data[start:data.index(b"\0", start)].decode("ascii", "replace")
                if name in names and name not in out:
                    for vaddr, offset, size in loads:
                        if vaddr <= st_value < vaddr + size:
                            out[name] = st_value - vaddr + offset
                            break
        return out
    except (struct.error, ValueError, IndexError) as exc:
        raise PathProbeError(f"cannot read the symbols of {path}: {exc}") from None


def _append(tracefs: str, line: str) -> None:
    fd = os.open(os.path.join(tracefs, "uprobe_events"), os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def ensure(tracefs: str, instance_name: str) -> list[tuple[str, str]]:
    """Make the path probes of an instance (once: kept until ``remove_group``); returns their
    (system, event) (as its ``events/`` shows them). PathProbeError when they cannot be made
    here (no uprobe events, not x86-64, no C library found)."""
    if os.uname().machine not in ARCH_REGISTERS:
        raise PathProbeError(f"path probes know x86-64's argument registers, not {os.uname().machine}'s")
    if not os.path.exists(os.path.join(tracefs, "uprobe_events")):
        raise PathProbeError("this kernel has no uprobe events (CONFIG_UPROBE_EVENTS)")
    grp = group(instance_name)
    present = os.path.join(tracefs, "events", grp)
    libc = libc_path()
    offsets = symbol_offsets(libc, {name for name, _ in FUNCTIONS})
    made = []
    for name, reg in FUNCTIONS:
        if name not in offsets:
            continue
        event = name.lstrip("_")
        if not os.path.isdir(os.path.join(present, event)):
            try:
                _append(tracefs, f"p:{grp}/{event} {libc}:0x{offsets[name]:x} ptr=%{reg}:u64 path=+0(%{reg}):string")
            except OSError as exc:
                raise PathProbeError(f"cannot make a uprobe on {libc}:{name}: {exc.strerror or exc}") from None
        made.append((grp, event))
    if not made:
        raise PathProbeError(f"none of {', '.join(n for n, _ in FUNCTIONS)} in {libc}")
    return made


def remove_group(tracefs: str, grp: str) -> None:
    """Remove a group's probes (each must be disabled everywhere: its instance removed first)."""
    base = os.path.join(tracefs, "events", grp)
    try:
        events = [e for e in os.listdir(base) if os.path.isdir(os.path.join(base, e))]
    except OSError:
        return
    for event in events:
        try:
            _append(tracefs, f"-:{grp}/{event}")
        except OSError:
            pass  # still enabled somewhere (a consumer closing the instance): the next cleanup's


def remove_orphans(tracefs: str, instance_prefix: str) -> list[str]:
    """Remove the path probe groups whose instance is gone (a dead owner's); returns them."""
    inst_dir = os.path.join(tracefs, "instances")
    try:
        # groups first: an instance is made before its group, so a group seen here whose instance
        # is not listed after is really gone (not a concurrent session being started)
        groups = [g for g in os.listdir(os.path.join(tracefs, "events")) if g.startswith(PROBE_GROUP_PREFIX)]
        live = {group(n) for n in os.listdir(inst_dir) if n.startswith(instance_prefix)}
    except OSError:
        return []
    gone = [g for g in groups if g not in live]
    for g in gone:
        remove_group(tracefs, g)
    return gone


def probes_for(instance, events: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str]:
    """The path probes an instance recording ``events`` needs (none unless an open-family
    entry is among them), made if needed, and "" — or no probes and why they cannot be made
    (the file names are then "": the trace is still recorded)."""
    if not wanted(events):
        return [], ""
    try:
        return ensure(instance.tracefs, instance.name), ""
    except PathProbeError as exc:
        return [], str(exc)


NEVER = (1 << 64) - 1


class Pairing:
    """Each open call entry's file name: the path of its thread's path probe record just before it,
    on whatever CPU either was recorded (docs/kernel.md, "File names").

    A thread's records are on the CPUs it ran on, and each CPU's pages are converted on their own,
    so the pairing cannot follow the conversion: the sweep (ust.kernel.sweep) reads every CPU's
    pages before converting any, gives each page's path records here (``page``: scan's, in the
    page's order) and calls ``pair(until)`` once every CPU has been read up to ``until`` (the
    watermark); the records up to then are taken in time order over all CPUs, a thread's latest
    probe record is remembered (pointer, path), and its next open call takes the path when its
    pointer is the same, else gets "" (not known: a call that did not go through the probed
    functions). The names go into the lists ``page`` returned (the Converter takes them in order).

    Lost records (``gap``) may hide a thread's call or probe between a probe and a call: a call is
    never paired with a probe recorded before the end of a stretch where records were lost, nor one
    read out of time order (later than the time already paired: ``pair``'s assumption broken)."""

    def __init__(self):
        # (time, rank: 0 a gap, 1 a record, sequence, tid, pointer, path | None, names | None, index | end)
        self.queue: list[tuple] = []
        self.latest: dict[int, tuple[int, bytes, bool]] = {}  # tid -> (pointer, path, tainted) of its last probe
        self.taint_until = -1  # a probe recorded up to this time may have lost records after it
        self.done = -1  # the time up to which records were paired
        self.seq = 0
        self.names_given = self.names_unknown = 0  # open calls' entries paired with a name, or not

    @property
    def pending(self) -> int:
        """Records queued, not paired yet."""
        return len(self.queue)

    def page(self, found: list[tuple]) -> list | None:
        """Queue a page's path records (``Converter.scan``'s: (time, tid, pointer, path | None for
        an open call's entry), in order); returns the list its calls' names will be in (None: no call)."""
        calls = sum(1 for item in found if item[3] is None)
        names = [b""] * calls if calls else None
        k = 0
        seq = self.seq
        late = None
        for ts, tid, ptr, path in found:
            if path is None:
                self.queue.append((ts, 1, seq, tid, ptr, None, names, k))
                k += 1
            else:
                self.queue.append((ts, 1, seq, tid, ptr, path, None, 0))
            if ts <= self.done and late is None:
                late = ts
            seq += 1
        self.seq = seq
        if late is not None:  # read after its time was paired: whatever it would have changed is not known
            self.gap(late, self.done)
        return names

    def gap(self, start: int, end: int) -> None:
        """Records of some CPU were lost after ``start`` and up to ``end``."""
        self.queue.append((start, 0, self.seq, 0, 0, None, None, max(start, end)))
        self.seq += 1

    def pair(self, until: int = NEVER) -> None:
        """Pair the queued records up to ``until`` (every CPU is read up to then), in time order."""
        if not self.queue:
            if until != NEVER:
                self.done = max(self.done, until)
            return
        self.queue.sort()
        latest = self.latest
        cut = 0
        reached = self.done
        for item in self.queue:
            ts = item[0]
            if ts > until:
                break
            cut += 1
            reached = ts
            if item[1] == 0:  # a gap: nothing remembered before it, nor during it, can be trusted
                latest.clear()
                self.taint_until = max(self.taint_until, item[7])
            elif item[6] is None:  # a probe
                latest[item[3]] = (item[4], item[5], ts <= self.taint_until)
            else:  # an open call
                probe = latest.pop(item[3], None)
                if probe is not None and probe[0] == item[4] and not probe[2]:
                    item[6][item[7]] = probe[1]
                    self.names_given += 1
                else:
                    self.names_unknown += 1
        del self.queue[:cut]
        # (pairing everything, at a stop, is no promise about what a later start records)
        self.done = max(self.done, reached if until == NEVER else until)
