"""The depthwise-row TPP's descriptor and dispatch (kernels/depthwise.py has the code):
one output row of a depthwise convolution, for tpp.ops.depthwise and for tests.

    k = depthwise_row(q=28, c=16, r=3, s=3)
    out = k(x, w)            # x: (3, 30*16) rows (any row stride), w: (9, 16) f32

c == 1 puts the pixels in the lanes: x is (r, extent) and out (1, q), or m output rows
(m, q) from r + (m-1)*row_step input rows. pad=(left, right)
leaves the rows' zero padding out of memory; row_ptrs=True takes x as r row addresses.
plane=True (c == 1, stride 1, q == the input width): x is one channel's plane, its
rows contiguous (1 x H*q), out and the residual (1 x m*q); vpad=(top, bottom) are the
rows of zero padding above and below it, not in memory (H = m + r - 1 - top - bottom)."""
from __future__ import annotations

from dataclasses import dataclass

from .descriptors import Primitive, check_dims, check_extent
from .dispatch import get_kernel
from .dtypes import parse as parse_dtype
from .jit.types import DType
from .kernel import Kernel
from .kernels import depthwise as depthwise_k


@dataclass(frozen=True)
class DepthwiseRowDesc(Primitive):
    q: int                      # output pixels
    c: int                      # channels per pixel (the pixels' distance in x and out)
    r: int                      # kernel rows: x's rows
    s: int                      # taps along the row
    stride: int = 1
    dilation: int = 1
    dtype: DType = DType.F32    # x and the residual (weights and bias are f32)
    out_dtype: DType = DType.F32
    bias: bool = False
    residual: bool = False
    activation: str | None = None
    pad: tuple[int, int] = (0, 0)   # zero pixels before and after each row, not in memory
    row_ptrs: bool = False          # x is R row addresses (int64), not R rows ld apart
    m: int = 1                      # output rows (c == 1 only): x holds r + (m-1)*row_step rows
    row_step: int = 1               # input rows between consecutive output rows (vertical stride)
    plane: bool = False             # x, out, residual: whole contiguous planes (c == 1, stride 1)
    vpad: tuple[int, int] = (0, 0)  # plane: zero rows above and below x, not in memory

    kind = "depthwise_row"
    record = depthwise_k.FAMILY

    def __post_init__(self) -> None:
        check_dims(self, "depthwise_row", "q", "c", "r", "s", "stride", "dilation", "m", "row_step")
        self.record.validate(self)
        itemsize = max(self.dtype.itemsize, self.out_dtype.itemsize)
        check_extent("depthwise_row", "x", "q, c, s, stride, dilation", 1, depthwise_k.stored(self) * self.c,
                     1, itemsize)
        if self.plane:
            check_extent("depthwise_row", "out", "q, m", 1, self.m * self.q, 1, itemsize)


def depthwise_row_desc(q: int, c: int, r: int, s: int, stride: int = 1, dilation: int = 1, dtype="f32", *,
                       out_dtype=None, bias: bool = False, residual: bool = False,
                       activation: str | None = None, pad=(0, 0), row_ptrs: bool = False, m: int = 1,
                       row_step: int = 1, plane: bool = False, vpad=(0, 0)) -> DepthwiseRowDesc:
    dt = parse_dtype(dtype, "dtype")
    odt = dt if out_dtype is None else parse_dtype(out_dtype, "out_dtype")
    return DepthwiseRowDesc(q, c, r, s, stride, dilation, dt, odt, bias, residual, activation, tuple(pad), row_ptrs,
                            m, row_step, plane, tuple(vpad))


def depthwise_row(q: int, c: int, r: int, s: int, stride: int = 1, dilation: int = 1, dtype="f32", *,
                  out_dtype=None, bias: bool = False, residual: bool = False, activation: str | None = None,
                  pad=(0, 0), row_ptrs: bool = False, m: int = 1, row_step: int = 1, plane: bool = False,
                  vpad=(0, 0), target=None) -> Kernel:
    """Dispatch a depthwise-row TPP: k(x, w[, bias][, residual]) -> out (see the module)."""
    return get_kernel(depthwise_row_desc(q, c, r, s, stride, dilation, dtype, out_dtype=out_dtype, bias=bias,
                                         residual=residual, activation=activation, pad=pad,
                                         row_ptrs=row_ptrs, m=m, row_step=row_step, plane=plane, vpad=vpad),
                      target)
