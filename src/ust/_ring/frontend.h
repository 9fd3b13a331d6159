/* ======================================================================
 * Frontend: reserve / commit / switch (writer side)
 * ====================================================================== */

#ifndef UST_RING_FRONTEND_H
#define UST_RING_FRONTEND_H

#include "shm.h"
#include "process.h"

struct reservation {
    uint64_t begin;  /* offset of the event (after the packet header if any) */
    uint64_t start;  /* offset where this reservation starts */
    uint64_t total;  /* bytes to commit */
    uint64_t ts;
    uint64_t slot, lap;
    char *dst;       /* where the event header goes */
    int extended;
};

/* Test-only pause between reserve and commit (frontend.c). */
extern long test_pause_at;
enum { PAUSE_RESERVED, PAUSE_CLOSING, PAUSE_OPENING };
void test_pause(int point);
void test_pause_configure(void);

/* Slow paths and the switch (frontend.c). */
void commit_bytes_slow(BufferObject *b, uint64_t slot, uint64_t lap);
void close_packet(BufferObject *b, uint64_t old, uint64_t ts, uint64_t lost);
void count_lost(_Atomic uint64_t *counter);
void register_writer(BufferObject *b, uint64_t generation);
int ring_reserve_slow(BufferObject *b, uint64_t payload, uint32_t event_id, struct reservation *r);
int ring_flush(BufferObject *b, int emit_empty, uint64_t at);

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

/* Commit n bytes to a slot's lap; the commit that completes the lap takes
 * the slow path: it delivers the packet to the reader. */
INLINE void commit_bytes(BufferObject *b, uint64_t slot, uint64_t lap, uint64_t n)
{
    uint64_t c = atomic_fetch_add_explicit(&b->slots[slot].commit, n, memory_order_acq_rel) + n;
    /* a lap ends on a sub-buffer multiple: the multiplication only then */
    if (UNLIKELY((c & b->sbmask) == 0) && c == (lap + 1) * b->sbsize)
        commit_bytes_slow(b, slot, lap);
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

/* The header fields that begin the packet at stream offset `begin`: what the
 * writer whose reservation opens a packet writes. Never the fields that end
 * it (timestamp_end, the sizes, events_discarded): those are its closer's
 * (close_packet), and the closer may come first: the live timer or a
 * rotation may close a packet between its opener's CAS and this write (the
 * opener then overwrote the closer's sizes with an empty packet's, and its
 * event was lost uncounted). The two write disjoint bytes, and each commits
 * after writing (acq_rel): the reader sees both once the lap is complete. */
INLINE void begin_packet(BufferObject *b, char *base, uint64_t begin, uint64_t ts)
{
    struct ust_shm_header *h = b->h;
    struct ust_packet_header *ph = (struct ust_packet_header *)base;
    ph->magic = CTF_MAGIC;
    memcpy(ph->uuid, h->uuid, 16);
    ph->stream_id = h->stream_id;
    ph->stream_instance_id = h->cpu;
    ph->timestamp_begin = ts;
    ph->packet_seq_num = begin >> b->sbshift;
    ph->cpu_id = h->cpu;
}

/* A whole header, for a packet its writer owns alone (an empty packet, the
 * reader's gap marker, a repaired header): begun and ended at `ts`, empty,
 * carrying the lost count `lost`. */
INLINE void open_packet(BufferObject *b, char *base, uint64_t begin, uint64_t ts, uint64_t lost)
{
    struct ust_packet_header *ph = (struct ust_packet_header *)base;
    begin_packet(b, base, begin, ts);
    ph->timestamp_end = ts;
    ph->content_size = UST_PACKET_HEADER_SIZE * 8;
    ph->packet_size = UST_PACKET_HEADER_SIZE * 8;
    ph->events_discarded = lost;
}

/* Reserve room for an event of `payload` bytes (context + fields).
 * Returns 0 and fills r, or -1 when the event is dropped (counted).
 * The fast path: an event with a compact header that fits in the packet
 * already open, by a writer already registered; everything else (opening
 * or closing a packet, an extended header, a drop, the first event of a
 * process) goes to ring_reserve_slow(), the whole algorithm. */
INLINE int ring_reserve(BufferObject *b, uint64_t payload, uint32_t event_id, struct reservation *r)
{
    struct ust_shm_header *h = b->h;
    if (UNLIKELY(b->writer_generation != LOAD_RELAXED(&fork_generation) || test_pause_at))
        return ring_reserve_slow(b, payload, event_id, r);
    struct ust_writer *me = b->self_writer;
    uint64_t need = UST_EVENT_HEADER_COMPACT + payload;
    uint64_t old = LOAD_RELAXED(&h->write_offset), ts;
    for (;;) {
        ts = clock_now();
        uint64_t in_sb = old & b->sbmask;
        /* in_sb == 0: the packet is closed; an event never ends on the
         * boundary (see ring_reserve_slow); the compact header's 32-bit
         * timestamp needs the previous event's high bits. */
        if (UNLIKELY(in_sb == 0 || in_sb + need >= b->sbsize || event_id >= UST_EVENT_ID_EXTENDED ||
                     (ts >> 32) != (LOAD_RELAXED(&h->last_timestamp) >> 32)))
            return ring_reserve_slow(b, payload, event_id, r);
        if (LIKELY(me != NULL)) { /* what we are about to reserve, should we die before committing it */
            STORE_RELAXED(&me->start, old);
            STORE_RELAXED(&me->ts, ts);
            STORE_RELAXED(&me->end, old + need);
        }
        /* acq_rel: see lost_for_close() */
        if (LIKELY(atomic_compare_exchange_weak_explicit(&h->write_offset, &old, old + need, memory_order_acq_rel,
                                                         memory_order_relaxed)))
            break;
    }
    STORE_RELAXED(&h->last_timestamp, ts);
    r->slot = (old >> b->sbshift) & (b->nsub - 1);
    r->lap = old >> b->bufshift;
    char *base = phys_base(b, slot_acquire(b, r->slot, r->lap));
    r->begin = old;
    r->start = old;
    r->total = need;
    r->ts = ts;
    r->extended = 0;
    r->dst = base + (old & b->sbmask);
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

/* One event of a compact header, with_ctx: a 4-byte context value (`ctx`: the channel's one context, vtid),
 * and an 8-byte payload (whole-program tracing writes two per Python call):
 * ring_reserve's fast path, the header and the commit in one, without a reservation record kept in memory
 * for a slow path. The same algorithm and the same checks: anything else than an event that fits in the
 * open packet, by a registered writer (a packet to open or close, the timestamp's high bits changing, a
 * drop, a fork, a test pause) takes the general path. The caller guarantees event_id <
 * UST_EVENT_ID_EXTENDED (a compact header: AttachList.u64_lean). The packet's sub-buffer comes from
 * packet_cache when this process found it before (see shm.h), else from slot_acquire(). */
INLINE void ring_write_u64_ctx(BufferObject *b, uint32_t event_id, int with_ctx, uint32_t ctx, uint64_t value)
{
    struct ust_shm_header *h = b->h;
    struct ust_writer *me = b->self_writer;
    const uint64_t ctx_size = with_ctx ? 4 : 0; /* a constant where it is inlined */
    const uint64_t need = UST_EVENT_HEADER_COMPACT + ctx_size + 8;
    if (LIKELY(me != NULL && b->writer_generation == LOAD_RELAXED(&fork_generation) && !test_pause_at)) {
        uint64_t old = LOAD_RELAXED(&h->write_offset), ts;
        uint64_t room = b->sbsize - need; /* an event never ends on the packet's boundary */
        for (;;) {
            ts = clock_now(); /* after the load of write_offset: timestamps never go back within a stream */
            /* in the open packet (offset 0 in it: the packet is closed, one unsigned compare for both), and
             * the compact header's 32 timestamp bits continue the previous event's high bits */
            if (UNLIKELY(((old & b->sbmask) - 1) >= room - 1 ||
                         ((ts ^ LOAD_RELAXED(&h->last_timestamp)) >> 32) != 0))
                goto general;
            STORE_RELAXED(&me->start, old); /* what we reserve, should we die before committing it */
            STORE_RELAXED(&me->ts, ts);
            STORE_RELAXED(&me->end, old + need);
            /* acq_rel: see lost_for_close() */
            if (LIKELY(atomic_compare_exchange_weak_explicit(&h->write_offset, &old, old + need,
                                                             memory_order_acq_rel, memory_order_relaxed)))
                break;
        }
        STORE_RELAXED(&h->last_timestamp, ts);
        uint64_t packet = old >> b->sbshift, slot = packet & (b->nsub - 1), lap = old >> b->bufshift;
        uint64_t cached = LOAD_RELAXED(&b->packet_cache);
        char *base;
        if (LIKELY((cached >> 16) == packet)) {
            base = b->data + ((cached & 0xFFFF) << b->sbshift); /* checked when it was cached */
        }
        else {
            uint32_t phys = checked_phys(b, slot_acquire(b, slot, lap));
            base = b->data + ((uint64_t)phys << b->sbshift);
            STORE_RELAXED(&b->packet_cache, (packet << 16) | phys);
        }
        char *p = base + (old & b->sbmask);
        uint16_t id = (uint16_t)event_id;
        uint32_t ts32 = (uint32_t)ts;
        memcpy(p, &id, 2); /* the compact header, as write_event_header writes it */
        memcpy(p + 2, &ts32, 4);
        if (with_ctx)
            memcpy(p + UST_EVENT_HEADER_COMPACT, &ctx, 4);
        memcpy(p + UST_EVENT_HEADER_COMPACT + ctx_size, &value, 8);
        commit_bytes(b, slot, lap, need);
        STORE_RELAXED(&me->end, 0); /* nothing in flight */
        return;
    }
general:;
    struct reservation r;
    if (ring_reserve(b, ctx_size + 8, event_id, &r) == 0) {
        char *p = write_event_header(r.dst, &r, event_id);
        if (with_ctx)
            memcpy(p, &ctx, 4);
        memcpy(p + ctx_size, &value, 8);
        ring_commit(b, &r);
    }
}

#endif
