"""tpp.ops.segment_sum: out[i] = sum of x[indptr[i] : indptr[i + 1]] (CSR segments).

A composite on the layer with extents read from data: the rows are a parallel
loop split by nonzeros (the row pointer is the cumulative weight: each thread
gets rows holding about the same number of x rows, plus one per row), and each
row is a loop over its range of x, read from indptr at run time. Per row: the
zero primitive, then the add primitive of each x row into it (the output row
stays in L1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import compose
from ..descriptors import BinaryDesc, UnaryDesc
from ..dtypes import parse as parse_dtype
from ..errors import DTypeError, ShapeError
from ..jit.loops import i64
from ..jit.types import DType

WHAT = "tpp.ops.segment_sum"
DTYPES = (DType.F32, DType.F64, DType.BF16)
INDEX = {np.dtype(np.int32): DType.I32, np.dtype(np.int64): DType.I64}


@dataclass(frozen=True)
class SegmentSumDesc(compose.CompositeDesc):
    rows: int
    nnz: int
    features: int
    dtype: DType
    index: DType
    ldx: int
    ldo: int
    kind = "segment_sum"

    def composite(self, target) -> compose.Composite:
        f, dt = self.features, self.dtype
        # bf16 rows are summed in f32 (a bf16 running sum loses 2**-8 per add): into a
        # per-thread f32 row, each x row cast to f32 first, the sum cast back at the end
        acc_dt = DType.F32 if dt is DType.BF16 else dt
        zero = UnaryDesc("zero", 1, f, acc_dt, acc_dt)
        add = BinaryDesc("add", 1, f, acc_dt)

        def acc(ctx):
            return (ctx.buffer("acc"), f) if acc_dt is not dt else ctx.tensor("out").arg(ctx.index["row"])

        def clear(ctx: compose.Context) -> None:
            ctx.call(ctx.primitive(zero), [acc(ctx)])

        def accumulate(ctx: compose.Context) -> None:
            x_row = ctx.tensor("x").arg(ctx.index["j"])
            if acc_dt is not dt:
                ctx.call(ctx.primitive(UnaryDesc("cast", 1, f, dt, acc_dt)), [x_row, (ctx.buffer("row"), f)])
                x_row = (ctx.buffer("row"), f)
            ctx.call(ctx.primitive(add), [acc(ctx), x_row, acc(ctx)])

        def finish(ctx: compose.Context) -> None:
            if acc_dt is not dt:
                ctx.call(ctx.primitive(UnaryDesc("cast", 1, f, acc_dt, dt)), [acc(ctx), ctx.tensor("out").arg(ctx.index["row"])])

        nonzeros = compose.Loop("j", start=lambda ctx: ctx.load("indptr", ctx.index["row"]),
                                stop=lambda ctx: ctx.load("indptr", ctx.b.add(ctx.index["row"], i64(1))),
                                body=(accumulate,))
        rows = compose.Loop("row", self.rows, (clear, nonzeros, finish), parallel=True, weight="indptr")
        tensors = (compose.Tensor("indptr", self.index, (self.rows + 1,)),
                   compose.Tensor("x", dt, (self.nnz, f), (self.ldx, 1)),
                   compose.Tensor("out", dt, (self.rows, f), (self.ldo, 1), output=True))
        scratch = () if acc_dt is dt else (compose.Scratch("acc", acc_dt, f, "thread", "the f32 row sum"),
                                           compose.Scratch("row", acc_dt, f, "thread", "an x row in f32"))
        return compose.Composite(tensors, (rows,), scratch)


_memo = compose.Memo()


def segment_sum(indptr: np.ndarray, x: np.ndarray, *, out: np.ndarray | None = None,
                threads: int | None = None) -> np.ndarray:
    """Sum the rows of x (nnz, F) in the CSR segments of indptr (rows + 1,), int32 or
    int64, nondecreasing, from >= 0 up to <= nnz: out (rows, F), zero rows for empty
    segments (torch_scatter.segment_csr with reduce="sum"). 1-D x gives 1-D out."""
    threads = compose.threads_arg(WHAT, threads)
    if not isinstance(indptr, np.ndarray) or not isinstance(x, np.ndarray):
        raise TypeError(f"{WHAT}: indptr and x must be numpy arrays")
    if x.ndim == 1:
        flat = None if out is None else out.reshape(-1, 1) if isinstance(out, np.ndarray) and out.ndim == 1 else out
        return segment_sum(indptr, x[:, None], out=flat, threads=threads)[:, 0]
    if indptr.ndim != 1 or indptr.dtype not in INDEX or indptr.size < 1:
        raise ShapeError(f"{WHAT}: indptr must be a non-empty 1-D int32 or int64 array, got shape "
                         f"{indptr.shape} dtype {indptr.dtype}")
    if x.ndim != 2:
        raise ShapeError(f"{WHAT}: x must be 1-D or 2-D (nnz, features), got shape {x.shape}")
    dtype = parse_dtype(x.dtype, "x.dtype")
    if dtype not in DTYPES:
        raise DTypeError(f"{WHAT}: dtype {x.dtype} is not supported (float32, float64, bfloat16)")
    rows, (nnz, f) = indptr.size - 1, x.shape
    # the kernel reads x at the indices it finds in indptr: check them all first
    if indptr[0] < 0 or indptr[-1] > nnz or (rows and np.any(indptr[1:] < indptr[:-1])):
        raise ValueError(f"{WHAT}: indptr must be nondecreasing from >= 0 to <= x.shape[0] = {nnz}, "
                         f"got first {indptr[0]}, last {indptr[-1]}"
                         + (", and it decreases" if rows and np.any(indptr[1:] < indptr[:-1]) else ""))
    if out is None:
        out = np.empty((rows, f), x.dtype)
    if not isinstance(out, np.ndarray) or out.shape != (rows, f):
        raise ShapeError(f"{WHAT}: out must be an array of shape {(rows, f)}, "
                         f"got {getattr(out, 'shape', type(out).__name__)}")
    if rows == 0 or f == 0:
        return out
    if nnz == 0:              # nothing to read: x's geometry does not matter
        x = np.zeros((1, f), x.dtype)
    params = ()
    arrays = [indptr, x, out]
    if _memo.call(params, arrays, threads):
        return out
    for name, arr in (("x", x), ("out", out)):
        compose.check_rows(WHAT, name, arr)
    desc = SegmentSumDesc(rows, x.shape[0], f, dtype, INDEX[indptr.dtype], _ld(x), _ld(out))
    prog = compose.program(WHAT, desc)
    compose.run_checked(_memo, params, prog, arrays, threads)
    return out


def _ld(a: np.ndarray) -> int:
    return a.strides[0] // a.itemsize if a.shape[0] > 1 else a.shape[1]
