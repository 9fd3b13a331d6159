/* ======================================================================
 * Buffer: the Python face of one stream
 * ====================================================================== */

#include "shm.h"
#include "frontend.h"
#include "reader.h"
#include "module.h"

/* Validate a mapped header and fill the process-local geometry. */
int buffer_bind(BufferObject *b)
{
    struct ust_shm_header *h = b->h;
    if (h->magic != UST_SHM_MAGIC || h->version != UST_SHM_VERSION) {
        PyErr_SetString(PyExc_ValueError, "not a ust ring buffer (bad magic or version)");
        return -1;
    }
    /* Each bound keeps the sums below from wrapping: a header read from a
     * crashed (or hostile) file must not place data outside the mapping. */
    if (!is_pow2(h->subbuf_size) || h->subbuf_size < 4096 || h->subbuf_size > (1ULL << 30) ||
        !is_pow2(h->num_subbuf) || h->num_subbuf < 2 || h->num_subbuf > 4096 || h->slots_offset < sizeof *h ||
        h->slots_offset > b->map_size || h->data_offset > b->map_size ||
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
    atomic_init(&b->packet_cache, UINT64_MAX);
    return 0;
}

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

/* create(): the buffer lives in an anonymous memfd, or, given `fd` (an
 * empty regular file the caller opened: `ust create --shm-path`), in that
 * file, so that its contents outlive every process that maps it. */
static PyObject *Buffer_create(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"subbuf_size", "num_subbuf", "overwrite", "stream_id", "cpu", "uuid", "fd", NULL};
    unsigned long long sbsize, nsub;
    int overwrite = 0, file_fd = -1;
    unsigned int stream_id = 0, cpu = 0;
    Py_buffer uuid = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KK|$pIIy*i", kwlist, &sbsize, &nsub, &overwrite, &stream_id, &cpu,
                                     &uuid, &file_fd))
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

    int fd;
    if (file_fd >= 0) {
        struct stat st;
        if (fstat(file_fd, &st) < 0) {
            PyBuffer_Release(&uuid);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (!S_ISREG(st.st_mode) || st.st_size != 0) {
            PyBuffer_Release(&uuid);
            return PyErr_Format(PyExc_ValueError, "fd %d is not an empty regular file", file_fd);
        }
        fd = fcntl(file_fd, F_DUPFD_CLOEXEC, 0);
    } else {
        fd = memfd_create("ust-ring", MFD_CLOEXEC);
    }
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

/* attach(): map a buffer another process created. writers_gone: the caller
 * mapped a private copy of a crashed buffer (`ust crash`), whose writers are
 * all gone whatever their pids say now (a pid may have been reused since):
 * the reader repairs every reservation left in flight without asking. */
static PyObject *Buffer_attach(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "writers_gone", NULL};
    PyObject *arg;
    int writers_gone = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$p", kwlist, &arg, &writers_gone))
        return NULL;
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
    b->writers_gone = writers_gone;
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

static PyObject *Buffer_repair_dead_writers(BufferObject *b, PyObject *unused)
{
    if (b->holding) {
        PyErr_SetString(PyExc_RuntimeError, "repair_dead_writers() while a packet is held: call put_subbuf() first");
        return NULL;
    }
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = ring_repair_dead_writers(b);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(n);
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
    static char *kwlist[] = {"final", "timestamp", NULL};
    int final = 0;
    unsigned long long at = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$pK", kwlist, &final, &at))
        return NULL;
    return PyBool_FromLong(ring_flush(b, final, at));
}

static PyObject *Buffer_quiet_until(BufferObject *b, PyObject *unused)
{
    uint64_t t;
    Py_BEGIN_ALLOW_THREADS
    t = ring_quiet_until(b);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(t);
}

static PyObject *Buffer_counters(BufferObject *b, PyObject *unused)
{
    struct ust_shm_header *h = b->h;
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsK}", "lost_full", (unsigned long long)LOAD_RELAXED(&h->lost_full),
                         "lost_big", (unsigned long long)LOAD_RELAXED(&h->lost_big), "lost_args",
                         (unsigned long long)LOAD_RELAXED(&h->lost_args), "lost_dead",
                         (unsigned long long)LOAD_RELAXED(&h->lost_dead), "packets_reclaimed",
                         (unsigned long long)LOAD_RELAXED(&h->packets_reclaimed), "packets_overwritten",
                         (unsigned long long)LOAD_RELAXED(&h->packets_overwritten), "packets_read",
                         (unsigned long long)LOAD_RELAXED(&h->packets_read), "write_offset",
                         (unsigned long long)LOAD_RELAXED(&h->write_offset), "consumed",
                         (unsigned long long)LOAD_RELAXED(&h->consumed), "last_timestamp",
                         (unsigned long long)LOAD_RELAXED(&h->last_timestamp));
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
    {"fd", (getter)Buffer_get_fd, NULL, "the descriptor of the shared memory (a memfd, or a --shm-path file)", NULL},
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
     "create(subbuf_size, num_subbuf, *, overwrite=False, stream_id=0, cpu=0, uuid=b'', fd=-1) -> Buffer"},
    {"attach", (PyCFunction)(void (*)(void))Buffer_attach, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "attach(fd, *, writers_gone=False) -> Buffer: map a buffer created elsewhere"},
    {"get_subbuf", (PyCFunction)(void (*)(void))Buffer_get_subbuf, METH_VARARGS | METH_KEYWORDS,
     "get_subbuf(*, force=False) -> memoryview | None: take the next complete packet"},
    {"put_subbuf", (PyCFunction)Buffer_put_subbuf, METH_NOARGS, "release the packet taken by get_subbuf()"},
    {"snapshot_to", (PyCFunction)Buffer_snapshot_to, METH_O,
     "snapshot_to(fd) -> (packets, bytes): copy the complete packets to fd without consuming them"},
    {"drain_to", (PyCFunction)(void (*)(void))Buffer_drain_to, METH_VARARGS | METH_KEYWORDS,
     "drain_to(fd, *, force=False, limit=-1) -> (packets, bytes, errno): write complete packets to fd, GIL "
     "released; a packet whose write fails (errno != 0) stays in the buffer and the file ends on a packet"},
    {"repair_dead_writers", (PyCFunction)Buffer_repair_dead_writers, METH_NOARGS,
     "repair_dead_writers() -> int: complete, without consuming them, the packets writers killed between reserve "
     "and commit left incomplete (for buffers nobody drains: overwrite mode)"},
    {"unget_subbuf", (PyCFunction)Buffer_unget_subbuf, METH_NOARGS,
     "give back the packet taken by get_subbuf() without consuming it (its write failed)"},
    {"flush", (PyCFunction)(void (*)(void))Buffer_flush, METH_VARARGS | METH_KEYWORDS,
     "flush(*, final=False, timestamp=0) -> bool: close the current partial packet (at `timestamp`, 0: now)"},
    {"quiet_until", (PyCFunction)Buffer_quiet_until, METH_NOARGS,
     "quiet_until() -> int: for a live beacon, a time (trace clock) before which no event will ever be "
     "reserved in this stream that is not already handed out, or 0 when none can be given now (packets not "
     "yet read, or a writer about to open a packet): the live barrier"},
    {"counters", (PyCFunction)Buffer_counters, METH_NOARGS, "lost and read counters"},
    {"set_wakeup_fd", (PyCFunction)Buffer_set_wakeup_fd, METH_O, "this process's eventfd for reader wake-ups"},
    {"reader_sleep", (PyCFunction)Buffer_reader_sleep, METH_O, "announce that the reader sleeps (or not)"},
    {"set_stall_timeout", (PyCFunction)Buffer_set_stall_timeout, METH_O,
     "seconds a closed packet may stay incomplete before the reader checks whether its writers died (default 0.1)"},
    {NULL},
};

PyTypeObject Buffer_Type = {
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
            ring_flush(b, final, 0);
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

PyObject *mod_drain_at_exit(PyObject *m, PyObject *args)
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

