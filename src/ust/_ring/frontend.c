/* ======================================================================
 * Frontend: reserve / commit / switch (writer side)
 * ====================================================================== */

#include "frontend.h"

/* The commit that completed its slot's lap: clear ACTIVE (the packet is the
 * reader's to take) and wake the reader if it sleeps. */
SLOW void commit_bytes_slow(BufferObject *b, uint64_t slot, uint64_t lap)
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

/* Close the packet that `old` (an offset inside it, not at its start) is in;
 * `lost` comes from lost_for_close() before the CAS that closed it. */
SLOW void close_packet(BufferObject *b, uint64_t old, uint64_t ts, uint64_t lost)
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

SLOW void count_lost(_Atomic uint64_t *counter)
{
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* Test-only: UST_TEST_PAUSE_AFTER_RESERVE="N:MS[:close|:opening]" (read once
 * at import) makes this process's N-th successful reservation (counting only
 * those that close a packet, with ":close") announce itself on stderr and
 * sleep MS milliseconds between its CAS and anything else: the window in
 * which a writer can be delayed or killed. With ":opening", the N-th attempt
 * to open a packet at a packet boundary stops its process instead (SIGSTOP,
 * MS unused) between reading its clock and its CAS (the window the live
 * barrier covers), until SIGCONT. Unset, it costs one predictable branch. */
long test_pause_at;
static long test_pause_ms;
static int test_pause_kind; /* PAUSE_RESERVED: any reservation; PAUSE_CLOSING; PAUSE_OPENING */
static _Atomic long test_pause_count;

SLOW void test_pause(int point)
{
    if (point == PAUSE_OPENING ? test_pause_kind != PAUSE_OPENING
                               : test_pause_kind == PAUSE_OPENING || (test_pause_kind == PAUSE_CLOSING &&
                                                                      point != PAUSE_CLOSING))
        return;
    if (atomic_fetch_add_explicit(&test_pause_count, 1, memory_order_relaxed) + 1 != test_pause_at)
        return;
    static const char msg[] = "ust-test: paused after reserve\n";
    static const char msg_opening[] = "ust-test: paused before opening\n";
    ssize_t r = point == PAUSE_OPENING ? write(2, msg_opening, sizeof msg_opening - 1) : write(2, msg, sizeof msg - 1);
    (void)r;
    if (point == PAUSE_OPENING) { /* stopped until the test resumes it (SIGCONT) */
        raise(SIGSTOP);
        return;
    }
    struct timespec ts = {test_pause_ms / 1000, (test_pause_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

void test_pause_configure(void)
{
    const char *v = getenv("UST_TEST_PAUSE_AFTER_RESERVE");
    long at = 0, ms = 0;
    char kind[8] = "";
    if (v && sscanf(v, "%ld:%ld:%7s", &at, &ms, kind) >= 2 && at > 0 && ms >= 0) {
        test_pause_ms = ms;
        test_pause_kind = !strcmp(kind, "close") ? PAUSE_CLOSING : !strcmp(kind, "opening") ? PAUSE_OPENING
                                                                                          : PAUSE_RESERVED;
        test_pause_at = at;
    }
}

/* Slow path, once per process (and again in a forked child): take an entry
 * in the stream's writer table, reusing one whose process is gone when the
 * table is full. Without an entry (64 live writers already), this process's
 * death mid-write cannot be repaired: its packet is dropped at teardown. */
SLOW void register_writer(BufferObject *b, uint64_t generation)
{
    uint64_t me = self_owner();
    struct ust_writer *w = b->h->writers, *mine = NULL;
    for (int pass = 0; pass < 2 && !mine; pass++)
        for (int i = 0; i < UST_MAX_WRITERS && !mine; i++) {
            uint64_t cur = LOAD_RELAXED(&w[i].owner);
            if (cur == me) {
                mine = &w[i];
            } else if (cur == 0 || (pass == 1 && process_dead(cur) &&
                                    LOAD_RELAXED(&w[i].end) <= LOAD_RELAXED(&w[i].start))) {
                /* reuse a dead writer's entry only when it has nothing in flight */
                STORE_RELAXED(&w[i].end, 0);
                STORE_RELAXED(&w[i].start, 0);
                STORE_RELAXED(&w[i].opening, 0);
                if (atomic_compare_exchange_strong_explicit(&w[i].owner, &cur, me, memory_order_acq_rel,
                                                            memory_order_relaxed))
                    mine = &w[i];
            }
        }
    b->self_writer = mine;
    b->writer_generation = generation;
}

/* The live barrier, writer side. A writer about to open a packet at a packet
 * boundary (write_offset on a boundary: every packet closed, the stream
 * possibly idle) says so before it reads its clock, in its writers[] entry
 * (or, without one, in an overflow_openers[] entry holding its owner word, or
 * as a last resort in a shared count), and keeps saying so until its CAS on
 * write_offset is done. The seq_cst fence after the store pairs with the one
 * ring_quiet_until() makes between reading its clock and reading these: either
 * the reader sees the announcement (and gives no beacon), or this writer's
 * clock is read after the reader's fence, hence after the beacon's time. The
 * fast path never opens a packet, so it pays nothing; the slow path pays one
 * fence per packet opened at a boundary, i.e. per flush.
 *
 * Returns where the announcement is, for opening_done(): the writer's
 * `opening` word or its overflow entry, or NULL for the shared count. */
SLOW _Atomic uint64_t *announce_unregistered(BufferObject *b);

INLINE _Atomic uint64_t *announce_opening(BufferObject *b, struct ust_writer *me)
{
    _Atomic uint64_t *at;
    if (LIKELY(me != NULL)) {
        at = &me->opening;
        STORE_RELAXED(at, 1);
    } else {
        at = announce_unregistered(b);
    }
    atomic_thread_fence(memory_order_seq_cst);
    return at;
}

/* A writer without a writers[] entry: a free overflow entry takes its owner
 * word, and, when none is free, one whose writer died (it cannot be in its
 * window any more: the reader ignores it already). The reader tells a dead
 * announcer there, as in writers[], so a writer killed in its window does not
 * stop the stream's beacons. Only when all are held by live writers at once
 * does it fall back to the shared count, which such a writer's death leaves
 * raised.
 *
 * Orderings: the claim needs nothing before the clock but announce_opening's
 * fence. It is an acquire, because entries are shared: a reader that reads
 * our withdrawal (release) must also see the CAS on write_offset of the
 * writer whose withdrawal our claim read, as it would have by reading that
 * withdrawal itself; the acquire chains that writer's CAS before our release. */
SLOW _Atomic uint64_t *announce_unregistered(BufferObject *b)
{
    _Atomic uint64_t *slots = b->h->overflow_openers;
    uint64_t me = self_owner();
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < UST_MAX_OVERFLOW_OPENERS; i++) {
            uint64_t cur = LOAD_RELAXED(&slots[i]);
            if ((cur == 0 || (pass == 1 && process_dead(cur))) &&
                atomic_compare_exchange_strong_explicit(&slots[i], &cur, me, memory_order_acquire,
                                                        memory_order_relaxed))
                return &slots[i];
        }
    atomic_fetch_add_explicit(&b->h->unregistered_openers, 1, memory_order_relaxed);
    return NULL;
}

/* The end of the window: release, so that a reader that reads this store
 * (acquire) also sees this writer's CAS on write_offset, if it made one. */
INLINE void opening_done(BufferObject *b, _Atomic uint64_t *at)
{
    if (LIKELY(at != NULL))
        STORE_RELEASE(at, 0);
    else
        atomic_fetch_sub_explicit(&b->h->unregistered_openers, 1, memory_order_release);
}

/* Reserve room for an event of `payload` bytes (context + fields): the
 * whole algorithm, for what ring_reserve()'s fast path does not take.
 * Returns 0 and fills r, or -1 when the event is dropped (counted). */
SLOW int ring_reserve_slow(BufferObject *b, uint64_t payload, uint32_t event_id, struct reservation *r)
{
    struct ust_shm_header *h = b->h;
    uint64_t old, begin, ts, in_sb, need, hdr, lost = 0;
    int new_packet, close_old, extended, announced = 0;
    _Atomic uint64_t *announcement = NULL; /* (when announced) */
    uint64_t generation = LOAD_RELAXED(&fork_generation);
    if (UNLIKELY(b->writer_generation != generation))
        register_writer(b, generation);
    struct ust_writer *me = b->self_writer;

    old = LOAD_RELAXED(&h->write_offset);
    for (;;) {
        in_sb = old & b->sbmask;
        if (UNLIKELY(in_sb == 0) && !announced) { /* before the clock: see announce_opening() */
            announcement = announce_opening(b, me);
            announced = 1;
        }
        ts = clock_now();
        if (UNLIKELY(test_pause_at) && in_sb == 0)
            test_pause(PAUSE_OPENING);
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
            if (announced)
                opening_done(b, announcement);
            return -1;
        }
        if (new_packet && UNLIKELY(!packet_start_allowed(b, begin))) {
            count_lost(&h->lost_full);
            if (announced)
                opening_done(b, announcement);
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
    if (announced)
        opening_done(b, announcement);
    if (UNLIKELY(test_pause_at))
        test_pause(close_old ? PAUSE_CLOSING : PAUSE_RESERVED);
    if (close_old)
        close_packet(b, old, ts, lost);

    r->slot = (begin >> b->sbshift) & (b->nsub - 1);
    r->lap = begin >> b->bufshift;
    char *base = phys_base(b, slot_acquire(b, r->slot, r->lap));
    if (new_packet) {
        if (UNLIKELY(begin == 0))
            STORE_RELAXED(&h->first_timestamp, ts); /* for the reader's gap marker (ring_get) */
        begin_packet(b, base, begin, ts); /* its end is written by its closer (see begin_packet) */
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

/* Close the current partial packet. With emit_empty, also write an empty
 * packet when events were lost since the last packet closed, so that the
 * trace carries the final discarded count. The packets end at `at`, or now
 * if 0 (`ust crash` closes a crashed buffer's packet at its last event's
 * time: the clock of a later boot means nothing to the trace). Returns 1 if
 * a packet closed. */
int ring_flush(BufferObject *b, int emit_empty, uint64_t at)
{
    struct ust_shm_header *h = b->h;
    uint64_t old = LOAD_RELAXED(&h->write_offset);
    for (;;) {
        uint64_t ts = at ? at : clock_now();
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
