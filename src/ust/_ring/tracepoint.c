/* ======================================================================
 * Tracepoint: field specs, argument validation, serialization, the call
 * ====================================================================== */

#include "tracepoint.h"
#include "channel.h"
#include "frontend.h"
#include "contexts.h"
#include "module.h"

/* One argument, converted. No pointer into a mutable object is kept here
 * while Python may run: str and bytes are immutable (the caller holds them);
 * array/sequence elements are converted into memory of the call's own; a
 * bytearray's pointer and size are read only after the last Python code of
 * the call has run (take_bytearrays). */
typedef struct {
    union {
        int64_t i;
        uint64_t u;
        double d;
    } v;
    const char *ptr;      /* str, bytes: the data; array/sequence: the converted elements */
    Py_ssize_t len;       /* string: bytes without NUL; bytes: length; array/seq: elements */
    PyObject *bytearray;  /* borrowed; ptr/len set by take_bytearrays */
    char *heap;           /* elements converted into PyMem memory (freed by release_values) */
} ArgValue;

/* Room for converted array/sequence elements, on the stack for small ones. */
struct scratch {
    size_t used;
    int bytearrays; /* bytearray arguments still to measure */
    char buf[512];
};

NOINLINE PyObject *arg_error(TracepointObject *tp, FieldSpec *f, PyObject *exc, const char *what, PyObject *got)
{
    if (got)
        PyErr_Format(exc, "%U: field '%U' %s, got %.80s", tp->name, f->name, what, Py_TYPE(got)->tp_name);
    else
        PyErr_Format(exc, "%U: field '%U' %s", tp->name, f->name, what);
    return NULL;
}

/* Convert one numeric scalar; 0 on success, -1 with an exception set. */
static int convert_scalar(TracepointObject *tp, FieldSpec *f, uint8_t code, uint8_t size, uint8_t is_signed,
                          PyObject *labels, PyObject *o, ArgValue *out)
{
    switch (code) {
    case F_ENUM:
        if (PyUnicode_Check(o)) {
            PyObject *val = labels ? PyDict_GetItemWithError(labels, o) : NULL;
            if (!val) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_ValueError, "%U: field '%U' has no enum label %R", tp->name, f->name, o);
                return -1;
            }
            o = val;
        }
        /* then the value as an integer of the container type */
        __attribute__((fallthrough));
    case F_SINT:
    case F_UINT: {
        if (!PyLong_Check(o)) {
            arg_error(tp, f, PyExc_TypeError, "expects an int", o);
            return -1;
        }
        if (is_signed || size < 8) {
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
            if (overflow || (v == -1 && PyErr_Occurred()))
                goto range;
            if (is_signed) {
                int64_t lo = size == 8 ? INT64_MIN : -((int64_t)1 << (size * 8 - 1));
                int64_t hi = size == 8 ? INT64_MAX : ((int64_t)1 << (size * 8 - 1)) - 1;
                if (v < lo || v > hi)
                    goto range;
            } else if (v < 0 || (uint64_t)v > ((1ULL << (size * 8)) - 1)) {
                goto range;
            }
            out->v.i = v;
        } else {
            unsigned long long v = PyLong_AsUnsignedLongLong(o);
            if (v == (unsigned long long)-1 && PyErr_Occurred())
                goto range;
            out->v.u = v;
        }
        return 0;
    range:
        PyErr_Clear();
        PyErr_Format(PyExc_OverflowError, "%U: field '%U' value %R does not fit in %s%d", tp->name, f->name, o,
                     is_signed ? "int" : "uint", size * 8);
        return -1;
    }
    case F_FLOAT:
        if (PyFloat_Check(o)) {
            out->v.d = PyFloat_AS_DOUBLE(o);
            return 0;
        }
        if (PyLong_Check(o)) {
            out->v.d = PyLong_AsDouble(o);
            if (out->v.d == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                PyErr_Format(PyExc_OverflowError, "%U: field '%U' int too large for a float", tp->name, f->name);
                return -1;
            }
            return 0;
        }
        arg_error(tp, f, PyExc_TypeError, "expects a float", o);
        return -1;
    case F_BOOL:
        if (!PyLong_Check(o)) { /* bool is an int subclass */
            arg_error(tp, f, PyExc_TypeError, "expects a bool", o);
            return -1;
        }
        {
            int truth = PyObject_IsTrue(o); /* an int subclass's __bool__ may run Python, or fail */
            if (truth < 0)
                return -1;
            out->v.u = (uint64_t)truth;
        }
        return 0;
    }
    PyErr_Format(PyExc_SystemError, "%U: field '%U' has an unknown type code", tp->name, f->name);
    return -1;
}

INLINE void store_scalar(char *p, uint8_t code, uint8_t size, const ArgValue *v)
{
    if (code == F_FLOAT) {
        if (size == 4) {
            float x = (float)v->v.d;
            memcpy(p, &x, 4);
        } else {
            memcpy(p, &v->v.d, 8);
        }
    } else {
        /* little-endian: the low bytes come first. Fixed-size copies compile
         * to single moves; a variable-size memcpy became `rep movs`, which
         * cost a third of the call. */
        switch (size) {
        case 1: *p = (char)v->v.u; break;
        case 2: { uint16_t x = (uint16_t)v->v.u; memcpy(p, &x, 2); break; }
        case 4: { uint32_t x = (uint32_t)v->v.u; memcpy(p, &x, 4); break; }
        default: memcpy(p, &v->v.u, 8);
        }
    }
}

/* Pass 1: validate and convert every argument; return the payload size
 * without the bytearrays' (see take_bytearrays), or -1 with an exception.
 * May run Python (an int subclass's __bool__, an enum label's __eq__). */
static int64_t validate_args(TracepointObject *tp, PyObject *const *args, ArgValue *vals, struct scratch *sc)
{
    int64_t size = 0;
    for (int i = 0; i < tp->nfields; i++) {
        FieldSpec *f = &tp->fields[i];
        PyObject *o = args[i];
        ArgValue *v = &vals[i];
        switch (f->code) {
        case F_SINT:
        case F_UINT:
        case F_FLOAT:
        case F_BOOL:
        case F_ENUM:
            if (convert_scalar(tp, f, f->code, f->size, f->is_signed, f->labels, o, v) < 0)
                return -1;
            size += f->size;
            break;
        case F_STRING: {
            if (!PyUnicode_Check(o)) {
                arg_error(tp, f, PyExc_TypeError, "expects a str", o);
                return -1;
            }
            if (PyUnicode_GET_LENGTH(o) == 0) { /* common (a probe's unfit/exception fields): no UTF-8 lookup */
                v->ptr = "";
                v->len = 0;
                size += 1;
                break;
            }
            Py_ssize_t len;
            const char *s = PyUnicode_AsUTF8AndSize(o, &len);
            if (!s) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%U: field '%U' is not encodable as UTF-8", tp->name, f->name);
                return -1;
            }
            const char *nul = memchr(s, 0, (size_t)len); /* CTF strings end at NUL */
            v->ptr = s;
            v->len = nul ? nul - s : len;
            size += v->len + 1;
            break;
        }
        case F_BYTES:
            if (PyBytes_Check(o)) {
                v->ptr = PyBytes_AS_STRING(o);
                v->len = PyBytes_GET_SIZE(o);
                size += 4 + v->len;
            } else if (PyByteArray_Check(o)) {
                v->bytearray = o; /* measured once no more Python runs */
                sc->bytearrays++;
            } else {
                arg_error(tp, f, PyExc_TypeError, "expects bytes or bytearray", o);
                return -1;
            }
            break;
        case F_ARRAY:
        case F_SEQUENCE: {
            int is_list = PyList_Check(o);
            if (!is_list && !PyTuple_Check(o)) {
                arg_error(tp, f, PyExc_TypeError, "expects a list or tuple", o);
                return -1;
            }
            Py_ssize_t n = Py_SIZE(o);
            if (f->code == F_ARRAY && n != f->length) {
                PyErr_Format(PyExc_ValueError, "%U: field '%U' expects %u elements, got %zd", tp->name, f->name,
                             f->length, n);
                return -1;
            }
            if (n > 0xFFFFFFF) {
                PyErr_Format(PyExc_ValueError, "%U: field '%U' sequence is too long", tp->name, f->name);
                return -1;
            }
            size_t bytes = (size_t)n * f->elem_size;
            char *dst;
            if (bytes <= sizeof sc->buf - sc->used) {
                dst = sc->buf + sc->used;
                sc->used += bytes;
            } else {
                dst = v->heap = PyMem_Malloc(bytes);
                if (!dst) {
                    PyErr_NoMemory();
                    return -1;
                }
            }
            /* Convert into the call's own memory now: the elements are never
             * read again. An element's __bool__ may run Python that resizes
             * the list, so its size is checked and the item held at each step. */
            for (Py_ssize_t k = 0; k < n; k++) {
                if (is_list && k >= PyList_GET_SIZE(o)) {
                    PyErr_Format(PyExc_ValueError, "%U: field '%U' changed size during the call", tp->name,
                                 f->name);
                    return -1;
                }
                PyObject *item = Py_NewRef(is_list ? PyList_GET_ITEM(o, k) : PyTuple_GET_ITEM(o, k));
                ArgValue tmp;
                int rc = convert_scalar(tp, f, f->elem_code, f->elem_size, f->elem_signed, NULL, item, &tmp);
                Py_DECREF(item);
                if (rc < 0)
                    return -1;
                store_scalar(dst + (size_t)k * f->elem_size, f->elem_code, f->elem_size, &tmp);
            }
            v->ptr = dst;
            v->len = n;
            size += (f->code == F_SEQUENCE ? 4 : 0) + (int64_t)bytes;
            break;
        }
        default:
            PyErr_SetString(PyExc_SystemError, "corrupt field spec");
            return -1;
        }
    }
    return size;
}

/* Pass 2: write the converted values; cannot fail, runs no Python. */
static char *write_fields(TracepointObject *tp, ArgValue *vals, char *p)
{
    for (int i = 0; i < tp->nfields; i++) {
        FieldSpec *f = &tp->fields[i];
        ArgValue *v = &vals[i];
        switch (f->code) {
        case F_STRING:
            if (v->len)
                memcpy(p, v->ptr, (size_t)v->len);
            p[v->len] = 0;
            p += v->len + 1;
            break;
        case F_BYTES: {
            uint32_t n = (uint32_t)v->len;
            memcpy(p, &n, 4);
            memcpy(p + 4, v->ptr, n);
            p += 4 + n;
            break;
        }
        case F_ARRAY:
        case F_SEQUENCE: {
            if (f->code == F_SEQUENCE) {
                uint32_t n = (uint32_t)v->len;
                memcpy(p, &n, 4);
                p += 4;
            }
            size_t bytes = (size_t)v->len * f->elem_size;
            memcpy(p, v->ptr, bytes);
            p += bytes;
            break;
        }
        default:
            store_scalar(p, f->code, f->size, v);
            p += f->size;
        }
    }
    return p;
}

static void release_values(TracepointObject *tp, ArgValue *vals)
{
    for (int i = 0; i < tp->nfields; i++)
        if (vals[i].heap) {
            PyMem_Free(vals[i].heap);
            vals[i].heap = NULL;
        }
}

/* Read the bytearrays' pointers and sizes; return the bytes they add. The
 * caller runs no Python from here until the data is copied, so no other
 * thread can resize or free them in between (they hold no GIL). */
static int64_t take_bytearrays(TracepointObject *tp, ArgValue *vals)
{
    int64_t size = 0;
    for (int i = 0; i < tp->nfields; i++)
        if (vals[i].bytearray) {
            vals[i].ptr = PyByteArray_AS_STRING(vals[i].bytearray);
            vals[i].len = PyByteArray_GET_SIZE(vals[i].bytearray);
            size += 4 + vals[i].len;
        }
    return size;
}

/* Python context values: each callable returns a str (anything else, or an
 * exception, records an empty string: the tracer never raises into the app).
 * Runs Python: called before any pointer into an argument is taken. */
static int64_t python_context_values(ChannelObject *ch, PyObject **strs)
{
    int64_t size = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(ch->py_contexts);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallNoArgs(PyTuple_GET_ITEM(ch->py_contexts, i));
        if (!r || !PyUnicode_Check(r) || !PyUnicode_AsUTF8(r)) {
            PyErr_Clear();
            Py_XDECREF(r);
            r = PyUnicode_FromString("");
        }
        strs[i] = r;
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(r, &len);
        const char *nul = memchr(s, 0, (size_t)len);
        size += (nul ? nul - s : len) + 1;
    }
    return size;
}

INLINE char *write_context(ChannelObject *ch, char *p, uint32_t cpu, PyObject **strs)
{
    if (ch->ctx_needs_ids)
        ensure_ids();
    for (int i = 0; i < ch->n_ctx; i++)
        p = write_one_context(p, ch->ctx_kind[i], ch->ctx_perf_slot[i], cpu);
    Py_ssize_t n = PyTuple_GET_SIZE(ch->py_contexts);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(strs[i], &len);
        const char *nul = memchr(s, 0, (size_t)len);
        if (nul)
            len = nul - s;
        memcpy(p, s, (size_t)len);
        p[len] = 0;
        p += len + 1;
    }
    return p;
}

/* Reserve, write and commit one event into a's channel. `size` is the
 * fields' and the Python contexts' bytes. Runs no Python. */
NOINLINE void record_into(TracepointObject *tp, Attachment *a, ArgValue *vals, int64_t size, PyObject **strs)
{
    ChannelObject *ch = a->channel;
    uint32_t cpu = current_cpu();
    BufferObject *b = buffer_for_cpu(ch, cpu);
    struct reservation r;
    if (ring_reserve(b, (uint64_t)(size + ch->ctx_fixed_size), a->event_id, &r) == 0) {
        char *p = write_event_header(r.dst, &r, a->event_id);
        p = write_context(ch, p, cpu, strs);
        write_fields(tp, vals, p);
        ring_commit(b, &r);
    }
}

/* Record the converted arguments into every attachment whose filter keeps
 * the event. Everything that may run Python (filters, Python contexts) runs
 * first, for every attachment; then the bytearrays are measured and the
 * events copied with no Python in between. */
static void record_all(TracepointObject *tp, AttachList *al, PyObject *const *args, Py_ssize_t nargs,
                       ArgValue *vals, int64_t size, int bytearrays)
{
    int n = al->n;
    Attachment *only = &al->a[0];
    if (LIKELY(n == 1 && !only->filter && !PyTuple_GET_SIZE(only->channel->py_contexts))) {
        /* the common case: no Python to run at all */
        if (bytearrays)
            size += take_bytearrays(tp, vals);
        record_into(tp, only, vals, size, NULL);
        return;
    }
    PyObject *strs[MAX_ATTACH][MAX_PY_CONTEXTS];
    int64_t ctx_size[MAX_ATTACH]; /* the Python contexts' bytes, -1: filtered out */
    for (int i = 0; i < n; i++) {
        Attachment *a = &al->a[i];
        ctx_size[i] = -1;
        if (a->filter) {
            PyObject *r = PyObject_Vectorcall(a->filter, args, (size_t)nargs, NULL);
            int keep = r ? PyObject_IsTrue(r) : 0;
            Py_XDECREF(r);
            if (keep <= 0) {
                PyErr_Clear(); /* a filter that fails is false, as in LTTng */
                continue;
            }
        }
        ctx_size[i] = PyTuple_GET_SIZE(a->channel->py_contexts) ? python_context_values(a->channel, strs[i]) : 0;
    }
    /* No Python runs from here until the last copy. */
    if (bytearrays)
        size += take_bytearrays(tp, vals);
    for (int i = 0; i < n; i++)
        if (ctx_size[i] >= 0)
            record_into(tp, &al->a[i], vals, size + ctx_size[i], strs[i]);
    for (int i = 0; i < n; i++)
        if (ctx_size[i] >= 0)
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(al->a[i].channel->py_contexts); k++)
                Py_DECREF(strs[i][k]);
}

/* An enabled tracepoint was called with arguments that do not fit its
 * fields (an exception is set). Strict mode: return -1, the exception goes
 * to the caller. Otherwise the application must not fail because it is
 * traced: the event is counted as discarded (lost_args) in the buffer it
 * would have gone to in every attached channel — filters are not run on
 * arguments that did not convert — and the first time, a
 * TracepointArgumentWarning says why. Returns 0 with no exception set. */
NOINLINE int argument_mismatch(TracepointObject *tp, AttachList *al)
{
    if (ring_state.strict_mode || tp->raises)
        return -1;
    uint32_t cpu = current_cpu();
    for (int i = 0; i < al->n; i++) {
        ChannelObject *ch = al->a[i].channel;
        count_lost(&buffer_for_cpu(ch, cpu)->h->lost_args);
    }
    if (tp->warned) {
        PyErr_Clear();
        return 0;
    }
    tp->warned = 1;
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *why = exc ? PyObject_Str(exc) : NULL;
    if (why && PyErr_WarnFormat(ring_state.argument_warning, 1,
                                "%U; the event was not recorded but counted as discarded (further ones from "
                                "this tracepoint are counted silently; UST_STRICT=1 or ust.strict(True) raises "
                                "instead)",
                                why) < 0)
        PyErr_Clear(); /* warnings turned into errors: still never raise into the application */
    PyErr_Clear();
    Py_XDECREF(why);
    Py_XDECREF(exc);
    return 0;
}

INLINE void list_enter(AttachList *al)
{
#ifndef Py_GIL_DISABLED
    al->readers++;
#endif
}

static void attachlist_free(AttachList *al);

/* The call is done with al: free it if it was replaced meanwhile. Freeing
 * may run finalizers, so a pending exception is kept aside. */
INLINE void list_leave(AttachList *al)
{
#ifndef Py_GIL_DISABLED
    if (--al->readers == 0 && UNLIKELY(al->retired)) {
        PyObject *exc = PyErr_GetRaisedException();
        attachlist_free(al);
        PyErr_SetRaisedException(exc);
    }
#endif
}

NOINLINE PyObject *tracepoint_record(TracepointObject *tp, AttachList *al, PyObject *const *args, size_t nargsf,
                                     PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    ArgValue vals[MAX_FIELDS];
    struct scratch sc;
    int64_t size = -1;
    int rc = 0;
    memset(vals, 0, sizeof(ArgValue) * (size_t)tp->nfields);
    sc.used = 0;
    sc.bytearrays = 0;
    list_enter(al);
    if (UNLIKELY(kwnames && PyTuple_GET_SIZE(kwnames)))
        PyErr_Format(PyExc_TypeError, "%U() takes positional arguments only", tp->name);
    else if (UNLIKELY(nargs != tp->nfields))
        PyErr_Format(PyExc_TypeError, "%U() takes %d arguments (%zd given)", tp->name, tp->nfields, nargs);
    else
        size = validate_args(tp, args, vals, &sc);
    if (LIKELY(size >= 0))
        record_all(tp, al, args, nargs, vals, size, sc.bytearrays);
    else
        rc = argument_mismatch(tp, al);
    release_values(tp, vals);
    list_leave(al);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tracepoint_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TracepointObject *tp = (TracepointObject *)self;
    AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire);
    if (LIKELY(al == NULL))
        Py_RETURN_NONE;
    return tracepoint_record(tp, al, args, nargsf, kwnames);
}

/* The entry points of record_api.h. A non-Tracepoint object is called as a Python callable. */
static int api_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r;
    if (UNLIKELY(!Py_IS_TYPE(self, &Tracepoint_Type))) {
        r = PyObject_Vectorcall(self, args, (size_t)nargs, NULL);
    } else {
        TracepointObject *tp = (TracepointObject *)self;
        AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire); /* as the vectorcall */
        if (LIKELY(al == NULL))
            return 0;
        r = tracepoint_record(tp, al, args, (size_t)nargs, NULL);
    }
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The whole-program tracer's ids, lean path (record_api.h): tracepoint_write_u64 (tracepoint.h). */
static int api_write_u64(PyObject *self, uint64_t value) { return tracepoint_write_u64(self, value); }

/* The general path of record_u64: with C contexts, without the int object; else (filters, Python contexts,
 * several channels) the tracepoint's call with one. Holds the tracepoint: a filter or Python context may
 * run Python, which may drop the caller's last reference. */
NOINLINE int record_u64_general(PyObject *self, uint64_t value)
{
    int rc;
    Py_INCREF(self);
    if (Py_IS_TYPE(self, &Tracepoint_Type)) {
        TracepointObject *tp = (TracepointObject *)self;
        AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire);
        FieldSpec *f = &tp->fields[0];
        if (al != NULL && tp->nfields == 1 && f->size == 8 &&
            (f->code == F_UINT || (f->code == F_SINT && value <= (uint64_t)INT64_MAX)) && al->n == 1 &&
            !al->a[0].filter && !PyTuple_GET_SIZE(al->a[0].channel->py_contexts)) {
            ArgValue v = {.v.u = value};
            record_into(tp, &al->a[0], &v, 8, NULL);
            Py_DECREF(self);
            return 0;
        }
    }
    PyObject *o = PyLong_FromUnsignedLongLong(value);
    rc = o == NULL ? -1 : api_record(self, &o, 1);
    Py_XDECREF(o);
    Py_DECREF(self);
    return rc;
}

static int api_record_u64(PyObject *self, uint64_t value)
{
    if (LIKELY(api_write_u64(self, value) == 0))
        return 0;
    return record_u64_general(self, value);
}

/* Values the caller converted (dynamic probes: the probe knows its field types when it is installed),
 * written without the general path's validation, in the common case only: one attachment, no filter, no
 * Python context (anything else returns 1 and the caller calls the tracepoint with objects). Runs no
 * Python between the load of the list and the commit, as api_record_u64. */
static int api_record_values(PyObject *self, const struct ust_value *values, int nvalues)
{
    if (UNLIKELY(!Py_IS_TYPE(self, &Tracepoint_Type)))
        return 1;
    TracepointObject *tp = (TracepointObject *)self;
    AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire); /* as the vectorcall */
    if (LIKELY(al == NULL))
        return 0;
    Attachment *only = &al->a[0];
    ChannelObject *ch = only->channel;
    if (nvalues != tp->nfields || al->n != 1 || only->filter || PyTuple_GET_SIZE(ch->py_contexts))
        return 1;
    /* Pass 1: each value's kind against its field, the strings cut at a NUL, the size. */
    Py_ssize_t lens[MAX_FIELDS];
    int64_t size = 0;
    for (int i = 0; i < nvalues; i++) {
        const struct ust_value *v = &values[i];
        const FieldSpec *f = &tp->fields[i];
        switch (v->kind) {
        case UST_V_INT64:
            if (f->code != F_SINT || f->size != 8)
                return 1;
            break;
        case UST_V_DOUBLE:
            if (f->code != F_FLOAT || f->size != 8)
                return 1;
            break;
        case UST_V_BOOL:
            if (f->code != F_BOOL)
                return 1;
            break;
        case UST_V_STRING: {
            if (f->code != F_STRING)
                return 1;
            const char *nul = v->len ? memchr(v->ptr, 0, (size_t)v->len) : NULL; /* CTF strings end at NUL */
            lens[i] = nul ? nul - v->ptr : v->len;
            size += lens[i] + 1;
            continue;
        }
        case UST_V_BYTES:
            if (f->code != F_BYTES || v->len > 0xFFFFFFFF)
                return 1;
            lens[i] = v->len;
            size += 4 + v->len;
            continue;
        default:
            return 1;
        }
        size += f->size;
    }
    if (!ch->plain) { /* C contexts: the general writer, from ArgValues */
        ArgValue vals[MAX_FIELDS];
        for (int i = 0; i < nvalues; i++) { /* record_into reads v, ptr and len only */
            const struct ust_value *v = &values[i];
            ArgValue *a = &vals[i];
            switch (v->kind) {
            case UST_V_INT64: a->v.i = v->i; break;
            case UST_V_DOUBLE: a->v.d = v->d; break;
            case UST_V_BOOL: a->v.u = (uint64_t)(v->i != 0); break;
            default: /* a string or bytes */
                a->ptr = v->len ? v->ptr : "";
                a->len = lens[i];
            }
        }
        record_into(tp, only, vals, size, NULL);
        return 0;
    }
    /* Pass 2, a channel without contexts (a probe's, mostly): straight from the values into the ring, the
     * same bytes write_fields writes for these kinds. No Python runs from the load of the list on. */
    BufferObject *b = buffer_for_cpu(ch, current_cpu());
    struct reservation r;
    if (ring_reserve(b, (uint64_t)size, only->event_id, &r) == 0) {
        char *p = write_event_header(r.dst, &r, only->event_id);
        for (int i = 0; i < nvalues; i++) {
            const struct ust_value *v = &values[i];
            switch (v->kind) {
            case UST_V_INT64:
                memcpy(p, &v->i, 8);
                p += 8;
                break;
            case UST_V_DOUBLE:
                memcpy(p, &v->d, 8);
                p += 8;
                break;
            case UST_V_BOOL: {
                ArgValue bv = {.v.u = (uint64_t)(v->i != 0)};
                store_scalar(p, F_BOOL, tp->fields[i].size, &bv);
                p += tp->fields[i].size;
                break;
            }
            case UST_V_STRING:
                if (lens[i])
                    memcpy(p, v->ptr, (size_t)lens[i]);
                p[lens[i]] = 0;
                p += lens[i] + 1;
                break;
            default: { /* UST_V_BYTES */
                uint32_t n = (uint32_t)lens[i];
                memcpy(p, &n, 4);
                memcpy(p + 4, v->ptr, n);
                p += 4 + n;
            }
            }
        }
        ring_commit(b, &r);
    }
    return 0;
}

struct ust_record_api record_api = {UST_RECORD_API_VERSION, api_record, api_record_u64, api_record_values,
                                     api_write_u64};

static int parse_spec(FieldSpec *f, PyObject *spec)
{
    /* (name, code, size_bytes, signed, elem_code, elem_size, elem_signed, length, labels) */
    PyObject *name, *labels;
    int code, size, sgn, ecode, esize, esgn;
    unsigned int length;
    if (!PyArg_ParseTuple(spec, "UiiiiiiIO", &name, &code, &size, &sgn, &ecode, &esize, &esgn, &length, &labels))
        return -1;
    if (code < F_SINT || code > F_ENUM || size < 0 || size > 8 || esize < 0 || esize > 8) {
        PyErr_Format(PyExc_ValueError, "bad field spec for %R", name);
        return -1;
    }
    f->name = Py_NewRef(name);
    f->code = (uint8_t)code;
    f->size = (uint8_t)size;
    f->is_signed = (uint8_t)sgn;
    f->elem_code = (uint8_t)ecode;
    f->elem_size = (uint8_t)esize;
    f->elem_signed = (uint8_t)esgn;
    f->length = length;
    f->labels = labels == Py_None ? NULL : Py_NewRef(labels);
    if ((code == F_ARRAY || code == F_SEQUENCE) && (ecode < F_SINT || ecode > F_ENUM || esize == 0 ||
                                                    ecode == F_STRING || ecode == F_BYTES)) {
        PyErr_Format(PyExc_ValueError, "bad element type for %R", name);
        return -1;
    }
    if ((code <= F_BOOL || code == F_ENUM) && !(size == 1 || size == 2 || size == 4 || size == 8)) {
        PyErr_Format(PyExc_ValueError, "bad size for %R", name);
        return -1;
    }
    return 0;
}

static PyObject *Tracepoint_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "fields", "owner", NULL};
    PyObject *name, *fields, *owner = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UO!|O", kwlist, &name, &PyTuple_Type, &fields, &owner))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    if (n > MAX_FIELDS)
        return PyErr_Format(PyExc_ValueError, "%U: at most %d fields, got %zd", name, MAX_FIELDS, n);
    TracepointObject *tp = (TracepointObject *)type->tp_alloc(type, 0);
    if (!tp)
        return NULL;
    tp->vectorcall = Tracepoint_vectorcall;
    tp->name = Py_NewRef(name);
    tp->owner = Py_NewRef(owner);
    atomic_init(&tp->attached, NULL);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (parse_spec(&tp->fields[i], PyTuple_GET_ITEM(fields, i)) < 0) {
            Py_DECREF(tp);
            return NULL;
        }
        tp->nfields = (int)i + 1;
    }
    return (PyObject *)tp;
}

static void attachlist_free(AttachList *al)
{
    for (int i = 0; i < al->n; i++) {
        Py_XDECREF(al->a[i].channel);
        Py_XDECREF(al->a[i].filter);
    }
    PyMem_Free(al);
}

/* Publish a new attachment list (NULL: disabled) and retire the old one:
 * freed now if no call is using it, else by the last call out (list_leave).
 * Called from Python (agent/session threads) with the GIL; serialized by
 * UPDATE_BEGIN. The release store pairs with the writers' acquire load: a
 * writer that sees the new list sees it fully built. */
static int publish(TracepointObject *tp, AttachList *nl)
{
    if (nl && nl->n == 0) {
        PyMem_Free(nl);
        nl = NULL;
    }
    if (nl) {
        FieldSpec *f = &tp->fields[0];
        int lean = nl->n == 1 && !nl->a[0].filter && tp->nfields == 1 && f->size == 8 &&
                   (f->code == F_UINT || f->code == F_SINT) && nl->a[0].event_id < UST_EVENT_ID_EXTENDED;
        nl->u64_lean = !lean ? 0 : nl->a[0].channel->plain ? LEAN_PLAIN : nl->a[0].channel->vtid_only ? LEAN_VTID : 0;
        nl->u64_max = f->code == F_SINT ? (uint64_t)INT64_MAX : UINT64_MAX;
    }
    AttachList *old = atomic_exchange_explicit(&tp->attached, nl, memory_order_acq_rel);
    if (old) {
#ifdef Py_GIL_DISABLED
        (void)old; /* no grace period without the GIL: a writer may still read it */
#else
        old->retired = 1;
        if (old->readers == 0)
            attachlist_free(old);
#endif
    }
    return 0;
}

static AttachList *copy_list(TracepointObject *tp, ChannelObject *skip)
{
    AttachList *old = atomic_load_explicit(&tp->attached, memory_order_acquire);
    AttachList *nl = PyMem_Calloc(1, sizeof *nl);
    if (!nl)
        return (AttachList *)PyErr_NoMemory();
    if (old)
        for (int i = 0; i < old->n; i++) {
            if (old->a[i].channel == skip)
                continue;
            nl->a[nl->n] = old->a[i];
            Py_INCREF(nl->a[nl->n].channel);
            Py_XINCREF(nl->a[nl->n].filter);
            nl->n++;
        }
    return nl;
}

/* attach/detach copy the current list and publish a new one: two of them at
 * once would lose an update. With the GIL each runs whole; without it, a
 * per-object critical section serializes them (writers never take it). */
#ifdef Py_GIL_DISABLED
#define UPDATE_BEGIN(tp) Py_BEGIN_CRITICAL_SECTION(tp)
#define UPDATE_END Py_END_CRITICAL_SECTION()
#else
#define UPDATE_BEGIN(tp) {
#define UPDATE_END }
#endif

static PyObject *Tracepoint_attach(TracepointObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"channel", "event_id", "filter", NULL};
    ChannelObject *ch;
    unsigned int event_id;
    PyObject *filter = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!I|O", kwlist, &Channel_Type, &ch, &event_id, &filter))
        return NULL;
    if (filter != Py_None && !PyCallable_Check(filter))
        return PyErr_Format(PyExc_TypeError, "filter must be callable or None");
    int rc = -1;
    UPDATE_BEGIN(tp);
    AttachList *nl = copy_list(tp, ch);
    if (nl && nl->n >= MAX_ATTACH) {
        attachlist_free(nl);
        PyErr_Format(PyExc_ValueError, "%U: attached to too many channels (max %d)", tp->name, MAX_ATTACH);
    } else if (nl) {
        nl->a[nl->n].channel = (ChannelObject *)Py_NewRef(ch);
        nl->a[nl->n].event_id = event_id;
        nl->a[nl->n].filter = filter == Py_None ? NULL : Py_NewRef(filter);
        nl->n++;
        rc = publish(tp, nl);
    }
    UPDATE_END;
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tracepoint_detach(TracepointObject *tp, PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, &Channel_Type))
        return PyErr_Format(PyExc_TypeError, "detach() expects a Channel");
    int rc = -1;
    UPDATE_BEGIN(tp);
    AttachList *nl = copy_list(tp, (ChannelObject *)arg);
    if (nl)
        rc = publish(tp, nl);
    UPDATE_END;
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tracepoint_detach_all(TracepointObject *tp, PyObject *unused)
{
    int rc;
    UPDATE_BEGIN(tp);
    rc = publish(tp, NULL);
    UPDATE_END;
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tracepoint_get_enabled(TracepointObject *tp, void *c)
{
    return PyBool_FromLong(atomic_load_explicit(&tp->attached, memory_order_acquire) != NULL);
}
static PyObject *Tracepoint_get_name(TracepointObject *tp, void *c) { return Py_NewRef(tp->name); }
static PyObject *Tracepoint_get_owner(TracepointObject *tp, void *c) { return Py_NewRef(tp->owner); }
static PyObject *Tracepoint_get_channels(TracepointObject *tp, void *c)
{
    AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire);
    PyObject *l = PyList_New(0);
    if (!l || !al)
        return l;
    list_enter(al); /* a collection here may run Python that detaches */
    for (int i = 0; i < al->n; i++) {
        PyObject *t = Py_BuildValue("(OI)", al->a[i].channel, al->a[i].event_id);
        if (!t || PyList_Append(l, t) < 0) {
            Py_XDECREF(t);
            Py_CLEAR(l);
            break;
        }
        Py_DECREF(t);
    }
    list_leave(al);
    return l;
}

static void Tracepoint_dealloc(TracepointObject *tp)
{
    for (int i = 0; i < tp->nfields; i++) {
        Py_XDECREF(tp->fields[i].name);
        Py_XDECREF(tp->fields[i].labels);
    }
    Py_XDECREF(tp->name);
    Py_XDECREF(tp->owner);
    /* No call is running: each holds a reference to the tracepoint. */
    AttachList *al = atomic_exchange(&tp->attached, NULL);
    if (al)
        attachlist_free(al);
    Py_TYPE(tp)->tp_free((PyObject *)tp);
}

static PyObject *Tracepoint_repr(TracepointObject *tp)
{
    return PyUnicode_FromFormat("<ust.Tracepoint %U (%s)>", tp->name,
                                atomic_load(&tp->attached) ? "enabled" : "disabled");
}

static PyMethodDef Tracepoint_methods[] = {
    {"attach", (PyCFunction)(void (*)(void))Tracepoint_attach, METH_VARARGS | METH_KEYWORDS,
     "attach(channel, event_id, filter=None): record into channel"},
    {"detach", (PyCFunction)Tracepoint_detach, METH_O, "detach(channel): stop recording into channel"},
    {"detach_all", (PyCFunction)Tracepoint_detach_all, METH_NOARGS, "stop recording anywhere"},
    {NULL},
};

static PyObject *Tracepoint_get_raises(TracepointObject *tp, void *c) { return PyBool_FromLong(tp->raises); }
static int Tracepoint_set_raises(TracepointObject *tp, PyObject *v, void *c)
{
    int on = v ? PyObject_IsTrue(v) : 0;
    if (on < 0)
        return -1;
    tp->raises = on;
    return 0;
}

static PyGetSetDef Tracepoint_getset[] = {
    {"raises", (getter)Tracepoint_get_raises, (setter)Tracepoint_set_raises,
     "arguments that do not fit raise, whatever the strict mode (for ust's own callers with a slow path)", NULL},
    {"enabled", (getter)Tracepoint_get_enabled, NULL, "recording into at least one channel", NULL},
    {"name", (getter)Tracepoint_get_name, NULL, NULL, NULL},
    {"handle", (getter)Tracepoint_get_owner, NULL, "the Python-side declaration", NULL},
    {"channels", (getter)Tracepoint_get_channels, NULL, "[(channel, event_id)]", NULL},
    {NULL},
};

PyTypeObject Tracepoint_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ust.Tracepoint",
    .tp_basicsize = sizeof(TracepointObject),
    .tp_dealloc = (destructor)Tracepoint_dealloc,
    .tp_repr = (reprfunc)Tracepoint_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A typed tracepoint: call it with the field values to record an event.",
    .tp_vectorcall_offset = offsetof(TracepointObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = Tracepoint_new,
    .tp_methods = Tracepoint_methods,
    .tp_getset = Tracepoint_getset,
};
