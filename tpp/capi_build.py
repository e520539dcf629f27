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
PYTHON_FUNCTIONS = ("tpp_init", "tpp_dispatch_unary", "tpp_dispatch_binary", "tpp_dispatch_gemm",
                    "tpp_dispatch_brgemm")

_C_SOURCE = r"""
#include <stdio.h>
#include "tpp.h"

/* The calling thread's last error (tpp_last_error); set from Python by capi.bind. */
static __thread int tpp_error_code_;
static __thread char tpp_error_message_[2048];

__attribute__((visibility("default"))) void tpp_capi_set_error(int code, const char *message) {
    tpp_error_code_ = code;
    snprintf(tpp_error_message_, sizeof tpp_error_message_, "%%s", message ? message : "");
}
__attribute__((visibility("default"))) int tpp_last_error_code(void) { return tpp_error_code_; }
__attribute__((visibility("default"))) const char *tpp_last_error(void) { return tpp_error_message_; }
__attribute__((visibility("default"))) const char *tpp_version(void) { return "%(version)s"; }
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
    for _name in %(dispatchers)r:
        ffi.def_extern(name=_name)(_failed)
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
    ffi.embedding_api("\n".join(exported))
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ffi.set_source(MODULE, _C_SOURCE % {"version": __version__}, include_dirs=[str(include)],
                   extra_link_args=[f"-Wl,-rpath,{libdir}"] if libdir else [])
    ffi.embedding_init_code(_INIT_CODE % {"paths": _python_paths(), "module": MODULE,
                                          "dispatchers": list(PYTHON_FUNCTIONS[1:])})
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
