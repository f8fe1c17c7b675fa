/*
 * dao stream core: shared-memory image streams byte-compatible with the Durham AO (DAO)
 * C library (see spec shm-format.md). Plain C, no Python: the binding lives in module.c.
 *
 * A stream file holds N metadata blocks (4304 bytes each), then N frames, then NBkw keyword
 * records (120 bytes each). Semaphores are named POSIX semaphores outside the file.
 */
#ifndef DAO_STREAM_H
#define DAO_STREAM_H

#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>

#define DAO_NAME_LEN 80
#define DAO_NSEM 10
#define DAO_NPACKET 512
#define DAO_META_SIZE 4304
#define DAO_KW_SIZE 120
#define DAO_MAX_AXES 3

/* Return codes, as in the Durham library. */
enum {
    DAO_SUCCESS = 0,
    DAO_ERROR = 1,
    DAO_TIMEOUT = -1,
    DAO_OVERWRITE = -2,
    DAO_NOTREADY = -3,
    DAO_INTERRUPTED = -4, /* ours: the stream is being closed (dao_cancel) */
};

/* Longest sleep of one semaphore wait before the waiter checks dao_cancel and the counter
 * again (ns); the Python binding also returns to the interpreter (signals, a replaced file)
 * after each wait of this length. */
#define DAO_WAIT_SLICE_NS 10000000LL

typedef struct {
    char name[DAO_NAME_LEN];      /*    0 */
    uint8_t naxis;                /*   80 */
    uint32_t size[3];             /*   84 */
    uint64_t nelement;            /*   96 */
    uint8_t atype;                /*  104 */
    double creation_time;         /*  112 */
    double last_access;           /*  120 */
    int64_t atime_sec;            /*  128 */
    int64_t atime_ns;             /*  136: total ns since the epoch */
    uint8_t shared;               /*  144 */
    uint8_t status;               /*  145 */
    uint8_t logflag;              /*  146 */
    uint16_t sem;                 /*  148 */
    uint64_t cnt0;                /*  152 */
    uint64_t cnt1;                /*  160 */
    uint64_t cnt2;                /*  168 */
    uint8_t write;                /*  176 */
    uint16_t NBkw;                /*  178 */
    uint32_t lastPos;             /*  180 */
    uint32_t lastNb;              /*  184 */
    uint32_t packetNb;            /*  188 */
    uint32_t packetTotal;         /*  192 */
    uint64_t lastNbArray[DAO_NPACKET]; /* 200 */
    uint32_t fifo_size;           /* 4296 */
    uint32_t fifo_last_written;   /* 4300 */
} dao_meta_t;

typedef struct {
    char name[16];                /*   0 */
    char type;                    /*  16: 'N', 'L', 'D', 'S' */
    union {
        int64_t i;
        double d;
        char s[16];
    } value;                      /*  24 */
    char comment[80];             /*  40 */
} dao_kw_t;

_Static_assert(sizeof(dao_meta_t) == DAO_META_SIZE, "metadata block must be 4304 bytes");
_Static_assert(offsetof(dao_meta_t, naxis) == 80, "naxis");
_Static_assert(offsetof(dao_meta_t, size) == 84, "size");
_Static_assert(offsetof(dao_meta_t, nelement) == 96, "nelement");
_Static_assert(offsetof(dao_meta_t, atype) == 104, "atype");
_Static_assert(offsetof(dao_meta_t, creation_time) == 112, "creation_time");
_Static_assert(offsetof(dao_meta_t, last_access) == 120, "last_access");
_Static_assert(offsetof(dao_meta_t, atime_sec) == 128, "atime_sec");
_Static_assert(offsetof(dao_meta_t, atime_ns) == 136, "atime_ns");
_Static_assert(offsetof(dao_meta_t, shared) == 144, "shared");
_Static_assert(offsetof(dao_meta_t, sem) == 148, "sem");
_Static_assert(offsetof(dao_meta_t, cnt0) == 152, "cnt0");
_Static_assert(offsetof(dao_meta_t, cnt2) == 168, "cnt2");
_Static_assert(offsetof(dao_meta_t, write) == 176, "write");
_Static_assert(offsetof(dao_meta_t, NBkw) == 178, "NBkw");
_Static_assert(offsetof(dao_meta_t, lastPos) == 180, "lastPos");
_Static_assert(offsetof(dao_meta_t, packetTotal) == 192, "packetTotal");
_Static_assert(offsetof(dao_meta_t, lastNbArray) == 200, "lastNbArray");
_Static_assert(offsetof(dao_meta_t, fifo_size) == 4296, "fifo_size");
_Static_assert(offsetof(dao_meta_t, fifo_last_written) == 4300, "fifo_last_written");
_Static_assert(sizeof(dao_kw_t) == DAO_KW_SIZE, "keyword record must be 120 bytes");
_Static_assert(offsetof(dao_kw_t, value) == 24, "kw value");
_Static_assert(offsetof(dao_kw_t, comment) == 40, "kw comment");

/* An open stream: the mapping and the semaphores of this process. */
typedef struct {
    int fd;
    unsigned char *map;
    size_t map_size;
    dao_meta_t *meta;     /* depth blocks */
    unsigned char *data;  /* depth frames */
    dao_kw_t *kw;         /* nbkw records */
    uint32_t depth;
    uint32_t nbkw;
    size_t itemsize;
    size_t frame_bytes;
    uint64_t nelement;
    sem_t *sem[DAO_NSEM];
    sem_t *semlog;
    unsigned char *scratch; /* for combine, allocated on first use */
    int writing_slot;       /* slot of an open partial write, -1 if none */
    int readonly;           /* mapped read-only (no write permission) */
    int cancel;             /* set by dao_cancel: waits and reads in progress return at once */
    char path[DAO_NAME_LEN];
    char base[DAO_NAME_LEN];
} dao_stream_t;

/* Item size in bytes of a DAO type code, 0 if the code is unknown. */
size_t dao_itemsize(int atype);

/* All calls return 0 on success or -1 with errbuf (size DAO_ERRLEN) filled in. */
#define DAO_ERRLEN 512

/* Error codes of the calls below (besides 0): -1 system error (errno set), -2 not a valid
 * stream (format), -3 invalid argument, -4 refused for safety (a file or semaphore of another
 * user, a symbolic link). */
int dao_semaphore_base(const char *path, char *base, char *errbuf);
int dao_create(dao_stream_t *s, const char *path, int naxis, const uint32_t *size, int atype,
               uint32_t depth, uint32_t nbkw, int mode, char *errbuf);
int dao_open(dao_stream_t *s, const char *path, int writable, char *errbuf);
void dao_close(dao_stream_t *s);
/* Ask the waits and reads running on s in other threads to return DAO_INTERRUPTED soon
 * (within DAO_WAIT_SLICE_NS). */
void dao_cancel(dao_stream_t *s);
int dao_unlink_semaphores(const char *base, char *errbuf);

/* Index of the newest slot (always < depth, whatever the file says). */
uint32_t dao_newest(const dao_stream_t *s);
uint64_t dao_counter(const dao_stream_t *s);

/* Full write of one frame (spec section 7). cnt2 < 0 keeps cnt2 at 0; atime_ns <= 0: now. */
int dao_write(dao_stream_t *s, const void *src, int64_t cnt2, int64_t atime_ns);

/* Open a write of the next slot (write flag set), return its index. */
uint32_t dao_begin_write(dao_stream_t *s);
/* Copy a packet into the slot being written (opens one if none is open). */
int dao_write_part(dao_stream_t *s, const void *src, uint32_t position, uint32_t nb,
                   uint32_t packet_id, uint32_t packet_total, uint64_t frame_number,
                   char *errbuf);
/* Drop an open write without publishing it (the slot keeps its old counter). */
void dao_abort_write(dao_stream_t *s);
/* Publish the slot being written (opens and publishes one if none is open). */
void dao_finalize(dao_stream_t *s, int64_t cnt2, int64_t atime_ns);

/* Copy slot `slot` (or the newest if slot < 0) into dst, never torn. The copied slot's
 * counter, frame id and timestamp go to the out pointers (any may be NULL); on failure the
 * slot and its counter still go to slot_out and cnt0.
 * Returns DAO_SUCCESS; DAO_NOTREADY when the slot's write flag stayed set for stuck_ns while
 * its counter and the stream's newest counter did not move (its writer died mid-frame);
 * DAO_OVERWRITE when every copy tore for 10 * stuck_ns (at least 1 s; any stuck_ns up to
 * INT64_MAX is valid, the product is clamped) while the writer kept
 * writing (frames rewritten faster than they can be copied); DAO_INTERRUPTED (dao_cancel).
 * stuck_ns <= 0 makes a quick try: DAO_NOTREADY after a short spin. */
int dao_read(const dao_stream_t *s, int slot, void *dst, int64_t stuck_ns, uint32_t *slot_out,
             uint64_t *cnt0, uint64_t *cnt2, int64_t *atime_ns);

/* The one wait of the core: for a frame newer than the one a reader last returned (counter
 * `seen`), or, without has_seen, for any post of semaphore semnb.
 * With has_seen, return as soon as the newest counter differs from seen: at once if it
 * already does, else after a busy-spin of spin_ns or a post of semaphore semnb; a post that
 * brings no new frame (a stale post, made while the reader was copying) is consumed and the
 * wait goes on; the counter is checked again every DAO_WAIT_SLICE_NS (a reader sharing the
 * semaphore may take the post). Without has_seen (the reader returned nothing yet), any post
 * will do, as in the Durham library. Returns DAO_SUCCESS, DAO_TIMEOUT (after timeout_ns),
 * DAO_INTERRUPTED (dao_cancel) or DAO_ERROR (errno). */
int dao_wait_new(dao_stream_t *s, uint64_t seen, int has_seen, int64_t spin_ns, int semnb,
                 int64_t timeout_ns);

/* Drain a semaphore (set it to 0). */
void dao_drain_sem(dao_stream_t *s, int semnb);
int dao_sem_value(const dao_stream_t *s, int semnb);

/* dst slot <- sum of the newest frames of srcs (same shape and dtype as dst). */
int dao_combine(dao_stream_t *dst, dao_stream_t *const *srcs, int nsrc, char *errbuf);

int64_t dao_now_ns(void);
int64_t dao_mono_ns(void);

#endif
