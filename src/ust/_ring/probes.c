/* Hot paths of dynamic probes and whole-program function tracing (ust/instrument/probes.py).
 *
 * Only what runs at every probed call is here: reading the arguments of the
 * probed frame, calling the entry/return tracepoints, looking up function ids.
 * Everything else (finding functions, declaring events, filters, values that
 * do not fit their typed field) is Python: on any failure the fast path
 * clears the error and hands the call to the probe's Python methods, so the
 * application never sees an exception from here.
 *
 * A probe "record" is a tuple built by probes.py (Probe.record()):
 *   (entry_tp, return_tp, names: tuple[str], kinds: bytes, unfit: bool,
 *    ret_kind: int, limit: int, fast: bool, slow: Probe, skipped: set)
 * kinds[i]: the field's kind (convert_value): 'i' int64, 'f' double, 'b' bool, 's' str, 'y' bytes, 'r' repr.
 * ret_kind: ord() of the retval's kind: typed: (retval, "" exception, "" unfit); 'r': (repr, ""); 'n': no
 * value recorded ("", "").
 */
#include "tracepoint.h" /* the C core (common.h: Python.h, the atomics, hidden symbols) */
#include "module.h"
#include <frameobject.h>

/* 3.12 and 3.13 (with the GIL): read the probed frame's arguments from the interpreter frame, without
 * materializing a frame object (PyEval_GetFrame + PyFrame_GetVar cost as much as the event). The layout
 * is CPython's internal one for exactly these versions; anything unexpected falls back to the public API. */
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
#define USE_INTERNAL_FRAME 1
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE
#endif

/* 3.11 to 3.13 (with the GIL): whole-program tracing runs in a frame-evaluation function (PEP 523).
 * 3.11: rather than a profile function, which puts every frame of the process in the interpreter's tracing
 * mode (no specialized instructions, a frame object per call), ~1,450 instructions per call before any
 * callback runs. 3.12/3.13: rather than global sys.monitoring PY_START/PY_RETURN events, whose dispatch
 * (instrumented instructions, the offset's int, a vectorcall per event) costs more than the hook's one C
 * call per Python call. The frame layout is CPython's internal one for exactly these versions. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
#define USE_EVAL_HOOK 1
#define Py_BUILD_CORE 1
#include "internal/pycore_code.h"
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE
#if PY_VERSION_HEX >= 0x030D0000
#define FRAME_CODE(frame) ((PyCodeObject *)(frame)->f_executable)
#else
#define FRAME_CODE(frame) ((frame)->f_code)
#endif
#endif

#define MAX_ARGS 64

#if PY_VERSION_HEX < 0x030C0000
/* 3.11 has no PyErr_GetRaisedException: keep the (type, value, traceback) triple instead. */
typedef struct { PyObject *type, *value, *tb; } saved_exc;
static inline saved_exc save_exc(void) { saved_exc e; PyErr_Fetch(&e.type, &e.value, &e.tb); return e; }
static inline void restore_exc(saved_exc e) { PyErr_Restore(e.type, e.value, e.tb); }
/* The exception object of a saved exception (borrowed; None when there is none). */
static inline PyObject *saved_exc_value(saved_exc *e)
{
    PyErr_NormalizeException(&e->type, &e->value, &e->tb);
    return e->value ? e->value : Py_None;
}
static inline const char *raised_type_name(void)
{
    PyObject *t = PyErr_Occurred();
    return t && PyType_Check(t) ? ((PyTypeObject *)t)->tp_name : "?";
}
#else
typedef PyObject *saved_exc;
static inline saved_exc save_exc(void) { return PyErr_GetRaisedException(); }
static inline void restore_exc(saved_exc e) { PyErr_SetRaisedException(e); }
static inline PyObject *saved_exc_value(saved_exc *e) { return *e ? *e : Py_None; }
static inline const char *raised_type_name(void)
{
    PyObject *t = PyErr_Occurred();
    return t && PyType_Check(t) ? ((PyTypeObject *)t)->tp_name : "?";
}
#endif

#define PENDING_SLOTS 4

/* A probe's record: what the per-call paths read, as C fields (no tuple item, no int object to convert at
 * each call). Its fields are set once when made (only the skipped set and the pending dict change, under the
 * GIL); hashable by identity (a 3.11 trampoline or inline code holds it as a constant). */
typedef struct {
    PyObject_HEAD
    PyObject *entry, *ret;  /* the BASE_entry and BASE_return tracepoints */
    PyObject *names;        /* tuple: the parameters' names, in the frame's order */
    PyObject *slow;         /* the Probe (its Python methods record what the C paths cannot) */
    PyObject *skipped;      /* set of frames whose entry the filter dropped, or None (3.11) */
    /* 3.11 inline code: the value of a return not final yet (leave_later) of each frame that has one, in
     * slots (no allocation, no hashing: ~1,200 instructions less than a dict), then in a dict (frame key ->
     * value) for more frames at once (coroutines awaiting in a `finally:` after their return). */
    int npending;
    void *pending_frame[PENDING_SLOTS];
    PyObject *pending_value[PENDING_SLOTS];
    PyObject *pending;      /* the dict, made when the slots are full, else NULL */
    Py_ssize_t limit;       /* repr() cut */
    int nkinds;             /* fields of the entry, before `unfit` */
    int unfit;              /* the entry ends with an `unfit` string field */
    int fast;               /* the C paths may record (no filter, at most MAX_ARGS parameters) */
    char ret_kind;
    char kinds[MAX_ARGS];
} Record;

static PyTypeObject RecordType;
#define IS_RECORD(o) Py_IS_TYPE((o), &RecordType)

static void
record_dealloc(Record *self)
{
    Py_XDECREF(self->entry);
    Py_XDECREF(self->ret);
    Py_XDECREF(self->names);
    Py_XDECREF(self->slow);
    Py_XDECREF(self->skipped);
    Py_XDECREF(self->pending);
    for (int i = 0; i < PENDING_SLOTS; i++)
        Py_XDECREF(self->pending_value[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Record(entry, return, names, kinds: bytes, unfit, ret_kind: int, limit, fast, slow, skipped) */
static PyObject *
record_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *entry, *ret, *names, *kinds, *slow, *skipped;
    int unfit, ret_kind, fast;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OOO!O!pinpOO", &entry, &ret, &PyTuple_Type, &names, &PyBytes_Type, &kinds,
                          &unfit, &ret_kind, &limit, &fast, &slow, &skipped))
        return NULL;
    if (PyBytes_GET_SIZE(kinds) > MAX_ARGS || ret_kind < 0 || ret_kind > 127 || limit < 1) {
        PyErr_SetString(PyExc_ValueError, "Record: too many fields, or a bad kind or limit");
        return NULL;
    }
    Record *self = (Record *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->entry = Py_NewRef(entry);
    self->ret = Py_NewRef(ret);
    self->names = Py_NewRef(names);
    self->slow = Py_NewRef(slow);
    self->skipped = Py_NewRef(skipped);
    self->limit = limit;
    self->nkinds = (int)PyBytes_GET_SIZE(kinds);
    memcpy(self->kinds, PyBytes_AS_STRING(kinds), (size_t)self->nkinds);
    self->unfit = unfit;
    self->fast = fast && PyTuple_GET_SIZE(names) <= MAX_ARGS;
    self->ret_kind = (char)ret_kind;
    return (PyObject *)self;
}

static PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ust._ring._probes.Record",
    .tp_basicsize = sizeof(Record),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = record_new,
    .tp_dealloc = (destructor)record_dealloc,
    .tp_doc = "Record(entry, return, names, kinds, unfit, ret_kind, limit, fast, slow, skipped): a probe's "
              "per-call state",
};

/* Set while this thread converts values (a repr() may call a probed function): such calls are not
 * recorded, as in probes.py's _BUSY. Thread-local: no ordering with other threads is needed. */
static _Thread_local int busy __attribute__((tls_model("initial-exec"))); /* no __tls_get_addr call */

static PyObject *empty_str;
static PyObject *name_key; /* "__name__" */

/* Set for good in a thread of ust's own (ust/instrument/ownthread.py). Thread-local, as busy. */
static _Thread_local int own_thread;

/* own_thread(): the calling thread is ust's own (the agent's, an embedded session's reader): none of its
 * calls is recorded, from now until it ends, as a profile function's own code is not profiled. It uses the
 * interpreter's own flag for a tracer's thread, tstate->tracing, which every per-call path checks already:
 * sys.monitoring (3.12+) calls no callback for such a thread, nor do profile and trace functions (3.11), and
 * the frame-evaluation hook passes its frames through; `busy`, set for good too, keeps the 3.11 trampolines
 * and the probes' C paths out. So no check is added to any per-call path. Idempotent. */
static PyObject *
mark_own_thread(PyObject *mod, PyObject *unused)
{
    if (!own_thread) {
        own_thread = 1;
        busy = 1;
        PyThreadState_EnterTracing(PyThreadState_Get());
    }
    Py_RETURN_NONE;
}

#if PY_VERSION_HEX >= 0x030C0000
#define request_extra PyUnstable_Eval_RequestCodeExtraIndex
#define get_extra PyUnstable_Code_GetExtra
#define set_extra PyUnstable_Code_SetExtra
#else
#define request_extra _PyEval_RequestCodeExtraIndex
#define get_extra _PyCode_GetExtra
#define set_extra _PyCode_SetExtra
#endif

/* Per code object, in its co_extra slots (a pointer-sized word each; hashing a code object at every
 * call would cost more than the event): the probe record (borrowed: probes.py keeps it alive and
 * clears the slot before dropping it), and the whole-program tracer's number for the function:
 * (n << 16) | generation, n = 0 for a function not traced; a slot of another generation (an earlier
 * tracer) is as good as empty. */
static Py_ssize_t extra_record = -1, extra_id = -1;

/* The last code object looked up and its record: a probed function's PY_START and PY_RETURN come in
 * pairs, each looking up the same code. Safe because a probed code object is kept alive by probes.py
 * while it has a record, and set_record() empties the cache: the cached code cannot be freed and its
 * address reused meanwhile. Not on free-threaded builds (a shared cache would be a race). */
#ifndef Py_GIL_DISABLED
static PyObject *cached_code;
static void *cached_record;
#endif

static Record *
get_record(PyObject *code)
{
    void *v = NULL;
#ifndef Py_GIL_DISABLED
    if (code == cached_code)
        return (Record *)cached_record;
#endif
    if (!PyCode_Check(code) || get_extra(code, extra_record, &v) < 0) {
        PyErr_Clear();
        return NULL;
    }
#ifndef Py_GIL_DISABLED
    if (v != NULL) { /* only probed code: an unprobed one may be freed while cached */
        cached_code = code;
        cached_record = v;
    }
#endif
    return (Record *)v;
}

/* repr(value) cut to limit; "<repr failed: Type>" when repr raises. New reference, never NULL unless
 * out of memory. */
static PyObject *
safe_repr(PyObject *value, Py_ssize_t limit)
{
    PyObject *r = PyObject_Repr(value);
    if (r == NULL) {
        /* tp_name may be "module.Name": keep the last part, as type(exc).__name__ does. */
        const char *name = raised_type_name();
        const char *dot = strrchr(name, '.');
        r = PyUnicode_FromFormat("<repr failed: %s>", dot ? dot + 1 : name);
        PyErr_Clear();
        return r;
    }
    if (PyUnicode_GET_LENGTH(r) > limit) {
        PyObject *cut = PyUnicode_Substring(r, 0, limit);
        Py_DECREF(r);
        return cut;
    }
    return r;
}

/* The core's entry points (record_api.h), in this same module: direct calls. A tracepoint that is not a
 * ust Tracepoint (a Python callable) is called as one by them. */
static const struct ust_record_api *const ring_api = &record_api;

/* tp(*args): 0, or -1 with an exception set. */
static int
record_event(PyObject *tp, PyObject *const *args, Py_ssize_t n)
{
    return ring_api->record(tp, args, n);
}

/* A one-digit int (most ints a program passes) read without a call: 1 with *out set, else 0. */
static inline int
small_int_value(PyObject *v, int64_t *out)
{
    if (!PyLong_CheckExact(v))
        return 0;
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)v)) {
        *out = (int64_t)PyUnstable_Long_CompactValue((PyLongObject *)v);
        return 1;
    }
#else
    Py_ssize_t size = Py_SIZE(v); /* 3.11: the sign and number of digits; 0 is size 0 with a zero digit */
    if (size >= -1 && size <= 1) {
        *out = (int64_t)size * (int64_t)((PyLongObject *)v)->ob_digit[0];
        return 1;
    }
#endif
    return 0;
}

/* One value converted to its field, as probes.py's _convert does for a value that fits. kind (the
 * probe's, per field): 'i' int64, 'f' double, 'b' bool, 's' str, 'y' bytes, 'r' repr() cut to limit.
 * Returns 1 with *out set and *obj the object to pass to the tracepoint if it must be called instead (a
 * new reference in *hold when made here: a repr), or 0 when the value does not fit its field: the
 * probe's Python path records it (the type's zero and the value's repr in `unfit`). Runs Python only for
 * 'r' (a __repr__). */
static int
convert_value(char kind, PyObject *value, Py_ssize_t limit, struct ust_value *out, PyObject **obj,
              PyObject **hold)
{
    *obj = value;
    *hold = NULL;
    switch (kind) {
    case 'i':
        if (small_int_value(value, &out->i)) {
            out->kind = UST_V_INT64;
            return 1;
        }
        if (PyLong_Check(value)) { /* bool and int subclasses included, as isinstance(value, int) */
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow || (v == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                return 0;
            }
            out->kind = UST_V_INT64;
            out->i = v;
            return 1;
        }
        return 0;
    case 'f':
        if (PyFloat_Check(value)) {
            out->kind = UST_V_DOUBLE;
            out->d = PyFloat_AS_DOUBLE(value);
            return 1;
        }
        if (PyLong_Check(value)) {
            double d = PyLong_AsDouble(value);
            if (d == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
            out->kind = UST_V_DOUBLE;
            out->d = d;
            return 1;
        }
        return 0;
    case 'b':
        if (!PyBool_Check(value))
            return 0;
        out->kind = UST_V_BOOL;
        out->i = value == Py_True;
        return 1;
    case 'y':
        if (!PyBytes_Check(value))
            return 0; /* bytearray, memoryview: the Python path copies them */
        out->kind = UST_V_BYTES;
        out->ptr = PyBytes_AS_STRING(value);
        out->len = PyBytes_GET_SIZE(value);
        return 1;
    case 'r':
        value = safe_repr(value, limit);
        if (value == NULL) {
            PyErr_Clear();
            return 0;
        }
        *obj = *hold = value;
        break;
    case 's':
        if (!PyUnicode_CheckExact(value))
            return 0;
        break;
    default:
        return 0;
    }
    /* a str (the value, or its repr) */
    Py_ssize_t len;
    const char *utf8 = PyUnicode_GET_LENGTH(value) ? PyUnicode_AsUTF8AndSize(value, &len) : "";
    if (utf8 == NULL) { /* a lone surrogate: the Python path escapes it */
        PyErr_Clear();
        Py_CLEAR(*hold);
        return 0;
    }
    out->kind = UST_V_STRING;
    out->ptr = utf8;
    out->len = PyUnicode_GET_LENGTH(value) ? len : 0;
    return 1;
}

/* Record tp with vals (converted) / objs (the same values as objects): straight into the ring when it can,
 * else by calling the tracepoint. 0, or -1 with an exception set. */
static int
record_converted(PyObject *tp, const struct ust_value *vals, PyObject *const *objs, int n)
{
    if (ring_api->record_values(tp, vals, n) == 0)
        return 0;
    return record_event(tp, objs, n);
}

static const struct ust_value empty_value = {.kind = UST_V_STRING, .ptr = "", .len = 0};

/* Record the entry from values[0..n). Returns 1 when recorded by the fast path, 0 when the caller must
 * use the slow path (the error, if any, is cleared). */
static int
fast_entry(Record *rec, PyObject *const *values, Py_ssize_t n)
{
    const char *k = rec->kinds;
    Py_ssize_t limit = rec->limit;
    struct ust_value vals[MAX_ARGS + 1];
    PyObject *objs[MAX_ARGS + 1], *hold[MAX_ARGS];
    int nhold = 0, ok = 0;
    Py_ssize_t i;
    /* One field per kind: a trampoline passes every argument, a --no-args probe records none of them. */
    if (n > rec->nkinds)
        n = rec->nkinds;
    if (n > MAX_ARGS)
        return 0;
    busy = 1;
    for (i = 0; i < n; i++) {
        PyObject *v = values[i];
        if (k[i] == 'i' && small_int_value(v, &vals[i].i)) { /* the common typed argument, without the call */
            vals[i].kind = UST_V_INT64;
            objs[i] = v;
            continue;
        }
        if (!convert_value(k[i], v, limit, &vals[i], &objs[i], &hold[nhold]))
            goto done;
        if (hold[nhold] != NULL)
            nhold++;
    }
    if (rec->unfit) {
        vals[n] = empty_value;
        objs[n++] = empty_str;
    }
    ok = record_converted(rec->entry, vals, objs, (int)n) == 0;
done:
    busy = 0;
    while (nhold > 0)
        Py_DECREF(hold[--nhold]);
    if (!ok)
        PyErr_Clear();
    return ok;
}

/* ret_kind: a field kind (as convert_value's) for the retval, or 'n': no value recorded (--no-args). */
static int
fast_return(Record *rec, PyObject *retval)
{
    char kind = rec->ret_kind;
    struct ust_value vals[3] = {empty_value, empty_value, empty_value};
    PyObject *objs[3] = {empty_str, empty_str, empty_str}, *hold = NULL;
    int n = 2, ok = 0;
    busy = 1;
    if (kind == 'i' && small_int_value(retval, &vals[0].i)) { /* without the call, as in fast_entry */
        vals[0].kind = UST_V_INT64;
        objs[0] = retval;
        n = 3;
    }
    else if (kind != 'n') {
        if (!convert_value(kind, retval, rec->limit, &vals[0], &objs[0], &hold))
            goto done;
        if (kind != 'r')
            n = 3; /* a typed retval has an unfit field */
    }
    ok = record_converted(rec->ret, vals, objs, n) == 0;
done:
    busy = 0;
    Py_XDECREF(hold);
    if (!ok)
        PyErr_Clear();
    return ok;
}

/* slow.method(*args), errors cleared; returns the result (new ref) or NULL. */
static PyObject *
call_slow(Record *rec, const char *method, PyObject *const *args, Py_ssize_t n)
{
    PyObject *fn = PyObject_GetAttrString(rec->slow, method);
    if (fn == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *res = PyObject_Vectorcall(fn, args, n, NULL);
    Py_DECREF(fn);
    if (res == NULL)
        PyErr_Clear();
    return res;
}

/* ---------------------------------------------------------------------------------------------------- */
/* 3.11 trampolines: enter(record, *values) -> bool (False: the call is not recorded), leave(record, r) */

static PyObject *
probe_enter(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || !IS_RECORD(args[0]))
        Py_RETURN_FALSE;
    Record *rec = (Record *)args[0];
    if (busy)
        Py_RETURN_FALSE;
    if (rec->fast && fast_entry(rec, args + 1, nargs - 1))
        Py_RETURN_TRUE;
    PyObject *values = PyTuple_New(nargs - 1);
    if (values == NULL) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(values, i - 1, Py_NewRef(args[i]));
    PyObject *res = call_slow(rec, "enter", &values, 1);
    Py_DECREF(values);
    if (res == NULL)
        Py_RETURN_FALSE;
    return res;
}

static PyObject *
probe_leave(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !IS_RECORD(args[0]))
        Py_RETURN_NONE;
    Record *rec = (Record *)args[0];
    if (busy)
        Py_RETURN_NONE;
    if (rec->fast && fast_return(rec, args[1]))
        Py_RETURN_NONE;
    PyObject *a[2] = {args[1], Py_None};
    Py_XDECREF(call_slow(rec, "leave", a, 2));
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------------------------- */
/* 3.11 inline probes (probes.py, inline_code): the probed function's own code, recompiled from its source with
 * the entry as its first statement and each return through leave_value or leave_later, so that no frame is
 * added:
 *   entry_here(record, *values)     the entry; a call the filter drops puts its frame in the skipped set
 *   leave_value(record, value)      a return after which the frame runs none of its own code: recorded now
 *                                   (unless its frame was skipped); returns value
 *   leave_later(record, value)      a return inside a `try:` with a `finally:` or a `with` block, whose exit may
 *                                   still raise, return another value or swallow it (`break` in `finally:`):
 *                                   kept as the frame's pending value; returns value
 *   settle(record)                  the frame leaves normally (its outermost `finally:`): its pending value, if
 *                                   any, is the return the caller sees: recorded
 *   unwind_here(record)             the exception being handled leaves the frame (the code re-raises it)
 * Each call records exactly one return: leave_value and unwind_here drop the frame's pending value, which an
 * exception or a later return replaced. The current frame (the probed one: these are C functions, which
 * push none) is only looked up when the skipped set or the pending dict is not empty, when the filter drops
 * a call, and at a leave_later. */

/* The running Python frame, and its key in a record's skipped set or pending dict (NULL, no error set, if none).
 * 3.11: the interpreter frame's address (PyEval_GetFrame would make a frame object: ~1,800 instructions more
 * for a return kept until its `finally:`). It is the frame's own while it runs (a generator's lives in the
 * generator); another call may get it once the frame has left, which every exit path of the inline code
 * has taken the key out by (leave_value, settle, unwind_here: the handler and the `finally:` enclose the
 * whole body). */
static void *
current_frame(void)
{
#if defined(USE_EVAL_HOOK) && PY_VERSION_HEX < 0x030C0000
    PyThreadState *ts = PyThreadState_Get();
    return ts->cframe != NULL ? (void *)ts->cframe->current_frame : NULL;
#else
    return PyEval_GetFrame(); /* borrowed */
#endif
}

static PyObject *
current_frame_key(void)
{
    void *frame = current_frame();
    PyObject *key = frame != NULL ? PyLong_FromVoidPtr(frame) : NULL;
    if (key == NULL)
        PyErr_Clear();
    return key;
}

/* 1 if the running frame was in rec's skipped set (its entry was dropped): taken out of it. */
static int
frame_was_skipped(Record *rec)
{
    if (!PySet_Check(rec->skipped) || PySet_GET_SIZE(rec->skipped) == 0)
        return 0;
    PyObject *key = current_frame_key();
    int dropped = key != NULL ? PySet_Discard(rec->skipped, key) : 0;
    Py_XDECREF(key);
    if (dropped < 0) {
        PyErr_Clear();
        dropped = 0;
    }
    return dropped;
}

/* The running frame's pending value (new reference), taken out of rec's; NULL if it has none. */
static PyObject *
take_pending(Record *rec)
{
    int in_dict = rec->pending != NULL && PyDict_GET_SIZE(rec->pending) > 0;
    if (rec->npending == 0 && !in_dict)
        return NULL;
    void *frame = current_frame();
    if (frame == NULL)
        return NULL;
    for (int i = 0; i < PENDING_SLOTS && rec->npending > 0; i++)
        if (rec->pending_frame[i] == frame) {
            PyObject *value = rec->pending_value[i]; /* the slot's reference, now the caller's */
            rec->pending_frame[i] = NULL;
            rec->pending_value[i] = NULL;
            rec->npending--;
            return value;
        }
    if (!in_dict)
        return NULL;
    PyObject *key = PyLong_FromVoidPtr(frame);
    PyObject *value = key != NULL ? PyDict_GetItemWithError(rec->pending, key) : NULL; /* borrowed */
    if (value != NULL) {
        Py_INCREF(value);
        if (PyDict_DelItem(rec->pending, key) < 0)
            PyErr_Clear();
    }
    else
        PyErr_Clear();
    Py_XDECREF(key);
    return value;
}

/* Bound on the pending dict: frames that never left (a generator never finished nor closed) are forgotten. */
#define MAX_PENDING 65536

/* Keep value as the running frame's pending value (replacing one it had). Errors cleared. */
static void
keep_pending(Record *rec, PyObject *value)
{
    void *frame = current_frame();
    if (frame == NULL)
        return;
    int free_slot = -1;
    for (int i = 0; i < PENDING_SLOTS; i++) {
        if (rec->pending_frame[i] == frame) {
            Py_SETREF(rec->pending_value[i], Py_NewRef(value));
            return;
        }
        if (rec->pending_frame[i] == NULL && free_slot < 0)
            free_slot = i;
    }
    PyObject *key = NULL;
    if (rec->pending != NULL && PyDict_GET_SIZE(rec->pending) > 0) { /* it may be there (kept when slots were full) */
        key = PyLong_FromVoidPtr(frame);
        if (key != NULL && PyDict_Contains(rec->pending, key) == 1)
            free_slot = -1;
    }
    if (free_slot >= 0) {
        rec->pending_frame[free_slot] = frame;
        rec->pending_value[free_slot] = Py_NewRef(value);
        rec->npending++;
    }
    else {
        if (rec->pending == NULL)
            rec->pending = PyDict_New();
        else if (PyDict_GET_SIZE(rec->pending) >= MAX_PENDING)
            PyDict_Clear(rec->pending);
        if (key == NULL)
            key = PyLong_FromVoidPtr(frame);
        if (rec->pending != NULL && key != NULL)
            PyDict_SetItem(rec->pending, key, value);
    }
    Py_XDECREF(key);
    PyErr_Clear();
}

static PyObject *
probe_entry_here(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || !IS_RECORD(args[0]) || busy)
        Py_RETURN_NONE;
    Record *rec = (Record *)args[0];
    PyObject *kept = probe_enter(mod, args, nargs);
    if (kept == NULL) /* never: probe_enter clears its errors */
        PyErr_Clear();
    else if (kept != Py_True && PySet_Check(rec->skipped)) {
        PyObject *key = current_frame_key();
        if (key != NULL && PySet_Add(rec->skipped, key) < 0)
            PyErr_Clear();
        Py_XDECREF(key);
    }
    Py_XDECREF(kept);
    Py_RETURN_NONE;
}

static PyObject *
probe_leave_value(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        Py_RETURN_NONE; /* never: the code calls it with two */
    if (IS_RECORD(args[0])) {
        Record *rec = (Record *)args[0];
        Py_XDECREF(take_pending(rec)); /* a return kept earlier that a `finally:` replaced, or an exception swallowed */
        if (!frame_was_skipped(rec))
            Py_XDECREF(probe_leave(mod, args, nargs));
    }
    return Py_NewRef(args[1]);
}

static PyObject *
probe_leave_later(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        Py_RETURN_NONE; /* never: the code calls it with two */
    if (IS_RECORD(args[0]) && !busy)
        keep_pending((Record *)args[0], args[1]);
    return Py_NewRef(args[1]);
}

static PyObject *
probe_settle(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1 || !IS_RECORD(args[0]))
        Py_RETURN_NONE;
    Record *rec = (Record *)args[0];
    PyObject *value = take_pending(rec);
    if (value == NULL) /* none: the frame's return was recorded (leave_value) or it raised (unwind_here) */
        Py_RETURN_NONE;
    if (!frame_was_skipped(rec)) {
        PyObject *a[2] = {args[0], value};
        Py_XDECREF(probe_leave(mod, a, 2));
    }
    Py_DECREF(value);
    Py_RETURN_NONE;
}

/* The exception exc (a new reference, consumed) as the running frame's caller gets it: PEP 479, a
 * StopIteration leaving a generator or a coroutine (also a StopAsyncIteration, an async generator) becomes a
 * RuntimeError on its way out. A new reference. */
static PyObject *
as_caller_sees(PyObject *exc)
{
    const int resumable = CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR;
#if defined(USE_EVAL_HOOK) && PY_VERSION_HEX < 0x030C0000
    _PyInterpreterFrame *frame = current_frame();
    int flags = frame != NULL ? frame->f_code->co_flags : 0;
#else
    PyFrameObject *frame = current_frame();
    PyCodeObject *code = frame != NULL ? PyFrame_GetCode(frame) : NULL;
    int flags = code != NULL ? code->co_flags : 0;
    Py_XDECREF(code);
#endif
    if (!(flags & resumable))
        return exc;
    if (!PyErr_GivenExceptionMatches(exc, PyExc_StopIteration)
        && !((flags & CO_ASYNC_GENERATOR) && PyErr_GivenExceptionMatches(exc, PyExc_StopAsyncIteration)))
        return exc;
    PyObject *runtime = PyObject_CallOneArg(PyExc_RuntimeError, Py_None);
    if (runtime == NULL) {
        PyErr_Clear();
        return exc;
    }
    Py_DECREF(exc);
    return runtime;
}

static PyObject *
probe_unwind_here(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1 || !IS_RECORD(args[0]))
        Py_RETURN_NONE;
    Record *rec = (Record *)args[0];
    Py_XDECREF(take_pending(rec)); /* a return that a `finally:` or `with` exit turned into this exception */
    if (frame_was_skipped(rec) || busy)
        Py_RETURN_NONE;
    PyObject *exc = PyErr_GetHandledException(); /* the exception the code's handler is handling */
    if (exc == NULL)
        Py_RETURN_NONE;
    exc = as_caller_sees(exc);
    Py_INCREF(rec); /* the slow path may remove the probe, which frees its record */
    PyObject *a[2] = {Py_None, exc};
    Py_XDECREF(call_slow(rec, "leave", a, 2));
    Py_DECREF(rec);
    Py_DECREF(exc);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Hooks: the sys.monitoring callbacks (3.12+) and the profile function (3.11) of one process. */

typedef struct {
    PyObject_HEAD
    PyObject *probes;   /* dict: code -> record (kept alive here; the C paths read the co_extra slot) */
    unsigned generation; /* of the whole-program tracer, 1..65535; 0: whole-program tracing is off */
    unsigned long long base; /* its ids are base | n */
    PyObject *id_objects; /* list: n -> the int base | n (made once, not at every event) */
    PyObject *new_id;   /* callable(code) -> n (0: not traced), first sight of a code object (Python) */
    PyObject *entry;    /* python:function_entry */
    PyObject *ret;      /* python:function_return */
    PyObject *disable;  /* sys.monitoring.DISABLE (3.12+) or None */
} Hooks;

static void
hooks_dealloc(Hooks *self)
{
    Py_XDECREF(self->probes);
    Py_XDECREF(self->id_objects);
    Py_XDECREF(self->new_id);
    Py_XDECREF(self->entry);
    Py_XDECREF(self->ret);
    Py_XDECREF(self->disable);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
hooks_init(Hooks *self, PyObject *args, PyObject *kw)
{
    PyObject *probes, *disable;
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &probes, &disable))
        return -1;
    Py_XSETREF(self->probes, Py_NewRef(probes));
    Py_XSETREF(self->disable, Py_NewRef(disable));
    return 0;
}

#ifdef USE_EVAL_HOOK
static Hooks *eval_owner;
static void eval_fast_off(void);
static void eval_fast_refresh(void);
#endif

/* set_whole(generation, base, new_id, entry_tp, return_tp, id_objects), or set_whole(0): whole-program
 * tracing on/off. */
static PyObject *
hooks_set_whole(Hooks *self, PyObject *args)
{
    unsigned generation = 0;
    unsigned long long base = 0;
    PyObject *new_id = Py_None, *entry = Py_None, *ret = Py_None, *id_objects = NULL;
    if (!PyArg_ParseTuple(args, "I|KOOOO!", &generation, &base, &new_id, &entry, &ret, &PyList_Type, &id_objects))
        return NULL;
    if (generation && id_objects == NULL) {
        PyErr_SetString(PyExc_TypeError, "set_whole needs the id objects list");
        return NULL;
    }
    if (generation > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "generation must be 0..65535");
        return NULL;
    }
    self->generation = 0;
#ifdef USE_EVAL_HOOK
    /* before the tracepoints may be freed below (a dealloc may run Python, which enters the hook) */
    if (eval_owner == self)
        eval_fast_off();
#endif
#ifdef Py_GIL_DISABLED
    /* Without the GIL, another thread's callback may be reading these right now: the old objects stay
     * referenced, never freed (a few per start of whole-program tracing), as ring.c keeps replaced
     * attachment lists; a callback that still sees the old generation records with them. */
#else
    Py_CLEAR(self->new_id);
    Py_CLEAR(self->entry);
    Py_CLEAR(self->ret);
    Py_CLEAR(self->id_objects);
#endif
    if (generation) {
        self->id_objects = Py_NewRef(id_objects);
        self->new_id = Py_NewRef(new_id);
        self->entry = Py_NewRef(entry);
        self->ret = Py_NewRef(ret);
        self->base = base;
        self->generation = generation;
    }
#ifdef USE_EVAL_HOOK
    eval_fast_refresh();
#endif
    Py_RETURN_NONE;
}

/* set_record(code, record or None): the probe record the C paths read for code. */
static PyObject *
set_record(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyCode_Check(args[0]) || (args[1] != Py_None && !IS_RECORD(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "set_record(code, Record or None)");
        return NULL;
    }
#ifndef Py_GIL_DISABLED
    cached_code = NULL;
    cached_record = NULL;
#endif
    if (set_extra(args[0], extra_record, args[1] == Py_None ? NULL : (void *)args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The id of code if this tracer has seen it: > 0 traced, 0 not traced, -1 not seen. */
static long long
known_id(Hooks *self, PyObject *code)
{
    void *v = NULL;
    if (get_extra(code, extra_id, &v) < 0) {
        PyErr_Clear();
        return -1;
    }
    uintptr_t word = (uintptr_t)v;
    if (word == 0 || (word & 0xFFFF) != self->generation)
        return -1;
    uintptr_t n = word >> 16;
    return n ? (long long)(self->base | n) : 0;
}

/* The id of code (asking Python on first sight): > 0 traced, else not. globals: the frame's, which name
 * its module; NULL: new_id finds the frame itself (a sys.monitoring callback runs in it). */
static long long
function_id(Hooks *self, PyObject *code, PyObject *globals)
{
    long long id = known_id(self, code);
    if (id >= 0)
        return id;
    PyObject *v;
    if (globals != NULL) {
        PyObject *module = PyDict_Check(globals) ? PyDict_GetItemWithError(globals, name_key) : NULL;
        if (module == NULL) {
            PyErr_Clear();
            module = Py_None;
        }
        PyObject *args[2] = {code, module};
        v = PyObject_Vectorcall(self->new_id, args, 2, NULL);
    }
    else {
        v = PyObject_CallOneArg(self->new_id, code);
    }
    if (v == NULL) {
        PyErr_Clear();
        return 0;
    }
    unsigned long long n = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        n = 0;
    }
    n &= 0xFFFFFFFFull;
    if (set_extra(code, extra_id, (void *)(uintptr_t)((n << 16) | self->generation)) < 0)
        PyErr_Clear();
    return n ? (long long)(self->base | n) : 0;
}

/* Record tp(base | id's n): straight into the ring when it can (no Python, no int object), else through the
 * general path, which may run Python (a filter, a Python context) during which the tracer may be stopped:
 * tp is held then, and the thread's `tracing` flag is set (that Python is not the program's). */
static void record_id_general(Hooks *self, PyObject *tp, long long id);

INLINE void
record_id(Hooks *self, PyObject *tp, long long id)
{
    if (LIKELY(tracepoint_write_u64(tp, (uint64_t)id) == 0)) /* inline: the ring's lean write */
        return;
    record_id_general(self, tp, id);
}

static void __attribute__((noinline))
record_id_general(Hooks *self, PyObject *tp, long long id)
{
    PyThreadState *ts = PyThreadState_Get();
    ts->tracing++;
    saved_exc exc = save_exc(); /* an exception leaving a frame stays as it is */
    Py_INCREF(tp);
    if (ring_api->record_u64(tp, (uint64_t)id) < 0)
        PyErr_Clear();
    Py_DECREF(tp);
    restore_exc(exc);
    ts->tracing--;
}

#if PY_VERSION_HEX >= 0x030C0000
/* The probed frame's arguments, in the record's order (new references into values); -1: not read. */
static int
frame_args_public(Record *rec, PyObject **values)
{
    PyObject *names = rec->names;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed: the monitored frame (a C callback pushes none) */
    if (frame == NULL || n > MAX_ARGS)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        values[i] = PyFrame_GetVar(frame, PyTuple_GET_ITEM(names, i));
        if (values[i] == NULL) {
            PyErr_Clear();
            while (i-- > 0)
                Py_DECREF(values[i]);
            return -1;
        }
    }
    return (int)n;
}

static int
frame_args(Record *rec, PyObject *code, PyObject **values)
{
#ifdef USE_INTERNAL_FRAME
    PyThreadState *tstate = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame *fr = tstate->current_frame;
    PyObject *fcode = fr ? fr->f_executable : NULL;
#else
    _PyInterpreterFrame *fr = tstate->cframe ? tstate->cframe->current_frame : NULL;
    PyObject *fcode = fr ? (PyObject *)fr->f_code : NULL;
#endif
    Py_ssize_t n = PyTuple_GET_SIZE(rec->names);
    /* The arguments are the first localsplus slots, in co_varnames order (probes.py's names). */
    if (fcode == code && n <= MAX_ARGS && n <= ((PyCodeObject *)code)->co_nlocalsplus) {
        PyCodeObject *co = (PyCodeObject *)code;
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            PyObject *v = fr->localsplus[i];
            if (v != NULL && (_PyLocals_GetKind(co->co_localspluskinds, (int)i) & CO_FAST_CELL)) {
                v = PyCell_Check(v) ? PyCell_GET(v) : NULL; /* an argument a closure captures */
            }
            if (v == NULL)
                break;
            values[i] = Py_NewRef(v);
        }
        if (i == n)
            return (int)n;
        while (i-- > 0)
            Py_DECREF(values[i]);
    }
#endif
    return frame_args_public(rec, values);
}
#endif

#ifdef USE_EVAL_HOOK
static int eval_whole; /* whole-program tracing runs in the frame-evaluation hook (below) */
#endif

/* Whole-program events come from the sys.monitoring callbacks: tracing is on and not in the hook (3.12+
 * with the hook, the callbacks still fire for probed code objects: their ids are recorded by the hook). */
static inline int
whole_by_monitoring(Hooks *self)
{
#ifdef USE_EVAL_HOOK
    if (eval_whole)
        return 0;
#endif
    return self->generation != 0;
}

/* PY_START(code, offset) */
static PyObject *
hooks_py_start(Hooks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1)
        Py_RETURN_NONE;
    PyObject *code = args[0];
    Record *rec = get_record(code);
    if (rec != NULL && !busy) {
        int done = 0;
        Py_INCREF(rec); /* a __repr__ or the slow path may remove the probe, which frees its record */
#if PY_VERSION_HEX >= 0x030C0000
        if (rec->fast) {
            PyObject *values[MAX_ARGS];
            int n = frame_args(rec, code, values);
            if (n >= 0) {
                done = fast_entry(rec, values, n);
                for (int i = 0; i < n; i++)
                    Py_DECREF(values[i]);
            }
        }
#endif
        if (!done)
            Py_XDECREF(call_slow(rec, "on_start", NULL, 0));
        Py_DECREF(rec);
    }
    if (whole_by_monitoring(self)) {
        long long id = function_id(self, code, NULL);
        if (id > 0)
            record_id(self, self->entry, id);
        else if (rec == NULL)
            return Py_NewRef(self->disable);
    }
    Py_RETURN_NONE;
}

/* PY_RETURN(code, offset, retval) */
static PyObject *
hooks_py_return(Hooks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 3)
        Py_RETURN_NONE;
    PyObject *code = args[0];
    Record *rec = get_record(code);
    if (rec != NULL && !busy) {
        /* A call whose entry was not recorded has its frame in the skipped set: the slow path knows. */
        Py_INCREF(rec); /* as in py_start */
        PyObject *skipped = rec->skipped;
        int any_skipped = PySet_Check(skipped) && PySet_GET_SIZE(skipped) > 0;
        if (any_skipped || !rec->fast || !fast_return(rec, args[2]))
            Py_XDECREF(call_slow(rec, "on_return", &args[2], 1));
        Py_DECREF(rec);
    }
    if (whole_by_monitoring(self)) {
        long long id = known_id(self, code);
        if (id > 0)
            record_id(self, self->ret, id);
        else if (id == 0 && rec == NULL)
            return Py_NewRef(self->disable);
    }
    Py_RETURN_NONE;
}

/* PY_UNWIND(code, offset, exception): a global event; rare (an exception leaving a frame). */
static PyObject *
hooks_py_unwind(Hooks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 3)
        Py_RETURN_NONE;
    PyObject *code = args[0];
    Record *rec = get_record(code);
    if (rec != NULL && !busy) {
        Py_INCREF(rec); /* as in py_start */
        Py_XDECREF(call_slow(rec, "on_unwind", &args[2], 1));
        Py_DECREF(rec);
    }
    if (whole_by_monitoring(self)) {
        long long id = known_id(self, code);
        if (id > 0)
            record_id(self, self->ret, id);
    }
    Py_RETURN_NONE;
}

#ifdef USE_EVAL_HOOK
/* 3.11: the interpreter's frame-evaluation function (PEP 523), for whole-program tracing and for probes on
 * nested functions. It sees each evaluation of a frame, in every thread: a call, and each resumption of a
 * generator or coroutine; it records what sys.monitoring's PY_START and PY_RETURN/PY_UNWIND would
 * (3.12+): the entry when a body starts, the return when it returns or raises (a generator's when it
 * completes, not at each yield). The call that only creates a generator object runs no body and is not
 * recorded.
 * Why not a profile function (whole-program): it puts every frame of the process in the interpreter's
 * tracing mode (no specialized instructions, a frame object per call), ~1,450 instructions a call before
 * any callback runs. Why for nested functions: their instances made after the probe is installed run the
 * code object of the enclosing function's constants, which a trampoline (probes.py) cannot reach; the
 * record is found per code object, as with sys.monitoring.
 * Cost while installed: calls through a frame-evaluation function are not inlined by the interpreter
 * (each takes a C call), ~340 instructions a call in the whole process. */
static Hooks *eval_owner;                /* strong reference while the hook is installed; NULL: pass through */
static _PyFrameEvalFunction eval_next;    /* the evaluation function that was installed before ours */
static Py_ssize_t eval_probes;           /* probes whose record is read by the hook */

/* What the hook's common case reads, in one place (eval_fast_refresh() keeps it in step with eval_owner,
 * eval_whole, eval_probes and the owner's set_whole): a handful of loads and one test per call instead of
 * following the owner's fields and flags. */
static struct {
    unsigned entry_generation; /* the owner's generation when the common case applies (whole-program
                                * tracing in the hook, no probe read by the hook, both tracepoints ust
                                * Tracepoints); 0: every frame goes to traced_eval_full */
    unsigned whole_generation; /* the owner's generation while whole-program tracing runs in the hook, probes
                                * or not: a frame entered under it records its return while it is unchanged */
    unsigned long long base;   /* the owner's id base */
    PyObject *entry, *ret;     /* the owner's tracepoints (borrowed: the owner holds them while its generation
                                * is the one above) */
} eval_fast;

/* The common case off, before what eval_fast borrows may be freed (eval_fast_refresh() turns it on again).
 * A frame that returns meanwhile records no return: the tracer is stopping or being replaced then. */
static void
eval_fast_off(void)
{
    eval_fast.entry_generation = 0;
    eval_fast.whole_generation = 0;
}

static void
eval_fast_refresh(void)
{
    Hooks *self = eval_owner;
    unsigned whole = self != NULL && eval_whole ? self->generation : 0;
    eval_fast.entry_generation = 0;
    eval_fast.whole_generation = whole;
    if (whole) {
        eval_fast.base = self->base;
        eval_fast.entry = self->entry;
        eval_fast.ret = self->ret;
        if (eval_probes == 0 && Py_IS_TYPE(self->entry, &Tracepoint_Type) && Py_IS_TYPE(self->ret, &Tracepoint_Type))
            eval_fast.entry_generation = whole;
    }
}

/* The entry of frame's function: its id (recorded when > 0). */
static long long
eval_entry(Hooks *self, PyThreadState *ts, _PyInterpreterFrame *frame)
{
    ts->tracing++; /* new_id may run Python: not the program's calls */
    long long id = function_id(self, (PyObject *)FRAME_CODE(frame), frame->f_globals);
    ts->tracing--;
    if (id > 0)
        record_id(self, self->entry, id);
    return id;
}

/* A probed frame's body starts: record the entry from its arguments (the first slots of the frame; a
 * generator's argument captured by a closure is already in its cell). Returns 0 when the filter dropped
 * it (the return is dropped too: a generator's frame goes into the skipped set until it completes). */
static int
probe_eval_entry(Record *rec, PyThreadState *ts, _PyInterpreterFrame *frame, int resumable)
{
    PyCodeObject *co = FRAME_CODE(frame);
    Py_ssize_t n = PyTuple_GET_SIZE(rec->names);
    PyObject *values[MAX_ARGS];
    if (n > MAX_ARGS || n > co->co_nlocalsplus)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = frame->localsplus[i];
        if (resumable && v != NULL && (_PyLocals_GetKind(co->co_localspluskinds, (int)i) & CO_FAST_CELL))
            v = PyCell_Check(v) ? PyCell_GET(v) : NULL;
        if (v == NULL)
            return 0;
        values[i] = v; /* borrowed: the frame holds them, and nothing below can run this frame */
    }
    if (rec->fast && fast_entry(rec, values, n))
        return 1;
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) {
        PyErr_Clear();
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(values[i]));
    ts->tracing++;
    PyObject *r = call_slow(rec, "enter", &tuple, 1);
    ts->tracing--;
    Py_DECREF(tuple);
    int kept = r != NULL && PyObject_IsTrue(r) == 1;
    Py_XDECREF(r);
    PyErr_Clear();
    if (!kept && resumable && PySet_Check(rec->skipped)) {
        PyObject *key = PyLong_FromVoidPtr(frame);
        if (key == NULL || PySet_Add(rec->skipped, key) < 0)
            PyErr_Clear();
        Py_XDECREF(key);
    }
    return kept;
}

/* A probed frame returned (result) or raised (result NULL, the exception set: kept as it is). */
static void
probe_eval_return(Record *rec, PyThreadState *ts, _PyInterpreterFrame *frame, PyObject *result, int resumable)
{
    saved_exc exc = {0};
    if (result == NULL)
        exc = save_exc();
    if (resumable && PySet_Check(rec->skipped) && PySet_GET_SIZE(rec->skipped) > 0) {
        PyObject *key = PyLong_FromVoidPtr(frame);
        int dropped = key != NULL ? PySet_Discard(rec->skipped, key) : -1;
        Py_XDECREF(key);
        PyErr_Clear();
        if (dropped == 1)
            goto done;
    }
    if (result != NULL && rec->fast && fast_return(rec, result))
        goto done;
    ts->tracing++;
    if (result != NULL) {
        PyObject *a[2] = {result, Py_None};
        Py_XDECREF(call_slow(rec, "leave", a, 2));
    }
    else {
        PyObject *a[2] = {Py_None, saved_exc_value(&exc)};
        Py_XDECREF(call_slow(rec, "leave", a, 2));
    }
    ts->tracing--;
done:
    if (result == NULL)
        restore_exc(exc);
}

/* 3.12+: the C recursion units one evaluation of a frame takes: _PyEval_EvalFrameDefault subtracts
 * PY_EVAL_C_STACK_UNITS (2: one directly, one through _Py_EnterRecursiveCallTstate) and adds them back when
 * it returns. An inlined Python-to-Python call takes none (the Python limit alone applies). 3.11 counts
 * every frame once against its one limit, inlined or not: nothing to give back. */
#if PY_VERSION_HEX >= 0x030C0000
#define EVAL_C_UNITS 2
#define C_RECURSION_REMAINING(ts) ((ts)->c_recursion_remaining)
#else
#define EVAL_C_UNITS 0
#define C_RECURSION_REMAINING(ts) ((ts)->recursion_remaining)
#endif

/* The lowest stack address this thread's hooked frames may start at; 0: not known yet; UINTPTR_MAX:
 * unknown (every hooked frame counts against the interpreter's C limit, as before 3.12 did not).
 * Thread-local, initial-exec: one load. */
static _Thread_local uintptr_t stack_floor __attribute__((tls_model("initial-exec")));
static _Thread_local uintptr_t stack_end __attribute__((tls_model("initial-exec"))); /* its lowest address */

static uintptr_t
find_stack_floor(void)
{
    pthread_attr_t attr;
    void *addr;
    size_t size;
    uintptr_t floor = UINTPTR_MAX;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        /* 1/8 of the stack, at most 512 KiB, below the floor: room for the RecursionError raised at it to
         * unwind, and for the C code (a repr, an extension) that frames near it call. */
        if (pthread_attr_getstack(&attr, &addr, &size) == 0 && size >= ((size_t)64 << 10)) {
            size_t reserve = size / 8 < ((size_t)512 << 10) ? size / 8 : ((size_t)512 << 10);
            stack_end = (uintptr_t)addr;
            floor = (uintptr_t)addr + reserve;
        }
        pthread_attr_destroy(&attr);
    }
    return floor;
}

/* Evaluate frame with the next evaluation function. The interpreter counts each evaluation in C against
 * its C recursion limit (3.12: 1,500 units; 3.13.0: 10,000), where an inlined Python call counts against
 * the Python limit only: the units this frame takes are given back, so that a program recurses as deep
 * under the hook as without it (sys.getrecursionlimit() still applies). The C stack per Python call is then
 * 3.10's, which a raised limit can exhaust: a frame that would start below the thread's stack floor is
 * given no units at all, and the interpreter raises RecursionError for it, as for a too-deep recursion,
 * instead of the stack overflowing (3.11 too, where untraced calls take no C stack either). */
static inline PyObject *
call_next(_PyFrameEvalFunction next, PyThreadState *ts, _PyInterpreterFrame *frame, int throwflag)
{
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    if (UNLIKELY(stack_floor == 0))
        stack_floor = find_stack_floor();
    /* below the floor and still in the thread's stack (code running on a stack of its own elsewhere, as
     * some coroutine libraries do, is left alone) */
    if (UNLIKELY(here <= stack_floor) && stack_floor != UINTPTR_MAX && here >= stack_end) {
        int saved = C_RECURSION_REMAINING(ts);
        C_RECURSION_REMAINING(ts) = 0;
        PyObject *result = next(ts, frame, throwflag);
        C_RECURSION_REMAINING(ts) = saved;
        return result;
    }
#if EVAL_C_UNITS
    C_RECURSION_REMAINING(ts) += EVAL_C_UNITS;
    PyObject *result = next(ts, frame, throwflag);
    C_RECURSION_REMAINING(ts) -= EVAL_C_UNITS;
    return result;
#else
    return next(ts, frame, throwflag);
#endif
}

static PyObject *traced_eval_full(Hooks *self, PyThreadState *ts, _PyInterpreterFrame *frame, int throwflag);

/* A code object's co_extra slot, read in place (PyUnstable_Code_GetExtra is a call into the interpreter and
 * its checks, for a slot read twice per traced call). The layout of CPython 3.6 to 3.13's private
 * _PyCodeObjectExtra, for exactly the versions USE_EVAL_HOOK is built for. */
struct code_extras {
    Py_ssize_t size;
    void *extras[1];
};

static inline void *
code_extra(PyCodeObject *code, Py_ssize_t index)
{
    const struct code_extras *e = (const struct code_extras *)code->co_extra;
    return e != NULL && index < e->size ? e->extras[index] : NULL;
}

/* The interpreter's frame-evaluation function. The common case inline: whole-program tracing, no probe read
 * by the hook, a plain function (not a generator or coroutine) this tracer has seen (its id in co_extra):
 * two lean writes around the evaluation (the ring's inline code), no Python, no reference taken. Anything
 * else: traced_eval_full. */
static PyObject *
traced_eval(PyThreadState *ts, _PyInterpreterFrame *frame, int throwflag)
{
    unsigned generation = eval_fast.entry_generation;
    PyCodeObject *code = FRAME_CODE(frame);
    /* ts->tracing: a tracer's own Python code (ours, a profile or trace function) is not the program's. */
    if (LIKELY(generation != 0 && !ts->tracing && !throwflag &&
               !(code->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)))) {
        uintptr_t word = (uintptr_t)code_extra(code, extra_id);
        if (LIKELY((word & 0xFFFF) == generation)) { /* seen by this tracer (a 0 word is never a generation) */
            uintptr_t n = word >> 16;
            if (n == 0) /* not traced (excluded, ust's own) */
                return call_next(eval_next, ts, frame, throwflag);
            uint64_t id = eval_fast.base | n;
            if (UNLIKELY(tracepoint_write_u64_tp(eval_fast.entry, id) != 0))
                record_id_general(eval_owner, eval_fast.entry, (long long)id);
            PyObject *result = call_next(eval_next, ts, frame, throwflag);
            /* The tracer may have been stopped or replaced while the frame ran: its return is not recorded
             * then (a probe added meanwhile leaves whole_generation as it is). An exception leaving the frame
             * stays set: the lean write does not touch it, the general path sets it aside. */
            if (LIKELY(eval_fast.whole_generation == generation) &&
                UNLIKELY(tracepoint_write_u64_tp(eval_fast.ret, id) != 0)) /* the same objects as at entry */
                record_id_general(eval_owner, eval_fast.ret, (long long)id);
            return result;
        }
    }
    Hooks *self = eval_owner;
    if (UNLIKELY(self == NULL || ts->tracing))
        return call_next(eval_next, ts, frame, throwflag);
    return traced_eval_full(self, ts, frame, throwflag);
}

/* Everything traced_eval does not do inline: probes, generators and coroutines, first sight of a function. */
static PyObject * __attribute__((noinline))
traced_eval_full(Hooks *self, PyThreadState *ts, _PyInterpreterFrame *frame, int throwflag)
{
    _PyFrameEvalFunction next = eval_next;
    PyCodeObject *code = FRAME_CODE(frame);
    Record *rec = eval_probes > 0 && !busy ? get_record((PyObject *)code) : NULL;
    unsigned generation = eval_whole ? self->generation : 0;
    if (rec == NULL && generation == 0)
        return call_next(next, ts, frame, throwflag);
    int resumable = code->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR);
    int starts; /* the body starts in this evaluation (else a generator resumes) */
    if (resumable) {
        if (frame->owner != FRAME_OWNED_BY_GENERATOR) /* RETURN_GENERATOR: makes the object, runs no body */
            return call_next(next, ts, frame, throwflag);
        starts = _PyInterpreterFrame_LASTI(frame) < code->_co_firsttraceable;
        if (starts && throwflag) /* thrown into before it started: no body ran, nothing is recorded */
            return call_next(next, ts, frame, throwflag);
    }
    else {
        if (throwflag) /* not a call */
            return call_next(next, ts, frame, throwflag);
        starts = 1;
    }
    /* The probe's return is recorded if its entry was (a resumed generator's was, when it started, unless
     * its frame is in the skipped set). The record is held from here: the probe may be removed while the
     * entry runs Python (a __repr__) or while the frame runs, which frees the record. */
    int probed = 0;
    if (rec != NULL) {
        Py_INCREF(rec);
        probed = !starts || probe_eval_entry(rec, ts, frame, resumable);
        if (!probed)
            Py_CLEAR(rec);
    }
    long long id = 0;
    if (generation)
        id = starts ? eval_entry(self, ts, frame) : known_id(self, (PyObject *)code);
    PyObject *result = call_next(next, ts, frame, throwflag);
    /* The generator frame lives in its generator object, which its caller (gen_send_ex) holds. Suspended:
     * at a yield, or (3.13: FRAME_SUSPENDED_YIELD_FROM) at an await or yield from; every suspended state is
     * below FRAME_EXECUTING on 3.11 to 3.13. */
    int suspended = resumable && result != NULL && _PyFrame_GetGenerator(frame)->gi_frame_state < FRAME_EXECUTING;
    if (probed) {
        /* not at a yield or an await; not when the probe went meanwhile */
        if (!suspended && !busy && get_record((PyObject *)code) == rec)
            probe_eval_return(rec, ts, frame, result, resumable);
        Py_DECREF(rec);
    }
    /* The tracer may have been stopped (or replaced) while the frame ran: its return is not recorded. */
    if (id > 0 && !suspended && eval_owner == self && eval_whole && self->generation == generation)
        record_id(self, self->ret, id);
    return result;
}

/* Install the hook while whole-program tracing or a probe needs it; remove it after. When another
 * evaluation function was installed after ours, ours stays in the chain, passing frames through. */
static void
eval_update(Hooks *self)
{
    PyInterpreterState *interp = PyThreadState_GetInterpreter(PyThreadState_Get());
    _PyFrameEvalFunction current = _PyInterpreterState_GetEvalFrameFunc(interp);
    if (eval_owner != self || !(eval_whole || eval_probes > 0))
        eval_fast_off(); /* the owner may be released below */
    if (eval_whole || eval_probes > 0) {
        if (current != traced_eval) {
            eval_next = current; /* _PyEval_EvalFrameDefault, or a debugger's */
            _PyInterpreterState_SetEvalFrameFunc(interp, traced_eval);
        }
        if (eval_owner != self)
            Py_XSETREF(eval_owner, (Hooks *)Py_NewRef(self));
    }
    else {
        if (current == traced_eval)
            _PyInterpreterState_SetEvalFrameFunc(interp, eval_next); /* the default: calls are inlined again */
        Py_CLEAR(eval_owner);
    }
    eval_fast_refresh();
}

/* eval_hook(on): whole-program tracing through the hook, on or off. */
static PyObject *
hooks_eval_hook(Hooks *self, PyObject *on)
{
    int enable = PyObject_IsTrue(on);
    if (enable < 0)
        return NULL;
    eval_whole = enable;
    eval_update(self);
    Py_RETURN_NONE;
}

/* eval_probe(delta): one more (+1) or one less (-1) probe read by the hook (set_record gives its record). */
static PyObject *
hooks_eval_probe(Hooks *self, PyObject *delta)
{
    Py_ssize_t d = PyLong_AsSsize_t(delta);
    if (d == -1 && PyErr_Occurred())
        return NULL;
    if (eval_probes + d < 0) {
        PyErr_SetString(PyExc_ValueError, "eval_probe: more probes removed than added");
        return NULL;
    }
    eval_probes += d;
    eval_update(self);
    Py_RETURN_NONE;
}
#endif

/* The sys.monitoring callbacks as vectorcall objects: the interpreter calls them straight (a bound
 * builtin method adds its own dispatch, ~40 instructions an event). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Hooks *hooks;
} Callback;

static PyObject *
callback_py_start(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return hooks_py_start(((Callback *)self)->hooks, args, PyVectorcall_NARGS(nargsf));
}

static PyObject *
callback_py_return(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return hooks_py_return(((Callback *)self)->hooks, args, PyVectorcall_NARGS(nargsf));
}

static PyObject *
callback_py_unwind(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return hooks_py_unwind(((Callback *)self)->hooks, args, PyVectorcall_NARGS(nargsf));
}

static void
callback_dealloc(Callback *self)
{
    Py_XDECREF(self->hooks);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CallbackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ust._ring._probes.Callback",
    .tp_basicsize = sizeof(Callback),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Callback, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)callback_dealloc,
    .tp_doc = "a sys.monitoring callback of Hooks (Hooks.callbacks())",
};

/* callbacks() -> (py_start, py_return, py_unwind) as vectorcall objects */
static PyObject *
hooks_callbacks(Hooks *self, PyObject *unused)
{
    vectorcallfunc fns[3] = {callback_py_start, callback_py_return, callback_py_unwind};
    PyObject *out = PyTuple_New(3);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < 3; i++) {
        Callback *cb = PyObject_New(Callback, &CallbackType);
        if (cb == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        cb->vectorcall = fns[i];
        cb->hooks = (Hooks *)Py_NewRef(self);
        PyTuple_SET_ITEM(out, i, (PyObject *)cb);
    }
    return out;
}

static PyMethodDef hooks_methods[] = {
    {"callbacks", (PyCFunction)hooks_callbacks, METH_NOARGS, "(py_start, py_return, py_unwind), the direct callbacks"},
    {"py_start", (PyCFunction)(void (*)(void))hooks_py_start, METH_FASTCALL, "sys.monitoring PY_START callback"},
    {"py_return", (PyCFunction)(void (*)(void))hooks_py_return, METH_FASTCALL, "sys.monitoring PY_RETURN callback"},
    {"py_unwind", (PyCFunction)(void (*)(void))hooks_py_unwind, METH_FASTCALL, "sys.monitoring PY_UNWIND callback"},
    {"set_whole", (PyCFunction)hooks_set_whole, METH_VARARGS,
     "whole-program tracing: (generation, base, new_id, entry, return), or (0,): off"},
#ifdef USE_EVAL_HOOK
    {"eval_hook", (PyCFunction)hooks_eval_hook, METH_O, "3.11: whole-program tracing in the frame-evaluation hook"},
    {"eval_probe", (PyCFunction)hooks_eval_probe, METH_O, "3.11: +1/-1 probe read by the frame-evaluation hook"},
#endif
    {NULL},
};

static PyTypeObject HooksType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ust._ring._probes.Hooks",
    .tp_basicsize = sizeof(Hooks),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)hooks_init,
    .tp_dealloc = (destructor)hooks_dealloc,
    .tp_methods = hooks_methods,
    .tp_doc = "Hooks(probes: dict, disable): the per-call paths of probes and whole-program tracing",
};

static PyMethodDef module_methods[] = {
    {"enter", (PyCFunction)(void (*)(void))probe_enter, METH_FASTCALL, "enter(record, *values) -> bool"},
    {"leave", (PyCFunction)(void (*)(void))probe_leave, METH_FASTCALL, "leave(record, retval)"},
    {"entry_here", (PyCFunction)(void (*)(void))probe_entry_here, METH_FASTCALL, "entry_here(record, *values)"},
    {"leave_value", (PyCFunction)(void (*)(void))probe_leave_value, METH_FASTCALL, "leave_value(record, v) -> v"},
    {"unwind_here", (PyCFunction)(void (*)(void))probe_unwind_here, METH_FASTCALL, "unwind_here(record)"},
    {"leave_later", (PyCFunction)(void (*)(void))probe_leave_later, METH_FASTCALL, "leave_later(record, v) -> v"},
    {"settle", (PyCFunction)(void (*)(void))probe_settle, METH_FASTCALL, "settle(record)"},
    {"set_record", (PyCFunction)(void (*)(void))set_record, METH_FASTCALL, "set_record(code, record or None)"},
    {"own_thread", (PyCFunction)mark_own_thread, METH_NOARGS,
     "own_thread(): the calling thread is ust's own: none of its calls is recorded from now on"},
    {NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "ust._ring._probes", NULL, -1, module_methods};

/* ust._ring._probes, made by ust._ring._ring's initialization (module.c) and registered in sys.modules:
 * the hot paths of probes are built into the core's shared object, so that the frame-evaluation hook
 * writes its events with the ring's inline code (a call into another extension per event, with its
 * checks, cost as much as the write). 0, or -1 with an exception set. */
int
probes_module_init(void)
{
    if (PyType_Ready(&HooksType) < 0 || PyType_Ready(&RecordType) < 0 || PyType_Ready(&CallbackType) < 0)
        return -1;
    if (extra_record < 0) {
        extra_record = request_extra(NULL);
        extra_id = request_extra(NULL);
        if (extra_record < 0 || extra_id < 0)
            return -1;
    }
    if (empty_str == NULL)
        empty_str = PyUnicode_FromString("");
    if (name_key == NULL)
        name_key = PyUnicode_InternFromString("__name__");
    if (empty_str == NULL || name_key == NULL)
        return -1;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return -1;
    int rc = -1;
    if (PyModule_AddObjectRef(m, "Hooks", (PyObject *)&HooksType) == 0 &&
        PyModule_AddObjectRef(m, "Record", (PyObject *)&RecordType) == 0)
        rc = PyDict_SetItemString(PyImport_GetModuleDict(), "ust._ring._probes", m);
    Py_DECREF(m);
    return rc;
}
