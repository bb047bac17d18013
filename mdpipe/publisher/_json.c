/*
 * mdpipe.publisher._json - a batch of book levels as the JSON text orjson prints for them.
 *
 * levels(array) takes a C-contiguous float64 array of shape (n, depth, 2) and returns n bytes
 * objects, each record's `p,q],[p,q],...,[p,q` (its levels without the outer `[[` and `]]`),
 * byte for byte what orjson prints for the same (depth, 2) array. A record holding a value
 * outside the fast path below gets None instead, and the caller prints it with orjson.
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

static PyObject *levels(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0)
        return NULL;
    if (view.ndim != 3 || view.shape[2] != 2 || view.itemsize != 8 || view.format == NULL ||
        (strcmp(view.format, "d") != 0 && strcmp(view.format, "<d") != 0)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "levels: expected a C-contiguous float64 (n, depth, 2) array");
        return NULL;
    }
    Py_ssize_t n = view.shape[0], values = view.shape[1] * 2;
    const double *x = (const double *)view.buf;
    PyObject *out = PyList_New(n);
    char *text = PyMem_Malloc((size_t)(values ? values : 1) * (NUMBER_BYTES + 3));
    if (out == NULL || text == NULL) {
        Py_XDECREF(out);
        PyMem_Free(text);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++, x += values) {
        char *p = text;
        int ok = 1;
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
            if (!len) {
                ok = 0;
                break;
            }
            p += len;
        }
        PyObject *item = ok ? PyBytes_FromStringAndSize(text, p - text) : Py_NewRef(Py_None);
        if (item == NULL) {
            Py_DECREF(out);
            out = NULL;
            break;
        }
        PyList_SET_ITEM(out, i, item);
    }
    PyMem_Free(text);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"levels", levels, METH_O,
     "levels(array) -> [bytes | None]: each record's levels of a float64 (n, depth, 2) array "
     "as orjson prints them, without the outer brackets; None where orjson must print them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mdpipe.publisher._json", "Book levels as JSON text.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__json(void) { return PyModule_Create(&module); }
