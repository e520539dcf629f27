"""Blocked activations (NCHWc) and the layout TPPs that convert to and from them.

A convolution reads its input as NCHWc: (N, ceil(C/c), H, W, c), the c channels of
one pixel contiguous, so that a row of pixels is the A operand of a GEMM whose K
dimension is the channel block (LIBXSMM's and oneDNN's nChw16c). `Blocked` wraps
such an array with its logical channel count (channels past C in the last block
are zero), so a chain of prepared convolutions stays blocked and converts only at
its ends.

`to_blocked` / `from_blocked` are ONE compiled pass each, on the composition
layer: per (image, channel block, row) the transpose primitive turns the block's
c rows of W pixels into W pixels of c channels (and back). The same row bodies
write a zero-padded blocked copy for a convolution's input (ops/conv.py): the
halo rows and columns are zeroed by the zero primitive, so the conv's inner
loop never tests a border.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import compose
from ..descriptors import UnaryDesc
from ..dispatch import current_target
from ..dtypes import parse as parse_dtype
from ..errors import DTypeError, ShapeError
from ..jit.loops import i64
from ..jit.types import DType
from .args import element_strides

DTYPES = (DType.F32, DType.BF16)


def default_block(dtype: DType, target=None) -> int:
    """The channel block a layout defaults to: one vector of f32 lanes (16 on AVX-512)."""
    target = current_target() if target is None else target
    return max(1, target.lanes(32)) if target.model != "simt" else 16


class Blocked:
    """An activation in the blocked NCHWc layout: `data` of shape (N, ceil(C/c), H, W, c),
    C-contiguous, and its logical channel count C (the last block's channels past C are
    zero). `shape` is the logical (N, C, H, W); `numpy()` converts back to NCHW."""

    __slots__ = ("data", "channels")

    def __init__(self, data: np.ndarray, channels: int | None = None):
        if not isinstance(data, np.ndarray) or data.ndim != 5:
            raise ShapeError(f"tpp.ops.Blocked: data must be a 5-D (N, C/c, H, W, c) array, got "
                             f"{getattr(data, 'shape', type(data).__name__)}")
        if not data.flags.c_contiguous:
            raise ShapeError("tpp.ops.Blocked: data must be C-contiguous")
        parse_dtype(data.dtype, "data.dtype")
        cb, c = data.shape[1], data.shape[4]
        channels = cb * c if channels is None else int(channels)
        if not (cb - 1) * c < channels <= cb * c and not (cb == 0 and channels == 0):
            raise ShapeError(f"tpp.ops.Blocked: {cb} blocks of {c} channels cannot hold {channels} channels")
        self.data, self.channels = data, channels

    @property
    def block(self) -> int:
        return self.data.shape[4]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n, _, h, w, _ = self.data.shape
        return (n, self.channels, h, w)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def numpy(self, threads: int | None = None) -> np.ndarray:
        return from_blocked(self, threads=threads)

    def __repr__(self) -> str:
        return f"Blocked(shape={self.shape}, block={self.block}, dtype={self.dtype})"


def blocked_shape(shape: tuple[int, int, int, int], c: int, pad: tuple[int, int, int, int] = (0, 0, 0, 0)):
    """(N, ceil(C/c), H + top + bottom, W + left + right, c)."""
    n, ch, h, w = shape
    top, bottom, left, right = pad
    return (n, -(-ch // c), h + top + bottom, w + left + right, c)


# ---- the row bodies (shared with the convolution's padded input) ----------------------------
def pack_loop(src: str, dst: str, shape, c: int, dt: DType, pad=(0, 0, 0, 0), parallel: bool = True):
    """Loops over (n, channel block, padded row) writing NCHW `src` into blocked `dst` (a
    tensor, or a scratch buffer: blocked_shape(shape, c, pad)): halo rows and columns
    zeroed, channels past C zero, each interior row one transpose of the block's channels."""
    n, ch, h, w = shape
    top, bottom, left, right = pad
    wp = w + left + right
    dst_shape = blocked_shape(shape, c, pad)

    def row(ctx: compose.Context) -> None:
        b = ctx.b
        rows = ctx.size["cb"]
        x, y = ctx.view(src), ctx.view(dst, dst_shape)
        ni, cbi, hi = ctx.start["n"], ctx.index["cb"], ctx.start["h"]
        out = y.at(ni, cbi, hi)
        zero_row = ctx.primitive(UnaryDesc("zero", wp, c, dt, dt))
        inside = b.and_(b.icmp_signed(">=", hi, i64(top)), b.icmp_signed("<", hi, i64(top + h)))
        with b.if_else(inside) as (then, otherwise):
            with then:
                if rows < c or left or right:
                    ctx.call(zero_row, [(out, c)])     # the halo columns, channels past C
                at = x.at(ni, ctx.start["cb"], b.sub(hi, i64(top)))
                ctx.call(ctx.primitive(UnaryDesc("transpose", rows, w, dt, dt)),
                         [(at, x.strides[1]), (y.at(ni, cbi, hi, left), c)])
            with otherwise:
                ctx.call(zero_row, [(out, c)])
    inner = compose.Loop("h", h + top + bottom, (row,), parallel=parallel)
    return compose.Loop("n", n, (compose.Loop("cb", ch, (inner,), tile=c, parallel=parallel),), parallel=parallel)


def unpack_loop(src: str, dst: str, shape, c: int, dt: DType):
    """Loops over (n, channel block, row) writing blocked `src` back into NCHW `dst`."""
    n, ch, h, w = shape

    def row(ctx: compose.Context) -> None:
        rows = ctx.size["cb"]
        x, y = ctx.tensor(src), ctx.tensor(dst)
        ni, hi = ctx.start["n"], ctx.start["h"]
        ctx.call(ctx.primitive(UnaryDesc("transpose", w, rows, dt, dt)),
                 [(x.at(ni, ctx.index["cb"], hi), c), (y.at(ni, ctx.start["cb"], hi), y.strides[1])])
    inner = compose.Loop("h", h, (row,), parallel=True)
    return compose.Loop("n", n, (compose.Loop("cb", ch, (inner,), tile=c, parallel=True),), parallel=True)


@dataclass(frozen=True)
class LayoutDesc(compose.CompositeDesc):
    shape: tuple[int, int, int, int]     # logical N, C, H, W
    block: int
    dtype: DType
    plain_strides: tuple[int, ...]       # the NCHW side's element strides
    to_blocked: bool
    kind = "layout"

    def composite(self, target) -> compose.Composite:
        dt, c = self.dtype, self.block
        plain = compose.Tensor("x", dt, self.shape, self.plain_strides, output=not self.to_blocked)
        blocked = compose.Tensor("xb", dt, blocked_shape(self.shape, c), output=self.to_blocked)
        if self.to_blocked:
            return compose.Composite((plain, blocked), (pack_loop("x", "xb", self.shape, c, dt),))
        return compose.Composite((blocked, plain), (unpack_loop("xb", "x", self.shape, c, dt),))


_memo = compose.Memo()


def _check_plain(what: str, name: str, x) -> DType:
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ShapeError(f"{what}: argument '{name}' must be a 4-D (N, C, H, W) array, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    dt = parse_dtype(x.dtype, f"{name}.dtype")
    if dt not in DTYPES:
        raise DTypeError(f"{what}: {name} must be float32 or bfloat16, got {x.dtype}")
    return dt


def unit_rows(x: np.ndarray) -> np.ndarray:
    """x with unit stride along W (a copy only for views that lack it)."""
    return x if x.shape[-1] <= 1 or x.strides[-1] == x.itemsize else np.ascontiguousarray(x)


def to_blocked(x: np.ndarray, c: int | None = None, *, threads: int | None = None) -> Blocked:
    """NCHW x -> Blocked NCHWc (c: the channel block, default one vector of f32 lanes)."""
    what = "tpp.ops.to_blocked"
    threads = compose.threads_arg(what, threads)
    dt = _check_plain(what, "x", x)
    if c is None:
        c = default_block(dt)
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
        raise ShapeError(f"{what}: c must be a positive int, got {c!r}")
    c, x = int(c), unit_rows(x)
    data = np.empty(blocked_shape(x.shape, c), x.dtype)
    if data.size:
        desc = LayoutDesc(x.shape, c, dt, element_strides(x), True)
        compose.run_checked(_memo, (c, True), compose.program(what, desc), [x, data], threads)
    return Blocked(data, x.shape[1])


def from_blocked(xb: Blocked, *, out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """Blocked NCHWc -> NCHW (a new array, or `out`)."""
    what = "tpp.ops.from_blocked"
    threads = compose.threads_arg(what, threads)
    if not isinstance(xb, Blocked):
        raise TypeError(f"{what}: xb must be a tpp.ops.Blocked, got {type(xb).__name__}")
    dt = parse_dtype(xb.dtype, "xb.dtype")
    if out is None:
        out = np.empty(xb.shape, xb.dtype)
    elif not isinstance(out, np.ndarray) or out.shape != xb.shape or out.dtype != xb.dtype:
        raise ShapeError(f"{what}: out must be a {xb.shape} {xb.dtype} array")
    compose.check_rows(what, "out", out)
    if out.size:
        desc = LayoutDesc(xb.shape, xb.block, dt, element_strides(out), False)
        compose.run_checked(_memo, (xb.block, False), compose.program(what, desc), [xb.data, out], threads)
    return out


def numpy_blocked(x: np.ndarray, c: int, pad=(0, 0, 0, 0)) -> np.ndarray:
    """The numpy expression of to_blocked (tests and the bench's baseline)."""
    n, ch, h, w = x.shape
    out = np.zeros(blocked_shape(x.shape, c, pad), x.dtype)
    top, _, left, _ = pad
    xp = np.zeros((n, out.shape[1] * c, h, w), x.dtype)
    xp[:, :ch] = x
    out[:, :, top:top + h, left:left + w, :] = xp.reshape(n, -1, c, h, w).transpose(0, 1, 3, 4, 2)
    return out


__all__ = ["Blocked", "to_blocked", "from_blocked", "default_block", "numpy_blocked"]
