/*
 * mdpipe.shm._seqlock - the ring's seqlock in C: the writer's commit and every read path.
 *
 * The ordering lives in readers/c/mdpipe_seqlock.h (C11 acquire/release), shared with the
 * header-only C reader; the offsets in the generated readers/c/mdpipe_layout.h. Each object
 * holds a buffer export of the segment's mmap, so the mapping cannot be closed under it:
 * call release() first (the Python wrappers do).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

#include "mdpipe_layout.h"
#include "mdpipe_seqlock.h"

#if defined(__x86_64__) || defined(__i386__)
#define MDP_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define MDP_PAUSE() __asm__ __volatile__("yield")
#else
#define MDP_PAUSE() ((void)0)
#endif

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t need, const char *what) {
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) return -1;
    if (view->len < need) {
        PyErr_Format(PyExc_ValueError, "%s is %zd bytes, needs %zd", what, view->len, need);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Writer                                                                                    */

typedef struct {
    PyObject_HEAD
    Py_buffer seg;      /* the segment, writable */
    Py_buffer stage;    /* the staging record, writable */
    int has_seg, has_stage;
    uint8_t *base;
    uint8_t *rec;       /* staging record bytes */
    uint64_t slots_off, latest_off, stride, mask, rsize, max_symbols;
    uint64_t sseq_off, commit_ts_off;
    uint64_t cursor;
    uint64_t *symbol_seq;
} Writer;

static void Writer_release_buffers(Writer *self) {
    if (self->has_seg) { PyBuffer_Release(&self->seg); self->has_seg = 0; }
    if (self->has_stage) { PyBuffer_Release(&self->stage); self->has_stage = 0; }
    self->base = NULL;
    self->rec = NULL;
}

static void Writer_dealloc(Writer *self) {
    Writer_release_buffers(self);
    PyMem_Free(self->symbol_seq);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Writer_init(Writer *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"segment", "staging", "slots_offset", "latest_offset", "stride",
                             "capacity", "record_size", "max_symbols", "symbol_seq_offset",
                             "commit_ts_offset", "cursor", NULL};
    PyObject *seg, *stage;
    unsigned long long slots_off, latest_off, stride, capacity, rsize, max_symbols, sseq_off,
        ts_off, cursor;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOKKKKKKKKK", kwlist, &seg, &stage, &slots_off,
                                     &latest_off, &stride, &capacity, &rsize, &max_symbols,
                                     &sseq_off, &ts_off, &cursor))
        return -1;
    if (capacity < 2 || (capacity & (capacity - 1)) || rsize < 16 || rsize > stride ||
        stride % MDP_CACHE_LINE || sseq_off + 8 > rsize || ts_off + 8 > rsize) {
        PyErr_SetString(PyExc_ValueError, "inconsistent ring geometry");
        return -1;
    }
    Writer_release_buffers(self);
    uint64_t need = slots_off + capacity * stride;
    if (latest_off + max_symbols * stride > need) need = latest_off + max_symbols * stride;
    if (get_buffer(seg, &self->seg, 1, (Py_ssize_t)need, "segment") < 0) return -1;
    self->has_seg = 1;
    if (get_buffer(stage, &self->stage, 1, (Py_ssize_t)rsize, "staging record") < 0) return -1;
    self->has_stage = 1;
    self->base = self->seg.buf;
    self->rec = self->stage.buf;
    self->slots_off = slots_off;
    self->latest_off = latest_off;
    self->stride = stride;
    self->mask = capacity - 1;
    self->rsize = rsize;
    self->max_symbols = max_symbols;
    self->sseq_off = sseq_off;
    self->commit_ts_off = ts_off;
    self->cursor = cursor;
    PyMem_Free(self->symbol_seq);
    self->symbol_seq = PyMem_Calloc(max_symbols ? max_symbols : 1, sizeof(uint64_t));
    if (!self->symbol_seq) { PyErr_NoMemory(); return -1; }
    return 0;
}

/* The commit protocol: slot of message n, then the symbol's latest slot, then the cursor. */
static PyObject *do_commit(Writer *self, uint64_t sid) {
    if (!self->base) { PyErr_SetString(PyExc_ValueError, "writer is closed"); return NULL; }
    if (sid >= self->max_symbols) {
        PyErr_Format(PyExc_IndexError, "symbol id %llu out of range", (unsigned long long)sid);
        return NULL;
    }
    uint8_t *rec = self->rec;
    uint64_t n = self->cursor;
    uint64_t sseq = ++self->symbol_seq[sid];
    memcpy(rec + self->sseq_off, &sseq, 8);
    int64_t now = now_ns();
    memcpy(rec + self->commit_ts_off, &now, 8);
    size_t size = self->rsize - 8;
    mdp_seqlock_write(self->base + self->slots_off + (n & self->mask) * self->stride, rec + 8,
                      size, 2 * n + 2);
    mdp_seqlock_write(self->base + self->latest_off + sid * self->stride, rec + 8, size,
                      2 * sseq);
    self->cursor = n + 1;
    mdp_store_release(self->base + MDP_H_WRITE_CURSOR, n + 1);
    atomic_store_explicit((_Atomic uint64_t *)(self->base + MDP_H_HEARTBEAT_NS), (uint64_t)now,
                          memory_order_relaxed);
    return PyLong_FromUnsignedLongLong(n);
}

/* Integer arguments: Python ints on the fast path, anything with __index__ (numpy ints) too;
 * a negative value for an unsigned field is an OverflowError, never a silent wrap. */
static int arg_u64(PyObject *o, uint64_t *out) {
    PyObject *i = PyLong_CheckExact(o) ? (Py_INCREF(o), o) : PyNumber_Index(o);
    if (!i) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(i);
    Py_DECREF(i);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

static int arg_i64(PyObject *o, int64_t *out) {
    PyObject *i = PyLong_CheckExact(o) ? (Py_INCREF(o), o) : PyNumber_Index(o);
    if (!i) return -1;
    long long v = PyLong_AsLongLong(i);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

static PyObject *Writer_commit(Writer *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t sid;
    if (nargs != 1) { PyErr_SetString(PyExc_TypeError, "commit(symbol_id)"); return NULL; }
    if (arg_u64(args[0], &sid) < 0) return NULL;
    return do_commit(self, sid);
}

static PyObject *Writer_commit_book(Writer *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t sid, flags, first, last, prev, bc, ac;
    int64_t ets, rts;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "commit_book(symbol_id, flags, exchange_ts_ns, recv_ts_ns, "
                                         "first_update_id, last_update_id, prev_update_id, "
                                         "bid_count, ask_count)");
        return NULL;
    }
    if (arg_u64(args[0], &sid) || arg_u64(args[1], &flags) || arg_i64(args[2], &ets) ||
        arg_i64(args[3], &rts) || arg_u64(args[4], &first) || arg_u64(args[5], &last) ||
        arg_u64(args[6], &prev) || arg_u64(args[7], &bc) || arg_u64(args[8], &ac))
        return NULL;
    if (!self->rec) { PyErr_SetString(PyExc_ValueError, "writer is closed"); return NULL; }
    uint8_t *r = self->rec;
    uint32_t sid32 = (uint32_t)sid, flags32 = (uint32_t)flags;
    uint16_t bc16 = (uint16_t)bc, ac16 = (uint16_t)ac;
    memcpy(r + MDP_BOOK_SYMBOL_ID, &sid32, 4);
    memcpy(r + MDP_BOOK_FLAGS, &flags32, 4);
    memcpy(r + MDP_BOOK_EXCHANGE_TS_NS, &ets, 8);
    memcpy(r + MDP_BOOK_RECV_TS_NS, &rts, 8);
    memcpy(r + MDP_BOOK_FIRST_UPDATE_ID, &first, 8);
    memcpy(r + MDP_BOOK_LAST_UPDATE_ID, &last, 8);
    memcpy(r + MDP_BOOK_PREV_UPDATE_ID, &prev, 8);
    memcpy(r + MDP_BOOK_BID_COUNT, &bc16, 2);
    memcpy(r + MDP_BOOK_ASK_COUNT, &ac16, 2);
    return do_commit(self, sid);
}

static PyObject *Writer_commit_trade(Writer *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t sid, flags, tid, first, last;
    int64_t ets, evts, rts, side;
    double price, qty;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "commit_trade(symbol_id, flags, exchange_ts_ns, "
                                         "event_ts_ns, recv_ts_ns, trade_id, first_trade_id, "
                                         "last_trade_id, price, qty, side)");
        return NULL;
    }
    if (arg_u64(args[0], &sid) || arg_u64(args[1], &flags) || arg_i64(args[2], &ets) ||
        arg_i64(args[3], &evts) || arg_i64(args[4], &rts) || arg_u64(args[5], &tid) ||
        arg_u64(args[6], &first) || arg_u64(args[7], &last))
        return NULL;
    price = PyFloat_AsDouble(args[8]);
    if (price == -1.0 && PyErr_Occurred()) return NULL;
    qty = PyFloat_AsDouble(args[9]);
    if (qty == -1.0 && PyErr_Occurred()) return NULL;
    if (arg_i64(args[10], &side)) return NULL;
    if (!self->rec) { PyErr_SetString(PyExc_ValueError, "writer is closed"); return NULL; }
    uint8_t *r = self->rec;
    uint32_t sid32 = (uint32_t)sid, flags32 = (uint32_t)flags;
    int8_t side8 = (int8_t)side;
    memcpy(r + MDP_TRADE_SYMBOL_ID, &sid32, 4);
    memcpy(r + MDP_TRADE_FLAGS, &flags32, 4);
    memcpy(r + MDP_TRADE_EXCHANGE_TS_NS, &ets, 8);
    memcpy(r + MDP_TRADE_EVENT_TS_NS, &evts, 8);
    memcpy(r + MDP_TRADE_RECV_TS_NS, &rts, 8);
    memcpy(r + MDP_TRADE_TRADE_ID, &tid, 8);
    memcpy(r + MDP_TRADE_FIRST_TRADE_ID, &first, 8);
    memcpy(r + MDP_TRADE_LAST_TRADE_ID, &last, 8);
    memcpy(r + MDP_TRADE_PRICE, &price, 8);
    memcpy(r + MDP_TRADE_QTY, &qty, 8);
    memcpy(r + MDP_TRADE_SIDE, &side8, 1);
    return do_commit(self, sid);
}

static PyObject *Writer_heartbeat(Writer *self, PyObject *unused) {
    if (!self->base) { PyErr_SetString(PyExc_ValueError, "writer is closed"); return NULL; }
    atomic_store_explicit((_Atomic uint64_t *)(self->base + MDP_H_HEARTBEAT_NS),
                          (uint64_t)now_ns(), memory_order_relaxed);
    Py_RETURN_NONE;
}

static PyObject *Writer_release(Writer *self, PyObject *unused) {
    Writer_release_buffers(self);
    Py_RETURN_NONE;
}

static PyObject *Writer_get_cursor(Writer *self, void *c) {
    return PyLong_FromUnsignedLongLong(self->cursor);
}

static PyMethodDef Writer_methods[] = {
    {"commit", (PyCFunction)(void (*)(void))Writer_commit, METH_FASTCALL,
     "Publish the staging record for symbol_id; returns its message number."},
    {"commit_book", (PyCFunction)(void (*)(void))Writer_commit_book, METH_FASTCALL,
     "Fill the book record's fields and publish it."},
    {"commit_trade", (PyCFunction)(void (*)(void))Writer_commit_trade, METH_FASTCALL,
     "Fill the trade record's fields and publish it."},
    {"heartbeat", (PyCFunction)Writer_heartbeat, METH_NOARGS, "Stamp the heartbeat word."},
    {"release", (PyCFunction)Writer_release, METH_NOARGS, "Drop the buffer exports."},
    {NULL},
};

static PyGetSetDef Writer_getset[] = {
    {"cursor", (getter)Writer_get_cursor, NULL, "messages committed so far", NULL},
    {NULL},
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mdpipe.shm._seqlock.Writer",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The single writer's commit path of one ring segment.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Writer_init,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_methods = Writer_methods,
    .tp_getset = Writer_getset,
};

/* ---------------------------------------------------------------------------------------- */
/* Stream cursor                                                                             */

typedef struct {
    PyObject_HEAD
    Py_buffer seg;
    Py_buffer out;
    int has_seg, has_out;
    const uint8_t *base;
    uint8_t *dst;
    uint64_t slots_off, stride, mask, rsize;
    uint64_t next;
} Cursor;

static void Cursor_release_buffers(Cursor *self) {
    if (self->has_seg) { PyBuffer_Release(&self->seg); self->has_seg = 0; }
    if (self->has_out) { PyBuffer_Release(&self->out); self->has_out = 0; }
    self->base = NULL;
    self->dst = NULL;
}

static void Cursor_dealloc(Cursor *self) {
    Cursor_release_buffers(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Cursor_init(Cursor *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"segment", "out", "slots_offset", "stride", "capacity",
                             "record_size", "next", NULL};
    PyObject *seg, *out;
    unsigned long long slots_off, stride, capacity, rsize, next;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOKKKKK", kwlist, &seg, &out, &slots_off, &stride,
                                     &capacity, &rsize, &next))
        return -1;
    if (capacity < 2 || (capacity & (capacity - 1)) || rsize < 8 || rsize > stride) {
        PyErr_SetString(PyExc_ValueError, "inconsistent ring geometry");
        return -1;
    }
    Cursor_release_buffers(self);
    if (get_buffer(seg, &self->seg, 0, (Py_ssize_t)(slots_off + capacity * stride), "segment") < 0)
        return -1;
    self->has_seg = 1;
    if (get_buffer(out, &self->out, 1, (Py_ssize_t)rsize, "output record") < 0) return -1;
    self->has_out = 1;
    self->base = self->seg.buf;
    self->dst = self->out.buf;
    self->slots_off = slots_off;
    self->stride = stride;
    self->mask = capacity - 1;
    self->rsize = rsize;
    self->next = next;
    return 0;
}

/* 1: message `next` copied to out and next advanced; 0: not written yet; 2: the slot holds a
 * later message (lapped) or was overwritten during the copy. */
static inline int cursor_poll(Cursor *self) {
    uint64_t n = self->next;
    const uint8_t *slot = self->base + self->slots_off + (n & self->mask) * self->stride;
    uint64_t want = 2 * n + 2;
    uint64_t s1 = mdp_load_acquire(slot);
    if (s1 < want) return 0;
    if (s1 > want) return 2;
    uint64_t got = mdp_seqlock_read(slot, self->dst, self->rsize);
    if (got != want) return 2;
    self->next = n + 1;
    return 1;
}

static PyObject *Cursor_poll(Cursor *self, PyObject *unused) {
    if (!self->base) { PyErr_SetString(PyExc_ValueError, "reader is closed"); return NULL; }
    return PyLong_FromLong(cursor_poll(self));
}

/* Spin up to `spins` times for the next message; the same results as poll(). */
static PyObject *Cursor_wait(Cursor *self, PyObject *arg) {
    if (!self->base) { PyErr_SetString(PyExc_ValueError, "reader is closed"); return NULL; }
    long spins = PyLong_AsLong(arg);
    if (spins == -1 && PyErr_Occurred()) return NULL;
    int r = cursor_poll(self);
    while (r == 0 && spins-- > 0) {
        MDP_PAUSE();
        r = cursor_poll(self);
    }
    return PyLong_FromLong(r);
}

/* read_many(out, max_n) -> (count, lapped): copy up to max_n messages, each seqlocked, into
 * the contiguous array out (record_size bytes apart); stop early at the first message not
 * written yet (lapped False) or already overwritten (lapped True). */
static PyObject *Cursor_read_many(Cursor *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!self->base) { PyErr_SetString(PyExc_ValueError, "reader is closed"); return NULL; }
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "read_many(out, max_n)"); return NULL; }
    Py_ssize_t max_n = PyLong_AsSsize_t(args[1]);
    if (max_n < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "max_n must be >= 0");
        return NULL;
    }
    Py_buffer out;
    if (get_buffer(args[0], &out, 1, (Py_ssize_t)(max_n * self->rsize), "output array") < 0)
        return NULL;
    uint8_t *keep = self->dst;
    Py_ssize_t count = 0;
    int r = 1;
    while (count < max_n) {
        self->dst = (uint8_t *)out.buf + count * self->rsize;
        r = cursor_poll(self);
        if (r != 1) break;
        count++;
    }
    self->dst = keep;
    PyBuffer_Release(&out);
    return Py_BuildValue("(nO)", count, r == 2 ? Py_True : Py_False);
}

static PyObject *Cursor_release(Cursor *self, PyObject *unused) {
    Cursor_release_buffers(self);
    Py_RETURN_NONE;
}

static PyObject *Cursor_get_next(Cursor *self, void *c) {
    return PyLong_FromUnsignedLongLong(self->next);
}

static int Cursor_set_next(Cursor *self, PyObject *v, void *c) {
    if (v == NULL) { PyErr_SetString(PyExc_TypeError, "cannot delete next"); return -1; }
    unsigned long long n = PyLong_AsUnsignedLongLong(v);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    self->next = n;
    return 0;
}

static PyMethodDef Cursor_methods[] = {
    {"poll", (PyCFunction)Cursor_poll, METH_NOARGS,
     "Copy the next message: 1 copied, 0 none yet, 2 lapped or overwritten."},
    {"wait", (PyCFunction)Cursor_wait, METH_O, "poll(), spinning up to n times while empty."},
    {"read_many", (PyCFunction)(void (*)(void))Cursor_read_many, METH_FASTCALL,
     "Copy up to max_n messages into an array: (count, lapped)."},
    {"release", (PyCFunction)Cursor_release, METH_NOARGS, "Drop the buffer exports."},
    {NULL},
};

static PyGetSetDef Cursor_getset[] = {
    {"next", (getter)Cursor_get_next, (setter)Cursor_set_next, "number of the next message",
     NULL},
    {NULL},
};

static PyTypeObject CursorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mdpipe.shm._seqlock.Cursor",
    .tp_basicsize = sizeof(Cursor),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A reader's private position in one ring, with the seqlocked copy.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Cursor_init,
    .tp_dealloc = (destructor)Cursor_dealloc,
    .tp_methods = Cursor_methods,
    .tp_getset = Cursor_getset,
};

/* ---------------------------------------------------------------------------------------- */
/* Records: the messages of one or more cursors as a Python iterator, spinning in C         */

/* `for rec in reader` without a Python frame per record. parts is a sequence of
 * (cursor, record) and bases a u32 buffer of as many symbol-id offsets, read at every record
 * so the reader may change them (a multi-ring reader renumbers symbols when a ring gains
 * one). __next__ polls the cursors in turn (starting after the one that gave the last
 * record, so no ring starves another), up to `spins` rounds, and returns the record view of
 * the first that copied a message, with its base added to symbol_id (bytes 8..12 of every
 * record kind). Otherwise it calls on_idle(result, index): result 0 when every cursor
 * stayed empty (index -1), 2 when cursor `index` was lapped. on_idle returns None to go on,
 * new parts (a writer replaced its segment), or raises; StopIteration ends the iteration.
 * A released cursor (the reader was closed) ends it too. */
typedef struct {
    PyObject_HEAD
    PyObject *parts; /* tuple of (cursor, record): keeps the objects alive */
    Cursor **cursors;
    PyObject **records;
    Py_buffer bases; /* u32[n], owned by the reader */
    int has_bases;
    Py_ssize_t n, rr;
    PyObject *on_idle;
    long spins;
} Records;

static void Records_free_arrays(Records *self) {
    PyMem_Free(self->cursors);
    PyMem_Free(self->records);
    self->cursors = NULL;
    self->records = NULL;
    self->n = self->rr = 0;
}

static int Records_traverse(Records *self, visitproc visit, void *arg) {
    Py_VISIT(self->parts);
    if (self->has_bases) Py_VISIT(self->bases.obj);
    Py_VISIT(self->on_idle);
    return 0;
}

static int Records_clear(Records *self) {
    Records_free_arrays(self);
    if (self->has_bases) { PyBuffer_Release(&self->bases); self->has_bases = 0; }
    Py_CLEAR(self->parts);
    Py_CLEAR(self->on_idle);
    return 0;
}

static void Records_dealloc(Records *self) {
    PyObject_GC_UnTrack(self);
    Records_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Records_bind(Records *self, PyObject *parts) {
    PyObject *tuple = PySequence_Tuple(parts);
    if (!tuple) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    if (n < 1 || n * 4 > self->bases.len) {
        Py_DECREF(tuple);
        PyErr_SetString(PyExc_ValueError, "Records needs 1 to len(bases) (cursor, record) parts");
        return -1;
    }
    Cursor **cursors = PyMem_New(Cursor *, n);
    PyObject **records = PyMem_New(PyObject *, n);
    if (!cursors || !records) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyTuple_GET_ITEM(tuple, i);
        if (!PyTuple_Check(part) || PyTuple_GET_SIZE(part) != 2 ||
            !PyObject_TypeCheck(PyTuple_GET_ITEM(part, 0), &CursorType)) {
            PyErr_SetString(PyExc_TypeError, "each part must be (Cursor, record)");
            goto fail;
        }
        cursors[i] = (Cursor *)PyTuple_GET_ITEM(part, 0);
        records[i] = PyTuple_GET_ITEM(part, 1);
    }
    Records_free_arrays(self);
    Py_XSETREF(self->parts, tuple);
    self->cursors = cursors;
    self->records = records;
    self->n = n;
    return 0;
fail:
    PyMem_Free(cursors);
    PyMem_Free(records);
    Py_DECREF(tuple);
    return -1;
}

static int Records_init(Records *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"parts", "bases", "spins", "on_idle", NULL};
    PyObject *parts, *bases, *on_idle;
    long spins;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOlO", kwlist, &parts, &bases, &spins, &on_idle))
        return -1;
    if (spins < 0 || !PyCallable_Check(on_idle)) {
        PyErr_SetString(PyExc_ValueError, "spins must be >= 0 and on_idle callable");
        return -1;
    }
    if (self->has_bases) { PyBuffer_Release(&self->bases); self->has_bases = 0; }
    if (PyObject_GetBuffer(bases, &self->bases, PyBUF_SIMPLE) < 0) return -1;
    self->has_bases = 1;
    if (Records_bind(self, parts) < 0) return -1;
    Py_INCREF(on_idle);
    Py_XSETREF(self->on_idle, on_idle);
    self->spins = spins;
    return 0;
}

static PyObject *Records_next(Records *self) {
    for (;;) {
        Py_ssize_t n = self->n, lapped = -1;
        if (n == 0) return NULL;
        for (long round = 0;; round++) {
            for (Py_ssize_t k = 0, i = self->rr; k < n; k++, i = i + 1 == n ? 0 : i + 1) {
                Cursor *c = self->cursors[i];
                if (!c->base) return NULL; /* released: the reader was closed */
                int r = cursor_poll(c);
                if (r == 1) {
                    uint32_t base, sid;
                    memcpy(&base, (const uint8_t *)self->bases.buf + 4 * i, 4);
                    if (base) {
                        memcpy(&sid, c->dst + 8, 4);
                        sid += base;
                        memcpy(c->dst + 8, &sid, 4);
                    }
                    self->rr = i + 1 == n ? 0 : i + 1;
                    return Py_NewRef(self->records[i]);
                }
                if (r == 2) {
                    lapped = i;
                    break;
                }
            }
            if (lapped >= 0 || round >= self->spins) break;
            MDP_PAUSE();
        }
        PyObject *res = PyObject_CallFunction(self->on_idle, "in", lapped >= 0 ? 2 : 0, lapped);
        if (!res) return NULL;
        int bad = res != Py_None && Records_bind(self, res) < 0;
        Py_DECREF(res);
        if (bad) return NULL;
    }
}

static PyTypeObject RecordsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mdpipe.shm._seqlock.Records",
    .tp_basicsize = sizeof(Records),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The records of one or more cursors as an iterator that spins in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Records_init,
    .tp_dealloc = (destructor)Records_dealloc,
    .tp_traverse = (traverseproc)Records_traverse,
    .tp_clear = (inquiry)Records_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)Records_next,
};

/* ---------------------------------------------------------------------------------------- */
/* Conflated reads of the latest table                                                       */

#define LATEST_TRIES 100000

typedef struct {
    PyObject_HEAD
    Py_buffer seg;
    int has_seg;
    const uint8_t *base;
    uint64_t size;
} Latest;

static void Latest_release_buffers(Latest *self) {
    if (self->has_seg) { PyBuffer_Release(&self->seg); self->has_seg = 0; }
    self->base = NULL;
}

static void Latest_dealloc(Latest *self) {
    Latest_release_buffers(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Latest_init(Latest *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"segment", NULL};
    PyObject *seg;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O", kwlist, &seg)) return -1;
    Latest_release_buffers(self);
    if (get_buffer(seg, &self->seg, 0, MDP_PAGE, "segment") < 0) return -1;
    self->has_seg = 1;
    self->base = self->seg.buf;
    self->size = (uint64_t)self->seg.len;
    return 0;
}

/* read(offset, out, ranges) -> seq: a consistent copy of the slot's byte ranges (a tuple of
 * 1..4 (offset, size) pairs, copied one after another) into out; 0 when the slot is empty;
 * -1 when it stayed torn over many tries (the caller checks whether the writer died). */
static PyObject *Latest_read(Latest *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read(offset, out, ranges)");
        return NULL;
    }
    if (!self->base) { PyErr_SetString(PyExc_ValueError, "reader is closed"); return NULL; }
    unsigned long long off = PyLong_AsUnsignedLongLong(args[0]);
    if (off == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    PyObject *ranges = args[2];
    if (!PyTuple_Check(ranges) || PyTuple_GET_SIZE(ranges) < 1 || PyTuple_GET_SIZE(ranges) > 4) {
        PyErr_SetString(PyExc_TypeError, "ranges must be a tuple of 1..4 (offset, size) pairs");
        return NULL;
    }
    size_t r[4][2];
    size_t total = 0, extent = 8;
    int n = (int)PyTuple_GET_SIZE(ranges);
    for (int i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(ranges, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "each range is (offset, size)");
            return NULL;
        }
        r[i][0] = PyLong_AsSize_t(PyTuple_GET_ITEM(pair, 0));
        r[i][1] = PyLong_AsSize_t(PyTuple_GET_ITEM(pair, 1));
        if (PyErr_Occurred()) return NULL;
        total += r[i][1];
        if (r[i][0] + r[i][1] > extent) extent = r[i][0] + r[i][1];
    }
    if (off + extent > self->size) {
        PyErr_SetString(PyExc_IndexError, "latest slot out of the segment");
        return NULL;
    }
    Py_buffer out;
    if (get_buffer(args[1], &out, 1, (Py_ssize_t)total, "output") < 0) return NULL;
    const uint8_t *slot = self->base + off;
    long long result = -1;
    for (int i = 0; i < LATEST_TRIES; i++) {
        uint64_t s = mdp_load_acquire(slot);
        if (s == 0) { result = 0; break; }
        uint64_t got = mdp_seqlock_read_ranges(slot, out.buf, (const size_t(*)[2])r, n);
        if (got != MDP_SEQ_TORN) { result = (long long)got; break; }
        MDP_PAUSE();
    }
    PyBuffer_Release(&out);
    return PyLong_FromLongLong(result);
}

/* top(offset, asks_offset) -> (bid, bid_qty, ask, ask_qty) | None | False: the best levels of
 * a synced book's latest slot; None when the book is not synced, a side is empty or the slot
 * is empty; False when it stayed torn (see read). */
static PyObject *Latest_top(Latest *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "top(offset, asks_offset)");
        return NULL;
    }
    if (!self->base) { PyErr_SetString(PyExc_ValueError, "reader is closed"); return NULL; }
    unsigned long long off = PyLong_AsUnsignedLongLong(args[0]);
    unsigned long long asks = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (off + asks + 16 > self->size) {
        PyErr_SetString(PyExc_IndexError, "latest slot out of the segment");
        return NULL;
    }
    const uint8_t *slot = self->base + off;
    uint32_t flags, counts;
    double bid[2], ask[2];
    for (int i = 0; i < LATEST_TRIES; i++) {
        uint64_t s1 = mdp_load_acquire(slot);
        if (s1 == 0) Py_RETURN_NONE;
        if (s1 & 1) { MDP_PAUSE(); continue; }
        memcpy(&flags, slot + MDP_BOOK_FLAGS, 4);
        memcpy(&counts, slot + MDP_BOOK_BID_COUNT, 4);
        memcpy(bid, slot + MDP_BOOK_LEVELS_OFFSET, 16);
        memcpy(ask, slot + asks, 16);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit((_Atomic uint64_t *)slot, memory_order_relaxed) == s1) {
            if (!(flags & MDP_FLAG_SYNCED) || !(counts & 0xFFFF) || !(counts >> 16)) Py_RETURN_NONE;
            return Py_BuildValue("(dddd)", bid[0], bid[1], ask[0], ask[1]);
        }
        MDP_PAUSE();
    }
    Py_RETURN_FALSE;
}

static PyObject *Latest_release(Latest *self, PyObject *unused) {
    Latest_release_buffers(self);
    Py_RETURN_NONE;
}

static PyMethodDef Latest_methods[] = {
    {"read", (PyCFunction)(void (*)(void))Latest_read, METH_FASTCALL,
     "Consistent copy of byte ranges of a latest-table slot; returns its seq."},
    {"top", (PyCFunction)(void (*)(void))Latest_top, METH_FASTCALL,
     "Best bid and ask of a synced book's latest slot."},
    {"release", (PyCFunction)Latest_release, METH_NOARGS, "Drop the buffer export."},
    {NULL},
};

static PyTypeObject LatestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mdpipe.shm._seqlock.Latest",
    .tp_basicsize = sizeof(Latest),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Seqlocked reads of a segment's latest table.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Latest_init,
    .tp_dealloc = (destructor)Latest_dealloc,
    .tp_methods = Latest_methods,
};

static PyMethodDef module_methods[] = {
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mdpipe.shm._seqlock",
    .m_doc = "The ring's seqlock in C (C11 acquire/release): commit, stream and latest reads.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__seqlock(void) {
    if (PyType_Ready(&WriterType) < 0 || PyType_Ready(&CursorType) < 0 ||
        PyType_Ready(&RecordsType) < 0 || PyType_Ready(&LatestType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&WriterType);
    Py_INCREF(&CursorType);
    Py_INCREF(&RecordsType);
    Py_INCREF(&LatestType);
    if (PyModule_AddObject(m, "Writer", (PyObject *)&WriterType) < 0 ||
        PyModule_AddObject(m, "Cursor", (PyObject *)&CursorType) < 0 ||
        PyModule_AddObject(m, "Records", (PyObject *)&RecordsType) < 0 ||
        PyModule_AddObject(m, "Latest", (PyObject *)&LatestType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
