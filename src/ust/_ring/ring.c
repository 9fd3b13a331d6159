/*
 * ust._ring._ring — the only compiled part of ust: the lock-free ring buffer
 * (frontend, backend, shared memory) and the tracepoint call that writes
 * into it. Everything else is Python.
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
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ring.h"
#include "record_api.h"

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

#define LOAD_RELAXED(p) atomic_load_explicit((p), memory_order_relaxed)
#define LOAD_ACQUIRE(p) atomic_load_explicit((p), memory_order_acquire)
#define STORE_RELAXED(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define STORE_RELEASE(p, v) atomic_store_explicit((p), (v), memory_order_release)

/* ======================================================================
 * Process facts: clock, CPU, pid/tid caches (reset in a forked child)
 * ====================================================================== */

static _Atomic uint64_t fork_generation = 1;
static _Atomic int32_t cached_pid;
static char cached_procname[17];
static _Thread_local uint64_t tls_generation;
static _Thread_local int32_t tls_tid;

INLINE uint64_t clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

INLINE int32_t current_tid(void)
{
    uint64_t gen = LOAD_RELAXED(&fork_generation);
    if (UNLIKELY(tls_generation != gen)) {
        tls_tid = (int32_t)syscall(SYS_gettid);
        tls_generation = gen;
    }
    return tls_tid;
}

static void refresh_process_facts(void)
{
    STORE_RELAXED(&cached_pid, (int32_t)getpid());
    memset(cached_procname, 0, sizeof cached_procname);
    prctl(PR_GET_NAME, cached_procname, 0, 0, 0);
}

INLINE uint32_t current_cpu(void)
{
    int cpu = sched_getcpu();
    return cpu < 0 ? 0 : (uint32_t)cpu;
}

/* ======================================================================
 * Context values written by C (one kind per LTTng context name)
 *
 * Cheap ones are read where they are written (pthread_self, getppid) or
 * come from the caches above (vpid, vtid, procname). Credentials, namespace
 * inodes and the pid seen from the initial pid namespace are cached per
 * process: read at the first event after `facts_epoch` moved. A fork moves
 * it (after_fork_in_child), and so does _ring.process_changed(), which
 * Python calls after os.setuid & co., os.unshare and os.setns (see
 * ust.instrument.context). perf counters are opened per thread, lazily, and
 * read with read(2).
 * ====================================================================== */

enum ctx_kind {
    K_VPID, K_PID, K_VTID, K_TID, K_VPPID, K_PPID, K_PTHREAD_ID, K_PROCNAME, K_CPU_ID,
    K_VUID, K_VEUID, K_VSUID, K_VGID, K_VEGID, K_VSGID,
    K_CGROUP_NS, K_IPC_NS, K_MNT_NS, K_NET_NS, K_PID_NS, K_TIME_NS, K_USER_NS, K_UTS_NS,
    K_PERF, /* a perf counter: the channel entry names its slot */
    N_KINDS
};

/* name and size in the event context; the order is the order in the trace */
static const struct {
    const char *name;
    uint8_t size;
} ctx_kinds[N_KINDS] = {
    [K_VPID] = {"vpid", 4}, [K_PID] = {"pid", 4}, [K_VTID] = {"vtid", 4}, [K_TID] = {"tid", 4},
    [K_VPPID] = {"vppid", 4}, [K_PPID] = {"ppid", 4}, [K_PTHREAD_ID] = {"pthread_id", 8},
    [K_PROCNAME] = {"procname", 17}, [K_CPU_ID] = {"cpu_id", 4},
    [K_VUID] = {"vuid", 4}, [K_VEUID] = {"veuid", 4}, [K_VSUID] = {"vsuid", 4},
    [K_VGID] = {"vgid", 4}, [K_VEGID] = {"vegid", 4}, [K_VSGID] = {"vsgid", 4},
    [K_CGROUP_NS] = {"cgroup_ns", 8}, [K_IPC_NS] = {"ipc_ns", 8}, [K_MNT_NS] = {"mnt_ns", 8},
    [K_NET_NS] = {"net_ns", 8}, [K_PID_NS] = {"pid_ns", 8}, [K_TIME_NS] = {"time_ns", 8},
    [K_USER_NS] = {"user_ns", 8}, [K_UTS_NS] = {"uts_ns", 8}, [K_PERF] = {"perf", 8},
};

#define N_NS (K_UTS_NS - K_CGROUP_NS + 1)
static const char *const ns_files[N_NS] = {"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"};

static _Atomic uint64_t facts_epoch = 1; /* moved by fork and process_changed() */
static _Atomic uint64_t ids_epoch;       /* the epoch the values below were read at (0: never) */
static pthread_mutex_t ids_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint32_t cached_ids[K_VSGID - K_VUID + 1]; /* vuid veuid vsuid vgid vegid vsgid */
static _Atomic uint64_t cached_ns[N_NS];
static _Atomic int32_t cached_outer_pid; /* the pid in the initial pid namespace (NSpid's first) */
static _Thread_local uint64_t tls_outer_tid_generation;
static _Thread_local int32_t tls_outer_tid;

/* The first number of the "NSpid:" line of a /proc status file (the id in the
 * outermost pid namespace this process can see), or `fallback`. */
static int32_t read_outer_id(const char *path, int32_t fallback)
{
    char buf[2048];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fallback;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return fallback;
    buf[n] = 0;
    const char *line = strstr(buf, "\nNSpid:");
    if (!line)
        return fallback;
    long v = strtol(line + 7, NULL, 10);
    return v > 0 ? (int32_t)v : fallback;
}

/* Re-read credentials, namespace inodes and the outer pid. Serialized so that
 * the values published with an epoch were all read after that epoch began.
 * A namespace link that cannot be read (after setuid the process is not
 * dumpable and /proc/self/ns is closed to it) keeps the value read before:
 * credentials do not change namespaces. */
NOINLINE void refresh_ids(void)
{
    pthread_mutex_lock(&ids_lock);
    uint64_t epoch = LOAD_ACQUIRE(&facts_epoch);
    if (LOAD_RELAXED(&ids_epoch) != epoch) {
        uid_t u[3];
        gid_t g[3];
        if (getresuid(&u[0], &u[1], &u[2]) == 0)
            for (int i = 0; i < 3; i++)
                STORE_RELAXED(&cached_ids[i], (uint32_t)u[i]);
        if (getresgid(&g[0], &g[1], &g[2]) == 0)
            for (int i = 0; i < 3; i++)
                STORE_RELAXED(&cached_ids[3 + i], (uint32_t)g[i]);
        for (int i = 0; i < N_NS; i++) {
            char path[40];
            struct stat st;
            snprintf(path, sizeof path, "/proc/self/ns/%s", ns_files[i]);
            if (stat(path, &st) == 0)
                STORE_RELAXED(&cached_ns[i], (uint64_t)st.st_ino);
        }
        STORE_RELAXED(&cached_outer_pid, read_outer_id("/proc/self/status", (int32_t)getpid()));
        /* release: a thread that sees this epoch sees the values above */
        STORE_RELEASE(&ids_epoch, epoch);
    }
    pthread_mutex_unlock(&ids_lock);
}

/* The cached ids are current (the hot path's only cost: two loads and a compare). */
INLINE void ensure_ids(void)
{
    /* acquire: pairs with refresh_ids' release store of ids_epoch */
    if (UNLIKELY(LOAD_ACQUIRE(&ids_epoch) != LOAD_RELAXED(&facts_epoch)))
        refresh_ids();
}

/* The calling thread's tid in the initial pid namespace: vtid when the process
 * lives there (pid == vpid), else read once per thread from procfs. */
static int32_t current_outer_tid(void)
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

/* -- perf counters ------------------------------------------------------ */

#define MAX_PERF 32
struct perf_counter_conf {
    uint32_t type;
    uint64_t config;
};
/* perf_lock guards the slots and the list of threads' counters (Channel_init
 * may run without the GIL on a free-threaded build; threads end at any time).
 * Slots are appended, never changed nor removed: a writer reads the slot of a
 * channel it got through Tracepoint.attach's release store. */
static pthread_mutex_t perf_lock = PTHREAD_MUTEX_INITIALIZER;
static struct perf_counter_conf perf_confs[MAX_PERF];
static int n_perf_confs;

/* One thread's counter descriptors: -1 not opened yet, -2 failed to open.
 * Every thread's are listed, so that a forked child can close them all. */
struct thread_perf {
    struct thread_perf *prev, *next;
    int fd[MAX_PERF];
};
static struct thread_perf *all_thread_perf;
static _Thread_local struct thread_perf *tls_perf;
static pthread_key_t perf_key; /* its destructor closes a thread's counters when the thread ends */
static pthread_once_t perf_key_once = PTHREAD_ONCE_INIT;

static void unlink_thread_perf(struct thread_perf *tp) /* perf_lock held */
{
    if (tp->prev)
        tp->prev->next = tp->next;
    else
        all_thread_perf = tp->next;
    if (tp->next)
        tp->next->prev = tp->prev;
}

static void close_thread_perf(void *p)
{
    struct thread_perf *tp = p;
    pthread_mutex_lock(&perf_lock);
    unlink_thread_perf(tp);
    pthread_mutex_unlock(&perf_lock);
    for (int i = 0; i < MAX_PERF; i++)
        if (tp->fd[i] >= 0)
            close(tp->fd[i]);
    free(tp);
}

static void make_perf_key(void) { pthread_key_create(&perf_key, close_thread_perf); }

/* Open a counter of the calling thread (any CPU). exclude_kernel is tried
 * second: with perf_event_paranoid >= 2 an unprivileged user may count only
 * user-space events. Returns the fd or -errno. */
static int perf_open(uint32_t type, uint64_t config)
{
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = type;
    attr.config = config;
    int fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0 && (errno == EACCES || errno == EPERM)) {
        attr.exclude_kernel = 1;
        attr.exclude_hv = 1;
        fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    }
    return fd < 0 ? -errno : fd;
}

/* In a forked child (perf_lock held since before_fork), every descriptor is
 * a copy measuring a thread of the parent: close them all before the
 * application can reuse the numbers. The other threads do not exist here:
 * free their lists; the forking thread opens its counters again. */
static void forget_thread_perf_after_fork(void)
{
    struct thread_perf *tp = all_thread_perf, *next;
    for (; tp; tp = next) {
        next = tp->next;
        for (int i = 0; i < MAX_PERF; i++) {
            if (tp->fd[i] >= 0)
                close(tp->fd[i]);
            tp->fd[i] = -1;
        }
        if (tp != tls_perf) {
            unlink_thread_perf(tp);
            free(tp);
        }
    }
}

NOINLINE int open_thread_counter(int slot)
{
    struct thread_perf *tp = tls_perf;
    if (!tp) {
        pthread_once(&perf_key_once, make_perf_key);
        tp = malloc(sizeof *tp);
        if (!tp)
            return -2;
        for (int i = 0; i < MAX_PERF; i++)
            tp->fd[i] = -1;
        tp->prev = NULL;
        pthread_mutex_lock(&perf_lock);
        tp->next = all_thread_perf;
        if (tp->next)
            tp->next->prev = tp;
        all_thread_perf = tp;
        pthread_mutex_unlock(&perf_lock);
        tls_perf = tp;
        pthread_setspecific(perf_key, tp);
    }
    int fd = perf_open(perf_confs[slot].type, perf_confs[slot].config);
    tp->fd[slot] = fd < 0 ? -2 : fd;
    return tp->fd[slot];
}

/* The calling thread's count for a counter slot (0 when it cannot be read). */
INLINE uint64_t read_thread_counter(int slot)
{
    struct thread_perf *tp = tls_perf;
    int fd = tp ? tp->fd[slot] : -1;
    if (UNLIKELY(fd == -1))
        fd = open_thread_counter(slot);
    uint64_t v = 0;
    if (fd < 0 || read(fd, &v, sizeof v) != (ssize_t)sizeof v)
        v = 0;
    return v;
}

/* The slot of a counter, registered on first use; -1 when all are taken. */
static int perf_slot(uint32_t type, uint64_t config)
{
    int slot = -1;
    pthread_mutex_lock(&perf_lock);
    for (int i = 0; i < n_perf_confs && slot < 0; i++)
        if (perf_confs[i].type == type && perf_confs[i].config == config)
            slot = i;
    if (slot < 0 && n_perf_confs < MAX_PERF) {
        perf_confs[n_perf_confs] = (struct perf_counter_conf){type, config};
        slot = n_perf_confs++;
    }
    pthread_mutex_unlock(&perf_lock);
    return slot;
}

/* fork() takes the context locks so that the child inherits consistent
 * state (their holders never wait for anything while holding them). */
static void before_fork(void)
{
    pthread_mutex_lock(&ids_lock);
    pthread_mutex_lock(&perf_lock);
}

static void after_fork_in_parent(void)
{
    pthread_mutex_unlock(&perf_lock);
    pthread_mutex_unlock(&ids_lock);
}

static void after_fork_in_child(void)
{
    refresh_process_facts();
    atomic_fetch_add(&fork_generation, 1);
    atomic_fetch_add(&facts_epoch, 1);
    forget_thread_perf_after_fork();
    pthread_mutex_unlock(&perf_lock);
    pthread_mutex_unlock(&ids_lock);
}

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

/* ======================================================================
 * Shared memory: one stream's region
 * ====================================================================== */

typedef struct {
    PyObject_HEAD
    struct ust_shm_header *h; /* the mapping's base */
    size_t map_size;
    int fd;
    int wakeup_fd; /* this process's eventfd, or -1 */
    struct ust_slot *slots;
    char *data;
    uint64_t sbsize, sbmask, nsub, bufsize;
    unsigned sbshift, bufshift;
    /* reader state (process-local: one reader per stream) */
    int holding;
    int reader_ready; /* this process has checked the reader state it inherits */
    uint64_t held_pos;
    uint32_t held_phys;
    uint64_t held_len;
    uint64_t writer_generation;      /* fork_generation when this process registered as a writer */
    struct ust_writer *self_writer; /* its entry in h->writers, or NULL (table full) */
    uint64_t stall_timeout_ns;       /* reader: how long a packet may stay incomplete before writers are checked */
    uint64_t stuck_pos, stuck_commit, stuck_since; /* reader: the incomplete packet it waits for */
    uint64_t last_discarded;         /* reader: events_discarded of the last packet handed out */
    uint64_t held_table;  /* the slot's table entry before ring_get() took the packet */
    uint64_t taken_table; /* ... and the one it put there (what ring_unget() expects back) */
    Py_ssize_t exports;
} BufferObject;

static PyTypeObject Buffer_Type;

static int is_pow2(uint64_t v) { return v && !(v & (v - 1)); }
static unsigned log2u(uint64_t v) { unsigned s = 0; while ((1ULL << s) < v) s++; return s; }

INLINE char *phys_base(BufferObject *b, uint32_t phys)
{
    if (UNLIKELY(phys > b->nsub)) /* scribbled shared memory: stay inside our mapping */
        phys = 0;
    return b->data + (uint64_t)phys * b->sbsize;
}

/* Validate a mapped header and fill the process-local geometry. */
static int buffer_bind(BufferObject *b)
{
    struct ust_shm_header *h = b->h;
    if (h->magic != UST_SHM_MAGIC || h->version != UST_SHM_VERSION) {
        PyErr_SetString(PyExc_ValueError, "not a ust ring buffer (bad magic or version)");
        return -1;
    }
    if (!is_pow2(h->subbuf_size) || h->subbuf_size < 4096 || !is_pow2(h->num_subbuf) || h->num_subbuf < 2 ||
        h->num_subbuf > 4096 || h->slots_offset < sizeof *h ||
        h->slots_offset + h->num_subbuf * sizeof(struct ust_slot) > h->data_offset ||
        h->data_offset + (h->num_subbuf + 1) * h->subbuf_size != h->total_size || h->total_size > b->map_size) {
        PyErr_SetString(PyExc_ValueError, "ust ring buffer header has an inconsistent geometry");
        return -1;
    }
    b->slots = (struct ust_slot *)((char *)h + h->slots_offset);
    b->data = (char *)h + h->data_offset;
    b->sbsize = h->subbuf_size;
    b->sbmask = h->subbuf_size - 1;
    b->nsub = h->num_subbuf;
    b->bufsize = h->subbuf_size * h->num_subbuf;
    b->sbshift = log2u(b->sbsize);
    b->bufshift = log2u(b->bufsize);
    return 0;
}

/* ======================================================================
 * Frontend: reserve / commit / switch (writer side)
 * ====================================================================== */

struct reservation {
    uint64_t begin;  /* offset of the event (after the packet header if any) */
    uint64_t start;  /* offset where this reservation starts */
    uint64_t total;  /* bytes to commit */
    uint64_t ts;
    uint64_t slot, lap;
    char *dst;       /* where the event header goes */
    int extended;
};

/* May a packet start at `begin`? Returns 1 if so. */
INLINE int packet_start_allowed(BufferObject *b, uint64_t begin)
{
    struct ust_shm_header *h = b->h;
    uint64_t slot = (begin >> b->sbshift) & (b->nsub - 1);
    uint64_t lap = begin >> b->bufshift;
    if (!h->overwrite) {
        uint64_t consumed = LOAD_ACQUIRE(&h->consumed);
        if (begin - consumed >= b->bufsize)
            return 0; /* the reader has not consumed this slot's previous lap */
    }
    /* In both modes: the slot's previous lap must be fully committed. */
    return LOAD_ACQUIRE(&b->slots[slot].commit) == lap * b->sbsize;
}

/* Make sure slot `slot` maps to a physical sub-buffer marked ACTIVE for
 * `lap`, and return that physical index. Idempotent: every writer of the lap
 * calls it before writing, whoever comes first does the CAS. */
INLINE uint32_t slot_acquire(BufferObject *b, uint64_t slot, uint64_t lap)
{
    struct ust_slot *s = &b->slots[slot];
    uint64_t v = LOAD_ACQUIRE(&s->table);
    for (;;) {
        if (LIKELY(SLOT_LAP(v) == lap && (v & SLOT_ACTIVE)))
            return SLOT_PHYS(v);
        uint64_t nv = (v & SLOT_PHYS_MASK) | SLOT_ACTIVE | (lap << SLOT_LAP_SHIFT);
        if (atomic_compare_exchange_weak_explicit(&s->table, &v, nv, memory_order_acq_rel, memory_order_acquire)) {
            if (b->h->overwrite && lap > 0 && SLOT_LAP(v) == lap - 1 && !(v & SLOT_READ))
                atomic_fetch_add_explicit(&b->h->packets_overwritten, 1, memory_order_relaxed);
            return SLOT_PHYS(nv);
        }
    }
}

NOINLINE void deliver(BufferObject *b, uint64_t slot, uint64_t lap)
{
    struct ust_slot *s = &b->slots[slot];
    uint64_t v = LOAD_ACQUIRE(&s->table);
    while (SLOT_LAP(v) == lap && (v & SLOT_ACTIVE)) {
        if (atomic_compare_exchange_weak_explicit(&s->table, &v, v & ~SLOT_ACTIVE, memory_order_seq_cst,
                                                  memory_order_acquire))
            break;
    }
    /* seq_cst pairs with the reader's store of reader_sleeping before it
     * re-checks for data: one of the two sees the other. */
    if (atomic_load_explicit(&b->h->reader_sleeping, memory_order_seq_cst) && b->wakeup_fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(b->wakeup_fd, &one, sizeof one);
        (void)r;
    }
}

INLINE void commit_bytes(BufferObject *b, uint64_t slot, uint64_t lap, uint64_t n)
{
    uint64_t c = atomic_fetch_add_explicit(&b->slots[slot].commit, n, memory_order_acq_rel) + n;
    if (UNLIKELY(c == (lap + 1) * b->sbsize))
        deliver(b, slot, lap);
}

INLINE uint64_t lost_total(struct ust_shm_header *h)
{
    return LOAD_RELAXED(&h->lost_full) + LOAD_RELAXED(&h->lost_big) + LOAD_RELAXED(&h->lost_dead) +
           LOAD_RELAXED(&h->lost_args);
}

/* The stream's lost count as it must be written into a packet that the
 * caller's next CAS on write_offset closes (or opens empty). Called after
 * loading write_offset and before that CAS: the acquire fence makes the
 * relaxed load of write_offset synchronize with the CAS that closed the
 * previous packet (a release, continued by every later CAS on write_offset),
 * so this read sees at least the count that packet carries; and our own CAS
 * (release) publishes this read to whoever closes the next packet. The
 * counts written into a stream's packets therefore never go down, whatever
 * delays a closer between its CAS and its header write. (Reading the
 * counter after the CAS, as before, let a delayed closer write a count
 * larger than the next packet's.) */
INLINE uint64_t lost_for_close(struct ust_shm_header *h)
{
    atomic_thread_fence(memory_order_acquire);
    return lost_total(h);
}

/* Close the packet that `old` (an offset inside it, not at its start) is in;
 * `lost` comes from lost_for_close() before the CAS that closed it. */
NOINLINE void close_packet(BufferObject *b, uint64_t old, uint64_t ts, uint64_t lost)
{
    uint64_t in_sb = old & b->sbmask;
    uint64_t slot = (old >> b->sbshift) & (b->nsub - 1);
    uint64_t lap = old >> b->bufshift;
    struct ust_packet_header *ph = (struct ust_packet_header *)phys_base(b, slot_acquire(b, slot, lap));
    ph->timestamp_end = ts;
    ph->content_size = in_sb * 8;
    ph->packet_size = in_sb * 8;
    ph->events_discarded = lost;
    STORE_RELAXED(&b->h->reported_discarded, lost);
    commit_bytes(b, slot, lap, b->sbsize - in_sb);
}

/* `lost` is the count a packet carries if it is never closed normally (an
 * empty packet, a dead writer's): closing overwrites it. */
INLINE void open_packet(BufferObject *b, char *base, uint64_t begin, uint64_t ts, uint64_t lost)
{
    struct ust_shm_header *h = b->h;
    struct ust_packet_header *ph = (struct ust_packet_header *)base;
    ph->magic = CTF_MAGIC;
    memcpy(ph->uuid, h->uuid, 16);
    ph->stream_id = h->stream_id;
    ph->stream_instance_id = h->cpu;
    ph->timestamp_begin = ts;
    ph->timestamp_end = ts;
    ph->content_size = UST_PACKET_HEADER_SIZE * 8;
    ph->packet_size = UST_PACKET_HEADER_SIZE * 8;
    ph->packet_seq_num = begin >> b->sbshift;
    ph->events_discarded = lost;
    ph->cpu_id = h->cpu;
}

NOINLINE void count_lost(_Atomic uint64_t *counter)
{
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* Test-only: UST_TEST_PAUSE_AFTER_RESERVE="N:MS[:close]" (read once at
 * import) makes this process's N-th successful reservation (counting only
 * those that close a packet, with ":close") announce itself on stderr and
 * sleep MS milliseconds between its CAS and anything else: the window in
 * which a writer can be delayed or killed. Unset, it costs one predictable
 * branch. */
static long test_pause_at, test_pause_ms;
static int test_pause_close_only;
static _Atomic long test_pause_count;

NOINLINE void test_pause(int closing)
{
    if (test_pause_close_only && !closing)
        return;
    if (atomic_fetch_add_explicit(&test_pause_count, 1, memory_order_relaxed) + 1 != test_pause_at)
        return;
    static const char msg[] = "ust-test: paused after reserve\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    struct timespec ts = {test_pause_ms / 1000, (test_pause_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void test_pause_configure(void)
{
    const char *v = getenv("UST_TEST_PAUSE_AFTER_RESERVE");
    long at = 0, ms = 0;
    char kind[8] = "";
    if (v && sscanf(v, "%ld:%ld:%7s", &at, &ms, kind) >= 2 && at > 0 && ms >= 0) {
        test_pause_ms = ms;
        test_pause_close_only = !strcmp(kind, "close");
        test_pause_at = at;
    }
}

/* Is process `pid` gone? (A zombie is: it will never commit.) kill(pid, 0)
 * answers EPERM for another user's live process. */
static int process_dead(int32_t pid)
{
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 1;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *paren = strrchr(buf, ')'); /* the name may contain ')' */
    return paren && (paren[1] == ' ') && (paren[2] == 'Z' || paren[2] == 'X');
}

/* Slow path, once per process (and again in a forked child): take an entry
 * in the stream's writer table, reusing one whose process is gone when the
 * table is full. Without an entry (64 live writers already), this process's
 * death mid-write cannot be repaired: its packet is dropped at teardown. */
NOINLINE void register_writer(BufferObject *b, uint64_t generation)
{
    int32_t pid = LOAD_RELAXED(&cached_pid);
    struct ust_writer *w = b->h->writers, *mine = NULL;
    for (int pass = 0; pass < 2 && !mine; pass++)
        for (int i = 0; i < UST_MAX_WRITERS && !mine; i++) {
            int32_t cur = LOAD_RELAXED(&w[i].pid);
            if (cur == pid) {
                mine = &w[i];
            } else if (cur == 0 || (pass == 1 && process_dead(cur) &&
                                    LOAD_RELAXED(&w[i].end) <= LOAD_RELAXED(&w[i].start))) {
                /* reuse a dead writer's entry only when it has nothing in flight */
                STORE_RELAXED(&w[i].end, 0);
                STORE_RELAXED(&w[i].start, 0);
                if (atomic_compare_exchange_strong_explicit(&w[i].pid, &cur, pid, memory_order_acq_rel,
                                                            memory_order_relaxed))
                    mine = &w[i];
            }
        }
    b->self_writer = mine;
    b->writer_generation = generation;
}

/* Reserve room for an event of `payload` bytes (context + fields).
 * Returns 0 and fills r, or -1 when the event is dropped (counted). */
INLINE int ring_reserve(BufferObject *b, uint64_t payload, uint32_t event_id, struct reservation *r)
{
    struct ust_shm_header *h = b->h;
    uint64_t old, begin, ts, in_sb, need, hdr, lost = 0;
    int new_packet, close_old, extended;
    uint64_t generation = LOAD_RELAXED(&fork_generation);
    if (UNLIKELY(b->writer_generation != generation))
        register_writer(b, generation);
    struct ust_writer *me = b->self_writer;

    old = LOAD_RELAXED(&h->write_offset);
    for (;;) {
        ts = clock_now();
        in_sb = old & b->sbmask;
        new_packet = in_sb == 0;
        close_old = 0;
        begin = old;
        /* A compact header carries the low 32 bits of the timestamp: valid
         * when the high bits equal the previous event's (or this is the
         * first event of the packet, whose timestamp_begin is ts). */
        extended = event_id >= UST_EVENT_ID_EXTENDED ||
                   (!new_packet && (ts >> 32) != (LOAD_RELAXED(&h->last_timestamp) >> 32));
        hdr = extended ? UST_EVENT_HEADER_EXTENDED : UST_EVENT_HEADER_COMPACT;
        /* An event never ends exactly on a sub-buffer boundary: write_offset
         * on a boundary means "the previous packet is closed", so filling a
         * packet to the last byte would leave it open with nobody to close it. */
        if (!new_packet && in_sb + hdr + payload >= b->sbsize) {
            close_old = 1;
            new_packet = 1;
            lost = lost_for_close(h);
            begin = old - in_sb + b->sbsize;
            extended = event_id >= UST_EVENT_ID_EXTENDED;
            hdr = extended ? UST_EVENT_HEADER_EXTENDED : UST_EVENT_HEADER_COMPACT;
        }
        need = hdr + payload + (new_packet ? UST_PACKET_HEADER_SIZE : 0);
        if (UNLIKELY(need >= b->sbsize)) {
            count_lost(&h->lost_big);
            return -1;
        }
        if (new_packet && UNLIKELY(!packet_start_allowed(b, begin))) {
            count_lost(&h->lost_full);
            return -1;
        }
        if (LIKELY(me != NULL)) { /* what we are about to reserve, should we die before committing it */
            STORE_RELAXED(&me->start, old);
            STORE_RELAXED(&me->ts, ts);
            STORE_RELAXED(&me->end, begin + need);
        }
        if (LIKELY(atomic_compare_exchange_weak_explicit(&h->write_offset, &old, begin + need,
                                                         memory_order_acq_rel, memory_order_relaxed)))
            break;
    }
    STORE_RELAXED(&h->last_timestamp, ts);
    if (UNLIKELY(test_pause_at))
        test_pause(close_old);
    if (close_old)
        close_packet(b, old, ts, lost);

    r->slot = (begin >> b->sbshift) & (b->nsub - 1);
    r->lap = begin >> b->bufshift;
    char *base = phys_base(b, slot_acquire(b, r->slot, r->lap));
    if (new_packet) {
        open_packet(b, base, begin, ts, close_old ? lost : lost_total(h));
        r->begin = begin + UST_PACKET_HEADER_SIZE;
    } else {
        r->begin = begin;
    }
    r->start = begin;
    r->total = need;
    r->ts = ts;
    r->extended = extended;
    r->dst = base + (r->begin & b->sbmask);
    return 0;
}

INLINE char *write_event_header(char *p, struct reservation *r, uint32_t event_id)
{
    if (LIKELY(!r->extended)) {
        uint16_t id = (uint16_t)event_id;
        uint32_t ts32 = (uint32_t)r->ts;
        memcpy(p, &id, 2);
        memcpy(p + 2, &ts32, 4);
        return p + 6;
    }
    uint16_t esc = UST_EVENT_ID_EXTENDED;
    memcpy(p, &esc, 2);
    memcpy(p + 2, &event_id, 4);
    memcpy(p + 6, &r->ts, 8);
    return p + 14;
}

INLINE void ring_commit(BufferObject *b, struct reservation *r)
{
    commit_bytes(b, r->slot, r->lap, r->total);
    if (LIKELY(b->self_writer != NULL))
        STORE_RELAXED(&b->self_writer->end, 0); /* nothing in flight */
}

/* Close the current partial packet. With emit_empty, also write an empty
 * packet when events were lost since the last packet closed, so that the
 * trace carries the final discarded count. Returns 1 if a packet closed. */
static int ring_flush(BufferObject *b, int emit_empty)
{
    struct ust_shm_header *h = b->h;
    uint64_t old = LOAD_RELAXED(&h->write_offset);
    for (;;) {
        uint64_t ts = clock_now();
        uint64_t in_sb = old & b->sbmask;
        uint64_t lost = lost_for_close(h);
        if (in_sb == 0) {
            if (!emit_empty || !packet_start_allowed(b, old))
                return 0;
            /* only when the last closed packet is behind the lost count */
            if (lost == LOAD_RELAXED(&h->reported_discarded))
                return 0;
            if (!atomic_compare_exchange_weak_explicit(&h->write_offset, &old, old + b->sbsize,
                                                       memory_order_acq_rel, memory_order_relaxed))
                continue;
            uint64_t slot = (old >> b->sbshift) & (b->nsub - 1);
            uint64_t lap = old >> b->bufshift;
            char *base = phys_base(b, slot_acquire(b, slot, lap));
            open_packet(b, base, old, ts, lost);
            STORE_RELAXED(&h->reported_discarded, lost);
            commit_bytes(b, slot, lap, b->sbsize);
            return 1;
        }
        if (atomic_compare_exchange_weak_explicit(&h->write_offset, &old, old - in_sb + b->sbsize,
                                                  memory_order_acq_rel, memory_order_relaxed)) {
            close_packet(b, old, ts, lost);
            return 1;
        }
    }
}

/* ======================================================================
 * Reader side
 * ====================================================================== */

/* Find the next complete packet and take it. Returns 1 if one was taken
 * (b->held_*), 0 if none is complete yet. With force (every writer gone),
 * a closed packet whose commit count is short (a writer died between
 * reserve and commit) is taken too, cut at its committed prefix. */
/* A reader starting on a buffer another reader used (a consumer restarted
 * after a crash) cannot trust reader_spare: the dead reader may have swapped
 * it into the table, or died holding a packet. The spare is, by
 * construction, the one physical sub-buffer no slot refers to: recompute it.
 * (Writers never change a slot's physical index, only the reader does.) */
static void reader_recover(BufferObject *b)
{
    char seen[4097] = {0};
    for (uint64_t i = 0; i < b->nsub; i++) {
        uint32_t phys = SLOT_PHYS(LOAD_ACQUIRE(&b->slots[i].table));
        if (phys <= b->nsub)
            seen[phys] = 1;
    }
    for (uint64_t p = 0; p <= b->nsub; p++)
        if (!seen[p]) {
            STORE_RELAXED(&b->h->reader_spare, (uint32_t)p);
            break;
        }
    b->reader_ready = 1;
}

/* The first position still in the buffer in overwrite mode: older packets
 * have been overwritten. */
INLINE uint64_t oldest_readable(BufferObject *b, uint64_t w, uint64_t pos)
{
    if (b->h->overwrite && w > b->bufsize) {
        uint64_t oldest = (w - b->bufsize + b->sbmask) & ~b->sbmask;
        if (pos < oldest)
            return oldest;
    }
    return pos;
}

/* Is the header of the packet at `pos` one a writer finished? (Its writer may
 * have died before writing it, or another process scribbled on it.) */
INLINE int packet_header_valid(BufferObject *b, const struct ust_packet_header *ph, uint64_t pos)
{
    uint64_t len = ph->packet_size / 8;
    return ph->magic == CTF_MAGIC && ph->packet_seq_num == (pos >> b->sbshift) && len >= UST_PACKET_HEADER_SIZE &&
           len <= b->sbsize && ph->content_size <= ph->packet_size;
}

/* Append all of a packet to fd; 0, or the errno that stopped it (ENOSPC,
 * EFBIG, EIO...). A stream file must always end on a packet boundary (a cut
 * packet makes babeltrace2 reject the whole stream), so when a write stops
 * part-way, what it did write is cut off again with ftruncate. One writer per
 * file (the stream's reader), so the file's end is ours. No Python API:
 * callable with the GIL released. */
static int write_packet(int fd, const char *p, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, p + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            if (off) {
                off_t end = lseek(fd, 0, SEEK_END);
                if (end >= (off_t)off && ftruncate(fd, end - (off_t)off) < 0) {
                    /* the file keeps a cut packet: nothing more we can do */
                }
            }
            return err;
        }
        off += (size_t)n;
    }
    return 0;
}

/* A dead writer's uncommitted reservation, clipped to one packet. */
struct dead_hole {
    uint64_t start, end, ts;
    struct ust_writer *writer;
};

/* The packet at `pos` is closed (write_offset is past it) but `shortfall`
 * bytes of it were never committed. If that has lasted stall_timeout_ns
 * (or with force: every writer is gone) and the in-flight reservations of
 * dead registered writers account for exactly those bytes, fill `holes`
 * and return how many; else 0 (a live writer may still commit, or the hole
 * is not ours to explain: an unregistered writer). LTTng 2.15 answers the
 * same stall with a consumer-side watchdog; this one also knows where each
 * hole is, so the packet is repaired rather than cut. */
static int dead_writers_explain(BufferObject *b, uint64_t pos, uint64_t commit, uint64_t shortfall, int force,
                                struct dead_hole *holes)
{
    uint64_t now = clock_now();
    if (!force) {
        if (b->stuck_pos != pos || b->stuck_commit != commit) {
            b->stuck_pos = pos;
            b->stuck_commit = commit;
            b->stuck_since = now;
            return 0;
        }
        if (now - b->stuck_since < b->stall_timeout_ns)
            return 0;
    }
    b->stuck_since = now; /* look again no sooner than one timeout from now */
    uint64_t pend = pos + b->sbsize, sum = 0;
    int n = 0;
    for (int i = 0; i < UST_MAX_WRITERS; i++) {
        struct ust_writer *w = &b->h->writers[i];
        int32_t pid = LOAD_RELAXED(&w->pid);
        uint64_t start = LOAD_RELAXED(&w->start), end = LOAD_RELAXED(&w->end), ts = LOAD_RELAXED(&w->ts);
        if (pid == 0 || end <= start)
            continue;
        uint64_t lo = start > pos ? start : pos, hi = end < pend ? end : pend;
        if (hi <= lo)
            continue;
        if (!process_dead(pid))
            return 0; /* a live writer is still inside this packet */
        holes[n].start = lo;
        holes[n].end = hi;
        holes[n].ts = ts;
        holes[n].writer = (end <= pend) ? w : NULL; /* crossing into the next packet: needed there too */
        n++;
        sum += hi - lo;
    }
    return sum == shortfall ? n : 0;
}

/* Make the reader-owned packet at `pos` whole again, given the holes dead
 * writers left in it (sorted here by position): a hole over the packet
 * header means its writer opened the packet and died: the header is
 * written anew; a hole running to the packet's end means its writer was
 * closing the packet: the packet ends where that hole starts; a hole inside
 * the events is closed up by moving the events after it down (they are
 * whole: every other byte was committed). The events after a hole keep
 * their compact 32-bit timestamps, which a reader extends from the event
 * before: valid as long as the dead event's timestamp has the same high 32
 * bits as the packet's start; otherwise the packet is cut at the hole. Each
 * dead reservation counts as one discarded event. */
static void repair_packet(BufferObject *b, struct ust_packet_header *ph, uint64_t pos, struct dead_hole *holes,
                          int n)
{
    struct ust_shm_header *h = b->h;
    char *base = (char *)ph;
    uint64_t pend = pos + b->sbsize;
    for (int i = 1; i < n; i++) /* insertion sort by start: n is tiny */
        for (int j = i; j > 0 && holes[j].start < holes[j - 1].start; j--) {
            struct dead_hole t = holes[j];
            holes[j] = holes[j - 1];
            holes[j - 1] = t;
        }
    if (holes[0].start == pos) {
        /* The packet's opener died: header anew, keeping what its closer
         * (alive, or repaired below) wrote there. */
        uint64_t ts_end = ph->timestamp_end, content_bits = ph->content_size, discarded = ph->events_discarded;
        open_packet(b, base, pos, holes[0].ts, b->last_discarded);
        ph->timestamp_end = ts_end;
        ph->content_size = ph->packet_size = content_bits;
        ph->events_discarded = discarded;
        holes[0].start = pos + UST_PACKET_HEADER_SIZE;
    }
    uint64_t content = ph->content_size / 8;
    if (holes[n - 1].end == pend && holes[n - 1].start > pos) { /* its closer died */
        content = holes[n - 1].start - pos;
        ph->timestamp_end = holes[n - 1].ts;
        ph->events_discarded = b->last_discarded; /* never more than the next packet's count */
        n--;
    }
    if (content > b->sbsize || content < UST_PACKET_HEADER_SIZE)
        content = UST_PACKET_HEADER_SIZE;
    uint64_t events = 0;
    for (int i = n - 1; i >= 0; i--) { /* from the last hole: earlier offsets stay valid */
        uint64_t hs = holes[i].start - pos, he = holes[i].end - pos;
        if (he <= hs || hs < UST_PACKET_HEADER_SIZE || he > content)
            continue;
        events++;
        if ((holes[i].ts >> 32) != (ph->timestamp_begin >> 32)) {
            content = hs; /* cut: see above */
            continue;
        }
        memmove(base + hs, base + he, content - he);
        content -= he - hs;
    }
    ph->content_size = ph->packet_size = content * 8;
    atomic_fetch_add_explicit(&h->lost_dead, events, memory_order_relaxed);
}

static void forget_repaired_writers(struct dead_hole *holes, int n)
{
    for (int i = 0; i < n; i++)
        if (holes[i].writer) {
            STORE_RELAXED(&holes[i].writer->end, 0);
            STORE_RELAXED(&holes[i].writer->pid, 0);
        }
}

static int ring_get(BufferObject *b, int force)
{
    struct ust_shm_header *h = b->h;
    if (UNLIKELY(!b->reader_ready))
        reader_recover(b);
    uint64_t pos = LOAD_RELAXED(&h->consumed);
    for (;;) {
        uint64_t w = LOAD_ACQUIRE(&h->write_offset);
        pos = oldest_readable(b, w, pos); /* skip what was overwritten before we got to it */
        if (pos + b->sbsize > w) {
            STORE_RELEASE(&h->consumed, pos);
            return 0;
        }
        uint64_t slot = (pos >> b->sbshift) & (b->nsub - 1);
        uint64_t lap = pos >> b->bufshift;
        struct ust_slot *s = &b->slots[slot];
        uint64_t v = LOAD_ACQUIRE(&s->table);
        uint64_t c = LOAD_ACQUIRE(&s->commit);
        uint64_t full = (lap + 1) * b->sbsize;
        int complete = c == full && SLOT_LAP(v) == lap && !(v & SLOT_ACTIVE);
        int incomplete = !complete && c < full && c >= lap * b->sbsize && SLOT_LAP(v) == lap && !(v & SLOT_READ);
        struct dead_hole holes[UST_MAX_WRITERS];
        int nholes = incomplete ? dead_writers_explain(b, pos, c, full - c, force, holes) : 0;
        int torn = incomplete && force && nholes == 0; /* unexplained: dropped, never written torn */
        if ((complete || nholes > 0 || torn) && !(v & SLOT_READ)) {
            uint64_t spare = LOAD_RELAXED(&h->reader_spare);
            if (spare > b->nsub)
                spare = 0;
            uint64_t nv = spare | SLOT_READ | (lap << SLOT_LAP_SHIFT);
            if (!atomic_compare_exchange_strong_explicit(&s->table, &v, nv, memory_order_acq_rel,
                                                         memory_order_acquire))
                continue;
            b->held_table = v;
            b->taken_table = nv;
            struct ust_packet_header *ph = (struct ust_packet_header *)phys_base(b, SLOT_PHYS(v));
            if (nholes > 0 || torn) {
                /* The packet is ours now (swapped out): repair it, then let
                 * writers move on to the slot's next lap. */
                if (nholes > 0) {
                    repair_packet(b, ph, pos, holes, nholes);
                    forget_repaired_writers(holes, nholes);
                }
                else
                    ph->magic = 0; /* fails packet_header_valid: skipped below */
                atomic_fetch_add_explicit(&s->commit, full - c, memory_order_acq_rel);
                atomic_fetch_add_explicit(&h->packets_reclaimed, 1, memory_order_relaxed);
                b->stuck_pos = UINT64_MAX;
            }
            if (!packet_header_valid(b, ph, pos)) {
                /* Header never written (its writer died first) or scribbled:
                 * give the sub-buffer back and skip the packet. */
                STORE_RELAXED(&h->reader_spare, SLOT_PHYS(v));
                pos += b->sbsize;
                STORE_RELEASE(&h->consumed, pos);
                continue;
            }
            b->holding = 1;
            b->held_pos = pos;
            b->held_phys = SLOT_PHYS(v);
            b->held_len = ph->packet_size / 8;
            b->last_discarded = ph->events_discarded;
            STORE_RELEASE(&h->consumed, pos);
            return 1;
        }
        if (h->overwrite && (SLOT_LAP(v) > lap || c > full)) {
            pos += b->sbsize; /* the writer lapped us while we looked */
            continue;
        }
        if (SLOT_LAP(v) == lap && (v & SLOT_READ)) {
            pos += b->sbsize; /* taken by a reader that died before releasing it */
            continue;
        }
        STORE_RELEASE(&h->consumed, pos);
        return 0;
    }
}

/* Copy every complete packet still in the buffer to fd WITHOUT consuming it
 * (LTTng's snapshot): each packet is taken out of the writers' reach by the
 * usual spare swap, written, then swapped back if no writer has moved into
 * its slot meanwhile (else it simply becomes the new spare: the writer
 * already overwrites that slot's next lap). `consumed` never moves, so two
 * snapshots in a row both hold what the buffer holds. Call flush() first to
 * include the current partial packet. Returns packets written, or -errno. */
static long long ring_snapshot(BufferObject *b, int fd, unsigned long long *bytes)
{
    struct ust_shm_header *h = b->h;
    if (UNLIKELY(!b->reader_ready))
        reader_recover(b);
    uint64_t w = LOAD_ACQUIRE(&h->write_offset);
    uint64_t pos = oldest_readable(b, w, LOAD_RELAXED(&h->consumed));
    long long packets = 0;
    for (; pos + b->sbsize <= w; pos += b->sbsize) {
        uint64_t slot = (pos >> b->sbshift) & (b->nsub - 1);
        uint64_t lap = pos >> b->bufshift;
        struct ust_slot *s = &b->slots[slot];
        uint64_t v = LOAD_ACQUIRE(&s->table);
        uint64_t c = LOAD_ACQUIRE(&s->commit);
        if (c != (lap + 1) * b->sbsize || SLOT_LAP(v) != lap || (v & (SLOT_ACTIVE | SLOT_READ)))
            continue; /* incomplete, already overwritten, or being written */
        uint64_t spare = LOAD_RELAXED(&h->reader_spare);
        if (spare > b->nsub)
            spare = 0;
        uint64_t taken = spare | SLOT_READ | (lap << SLOT_LAP_SHIFT);
        if (!atomic_compare_exchange_strong_explicit(&s->table, &v, taken, memory_order_acq_rel,
                                                     memory_order_acquire))
            continue;
        const struct ust_packet_header *ph = (const struct ust_packet_header *)phys_base(b, SLOT_PHYS(v));
        uint64_t len = ph->packet_size / 8;
        int err = 0;
        if (packet_header_valid(b, ph, pos)) {
            err = write_packet(fd, (const char *)ph, len);
            if (!err) {
                packets++;
                *bytes += len;
            }
        }
        /* give it back, unless a writer has taken the slot (and our spare) meanwhile */
        uint64_t expect = taken;
        if (!atomic_compare_exchange_strong_explicit(&s->table, &expect, v, memory_order_acq_rel,
                                                     memory_order_acquire))
            STORE_RELAXED(&h->reader_spare, SLOT_PHYS(v));
        if (err)
            return -err;
    }
    return packets;
}

static void ring_put(BufferObject *b);

/* Give back the packet ring_get() took, unconsumed (its write failed): the
 * next ring_get() takes it again. Meanwhile, in discard mode, writers cannot
 * enter its slot (`consumed` did not move): when the disk stays full the
 * buffer fills and the events that do not fit are dropped and counted
 * exactly, as for a slow reader. In overwrite mode a writer may already have
 * taken the slot (and our spare) for its next lap: the packet's sub-buffer
 * then becomes the spare, as in ring_snapshot(). */
static void ring_unget(BufferObject *b)
{
    struct ust_slot *s = &b->slots[(b->held_pos >> b->sbshift) & (b->nsub - 1)];
    uint64_t expect = b->taken_table;
    if (!atomic_compare_exchange_strong_explicit(&s->table, &expect, b->held_table, memory_order_acq_rel,
                                                 memory_order_acquire))
        STORE_RELAXED(&b->h->reader_spare, b->held_phys);
    b->holding = 0;
}

/* Move this stream's complete packets to fd (at most `limit`, if >= 0),
 * adding to *packets and *bytes. Returns 0, or the errno of a failed write:
 * that packet stays in the buffer (ring_unget) and the file ends on the
 * previous packet. No Python API: called with the GIL released. */
static int drain_stream(BufferObject *b, int fd, int force, Py_ssize_t limit, unsigned long long *packets,
                        unsigned long long *bytes)
{
    Py_ssize_t n = 0;
    while ((limit < 0 || n < limit) && ring_get(b, force)) {
        size_t len = (size_t)b->held_len;
        int err = write_packet(fd, phys_base(b, b->held_phys), len);
        if (err) {
            ring_unget(b);
            return err;
        }
        ring_put(b);
        n++;
        *packets += 1;
        *bytes += len;
    }
    return 0;
}

static void ring_put(BufferObject *b)
{
    struct ust_shm_header *h = b->h;
    STORE_RELAXED(&h->reader_spare, b->held_phys);
    atomic_fetch_add_explicit(&h->packets_read, 1, memory_order_relaxed);
    STORE_RELEASE(&h->consumed, b->held_pos + b->sbsize);
    b->holding = 0;
}

/* ======================================================================
 * Buffer: the Python face of one stream
 * ====================================================================== */

static BufferObject *buffer_map(PyTypeObject *type, int fd, size_t size)
{
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return NULL;
    }
    BufferObject *b = (BufferObject *)type->tp_alloc(type, 0);
    if (!b) {
        munmap(base, size);
        close(fd);
        return NULL;
    }
    b->h = base;
    b->map_size = size;
    b->fd = fd;
    b->wakeup_fd = -1;
    b->stall_timeout_ns = 100000000ULL; /* 0.1 s: it only spares syscalls; process_dead() decides */
    b->stuck_pos = UINT64_MAX;
    return b;
}

static PyObject *Buffer_create(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"subbuf_size", "num_subbuf", "overwrite", "stream_id", "cpu", "uuid", NULL};
    unsigned long long sbsize, nsub;
    int overwrite = 0;
    unsigned int stream_id = 0, cpu = 0;
    Py_buffer uuid = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KK|$pIIy*", kwlist, &sbsize, &nsub, &overwrite, &stream_id, &cpu,
                                     &uuid))
        return NULL;
    if (!is_pow2(sbsize) || sbsize < 4096 || sbsize > (1ULL << 30)) {
        PyBuffer_Release(&uuid);
        return PyErr_Format(PyExc_ValueError, "subbuf_size must be a power of two in 4096..1G, got %llu", sbsize);
    }
    if (!is_pow2(nsub) || nsub < 2 || nsub > 4096) {
        PyBuffer_Release(&uuid);
        return PyErr_Format(PyExc_ValueError, "num_subbuf must be a power of two in 2..4096, got %llu", nsub);
    }
    if (uuid.buf && uuid.len != 16) {
        PyBuffer_Release(&uuid);
        return PyErr_Format(PyExc_ValueError, "uuid must be 16 bytes, got %zd", uuid.len);
    }
    size_t slots_offset = (sizeof(struct ust_shm_header) + 4095) & ~(size_t)4095;
    size_t data_offset = (slots_offset + nsub * sizeof(struct ust_slot) + 4095) & ~(size_t)4095;
    size_t total = data_offset + (nsub + 1) * sbsize;

    int fd = memfd_create("ust-ring", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)total) < 0) {
        PyBuffer_Release(&uuid);
        if (fd >= 0)
            close(fd);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    BufferObject *b = buffer_map(type, fd, total);
    if (!b) {
        PyBuffer_Release(&uuid);
        return NULL;
    }
    struct ust_shm_header *h = b->h;
    h->magic = UST_SHM_MAGIC;
    h->version = UST_SHM_VERSION;
    h->overwrite = overwrite ? 1 : 0;
    h->subbuf_size = sbsize;
    h->num_subbuf = nsub;
    h->slots_offset = slots_offset;
    h->data_offset = data_offset;
    h->total_size = total;
    h->stream_id = stream_id;
    h->cpu = cpu;
    if (uuid.buf)
        memcpy(h->uuid, uuid.buf, 16);
    PyBuffer_Release(&uuid);
    struct ust_slot *slots = (struct ust_slot *)((char *)h + slots_offset);
    for (uint64_t i = 0; i < nsub; i++)
        atomic_init(&slots[i].table, i); /* slot i -> physical i, lap 0 */
    atomic_init(&h->reader_spare, (uint32_t)nsub);
    if (buffer_bind(b) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return (PyObject *)b;
}

static PyObject *Buffer_attach(PyTypeObject *type, PyObject *arg)
{
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if ((size_t)st.st_size < sizeof(struct ust_shm_header))
        return PyErr_Format(PyExc_ValueError, "fd %d is too small to be a ust ring buffer", fd);
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    BufferObject *b = buffer_map(type, own, (size_t)st.st_size);
    if (!b)
        return NULL;
    if (buffer_bind(b) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return (PyObject *)b;
}

static void Buffer_dealloc(BufferObject *b)
{
    if (b->h)
        munmap(b->h, b->map_size);
    if (b->fd >= 0)
        close(b->fd);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyObject *Buffer_get_subbuf(BufferObject *b, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"force", NULL};
    int force = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$p", kwlist, &force))
        return NULL;
    if (b->holding) {
        PyErr_SetString(PyExc_RuntimeError, "get_subbuf() called twice without put_subbuf()");
        return NULL;
    }
    if (!ring_get(b, force))
        Py_RETURN_NONE;
    return PyMemoryView_FromObject((PyObject *)b);
}

/* Drain complete packets straight to a file descriptor, without the GIL:
 * an in-process consumer must not need the GIL once per packet while the
 * application's threads hold it. One reader per stream, as everywhere. */
static PyObject *Buffer_drain_to(BufferObject *b, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "force", "limit", NULL};
    int fd, force = 0;
    Py_ssize_t limit = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|$pn", kwlist, &fd, &force, &limit))
        return NULL;
    if (b->holding) {
        PyErr_SetString(PyExc_RuntimeError, "drain_to() while a packet is held: call put_subbuf() first");
        return NULL;
    }
    unsigned long long packets = 0, bytes = 0;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = drain_stream(b, fd, force, limit, &packets, &bytes);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(KKi)", packets, bytes, err);
}

static PyObject *Buffer_snapshot_to(BufferObject *b, PyObject *arg)
{
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    if (b->holding) {
        PyErr_SetString(PyExc_RuntimeError, "snapshot_to() while a packet is held: call put_subbuf() first");
        return NULL;
    }
    unsigned long long bytes = 0;
    long long r;
    Py_BEGIN_ALLOW_THREADS
    r = ring_snapshot(b, fd, &bytes);
    Py_END_ALLOW_THREADS
    if (r < 0) {
        errno = (int)-r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(LK)", r, bytes);
}

static PyObject *Buffer_put_subbuf(BufferObject *b, PyObject *unused)
{
    if (!b->holding) {
        PyErr_SetString(PyExc_RuntimeError, "put_subbuf() without a packet taken by get_subbuf()");
        return NULL;
    }
    ring_put(b);
    Py_RETURN_NONE;
}

static PyObject *Buffer_unget_subbuf(BufferObject *b, PyObject *unused)
{
    if (!b->holding) {
        PyErr_SetString(PyExc_RuntimeError, "unget_subbuf() without a packet taken by get_subbuf()");
        return NULL;
    }
    ring_unget(b);
    Py_RETURN_NONE;
}

static PyObject *Buffer_flush(BufferObject *b, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"final", NULL};
    int final = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$p", kwlist, &final))
        return NULL;
    return PyBool_FromLong(ring_flush(b, final));
}

static PyObject *Buffer_counters(BufferObject *b, PyObject *unused)
{
    struct ust_shm_header *h = b->h;
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsK}", "lost_full", (unsigned long long)LOAD_RELAXED(&h->lost_full),
                         "lost_big", (unsigned long long)LOAD_RELAXED(&h->lost_big), "lost_args",
                         (unsigned long long)LOAD_RELAXED(&h->lost_args), "lost_dead",
                         (unsigned long long)LOAD_RELAXED(&h->lost_dead), "packets_reclaimed",
                         (unsigned long long)LOAD_RELAXED(&h->packets_reclaimed), "packets_overwritten",
                         (unsigned long long)LOAD_RELAXED(&h->packets_overwritten), "packets_read",
                         (unsigned long long)LOAD_RELAXED(&h->packets_read), "write_offset",
                         (unsigned long long)LOAD_RELAXED(&h->write_offset), "consumed",
                         (unsigned long long)LOAD_RELAXED(&h->consumed));
}

static PyObject *Buffer_set_wakeup_fd(BufferObject *b, PyObject *arg)
{
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    b->wakeup_fd = fd;
    Py_RETURN_NONE;
}

static PyObject *Buffer_set_stall_timeout(BufferObject *b, PyObject *arg)
{
    double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    if (!(seconds >= 0.0 && seconds < 1e6))
        return PyErr_Format(PyExc_ValueError, "stall timeout must be in [0, 1e6) seconds, got %R", arg);
    b->stall_timeout_ns = (uint64_t)(seconds * 1e9);
    Py_RETURN_NONE;
}

static PyObject *Buffer_reader_sleep(BufferObject *b, PyObject *arg)
{
    int flag = PyObject_IsTrue(arg);
    if (flag < 0)
        return NULL;
    atomic_store_explicit(&b->h->reader_sleeping, (uint32_t)flag, memory_order_seq_cst);
    Py_RETURN_NONE;
}

static int Buffer_getbuffer(BufferObject *b, Py_buffer *view, int flags)
{
    if (!b->holding) {
        PyErr_SetString(PyExc_BufferError, "no packet is held: call get_subbuf() first");
        return -1;
    }
    return PyBuffer_FillInfo(view, (PyObject *)b, phys_base(b, b->held_phys), (Py_ssize_t)b->held_len, 1, flags);
}

static PyBufferProcs Buffer_as_buffer = {(getbufferproc)Buffer_getbuffer, NULL};

static PyObject *Buffer_get_fd(BufferObject *b, void *c) { return PyLong_FromLong(b->fd); }
static PyObject *Buffer_get_sbsize(BufferObject *b, void *c) { return PyLong_FromUnsignedLongLong(b->sbsize); }
static PyObject *Buffer_get_nsub(BufferObject *b, void *c) { return PyLong_FromUnsignedLongLong(b->nsub); }
static PyObject *Buffer_get_overwrite(BufferObject *b, void *c) { return PyBool_FromLong(b->h->overwrite); }
static PyObject *Buffer_get_cpu(BufferObject *b, void *c) { return PyLong_FromUnsignedLong(b->h->cpu); }
static PyObject *Buffer_get_stream_id(BufferObject *b, void *c) { return PyLong_FromUnsignedLong(b->h->stream_id); }
static PyObject *Buffer_get_uuid(BufferObject *b, void *c) { return PyBytes_FromStringAndSize((char *)b->h->uuid, 16); }

static PyGetSetDef Buffer_getset[] = {
    {"fd", (getter)Buffer_get_fd, NULL, "the memfd of the shared memory", NULL},
    {"subbuf_size", (getter)Buffer_get_sbsize, NULL, NULL, NULL},
    {"num_subbuf", (getter)Buffer_get_nsub, NULL, NULL, NULL},
    {"overwrite", (getter)Buffer_get_overwrite, NULL, NULL, NULL},
    {"cpu", (getter)Buffer_get_cpu, NULL, NULL, NULL},
    {"stream_id", (getter)Buffer_get_stream_id, NULL, NULL, NULL},
    {"uuid", (getter)Buffer_get_uuid, NULL, NULL, NULL},
    {NULL},
};

static PyMethodDef Buffer_methods[] = {
    {"create", (PyCFunction)(void (*)(void))Buffer_create, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "create(subbuf_size, num_subbuf, *, overwrite=False, stream_id=0, cpu=0, uuid=b'') -> Buffer"},
    {"attach", (PyCFunction)Buffer_attach, METH_O | METH_CLASS, "attach(fd) -> Buffer: map a buffer created elsewhere"},
    {"get_subbuf", (PyCFunction)(void (*)(void))Buffer_get_subbuf, METH_VARARGS | METH_KEYWORDS,
     "get_subbuf(*, force=False) -> memoryview | None: take the next complete packet"},
    {"put_subbuf", (PyCFunction)Buffer_put_subbuf, METH_NOARGS, "release the packet taken by get_subbuf()"},
    {"snapshot_to", (PyCFunction)Buffer_snapshot_to, METH_O,
     "snapshot_to(fd) -> (packets, bytes): copy the complete packets to fd without consuming them"},
    {"drain_to", (PyCFunction)(void (*)(void))Buffer_drain_to, METH_VARARGS | METH_KEYWORDS,
     "drain_to(fd, *, force=False, limit=-1) -> (packets, bytes, errno): write complete packets to fd, GIL "
     "released; a packet whose write fails (errno != 0) stays in the buffer and the file ends on a packet"},
    {"unget_subbuf", (PyCFunction)Buffer_unget_subbuf, METH_NOARGS,
     "give back the packet taken by get_subbuf() without consuming it (its write failed)"},
    {"flush", (PyCFunction)(void (*)(void))Buffer_flush, METH_VARARGS | METH_KEYWORDS,
     "flush(*, final=False) -> bool: close the current partial packet"},
    {"counters", (PyCFunction)Buffer_counters, METH_NOARGS, "lost and read counters"},
    {"set_wakeup_fd", (PyCFunction)Buffer_set_wakeup_fd, METH_O, "this process's eventfd for reader wake-ups"},
    {"reader_sleep", (PyCFunction)Buffer_reader_sleep, METH_O, "announce that the reader sleeps (or not)"},
    {"set_stall_timeout", (PyCFunction)Buffer_set_stall_timeout, METH_O,
     "seconds a closed packet may stay incomplete before the reader checks whether its writers died (default 0.1)"},
    {NULL},
};

static PyTypeObject Buffer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ust._ring.Buffer",
    .tp_basicsize = sizeof(BufferObject),
    .tp_dealloc = (destructor)Buffer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One stream (channel x CPU) of a ring buffer in shared memory.",
    .tp_methods = Buffer_methods,
    .tp_getset = Buffer_getset,
    .tp_as_buffer = &Buffer_as_buffer,
};

/* ======================================================================
 * Streams written out once the interpreter is gone
 * ====================================================================== */

/* An embedded session still running when the interpreter exits writes out
 * what it has from an atexit handler, but objects finalized after that
 * (module teardown, the last collection) may still record events. The
 * session hands each stream here with its file's descriptor and leaves its
 * tracepoints attached; once the interpreter has finalized (Py_AtExit: no
 * Python, no other thread of ours writing), the partial packets are closed
 * and the rest written out, in C. Each Buffer stays referenced for ever, so
 * it is never deallocated (unmapped); its C state is copied, so its object's
 * memory is not needed after finalization. */
#define MAX_EXIT_STREAMS 4096
static BufferObject *exit_streams[MAX_EXIT_STREAMS];
static int exit_fds[MAX_EXIT_STREAMS];
static int n_exit_streams;

static void drain_exit_streams(void)
{
    for (int i = 0; i < n_exit_streams; i++) {
        BufferObject *b = exit_streams[i];
        int fd = exit_fds[i];
        /* Close the partial packet, then (final) add an empty packet if a
         * lost count is not reported yet. Every writer is gone: short
         * packets are taken too (force). */
        for (int final = 0; final <= 1; final++) {
            ring_flush(b, final);
            while (ring_get(b, 1)) {
                int err = write_packet(fd, phys_base(b, b->held_phys), (size_t)b->held_len);
                ring_put(b);
                if (err) /* a full disk at exit: the file still ends on a packet boundary */
                    break;
            }
        }
        close(fd);
        free(b);
    }
    n_exit_streams = 0;
}

static PyObject *mod_drain_at_exit(PyObject *m, PyObject *args)
{
    BufferObject *b;
    int fd;
    if (!PyArg_ParseTuple(args, "O!i", &Buffer_Type, &b, &fd))
        return NULL;
    if (b->holding)
        return PyErr_Format(PyExc_RuntimeError, "drain_at_exit() while a packet is held");
    if (n_exit_streams == MAX_EXIT_STREAMS)
        return PyErr_Format(PyExc_RuntimeError, "more than %d streams to drain at exit", MAX_EXIT_STREAMS);
    if (n_exit_streams == 0 && Py_AtExit(drain_exit_streams) < 0)
        return PyErr_Format(PyExc_RuntimeError, "no room left for an exit function");
    BufferObject *copy = malloc(sizeof *copy);
    if (!copy)
        return PyErr_NoMemory();
    memcpy(copy, b, sizeof *copy);
    Py_INCREF(b); /* never released: the mapping outlives the interpreter */
    exit_streams[n_exit_streams] = copy;
    exit_fds[n_exit_streams] = fd;
    n_exit_streams++;
    Py_RETURN_NONE;
}

/* ======================================================================
 * Channel: the writer side of one channel (a Buffer per CPU + contexts)
 * ====================================================================== */

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
} ChannelObject;

static PyTypeObject Channel_Type;

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

static PyTypeObject Channel_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ust._ring.Channel",
    .tp_basicsize = sizeof(ChannelObject),
    .tp_dealloc = (destructor)Channel_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Channel(buffers, context=(), py_context=()): the writer side of one channel.",
    .tp_init = (initproc)Channel_init,
    .tp_new = PyType_GenericNew,
    .tp_getset = Channel_getset,
};

/* ======================================================================
 * Tracepoint: field specs, argument validation, serialization, the call
 * ====================================================================== */

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

/* Strict mode (ust.strict(), UST_STRICT=1): a call whose arguments do not fit
 * raises, as it did before the tracer-never-raises policy. */
static int strict_mode;
static PyObject *ArgumentWarning; /* ust.TracepointArgumentWarning */

/* One argument, converted. No pointer into a mutable object is kept here
 * while Python may run: str and bytes are immutable (the caller holds them);
 * array/sequence elements are converted into memory of the call's own; a
 * bytearray's pointer and size are read only after the last Python code of
 * the call has run (take_bytearrays). */
typedef struct {
    union {
        int64_t i;
        uint64_t u;
        double d;
    } v;
    const char *ptr;      /* str, bytes: the data; array/sequence: the converted elements */
    Py_ssize_t len;       /* string: bytes without NUL; bytes: length; array/seq: elements */
    PyObject *bytearray;  /* borrowed; ptr/len set by take_bytearrays */
    char *heap;           /* elements converted into PyMem memory (freed by release_values) */
} ArgValue;

/* Room for converted array/sequence elements, on the stack for small ones. */
struct scratch {
    size_t used;
    int bytearrays; /* bytearray arguments still to measure */
    char buf[512];
};

NOINLINE PyObject *arg_error(TracepointObject *tp, FieldSpec *f, PyObject *exc, const char *what, PyObject *got)
{
    if (got)
        PyErr_Format(exc, "%U: field '%U' %s, got %.80s", tp->name, f->name, what, Py_TYPE(got)->tp_name);
    else
        PyErr_Format(exc, "%U: field '%U' %s", tp->name, f->name, what);
    return NULL;
}

/* Convert one numeric scalar; 0 on success, -1 with an exception set. */
static int convert_scalar(TracepointObject *tp, FieldSpec *f, uint8_t code, uint8_t size, uint8_t is_signed,
                          PyObject *labels, PyObject *o, ArgValue *out)
{
    switch (code) {
    case F_ENUM:
        if (PyUnicode_Check(o)) {
            PyObject *val = labels ? PyDict_GetItemWithError(labels, o) : NULL;
            if (!val) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_ValueError, "%U: field '%U' has no enum label %R", tp->name, f->name, o);
                return -1;
            }
            o = val;
        }
        /* then the value as an integer of the container type */
        __attribute__((fallthrough));
    case F_SINT:
    case F_UINT: {
        if (!PyLong_Check(o)) {
            arg_error(tp, f, PyExc_TypeError, "expects an int", o);
            return -1;
        }
        if (is_signed || size < 8) {
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
            if (overflow || (v == -1 && PyErr_Occurred()))
                goto range;
            if (is_signed) {
                int64_t lo = size == 8 ? INT64_MIN : -((int64_t)1 << (size * 8 - 1));
                int64_t hi = size == 8 ? INT64_MAX : ((int64_t)1 << (size * 8 - 1)) - 1;
                if (v < lo || v > hi)
                    goto range;
            } else if (v < 0 || (uint64_t)v > ((1ULL << (size * 8)) - 1)) {
                goto range;
            }
            out->v.i = v;
        } else {
            unsigned long long v = PyLong_AsUnsignedLongLong(o);
            if (v == (unsigned long long)-1 && PyErr_Occurred())
                goto range;
            out->v.u = v;
        }
        return 0;
    range:
        PyErr_Clear();
        PyErr_Format(PyExc_OverflowError, "%U: field '%U' value %R does not fit in %s%d", tp->name, f->name, o,
                     is_signed ? "int" : "uint", size * 8);
        return -1;
    }
    case F_FLOAT:
        if (PyFloat_Check(o)) {
            out->v.d = PyFloat_AS_DOUBLE(o);
            return 0;
        }
        if (PyLong_Check(o)) {
            out->v.d = PyLong_AsDouble(o);
            if (out->v.d == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                PyErr_Format(PyExc_OverflowError, "%U: field '%U' int too large for a float", tp->name, f->name);
                return -1;
            }
            return 0;
        }
        arg_error(tp, f, PyExc_TypeError, "expects a float", o);
        return -1;
    case F_BOOL:
        if (!PyLong_Check(o)) { /* bool is an int subclass */
            arg_error(tp, f, PyExc_TypeError, "expects a bool", o);
            return -1;
        }
        {
            int truth = PyObject_IsTrue(o); /* an int subclass's __bool__ may run Python, or fail */
            if (truth < 0)
                return -1;
            out->v.u = (uint64_t)truth;
        }
        return 0;
    }
    PyErr_Format(PyExc_SystemError, "%U: field '%U' has an unknown type code", tp->name, f->name);
    return -1;
}

INLINE void store_scalar(char *p, uint8_t code, uint8_t size, const ArgValue *v)
{
    if (code == F_FLOAT) {
        if (size == 4) {
            float x = (float)v->v.d;
            memcpy(p, &x, 4);
        } else {
            memcpy(p, &v->v.d, 8);
        }
    } else {
        /* little-endian: the low bytes come first. Fixed-size copies compile
         * to single moves; a variable-size memcpy became `rep movs`, which
         * cost a third of the call. */
        switch (size) {
        case 1: *p = (char)v->v.u; break;
        case 2: { uint16_t x = (uint16_t)v->v.u; memcpy(p, &x, 2); break; }
        case 4: { uint32_t x = (uint32_t)v->v.u; memcpy(p, &x, 4); break; }
        default: memcpy(p, &v->v.u, 8);
        }
    }
}

/* Pass 1: validate and convert every argument; return the payload size
 * without the bytearrays' (see take_bytearrays), or -1 with an exception.
 * May run Python (an int subclass's __bool__, an enum label's __eq__). */
static int64_t validate_args(TracepointObject *tp, PyObject *const *args, ArgValue *vals, struct scratch *sc)
{
    int64_t size = 0;
    for (int i = 0; i < tp->nfields; i++) {
        FieldSpec *f = &tp->fields[i];
        PyObject *o = args[i];
        ArgValue *v = &vals[i];
        switch (f->code) {
        case F_SINT:
        case F_UINT:
        case F_FLOAT:
        case F_BOOL:
        case F_ENUM:
            if (convert_scalar(tp, f, f->code, f->size, f->is_signed, f->labels, o, v) < 0)
                return -1;
            size += f->size;
            break;
        case F_STRING: {
            if (!PyUnicode_Check(o)) {
                arg_error(tp, f, PyExc_TypeError, "expects a str", o);
                return -1;
            }
            if (PyUnicode_GET_LENGTH(o) == 0) { /* common (a probe's unfit/exception fields): no UTF-8 lookup */
                v->ptr = "";
                v->len = 0;
                size += 1;
                break;
            }
            Py_ssize_t len;
            const char *s = PyUnicode_AsUTF8AndSize(o, &len);
            if (!s) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%U: field '%U' is not encodable as UTF-8", tp->name, f->name);
                return -1;
            }
            const char *nul = memchr(s, 0, (size_t)len); /* CTF strings end at NUL */
            v->ptr = s;
            v->len = nul ? nul - s : len;
            size += v->len + 1;
            break;
        }
        case F_BYTES:
            if (PyBytes_Check(o)) {
                v->ptr = PyBytes_AS_STRING(o);
                v->len = PyBytes_GET_SIZE(o);
                size += 4 + v->len;
            } else if (PyByteArray_Check(o)) {
                v->bytearray = o; /* measured once no more Python runs */
                sc->bytearrays++;
            } else {
                arg_error(tp, f, PyExc_TypeError, "expects bytes or bytearray", o);
                return -1;
            }
            break;
        case F_ARRAY:
        case F_SEQUENCE: {
            int is_list = PyList_Check(o);
            if (!is_list && !PyTuple_Check(o)) {
                arg_error(tp, f, PyExc_TypeError, "expects a list or tuple", o);
                return -1;
            }
            Py_ssize_t n = Py_SIZE(o);
            if (f->code == F_ARRAY && n != f->length) {
                PyErr_Format(PyExc_ValueError, "%U: field '%U' expects %u elements, got %zd", tp->name, f->name,
                             f->length, n);
                return -1;
            }
            if (n > 0xFFFFFFF) {
                PyErr_Format(PyExc_ValueError, "%U: field '%U' sequence is too long", tp->name, f->name);
                return -1;
            }
            size_t bytes = (size_t)n * f->elem_size;
            char *dst;
            if (bytes <= sizeof sc->buf - sc->used) {
                dst = sc->buf + sc->used;
                sc->used += bytes;
            } else {
                dst = v->heap = PyMem_Malloc(bytes);
                if (!dst) {
                    PyErr_NoMemory();
                    return -1;
                }
            }
            /* Convert into the call's own memory now: the elements are never
             * read again. An element's __bool__ may run Python that resizes
             * the list, so its size is checked and the item held at each step. */
            for (Py_ssize_t k = 0; k < n; k++) {
                if (is_list && k >= PyList_GET_SIZE(o)) {
                    PyErr_Format(PyExc_ValueError, "%U: field '%U' changed size during the call", tp->name,
                                 f->name);
                    return -1;
                }
                PyObject *item = Py_NewRef(is_list ? PyList_GET_ITEM(o, k) : PyTuple_GET_ITEM(o, k));
                ArgValue tmp;
                int rc = convert_scalar(tp, f, f->elem_code, f->elem_size, f->elem_signed, NULL, item, &tmp);
                Py_DECREF(item);
                if (rc < 0)
                    return -1;
                store_scalar(dst + (size_t)k * f->elem_size, f->elem_code, f->elem_size, &tmp);
            }
            v->ptr = dst;
            v->len = n;
            size += (f->code == F_SEQUENCE ? 4 : 0) + (int64_t)bytes;
            break;
        }
        default:
            PyErr_SetString(PyExc_SystemError, "corrupt field spec");
            return -1;
        }
    }
    return size;
}

/* Pass 2: write the converted values; cannot fail, runs no Python. */
static char *write_fields(TracepointObject *tp, ArgValue *vals, char *p)
{
    for (int i = 0; i < tp->nfields; i++) {
        FieldSpec *f = &tp->fields[i];
        ArgValue *v = &vals[i];
        switch (f->code) {
        case F_STRING:
            if (v->len)
                memcpy(p, v->ptr, (size_t)v->len);
            p[v->len] = 0;
            p += v->len + 1;
            break;
        case F_BYTES: {
            uint32_t n = (uint32_t)v->len;
            memcpy(p, &n, 4);
            memcpy(p + 4, v->ptr, n);
            p += 4 + n;
            break;
        }
        case F_ARRAY:
        case F_SEQUENCE: {
            if (f->code == F_SEQUENCE) {
                uint32_t n = (uint32_t)v->len;
                memcpy(p, &n, 4);
                p += 4;
            }
            size_t bytes = (size_t)v->len * f->elem_size;
            memcpy(p, v->ptr, bytes);
            p += bytes;
            break;
        }
        default:
            store_scalar(p, f->code, f->size, v);
            p += f->size;
        }
    }
    return p;
}

static void release_values(TracepointObject *tp, ArgValue *vals)
{
    for (int i = 0; i < tp->nfields; i++)
        if (vals[i].heap) {
            PyMem_Free(vals[i].heap);
            vals[i].heap = NULL;
        }
}

/* Read the bytearrays' pointers and sizes; return the bytes they add. The
 * caller runs no Python from here until the data is copied, so no other
 * thread can resize or free them in between (they hold no GIL). */
static int64_t take_bytearrays(TracepointObject *tp, ArgValue *vals)
{
    int64_t size = 0;
    for (int i = 0; i < tp->nfields; i++)
        if (vals[i].bytearray) {
            vals[i].ptr = PyByteArray_AS_STRING(vals[i].bytearray);
            vals[i].len = PyByteArray_GET_SIZE(vals[i].bytearray);
            size += 4 + vals[i].len;
        }
    return size;
}

/* Python context values: each callable returns a str (anything else, or an
 * exception, records an empty string: the tracer never raises into the app).
 * Runs Python: called before any pointer into an argument is taken. */
static int64_t python_context_values(ChannelObject *ch, PyObject **strs)
{
    int64_t size = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(ch->py_contexts);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallNoArgs(PyTuple_GET_ITEM(ch->py_contexts, i));
        if (!r || !PyUnicode_Check(r) || !PyUnicode_AsUTF8(r)) {
            PyErr_Clear();
            Py_XDECREF(r);
            r = PyUnicode_FromString("");
        }
        strs[i] = r;
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(r, &len);
        const char *nul = memchr(s, 0, (size_t)len);
        size += (nul ? nul - s : len) + 1;
    }
    return size;
}

INLINE char *write_context(ChannelObject *ch, char *p, uint32_t cpu, PyObject **strs)
{
    if (ch->ctx_needs_ids)
        ensure_ids();
    for (int i = 0; i < ch->n_ctx; i++)
        p = write_one_context(p, ch->ctx_kind[i], ch->ctx_perf_slot[i], cpu);
    Py_ssize_t n = PyTuple_GET_SIZE(ch->py_contexts);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(strs[i], &len);
        const char *nul = memchr(s, 0, (size_t)len);
        if (nul)
            len = nul - s;
        memcpy(p, s, (size_t)len);
        p[len] = 0;
        p += len + 1;
    }
    return p;
}

/* Reserve, write and commit one event into a's channel. `size` is the
 * fields' and the Python contexts' bytes. Runs no Python. */
NOINLINE void record_into(TracepointObject *tp, Attachment *a, ArgValue *vals, int64_t size, PyObject **strs)
{
    ChannelObject *ch = a->channel;
    uint32_t cpu = current_cpu();
    BufferObject *b = ch->bufs[cpu % (uint32_t)ch->nbufs];
    struct reservation r;
    if (ring_reserve(b, (uint64_t)(size + ch->ctx_fixed_size), a->event_id, &r) == 0) {
        char *p = write_event_header(r.dst, &r, a->event_id);
        p = write_context(ch, p, cpu, strs);
        write_fields(tp, vals, p);
        ring_commit(b, &r);
    }
}

/* Record the converted arguments into every attachment whose filter keeps
 * the event. Everything that may run Python (filters, Python contexts) runs
 * first, for every attachment; then the bytearrays are measured and the
 * events copied with no Python in between. */
static void record_all(TracepointObject *tp, AttachList *al, PyObject *const *args, Py_ssize_t nargs,
                       ArgValue *vals, int64_t size, int bytearrays)
{
    int n = al->n;
    Attachment *only = &al->a[0];
    if (LIKELY(n == 1 && !only->filter && !PyTuple_GET_SIZE(only->channel->py_contexts))) {
        /* the common case: no Python to run at all */
        if (bytearrays)
            size += take_bytearrays(tp, vals);
        record_into(tp, only, vals, size, NULL);
        return;
    }
    PyObject *strs[MAX_ATTACH][MAX_PY_CONTEXTS];
    int64_t ctx_size[MAX_ATTACH]; /* the Python contexts' bytes, -1: filtered out */
    for (int i = 0; i < n; i++) {
        Attachment *a = &al->a[i];
        ctx_size[i] = -1;
        if (a->filter) {
            PyObject *r = PyObject_Vectorcall(a->filter, args, (size_t)nargs, NULL);
            int keep = r ? PyObject_IsTrue(r) : 0;
            Py_XDECREF(r);
            if (keep <= 0) {
                PyErr_Clear(); /* a filter that fails is false, as in LTTng */
                continue;
            }
        }
        ctx_size[i] = PyTuple_GET_SIZE(a->channel->py_contexts) ? python_context_values(a->channel, strs[i]) : 0;
    }
    /* No Python runs from here until the last copy. */
    if (bytearrays)
        size += take_bytearrays(tp, vals);
    for (int i = 0; i < n; i++)
        if (ctx_size[i] >= 0)
            record_into(tp, &al->a[i], vals, size + ctx_size[i], strs[i]);
    for (int i = 0; i < n; i++)
        if (ctx_size[i] >= 0)
            for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(al->a[i].channel->py_contexts); k++)
                Py_DECREF(strs[i][k]);
}

/* An enabled tracepoint was called with arguments that do not fit its
 * fields (an exception is set). Strict mode: return -1, the exception goes
 * to the caller. Otherwise the application must not fail because it is
 * traced: the event is counted as discarded (lost_args) in the buffer it
 * would have gone to in every attached channel — filters are not run on
 * arguments that did not convert — and the first time, a
 * TracepointArgumentWarning says why. Returns 0 with no exception set. */
NOINLINE int argument_mismatch(TracepointObject *tp, AttachList *al)
{
    if (strict_mode || tp->raises)
        return -1;
    uint32_t cpu = current_cpu();
    for (int i = 0; i < al->n; i++) {
        ChannelObject *ch = al->a[i].channel;
        count_lost(&ch->bufs[cpu % (uint32_t)ch->nbufs]->h->lost_args);
    }
    if (tp->warned) {
        PyErr_Clear();
        return 0;
    }
    tp->warned = 1;
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *why = exc ? PyObject_Str(exc) : NULL;
    if (why && PyErr_WarnFormat(ArgumentWarning, 1,
                                "%U; the event was not recorded but counted as discarded (further ones from "
                                "this tracepoint are counted silently; UST_STRICT=1 or ust.strict(True) raises "
                                "instead)",
                                why) < 0)
        PyErr_Clear(); /* warnings turned into errors: still never raise into the application */
    PyErr_Clear();
    Py_XDECREF(why);
    Py_XDECREF(exc);
    return 0;
}

INLINE void list_enter(AttachList *al)
{
#ifndef Py_GIL_DISABLED
    al->readers++;
#endif
}

static void attachlist_free(AttachList *al);

/* The call is done with al: free it if it was replaced meanwhile. Freeing
 * may run finalizers, so a pending exception is kept aside. */
INLINE void list_leave(AttachList *al)
{
#ifndef Py_GIL_DISABLED
    if (--al->readers == 0 && UNLIKELY(al->retired)) {
        PyObject *exc = PyErr_GetRaisedException();
        attachlist_free(al);
        PyErr_SetRaisedException(exc);
    }
#endif
}

NOINLINE PyObject *tracepoint_record(TracepointObject *tp, AttachList *al, PyObject *const *args, size_t nargsf,
                                     PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    ArgValue vals[MAX_FIELDS];
    struct scratch sc;
    int64_t size = -1;
    int rc = 0;
    memset(vals, 0, sizeof(ArgValue) * (size_t)tp->nfields);
    sc.used = 0;
    sc.bytearrays = 0;
    list_enter(al);
    if (UNLIKELY(kwnames && PyTuple_GET_SIZE(kwnames)))
        PyErr_Format(PyExc_TypeError, "%U() takes positional arguments only", tp->name);
    else if (UNLIKELY(nargs != tp->nfields))
        PyErr_Format(PyExc_TypeError, "%U() takes %d arguments (%zd given)", tp->name, tp->nfields, nargs);
    else
        size = validate_args(tp, args, vals, &sc);
    if (LIKELY(size >= 0))
        record_all(tp, al, args, nargs, vals, size, sc.bytearrays);
    else
        rc = argument_mismatch(tp, al);
    release_values(tp, vals);
    list_leave(al);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tracepoint_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TracepointObject *tp = (TracepointObject *)self;
    AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire);
    if (LIKELY(al == NULL))
        Py_RETURN_NONE;
    return tracepoint_record(tp, al, args, nargsf, kwnames);
}

static PyTypeObject Tracepoint_Type;

/* The entry points of record_api.h. A non-Tracepoint object is called as a Python callable. */
static int api_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r;
    if (UNLIKELY(!Py_IS_TYPE(self, &Tracepoint_Type))) {
        r = PyObject_Vectorcall(self, args, (size_t)nargs, NULL);
    } else {
        TracepointObject *tp = (TracepointObject *)self;
        AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire); /* as the vectorcall */
        if (LIKELY(al == NULL))
            return 0;
        r = tracepoint_record(tp, al, args, (size_t)nargs, NULL);
    }
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The whole-program tracer's ids: one uint64 (or int64) field. In the common case (one attachment, no
 * filter, no Python context) the value goes straight into the ring: no int object, no conversion back.
 * No Python runs between the load of the list and the commit, so the list cannot be retired meanwhile
 * and the readers count is not needed. Anything else takes the general path with an int object. */
static int api_record_u64(PyObject *self, uint64_t value)
{
    if (LIKELY(Py_IS_TYPE(self, &Tracepoint_Type))) {
        TracepointObject *tp = (TracepointObject *)self;
        AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire); /* as the vectorcall */
        if (LIKELY(al == NULL))
            return 0;
        FieldSpec *f = &tp->fields[0];
        Attachment *only = &al->a[0];
        if (LIKELY(tp->nfields == 1 && f->size == 8 &&
                   (f->code == F_UINT || (f->code == F_SINT && value <= (uint64_t)INT64_MAX)) && al->n == 1 &&
                   !only->filter && !PyTuple_GET_SIZE(only->channel->py_contexts))) {
            ArgValue v = {.v.u = value};
            record_into(tp, only, &v, 8, NULL);
            return 0;
        }
    }
    PyObject *o = PyLong_FromUnsignedLongLong(value);
    if (o == NULL)
        return -1;
    int rc = api_record(self, &o, 1);
    Py_DECREF(o);
    return rc;
}

static struct ust_record_api record_api = {UST_RECORD_API_VERSION, api_record, api_record_u64};

static int parse_spec(FieldSpec *f, PyObject *spec)
{
    /* (name, code, size_bytes, signed, elem_code, elem_size, elem_signed, length, labels) */
    PyObject *name, *labels;
    int code, size, sgn, ecode, esize, esgn;
    unsigned int length;
    if (!PyArg_ParseTuple(spec, "UiiiiiiIO", &name, &code, &size, &sgn, &ecode, &esize, &esgn, &length, &labels))
        return -1;
    if (code < F_SINT || code > F_ENUM || size < 0 || size > 8 || esize < 0 || esize > 8) {
        PyErr_Format(PyExc_ValueError, "bad field spec for %R", name);
        return -1;
    }
    f->name = Py_NewRef(name);
    f->code = (uint8_t)code;
    f->size = (uint8_t)size;
    f->is_signed = (uint8_t)sgn;
    f->elem_code = (uint8_t)ecode;
    f->elem_size = (uint8_t)esize;
    f->elem_signed = (uint8_t)esgn;
    f->length = length;
    f->labels = labels == Py_None ? NULL : Py_NewRef(labels);
    if ((code == F_ARRAY || code == F_SEQUENCE) && (ecode < F_SINT || ecode > F_ENUM || esize == 0 ||
                                                    ecode == F_STRING || ecode == F_BYTES)) {
        PyErr_Format(PyExc_ValueError, "bad element type for %R", name);
        return -1;
    }
    if ((code <= F_BOOL || code == F_ENUM) && !(size == 1 || size == 2 || size == 4 || size == 8)) {
        PyErr_Format(PyExc_ValueError, "bad size for %R", name);
        return -1;
    }
    return 0;
}

static PyObject *Tracepoint_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "fields", "owner", NULL};
    PyObject *name, *fields, *owner = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UO!|O", kwlist, &name, &PyTuple_Type, &fields, &owner))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    if (n > MAX_FIELDS)
        return PyErr_Format(PyExc_ValueError, "%U: at most %d fields, got %zd", name, MAX_FIELDS, n);
    TracepointObject *tp = (TracepointObject *)type->tp_alloc(type, 0);
    if (!tp)
        return NULL;
    tp->vectorcall = Tracepoint_vectorcall;
    tp->name = Py_NewRef(name);
    tp->owner = Py_NewRef(owner);
    atomic_init(&tp->attached, NULL);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (parse_spec(&tp->fields[i], PyTuple_GET_ITEM(fields, i)) < 0) {
            Py_DECREF(tp);
            return NULL;
        }
        tp->nfields = (int)i + 1;
    }
    return (PyObject *)tp;
}

static void attachlist_free(AttachList *al)
{
    for (int i = 0; i < al->n; i++) {
        Py_XDECREF(al->a[i].channel);
        Py_XDECREF(al->a[i].filter);
    }
    PyMem_Free(al);
}

/* Publish a new attachment list (NULL: disabled) and retire the old one:
 * freed now if no call is using it, else by the last call out (list_leave).
 * Called from Python (agent/session threads) with the GIL; serialized by
 * UPDATE_BEGIN. The release store pairs with the writers' acquire load: a
 * writer that sees the new list sees it fully built. */
static int publish(TracepointObject *tp, AttachList *nl)
{
    if (nl && nl->n == 0) {
        PyMem_Free(nl);
        nl = NULL;
    }
    AttachList *old = atomic_exchange_explicit(&tp->attached, nl, memory_order_acq_rel);
    if (old) {
#ifdef Py_GIL_DISABLED
        (void)old; /* no grace period without the GIL: a writer may still read it */
#else
        old->retired = 1;
        if (old->readers == 0)
            attachlist_free(old);
#endif
    }
    return 0;
}

static AttachList *copy_list(TracepointObject *tp, ChannelObject *skip)
{
    AttachList *old = atomic_load_explicit(&tp->attached, memory_order_acquire);
    AttachList *nl = PyMem_Calloc(1, sizeof *nl);
    if (!nl)
        return (AttachList *)PyErr_NoMemory();
    if (old)
        for (int i = 0; i < old->n; i++) {
            if (old->a[i].channel == skip)
                continue;
            nl->a[nl->n] = old->a[i];
            Py_INCREF(nl->a[nl->n].channel);
            Py_XINCREF(nl->a[nl->n].filter);
            nl->n++;
        }
    return nl;
}

/* attach/detach copy the current list and publish a new one: two of them at
 * once would lose an update. With the GIL each runs whole; without it, a
 * per-object critical section serializes them (writers never take it). */
#ifdef Py_GIL_DISABLED
#define UPDATE_BEGIN(tp) Py_BEGIN_CRITICAL_SECTION(tp)
#define UPDATE_END Py_END_CRITICAL_SECTION()
#else
#define UPDATE_BEGIN(tp) {
#define UPDATE_END }
#endif

static PyObject *Tracepoint_attach(TracepointObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"channel", "event_id", "filter", NULL};
    ChannelObject *ch;
    unsigned int event_id;
    PyObject *filter = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!I|O", kwlist, &Channel_Type, &ch, &event_id, &filter))
        return NULL;
    if (filter != Py_None && !PyCallable_Check(filter))
        return PyErr_Format(PyExc_TypeError, "filter must be callable or None");
    int rc = -1;
    UPDATE_BEGIN(tp);
    AttachList *nl = copy_list(tp, ch);
    if (nl && nl->n >= MAX_ATTACH) {
        attachlist_free(nl);
        PyErr_Format(PyExc_ValueError, "%U: attached to too many channels (max %d)", tp->name, MAX_ATTACH);
    } else if (nl) {
        nl->a[nl->n].channel = (ChannelObject *)Py_NewRef(ch);
        nl->a[nl->n].event_id = event_id;
        nl->a[nl->n].filter = filter == Py_None ? NULL : Py_NewRef(filter);
        nl->n++;
        rc = publish(tp, nl);
    }
    UPDATE_END;
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tracepoint_detach(TracepointObject *tp, PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, &Channel_Type))
        return PyErr_Format(PyExc_TypeError, "detach() expects a Channel");
    int rc = -1;
    UPDATE_BEGIN(tp);
    AttachList *nl = copy_list(tp, (ChannelObject *)arg);
    if (nl)
        rc = publish(tp, nl);
    UPDATE_END;
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tracepoint_detach_all(TracepointObject *tp, PyObject *unused)
{
    int rc;
    UPDATE_BEGIN(tp);
    rc = publish(tp, NULL);
    UPDATE_END;
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Tracepoint_get_enabled(TracepointObject *tp, void *c)
{
    return PyBool_FromLong(atomic_load_explicit(&tp->attached, memory_order_acquire) != NULL);
}
static PyObject *Tracepoint_get_name(TracepointObject *tp, void *c) { return Py_NewRef(tp->name); }
static PyObject *Tracepoint_get_owner(TracepointObject *tp, void *c) { return Py_NewRef(tp->owner); }
static PyObject *Tracepoint_get_channels(TracepointObject *tp, void *c)
{
    AttachList *al = atomic_load_explicit(&tp->attached, memory_order_acquire);
    PyObject *l = PyList_New(0);
    if (!l || !al)
        return l;
    list_enter(al); /* a collection here may run Python that detaches */
    for (int i = 0; i < al->n; i++) {
        PyObject *t = Py_BuildValue("(OI)", al->a[i].channel, al->a[i].event_id);
        if (!t || PyList_Append(l, t) < 0) {
            Py_XDECREF(t);
            Py_CLEAR(l);
            break;
        }
        Py_DECREF(t);
    }
    list_leave(al);
    return l;
}

static void Tracepoint_dealloc(TracepointObject *tp)
{
    for (int i = 0; i < tp->nfields; i++) {
        Py_XDECREF(tp->fields[i].name);
        Py_XDECREF(tp->fields[i].labels);
    }
    Py_XDECREF(tp->name);
    Py_XDECREF(tp->owner);
    /* No call is running: each holds a reference to the tracepoint. */
    AttachList *al = atomic_exchange(&tp->attached, NULL);
    if (al)
        attachlist_free(al);
    Py_TYPE(tp)->tp_free((PyObject *)tp);
}

static PyObject *Tracepoint_repr(TracepointObject *tp)
{
    return PyUnicode_FromFormat("<ust.Tracepoint %U (%s)>", tp->name,
                                atomic_load(&tp->attached) ? "enabled" : "disabled");
}

static PyMethodDef Tracepoint_methods[] = {
    {"attach", (PyCFunction)(void (*)(void))Tracepoint_attach, METH_VARARGS | METH_KEYWORDS,
     "attach(channel, event_id, filter=None): record into channel"},
    {"detach", (PyCFunction)Tracepoint_detach, METH_O, "detach(channel): stop recording into channel"},
    {"detach_all", (PyCFunction)Tracepoint_detach_all, METH_NOARGS, "stop recording anywhere"},
    {NULL},
};

static PyObject *Tracepoint_get_raises(TracepointObject *tp, void *c) { return PyBool_FromLong(tp->raises); }
static int Tracepoint_set_raises(TracepointObject *tp, PyObject *v, void *c)
{
    int on = v ? PyObject_IsTrue(v) : 0;
    if (on < 0)
        return -1;
    tp->raises = on;
    return 0;
}

static PyGetSetDef Tracepoint_getset[] = {
    {"raises", (getter)Tracepoint_get_raises, (setter)Tracepoint_set_raises,
     "arguments that do not fit raise, whatever the strict mode (for ust's own callers with a slow path)", NULL},
    {"enabled", (getter)Tracepoint_get_enabled, NULL, "recording into at least one channel", NULL},
    {"name", (getter)Tracepoint_get_name, NULL, NULL, NULL},
    {"handle", (getter)Tracepoint_get_owner, NULL, "the Python-side declaration", NULL},
    {"channels", (getter)Tracepoint_get_channels, NULL, "[(channel, event_id)]", NULL},
    {NULL},
};

static PyTypeObject Tracepoint_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ust.Tracepoint",
    .tp_basicsize = sizeof(TracepointObject),
    .tp_dealloc = (destructor)Tracepoint_dealloc,
    .tp_repr = (reprfunc)Tracepoint_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A typed tracepoint: call it with the field values to record an event.",
    .tp_vectorcall_offset = offsetof(TracepointObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = Tracepoint_new,
    .tp_methods = Tracepoint_methods,
    .tp_getset = Tracepoint_getset,
};

/* ======================================================================
 * Module
 * ====================================================================== */

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

/* context_value(kind_name): the calling thread's value of a C context, read
 * from the same caches the fast path writes from (filters use it). */
static PyObject *mod_context_value(PyObject *m, PyObject *name)
{
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    int kind = -1;
    for (int k = 0; s && k < K_PERF; k++)
        if (!strcmp(s, ctx_kinds[k].name))
            kind = k;
    if (kind < 0) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "unknown C context %R", name);
        return NULL;
    }
    char buf[17];
    ensure_ids();
    write_one_context(buf, (uint8_t)kind, 0, current_cpu());
    if (kind == K_PROCNAME)
        return PyUnicode_DecodeUTF8(buf, (Py_ssize_t)strnlen(buf, 17), "replace");
    if (ctx_kinds[kind].size == 8) {
        uint64_t v;
        memcpy(&v, buf, 8);
        return PyLong_FromUnsignedLongLong(v);
    }
    if (kind >= K_VUID) {
        uint32_t v;
        memcpy(&v, buf, 4);
        return PyLong_FromUnsignedLong(v);
    }
    int32_t v;
    memcpy(&v, buf, 4);
    return PyLong_FromLong(v);
}

/* perf_value(type, config): the calling thread's count (0 if it cannot count) */
static PyObject *mod_perf_value(PyObject *m, PyObject *args)
{
    unsigned int type;
    unsigned long long config;
    if (!PyArg_ParseTuple(args, "IK", &type, &config))
        return NULL;
    int slot = perf_slot(type, config);
    if (slot < 0)
        return PyErr_Format(PyExc_ValueError, "at most %d different perf counters", MAX_PERF);
    return PyLong_FromUnsignedLongLong(read_thread_counter(slot));
}

static PyObject *mod_process_changed(PyObject *m, PyObject *unused)
{
    atomic_fetch_add(&facts_epoch, 1);
    Py_RETURN_NONE;
}

/* perf_check(type, config): open and close a counter of the calling thread;
 * raises OSError when this machine cannot count it. */
static PyObject *mod_perf_check(PyObject *m, PyObject *args)
{
    unsigned int type;
    unsigned long long config;
    if (!PyArg_ParseTuple(args, "IK", &type, &config))
        return NULL;
    int fd = perf_open(type, config);
    if (fd < 0) {
        errno = -fd;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    close(fd);
    Py_RETURN_NONE;
}

static PyObject *mod_set_strict(PyObject *m, PyObject *arg)
{
    int was = strict_mode;
    if (arg != Py_None) {
        int on = PyObject_IsTrue(arg);
        if (on < 0)
            return NULL;
        strict_mode = on;
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

static struct PyModuleDef ring_module = {PyModuleDef_HEAD_INIT, "ust._ring._ring",
                                         "The ring buffer and the tracepoint call.", -1, module_methods};

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

PyMODINIT_FUNC PyInit__ring(void)
{
    if (PyType_Ready(&Buffer_Type) < 0 || PyType_Ready(&Channel_Type) < 0 || PyType_Ready(&Tracepoint_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&ring_module);
    if (!m)
        return NULL;
#ifdef Py_GIL_DISABLED
    PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED);
#endif
    refresh_process_facts();
    test_pause_configure();
    static int atfork_done;
    if (!atfork_done) {
        pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
        atfork_done = 1;
    }
    if (PyModule_AddObjectRef(m, "Buffer", (PyObject *)&Buffer_Type) < 0 ||
        PyModule_AddObjectRef(m, "Channel", (PyObject *)&Channel_Type) < 0 ||
        PyModule_AddObjectRef(m, "Tracepoint", (PyObject *)&Tracepoint_Type) < 0 ||
        PyModule_AddIntConstant(m, "PACKET_HEADER_SIZE", (long)UST_PACKET_HEADER_SIZE) < 0 ||
        add_context_kinds(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *api = PyCapsule_New(&record_api, UST_RECORD_API_CAPSULE, NULL);
    int api_rc = api ? PyModule_AddObjectRef(m, "_record_api", api) : -1;
    Py_XDECREF(api);
    if (api_rc < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (!ArgumentWarning)
        ArgumentWarning = PyErr_NewExceptionWithDoc(
            "ust.TracepointArgumentWarning",
            "An enabled tracepoint was called with arguments that do not fit its fields: the event was not "
            "recorded, and was counted as discarded.",
            PyExc_RuntimeWarning, NULL);
    if (!ArgumentWarning || PyModule_AddObjectRef(m, "TracepointArgumentWarning", ArgumentWarning) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
