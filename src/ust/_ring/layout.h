/*
 * The CTF packet and event layout ust writes: the one place it is defined.
 * The TSDL the writer declares (ust/ctf/metadata.py), the reader's constants
 * and the test synthesiser describe these same structures.
 */
#ifndef UST_RING_LAYOUT_H
#define UST_RING_LAYOUT_H

#include <stdint.h>

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

#endif
