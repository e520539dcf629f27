"""numpy's BLAS on one thread, for a fair one-core GEMM comparison.

numpy's OpenBLAS starts one worker per CPU when it loads, and pinning the
benchmark's thread (sched_setaffinity(0, ...)) does not move those workers:
without this, np.matmul at 256^3 ran on both CPUs of the VM (166 GFLOP/s
against 99 on one thread). OPENBLAS_NUM_THREADS comes too late once numpy is
imported, so the thread count is set through OpenBLAS's own entry points in
the loaded library (what threadpoolctl does), and restored afterwards.
"""
from __future__ import annotations

import contextlib
import ctypes
import os

_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "_64_", "")


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process."""
    import numpy  # noqa: F401  (loads numpy's BLAS)
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                name = path.rsplit("/", 1)[-1].lower()
                if "openblas" in name and ".so" in name and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    return paths


def _entry(lib: ctypes.CDLL, what: str):
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            fn = getattr(lib, f"{prefix}_{what}{suffix}", None)
            if fn is not None:
                return fn
    return None


def _controls() -> list[tuple]:
    out = []
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        get, put = _entry(lib, "get_num_threads"), _entry(lib, "set_num_threads")
        if get is not None and put is not None:
            get.restype = ctypes.c_int
            put.argtypes = [ctypes.c_int]
            out.append((get, put))
    return out


def threads() -> int | None:
    """numpy's BLAS thread count (None: no OpenBLAS found, so unknown)."""
    found = _controls()
    return max(get() for get, _ in found) if found else None


@contextlib.contextmanager
def limit(n: int = 1):
    """Run numpy's BLAS on at most n threads inside the block."""
    found = _controls()
    saved = [get() for get, _ in found]
    for _, put in found:
        put(n)
    try:
        yield
    finally:
        for (_, put), value in zip(found, saved):
            put(value)


def setter(n: int):
    """A function that sets numpy's BLAS thread count to n (cheap: the library's entry
    points are looked up once, here); a no-op where no OpenBLAS was found."""
    puts = [put for _, put in _controls()]

    def apply() -> None:
        for put in puts:
            put(n)
    return apply
