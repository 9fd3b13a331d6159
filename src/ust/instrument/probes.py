"""Dynamic probes: entry/return events on Python functions named while the program runs.

A probe spec names functions as ``MODULE:QUALNAME`` (``*`` wildcards in the
qualname). For each function found, two tracepoints are declared (kind
"probe"): ``BASE_entry`` with one field per parameter and ``BASE_return``
with ``retval`` and ``exception``, where BASE is the spec's event name or
``MODULE:QUALNAME``. They are attached like any tracepoint (the session
daemon's rules select them), so channels, contexts and filters apply.

Mechanism (docs/probes.md):
  * 3.12+: ``sys.monitoring`` local events PY_START / PY_RETURN on the probed
    code objects only (every function made from that code is probed: nested
    functions and closures included), and the global PY_UNWIND event (which
    CPython does not offer per code object) while any probe is installed.
    Removing the last probe on a code object turns its events off.
  * 3.11: the function object keeps its identity; its ``__code__`` is swapped
    for its own code recompiled from its source with the probe inside
    (inline_code; no frame added), else for a trampoline with the same
    parameters (so ``inspect.signature`` and the defaults are unchanged) that
    records the entry, calls the original code and records the return;
    removal puts the original code back. Nested functions: the
    frame-evaluation hook, per code object.

Nothing here raises into the application: conversion failures are recorded
as text, a failing probe records nothing.

``WholeProgram`` is ``ust run --functions`` / ``--function '*'``: every call as
python:function_entry/return carrying an id, the names once per code object
in python:function_info.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import threading
import types

from ust.instrument import fields as F
from ust.instrument import forksafe
from ust.instrument import loglevels
from ust.instrument import ownthread

MONITORING = sys.version_info >= (3, 12)
try:  # the per-call paths in C, built into the C core (the Python callbacks below do the same, slower)
    from ust._ring import _probes as _C
except ImportError:  # pragma: no cover - a build without the extension
    _C = None
if os.environ.get("UST_PROBES_PURE") == "1":  # the Python paths only (tests, debugging)
    _C = None
REPR_LIMIT = 256
MAX_TARGET = 512
# s: how often the agent's thread looks again at a module its probes found being imported by another thread
# (the import hook cannot reach an import begun before it was there, and the agent never waits for one)
LOOK_AGAIN = 0.02
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_QUAL_RE = re.compile(r"^[A-Za-z_*<][A-Za-z0-9_.*<>]*$")
_INT64 = (-(1 << 63), (1 << 63) - 1)
CO_VARARGS, CO_VARKEYWORDS = 0x04, 0x08
CO_GENERATOR, CO_COROUTINE, CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200


class ProbeError(ValueError):
    """A probe that cannot be installed (reported in one line)."""


def parse_target(text: str) -> tuple[str, str]:
    """``"pkg.mod:Class.method"`` -> (module, qualname pattern); ``"*"`` -> ("*", "*") (whole program)."""
    if not isinstance(text, str) or not text or len(text) > MAX_TARGET:
        raise ProbeError(f"invalid function {text!r}: expected MODULE:QUALNAME")
    if text == "*":
        return "*", "*"
    module, sep, qual = text.partition(":")
    if not sep or not _MODULE_RE.match(module) or not qual or not _QUAL_RE.match(qual):
        raise ProbeError(f"invalid function {text!r}: expected MODULE:QUALNAME (e.g. mypkg.mod:Class.method, "
                         "`*` wildcards in the qualname)")
    return module, qual


def event_base(module: str, qualname: str, event: str | None) -> str:
    return event if event else f"{module}:{qualname}"


def glob_regex(pattern: str) -> re.Pattern:
    """``*`` is the only wildcard (as in event patterns)."""
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in pattern) + r"\Z", re.S)


# ---------------------------------------------------------------------------
# finding the functions of a module


def _unwrap(fn: object) -> object:
    """The innermost function of a decorator chain (``__wrapped__``), bounded."""
    for _ in range(100):
        inner = getattr(fn, "__wrapped__", None) if not isinstance(fn, type) else None
        if inner is None:
            break
        fn = inner
    return fn


def _as_function(obj: object) -> object:
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    return _unwrap(obj)


def find_functions(module: types.ModuleType, parents: dict | None = None) -> dict[types.CodeType, tuple[str, object]]:
    """Every Python code object defined by ``module``: code -> (qualname, a function using it or None).

    Walks the module's namespace, its classes (recursively), properties,
    class/static methods, decorated functions (via ``__wrapped__``) and the
    code objects nested in them (nested functions, closures, lambdas), whose
    enclosing code goes into ``parents`` (code -> the code whose constant it is).
    """
    name = module.__name__
    found: dict[types.CodeType, tuple[str, object]] = {}
    seen: set[int] = set()

    def add_code(code: types.CodeType, fn: object, qualname: str | None = None) -> None:
        tramp = _TRAMPOLINES.get(id(code))
        if tramp is not None and tramp[0] is code:  # probed already (3.11): the function's own code
            code = tramp[1]
        if code in found:
            if found[code][1] is None and fn is not None:
                found[code] = (found[code][0], fn)
            return
        found[code] = (qualname or code.co_qualname, fn)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                if parents is not None:
                    parents.setdefault(const, code)
                add_code(const, None)

    def visit(ns: dict) -> None:
        for value in list(ns.values()):
            if isinstance(value, property):
                # The three accessors share the property's qualname; the setter and the deleter are named
                # as they are defined (``@prop.setter``), so each has its own events and fields.
                candidates = [(value.fget, ""), (value.fset, ".setter"), (value.fdel, ".deleter")]
            elif isinstance(value, functools.cached_property):
                candidates = [(value.func, "")]
            else:
                candidates = [(value, "")]
            for cand, accessor in candidates:
                fn = _as_function(cand)
                if isinstance(fn, types.FunctionType) and getattr(fn, "__module__", None) == name:
                    add_code(fn.__code__, fn, fn.__code__.co_qualname + accessor if accessor else None)
                elif isinstance(fn, type) and fn.__module__ == name and id(fn) not in seen:
                    seen.add(id(fn))
                    visit(dict(vars(fn)))

    visit(dict(vars(module)))
    return found


_UNKNOWN = object()  # an annotation that is not a plain name or string (recorded as repr text)


def nested_annotations(code: types.CodeType, parent: types.CodeType, namespace: dict) -> dict:
    """The annotations a function made from the nested ``code`` will have, read from the bytecode of the
    enclosing ``parent`` that makes it, without running it: for a nested function with no instance alive
    when it is probed (its annotations are evaluated each time the enclosing function runs, so only its
    instances carry them). What the probe needs: a parameter annotated with a plain name (``int``, looked
    up in ``namespace``, the module's globals, then the builtins) or a string (``"int"``, ``from
    __future__ import annotations``); anything else (``list[int]``, a local name) is _UNKNOWN, recorded as
    text as for any function. {} when the bytecode is not the expected shape (3.11 to 3.13: the
    annotations tuple, then the closure, pushed before LOAD_CONST code; MAKE_FUNCTION's flags, or 3.13's
    SET_FUNCTION_ATTRIBUTE after it)."""
    import builtins
    import dis

    try:
        ins = list(dis.get_instructions(parent))
        at = next(i for i, x in enumerate(ins) if x.opname == "LOAD_CONST" and x.argval is code)
        if at + 1 >= len(ins) or ins[at + 1].opname != "MAKE_FUNCTION":
            return {}
        flags = ins[at + 1].arg or 0
        for x in ins[at + 2:at + 6]:
            if x.opname != "SET_FUNCTION_ATTRIBUTE":
                break
            flags |= x.arg
        if not flags & 0x04:  # no annotations
            return {}

        def item(end: int) -> int:
            """The first instruction of the straight-line group ending at ``end`` that pushes one value."""
            need, k = 1, end
            while k >= 0:
                x = ins[k]
                if x.is_jump_target or x.opcode in dis.hasjrel or x.opcode in dis.hasjabs:
                    raise ValueError("not straight-line code")
                need -= dis.stack_effect(x.opcode, x.arg if x.opcode >= dis.HAVE_ARGUMENT else None, jump=False)
                if need == 0:
                    return k
                if need < 0:
                    raise ValueError("no such group")
                k -= 1
            raise ValueError("no such group")

        end = at - 1
        if flags & 0x08:  # the closure's tuple, pushed last
            end = item(end) - 1
        start = item(end)
        last = ins[end]
        if start == end and last.opname == "LOAD_CONST" and isinstance(last.argval, tuple):
            values: list = list(last.argval)  # every annotation a constant (strings)
        elif last.opname == "BUILD_TUPLE" and last.arg and last.arg % 2 == 0:
            groups, k = [], end - 1
            for _ in range(last.arg):
                first = item(k)
                groups.append(ins[first:k + 1])
                k = first - 1
            groups.reverse()
            values = []
            for g in groups:
                x = g[0]
                if len(g) != 1:
                    values.append(_UNKNOWN)
                elif x.opname == "LOAD_CONST" and isinstance(x.argval, str):
                    values.append(x.argval)
                elif x.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(x.argval, str):
                    values.append(namespace[x.argval] if x.argval in namespace
                                  else getattr(builtins, x.argval, _UNKNOWN))
                else:
                    values.append(_UNKNOWN)
        else:
            return {}
        names = values[0::2]
        if not all(isinstance(n, str) for n in names):
            return {}
        return dict(zip(names, values[1::2]))
    except (ValueError, StopIteration, TypeError, IndexError):
        return {}


def describe_non_python(module: types.ModuleType, qualname: str) -> str | None:
    """If ``qualname`` names something callable that is not a Python function, say what it is."""
    obj: object = module
    for part in qualname.split("."):
        try:
            obj = (vars(obj) if isinstance(obj, type) else obj.__dict__)[part] if hasattr(obj, "__dict__") \
                else getattr(obj, part)
        except (KeyError, AttributeError, TypeError):
            return None
    fn = _as_function(obj)
    if isinstance(fn, types.FunctionType) and fn.__module__ != module.__name__ and isinstance(fn.__module__, str):
        # imported from another module (``from os.path import join``): probed where it is defined
        return f"{module.__name__}:{qualname} is {fn.__module__}:{fn.__qualname__}: probe it there"
    if isinstance(fn, (types.FunctionType, property, functools.cached_property)):
        return None
    if callable(fn):
        return f"{module.__name__}:{qualname} is not a Python function ({type(fn).__name__}): it cannot be probed"
    return f"{module.__name__}:{qualname} is not a function ({type(fn).__name__})"


# ---------------------------------------------------------------------------
# argument values -> field values


def safe_repr(value: object, limit: int) -> str:
    try:
        text = repr(value)
    except BaseException as exc:  # noqa: BLE001 - a user's __repr__ may raise anything
        return f"<repr failed: {type(exc).__name__}>"
    if not isinstance(text, str):
        return f"<repr failed: {type(text).__name__}>"
    if len(text) > limit:
        text = text[:limit]
    # Lone surrogates cannot be written as UTF-8.
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if not text.isascii() else text


_TYPES = {int: F.int64, float: F.float64, str: F.string, bool: F.boolean, bytes: F.bytes_,
          "int": F.int64, "float": F.float64, "str": F.string, "bool": F.boolean, "bytes": F.bytes_}


# The C paths' conversion of each field (ust/_ring/probes.c, convert_value), by field type name; None: repr.
_KIND = {"int64": ord("i"), "float64": ord("f"), "boolean": ord("b"), "string": ord("s"), "bytes": ord("y"),
         None: ord("r")}


def field_type(annotation: object) -> F.FieldType | None:
    """The typed field for a plain annotation, else None (recorded as repr text)."""
    try:
        return _TYPES.get(annotation)
    except TypeError:  # unhashable annotation
        return None


def _convert(ftype: F.FieldType | None, value: object, limit: int) -> tuple[object, bool]:
    """(field value, fits): a value that does not fit its typed field records the zero value."""
    if ftype is None:
        return safe_repr(value, limit), True
    kind = ftype.kind
    if kind == "int":
        if isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
            return int(value), True
        return 0, False
    if kind == "float":
        if isinstance(value, float):
            return value, True
        if isinstance(value, int):
            try:
                return float(value), True
            except OverflowError:
                return 0.0, False
        return 0.0, False
    if kind == "bool":
        if isinstance(value, bool):
            return value, True
        return False, False
    if kind == "string":
        if type(value) is str:
            return (value if value.isascii() else value.encode("utf-8", "backslashreplace").decode()), True
        return "", False
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value), True
        except Exception:  # noqa: BLE001
            return b"", False
    return b"", False


class _Recorder:
    """Converts values to one event's fields and records it; never raises."""

    __slots__ = ("tp", "names", "types", "limit", "unfit", "nvalues")

    def __init__(self, tp, names: list[str], ftypes: list[F.FieldType | None], limit: int, unfit: bool):
        self.tp = tp
        self.names = names
        self.types = ftypes
        self.limit = limit
        self.unfit = unfit
        self.nvalues = len(names)

    def values(self, values) -> list:
        out = []
        bad = []
        limit = self.limit
        for name, ftype, value in zip(self.names, self.types, values):
            v, fits = _convert(ftype, value, limit)
            out.append(v)
            if not fits:
                bad.append(f"{name}={safe_repr(value, limit)}")
        if self.unfit:
            out.append(" ".join(bad))
        return out

    def record(self, values) -> None:
        try:
            self.tp(*self.values(values))
        except Exception:  # noqa: BLE001 - tracing never raises into the application
            pass


def _params(code: types.CodeType) -> list[str]:
    n = code.co_argcount + code.co_kwonlyargcount
    n += bool(code.co_flags & CO_VARARGS) + bool(code.co_flags & CO_VARKEYWORDS)
    return list(code.co_varnames[:n])


def _field_name(name: str, taken: set) -> str:
    out = re.sub(r"[^A-Za-z0-9_]", "_", name) or "arg"
    if out[0].isdigit():
        out = "_" + out
    while out in taken:
        out += "_"
    taken.add(out)
    return out


def _entry_field_names(params: list[str]) -> tuple[list[str], set]:
    """The entry event's field names for these parameters (and the set taken, for `unfit`)."""
    taken: set = set()
    return [_field_name(n, taken) for n in params], taken


_BUSY = ownthread.BUSY  # set while a probe converts values in this thread, and for good on a ust thread


class Probe:
    """The two events of one probed code object, and how to fill them."""

    def __init__(self, base: str, code: types.CodeType, fn: object, with_args: bool, limit: int,
                 flt: object = None, declare=None):
        from ust.instrument.tracepoint import declare as _declare

        declare = declare or _declare
        self.base = base
        self.code = code
        self.flt = flt
        self.skipped: set[int] = set()
        self.pending: dict[int, object] = {}  # 3.11 inline code without the C paths: frame -> return not final yet
        annotations = {}
        try:
            annotations = dict(getattr(fn, "__annotations__", None) or {})
        except Exception:  # noqa: BLE001
            pass
        names = _params(code) if with_args else []
        self.params = names
        fnames, taken = _entry_field_names(names)
        ftypes = [None if n in (code.co_varnames[code.co_argcount + code.co_kwonlyargcount:len(names)])
                  else field_type(annotations.get(n)) for n in names]
        unfit = any(t is not None for t in ftypes)
        entry_fields = [(n, t or F.string) for n, t in zip(fnames, ftypes)]
        if unfit:
            entry_fields.append((_field_name("unfit", taken), F.string))
        self.fieldnames = fnames
        level = loglevels.DEBUG_FUNCTION
        self.entry = _Recorder(declare(f"{base}_entry", entry_fields, level, kind="probe",
                                       extra={"function": code.co_qualname}).tp, fnames, ftypes, limit, unfit)
        rtype = field_type(annotations.get("return")) if with_args else None
        ret_fields = [("retval", rtype or F.string), ("exception", F.string)]
        if rtype is not None:
            ret_fields.append(("unfit", F.string))
        self.ret_tp = declare(f"{base}_return", ret_fields, level, kind="probe",
                              extra={"function": code.co_qualname}).tp
        # A value that does not fit its typed field is recorded by the slow
        # path (zero + its repr in `unfit`): these calls must raise on a misfit
        # rather than be counted as discarded under the no-raise policy.
        self.entry.tp.raises = True
        self.ret_tp.raises = True
        self.rtype = rtype if with_args else None
        self.with_args = with_args
        self.limit = limit
        # Other sessions' probes on the same code with events of their own (another event name): recorded
        # by this probe's slow path, each with its own filter. Which outputs kept a call is remembered
        # until its return (``_kept``), so each output's pairs stay whole.
        self.extras: list[Probe] = []
        self._kept: dict = {}
        self.flt_text: str | None = None  # the filter as the spec gave it

    def record(self, trampoline: bool = False) -> tuple:
        """What the C paths read (ust/_ring/probes.c: the record layout).

        A trampoline's record (a constant of its code) holds no set: a code object's constants must stay
        hashable, and a trampoline keeps its skipped state in a local variable.
        """
        kinds = bytes(_KIND[t.name if t is not None else None] for t in self.entry.types)
        ret_kind = _KIND[self.rtype.name if self.rtype is not None else None] if self.with_args else ord("n")
        fast = self.flt is None and len(self.params) <= 64 and not self.extras
        # With extras, every parameter is read (an extra may record them where this probe does not).
        names = tuple(_params(self.code)) if self.extras else tuple(self.params)
        rec = (self.entry.tp, self.ret_tp, names, kinds, self.entry.unfit, ret_kind, self.limit,
               fast, self, None if trampoline else self.skipped)
        return _C.Record(*rec) if _C is not None else rec

    # -- the slow path of the 3.12+ callbacks (the C hooks call these when they cannot record) -------------

    def on_start(self, depth: int = 1) -> None:
        try:
            frame = sys._getframe(depth)
            names = _params(self.code) if self.extras else self.params
            if names:
                loc = frame.f_locals
                values = [loc.get(n) for n in names]
            else:
                values = ()
            if not self.enter(values):
                self.skipped.add(id(frame))
        except Exception:  # noqa: BLE001
            pass

    def on_return(self, retval) -> None:
        if not self.skipped or not _drop_skipped(self):
            self.leave(retval, None)

    def on_unwind(self, exc) -> None:
        if not self.skipped or not _drop_skipped(self):
            self.leave(None, exc)

    def passes(self, values) -> bool:
        flt = self.flt
        if flt is None:
            return True
        try:
            fields = dict(zip(self.fieldnames, self.entry.values(values)))
            ctx = None
            if flt.context_fields:
                t = threading.current_thread()
                ctx = {"vpid": os.getpid(), "vtid": threading.get_native_id(), "thread_name": t.name,
                       "procname": t.name}
            return bool(flt.matches(fields, ctx))
        except Exception:  # noqa: BLE001
            return False

    def enter(self, values) -> bool:
        """Record the entry; False when the filter drops this call (its return is dropped too).

        A call made while a probe converts values (a probed ``__repr__``) is not recorded: the
        conversion would recurse.
        """
        if getattr(_BUSY, "on", False):
            return False
        _BUSY.on = True
        try:
            if self.extras:
                return self._enter_outputs(values)
            if not self.passes(values):
                return False
            self.entry.record(values)
            return True
        finally:
            _BUSY.on = False

    def leave(self, retval: object, exc: BaseException | None) -> None:
        if getattr(_BUSY, "on", False):
            return
        _BUSY.on = True
        try:
            if self.extras:
                self._leave_outputs(retval, exc)
            else:
                self._record_return(retval, exc)
        finally:
            _BUSY.on = False

    # -- several outputs (self and its extras) -----------------------------------------------------------

    def _call_key(self) -> object:
        """What identifies the running call from its entry to its return: its frame (3.12+: the probed
        frame; 3.11: the trampoline's, a generator's own frame across its resumptions), found a few frames
        up; else this thread (3.11's frame-evaluation hook calls before the frame runs: calls of one code
        object on one thread enter and return in LIFO order, a generator's resumptions aside)."""
        try:
            f = sys._getframe(2)
        except ValueError:
            f = None
        for _ in range(8):
            if f is None:
                break
            code = f.f_code
            if MONITORING and code is self.code:
                return id(f)
            tramp = _TRAMPOLINES.get(id(code))
            if tramp is not None and tramp[0] is code and tramp[1] is self.code:
                return id(f)
            f = f.f_back
        return ("thread", threading.get_ident())

    def _enter_outputs(self, values) -> bool:
        kept = tuple(o for o in [self, *self.extras] if o.passes(values))
        for o in kept:
            o.entry.record(values)
        if not kept:
            return False
        key = self._call_key()
        stack = self._kept.get(key)
        if stack is None:
            if len(self._kept) > 65536:  # calls whose return never came (a thread or generator gone)
                self._kept.clear()
            stack = self._kept[key] = []
        stack.append(kept)
        return True

    def _leave_outputs(self, retval: object, exc: BaseException | None) -> None:
        key = self._call_key()
        stack = self._kept.get(key)
        kept = stack.pop() if stack else (self, *self.extras)  # entered before the outputs changed
        if stack is not None and not stack:
            del self._kept[key]
        for o in kept:
            o._record_return(retval, exc)

    def _record_return(self, retval: object, exc: BaseException | None) -> None:
        try:
            if exc is not None:
                args = ["" if self.rtype is None else _convert(self.rtype, None, 0)[0], type(exc).__name__]
                if self.rtype is not None:
                    args.append("")
            elif self.rtype is not None:
                v, fits = _convert(self.rtype, retval, self.limit)
                args = [v, "", "" if fits else f"retval={safe_repr(retval, self.limit)}"]
            else:
                args = [safe_repr(retval, self.limit) if self.with_args else "", ""]
            self.ret_tp(*args)
        except Exception:  # noqa: BLE001
            pass


# ---------------------------------------------------------------------------
# mechanism on 3.12+: sys.monitoring


_TOOL_NAME = "ust"


class _Monitor:
    """Owns one sys.monitoring tool id (3.12+) and the C hooks; dispatches to probes and the whole-program tracer."""

    def __init__(self) -> None:
        self.tool: int | None = None
        self.probes: dict[types.CodeType, Probe] = {}
        self.records: dict[types.CodeType, tuple] = {}  # what the C hooks read
        self.whole: WholeProgram | None = None
        self.hooks = _C.Hooks(self.records, sys.monitoring.DISABLE if MONITORING else None) if _C else None

    def _acquire(self) -> int:
        mon = sys.monitoring
        if self.tool is not None:
            return self.tool
        for tool in (mon.PROFILER_ID, 5, 4, 3):
            try:
                mon.use_tool_id(tool, _TOOL_NAME)
            except ValueError:
                continue
            self.tool = tool
            E = mon.events
            h = self.hooks
            start, ret, unwind = h.callbacks() if h else (self._on_start, self._on_return, self._on_unwind)
            mon.register_callback(tool, E.PY_START, start)
            mon.register_callback(tool, E.PY_RETURN, ret)
            mon.register_callback(tool, E.PY_UNWIND, unwind)
            return tool
        raise ProbeError("no free sys.monitoring tool id (other tools use them all)")

    def _globals(self) -> None:
        E = sys.monitoring.events
        events = 0
        if self.probes:
            events |= E.PY_UNWIND
        if self.whole is not None:
            events |= E.PY_START | E.PY_RETURN | E.PY_UNWIND
        sys.monitoring.set_events(self.tool, events)
        if not events and not self.probes:
            for e in (E.PY_START, E.PY_RETURN, E.PY_UNWIND):
                sys.monitoring.register_callback(self.tool, e, None)
            sys.monitoring.free_tool_id(self.tool)
            self.tool = None

    def add(self, probe: Probe) -> None:
        tool = self._acquire()
        E = sys.monitoring.events
        self.probes[probe.code] = probe
        self.records[probe.code] = rec = probe.record()
        if _C is not None:
            _C.set_record(probe.code, rec)
        sys.monitoring.set_local_events(tool, probe.code, E.PY_START | E.PY_RETURN)
        sys.monitoring.restart_events()  # a location the whole-program tracer disabled counts again
        self._globals()

    def add_eval(self, probe: Probe) -> None:
        """3.11, a nested function: the frame-evaluation hook (C) reads its record at every frame of its
        code, so instances made after the probe are probed too (a trampoline reaches the live ones only)."""
        self.probes[probe.code] = probe
        self.records[probe.code] = rec = probe.record()
        _C.set_record(probe.code, rec)
        self.hooks.eval_probe(1)

    def remove(self, code: types.CodeType) -> None:
        if _C is not None and code in self.records:
            _C.set_record(code, None)  # before the record may be freed
        self.records.pop(code, None)
        if self.probes.pop(code, None) is None:
            return
        if not MONITORING:  # 3.11: a probe of add_eval()
            self.hooks.eval_probe(-1)
            return
        if self.tool is None:
            return
        sys.monitoring.set_local_events(self.tool, code, 0)
        self._globals()

    def set_whole(self, whole: "WholeProgram | None") -> None:
        if whole is not None:
            self._acquire()
        self.whole = whole
        if self.hooks is not None:
            if whole is None:
                self.hooks.set_whole(0)
            else:
                whole.attach_hooks(self.hooks)
        if self.tool is not None:
            if whole is not None:
                sys.monitoring.restart_events()
            self._globals()

    # -- Python callbacks, when the C hooks are not built (in the application's threads) ------------------

    def _on_start(self, code, offset):
        probe = self.probes.get(code)
        if probe is not None:
            probe.on_start(2)
        whole = self.whole
        if whole is not None:
            return whole.on_start(code)
        return None

    def _on_return(self, code, offset, retval):
        probe = self.probes.get(code)
        if probe is not None:
            probe.on_return(retval)
        whole = self.whole
        if whole is not None:
            return whole.on_return(code)
        return None

    def _on_unwind(self, code, offset, exc):
        probe = self.probes.get(code)
        if probe is not None:
            probe.on_unwind(exc)
        whole = self.whole
        if whole is not None:
            whole.on_unwind(code)


def _drop_skipped(probe: Probe) -> bool:
    """The monitored frame is 2 up (this, Probe.on_return/on_unwind) from the C hooks, 3 from _Monitor's."""
    try:
        key = id(sys._getframe(2 if _C is not None else 3))
    except ValueError:
        return False
    if key in probe.skipped:
        probe.skipped.discard(key)
        return True
    return False


_MONITOR = _Monitor()


# ---------------------------------------------------------------------------
# mechanism on 3.11: a trampoline code object with the same signature


# The quoted names are constants replaced by the objects when installed (_swap_in): used in place, not
# copied into locals first (three stores and loads fewer per call).
_PROLOGUE = """
    __ust_on = "__ust_enter__"("__ust_record__", {values})"""
_ON_EXC = """
    except BaseException as __ust_e:
        if __ust_on:
            "__ust_probe__".leave(None, __ust_e)
        raise"""
_TRAMPOLINE = {
    "plain": _PROLOGUE + """
    try:
        __ust_r = "__ust_orig__"({call})""" + _ON_EXC + """
    if __ust_on:
        "__ust_leave__"("__ust_record__", __ust_r)
    return __ust_r
""",
    "generator": _PROLOGUE + """
    try:
        __ust_r = yield from "__ust_orig__"({call})""" + _ON_EXC + """
    if __ust_on:
        "__ust_leave__"("__ust_record__", __ust_r)
    return __ust_r
""",
    "coroutine": _PROLOGUE + """
    try:
        __ust_r = await "__ust_orig__"({call})""" + _ON_EXC + """
    if __ust_on:
        "__ust_leave__"("__ust_record__", __ust_r)
    return __ust_r
""",
    "async_generator": _PROLOGUE + """
    __ust_g = "__ust_orig__"({call})
    __ust_v = None
    try:
        while True:
            try:
                __ust_y = await __ust_g.asend(__ust_v)
            except StopAsyncIteration:
                break
            __ust_v = yield __ust_y""" + _ON_EXC + """
    if __ust_on:
        "__ust_leave__"("__ust_record__", None)
""",
}


def _kind(code: types.CodeType) -> str:
    if code.co_flags & CO_ASYNC_GENERATOR:
        return "async_generator"
    if code.co_flags & CO_COROUTINE:
        return "coroutine"
    if code.co_flags & CO_GENERATOR:
        return "generator"
    return "plain"


def trampoline_code(code: types.CodeType) -> types.CodeType:
    """A code object with ``code``'s parameters that calls ``__ust_probe__.orig`` between enter and leave.

    Its constant "__ust_probe__" is replaced by the probe proxy when installed.
    """
    names = list(code.co_varnames)
    npos, nkw = code.co_argcount, code.co_kwonlyargcount
    posonly = code.co_posonlyargcount
    i = npos + nkw
    varargs = names[i] if code.co_flags & CO_VARARGS else None
    i += bool(varargs)
    varkw = names[i] if code.co_flags & CO_VARKEYWORDS else None
    pos, kwonly = names[:npos], names[npos:npos + nkw]
    sig: list[str] = []
    for j, n in enumerate(pos):
        sig.append(n)
        if posonly and j == posonly - 1:
            sig.append("/")
    if varargs:
        sig.append("*" + varargs)
    elif kwonly:
        sig.append("*")
    sig += kwonly
    if varkw:
        sig.append("**" + varkw)
    call = list(pos) + ([f"*{varargs}"] if varargs else []) + [f"{n}={n}" for n in kwonly] + \
        ([f"**{varkw}"] if varkw else [])
    values = pos + kwonly + ([varargs] if varargs else []) + ([varkw] if varkw else [])  # co_varnames order
    freevars = list(code.co_freevars)
    prefix = "async " if _kind(code) in ("coroutine", "async_generator") else ""
    body = _TRAMPOLINE[_kind(code)].format(values=", ".join(values), call=", ".join(call))
    src = "def __ust_outer():\n"
    if freevars:
        src += "    " + " = ".join(freevars) + " = None\n"
    src += f"    {prefix}def __ust_f({', '.join(sig)}):\n"
    if freevars:
        src += "        if False: " + "; ".join(freevars) + "\n"
    src += "\n".join("    " + line for line in body.splitlines()) + "\n    return __ust_f\n"
    import warnings

    with warnings.catch_warnings():  # '"__ust_leave__"(...)': a constant replaced before it runs
        warnings.simplefilter("ignore", SyntaxWarning)
        outer = compile(src, code.co_filename, "exec")
    inner = next(c for c in next(c for c in outer.co_consts if isinstance(c, types.CodeType)).co_consts
                 if isinstance(c, types.CodeType))
    return inner.replace(co_name=code.co_name, co_qualname=code.co_qualname, co_firstlineno=code.co_firstlineno)


def _py_enter(record: tuple, *values) -> bool:
    """enter() of the trampolines when the C hooks are not built."""
    try:
        return record[8].enter(values)
    except Exception:  # noqa: BLE001
        return False


def _py_leave(record: tuple, retval) -> None:
    record[8].leave(retval, None)


# -- 3.11, the function's own code with the probe inside (no frame added) ------------------------------------

_SOURCES: dict[str, tuple] = {}  # file -> (linecache's lines it was parsed from, the tree): a few probed files
_FUTURE_FLAGS = 0
for _name in __import__("__future__").all_feature_names:
    _FUTURE_FLAGS |= getattr(__import__("__future__"), _name).compiler_flag


def _source_tree(filename: str):
    """(the module's tree, its defs: (name, first line) -> [(def, the top-level statement holding it)]) of
    the file as linecache has it; None without source."""
    import ast
    import linecache

    lines = linecache.getlines(filename)
    if not lines:
        return None
    cached = _SOURCES.get(filename)
    if cached is not None and cached[0] is lines:
        return cached[1], cached[3]
    tree = ast.parse("".join(lines), filename)
    defs: dict = {}
    for stmt in tree.body:
        for n in ast.walk(stmt):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = n.decorator_list[0].lineno if n.decorator_list else n.lineno
                defs.setdefault((n.name, first), []).append((n, stmt))
    if len(_SOURCES) >= 16:
        _SOURCES.clear()
    _SOURCES[filename] = (lines, tree, {}, defs)
    return tree, defs


def _compiled_context(tree, context, code: types.CodeType) -> types.CodeType:
    """``context`` compiled unchanged, once per file and top-level statement (the functions of a class probed
    by one wildcard share it)."""
    import warnings

    entry = _SOURCES.get(code.co_filename)
    key = (tuple(id(stmt) for stmt in context.body), code.co_flags & _FUTURE_FLAGS)
    done = entry[2] if entry is not None and entry[1] is tree else {}
    if key not in done:
        if len(done) >= 64:
            done.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            done[key] = compile(context, code.co_filename, "exec", flags=key[1], dont_inherit=True)
    return done[key]


def _find_code(code_obj: types.CodeType, name: str, line: int) -> types.CodeType | None:
    for c in code_obj.co_consts:
        if isinstance(c, types.CodeType):
            if c.co_name == name and c.co_firstlineno == line:
                return c
            found = _find_code(c, name, line)
            if found is not None:
                return found
    return None


def _context(tree, holder):
    """A module of what compiling a def needs of ``tree``: ``holder``, the top-level statement holding it (its enclosing
    classes and functions, whole: which names are free, private name mangling, ``__class__``) and those that
    may import (3.11 compiles ``mod.f()`` otherwise for a name an import bound at module level). A context
    that misses something compiles other code, which inline_code's comparison refuses."""
    import ast

    keep = [stmt for stmt in tree.body
            if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.If, ast.Try, ast.With)) or stmt is holder]
    return ast.Module(body=keep, type_ignores=[])


def _compile_tree(tree, code: types.CodeType, name: str, line: int) -> types.CodeType | None:
    """The code of the def ``name`` at ``line`` in the module ``tree`` compiled as ``code``'s module was (its
    file, its __future__ flags)."""
    import warnings

    with warnings.catch_warnings():  # '"__ust_leave__"(...)': a constant replaced before it runs
        warnings.simplefilter("ignore", SyntaxWarning)
        module = compile(tree, code.co_filename, "exec", flags=code.co_flags & _FUTURE_FLAGS, dont_inherit=True)
    return _find_code(module, name, line)


class _Inliner:
    """The body of a def with the probe inside: the entry first, each return through ``__ust_leave__``, an
    exception leaving it through ``__ust_unwind__`` (re-raised). Nested defs, lambdas and classes are not
    entered (their returns are theirs).

    A return inside a ``try:`` that has a ``finally:``, or inside a ``with`` block, is not final: the
    ``finally:`` or the context manager's exit runs after it and may raise, return another value, or drop it
    (``break``/``continue`` in the ``finally:``). Such a return goes through ``__ust_leave_later__`` (kept as
    the frame's pending value) and the body gets an outermost ``finally: __ust_settle__(record)``, which
    records the pending value when the frame really leaves; an exception leaving it, or a later final return,
    drops it (probes.c). So each call records exactly one return, the one its caller saw."""

    def __init__(self, params: list[str], async_generator: bool):
        self.params = params
        self.async_generator = async_generator
        self.guarded = False  # a return not final was found: the body needs the settling `finally:`

    def _leave(self, value, at, later: bool = False):
        import ast

        call = ast.Call(func=ast.Constant("__ust_leave_later__" if later else "__ust_leave__"),
                        args=[ast.Constant("__ust_record__"), value or ast.Constant(None)], keywords=[])
        return ast.copy_location(call, at)

    def returns(self, stmts: list) -> list:
        import ast

        inliner = self

        class Returns(ast.NodeTransformer):
            depth = 0  # how many `finally:` and `with` exits will run after a return here

            def visit_FunctionDef(self, n):
                return n

            visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = visit_FunctionDef

            def _guarded(self, n, fields):
                self.depth += 1
                try:
                    for name in fields:
                        setattr(n, name, self._visit_list(getattr(n, name)))
                finally:
                    self.depth -= 1

            def _visit_list(self, items):
                out = []
                for x in items:
                    x = self.visit(x)
                    out.extend(x if isinstance(x, list) else [x])
                return out

            def visit_Try(self, n):
                if not n.finalbody:
                    return self.generic_visit(n)
                self._guarded(n, ("body", "handlers", "orelse"))
                n.finalbody = self._visit_list(n.finalbody)
                return n

            visit_TryStar = visit_Try

            def visit_With(self, n):
                n.items = self._visit_list(n.items)
                self._guarded(n, ("body",))
                return n

            visit_AsyncWith = visit_With

            def visit_ExceptHandler(self, n):
                n.body = self._visit_list(n.body)
                return n

            def visit_Return(self, n):
                later = self.depth > 0
                inliner.guarded |= later
                if inliner.async_generator:  # `return` takes no value there
                    return [ast.copy_location(ast.Expr(inliner._leave(None, n, later)), n), n]
                n.value = inliner._leave(n.value, n, later)
                return n

        t = Returns()
        return [t.visit(x) for x in stmts]

    def body(self, node) -> list:
        import ast

        stmts = list(node.body)
        head = []
        if stmts and isinstance(stmts[0], ast.Expr) and isinstance(stmts[0].value, ast.Constant) \
                and isinstance(stmts[0].value.value, str):
            head = [stmts.pop(0)]  # the docstring stays first
        out = []
        for x in self.returns(stmts):
            out.extend(x if isinstance(x, list) else [x])
        at = node
        end = ast.Return(value=None) if self.async_generator else ast.Return(value=self._leave(None, at))
        if self.async_generator:
            out.append(ast.Expr(self._leave(None, at)))
        out.append(end)
        entry = ast.Expr(ast.Call(func=ast.Constant("__ust_entry__"),
                                  args=[ast.Constant("__ust_record__")] + [ast.Name(p, ast.Load()) for p in self.params],
                                  keywords=[]))
        handler = ast.ExceptHandler(type=ast.Constant("__ust_BaseException__"), name=None, body=[
            ast.Expr(ast.Call(func=ast.Constant("__ust_unwind__"), args=[ast.Constant("__ust_record__")],
                              keywords=[])),
            ast.Raise(exc=None, cause=None)])
        settle = [ast.Expr(ast.Call(func=ast.Constant("__ust_settle__"), args=[ast.Constant("__ust_record__")],
                                    keywords=[]))] if self.guarded else []
        wrapped = ast.Try(body=out, handlers=[handler], orelse=[], finalbody=settle)
        # Only the nodes made here get locations (the body's last statement keeps its own: a `raise` there
        # showed the def's line in tracebacks). The entry is on the first statement's line, so a line tracer
        # (sys.settrace: pdb, coverage) sees no def line before it; the return added at the end has no line
        # of its own (-1: the compiler gives it its predecessor's, as to the return it adds itself).
        # (the exception handler and the settling `finally:` are on the def's line: code with no line there would
        # give the frame no line number (None) when an exception leaves it)
        for n in (entry, wrapped):  # (`try:` is a NOP on its line)
            ast.copy_location(n, stmts[0] if stmts else at)
        for n in (handler, *handler.body, *settle):
            ast.copy_location(n, at)
        for added in ([out[-2]] if self.async_generator else []) + [end]:
            for n in ast.walk(added):
                n.lineno = n.end_lineno = n.col_offset = n.end_col_offset = -1
        return head + [entry, wrapped]


def inline_code(code: types.CodeType) -> types.CodeType | None:
    """3.11: ``code`` with the probe inside its own body, so that the probed function's frame is the only one
    (no trampoline frame: ``sys._getframe(1)``, ``inspect.stack()``, ``warnings.warn(stacklevel=2)`` and
    tracebacks see the real caller). Recompiled from the function's source, which must first compile to
    exactly ``code`` (same bytecode, constants, names, lines): else None (the source is missing, was edited
    since it was imported, or its context cannot be rebuilt) and the trampoline is used. Its constants
    "__ust_entry__", "__ust_leave__", "__ust_leave_later__", "__ust_settle__", "__ust_unwind__",
    "__ust_record__" and "__ust_BaseException__" are replaced when installed (_swap_in)."""
    import ast
    import copy

    try:
        source = _source_tree(code.co_filename)
        if source is None:
            return None
        tree, index = source
        defs = index.get((code.co_name, code.co_firstlineno), [])
        if len(defs) != 1:
            return None
        node, holder = defs[0]
        context = _context(tree, holder)
        same = _find_code(_compiled_context(tree, context, code), code.co_name, code.co_firstlineno)
        if same is None or same.replace(co_qualname=code.co_qualname) != code:
            return None  # not the source of the running code
        body = node.body
        try:  # the tree is shared (_SOURCES): the def's body is put back at once
            node.body = _Inliner(_params(code), _kind(code) == "async_generator").body(copy.deepcopy(node))
            ast.fix_missing_locations(node)
            new = _compile_tree(context, code, code.co_name, code.co_firstlineno)
        finally:
            node.body = body
        if new is None or new.co_freevars != code.co_freevars or new.co_varnames[:len(_params(code))] != \
                tuple(_params(code)) or new.co_flags != code.co_flags:
            return None
        # Its nested functions' code objects must be the running ones (a probe on one of them is found by
        # its code object; the recompiled ones are equal to them by value): else a probed enclosing function
        # would make unprobed closures.
        nested = [c for c in code.co_consts if isinstance(c, types.CodeType)]
        consts = []
        for c in new.co_consts:
            if isinstance(c, types.CodeType):
                c = next((o for o in nested if o == c), None)
                if c is None:
                    return None
            consts.append(c)
        return new.replace(co_qualname=code.co_qualname, co_consts=tuple(consts))
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        return None


def _py_entry_here(probe: Probe, *values) -> None:
    """The inline code's entry when the C hooks are not built."""
    if getattr(_BUSY, "on", False):
        return
    try:
        if not probe.enter(values):
            probe.skipped.add(id(sys._getframe(1)))
    except Exception:  # noqa: BLE001
        pass


def _skipped_here(probe: Probe) -> bool:
    """The probed frame (2 up: this, _py_leave_value or _py_unwind_here) had its entry dropped."""
    key = id(sys._getframe(2))
    if key in probe.skipped:
        probe.skipped.discard(key)
        return True
    return False


def _pending_here(probe: Probe) -> tuple:
    """The probed frame's (2 up) pending value taken out of the probe's: (True, value), else (False, None)."""
    key = id(sys._getframe(2))
    if key in probe.pending:
        return True, probe.pending.pop(key)
    return False, None


def _py_leave_value(probe: Probe, value):
    if probe.pending:
        _pending_here(probe)
    if not (probe.skipped and _skipped_here(probe)):
        probe.leave(value, None)
    return value


def _py_leave_later(probe: Probe, value):
    """A return not final yet (probes.c, leave_later): kept as the probed frame's (1 up) pending value."""
    if not getattr(_BUSY, "on", False):
        if len(probe.pending) >= 65536:  # frames that never left (a generator never finished nor closed)
            probe.pending.clear()
        probe.pending[id(sys._getframe(1))] = value
    return value


def _py_settle(probe: Probe) -> None:
    if probe.pending:
        found, value = _pending_here(probe)
        if found and not (probe.skipped and _skipped_here(probe)):
            probe.leave(value, None)


def _py_unwind_here(probe: Probe) -> None:
    if probe.pending:
        _pending_here(probe)
    if not (probe.skipped and _skipped_here(probe)):
        exc = sys.exc_info()[1]
        flags = sys._getframe(1).f_code.co_flags
        # PEP 479: a StopIteration leaving a generator or coroutine (a StopAsyncIteration, an async generator)
        # reaches the caller as a RuntimeError (probes.c, as_caller_sees)
        if flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR) and (
                isinstance(exc, StopIteration)
                or (flags & CO_ASYNC_GENERATOR and isinstance(exc, StopAsyncIteration))):
            exc = RuntimeError()
        probe.leave(None, exc)


def _swap_in(fn: types.FunctionType, probe: Probe) -> types.CodeType:
    """Give ``fn`` its code with the probe inside (inline_code), else a trampoline code; return its original
    code."""
    code = fn.__code__
    inline = inline_code(code) if os.environ.get("UST_PROBES_TRAMPOLINE") != "1" else None
    if inline is not None:
        subst = {"__ust_record__": probe.record() if _C is not None else probe, "__ust_BaseException__": BaseException,
                 "__ust_entry__": _C.entry_here if _C else _py_entry_here,
                 "__ust_leave__": _C.leave_value if _C else _py_leave_value,
                 "__ust_unwind__": _C.unwind_here if _C else _py_unwind_here,
                 "__ust_leave_later__": _C.leave_later if _C else _py_leave_later,
                 "__ust_settle__": _C.settle if _C else _py_settle}
        consts = tuple(subst[c] if isinstance(c, str) and c in subst else c for c in inline.co_consts)
        fn.__code__ = new = inline.replace(co_consts=consts)
        _TRAMPOLINES[id(new)] = (new, code, True)
        return code
    orig = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    orig.__kwdefaults__ = fn.__kwdefaults__
    orig.__qualname__ = fn.__qualname__
    tramp = trampoline_code(code)
    subst = {"__ust_probe__": probe, "__ust_record__": probe.record(trampoline=True), "__ust_orig__": orig,
             "__ust_enter__": _C.enter if _C else _py_enter, "__ust_leave__": _C.leave if _C else _py_leave}
    consts = tuple(subst[c] if isinstance(c, str) and c in subst else c for c in tramp.co_consts)
    fn.__code__ = new = tramp.replace(co_consts=consts)
    _TRAMPOLINES[id(new)] = (new, code, False)
    return code


# id(code given to a probed function) -> (it, the original code, inline: the function's own code with the probe
# inside rather than a trampoline around it): 3.11's probed functions
_TRAMPOLINES: dict[int, tuple] = {}


def _restore(fn: types.FunctionType, code: types.CodeType) -> None:
    _TRAMPOLINES.pop(id(fn.__code__), None)
    fn.__code__ = code


def _instances(code: types.CodeType) -> list[types.FunctionType]:
    import gc

    return [r for r in gc.get_referrers(code) if isinstance(r, types.FunctionType) and r.__code__ is code]


# ---------------------------------------------------------------------------
# the probe set of this process


class _Refused(ProbeError):
    """A function that this spec cannot probe as asked (said in one line, nothing installed)."""


class ProbeSpec:
    __slots__ = ("target", "event", "args", "repr_limit", "filter", "module", "qualname")

    def __init__(self, target: str, event: str | None = None, args: bool = True, repr_limit: int = REPR_LIMIT,
                 filter: str | None = None):  # noqa: A002
        self.module, self.qualname = parse_target(target)
        self.target = target
        self.event = event or None
        self.args = bool(args)
        self.repr_limit = max(1, min(int(repr_limit), 65536))
        self.filter = filter or None

    def key(self) -> tuple:
        return (self.target, self.event, self.args, self.repr_limit, self.filter)

    @classmethod
    def from_json(cls, d: dict) -> "ProbeSpec":
        return cls(str(d["target"]), d.get("event"), bool(d.get("args", True)), int(d.get("repr_limit", REPR_LIMIT)),
                   d.get("filter"))


class _Installed:
    """One spec's probes: code -> (Probe, [(function, original code)] on 3.11)."""

    def __init__(self, spec: ProbeSpec):
        self.spec = spec
        self.probes: dict[types.CodeType, Probe] = {}
        self.swapped: list[tuple[types.FunctionType, types.CodeType]] = []
        self.state = "pending"
        self.detail = ""


class ProbeSet:
    """The probes this process has installed, by spec; applies the daemon's desired set."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.installed: dict[tuple, _Installed] = {}
        self.whole: WholeProgram | None = None
        self._hooked = False
        self.owner: dict[types.CodeType, tuple] = {}  # code -> the spec that probes it (one probe per code)
        self.half_imported = False  # a pending module was found half imported: look again
        # Counts the changes of the states: the daemon keeps the newest report (a report of a change and the
        # answer to its next probe set may cross). ``on_change`` (the agent's) hears of the changes made
        # outside ``apply`` -- a module imported later, one whose import ended -- called without the lock,
        # never raising, never blocking: the daemon's `ust list --apps` must not say "pending" for a probe
        # that records.
        self.generation = 0
        self.on_change = None

    def apply(self, specs: list[ProbeSpec]) -> list[dict]:
        """Install what is new, remove what is gone; the state of each spec."""
        with self.lock:
            self.generation += 1
            wanted = {s.key(): s for s in specs}
            gone = [k for k in self.installed if k not in wanted]
            for key in gone:
                self._remove(self.installed.pop(key))
            for key, spec in wanted.items():
                inst = self.installed.get(key)
                if inst is None:
                    inst = self.installed[key] = _Installed(spec)
                # After a removal, the functions it probed may be wanted by an overlapping spec (or by a
                # spec refused while the one that went probed them with other options).
                if inst.state == "pending" or (gone and inst.state in ("installed", "refused")
                                               and spec.module != "*"):
                    self._try_install(inst)
            self._hook_imports()
            return self.status()

    def status(self) -> list[dict]:
        return [{"target": i.spec.target, "event": i.spec.event or "", "state": i.state, "detail": i.detail,
                 "functions": len(i.probes)}
                for i in self.installed.values()]

    def _try_install(self, inst: _Installed, from_hook: bool = False) -> None:
        spec = inst.spec
        if spec.module == "*":
            if self.whole is None:
                self.whole = WholeProgram(include=[], exclude=[])
                self.whole.start()
            inst.state, inst.detail = "installed", "every function"
            return
        module = sys.modules.get(spec.module)
        if module is not None and not from_hook and getattr(getattr(module, "__spec__", None), "_initializing", False):
            # Being imported by another thread: its functions are not all defined yet. Never wait for it
            # (the importer may need our lock): the next import, or the next probe set, looks again.
            self.half_imported = True
            inst.state, inst.detail = "pending", f"module {spec.module} is being imported"
            return
        if module is None:
            inst.state, inst.detail = "pending", f"module {spec.module} is not imported (yet)"
            return
        parents: dict = {}
        try:
            funcs = find_functions(module, parents)
        except Exception as exc:  # noqa: BLE001
            inst.state, inst.detail = "error", f"cannot read module {spec.module}: {type(exc).__name__}"
            return
        rx = glob_regex(spec.qualname)
        targets = [(code, qn, fn) for code, (qn, fn) in funcs.items() if rx.match(qn)]
        if not targets:
            why = describe_non_python(module, spec.qualname) if "*" not in spec.qualname else None
            if why:
                inst.state, inst.detail = "refused", why
            else:
                inst.state, inst.detail = "error", f"no function {spec.qualname} in module {spec.module}"
            return
        if spec.event and len(targets) > 1:
            inst.state, inst.detail = "refused", (f"{spec.target} names {len(targets)} functions: "
                                                  "an event name needs exactly one")
            return
        flt = None
        if spec.filter:
            from ust.filter import compile_filter

            flt = compile_filter(spec.filter)
            if "*" not in spec.qualname:  # a wildcard's filter may name what only some functions have
                for code, qn, _ in targets:
                    names = _entry_field_names(_params(code) if spec.args else [])[0]
                    unknown = sorted(flt.fields - set(names) - {"unfit"})
                    if unknown:  # it would drop every call, silently
                        inst.state, inst.detail = "refused", (
                            f"--filter names {', '.join(unknown)}: not a field of {spec.module}:{qn}'s entry "
                            f"(its fields: {', '.join(names) or 'none'}; the filter runs at entry)")
                        return
        failed = []
        for code, qn, fn in targets:
            try:
                self._install_one(inst, code, qn, fn, flt, parents.get(code), vars(module))
            except _Refused as exc:
                if "*" not in spec.qualname:
                    inst.state, inst.detail = "refused", str(exc)
                    return
                failed.append(str(exc))
            except Exception as exc:  # noqa: BLE001
                failed.append(f"{spec.module}:{qn}: {exc}")
        if not inst.probes and not failed and all(code in self.owner for code, _, _ in targets):
            inst.state, inst.detail = "installed", "every function already probed by another spec"
            return
        inst.state = "installed" if inst.probes else "error"
        inst.detail = f"{len(inst.probes)} function{'s' if len(inst.probes) != 1 else ''}" if inst.probes else ""
        if failed:  # said, not hidden behind the count of those that were probed
            inst.detail += ("; not probed: " if inst.probes else "") + "; ".join(failed)

    def _install_one(self, inst: _Installed, code, qualname: str, fn, flt, parent=None, namespace=None) -> None:
        spec = inst.spec
        if code in inst.probes:
            return
        if fn is None:
            live = _instances(code)
            fn = live[0] if live else None
        else:
            live = [fn]
        if fn is None and parent is not None:
            # A nested function with no instance yet: its fields are typed from the annotations the
            # enclosing code gives each instance it makes, so that they are declared right before the first
            # call (docs/probes.md).
            fn = types.SimpleNamespace(__annotations__=nested_annotations(code, parent, namespace or {}))
        if code in self.owner:  # another spec probes it already
            self._add_output(inst, code, qualname, fn, flt)
            return
        probe = Probe(event_base(spec.module, qualname, spec.event), code, fn, spec.args, spec.repr_limit, flt)
        probe.flt_text = spec.filter or None
        if MONITORING:
            _MONITOR.add(probe)
        elif _MONITOR.hooks is not None and "<locals>" in code.co_qualname:
            _MONITOR.add_eval(probe)  # 3.11, nested: its instances made later too
        else:
            for f in live:
                inst.swapped.append((f, _swap_in(f, probe)))
        inst.probes[code] = probe
        self.owner[code] = spec.key()

    def _primary(self, code) -> Probe | None:
        owner = self.installed.get(self.owner.get(code))
        return None if owner is None else owner.probes.get(code)

    def _add_output(self, inst: _Installed, code, qualname: str, fn, flt) -> None:
        """Another spec (another session's probe) wants a function probed already: the same events are
        recorded once for both; events of its own (another event name) become an extra output of the
        function's probe. The same events with another filter, repr limit or fields cannot be told apart
        in the trace (one event, several sessions' channels): refused, saying what to do."""
        spec, primary = inst.spec, self._primary(code)
        if primary is None:
            return
        base = event_base(spec.module, qualname, spec.event)
        same_events = base == primary.base or any(base == e.base for e in primary.extras)
        if same_events:
            other = primary if base == primary.base else next(e for e in primary.extras if e.base == base)
            if (spec.filter or None, spec.args, spec.repr_limit) != (other.flt_text, other.with_args,
                                                                     other.limit):
                raise _Refused(f"{spec.module}:{qualname} is probed already with other options (filter, "
                               f"--no-args or --repr-limit) as {base}: give this probe its own event name")
            return  # recorded once, in every session that enables these events
        extra = Probe(base, code, fn, spec.args, spec.repr_limit, flt)
        extra.flt_text = spec.filter or None
        primary.extras.append(extra)
        self._refresh(code, primary)
        inst.probes[code] = extra

    def _refresh(self, code, probe: Probe) -> None:
        """The probe's outputs changed: the record the C paths read is made again (its fast flag)."""
        if MONITORING:
            _MONITOR.add(probe)
        elif code in _MONITOR.probes:  # 3.11, the frame-evaluation hook
            _MONITOR.records[code] = rec = probe.record()
            _C.set_record(code, rec)
        else:  # 3.11 trampolines: the record is a constant of the trampoline code
            owner = self.installed[self.owner[code]]
            for i, (fn, orig) in enumerate(owner.swapped):
                if orig is code:
                    _restore(fn, orig)
                    owner.swapped[i] = (fn, _swap_in(fn, probe))

    def _remove(self, inst: _Installed) -> None:
        spec = inst.spec
        if spec.module == "*":
            if self.whole is not None and not any(i.spec.module == "*" for i in self.installed.values()):
                self.whole.stop()
                self.whole = None
            return
        owned = {code for code in inst.probes if self.owner.get(code) == spec.key()}
        for code, probe in inst.probes.items():  # this spec's extra outputs on other specs' probes
            if code not in owned:
                primary = self._primary(code)
                if primary is not None and probe in primary.extras:
                    primary.extras.remove(probe)
                    self._refresh(code, primary)
        for code in owned:  # the extras of the probes that go: their specs install them again (apply)
            for other in self.installed.values():
                if other is not inst and code in other.probes:
                    del other.probes[code]
        if MONITORING:
            for code in owned:
                _MONITOR.remove(code)
        else:
            for code in owned:
                if code in _MONITOR.probes:  # probed through the frame-evaluation hook
                    _MONITOR.remove(code)
            for fn, code in inst.swapped:
                _restore(fn, code)
        for code in owned:
            self.owner.pop(code, None)
        inst.probes.clear()
        inst.swapped.clear()

    # -- modules imported later ----------------------------------------------------

    def pending_modules(self) -> set[str]:
        return {i.spec.module for i in self.installed.values() if i.state == "pending" and i.spec.module != "*"}

    def watched_modules(self) -> set[str]:
        """Modules whose (re-)execution is watched: those with pending probes, and those probed already
        (``importlib.reload`` makes new functions, which the probe must reach too)."""
        return {i.spec.module for i in self.installed.values()
                if i.state in ("pending", "installed") and i.spec.module != "*"}

    def _hook_imports(self) -> None:
        if self.watched_modules() and not self._hooked:
            sys.meta_path.insert(0, _ImportWatcher(self))
            self._hooked = True
            # A module imported between the first look and the watcher's arrival.
            for inst in list(self.installed.values()):
                if inst.state == "pending" and inst.spec.module in sys.modules:
                    self._try_install(inst)

    def look_again(self) -> None:
        """From the import watcher, in an importing thread: never waits for the lock."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            before = self.status()
            self.half_imported = False
            for inst in list(self.installed.values()):
                if inst.state == "pending" and inst.spec.module in sys.modules:
                    self._try_install(inst)
            changed = self._count_change(before)
        finally:
            self.lock.release()
        if changed:
            self._tell()

    def look_again_in(self) -> float | None:
        """For the agent's thread: how soon to call ``look_again`` (None: nothing to look at). A module
        found half imported is probed when its import is over, which nothing says: another import would
        look again (the watcher), but an application may import nothing more, so the agent polls."""
        return LOOK_AGAIN if self.half_imported else None

    def imported(self, name: str) -> None:
        """After the module ``name`` executed (in the importing thread, its import not finished yet)."""
        with self.lock:
            before = self.status()
            insts = [i for i in self.installed.values()
                     if i.state in ("pending", "installed") and i.spec.module == name]
            # A reload (``importlib.reload``): the module's functions are new objects with new code objects,
            # equal to the old ones by value (the probes' tables compare code objects by value): the probes
            # go from the old ones and are put on the new ones.
            for inst in insts:
                if inst.state == "installed":
                    self._remove(inst)
            for inst in insts:
                self._try_install(inst, from_hook=True)
            changed = self._count_change(before)
        if changed:
            self._tell()

    def _count_change(self, before: list[dict]) -> bool:
        """Under the lock: whether the states differ from ``before`` (then a new generation)."""
        if self.status() == before:
            return False
        self.generation += 1
        return True

    def _tell(self) -> None:
        hook = self.on_change
        if hook is not None:
            try:
                hook()
            except Exception:  # noqa: BLE001  (in the application's importing thread)
                pass


class _ImportWatcher:
    """A meta path finder that only watches: after a module with pending probes executes (or one with
    probes is reloaded), probe it."""

    def __init__(self, probes: ProbeSet):
        self.probes = probes
        self.busy = threading.local()

    def find_spec(self, name, path=None, target=None):
        if getattr(self.busy, "on", False):
            return None
        if self.probes.half_imported:
            self.probes.look_again()
        if name not in self.probes.watched_modules():
            return None
        self.busy.on = True
        try:
            import importlib.util

            spec = importlib.util.find_spec(name) if path is None else None
            if spec is None:
                for finder in sys.meta_path:
                    if finder is self or not hasattr(finder, "find_spec"):
                        continue
                    spec = finder.find_spec(name, path, target)
                    if spec is not None:
                        break
        except Exception:  # noqa: BLE001
            return None
        finally:
            self.busy.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module") \
                or isinstance(spec.loader, _WatchedLoader):  # a reload of a module watched before
            return spec
        spec.loader = _WatchedLoader(spec.loader, self.probes)
        return spec

    def invalidate_caches(self) -> None:
        pass


class _WatchedLoader:
    def __init__(self, loader, probes: ProbeSet):
        self._loader = loader
        self._probes = probes

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            self._probes.imported(module.__name__)
        except Exception:  # noqa: BLE001
            pass


PROBES = ProbeSet()


# ---------------------------------------------------------------------------
# whole-program tracing: every call, names once per code object


_GENERATION = 0


class WholeProgram:
    """python:function_entry/return(id) for every call; python:function_info once per code object."""

    def __init__(self, include: list[str], exclude: list[str]):
        from ust.instrument.tracepoint import declare

        self.include = [glob_regex(p) for p in include]
        self.exclude = [glob_regex(p) for p in exclude]
        level = loglevels.DEBUG_FUNCTION
        self.tp_info = declare("python:function_info", [
            ("id", F.uint64), ("qualname", F.string), ("module", F.string), ("file", F.string),
            ("line", F.int32)], level).tp
        self.tp_entry = declare("python:function_entry", [("id", F.uint64)], level).tp
        self.tp_return = declare("python:function_return", [("id", F.uint64)], level).tp
        self.ids: dict[types.CodeType, int] = {}
        self.infos: list[tuple] = []  # every python:function_info written, for `ust regenerate statedump`
        self.next = 1
        self.id_objects: list[int] = [0]  # n -> base | n, made once (the C hooks record these objects)
        self.base = (os.getpid() & 0xFFFFFFFF) << 32
        self.lock = forksafe.Lock()
        self.own = (os.path.dirname(os.path.abspath(__file__)).rsplit(os.sep, 1)[0] + os.sep)

    def _after_fork(self) -> None:
        """In a forked child: ids of its own (``pid << 32 | n``). The parent's ids, kept, would be given to
        other functions by both processes from the same counter: one id, two names in one trace."""
        self.base = (os.getpid() & 0xFFFFFFFF) << 32
        self.ids = {}
        self.infos = []
        self.next = 1
        self.id_objects = [0]
        if self._by_eval_hook():
            self.attach_hooks(_MONITOR.hooks)  # a new generation: every function is new to the child
        elif MONITORING and _MONITOR.tool is not None:
            sys.monitoring.restart_events()  # what the parent's ids disabled is seen again

    def _new_id(self, code: types.CodeType, module: str) -> int:
        """The function's number in this process (0: not traced: excluded, or ust's own code)."""
        name = f"{module}:{code.co_qualname}"
        # a 3.11 probe's trampoline is ust's too: the call is recorded once, by the original code it runs
        tramp = _TRAMPOLINES.get(id(code))
        if code.co_filename.startswith(self.own) or (tramp is not None and tramp[0] is code and not tramp[2]) \
                or (self.include and not any(r.match(name) for r in self.include)) \
                or any(r.match(name) for r in self.exclude):
            n = 0
        else:
            with self.lock:
                n = self.next
                self.next += 1
                self.id_objects.append(self.base | n)
            info = (self.base | n, code.co_qualname, module, code.co_filename, code.co_firstlineno)
            self.infos.append(info)
            try:
                self.tp_info(*info)
            except Exception:  # noqa: BLE001
                pass
        self.ids[code] = n
        return n

    def statedump(self) -> int:
        """Write python:function_info again for every function seen so far (``ust regenerate statedump``:
        a chunk or snapshot that began after a function's first call names it too); how many."""
        with self.lock:
            infos = list(self.infos)
        for info in infos:
            try:
                self.tp_info(*info)
            except Exception:  # noqa: BLE001
                pass
        return len(infos)

    def new_id(self, code: types.CodeType, module: object = None) -> int:
        """First sight of ``code`` (called by the C hooks: with its module's name, or from the frame running
        it, 1 up)."""
        if not isinstance(module, str):
            try:
                module = sys._getframe(1).f_globals.get("__name__", "?") if module is None else "?"
            except Exception:  # noqa: BLE001
                module = "?"
        return self._new_id(code, module)

    def attach_hooks(self, hooks) -> None:
        global _GENERATION
        _GENERATION = _GENERATION % 0xFFFF + 1  # a new tracer: every function is new to it
        hooks.set_whole(_GENERATION, self.base, self.new_id, self.tp_entry, self.tp_return, self.id_objects)

    # 3.12+ without the C hooks: sys.monitoring callbacks (through _MONITOR)

    def on_start(self, code):
        n = self.ids.get(code)
        if n is None:
            n = self._new_id(code, sys._getframe(2).f_globals.get("__name__", "?"))
        if n:
            self.tp_entry(self.base | n)
            return None
        return sys.monitoring.DISABLE if code not in _MONITOR.probes else None

    def on_return(self, code):
        n = self.ids.get(code)
        if n:
            self.tp_return(self.base | n)
            return None
        return sys.monitoring.DISABLE if n == 0 and code not in _MONITOR.probes else None

    def on_unwind(self, code) -> None:
        n = self.ids.get(code)
        if n:
            self.tp_return(self.base | n)

    # 3.11: a profile function

    def _profile(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            n = self.ids.get(code)
            if n is None:
                n = self._new_id(code, frame.f_globals.get("__name__", "?"))
            if n:
                self.tp_entry(self.base | n)
        elif event == "return":
            n = self.ids.get(frame.f_code)
            if n:
                self.tp_return(self.base | n)

    def _by_eval_hook(self) -> bool:
        """The interpreter's frame-evaluation function (C, 3.11 to 3.13 with the GIL) records the calls."""
        return _MONITOR.hooks is not None and hasattr(_MONITOR.hooks, "eval_hook")

    def start(self) -> None:
        global _RUNNING
        _RUNNING = self
        # The frame-evaluation function first (every thread at once; on 3.12/3.13 cheaper than global
        # sys.monitoring events: docs/probes.md); sys.monitoring without it (another build, 3.14+).
        if self._by_eval_hook():
            hooks = _MONITOR.hooks
            self.attach_hooks(hooks)
            hooks.eval_hook(True)
        elif MONITORING:
            _MONITOR.set_whole(self)
        else:
            threading.setprofile(self._profile)
            sys.setprofile(self._profile)

    def stop(self) -> None:
        global _RUNNING
        if _RUNNING is self:
            _RUNNING = None
        if self._by_eval_hook():
            _MONITOR.hooks.eval_hook(False)
            _MONITOR.hooks.set_whole(0)
        elif MONITORING:
            _MONITOR.set_whole(None)
        else:
            threading.setprofile(None)
            sys.setprofile(None)


_RUNNING: WholeProgram | None = None  # the tracer started last (one runs at a time)


def _whole_after_fork() -> None:
    if _RUNNING is not None:
        _RUNNING._after_fork()


forksafe.after_in_child(_whole_after_fork)


# ---------------------------------------------------------------------------
# the agent's entry point: each session daemon sends its whole set

_BY_DAEMON: dict[str, list[ProbeSpec]] = {}
MAX_SPECS = 256


def apply_for(source: str, specs: object) -> dict:
    """Set the probes wanted by one daemon (``source``); install the union of every daemon's; the states of
    that daemon's (``status_for``).

    ``specs`` comes from another process: a list of at most MAX_SPECS dicts
    (``target``, ``event``, ``args``, ``repr_limit``, ``filter``); a bad entry
    raises ProbeError (the daemon gets the error), nothing is changed then.
    """
    if specs is None:
        specs = []
    if not isinstance(specs, list) or len(specs) > MAX_SPECS:
        raise ProbeError(f"probes: expected a list of at most {MAX_SPECS} specs")
    parsed = []
    for d in specs:
        if not isinstance(d, dict) or not isinstance(d.get("target"), str):
            raise ProbeError("probes: each spec is a dict with a target")
        if d.get("event") is not None and not isinstance(d["event"], str):
            raise ProbeError("probes: event must be a string")
        if d.get("filter") is not None and not isinstance(d["filter"], str):
            raise ProbeError("probes: filter must be a string")
        limit = d.get("repr_limit", REPR_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise ProbeError("probes: repr_limit must be an integer")
        parsed.append(ProbeSpec.from_json(d))
    with PROBES.lock:
        if parsed:
            _BY_DAEMON[source] = parsed
        else:
            _BY_DAEMON.pop(source, None)
        union: dict[tuple, ProbeSpec] = {}
        for lst in _BY_DAEMON.values():
            for s in lst:
                union.setdefault(s.key(), s)
        PROBES.apply(list(union.values()))
        return status_for(source)


def status_for(source: str) -> dict:
    """The states of the probes one daemon (``source``) asked for, and their generation: the answer to its
    probe set, and the report the agent sends it when they change later (``ProbeSet.on_change``)."""
    with PROBES.lock:
        mine = {s.key() for s in _BY_DAEMON.get(source, ())}
        return {"generation": PROBES.generation,
                "probes": [st for key, st in zip(PROBES.installed, PROBES.status()) if key in mine]}


def statedump() -> int:
    """The agent's ``statedump`` command: re-emit the whole-program tracer's function names (0: none runs)."""
    with PROBES.lock:
        whole = PROBES.whole
    return whole.statedump() if whole is not None else 0


def start_whole_program_from_env() -> None:
    """``ust run --functions``: UST_FUNCTIONS_INCLUDE / UST_FUNCTIONS_EXCLUDE hold newline-separated patterns
    on ``module:qualname``."""
    include = [p for p in os.environ.get("UST_FUNCTIONS_INCLUDE", "").split("\n") if p]
    exclude = [p for p in os.environ.get("UST_FUNCTIONS_EXCLUDE", "").split("\n") if p]
    with PROBES.lock:
        if PROBES.whole is None:
            PROBES.whole = WholeProgram(include, exclude)
            PROBES.whole.start()
