"""tpp.ops.layer_norm_backward: the gradients of layer_norm over the last axis,

    xhat = (x - mean) * rstd,   g = dy * weight
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))         per row (an equation)
    dweight = sum over rows of dy * xhat,  dbias = sum over rows of dy

ONE composite on the layer: the rows are split between the threads a tile at a time;
per tile, dx is one equation TPP, and dy * xhat and dy are written by equations into
a per-thread f32 tile, reduced down its columns (reduce_sum, axis 0) and added into
the thread's partial dweight / dbias, which the layer sums at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import compose
from .. import expr as eq
from ..descriptors import BinaryDesc, UnaryDesc
from ..dtypes import parse as parse_dtype
from ..errors import DTypeError, ShapeError
from ..expr import equation_desc
from ..jit.types import DType
from .args import element_strides
from .norms import DTYPES

WHAT = "tpp.ops.layer_norm_backward"
TILE_BYTES = 16 << 10


def _dx_tree(n: int, weight: bool) -> eq.Expr:
    """Inputs: 0 dy, 1 x, 2 mean (col), 3 rstd (col), 4 weight (row)."""
    dy, x, mean, rstd = eq.arg(0), eq.arg(1), eq.arg(2, "col"), eq.arg(3, "col")
    xhat = (x - mean) * rstd
    g = dy * eq.arg(4, "row") if weight else dy
    return rstd * (g - eq.sum(g) * (1.0 / n) - xhat * (eq.sum(g * xhat) * (1.0 / n)))


@dataclass(frozen=True)
class LayerNormBackwardDesc(compose.CompositeDesc):
    shape: tuple[int, ...]
    dy_strides: tuple[int, ...]
    x_strides: tuple[int, ...]
    dx_strides: tuple[int, ...]
    dtype: DType
    weight: bool
    kind = "layer_norm_backward"

    def composite(self, target) -> compose.Composite:
        n, rows, lead = self.shape[-1], self.shape[-2], self.shape[:-2]
        dt, f32 = self.dtype, DType.F32
        tile = max(1, min(rows, TILE_BYTES // (4 * n)))
        names = [f"d{k}" for k in range(len(lead))]
        stats = self.shape[:-1]

        def body(ctx: compose.Context) -> None:
            size = ctx.size["r"]
            at = [ctx.start[name] for name in names] + [ctx.start["r"]]
            dy, x = ctx.tensor("dy").arg(*at), ctx.tensor("x").arg(*at)
            mean, rstd = (ctx.tensor("mean").at(*at), 1), (ctx.tensor("rstd").at(*at), 1)
            w = [(ctx.tensor("weight").ptr, n)] if self.weight else []
            dtypes = (dt, dt, f32, f32) + ((f32,) if self.weight else ())
            dx = equation_desc(_dx_tree(n, self.weight), size, n, dtypes=dtypes, out_dtype=dt)
            ctx.call(ctx.primitive(dx), [dy, x, mean, rstd, *w, ctx.tensor("dx").arg(*at)])
            tmp, colsum = (ctx.buffer("tile"), n), (ctx.buffer("colsum"), n)
            column_sum = ctx.primitive(UnaryDesc("reduce_sum", size, n, f32, f32, axis=0))
            add = ctx.primitive(BinaryDesc("add", 1, n, f32))
            sums = [("db", eq.arg(0), [dy], (dt,))]
            if self.weight:
                xhat = (eq.arg(1) - eq.arg(2, "col")) * eq.arg(3, "col")
                sums.append(("dw", eq.arg(0) * xhat, [dy, x, mean, rstd], (dt, dt, f32, f32)))
            for part, tree, args, dts in sums:
                ctx.call(ctx.primitive(equation_desc(tree, size, n, dtypes=dts, out_dtype=f32)), args + [tmp])
                ctx.call(column_sum, [tmp, colsum])
                mine = (ctx.buffer(part), n)
                ctx.call(add, [mine, colsum, mine])

        loop = compose.Loop("r", rows, (body,), tile=tile, parallel=True)
        for name, extent in reversed(list(zip(names, lead))):
            loop = compose.Loop(name, extent, (loop,), parallel=True)
        tensors = [compose.Tensor("dy", dt, self.shape, self.dy_strides),
                   compose.Tensor("x", dt, self.shape, self.x_strides),
                   compose.Tensor("mean", f32, stats), compose.Tensor("rstd", f32, stats)]
        if self.weight:
            tensors.append(compose.Tensor("weight", f32, (n,)))
        tensors.append(compose.Tensor("dx", dt, self.shape, self.dx_strides, output=True))
        tensors.append(compose.Tensor("dbias", f32, (n,), output=True))
        scratch = [compose.Scratch("tile", f32, tile * n, "thread", "a tile of dy or dy * xhat"),
                   compose.Scratch("colsum", f32, n, "thread", "a tile's column sums"),
                   compose.Scratch("db", f32, n, "partial", into="dbias")]
        if self.weight:
            tensors.append(compose.Tensor("dweight", f32, (n,), output=True))
            scratch.append(compose.Scratch("dw", f32, n, "partial", into="dweight"))
        return compose.Composite(tuple(tensors), (loop,), tuple(scratch))


def layer_norm_backward(dy: np.ndarray, x: np.ndarray, weight, mean: np.ndarray, rstd: np.ndarray, *,
                        threads: int | None = None):
    """(dx, dweight, dbias) of y = layer_norm(x, weight, bias) for the upstream gradient
    dy, from the forward's per-row statistics (tpp.ops.layer_norm(..., stats=True)).
    dy and x: float32 or bfloat16 of the same shape (..., n); weight: float32 (n,) or None
    (then dweight is None); mean, rstd: float32 of shape x.shape[:-1]."""
    threads = compose.threads_arg(WHAT, threads)
    for name, arr in (("dy", dy), ("x", x), ("mean", mean), ("rstd", rstd)):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{WHAT}: argument '{name}' must be a numpy array, got {type(arr).__name__}")
    if x.ndim < 1 or dy.shape != x.shape:
        raise ShapeError(f"{WHAT}: dy and x must have the same shape with at least one axis, got {dy.shape} "
                         f"and {x.shape}")
    dtype = parse_dtype(x.dtype, "x.dtype")
    if dtype not in DTYPES or dy.dtype != x.dtype:
        raise DTypeError(f"{WHAT}: dy and x must both be float32 or both bfloat16, got {dy.dtype} and {x.dtype}")
    n = x.shape[-1]
    for name, arr in (("mean", mean), ("rstd", rstd)):
        if arr.shape != x.shape[:-1] or arr.dtype != np.float32:
            raise ShapeError(f"{WHAT}: argument '{name}' must be a float32 array of shape {x.shape[:-1]}, "
                             f"got {arr.shape} {arr.dtype}")
    if weight is not None and (not isinstance(weight, np.ndarray) or weight.shape != (n,)
                               or weight.dtype != np.float32):
        raise ShapeError(f"{WHAT}: argument 'weight' must be None or a float32 array of shape ({n},), got "
                         f"{getattr(weight, 'shape', type(weight).__name__)} {getattr(weight, 'dtype', '')}")
    dx = np.empty(x.shape, x.dtype)
    dbias = np.zeros(n, np.float32)
    dweight = np.zeros(n, np.float32) if weight is not None else None
    if x.size == 0:
        return dx, dweight, dbias
    two = (lambda a: a.reshape(1, n)) if x.ndim == 1 else (lambda a: a)
    dy2, x2, dx2 = two(dy), two(x), two(dx)
    stats = x2.shape[:-1]
    mean2, rstd2 = np.ascontiguousarray(mean).reshape(stats), np.ascontiguousarray(rstd).reshape(stats)
    for name, arr in (("dy", dy2), ("x", x2)):
        compose.check_rows(WHAT, name, arr)
    desc = LayerNormBackwardDesc(x2.shape, element_strides(dy2), element_strides(x2), element_strides(dx2), dtype,
                                 weight is not None)
    arrays = [dy2, x2, mean2, rstd2, *([weight] if weight is not None else []), dx2, dbias]
    if weight is not None:
        arrays.append(dweight)
    compose.run_checked(None, None, compose.program(WHAT, desc), arrays, threads)
    return dx, dweight, dbias

