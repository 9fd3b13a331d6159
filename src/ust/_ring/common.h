/*
 * ust._ring._ring — the only compiled part of ust: the lock-free ring buffer
 * and the tracepoint call that writes into it. Everything else is Python.
 * One file per role, as lttng-ust's ring buffer (docs/ring-buffer.md):
 *
 *   common.h       includes, atomics, branch hints, symbol visibility
 *   layout.h       the CTF packet and event layout (the one definition)
 *   shm.h          one stream's shared memory, and a process's view of it
 *   process.[ch]   process facts: clock, CPU, pid/tid caches, liveness
 *   contexts.[ch]  context values written by C (ids, namespaces, perf)
 *   frontend.[ch]  writer side: reserve / commit / switch
 *   reader.[ch]    reader side: get / put / snapshot / dead-writer repair
 *   buffer.c       ust._ring.Buffer: the Python face of one stream
 *   channel.[ch]   ust._ring.Channel: a Buffer per CPU and the contexts
 *   tracepoint.[ch] ust.Tracepoint: arguments, serialization, the call
 *   probes.c       ust._ring._probes (registered by module.c): dynamic probes' per-call
 *                  paths and --functions' frame-evaluation hook, which inlines the ring's
 *                  8-byte write (tracepoint_write_u64)
 *   module.c       the module: its functions, state and initialization
 *
 * Hot-path functions are static inline in the headers (fast paths), their
 * slow paths out of line in the .c files, named as pairs (ring_reserve /
 * ring_reserve_slow). Every symbol is hidden: only PyInit__ring is exported,
 * so cross-file globals cost what file-static ones did.
 *
 * Algorithm (after LTTng's, written anew):
 *   - write_offset counts bytes over a virtual space of num_subbuf
 *     sub-buffers; slot = (offset / subbuf_size) % num_subbuf, lap =
 *     offset / buffer_size. Writers reserve with one compare-and-swap on
 *     write_offset, write, then commit with one fetch-add on the slot's
 *     commit counter. The clock is read after write_offset is loaded and
 *     before the CAS, so timestamps never go backwards within a stream.
 *   - The writer whose reservation starts a packet writes the packet header;
 *     the writer whose reservation crosses a boundary closes the old packet
 *     (end timestamp, sizes, discarded count) and commits its padding.
 *   - A slot's lap is complete when its cumulative commit count reaches
 *     (lap + 1) * subbuf_size; the writer who completes it clears the slot's
 *     ACTIVE flag and wakes the reader if it sleeps.
 *   - The reader swaps its spare physical sub-buffer with a complete,
 *     inactive slot (CAS on the slot table), reads it at leisure, and gives
 *     it back as the new spare.
 * Discard mode: a writer may not start a packet in a slot the reader has not
 * consumed; the event is dropped and counted. Overwrite mode: writers never
 * wait for the reader; they only require the slot's previous lap to be fully
 * committed (else the event is dropped and counted).
 */
#ifndef UST_RING_COMMON_H
#define UST_RING_COMMON_H

#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ust writes little-endian CTF by copying native integers: big-endian hosts are not supported"
#endif

#if PY_VERSION_HEX < 0x030C0000
/* Python 3.11: the 3.12 single-object exception API, from Fetch/Restore. */
static inline PyObject *PyErr_GetRaisedException(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}
static inline void PyErr_SetRaisedException(PyObject *exc)
{
    if (exc)
        PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}
#endif

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define INLINE static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))
#define SLOW __attribute__((noinline)) /* an out-of-line slow path of another file's fast path */

#define LOAD_RELAXED(p) atomic_load_explicit((p), memory_order_relaxed)
#define LOAD_ACQUIRE(p) atomic_load_explicit((p), memory_order_acquire)
#define STORE_RELAXED(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define STORE_RELEASE(p, v) atomic_store_explicit((p), (v), memory_order_release)

/* Every declaration from here on (ours: system and Python headers are all
 * included above) is hidden in the shared object: direct, PC-relative access
 * and calls, as for file-static symbols. */
#pragma GCC visibility push(hidden)

#endif
