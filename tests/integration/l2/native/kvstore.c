/* A tiny native connector for the native_plugin tests: a CPython extension type keeping values in a dict.
 *
 * Store(capacity) holds at most `capacity` values; batch_set(keys, values), batch_get(keys, buffers)
 * (bytes copied into each writable buffer, or the value's size when it does not fit, -1 when absent),
 * batch_exists(keys), batch_delete(keys), list_keys() and close(), as native_plugin.py documents.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *values; /* str -> bytes */
    Py_ssize_t capacity;
} Store;

static int Store_init(Store *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"capacity", NULL};
    self->capacity = 1024;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n", names, &self->capacity)) return -1;
    self->values = PyDict_New();
    return self->values ? 0 : -1;
}

static void Store_dealloc(Store *self) {
    Py_XDECREF(self->values);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *batch_set(Store *self, PyObject *args) {
    PyObject *keys, *values;
    if (!PyArg_ParseTuple(args, "OO", &keys, &values)) return NULL;
    Py_ssize_t n = PyList_Size(keys);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GetItem(keys, i);
        int ok = PyDict_Contains(self->values, key) || PyDict_Size(self->values) < self->capacity;
        if (ok && !PyDict_Contains(self->values, key)) {
            Py_buffer view;
            if (PyObject_GetBuffer(PyList_GetItem(values, i), &view, PyBUF_SIMPLE) < 0) return NULL;
            PyObject *copy = PyBytes_FromStringAndSize(view.buf, view.len);
            PyBuffer_Release(&view);
            PyDict_SetItem(self->values, key, copy);
            Py_DECREF(copy);
        }
        PyList_SetItem(out, i, PyBool_FromLong(ok));
    }
    return out;
}

static PyObject *batch_get(Store *self, PyObject *args) {
    PyObject *keys, *buffers;
    if (!PyArg_ParseTuple(args, "OO", &keys, &buffers)) return NULL;
    Py_ssize_t n = PyList_Size(keys);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PyDict_GetItem(self->values, PyList_GetItem(keys, i));
        Py_ssize_t result = -1;
        if (value != NULL) {
            Py_buffer view;
            Py_INCREF(value); /* kept alive while the GIL is released below */
            if (PyObject_GetBuffer(PyList_GetItem(buffers, i), &view, PyBUF_WRITABLE) < 0) {
                Py_DECREF(value);
                return NULL;
            }
            result = PyBytes_GET_SIZE(value);
            if (result <= view.len) {
                Py_BEGIN_ALLOW_THREADS
                memcpy(view.buf, PyBytes_AS_STRING(value), (size_t)result);
                Py_END_ALLOW_THREADS
            }
            PyBuffer_Release(&view);
            Py_DECREF(value);
        }
        PyList_SetItem(out, i, PyLong_FromSsize_t(result));
    }
    return out;
}

static PyObject *batch_exists(Store *self, PyObject *args) {
    PyObject *keys;
    if (!PyArg_ParseTuple(args, "O", &keys)) return NULL;
    Py_ssize_t n = PyList_Size(keys);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; i < n; i++)
        PyList_SetItem(out, i, PyBool_FromLong(PyDict_Contains(self->values, PyList_GetItem(keys, i))));
    return out;
}

static PyObject *batch_delete(Store *self, PyObject *args) {
    PyObject *keys;
    if (!PyArg_ParseTuple(args, "O", &keys)) return NULL;
    Py_ssize_t n = PyList_Size(keys);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GetItem(keys, i);
        int present = PyDict_Contains(self->values, key);
        if (present) PyDict_DelItem(self->values, key);
        PyList_SetItem(out, i, PyBool_FromLong(present));
    }
    return out;
}

static PyObject *list_keys(Store *self, PyObject *Py_UNUSED(ignored)) { return PyDict_Keys(self->values); }

static PyObject *close_store(Store *self, PyObject *Py_UNUSED(ignored)) { Py_RETURN_NONE; }

static PyMethodDef Store_methods[] = {
    {"batch_set", (PyCFunction)batch_set, METH_VARARGS, "Store values."},
    {"batch_get", (PyCFunction)batch_get, METH_VARARGS, "Copy values into buffers."},
    {"batch_exists", (PyCFunction)batch_exists, METH_VARARGS, "Which keys are present."},
    {"batch_delete", (PyCFunction)batch_delete, METH_VARARGS, "Remove keys."},
    {"list_keys", (PyCFunction)list_keys, METH_NOARGS, "Every key."},
    {"close", (PyCFunction)close_store, METH_NOARGS, "Nothing to release."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kvstore.Store",
    .tp_basicsize = sizeof(Store),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Store_init,
    .tp_dealloc = (destructor)Store_dealloc,
    .tp_methods = Store_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "kvstore", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_kvstore(void) {
    if (PyType_Ready(&StoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    Py_INCREF(&StoreType);
    PyModule_AddObject(m, "Store", (PyObject *)&StoreType);
    return m;
}
