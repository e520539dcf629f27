"""Build libtpp.so, its header and a pkg-config file (cffi's embedding mode).

    tpp-capi build --out DIR        (or: python -m tpp.capi_build build --out DIR)

writes DIR/include/tpp.h, DIR/lib/libtpp.so and DIR/lib/pkgconfig/tpp.pc. Then

    cc prog.c $(PKG_CONFIG_PATH=DIR/lib/pkgconfig pkg-config --cflags --libs tpp)

The library embeds the Python that builds it (linked to its libpython, with an
rpath) and, on its first call, adds that Python's site-packages directories to
sys.path, so the tpp package found at build time is found again without an
activated environment. Set PYTHONPATH to use another; PYTHONHOME must not point
at a virtual environment (a venv has no standard library of its own).
"""
from __future__ import annotations

import argparse
import os
import shutil
import site
import sys
import sysconfig
import tempfile
from pathlib import Path

HEADER = Path(__file__).parent / "include" / "tpp.h"
MODULE = "_tpp_capi"                   # the embedding module's name inside the library
BEGIN, END = "/* BEGIN DECLARATIONS", "/* END DECLARATIONS */"
# exported functions implemented in Python (capi.bind); the others are C (see _C_SOURCE)
PYTHON_FUNCTIONS = ("tpp_init", "tpp_capi_dispatch", "tpp_capi_dispatch_equation")

# C side of the library: the per-thread error slot, and a cache of dispatched kernels
# keyed by the descriptor's contents, so that a repeated dispatch never enters Python
# (~0.1 us instead of ~25 us). Misses go to tpp_capi_dispatch (Python, capi.bind).
_C_SOURCE = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tpp.h"

#define EXPORT __attribute__((visibility("default")))
tpp_kernel tpp_capi_dispatch(int which, const tpp_desc *desc);

static __thread int tpp_error_code_;
static __thread char tpp_error_message_[2048];

EXPORT void tpp_capi_set_error(int code, const char *message) {
    tpp_error_code_ = code;
    snprintf(tpp_error_message_, sizeof tpp_error_message_, "%%s", message ? message : "");
}
EXPORT int tpp_last_error_code(void) { return tpp_error_code_; }
EXPORT const char *tpp_last_error(void) { return tpp_error_message_; }
EXPORT const char *tpp_version(void) { return "%(version)s"; }

/* ---- dispatched kernels, by descriptor contents ---- */
enum { STRINGS = 9, BUCKETS = 4096 };
typedef struct entry {
    struct entry *next;
    int which;
    tpp_desc desc;                     /* numbers; its string pointers are not used */
    char *strings[STRINGS];            /* copies of the descriptor's strings (NULL kept) */
    tpp_kernel kernel;
} entry;
static entry *table_[BUCKETS];
static pthread_mutex_t lock_ = PTHREAD_MUTEX_INITIALIZER;

static void strings_of(const tpp_desc *d, const char *out[STRINGS]) {
    const char *s[STRINGS] = {d->kind, d->dtype, d->out_dtype, d->broadcast_a, d->broadcast_b,
                              d->epilogue, d->variant, d->target, NULL};
    memcpy(out, s, sizeof s);
}

static uint64_t mix(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ULL;     /* FNV-1a */
    return h;
}

static uint64_t hash_of(int which, const tpp_desc *d, const char *s[STRINGS]) {
    int64_t numbers[9] = {d->m, d->n, d->k, d->lda, d->ldb, d->ldc, d->stride_a, d->stride_b, which};
    uint64_t h = mix(14695981039346656037ULL, numbers, sizeof numbers);
    h = mix(h, &d->alpha, sizeof d->alpha);
    h = mix(h, &d->flags, sizeof d->flags);
    for (int i = 0; i < STRINGS; i++) h = s[i] ? mix(h, s[i], strlen(s[i]) + 1) : mix(h, "", 0) * 31;
    return h;
}

static int same(const entry *e, int which, const tpp_desc *d, const char *s[STRINGS]) {
    const tpp_desc *k = &e->desc;
    if (e->which != which || k->m != d->m || k->n != d->n || k->k != d->k || k->lda != d->lda ||
        k->ldb != d->ldb || k->ldc != d->ldc || k->stride_a != d->stride_a || k->stride_b != d->stride_b ||
        memcmp(&k->alpha, &d->alpha, sizeof d->alpha) != 0 || k->flags != d->flags)
        return 0;
    for (int i = 0; i < STRINGS; i++) {
        if ((e->strings[i] == NULL) != (s[i] == NULL)) return 0;
        if (s[i] && strcmp(e->strings[i], s[i]) != 0) return 0;
    }
    return 1;
}

static tpp_kernel dispatch(int which, const tpp_desc *desc) {
    if (desc == NULL) return tpp_capi_dispatch(which, desc);      /* Python reports it */
    const char *s[STRINGS];
    strings_of(desc, s);
    uint64_t h = hash_of(which, desc, s) %% BUCKETS;
    pthread_mutex_lock(&lock_);
    for (entry *e = table_[h]; e; e = e->next)
        if (same(e, which, desc, s)) {
            tpp_kernel k = e->kernel;
            pthread_mutex_unlock(&lock_);
            tpp_error_code_ = TPP_OK;
            tpp_error_message_[0] = 0;
            return k;
        }
    pthread_mutex_unlock(&lock_);
    tpp_kernel k = tpp_capi_dispatch(which, desc);
    if (k == NULL) return NULL;
    entry *e = calloc(1, sizeof *e);
    if (e == NULL) return k;                                      /* works, just not cached */
    e->which = which;
    e->desc = *desc;
    e->kernel = k;
    for (int i = 0; i < STRINGS; i++) e->strings[i] = s[i] ? strdup(s[i]) : NULL;
    pthread_mutex_lock(&lock_);
    e->next = table_[h];
    table_[h] = e;
    pthread_mutex_unlock(&lock_);
    return k;
}

/* ---- equations: cached by their serialised contents (numbers, then each string or a
   marker for NULL) ---- */
tpp_kernel tpp_capi_dispatch_equation(const tpp_equation_desc *desc);
typedef struct eq_entry {
    struct eq_entry *next;
    size_t size;
    unsigned char *key;
    tpp_kernel kernel;
} eq_entry;
static eq_entry *eq_table_[BUCKETS];

typedef struct { unsigned char *p; size_t size, cap; } bytes;
static int put(bytes *b, const void *data, size_t n) {
    if (b->size + n > b->cap) {
        size_t cap = 2 * (b->size + n) + 64;
        unsigned char *p = realloc(b->p, cap);
        if (p == NULL) return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->size, data, n);
    b->size += n;
    return 1;
}
static int put_text(bytes *b, const char *s) {
    static const unsigned char none = 0xFF;             /* NULL: a byte no UTF-8 text holds */
    return s ? put(b, s, strlen(s) + 1) : put(b, &none, 1);
}

static tpp_kernel dispatch_equation(const tpp_equation_desc *d) {
    if (d == NULL || d->nodes == NULL || d->count <= 0 || d->count > 4096)
        return tpp_capi_dispatch_equation(d);                       /* Python reports it */
    bytes key = {0};
    int ok = put(&key, &d->m, sizeof d->m) && put(&key, &d->n, sizeof d->n) &&
             put(&key, &d->count, sizeof d->count) && put_text(&key, d->out_dtype) && put_text(&key, d->target);
    for (int64_t i = 0; ok && i < d->count; i++) {
        const tpp_eq_node *e = &d->nodes[i];
        ok = put(&key, &e->op, sizeof e->op) && put(&key, &e->a, sizeof e->a) && put(&key, &e->b, sizeof e->b) &&
             put(&key, &e->value, sizeof e->value) && put(&key, &e->flags, sizeof e->flags) &&
             put_text(&key, e->kind) && put_text(&key, e->dtype);
    }
    if (!ok) {
        free(key.p);
        return tpp_capi_dispatch_equation(d);                       /* no memory to cache: just dispatch */
    }
    uint64_t h = mix(14695981039346656037ULL, key.p, key.size) %% BUCKETS;
    pthread_mutex_lock(&lock_);
    for (eq_entry *e = eq_table_[h]; e; e = e->next)
        if (e->size == key.size && memcmp(e->key, key.p, key.size) == 0) {
            tpp_kernel k = e->kernel;
            pthread_mutex_unlock(&lock_);
            free(key.p);
            tpp_error_code_ = TPP_OK;
            tpp_error_message_[0] = 0;
            return k;
        }
    pthread_mutex_unlock(&lock_);
    tpp_kernel k = tpp_capi_dispatch_equation(d);
    eq_entry *e = k ? calloc(1, sizeof *e) : NULL;
    if (e == NULL) {
        free(key.p);
        return k;
    }
    e->size = key.size;
    e->key = key.p;
    e->kernel = k;
    pthread_mutex_lock(&lock_);
    e->next = eq_table_[h];
    eq_table_[h] = e;
    pthread_mutex_unlock(&lock_);
    return k;
}

EXPORT tpp_kernel tpp_dispatch_equation(const tpp_equation_desc *desc) { return dispatch_equation(desc); }
EXPORT tpp_kernel tpp_dispatch_unary(const tpp_desc *desc) { return dispatch(0, desc); }
EXPORT tpp_kernel tpp_dispatch_binary(const tpp_desc *desc) { return dispatch(1, desc); }
EXPORT tpp_kernel tpp_dispatch_gemm(const tpp_desc *desc) { return dispatch(2, desc); }
EXPORT tpp_kernel tpp_dispatch_brgemm(const tpp_desc *desc) { return dispatch(3, desc); }
"""

_INIT_CODE = """
import site, sys
for _path in %(paths)r:
    if _path not in sys.path:
        site.addsitedir(_path)
from %(module)s import ffi, lib
try:
    from tpp import capi
    capi.bind(ffi, lib)
except BaseException as _exc:           # report through tpp_last_error, never abort the host
    _message = ("libtpp: cannot import the tpp package (%%s: %%s); set PYTHONPATH to where it is "
                "installed" %% (type(_exc).__name__, _exc)).encode()

    def _failed(*args):
        lib.tpp_capi_set_error(5, _message)
        return ffi.NULL

    def _failed_init():
        lib.tpp_capi_set_error(5, _message)
        return 5
    ffi.def_extern(name="tpp_init")(_failed_init)
    ffi.def_extern(name="tpp_capi_dispatch")(_failed)
    ffi.def_extern(name="tpp_capi_dispatch_equation")(_failed)
"""


TENSOR = "typedef struct tpp_tensor { void *data; int64_t ld; } tpp_tensor;"   # as tpp.h declares it


def declarations() -> str:
    """The header's declaration section (typedefs, #defines, prototypes), after tpp_tensor
    (declared in the header under an include guard that cffi cannot read)."""
    text = HEADER.read_text()
    return TENSOR + "\n" + text[text.index(BEGIN):text.index(END)].split("\n", 1)[1]


def _python_paths() -> list[str]:
    """Where this Python finds tpp and its dependencies (site-packages, the source tree
    of an editable install resolves through its .pth files there)."""
    paths = list(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str) and os.path.isdir(user):
        paths.append(user)
    return [p for p in paths if os.path.isdir(p)]


def build(out: str | Path, verbose: bool = False) -> dict[str, Path]:
    """Write include/tpp.h, lib/libtpp.so and lib/pkgconfig/tpp.pc under `out`."""
    import cffi

    from . import __version__
    out = Path(out).resolve()
    include, lib = out / "include", out / "lib"
    pkgconfig = lib / "pkgconfig"
    for d in (include, lib, pkgconfig):
        d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HEADER, include / "tpp.h")

    ffi = cffi.FFI()
    decl = declarations()
    exported = [line for line in decl.splitlines()
                if any(line.split("(")[0].endswith(" " + name) for name in PYTHON_FUNCTIONS)]
    types = "\n".join(line for line in decl.splitlines() if line not in exported)
    ffi.cdef(types)                          # the types first: the exported prototypes use them
    ffi.cdef("void tpp_capi_set_error(int code, const char *message);")
    ffi.embedding_api("\n".join(exported) + "\ntpp_kernel tpp_capi_dispatch(int which, const tpp_desc *desc);"
                      "\ntpp_kernel tpp_capi_dispatch_equation(const tpp_equation_desc *desc);")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ffi.set_source(MODULE, _C_SOURCE % {"version": __version__}, include_dirs=[str(include)],
                   extra_link_args=[f"-Wl,-rpath,{libdir}"] if libdir else [])
    ffi.embedding_init_code(_INIT_CODE % {"paths": _python_paths(), "module": MODULE})
    with tempfile.TemporaryDirectory(prefix="tpp-capi-") as tmp:
        built = Path(ffi.compile(tmpdir=tmp, target="libtpp.*", verbose=verbose))
        library = lib / "libtpp.so"
        shutil.copyfile(built, library)
    pc = pkgconfig / "tpp.pc"
    pc.write_text(f"prefix={out}\nincludedir=${{prefix}}/include\nlibdir=${{prefix}}/lib\n\n"
                  f"Name: tpp\nDescription: Tensor Processing Primitives, JIT-compiled (C interface)\n"
                  f"Version: {__version__}\nCflags: -I${{includedir}}\n"
                  f"Libs: -L${{libdir}} -ltpp -Wl,-rpath,${{libdir}}\n")
    return {"header": include / "tpp.h", "library": library, "pkgconfig": pc}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tpp-capi", description="Build the C interface of tpp.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write include/tpp.h, lib/libtpp.so and lib/pkgconfig/tpp.pc")
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--verbose", action="store_true", help="show the compiler's commands")
    args = parser.parse_args(argv)
    try:
        paths = build(args.out, args.verbose)
    except Exception as exc:            # a compiler or cffi failure: say what, no traceback
        print(f"tpp-capi: build failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
