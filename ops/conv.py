"""Direct convolution as a BRGEMM over (input-channel block, filter row, filter column),
the TPP paper's formulation, as ONE composite on the layer.

Layouts: the input is read as NCHWc (c = `cblk` channels of a pixel contiguous), the
weights as (groups, K/k, C/c, R, S, c, k) blocks (VNNI-2 pairs of c for bf16), the
output written as NCHWk, or as NCHW through a per-thread tile.

    pack:     a zero-padded NCHWc copy of the input (per call), when the input is
              plain NCHW or needs padding: the kernel then never tests a border.
    compute:  parallel over (image, group, output-channel block, output row):
              C[q, :] = sum over (cb, r, s) of X[p*sh + r*dh, q*sw + s*dw, cb-block] W[cb, r, s]
              ONE BRGEMM call with M = Q pixels (A rows stride*c apart), N = k,
              K = c, the batch's A and B offsets from a table made once per plan,
              bias / residual / activation fused into its epilogue; a plain output
              is the transposed tile.
Where the input has one channel block and no column dilation (the stem: C = 3), the
S taps of a filter row are adjacent in memory, so K = S*c and the batch runs over R
only ("fold").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import compose
from ..descriptors import BrgemmDesc, UnaryDesc
from ..jit.loops import i64
from ..jit.types import DType
from .conv_geometry import Grouped, Window
from .layout import blocked_shape, pack_loop

WHAT = "tpp.ops.conv2d"


@dataclass(frozen=True)
class ConvDesc(Grouped, compose.CompositeDesc):
    n: int
    c: int
    k: int
    groups: int
    window: Window
    dtype: DType                      # x and the packed weights
    out_dtype: DType
    cblk: int                         # input channels per block
    kblk: int                         # output channels per block
    x_blocked: bool
    out_blocked: bool
    x_strides: tuple[int, ...] | None     # plain input's element strides
    out_strides: tuple[int, ...] | None
    bias: bool = False
    residual: str | None = None           # None, "plain" or "blocked"
    res_strides: tuple[int, ...] | None = None
    activation: str | None = None
    alpha: float | None = None
    rows: int = 1                         # output rows per step (a plain output's transpose)
    kind = "conv2d"

    # ---- geometry ---------------------------------------------------------------------------
    @property
    def cbg(self) -> int:
        """Input channel blocks per group."""
        return -(-self.cg // self.cblk)

    @property
    def kbg(self) -> int:
        return -(-self.kg // self.kblk)

    @property
    def padded(self) -> bool:
        """Whether the kernel reads a padded copy (plain input, or padding to add)."""
        return not self.x_blocked or any(self.window.pad)

    @property
    def fold(self) -> bool:
        win = self.window
        return self.cbg == 1 and win.dilation[1] == 1 and win.s > 1

    @property
    def vnni(self) -> bool:
        return self.dtype == DType.BF16

    def x_shape(self) -> tuple[int, ...]:
        win = self.window
        return (self.n, self.c, win.h, win.w)

    def xp_shape(self) -> tuple[int, ...]:
        """The NCHWc array the kernel reads (the padded copy, or the blocked input)."""
        return blocked_shape(self.x_shape(), self.cblk, self.window.pad if self.padded else (0, 0, 0, 0))

    def out_shape(self) -> tuple[int, ...]:
        win = self.window
        if self.out_blocked:
            return (self.n, self.groups * self.kbg, win.p, win.q, self.kblk)
        return (self.n, self.k, win.p, win.q)

    def w_shape(self) -> tuple[int, ...]:
        win = self.window
        lead = (self.groups, self.kbg, self.cbg, win.r, win.s)
        return lead + ((self.cblk // 2, self.kblk, 2) if self.vnni else (self.cblk, self.kblk))

    def batch(self) -> int:
        win = self.window
        return win.r if self.fold else self.cbg * win.r * win.s

    def offsets(self) -> np.ndarray:
        """(2, batch) int64: each batch entry's A offset from the output row's first input
        pixel, and its B offset from the (group, output block)'s weights."""
        win = self.window
        _, _, hp, wp, c = self.xp_shape()
        row, block = wp * c, c * self.kblk
        if self.fold:
            r = np.arange(win.r)
            return np.stack([r * win.dilation[0] * row, r * win.s * block]).astype(np.int64)
        cb, r, s = np.meshgrid(np.arange(self.cbg), np.arange(win.r), np.arange(win.s), indexing="ij")
        a = cb * hp * row + r * win.dilation[0] * row + s * win.dilation[1] * c
        return np.stack([a.ravel(), np.arange(a.size) * block]).astype(np.int64)

    def epilogue(self) -> tuple[str, ...]:
        steps = (("bias",) if self.bias else ()) + (("residual",) if self.residual else ())
        return steps + ((self.activation,) if self.activation else ())

    def gemm(self) -> BrgemmDesc:
        win = self.window
        c, k = self.cblk, self.kblk
        kdim = win.s * c if self.fold else c
        return BrgemmDesc(win.q, k, kdim, self.dtype, "offset", beta=0.0, lda=win.stride[1] * c,
                          ldb=2 * k if self.vnni else k, ldc=k, out_dtype=self.out_dtype, b_vnni=self.vnni,
                          epilogue=self.epilogue())

    # ---- the composite ----------------------------------------------------------------------
    def composite(self, target) -> compose.Composite:
        win, dt = self.window, self.dtype
        x_spec = (compose.Tensor("x", dt, blocked_shape(self.x_shape(), self.cblk)) if self.x_blocked
                  else compose.Tensor("x", dt, self.x_shape(), self.x_strides))
        tensors = [x_spec, compose.Tensor("w", dt, self.w_shape())]
        if self.bias:
            tensors.append(compose.Tensor("bias", self.out_dtype, (self.groups * self.kbg * self.kblk,)))
        tensors.append(compose.Tensor("offs", DType.I64, (2, self.batch())))
        res_dt = self.out_dtype
        if self.residual == "blocked":
            tensors.append(compose.Tensor("res", res_dt, self.out_shape()))
        elif self.residual == "plain":
            tensors.append(compose.Tensor("res", res_dt, (self.n, self.k, win.p, win.q), self.res_strides))
        tensors.append(compose.Tensor("out", self.out_dtype, self.out_shape(),
                                      None if self.out_blocked else self.out_strides, output=True))
        scratch, body = [], []
        if self.padded:
            count = int(np.prod(self.xp_shape()))
            scratch.append(compose.Scratch("xp", dt, count, "call", "the zero-padded NCHWc input"))
            body += [self._pack_phase(), compose.BARRIER]
        if not self.out_blocked:
            count = self.rows * win.q * self.kblk
            scratch.append(compose.Scratch("tile", self.out_dtype, count, "thread", "a tile of output rows"))
            if self.residual:
                scratch.append(compose.Scratch("rtile", res_dt, count, "thread", "the residual's rows"))
        rows = compose.Loop("p", win.p, (self._rows,), tile=self.rows, parallel=True)
        blocks = compose.Loop("kb", self.kg, (rows,), tile=self.kblk, parallel=True)
        body.append(compose.Loop("n", self.n, (compose.Loop("g", self.groups, (blocks,), parallel=True),),
                                 parallel=True))
        return compose.Composite(tuple(tensors), tuple(body), tuple(scratch))

    def _pack_phase(self):
        if not self.x_blocked:
            return pack_loop("x", "xp", self.x_shape(), self.cblk, self.dtype, self.window.pad)
        return self._pad_blocked()

    def _pad_blocked(self):
        """Blocked input with padding: each padded row zeroed, its interior copied."""
        win, dt, c = self.window, self.dtype, self.cblk
        top, _, left, _ = win.pad
        shape = self.xp_shape()
        _, cb, hp, wp, _ = shape

        def row(ctx: compose.Context) -> None:
            b = ctx.b
            x, y = ctx.tensor("x"), ctx.view("xp", shape)
            ni, ci, hi = ctx.start["n"], ctx.start["cb"], ctx.start["h"]
            ctx.call(ctx.primitive(UnaryDesc("zero", wp, c, dt, dt)), [(y.at(ni, ci, hi), c)])
            inside = b.and_(b.icmp_signed(">=", hi, i64(top)), b.icmp_signed("<", hi, i64(top + win.h)))
            with b.if_then(inside):
                ctx.call(ctx.primitive(UnaryDesc("copy", win.w, c, dt, dt)),
                         [(x.at(ni, ci, b.sub(hi, i64(top))), c), (y.at(ni, ci, hi, left), c)])
        inner = compose.Loop("h", hp, (row,), parallel=True)
        return compose.Loop("n", self.n, (compose.Loop("cb", cb, (inner,), parallel=True),), parallel=True)

    def _rows(self, ctx: compose.Context) -> None:
        """A tile of output rows of one output-channel block: per row one BRGEMM; a plain
        output takes the tile's rows in one transpose (their pixels are one run in NCHW)."""
        b, win = ctx.b, self.window
        ni, gi, kbi, p0 = ctx.start["n"], ctx.start["g"], ctx.index["kb"], ctx.start["p"]
        rows = ctx.size["kb"]                           # output channels in this block
        blk = b.add(b.mul(gi, i64(self.kbg)), kbi)      # the block among all K blocks
        k_at = b.add(b.mul(gi, i64(self.kg)), ctx.start["kb"])      # first output channel (plain)
        out, tile = ctx.tensor("out"), self.window.q * self.kblk

        def one(ctx: compose.Context) -> None:
            i = ctx.index["pr"]
            pi = b.add(p0, i)
            xin = ctx.view("xp", self.xp_shape()) if self.padded else ctx.tensor("x")
            a = xin.at(ni, b.mul(gi, i64(self.cbg)), b.mul(pi, i64(win.stride[0])))
            wt = ctx.tensor("w").at(gi, kbi)
            args = [(a, win.stride[1] * self.cblk), (wt, 2 * self.kblk if self.vnni else self.kblk)]
            if self.bias:
                args.append((ctx.tensor("bias").at(b.mul(blk, i64(self.kblk))), self.kblk))
            if self.residual == "blocked":
                args.append((ctx.tensor("res").at(ni, blk, pi), self.kblk))
            elif self.residual == "plain":
                res = ctx.tensor("res")
                rt = ctx.view("rtile", (self.rows, tile)).at(i)
                ctx.call(ctx.primitive(UnaryDesc("transpose", rows, win.q, self.out_dtype, self.out_dtype)),
                         [(res.at(ni, k_at, pi), res.strides[1]), (rt, self.kblk)])
                args.append((rt, self.kblk))
            c_ptr = out.at(ni, blk, pi) if self.out_blocked else ctx.view("tile", (self.rows, tile)).at(i)
            offs = ctx.tensor("offs")
            count = self.batch()
            args += [(c_ptr, self.kblk), (offs.at(0), count), (offs.at(1), count)]
            ctx.call(ctx.primitive(self.gemm()), args)
            if self.out_blocked and rows < self.kblk and self.activation:
                # channels past K stay zero in a blocked output, whatever act(0) is
                ctx.call(ctx.primitive(UnaryDesc("zero", win.q, self.kblk - rows, self.out_dtype, self.out_dtype)),
                         [(out.at(ni, blk, pi, 0, rows), self.kblk)])
        ctx.run(compose.Loop("pr", ctx.size["p"], (one,)))
        if not self.out_blocked:
            ctx.call(ctx.primitive(UnaryDesc("transpose", ctx.size["p"] * win.q, rows, self.out_dtype,
                                             self.out_dtype)),
                     [(ctx.buffer("tile"), self.kblk), (out.at(ni, k_at, p0), out.strides[1])])
