"""tpp.ops.spmm: out (nrows, F) = A (nrows, ncols) @ x (ncols, F), A sparse.

A composite on the layer: the matrix's rows are a parallel loop split by nonzeros (the row
pointer is the cumulative weight: a power-law graph's long rows do not land on one
thread), and each row is ONE call of the opreduce primitive (kernels/opreduce.py), inlined:
the row's segment of column indices and values read from the row pointer at run time, x's
rows gathered and multiplied by the values into accumulators held in registers, the row
stored once. Each output row is written by one thread, so no atomics and no partial
buffers: threads 1 and 2 give bit-identical results.

Formats: CSR runs as it is (its arrays in place, scipy's csr_matrix shared without a copy).
Other formats (COO, BSR, ELL, CSC) are converted to CSR first, an O(nnz log nnz) step per
call (their own loop nests are not written yet).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .. import compose
from ..dtypes import parse as parse_dtype
from ..errors import DTypeError, IndexRangeError, ShapeError
from ..jit.loops import i64
from ..jit.types import DType
from ..opreduce_kernel import opreduce_desc
from ..sparse import SparseMatrix, from_scipy
from .segment import _ld

WHAT = "tpp.ops.spmm"
INDEX = {np.dtype(np.int32): DType.I32, np.dtype(np.int64): DType.I64}
_local = threading.local()


@dataclass(frozen=True)
class SpmmCsrDesc(compose.CompositeDesc):
    rows: int
    cols: int
    nnz: int
    features: int
    dtype: DType
    index: DType
    ldx: int
    ldo: int
    kind = "spmm_csr"

    def composite(self, target) -> compose.Composite:
        f, dt = self.features, self.dtype
        row_kernel = opreduce_desc(f, self.cols, self.nnz, dt, op="mul", reduce="sum", index_dtype=self.index)

        def row(ctx: compose.Context) -> None:
            r = ctx.index["row"]
            ctx.call(ctx.primitive(row_kernel),
                     [ctx.tensor("x").arg(), (ctx.tensor("indptr").at(r), 1), (ctx.tensor("indices").ptr, 1),
                      (ctx.tensor("values").ptr, 1), ctx.tensor("out").arg(r), (ctx.tensor("status").ptr, 1)])

        rows = compose.Loop("row", self.rows, (row,), parallel=True, weight="indptr")
        tensors = (compose.Tensor("indptr", self.index, (self.rows + 1,)),
                   compose.Tensor("indices", self.index, (self.nnz,)),
                   compose.Tensor("values", dt, (self.nnz,)),
                   compose.Tensor("x", dt, (self.cols, f), (self.ldx, 1)),
                   compose.Tensor("out", dt, (self.rows, f), (self.ldo, 1), output=True),
                   compose.Tensor("status", DType.I64, (1,), output=True))
        return compose.Composite(tensors, (rows,))


_memo = compose.Memo()


def as_sparse(what: str, a) -> SparseMatrix:
    """A tpp.sparse matrix, or a scipy.sparse one (shared, no copy where its arrays allow)."""
    if isinstance(a, SparseMatrix):
        return a
    if hasattr(a, "tocsr") and hasattr(a, "nnz"):
        return from_scipy(a)
    raise TypeError(f"{what}: a must be a tpp.sparse.SparseMatrix or a scipy.sparse matrix, "
                    f"got {type(a).__name__}")


def csr_arrays(a: SparseMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, values) of a CSR matrix (another format converted)."""
    if a.format.name != "csr":
        a = a.tocsr()
    row, col = a.axes
    return col.indptr, col.indices, a.values.reshape(-1)


def spmm(a, x: np.ndarray, *, out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """A @ x for a sparse A (nrows, ncols) (tpp.sparse or scipy.sparse; f32 or bf16 values)
    and a dense x (ncols, F) of the same dtype, rows unit-strided: out (nrows, F). 1-D x
    gives 1-D out. bf16 accumulates in f32 and rounds each output element once."""
    threads = compose.threads_arg(WHAT, threads)
    a = as_sparse(WHAT, a)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{WHAT}: x must be a numpy array, got {type(x).__name__}")
    if a.ndim != 2:
        raise ShapeError(f"{WHAT}: a must be a 2-D sparse matrix, got shape {a.shape}")
    if x.ndim == 1:
        flat = None if out is None else out.reshape(-1, 1) if isinstance(out, np.ndarray) and out.ndim == 1 else out
        return spmm(a, x[:, None], out=flat, threads=threads)[:, 0]
    (rows, cols) = a.shape
    if x.ndim != 2 or x.shape[0] != cols:
        raise ShapeError(f"{WHAT}: x must have shape ({cols}, F) (a has {cols} columns), got {x.shape}")
    if x.dtype != a.dtype:
        raise DTypeError(f"{WHAT}: x's dtype {x.dtype} differs from a's values ({a.dtype}); "
                         f"convert one (a.astype(...) or x.astype(...))")
    dtype = parse_dtype(x.dtype, "x.dtype")
    f = x.shape[1]
    if out is None:
        out = np.empty((rows, f), x.dtype)
    if not isinstance(out, np.ndarray) or out.shape != (rows, f) or out.dtype != x.dtype:
        raise ShapeError(f"{WHAT}: out must be a {x.dtype} array of shape {(rows, f)}, got "
                         f"{getattr(out, 'dtype', '')} {getattr(out, 'shape', type(out).__name__)}")
    indptr, indices, values = csr_arrays(a)
    if rows == 0 or f == 0:
        return out
    if values.size == 0 or cols == 0:
        out[...] = 0
        return out
    status = _status()
    arrays = [indptr, indices, values, x, out, status]
    if not _memo.call((), arrays, threads):
        for name, arr in (("x", x), ("out", out)):
            compose.check_rows(WHAT, name, arr)
        desc = SpmmCsrDesc(rows, cols, values.size, f, dtype, INDEX[indices.dtype], _ld(x), _ld(out))
        compose.run_checked(_memo, (), compose.program(WHAT, desc), arrays, threads)
    if status[0]:
        at = int(status[0]) - 1
        raise IndexRangeError(f"{WHAT}: a's column index {int(indices[at])} at position {at} is out of range "
                              f"for {cols} columns (the matrix's arrays changed after it was checked)")
    return out


def _status() -> np.ndarray:
    """This thread's status word, zeroed: the row kernels store 1 + a bad position in it."""
    try:
        status = _local.status
    except AttributeError:
        status = _local.status = np.empty(1, np.int64)
    status[0] = 0
    return status
