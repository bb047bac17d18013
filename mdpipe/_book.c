/*
 * mdpipe._book - the L2 order book in C: the same API and results as mdpipe/book.py.
 *
 * Each side keeps its (key, qty) levels sorted ascending by key in blocks of at most 128, the
 * best level last: bids keyed by price, asks by -price (negation is exact, so prices come
 * back unchanged). A level's block is found by galloping down the blocks' last keys from the
 * best end, then a binary search in the block: an insert or delete moves at most one block's
 * levels however deep the book (a full block splits in two, an empty one is dropped).
 * Every value is converted before a diff touches the book, so a bad one changes nothing.
 * A level may also hold its text as received (a str, set_texts), which dies with the level:
 * OKX's checksum is computed from it (text_checksum).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double key;     /* price for bids, -price for asks */
    double qty;
    PyObject *text; /* the level's text as received (set_texts), or NULL */
} Level;

/* A side is a list of blocks, each a short sorted array: a level is found among the blocks'
   last keys, then inside its block, and an insert or delete moves at most one block's
   levels (a full block splits in two), however deep the book. */
#define BLOCK 128

typedef struct {
    int n;
    Level lv[BLOCK];
} Block;

typedef struct {
    Block **blk; /* ascending keys across blocks: the best level is the last block's last */
    Py_ssize_t nblk, cap;
    Py_ssize_t n; /* levels in all blocks */
    double sign;  /* +1 bids, -1 asks: price = sign * key */
} Side;

typedef struct {
    PyObject_HEAD
    Side bids, asks;
} Book;

static inline double last_key(const Side *s, Py_ssize_t b) {
    const Block *B = s->blk[b];
    return B->lv[B->n - 1].key;
}

/* A new empty block at position b (blocks from b on move up one). */
static Block *insert_block(Side *s, Py_ssize_t b) {
    if (s->nblk == s->cap) {
        Py_ssize_t cap = s->cap ? 2 * s->cap : 16;
        Block **blk = PyMem_Realloc(s->blk, (size_t)cap * sizeof(Block *));
        if (blk == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        s->blk = blk;
        s->cap = cap;
    }
    Block *B = PyMem_Malloc(sizeof(Block));
    if (B == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    B->n = 0;
    memmove(s->blk + b + 1, s->blk + b, (size_t)(s->nblk - b) * sizeof(Block *));
    s->blk[b] = B;
    s->nblk++;
    return B;
}

static void remove_block(Side *s, Py_ssize_t b) {
    PyMem_Free(s->blk[b]);
    memmove(s->blk + b, s->blk + b + 1, (size_t)(s->nblk - b - 1) * sizeof(Block *));
    s->nblk--;
}

/* The block where key k is or belongs: the first whose last key is >= k, else the last
   block. Gallops down from the best end. Needs nblk > 0. */
static inline Py_ssize_t find_block(const Side *s, double k) {
    Py_ssize_t n = s->nblk, hi = n, lo, b = 1;
    while (b <= n && last_key(s, n - b) >= k) {
        hi = n - b;
        b <<= 1;
    }
    lo = b <= n ? n - b + 1 : 0;
    while (lo < hi) {
        Py_ssize_t mid = lo + ((hi - lo) >> 1);
        if (last_key(s, mid) < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == n ? n - 1 : lo;
}

/* The first index in a block whose key is >= k (n when none). */
static inline int find_in_block(const Block *B, double k) {
    int lo = 0, hi = B->n;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (B->lv[mid].key < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The level with key k, or NULL. */
static inline Level *side_get(const Side *s, double k) {
    if (s->nblk == 0) return NULL;
    Block *B = s->blk[find_block(s, k)];
    int i = find_in_block(B, k);
    return i < B->n && B->lv[i].key == k ? &B->lv[i] : NULL;
}

/* Set one level: qty 0 removes it (absent levels are fine). */
static inline int side_set(Side *s, double k, double q) {
    Py_ssize_t b;
    Block *B;
    int i;
    if (s->nblk == 0) {
        if (q == 0.0) return 0;
        if ((B = insert_block(s, 0)) == NULL) return -1;
        b = 0;
        i = 0;
    } else {
        b = find_block(s, k);
        B = s->blk[b];
        i = find_in_block(B, k);
        if (i < B->n && B->lv[i].key == k) {
            if (q != 0.0) {
                B->lv[i].qty = q;
            } else {
                Py_CLEAR(B->lv[i].text);
                memmove(B->lv + i, B->lv + i + 1, (size_t)(B->n - i - 1) * sizeof(Level));
                s->n--;
                if (--B->n == 0) remove_block(s, b);
            }
            return 0;
        }
        if (q == 0.0) return 0;
        if (B->n == BLOCK) { /* split: the upper half moves to a new block after this one */
            Block *upper = insert_block(s, b + 1);
            if (upper == NULL) return -1;
            B = s->blk[b];
            upper->n = BLOCK / 2;
            B->n = BLOCK / 2;
            memcpy(upper->lv, B->lv + BLOCK / 2, (BLOCK / 2) * sizeof(Level));
            if (i > BLOCK / 2) {
                B = upper;
                i -= BLOCK / 2;
            }
        }
    }
    memmove(B->lv + i + 1, B->lv + i, (size_t)(B->n - i) * sizeof(Level));
    B->lv[i].key = k;
    B->lv[i].qty = q;
    B->lv[i].text = NULL;
    B->n++;
    s->n++;
    return 0;
}

/* Remove every level (and its text). */
static void side_clear(Side *s) {
    for (Py_ssize_t b = 0; b < s->nblk; b++) {
        Block *B = s->blk[b];
        for (int i = 0; i < B->n; i++) Py_CLEAR(B->lv[i].text);
        PyMem_Free(B);
    }
    s->nblk = 0;
    s->n = 0;
}

/* Walks a side's levels best first. */
typedef struct {
    const Side *s;
    Py_ssize_t b;
    int i;
} Best;

static inline void best_start(Best *it, const Side *s) {
    it->s = s;
    it->b = s->nblk - 1;
    it->i = it->b >= 0 ? s->blk[it->b]->n - 1 : -1;
}

static inline const Level *best_next(Best *it) {
    while (it->i < 0) {
        if (--it->b < 0) return NULL;
        it->i = it->s->blk[it->b]->n - 1;
    }
    return &it->s->blk[it->b]->lv[it->i--];
}

/* Prices and quantities as (key, qty) pairs in `out` (n of them), every value checked. */
static int read_pairs(PyObject *prices, PyObject *qtys, double sign, Level **out, Py_ssize_t *n,
                      Level *stack, Py_ssize_t stack_n, int skip_zero) {
    PyObject *fp = PySequence_Fast(prices, "prices must be a sequence");
    if (fp == NULL) return -1;
    PyObject *fq = PySequence_Fast(qtys, "quantities must be a sequence");
    if (fq == NULL) {
        Py_DECREF(fp);
        return -1;
    }
    Py_ssize_t np_ = PySequence_Fast_GET_SIZE(fp), nq = PySequence_Fast_GET_SIZE(fq);
    Level *buf = NULL;
    if (np_ != nq) {
        PyErr_Format(PyExc_ValueError, "%zd prices but %zd quantities", np_, nq);
        goto fail;
    }
    buf = stack != NULL && np_ <= stack_n ? stack
                                          : PyMem_Malloc((size_t)(np_ ? np_ : 1) * sizeof(Level));
    if (buf == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    PyObject **ip = PySequence_Fast_ITEMS(fp), **iq = PySequence_Fast_ITEMS(fq);
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < np_; i++) {
        PyObject *a = ip[i], *b = iq[i];
        double p = PyFloat_CheckExact(a) ? PyFloat_AS_DOUBLE(a) : PyFloat_AsDouble(a);
        if (p == -1.0 && PyErr_Occurred()) goto fail;
        double q = PyFloat_CheckExact(b) ? PyFloat_AS_DOUBLE(b) : PyFloat_AsDouble(b);
        if (q == -1.0 && PyErr_Occurred()) goto fail;
        if (p != p) {
            PyErr_SetString(PyExc_ValueError, "a price is NaN");
            goto fail;
        }
        if (skip_zero && q == 0.0) continue;
        buf[m].key = sign * p;
        buf[m].qty = q;
        buf[m].text = NULL;
        m++;
    }
    Py_DECREF(fp);
    Py_DECREF(fq);
    *out = buf;
    *n = m;
    return 0;
fail:
    if (buf != NULL && buf != stack) PyMem_Free(buf);
    Py_DECREF(fp);
    Py_DECREF(fq);
    return -1;
}

#define STACK_LEVELS 256

static int side_apply(Side *s, PyObject *prices, PyObject *qtys) {
    Level stack[STACK_LEVELS], *pairs;
    Py_ssize_t n;
    if (read_pairs(prices, qtys, s->sign, &pairs, &n, stack, STACK_LEVELS, 0) < 0) return -1;
    int rc = 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) rc = side_set(s, pairs[i].key, pairs[i].qty);
    if (pairs != stack) PyMem_Free(pairs);
    return rc;
}

typedef struct {
    double key, qty;
    Py_ssize_t at;
} Indexed;

static int by_key_then_position(const void *a, const void *b) {
    const Indexed *x = a, *y = b;
    if (x->key < y->key) return -1;
    if (x->key > y->key) return 1;
    return (x->at > y->at) - (x->at < y->at);
}

/* Replace a side with a snapshot's levels: zero quantities skipped, a repeated price keeps
   its last non-zero quantity (as a dict built from the pairs would). */
static int side_load(Side *s, PyObject *prices, PyObject *qtys) {
    Level *pairs;
    Py_ssize_t n;
    if (read_pairs(prices, qtys, s->sign, &pairs, &n, NULL, 0, 1) < 0) return -1;
    Indexed *idx = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Indexed));
    if (idx == NULL) {
        PyMem_Free(pairs);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        idx[i].key = pairs[i].key;
        idx[i].qty = pairs[i].qty;
        idx[i].at = i;
    }
    PyMem_Free(pairs);
    qsort(idx, (size_t)n, sizeof(Indexed), by_key_then_position);
    side_clear(s);
    /* Unique keys (a repeated one keeps its last quantity), into half-full blocks. */
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (m && idx[m - 1].key == idx[i].key)
            idx[m - 1].qty = idx[i].qty;
        else
            idx[m++] = idx[i];
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        Block *B = s->nblk ? s->blk[s->nblk - 1] : NULL;
        if (B == NULL || B->n == BLOCK / 2) {
            if ((B = insert_block(s, s->nblk)) == NULL) {
                PyMem_Free(idx);
                return -1;
            }
        }
        B->lv[B->n].key = idx[i].key;
        B->lv[B->n].qty = idx[i].qty;
        B->lv[B->n].text = NULL;
        B->n++;
        s->n++;
    }
    PyMem_Free(idx);
    return 0;
}

/* Fill `out` (a writable C-contiguous little-endian float64 array of shape (depth, 2)) with
   the side's best levels, best first, zero the rest; -1 with TypeError otherwise. */
static Py_ssize_t side_write_top(const Side *s, PyObject *out) {
    Py_buffer v;
    if (PyObject_GetBuffer(out, &v, PyBUF_RECORDS) < 0) return -1;
    const char *f = v.format ? v.format : "B";
    int float64 = v.itemsize == 8 && (strcmp(f, "d") == 0 || strcmp(f, "<d") == 0 ||
                                      strcmp(f, "=d") == 0 || strcmp(f, "@d") == 0);
#if PY_BIG_ENDIAN
    float64 = float64 && strcmp(f, "<d") == 0;
#endif
    if (!float64) {
        PyBuffer_Release(&v);
        PyObject *dtype = PyObject_GetAttrString(out, "dtype");
        if (dtype == NULL) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "write_top needs little-endian float64 rows, got %s", f);
        } else {
            PyErr_Format(PyExc_TypeError, "write_top needs little-endian float64 rows, got %S",
                         dtype);
            Py_DECREF(dtype);
        }
        return -1;
    }
    if (!PyBuffer_IsContiguous(&v, 'C')) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_TypeError, "write_top needs C-contiguous rows (a strided view?)");
        return -1;
    }
    if (v.ndim != 2 || v.shape[1] != 2) {
        PyBuffer_Release(&v);
        PyErr_SetString(PyExc_TypeError, "write_top needs rows of shape (depth, 2)");
        return -1;
    }
    Py_ssize_t depth = v.shape[0], n = s->n < depth ? s->n : depth;
    double *row = v.buf, sign = s->sign;
    Best it;
    best_start(&it, s);
    for (Py_ssize_t i = 0; i < n; i++) {
        const Level *lv = best_next(&it);
        row[2 * i] = sign * lv->key;
        row[2 * i + 1] = lv->qty;
    }
    if (n < depth) memset(row + 2 * n, 0, (size_t)(depth - n) * 2 * sizeof(double));
    PyBuffer_Release(&v);
    return n;
}

static PyObject *side_prices(const Side *s, Py_ssize_t depth) {
    Py_ssize_t n = s->n < depth ? s->n : depth;
    if (n < 0) n = 0;
    PyObject *list = PyList_New(n);
    if (list == NULL) return NULL;
    Best it;
    best_start(&it, s);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyFloat_FromDouble(s->sign * best_next(&it)->key);
        if (p == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, p);
    }
    return list;
}

static PyObject *side_levels(const Side *s) {
    PyObject *list = PyList_New(s->n);
    if (list == NULL) return NULL;
    Best it;
    best_start(&it, s);
    for (Py_ssize_t i = 0; i < s->n; i++) {
        const Level *lv = best_next(&it);
        PyObject *t = Py_BuildValue("(dd)", s->sign * lv->key, lv->qty);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}

static PyObject *side_best(const Side *s) {
    if (s->n == 0) Py_RETURN_NONE;
    const Block *B = s->blk[s->nblk - 1];
    const Level *best = &B->lv[B->n - 1];
    return Py_BuildValue("(dd)", s->sign * best->key, best->qty);
}

/* ---------------------------------------------------------------------------------------- */

static PyObject *Book_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Book *self = (Book *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->bids.sign = 1.0;
    self->asks.sign = -1.0;
    return (PyObject *)self;
}

static int Book_init(Book *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"window", "min_depth", NULL};
    Py_ssize_t window = 128, min_depth = 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nn", kwlist, &window, &min_depth)) return -1;
    if (min_depth < 1 || window < min_depth) {
        PyErr_Format(PyExc_ValueError, "need 1 <= min_depth <= window, got min_depth=%zd window=%zd",
                     min_depth, window);
        return -1;
    }
    side_clear(&self->bids);
    side_clear(&self->asks);
    return 0;
}

static void Book_dealloc(Book *self) {
    side_clear(&self->bids);
    side_clear(&self->asks);
    PyMem_Free(self->bids.blk);
    PyMem_Free(self->asks.blk);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Book_clear(Book *self, PyObject *Py_UNUSED(ignored)) {
    side_clear(&self->bids);
    side_clear(&self->asks);
    Py_RETURN_NONE;
}

/* Give the levels at `prices` their texts (absent prices are skipped: removed levels). */
static int side_set_texts(Side *s, PyObject *prices, PyObject *texts) {
    PyObject *fp = PySequence_Fast(prices, "prices must be a sequence");
    if (fp == NULL) return -1;
    PyObject *ft = PySequence_Fast(texts, "texts must be a sequence");
    if (ft == NULL) {
        Py_DECREF(fp);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fp), rc = 0;
    if (n != PySequence_Fast_GET_SIZE(ft)) {
        PyErr_Format(PyExc_ValueError, "%zd prices but %zd texts", n, PySequence_Fast_GET_SIZE(ft));
        rc = -1;
    }
    PyObject **ip = PySequence_Fast_ITEMS(fp), **it = PySequence_Fast_ITEMS(ft);
    for (Py_ssize_t j = 0; j < n && rc == 0; j++) {
        PyObject *a = ip[j], *text = it[j];
        double p = PyFloat_CheckExact(a) ? PyFloat_AS_DOUBLE(a) : PyFloat_AsDouble(a);
        if (p == -1.0 && PyErr_Occurred()) {
            rc = -1;
            break;
        }
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "a level text must be str, not %.100s",
                         Py_TYPE(text)->tp_name);
            rc = -1;
            break;
        }
        Level *lv = side_get(s, s->sign * p);
        if (lv != NULL) {
            Py_INCREF(text);
            Py_XSETREF(lv->text, text);
        }
    }
    Py_DECREF(fp);
    Py_DECREF(ft);
    return (int)rc;
}

static PyObject *Book_set_texts(Book *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "set_texts takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    if (side_set_texts(&self->bids, args[0], args[1]) < 0 ||
        side_set_texts(&self->asks, args[2], args[3]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Book_apply_snapshot(Book *self, PyObject *args) {
    PyObject *bp, *bq, *ap, *aq;
    if (!PyArg_UnpackTuple(args, "apply_snapshot", 4, 4, &bp, &bq, &ap, &aq)) return NULL;
    if (side_load(&self->bids, bp, bq) < 0 || side_load(&self->asks, ap, aq) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Book_apply(Book *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "apply takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    /* Like `if bid_prices:` in book.py: an empty side is not read at all. */
    for (int k = 0; k < 2; k++) {
        PyObject *prices = args[2 * k];
        int nonempty = PyList_CheckExact(prices) ? PyList_GET_SIZE(prices) > 0 : PyObject_IsTrue(prices);
        if (nonempty < 0) return NULL;
        if (nonempty && side_apply(k ? &self->asks : &self->bids, prices, args[2 * k + 1]) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Book_write_top(Book *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "write_top takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t nb = side_write_top(&self->bids, args[0]);
    if (nb < 0) return NULL;
    Py_ssize_t na = side_write_top(&self->asks, args[1]);
    if (na < 0) return NULL;
    return Py_BuildValue("(nn)", nb, na);
}

static PyObject *Book_best_prices(Book *self, PyObject *arg) {
    Py_ssize_t depth = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (depth == -1 && PyErr_Occurred()) return NULL;
    PyObject *b = side_prices(&self->bids, depth);
    if (b == NULL) return NULL;
    PyObject *a = side_prices(&self->asks, depth);
    if (a == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    return Py_BuildValue("(NN)", b, a);
}

static PyObject *Book_best_bid(Book *self, PyObject *Py_UNUSED(ignored)) {
    return side_best(&self->bids);
}

static PyObject *Book_best_ask(Book *self, PyObject *Py_UNUSED(ignored)) {
    return side_best(&self->asks);
}

static PyObject *Book_is_crossed(Book *self, PyObject *Py_UNUSED(ignored)) {
    const Side *b = &self->bids, *a = &self->asks;
    return PyBool_FromLong(b->n && a->n && last_key(b, b->nblk - 1) >= -last_key(a, a->nblk - 1));
}

static PyObject *Book_bids(Book *self, PyObject *Py_UNUSED(ignored)) {
    return side_levels(&self->bids);
}

static PyObject *Book_asks(Book *self, PyObject *Py_UNUSED(ignored)) {
    return side_levels(&self->asks);
}

static PyObject *Book_bid_count(Book *self, void *closure) { return PyLong_FromSsize_t(self->bids.n); }

static PyObject *Book_ask_count(Book *self, void *closure) { return PyLong_FromSsize_t(self->asks.n); }

/* ---------------------------------------------------------------------------------------- */
/* OKX's checksum over the top levels' texts (mdpipe/venues/okx/checksum.py), straight from
   the levels, with no string list: the standard CRC-32 (zlib's polynomial), table-driven. */

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static inline uint32_t crc_update(uint32_t crc, const char *buf, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) crc = crc_table[(crc ^ (uint8_t)buf[i]) & 0xFF] ^ (crc >> 8);
    return crc;
}

/* crc into *crc of one level's text (KeyError: it has none). */
static int crc_level(const Side *s, const Level *lv, uint32_t *crc, int *first) {
    if (lv->text == NULL) {
        PyObject *key = PyFloat_FromDouble(s->sign * lv->key);
        if (key != NULL) {
            PyErr_SetObject(PyExc_KeyError, key);
            Py_DECREF(key);
        }
        return -1;
    }
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(lv->text, &n);
    if (utf8 == NULL) return -1;
    if (!*first) *crc = crc_update(*crc, ":", 1);
    *first = 0;
    *crc = crc_update(*crc, utf8, n);
    return 0;
}

/* text_checksum(levels): the signed CRC32 of the best `levels` levels' texts interleaved
   bid, ask, bid, ... joined by ':' (the longer side's levels follow alone once the shorter
   runs out): OKX's book checksum, as okx/checksum.py computes it from the same strings. */
static PyObject *Book_text_checksum(Book *self, PyObject *arg) {
    Py_ssize_t levels = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (levels == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t nb = self->bids.n < levels ? self->bids.n : levels;
    Py_ssize_t na = self->asks.n < levels ? self->asks.n : levels;
    uint32_t crc = 0xFFFFFFFFu;
    int first = 1;
    Best bit, ait;
    best_start(&bit, &self->bids);
    best_start(&ait, &self->asks);
    for (Py_ssize_t i = 0; i < nb || i < na; i++) {
        if (i < nb && crc_level(&self->bids, best_next(&bit), &crc, &first) < 0) return NULL;
        if (i < na && crc_level(&self->asks, best_next(&ait), &crc, &first) < 0) return NULL;
    }
    crc ^= 0xFFFFFFFFu;
    return PyLong_FromLong(crc >= 0x80000000u ? (long)((int64_t)crc - 0x100000000LL) : (long)crc);
}

static PyMethodDef Book_methods[] = {
    {"clear", (PyCFunction)Book_clear, METH_NOARGS, "Remove every level."},
    {"apply_snapshot", (PyCFunction)Book_apply_snapshot, METH_VARARGS,
     "Replace the whole book with a snapshot's levels (zero quantities are skipped)."},
    {"apply", (PyCFunction)(void (*)(void))Book_apply, METH_FASTCALL,
     "Apply a diff: each level is an absolute quantity, 0 removes (absent levels are fine)."},
    {"write_top", (PyCFunction)(void (*)(void))Book_write_top, METH_FASTCALL,
     "Write the best levels as [price, qty] rows into C-contiguous float64 (depth, 2) arrays."},
    {"best_prices", (PyCFunction)Book_best_prices, METH_O,
     "Up to `depth` best bid and ask prices, best first."},
    {"best_bid", (PyCFunction)Book_best_bid, METH_NOARGS, "The highest bid as (price, qty), or None."},
    {"best_ask", (PyCFunction)Book_best_ask, METH_NOARGS, "The lowest ask as (price, qty), or None."},
    {"is_crossed", (PyCFunction)Book_is_crossed, METH_NOARGS,
     "True when the best bid is at or above the best ask."},
    {"set_texts", (PyCFunction)(void (*)(void))Book_set_texts, METH_FASTCALL,
     "Keep each listed level's text as received (bid prices, texts, ask prices, texts)."},
    {"text_checksum", (PyCFunction)Book_text_checksum, METH_O,
     "OKX's signed CRC32 of the best `levels` levels' texts per side."},
    {"bids", (PyCFunction)Book_bids, METH_NOARGS, "Every bid level, best first."},
    {"asks", (PyCFunction)Book_asks, METH_NOARGS, "Every ask level, best first."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Book_getset[] = {
    {"bid_count", (getter)Book_bid_count, NULL, "Number of bid levels.", NULL},
    {"ask_count", (getter)Book_ask_count, NULL, "Number of ask levels.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BookType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mdpipe._book.OrderBook",
    .tp_basicsize = sizeof(Book),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An L2 book of absolute quantities keyed by float price (sorted arrays, in C).",
    .tp_new = Book_new,
    .tp_init = (initproc)Book_init,
    .tp_dealloc = (destructor)Book_dealloc,
    .tp_methods = Book_methods,
    .tp_getset = Book_getset,
};

static struct PyModuleDef book_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mdpipe._book",
    .m_doc = "The L2 order book in C (see mdpipe/book.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__book(void) {
    crc_init();
    if (PyType_Ready(&BookType) < 0) return NULL;
    PyObject *m = PyModule_Create(&book_module);
    if (m == NULL) return NULL;
    Py_INCREF(&BookType);
    if (PyModule_AddObject(m, "OrderBook", (PyObject *)&BookType) < 0) {
        Py_DECREF(&BookType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
