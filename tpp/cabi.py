"""Kernel arguments as C sees them, for every Python caller: one cffi FFI that
declares tpp_tensor {data; int64_t ld;}, the kernel signatures, and the two
facts each entry needs from a numpy array (data address, row stride)."""
from __future__ import annotations

import ctypes

import cffi
import numpy as np

from .arrayabi import LAYOUT

ffi = cffi.FFI()
# data is declared as an integer here (the kernels read a pointer of the same size), so
# a table is built from Python ints in one ffi.new (~0.7 us for 4 entries; casting each
# address to void * took ~4 us)
ffi.cdef("typedef struct { intptr_t data; int64_t ld; } tpp_tensor;")
KERNEL = "void (*)(tpp_tensor *)"                       # a primitive
NEST = "void (*)(tpp_tensor *, int64_t, int64_t)"       # a composite's loop nest: (args, start, end)


def data_address(a: np.ndarray) -> int:
    """The data pointer: read from the array object where its layout is known (~0.3 us;
    __array_interface__ builds a dict, ~1.8 us)."""
    if LAYOUT is not None and type(a) is np.ndarray:
        return ctypes.c_void_p.from_address(id(a) + LAYOUT.data).value or 0
    return a.__array_interface__["data"][0]


def row_stride(a: np.ndarray, single_row: int) -> int:
    """Row stride in elements; `single_row` where there is at most one row (any stride
    numpy reports for it is meaningless)."""
    if a.ndim == 2 and a.shape[0] > 1:
        return a.strides[0] // a.itemsize
    return single_row


def tensors(entries: list[tuple[int, int]]):
    """A tpp_tensor[] from (data address, ld) pairs."""
    return ffi.new("tpp_tensor[]", entries)
