#ifndef UST_RING_MODULE_H
#define UST_RING_MODULE_H

#include "common.h"

/* The module: its state and what the other files give it. */

/* The module's state. One struct, process-wide rather than per module object
 * (PEP 489's m_size state): the tracepoint call's slow paths read it, and a
 * lookup from the call's objects to their module would cost every call. A
 * second interpreter importing the module is refused (the ring buffer's
 * process facts and fork hooks are per process anyway). */
struct ring_module_state {
    /* Strict mode (ust.strict(), UST_STRICT=1): a call whose arguments do not
     * fit raises, as it did before the tracer-never-raises policy. */
    int strict_mode;
    PyObject *argument_warning; /* ust.TracepointArgumentWarning */
    int atfork_installed;
};
extern struct ring_module_state ring_state;

/* ust._ring._probes, the hot paths of dynamic probes and whole-program tracing (probes.c): made and
 * registered in sys.modules by this module's initialization. 0, or -1 with an exception set. */
int probes_module_init(void);

/* drain_at_exit(buffer, fd) (buffer.c) */
PyObject *mod_drain_at_exit(PyObject *m, PyObject *args);

#endif
