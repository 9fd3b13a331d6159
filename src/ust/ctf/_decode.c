/*
 * ust.ctf._decode -- the C half of the reader's hot loops:
 *
 *   format_lines   a timestamp, a delta, joining and UTF-8 encoding per line of
 *                  `ust view` (generated Python decodes the fields the C side
 *                  does not know: ust/ctf/_codegen.py, _fasttext.py)
 *   scan_events    where each event of a packet is, without decoding it
 *   render_packet  a whole packet's events as text, for the layouts it handles
 *
 * format_lines, one call per batch of lines:
 *
 *   format_lines(keys, texts, origin, flags, prev) -> (bytes, prev)
 *
 *   keys   list of int: clock values in cycles (flags & CYCLES) or
 *          nanoseconds from the Epoch minus `origin`
 *   texts  list of str: each line after its timestamp and delta, without '\n';
 *          lone surrogates (undecodable trace bytes) are written back as the
 *          original bytes (surrogateescape)
 *   origin int added to each key to get ns from the Epoch (time modes)
 *   flags  CYCLES 1, SECONDS 2, GMT 4, DATE 8, DELTA 16, NAMES_HEADER 32
 *   prev   the key (ns, or cycles) of the previous line printed, or None
 *
 * The output is byte-identical to the pure-Python fallback in _fasttext.py
 * (tests run both). Returns NULL with OverflowError when a key does not fit
 * in 64 bits: the caller then uses the fallback.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define F_CYCLES 1
#define F_SECONDS 2
#define F_GMT 4
#define F_DATE 8
#define F_DELTA 16
#define F_NAMES_HEADER 32

/* ------------------------------------------------------------------------ */
/* growable output buffer                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

static int buf_reserve_slow(buf_t *b, size_t extra)
{
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + extra)
        cap *= 2;
    char *d = PyMem_Realloc(b->data, cap);
    if (!d) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

static inline int buf_reserve(buf_t *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    return buf_reserve_slow(b, extra);
}

static inline void buf_put(buf_t *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* n zero-padded to `width` digits (n >= 0), appended; returns digits written */
static inline void put_uint(buf_t *b, uint64_t n, int width)
{
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (24 - i < width)
        tmp[--i] = '0';
    buf_put(b, tmp + i, (size_t)(24 - i));
}

/* ------------------------------------------------------------------------ */
/* time of day, cached per second                                           */
/* ------------------------------------------------------------------------ */

typedef struct {
    int64_t sec;
    int valid;
    char text[64];
    size_t len;
} sec_cache_t;

static int sec_text(sec_cache_t *c, int64_t sec, int flags)
{
    if (c->valid && c->sec == sec)
        return 0;
    if (flags & F_SECONDS) {
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "%lld", (long long)sec);
        memcpy(c->text, tmp, (size_t)n);
        c->len = (size_t)n;
    } else {
        struct tm tm;
        time_t t = (time_t)sec;
        struct tm *r = (flags & F_GMT) ? gmtime_r(&t, &tm) : localtime_r(&t, &tm);
        if (!r) {
            PyErr_SetString(PyExc_OverflowError, "timestamp out of range");
            return -1;
        }
        c->len = strftime(c->text, sizeof c->text, (flags & F_DATE) ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm);
    }
    c->sec = sec;
    c->valid = 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* format_lines                                                             */
/* ------------------------------------------------------------------------ */

static int put_text(buf_t *b, PyObject *s)
{
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "texts must be str");
        return -1;
    }
    if (PyUnicode_IS_ASCII(s)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(s);
        if (buf_reserve(b, (size_t)n + 1) < 0)
            return -1;
        buf_put(b, (const char *)PyUnicode_DATA(s), (size_t)n);
        return 0;
    }
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u) {
        if (buf_reserve(b, (size_t)n + 1) < 0)
            return -1;
        buf_put(b, u, (size_t)n);
        return 0;
    }
    /* lone surrogates: the bytes the trace had */
    PyErr_Clear();
    PyObject *raw = PyUnicode_AsEncodedString(s, "utf-8", "surrogateescape");
    if (!raw)
        return -1;
    n = PyBytes_GET_SIZE(raw);
    if (buf_reserve(b, (size_t)n + 1) < 0) {
        Py_DECREF(raw);
        return -1;
    }
    buf_put(b, PyBytes_AS_STRING(raw), (size_t)n);
    Py_DECREF(raw);
    return 0;
}

static PyObject *format_lines(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *keys, *texts, *origin_o, *prev_o;
    int flags;
    if (!PyArg_ParseTuple(args, "O!O!OiO", &PyList_Type, &keys, &PyList_Type, &texts, &origin_o, &flags, &prev_o))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(texts) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and texts differ in length");
        return NULL;
    }
    int cycles = flags & F_CYCLES, delta = flags & F_DELTA, nh = flags & F_NAMES_HEADER;
    int64_t origin = 0;
    if (!cycles) {
        origin = PyLong_AsLongLong(origin_o);
        if (origin == -1 && PyErr_Occurred())
            return NULL;
    }
    int have_prev = prev_o != Py_None;
    uint64_t prev_c = 0;
    int64_t prev_ns = 0;
    if (have_prev) {
        if (cycles) {
            prev_c = PyLong_AsUnsignedLongLong(prev_o);
        } else {
            prev_ns = PyLong_AsLongLong(prev_o);
        }
        if (PyErr_Occurred())
            return NULL;
    }
    buf_t b = {NULL, 0, 0};
    sec_cache_t sc = {0, 0, {0}, 0};
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        if (buf_reserve(&b, 256) < 0)
            goto fail;
        if (cycles) {
            uint64_t c = PyLong_AsUnsignedLongLong(k);
            if (c == (uint64_t)-1 && PyErr_Occurred())
                goto fail;
            if (nh) {
                buf_put(&b, "timestamp = ", 12);
                put_uint(&b, c, 20);
                buf_put(&b, ", ", 2);
                if (delta) {
                    if (have_prev) {
                        buf_put(&b, "delta = +", 9);
                        put_uint(&b, c - prev_c, 12);
                        buf_put(&b, ", ", 2);
                    } else {
                        buf_put(&b, "delta = +\?\?\?\?\?\?\?\?\?\?\?\?, ", 23);
                    }
                }
            } else {
                buf_put(&b, "[", 1);
                put_uint(&b, c, 20);
                buf_put(&b, "] ", 2);
                if (delta) {
                    if (have_prev) {
                        buf_put(&b, "(+", 2);
                        put_uint(&b, c - prev_c, 12);
                        buf_put(&b, ") ", 2);
                    } else {
                        buf_put(&b, "(+\?\?\?\?\?\?\?\?\?\?\?\?) ", 16);
                    }
                }
            }
            prev_c = c;
        } else {
            int64_t key = PyLong_AsLongLong(k);
            if (key == -1 && PyErr_Occurred())
                goto fail;
            int64_t ns;
            if (__builtin_add_overflow(key, origin, &ns)) {
                PyErr_SetString(PyExc_OverflowError, "timestamp out of range");
                goto fail;
            }
            int64_t sec = ns / 1000000000, frac = ns % 1000000000;
            if (frac < 0) {
                frac += 1000000000;
                sec -= 1;
            }
            if (sec_text(&sc, sec, flags) < 0)
                goto fail;
            if (nh)
                buf_put(&b, "timestamp = ", 12);
            else
                buf_put(&b, "[", 1);
            buf_put(&b, sc.text, sc.len);
            buf_put(&b, ".", 1);
            put_uint(&b, (uint64_t)frac, 9);
            buf_put(&b, nh ? ", " : "] ", 2);
            if (delta) {
                if (nh)
                    buf_put(&b, "delta = ", 8);
                else
                    buf_put(&b, "(", 1);
                if (have_prev && ns >= prev_ns) {
                    int64_t d = ns - prev_ns;
                    buf_put(&b, "+", 1);
                    put_uint(&b, (uint64_t)(d / 1000000000), 1);
                    buf_put(&b, ".", 1);
                    put_uint(&b, (uint64_t)(d % 1000000000), 9);
                } else if (have_prev) {
                    /* cannot happen in time order; keep the Python fallback's text */
                    int64_t d = ns - prev_ns;
                    int64_t q = d / 1000000000, r = d % 1000000000;
                    if (r < 0) {
                        r += 1000000000;
                        q -= 1;
                    }
                    char tmp[48];
                    int m = snprintf(tmp, sizeof tmp, "+%lld.%09lld", (long long)q, (long long)r);
                    buf_put(&b, tmp, (size_t)m);
                } else {
                    buf_put(&b, "+?.\?\?\?\?\?\?\?\?\?", 12);
                }
                buf_put(&b, nh ? ", " : ") ", 2);
            }
            prev_ns = ns;
        }
        have_prev = 1;
        if (put_text(&b, PyList_GET_ITEM(texts, i)) < 0)
            goto fail;
        b.data[b.len++] = '\n';
    }
    PyObject *out = PyBytes_FromStringAndSize(b.data ? b.data : "", (Py_ssize_t)b.len);
    PyMem_Free(b.data);
    if (!out)
        return NULL;
    PyObject *prev_out;
    if (!have_prev) {
        prev_out = Py_NewRef(prev_o);
    } else if (cycles) {
        prev_out = PyLong_FromUnsignedLongLong(prev_c);
    } else {
        prev_out = PyLong_FromLongLong(prev_ns);
    }
    if (!prev_out) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(NN)", out, prev_out);
fail:
    PyMem_Free(b.data);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* what scan_events and render_packet share: errors, LTTng's event headers   */
/* ------------------------------------------------------------------------ */

/*
 * A malformed packet: ValueError("what|offset"), offset the event's byte in the
 * packet (ust.ctf._codegen.PacketError.from_c turns it into the reader's error).
 */
static PyObject *packet_error(const char *what, Py_ssize_t off)
{
    PyErr_Format(PyExc_ValueError, "%s|%zd", what, off);
    return NULL;
}

/* header kinds: ust.ctf._codegen.lttng_header_kind's "large" and "compact" */
enum { HEADER_LARGE = 1, HEADER_COMPACT = 2 };

/*
 * The one reader of LTTng's event headers (little-endian):
 *   large    uint16 id, uint32 timestamp; or id 65535, uint32 id, uint64 timestamp
 *   compact  5-bit id, 27-bit timestamp in one uint32; or id 31, uint32 id, uint64 timestamp
 * Reads the header at d[*p] (nothing read at or past `end`), sets *eid, moves *p
 * past the header and updates the stream's clock *cur: a full timestamp replaces
 * it, a short one its low bits, with at most one wrap since the previous event
 * (CTF's rule). Returns NULL, or what is wrong (nothing is updated then).
 */
static inline __attribute__((always_inline)) const char *lttng_event_header(int kind, const unsigned char *d, Py_ssize_t *p, Py_ssize_t end,
                                             unsigned long long *cur, uint32_t *eid)
{
    Py_ssize_t at = *p;
    if (kind == HEADER_LARGE) {
        uint16_t id16;
        uint32_t ts;
        if (end - at < 6)
            return "truncated event header";
        memcpy(&id16, d + at, 2);
        if (id16 != 65535) {
            memcpy(&ts, d + at + 2, 4);
            uint64_t low = *cur & 0xFFFFFFFFull;
            *cur = *cur - low + ts + (ts >= low ? 0 : 0x100000000ull);
            *eid = id16;
            *p = at + 6;
            return NULL;
        }
        if (end - at < 14)
            return "truncated event header";
        memcpy(eid, d + at + 2, 4);
        memcpy(cur, d + at + 6, 8);
        *p = at + 14;
        return NULL;
    }
    uint32_t w;
    if (end - at < 4)
        return "truncated event header";
    memcpy(&w, d + at, 4);
    if ((w & 31) != 31) {
        uint64_t ts = w >> 5, low = *cur & 0x7FFFFFFull;
        *cur = *cur - low + ts + (ts >= low ? 0 : 0x8000000ull);
        *eid = w & 31;
        *p = at + 4;
        return NULL;
    }
    if (end - at < 13)
        return "truncated event header";
    memcpy(eid, d + at + 1, 4);
    memcpy(cur, d + at + 5, 8);
    *p = at + 13;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* scan_events: where the events of a packet are (the bulk path)            */
/* ------------------------------------------------------------------------ */

/*
 * scan_events(data, p, end, cur, header_kind, programs) -> (eids, offsets, cycles, cur)
 *
 * Walks the events of one packet without decoding their fields: for each
 * event, its id (uint32), the offset in `data` just after its header (uint32)
 * and its clock value (uint64), returned as three bytes objects (native
 * arrays). header_kind: 1 = LTTng's large event header, 2 = the compact one
 * (both little-endian). programs: a tuple indexed by event id; each item is
 * None (unknown id: an error) or a bytes object of int32 ops skipping the
 * stream event context, the event context and the payload:
 *
 *   OP_FIXED n                     skip n bytes
 *   OP_STRING                      skip past the next NUL
 *   OP_ALIGN a                     align the offset (relative to the packet) to a bytes
 *   OP_SEQ size back elem          n = little-endian unsigned of `size` bytes found
 *                                  `back` bytes before the offset; skip n * elem bytes
 *
 * Errors raise ValueError("...at offset N") with the event's offset.
 */

enum { OP_FIXED = 1, OP_STRING = 2, OP_ALIGN = 3, OP_SEQ = 4 };


static PyObject *scan_events(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t p, end;
    unsigned long long cur;
    int kind;
    PyObject *programs;
    if (!PyArg_ParseTuple(args, "y*nnKiO!", &view, &p, &end, &cur, &kind, &PyTuple_Type, &programs))
        return NULL;
    const unsigned char *d = view.buf;
    if (end > view.len || p < 0 || p > end || end > 0xFFFFFFFFLL) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad packet bounds|0");
        return NULL;
    }
    Py_ssize_t nprog = PyTuple_GET_SIZE(programs);
    Py_ssize_t cap = (end - p) / 2 + 1, n = 0; /* an event takes at least 2 bytes (large) or 4 (compact) */
    uint32_t *eids = PyMem_Malloc(sizeof(uint32_t) * (size_t)cap);
    uint32_t *offs = PyMem_Malloc(sizeof(uint32_t) * (size_t)cap);
    uint64_t *cycs = PyMem_Malloc(sizeof(uint64_t) * (size_t)cap);
    PyObject *result = NULL;
    if (!eids || !offs || !cycs) {
        PyErr_NoMemory();
        goto done;
    }
    while (p < end) {
        Py_ssize_t p0 = p;
        uint32_t eid;
        const char *bad = lttng_event_header(kind, d, &p, end, &cur, &eid);
        if (bad) {
            packet_error(bad, p0);
            goto done;
        }
        if ((Py_ssize_t)eid >= nprog || PyTuple_GET_ITEM(programs, eid) == Py_None) {
            packet_error("unknown event id", p0);
            goto done;
        }
        eids[n] = eid;
        offs[n] = (uint32_t)p;
        cycs[n] = cur;
        n++;
        PyObject *prog = PyTuple_GET_ITEM(programs, eid);
        const int32_t *op = (const int32_t *)PyBytes_AS_STRING(prog);
        const int32_t *op_end = op + PyBytes_GET_SIZE(prog) / 4;
        while (op < op_end) {
            switch (op[0]) {
            case OP_FIXED:
                p += op[1];
                op += 2;
                break;
            case OP_STRING: {
                const unsigned char *z = p < end ? memchr(d + p, 0, (size_t)(end - p)) : NULL;
                if (!z) {
                    packet_error("unterminated string", p0);
                    goto done;
                }
                p = (z - d) + 1;
                op += 1;
                break;
            }
            case OP_ALIGN:
                p = (p + op[1] - 1) & ~(Py_ssize_t)(op[1] - 1);
                op += 2;
                break;
            case OP_SEQ: {
                int size = op[1], back = op[2], elem = op[3];
                if (p - back < 0 || p - back + size > end) {
                    packet_error("data runs past the end of the packet", p0);
                    goto done;
                }
                uint64_t len = 0;
                for (int i = size - 1; i >= 0; i--)
                    len = (len << 8) | d[p - back + i];
                if (len > (uint64_t)(end - p) || (elem && len * (uint64_t)elem > (uint64_t)(end - p))) {
                    packet_error("data runs past the end of the packet", p0);
                    goto done;
                }
                p += (Py_ssize_t)(len * (uint64_t)elem);
                op += 4;
                break;
            }
            default:
                PyErr_SetString(PyExc_SystemError, "bad scan program");
                goto done;
            }
            if (p > end) {
                packet_error("data runs past the end of the packet", p0);
                goto done;
            }
        }
        if (p <= p0) {
            packet_error("event of size zero", p0);
            goto done;
        }
    }
    {
        PyObject *a = PyBytes_FromStringAndSize((const char *)eids, (Py_ssize_t)(n * sizeof(uint32_t)));
        PyObject *b = PyBytes_FromStringAndSize((const char *)offs, (Py_ssize_t)(n * sizeof(uint32_t)));
        PyObject *c = PyBytes_FromStringAndSize((const char *)cycs, (Py_ssize_t)(n * sizeof(uint64_t)));
        if (a && b && c)
            result = Py_BuildValue("(NNNK)", a, b, c, cur);
        else {
            Py_XDECREF(a);
            Py_XDECREF(b);
            Py_XDECREF(c);
        }
    }
done:
    PyMem_Free(eids);
    PyMem_Free(offs);
    PyMem_Free(cycs);
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------------ */
/* render_packet: view's text of the events of a packet                     */
/* ------------------------------------------------------------------------ */

/*
 * render_packet(data, p, end, cur, header_kind, programs, lits, enum_fmts, pctx,
 *               out_cyc, out_txt, limit) -> (cur, p)
 *
 * The C twin of the generated Python packet decoders of `ust view`
 * (_fasttext.compile_packet_text), for stream classes whose every event
 * class uses only the types below. For each event, appends its clock value
 * to out_cyc and its text (babeltrace2's format, after the time and delta)
 * to out_txt; stops after `limit` events and returns where it stopped. programs[eid] is a bytes object of int32 ops:
 *
 *   R_LIT i                      lits[i] (bytes)
 *   R_PCTX                       the packet-context text `pctx` (bytes)
 *   R_INT size signed base reg   an integer of `size` bytes; reg >= 0 keeps it for a sequence
 *   R_FLOAT size                 4 or 8 bytes, printed like Python's "%g"
 *   R_STRING                     a NUL-terminated string, quoted and escaped
 *   R_TEXT n reg                 a UTF-8 byte array (n bytes, or regs[reg] when reg >= 0), cut at NUL
 *   R_INTS n reg size signed base names   an integer array/sequence
 *   R_ENUM size signed i         enum_fmts[i](value) (a Python callable returning str)
 *   R_ALIGN a                    align to a bytes (relative to the packet)
 *
 * Errors raise ValueError("what|offset") like scan_events.
 */

enum { R_LIT = 1, R_PCTX, R_INT, R_FLOAT, R_STRING, R_TEXT, R_INTS, R_ENUM, R_ALIGN };

static int read_int(const unsigned char *d, Py_ssize_t p, Py_ssize_t end, int size, int sgn, int64_t *sv,
                    uint64_t *uv)
{
    if (p < 0 || size <= 0 || size > 8 || end - p < size)
        return -1;
    uint64_t v = 0;
    for (int i = size - 1; i >= 0; i--)
        v = (v << 8) | d[p + i];
    if (sgn && size < 8 && (v >> (size * 8 - 1)) & 1)
        v |= ~0ull << (size * 8);
    *uv = v;
    *sv = (int64_t)v;
    return 0;
}

static void put_int_text(buf_t *b, int size, int sgn, int base, int64_t sv, uint64_t uv)
{
    char tmp[80];
    int i = 80;
    int bits = size * 8;
    if (base == 10) {
        if (sgn && sv < 0) {
            uint64_t m = (uint64_t)(-(sv + 1)) + 1;
            do {
                tmp[--i] = (char)('0' + m % 10);
                m /= 10;
            } while (m);
            tmp[--i] = '-';
        } else {
            uint64_t m = sgn ? (uint64_t)sv : uv;
            do {
                tmp[--i] = (char)('0' + m % 10);
                m /= 10;
            } while (m);
        }
        buf_put(b, tmp + i, (size_t)(80 - i));
        return;
    }
    /* two's complement over whole digits, like babeltrace2 */
    int dbits = base == 16 ? 4 : base == 8 ? 3 : 1;
    int width = (bits + dbits - 1) / dbits * dbits;
    unsigned __int128 v = uv;
    if (sgn && sv < 0) {
        unsigned __int128 mask = width >= 128 ? ~(unsigned __int128)0 : (((unsigned __int128)1 << width) - 1);
        v = ((unsigned __int128)(__int128)sv) & mask;
    } else if (bits < 64) {
        v &= (((unsigned __int128)1 << bits) - 1);
    }
    if (base == 2) {
        for (int k = 0; k < bits; k++) {
            tmp[--i] = (char)('0' + (int)(v & 1));
            v >>= 1;
        }
        buf_put(b, "0b", 2);
        buf_put(b, tmp + i, (size_t)(80 - i));
        return;
    }
    const char *digits = "0123456789ABCDEF";
    do {
        tmp[--i] = digits[(int)(v % (unsigned)base)];
        v /= (unsigned)base;
    } while (v);
    buf_put(b, base == 16 ? "0x" : "0", base == 16 ? 2 : 1);
    buf_put(b, tmp + i, (size_t)(80 - i));
}

static int put_quoted(buf_t *b, const unsigned char *s, Py_ssize_t n)
{
    if (buf_reserve(b, (size_t)n * 4 + 2) < 0)
        return -1;
    b->data[b->len++] = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        const char *e = NULL;
        switch (c) {
        case '\n': e = "\\n"; break;
        case '\t': e = "\\t"; break;
        case '\r': e = "\\r"; break;
        case '\\': e = "\\\\"; break;
        case '"': e = "\\\""; break;
        case '\v': e = "\\v"; break;
        case '\f': e = "\\f"; break;
        case '\a': e = "\\a"; break;
        case '\b': e = "\\b"; break;
        default: break;
        }
        if (e) {
            b->data[b->len++] = e[0];
            b->data[b->len++] = e[1];
        } else if (c < 0x20 || c == 0x7f) {
            static const char hx[] = "0123456789abcdef";
            b->data[b->len++] = '\\';
            b->data[b->len++] = 'x';
            b->data[b->len++] = hx[c >> 4];
            b->data[b->len++] = hx[c & 15];
        } else {
            b->data[b->len++] = (char)c;
        }
    }
    b->data[b->len++] = '"';
    return 0;
}

static void put_float(buf_t *b, double v)
{
    char tmp[64];
    int n;
    if (v != v)
        n = snprintf(tmp, sizeof tmp, "nan");
    else if (v == __builtin_inf())
        n = snprintf(tmp, sizeof tmp, "inf");
    else if (v == -__builtin_inf())
        n = snprintf(tmp, sizeof tmp, "-inf");
    else
        n = snprintf(tmp, sizeof tmp, "%g", v);
    buf_put(b, tmp, (size_t)n);
}

static PyObject *render_packet(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t p, end;
    unsigned long long cur;
    int kind;
    PyObject *programs, *lits, *enum_fmts, *pctx, *out_cyc, *out_txt;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "y*nnKiO!O!O!SO!O!n", &view, &p, &end, &cur, &kind, &PyTuple_Type, &programs,
                          &PyTuple_Type, &lits, &PyTuple_Type, &enum_fmts, &pctx, &PyList_Type, &out_cyc,
                          &PyList_Type, &out_txt, &limit))
        return NULL;
    const unsigned char *d = view.buf;
    PyObject *result = NULL;
    buf_t b = {NULL, 0, 0};
    int64_t regs[16] = {0};
    if (end > view.len || p < 0 || p > end) {
        packet_error("bad packet bounds", 0);
        goto done;
    }
    Py_ssize_t nprog = PyTuple_GET_SIZE(programs), nlits = PyTuple_GET_SIZE(lits),
               nenum = PyTuple_GET_SIZE(enum_fmts);
    while (p < end && limit-- > 0) {
        Py_ssize_t p0 = p;
        uint32_t eid;
        const char *bad = lttng_event_header(kind, d, &p, end, &cur, &eid);
        if (bad) {
            packet_error(bad, p0);
            goto done;
        }
        if ((Py_ssize_t)eid >= nprog || PyTuple_GET_ITEM(programs, eid) == Py_None) {
            packet_error("unknown event id", p0);
            goto done;
        }
        PyObject *prog = PyTuple_GET_ITEM(programs, eid);
        const int32_t *op = (const int32_t *)PyBytes_AS_STRING(prog);
        const int32_t *op_end = op + PyBytes_GET_SIZE(prog) / 4;
        b.len = 0;
        while (op < op_end) {
            if (buf_reserve(&b, 256) < 0)
                goto done;
            switch (op[0]) {
            case R_LIT: {
                if (op[1] < 0 || op[1] >= nlits) {
                    PyErr_SetString(PyExc_SystemError, "bad render program");
                    goto done;
                }
                PyObject *l = PyTuple_GET_ITEM(lits, op[1]);
                Py_ssize_t n = PyBytes_GET_SIZE(l);
                if (buf_reserve(&b, (size_t)n) < 0)
                    goto done;
                buf_put(&b, PyBytes_AS_STRING(l), (size_t)n);
                op += 2;
                break;
            }
            case R_PCTX: {
                Py_ssize_t n = PyBytes_GET_SIZE(pctx);
                if (buf_reserve(&b, (size_t)n) < 0)
                    goto done;
                buf_put(&b, PyBytes_AS_STRING(pctx), (size_t)n);
                op += 1;
                break;
            }
            case R_INT: {
                int64_t sv;
                uint64_t uv;
                if (read_int(d, p, end, op[1], op[2], &sv, &uv) < 0) {
                    packet_error("data runs past the end of the packet", p0);
                    goto done;
                }
                p += op[1];
                put_int_text(&b, op[1], op[2], op[3], sv, uv);
                if (op[4] >= 0 && op[4] < 16)
                    regs[op[4]] = op[2] ? sv : (int64_t)(uv > (uint64_t)INT64_MAX ? INT64_MAX : uv);
                op += 5;
                break;
            }
            case R_FLOAT: {
                if (end - p < op[1]) {
                    packet_error("data runs past the end of the packet", p0);
                    goto done;
                }
                double v;
                if (op[1] == 4) {
                    float f;
                    memcpy(&f, d + p, 4);
                    v = f;
                } else {
                    memcpy(&v, d + p, 8);
                }
                p += op[1];
                put_float(&b, v);
                op += 2;
                break;
            }
            case R_STRING: {
                const unsigned char *z = p < end ? memchr(d + p, 0, (size_t)(end - p)) : NULL;
                if (!z) {
                    packet_error("unterminated string", p0);
                    goto done;
                }
                if (put_quoted(&b, d + p, (z - d) - p) < 0)
                    goto done;
                p = (z - d) + 1;
                op += 1;
                break;
            }
            case R_TEXT: {
                int64_t n = op[2] >= 0 ? regs[op[2] & 15] : op[1];
                if (n < 0 || n > end - p) {
                    packet_error("data runs past the end of the packet", p0);
                    goto done;
                }
                const unsigned char *z = memchr(d + p, 0, (size_t)n);
                Py_ssize_t len = z ? (z - (d + p)) : (Py_ssize_t)n;
                if (put_quoted(&b, d + p, len) < 0)
                    goto done;
                p += (Py_ssize_t)n;
                op += 3;
                break;
            }
            case R_INTS: {
                int64_t n = op[2] >= 0 ? regs[op[2] & 15] : op[1];
                int size = op[3], sgn = op[4], base = op[5], names = op[6];
                if (n < 0 || size <= 0 || n > (end - p) / size) {
                    packet_error("data runs past the end of the packet", p0);
                    goto done;
                }
                if (n == 0) {
                    buf_put(&b, "[ ]", 3);
                } else {
                    buf_put(&b, "[ ", 2);
                    for (int64_t k = 0; k < n; k++) {
                        if (buf_reserve(&b, 128) < 0)
                            goto done;
                        if (k)
                            buf_put(&b, ", ", 2);
                        if (names) {
                            buf_put(&b, "[", 1);
                            put_uint(&b, (uint64_t)k, 1);
                            buf_put(&b, "] = ", 4);
                        }
                        int64_t sv;
                        uint64_t uv;
                        read_int(d, p, end, size, sgn, &sv, &uv);
                        p += size;
                        put_int_text(&b, size, sgn, base, sv, uv);
                    }
                    if (buf_reserve(&b, 4) < 0)
                        goto done;
                    buf_put(&b, " ]", 2);
                }
                op += 7;
                break;
            }
            case R_ENUM: {
                int64_t sv;
                uint64_t uv;
                if (read_int(d, p, end, op[1], op[2], &sv, &uv) < 0) {
                    packet_error("data runs past the end of the packet", p0);
                    goto done;
                }
                if (op[3] < 0 || op[3] >= nenum) {
                    PyErr_SetString(PyExc_SystemError, "bad render program");
                    goto done;
                }
                p += op[1];
                PyObject *v = op[2] ? PyLong_FromLongLong(sv) : PyLong_FromUnsignedLongLong(uv);
                if (!v)
                    goto done;
                PyObject *t = PyObject_CallOneArg(PyTuple_GET_ITEM(enum_fmts, op[3]), v);
                Py_DECREF(v);
                if (!t)
                    goto done;
                int rc = put_text(&b, t);
                Py_DECREF(t);
                if (rc < 0)
                    goto done;
                op += 4;
                break;
            }
            case R_ALIGN: {
                Py_ssize_t a = op[1];
                if (a > 0)
                    p = (p + a - 1) / a * a;
                if (p > end) {
                    packet_error("data runs past the end of the packet", p0);
                    goto done;
                }
                op += 2;
                break;
            }
            default:
                PyErr_SetString(PyExc_SystemError, "bad render program");
                goto done;
            }
        }
        if (p <= p0) {
            packet_error("event of size zero", p0);
            goto done;
        }
        PyObject *txt = PyUnicode_DecodeUTF8(b.data ? b.data : "", (Py_ssize_t)b.len, "surrogateescape");
        if (!txt)
            goto done;
        int rc = PyList_Append(out_txt, txt);
        Py_DECREF(txt);
        if (rc < 0)
            goto done;
        PyObject *c = PyLong_FromUnsignedLongLong(cur);
        if (!c)
            goto done;
        rc = PyList_Append(out_cyc, c);
        Py_DECREF(c);
        if (rc < 0)
            goto done;
    }
    result = Py_BuildValue("(Kn)", cur, p);
done:
    PyMem_Free(b.data);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"format_lines", format_lines, METH_VARARGS,
     "format_lines(keys, texts, origin, flags, prev) -> (bytes, prev): timestamped lines of `ust view`."},
    {"scan_events", scan_events, METH_VARARGS,
     "scan_events(data, p, end, cur, header_kind, programs) -> (eids, offsets, cycles, cur): event positions."},
    {"render_packet", render_packet, METH_VARARGS,
     "render_packet(data, p, end, cur, kind, programs, lits, enum_fmts, pctx, out_cyc, out_txt, limit)"
     " -> (cur, p)."},
    {NULL, NULL, 0, NULL},
};

static int exec_module(PyObject *m)
{
    tzset();
    if (PyModule_AddIntConstant(m, "CYCLES", F_CYCLES) < 0 || PyModule_AddIntConstant(m, "SECONDS", F_SECONDS) < 0 ||
        PyModule_AddIntConstant(m, "GMT", F_GMT) < 0 || PyModule_AddIntConstant(m, "DATE", F_DATE) < 0 ||
        PyModule_AddIntConstant(m, "DELTA", F_DELTA) < 0 ||
        PyModule_AddIntConstant(m, "NAMES_HEADER", F_NAMES_HEADER) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ust.ctf._decode", "C half of ust view's text output (see _decode.c).", 0, methods, slots,
    NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__decode(void)
{
    return PyModuleDef_Init(&module);
}
