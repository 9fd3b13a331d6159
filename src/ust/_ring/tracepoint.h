/* ======================================================================
 * Tracepoint: field specs, argument validation, serialization, the call
 * ====================================================================== */

#ifndef UST_RING_TRACEPOINT_H
#define UST_RING_TRACEPOINT_H

#include "common.h"
#include "record_api.h"

extern PyTypeObject Tracepoint_Type;
/* The C entry points for ust's other extensions (record_api.h), published
 * by the module as a capsule. */
extern struct ust_record_api record_api;

#endif
