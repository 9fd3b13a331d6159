/* ======================================================================
 * Module
 * ====================================================================== */

#include "module.h"
#include "shm.h"
#include "process.h"
#include "contexts.h"
#include "frontend.h"
#include "reader.h"
#include "channel.h"
#include "tracepoint.h"
#include "layout.h"

struct ring_module_state ring_state;

/* drain_wait(buffers, fds, wakeup_fd, stop_fd, timeout, poll_period, watch_fd, watch_size)
 *     -> [(packets, bytes, errno), ...]
 *
 * A consumer's whole loop, without the GIL (the drain engine of
 * ust.consumer, in the embedded session and in ust-consumerd): drain every
 * stream to its file; when none has a complete packet, announce that the
 * reader sleeps (reader_sleeping, then a re-check: Dekker pairing with
 * deliver()) and sleep on wakeup_fd, the eventfd writers write when they
 * complete a packet, at most poll_period seconds (the read timer: a safety
 * net). Return when `timeout` seconds have passed (the caller's switch
 * timer), stop_fd is readable (looked at after every drain pass, busy or
 * not), or the file watch_fd (-1: none) no longer has watch_size bytes (the
 * event-id file grew: the caller rewrites the metadata).
 * The embedded session's drain thread used to need the GIL half a dozen
 * times per wake-up, each a wait of up to the interpreter's switch interval
 * while the application's threads ran Python: at a few M events/s its
 * buffers overflowed. Now it needs it only when this returns. A stream whose
 * write fails keeps its packet (errno in its tuple) and is not retried
 * before the next call. */
static PyObject *mod_drain_wait(PyObject *m, PyObject *args)
{
    PyObject *bufs_obj, *fds_obj;
    int wakeup_fd, stop_fd, watch_fd = -1;
    double timeout, poll_period = 0.2;
    long long watch_size = -1;
    if (!PyArg_ParseTuple(args, "OOiid|diL", &bufs_obj, &fds_obj, &wakeup_fd, &stop_fd, &timeout, &poll_period,
                          &watch_fd, &watch_size))
        return NULL;
    PyObject *bufs = PySequence_Fast(bufs_obj, "buffers must be a sequence"); /* holds the buffers */
    if (!bufs)
        return NULL;
    PyObject *fds = PySequence_Fast(fds_obj, "fds must be a sequence");
    if (!fds) {
        Py_DECREF(bufs);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(bufs);
    PyObject *result = NULL;
    struct stream_state {
        BufferObject *b;
        int fd, err;
        unsigned long long packets, bytes;
    } *st = NULL;
    if (PySequence_Fast_GET_SIZE(fds) != n) {
        PyErr_SetString(PyExc_ValueError, "one fd per buffer");
        goto out;
    }
    st = PyMem_Calloc((size_t)(n ? n : 1), sizeof *st);
    if (!st) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(bufs, i);
        if (!PyObject_TypeCheck(o, &Buffer_Type)) {
            PyErr_SetString(PyExc_TypeError, "buffers must be ust._ring.Buffer objects");
            goto out;
        }
        st[i].b = (BufferObject *)o;
        if (st[i].b->holding) {
            PyErr_SetString(PyExc_RuntimeError, "drain_wait() while a packet is held: call put_subbuf() first");
            goto out;
        }
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fds, i));
        if (fd == -1 && PyErr_Occurred())
            goto out;
        if (fd < 0 || fd > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "bad file descriptor %ld", fd);
            goto out;
        }
        st[i].fd = (int)fd;
    }
    Py_BEGIN_ALLOW_THREADS
    uint64_t deadline = clock_now() + (uint64_t)(timeout > 0 ? timeout * 1e9 : 0);
    uint64_t period_ms = (uint64_t)(poll_period > 0.001 ? poll_period * 1e3 : 1);
    int stopped = 0;
    while (!stopped) {
        struct stat wst;
        if (watch_fd >= 0 && fstat(watch_fd, &wst) == 0 && (long long)wst.st_size != watch_size)
            break;
        int got = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned long long before = st[i].packets;
            if (!st[i].err)
                st[i].err = drain_stream(st[i].b, st[i].fd, 0, -1, &st[i].packets, &st[i].bytes);
            got |= st[i].packets != before;
        }
        uint64_t now = clock_now();
        if (now >= deadline)
            break;
        if (got) {
            /* Busy streams never reach the sleep below: look at stop_fd here
             * too, so that a host pausing this loop (ust.consumer.drain's
             * Drainer.paused) waits for one drain pass, not the whole timeout.
             * One poll per pass, and a pass moved at least one packet. */
            struct pollfd stop_pfd = {.fd = stop_fd, .events = POLLIN};
            if (stop_fd >= 0 && poll(&stop_pfd, 1, 0) > 0)
                stopped = 1;
            continue;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            atomic_store_explicit(&st[i].b->h->reader_sleeping, 1, memory_order_seq_cst);
        for (Py_ssize_t i = 0; i < n && !got; i++) /* a packet may have completed before we said so */
            if (!st[i].err) {
                unsigned long long before = st[i].packets;
                st[i].err = drain_stream(st[i].b, st[i].fd, 0, -1, &st[i].packets, &st[i].bytes);
                got = st[i].packets != before;
            }
        if (!got) {
            struct pollfd pfd[2] = {{.fd = wakeup_fd, .events = POLLIN}, {.fd = stop_fd, .events = POLLIN}};
            uint64_t left_ms = (deadline - now + 999999) / 1000000;
            if (left_ms > period_ms)
                left_ms = period_ms;
            int r = poll(pfd, stop_fd >= 0 ? 2 : 1, (int)left_ms);
            if (r > 0 && (pfd[0].revents & POLLIN)) {
                uint64_t value;
                ssize_t rr = read(wakeup_fd, &value, sizeof value); /* non-blocking eventfd */
                (void)rr;
            }
            if (r > 0 && stop_fd >= 0 && pfd[1].revents)
                stopped = 1;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            atomic_store_explicit(&st[i].b->h->reader_sleeping, 0, memory_order_seq_cst);
    }
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    if (!result)
        goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = Py_BuildValue("(KKi)", st[i].packets, st[i].bytes, st[i].err);
        if (!t) {
            Py_CLEAR(result);
            goto out;
        }
        PyList_SET_ITEM(result, i, t);
    }
out:
    PyMem_Free(st);
    Py_DECREF(bufs);
    Py_DECREF(fds);
    return result;
}

static PyObject *mod_clock_now(PyObject *m, PyObject *unused) { return PyLong_FromUnsignedLongLong(clock_now()); }

static PyObject *mod_refresh(PyObject *m, PyObject *unused)
{
    refresh_process_facts();
    atomic_fetch_add(&fork_generation, 1);
    atomic_fetch_add(&facts_epoch, 1);
    Py_RETURN_NONE;
}

static PyObject *mod_set_strict(PyObject *m, PyObject *arg)
{
    int was = ring_state.strict_mode;
    if (arg != Py_None) {
        int on = PyObject_IsTrue(arg);
        if (on < 0)
            return NULL;
        ring_state.strict_mode = on;
    }
    return PyBool_FromLong(was);
}

static PyMethodDef module_methods[] = {
    {"clock_now", mod_clock_now, METH_NOARGS, "CLOCK_MONOTONIC in ns, the trace clock"},
    {"context_value", mod_context_value, METH_O, "context_value(name): this thread's value of a C context"},
    {"process_changed", mod_process_changed, METH_NOARGS,
     "credentials or namespaces changed: re-read them at the next event"},
    {"perf_value", mod_perf_value, METH_VARARGS, "perf_value(type, config): this thread's count"},
    {"perf_check", mod_perf_check, METH_VARARGS, "perf_check(type, config): raise OSError if it cannot count"},
    {"drain_at_exit", mod_drain_at_exit, METH_VARARGS,
     "drain_at_exit(buffer, fd): write the buffer out to fd (which it then owns) once the interpreter is gone"},
    {"set_strict", mod_set_strict, METH_O,
     "set_strict(on) -> bool: the previous mode (None: only read it); whether a call whose arguments do not fit raises (else: counted, warned once)"},
    {"drain_wait", mod_drain_wait, METH_VARARGS,
     "drain_wait(buffers, fds, wakeup_fd, stop_fd, timeout, poll_period=0.2, watch_fd=-1, watch_size=-1) -> "
     "[(packets, bytes, errno), ...]: drain the streams to their files and sleep on wakeup_fd (at most poll_period "
     "s) when none has a complete packet, until timeout s have passed, stop_fd (-1: none) is readable or the file "
     "watch_fd no longer has watch_size bytes; all without the GIL"},
    {"refresh_process_facts", mod_refresh, METH_NOARGS, "re-read pid and process name (after a rename)"},
    {NULL},
};

/* CONTEXT_KINDS: the C context names, in the order they are written */
static int add_context_kinds(PyObject *m)
{
    PyObject *t = PyTuple_New(K_PERF);
    if (!t)
        return -1;
    for (int k = 0; k < K_PERF; k++) {
        PyObject *s = PyUnicode_FromString(ctx_kinds[k].name);
        if (!s) {
            Py_DECREF(t);
            return -1;
        }
        PyTuple_SET_ITEM(t, k, s);
    }
    int r = PyModule_AddObjectRef(m, "CONTEXT_KINDS", t);
    Py_DECREF(t);
    return r;
}

/* Py_mod_exec: fill the module (multi-phase initialization, PEP 489). */
static int ring_exec(PyObject *m)
{
    if (PyType_Ready(&Buffer_Type) < 0 || PyType_Ready(&Channel_Type) < 0 || PyType_Ready(&Tracepoint_Type) < 0)
        return -1;
    refresh_process_facts();
    test_pause_configure();
    if (!ring_state.atfork_installed) {
        pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
        ring_state.atfork_installed = 1;
    }
    if (PyModule_AddObjectRef(m, "Buffer", (PyObject *)&Buffer_Type) < 0 ||
        PyModule_AddObjectRef(m, "Channel", (PyObject *)&Channel_Type) < 0 ||
        PyModule_AddObjectRef(m, "Tracepoint", (PyObject *)&Tracepoint_Type) < 0 ||
        PyModule_AddIntConstant(m, "PACKET_HEADER_SIZE", (long)UST_PACKET_HEADER_SIZE) < 0 ||
        ust_layout_export(m) < 0 || add_context_kinds(m) < 0)
        return -1;
    PyObject *api = PyCapsule_New(&record_api, UST_RECORD_API_CAPSULE, NULL);
    int api_rc = api ? PyModule_AddObjectRef(m, "_record_api", api) : -1;
    Py_XDECREF(api);
    if (api_rc < 0)
        return -1;
    if (!ring_state.argument_warning)
        ring_state.argument_warning = PyErr_NewExceptionWithDoc(
            "ust.TracepointArgumentWarning",
            "An enabled tracepoint was called with arguments that do not fit its fields: the event was not "
            "recorded, and was counted as discarded.",
            PyExc_RuntimeWarning, NULL);
    if (!ring_state.argument_warning ||
        PyModule_AddObjectRef(m, "TracepointArgumentWarning", ring_state.argument_warning) < 0)
        return -1;
    return probes_module_init();
}

static PyModuleDef_Slot ring_slots[] = {
    {Py_mod_exec, ring_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* static types and process-wide state (struct ring_module_state) */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef ring_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ust._ring._ring",
    .m_doc = "The ring buffer and the tracepoint call.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = ring_slots,
};

PyMODINIT_FUNC PyInit__ring(void) { return PyModuleDef_Init(&ring_module); }
