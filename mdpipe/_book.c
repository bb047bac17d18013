/*
 * mdpipe._book - the L2 order book in C: the same API and results as mdpipe/book.py.
 *
 * Each side is one array of (key, qty) levels sorted ascending by key, the best level last:
 * bids keyed by price, asks by -price (negation is exact, so prices come back unchanged).
 * A level is found by galloping from the best end, then a binary search: updates near the
 * touch, the common case, cost a few comparisons and move only the levels above them.
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

typedef struct {
    Level *lv;
    Py_ssize_t n, cap;
    double sign; /* +1 bids, -1 asks: price = sign * key */
} Side;

typedef struct {
    PyObject_HEAD
    Side bids, asks;
} Book;

static int side_reserve(Side *s, Py_ssize_t need) {
    if (need <= s->cap) return 0;
    Py_ssize_t cap = s->cap ? s->cap : 64;
    while (cap < need) cap *= 2;
    Level *lv = PyMem_Realloc(s->lv, (size_t)cap * sizeof(Level));
    if (lv == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->lv = lv;
    s->cap = cap;
    return 0;
}

/* The first index whose key is >= k (n when none): gallop down from the best end. */
static inline Py_ssize_t side_find(const Side *s, double k) {
    const Level *lv = s->lv;
    Py_ssize_t n = s->n, hi = n, lo, b = 1;
    while (b <= n && lv[n - b].key >= k) {
        hi = n - b;
        b <<= 1;
    }
    lo = b <= n ? n - b + 1 : 0;
    while (lo < hi) {
        Py_ssize_t mid = lo + ((hi - lo) >> 1);
        if (lv[mid].key < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Set one level: qty 0 removes it (absent levels are fine). */
static inline int side_set(Side *s, double k, double q) {
    Py_ssize_t i = side_find(s, k);
    Level *lv = s->lv;
    if (i < s->n && lv[i].key == k) {
        if (q != 0.0) {
            lv[i].qty = q;
        } else {
            Py_CLEAR(lv[i].text);
            memmove(lv + i, lv + i + 1, (size_t)(s->n - i - 1) * sizeof(Level));
            s->n--;
        }
        return 0;
    }
    if (q == 0.0) return 0;
    if (s->n == s->cap) {
        if (side_reserve(s, s->n + 1) < 0) return -1;
        lv = s->lv;
    }
    memmove(lv + i + 1, lv + i, (size_t)(s->n - i) * sizeof(Level));
    lv[i].key = k;
    lv[i].qty = q;
    lv[i].text = NULL;
    s->n++;
    return 0;
}

/* Remove every level (and its text). */
static void side_clear(Side *s) {
    for (Py_ssize_t i = 0; i < s->n; i++) Py_CLEAR(s->lv[i].text);
    s->n = 0;
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
    if (side_reserve(s, n) < 0) {
        PyMem_Free(idx);
        return -1;
    }
    side_clear(s);
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (m && s->lv[m - 1].key == idx[i].key) {
            s->lv[m - 1].qty = idx[i].qty;
        } else {
            s->lv[m].key = idx[i].key;
            s->lv[m].qty = idx[i].qty;
            s->lv[m].text = NULL;
            m++;
        }
    }
    s->n = m;
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
    const Level *best = s->lv + s->n - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        row[2 * i] = sign * best[-i].key;
        row[2 * i + 1] = best[-i].qty;
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
    const Level *best = s->lv + s->n - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyFloat_FromDouble(s->sign * best[-i].key);
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
    const Level *best = s->lv + s->n - 1;
    for (Py_ssize_t i = 0; i < s->n; i++) {
        PyObject *t = Py_BuildValue("(dd)", s->sign * best[-i].key, best[-i].qty);
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
    const Level *best = s->lv + s->n - 1;
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
    PyMem_Free(self->bids.lv);
    PyMem_Free(self->asks.lv);
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
        double k = s->sign * p;
        Py_ssize_t i = side_find(s, k);
        if (i < s->n && s->lv[i].key == k) {
            Py_INCREF(text);
            Py_XSETREF(s->lv[i].text, text);
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
    return PyBool_FromLong(b->n && a->n && b->lv[b->n - 1].key >= -a->lv[a->n - 1].key);
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

/* crc into *crc of the text of the i-th best level of a side (KeyError: it has none). */
static int crc_level(const Side *s, Py_ssize_t i, uint32_t *crc, int *first) {
    const Level *lv = s->lv + s->n - 1 - i;
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
    for (Py_ssize_t i = 0; i < nb || i < na; i++) {
        if (i < nb && crc_level(&self->bids, i, &crc, &first) < 0) return NULL;
        if (i < na && crc_level(&self->asks, i, &crc, &first) < 0) return NULL;
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
