/*
 * mdpipe.venues._levels - the levels fast paths of mdpipe/venues/levels.py and okx/parser.py
 * in C: read [["price","qty"],...] decimal strings straight from a frame's raw bytes.
 *
 * Stricter than the text it accepts needs to be: every level must be exactly
 * `["<num>","<num>"]` (OKX: four strings) with nothing between the tokens, every <num> a JSON
 * number written as a string ("0" or no leading zero, then "." and at least one digit; OKX
 * fields may also be integers). Anything else returns None and the caller takes the general
 * path, which names what is wrong. Each value is the double float() gives for the same
 * string: exact m / 10^k when m < 2^53 and k <= 22 (both exact, so the one division rounds
 * correctly), else CPython's own correctly rounded PyOS_string_to_double.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

#define IS_DIGIT(c) ((unsigned char)((c) - '0') < 10)

/* A quoted plain number at *pp (the opening quote): its value, and *pp moved past the closing
   quote. need_dot: the number must have a fraction. Returns -1 to decline. */
static inline int quoted_number(const char **pp, const char *end, int need_dot, double *out) {
    const char *p = *pp;
    if (p >= end || *p != '"') return -1;
    const char *s = ++p;
    uint64_t m = 0;
    int sig = 0, frac = 0; /* digits from the first non-zero one; digits after the dot */
    if (p < end && *p == '0') {
        p++;
    } else {
        if (p >= end || !IS_DIGIT(*p)) return -1;
        while (p < end && IS_DIGIT(*p)) {
            if (sig < 19) m = m * 10 + (uint64_t)(*p - '0');
            sig++;
            p++;
        }
    }
    if (p < end && *p == '.') {
        const char *f = ++p;
        while (p < end && IS_DIGIT(*p)) {
            if (m || *p != '0') {
                if (sig < 19) m = m * 10 + (uint64_t)(*p - '0');
                sig++;
            }
            p++;
        }
        frac = (int)(p - f);
        if (frac == 0) return -1;
    } else if (need_dot) {
        return -1;
    }
    if (p >= end || *p != '"') return -1;
    const char *stop = p;
    *pp = p + 1;
    if (sig <= 19 && m < (UINT64_C(1) << 53) && frac <= 22) {
        *out = (double)m / POW10[frac];
        return 0;
    }
    /* Long numbers: CPython's strtod (the one float() uses), stopping at the closing quote. */
    char *parsed_end;
    double v = PyOS_string_to_double(s, &parsed_end, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    if (parsed_end != stop || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static inline int expect(const char **pp, const char *end, const char *lit, Py_ssize_t n) {
    if (end - *pp < n || memcmp(*pp, lit, (size_t)n) != 0) return -1;
    *pp += n;
    return 0;
}

/* Parsed values land here first, (price, qty) pairs, so each list is made once at its final
   size: on the stack for a diff, on the heap for a big snapshot. Per call, not shared: making
   a list may run a garbage collection, and with it any Python code. */
#define STACK_VALS 1024

typedef struct {
    double *v;
    Py_ssize_t n, cap;
    double stack[STACK_VALS];
} Vals;

static void vals_init(Vals *vals) {
    vals->v = vals->stack;
    vals->n = 0;
    vals->cap = STACK_VALS;
}

static void vals_free(Vals *vals) {
    if (vals->v != vals->stack) PyMem_Free(vals->v);
}

static int vals_reserve(Vals *vals, Py_ssize_t need) {
    if (need <= vals->cap) return 0;
    Py_ssize_t cap = 2 * vals->cap;
    while (cap < need) cap *= 2;
    double *v = PyMem_Malloc((size_t)cap * sizeof(double));
    if (v == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(v, vals->v, (size_t)vals->n * sizeof(double));
    vals_free(vals);
    vals->v = v;
    vals->cap = cap;
    return 0;
}

/* Lists of the even (prices) and odd (qtys) values at v[from:to]. */
static int make_lists(const double *v, Py_ssize_t from, Py_ssize_t to, PyObject **prices,
                      PyObject **qtys) {
    Py_ssize_t n = (to - from) / 2;
    *prices = PyList_New(n);
    *qtys = PyList_New(n);
    if (*prices == NULL || *qtys == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyFloat_FromDouble(v[from + 2 * i]);
        if (p == NULL) goto fail;
        PyList_SET_ITEM(*prices, i, p);
        PyObject *q = PyFloat_FromDouble(v[from + 2 * i + 1]);
        if (q == NULL) goto fail;
        PyList_SET_ITEM(*qtys, i, q);
    }
    return 0;
fail:
    Py_CLEAR(*prices);
    Py_CLEAR(*qtys);
    return -1;
}

/* One level list `[...]` at *pp of `fields` quoted numbers per level: (price, qty) pairs
   appended to vals. Returns 0, 1 to decline, -1 on a Python error. */
static int level_list(const char **pp, const char *end, int fields, Vals *vals) {
    const char *p = *pp;
    if (p >= end || *p != '[') return 1;
    p++;
    if (p < end && *p == ']') {
        *pp = p + 1;
        return 0;
    }
    for (;;) {
        double px, qty, other;
        if (p >= end || *p != '[') return 1;
        p++;
        if (quoted_number(&p, end, fields == 2, &px) < 0 || px == 0.0) return 1;
        if (p >= end || *p != ',') return 1;
        p++;
        if (quoted_number(&p, end, fields == 2, &qty) < 0) return 1;
        for (int f = 2; f < fields; f++) {
            if (p >= end || *p != ',') return 1;
            p++;
            if (quoted_number(&p, end, 0, &other) < 0) return 1;
        }
        if (p >= end || *p != ']') return 1;
        p++;
        if (vals->n + 2 > vals->cap && vals_reserve(vals, vals->n + 2) < 0) return -1;
        vals->v[vals->n++] = px;
        vals->v[vals->n++] = qty;
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == ']') {
            *pp = p + 1;
            return 0;
        }
        return 1;
    }
}

/* The first `needle` starting at or after `from` and ending by `limit`, or -1. */
static Py_ssize_t find(const char *buf, Py_ssize_t from, Py_ssize_t limit, const char *needle,
                       Py_ssize_t n) {
    const char *hit = NULL;
    if (limit - from >= n) hit = memmem(buf + from, (size_t)(limit - from), needle, (size_t)n);
    return hit ? hit - buf : -1;
}

static int raw_bytes(PyObject *raw, const char **buf, Py_ssize_t *len, int allow_bytearray) {
    if (PyBytes_CheckExact(raw)) {
        *buf = PyBytes_AS_STRING(raw);
        *len = PyBytes_GET_SIZE(raw);
    } else if (allow_bytearray && PyByteArray_CheckExact(raw)) {
        *buf = PyByteArray_AS_STRING(raw);
        *len = PyByteArray_GET_SIZE(raw);
    } else {
        return -1;
    }
    return memchr(*buf, '\\', (size_t)*len) ? -1 : 0;
}

static PyObject *concat(const char *a, Py_ssize_t na, const char *b, Py_ssize_t nb, const char *c,
                        Py_ssize_t nc, const char *d, Py_ssize_t nd) {
    PyObject *out = PyBytes_FromStringAndSize(NULL, na + nb + nc + nd);
    if (out == NULL) return NULL;
    char *o = PyBytes_AS_STRING(out);
    memcpy(o, a, (size_t)na);
    memcpy(o + na, b, (size_t)nb);
    memcpy(o + na + nb, c, (size_t)nc);
    memcpy(o + na + nb + nc, d, (size_t)nd);
    return out;
}

/* The (prices, qtys) lists of both sides: v[0:split] the first side, v[split:n] the other,
   into l[0..3] = first prices, first qtys, other prices, other qtys. */
static int side_lists(const Vals *vals, Py_ssize_t split, PyObject **l) {
    if (make_lists(vals->v, 0, split, &l[0], &l[1]) < 0) return -1;
    if (make_lists(vals->v, split, vals->n, &l[2], &l[3]) < 0) {
        Py_CLEAR(l[0]);
        Py_CLEAR(l[1]);
        return -1;
    }
    return 0;
}

/* plain_levels(raw, bids_key, asks_key, tail) -> (rest, bid_prices, bid_qtys, ask_prices,
   ask_qtys) or None: see mdpipe/venues/levels.py. */
static PyObject *read_plain_levels(PyObject *const *args, Vals *vals);

static PyObject *plain_levels(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2]) ||
        !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "plain_levels(raw, bids_key, asks_key, tail: bytes)");
        return NULL;
    }
    Vals vals;
    vals_init(&vals);
    PyObject *found = read_plain_levels(args, &vals);
    vals_free(&vals);
    return found;
}

static PyObject *read_plain_levels(PyObject *const *args, Vals *vals) {
    const char *raw, *bk = PyBytes_AS_STRING(args[1]), *ak = PyBytes_AS_STRING(args[2]),
                     *tail = PyBytes_AS_STRING(args[3]);
    Py_ssize_t len, nbk = PyBytes_GET_SIZE(args[1]), nak = PyBytes_GET_SIZE(args[2]),
                    ntail = PyBytes_GET_SIZE(args[3]);
    if (raw_bytes(args[0], &raw, &len, 1) < 0) Py_RETURN_NONE;
    /* The first `<bids>[` wholly inside the first 1024 bytes. */
    Py_ssize_t limit = len < 1024 ? len : 1024, start = -1;
    for (Py_ssize_t from = 0;;) {
        Py_ssize_t at = find(raw, from, limit, bk, nbk);
        if (at < 0) break;
        if (at + nbk < limit && raw[at + nbk] == '[') {
            start = at;
            break;
        }
        from = at + 1;
    }
    if (start < 0) Py_RETURN_NONE;
    const char *end = raw + len, *p = raw + start + nbk;
    int rc = level_list(&p, end, 2, vals);
    Py_ssize_t split = vals->n;
    if (rc == 0 && (expect(&p, end, ",", 1) < 0 || expect(&p, end, ak, nak) < 0)) rc = 1;
    if (rc == 0) rc = level_list(&p, end, 2, vals);
    if (rc == 0) {
        /* The tail: its part before the first ':' literally, then all of it digits aside. */
        const char *colon = memchr(tail, ':', (size_t)ntail);
        Py_ssize_t nhead = colon ? colon - tail : ntail, t = 0;
        if (end - p < nhead || memcmp(p, tail, (size_t)nhead) != 0) rc = 1;
        for (const char *q = p; rc == 0 && q < end; q++) {
            if (IS_DIGIT(*q)) continue;
            if (t >= ntail || *q != tail[t]) rc = 1;
            t++;
        }
        if (t != ntail) rc = 1;
    }
    if (rc < 0) return NULL;
    if (rc > 0) Py_RETURN_NONE;
    Py_ssize_t raw_end = p - raw;
    PyObject *mid = concat(bk, nbk, "0,", 2, ak, nak, "0", 1);
    PyObject *rest = NULL;
    if (mid != NULL) {
        rest = concat(raw, start, PyBytes_AS_STRING(mid), PyBytes_GET_SIZE(mid), raw + raw_end,
                      len - raw_end, "", 0);
        Py_DECREF(mid);
    }
    PyObject *l[4];
    if (rest == NULL) return NULL;
    if (side_lists(vals, split, l) < 0) {
        Py_DECREF(rest);
        return NULL;
    }
    return Py_BuildValue("(NNNNN)", rest, l[0], l[1], l[2], l[3]);
}

static const char ASKS_AT[] = "\"asks\":[";
static const char BIDS_AT[] = ",\"bids\":";
static const char TS_AT[] = ",\"ts\":";
static const char EMPTY_LEVELS[] = "\"asks\":[],\"bids\":[]";

/* plain_books(raw) -> (rest, bid_prices, bid_sizes, ask_prices, ask_sizes, inner, n_asks) or
   None: see plain_books in mdpipe/venues/okx/parser.py. */
static PyObject *read_plain_books(PyObject *raw_obj, Vals *vals);

static PyObject *plain_books(PyObject *mod, PyObject *raw_obj) {
    Vals vals;
    vals_init(&vals);
    PyObject *found = read_plain_books(raw_obj, &vals);
    vals_free(&vals);
    return found;
}

static PyObject *read_plain_books(PyObject *raw_obj, Vals *vals) {
    const char *raw;
    Py_ssize_t len;
    if (raw_bytes(raw_obj, &raw, &len, 0) < 0) Py_RETURN_NONE;
    Py_ssize_t start = find(raw, 0, len < 256 ? len : 256, ASKS_AT, sizeof ASKS_AT - 1);
    if (start < 0) Py_RETURN_NONE;
    const char *end = raw + len, *p = raw + start + sizeof ASKS_AT - 2; /* at the '[' */
    int rc = level_list(&p, end, 4, vals); /* asks first here */
    Py_ssize_t split = vals->n;
    if (rc == 0 && expect(&p, end, BIDS_AT, sizeof BIDS_AT - 1) < 0) rc = 1;
    if (rc == 0) rc = level_list(&p, end, 4, vals);
    if (rc == 0 && (end - p < (Py_ssize_t)sizeof TS_AT - 1 || memcmp(p, TS_AT, sizeof TS_AT - 1)))
        rc = 1;
    if (rc < 0) return NULL;
    if (rc > 0) Py_RETURN_NONE;
    Py_ssize_t ts_at = p - raw;
    PyObject *rest = concat(raw, start, EMPTY_LEVELS, sizeof EMPTY_LEVELS - 1, raw + ts_at,
                            len - ts_at, "", 0);
    Py_ssize_t inner_at = start + sizeof ASKS_AT - 1;
    PyObject *inner = PyBytes_FromStringAndSize(raw + inner_at, ts_at - 1 - inner_at);
    PyObject *l[4]; /* asks were parsed first: l[0..1] asks, l[2..3] bids */
    if (rest == NULL || inner == NULL || side_lists(vals, split, l) < 0) {
        Py_XDECREF(rest);
        Py_XDECREF(inner);
        return NULL;
    }
    return Py_BuildValue("(NNNNNNn)", rest, l[2], l[3], l[0], l[1], inner, split / 2);
}

/* plain_text(inner, n_asks) -> (bid texts, ask texts): each level's `px:sz` as received, read
   from a plain_books result's inner bytes (every quoted string in order: 4 per level, asks
   first, with the "bids" key between the sides). */
static PyObject *plain_text(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t n_asks;
    if (nargs != 2 || !PyBytes_Check(args[0]) || (n_asks = PyLong_AsSsize_t(args[1])) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "plain_text(inner: bytes, n_asks: int >= 0)");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(args[0]), *end = p + PyBytes_GET_SIZE(args[0]);
    PyObject *bids = PyList_New(0), *asks = PyList_New(0);
    if (bids == NULL || asks == NULL) goto fail;
    const char *field[2];
    Py_ssize_t nfield[2], k = 0;
    for (;;) {
        const char *open = memchr(p, '"', (size_t)(end - p));
        if (open == NULL) break;
        const char *close = memchr(open + 1, '"', (size_t)(end - open - 1));
        if (close == NULL) break;
        p = close + 1;
        Py_ssize_t n = close - open - 1;
        if (n == 4 && memcmp(open + 1, "bids", 4) == 0) continue;
        if (k % 4 < 2) {
            field[k % 4] = open + 1;
            nfield[k % 4] = n;
        }
        if (k % 4 == 1) {
            PyObject *s = PyUnicode_New(nfield[0] + 1 + nfield[1], 127);
            if (s == NULL) goto fail;
            char *o = (char *)PyUnicode_DATA(s);
            memcpy(o, field[0], (size_t)nfield[0]);
            o[nfield[0]] = ':';
            memcpy(o + nfield[0] + 1, field[1], (size_t)nfield[1]);
            int rc = PyList_Append(k / 4 < n_asks ? asks : bids, s);
            Py_DECREF(s);
            if (rc < 0) goto fail;
        }
        k++;
    }
    return Py_BuildValue("(NN)", bids, asks);
fail:
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    return NULL;
}

static PyMethodDef levels_methods[] = {
    {"plain_levels", (PyCFunction)(void (*)(void))plain_levels, METH_FASTCALL,
     "The levels of a compact message read from its raw bytes, or None (see levels.py)."},
    {"plain_books", (PyCFunction)plain_books, METH_O,
     "The levels of a compact OKX books push read from its raw bytes, or None."},
    {"plain_text", (PyCFunction)(void (*)(void))plain_text, METH_FASTCALL,
     "(bid texts, ask texts): each level's `px:sz` as received, from plain_books' inner."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef levels_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mdpipe.venues._levels",
    .m_doc = "Level parsing fast paths in C (see mdpipe/venues/levels.py).",
    .m_size = -1,
    .m_methods = levels_methods,
};

PyMODINIT_FUNC PyInit__levels(void) { return PyModule_Create(&levels_module); }
