/* The documents of a YAML text as plain data, straight from libyaml's events.
 *
 * ``config/_yaml.py`` composes a node graph with PyYAML (a Python object and two marks per
 * node, about a microsecond each) and walks it; most texts hold only plain mappings, lists and
 * scalars, and for those this module builds the same data from libyaml's events directly,
 * several times faster. It does nothing else: every text with anything more (an anchor or an
 * alias, a tag, a directive, a merge key, a duplicate key, a key that is not a scalar, nesting
 * deeper than the limit, a syntax error, a string that is not UTF-8) is answered ``None``, and
 * the Python path parses it, with every position and every error.
 *
 * Plain scalars whose first character could make them something other than a string (a digit,
 * ``y``, ``n``, ``~``...) are resolved by a Python function: the rules of ``_yaml._Loader`` stay
 * in one place. ``configure`` gives that function, what it answers for "leave this text to the
 * Python path", the first characters to ask it about and the nesting limit.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <yaml.h>

static PyObject *plain_value = NULL; /* the Python resolver of a plain scalar's text */
static PyObject *not_plain = NULL;   /* what it answers for a text the Python path must take */
static char asked[256];              /* first bytes of the plain scalars to ask it about */
static int ask_all = 0;
static Py_ssize_t max_depth = 0;     /* 0 until configured */

typedef struct {
    PyObject *container; /* a list or a dict */
    PyObject *key;       /* in a dict, the key read and waiting for its value */
    yaml_mark_t start;
} Frame;

typedef enum { GOING, DONE, SLOW, FAILED } Status;

typedef struct {
    Frame *frames;
    Py_ssize_t depth;
    PyObject *documents;
    PyObject *root;
    yaml_mark_t root_start, root_end;
    Status status;
} Build;

static PyObject *
scalar_value(const yaml_event_t *event, Status *status)
{
    const char *text = (const char *)event->data.scalar.value;
    size_t length = event->data.scalar.length;
    PyObject *value = PyUnicode_DecodeUTF8(text, (Py_ssize_t)length, "strict");
    if (value == NULL) {
        *status = FAILED;
        return NULL;
    }
    if (!event->data.scalar.plain_implicit) /* quoted: a string */
        return value;
    if (!ask_all && length > 0 && !asked[(unsigned char)text[0]])
        return value;
    PyObject *resolved = PyObject_CallOneArg(plain_value, value);
    Py_DECREF(value);
    if (resolved == NULL) {
        *status = FAILED;
        return NULL;
    }
    if (resolved == not_plain) {
        Py_DECREF(resolved);
        *status = SLOW;
        return NULL;
    }
    return resolved;
}

/* Put ``value`` (a reference given away) where it belongs: the root, a list's next item, a
 * dict's key (a scalar's text) or the value of the key read before it. */
static void
place(Build *build, PyObject *value, int is_key_text, yaml_mark_t start, yaml_mark_t end)
{
    if (build->depth == 0) {
        build->root = value;
        build->root_start = start;
        build->root_end = end;
        return;
    }
    Frame *frame = &build->frames[build->depth - 1];
    if (PyList_CheckExact(frame->container)) {
        if (PyList_Append(frame->container, value) < 0)
            build->status = FAILED;
        Py_DECREF(value);
        return;
    }
    if (frame->key == NULL) {
        /* a key: only a scalar, taken as written; "<<" is a merge key */
        if (!is_key_text || PyUnicode_CompareWithASCIIString(value, "<<") == 0) {
            Py_DECREF(value);
            build->status = SLOW;
            return;
        }
        frame->key = value;
        return;
    }
    Py_ssize_t before = PyDict_GET_SIZE(frame->container);
    int failed = PyDict_SetItem(frame->container, frame->key, value);
    Py_DECREF(value);
    Py_CLEAR(frame->key);
    if (failed < 0)
        build->status = FAILED;
    else if (PyDict_GET_SIZE(frame->container) == before)
        build->status = SLOW; /* a duplicate key: the Python path reports it at its line */
}

static int
in_key_position(const Build *build)
{
    if (build->depth == 0)
        return 0;
    const Frame *frame = &build->frames[build->depth - 1];
    return PyDict_CheckExact(frame->container) && frame->key == NULL;
}

static void
take(Build *build, const yaml_event_t *event)
{
    switch (event->type) {
    case YAML_STREAM_START_EVENT:
        break;
    case YAML_STREAM_END_EVENT:
        build->status = DONE;
        break;
    case YAML_DOCUMENT_START_EVENT:
        if (event->data.document_start.version_directive != NULL
            || event->data.document_start.tag_directives.start
                   != event->data.document_start.tag_directives.end)
            build->status = SLOW;
        break;
    case YAML_DOCUMENT_END_EVENT: {
        if (build->root == NULL) {
            build->status = SLOW; /* not expected: a document always has a root node */
            break;
        }
        PyObject *document = Py_BuildValue(
            "(Nnnnn)", build->root, (Py_ssize_t)build->root_start.line,
            (Py_ssize_t)build->root_start.column, (Py_ssize_t)build->root_end.line,
            (Py_ssize_t)build->root_end.column);
        build->root = NULL; /* given to the tuple, even if it could not be made */
        if (document == NULL || PyList_Append(build->documents, document) < 0)
            build->status = FAILED;
        Py_XDECREF(document);
        break;
    }
    case YAML_ALIAS_EVENT:
        build->status = SLOW;
        break;
    case YAML_SCALAR_EVENT: {
        if (event->data.scalar.anchor != NULL || event->data.scalar.tag != NULL) {
            build->status = SLOW;
            break;
        }
        PyObject *value;
        int is_key = in_key_position(build);
        if (is_key) {
            value = PyUnicode_DecodeUTF8((const char *)event->data.scalar.value,
                                         (Py_ssize_t)event->data.scalar.length, "strict");
            if (value == NULL) {
                build->status = FAILED;
                break;
            }
            PyUnicode_InternInPlace(&value); /* field names repeat in every resource */
        }
        else {
            value = scalar_value(event, &build->status);
            if (value == NULL)
                break;
        }
        place(build, value, is_key, event->start_mark, event->end_mark);
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        int mapping = event->type == YAML_MAPPING_START_EVENT;
        const yaml_char_t *anchor = mapping ? event->data.mapping_start.anchor
                                            : event->data.sequence_start.anchor;
        const yaml_char_t *tag = mapping ? event->data.mapping_start.tag
                                         : event->data.sequence_start.tag;
        if (anchor != NULL || tag != NULL || build->depth >= max_depth
            || in_key_position(build)) {
            build->status = SLOW;
            break;
        }
        PyObject *container = mapping ? PyDict_New() : PyList_New(0);
        if (container == NULL) {
            build->status = FAILED;
            break;
        }
        Frame *frame = &build->frames[build->depth++];
        frame->container = container;
        frame->key = NULL;
        frame->start = event->start_mark;
        break;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        if (build->depth == 0) {
            build->status = SLOW;
            break;
        }
        Frame *frame = &build->frames[--build->depth];
        PyObject *container = frame->container;
        frame->container = NULL;
        Py_CLEAR(frame->key);
        place(build, container, 0, frame->start, event->end_mark);
        break;
    }
    default:
        build->status = SLOW;
    }
}

static PyObject *
load(PyObject *module, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "load() takes a str");
        return NULL;
    }
    if (plain_value == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
        return NULL;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 == NULL) { /* lone surrogates: the Python path says what it makes of them */
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Build build = {0};
    build.frames = PyMem_New(Frame, (size_t)max_depth);
    build.documents = PyList_New(0);
    if (build.frames == NULL || build.documents == NULL) {
        PyMem_Free(build.frames);
        Py_XDECREF(build.documents);
        return PyErr_NoMemory();
    }
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        PyMem_Free(build.frames);
        Py_DECREF(build.documents);
        return PyErr_NoMemory();
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)utf8, (size_t)size);
    build.status = GOING;
    while (build.status == GOING) {
        yaml_event_t event;
        if (!yaml_parser_parse(&parser, &event)) {
            build.status = SLOW; /* a syntax error: the Python path locates and reports it */
            break;
        }
        take(&build, &event);
        yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    while (build.depth > 0) {
        Frame *frame = &build.frames[--build.depth];
        Py_CLEAR(frame->container);
        Py_CLEAR(frame->key);
    }
    Py_CLEAR(build.root);
    PyMem_Free(build.frames);
    if (build.status == DONE)
        return build.documents;
    Py_DECREF(build.documents);
    if (build.status == FAILED)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *resolver, *sentinel, *first;
    Py_ssize_t depth;
    if (!PyArg_ParseTuple(args, "OOOn:configure", &resolver, &sentinel, &first, &depth))
        return NULL;
    if (!PyCallable_Check(resolver) || depth < 1) {
        PyErr_SetString(PyExc_ValueError, "configure(resolver, sentinel, first, depth)");
        return NULL;
    }
    memset(asked, 0, sizeof asked);
    ask_all = first == Py_None;
    if (!ask_all) {
        Py_ssize_t length;
        const char *bytes = PyUnicode_Check(first) ? PyUnicode_AsUTF8AndSize(first, &length)
                                                  : NULL;
        if (bytes == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "first characters: a str or None");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < length; i++)
            asked[(unsigned char)bytes[i]] = 1;
    }
    Py_INCREF(resolver);
    Py_XSETREF(plain_value, resolver);
    Py_INCREF(sentinel);
    Py_XSETREF(not_plain, sentinel);
    max_depth = depth;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"load", load, METH_O,
     "load(text) -> [(data, line, column, end_line, end_column), ...] for each document "
     "(0-based marks of its root node), or None: the text must take the Python path."},
    {"configure", configure, METH_VARARGS,
     "configure(resolver, sentinel, first_characters, max_depth)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "propylon.config._libyaml",
    "Plain YAML documents built from libyaml's events (see config/_yaml.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__libyaml(void)
{
    return PyModule_Create(&module_definition);
}
