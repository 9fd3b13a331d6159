/* ======================================================================
 * Process facts: clock, CPU, pid/tid caches (reset in a forked child)
 * ====================================================================== */

#include "process.h"

_Atomic uint64_t fork_generation = 1;
_Atomic int32_t cached_pid;
_Atomic uint32_t cached_start_time; /* low 32 bits of this process's start time, 0 if unknown */
char cached_procname[17];
_Thread_local uint64_t tls_generation;
_Thread_local int32_t tls_tid;
ptrdiff_t rseq_cpu_offset;

void refresh_process_facts(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__aarch64__))
    rseq_cpu_offset = &__rseq_size != NULL && __rseq_size >= RSEQ_CPU_ID_OFFSET + 4 ? __rseq_offset + RSEQ_CPU_ID_OFFSET
                                                                                   : 0;
#endif
    STORE_RELAXED(&cached_pid, (int32_t)getpid());
    char state;
    uint64_t start_time = 0;
    if (read_proc_stat(0, &state, &start_time) < 0)
        start_time = 0;
    STORE_RELAXED(&cached_start_time, (uint32_t)start_time);
    memset(cached_procname, 0, sizeof cached_procname);
    prctl(PR_GET_NAME, cached_procname, 0, 0, 0);
}

/* Read /proc/PID/stat (pid 0: this process): its state letter (field 3)
 * and start time (field 22, clock ticks since boot; 0 if absent). Returns
 * 0, or -errno (-ENOENT: no such process). The name (field 2) may contain
 * spaces and ')': the fields are counted from its last ')'. */
int read_proc_stat(int32_t pid, char *state, uint64_t *start_time)
{
    char path[64], buf[1024];
    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/stat");
    else
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int err = errno;
    close(fd);
    if (n <= 0)
        return n < 0 ? -err : -EIO;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -EIO;
    *state = p[2];
    for (int field = 2; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    *start_time = p ? strtoull(p + 1, NULL, 10) : 0;
    return 0;
}

/* This process's identity in a writer table: its pid and start time (read at
 * import and again in a forked child, by refresh_process_facts()). */
uint64_t self_owner(void)
{
    return (uint64_t)(uint32_t)LOAD_RELAXED(&cached_pid) | ((uint64_t)LOAD_RELAXED(&cached_start_time) << 32);
}

/* Is the writer `owner` (pid and start time, from a writer table) gone? A
 * zombie is: it will never commit. So is a live process that got its pid
 * since (its start time differs). kill(pid, 0) answers EPERM for another
 * user's live process. The owner word is in shared memory any writer can
 * scribble: it is only compared, never trusted further. */
int process_dead(uint64_t owner)
{
    int32_t pid = OWNER_PID(owner);
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 1;
    char state;
    uint64_t start_time;
    int err = read_proc_stat(pid, &state, &start_time);
    if (err)
        return err == -ENOENT;
    if (state == 'Z' || state == 'X')
        return 1;
    /* a writer that could not read its own start time left 0: the pid is all we have */
    return OWNER_START(owner) != 0 && (uint32_t)start_time != OWNER_START(owner);
}
