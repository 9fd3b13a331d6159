/*
 * ust.mark's dispatch: mark(provider, name, fmt, *args) finds the marker's
 * tracepoint and calls it with args, for about the cost of the tracepoint call.
 *
 * The marker for a (provider, name, fmt) triple is declared once, by the
 * Python function ust.instrument.marker.marker (the format is parsed there).
 * This module only remembers the answer per call site: at a call site the
 * three strings are the same objects at every call (constants), so a small
 * direct-mapped cache keyed by their identities finds the tracepoint without
 * hashing or comparing a string. An entry holds references to its three key
 * objects, so an address in the cache always names the object it was stored
 * for: equal identities imply equal strings and so the same tracepoint.
 * Call sites that build their strings at each call miss and take the Python
 * path (a dict lookup by value), as all calls did before.
 *
 * Concurrency: every function here runs holding the GIL (the module does not
 * declare itself free-threading safe; ust.instrument.marker does not import it
 * on a free-threaded interpreter). The GIL may be released inside the Python
 * slow path and inside the tracepoint call, so an entry is re-read after them,
 * and the tracepoint is kept alive by its own reference across the call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MARK_CACHE_SLOTS 512 /* a power of two */

struct mark_slot {
    PyObject *provider, *name, *fmt; /* strong references, or NULL when empty */
    PyObject *tracepoint;            /* strong reference */
};

static struct mark_slot mark_cache[MARK_CACHE_SLOTS];
static PyObject *declare_marker; /* marker(provider, name, fmt) -> tracepoint; set by set_resolver */

/* The slot of a key: a mix of the three addresses (objects are 16-byte aligned). */
static inline struct mark_slot *slot_of(PyObject *provider, PyObject *name, PyObject *fmt)
{
    uintptr_t h = ((uintptr_t)provider >> 4) * 0x9E3779B1u;
    h ^= ((uintptr_t)name >> 4) * 0x85EBCA77u;
    h ^= ((uintptr_t)fmt >> 4) * 0xC2B2AE3Du;
    h ^= h >> 15;
    return &mark_cache[h & (MARK_CACHE_SLOTS - 1)];
}

/* Contract: returns a new reference to the tracepoint of (provider, name, fmt),
 * from the cache or from the Python resolver (then cached); NULL with an
 * exception set if the resolver raised. */
static PyObject *find_tracepoint(PyObject *provider, PyObject *name, PyObject *fmt)
{
    struct mark_slot *s = slot_of(provider, name, fmt);
    if (s->fmt == fmt && s->name == name && s->provider == provider) {
        Py_INCREF(s->tracepoint);
        return s->tracepoint;
    }
    if (declare_marker == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ust._ring._mark: no marker resolver set");
        return NULL;
    }
    PyObject *resolver = declare_marker; /* own a reference: set_resolver may replace it meanwhile */
    Py_INCREF(resolver);
    PyObject *tp = PyObject_CallFunctionObjArgs(resolver, provider, name, fmt, NULL);
    Py_DECREF(resolver);
    if (tp == NULL)
        return NULL;
    /* The resolver ran Python code: another thread may have filled the slot
     * meanwhile. Replace whatever is there; release the old references last,
     * once the slot is consistent (a release may run a destructor). */
    struct mark_slot old = *s;
    Py_INCREF(provider);
    Py_INCREF(name);
    Py_INCREF(fmt);
    Py_INCREF(tp);
    s->provider = provider;
    s->name = name;
    s->fmt = fmt;
    s->tracepoint = tp;
    Py_XDECREF(old.provider);
    Py_XDECREF(old.name);
    Py_XDECREF(old.fmt);
    Py_XDECREF(old.tracepoint);
    return tp;
}

/* mark(provider, name, fmt, *args): record a marker event (see the module doc). */
static PyObject *mark(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 3) {
        PyErr_SetString(PyExc_TypeError, "mark() takes provider, name, format and the values");
        return NULL;
    }
    PyObject *tp = find_tracepoint(args[0], args[1], args[2]);
    if (tp == NULL)
        return NULL;
    PyObject *result = PyObject_Vectorcall(tp, args + 3, (size_t)(nargs - 3), NULL);
    Py_DECREF(tp);
    return result;
}

/* set_resolver(callable): the Python function that declares a marker's tracepoint. */
static PyObject *set_resolver(PyObject *module, PyObject *callable)
{
    (void)module;
    if (!PyCallable_Check(callable)) {
        PyErr_SetString(PyExc_TypeError, "set_resolver() needs a callable");
        return NULL;
    }
    Py_INCREF(callable);
    Py_XSETREF(declare_marker, callable);
    Py_RETURN_NONE;
}

static PyMethodDef mark_methods[] = {
    {"mark", (PyCFunction)(void (*)(void))mark, METH_FASTCALL,
     "mark(provider, name, fmt, *args): record a printf-style marker event"},
    {"set_resolver", set_resolver, METH_O, "set the function declaring a marker's tracepoint"},
    {NULL},
};

static struct PyModuleDef mark_module = {PyModuleDef_HEAD_INIT, "ust._ring._mark",
                                         "ust.mark's per-call-site dispatch.", -1, mark_methods};

PyMODINIT_FUNC PyInit__mark(void)
{
    return PyModule_Create(&mark_module);
}
