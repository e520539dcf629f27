"""The named formats as axis chains (csr, coo, bsr, ell), from_dense, canonicalization and the
conversions between formats (every conversion goes through sorted (row, col, value) triples)."""
from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, ShapeError
from .axes import PAD, as_index, dense_fixed, index_dtype_for, sparse_fixed, sparse_variable
from .formats import SparseMatrix, as_values


def _shape2(shape, what="shape") -> tuple[int, int]:
    try:
        m, n = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ShapeError(f"tpp.sparse: {what} must be (rows, cols), got {shape!r}") from None
    if m < 0 or n < 0:
        raise ShapeError(f"tpp.sparse: {what}={shape!r} must be non-negative")
    return m, n


def _common_index(arrays, names, maxval) -> list[np.ndarray]:
    """One index dtype for all of a matrix's arrays: int32/int64 inputs keep their width (the
    widest of them), anything else gets int32 where the values fit (see axes.as_index)."""
    arrs = [as_index(a, nm) for a, nm in zip(arrays, names)]
    wide = max((a.dtype.itemsize for a in arrs), default=4)
    dt = np.dtype(np.int64) if wide == 8 else index_dtype_for(maxval)
    return [np.ascontiguousarray(a, dtype=dt) for a in arrs]


# --- constructors ------------------------------------------------------------------------------
def csr(indptr, indices, values, shape, *, canonical: bool = False, dtype=None) -> SparseMatrix:
    """CSR: dense_fixed(rows) / sparse_variable(cols). canonical=True sorts each row's columns
    and sums duplicates (scipy's sum_duplicates); else unsorted or duplicate columns raise."""
    m, n = _shape2(shape)
    vals = as_values(values, dtype=dtype).reshape(-1)
    indptr, indices = _common_index((indptr, indices), ("indptr", "indices"), max(m, n, vals.size))
    if canonical:
        p = indptr.astype(np.int64)
        if p.ndim != 1 or p.shape[0] != m + 1 or (np.diff(p) < 0).any() or p[0] != 0 \
                or p[-1] != indices.size or indices.size != vals.size:
            # the axes' checks say exactly what is wrong with these arrays
            return SparseMatrix((m, n), _csr_axes(m, n, indptr, indices), vals)
        row = np.repeat(np.arange(m, dtype=np.int64), np.diff(p))
        return from_coords(row, indices, vals, (m, n), "csr", index_dtype=indices.dtype)
    return SparseMatrix((m, n), _csr_axes(m, n, indptr, indices), vals)


def _csr_axes(m, n, indptr, indices):
    return (dense_fixed(m, 0, "row"), sparse_variable(n, 1, indptr, indices, "col"))


def coo(row, col, values, shape, *, canonical: bool = False, dtype=None) -> SparseMatrix:
    """COO: sparse_fixed(rows, one per entry, not unique) / sparse_fixed(cols, 1). Entries must be
    sorted by (row, col) without duplicates, or canonical=True sorts them and sums duplicates."""
    m, n = _shape2(shape)
    vals = as_values(values, dtype=dtype).reshape(-1)
    row, col = _common_index((row, col), ("row", "col"), max(m, n, vals.size))
    if row.ndim != 1 or col.shape != row.shape or vals.shape != row.shape:
        raise ShapeError(f"tpp.sparse: row, col and values must be 1-D of one length, got "
                         f"{row.shape}, {col.shape}, {vals.shape}")
    if canonical:
        _check_range(row, m, "row")
        _check_range(col, n, "col")
        return from_coords(row, col, vals, (m, n), "coo", index_dtype=row.dtype)
    return SparseMatrix((m, n), _coo_axes(m, n, row, col), vals)


def _coo_axes(m, n, row, col):
    return (sparse_fixed(m, 0, row, row.shape[0], "row", unique=False),
            sparse_fixed(n, 1, col, 1, "col"))


def bsr(indptr, indices, values, shape, *, canonical: bool = False, dtype=None) -> SparseMatrix:
    """BSR with r x c blocks (values shaped (nblocks, r, c)): dense_fixed(block rows) /
    sparse_variable(block cols) / dense_fixed(r) / dense_fixed(c). shape must be a multiple of
    the block. canonical=True sorts blocks within a block row and sums duplicate blocks."""
    m, n = _shape2(shape)
    vals = as_values(values, dtype=dtype)
    if vals.ndim != 3 or 0 in vals.shape[1:]:
        raise ShapeError(f"tpp.sparse: bsr values must be (nblocks, r, c) with r, c >= 1, got "
                         f"shape {vals.shape}")
    r, c = vals.shape[1:]
    if m % r or n % c:
        raise ShapeError(f"tpp.sparse: bsr shape {(m, n)} is not a multiple of the block {(r, c)}")
    indptr, indices = _common_index((indptr, indices), ("indptr", "indices"), max(m, n, vals.size))
    axes = _bsr_axes(m, n, r, c, indptr, indices)
    if canonical:        # sort only arrays the axes' checks would pass but for the order
        p = indptr.astype(np.int64)
        if p.shape == (m // r + 1,) and p[0] == 0 and (np.diff(p) >= 0).all() and p[-1] == indices.size \
                and indices.ndim == 1 and indices.size == vals.shape[0]:
            _check_range(indices, n // c, "indices")
            brow = np.repeat(np.arange(m // r), np.diff(p))
            key = brow * max(n // c, 1) + indices
            order = np.argsort(key, kind="stable")
            ukey, start = np.unique(key[order], return_index=True)
            summed = np.add.reduceat(vals[order].astype(np.float32), start, axis=0) \
                if order.size else vals[:0].astype(np.float32)
            ptr = np.zeros(m // r + 1, indptr.dtype)
            np.cumsum(np.bincount(ukey // max(n // c, 1), minlength=m // r), out=ptr[1:])
            ind = (ukey % max(n // c, 1)).astype(indptr.dtype)
            return SparseMatrix((m, n), _bsr_axes(m, n, r, c, ptr, ind),
                                np.ascontiguousarray(summed, vals.dtype))
    return SparseMatrix((m, n), axes, vals)


def _bsr_axes(m, n, r, c, indptr, indices):
    return (dense_fixed(m // r, 0, "block_row"), sparse_variable(n // c, 1, indptr, indices, "block_col"),
            dense_fixed(r, 0, "row_in_block"), dense_fixed(c, 1, "col_in_block"))


def ell(indices, values, shape, *, dtype=None) -> SparseMatrix:
    """ELL: dense_fixed(rows) / sparse_fixed(cols, width, padded). indices and values are
    (rows, width); a row's columns come first, sorted, then PAD (-1) slots with zero values."""
    m, n = _shape2(shape)
    vals = as_values(values, dtype=dtype)
    (idx,) = _common_index((indices,), ("indices",), max(m, n))
    if idx.ndim != 2 or idx.shape[0] != m or vals.shape != idx.shape:
        raise ShapeError(f"tpp.sparse: ell indices and values must both be ({m}, width), got "
                         f"{idx.shape} and {vals.shape}")
    return SparseMatrix((m, n), _ell_axes(m, n, idx), vals)


def _ell_axes(m, n, idx):
    return (dense_fixed(m, 0, "row"), sparse_fixed(n, 1, idx, idx.shape[1], "col", padded=True))


def from_dense(a, format: str = "csr", *, block=None, width=None, dtype=None,
               index_dtype=None) -> SparseMatrix:
    """The nonzeros of a 2-D array in `format` ("csr", "coo", "bsr" with block=(r, c), "ell")."""
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ShapeError(f"tpp.sparse: from_dense needs a 2-D array, got shape {arr.shape}")
    vals = as_values(arr, "a", dtype)
    row, col = np.nonzero(vals)
    return from_coords(row, col, vals[row, col], arr.shape, format, block=block, width=width,
                       index_dtype=index_dtype)


# --- canonical construction from triples -------------------------------------------------------
def _check_range(a, n, what) -> None:
    if a.size and (int(a.min()) < 0 or int(a.max()) >= n):
        q = int(np.argmax((a < 0) | (a >= n)))
        raise ArgumentError(f"tpp.sparse: {what}: entry {q} is {int(a[q])}, out of range [0, {n})")


def from_coords(row, col, vals, shape, format: str = "csr", *, block=None, width=None,
                index_dtype=None, sum_duplicates: bool = True) -> SparseMatrix:
    """Build `format` from (row, col, value) triples in any order: sorted by (row, col) and
    duplicates summed (in f32, rounded once to the values' dtype), explicit zeros kept (scipy's
    sum_duplicates semantics). Index dtype: the given one if it holds the matrix, else int32
    where it fits."""
    m, n = _shape2(shape)
    row, col = np.asarray(row, np.int64).reshape(-1), np.asarray(col, np.int64).reshape(-1)
    vals = as_values(vals).reshape(-1)
    if vals.shape != row.shape or col.shape != row.shape:
        raise ShapeError(f"tpp.sparse: row, col and values must have one length, got "
                         f"{row.shape}, {col.shape}, {vals.shape}")
    _check_range(row, m, "row")
    _check_range(col, n, "col")
    order = np.lexsort((col, row))
    row, col, vals = row[order], col[order], vals[order]
    if row.size > 1:
        new = np.ones(row.size, bool)
        new[1:] = (row[1:] != row[:-1]) | (col[1:] != col[:-1])
        if not new.all():
            if not sum_duplicates:
                raise ArgumentError("tpp.sparse: duplicate (row, col) entries")
            start = np.flatnonzero(new)
            vals = np.add.reduceat(vals.astype(np.float32), start).astype(vals.dtype)
            row, col = row[start], col[start]
    it = index_dtype_for(max(m, n, row.size), index_dtype)
    vals = np.ascontiguousarray(vals)
    if format == "csr":
        ptr = np.zeros(m + 1, it)
        np.cumsum(np.bincount(row, minlength=m), out=ptr[1:])
        return SparseMatrix((m, n), _csr_axes(m, n, ptr, col.astype(it)), vals, check=False)
    if format == "coo":
        return SparseMatrix((m, n), _coo_axes(m, n, row.astype(it), col.astype(it)), vals,
                            check=False)
    if format == "ell":
        return _ell_from_sorted(row, col, vals, (m, n), width, it)
    if format == "bsr":
        return _bsr_from_sorted(row, col, vals, (m, n), block, it)
    raise ArgumentError(f"tpp.sparse: format={format!r}; use 'csr', 'coo', 'bsr' or 'ell'")


def _ell_from_sorted(row, col, vals, shape, width, it) -> SparseMatrix:
    m, n = shape
    counts = np.bincount(row, minlength=m)
    longest = int(counts.max()) if m else 0
    width = longest if width is None else int(width)
    if width < longest:
        raise ArgumentError(f"tpp.sparse: ell width={width} is less than the longest row "
                            f"({longest} entries); use hyb() to split long rows")
    starts = np.zeros(m + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    slot = np.arange(row.size) - starts[row]         # rank of each entry within its row
    idx = np.full((m, width), PAD, it)
    v = np.zeros((m, width), vals.dtype)
    idx[row, slot], v[row, slot] = col, vals
    return SparseMatrix(shape, _ell_axes(m, n, idx), v, check=False)


def _bsr_from_sorted(row, col, vals, shape, block, it) -> SparseMatrix:
    m, n = shape
    try:
        r, c = (int(b) for b in block)
    except (TypeError, ValueError):
        raise ArgumentError(f"tpp.sparse: bsr needs block=(r, c), got {block!r}") from None
    if r < 1 or c < 1:
        raise ArgumentError(f"tpp.sparse: block={block!r} must be positive")
    if m % r or n % c:
        raise ShapeError(f"tpp.sparse: shape {(m, n)} is not a multiple of the block {(r, c)}")
    nbc = max(n // c, 1)
    key = (row // r) * nbc + col // c
    ukey, inv = np.unique(key, return_inverse=True)
    blocks = np.zeros((ukey.size, r, c), vals.dtype)
    blocks[inv, row % r, col % c] = vals
    ptr = np.zeros(m // r + 1, it)
    np.cumsum(np.bincount(ukey // nbc, minlength=m // r), out=ptr[1:])
    return SparseMatrix(shape, _bsr_axes(m, n, r, c, ptr, (ukey % nbc).astype(it)), blocks,
                        check=False)


def convert(a: SparseMatrix, format: str, **kw) -> SparseMatrix:
    """`a` in another named format, keeping its values' and (where it fits) indices' dtype."""
    (row, col), vals = a.coords()
    return from_coords(row, col, vals, a.shape, format, index_dtype=a.index_dtype,
                       sum_duplicates=False, **kw)
