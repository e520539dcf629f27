"""The 1x1, stride-1, unpadded convolution on NCHW as a plain GEMM over pixels.

Such a convolution is out[n] (K x HW) = W (K x C) x[n] (C x HW) per image and group:
NCHW is already the GEMM's row-major B and C, so nothing is converted. ONE composite,
parallel over (image, group, block of output channels, tile of pixels); each step
one GEMM with the weights' block as A, the bias as a per-row ("col_bias") epilogue
input, the residual (NCHW) and the activation fused. Pixel tiles are sized so the
B panel (C x tile) stays in L2.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import compose
from ..descriptors import GemmDesc
from ..jit.loops import i64
from ..jit.types import DType

PANEL_BYTES = 256 << 10          # the B panel (C x pixel tile) a step reads from L2
ROWS = 64                        # output channels per step (A's rows)


@dataclass(frozen=True)
class Conv1x1Desc(compose.CompositeDesc):
    n: int
    c: int
    k: int
    groups: int
    pixels: int                       # H * W
    dtype: DType
    x_strides: tuple[int, int]        # image and channel strides (pixels contiguous)
    out_strides: tuple[int, int]
    bias: bool = False
    res_strides: tuple[int, int] | None = None
    activation: str | None = None
    kind = "conv1x1"

    @property
    def tile(self) -> int:
        cg = self.c // self.groups
        t = PANEL_BYTES // max(1, cg * self.dtype.itemsize)
        return max(16, min(self.pixels, 512, t // 16 * 16))

    def composite(self, target) -> compose.Composite:
        dt, cg, kg = self.dtype, self.c // self.groups, self.k // self.groups
        hw = self.pixels
        tensors = [compose.Tensor("x", dt, (self.n, self.c, hw), self.x_strides + (1,)),
                   compose.Tensor("w", dt, (self.k, cg))]
        if self.bias:
            tensors.append(compose.Tensor("bias", dt, (self.k,)))
        if self.res_strides is not None:
            tensors.append(compose.Tensor("res", dt, (self.n, self.k, hw), self.res_strides + (1,)))
        tensors.append(compose.Tensor("out", dt, (self.n, self.k, hw), self.out_strides + (1,), output=True))
        steps = (("col_bias",) if self.bias else ()) + (("residual",) if self.res_strides else ()) \
            + ((self.activation,) if self.activation else ())

        def step(ctx: compose.Context) -> None:
            b = ctx.b
            rows, cols = ctx.size["kb"], ctx.size["px"]
            ni, gi, px = ctx.start["n"], ctx.start["g"], ctx.start["px"]
            ch = b.add(b.mul(gi, i64(kg)), ctx.start["kb"])          # first output channel
            x, out = ctx.tensor("x"), ctx.tensor("out")
            gemm = GemmDesc(rows, cols, cg, dt, beta=0.0, lda=cg, ldb=self.x_strides[1], ldc=self.out_strides[1],
                            out_dtype=dt, epilogue=steps)
            args = [ctx.tensor("w").arg(ch), (x.at(ni, b.mul(gi, i64(cg)), px), self.x_strides[1])]
            if self.bias:
                args.append((ctx.tensor("bias").at(ch), 1))
            if self.res_strides is not None:
                args.append((ctx.tensor("res").at(ni, ch, px), self.res_strides[1]))
            args.append((out.at(ni, ch, px), self.out_strides[1]))
            ctx.call(ctx.primitive(gemm), args)

        # channel blocks inside pixel tiles: a B panel is read from memory once and reused
        # from L2 by every block of output channels (the weights stay in L2 too)
        loop = compose.Loop("kb", kg, (step,), tile=min(kg, ROWS), parallel=True)
        loop = compose.Loop("px", hw, (loop,), tile=self.tile, parallel=True)
        loop = compose.Loop("n", self.n, (compose.Loop("g", self.groups, (loop,), parallel=True),), parallel=True)
        return compose.Composite(tuple(tensors), (loop,))
