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
} Plan;

#define COMM_LEN 16 /* the kernel's TASK_COMM_LEN: the procname context is char[16] */

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
    Py_CLEAR(self->tasks);
    Py_CLEAR(self->task_of);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Converter(plans: dict[int, tuple[tuple[int, int, int], ...]], with_tid: bool,
 *           with_pid: bool, with_procname: bool, tasks: dict | None, task_of: callable | None) */
static int Converter_init(Converter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"plans", "with_tid", "with_pid", "with_procname", "tasks", "task_of", NULL};
    PyObject *plans, *tasks = Py_None, *task_of = Py_None;
    int with_tid = 1, with_pid = 0, with_procname = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|pppOO", kwlist, &PyDict_Type, &plans, &with_tid, &with_pid,
                                     &with_procname, &tasks, &task_of))
        return -1;
    if ((with_pid || with_procname) && (!PyDict_Check(tasks) || !PyCallable_Check(task_of)))
        return PyErr_SetString(PyExc_TypeError, "the pid/procname contexts need a tasks dict and task_of"), -1;
    if (self->plans)
        return PyErr_SetString(PyExc_RuntimeError, "Converter already initialized"), -1;
    self->plans = PyMem_Calloc(MAX_EVENT_ID, sizeof(Plan));
    if (!self->plans)
        return PyErr_NoMemory(), -1;
    for (int i = 0; i < MAX_EVENT_ID; i++)
        self->plans[i].nops = -1;
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
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, j), "III", &op, &off, &arg) || op > OP_CHILD_TGID
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
    }
    return 0;
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

/* Append one record's CTF event (header, contexts tid/pid/procname in this
 * order, payload). rec/dlen: the record (common fields first), already checked
 * to lie inside the page. Returns -1 on error (memory, or task_of's). */
static int emit(Converter *self, Out *o, const Plan *plan, uint16_t id, uint64_t ts, uint64_t prev,
                const uint8_t *rec, uint32_t dlen)
{
    int32_t tgid = 0;
    char comm[COMM_LEN];
    if (self->with_pid || self->with_procname) {
        int32_t tid;
        memcpy(&tid, rec + 4, 4);
        if (task_context(self, tid, &tgid, comm) < 0)
            return -1;
    }
    size_t need = 14 + 4 + 4 + COMM_LEN;
    for (int i = 0; i < plan->nops; i++)
        need += plan->ops[i].op == OP_COPY ? plan->ops[i].arg : plan->ops[i].op >= OP_TGID ? 4 : 5 + dlen;
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

/* page(page: bytes) -> (events: bytes, count, skipped, first_ts, last_ts)
 * count: events written; skipped: records of an id without a plan. */
static PyObject *Converter_page(Converter *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *page = view.buf;
    size_t plen = (size_t)view.len;
    if (plen < PAGE_HEADER) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "page of %zu bytes is shorter than its header", plen);
    }
    uint64_t page_ts = rd64(page), ts = page_ts;
    uint64_t size = rd64(page + 8) & COMMIT_MASK;
    if (PAGE_HEADER + size > plen) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "page commit %llu runs past the page", (unsigned long long)size);
    }
    size_t end = PAGE_HEADER + size, pos = PAGE_HEADER;
    Out o = {0};
    self->have_last = 0; /* the tasks dict may have changed since the last page */
    long count = 0, skipped = 0;
    uint64_t first = 0, last = page_ts, prev = page_ts;
    int have_first = 0;
    while (pos + 4 <= end) {
        uint32_t word = rd32(page + pos);
        uint32_t type_len = word & 31, delta = word >> 5;
        if (type_len == TYPE_PADDING) {
            if (delta == 0 || pos + 8 > end)
                break; /* the rest of the page is empty */
            pos += 4 + (size_t)rd32(page + pos + 4);
            continue;
        }
        if (type_len == TYPE_TIME_EXTEND || type_len == TYPE_TIME_STAMP) {
            if (pos + 8 > end)
                break;
            uint64_t t = (uint64_t)delta | ((uint64_t)rd32(page + pos + 4) << 27);
            if (type_len == TYPE_TIME_EXTEND) {
                ts += t;
            } else {
                /* an absolute time: its top bits are those of the page's stamp */
                uint64_t msb = page_ts >> TS_MSB_SHIFT << TS_MSB_SHIFT;
                if (msb) {
                    t |= msb;
                    if (t < page_ts)
                        t += 1ULL << TS_MSB_SHIFT;
                }
                ts = t;
            }
            pos += 8;
            continue;
        }
        size_t data, dlen, next;
        if (type_len == 0) {
            if (pos + 8 > end)
                break;
            uint32_t length = rd32(page + pos + 4);
            if (length < 4)
                break;
            data = pos + 8;
            dlen = length - 4;
            next = pos + 4 + (size_t)length;
        } else {
            data = pos + 4;
            dlen = (size_t)type_len * 4;
            next = data + dlen;
        }
        if (dlen < 8 || next > end)
            break; /* cut or corrupt: the page's events end here */
        ts += delta;
        pos = next;
        const uint8_t *rec = page + data;
        uint16_t id;
        memcpy(&id, rec, 2);
        if (id >= MAX_EVENT_ID || self->plans[id].nops < 0) {
            skipped++;
            continue;
        }
        if (!have_first)
            first = ts, have_first = 1;
        if (emit(self, &o, &self->plans[id], id, ts, prev, rec, (uint32_t)dlen) < 0) {
            PyMem_Free(o.data);
            PyBuffer_Release(&view);
            return PyErr_Occurred() ? NULL : PyErr_NoMemory();
        }
        prev = last = ts;
        count++;
    }
    PyBuffer_Release(&view);
    PyObject *events = PyBytes_FromStringAndSize((const char *)o.data, (Py_ssize_t)o.len);
    PyMem_Free(o.data);
    if (!events)
        return NULL;
    return Py_BuildValue("NllKK", events, count, skipped, (unsigned long long)(have_first ? first : ts),
                         (unsigned long long)last);
}

static PyMethodDef Converter_methods[] = {
    {"page", (PyCFunction)Converter_page, METH_O,
     "page(page) -> (events, count, skipped, first_ts, last_ts): one ftrace page's CTF events"},
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
};

static struct PyModuleDef ftrace_module = {
    PyModuleDef_HEAD_INIT, "ust.kernel._ftrace", "ftrace page conversion (the kernel domain's hot path)", -1, NULL,
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
    return m;
}
