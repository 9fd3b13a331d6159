/* ======================================================================
 * Reader side
 * ====================================================================== */

#include "reader.h"
#include "frontend.h"
#include "process.h"

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
    b->gap_pending = LOAD_RELAXED(&b->h->packets_read) == 0 && LOAD_RELAXED(&b->h->consumed) == 0;
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
int write_packet(int fd, const char *p, size_t len)
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
        uint64_t owner = LOAD_RELAXED(&w->owner);
        uint64_t start = LOAD_RELAXED(&w->start), end = LOAD_RELAXED(&w->end), ts = LOAD_RELAXED(&w->ts);
        if (owner == 0 || end <= start)
            continue;
        uint64_t lo = start > pos ? start : pos, hi = end < pend ? end : pend;
        if (hi <= lo)
            continue;
        if (!b->writers_gone && !process_dead(owner))
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
            STORE_RELAXED(&holes[i].writer->owner, 0);
        }
}

/* Take the packet of lap `lap` in slot `s` out of the writers' reach: swap
 * the reader's spare sub-buffer into the slot, marked READ, if the slot still
 * holds *v (else *v is updated and 0 returned). Returns 1 and the table entry
 * put there in *taken; the packet is then in physical sub-buffer SLOT_PHYS(*v).
 * acq_rel: the writers' bytes committed before are visible (acquire), and a
 * writer that sees our entry sees the spare as we left it (release). */
static int swap_out(BufferObject *b, struct ust_slot *s, uint64_t *v, uint64_t lap, uint64_t *taken)
{
    uint64_t spare = LOAD_RELAXED(&b->h->reader_spare);
    if (spare > b->nsub) /* scribbled: stay inside our mapping */
        spare = 0;
    *taken = spare | SLOT_READ | (lap << SLOT_LAP_SHIFT);
    return atomic_compare_exchange_strong_explicit(&s->table, v, *taken, memory_order_acq_rel, memory_order_acquire);
}

/* Undo swap_out(): put `back` in the slot again, unless a writer has taken the
 * slot (and our spare) for its next lap meanwhile: then the packet's
 * physical sub-buffer `phys` becomes the spare. */
static void give_back(BufferObject *b, struct ust_slot *s, uint64_t taken, uint64_t back, uint32_t phys)
{
    if (!atomic_compare_exchange_strong_explicit(&s->table, &taken, back, memory_order_acq_rel,
                                                 memory_order_acquire))
        STORE_RELAXED(&b->h->reader_spare, phys);
}

/* The first packet a stream hands out is at `pos` > 0: the packets before it
 * were lost before anyone read them (overwritten in overwrite mode, or
 * dropped as never written by a dead writer). babeltrace2 reports a loss
 * only as a gap between two packets, never before the first, so the reader
 * hands out first an empty packet with seq 0 whose timestamps are the
 * stream's first packet's: the gap between it and the first real packet
 * (seq pos / subbuf_size) is then reported as discarded packets. The marker
 * stands for packet 0, itself lost: the packets reported as discarded are
 * one fewer than those lost (docs/faults.md). It is built in the reader's
 * spare sub-buffer, which no writer can touch. Returns 1 if it was handed
 * out (b->held_*), 0 if there is no marker to give (first timestamp
 * unknown). */
static int hand_out_gap_marker(BufferObject *b)
{
    b->gap_pending = 0;
    uint64_t first_ts = LOAD_RELAXED(&b->h->first_timestamp);
    if (first_ts == 0)
        return 0;
    uint32_t spare = LOAD_RELAXED(&b->h->reader_spare);
    if (spare > b->nsub)
        return 0;
    open_packet(b, phys_base(b, spare), 0, first_ts, 0);
    b->holding = 1;
    b->held_synthetic = 1;
    b->held_phys = spare;
    b->held_len = UST_PACKET_HEADER_SIZE;
    return 1;
}

/* Find the next complete packet and take it. Returns 1 if one was taken
 * (b->held_*), 0 if none is complete yet. With force (every writer gone),
 * a closed packet whose commit count is short (a writer died between
 * reserve and commit) is taken too, cut at its committed prefix. */
int ring_get(BufferObject *b, int force)
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
        if (UNLIKELY(b->gap_pending) && pos > 0 && hand_out_gap_marker(b)) {
            STORE_RELEASE(&h->consumed, pos);
            return 1;
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
            uint64_t nv;
            if (!swap_out(b, s, &v, lap, &nv))
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
            b->gap_pending = 0;
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

/* The events_discarded a repaired packet at `pos` may carry without breaking
 * the stream's monotonic counts: the previous packet's, if it is still in the
 * buffer, else the last one this reader handed out. */
static uint64_t discarded_before(BufferObject *b, uint64_t pos)
{
    if (pos >= b->sbsize) {
        uint64_t prev = pos - b->sbsize;
        uint64_t v = LOAD_ACQUIRE(&b->slots[(prev >> b->sbshift) & (b->nsub - 1)].table);
        const struct ust_packet_header *ph = (const struct ust_packet_header *)phys_base(b, SLOT_PHYS(v));
        if (SLOT_LAP(v) == prev >> b->bufshift && packet_header_valid(b, ph, prev) &&
            ph->events_discarded >= b->last_discarded)
            return ph->events_discarded;
    }
    return b->last_discarded;
}

/* Repair, without consuming them, the closed packets that dead writers left
 * incomplete (what ring_get() does for a buffer that is drained). An
 * overwrite-mode buffer that nobody drains (a snapshot session, a flight
 * recorder) needs it: its writers may start a packet only in a slot whose
 * previous lap is fully committed, so one writer killed between reserve and
 * commit would freeze that slot, and with it the whole buffer once the
 * writers come round to it, until the session ends. The snapshot path and
 * the consumer's periodic pass call this; each packet is taken out of the
 * writers' reach by the usual spare swap, repaired, its commit count
 * completed, and given back as a complete packet (or, if a writer already
 * took the slot for its next lap with our spare, it becomes the spare).
 * Writers never do this themselves: the spare is the reader's. Checks the
 * writers at once (no stall timeout): it runs only when asked. Reader side
 * only (one reader per stream); no Python API. Returns packets repaired. */
int ring_repair_dead_writers(BufferObject *b)
{
    struct ust_shm_header *h = b->h;
    if (UNLIKELY(!b->reader_ready))
        reader_recover(b);
    uint64_t w = LOAD_ACQUIRE(&h->write_offset);
    int repaired = 0;
    for (uint64_t pos = oldest_readable(b, w, LOAD_RELAXED(&h->consumed)); pos + b->sbsize <= w;
         pos += b->sbsize) {
        uint64_t slot = (pos >> b->sbshift) & (b->nsub - 1);
        uint64_t lap = pos >> b->bufshift;
        struct ust_slot *s = &b->slots[slot];
        uint64_t v = LOAD_ACQUIRE(&s->table);
        uint64_t c = LOAD_ACQUIRE(&s->commit);
        uint64_t full = (lap + 1) * b->sbsize;
        if (!(c < full && c >= lap * b->sbsize && SLOT_LAP(v) == lap && !(v & SLOT_READ)))
            continue; /* complete, or not this lap's any more */
        struct dead_hole holes[UST_MAX_WRITERS];
        int nholes = dead_writers_explain(b, pos, c, full - c, 1, holes);
        if (nholes == 0)
            continue; /* a live writer may still commit (or an unregistered one died: left to the final drain) */
        uint64_t taken;
        if (!swap_out(b, s, &v, lap, &taken))
            continue;
        struct ust_packet_header *ph = (struct ust_packet_header *)phys_base(b, SLOT_PHYS(v));
        uint64_t saved_discarded = b->last_discarded;
        b->last_discarded = discarded_before(b, pos);
        repair_packet(b, ph, pos, holes, nholes);
        b->last_discarded = saved_discarded;
        forget_repaired_writers(holes, nholes);
        if (!packet_header_valid(b, ph, pos))
            ph->magic = 0; /* never readable: snapshots skip it */
        /* acq_rel: the repaired bytes are visible to whoever sees the lap complete */
        atomic_fetch_add_explicit(&s->commit, full - c, memory_order_acq_rel);
        atomic_fetch_add_explicit(&h->packets_reclaimed, 1, memory_order_relaxed);
        /* back complete: not ACTIVE, not READ */
        give_back(b, s, taken, (v & SLOT_PHYS_MASK) | (lap << SLOT_LAP_SHIFT), SLOT_PHYS(v));
        repaired++;
    }
    return repaired;
}

/* Copy every complete packet still in the buffer to fd WITHOUT consuming it
 * (LTTng's snapshot): each packet is taken out of the writers' reach by the
 * usual spare swap, written, then swapped back if no writer has moved into
 * its slot meanwhile (else it simply becomes the new spare: the writer
 * already overwrites that slot's next lap). `consumed` never moves, so two
 * snapshots in a row both hold what the buffer holds. Call flush() first to
 * include the current partial packet. Returns packets written, or -errno. */
long long ring_snapshot(BufferObject *b, int fd, unsigned long long *bytes)
{
    struct ust_shm_header *h = b->h;
    ring_repair_dead_writers(b); /* a dead writer's packet would be missing, and its slot frozen */
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
        uint64_t taken;
        if (!swap_out(b, s, &v, lap, &taken))
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
        give_back(b, s, taken, v, SLOT_PHYS(v));
        if (err)
            return -err;
    }
    return packets;
}

/* Give back the packet ring_get() took, unconsumed (its write failed): the
 * next ring_get() takes it again. Meanwhile, in discard mode, writers cannot
 * enter its slot (`consumed` did not move): when the disk stays full the
 * buffer fills and the events that do not fit are dropped and counted
 * exactly, as for a slow reader. In overwrite mode a writer may already have
 * taken the slot (and our spare) for its next lap: the packet's sub-buffer
 * then becomes the spare, as in ring_snapshot(). */
void ring_unget(BufferObject *b)
{
    if (b->held_synthetic) { /* the gap marker: made again by the next ring_get() */
        b->held_synthetic = 0;
        b->gap_pending = 1;
        b->holding = 0;
        return;
    }
    give_back(b, &b->slots[(b->held_pos >> b->sbshift) & (b->nsub - 1)], b->taken_table, b->held_table,
              b->held_phys);
    b->holding = 0;
}

/* Move this stream's complete packets to fd (at most `limit`, if >= 0),
 * adding to *packets and *bytes. Returns 0, or the errno of a failed write:
 * that packet stays in the buffer (ring_unget) and the file ends on the
 * previous packet. No Python API: called with the GIL released. */
int drain_stream(BufferObject *b, int fd, int force, Py_ssize_t limit, unsigned long long *packets,
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

void ring_put(BufferObject *b)
{
    struct ust_shm_header *h = b->h;
    if (b->held_synthetic) { /* the gap marker: nothing of the buffer's was taken */
        b->held_synthetic = 0;
        b->holding = 0;
        return;
    }
    STORE_RELAXED(&h->reader_spare, b->held_phys);
    atomic_fetch_add_explicit(&h->packets_read, 1, memory_order_relaxed);
    STORE_RELEASE(&h->consumed, b->held_pos + b->sbsize);
    b->holding = 0;
}


/* The live barrier, reader side: the time a live beacon may give for this
 * stream ("nothing in it until then": viewers move past it), or 0 when none
 * can be given now. Only for a stream whose every reserved byte has been
 * handed out (write_offset == consumed, a packet boundary): otherwise its
 * packets will tell. Its next event is then reserved by a writer opening a
 * packet at that boundary, and such a writer announces itself before it
 * reads its clock (announce_opening() in frontend.c). Here, the clock is read
 * first, then a seq_cst fence pairs with the writer's: either the writer's
 * fence comes after ours, and its clock is read after ours (the beacon is
 * before its event), or it comes before, and the loads below see its
 * announcement (no beacon: the writer may have read its clock before ours)
 * or its withdrawal, which is a release after its CAS, so that the reload of
 * write_offset sees the CAS (the stream is not idle any more: no beacon). A
 * writer that died inside its window does not hold beacons back (its CAS
 * never comes), whether it announced in its writers[] entry or, without one,
 * in an overflow_openers[] entry (its owner word: the same check). Only the
 * last resort, the shared count of writers that found neither (more than
 * UST_MAX_WRITERS + UST_MAX_OVERFLOW_OPENERS processes on one stream, the
 * overflow ones all inside their few-instruction window at once), has no
 * owner: a death there leaves it raised and that stream without beacons
 * (viewers wait for its next packet). Reader side only; no Python API
 * (Buffer.quiet_until is its face). */
uint64_t ring_quiet_until(BufferObject *b)
{
    struct ust_shm_header *h = b->h;
    if (b->holding)
        return 0;
    uint64_t w = LOAD_ACQUIRE(&h->write_offset);
    if (w != LOAD_RELAXED(&h->consumed) || (w & b->sbmask))
        return 0;
    uint64_t now = clock_now();
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&h->unregistered_openers, memory_order_acquire) != 0)
        return 0;
    for (int i = 0; i < UST_MAX_WRITERS; i++) {
        struct ust_writer *wr = &h->writers[i];
        if (atomic_load_explicit(&wr->opening, memory_order_acquire) == 0)
            continue;
        uint64_t owner = LOAD_RELAXED(&wr->owner);
        if (owner != 0 && !b->writers_gone && !process_dead(owner))
            return 0;
    }
    for (int i = 0; i < UST_MAX_OVERFLOW_OPENERS; i++) {
        uint64_t owner = atomic_load_explicit(&h->overflow_openers[i], memory_order_acquire);
        if (owner == 0 || b->writers_gone)
            continue;
        if (!process_dead(owner))
            return 0;
        /* freed for the next writer without an entry (it fails if one took it since: then it is theirs) */
        atomic_compare_exchange_strong_explicit(&h->overflow_openers[i], &owner, 0, memory_order_relaxed,
                                                memory_order_relaxed);
    }
    /* acquire loads above: this load is not made before them */
    if (LOAD_RELAXED(&h->write_offset) != w)
        return 0;
    return now;
}
