"""tpp.ops.bias_act: y = activation(x + bias) over the last axis of x, any leading shape.

A composite on the layer: the leading axes are parallel loops (collapsed), the
second-to-last is cut into tiles of rows that fit in L1, and each tile is the
binary add primitive (bias broadcast along rows) followed by the activation's
unary primitive in place, while the tile is still in L1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import compose
from ..descriptors import BinaryDesc, UnaryDesc
from ..dtypes import parse as parse_dtype, to_numpy
from ..errors import DescriptorError, DTypeError, ShapeError
from ..jit.types import DType
from ..kernels import unary as unary_k
from ..kernels.operands import Bcast
from .args import element_strides

WHAT = "tpp.ops.bias_act"
DTYPES = (DType.F32, DType.BF16, DType.F64)
TILE_BYTES = 16 << 10       # a tile of rows, read by the add and again by the activation


def activations() -> tuple[str, ...]:
    """The unary kinds an activation may be: elementwise, of one input."""
    return tuple(name for name, k in unary_k.KINDS.items() if k.inputs == ("x",) and name != "cast")


def activation_arg(what: str, activation, error=DescriptorError) -> str | None:
    """A composite's `activation=`: None or one of activations(), aliases resolved;
    "copy" (the identity) is None."""
    if activation is None:
        return None
    name = unary_k.ALIASES.get(activation, activation) if isinstance(activation, str) else activation
    if name not in activations():
        raise error(f"{what}: activation must be None or one of {', '.join(activations())}, got {activation!r}")
    return None if name == "copy" else name


@dataclass(frozen=True)
class BiasActDesc(compose.CompositeDesc):
    shape: tuple[int, ...]          # x and y
    x_strides: tuple[int, ...]
    y_strides: tuple[int, ...]
    dtype: DType
    activation: str | None
    alpha: float | None = None
    kind = "bias_act"

    def composite(self, target) -> compose.Composite:
        n, rows, lead = self.shape[-1], self.shape[-2], self.shape[:-2]
        dt = self.dtype
        tile = max(1, min(rows, TILE_BYTES // max(1, n * dt.itemsize)))
        names = [f"d{k}" for k in range(len(lead))]

        def body(ctx: compose.Context) -> None:
            size = ctx.size["r"]
            at = [ctx.start[name] for name in names] + [ctx.start["r"]]
            x, y = ctx.tensor("x"), ctx.tensor("y")
            bias = ctx.tensor("bias")
            add = ctx.primitive(BinaryDesc("add", size, n, dt, Bcast.FULL, Bcast.ROW))
            ctx.call(add, [x.arg(*at), (bias.ptr, n), y.arg(*at)])
            if self.activation is not None:
                act = ctx.primitive(UnaryDesc(self.activation, size, n, dt, dt, self.alpha))
                ctx.call(act, [y.arg(*at), y.arg(*at)])

        loop = compose.Loop("r", rows, (body,), tile=tile, parallel=True)
        for name, extent in reversed(list(zip(names, lead))):
            loop = compose.Loop(name, extent, (loop,), parallel=True)
        tensors = (compose.Tensor("x", dt, self.shape, self.x_strides), compose.Tensor("bias", dt, (n,)),
                   compose.Tensor("y", dt, self.shape, self.y_strides, output=True, alias="x"))
        return compose.Composite(tensors, (loop,))


_memo = compose.Memo()


def bias_act(x: np.ndarray, bias: np.ndarray, activation: str | None = None, *, alpha: float | None = None,
             out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """activation(x + bias) with bias of shape (x.shape[-1],), for x of any shape (..., N):
    f32, f64 or bf16 (bf16 rounds the sum, then the activation, as torch does). activation:
    None or a one-input unary kind of the catalog ("relu", "gelu_tanh", "sigmoid", ...;
    alpha for leaky_relu / elu). out may be x itself (in place)."""
    threads = compose.threads_arg(WHAT, threads)
    if alpha is not None and (isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.number))
                              or isinstance(alpha, complex) or np.iscomplexobj(alpha)):
        raise DescriptorError(f"{WHAT}: alpha must be None or a real number, got {type(alpha).__name__} {alpha!r}")
    params = (activation, alpha)
    if out is not None and _memo.call(params, [x, bias, out], threads):
        return out
    if not isinstance(x, np.ndarray) or not isinstance(bias, np.ndarray):
        raise TypeError(f"{WHAT}: x and bias must be numpy arrays")
    if x.ndim < 1:
        raise ShapeError(f"{WHAT}: x must have at least one axis, got shape {x.shape}")
    if x.ndim == 1:          # one row
        row = None if out is None else _row_view(out, x.shape)
        return bias_act(x[None], bias, activation, alpha=alpha, out=row, threads=threads)[0]
    if bias.shape != (x.shape[-1],):
        raise ShapeError(f"{WHAT}: argument 'bias' must have shape ({x.shape[-1]},) (x's last axis), "
                         f"got {bias.shape}")
    dtype = parse_dtype(x.dtype, "x.dtype")
    if dtype not in DTYPES:
        raise DTypeError(f"{WHAT}: dtype {x.dtype} is not supported (float32, float64, bfloat16)")
    activation = activation_arg(WHAT, activation)
    if out is None:
        out = np.empty(x.shape, x.dtype)
    if x.size == 0:
        if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype:
            raise ShapeError(f"{WHAT}: out must be a {x.shape} {x.dtype} array")
        return out
    for name, arr in (("x", x), ("out", out)):
        if not isinstance(arr, np.ndarray) or arr.shape != x.shape:
            raise ShapeError(f"{WHAT}: argument '{name}' must be an array of shape {x.shape}, "
                             f"got {getattr(arr, 'shape', type(arr).__name__)}")
        compose.check_rows(WHAT, name, arr)
    desc = BiasActDesc(x.shape, element_strides(x), element_strides(out), dtype, activation,
                       None if alpha is None else float(alpha))
    prog = compose.program(WHAT, desc)
    compose.run_checked(_memo, params, prog, [x, bias, out], threads)
    return out


def _row_view(out, shape):
    if not isinstance(out, np.ndarray) or out.shape != shape:
        raise ShapeError(f"{WHAT}: out must be an array of shape {shape}, got {getattr(out, 'shape', out)!r}")
    return out[None]


