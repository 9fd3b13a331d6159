/* ======================================================================
 * Context values written by C (one kind per LTTng context name)
 *
 * Cheap ones are read where they are written (pthread_self, getppid) or
 * come from the process caches (process.h: vpid, vtid, procname). Credentials, namespace
 * inodes and the pid seen from the initial pid namespace are cached per
 * process: read at the first event after `facts_epoch` moved. A fork moves
 * it (after_fork_in_child), and so does _ring.process_changed(), which
 * Python calls after os.setuid & co., os.unshare and os.setns (see
 * ust.instrument.context). perf counters are opened per thread, lazily, and
 * read with read(2).
 * ====================================================================== */

#ifndef UST_RING_CONTEXTS_H
#define UST_RING_CONTEXTS_H

#include "common.h"
#include "process.h"

enum ctx_kind {
    K_VPID, K_PID, K_VTID, K_TID, K_VPPID, K_PPID, K_PTHREAD_ID, K_PROCNAME, K_CPU_ID,
    K_VUID, K_VEUID, K_VSUID, K_VGID, K_VEGID, K_VSGID,
    K_CGROUP_NS, K_IPC_NS, K_MNT_NS, K_NET_NS, K_PID_NS, K_TIME_NS, K_USER_NS, K_UTS_NS,
    K_PERF, /* a perf counter: the channel entry names its slot */
    N_KINDS
};

/* name and size in the event context; the order is the order in the trace */
struct ctx_kind_info {
    const char *name;
    uint8_t size;
};
extern const struct ctx_kind_info ctx_kinds[N_KINDS];

#define N_NS (K_UTS_NS - K_CGROUP_NS + 1)
extern _Atomic uint64_t facts_epoch; /* moved by fork and process_changed() */
extern _Atomic uint64_t ids_epoch;   /* the epoch the values below were read at (0: never) */
extern _Atomic uint32_t cached_ids[K_VSGID - K_VUID + 1]; /* vuid veuid vsuid vgid vegid vsgid */
extern _Atomic uint64_t cached_ns[N_NS];
extern _Atomic int32_t cached_outer_pid; /* the pid in the initial pid namespace (NSpid's first) */

/* Slow path of ensure_ids(): re-read them (contexts.c). */
void ensure_ids_slow(void);

/* The cached ids are current (the hot path's only cost: two loads and a compare). */
INLINE void ensure_ids(void)
{
    /* acquire: pairs with refresh_ids' release store of ids_epoch */
    if (UNLIKELY(LOAD_ACQUIRE(&ids_epoch) != LOAD_RELAXED(&facts_epoch)))
        ensure_ids_slow();
}

extern _Thread_local uint64_t tls_outer_tid_generation;
extern _Thread_local int32_t tls_outer_tid;
int32_t read_outer_id(const char *path, int32_t fallback);

/* The calling thread's tid in the initial pid namespace: vtid when the process
 * lives there (pid == vpid), else read once per thread from procfs. */
static inline int32_t current_outer_tid(void)
{
    int32_t vtid = current_tid();
    if (LOAD_RELAXED(&cached_outer_pid) == LOAD_RELAXED(&cached_pid))
        return vtid;
    uint64_t gen = LOAD_RELAXED(&fork_generation);
    if (tls_outer_tid_generation != gen) {
        tls_outer_tid = read_outer_id("/proc/thread-self/status", vtid);
        tls_outer_tid_generation = gen;
    }
    return tls_outer_tid;
}

#define MAX_PERF 32
struct perf_counter_conf {
    uint32_t type;
    uint64_t config;
};
/* One thread's counter descriptors: -1 not opened yet, -2 failed to open.
 * Every thread's are listed, so that a forked child can close them all. */
struct thread_perf {
    struct thread_perf *prev, *next;
    int fd[MAX_PERF];
};
extern _Thread_local struct thread_perf *tls_perf;

/* Slow path of read_thread_counter(): open the calling thread's counter for
 * `slot` (its fd, or -2 when it cannot be opened). */
int read_thread_counter_slow(int slot);

/* The calling thread's count for a counter slot (0 when it cannot be read). */
INLINE uint64_t read_thread_counter(int slot)
{
    struct thread_perf *tp = tls_perf;
    int fd = tp ? tp->fd[slot] : -1;
    if (UNLIKELY(fd == -1))
        fd = read_thread_counter_slow(slot);
    uint64_t v = 0;
    if (fd < 0 || read(fd, &v, sizeof v) != (ssize_t)sizeof v)
        v = 0;
    return v;
}

/* The slot of a counter, registered on first use; -1 when all are taken. */
int perf_slot(uint32_t type, uint64_t config);
/* Open a counter of the calling thread; the fd or -errno. */
int perf_open(uint32_t type, uint64_t config);

/* fork() hooks (pthread_atfork, installed by the module) */
void before_fork(void);
void after_fork_in_parent(void);
void after_fork_in_child(void);

/* Write one context value at p (ctx_kinds[kind].size bytes). */
INLINE char *write_one_context(char *p, uint8_t kind, uint8_t slot, uint32_t cpu)
{
    int32_t i32;
    uint32_t u32;
    uint64_t u64;
    switch (kind) {
    case K_VPID: i32 = LOAD_RELAXED(&cached_pid); goto put_i32;
    case K_PID: i32 = LOAD_RELAXED(&cached_outer_pid); goto put_i32;
    case K_VTID: i32 = current_tid(); goto put_i32;
    case K_TID: i32 = current_outer_tid(); goto put_i32;
    case K_VPPID:
    case K_PPID: i32 = (int32_t)getppid(); goto put_i32; /* changes when the parent dies: read each time */
    case K_PTHREAD_ID: u64 = (uint64_t)pthread_self(); goto put_u64;
    case K_PROCNAME: memcpy(p, cached_procname, 17); return p + 17;
    case K_CPU_ID: u32 = cpu; goto put_u32;
    case K_VUID: case K_VEUID: case K_VSUID: case K_VGID: case K_VEGID: case K_VSGID:
        u32 = LOAD_RELAXED(&cached_ids[kind - K_VUID]);
        goto put_u32;
    case K_PERF: u64 = read_thread_counter(slot); goto put_u64;
    default: /* the namespaces */
        u64 = LOAD_RELAXED(&cached_ns[kind - K_CGROUP_NS]);
        goto put_u64;
    }
put_i32:
    memcpy(p, &i32, 4);
    return p + 4;
put_u32:
    memcpy(p, &u32, 4);
    return p + 4;
put_u64:
    memcpy(p, &u64, 8);
    return p + 8;
}

/* The module functions of this role (module.c lists them). */
PyObject *mod_context_value(PyObject *m, PyObject *name);
PyObject *mod_perf_value(PyObject *m, PyObject *args);
PyObject *mod_process_changed(PyObject *m, PyObject *unused);
PyObject *mod_perf_check(PyObject *m, PyObject *args);

#endif
