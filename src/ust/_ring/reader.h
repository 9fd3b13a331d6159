/* ======================================================================
 * Reader side
 * ====================================================================== */

#ifndef UST_RING_READER_H
#define UST_RING_READER_H

#include "shm.h"

/* One reader per stream (a process's Buffer object): none of these may run
 * concurrently on one BufferObject. No Python API: callable without the GIL. */
int ring_get(BufferObject *b, int force);
void ring_put(BufferObject *b);
void ring_unget(BufferObject *b);
long long ring_snapshot(BufferObject *b, int fd, unsigned long long *bytes);
int ring_repair_dead_writers(BufferObject *b);
int drain_stream(BufferObject *b, int fd, int force, Py_ssize_t limit, unsigned long long *packets,
                 unsigned long long *bytes);
int write_packet(int fd, const char *p, size_t len);
uint64_t ring_quiet_until(BufferObject *b);

#endif
