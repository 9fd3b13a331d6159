/* ======================================================================
 * Process facts: clock, CPU, pid/tid caches (reset in a forked child)
 * ====================================================================== */

#ifndef UST_RING_PROCESS_H
#define UST_RING_PROCESS_H

#include "common.h"

extern _Atomic uint64_t fork_generation; /* moved by every fork (and refresh_process_facts from Python) */
extern _Atomic int32_t cached_pid;
extern _Atomic uint32_t cached_start_time; /* low 32 bits of this process's start time, 0 if unknown */
extern char cached_procname[17];
extern _Thread_local uint64_t tls_generation;
extern _Thread_local int32_t tls_tid;

INLINE uint64_t clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

INLINE int32_t current_tid(void)
{
    uint64_t gen = LOAD_RELAXED(&fork_generation);
    if (UNLIKELY(tls_generation != gen)) {
        tls_tid = (int32_t)syscall(SYS_gettid);
        tls_generation = gen;
    }
    return tls_tid;
}

/* glibc 2.35+ registers a restartable-sequences area for each thread, whose cpu_id field the kernel
 * rewrites before the thread returns to user space on another CPU: reading it is one load where
 * sched_getcpu() is a call through the PLT (that reads the same field, or asks the vDSO). Weak: an older
 * glibc defines neither symbol. __rseq_size is 0 when the registration was refused (rseq disabled by
 * tunable, or valgrind), and cpu_id is negative (RSEQ_CPU_ID_UNINITIALIZED, _REGISTRATION_FAILED) in a
 * thread that has none: both fall back to sched_getcpu(). */
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));
#define RSEQ_CPU_ID_OFFSET 4 /* struct rseq: u32 cpu_id_start, u32 cpu_id, ... (Linux ABI) */

/* The cpu_id field's offset from the thread pointer, or 0: no rseq area (read once by
 * refresh_process_facts(): glibc fixes both symbols at start-up; one load per event instead of three). */
extern ptrdiff_t rseq_cpu_offset;

/* The CPU the calling thread runs on (a hint: it may move right after; the ring only uses it to pick a
 * buffer, any buffer is correct). */
INLINE uint32_t current_cpu(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__aarch64__))
    ptrdiff_t at = rseq_cpu_offset;
    if (LIKELY(at != 0)) {
        /* volatile: the kernel writes it behind the compiler's back (on migration) */
        int32_t cpu = *(const volatile int32_t *)((char *)__builtin_thread_pointer() + at);
        if (LIKELY(cpu >= 0))
            return (uint32_t)cpu;
    }
#endif
    int cpu = sched_getcpu();
    return cpu < 0 ? 0 : (uint32_t)cpu;
}

void refresh_process_facts(void);

/* Read /proc/PID/stat (pid 0: this process): its state letter and start
 * time. 0, or -errno (-ENOENT: no such process). */
int read_proc_stat(int32_t pid, char *state, uint64_t *start_time);

/* A writer's identity in a stream's writer table (struct ust_writer.owner). */
#define OWNER_PID(o) ((int32_t)(uint32_t)(o))
#define OWNER_START(o) ((uint32_t)((o) >> 32))

uint64_t self_owner(void);
int process_dead(uint64_t owner);

#endif
