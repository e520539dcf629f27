"""tpp.ops.dropout(x, p, seed): y = x * keep / (1 - p) over x of any shape, keep drawn by
the dropout TPP's counter-based RNG (Philox 4x32-10, kernels/dropout.py).

A composite on the layer: the leading axes and the rows are one parallel range cut into
tiles of rows; each tile is one dropout primitive told the index of its first row in
the whole tensor, so an element's draw depends only on the seed and its (row, column):
the same seed gives the same mask on any thread count.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import compose
from ..dropout_kernel import DropoutDesc
from ..dtypes import parse as parse_dtype
from ..errors import DTypeError
from ..jit.loops import I64, i64
from ..jit.types import DType
from ..kernels import fields
from .args import element_strides, output

WHAT = "tpp.ops.dropout"
TILE_BYTES = 16 << 10


@dataclass(frozen=True)
class DropoutOpDesc(compose.CompositeDesc):
    shape: tuple[int, ...]
    x_strides: tuple[int, ...]
    y_strides: tuple[int, ...]
    dtype: DType
    p: float
    kind = "dropout"

    def composite(self, target) -> compose.Composite:
        n, rows, lead = self.shape[-1], self.shape[-2], self.shape[:-2]
        tile = max(1, min(rows, TILE_BYTES // max(1, n * self.dtype.itemsize)))
        names = [f"d{k}" for k in range(len(lead))]

        def body(ctx: compose.Context) -> None:
            b = ctx.b
            at = [ctx.start[name] for name in names] + [ctx.start["r"]]
            first = i64(0)                       # the tile's first row in the (rows of all) tensor
            for name, extent in zip(names + ["r"], (*lead, rows)):
                first = b.add(b.mul(first, i64(extent)), ctx.start[name])
            slot = ctx.var("row0", I64)
            b.store(first, slot)
            prim = ctx.primitive(DropoutDesc(ctx.size["r"], n, self.dtype, self.p))
            ctx.call(prim, [ctx.tensor("x").arg(*at), (ctx.tensor("seed").ptr, 1), (slot, 1),
                            ctx.tensor("y").arg(*at)])

        loop = compose.Loop("r", rows, (body,), tile=tile, parallel=True)
        for name, extent in reversed(list(zip(names, lead))):
            loop = compose.Loop(name, extent, (loop,), parallel=True)
        tensors = (compose.Tensor("x", self.dtype, self.shape, self.x_strides),
                   compose.Tensor("seed", DType.I64, (1,)),
                   compose.Tensor("y", self.dtype, self.shape, self.y_strides, output=True, alias="x"))
        return compose.Composite(tensors, (loop,))


_memo = compose.Memo()


def dropout(x: np.ndarray, p: float = 0.5, seed: int = 0, *, out: np.ndarray | None = None,
            threads: int | None = None) -> np.ndarray:
    """Zero each element of x with probability p and scale the rest by 1 / (1 - p) (like
    torch.nn.functional.dropout in training mode); reproducible: the mask depends only on
    `seed` (an int in [0, 2**64)) and the element's place, not on the threads. x: float32
    or bfloat16, any shape; out may be x (in place)."""
    threads = compose.threads_arg(WHAT, threads)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2 ** 64:
        raise ValueError(f"{WHAT}: seed must be an int in [0, 2**64), got {seed!r}")
    p = fields.real(WHAT, "p", p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{WHAT}: p must be in [0, 1], got {p!r}")
    seed_arr = np.array([int(seed)], np.uint64).view(np.int64)
    if out is not None and _memo.call(p, [x, seed_arr, out], threads):
        return out
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{WHAT}: x must be a numpy array, got {type(x).__name__}")
    dtype = parse_dtype(x.dtype, "x.dtype")
    if dtype not in (DType.F32, DType.BF16):
        raise DTypeError(f"{WHAT}: x's dtype must be float32 or bfloat16, got {x.dtype}")
    out = output(WHAT, out, x.shape, x.dtype)
    if x.size == 0:
        return out
    x2, out2 = (x.reshape(1, -1), out.reshape(1, -1)) if x.ndim <= 1 else (x, out)
    for name, arr in (("x", x2), ("out", out2)):
        compose.check_rows(WHAT, name, arr)
    desc = DropoutOpDesc(x2.shape, element_strides(x2), element_strides(out2), dtype, p)
    compose.run_checked(_memo, p, compose.program(WHAT, desc), [x2, seed_arr, out2], threads)
    return out
