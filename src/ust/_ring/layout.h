/*
 * The packet and event layout of ust's traces, defined once.
 *
 * The C structs below are what the ring buffer writes (ring.c); the field
 * table after them is built from the same structs (offsetof, sizeof, the
 * members' types) and exported to Python as ust._ring.LAYOUT, from which the
 * TSDL generator (ust/ctf/metadata.py), the reader's constants (ust/ctf/reader.py)
 * and the test trace writer (ust/ctf/_synth.py) take the layout.
 * tests/test_layout.py checks them against each other and against babeltrace2.
 *
 * Everything is little-endian (the metadata says byte_order = le; ust runs on
 * little-endian machines) and byte-packed (every field aligned to 8 bits).
 */
#ifndef UST_LAYOUT_H
#define UST_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

/* CTF packet header + LTTng's packet context, byte-packed, at the start of every packet. */
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
#define UST_PACKET_HEADER_SIZE ((uint64_t)sizeof(struct ust_packet_header)) /* 84 */
/* where the packet context starts: the CTF packet header is the fields before it */
#define UST_PACKET_CONTEXT_OFFSET offsetof(struct ust_packet_header, timestamp_begin)

/* LTTng's large event header: id 0..65534 with a 32-bit timestamp, or
 * 65535 followed by a 32-bit id and a 64-bit timestamp. */
struct __attribute__((packed)) ust_event_header_compact {
    uint16_t id;
    uint32_t timestamp; /* the low 32 bits of the clock */
};
struct __attribute__((packed)) ust_event_header_extended {
    uint16_t id; /* UST_EVENT_ID_EXTENDED */
    uint32_t extended_id;
    uint64_t timestamp;
};
#define UST_EVENT_ID_EXTENDED 65535
#define UST_EVENT_HEADER_COMPACT 6
#define UST_EVENT_HEADER_EXTENDED 14
_Static_assert(UST_EVENT_HEADER_COMPACT == sizeof(struct ust_event_header_compact), "compact event header size");
_Static_assert(UST_EVENT_HEADER_EXTENDED == sizeof(struct ust_event_header_extended), "extended event header size");

/*
 * The field table: one row per field of the structs above, in order.
 *   scope   "packet.header", "packet.context", "event.header" (the id, the variant's tag),
 *           "event.header.compact", "event.header.extended" (the variant's two options)
 *   name    the field's name in the metadata
 *   offset  bytes from the start of the packet (packet header and context: one struct,
 *           the context at UST_PACKET_CONTEXT_OFFSET), or of the event header
 *   size    bytes of one element; count: elements (1, or the array's length)
 *   align   bits (the structs are packed: 8)
 *   is_signed, is_clock  a timestamp field maps to the clock
 */
struct ust_layout_field {
    const char *scope;
    const char *name;
    size_t offset;
    size_t size;
    size_t count;
    size_t align;
    int is_signed;
    int is_clock;
};

#define UST_ELEM_(type, member) (((type *)0)->member)
/* a scalar member: size and signedness from its declared type */
#define UST_FIELD(scope, type, member, name, clock)                                                               \
    {scope, name, offsetof(type, member), sizeof(UST_ELEM_(type, member)), 1,                                    \
     8 * __alignof__(UST_ELEM_(type, member)), (__typeof__(UST_ELEM_(type, member)))-1 < 0, clock}
/* an array member: its element's size and signedness, its length */
#define UST_ARRAY(scope, type, member, name)                                                                      \
    {scope, name, offsetof(type, member), sizeof(UST_ELEM_(type, member)[0]),                                     \
     sizeof(UST_ELEM_(type, member)) / sizeof(UST_ELEM_(type, member)[0]), 8 * __alignof__(UST_ELEM_(type, member)), \
     (__typeof__(UST_ELEM_(type, member)[0]))-1 < 0, 0}

static const struct ust_layout_field ust_layout_fields[] = {
    UST_FIELD("packet.header", struct ust_packet_header, magic, "magic", 0),
    UST_ARRAY("packet.header", struct ust_packet_header, uuid, "uuid"),
    UST_FIELD("packet.header", struct ust_packet_header, stream_id, "stream_id", 0),
    UST_FIELD("packet.header", struct ust_packet_header, stream_instance_id, "stream_instance_id", 0),
    UST_FIELD("packet.context", struct ust_packet_header, timestamp_begin, "timestamp_begin", 1),
    UST_FIELD("packet.context", struct ust_packet_header, timestamp_end, "timestamp_end", 1),
    UST_FIELD("packet.context", struct ust_packet_header, content_size, "content_size", 0),
    UST_FIELD("packet.context", struct ust_packet_header, packet_size, "packet_size", 0),
    UST_FIELD("packet.context", struct ust_packet_header, packet_seq_num, "packet_seq_num", 0),
    UST_FIELD("packet.context", struct ust_packet_header, events_discarded, "events_discarded", 0),
    UST_FIELD("packet.context", struct ust_packet_header, cpu_id, "cpu_id", 0),
    /* the event header's id (the variant's tag: below UST_EVENT_ID_EXTENDED, the compact form) */
    UST_FIELD("event.header", struct ust_event_header_compact, id, "id", 0),
    UST_FIELD("event.header.compact", struct ust_event_header_compact, timestamp, "timestamp", 1),
    UST_FIELD("event.header.extended", struct ust_event_header_extended, extended_id, "id", 0),
    UST_FIELD("event.header.extended", struct ust_event_header_extended, timestamp, "timestamp", 1),
};

#ifdef Py_PYTHON_H
/*
 * ust._ring.LAYOUT: {"fields": ((scope, name, offset, size, count, align, signed, clock), ...),
 * "magic": CTF_MAGIC, "extended_id": UST_EVENT_ID_EXTENDED, "packet_header_size": ...,
 * "packet_context_offset": ...}. Called once from the module's init; returns -1 with an
 * exception set on failure.
 */
static inline int ust_layout_export(PyObject *module)
{
    size_t n = sizeof ust_layout_fields / sizeof ust_layout_fields[0];
    PyObject *fields = PyTuple_New((Py_ssize_t)n);
    if (!fields)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const struct ust_layout_field *f = &ust_layout_fields[i];
        PyObject *row = Py_BuildValue("(ssnnnnOO)", f->scope, f->name, (Py_ssize_t)f->offset, (Py_ssize_t)f->size,
                                      (Py_ssize_t)f->count, (Py_ssize_t)f->align, f->is_signed ? Py_True : Py_False,
                                      f->is_clock ? Py_True : Py_False);
        if (!row) {
            Py_DECREF(fields);
            return -1;
        }
        PyTuple_SET_ITEM(fields, (Py_ssize_t)i, row);
    }
    PyObject *layout = Py_BuildValue("{sNsksisnsn}", "fields", fields, "magic", (unsigned long)CTF_MAGIC,
                                     "extended_id", UST_EVENT_ID_EXTENDED, "packet_header_size",
                                     (Py_ssize_t)UST_PACKET_HEADER_SIZE, "packet_context_offset",
                                     (Py_ssize_t)UST_PACKET_CONTEXT_OFFSET);
    if (!layout)
        return -1;
    int rc = PyModule_AddObjectRef(module, "LAYOUT", layout);
    Py_DECREF(layout);
    return rc;
}
#endif

#endif /* UST_LAYOUT_H */
