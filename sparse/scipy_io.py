"""scipy.sparse in and out. Arrays are shared, not copied, wherever they already have a dtype and
layout this package stores (f32/bf16 values, int32/int64 indices, C-contiguous).

scipy is imported here on first use only: tpp.sparse itself needs numpy alone
(`pip install tpp[sparse]` brings scipy)."""
from __future__ import annotations

import importlib

import numpy as np

from ..errors import ArgumentError
from .convert import bsr, coo, csr
from .formats import SparseMatrix, as_values


def from_scipy(a, *, canonical: bool = False, dtype=None) -> SparseMatrix:
    """A SparseMatrix viewing a scipy.sparse array or matrix: csr -> csr, csc -> csc (CSR's
    axes with their dims swapped), coo -> coo, bsr -> bsr; other formats (lil, dok, dia) go
    through a.tocsr() (a copy). float32 data and int32/int64 indices are shared (zero-copy);
    float64 and integer data are converted to f32 (a copy), or to `dtype` ("f32"/"bf16").
    Index widths are kept. Unsorted or duplicate indices raise ArgumentError unless
    canonical=True, which sorts and sums duplicates into new arrays (scipy's
    sum_duplicates; the input is never modified)."""
    sp = _scipy_sparse()
    if sp is None or not sp.issparse(a):
        raise ArgumentError(f"tpp.sparse: from_scipy needs a scipy.sparse array or matrix, got "
                            f"{type(a).__name__}")
    fmt = a.format
    if fmt not in ("csr", "csc", "coo", "bsr"):
        a, fmt = a.tocsr(), "csr"
    data = as_values(a.data, "data", dtype)
    if fmt == "csr":
        return csr(a.indptr, a.indices, data, a.shape, canonical=canonical)
    if fmt == "csc":
        return csr(a.indptr, a.indices, data, a.shape[::-1], canonical=canonical).transpose()
    if fmt == "coo":
        row, col = a.coords if hasattr(a, "coords") else (a.row, a.col)
        return coo(row, col, data, a.shape, canonical=canonical)
    return bsr(a.indptr, a.indices, data, a.shape, canonical=canonical)


def to_scipy(m: SparseMatrix):
    """A scipy.sparse array of `m`: csr/csc/coo/bsr as the same scipy format sharing m's arrays
    (zero-copy); ELL and other formats as csr_array (a copy, padding dropped). scipy cannot
    hold bfloat16: bf16 values are converted to float32 (a copy of the values; the index
    arrays are still shared)."""
    sp = _scipy_sparse()
    if sp is None:
        raise ImportError("tpp.sparse.to_scipy needs scipy (pip install tpp[sparse])")
    vals = m.values if m.dtype == np.float32 else m.values.astype(np.float32)
    name = m.format.name
    ax = m.axes
    if name in ("csr", "csc"):
        cls = sp.csr_array if name == "csr" else sp.csc_array
        return cls((vals, ax[1].indices, ax[1].indptr), shape=m.shape, copy=False)
    if name == "coo":
        return sp.coo_array((vals, (ax[0].indices, ax[1].indices)), shape=m.shape, copy=False)
    if name == "bsr":
        return sp.bsr_array((vals, ax[1].indices, ax[1].indptr), shape=m.shape, copy=False)
    return to_scipy(m.tocsr())


def _scipy_sparse():
    """scipy.sparse, or None where scipy is not installed."""
    try:
        return importlib.import_module("scipy.sparse")
    except ImportError:
        return None
