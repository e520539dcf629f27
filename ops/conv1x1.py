"""The 1x1, stride-1, unpadded convolution on NCHW as a plain GEMM over pixels.

Such a convolution is out[n] (K x HW) = W (K x C) x[n] (C x HW) per image and group:
NCHW is already the GEMM's row-major B and C, so nothing is converted. ONE composite,
parallel over (image, group, block of output channels, tile of pixels); each step
one GEMM with the weights' block as A, the bias as a per-row ("col_bias") epilogue
input, the residual (NCHW) and the activation fused. Pixel tiles are sized so the
B panel (C x tile) stays in L2.

bf16 (C/groups even): the dot instructions want B's channels in pairs, so a thread
VNNI-packs its pixel tile's panel once (vnni_pack) for all the output blocks it runs on
that tile; the output is still written as NCHW rows, nothing transposed.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import compose
from ..descriptors import GemmDesc, UnaryDesc
from ..jit.loops import I64, i64
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
    def vnni(self) -> bool:
        return self.dtype == DType.BF16

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
            panel = (x.at(ni, b.mul(gi, i64(cg)), px), self.x_strides[1])
            if self.vnni:
                panel = self._packed(ctx, panel, cols)
            gemm = GemmDesc(rows, cols, cg, dt, beta=0.0, lda=cg, ldb=panel[1], ldc=self.out_strides[1],
                            out_dtype=dt, b_vnni=self.vnni, epilogue=steps)
            args = [ctx.tensor("w").arg(ch), panel]
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
        if not self.vnni:
            return compose.Composite(tuple(tensors), (loop,))
        scratch = compose.Scratch("panel", dt, cg * self.tile, "thread", "the pixel tile's VNNI-packed panel")
        return compose.Composite(tuple(tensors), (self._forget, loop), (scratch,))

    def _forget(self, ctx: compose.Context) -> None:
        ctx.b.store(i64(-1), ctx.var("held_panel", I64))

    def _packed(self, ctx: compose.Context, given, cols: int):
        """This thread's VNNI-packed copy of the (image, group, pixel tile) panel, packed
        unless it holds it already: (address, row stride) of the packed B."""
        b = ctx.b
        held = ctx.var("held_panel", I64)
        key = b.add(b.mul(b.add(b.mul(ctx.start["n"], i64(self.groups)), ctx.start["g"]), i64(self.pixels)),
                    ctx.start["px"])
        out = (ctx.buffer("panel"), 2 * self.tile)
        with b.if_then(b.icmp_signed("!=", b.load(held, typ=I64), key)):
            ctx.call(ctx.primitive(UnaryDesc("vnni_pack", self.c // self.groups, cols, self.dtype, self.dtype)),
                     [given, out])
            b.store(key, held)
        return out
