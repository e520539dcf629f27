"""Direct convolution as a BRGEMM over (input-channel block, filter row, filter column),
the TPP paper's formulation, as ONE composite on the layer.

Layouts: the input is read as NCHWc (c = `cblk` channels of a pixel contiguous), the
weights as (groups, K/k, C/c, R, S, c, k) blocks (VNNI-2 pairs of c for bf16), the
output written as NCHWk, or as NCHW through a per-thread tile.

Parallel over (image, group, output-channel block, tile of output rows); per output row
    C[q, :] = sum over (cb, r, s) of X[p*sh + r*dh, q*sw + s*dw, cb-block] W[cb, r, s]
is ONE BRGEMM call with M = Q pixels (A rows stride*c apart), N = k, K = c, the batch's
A and B offsets from a table made once per plan, bias / residual / activation fused
into its epilogue; a plain output is the transposed tile.

An unpadded Blocked input is read in place. Any other input (plain NCHW, or padded) is
never copied whole ("row buffers"): the units are (image, group, tile of T output rows,
output block), the block innermost, and a thread writes the input rows its tile reads
(NCHWc, transposed from NCHW where the input is plain, with zero left/right padding)
into a buffer of its own, once for all the blocks it runs on that tile. A row's batch
holds only the filter rows that land inside the input (a table per set of them, in the
weights' (c block, filter row, filter column) order, which streams them in sequence;
where each row's table starts, and its length, in the table too), so the top and
bottom padding is neither stored nor multiplied. No barrier, no per-call copy.
Against a zero-padded copy of the whole input made first (the former path, same run,
1 thread, Zen 4): Blocked 1-4% faster, plain -1% to +3%.

Where the input has one channel block and no column dilation (the stem: C = 3), the
S taps of a filter row are adjacent in memory, so K = S*c and the batch runs over R
only ("fold").
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .. import compose
from ..descriptors import BrgemmDesc, UnaryDesc
from ..jit.loops import I64, i64
from ..jit.types import DType
from .conv_geometry import Grouped, Window
from .layout import blocked_shape

WHAT = "tpp.ops.conv2d"
ROW_BUFFER_BYTES = 192 << 10     # a thread's input rows stay in L2 beside the weights
MAX_TILE_ROWS = 16               # output rows a row buffer serves
MIN_UNITS = 8                    # tiles shrink until there are this many units to share


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
    rows: int = 1                         # output rows per transpose of a plain output
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
    def row_buffer(self) -> bool:
        """Whether the input is read through per-thread row buffers (a plain input, whose
        rows the fill transposes, or a padded Blocked one), not in place."""
        return not self.x_blocked or any(self.window.pad)

    @functools.cached_property
    def step_rows(self) -> int:
        """Output rows per unit: a row buffer's tile (its rows within ROW_BUFFER_BYTES, and
        at least MIN_UNITS units where there are rows enough), else `rows`."""
        if not self.row_buffer:
            return self.rows
        win = self.window
        row_bytes = self.cbg * (win.w + win.pad[2] + win.pad[3]) * self.cblk * self.dtype.itemsize
        most = MAX_TILE_ROWS
        while most > 1 and self._buffer_rows(most) * row_bytes > ROW_BUFFER_BYTES:
            most -= 1
        others = self.n * self.groups * self.kbg
        tiles = min(win.p, max(-(-win.p // most), -(-MIN_UNITS // others)))
        return -(-win.p // tiles) if tiles else 1

    def _buffer_rows(self, tile: int) -> int:
        """Input rows that `tile` output rows read."""
        win = self.window
        return (tile - 1) * win.stride[0] + (win.r - 1) * win.dilation[0] + 1

    def buffer_shape(self) -> tuple[int, ...]:
        """A row buffer: (c blocks of a group, input rows, padded width, c)."""
        win = self.window
        return (self.cbg, self._buffer_rows(self.step_rows), win.w + win.pad[2] + win.pad[3], self.cblk)

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

    def out_shape(self) -> tuple[int, ...]:
        win = self.window
        if self.out_blocked:
            return (self.n, self.groups * self.kbg, win.p, win.q, self.kblk)
        return (self.n, self.k, win.p, win.q)

    def w_shape(self) -> tuple[int, ...]:
        win = self.window
        if self.vnni and self.fold:         # VNNI pairs across a filter row's S*c (ops/conv_api.pack_weights)
            return (self.groups, self.kbg, 1, win.r, self._tap_row() // 2, self.kblk, 2)
        lead = (self.groups, self.kbg, self.cbg, win.r, win.s)
        return lead + ((self.cblk // 2, self.kblk, 2) if self.vnni else (self.cblk, self.kblk))

    def _tap_row(self) -> int:
        """Folded taps: a filter row's K (S*c), rounded up to whole VNNI pairs in bf16."""
        k = self.window.s * self.cblk
        return k + k % 2 if self.vnni else k

    def batch(self) -> int:
        win = self.window
        return win.r if self.fold else self.cbg * win.r * win.s

    def row_classes(self) -> list[tuple[int, int]]:
        """The distinct ranges of filter rows inside the input, the full one first."""
        win = self.window
        found = {win.row_taps(p) for p in range(win.p)} - {(0, win.r)}
        return [(0, win.r)] + sorted(found)

    def table_len(self) -> int:
        per_row = self.batch() // self.window.r
        return sum(hi - lo for lo, hi in self.row_classes()) * per_row + self.window.p

    def offsets(self) -> np.ndarray:
        """(2, table_len) int64: per row class a table of each batch entry's A offset from
        the output row's first input pixel (in the row buffer, or the blocked input) and
        its B offset from the (group, output block)'s weights, in the weights' order;
        then per output row its table's start and length."""
        win, c = self.window, self.cblk
        _, hp, wp, _ = self.buffer_shape() if self.row_buffer else blocked_shape(self.x_shape(), c)[1:]
        tables, where, at = [], {}, 0
        for lo, hi in self.row_classes():
            cb, r, s = np.meshgrid(np.arange(self.cbg), np.arange(lo, hi), np.arange(1 if self.fold else win.s),
                                   indexing="ij")
            a = (r * win.dilation[0] * wp + cb * hp * wp + s * win.dilation[1]) * c
            b = r * self._tap_row() if self.fold else ((cb * win.r + r) * win.s + s) * c
            tables.append(np.stack([a.ravel(), b.ravel() * self.kblk]))
            where[(lo, hi)] = (at, a.size)
            at += a.size
        rows = np.array([where[win.row_taps(p)] for p in range(win.p)]).T.reshape(2, -1)
        return np.ascontiguousarray(np.concatenate(tables + [rows], axis=1), np.int64)

    def epilogue(self) -> tuple[str, ...]:
        steps = (("bias",) if self.bias else ()) + (("residual",) if self.residual else ())
        return steps + ((self.activation,) if self.activation else ())

    def gemm(self) -> BrgemmDesc:
        """The BRGEMM of an output row."""
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
        tensors.append(compose.Tensor("offs", DType.I64, (2, self.table_len())))
        res_dt = self.out_dtype
        if self.residual == "blocked":
            tensors.append(compose.Tensor("res", res_dt, self.out_shape()))
        elif self.residual == "plain":
            tensors.append(compose.Tensor("res", res_dt, (self.n, self.k, win.p, win.q), self.res_strides))
        tensors.append(compose.Tensor("out", self.out_dtype, self.out_shape(),
                                      None if self.out_blocked else self.out_strides, output=True))
        scratch, body = [], []
        if not self.out_blocked:
            count = self.rows * win.q * self.kblk
            scratch.append(compose.Scratch("tile", self.out_dtype, count, "thread", "a tile of output rows"))
            if self.residual:
                scratch.append(compose.Scratch("rtile", res_dt, count, "thread", "the residual's rows"))
        if self.row_buffer:
            count = int(np.prod(self.buffer_shape()))
            scratch.append(compose.Scratch("rowbuf", dt, count, "thread", "the padded input rows of a tile"))
            body.append(self._forget_rows)
            # the block innermost: a thread's consecutive units share a tile's row buffer
            blocks = compose.Loop("kb", self.kg, (self._fill_rows, self._rows), tile=self.kblk, parallel=True)
            inner = compose.Loop("p", win.p, (blocks,), tile=self.step_rows, parallel=True)
        else:
            rows = compose.Loop("p", win.p, (self._rows,), tile=self.rows, parallel=True)
            inner = compose.Loop("kb", self.kg, (rows,), tile=self.kblk, parallel=True)
        body.append(compose.Loop("n", self.n, (compose.Loop("g", self.groups, (inner,), parallel=True),),
                                 parallel=True))
        return compose.Composite(tuple(tensors), tuple(body), tuple(scratch))

    def _forget_rows(self, ctx: compose.Context) -> None:
        ctx.b.store(i64(-1), ctx.var("held_tile", I64))

    def _fill_rows(self, ctx: compose.Context) -> None:
        """This thread's row buffer for the unit's (image, group, tile), unless it holds it:
        the input rows inside the image, each with its left and right padding zeroed."""
        b, win, dt, c = ctx.b, self.window, self.dtype, self.cblk
        top, _, left, right = win.pad
        ni, gi, p0 = ctx.start["n"], ctx.start["g"], ctx.start["p"]
        held = ctx.var("held_tile", I64)
        key = b.add(b.mul(b.add(b.mul(ni, i64(self.groups)), gi), i64(win.p)), p0)
        first = b.sub(b.mul(p0, i64(win.stride[0])), i64(top))          # the buffer's first row's input row
        rows = self._buffer_rows(ctx.size["p"])
        buf = ctx.view("rowbuf", self.buffer_shape())

        def smax(x, y):
            return b.select(b.icmp_signed(">", x, y), x, y)

        def smin(x, y):
            return b.select(b.icmp_signed("<", x, y), x, y)

        def one(ctx: compose.Context, j) -> None:
            cb, channels = ctx.index["cb"], ctx.size["cb"]
            x, hi = ctx.tensor("x"), b.add(first, j)
            if not self.x_blocked and channels < c:         # channels past C/groups: zero
                ctx.call(ctx.primitive(UnaryDesc("zero", left + win.w + right, c, dt, dt)), [(buf.at(cb, j), c)])
            else:
                if left:
                    ctx.call(ctx.primitive(UnaryDesc("zero", left, c, dt, dt)), [(buf.at(cb, j), c)])
                if right:
                    ctx.call(ctx.primitive(UnaryDesc("zero", right, c, dt, dt)),
                             [(buf.at(cb, j, left + win.w), c)])
            if self.x_blocked:
                src = x.at(ni, b.add(b.mul(gi, i64(self.cbg)), cb), hi)
                ctx.call(ctx.primitive(UnaryDesc("copy", win.w, c, dt, dt)), [(src, c), (buf.at(cb, j, left), c)])
            else:                       # the block's channel rows of W pixels -> W pixels of c channels
                src = x.at(ni, b.add(b.mul(gi, i64(self.cg)), ctx.start["cb"]), hi)
                ctx.call(ctx.primitive(UnaryDesc("transpose", channels, win.w, dt, dt)),
                         [(src, x.strides[1]), (buf.at(cb, j, left), c)])
        def row(ctx: compose.Context, j) -> None:
            ctx.run(compose.Loop("cb", self.cg, (lambda ctx: one(ctx, j),), tile=c))

        def read(ctx: compose.Context) -> None:
            """Row i*sh + r*dh of the buffer, where it lies inside the image."""
            j = b.add(b.mul(ctx.index["ti"], i64(win.stride[0])), b.mul(ctx.index["tr"], i64(win.dilation[0])))
            hi = b.add(first, j)
            with b.if_then(b.and_(b.icmp_signed(">=", hi, i64(0)), b.icmp_signed("<", hi, i64(win.h)))):
                row(ctx, j)
        with b.if_then(b.icmp_signed("!=", b.load(held, typ=I64), key)):
            if (win.r - 1) * win.dilation[0] + 1 < win.stride[0]:
                # rows between the windows are read by no output row (a 1x1 stride-2 layer:
                # every other one): only the windows' rows are filled
                ctx.run(compose.Loop("ti", ctx.size["p"], (compose.Loop("tr", win.r, (read,)),)))
            else:
                ctx.run(compose.Loop("j", start=lambda ctx: smax(i64(0), b.sub(i64(0), first)),
                                     stop=lambda ctx: smin(i64(rows), b.sub(i64(win.h), first)),
                                     body=(lambda ctx: row(ctx, ctx.index["j"]),)))
            b.store(key, held)

    def _rows(self, ctx: compose.Context) -> None:
        """A tile of output rows of one output-channel block: per row one BRGEMM; a plain
        output takes each `rows` of them in one transpose (their pixels are one run in
        NCHW), so its tile stays small (not a row buffer's whole tile: 229 KB for 8 stem rows)."""
        b, win = ctx.b, self.window
        ni, gi, kbi, p0 = ctx.start["n"], ctx.start["g"], ctx.index["kb"], ctx.start["p"]
        rows = ctx.size["kb"]                           # output channels in this block
        blk = b.add(b.mul(gi, i64(self.kbg)), kbi)      # the block among all K blocks
        k_at = b.add(b.mul(gi, i64(self.kg)), ctx.start["kb"])      # first output channel (plain)
        out, tile = ctx.tensor("out"), self.window.q * self.kblk

        def one(ctx: compose.Context) -> None:
            i = ctx.index["pr"]                         # the row in the tile's `rows`
            ti = b.add(ctx.start["pt"], i)              # ... in the tile
            pi = b.add(p0, ti)
            offs = ctx.tensor("offs")
            count = self.batch()
            start = 0
            if self.row_buffer:
                a = ctx.view("rowbuf", self.buffer_shape()).at(0, b.mul(ti, i64(win.stride[0])))
                rows_at = i64(self.table_len() - win.p)
                start = ctx.load("offs", 0, b.add(pi, rows_at))
                count = ctx.load("offs", 1, b.add(pi, rows_at))
            else:
                a = ctx.tensor("x").at(ni, b.mul(gi, i64(self.cbg)), b.mul(pi, i64(win.stride[0])))
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
            args += [(c_ptr, self.kblk), (offs.at(0, start), count), (offs.at(1, start), count)]
            ctx.call(ctx.primitive(self.gemm()), args)
            if self.out_blocked and rows < self.kblk and self.activation:
                # channels past K stay zero in a blocked output, whatever act(0) is
                ctx.call(ctx.primitive(UnaryDesc("zero", win.q, self.kblk - rows, self.out_dtype, self.out_dtype)),
                         [(out.at(ni, blk, pi, 0, rows), self.kblk)])
        def few(ctx: compose.Context) -> None:
            ctx.run(compose.Loop("pr", ctx.size["pt"], (one,)))
            if not self.out_blocked:
                ctx.call(ctx.primitive(UnaryDesc("transpose", ctx.size["pt"] * win.q, rows, self.out_dtype,
                                                 self.out_dtype)),
                         [(ctx.buffer("tile"), self.kblk), (out.at(ni, k_at, b.add(p0, ctx.start["pt"])),
                                                            out.strides[1])])
        ctx.run(compose.Loop("pt", ctx.size["p"], (few,), tile=self.rows))
