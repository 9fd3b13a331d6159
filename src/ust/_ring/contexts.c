/* ======================================================================
 * Context values written by C: the caches and perf counters behind
 * contexts.h (which says how they are kept current)
 * ====================================================================== */

#include "contexts.h"

const struct ctx_kind_info ctx_kinds[N_KINDS] = {
    [K_VPID] = {"vpid", 4}, [K_PID] = {"pid", 4}, [K_VTID] = {"vtid", 4}, [K_TID] = {"tid", 4},
    [K_VPPID] = {"vppid", 4}, [K_PPID] = {"ppid", 4}, [K_PTHREAD_ID] = {"pthread_id", 8},
    [K_PROCNAME] = {"procname", 17}, [K_CPU_ID] = {"cpu_id", 4},
    [K_VUID] = {"vuid", 4}, [K_VEUID] = {"veuid", 4}, [K_VSUID] = {"vsuid", 4},
    [K_VGID] = {"vgid", 4}, [K_VEGID] = {"vegid", 4}, [K_VSGID] = {"vsgid", 4},
    [K_CGROUP_NS] = {"cgroup_ns", 8}, [K_IPC_NS] = {"ipc_ns", 8}, [K_MNT_NS] = {"mnt_ns", 8},
    [K_NET_NS] = {"net_ns", 8}, [K_PID_NS] = {"pid_ns", 8}, [K_TIME_NS] = {"time_ns", 8},
    [K_USER_NS] = {"user_ns", 8}, [K_UTS_NS] = {"uts_ns", 8}, [K_PERF] = {"perf", 8},
};

static const char *const ns_files[N_NS] = {"cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"};

_Atomic uint64_t facts_epoch = 1; /* moved by fork and process_changed() */
_Atomic uint64_t ids_epoch;       /* the epoch the values below were read at (0: never) */
static pthread_mutex_t ids_lock = PTHREAD_MUTEX_INITIALIZER;
_Atomic uint32_t cached_ids[K_VSGID - K_VUID + 1]; /* vuid veuid vsuid vgid vegid vsgid */
_Atomic uint64_t cached_ns[N_NS];
_Atomic int32_t cached_outer_pid; /* the pid in the initial pid namespace (NSpid's first) */
_Thread_local uint64_t tls_outer_tid_generation;
_Thread_local int32_t tls_outer_tid;

/* The first number of the "NSpid:" line of a /proc status file (the id in the
 * outermost pid namespace this process can see), or `fallback`. */
int32_t read_outer_id(const char *path, int32_t fallback)
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
SLOW void ensure_ids_slow(void)
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

/* -- perf counters ------------------------------------------------------ */

/* perf_lock guards the slots and the list of threads' counters (Channel_init
 * may run without the GIL on a free-threaded build; threads end at any time).
 * Slots are appended, never changed nor removed: a writer reads the slot of a
 * channel it got through Tracepoint.attach's release store. */
static pthread_mutex_t perf_lock = PTHREAD_MUTEX_INITIALIZER;
static struct perf_counter_conf perf_confs[MAX_PERF];
static int n_perf_confs;

static struct thread_perf *all_thread_perf;
_Thread_local struct thread_perf *tls_perf;
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
int perf_open(uint32_t type, uint64_t config)
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

SLOW int read_thread_counter_slow(int slot)
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

/* The slot of a counter, registered on first use; -1 when all are taken. */
int perf_slot(uint32_t type, uint64_t config)
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
void before_fork(void)
{
    pthread_mutex_lock(&ids_lock);
    pthread_mutex_lock(&perf_lock);
}

void after_fork_in_parent(void)
{
    pthread_mutex_unlock(&perf_lock);
    pthread_mutex_unlock(&ids_lock);
}

void after_fork_in_child(void)
{
    refresh_process_facts();
    atomic_fetch_add(&fork_generation, 1);
    atomic_fetch_add(&facts_epoch, 1);
    forget_thread_perf_after_fork();
    pthread_mutex_unlock(&perf_lock);
    pthread_mutex_unlock(&ids_lock);
}

/* context_value(kind_name): the calling thread's value of a C context, read
 * from the same caches the fast path writes from (filters use it). */
PyObject *mod_context_value(PyObject *m, PyObject *name)
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
PyObject *mod_perf_value(PyObject *m, PyObject *args)
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

PyObject *mod_process_changed(PyObject *m, PyObject *unused)
{
    atomic_fetch_add(&facts_epoch, 1);
    Py_RETURN_NONE;
}

/* perf_check(type, config): open and close a counter of the calling thread;
 * raises OSError when this machine cannot count it. */
PyObject *mod_perf_check(PyObject *m, PyObject *args)
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
