/* ======================================================================
 * Channel: the writer side of one channel (a Buffer per CPU + contexts)
 * ====================================================================== */

#ifndef UST_RING_CHANNEL_H
#define UST_RING_CHANNEL_H

#include "shm.h"
#include "contexts.h"

#define MAX_C_CONTEXTS 64
#define MAX_PY_CONTEXTS 16

typedef struct {
    PyObject_HEAD
    PyObject *buffers; /* tuple of Buffer */
    BufferObject **bufs;
    Py_ssize_t nbufs;
    int n_ctx;                            /* C context values, in trace order: */
    uint8_t ctx_kind[MAX_C_CONTEXTS];     /*   enum ctx_kind */
    uint8_t ctx_perf_slot[MAX_C_CONTEXTS]; /*   for K_PERF: the counter's slot */
    int ctx_needs_ids;                    /* a credential, namespace or outer-pid kind is among them */
    uint32_t ctx_fixed_size;
    PyObject *py_contexts; /* tuple of callables returning str, appended as strings */
    int plain;             /* no context at all (C or Python): an event is its header and fields (fixed: a
                            * channel is initialized once, and publish() reads it into AttachList.u64_lean) */
    int vtid_only;         /* its one context is vtid: an event is its header, the thread id and fields
                            * (`ust run --functions`' channel: AttachList.u64_lean too) */
} ChannelObject;

extern PyTypeObject Channel_Type;

/* The stream of ch an event written on `cpu` goes to. A channel has a buffer per CPU: the division (tens
 * of cycles) only for a CPU beyond them. */
INLINE BufferObject *buffer_for_cpu(ChannelObject *ch, uint32_t cpu)
{
    uint32_t n = (uint32_t)ch->nbufs;
    return ch->bufs[LIKELY(cpu < n) ? cpu : cpu % n];
}

#endif
