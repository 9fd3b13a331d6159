"""The kernel trace's statedump: the state of the system when recording starts.

lttng-modules writes, at each session start, ``lttng_statedump_*`` events
describing what is already there, so that analyses know the processes that
existed before the first event (their process id, parent and name) and the
disks (their names). lttng-analyses and Trace Compass read them: without
them, a thread already running at the start is known by its thread id only
(lttng-analyses prints its pid as "?"). ftrace has no such events; ust reads
the same facts from /proc and /sys and writes them, under lttng-modules'
names and field types (instrumentation/events/lttng-statedump.h), as the
first packet of CPU 0's stream, dated just before the instance starts (so
every ftrace event comes after them):

* ``lttng_statedump_start`` / ``lttng_statedump_end`` (no fields);
* ``lttng_statedump_process_state``: tid, pid (its process), ppid, name,
  type (0 user thread, 1 kernel thread), mode (5: unknown), submode (1:
  unknown), status (6 running, 5 waiting, 4 zombie, 7 dead, 0 other), cpu
  (the CPU it last ran on), file_table_address (0: not known from /proc);
* ``lttng_statedump_file_descriptor``: pid, fd, flags (the open flags),
  fmode (read 1, write 2), filename, for every file open in every process
  (lttng-modules' fields before its 2.13 file table address, which
  lttng-analyses does not read: it reads the pid);
* ``lttng_statedump_block_device``: dev (the kernel's dev_t: major << 20 |
  minor) and diskname, for every disk and partition.

Their ids are above any ftrace event's (formats.STATEDUMP_FIRST_ID): ftrace
numbers its events from a few dozen upward, and an event numbered in this
range is refused when enabled (one line) rather than confused with these.
"""

from __future__ import annotations

import os
import struct
import threading

from . import formats as fmt
from . import pages

START, END, PROCESS_STATE, BLOCK_DEVICE, FILE_DESCRIPTOR = range(fmt.STATEDUMP_FIRST_ID,
                                                                   fmt.STATEDUMP_FIRST_ID + 5)
KERNEL_THREAD_FLAG = 0x00200000  # PF_KTHREAD, in /proc/PID/stat's flags
MODE_UNKNOWN, SUBMODE_UNKNOWN = 5, 1
STATUS = {"R": 6, "S": 5, "D": 5, "I": 5, "Z": 4, "X": 7}  # /proc state letter -> lttng_process_status

_I32 = "integer { size = 32; align = 8; signed = 1; encoding = none; base = 10; }"
_U32 = "integer { size = 32; align = 8; signed = 0; encoding = none; base = 10; }"
_HEX64 = "integer { size = 64; align = 8; signed = 0; encoding = none; base = 16; }"
_OCT32 = "integer { size = 32; align = 8; signed = 0; encoding = none; base = 8; }"
_HEX32 = "integer { size = 32; align = 8; signed = 0; encoding = none; base = 16; }"
_TEXT16 = "integer { size = 8; align = 8; signed = 1; encoding = UTF8; base = 10; }"
EVENTS = {
    START: ("lttng_statedump_start", []),
    END: ("lttng_statedump_end", []),
    PROCESS_STATE: ("lttng_statedump_process_state", [
        f"{_I32} _tid;", f"{_I32} _pid;", f"{_I32} _ppid;", f"{_TEXT16} _name[16];", f"{_I32} _type;",
        f"{_I32} _mode;", f"{_I32} _submode;", f"{_I32} _status;", f"{_U32} _cpu;",
        f"{_HEX64} _file_table_address;"]),
    BLOCK_DEVICE: ("lttng_statedump_block_device", [f"{_U32} _dev;", "string { encoding = UTF8; } _diskname;"]),
    FILE_DESCRIPTOR: ("lttng_statedump_file_descriptor", [
        f"{_I32} _pid;", f"{_I32} _fd;", f"{_OCT32} _flags;", f"{_HEX32} _fmode;",
        "string { encoding = UTF8; } _filename;"]),
}
_PROCESS = struct.Struct("<iii16siiiiIQ")


def metadata_text() -> str:
    """The TSDL declarations of the statedump events (stream 0)."""
    out = []
    for event_id, (name, fields) in EVENTS.items():
        body = "".join(f"\t\t{line}\n" for line in fields)
        out.append(f"event {{\n\tname = \"{name}\";\n\tid = {event_id};\n\tstream_id = 0;\n"
                   + ("\tfields := struct {\n" + body + "\t};\n" if fields else "\tfields := struct { };\n")
                   + "};\n\n")
    return "".join(out)


def _read(path: str, limit: int = 1 << 16) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return ""
    try:
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _thread_state(stat: str) -> tuple[str, int, int, int, int] | None:
    """(comm, state letter, ppid, flags, cpu) from a /proc/.../stat line (the
    name is between the first '(' and the last ')': it may hold either)."""
    left, right = stat.find("("), stat.rfind(")")
    if left < 0 or right < left:
        return None
    rest = stat[right + 2:].split()
    try:
        return stat[left + 1:right], rest[0], int(rest[1]), int(rest[6]), int(rest[36])
    except (IndexError, ValueError):
        return None


def processes(proc: str = "/proc") -> list[bytes]:
    """A ``lttng_statedump_process_state`` payload per thread alive now (one
    that ends while it is read is left out)."""
    out = []
    for pid_name in os.listdir(proc):
        if not pid_name.isdigit():
            continue
        try:
            tids = os.listdir(f"{proc}/{pid_name}/task")
        except OSError:
            continue  # gone
        for tid_name in tids:
            if not tid_name.isdigit():
                continue
            st = _thread_state(_read(f"{proc}/{pid_name}/task/{tid_name}/stat"))
            if st is None:
                continue
            comm, state, ppid, flags, cpu = st
            out.append(_PROCESS.pack(int(tid_name), int(pid_name), ppid, comm.encode()[:15].ljust(16, b"\0"),
                                     1 if flags & KERNEL_THREAD_FLAG else 0, MODE_UNKNOWN, SUBMODE_UNKNOWN,
                                     STATUS.get(state, 0), max(cpu, 0), 0))
    return out


FMODE_READ, FMODE_WRITE = 0x1, 0x2  # the kernel's f_mode bits lttng-modules records (the rest: not in /proc)
MAX_PATH = 4096  # the kernel's PATH_MAX: a readlink of /proc/PID/fd/N is no longer


def file_descriptors(proc: str = "/proc") -> list[bytes]:
    """A ``lttng_statedump_file_descriptor`` payload (pid, fd, flags, fmode, filename) per file
    open now in every process /proc shows (as lttng-modules writes, with its pid: what
    lttng-analyses reads). ``flags``: the open flags (O_CLOEXEC included) from fdinfo; ``fmode``:
    read/write from them; the name as the kernel gives it (a deleted file says so; a socket,
    pipe or anon inode is ``socket:[N]``...). A process or file that goes while read is left out."""
    out = []
    for pid_name in os.listdir(proc):
        if not pid_name.isdigit():
            continue
        try:
            fds = os.listdir(f"{proc}/{pid_name}/fd")
        except OSError:
            continue  # gone, or not ours to see
        for fd_name in fds:
            if not fd_name.isdigit():
                continue
            try:
                name = os.readlink(f"{proc}/{pid_name}/fd/{fd_name}")
            except OSError:
                continue
            flags = 0
            for line in _read(f"{proc}/{pid_name}/fdinfo/{fd_name}", 4096).splitlines():
                if line.startswith("flags:"):
                    try:
                        flags = int(line[6:].strip(), 8) & 0xFFFFFFFF
                    except ValueError:
                        pass
                    break
            access = flags & os.O_ACCMODE
            fmode = (FMODE_READ if access in (os.O_RDONLY, os.O_RDWR) else 0) | \
                (FMODE_WRITE if access in (os.O_WRONLY, os.O_RDWR) else 0)
            text = name.encode("utf-8", "surrogateescape")[:MAX_PATH].replace(b"\0", b"")
            out.append(struct.pack("<iiII", int(pid_name), int(fd_name), flags, fmode) + text + b"\0")
    return out


def block_devices(sys_block: str = "/sys/class/block") -> list[bytes]:
    """A ``lttng_statedump_block_device`` payload per disk and partition."""
    out = []
    try:
        names = sorted(os.listdir(sys_block))
    except OSError:
        return out
    for name in names:
        major, _, minor = _read(f"{sys_block}/{name}/dev", 64).strip().partition(":")
        if major.isdigit() and minor.isdigit():
            out.append(struct.pack("<I", (int(major) << 20 | int(minor)) & 0xFFFFFFFF) + name.encode() + b"\0")
    return out


def events(ts: int, contexts: tuple[str, ...]) -> tuple[bytes, int]:
    """(the statedump's CTF events, how many), all at time ``ts``, each with
    the trace's event context (tid, pid, procname, prio: trace.CONTEXTS' order)
    of the thread writing them (its prio: unknown, as no record says it)."""
    me = b""
    if "tid" in contexts:
        me += struct.pack("<i", threading.get_native_id())
    if "pid" in contexts:
        me += struct.pack("<i", os.getpid())
    if "procname" in contexts:
        me += _read("/proc/self/comm", 64).strip().encode()[:15].ljust(16, b"\0")
    if "prio" in contexts:
        me += struct.pack("<i", pages.PRIO_UNKNOWN)
    records = [(START, b"")]
    records += [(PROCESS_STATE, p) for p in processes()]
    records += [(FILE_DESCRIPTOR, f) for f in file_descriptors()]
    records += [(BLOCK_DEVICE, b) for b in block_devices()]
    records.append((END, b""))
    out = bytearray()
    for event_id, payload in records:
        out += pages._EXTENDED.pack(65535, event_id, ts) + me + payload
    return bytes(out), len(records)
