/* The C entry points of ust._ring._ring for ust's other extensions (ust._ring._probes), published as the
 * capsule "ust._ring._ring._record_api". They record exactly what calling the tracepoint object would
 * (filters, contexts, lost counts, the misfit policy), without the Python call protocol and, for
 * integers, without an int object. The caller holds the GIL. */
#ifndef UST_RECORD_API_H
#define UST_RECORD_API_H

#include <Python.h>
#include <stdint.h>

#define UST_RECORD_API_CAPSULE "ust._ring._ring._record_api"
#define UST_RECORD_API_VERSION 3

/* One field value already converted by the caller (record_values). */
enum ust_value_kind { UST_V_INT64 = 1, UST_V_DOUBLE, UST_V_BOOL, UST_V_STRING, UST_V_BYTES };
struct ust_value {
    int kind;           /* enum ust_value_kind: must match the field's type, else the event takes the general path */
    union {
        int64_t i;      /* UST_V_INT64; UST_V_BOOL: 0 or 1 */
        double d;       /* UST_V_DOUBLE */
    };
    const char *ptr;    /* UST_V_STRING (UTF-8, cut at a NUL as every string field), UST_V_BYTES */
    Py_ssize_t len;
};

struct ust_record_api {
    int version; /* UST_RECORD_API_VERSION: a caller built against another layout must not use it */
    /* tp(*args): 0, or -1 with an exception set (only when the tracepoint raises on a misfit). */
    int (*record)(PyObject *tp, PyObject *const *args, Py_ssize_t nargs);
    /* tp(value) for a tracepoint with one 64-bit integer field: as record() with int(value). */
    int (*record_u64)(PyObject *tp, uint64_t value);
    /* tp(*values) with the values converted by the caller, straight into the ring (no Python object is
     * read: the caller keeps the strings' and bytes' owners alive). 0: recorded (or tp is not enabled);
     * 1: not done, call record() with the objects instead — a filter or a Python context to run, several
     * channels, or a kind that does not match its field. Never sets an exception. */
    int (*record_values)(PyObject *tp, const struct ust_value *values, int nvalues);
    /* record_u64's lean path alone: tp(value) straight into the ring when tp has one 8-byte integer field
     * that value fits, one channel without contexts and no filter. 0: recorded (or tp is not enabled); 1:
     * not done, call record_u64(). Runs no Python, never sets an exception, touches no exception state:
     * the caller need not hold a reference to tp, nor set aside an exception being raised. */
    int (*write_u64)(PyObject *tp, uint64_t value);
};

#endif
