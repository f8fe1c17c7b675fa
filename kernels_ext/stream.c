/*
 * dao stream core: create, open, write, read and wait on DAO-compatible shared-memory streams.
 * See stream.h and the spec shm-format.md. No Python in this file.
 */
#define _GNU_SOURCE
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

static const size_t ITEMSIZE[13] = {0, 1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 8, 16};

size_t dao_itemsize(int atype) { return (atype >= 1 && atype <= 12) ? ITEMSIZE[atype] : 0; }

static int fail(char *errbuf, int code, const char *fmt, ...) {
    int saved = errno;
    if (errbuf) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, DAO_ERRLEN, fmt, ap);
        va_end(ap);
    }
    errno = saved;
    return code;
}

int64_t dao_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t dao_mono_ns(void) { return mono_ns(); }

static int cancelled(const dao_stream_t *s) { return __atomic_load_n(&s->cancel, __ATOMIC_RELAXED); }

void dao_cancel(dao_stream_t *s) { __atomic_store_n(&s->cancel, 1, __ATOMIC_RELEASE); }

static void sleep_ns(int64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    nanosleep(&ts, NULL);
}

int dao_semaphore_base(const char *path, char *base, char *errbuf) {
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    size_t n = strcspn(name, ".");
    if (n == 0)
        return fail(errbuf, -3, "cannot derive semaphore names from '%s': the file name must not be "
                                "empty or start with a dot (use e.g. /tmp/wfs.im.shm)", path);
    if (n >= DAO_NAME_LEN) n = DAO_NAME_LEN - 1;
    memcpy(base, name, n);
    base[n] = 0;
    return 0;
}

/* Size in bytes of a stream file, or 0 on overflow. */
static size_t stream_bytes(uint64_t nelement, size_t itemsize, uint64_t depth, uint64_t nbkw) {
    uint64_t frame, frames, metas, total;
    if (__builtin_mul_overflow(nelement, (uint64_t)itemsize, &frame)) return 0;
    if (__builtin_mul_overflow(frame, depth, &frames)) return 0;
    if (__builtin_mul_overflow((uint64_t)DAO_META_SIZE, depth, &metas)) return 0;
    if (__builtin_add_overflow(frames, metas, &total)) return 0;
    if (__builtin_add_overflow(total, nbkw * DAO_KW_SIZE, &total)) return 0;
    if (total > (uint64_t)SIZE_MAX / 2) return 0;
    return (size_t)total;
}

static void set_layout(dao_stream_t *s, uint32_t depth, uint32_t nbkw, uint64_t nelement,
                       size_t itemsize) {
    s->depth = depth;
    s->nbkw = nbkw;
    s->itemsize = itemsize;
    s->nelement = nelement;
    s->frame_bytes = (size_t)nelement * itemsize;
    s->meta = (dao_meta_t *)s->map;
    s->data = s->map + (size_t)depth * DAO_META_SIZE;
    s->kw = (dao_kw_t *)(s->data + (size_t)depth * s->frame_bytes);
    s->writing_slot = -1;
    s->scratch = NULL;
}

/* A semaphore is trusted if it is a regular file of ours (or of `other`, the owner of the
 * stream file it serves): never one another user planted under the stream's names. */
static int check_semaphore_file(const char *name, uid_t other, char *errbuf) {
    char file[DAO_NAME_LEN + 32];
    struct stat st;
    snprintf(file, sizeof file, "/dev/shm/sem.%s", name + 1);
    if (lstat(file, &st)) return 0; /* not glibc's usual folder: nothing we can check */
    if (!S_ISREG(st.st_mode))
        return fail(errbuf, -4, "semaphore %s is not a regular file (a symbolic link?), so dao "
                                "does not trust it: remove it (as its owner or root) or use "
                                "another stream name", file);
    if (st.st_uid != geteuid() && st.st_uid != other)
        return fail(errbuf, -4, "semaphore %s belongs to uid %u, not to you (uid %u): another "
                                "user made it, so dao does not trust it. Use another stream name, "
                                "or have its owner (or root) remove it", file,
                    (unsigned)st.st_uid, (unsigned)geteuid());
    return 0;
}

static int open_semaphores(dao_stream_t *s, int mode, int drain, uid_t other, char *errbuf) {
    char name[DAO_NAME_LEN + 16];
    for (int i = 0; i <= DAO_NSEM; i++) {
        if (i < DAO_NSEM)
            snprintf(name, sizeof name, "/%s_sem%02d", s->base, i);
        else
            snprintf(name, sizeof name, "/%s_semlog", s->base);
        if (check_semaphore_file(name, other, errbuf)) return -4;
        sem_t *sem = sem_open(name, O_CREAT, mode, 0);
        if (sem == SEM_FAILED)
            return fail(errbuf, -1, "cannot open semaphore %s: %s%s", name, strerror(errno),
                        errno == ELOOP ? " (a symbolic link: remove it)" : "");
        if (i < DAO_NSEM)
            s->sem[i] = sem;
        else
            s->semlog = sem;
        if (check_semaphore_file(name, other, errbuf)) return -4;
        if (drain)
            while (sem_trywait(sem) == 0) {
            }
    }
    return 0;
}

int dao_unlink_semaphores(const char *base, char *errbuf) {
    char name[DAO_NAME_LEN + 16];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "/%s_sem%02d", base, i);
        sem_unlink(name);
    }
    snprintf(name, sizeof name, "/%s_semlog", base);
    sem_unlink(name);
    return 0;
}

static void init_slot(dao_meta_t *m, const char *path, int naxis, const uint32_t *size,
                      uint64_t nelement, int atype, double now, uint16_t nbkw) {
    memset(m, 0, sizeof *m);
    strncpy(m->name, path, DAO_NAME_LEN - 1);
    m->naxis = (uint8_t)naxis;
    for (int i = 0; i < naxis; i++) m->size[i] = size[i];
    m->nelement = nelement;
    m->atype = (uint8_t)atype;
    m->creation_time = now;
    m->last_access = now;
    m->shared = 1;
    m->NBkw = nbkw;
}

int dao_create(dao_stream_t *s, const char *path, int naxis, const uint32_t *size, int atype,
               uint32_t depth, uint32_t nbkw, int mode, char *errbuf) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    size_t plen = strlen(path);
    if (plen == 0 || plen >= DAO_NAME_LEN)
        return fail(errbuf, -3, "stream path '%s' is %zu bytes; DAO stores it in an 80-byte field, "
                                "so it must be 1 to 79 bytes: choose a shorter path", path, plen);
    if (naxis < 1 || naxis > DAO_MAX_AXES)
        return fail(errbuf, -3, "a DAO stream has 1 to 3 axes, not %d", naxis);
    size_t itemsize = dao_itemsize(atype);
    if (!itemsize) return fail(errbuf, -3, "unknown DAO type code %d (valid: 1 to 12)", atype);
    if (depth < 1) return fail(errbuf, -3, "FIFO depth must be at least 1, not %u", depth);
    if (nbkw > UINT16_MAX) return fail(errbuf, -3, "at most 65535 keywords, not %u", nbkw);
    uint64_t nelement = 1;
    for (int i = 0; i < naxis; i++) {
        if (size[i] == 0) return fail(errbuf, -3, "axis %d has length 0: every axis needs >= 1", i);
        if (__builtin_mul_overflow(nelement, (uint64_t)size[i], &nelement))
            return fail(errbuf, -3, "a frame of shape (%u, %u, %u) has more than 2**64 elements: "
                                    "use a smaller shape", size[0], size[1], size[2]);
    }
    size_t total = stream_bytes(nelement, itemsize, depth, nbkw);
    if (!total)
        return fail(errbuf, -3, "a stream of depth %u of %llu-element frames of %zu bytes is "
                                "more than 2**63 bytes: use a smaller shape or depth", depth,
                    (unsigned long long)nelement, itemsize);
    strcpy(s->path, path);
    if (dao_semaphore_base(path, s->base, errbuf)) return -3;

    /* Build the file under a temporary name, then rename it into place: readers never see a
     * half-initialised header, and processes that still map an older file keep a valid map. */
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp)
        return fail(errbuf, -3, "path too long: %s", path);
    int fd = mkstemp(tmp);
    if (fd < 0) return fail(errbuf, -1, "cannot create %s: %s", path, strerror(errno));
    /* Reserve every byte now: a full filesystem (a small tmpfs, say) fails here with ENOSPC,
     * not later with a SIGBUS in whichever process first touches a missing page. The quick
     * check first, for a clear message before a huge allocation; it is skipped where the
     * filesystem reports no size (f_blocks 0: an unlimited tmpfs, some FUSE), where
     * posix_fallocate still catches a full filesystem. */
    struct statvfs vfs;
    if (fstatvfs(fd, &vfs) == 0 && vfs.f_frsize && vfs.f_blocks > 0) {
        unsigned long long avail =
            (unsigned long long)(geteuid() == 0 ? vfs.f_bfree : vfs.f_bavail);
        if (avail < (unsigned long long)total / vfs.f_frsize + 1) {
            close(fd);
            unlink(tmp);
            errno = ENOSPC;
            return fail(errbuf, -1, "cannot create %s: it needs %zu bytes and its filesystem has "
                                    "%llu bytes free (No space left on device): use a smaller "
                                    "depth or shape, or free space there (df, dao rm --dead)",
                        path, total, avail * vfs.f_frsize);
        }
    }
    int e = 0;
    if (fchmod(fd, (mode_t)mode)) e = errno;
    if (!e) e = posix_fallocate(fd, 0, (off_t)total);
    if (e == EINVAL || e == EOPNOTSUPP) e = ftruncate(fd, (off_t)total) ? errno : 0;
    if (e) {
        close(fd);
        unlink(tmp);
        errno = e;
        return fail(errbuf, -1, "cannot create %s: reserving its %zu bytes failed: %s%s", path,
                    total, strerror(e),
                    e == ENOSPC || e == EFBIG ? ": use a smaller depth or shape, or free space "
                                                "there (df, dao rm --dead)" : "");
    }
    unsigned char *map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return fail(errbuf, -1, "cannot map %s: %s", path, strerror(e));
    }
    s->fd = fd;
    s->map = map;
    s->map_size = total;
    set_layout(s, depth, nbkw, nelement, itemsize);
    double now = (double)dao_now_ns() * 1e-9;
    for (uint32_t k = 0; k < depth; k++)
        init_slot(&s->meta[k], path, naxis, size, nelement, atype, now, (uint16_t)nbkw);
    s->meta[0].sem = DAO_NSEM;
    s->meta[0].fifo_size = depth;
    s->meta[0].fifo_last_written = depth - 1;
    for (uint32_t k = 0; k < nbkw; k++) s->kw[k].type = 'N';
    /* Stale semaphores beyond the ten of the format go; the ten start at 0. */
    char name[DAO_NAME_LEN + 16];
    for (int i = DAO_NSEM; i < 100; i++) {
        snprintf(name, sizeof name, "/%s_sem%02d", s->base, i);
        sem_unlink(name);
    }
    int r = open_semaphores(s, mode, 1, geteuid(), errbuf);
    if (!r && rename(tmp, path)) r = fail(errbuf, -1, "cannot create %s: %s", path, strerror(errno));
    if (r) {
        e = errno;
        dao_close(s);
        unlink(tmp);
        errno = e;
        return r;
    }
    return 0;
}

int dao_open(dao_stream_t *s, const char *path, int writable, char *errbuf) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    size_t plen = strlen(path);
    if (plen == 0 || plen >= DAO_NAME_LEN)
        return fail(errbuf, -3, "stream path '%s' is %zu bytes; DAO paths are 1 to 79 bytes", path,
                    plen);
    strcpy(s->path, path);
    if (dao_semaphore_base(path, s->base, errbuf)) return -3;
    int prot = PROT_READ | PROT_WRITE;
    int fd = open(path, O_RDWR);
    if (fd < 0 && (errno == EACCES || errno == EROFS) && !writable) {
        fd = open(path, O_RDONLY);
        prot = PROT_READ;
    }
    if (fd < 0) return fail(errbuf, -1, "cannot open stream %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        errno = e;
        return fail(errbuf, -1, "cannot stat %s: %s", path, strerror(e));
    }
    int code = -2;
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(errbuf, code, "%s is not a regular file, so not a DAO stream", path);
    }
    if ((size_t)st.st_size < DAO_META_SIZE) {
        close(fd);
        return fail(errbuf, code, "%s is %lld bytes, smaller than one %d-byte DAO metadata block: "
                                  "an empty, truncated or foreign file, not a DAO stream",
                    path, (long long)st.st_size, DAO_META_SIZE);
    }
    dao_meta_t m;
    if (pread(fd, &m, sizeof m, 0) != (ssize_t)sizeof m) {
        int e = errno;
        close(fd);
        errno = e;
        return fail(errbuf, -1, "cannot read the header of %s: %s", path, strerror(e));
    }
    const char *why = NULL;
    char detail[160] = "";
    size_t itemsize = dao_itemsize(m.atype);
    uint64_t nelement = 1;
    uint32_t depth = m.fifo_size ? m.fifo_size : 1;
    if (m.naxis < 1 || m.naxis > DAO_MAX_AXES) {
        why = "its number of axes (naxis) is not 1, 2 or 3";
        snprintf(detail, sizeof detail, "naxis=%u", m.naxis);
    } else if (!itemsize) {
        why = "its data type code (atype) is not one of the 12 DAO types";
        snprintf(detail, sizeof detail, "atype=%u", m.atype);
    } else {
        for (int i = 0; i < m.naxis; i++) {
            if (m.size[i] == 0) why = "one of its axes has length 0";
            if (__builtin_mul_overflow(nelement, (uint64_t)m.size[i], &nelement))
                why = "its shape has more than 2**64 elements";
        }
        for (int i = m.naxis; i < DAO_MAX_AXES && !why; i++)
            if (m.size[i] != 0) why = "an unused axis length is not 0";
        if (!why && nelement != m.nelement) {
            why = "its element count does not match its shape";
            snprintf(detail, sizeof detail, "nelement=%llu, shape product=%llu",
                     (unsigned long long)m.nelement, (unsigned long long)nelement);
        }
    }
    size_t expect = 0;
    if (!why) {
        expect = stream_bytes(nelement, itemsize, depth, m.NBkw);
        if (!expect || expect != (size_t)st.st_size) {
            why = "its size does not match its header";
            snprintf(detail, sizeof detail,
                     "header: %llu elements of %zu bytes, depth %u, %u keywords = %zu bytes; "
                     "file: %lld bytes",
                     (unsigned long long)nelement, itemsize, depth, m.NBkw, expect,
                     (long long)st.st_size);
        }
    }
    if (why) {
        close(fd);
        return fail(errbuf, code, "%s is not a valid DAO stream: %s (%s). It may be truncated, "
                                  "foreign or still being created.", path, why, detail);
    }
    unsigned char *map = mmap(NULL, expect, prot, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        close(fd);
        errno = e;
        return fail(errbuf, -1, "cannot map %s: %s", path, strerror(e));
    }
    s->fd = fd;
    s->map = map;
    s->map_size = expect;
    set_layout(s, depth, m.NBkw, nelement, itemsize);
    s->readonly = !(prot & PROT_WRITE);
    int r = open_semaphores(s, st.st_mode & 0666, 0, st.st_uid, errbuf);
    if (r) {
        int e = errno;
        dao_close(s);
        errno = e;
        return r;
    }
    return 0;
}

void dao_close(dao_stream_t *s) {
    for (int i = 0; i < DAO_NSEM; i++)
        if (s->sem[i]) {
            sem_close(s->sem[i]);
            s->sem[i] = NULL;
        }
    if (s->semlog) {
        sem_close(s->semlog);
        s->semlog = NULL;
    }
    if (s->map) {
        munmap(s->map, s->map_size);
        s->map = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    free(s->scratch);
    s->scratch = NULL;
}

uint32_t dao_newest(const dao_stream_t *s) {
    uint32_t i = __atomic_load_n(&s->meta[0].fifo_last_written, __ATOMIC_ACQUIRE);
    return i < s->depth ? i : i % s->depth;
}

uint64_t dao_counter(const dao_stream_t *s) {
    return __atomic_load_n(&s->meta[dao_newest(s)].cnt0, __ATOMIC_ACQUIRE);
}

static void post_all(dao_stream_t *s) {
    int v;
    for (int i = 0; i < DAO_NSEM; i++)
        if (sem_getvalue(s->sem[i], &v) == 0 && v < 1) sem_post(s->sem[i]);
    if (sem_getvalue(s->semlog, &v) == 0 && v < 1) sem_post(s->semlog);
}

uint32_t dao_begin_write(dao_stream_t *s) {
    if (s->writing_slot >= 0) return (uint32_t)s->writing_slot;
    uint32_t idx = (dao_newest(s) + 1) % s->depth;
    __atomic_store_n(&s->meta[idx].write, 1, __ATOMIC_RELAXED);
    /* The flag must be visible before any byte of the new frame. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    s->writing_slot = (int)idx;
    return idx;
}

static void publish(dao_stream_t *s, uint32_t idx, int64_t cnt2, int64_t atime_ns) {
    dao_meta_t *m = &s->meta[idx];
    uint32_t prev = (idx + s->depth - 1) % s->depth;
    uint64_t cnt = __atomic_load_n(&s->meta[prev].cnt0, __ATOMIC_RELAXED) + 1;
    m->atime_sec = 0;
    __atomic_store_n(&m->atime_ns, atime_ns > 0 ? atime_ns : dao_now_ns(), __ATOMIC_RELAXED);
    if (cnt2 >= 0) __atomic_store_n(&m->cnt2, (uint64_t)cnt2, __ATOMIC_RELAXED);
    __atomic_store_n(&m->cnt0, cnt, __ATOMIC_RELAXED);
    /* Frame, counter and timestamp are complete before the flag drops and the index moves. */
    __atomic_store_n(&m->write, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&s->meta[0].fifo_last_written, idx, __ATOMIC_RELEASE);
    s->writing_slot = -1;
    post_all(s);
}

int dao_write(dao_stream_t *s, const void *src, int64_t cnt2, int64_t atime_ns) {
    uint32_t idx = dao_begin_write(s);
    memcpy(s->data + (size_t)idx * s->frame_bytes, src, s->frame_bytes);
    publish(s, idx, cnt2, atime_ns);
    return 0;
}

int dao_write_part(dao_stream_t *s, const void *src, uint32_t position, uint32_t nb,
                   uint32_t packet_id, uint32_t packet_total, uint64_t frame_number,
                   char *errbuf) {
    if ((uint64_t)position + nb > s->nelement)
        return fail(errbuf, -3, "packet of %u elements at position %u overruns the frame of %llu "
                                "elements", nb, position, (unsigned long long)s->nelement);
    if (packet_id >= DAO_NPACKET)
        return fail(errbuf, -3, "packet id %u out of range: DAO keeps 512 packet ids (0 to 511)",
                    packet_id);
    uint32_t idx = dao_begin_write(s);
    memcpy(s->data + (size_t)idx * s->frame_bytes + (size_t)position * s->itemsize, src,
           (size_t)nb * s->itemsize);
    dao_meta_t *m = &s->meta[idx];
    m->lastPos = position;
    m->lastNb = nb;
    m->packetNb = packet_id;
    m->packetTotal = packet_total;
    m->lastNbArray[packet_id] = frame_number;
    return 0;
}

void dao_finalize(dao_stream_t *s, int64_t cnt2, int64_t atime_ns) {
    publish(s, dao_begin_write(s), cnt2, atime_ns);
}

void dao_abort_write(dao_stream_t *s) {
    if (s->writing_slot < 0) return;
    __atomic_store_n(&s->meta[s->writing_slot].write, 0, __ATOMIC_RELEASE);
    s->writing_slot = -1;
}

static void deadline_ts(struct timespec *ts, clockid_t clk, int64_t timeout_ns) {
    clock_gettime(clk, ts);
    int64_t ns = ts->tv_nsec + timeout_ns;
    ts->tv_sec += ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

int dao_read(const dao_stream_t *s, int slot, void *dst, int64_t stuck_ns, uint32_t *slot_out,
             uint64_t *cnt0_out, uint64_t *cnt2_out, int64_t *atime_out) {
    int64_t since = 0, first = 0;
    uint64_t last_c0 = 0, last_newest = 0;
    /* Ten times stuck_ns, at least 1 s; clamped, since stuck_ns * 10 overflows past ~29 years. */
    int64_t give_up = stuck_ns > INT64_MAX / 10 ? INT64_MAX : stuck_ns * 10;
    if (give_up < 1000000000LL) give_up = 1000000000LL;
    for (unsigned tries = 0;; tries++) {
        uint32_t idx = slot < 0 ? dao_newest(s) : (uint32_t)slot % s->depth;
        const dao_meta_t *m = &s->meta[idx];
        uint8_t w0 = __atomic_load_n(&m->write, __ATOMIC_ACQUIRE);
        uint64_t c0 = __atomic_load_n(&m->cnt0, __ATOMIC_ACQUIRE);
        if (!w0) {
            uint64_t c2 = __atomic_load_n(&m->cnt2, __ATOMIC_RELAXED);
            int64_t at = __atomic_load_n(&m->atime_ns, __ATOMIC_RELAXED);
            memcpy(dst, s->data + (size_t)idx * s->frame_bytes, s->frame_bytes);
            /* The copy is complete before the flag and counter are checked again. */
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            uint8_t w1 = __atomic_load_n(&m->write, __ATOMIC_RELAXED);
            uint64_t c1 = __atomic_load_n(&m->cnt0, __ATOMIC_RELAXED);
            if (!w1 && c1 == c0) {
                if (slot_out) *slot_out = idx;
                if (cnt0_out) *cnt0_out = c0;
                if (cnt2_out) *cnt2_out = c2;
                if (atime_out) *atime_out = at;
                return DAO_SUCCESS;
            }
        }
        if (tries < 256) {
            CPU_RELAX();
            continue;
        }
        if (stuck_ns <= 0) { /* a quick try only */
            if (slot_out) *slot_out = idx;
            if (cnt0_out) *cnt0_out = c0;
            return DAO_NOTREADY;
        }
        /* The slot stays under write. A live writer moves a counter; a writer that died between
         * setting the flag and publishing leaves the flag set and every counter still. */
        uint64_t newest = dao_counter(s);
        int64_t t = mono_ns();
        if (!first) first = t;
        if (!since || c0 != last_c0 || newest != last_newest) {
            since = t;
            last_c0 = c0;
            last_newest = newest;
        }
        int code = DAO_SUCCESS;
        if (cancelled(s))
            code = DAO_INTERRUPTED;
        else if (w0 && t - since > stuck_ns)
            code = DAO_NOTREADY;
        else if (t - first > give_up)
            code = DAO_OVERWRITE;
        if (code != DAO_SUCCESS) {
            if (slot_out) *slot_out = idx;
            if (cnt0_out) *cnt0_out = c0;
            return code;
        }
        if (tries < 2048)
            sched_yield();
        else
            sleep_ns(50000);
    }
}

static int sem_wait_slice(sem_t *sem, int64_t timeout_ns) {
    struct timespec ts;
    int r;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
    deadline_ts(&ts, CLOCK_MONOTONIC, timeout_ns);
    do r = sem_clockwait(sem, CLOCK_MONOTONIC, &ts);
    while (r && errno == EINTR);
#else
    deadline_ts(&ts, CLOCK_REALTIME, timeout_ns);
    do r = sem_timedwait(sem, &ts);
    while (r && errno == EINTR);
#endif
    if (!r) return DAO_SUCCESS;
    return errno == ETIMEDOUT ? DAO_TIMEOUT : DAO_ERROR;
}

int dao_wait_new(dao_stream_t *s, uint64_t seen, int has_seen, int64_t spin_ns, int semnb,
                 int64_t timeout_ns) {
    int64_t start = mono_ns(), t = start;
    if (has_seen && dao_counter(s) != seen) return DAO_SUCCESS;
    if (has_seen && spin_ns > 0) {
        for (unsigned it = 1;; it++) {
            if (dao_counter(s) != seen) return DAO_SUCCESS;
            if ((it & 255) == 0) {
                if (cancelled(s)) return DAO_INTERRUPTED;
                t = mono_ns();
                if (t - start >= spin_ns || t - start >= timeout_ns) break;
            }
            CPU_RELAX();
        }
    }
    for (;;) {
        if (cancelled(s)) return DAO_INTERRUPTED;
        int64_t left = timeout_ns - (t - start);
        if (left <= 0) return DAO_TIMEOUT;
        int r = sem_wait_slice(s->sem[semnb], left < DAO_WAIT_SLICE_NS ? left : DAO_WAIT_SLICE_NS);
        if (r == DAO_ERROR) return r;
        if (r == DAO_SUCCESS && !has_seen) return DAO_SUCCESS;
        /* A post that brings no frame newer than `seen` was stale: it is consumed, and the
         * wait goes on. The counter is checked after every slice too, in case another reader
         * sharing this semaphore took the post. */
        if (has_seen && dao_counter(s) != seen) return DAO_SUCCESS;
        t = mono_ns();
    }
}

void dao_drain_sem(dao_stream_t *s, int semnb) {
    while (sem_trywait(s->sem[semnb]) == 0) {
    }
}

int dao_sem_value(const dao_stream_t *s, int semnb) {
    int v = 0;
    sem_getvalue(s->sem[semnb], &v);
    return v;
}

#define ADD_LOOP(T)                                                                            \
    do {                                                                                       \
        T *o = (T *)out;                                                                       \
        const T *x = (const T *)in;                                                            \
        for (size_t i = 0; i < n; i++) o[i] += x[i];                                           \
    } while (0)

static void add_frames(void *out, const void *in, int atype, size_t nelement) {
    size_t n = nelement;
    switch (atype) {
    case 1: case 2: ADD_LOOP(uint8_t); break;   /* two's complement: wraps like C ints */
    case 3: case 4: ADD_LOOP(uint16_t); break;
    case 5: case 6: ADD_LOOP(uint32_t); break;
    case 7: case 8: ADD_LOOP(uint64_t); break;
    case 9: ADD_LOOP(float); break;
    case 10: ADD_LOOP(double); break;
    case 11: n *= 2; ADD_LOOP(float); break;
    case 12: n *= 2; ADD_LOOP(double); break;
    }
}

int dao_combine(dao_stream_t *dst, dao_stream_t *const *srcs, int nsrc, char *errbuf) {
    int atype = dst->meta[0].atype;
    if (nsrc < 1) return fail(errbuf, -3, "combine needs at least one source stream");
    for (int k = 0; k < nsrc; k++) {
        if (srcs[k]->nelement != dst->nelement || srcs[k]->meta[0].atype != atype)
            return fail(errbuf, -3, "source %s does not match the shape and dtype of %s",
                        srcs[k]->path, dst->path);
    }
    if (nsrc > 1 && !dst->scratch) {
        dst->scratch = malloc(dst->frame_bytes ? dst->frame_bytes : 1);
        if (!dst->scratch) return fail(errbuf, -1, "out of memory");
    }
    uint32_t idx = dao_begin_write(dst);
    unsigned char *out = dst->data + (size_t)idx * dst->frame_bytes;
    for (int k = 0; k < nsrc; k++) {
        void *buf = k ? dst->scratch : out;
        uint32_t slot = 0;
        int r = dao_read(srcs[k], -1, buf, 1000000000LL, &slot, NULL, NULL, NULL);
        if (r != DAO_SUCCESS) {
            dao_abort_write(dst);
            if (r == DAO_INTERRUPTED)
                return fail(errbuf, -4, "source %s was closed by another thread during the "
                                        "combine", srcs[k]->path);
            return fail(errbuf, -4, "slot %u of source %s %s: restart its writer", slot,
                        srcs[k]->path,
                        r == DAO_NOTREADY ? "stayed under write for 1 s with its counter "
                                            "unchanged: its writer died in the middle of a frame"
                                          : "is rewritten faster than it can be copied");
        }
        if (k) add_frames(out, buf, atype, dst->nelement);
    }
    publish(dst, idx, -1, 0);
    return 0;
}
