/*
 * ust.kernel._ftrace: one ftrace ring-buffer page -> the events of one CTF packet.
 *
 * The kernel domain's hot path (docs/kernel.md): the consumer reads whole
 * pages from per_cpu/cpuN/trace_pipe_raw and hands each to
 * Converter.page(); no event is looked at in Python. ust/kernel/pages.py
 * is the reference implementation in Python (same layout, same results;
 * tests/test_kernel.py compares them), and documents the page format.
 *
 * A Converter holds, per ftrace event id, the event's plan: a list of
 * (op, offset, arg) copying the record's fields to the CTF payload
 * (ust/kernel/formats.py, OP_*). The page is untrusted input in the sense
 * that every length and offset in it is bounds-checked against the page
 * and the record before use; a record that does not fit ends the page.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define OP_COPY 0
#define OP_STRING 1
#define OP_BYTES 2
/* derived values (formats.py lttng_layout): each writes 4 bytes */
#define OP_TGID 3        /* the int32 thread id at offset -> its process id (task_context), int32 */
#define OP_INT32_MINUS 4 /* the int32 at offset minus arg (kernel prio -> lttng-modules' prio) */
#define OP_RWBS 5        /* char[arg] block rwbs text at offset -> lttng-modules' RWBS_FLAG_* mask, uint32 */
#define OP_CHILD_TGID 6  /* fork's child tid at offset, parent tid at arg -> the child's process (formats.py) */
/* the u64 user pointer at offset -> the path the thread passed there, a string: the name ust.kernel.paths
 * paired it with (its thread's path probe record, on whatever CPU), given to page()/page_prio() in the
 * page's order, else "" (not known) */
#define OP_PATH 7
#define MAX_PATH_PROBES 32

#define PAGE_HEADER 16
#define COMMIT_MASK ((1ULL << 30) - 1)
#define TYPE_PADDING 29
#define TYPE_TIME_EXTEND 30
#define TYPE_TIME_STAMP 31
#define TS_MSB_SHIFT 59
#define MAX_EVENT_ID 65535

typedef struct {
    uint8_t op;
    uint32_t offset;
    uint32_t arg;
} PlanOp;

typedef struct {
    int nops;
    PlanOp *ops;
    int32_t path_off; /* the offset of its OP_PATH pointer (an open call's entry), -1: none */
} Plan;

#define COMM_LEN 16 /* the kernel's TASK_COMM_LEN: the procname context is char[16] */

/* The prio context's value when ust cannot know it (lttng-modules, which reads
 * the task, never writes it: its values are task_prio(), -101..39). */
#define PRIO_UNKNOWN INT32_MIN
#define MAX_RT_PRIO 100 /* task_prio() = p->prio - MAX_RT_PRIO, as lttng-modules */
#define MAX_SETTERS 8
#define TRACK_SWITCH 1
#define TRACK_PI 2
#define TRACK_SETTER 3 /* a system call that may change priorities: its targets' become unknown */

typedef struct {
    PyObject_HEAD
    Plan *plans; /* MAX_EVENT_ID entries, nops < 0: unknown id */
    int with_tid;
    /* pid/procname contexts: tasks maps tid -> (tgid, comm bytes); a tid not in
     * it is passed to task_of, which returns that tuple (and may fill tasks) */
    int with_pid, with_procname;
    PyObject *tasks, *task_of;
    /* the previous record's thread and its answer, within one page() call
     * (records come in runs of one thread; the tasks dict may change between calls) */
    int have_last;
    int32_t last_tid, last_tgid;
    char last_comm[COMM_LEN];
    /* the prio context (docs/kernel.md): a record carries no priority, so each
     * CPU's current task and its prio are followed from the records that say
     * them (prio_track), exact or PRIO_UNKNOWN; see page_prio() */
    int with_prio;
    uint8_t *track; /* MAX_EVENT_ID entries: TRACK_* for the records that tell or change a prio */
    uint32_t switch_prev_prio, switch_next_pid, switch_next_prio; /* sched_switch field offsets */
    uint32_t pi_pid, pi_newprio;                                  /* sched_pi_setprio field offsets */
    uint32_t setter_which[MAX_SETTERS], setter_who[MAX_SETTERS];  /* per setter slot (which: 0 = none) */
    uint16_t setter_id[MAX_SETTERS];
    int nsetters;
    /* file names (ust/kernel/paths.py): a path probe's record (a uprobe at a libc function taking a
     * path: the thread, the pointer, the string read there) is never written; scan() hands it out with
     * the open calls' entries so that Python pairs them over every CPU in time order, and page() takes
     * the names so found. probe_slot: MAX_EVENT_ID entries, slot + 1. */
    long last_records; /* records the last page converted held (its `records`: stats' "read events" counts them) */
    uint8_t *probe_slot;
    uint32_t probe_ptr[MAX_PATH_PROBES], probe_path[MAX_PATH_PROBES]; /* field offsets (path: its data_loc) */
} Converter;

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* A growable output buffer; ensure() reserves room for n more bytes. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} Out;

static int ensure(Out *o, size_t n)
{
    if (o->len + n <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 8192;
    while (cap < o->len + n)
        cap *= 2;
    uint8_t *d = PyMem_Realloc(o->data, cap);
    if (!d)
        return -1;
    o->data = d;
    o->cap = cap;
    return 0;
}

static void put(Out *o, const void *src, size_t n) { memcpy(o->data + o->len, src, n); o->len += n; }

static void Converter_dealloc(Converter *self)
{
    if (self->plans) {
        for (int i = 0; i < MAX_EVENT_ID; i++)
            PyMem_Free(self->plans[i].ops);
        PyMem_Free(self->plans);
    }
    PyMem_Free(self->track);
    PyMem_Free(self->probe_slot);
    Py_CLEAR(self->tasks);
    Py_CLEAR(self->task_of);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The prio configuration (ust.kernel.prio.PrioConfig.for_converter): a tuple
 * (switch: (id, prev_prio, next_pid, next_prio) | None, pi: (id, pid, newprio) | None,
 *  setters: ((id, which, who), ...)) of event ids and field offsets; `which` 0: the
 * call has no `which` argument (its `who` is a thread id, 0 the caller). Offsets
 * are checked against each record's length when read. */
static int prio_init(Converter *self, PyObject *prio)
{
    PyObject *sw, *pi, *setters;
    if (!PyArg_ParseTuple(prio, "OOO", &sw, &pi, &setters))
        return -1;
    self->track = PyMem_Calloc(MAX_EVENT_ID, 1);
    if (!self->track)
        return PyErr_NoMemory(), -1;
    unsigned int id, a, b, c;
    if (sw != Py_None) {
        if (!PyArg_ParseTuple(sw, "IIII", &id, &a, &b, &c))
            return -1;
        if (id >= MAX_EVENT_ID || a > 65536 || b > 65536 || c > 65536)
            return PyErr_SetString(PyExc_ValueError, "bad sched_switch offsets"), -1;
        self->track[id] = TRACK_SWITCH;
        self->switch_prev_prio = a, self->switch_next_pid = b, self->switch_next_prio = c;
    }
    if (pi != Py_None) {
        if (!PyArg_ParseTuple(pi, "III", &id, &a, &b))
            return -1;
        if (id >= MAX_EVENT_ID || a > 65536 || b > 65536)
            return PyErr_SetString(PyExc_ValueError, "bad sched_pi_setprio offsets"), -1;
        self->track[id] = TRACK_PI;
        self->pi_pid = a, self->pi_newprio = b;
    }
    PyObject *seq = PySequence_Fast(setters, "setters must be a sequence");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_SETTERS) {
        Py_DECREF(seq);
        return PyErr_SetString(PyExc_ValueError, "too many priority-setting calls"), -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "III", &id, &a, &b) || id >= MAX_EVENT_ID
            || a > 65536 || b > 65536) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "bad setter offsets");
            Py_DECREF(seq);
            return -1;
        }
        self->track[id] = TRACK_SETTER;
        self->setter_id[i] = (uint16_t)id, self->setter_which[i] = a, self->setter_who[i] = b;
    }
    self->nsetters = (int)n;
    Py_DECREF(seq);
    self->with_prio = 1;
    return 0;
}

/* A 32-bit field of a record, or `otherwise` when the record is too short for it. */
static int32_t field32(const uint8_t *rec, uint32_t dlen, uint32_t off, int32_t otherwise)
{
    int32_t v;
    if (off == 0 || (uint64_t)off + 4 > dlen)
        return otherwise;
    memcpy(&v, rec + off, 4);
    return v;
}

/* The thread a priority-setting call targets: its tid, -1 for a set of threads
 * (setpriority's process group or user), -2 when none (an unknown call). */
static int32_t setter_target(const Converter *self, uint16_t id, const uint8_t *rec, uint32_t dlen)
{
    for (int i = 0; i < self->nsetters; i++) {
        if (self->setter_id[i] != id)
            continue;
        int32_t caller = field32(rec, dlen, 4, -1);
        if (self->setter_which[i] && field32(rec, dlen, self->setter_which[i], -1) != 0)
            return -1; /* PRIO_PGRP, PRIO_USER (or unreadable): any thread */
        int32_t who = field32(rec, dlen, self->setter_who[i], -1);
        return who == 0 ? caller : who < 0 ? -1 : who;
    }
    return -2;
}

/* The path probes (paths=((id, pointer offset, path data_loc offset), ...)). */
static int paths_init(Converter *self, PyObject *probes)
{
    PyObject *seq = PySequence_Fast(probes, "paths must be a sequence of (id, pointer offset, path offset)");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_PATH_PROBES) {
        Py_DECREF(seq);
        return PyErr_SetString(PyExc_ValueError, "too many path probes"), -1;
    }
    self->probe_slot = PyMem_Calloc(MAX_EVENT_ID, 1);
    if (!self->probe_slot) {
        Py_DECREF(seq);
        return PyErr_NoMemory(), -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned int id, ptr, path;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "III", &id, &ptr, &path) || id >= MAX_EVENT_ID
            || ptr > 65536 || path > 65536) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "bad path probe offsets");
            Py_DECREF(seq);
            return -1;
        }
        self->probe_slot[id] = (uint8_t)(i + 1);
        self->probe_ptr[i] = ptr, self->probe_path[i] = path;
    }
    Py_DECREF(seq);
    return 0;
}

/* Converter(plans: dict[int, tuple[tuple[int, int, int], ...]], with_tid: bool,
 *           with_pid: bool, with_procname: bool, tasks: dict | None, task_of: callable | None,
 *           prio: tuple | None, paths: tuple | None) */
static int Converter_init(Converter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"plans", "with_tid", "with_pid", "with_procname", "tasks", "task_of", "prio", "paths",
                             NULL};
    PyObject *plans, *tasks = Py_None, *task_of = Py_None, *prio = Py_None, *paths = Py_None;
    int with_tid = 1, with_pid = 0, with_procname = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|pppOOOO", kwlist, &PyDict_Type, &plans, &with_tid, &with_pid,
                                     &with_procname, &tasks, &task_of, &prio, &paths))
        return -1;
    if ((with_pid || with_procname) && (!PyDict_Check(tasks) || !PyCallable_Check(task_of)))
        return PyErr_SetString(PyExc_TypeError, "the pid/procname contexts need a tasks dict and task_of"), -1;
    if (self->plans)
        return PyErr_SetString(PyExc_RuntimeError, "Converter already initialized"), -1;
    self->plans = PyMem_Calloc(MAX_EVENT_ID, sizeof(Plan));
    if (!self->plans)
        return PyErr_NoMemory(), -1;
    for (int i = 0; i < MAX_EVENT_ID; i++)
        self->plans[i].nops = -1, self->plans[i].path_off = -1;
    self->with_tid = with_tid;
    self->with_pid = with_pid;
    self->with_procname = with_procname;
    Py_INCREF(tasks);
    Py_XSETREF(self->tasks, tasks);
    Py_INCREF(task_of);
    Py_XSETREF(self->task_of, task_of);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(plans, &pos, &key, &value)) {
        long id = PyLong_AsLong(key);
        if (id == -1 && PyErr_Occurred())
            return -1;
        if (id < 0 || id >= MAX_EVENT_ID)
            return PyErr_Format(PyExc_ValueError, "event id %ld out of range", id), -1;
        PyObject *seq = PySequence_Fast(value, "a plan is a sequence of (op, offset, arg)");
        if (!seq)
            return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        PlanOp *ops = PyMem_Calloc(n ? n : 1, sizeof(PlanOp));
        if (!ops) {
            Py_DECREF(seq);
            return PyErr_NoMemory(), -1;
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            unsigned int op, off, arg;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, j), "III", &op, &off, &arg) || op > OP_PATH
                || off > 65536 || arg > 65536) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "bad plan op");
                PyMem_Free(ops);
                Py_DECREF(seq);
                return -1;
            }
            if ((op == OP_TGID || op == OP_CHILD_TGID) && (!PyDict_Check(tasks) || !PyCallable_Check(task_of))) {
                PyErr_SetString(PyExc_TypeError, "a process id field needs a tasks dict and task_of");
                PyMem_Free(ops);
                Py_DECREF(seq);
                return -1;
            }
            ops[j].op = (uint8_t)op;
            ops[j].offset = off;
            ops[j].arg = arg;
        }
        Py_DECREF(seq);
        PyMem_Free(self->plans[id].ops);
        self->plans[id].ops = ops;
        self->plans[id].nops = (int)n;
        self->plans[id].path_off = -1;
        for (Py_ssize_t j = 0; j < n; j++)
            if (ops[j].op == OP_PATH) {
                self->plans[id].path_off = (int32_t)ops[j].offset; /* (a system call has one path argument here) */
                break;
            }
    }
    if (paths != Py_None && paths_init(self, paths) < 0)
        return -1;
    return prio == Py_None ? 0 : prio_init(self, prio);
}

/* A path probe's record (slot: its probe's): its pointer and the path's bytes up to their NUL; 0 when the
 * record is too short for its fields (ignored, as if not recorded). */
static int probe_fields(const Converter *self, int slot, const uint8_t *rec, uint32_t dlen, uint64_t *ptr,
                        const uint8_t **path, uint32_t *n)
{
    uint32_t ptr_off = self->probe_ptr[slot], loc_off = self->probe_path[slot];
    if ((uint64_t)ptr_off + 8 > dlen || (uint64_t)loc_off + 4 > dlen)
        return 0;
    uint32_t loc = rd32(rec + loc_off), start = loc & 0xFFFF, len = loc >> 16;
    if ((uint64_t)start + len > dlen)
        return 0;
    const uint8_t *nul = len ? memchr(rec + start, 0, len) : NULL;
    *ptr = rd64(rec + ptr_off), *path = rec + start, *n = nul ? (uint32_t)(nul - (rec + start)) : len;
    return 1;
}

/* The (tgid, comm) of a thread: from tasks, else from task_of(tid). On success
 * *tgid and comm (COMM_LEN bytes, zero-padded) are set; -1 with an exception
 * set when task_of fails or returns something else than (int, bytes). */
static int task_context(Converter *self, int32_t tid, int32_t *tgid, char comm[COMM_LEN])
{
    if (self->have_last && self->last_tid == tid) {
        *tgid = self->last_tgid;
        memcpy(comm, self->last_comm, COMM_LEN);
        return 0;
    }
    PyObject *key = PyLong_FromLong(tid);
    if (!key)
        return -1;
    PyObject *entry = PyDict_GetItemWithError(self->tasks, key); /* borrowed */
    if (entry)
        Py_INCREF(entry);
    else if (!PyErr_Occurred())
        entry = PyObject_CallOneArg(self->task_of, key);
    Py_DECREF(key);
    if (!entry)
        return -1;
    PyObject *pid_obj, *comm_obj;
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2
        || !PyLong_Check(pid_obj = PyTuple_GET_ITEM(entry, 0)) || !PyBytes_Check(comm_obj = PyTuple_GET_ITEM(entry, 1))) {
        Py_DECREF(entry);
        PyErr_SetString(PyExc_TypeError, "task_of must return (tgid: int, comm: bytes)");
        return -1;
    }
    long pid = PyLong_AsLong(pid_obj);
    if (pid == -1 && PyErr_Occurred()) {
        Py_DECREF(entry);
        return -1;
    }
    *tgid = (int32_t)pid;
    Py_ssize_t n = PyBytes_GET_SIZE(comm_obj);
    if (n > COMM_LEN - 1)
        n = COMM_LEN - 1; /* always NUL-terminated */
    memset(comm, 0, COMM_LEN);
    memcpy(comm, PyBytes_AS_STRING(comm_obj), (size_t)n);
    Py_DECREF(entry);
    self->have_last = 1;
    self->last_tid = tid;
    self->last_tgid = *tgid;
    memcpy(self->last_comm, comm, COMM_LEN);
    return 0;
}

/* lttng-modules' RWBS_FLAG_* mask of ftrace's rwbs text (at most n bytes,
 * NUL-terminated or not): the kernel's blk_fill_rwbs writes an optional F
 * (preflush), the operation (W, R, D, DE for secure erase, F for flush, N),
 * then F (FUA), A (read-ahead), S (sync), M (meta). formats.rwbs_mask is the
 * same in Python. */
static uint32_t rwbs_mask(const uint8_t *t, uint32_t n)
{
    const uint8_t *nul = n ? memchr(t, 0, n) : NULL;
    if (nul)
        n = (uint32_t)(nul - t);
    uint32_t mask = 0, i = 0;
    if (n >= 2 && t[0] == 'F' && memchr("WRDFN", t[1], 5)) {
        mask |= 1u << 10; /* PREFLUSH */
        i = 1;
    }
    if (i >= n)
        return mask;
    switch (t[i]) {
    case 'W': mask |= 1u << 0; break;
    case 'R': mask |= 1u << 2; break;
    case 'D':
        mask |= 1u << 1;
        if (i + 1 < n && t[i + 1] == 'E')
            mask |= 1u << 7, i++; /* SECURE */
        break;
    case 'F': mask |= 1u << 8; break;
    case 'N': break;
    default: return mask; /* not an rwbs text: what was understood */
    }
    for (i++; i < n; i++) {
        switch (t[i]) {
        case 'F': mask |= 1u << 9; break;
        case 'A': mask |= 1u << 3; break;
        case 'S': mask |= 1u << 5; break;
        case 'M': mask |= 1u << 6; break;
        }
    }
    return mask;
}

/* Append one record's CTF event (header, contexts tid/pid/procname/prio in this
 * order, payload). rec/dlen: the record (common fields first), already checked
 * to lie inside the page. Returns -1 on error (memory, or task_of's). */
static int emit(Converter *self, Out *o, const Plan *plan, uint16_t id, uint64_t ts, uint64_t prev,
                const uint8_t *rec, uint32_t dlen, int32_t prio, const char *path_s, Py_ssize_t path_n)
{
    int32_t tgid = 0;
    char comm[COMM_LEN];
    if (self->with_pid || self->with_procname) {
        int32_t tid;
        memcpy(&tid, rec + 4, 4);
        if (task_context(self, tid, &tgid, comm) < 0)
            return -1;
    }
    size_t need = 14 + 4 + 4 + COMM_LEN + 4;
    for (int i = 0; i < plan->nops; i++) {
        const PlanOp *op = &plan->ops[i];
        need += op->op == OP_COPY ? op->arg : op->op == OP_PATH ? 1 + (size_t)path_n : op->op >= OP_TGID ? 4
                                                                                                     : 5 + dlen;
    }
    if (ensure(o, need))
        return -1;
    if (ts - prev < (1ULL << 32)) {
        /* compact header: the reader extends the low 32 bits from the previous time */
        uint32_t low = (uint32_t)ts;
        put(o, &id, 2);
        put(o, &low, 4);
    } else {
        uint16_t ext = 65535;
        uint32_t id32 = id;
        put(o, &ext, 2);
        put(o, &id32, 4);
        put(o, &ts, 8);
    }
    if (self->with_tid)
        put(o, rec + 4, 4);
    if (self->with_pid)
        put(o, &tgid, 4);
    if (self->with_procname)
        put(o, comm, COMM_LEN);
    if (self->with_prio)
        put(o, &prio, 4);
    for (int i = 0; i < plan->nops; i++) {
        const PlanOp *op = &plan->ops[i];
        if (op->op == OP_COPY) {
            /* a record shorter than its format (should not happen): zeros for what is missing */
            uint32_t have = op->offset < dlen ? dlen - op->offset : 0;
            if (have > op->arg)
                have = op->arg;
            put(o, rec + op->offset, have);
            memset(o->data + o->len, 0, op->arg - have);
            o->len += op->arg - have;
            continue;
        }
        if (op->op == OP_TGID || op->op == OP_CHILD_TGID || op->op == OP_INT32_MINUS) {
            /* a record shorter than its format reads 0; arithmetic wraps as int32 */
            int32_t value = op->offset + 4 <= dlen ? (int32_t)rd32(rec + op->offset) : 0;
            char unused_comm[COMM_LEN];
            if (op->op == OP_TGID) {
                if (task_context(self, value, &value, unused_comm) < 0)
                    return -1;
            } else if (op->op == OP_CHILD_TGID) {
                /* a thread (in its parent's process) or a new process (tgid = its tid): nothing else */
                int32_t parent = op->arg + 4 <= dlen ? (int32_t)rd32(rec + op->arg) : 0, parent_tgid, child_tgid;
                if (task_context(self, parent, &parent_tgid, unused_comm) < 0
                    || task_context(self, value, &child_tgid, unused_comm) < 0)
                    return -1;
                if (child_tgid == parent_tgid)
                    value = parent_tgid;
            } else {
                value = (int32_t)((uint32_t)value - op->arg);
            }
            put(o, &value, 4);
            continue;
        }
        if (op->op == OP_PATH) {
            const char *nul = path_n ? memchr(path_s, 0, (size_t)path_n) : NULL;
            size_t len = nul ? (size_t)(nul - path_s) : (size_t)path_n;
            put(o, path_s, len);
            o->data[o->len++] = 0;
            continue;
        }
        if (op->op == OP_RWBS) {
            uint32_t have = op->offset < dlen ? dlen - op->offset : 0;
            uint32_t mask = rwbs_mask(rec + op->offset, have < op->arg ? have : op->arg);
            put(o, &mask, 4);
            continue;
        }
        uint32_t loc = op->offset + 4 <= dlen ? rd32(rec + op->offset) : 0;
        uint32_t start = (loc & 0xFFFF) + (op->arg ? op->offset + 4 : 0);
        uint32_t n = loc >> 16;
        if ((uint64_t)start + n > dlen)
            n = 0, start = 0;
        if (op->op == OP_STRING) {
            const uint8_t *nul = n ? memchr(rec + start, 0, n) : NULL;
            uint32_t len = nul ? (uint32_t)(nul - (rec + start)) : n;
            put(o, rec + start, len);
            o->data[o->len++] = 0;
        } else {
            put(o, &n, 4);
            put(o, rec + start, n);
        }
    }
    return 0;
}

/* Walking a page's records. Every offset and length is checked against the
 * page's commit; a record that does not fit ends the walk. */
typedef struct {
    const uint8_t *page;
    size_t end, pos;
    uint64_t page_ts, ts;
    int missed; /* RB_MISSED_EVENTS: events were lost before this page */
} Walk;

static int walk_start(Walk *w, const uint8_t *page, size_t plen)
{
    if (plen < PAGE_HEADER) {
        PyErr_Format(PyExc_ValueError, "page of %zu bytes is shorter than its header", plen);
        return -1;
    }
    uint64_t commit = rd64(page + 8);
    uint64_t size = commit & COMMIT_MASK;
    if (PAGE_HEADER + size > plen) {
        PyErr_Format(PyExc_ValueError, "page commit %llu runs past the page", (unsigned long long)size);
        return -1;
    }
    w->page = page;
    w->page_ts = w->ts = rd64(page);
    w->end = PAGE_HEADER + size;
    w->pos = PAGE_HEADER;
    w->missed = (commit >> 31) & 1;
    return 0;
}

/* The next record: 1 with *rec, *dlen and w->ts its time; 0 at the end. */
static int walk_next(Walk *w, const uint8_t **rec, uint32_t *dlen_out)
{
    const uint8_t *page = w->page;
    size_t end = w->end;
    while (w->pos + 4 <= end) {
        size_t pos = w->pos;
        uint32_t word = rd32(page + pos);
        uint32_t type_len = word & 31, delta = word >> 5;
        if (type_len == TYPE_PADDING) {
            if (delta == 0 || pos + 8 > end)
                return 0; /* the rest of the page is empty */
            w->pos = pos + 4 + (size_t)rd32(page + pos + 4);
            continue;
        }
        if (type_len == TYPE_TIME_EXTEND || type_len == TYPE_TIME_STAMP) {
            if (pos + 8 > end)
                return 0;
            uint64_t t = (uint64_t)delta | ((uint64_t)rd32(page + pos + 4) << 27);
            if (type_len == TYPE_TIME_EXTEND) {
                w->ts += t;
            } else {
                /* an absolute time: its top bits are those of the page's stamp */
                uint64_t msb = w->page_ts >> TS_MSB_SHIFT << TS_MSB_SHIFT;
                if (msb) {
                    t |= msb;
                    if (t < w->page_ts)
                        t += 1ULL << TS_MSB_SHIFT;
                }
                w->ts = t;
            }
            w->pos = pos + 8;
            continue;
        }
        size_t data, dlen, next;
        if (type_len == 0) {
            if (pos + 8 > end)
                return 0;
            uint32_t length = rd32(page + pos + 4);
            if (length < 4)
                return 0;
            data = pos + 8;
            dlen = length - 4;
            next = pos + 4 + (size_t)length;
        } else {
            data = pos + 4;
            dlen = (size_t)type_len * 4;
            next = data + dlen;
        }
        if (dlen < 8 || next > end)
            return 0; /* cut or corrupt: the page's events end here */
        w->ts += delta;
        w->pos = next;
        *rec = page + data;
        *dlen_out = (uint32_t)dlen;
        return 1;
    }
    return 0;
}

/* The prio context's state of one CPU through a page (page_prio). */
typedef struct {
    int32_t tid, prio;        /* the CPU's current thread and its task_prio, or PRIO_UNKNOWN */
    int64_t *changes;         /* (time, tid, task_prio) triples seen on other CPUs, by time; tid -1: any */
    Py_ssize_t nchanges, next;
    int taint;                /* events were lost somewhere in this page's stretch: nothing is known */
    uint64_t horizon;         /* records after this time: unknown (changes elsewhere not all seen) */
} PrioState;

/* The record's prio context, and the state after it. Order matters: a change
 * seen on another CPU at the same nanosecond as a record is not known to be
 * before or after it (unknown); a record of this CPU changes the state after
 * its own value (a sched_switch is written while its previous task runs). */
static int32_t prio_step(const Converter *self, PrioState *ps, uint16_t id, uint64_t ts, const uint8_t *rec,
                         uint32_t dlen)
{
    while (ps->next < ps->nchanges && (uint64_t)ps->changes[3 * ps->next] <= ts) {
        const int64_t *c = &ps->changes[3 * ps->next++];
        if (c[1] == -1 || c[1] == ps->tid)
            ps->prio = (uint64_t)c[0] == ts ? PRIO_UNKNOWN : (int32_t)c[2];
    }
    int32_t tid = field32(rec, dlen, 4, -1);
    uint8_t track = id < MAX_EVENT_ID ? self->track[id] : 0;
    int32_t value = ps->tid == tid && !ps->taint && ts <= ps->horizon ? ps->prio : PRIO_UNKNOWN;
    if (track == TRACK_SWITCH) {
        int32_t prev_prio = field32(rec, dlen, self->switch_prev_prio, PRIO_UNKNOWN);
        int32_t next_prio = field32(rec, dlen, self->switch_next_prio, PRIO_UNKNOWN);
        value = prev_prio == PRIO_UNKNOWN ? PRIO_UNKNOWN : prev_prio - MAX_RT_PRIO; /* the record says it */
        ps->tid = field32(rec, dlen, self->switch_next_pid, -1);
        ps->prio = next_prio == PRIO_UNKNOWN || ps->taint ? PRIO_UNKNOWN : next_prio - MAX_RT_PRIO;
    } else if (track == TRACK_PI) {
        int32_t newprio = field32(rec, dlen, self->pi_newprio, PRIO_UNKNOWN);
        if (field32(rec, dlen, self->pi_pid, -1) == ps->tid)
            ps->prio = newprio == PRIO_UNKNOWN || ps->taint ? PRIO_UNKNOWN : newprio - MAX_RT_PRIO;
    } else if (track == TRACK_SETTER) {
        int32_t target = setter_target(self, id, rec, dlen);
        if (target == -1 || target == ps->tid)
            ps->prio = PRIO_UNKNOWN;
    }
    return value;
}

/* The k-th name of `names` (a fast sequence of bytes or None, or NULL: none given): an open call's
 * file name as ust.kernel.paths paired it; "" when not given (not known). -1: not bytes nor None. */
static int nth_name(PyObject *names, Py_ssize_t k, const char **s, Py_ssize_t *n)
{
    *s = "", *n = 0;
    if (!names || k >= PySequence_Fast_GET_SIZE(names))
        return 0;
    PyObject *item = PySequence_Fast_GET_ITEM(names, k);
    if (item == Py_None)
        return 0;
    if (!PyBytes_Check(item))
        return PyErr_SetString(PyExc_TypeError, "names must hold bytes (or None)"), -1;
    *s = PyBytes_AS_STRING(item), *n = PyBytes_GET_SIZE(item);
    return 0;
}

/* The events of a page; ps: the prio state (NULL without the prio context); names: the file names of
 * its open calls' entries, in their order (a fast sequence, or NULL). */
static PyObject *convert(Converter *self, const uint8_t *page, size_t plen, PrioState *ps, PyObject *names)
{
    Walk w;
    if (walk_start(&w, page, plen) < 0)
        return NULL;
    if (ps && w.missed)
        ps->tid = -1, ps->prio = PRIO_UNKNOWN; /* a sched_switch may be among what was lost */
    Out o = {0};
    self->have_last = 0; /* the tasks dict may have changed since the last page */
    long count = 0, skipped = 0, records = 0;
    Py_ssize_t calls = 0; /* open calls' entries so far: the index of the next one's name */
    uint64_t first = 0, last = w.page_ts, prev = w.page_ts;
    int have_first = 0;
    const uint8_t *rec;
    uint32_t dlen;
    while (walk_next(&w, &rec, &dlen)) {
        records++;
        uint64_t ts = w.ts;
        uint16_t id;
        memcpy(&id, rec, 2);
        int32_t prio = ps ? prio_step(self, ps, id, ts, rec, dlen) : PRIO_UNKNOWN;
        if (self->probe_slot && id < MAX_EVENT_ID && self->probe_slot[id])
            continue; /* a path probe: paired with its thread's system call (scan), not written */
        if (id >= MAX_EVENT_ID || self->plans[id].nops < 0) {
            if (!(id < MAX_EVENT_ID && self->track && self->track[id]))
                skipped++; /* (a record kept for the prio context only is not written) */
            continue;
        }
        if (!have_first)
            first = ts, have_first = 1;
        const char *path = "";
        Py_ssize_t path_n = 0;
        if (self->plans[id].path_off >= 0 && nth_name(names, calls++, &path, &path_n) < 0) {
            PyMem_Free(o.data);
            return NULL;
        }
        if (emit(self, &o, &self->plans[id], id, ts, prev, rec, dlen, prio, path, path_n) < 0) {
            PyMem_Free(o.data);
            return PyErr_Occurred() ? NULL : PyErr_NoMemory();
        }
        prev = last = ts;
        count++;
    }
    PyObject *events = PyBytes_FromStringAndSize((const char *)o.data, (Py_ssize_t)o.len);
    PyMem_Free(o.data);
    if (!events)
        return NULL;
    self->last_records = records;
    return Py_BuildValue("NllKK", events, count, skipped, (unsigned long long)(have_first ? first : w.ts),
                         (unsigned long long)last);
}

/* page(page: bytes) -> (events: bytes, count, skipped, first_ts, last_ts)
 * count: events written; skipped: records of an id without a plan. Without the
 * prio context (with it: page_prio). */
/* The names argument as a fast sequence (a new reference), NULL for None: an error is set then if
 * it was neither. */
static PyObject *names_arg(PyObject *names)
{
    return names == Py_None ? NULL : PySequence_Fast(names, "names must be a sequence of bytes");
}

static PyObject *Converter_page(Converter *self, PyObject *args)
{
    if (self->with_prio)
        return PyErr_SetString(PyExc_TypeError, "a Converter with the prio context converts with page_prio()"),
               NULL;
    Py_buffer view;
    PyObject *names = Py_None;
    if (!PyArg_ParseTuple(args, "y*|O", &view, &names))
        return NULL;
    PyObject *seq = names_arg(names), *r = NULL;
    if (seq || names == Py_None)
        r = convert(self, view.buf, (size_t)view.len, NULL, seq);
    Py_XDECREF(seq);
    PyBuffer_Release(&view);
    return r;
}

/* page_prio(page, state, changes, taint, horizon, names=None)
 *   -> (events, count, skipped, first_ts, last_ts, state)
 * state: (tid, prio) of the page's CPU before the page (prio PRIO_UNKNOWN: not
 * known); changes: ((time, tid, prio), ...) of other CPUs, by time (tid -1:
 * any thread); taint: events were lost in this stretch (every prio unknown);
 * horizon: records after it get PRIO_UNKNOWN. Returns the state after it. */
static PyObject *Converter_page_prio(Converter *self, PyObject *args)
{
    Py_buffer view;
    int32_t tid, prio;
    PyObject *changes, *names = Py_None;
    int taint;
    unsigned long long horizon;
    if (!self->with_prio)
        return PyErr_SetString(PyExc_TypeError, "this Converter has no prio context"), NULL;
    if (!PyArg_ParseTuple(args, "y*(ii)OpK|O", &view, &tid, &prio, &changes, &taint, &horizon, &names))
        return NULL;
    PyObject *seq = PySequence_Fast(changes, "changes must be a sequence");
    PyObject *names_seq = seq ? names_arg(names) : NULL;
    if (!seq || (!names_seq && names != Py_None)) {
        Py_XDECREF(seq);
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PrioState ps = {.tid = tid, .prio = prio, .nchanges = n, .taint = taint, .horizon = horizon};
    ps.changes = PyMem_Calloc(n ? 3 * n : 1, sizeof(int64_t));
    PyObject *r = NULL;
    if (!ps.changes) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long t, who, value;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "LLL", &t, &who, &value))
            goto out;
        ps.changes[3 * i] = t, ps.changes[3 * i + 1] = who, ps.changes[3 * i + 2] = value;
    }
    PyObject *conv = convert(self, view.buf, (size_t)view.len, &ps, names_seq);
    if (conv) {
        r = Py_BuildValue("(OOOOO(ii))", PyTuple_GET_ITEM(conv, 0), PyTuple_GET_ITEM(conv, 1),
                          PyTuple_GET_ITEM(conv, 2), PyTuple_GET_ITEM(conv, 3), PyTuple_GET_ITEM(conv, 4), ps.tid,
                          ps.prio);
        Py_DECREF(conv);
    }
out:
    PyMem_Free(ps.changes);
    Py_DECREF(seq);
    Py_XDECREF(names_seq);
    PyBuffer_Release(&view);
    return r;
}

/* Pairing: each open call entry's file name, the path of its thread's path probe record just
 * before it, over every CPU in time order (ust/kernel/paths.py documents it and is its Python
 * reference, which must agree). Converter.scan(page, pairing) queues a page's probe records and
 * open calls here and returns the list the calls' names will be in; pair(until) takes the queued
 * records up to `until` (every CPU read up to then) in time order; gap(start, end) says records
 * of some CPU were lost in between. */
#define ITEM_GAP 0 /* sorts before a record of the same time: a loss's stretch is cleared first */
#define ITEM_PROBE 1
#define ITEM_CALL 2

typedef struct {
    uint64_t ts, seq;
    uint64_t ptr; /* probe, call (PTR_UNREADABLE: a call record too short for it); gap: its end */
    int32_t tid;
    uint8_t kind;
    PyObject *ref;   /* probe: its path (bytes); call: its page's names (list); gap: NULL (owned) */
    Py_ssize_t index; /* call: its index in ref */
} PathItem;

#define PTR_UNREADABLE UINT64_MAX /* (an unreadable call pointer: equal to no probe's, see pair) */

/* A thread's last probe, in an open-addressing table by tid (linear probing, tombstones): the
 * pairing's one lookup per record, without Python objects for the keys. */
#define SLOT_EMPTY 0
#define SLOT_FULL 1
#define SLOT_DELETED 2

typedef struct {
    int32_t tid;
    uint8_t state, tainted;
    uint64_t ptr;
    PyObject *path; /* owned (SLOT_FULL) */
} LatestSlot;

typedef struct {
    PyObject_HEAD
    PathItem *items;
    Py_ssize_t n, cap;
    LatestSlot *latest;     /* tid -> (pointer, path, tainted) of its last probe */
    size_t latest_cap, latest_used; /* slots (a power of two), full or deleted ones */
    int64_t taint_until;    /* a probe recorded up to this time may have lost records after it (-1: none) */
    int64_t done;           /* the time up to which records were paired (-1: none) */
    uint64_t seq;
    long long names_given, names_unknown;
} Pairing;

static PyTypeObject PairingType;

#define LATEST_INITIAL 256

static int Pairing_init(Pairing *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return -1;
    if (self->latest)
        return PyErr_SetString(PyExc_RuntimeError, "Pairing already initialized"), -1;
    if (!(self->latest = PyMem_Calloc(LATEST_INITIAL, sizeof(LatestSlot))))
        return PyErr_NoMemory(), -1;
    self->latest_cap = LATEST_INITIAL;
    self->taint_until = self->done = -1;
    return 0;
}

/* Forget every thread's probe (a gap). */
static void latest_clear(Pairing *self)
{
    for (size_t i = 0; i < self->latest_cap; i++)
        if (self->latest[i].state == SLOT_FULL)
            Py_CLEAR(self->latest[i].path);
    memset(self->latest, 0, self->latest_cap * sizeof(LatestSlot));
    self->latest_used = 0;
}

static void Pairing_dealloc(Pairing *self)
{
    for (Py_ssize_t i = 0; i < self->n; i++)
        Py_XDECREF(self->items[i].ref);
    PyMem_Free(self->items);
    if (self->latest) {
        latest_clear(self);
        PyMem_Free(self->latest);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static size_t latest_hash(const Pairing *self, int32_t tid)
{
    return ((uint32_t)tid * 2654435761u) & (self->latest_cap - 1);
}

/* The thread's full slot, or NULL. */
static LatestSlot *latest_find(Pairing *self, int32_t tid)
{
    for (size_t i = latest_hash(self, tid);; i = (i + 1) & (self->latest_cap - 1)) {
        LatestSlot *slot = &self->latest[i];
        if (slot->state == SLOT_EMPTY)
            return NULL;
        if (slot->state == SLOT_FULL && slot->tid == tid)
            return slot;
    }
}

/* Remember a thread's probe (path: stolen), replacing its previous one. -1: no memory. */
static int latest_put(Pairing *self, int32_t tid, uint64_t ptr, PyObject *path, int tainted)
{
    LatestSlot *slot = latest_find(self, tid);
    if (slot) {
        Py_SETREF(slot->path, path);
        slot->ptr = ptr, slot->tainted = (uint8_t)tainted;
        return 0;
    }
    if (2 * (self->latest_used + 1) > self->latest_cap) { /* rehash the full slots, at most half used after */
        size_t full = 0;
        for (size_t i = 0; i < self->latest_cap; i++)
            full += self->latest[i].state == SLOT_FULL;
        size_t cap = self->latest_cap;
        while (4 * (full + 1) > cap)
            cap *= 2;
        LatestSlot *old = self->latest, *table = PyMem_Calloc(cap, sizeof(LatestSlot));
        if (!table) {
            Py_DECREF(path);
            PyErr_NoMemory();
            return -1;
        }
        size_t old_cap = self->latest_cap;
        self->latest = table, self->latest_cap = cap, self->latest_used = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].state == SLOT_FULL) {
                size_t j = latest_hash(self, old[i].tid);
                while (table[j].state != SLOT_EMPTY)
                    j = (j + 1) & (cap - 1);
                table[j] = old[i];
                self->latest_used++;
            }
        PyMem_Free(old);
    }
    size_t i = latest_hash(self, tid);
    while (self->latest[i].state == SLOT_FULL)
        i = (i + 1) & (self->latest_cap - 1);
    if (self->latest[i].state == SLOT_EMPTY)
        self->latest_used++;
    self->latest[i] = (LatestSlot){.tid = tid, .state = SLOT_FULL, .tainted = (uint8_t)tainted, .ptr = ptr,
                                   .path = path};
    return 0;
}

/* Queue one item (its ref is stolen: released on failure too). -1: no memory. */
static int pairing_push(Pairing *self, uint8_t kind, uint64_t ts, int32_t tid, uint64_t ptr, PyObject *ref,
                        Py_ssize_t index)
{
    if (self->n == self->cap) {
        Py_ssize_t cap = self->cap ? 2 * self->cap : 1024;
        PathItem *items = PyMem_Realloc(self->items, (size_t)cap * sizeof(PathItem));
        if (!items) {
            Py_XDECREF(ref);
            PyErr_NoMemory();
            return -1;
        }
        self->items = items, self->cap = cap;
    }
    self->items[self->n++] = (PathItem){.ts = ts, .seq = self->seq++, .ptr = ptr, .tid = tid, .kind = kind,
                                        .ref = ref, .index = index};
    return 0;
}

/* Records of some CPU were lost after start and up to end. */
static int pairing_gap(Pairing *self, uint64_t start, uint64_t end)
{
    return pairing_push(self, ITEM_GAP, start, 0, end > start ? end : start, NULL, 0);
}

static PyObject *Pairing_gap(Pairing *self, PyObject *args)
{
    unsigned long long start, end;
    if (!PyArg_ParseTuple(args, "KK", &start, &end))
        return NULL;
    return pairing_gap(self, start, end) < 0 ? NULL : Py_NewRef(Py_None);
}

static int item_order(const void *pa, const void *pb)
{
    const PathItem *a = pa, *b = pb;
    if (a->ts != b->ts)
        return a->ts < b->ts ? -1 : 1;
    int ra = a->kind != ITEM_GAP, rb = b->kind != ITEM_GAP;
    if (ra != rb)
        return ra - rb;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* pair(until=NEVER): pair the queued records up to `until` in time order (Pairing in paths.py). */
static PyObject *Pairing_pair(Pairing *self, PyObject *args)
{
    unsigned long long until = UINT64_MAX;
    if (!PyArg_ParseTuple(args, "|K", &until))
        return NULL;
    if (self->n == 0) {
        if (until != UINT64_MAX && (int64_t)until > self->done)
            self->done = (int64_t)until;
        Py_RETURN_NONE;
    }
    qsort(self->items, (size_t)self->n, sizeof(PathItem), item_order);
    Py_ssize_t cut = 0;
    int64_t reached = self->done;
    int failed = 0;
    for (; cut < self->n; cut++) {
        PathItem *it = &self->items[cut];
        if (it->ts > until)
            break;
        reached = (int64_t)it->ts;
        if (failed) {
            Py_CLEAR(it->ref);
            continue;
        }
        if (it->kind == ITEM_GAP) { /* nothing remembered before it, nor during it, can be trusted */
            latest_clear(self);
            if ((int64_t)it->ptr > self->taint_until)
                self->taint_until = (int64_t)it->ptr;
            continue;
        }
        if (it->kind == ITEM_PROBE) {
            if (latest_put(self, it->tid, it->ptr, it->ref, (int64_t)it->ts <= self->taint_until) < 0)
                failed = 1;
            it->ref = NULL; /* (stolen) */
            continue;
        }
        LatestSlot *probe = latest_find(self, it->tid);
        int given = 0;
        if (probe) {
            if (it->ptr != PTR_UNREADABLE && !probe->tainted && probe->ptr == it->ptr) {
                if (PyList_SetItem(it->ref, it->index, probe->path) < 0) /* (steals the slot's reference) */
                    failed = 1;
                else
                    given = 1;
                probe->path = NULL;
            }
            Py_CLEAR(probe->path);
            probe->state = SLOT_DELETED;
        }
        if (given)
            self->names_given++;
        else
            self->names_unknown++;
        Py_CLEAR(it->ref);
    }
    memmove(self->items, self->items + cut, (size_t)(self->n - cut) * sizeof(PathItem));
    self->n -= cut;
    /* (pairing everything, at a stop, is no promise about what a later start records) */
    int64_t now_done = until == UINT64_MAX ? reached : (int64_t)until;
    if (now_done > self->done)
        self->done = now_done;
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Pairing_get(Pairing *self, void *closure)
{
    switch ((intptr_t)closure) {
    case 0: return PyLong_FromLongLong(self->names_given);
    case 1: return PyLong_FromLongLong(self->names_unknown);
    case 2: return PyLong_FromSsize_t(self->n);
    default: return PyLong_FromLongLong(self->done);
    }
}

static PyMethodDef Pairing_methods[] = {
    {"gap", (PyCFunction)Pairing_gap, METH_VARARGS, "gap(start, end): records of some CPU were lost in between"},
    {"pair", (PyCFunction)Pairing_pair, METH_VARARGS,
     "pair(until=NEVER): pair the queued records up to until, in time order"},
    {NULL},
};

static PyGetSetDef Pairing_getset[] = {
    {"names_given", (getter)Pairing_get, NULL, "open calls given a name", (void *)0},
    {"names_unknown", (getter)Pairing_get, NULL, "open calls given none (\"\": not known)", (void *)1},
    {"pending", (getter)Pairing_get, NULL, "records queued, not paired yet", (void *)2},
    {"done", (getter)Pairing_get, NULL, "the time up to which records were paired (-1: none)", (void *)3},
    {NULL},
};

static PyTypeObject PairingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ust.kernel._ftrace.Pairing",
    .tp_basicsize = sizeof(Pairing),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Pairing(): open calls' file names from the path probes' records, over every CPU in time order "
              "(see ust/kernel/paths.py)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pairing_init,
    .tp_dealloc = (destructor)Pairing_dealloc,
    .tp_methods = Pairing_methods,
    .tp_getset = Pairing_getset,
};

/* An item of scan()'s paths: (time, tid, pointer, path bytes) for a path probe's record,
 * (time, tid, pointer, None) for an open call's entry (pointer -1: the record is too short for it). */
static int append_path_item(PyObject *list, uint64_t ts, const uint8_t *rec, PyObject *ptr, const uint8_t *path,
                            uint32_t n)
{
    int32_t tid;
    memcpy(&tid, rec + 4, 4);
    PyObject *item = ptr ? (path ? Py_BuildValue("(KiOy#)", (unsigned long long)ts, tid, ptr, (const char *)path,
                                                 (Py_ssize_t)n)
                                 : Py_BuildValue("(KiOO)", (unsigned long long)ts, tid, ptr, Py_None))
                         : NULL;
    Py_XDECREF(ptr);
    if (!item || PyList_Append(list, item) < 0) {
        Py_XDECREF(item);
        return -1;
    }
    Py_DECREF(item);
    return 0;
}

/* scan(page, pairing=None) -> (first_ts, last_ts, missed, changes, paths): what a page tells the conversion of
 * the other CPUs' pages (it is read before any of them is converted: ust/kernel/sweep.py).
 * changes (the prio context, else empty): ((time, tid, prio), ...) for each sched_pi_setprio (the
 * thread's new prio) and each priority-setting call (its target, -1 for any, with PRIO_UNKNOWN);
 * paths (the path probes, else empty): the path probes' records and the open calls' entries, in
 * the page's order (append_path_item), which ust/kernel/paths.py pairs over every CPU; with a
 * Pairing, they are queued in it instead and paths is the list the page's calls' names will be in
 * (None: no call), which page() takes; missed: events were lost before it. */
static PyObject *Converter_scan(Converter *self, PyObject *args)
{
    Py_buffer view;
    PyObject *pairing_arg = Py_None;
    if (!PyArg_ParseTuple(args, "y*|O", &view, &pairing_arg))
        return NULL;
    Pairing *pairing = NULL;
    if (pairing_arg != Py_None) {
        if (!PyObject_TypeCheck(pairing_arg, &PairingType) || !((Pairing *)pairing_arg)->latest) {
            PyBuffer_Release(&view);
            return PyErr_SetString(PyExc_TypeError, "pairing must be an initialized _ftrace.Pairing"), NULL;
        }
        pairing = (Pairing *)pairing_arg;
    }
    Walk w;
    PyObject *changes = NULL, *paths = NULL, *r = NULL, *empty = NULL;
    uint64_t late = 0;
    int have_late = 0;
    if (walk_start(&w, view.buf, (size_t)view.len) < 0 || !(changes = PyList_New(0))
        || (!pairing && !(paths = PyList_New(0))) || !(empty = PyBytes_FromStringAndSize("", 0)))
        goto out;
    uint64_t first = 0;
    int have_first = 0;
    const uint8_t *rec;
    uint32_t dlen;
    while (walk_next(&w, &rec, &dlen)) {
        uint16_t id;
        memcpy(&id, rec, 2);
        if (!have_first)
            first = w.ts, have_first = 1;
        if (id >= MAX_EVENT_ID)
            continue;
        if (self->probe_slot) {
            uint64_t ptr;
            const uint8_t *path;
            uint32_t n;
            int32_t off = self->plans[id].nops >= 0 ? self->plans[id].path_off : -1;
            int probe = self->probe_slot[id] != 0;
            if (probe && !probe_fields(self, self->probe_slot[id] - 1, rec, dlen, &ptr, &path, &n))
                continue; /* a probe record too short for its fields: as if not recorded */
            if (pairing && (probe || off >= 0)) {
                int32_t tid;
                memcpy(&tid, rec + 4, 4);
                PyObject *ref;
                Py_ssize_t index = 0;
                if (probe) {
                    ref = PyBytes_FromStringAndSize((const char *)path, n);
                } else {
                    if (!paths && !(paths = PyList_New(0)))
                        goto out;
                    index = PyList_GET_SIZE(paths);
                    if (PyList_Append(paths, empty) < 0)
                        goto out;
                    ref = Py_NewRef(paths);
                    ptr = (uint64_t)off + 8 <= dlen ? rd64(rec + off) : PTR_UNREADABLE;
                }
                if (!ref || pairing_push(pairing, probe ? ITEM_PROBE : ITEM_CALL, w.ts, tid, ptr, ref, index) < 0)
                    goto out;
                if (!have_late && pairing->done >= 0 && w.ts <= (uint64_t)pairing->done)
                    late = w.ts, have_late = 1; /* read after its time was paired */
                continue;
            }
            if (probe) {
                if (append_path_item(paths, w.ts, rec, PyLong_FromUnsignedLongLong(ptr), path, n) < 0)
                    goto out;
                continue;
            }
            if (off >= 0) {
                PyObject *p = (uint64_t)off + 8 <= dlen ? PyLong_FromUnsignedLongLong(rd64(rec + off))
                                                        : PyLong_FromLong(-1);
                if (append_path_item(paths, w.ts, rec, p, NULL, 0) < 0)
                    goto out;
                continue;
            }
        }
        uint8_t track = self->track ? self->track[id] : 0;
        int32_t who, value;
        if (track == TRACK_PI) {
            who = field32(rec, dlen, self->pi_pid, -1);
            value = field32(rec, dlen, self->pi_newprio, PRIO_UNKNOWN);
            value = value == PRIO_UNKNOWN || who < 0 ? PRIO_UNKNOWN : value - MAX_RT_PRIO;
            who = who < 0 ? -1 : who;
        } else if (track == TRACK_SETTER) {
            who = setter_target(self, id, rec, dlen);
            value = PRIO_UNKNOWN;
        } else {
            continue;
        }
        PyObject *item = Py_BuildValue("(Kii)", (unsigned long long)w.ts, who, value);
        if (!item || PyList_Append(changes, item) < 0) {
            Py_XDECREF(item);
            goto out;
        }
        Py_DECREF(item);
    }
    /* whatever a record read after its time was paired would have changed is not known */
    if (have_late && pairing_gap(pairing, late, (uint64_t)pairing->done) < 0)
        goto out;
    r = Py_BuildValue("(KKOOO)", (unsigned long long)(have_first ? first : w.ts), (unsigned long long)w.ts,
                      w.missed ? Py_True : Py_False, changes, paths ? paths : Py_None);
out:
    Py_XDECREF(changes);
    Py_XDECREF(paths);
    Py_XDECREF(empty);
    PyBuffer_Release(&view);
    return r;
}

/* count_matches(page, keep) -> (counts, kept, missed)
 * A kernel trigger's page (ust/kernel/matcher.py). The trigger's ftrace instance
 * records only what the trigger's filter kept (the filter is ftrace's own, in the
 * kernel), so every record is a match: they are counted per event id, nothing
 * is converted. counts: {event id: records}; kept: [(event id, record bytes)] of
 * the first `keep` records (0..4096), whose values Python reads for --capture;
 * missed: the page follows lost events (RB_MISSED_EVENTS). Records of a page
 * that does not hold together end where it stops holding (walk_next). */
#define DISTINCT_IDS 32 /* ids counted in a local table before going to the dict */
static int flush_counts(PyObject *counts, const uint16_t *ids, const long *ns, int n)
{
    for (int i = 0; i < n; i++) {
        PyObject *key = PyLong_FromLong(ids[i]);
        if (!key)
            return -1;
        PyObject *old = PyDict_GetItemWithError(counts, key); /* borrowed */
        long before = old ? PyLong_AsLong(old) : 0;
        PyObject *value = (before == -1 && PyErr_Occurred()) ? NULL : PyLong_FromLong(before + ns[i]);
        int rc = value ? PyDict_SetItem(counts, key, value) : -1;
        Py_XDECREF(value);
        Py_DECREF(key);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static PyObject *count_matches(PyObject *module, PyObject *args)
{
    Py_buffer view;
    int keep;
    if (!PyArg_ParseTuple(args, "y*i", &view, &keep))
        return NULL;
    PyObject *counts = NULL, *kept = NULL, *r = NULL;
    Walk w;
    if (keep < 0 || keep > 4096) {
        PyErr_SetString(PyExc_ValueError, "keep must be in 0..4096");
        goto out;
    }
    if (walk_start(&w, view.buf, (size_t)view.len) < 0 || !(counts = PyDict_New()) || !(kept = PyList_New(0)))
        goto out;
    uint16_t ids[DISTINCT_IDS];
    long ns[DISTINCT_IDS];
    int distinct = 0;
    const uint8_t *rec;
    uint32_t dlen;
    while (walk_next(&w, &rec, &dlen)) {
        uint16_t id;
        memcpy(&id, rec, 2);
        int i = 0;
        while (i < distinct && ids[i] != id)
            i++;
        if (i == distinct) {
            if (distinct == DISTINCT_IDS) { /* many events: what the table holds goes to the dict */
                if (flush_counts(counts, ids, ns, distinct) < 0)
                    goto out;
                distinct = i = 0;
            }
            ids[i] = id, ns[i] = 0, distinct++;
        }
        ns[i]++;
        if (keep > 0) {
            PyObject *item = Py_BuildValue("(iy#)", (int)id, (const char *)rec, (Py_ssize_t)dlen);
            if (!item || PyList_Append(kept, item) < 0) {
                Py_XDECREF(item);
                goto out;
            }
            Py_DECREF(item);
            keep--;
        }
    }
    if (flush_counts(counts, ids, ns, distinct) < 0)
        goto out;
    r = Py_BuildValue("(OOO)", counts, kept, w.missed ? Py_True : Py_False);
out:
    Py_XDECREF(counts);
    Py_XDECREF(kept);
    PyBuffer_Release(&view);
    return r;
}

/* page_records(page) -> int: how many records a page holds (what per_cpu/cpuN/stats' "read
 * events" counts when the page is read: a replaced consumer's loss is stated from it, see
 * ust/kernel/source.py). ValueError for an impossible page header. */
static PyObject *page_records(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Walk w;
    long n = 0;
    const uint8_t *rec;
    uint32_t dlen;
    int ok = walk_start(&w, view.buf, (size_t)view.len) == 0;
    if (ok)
        while (walk_next(&w, &rec, &dlen))
            n++;
    PyBuffer_Release(&view);
    return ok ? PyLong_FromLong(n) : NULL;
}

static PyMethodDef module_methods[] = {
    {"count_matches", count_matches, METH_VARARGS,
     "count_matches(page, keep) -> (counts, kept, missed): a kernel trigger's page, its records counted per event id"},
    {"page_records", (PyCFunction)page_records, METH_O, "page_records(page) -> int: the records of a page"},
    {NULL},
};

static PyMethodDef Converter_methods[] = {
    {"page", (PyCFunction)Converter_page, METH_VARARGS,
     "page(page, names=None) -> (events, count, skipped, first_ts, last_ts): one ftrace page's CTF events "
     "(names: its open calls' file names, in order: ust/kernel/paths.py)"},
    {"page_prio", (PyCFunction)Converter_page_prio, METH_VARARGS,
     "page_prio(page, state, changes, taint, horizon, names=None) -> (events, count, skipped, first_ts, last_ts, "
     "state): with the prio context (ust/kernel/prio.py)"},
    {"scan", (PyCFunction)Converter_scan, METH_VARARGS,
     "scan(page, pairing=None) -> (first_ts, last_ts, missed, changes, paths): what a page tells the other "
     "CPUs' conversion (priority changes; path probes and open calls to pair, or queued in the Pairing "
     "and paths the list of the page's names)"},
    {NULL},
};

static PyObject *Converter_records(Converter *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(self->last_records);
}

static PyGetSetDef Converter_getset[] = {
    {"records", (getter)Converter_records, NULL, "the records of the last page converted (all types)", NULL},
    {NULL},
};

static PyTypeObject ConverterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ust.kernel._ftrace.Converter",
    .tp_basicsize = sizeof(Converter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Converter(plans, with_tid, with_pid, with_procname, tasks, task_of): ftrace pages -> CTF events (see ust/kernel/pages.py)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Converter_init,
    .tp_dealloc = (destructor)Converter_dealloc,
    .tp_methods = Converter_methods,
    .tp_getset = Converter_getset,
};

static struct PyModuleDef ftrace_module = {
    PyModuleDef_HEAD_INIT, "ust.kernel._ftrace", "ftrace page conversion (the kernel domain's hot path)", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__ftrace(void)
{
    if (PyType_Ready(&ConverterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&ftrace_module);
    if (!m)
        return NULL;
    Py_INCREF(&ConverterType);
    if (PyModule_AddObject(m, "Converter", (PyObject *)&ConverterType) < 0) {
        Py_DECREF(&ConverterType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyType_Ready(&PairingType) < 0 || PyModule_AddObjectRef(m, "Pairing", (PyObject *)&PairingType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
