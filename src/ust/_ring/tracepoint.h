/* ======================================================================
 * Tracepoint: field specs, argument validation, serialization, the call
 * ====================================================================== */

#ifndef UST_RING_TRACEPOINT_H
#define UST_RING_TRACEPOINT_H

#include "common.h"
#include "record_api.h"
#include "channel.h"
#include "frontend.h"

/* Field codes: keep in sync with the CODE_* constants of ust/instrument/fields.py */
enum { F_SINT = 1, F_UINT = 2, F_FLOAT = 3, F_BOOL = 4, F_STRING = 5, F_BYTES = 6, F_ARRAY = 7, F_SEQUENCE = 8, F_ENUM = 9 };
#define MAX_FIELDS 64
#define MAX_ATTACH 8

typedef struct {
    uint8_t code, size, is_signed;         /* size in bytes for scalars */
    uint8_t elem_code, elem_size, elem_signed;
    uint32_t length;                        /* arrays */
    int64_t min;
    uint64_t max;
    PyObject *labels;                       /* enums: dict label -> int */
    PyObject *name;
} FieldSpec;

typedef struct {
    ChannelObject *channel;
    uint32_t event_id;
    PyObject *filter; /* callable(*args) -> bool, or NULL */
} Attachment;

/* Attachments are published as immutable lists, read without locks by
 * writers on any thread. A call may run Python while it uses a list (a
 * filter, a Python context), and another thread may replace the list
 * meanwhile: `readers` counts the calls using the list, and a replaced
 * ("retired") list is freed by whoever comes last, the replacement or the
 * last call. Both sides run holding the GIL, so plain integers are enough
 * and the call pays two non-atomic increments. Freeing drops the list's
 * Channel references: a session's memfds and mappings go with its last user.
 * Without the GIL (free-threaded builds) there is no such cheap grace
 * period: retired lists are then never freed (see docs/core-api.md). */
typedef struct {
    int n;
    int readers; /* calls using this list now (GIL-protected) */
    int retired; /* replaced: the last reader frees it */
    /* tracepoint_write_u64's lean path applies: one attachment, no filter, an event id of the compact
     * header, a channel without contexts (ChannelObject.plain: LEAN_PLAIN) or with vtid only
     * (ChannelObject.vtid_only: LEAN_VTID), and the tracepoint has one 8-byte integer field whose values
     * are 0..u64_max (set by publish()); 0: it does not. */
    int u64_lean;
    uint64_t u64_max;
    Attachment a[MAX_ATTACH];
} AttachList;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    _Atomic(AttachList *) attached;
    PyObject *name;
    PyObject *owner;   /* the Python-side handle (EventDecl ...), for introspection */
    int warned;        /* a TracepointArgumentWarning was issued for this tracepoint */
    int raises;        /* this tracepoint's caller handles the exception itself (as in strict mode) */
    int nfields;
    FieldSpec fields[MAX_FIELDS];
} TracepointObject;


extern PyTypeObject Tracepoint_Type;
/* The C entry points for ust's other extensions (record_api.h), published
 * by the module as a capsule. */
extern struct ust_record_api record_api;

/* The event of one 8-byte integer field into a's channel, which has no context: record_into without its
 * per-field and per-context loops (whole-program tracing writes two such events per Python call). Runs
 * no Python. */
enum { LEAN_PLAIN = 1, LEAN_VTID = 2 };

INLINE void record_u64_bare(Attachment *a, int lean, uint64_t value)
{
    /* fields and contexts are packed (byte-aligned in the metadata), as write_fields and the contexts'
     * writer write them */
    BufferObject *b = buffer_for_cpu(a->channel, current_cpu());
    if (lean == LEAN_VTID)
        ring_write_u64_ctx(b, a->event_id, 1, (uint32_t)current_tid(), value);
    else
        ring_write_u64_ctx(b, a->event_id, 0, 0, value);
}

/* The whole-program tracer's ids, lean path (record_api.h's write_u64, and inline in the frame-evaluation
 * hook of probes.c, which is built into this module): one attachment, no filter, no context, one 8-byte
 * integer field (AttachList.u64_lean): the value goes straight into the ring, no int object. 0: recorded
 * (or not enabled); 1: not done, take record_u64's general path. No Python runs between the load of the
 * list and the commit, so the list cannot be retired meanwhile (the readers count is not needed) and the
 * caller need not hold a reference to the tracepoint. */
INLINE int tracepoint_write_u64_tp(PyObject *self, uint64_t value)
{
    TracepointObject *tp = (TracepointObject *)self; /* the caller checked its type */
    AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire); /* as the vectorcall */
    if (LIKELY(al == NULL))
        return 0;
    Attachment *only = &al->a[0];
    if (UNLIKELY(!al->u64_lean || value > al->u64_max))
        return 1;
    record_u64_bare(only, al->u64_lean, value);
    return 0;
}

/* The same for any object (1 for one that is not a ust Tracepoint). */
INLINE int tracepoint_write_u64(PyObject *self, uint64_t value)
{
    if (UNLIKELY(!Py_IS_TYPE(self, &Tracepoint_Type)))
        return 1;
    return tracepoint_write_u64_tp(self, value);
}

#endif
