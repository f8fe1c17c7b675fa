/*
 * dao._shm: the Python binding of the stream core (stream.c).
 *
 * A Stream object owns one mapping. It exports the whole mapped file through the buffer
 * protocol, so the Python layer builds zero-copy numpy views of headers, frames and keywords;
 * the hot paths (write, torn-free read, waits) run here with the GIL released where it pays.
 * The mapping outlives close() while numpy views of it exist, so no view can ever dangle.
 *
 * Closing while other threads use the stream: every call that runs without the GIL counts
 * itself in `users`. close() marks the object closed and cancels the waits in progress (they
 * return within DAO_WAIT_SLICE_NS and raise StreamError); the semaphores and the descriptor are
 * released only when the last user has left, so nothing is ever unmapped under a thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "stream.h"

/* Copies of at least this many bytes run without the GIL. */
#define NOGIL_BYTES (64 * 1024)
/* Default time a slot's write flag may stay set, with every counter still, before a read
 * decides that its writer died in the middle of the frame. */
#define STUCK_NS 1000000000LL

static PyObject *StreamError, *StreamFormatError, *StreamNotFoundError, *StreamTimeout;

typedef struct {
    PyObject_HEAD
    dao_stream_t s;
    int closed;      /* close() was called: new calls fail */
    int released;    /* semaphores and descriptor released (once the last user left) */
    int users;       /* calls running on this stream without the GIL */
    long long stuck_ns;
    Py_ssize_t exports;
    dev_t dev;
    ino_t ino;
    unsigned long long last_cnt0, last_cnt2;
    long long last_atime_ns;
    unsigned int last_slot;
} StreamObject;

static PyTypeObject StreamType;

static PyObject *raise_code(int code, const char *msg) {
    if (code == -1) {
        int e = errno;
        PyObject *cls = e == ENOENT ? StreamNotFoundError : PyExc_OSError;
        PyObject *args = Py_BuildValue("(is)", e, msg);
        if (args) {
            PyErr_SetObject(cls, args);
            Py_DECREF(args);
        }
    } else if (code == -2) {
        PyErr_SetString(StreamFormatError, msg);
    } else if (code == -4) {
        PyErr_SetString(StreamError, msg);
    } else {
        PyErr_SetString(PyExc_ValueError, msg);
    }
    return NULL;
}

static int check_open(StreamObject *self) {
    if (self->closed) {
        PyErr_SetString(StreamError, "the stream is closed: open it again with dao.shm(path)");
        return -1;
    }
    return 0;
}

static int check_writable(StreamObject *self) {
    if (check_open(self)) return -1;
    if (self->s.readonly) {
        PyErr_Format(PyExc_PermissionError,
                     "%s was opened read-only (no write permission on the file)", self->s.path);
        return -1;
    }
    return 0;
}

static int check_sem(int semnb) {
    if (semnb < 0 || semnb >= DAO_NSEM) {
        PyErr_Format(PyExc_ValueError, "semaphore index %d out of range: DAO streams have 10 "
                                       "semaphores, 0 to 9", semnb);
        return -1;
    }
    return 0;
}

/* The file at our path must still be the one we mapped. */
static int check_same_file(StreamObject *self) {
    struct stat st;
    if (stat(self->s.path, &st) || st.st_ino != self->ino || st.st_dev != self->dev ||
        (size_t)st.st_size < self->s.map_size) {
        PyErr_Format(StreamError,
                     "%s was deleted, re-created or truncated by another process while this "
                     "process waited on it: open it again with dao.shm(path)", self->s.path);
        return -1;
    }
    return 0;
}

static StreamObject *new_stream(void) {
    StreamObject *self = PyObject_New(StreamObject, &StreamType);
    if (!self) return NULL;
    memset(&self->s, 0, sizeof self->s);
    self->s.fd = -1;
    self->closed = 1;
    self->released = 1;
    self->users = 0;
    self->stuck_ns = STUCK_NS;
    self->exports = 0;
    self->last_cnt0 = self->last_cnt2 = 0;
    self->last_atime_ns = 0;
    self->last_slot = 0;
    return self;
}

static int remember_file(StreamObject *self) {
    struct stat st;
    if (fstat(self->s.fd, &st)) {
        raise_code(-1, "cannot stat the stream file");
        return -1;
    }
    self->dev = st.st_dev;
    self->ino = st.st_ino;
    self->closed = 0;
    self->released = 0;
    return 0;
}

/* The new Stream object once dao_create or dao_open returned r, or NULL with the error set. */
static PyObject *finish_stream(StreamObject *self, int r, const char *err) {
    if (r) {
        raise_code(r, err);
        Py_DECREF(self);
        return NULL;
    }
    self->released = 0; /* dao_create/dao_open succeeded: dealloc must release */
    if (remember_file(self)) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* A uint32 argument given as any Python int: refused (not wrapped) when out of range. */
static int parse_u32(PyObject *obj, const char *what, unsigned long long lo,
                     unsigned long long hi, uint32_t *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (PyErr_Occurred() || v < lo || v > hi) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be an integer from %llu to %llu, not %R", what,
                     lo, hi, obj);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static PyObject *mod_create(PyObject *mod, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "shape", "atype", "depth", "nbkw", "mode", NULL};
    const char *path;
    PyObject *shape, *depth_obj = NULL, *nbkw_obj = NULL;
    int atype, mode = 0600;
    uint32_t depth = 1, nbkw = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sOi|OOi", kwlist, &path, &shape, &atype,
                                     &depth_obj, &nbkw_obj, &mode))
        return NULL;
    if (depth_obj && parse_u32(depth_obj, "the FIFO depth", 1, UINT32_MAX, &depth)) return NULL;
    if (nbkw_obj && parse_u32(nbkw_obj, "the number of keywords (nbkw)", 0, UINT16_MAX, &nbkw))
        return NULL;
    PyObject *seq = PySequence_Fast(shape, "shape must be a sequence of ints");
    if (!seq) return NULL;
    Py_ssize_t naxis = PySequence_Fast_GET_SIZE(seq);
    uint32_t size[3] = {0, 0, 0};
    if (naxis < 1 || naxis > 3) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "a DAO stream has 1 to 3 axes, not %zd", naxis);
    }
    for (Py_ssize_t i = 0; i < naxis; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred() || v == 0 || v > UINT32_MAX) {
            PyErr_Clear();
            Py_DECREF(seq);
            return PyErr_Format(PyExc_ValueError,
                                "axis %zd: lengths must be integers from 1 to 4294967295", i);
        }
        size[i] = (uint32_t)v;
    }
    Py_DECREF(seq);
    StreamObject *self = new_stream();
    if (!self) return NULL;
    char err[DAO_ERRLEN];
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = dao_create(&self->s, path, (int)naxis, size, atype, depth, nbkw, mode, err);
    Py_END_ALLOW_THREADS
    return finish_stream(self, r, err);
}

static PyObject *mod_open(PyObject *mod, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
    StreamObject *self = new_stream();
    if (!self) return NULL;
    char err[DAO_ERRLEN];
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = dao_open(&self->s, path, 0, err);
    Py_END_ALLOW_THREADS
    return finish_stream(self, r, err);
}

static PyObject *mod_semaphore_base(PyObject *mod, PyObject *args) {
    const char *path;
    char base[DAO_NAME_LEN], err[DAO_ERRLEN];
    if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
    if (dao_semaphore_base(path, base, err)) return raise_code(-3, err);
    return PyUnicode_FromString(base);
}

static PyObject *mod_unlink_semaphores(PyObject *mod, PyObject *args) {
    const char *base;
    if (!PyArg_ParseTuple(args, "s", &base)) return NULL;
    dao_unlink_semaphores(base, NULL);
    Py_RETURN_NONE;
}

static PyObject *mod_now_ns(PyObject *mod, PyObject *noargs) {
    return PyLong_FromLongLong(dao_now_ns());
}

/* ---- Liveness locks ------------------------------------------------------------------------
 * A process that writes a stream (created or reused it) holds a read lock on one byte of the
 * stream's owner file: the byte at offset = its pid (readers hold their semaphore claims). The locks are "open file
 * description" locks (F_OFD_*): the kernel drops them when the process dies, closing another
 * descriptor of the file does not, and a query names every holder by its byte. */

static PyObject *mod_hold_pid(PyObject *mod, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd)) return NULL;
    struct flock fl = {0};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)getpid();
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_SETLK, &fl)) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *mod_pid_holders(PyObject *mod, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd)) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    /* F_OFD_GETLK reports one conflicting lock of a range, not necessarily the first: search
     * the ranges on both sides of each lock found. end 0: to the end of any file. */
    enum { MAXR = 4096 };
    off_t starts[MAXR], ends[MAXR];
    int top = 0;
    starts[top] = 0;
    ends[top++] = 0;
    while (top > 0) {
        top--;
        off_t start = starts[top], end = ends[top];
        struct flock fl = {0};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = start;
        fl.l_len = end ? end - start : 0;
        if (fcntl(fd, F_OFD_GETLK, &fl)) {
            Py_DECREF(out);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (fl.l_type == F_UNLCK) continue;
        off_t lo = fl.l_start, hi = fl.l_len > 0 ? fl.l_start + fl.l_len : 0;
        for (off_t pid = lo; pid < (hi ? hi : lo + 1); pid++) {
            PyObject *v = PyLong_FromLongLong((long long)pid);
            if (!v || PyList_Append(out, v)) {
                Py_XDECREF(v);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(v);
        }
        if (top + 2 > MAXR) break;
        if (lo > start) {
            starts[top] = start;
            ends[top++] = lo;
        }
        if (hi && (!end || hi < end)) {
            starts[top] = hi;
            ends[top++] = end;
        }
    }
    if (PyList_Sort(out)) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* ---- Stream methods ---------------------------------------------------------------------- */

static void stream_unmap_if_unused(StreamObject *self) {
    if (self->closed && self->released && self->users == 0 && self->exports == 0 &&
        self->s.map) {
        munmap(self->s.map, self->s.map_size);
        self->s.map = NULL;
    }
}

/* Release the semaphores and the descriptor (the mapping stays while views exist). Called
 * with the GIL held, once closed and no thread uses the stream. */
static void stream_release(StreamObject *self) {
    if (self->released) return;
    dao_abort_write(&self->s);
    unsigned char *map = self->s.map;
    self->s.map = NULL;
    dao_close(&self->s);
    self->s.map = map;
    self->released = 1;
    stream_unmap_if_unused(self);
}

static PyObject *closed_while_waiting(StreamObject *self);

/* Bracket every section that uses the mapping or the semaphores without the GIL. Entering
 * fails (StreamError set) if the stream was closed meanwhile: buffer requests, signal handlers
 * or a garbage collection may have run Python code that closed it since check_open. */
static int stream_enter(StreamObject *self) {
    if (self->closed) {
        closed_while_waiting(self);
        return -1;
    }
    self->users++;
    return 0;
}

static void stream_leave(StreamObject *self) {
    self->users--;
    if (self->closed && self->users == 0) stream_release(self);
}

static PyObject *closed_while_waiting(StreamObject *self) {
    PyErr_Format(StreamError,
                 "%s was closed (by another thread of this process) while this call waited on "
                 "it or read it: open it again with dao.shm(path)", self->s.path);
    return NULL;
}

static PyObject *stuck_error(StreamObject *self, int code, uint32_t slot, uint64_t cnt) {
    if (code == DAO_INTERRUPTED) return closed_while_waiting(self);
    char msg[DAO_ERRLEN + 128]; /* PyErr_Format has no %f */
    double stuck = self->stuck_ns * 1e-9;
    if (code == DAO_OVERWRITE)
        snprintf(msg, sizeof msg,
                 "slot %u of %s is rewritten faster than it can be copied (every copy tore for "
                 "%.1f s): give the stream a deeper FIFO (depth >= 2), or read it with "
                 "get_data_next or read_new", slot, self->s.path, stuck * 10 > 1 ? stuck * 10 : 1.0);
    else
        snprintf(msg, sizeof msg,
                 "slot %u of %s stayed under write for %.1f s while its counter stayed at %llu: "
                 "its writer died (or hangs) in the middle of a frame. Restart the writer (its "
                 "next frame repairs the slot), or recreate the stream with "
                 "dao.shm(path, data, replace=True)",
                 slot, self->s.path, stuck, (unsigned long long)cnt);
    PyErr_SetString(StreamError, msg);
    return NULL;
}

static PyObject *stream_close(StreamObject *self, PyObject *noargs) {
    if (self->closed) Py_RETURN_NONE;
    self->closed = 1;
    /* Threads waiting on the stream return within DAO_WAIT_SLICE_NS; the last one to leave
     * releases the semaphores. */
    dao_cancel(&self->s);
    if (self->users == 0) stream_release(self);
    Py_RETURN_NONE;
}

static void stream_dealloc(StreamObject *self) {
    if (!self->released) {
        dao_abort_write(&self->s);
        dao_close(&self->s);
    } else if (self->s.map) {
        munmap(self->s.map, self->s.map_size);
    }
    PyObject_Free(self);
}

static int get_frame_buffer(StreamObject *self, PyObject *obj, Py_buffer *view, int writable,
                            size_t nbytes) {
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if ((size_t)view->len != nbytes) {
        PyErr_Format(PyExc_ValueError, "a buffer of %zd bytes was given for %s, whose frames "
                     "are %zu bytes", view->len, self->s.path, nbytes);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *stream_write(StreamObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"data", "cnt2", "atime_ns", NULL};
    PyObject *obj;
    long long cnt2 = -1, atime = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|LL", kwlist, &obj, &cnt2, &atime)) return NULL;
    if (check_writable(self)) return NULL;
    if (self->s.writing_slot >= 0) {
        PyErr_Format(StreamError, "a partial write of %s is open: finalize it first",
                     self->s.path);
        return NULL;
    }
    Py_buffer view;
    if (get_frame_buffer(self, obj, &view, 0, self->s.frame_bytes)) return NULL;
    if (view.len >= NOGIL_BYTES) {
        if (stream_enter(self)) {
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_BEGIN_ALLOW_THREADS
        dao_write(&self->s, view.buf, cnt2, atime);
        Py_END_ALLOW_THREADS
        stream_leave(self);
    } else {
        if (self->closed) {
            PyBuffer_Release(&view);
            return closed_while_waiting(self);
        }
        dao_write(&self->s, view.buf, cnt2, atime);
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *stream_read(StreamObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"out", "slot", NULL};
    PyObject *obj;
    int slot = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|i", kwlist, &obj, &slot)) return NULL;
    if (check_open(self)) return NULL;
    Py_buffer view;
    if (get_frame_buffer(self, obj, &view, 1, self->s.frame_bytes)) return NULL;
    uint32_t idx;
    uint64_t c0, c2;
    int64_t at;
    int r;
    /* Without the GIL whenever the read may last: a big frame, or a slot under write. */
    int nogil = view.len >= NOGIL_BYTES;
    if (self->closed) {
        PyBuffer_Release(&view);
        return closed_while_waiting(self);
    }
    if (!nogil) {
        r = dao_read(&self->s, slot, view.buf, 0, &idx, &c0, &c2, &at);
        nogil = r != DAO_SUCCESS;
    }
    if (nogil) {
        long long stuck = self->stuck_ns;
        if (stream_enter(self)) {
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_BEGIN_ALLOW_THREADS
        r = dao_read(&self->s, slot, view.buf, stuck, &idx, &c0, &c2, &at);
        Py_END_ALLOW_THREADS
        stream_leave(self);
    }
    PyBuffer_Release(&view);
    if (r != DAO_SUCCESS) return stuck_error(self, r, idx, c0);
    self->last_slot = idx;
    self->last_cnt0 = c0;
    self->last_cnt2 = c2;
    self->last_atime_ns = at;
    return PyLong_FromUnsignedLongLong(c0);
}

/* Copy the cap frames after (tail_slot, tail_cnt) with at most two memcpy calls, as a seqlock
 * over the whole range: every slot's flag and counter are checked before and after the copy.
 * Returns cap, or 0 if any slot moved (the caller then copies frame by frame). */
static Py_ssize_t read_range_bulk(const dao_stream_t *s, uint32_t tail_slot, uint64_t tail_cnt,
                                  unsigned char *out, Py_ssize_t cap, uint64_t *cnts,
                                  uint64_t *ids, int64_t *times) {
    uint32_t depth = s->depth, first = (tail_slot + 1) % depth;
    size_t fb = s->frame_bytes;
    for (Py_ssize_t j = 0; j < cap; j++) {
        const dao_meta_t *m = &s->meta[(first + j) % depth];
        uint64_t want = tail_cnt + 1 + (uint64_t)j;
        if (__atomic_load_n(&m->write, __ATOMIC_ACQUIRE) ||
            __atomic_load_n(&m->cnt0, __ATOMIC_ACQUIRE) != want)
            return 0;
        cnts[j] = want;
        ids[j] = __atomic_load_n(&m->cnt2, __ATOMIC_RELAXED);
        times[j] = __atomic_load_n(&m->atime_ns, __ATOMIC_RELAXED);
    }
    size_t seg = (size_t)cap < depth - first ? (size_t)cap : depth - first;
    memcpy(out, s->data + (size_t)first * fb, seg * fb);
    if ((size_t)cap > seg) memcpy(out + seg * fb, s->data, ((size_t)cap - seg) * fb);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    for (Py_ssize_t j = 0; j < cap; j++) {
        const dao_meta_t *m = &s->meta[(first + j) % depth];
        if (__atomic_load_n(&m->write, __ATOMIC_RELAXED) ||
            __atomic_load_n(&m->cnt0, __ATOMIC_RELAXED) != cnts[j])
            return 0;
    }
    return cap;
}

/* read_new(out, tail_slot, tail_cnt, counters, ids, times, partial=True) -> n, or -1 if the
 * writer lapped the cursor. Copies, torn-free and in order, the frames after the cursor
 * (counters tail_cnt+1...) that are there, as many as `out` holds, with the GIL released;
 * fills each frame's cnt0, cnt2 and write time. A slot whose writer died mid-frame raises
 * StreamError (with partial, only if no frame before it was copied: the call returns those
 * first). */
static PyObject *stream_read_new(StreamObject *self, PyObject *args) {
    PyObject *obj, *cobj, *iobj, *tobj;
    unsigned int tail_slot;
    unsigned long long tail_cnt;
    int partial = 1;
    if (!PyArg_ParseTuple(args, "OIKOOO|p", &obj, &tail_slot, &tail_cnt, &cobj, &iobj, &tobj,
                          &partial))
        return NULL;
    if (check_open(self)) return NULL;
    Py_buffer view, cview, iview, tview;
    if (PyObject_GetBuffer(obj, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(cobj, &cview, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (PyObject_GetBuffer(iobj, &iview, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&cview);
        return NULL;
    }
    if (PyObject_GetBuffer(tobj, &tview, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&cview);
        PyBuffer_Release(&iview);
        return NULL;
    }
    size_t fb = self->s.frame_bytes;
    Py_ssize_t cap = fb ? view.len / (Py_ssize_t)fb : 0;
    if (cview.len / 8 < cap) cap = cview.len / 8;
    if (iview.len / 8 < cap) cap = iview.len / 8;
    if (tview.len / 8 < cap) cap = tview.len / 8;
    uint64_t *cnts = cview.buf, *ids = iview.buf;
    int64_t *times = tview.buf;
    long long n = 0;
    uint32_t depth = self->s.depth, bad_slot = 0;
    uint64_t bad_cnt = 0;
    int bad = DAO_SUCCESS;
    long long stuck = self->stuck_ns;
    if (stream_enter(self)) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&cview);
        PyBuffer_Release(&iview);
        PyBuffer_Release(&tview);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    uint64_t newest = dao_counter(&self->s);
    uint64_t avail = newest > tail_cnt ? newest - tail_cnt : 0;
    if (avail > depth) {
        n = -1;
    } else {
        if ((long long)avail < cap) cap = (Py_ssize_t)avail;
        n = read_range_bulk(&self->s, tail_slot, tail_cnt, (unsigned char *)view.buf, cap, cnts,
                            ids, times);
        for (; n < cap; n++) {
            uint32_t slot = (uint32_t)((tail_slot + 1 + n) % depth);
            uint64_t c, c2;
            int64_t at;
            int r = dao_read(&self->s, (int)slot, (char *)view.buf + n * fb, stuck, &bad_slot, &c,
                             &c2, &at);
            if (r == DAO_NOTREADY || r == DAO_INTERRUPTED) {
                if (r == DAO_INTERRUPTED || n == 0 || !partial) {
                    bad = r;
                    bad_cnt = c;
                }
                break;
            }
            if (r != DAO_SUCCESS || c != tail_cnt + 1 + (uint64_t)n) {
                if (n == 0) n = -1; /* overwritten under the cursor */
                break;
            }
            cnts[n] = c;
            ids[n] = c2;
            times[n] = at;
        }
    }
    Py_END_ALLOW_THREADS
    stream_leave(self);
    PyBuffer_Release(&view);
    PyBuffer_Release(&cview);
    PyBuffer_Release(&iview);
    PyBuffer_Release(&tview);
    if (bad != DAO_SUCCESS) return stuck_error(self, bad, bad_slot, bad_cnt);
    return PyLong_FromLongLong(n);
}

/* Parse a timeout in seconds: None (or infinity) waits forever (-1); a negative or NaN
 * timeout is refused. */
static int parse_timeout(PyObject *obj, int64_t *ns) {
    if (obj == Py_None) {
        *ns = -1;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) return -1;
    if (isnan(t) || t < 0) {
        PyErr_Format(PyExc_ValueError, "timeout must be a number of seconds >= 0 (or None to "
                                       "wait without limit), not %R", obj);
        return -1;
    }
    *ns = t > 1e9 ? -1 : (int64_t)(t * 1e9); /* over 30 years: no limit */
    return 0;
}

/* Absolute monotonic deadline of a timeout (-1: none), and the next slice to wait. */
static int64_t deadline_of(int64_t timeout) { return timeout < 0 ? -1 : dao_mono_ns() + timeout; }

static int64_t next_slice(int64_t deadline, int64_t slice) {
    if (deadline < 0) return slice;
    int64_t left = deadline - dao_mono_ns();
    if (left < 0) left = 0;
    return left < slice ? left : slice;
}

/* After a slice of a wait: 1 to go on, 0 if the deadline passed, -1 with an exception set. */
static int wait_goes_on(StreamObject *self, int64_t deadline) {
    if (self->closed) {
        closed_while_waiting(self);
        return -1;
    }
    if (deadline >= 0 && dao_mono_ns() >= deadline) return 0;
    if (PyErr_CheckSignals()) return -1;
    if (self->closed) { /* by a signal handler */
        closed_while_waiting(self);
        return -1;
    }
    if (check_same_file(self)) return -1;
    return 1;
}

static PyObject *stream_wait_new(StreamObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"seen", "timeout", "spin", "semnb", NULL};
    PyObject *seen_obj = Py_None, *tobj = Py_None;
    double spin = 0;
    int semnb = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOdi", kwlist, &seen_obj, &tobj, &spin, &semnb))
        return NULL;
    int64_t timeout;
    if (check_open(self) || check_sem(semnb) || parse_timeout(tobj, &timeout)) return NULL;
    unsigned long long seen = 0;
    int has_seen = seen_obj != Py_None;
    if (has_seen) {
        seen = PyLong_AsUnsignedLongLong(seen_obj);
        if (seen == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    }
    int64_t spin_ns = spin > 0 ? (int64_t)(spin * 1e9) : 0;
    int64_t deadline = deadline_of(timeout);
    for (;;) {
        /* Back here after each slice: signals (Ctrl-C), close() and a replaced file. */
        int64_t slice = next_slice(deadline, DAO_WAIT_SLICE_NS + spin_ns);
        int r;
        if (stream_enter(self)) return NULL;
        Py_BEGIN_ALLOW_THREADS
        r = dao_wait_new(&self->s, seen, has_seen, spin_ns, semnb, slice);
        Py_END_ALLOW_THREADS
        stream_leave(self);
        if (r == DAO_SUCCESS) return PyLong_FromLong(DAO_SUCCESS);
        if (r == DAO_ERROR) return raise_code(-1, "waiting on a semaphore failed");
        spin_ns = 0;
        int go = wait_goes_on(self, deadline);
        if (go < 0) return NULL;
        if (!go) return PyLong_FromLong(DAO_TIMEOUT);
    }
}

static PyObject *stream_begin_write(StreamObject *self, PyObject *noargs) {
    if (check_writable(self)) return NULL;
    return PyLong_FromUnsignedLong(dao_begin_write(&self->s));
}

static PyObject *stream_abort_write(StreamObject *self, PyObject *noargs) {
    if (!self->closed) dao_abort_write(&self->s);
    Py_RETURN_NONE;
}

static PyObject *stream_finalize(StreamObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"cnt2", "atime_ns", NULL};
    long long cnt2 = -1, atime = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|LL", kwlist, &cnt2, &atime)) return NULL;
    if (check_writable(self)) return NULL;
    dao_finalize(&self->s, cnt2, atime);
    Py_RETURN_NONE;
}

static PyObject *stream_write_part(StreamObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"data", "position", "packet_id", "packet_total", "frame_number",
                             NULL};
    PyObject *obj;
    unsigned int position, packet_id, packet_total;
    unsigned long long frame_number;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OIIIK", kwlist, &obj, &position, &packet_id,
                                     &packet_total, &frame_number))
        return NULL;
    if (check_writable(self)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (self->closed) {
        PyBuffer_Release(&view);
        return closed_while_waiting(self);
    }
    if (view.len % self->s.itemsize) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "a packet of %zd bytes is not a whole number of "
                            "%zu-byte elements", view.len, self->s.itemsize);
    }
    if ((unsigned long long)(view.len / self->s.itemsize) > UINT32_MAX) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "a packet of %zd elements is more than DAO's "
                            "4294967295 (a uint32): send it in several packets",
                            view.len / (Py_ssize_t)self->s.itemsize);
    }
    char err[DAO_ERRLEN];
    int r = dao_write_part(&self->s, view.buf, position, (uint32_t)(view.len / self->s.itemsize),
                           packet_id, packet_total, frame_number, err);
    PyBuffer_Release(&view);
    if (r) return raise_code(r, err);
    Py_RETURN_NONE;
}

static PyObject *stream_combine(StreamObject *self, PyObject *arg) {
    if (check_writable(self)) return NULL;
    PyObject *seq = PySequence_Fast(arg, "combine takes a sequence of streams");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    dao_stream_t **srcs = PyMem_Malloc((n ? n : 1) * sizeof *srcs);
    if (!srcs) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyObject_TypeCheck(o, &StreamType) || ((StreamObject *)o)->closed ||
            (StreamObject *)o == self) {
            PyMem_Free(srcs);
            Py_DECREF(seq);
            return PyErr_Format(PyExc_ValueError, "source %zd is not an open stream distinct from "
                                                  "the destination", i);
        }
        srcs[i] = &((StreamObject *)o)->s;
    }
    char err[DAO_ERRLEN];
    int r;
    int closed = self->closed;
    for (Py_ssize_t i = 0; i < n; i++) closed |= ((StreamObject *)PySequence_Fast_GET_ITEM(seq, i))->closed;
    if (closed) {
        PyMem_Free(srcs);
        Py_DECREF(seq);
        PyErr_SetString(StreamError, "a stream of the combine was closed by another thread: "
                                     "open it again with dao.shm(path)");
        return NULL;
    }
    self->users++;
    for (Py_ssize_t i = 0; i < n; i++) ((StreamObject *)PySequence_Fast_GET_ITEM(seq, i))->users++;
    Py_BEGIN_ALLOW_THREADS
    r = dao_combine(&self->s, srcs, (int)n, err);
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) stream_leave((StreamObject *)PySequence_Fast_GET_ITEM(seq, i));
    stream_leave(self);
    PyMem_Free(srcs);
    Py_DECREF(seq);
    if (r) return raise_code(r, err);
    Py_RETURN_NONE;
}

static PyObject *stream_drain(StreamObject *self, PyObject *args) {
    int semnb;
    if (!PyArg_ParseTuple(args, "i", &semnb)) return NULL;
    if (check_open(self) || check_sem(semnb)) return NULL;
    dao_drain_sem(&self->s, semnb);
    Py_RETURN_NONE;
}

static PyObject *stream_sem_value(StreamObject *self, PyObject *args) {
    int semnb;
    if (!PyArg_ParseTuple(args, "i", &semnb)) return NULL;
    if (check_open(self) || check_sem(semnb)) return NULL;
    return PyLong_FromLong(dao_sem_value(&self->s, semnb));
}

static PyObject *stream_newest(StreamObject *self, PyObject *noargs) {
    if (check_open(self)) return NULL;
    return PyLong_FromUnsignedLong(dao_newest(&self->s));
}

static PyObject *stream_counter(StreamObject *self, PyObject *noargs) {
    if (check_open(self)) return NULL;
    return PyLong_FromUnsignedLongLong(dao_counter(&self->s));
}

static PyObject *stream_get_closed(StreamObject *self, void *c) { return PyBool_FromLong(self->closed); }
static PyObject *stream_get_readonly(StreamObject *self, void *c) {
    return PyBool_FromLong(self->s.readonly);
}
static PyObject *stream_get_path(StreamObject *self, void *c) {
    return PyUnicode_FromString(self->s.path);
}
static PyObject *stream_get_base(StreamObject *self, void *c) {
    return PyUnicode_FromString(self->s.base);
}
static PyObject *stream_get_depth(StreamObject *self, void *c) {
    return PyLong_FromUnsignedLong(self->s.depth);
}
static PyObject *stream_get_nbkw(StreamObject *self, void *c) {
    return PyLong_FromUnsignedLong(self->s.nbkw);
}
static PyObject *stream_get_frame_bytes(StreamObject *self, void *c) {
    return PyLong_FromSize_t(self->s.frame_bytes);
}
static PyObject *stream_get_writing(StreamObject *self, void *c) {
    return PyLong_FromLong(self->s.writing_slot);
}

static int stream_getbuffer(StreamObject *self, Py_buffer *view, int flags) {
    if (!self->s.map) {
        PyErr_SetString(StreamError, "the stream is closed");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->s.map, (Py_ssize_t)self->s.map_size,
                          self->s.readonly, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void stream_releasebuffer(StreamObject *self, Py_buffer *view) {
    self->exports--;
    stream_unmap_if_unused(self);
}

static PyBufferProcs stream_as_buffer = {
    (getbufferproc)stream_getbuffer,
    (releasebufferproc)stream_releasebuffer,
};

static PyMethodDef stream_methods[] = {
    {"close", (PyCFunction)stream_close, METH_NOARGS, "Close the stream (the mapping lives on while views exist)."},
    {"write", (PyCFunction)(void (*)(void))stream_write, METH_VARARGS | METH_KEYWORDS,
     "write(data, cnt2=-1, atime_ns=0): write one whole frame and post the semaphores."},
    {"read", (PyCFunction)(void (*)(void))stream_read, METH_VARARGS | METH_KEYWORDS,
     "read(out, slot=-1) -> cnt0: torn-free copy of a slot (newest if -1) into out."},
    {"read_new", (PyCFunction)stream_read_new, METH_VARARGS,
     "read_new(out, tail_slot, tail_cnt, counters, ids, times, partial=True) -> n (-1: lapped)."},
    {"wait_new", (PyCFunction)(void (*)(void))stream_wait_new, METH_VARARGS | METH_KEYWORDS,
     "wait_new(seen=None, timeout=None, spin=0.0, semnb=0) -> status: wait, without the GIL, "
     "for a frame whose counter differs from seen (busy-spinning `spin` seconds first, then "
     "on the semaphore, consuming stale posts); seen None: any post of the semaphore."},
    {"begin_write", (PyCFunction)stream_begin_write, METH_NOARGS, "Open a write of the next slot."},
    {"abort_write", (PyCFunction)stream_abort_write, METH_NOARGS, "Drop an open write."},
    {"finalize", (PyCFunction)(void (*)(void))stream_finalize, METH_VARARGS | METH_KEYWORDS,
     "finalize(cnt2=-1, atime_ns=0): publish the slot being written."},
    {"write_part", (PyCFunction)(void (*)(void))stream_write_part, METH_VARARGS | METH_KEYWORDS,
     "write_part(data, position, packet_id, packet_total, frame_number)."},
    {"combine", (PyCFunction)stream_combine, METH_O, "combine(streams): write the sum of their newest frames."},
    {"drain", (PyCFunction)stream_drain, METH_VARARGS, "drain(semnb): set a semaphore to 0."},
    {"sem_value", (PyCFunction)stream_sem_value, METH_VARARGS, "sem_value(semnb) -> int."},
    {"newest", (PyCFunction)stream_newest, METH_NOARGS, "Index of the newest slot."},
    {"counter", (PyCFunction)stream_counter, METH_NOARGS, "cnt0 of the newest slot."},
    {NULL},
};

static PyGetSetDef stream_getset[] = {
    {"closed", (getter)stream_get_closed, NULL, NULL, NULL},
    {"readonly", (getter)stream_get_readonly, NULL, NULL, NULL},
    {"path", (getter)stream_get_path, NULL, NULL, NULL},
    {"base", (getter)stream_get_base, NULL, NULL, NULL},
    {"depth", (getter)stream_get_depth, NULL, NULL, NULL},
    {"nbkw", (getter)stream_get_nbkw, NULL, NULL, NULL},
    {"frame_bytes", (getter)stream_get_frame_bytes, NULL, NULL, NULL},
    {"writing_slot", (getter)stream_get_writing, NULL, NULL, NULL},
    {NULL},
};

static PyMemberDef stream_members[] = {
    {"last_cnt0", T_ULONGLONG, offsetof(StreamObject, last_cnt0), READONLY, "cnt0 of the last read"},
    {"last_cnt2", T_ULONGLONG, offsetof(StreamObject, last_cnt2), READONLY, "cnt2 of the last read"},
    {"last_atime_ns", T_LONGLONG, offsetof(StreamObject, last_atime_ns), READONLY,
     "timestamp (ns since the epoch) of the last read"},
    {"last_slot", T_UINT, offsetof(StreamObject, last_slot), READONLY, "slot of the last read"},
    {"stuck_ns", T_LONGLONG, offsetof(StreamObject, stuck_ns), 0,
     "ns a slot's write flag may stay set, every counter still, before a read reports a "
     "writer that died mid-frame"},
    {NULL},
};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dao._shm.Stream",
    .tp_basicsize = sizeof(StreamObject),
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_as_buffer = &stream_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A mapped DAO stream (low level; use dao.shm).",
    .tp_methods = stream_methods,
    .tp_getset = stream_getset,
    .tp_members = stream_members,
};

static PyMethodDef module_methods[] = {
    {"create", (PyCFunction)(void (*)(void))mod_create, METH_VARARGS | METH_KEYWORDS,
     "create(path, shape, atype, depth=1, nbkw=0, mode=0o600) -> Stream"},
    {"open", (PyCFunction)mod_open, METH_VARARGS, "open(path) -> Stream"},
    {"semaphore_base", (PyCFunction)mod_semaphore_base, METH_VARARGS,
     "semaphore_base(path) -> the base name of the stream's semaphores"},
    {"unlink_semaphores", (PyCFunction)mod_unlink_semaphores, METH_VARARGS,
     "unlink_semaphores(base): remove every semaphore of that base name"},
    {"now_ns", (PyCFunction)mod_now_ns, METH_NOARGS, "CLOCK_REALTIME in ns since the epoch"},
    {"hold_pid", (PyCFunction)mod_hold_pid, METH_VARARGS,
     "hold_pid(fd): read-lock the byte at offset getpid() of fd (an OFD lock, dropped when the "
     "descriptor is closed or the process dies)"},
    {"pid_holders", (PyCFunction)mod_pid_holders, METH_VARARGS,
     "pid_holders(fd) -> [pid, ...]: the pids whose byte of the file is locked through another "
     "open file description (live holders, this process included)"},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "dao._shm", "C core of dao's shared-memory streams.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__shm(void) {
    if (PyType_Ready(&StreamType) < 0) return NULL;
    PyObject *errors = PyImport_ImportModule("dao.errors");
    if (!errors) return NULL;
    StreamError = PyObject_GetAttrString(errors, "StreamError");
    StreamFormatError = PyObject_GetAttrString(errors, "StreamFormatError");
    StreamNotFoundError = PyObject_GetAttrString(errors, "StreamNotFoundError");
    StreamTimeout = PyObject_GetAttrString(errors, "StreamTimeout");
    Py_DECREF(errors);
    if (!StreamError || !StreamFormatError || !StreamNotFoundError || !StreamTimeout) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    Py_INCREF(&StreamType);
    PyModule_AddObject(m, "Stream", (PyObject *)&StreamType);
    PyModule_AddIntConstant(m, "META_SIZE", DAO_META_SIZE);
    PyModule_AddIntConstant(m, "KW_SIZE", DAO_KW_SIZE);
    PyModule_AddIntConstant(m, "NSEM", DAO_NSEM);
    PyModule_AddIntConstant(m, "SUCCESS", DAO_SUCCESS);
    PyModule_AddIntConstant(m, "ERROR", DAO_ERROR);
    PyModule_AddIntConstant(m, "TIMEOUT", DAO_TIMEOUT);
    PyModule_AddIntConstant(m, "OVERWRITE", DAO_OVERWRITE);
    PyModule_AddIntConstant(m, "NOTREADY", DAO_NOTREADY);
    return m;
}
