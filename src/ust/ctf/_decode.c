/*
 * ust.ctf._decode -- the C half of `ust view`'s text output.
 *
 * Decoding stays in generated Python (ust/ctf/_codegen.py, _fasttext.py).
 * What is left per line after decoding -- a timestamp, a delta, joining and
 * UTF-8 encoding -- costs about as much again in Python as decoding itself,
 * so it is done here, one call per batch of lines:
 *
 *   format_lines(keys, texts, origin, flags, prev) -> (bytes, prev)
 *
 *   keys   list of int: clock values in cycles (flags & CYCLES) or
 *          nanoseconds from the Epoch minus `origin`
 *   texts  list of str: each line after its timestamp and delta, without '\n';
 *          lone surrogates (undecodable trace bytes) are written back as the
 *          original bytes (surrogateescape)
 *   origin int added to each key to get ns from the Epoch (time modes)
 *   flags  CYCLES 1, SECONDS 2, GMT 4, DATE 8, DELTA 16, NAMES_HEADER 32
 *   prev   the key (ns, or cycles) of the previous line printed, or None
 *
 * The output is byte-identical to the pure-Python fallback in _fasttext.py
 * (tests run both). Returns NULL with OverflowError when a key does not fit
 * in 64 bits: the caller then uses the fallback.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define F_CYCLES 1
#define F_SECONDS 2
#define F_GMT 4
#define F_DATE 8
#define F_DELTA 16
#define F_NAMES_HEADER 32

/* ------------------------------------------------------------------------ */
/* growable output buffer                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

static int buf_reserve_slow(buf_t *b, size_t extra)
{
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + extra)
        cap *= 2;
    char *d = PyMem_Realloc(b->data, cap);
    if (!d) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

static inline int buf_reserve(buf_t *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    return buf_reserve_slow(b, extra);
}

static inline void buf_put(buf_t *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* n zero-padded to `width` digits (n >= 0), appended; returns digits written */
static inline void put_uint(buf_t *b, uint64_t n, int width)
{
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (24 - i < width)
        tmp[--i] = '0';
    buf_put(b, tmp + i, (size_t)(24 - i));
}

/* ------------------------------------------------------------------------ */
/* time of day, cached per second                                           */
/* ------------------------------------------------------------------------ */

typedef struct {
    int64_t sec;
    int valid;
    char text[64];
    size_t len;
} sec_cache_t;

static int sec_text(sec_cache_t *c, int64_t sec, int flags)
{
    if (c->valid && c->sec == sec)
        return 0;
    if (flags & F_SECONDS) {
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "%lld", (long long)sec);
        memcpy(c->text, tmp, (size_t)n);
        c->len = (size_t)n;
    } else {
        struct tm tm;
        time_t t = (time_t)sec;
        struct tm *r = (flags & F_GMT) ? gmtime_r(&t, &tm) : localtime_r(&t, &tm);
        if (!r) {
            PyErr_SetString(PyExc_OverflowError, "timestamp out of range");
            return -1;
        }
        c->len = strftime(c->text, sizeof c->text, (flags & F_DATE) ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm);
    }
    c->sec = sec;
    c->valid = 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* format_lines                                                             */
/* ------------------------------------------------------------------------ */

static int put_text(buf_t *b, PyObject *s)
{
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "texts must be str");
        return -1;
    }
    if (PyUnicode_IS_ASCII(s)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(s);
        if (buf_reserve(b, (size_t)n + 1) < 0)
            return -1;
        buf_put(b, (const char *)PyUnicode_DATA(s), (size_t)n);
        return 0;
    }
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u) {
        if (buf_reserve(b, (size_t)n + 1) < 0)
            return -1;
        buf_put(b, u, (size_t)n);
        return 0;
    }
    /* lone surrogates: the bytes the trace had */
    PyErr_Clear();
    PyObject *raw = PyUnicode_AsEncodedString(s, "utf-8", "surrogateescape");
    if (!raw)
        return -1;
    n = PyBytes_GET_SIZE(raw);
    if (buf_reserve(b, (size_t)n + 1) < 0) {
        Py_DECREF(raw);
        return -1;
    }
    buf_put(b, PyBytes_AS_STRING(raw), (size_t)n);
    Py_DECREF(raw);
    return 0;
}

static PyObject *format_lines(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *keys, *texts, *origin_o, *prev_o;
    int flags;
    if (!PyArg_ParseTuple(args, "O!O!OiO", &PyList_Type, &keys, &PyList_Type, &texts, &origin_o, &flags, &prev_o))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(texts) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and texts differ in length");
        return NULL;
    }
    int cycles = flags & F_CYCLES, delta = flags & F_DELTA, nh = flags & F_NAMES_HEADER;
    int64_t origin = 0;
    if (!cycles) {
        origin = PyLong_AsLongLong(origin_o);
        if (origin == -1 && PyErr_Occurred())
            return NULL;
    }
    int have_prev = prev_o != Py_None;
    uint64_t prev_c = 0;
    int64_t prev_ns = 0;
    if (have_prev) {
        if (cycles) {
            prev_c = PyLong_AsUnsignedLongLong(prev_o);
        } else {
            prev_ns = PyLong_AsLongLong(prev_o);
        }
        if (PyErr_Occurred())
            return NULL;
    }
    buf_t b = {NULL, 0, 0};
    sec_cache_t sc = {0, 0, {0}, 0};
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        if (buf_reserve(&b, 256) < 0)
            goto fail;
        if (cycles) {
            uint64_t c = PyLong_AsUnsignedLongLong(k);
            if (c == (uint64_t)-1 && PyErr_Occurred())
                goto fail;
            if (nh) {
                buf_put(&b, "timestamp = ", 12);
                put_uint(&b, c, 20);
                buf_put(&b, ", ", 2);
                if (delta) {
                    if (have_prev) {
                        buf_put(&b, "delta = +", 9);
                        put_uint(&b, c - prev_c, 12);
                        buf_put(&b, ", ", 2);
                    } else {
                        buf_put(&b, "delta = +\?\?\?\?\?\?\?\?\?\?\?\?, ", 23);
                    }
                }
            } else {
                buf_put(&b, "[", 1);
                put_uint(&b, c, 20);
                buf_put(&b, "] ", 2);
                if (delta) {
                    if (have_prev) {
                        buf_put(&b, "(+", 2);
                        put_uint(&b, c - prev_c, 12);
                        buf_put(&b, ") ", 2);
                    } else {
                        buf_put(&b, "(+\?\?\?\?\?\?\?\?\?\?\?\?) ", 16);
                    }
                }
            }
            prev_c = c;
        } else {
            int64_t key = PyLong_AsLongLong(k);
            if (key == -1 && PyErr_Occurred())
                goto fail;
            int64_t ns;
            if (__builtin_add_overflow(key, origin, &ns)) {
                PyErr_SetString(PyExc_OverflowError, "timestamp out of range");
                goto fail;
            }
            int64_t sec = ns / 1000000000, frac = ns % 1000000000;
            if (frac < 0) {
                frac += 1000000000;
                sec -= 1;
            }
            if (sec_text(&sc, sec, flags) < 0)
                goto fail;
            if (nh)
                buf_put(&b, "timestamp = ", 12);
            else
                buf_put(&b, "[", 1);
            buf_put(&b, sc.text, sc.len);
            buf_put(&b, ".", 1);
            put_uint(&b, (uint64_t)frac, 9);
            buf_put(&b, nh ? ", " : "] ", 2);
            if (delta) {
                if (nh)
                    buf_put(&b, "delta = ", 8);
                else
                    buf_put(&b, "(", 1);
                if (have_prev && ns >= prev_ns) {
                    int64_t d = ns - prev_ns;
                    buf_put(&b, "+", 1);
                    put_uint(&b, (uint64_t)(d / 1000000000), 1);
                    buf_put(&b, ".", 1);
                    put_uint(&b, (uint64_t)(d % 1000000000), 9);
                } else if (have_prev) {
                    /* cannot happen in time order; keep the Python fallback's text */
                    int64_t d = ns - prev_ns;
                    int64_t q = d / 1000000000, r = d % 1000000000;
                    if (r < 0) {
                        r += 1000000000;
                        q -= 1;
                    }
                    char tmp[48];
                    int m = snprintf(tmp, sizeof tmp, "+%lld.%09lld", (long long)q, (long long)r);
                    buf_put(&b, tmp, (size_t)m);
                } else {
                    buf_put(&b, "+?.\?\?\?\?\?\?\?\?\?", 12);
                }
                buf_put(&b, nh ? ", " : ") ", 2);
            }
            prev_ns = ns;
        }
        have_prev = 1;
        if (put_text(&b, PyList_GET_ITEM(texts, i)) < 0)
            goto fail;
        b.data[b.len++] = '\n';
    }
    PyObject *out = PyBytes_FromStringAndSize(b.data ? b.data : "", (Py_ssize_t)b.len);
    PyMem_Free(b.data);
    if (!out)
        return NULL;
    PyObject *prev_out;
    if (!have_prev) {
        prev_out = Py_NewRef(prev_o);
    } else if (cycles) {
        prev_out = PyLong_FromUnsignedLongLong(prev_c);
    } else {
        prev_out = PyLong_FromLongLong(prev_ns);
    }
    if (!prev_out) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(NN)", out, prev_out);
fail:
    PyMem_Free(b.data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"format_lines", format_lines, METH_VARARGS,
     "format_lines(keys, texts, origin, flags, prev) -> (bytes, prev): timestamped lines of `ust view`."},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m)
{
    tzset();
    if (PyModule_AddIntConstant(m, "CYCLES", F_CYCLES) < 0 || PyModule_AddIntConstant(m, "SECONDS", F_SECONDS) < 0 ||
        PyModule_AddIntConstant(m, "GMT", F_GMT) < 0 || PyModule_AddIntConstant(m, "DATE", F_DATE) < 0 ||
        PyModule_AddIntConstant(m, "DELTA", F_DELTA) < 0 ||
        PyModule_AddIntConstant(m, "NAMES_HEADER", F_NAMES_HEADER) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ust.ctf._decode", "C half of ust view's text output (see _decode.c).", 0, methods, slots,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__decode(void)
{
    return PyModuleDef_Init(&module);
}
