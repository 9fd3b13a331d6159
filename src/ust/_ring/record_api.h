/* The C entry points of ust._ring._ring for ust's other extensions (ust._ring._probes), published as the
 * capsule "ust._ring._ring._record_api". They record exactly what calling the tracepoint object would
 * (filters, contexts, lost counts, the misfit policy), without the Python call protocol and, for
 * integers, without an int object. The caller holds the GIL. */
#ifndef UST_RECORD_API_H
#define UST_RECORD_API_H

#include <Python.h>
#include <stdint.h>

#define UST_RECORD_API_CAPSULE "ust._ring._ring._record_api"
#define UST_RECORD_API_VERSION 1

struct ust_record_api {
    int version; /* UST_RECORD_API_VERSION: a caller built against another layout must not use it */
    /* tp(*args): 0, or -1 with an exception set (only when the tracepoint raises on a misfit). */
    int (*record)(PyObject *tp, PyObject *const *args, Py_ssize_t nargs);
    /* tp(value) for a tracepoint with one 64-bit integer field: as record() with int(value). */
    int (*record_u64)(PyObject *tp, uint64_t value);
};

#endif
