/* ======================================================================
 * A process's view of one stream (the Python object ust._ring.Buffer)
 * ====================================================================== */

/*
 * ust ring buffer: one stream's shared memory, and a process's view of it.
 *
 * One stream (channel x CPU) is one shared-memory region:
 *
 *   [ struct ust_shm_header | struct ust_slot[num_subbuf] | subbuf 0 | ... | subbuf num_subbuf ]
 *
 * There are num_subbuf + 1 physical sub-buffers: writers see num_subbuf of
 * them through the slot table, the reader owns the extra one (its "spare"),
 * and swaps it with a complete sub-buffer when it reads. What the reader
 * holds is out of the writers' reach, so a flight-recorder snapshot is never
 * torn.
 *
 * The region holds offsets and indexes only, never pointers: it is mapped at
 * different addresses in different processes, and every index read from it
 * is bounds-checked because another process may have scribbled on it.
 */
#ifndef UST_RING_SHM_H
#define UST_RING_SHM_H

#include "common.h"
#include "layout.h"

#define UST_SHM_MAGIC 0x3166756252747375ULL /* "ustRbuf1" little-endian */
#define UST_SHM_VERSION 5 /* 3: writers[].owner holds the start time; first_timestamp. 4: the live barrier (opening).
                           5: overflow_openers */
#define UST_CACHELINE 64

/* Slot table entry: which physical sub-buffer a slot maps to, for which lap,
 * and whether writers are still in it. */
#define SLOT_PHYS_MASK 0xFFFFULL
#define SLOT_ACTIVE (1ULL << 16) /* writers may still touch it (lap not fully committed) */
#define SLOT_READ (1ULL << 17)   /* the reader took this lap's data */
#define SLOT_LAP_SHIFT 18
#define SLOT_PHYS(v) ((uint32_t)((v) & SLOT_PHYS_MASK))
#define SLOT_LAP(v) ((v) >> SLOT_LAP_SHIFT)

struct ust_slot {
    /* Cumulative bytes committed in this slot over all laps: lap L of the
     * slot is complete when it reaches (L + 1) * subbuf_size. */
    _Atomic uint64_t commit;
    _Atomic uint64_t table;
    char pad[UST_CACHELINE - 2 * sizeof(uint64_t)];
};

/* One writing process of a stream, and the reservation it has in flight (if
 * end > start). Written by that process only (relaxed stores, before its CAS
 * on write_offset and after its commit); read by the reader when a packet
 * stays incomplete, to find what a writer killed between reserve and commit
 * left uncommitted. One in-flight reservation per process: a tracepoint call
 * holds the GIL from reserve to commit. */
#define UST_MAX_WRITERS 64
struct ust_writer {
    /* Who: the process's pid (low 32 bits) and the low 32 bits of its start
     * time (field 22 of /proc/PID/stat, clock ticks since boot; 0 if it could
     * not be read), in one word so that an entry is claimed and freed with
     * one CAS and never shows one process's pid with another's start time.
     * The start time tells a dead writer from a new process that got its pid.
     * 0: free. */
    _Atomic uint64_t owner;
    _Atomic uint64_t start; /* stream offset where the reservation starts (in the previous packet if it closes one) */
    _Atomic uint64_t end;   /* ... and ends; end <= start: none in flight */
    _Atomic uint64_t ts;    /* its timestamp */
    /* 1 from before this writer reads its clock to open a packet at a
     * packet boundary until its CAS on write_offset is done (or it gave up):
     * the live barrier (ring_quiet_until in reader.c, docs/relay.md). */
    _Atomic uint64_t opening;
};

/* Writers without a writers[] entry (more than UST_MAX_WRITERS processes on
 * one stream) announce their "opening" window here instead, by their owner
 * word, so that the reader can tell a dead one (process_dead) as it does for
 * writers[].opening; the shared count unregistered_openers is the last resort
 * when all of these are taken at once. */
#define UST_MAX_OVERFLOW_OPENERS 64

struct ust_shm_header {
    /* Geometry: written once by the creator, read-only after. */
    uint64_t magic;
    uint32_t version;
    uint32_t overwrite;
    uint64_t subbuf_size;
    uint64_t num_subbuf;
    uint64_t slots_offset;
    uint64_t data_offset;
    uint64_t total_size;
    uint32_t stream_id;
    uint32_t cpu;
    uint8_t uuid[16];

    /* Written per event, on their own cache line. */
    _Alignas(UST_CACHELINE) _Atomic uint64_t write_offset;
    _Atomic uint64_t last_timestamp;

    /* Written on the slow paths only (lost events, sub-buffer switch). */
    _Alignas(UST_CACHELINE) _Atomic uint64_t lost_full; /* buffer full / writer lapped */
    _Atomic uint64_t lost_big;                         /* event larger than a sub-buffer */
    _Atomic uint64_t packets_overwritten;             /* overwrite mode: laps never read */
    _Atomic uint64_t reported_discarded;              /* events_discarded of the last closed packet */
    _Atomic uint64_t lost_dead;                       /* events of writers killed between reserve and commit */
    _Atomic uint64_t lost_args;                       /* enabled calls whose arguments did not fit (not recorded) */
    _Atomic uint64_t first_timestamp;                 /* timestamp_begin of the stream's first packet (0: none yet) */
    _Atomic uint64_t unregistered_openers;            /* writers with neither a writers[] entry nor an overflow_openers[]
                                                         one inside their "opening" window */

    /* Written by the reader. */
    _Alignas(UST_CACHELINE) _Atomic uint64_t consumed;
    _Atomic uint32_t reader_spare; /* physical index the reader owns */
    _Atomic uint32_t reader_sleeping;
    _Atomic uint64_t packets_read;
    _Atomic uint64_t packets_reclaimed; /* packets completed by the reader for a dead writer */

    /* The processes writing this stream (see struct ust_writer). */
    _Alignas(UST_CACHELINE) struct ust_writer writers[UST_MAX_WRITERS];

    /* Owner words of the writers without an entry inside their opening window (0: free). */
    _Alignas(UST_CACHELINE) _Atomic uint64_t overflow_openers[UST_MAX_OVERFLOW_OPENERS];
};

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
    int writers_gone; /* reader: a private copy of a crashed buffer (ust crash): no writer can come back */
    uint64_t held_pos;
    uint32_t held_phys;
    uint64_t held_len;
    uint64_t writer_generation;      /* fork_generation when this process registered as a writer */
    struct ust_writer *self_writer; /* its entry in h->writers, or NULL (table full) */
    /* writer (ring_write_u64_ctx): (packet index << 16) | the physical sub-buffer this process last found for
     * it with slot_acquire(); UINT64_MAX: none. A packet's sub-buffer cannot change while a reservation in
     * it is uncommitted (the reader only takes complete laps), and the index only grows: a writer holding a
     * reservation in that packet may use it without reading the slot table. Process-local memory; one
     * word, so that threads writing it at once (free-threaded builds) never pair one's index with
     * another's sub-buffer. */
    _Atomic uint64_t packet_cache;
    uint64_t stall_timeout_ns;       /* reader: how long a packet may stay incomplete before writers are checked */
    uint64_t stuck_pos, stuck_commit, stuck_since; /* reader: the incomplete packet it waits for */
    uint64_t last_discarded;         /* reader: events_discarded of the last packet handed out */
    uint64_t held_table;  /* the slot's table entry before ring_get() took the packet */
    uint64_t taken_table; /* ... and the one it put there (what ring_unget() expects back) */
    int gap_pending;   /* reader: nothing handed out from this stream yet (see hand_out_gap_marker) */
    int held_synthetic; /* reader: the held packet is that marker, not the buffer's */
    Py_ssize_t exports;
} BufferObject;

extern PyTypeObject Buffer_Type;

static inline int is_pow2(uint64_t v) { return v && !(v & (v - 1)); }
static inline unsigned log2u(uint64_t v) { unsigned s = 0; while ((1ULL << s) < v) s++; return s; }

/* A physical sub-buffer index read from the shared slot table, kept inside our mapping (scribbled
 * shared memory). */
INLINE uint32_t checked_phys(BufferObject *b, uint32_t phys)
{
    return UNLIKELY(phys > b->nsub) ? 0 : phys;
}

INLINE char *phys_base(BufferObject *b, uint32_t phys)
{
    return b->data + (uint64_t)checked_phys(b, phys) * b->sbsize;
}

/* Validate a mapped header and fill the process-local geometry (buffer.c). */
int buffer_bind(BufferObject *b);

#endif
