"""B packed ahead for tpp.ops.matmul: a weight used by many calls (a model's linear
layers) is packed once into the panels matmul's compute phase reads, so those calls
do no packing of B.

    w_t = tpp.ops.pack_b(weight.T)          # the (in, out) view of torch's (out, in) weight
    y = tpp.ops.matmul(x, w_t, epilogue=("bias", "gelu_erf"), bias=b)

The panels' width and K chunks are fixed by the packing (chosen for a typical M, or
`m=`); each call keeps its own plan's blocking of A and the output.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..jit.types import DType


@dataclass(frozen=True, eq=False)
class PackedB:
    """B (k x n) in matmul's panel layout: Kb x Nb chunks, Nb-wide panels (data: 1-D)."""
    k: int
    n: int
    dtype: DType
    nb: int
    kb: int
    b_strip: int
    data: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.k, self.n

    @property
    def key(self) -> tuple:
        """What a call's compiled code depends on (the memo's part for B)."""
        return ("packed", self.k, self.n, self.dtype, self.nb, self.kb)

    def __repr__(self) -> str:
        return f"PackedB({self.k} x {self.n} {self.dtype.value}, panels {self.nb} wide, K chunks of {self.kb})"


def pack_b(b: np.ndarray, *, m: int = 512, threads: int | None = None) -> PackedB:
    """b (k x n; f32, f64 or bf16; row-major or a transposed view such as w.T) packed for
    tpp.ops.matmul(a, packed). `m`: the row count of the calls' A the blocking is chosen
    for (any m works)."""
    from .. import compose
    from ..dtypes import parse as parse_dtype, to_numpy
    from ..errors import DTypeError, ShapeError
    from .matmul import DTYPES, MatmulDesc, _by_columns, _row_stride, default_plan
    from .matmul_plan import BLOCK_ROW_BYTES
    what = "tpp.ops.pack_b"
    threads = compose.threads_arg(what, threads)
    if not isinstance(b, np.ndarray) or b.ndim != 2:
        raise ShapeError(f"{what}: b must be a 2-D numpy array, got {getattr(b, 'shape', type(b).__name__)}")
    dtype = parse_dtype(b.dtype, "b.dtype")
    if dtype not in DTYPES:
        raise DTypeError(f"{what}: dtype {b.dtype} is not supported")
    k, n = b.shape
    if type(m) is not int or m < 1:
        raise ValueError(f"{what}: m must be a positive int, got {m!r}")
    trans_b = _by_columns(b)
    stored = b.T if trans_b else b
    compose.check_rows(what, "b", stored, " or be a transposed view")
    plan = default_plan(dtype, m, n, k, k, threads, False, trans_b)
    # The calls' A may go into blocks whose row stride is Kb (small M, several threads):
    # a K chunk much longer than 2 KB puts a register tile's rows into few L1 sets
    # (128 x 3072 x 768 on 2 threads: 138 GF/s with one chunk of 3072, ~210 with 512)
    if plan.kb * dtype.itemsize > 4 * BLOCK_ROW_BYTES:
        plan = replace(plan, kb=BLOCK_ROW_BYTES // dtype.itemsize)
    desc = MatmulDesc(m, n, k, dtype, k, _row_stride(stored), n, (), plan, False, trans_b, 0, "pack")
    data = compose.aligned(desc.packed_size(), to_numpy(dtype))
    if k and n:
        compose.run_checked(None, None, compose.program(what, desc), [stored, data], threads)
    return PackedB(k, n, dtype, plan.nb, plan.kb, plan.b_strip, data)


def packed_matmul(a, packed: PackedB, out, epilogue, given, plan, threads):
    """tpp.ops.matmul's path for a PackedB (the memo first, then every check)."""
    from ..kernels.epilogue import epilogue_inputs
    from .matmul import _checked, _memo
    arrays = [a, packed.data, *(given.get(step) for step in epilogue_inputs(epilogue)), out]
    if out is not None and _memo.call((epilogue, plan, threads, packed.key), arrays, threads):
        return out
    return _checked(a, packed.data, out, epilogue, given, plan, threads, packed=packed)
