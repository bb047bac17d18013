/*
 * mdpipe.publisher._json - a batch of book payloads, byte for byte the JSON orjson prints.
 *
 * books(heads, bids, asks, bid_counts, ask_counts, first_update_ids, last_update_ids, seqs,
 * synced, exchange_ts, timestamps) returns one payload per record: heads[i]
 * (`{"symbol":..,"exchange":..,"bids":`), the record's first bid_counts[i] bid levels as
 * `[[p,q],...]` (`[]` for none), `,"asks":`, its first ask_counts[i] ask levels, then
 * `,"first_update_id":..}` as in mdpipe.publisher.payloads. bids and asks are C-contiguous
 * float64 arrays (n, depth, 2), the other arguments lists of n ints (bools for synced; counts
 * at most depth). A record holding a number outside the fast path below gets None instead,
 * and the caller prints it with orjson.
 *
 * The fast path: 0, or 1e-4 <= |x| < 1e15 with at most 15 significant digits (every price and
 * quantity a venue sends). With d the fewest decimals for which m = rint(|x| * 10^d) read back
 * as m / 10^d is x again, "m with d decimals" is the shortest text that reads back as x, the
 * one orjson prints: m and 10^d are exact doubles, so the division rounds the decimal exactly
 * as a parser does, and a double holds at most one decimal of <= 15 digits. orjson prints such
 * a number plainly ("61800.2", "0.0001", an integer as "42.0"), which is what is written here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_DIGITS 15
#define NUMBER_BYTES 24 /* sign, 15 digits, point, "0." and leading zeros: at most 21 */

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9, 1e10,
                               1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19};

/* Write x as orjson prints it into out; returns the length, or 0 if x is not on the fast path. */
static int write_number(double x, char *out) {
    char *p = out;
    if (x == 0.0) {
        if (signbit(x))
            *p++ = '-';
        memcpy(p, "0.0", 3);
        return (int)(p - out) + 3;
    }
    double a = fabs(x);
    if (!(a >= 1e-4 && a < 1e15))
        return 0; /* NaN, infinities, tiny and huge numbers: orjson's own way */
    int d = 0;
    double m;
    for (;; d++) {
        if (d > 19)
            return 0;
        m = nearbyint(a * POW10[d]);
        if (m >= 1e15)
            return 0; /* more than 15 significant digits */
        if (m / POW10[d] == a)
            break;
    }
    char digits[MAX_DIGITS + 1];
    int n = 0;
    uint64_t v = (uint64_t)m;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (x < 0)
        *p++ = '-';
    if (n <= d) { /* 0.000ddd */
        *p++ = '0';
        *p++ = '.';
        for (int z = 0; z < d - n; z++)
            *p++ = '0';
        while (n)
            *p++ = digits[--n];
    } else {
        while (n > d)
            *p++ = digits[--n];
        *p++ = '.';
        if (d == 0)
            *p++ = '0';
        while (n)
            *p++ = digits[--n];
    }
    return (int)(p - out);
}

static char *write_int(PyObject *obj, char *p) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    uint64_t u;
    if (overflow > 0) {
        u = PyLong_AsUnsignedLongLong(obj);
        if (u == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    } else if (overflow < 0) {
        PyErr_SetString(PyExc_OverflowError, "below -2**63");
        return NULL;
    } else if (v == -1 && PyErr_Occurred()) {
        return NULL;
    } else if (v < 0) {
        *p++ = '-';
        u = (uint64_t)0 - (uint64_t)v;
    } else {
        u = (uint64_t)v;
    }
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n)
        *p++ = digits[--n];
    return p;
}

/* The levels of one record side, `p,q],[p,q`; NULL if a number is not on the fast path. */
static char *write_levels(const double *x, Py_ssize_t values, char *p) {
    for (Py_ssize_t k = 0; k < values; k++) {
        if (k) {
            if (k & 1)
                *p++ = ',';
            else {
                memcpy(p, "],[", 3);
                p += 3;
            }
        }
        int len = write_number(x[k], p);
        if (!len)
            return NULL;
        p += len;
    }
    return p;
}

/* One side of a record, `[[p,q],...]` or `[]`; NULL if a number is not on the fast path. */
static char *write_side(const double *x, Py_ssize_t levels, char *p) {
    if (!levels) {
        memcpy(p, "[]", 2);
        return p + 2;
    }
    memcpy(p, "[[", 2);
    p = write_levels(x, 2 * levels, p + 2);
    if (p == NULL)
        return NULL;
    memcpy(p, "]]", 2);
    return p + 2;
}

static int get_side(PyObject *obj, Py_buffer *view, Py_ssize_t n, Py_ssize_t depth) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0)
        return -1;
    if (view->ndim != 3 || view->shape[0] != n || view->shape[2] != 2 || view->itemsize != 8 ||
        (depth >= 0 && view->shape[1] != depth) || view->format == NULL ||
        (strcmp(view->format, "d") != 0 && strcmp(view->format, "<d") != 0)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "books: bids and asks must be C-contiguous float64 "
                                          "arrays of shape (n, depth, 2)");
        return -1;
    }
    return 0;
}

#define INT_COLUMNS 5 /* first_update_id, last_update_id, seq, exchange_ts, timestamp */

static PyObject *books(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "books() takes 11 arguments");
        return NULL;
    }
    PyObject *heads = args[0], *synced = args[8];
    PyObject *counts[2] = {args[3], args[4]};
    PyObject *ints[INT_COLUMNS] = {args[5], args[6], args[7], args[9], args[10]};
    if (!PyList_Check(heads) || !PyList_Check(synced)) {
        PyErr_SetString(PyExc_TypeError, "books: heads and synced must be lists");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(heads);
    for (int c = 0; c < INT_COLUMNS; c++) {
        if (!PyList_Check(ints[c]) || PyList_GET_SIZE(ints[c]) != n) {
            PyErr_SetString(PyExc_TypeError, "books: every column must be a list of n items");
            return NULL;
        }
    }
    for (int c = 0; c < 2; c++) {
        if (!PyList_Check(counts[c]) || PyList_GET_SIZE(counts[c]) != n) {
            PyErr_SetString(PyExc_TypeError, "books: every column must be a list of n items");
            return NULL;
        }
    }
    if (PyList_GET_SIZE(synced) != n) {
        PyErr_SetString(PyExc_TypeError, "books: every column must be a list of n items");
        return NULL;
    }
    Py_buffer bids, asks;
    if (get_side(args[1], &bids, n, -1) < 0)
        return NULL;
    if (get_side(args[2], &asks, n, bids.shape[1]) < 0) {
        PyBuffer_Release(&bids);
        return NULL;
    }
    Py_ssize_t values = bids.shape[1] * 2;
    Py_ssize_t most_head = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *head = PyList_GET_ITEM(heads, i);
        if (!PyBytes_Check(head)) {
            PyErr_SetString(PyExc_TypeError, "books: heads must be bytes");
            goto fail;
        }
        if (PyBytes_GET_SIZE(head) > most_head)
            most_head = PyBytes_GET_SIZE(head);
    }
    PyObject *out = PyList_New(n);
    size_t size = (size_t)most_head + 2 * (size_t)values * (NUMBER_BYTES + 3) + 256;
    char *text = PyMem_Malloc(size);
    if (out == NULL || text == NULL) {
        Py_XDECREF(out);
        PyMem_Free(text);
        PyErr_NoMemory();
        goto fail;
    }
    const double *b = (const double *)bids.buf, *a = (const double *)asks.buf;
    for (Py_ssize_t i = 0; i < n; i++, b += values, a += values) {
        PyObject *head = PyList_GET_ITEM(heads, i);
        char *p = text;
        memcpy(p, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head));
        p += PyBytes_GET_SIZE(head);
        Py_ssize_t nb = PyLong_AsSsize_t(PyList_GET_ITEM(counts[0], i));
        Py_ssize_t na = PyLong_AsSsize_t(PyList_GET_ITEM(counts[1], i));
        if ((nb == -1 || na == -1) && PyErr_Occurred())
            goto fail_out;
        if (nb < 0 || na < 0 || 2 * nb > values || 2 * na > values) {
            PyErr_SetString(PyExc_ValueError, "books: a level count outside 0..depth");
            goto fail_out;
        }
        p = write_side(b, nb, p);
        if (p != NULL) {
            memcpy(p, ",\"asks\":", 8);
            p = write_side(a, na, p + 8);
        }
        static const char *keys[INT_COLUMNS] = {",\"first_update_id\":", ",\"last_update_id\":",
                                                ",\"seq\":", ",\"exchange_ts\":", ",\"timestamp\":"};
        for (int c = 0; c < INT_COLUMNS && p != NULL; c++) {
            if (c == 3) {
                int yes = PyObject_IsTrue(PyList_GET_ITEM(synced, i));
                if (yes < 0)
                    goto fail_out;
                memcpy(p, ",\"synced\":", 10);
                p += 10;
                memcpy(p, yes ? "true" : "false", yes ? 4 : 5);
                p += yes ? 4 : 5;
            }
            size_t klen = strlen(keys[c]);
            memcpy(p, keys[c], klen);
            p = write_int(PyList_GET_ITEM(ints[c], i), p + klen);
            if (p == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                    goto fail_out;
                PyErr_Clear(); /* past 64 bits: orjson's way */
            }
        }
        PyObject *item;
        if (p == NULL) {
            item = Py_NewRef(Py_None);
        } else {
            *p++ = '}';
            item = PyBytes_FromStringAndSize(text, p - text);
            if (item == NULL)
                goto fail_out;
        }
        PyList_SET_ITEM(out, i, item);
    }
    PyMem_Free(text);
    PyBuffer_Release(&bids);
    PyBuffer_Release(&asks);
    return out;
fail_out:
    PyMem_Free(text);
    Py_DECREF(out);
fail:
    PyBuffer_Release(&bids);
    PyBuffer_Release(&asks);
    return NULL;
}

static PyMethodDef methods[] = {
    {"books", (PyCFunction)(void (*)(void))books, METH_FASTCALL,
     "books(heads, bids, asks, bid_counts, ask_counts, first_update_ids, last_update_ids, seqs, "
     "synced, exchange_ts, timestamps) -> [bytes | None]: each record's orderbook payload as orjson prints it; None "
     "where orjson must print a number."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mdpipe.publisher._json", "Book payloads as JSON text.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__json(void) { return PyModule_Create(&module); }
