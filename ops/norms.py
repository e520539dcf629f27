"""Normalizations over the last axis, each ONE composite on the layer whose loop body is
an equation TPP (kernels/equation.py) over a tile of rows:

    tpp.ops.softmax(x)                       torch.softmax(x, -1)
    tpp.ops.log_softmax(x)                   torch.log_softmax(x, -1)
    tpp.ops.layer_norm(x, weight, bias)      torch.nn.functional.layer_norm(x, (n,), weight, bias, eps)
    tpp.ops.rms_norm(x, weight)              torch.nn.functional.rms_norm(x, (n,), weight, eps)

x has any leading shape; its rows are split between the threads (the leading axes and
the rows collapse into one parallel range), a tile of rows at a time sized to stay in
L1 through the equation's passes. bf16 inputs compute in f32; the output has x's dtype
unless out_dtype says otherwise. layer_norm(..., stats=True) also returns the per-row
mean and 1/sqrt(var + eps) (f32) that layer_norm_backward takes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import compose
from .. import expr as eq
from ..dtypes import parse as parse_dtype, to_numpy
from ..errors import DTypeError, ShapeError
from ..expr import EquationDesc, equation_desc
from ..jit.types import DType
from .args import element_strides, output

DTYPES = (DType.F32, DType.BF16)
TILE_BYTES = 16 << 10       # a tile's rows stay in L1 for every pass over them
NAMES = ("softmax", "log_softmax", "layer_norm", "rms_norm")


def _tree(which: str, n: int, eps: float, weight: bool, bias: bool, residual: bool = False) -> dict[str, eq.Expr]:
    """The equations per output ("y", and for layer_norm's stats "mean", "rstd"). Inputs:
    0 = x, then the residual added to x (full), the weight and the bias (rows) where given."""
    x = eq.arg(0) + eq.arg(1) if residual else eq.arg(0)
    first = 1 + residual
    w = eq.arg(first, "row") if weight else None
    bias_arg = eq.arg(first + weight, "row") if bias else None
    if which == "softmax":
        e = eq.exp(x - eq.max(x))
        return {"y": e / eq.sum(e)}
    if which == "log_softmax":
        s = x - eq.max(x)
        return {"y": s - eq.log(eq.sum(eq.exp(s)))}
    if which == "rms_norm":
        y = x * eq.rsqrt(eq.sum(x * x) * (1.0 / n) + eps)
        return {"y": y * w if w is not None else y}
    mean = eq.sum(x) * (1.0 / n)
    d = x - mean
    rstd = eq.rsqrt(eq.sum(d * d) * (1.0 / n) + eps)
    y = d * rstd
    if w is not None:
        y = y * w
    if bias_arg is not None:
        y = y + bias_arg
    return {"y": y, "mean": mean, "rstd": rstd}


@dataclass(frozen=True)
class NormDesc(compose.CompositeDesc):
    which: str
    shape: tuple[int, ...]          # x and y
    x_strides: tuple[int, ...]
    y_strides: tuple[int, ...]
    dtype: DType
    out_dtype: DType
    eps: float = 0.0
    weight: bool = False
    bias: bool = False
    stats: bool = False             # layer_norm: also the per-row mean and rstd
    residual_strides: tuple[int, ...] | None = None     # layer_norm of x + residual
    kind = "norm"

    def equations(self, rows: int) -> dict[str, EquationDesc]:
        n = self.shape[-1]
        residual = self.residual_strides is not None
        trees = _tree(self.which, n, self.eps, self.weight, self.bias, residual)
        wanted = ("y", "mean", "rstd") if self.stats else ("y",)
        dtypes = (self.dtype,) * (1 + residual) + (DType.F32,) * (self.weight + self.bias)
        # the statistics read x only
        return {name: equation_desc(trees[name], rows, n, dtypes=dtypes[:1 + max(trees[name].modes)],
                                    out_dtype=self.out_dtype if name == "y" else DType.F32)
                for name in wanted}

    def composite(self, target) -> compose.Composite:
        n, rows, lead = self.shape[-1], self.shape[-2], self.shape[:-2]
        itemsize = max(self.dtype.itemsize, 4)
        tile = max(1, min(rows, TILE_BYTES // max(1, n * itemsize)))
        names = [f"d{k}" for k in range(len(lead))]
        extras = [name for name, on in (("weight", self.weight), ("bias", self.bias)) if on]

        def body(ctx: compose.Context) -> None:
            at = [ctx.start[name] for name in names] + [ctx.start["r"]]
            ins = [ctx.tensor("x").arg(*at)]
            if self.residual_strides is not None:
                ins.append(ctx.tensor("residual").arg(*at))
            ins += [(ctx.tensor(name).ptr, n) for name in extras]
            for out, desc in self.equations(ctx.size["r"]).items():
                ctx.call(ctx.primitive(desc), ins[:len(desc.inputs)] + [ctx.tensor(out).arg(*at)])

        loop = compose.Loop("r", rows, (body,), tile=tile, parallel=True)
        for name, extent in reversed(list(zip(names, lead))):
            loop = compose.Loop(name, extent, (loop,), parallel=True)
        tensors = [compose.Tensor("x", self.dtype, self.shape, self.x_strides)]
        if self.residual_strides is not None:
            tensors.append(compose.Tensor("residual", self.dtype, self.shape, self.residual_strides))
        tensors += [compose.Tensor(name, DType.F32, (n,)) for name in extras]
        alias = "x" if self.out_dtype is self.dtype else None
        tensors.append(compose.Tensor("y", self.out_dtype, self.shape, self.y_strides, output=True, alias=alias))
        if self.stats:
            tensors += [compose.Tensor(name, DType.F32, self.shape[:-1], output=True) for name in ("mean", "rstd")]
        return compose.Composite(tuple(tensors), (loop,))


_memo = compose.Memo()


def _run(which: str, x, *, eps: float = 0.0, weight=None, bias=None, out=None, out_dtype=None,
         threads=None, stats: bool = False, residual=None):
    what = f"tpp.ops.{which}"
    threads = compose.threads_arg(what, threads)
    key = (which, float(eps), weight is not None, bias is not None, out_dtype, stats, residual is not None)
    given = [a for a in (residual, weight, bias) if a is not None]
    if out is not None and not stats and _memo.call(key, [x, *given, out], threads):
        return out
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}: x must be a numpy array, got {type(x).__name__}")
    if x.ndim < 1:
        raise ShapeError(f"{what}: x must have at least one axis, got shape {x.shape}")
    dtype = parse_dtype(x.dtype, "x.dtype")
    if dtype not in DTYPES:
        raise DTypeError(f"{what}: x's dtype must be float32 or bfloat16, got {x.dtype}")
    odt = dtype if out_dtype is None else parse_dtype(out_dtype, "out_dtype")
    if odt not in DTYPES:
        raise DTypeError(f"{what}: out_dtype must be float32 or bfloat16, got {out_dtype!r}")
    n = x.shape[-1]
    for name, arr in (("weight", weight), ("bias", bias)):
        if arr is None:
            continue
        if not isinstance(arr, np.ndarray) or arr.shape != (n,) or arr.dtype != np.float32:
            raise ShapeError(f"{what}: argument '{name}' must be a float32 array of shape ({n},) (x's last axis), "
                             f"got {getattr(arr, 'shape', type(arr).__name__)} {getattr(arr, 'dtype', '')}")
        compose.check_rows(what, name, arr)
    out = output(what, out, x.shape, to_numpy(odt))
    mean = rstd = None
    if stats:
        mean, rstd = np.empty(x.shape[:-1], np.float32), np.empty(x.shape[:-1], np.float32)
    if x.size == 0:
        return (out, mean, rstd) if stats else out
    if residual is not None and (not isinstance(residual, np.ndarray) or residual.shape != x.shape
                                 or residual.dtype != x.dtype):
        raise ShapeError(f"{what}: argument 'residual' must be an array of x's shape {x.shape} and dtype {x.dtype}, "
                         f"got {getattr(residual, 'shape', type(residual).__name__)} {getattr(residual, 'dtype', '')}")
    two = (lambda a: a.reshape(1, n)) if x.ndim == 1 else (lambda a: a)
    rows2, out2 = two(x), two(out)
    res2 = None if residual is None else two(residual)
    for name, arr in (("x", rows2), ("out", out2), ("residual", res2)):
        if arr is not None:
            compose.check_rows(what, name, arr)
    desc = NormDesc(which, rows2.shape, element_strides(rows2), element_strides(out2), dtype, odt, float(eps),
                    weight is not None, bias is not None, stats, None if res2 is None else element_strides(res2))
    arrays = [rows2, *([res2] if res2 is not None else []), *[a for a in (weight, bias) if a is not None], out2]
    if stats:
        arrays += [mean.reshape(rows2.shape[:-1]), rstd.reshape(rows2.shape[:-1])]
    prog = compose.program(what, desc)
    compose.run_checked(None if stats else _memo, key, prog, arrays, threads)
    return (out, mean, rstd) if stats else out


def _axis(what: str, x, axis) -> None:
    ndim = getattr(x, "ndim", 1)
    if type(axis) is not int or axis not in (-1, ndim - 1):
        raise ShapeError(f"{what}: only the last axis is supported (axis=-1 or {ndim - 1}), got axis={axis!r}")


def softmax(x: np.ndarray, axis: int = -1, *, out=None, out_dtype=None, threads=None) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) over the last axis (torch.softmax(x, -1))."""
    _axis("tpp.ops.softmax", x, axis)
    return _run("softmax", x, out=out, out_dtype=out_dtype, threads=threads)


def log_softmax(x: np.ndarray, axis: int = -1, *, out=None, out_dtype=None, threads=None) -> np.ndarray:
    """x - max - log(sum(exp(x - max))) over the last axis (torch.log_softmax(x, -1))."""
    _axis("tpp.ops.log_softmax", x, axis)
    return _run("log_softmax", x, out=out, out_dtype=out_dtype, threads=threads)


def layer_norm(x: np.ndarray, weight=None, bias=None, eps: float = 1e-5, *, residual=None, out=None,
               out_dtype=None, stats: bool = False, threads=None):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance,
    like torch.nn.functional.layer_norm); weight and bias: float32 (n,) or None.
    residual: an array like x added to it first, in the same pass (a post-LN block's
    layer_norm(x + sublayer(x))). With stats=True returns (y, mean, rstd), the per-row
    statistics in float32."""
    return _run("layer_norm", x, eps=_eps("tpp.ops.layer_norm", eps), weight=weight, bias=bias, out=out,
                out_dtype=out_dtype, threads=threads, stats=bool(stats), residual=residual)


def rms_norm(x: np.ndarray, weight=None, eps: float = 1e-6, *, out=None, out_dtype=None, threads=None):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (torch.nn.functional.rms_norm)."""
    return _run("rms_norm", x, eps=_eps("tpp.ops.rms_norm", eps), weight=weight, out=out,
                out_dtype=out_dtype, threads=threads)


def _eps(what: str, eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)) \
            or not np.isfinite(eps) or eps < 0:
        raise ValueError(f"{what}: eps must be a finite number >= 0, got {eps!r}")
    return float(eps)
