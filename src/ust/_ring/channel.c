/* ======================================================================
 * Channel: the writer side of one channel (a Buffer per CPU + contexts)
 * ====================================================================== */

#include "channel.h"

/* The C context list of a channel: each item is a kind name ("vpid", ...) or,
 * for a perf counter, a (type, config) pair of perf_event_attr. The values
 * are written in this order (the metadata declares the same order). */
static int parse_c_contexts(PyObject *context, uint8_t *kinds, uint8_t *slots, int *nkinds, int *needs_ids,
                            uint32_t *fixed)
{
    PyObject *it = PyObject_GetIter(context), *item;
    if (!it)
        return -1;
    while ((item = PyIter_Next(it))) {
        int kind = -1, slot = 0;
        if (PyUnicode_Check(item)) {
            const char *s = PyUnicode_AsUTF8(item);
            for (int k = 0; s && k < K_PERF; k++)
                if (!strcmp(s, ctx_kinds[k].name))
                    kind = k;
        } else if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2) {
            unsigned int type;
            unsigned long long config;
            if (PyArg_ParseTuple(item, "IK", &type, &config)) {
                slot = perf_slot(type, config);
                if (slot < 0) {
                    PyErr_Format(PyExc_ValueError, "at most %d different perf counters", MAX_PERF);
                    Py_DECREF(item);
                    Py_DECREF(it);
                    return -1;
                }
                kind = K_PERF;
            }
            PyErr_Clear();
        }
        if (kind < 0 || *nkinds == MAX_C_CONTEXTS) {
            if (kind < 0)
                PyErr_Format(PyExc_ValueError, "unknown C context field %R", item);
            else
                PyErr_Format(PyExc_ValueError, "at most %d context fields", MAX_C_CONTEXTS);
            Py_DECREF(item);
            Py_DECREF(it);
            return -1;
        }
        Py_DECREF(item);
        kinds[*nkinds] = (uint8_t)kind;
        slots[*nkinds] = (uint8_t)slot;
        (*nkinds)++;
        *fixed += ctx_kinds[kind].size;
        if (kind == K_PID || kind == K_TID || (kind >= K_VUID && kind <= K_UTS_NS))
            *needs_ids = 1;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static int Channel_init(ChannelObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"buffers", "context", "py_context", NULL};
    PyObject *buffers, *context = NULL, *py_context = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO", kwlist, &buffers, &context, &py_context))
        return -1;
    if (self->bufs != NULL) { /* tracepoints attached to it read its buffers and `plain` without a lock */
        PyErr_SetString(PyExc_TypeError, "a Channel is initialized once");
        return -1;
    }
    PyObject *tup = PySequence_Tuple(buffers);
    if (!tup)
        return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(tup);
    if (n == 0) {
        Py_DECREF(tup);
        PyErr_SetString(PyExc_ValueError, "a channel needs at least one buffer");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyObject_TypeCheck(PyTuple_GET_ITEM(tup, i), &Buffer_Type)) {
            Py_DECREF(tup);
            PyErr_SetString(PyExc_TypeError, "buffers must be ust._ring.Buffer objects");
            return -1;
        }
    uint8_t kinds[MAX_C_CONTEXTS], slots[MAX_C_CONTEXTS];
    int nkinds = 0, needs_ids = 0;
    uint32_t fixed = 0;
    if (context && parse_c_contexts(context, kinds, slots, &nkinds, &needs_ids, &fixed) < 0) {
        Py_DECREF(tup);
        return -1;
    }
    PyObject *pyc = py_context ? PySequence_Tuple(py_context) : PyTuple_New(0);
    if (!pyc) {
        Py_DECREF(tup);
        return -1;
    }
    if (PyTuple_GET_SIZE(pyc) > MAX_PY_CONTEXTS) { /* the call keeps their values on its stack */
        Py_DECREF(tup);
        Py_DECREF(pyc);
        PyErr_Format(PyExc_ValueError, "at most %d Python contexts per channel", MAX_PY_CONTEXTS);
        return -1;
    }
    BufferObject **bufs = PyMem_Calloc((size_t)n, sizeof *bufs);
    if (!bufs) {
        Py_DECREF(tup);
        Py_DECREF(pyc);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        bufs[i] = (BufferObject *)PyTuple_GET_ITEM(tup, i);
    Py_XSETREF(self->buffers, tup);
    Py_XSETREF(self->py_contexts, pyc);
    PyMem_Free(self->bufs);
    self->bufs = bufs;
    self->nbufs = n;
    memcpy(self->ctx_kind, kinds, (size_t)nkinds);
    memcpy(self->ctx_perf_slot, slots, (size_t)nkinds);
    self->n_ctx = nkinds;
    self->ctx_needs_ids = needs_ids;
    self->ctx_fixed_size = fixed;
    self->plain = nkinds == 0 && fixed == 0 && PyTuple_GET_SIZE(pyc) == 0;
    self->vtid_only = nkinds == 1 && kinds[0] == K_VTID && fixed == 4 && PyTuple_GET_SIZE(pyc) == 0;
    return 0;
}

static void Channel_dealloc(ChannelObject *self)
{
    Py_XDECREF(self->buffers);
    Py_XDECREF(self->py_contexts);
    PyMem_Free(self->bufs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Channel_get_buffers(ChannelObject *self, void *c) { return Py_NewRef(self->buffers); }

static PyGetSetDef Channel_getset[] = {{"buffers", (getter)Channel_get_buffers, NULL, NULL, NULL}, {NULL}};

PyTypeObject Channel_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ust._ring.Channel",
    .tp_basicsize = sizeof(ChannelObject),
    .tp_dealloc = (destructor)Channel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Channel(buffers, context=(), py_context=()): the writer side of one channel.",
    .tp_init = (initproc)Channel_init,
    .tp_new = PyType_GenericNew,
    .tp_getset = Channel_getset,
};

