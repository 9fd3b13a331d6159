/*
 * ust ring buffer: shared-memory layout and packet layout.
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
#ifndef UST_RING_H
#define UST_RING_H

#include <stdatomic.h>
#include <stdint.h>

#define UST_SHM_MAGIC 0x3166756252747375ULL /* "ustRbuf1" little-endian */
#define UST_SHM_VERSION 3 /* 3: writers[].owner holds the start time; first_timestamp */
#define UST_CACHELINE 64

/* CTF packet header + LTTng's packet context, byte-packed (see metadata.py). */
#define CTF_MAGIC 0xC1FC1FC1U
struct __attribute__((packed)) ust_packet_header {
    uint32_t magic;
    uint8_t uuid[16];
    uint32_t stream_id;
    uint64_t stream_instance_id;
    /* packet context */
    uint64_t timestamp_begin;
    uint64_t timestamp_end;
    uint64_t content_size; /* bits */
    uint64_t packet_size;  /* bits */
    uint64_t packet_seq_num;
    uint64_t events_discarded; /* cumulative, for the stream */
    uint32_t cpu_id;
};
#define UST_PACKET_HEADER_SIZE ((uint64_t)sizeof(struct ust_packet_header)) /* 76 */

/* LTTng's large event header: id 0..65534 with a 32-bit timestamp, or
 * 65535 followed by a 32-bit id and a 64-bit timestamp. */
#define UST_EVENT_ID_EXTENDED 65535
#define UST_EVENT_HEADER_COMPACT 6
#define UST_EVENT_HEADER_EXTENDED 14

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
};

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

    /* Written by the reader. */
    _Alignas(UST_CACHELINE) _Atomic uint64_t consumed;
    _Atomic uint32_t reader_spare; /* physical index the reader owns */
    _Atomic uint32_t reader_sleeping;
    _Atomic uint64_t packets_read;
    _Atomic uint64_t packets_reclaimed; /* packets completed by the reader for a dead writer */

    /* The processes writing this stream (see struct ust_writer). */
    _Alignas(UST_CACHELINE) struct ust_writer writers[UST_MAX_WRITERS];
};

#endif
