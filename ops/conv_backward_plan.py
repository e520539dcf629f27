"""The backward convolution's composite: dx, dw and dbias of conv2d in ONE compiled
function on the layer, every O(N C H W K R S) product a BRGEMM.

    pack:   a zero-padded NCHWc copy of x (blocks of `cw` channels) and a zero-padded
            NCHWk copy of dy (blocks of `kd`), both by ops/layout.py's pack loop; the
            filter K <-> C transposed into (groups, C/cd, K/kd, R, S, kd, cd) blocks, a
            transpose per (k, c block) of w[k]'s (c, R*S).
    dx:     parallel over (image, group, input-channel block, input row h): the row is
            cut into its stride phases (columns w with (w + left) % sw == phi); each
            phase is ONE offset-variant BRGEMM over (dy channel block, the taps r, s that
            reach it), M = the phase's pixels (A rows kd apart in the padded dy, C rows
            sw * cd apart in a row tile), N = cd input channels, K = kd, B the filter
            blocks. Which
            taps r reach row h depends on (h + top) % sh, read at run time from the
            offset table; no flop is spent on the zeros of a strided transposed
            convolution. The tile is transposed into the plain dx row.
    dw:     parallel over (group, output-channel block, input-channel block):
            dw[k, c, r, s] = sum over (n, p) of dy[n, k, p, :] x_pad[n, c, p*sh + r*dh, s*dw + q*sw]
            per tap (r, s) one offset-variant BRGEMM with M = k (A: dy's plain rows, P*Q apart),
            N = c (B: the padded copy's pixels, sw * cw apart), K = Q pixels, its batch a
            chunk of the (image, output row) pairs that fits in L2 (where there are more
            chunks, each adds to the thread's zeroed (k, R, S, c) tile), the tile then
            transposed into dw's (c, R*S) rows of each k; each dw element is summed by one
            thread in one order, so dw does not depend on the thread count. Where the
            output channels fill more vector lanes than the input channels (the stem's
            3), the GEMMs compute dw^T instead: M = c (A: the padded x read transposed),
            N = k (B: the padded dy's pixels), kd channels a block.
    dbias:  parallel over dy channel blocks: column sums (reduce_sum) of the padded dy
            copy's (pixels x kd) block per image, the images added in order.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .. import compose
from ..descriptors import BinaryDesc, BrgemmDesc, UnaryDesc
from ..jit.loops import i64
from ..jit.types import DType
from .conv_geometry import Grouped, Window
from .layout import blocked_shape, pack_loop

F32 = DType.F32
CHUNK_BYTES = 256 << 10     # a dw BRGEMM's batch: its A and B rows together, to stay in L2


def dw_chunk(n: int, win: Window, kw: int, cw: int, budget: int = CHUNK_BYTES) -> int:
    """(image, output row) pairs per dw BRGEMM: its A rows (kw x Q) and B rows (Q pixels
    of cw channels, stride apart) within `budget` bytes."""
    per_row = 4 * (kw * win.q + win.stride[1] * win.q * cw)
    return max(1, min(n * win.p, budget // per_row))


@dataclass(frozen=True)
class Phases:
    """How the rows and columns of dx meet the taps of a strided filter.

    rows[rho]: the taps r that reach an input row h with (h + top) % sh == rho, each as
    (r, its dy row relative to the row's base (h + top) // sh); cols[phi]: for the
    columns w with (w + left) % sw == phi, (the first such w, how many, the taps
    (s, the dy column of the first w)). pad: the zeros dy needs on each side (top,
    bottom, left, right) for every tap read to fall inside the padded copy."""
    rows: tuple
    cols: tuple
    pad: tuple[int, int, int, int]


def phases(win: Window) -> Phases:
    (sh, sw), (dh, dw) = win.stride, win.dilation
    top, _, left, _ = win.pad
    rows = tuple(tuple((r, -((r * dh - rho) // sh)) for r in range(win.r) if (r * dh) % sh == rho)
                 for rho in range(sh))
    cols = []
    for phi in range(sw):
        w0 = (phi - left) % sw
        count = len(range(w0, win.w, sw))
        cols.append((w0, count, tuple((s, (w0 + left - s * dw) // sw) for s in range(win.s)
                                      if (s * dw) % sw == phi)))
    # the dy rows / columns the taps reach (where they fall outside dy: zero padding)
    ps = [(h + top) // sh + off for h in range(win.h) for _, off in rows[(h + top) % sh]]
    qs = [q for _, count, taps in cols if count for _, q0 in taps for q in (q0, q0 + count - 1)]
    lo_p, hi_p = (min(ps), max(ps)) if ps else (0, win.p - 1)
    lo_q, hi_q = (min(qs), max(qs)) if qs else (0, win.q - 1)
    pad = (max(0, -lo_p), max(0, hi_p - win.p + 1), max(0, -lo_q), max(0, hi_q - win.q + 1))
    return Phases(rows, tuple(cols), pad)


@dataclass(frozen=True)
class ConvBackwardDesc(Grouped, compose.CompositeDesc):
    n: int
    c: int
    k: int
    groups: int
    window: Window
    x_strides: tuple[int, ...]
    dy_strides: tuple[int, ...]
    cw: int           # dw: input channels per block of the padded x copy (its GEMMs' N)
    kw: int           # dw: output channels per GEMM (M)
    kd: int           # dx: dy channels per block of the padded dy copy (its GEMMs' K)
    cd: int           # dx: input channels per GEMM (N)
    chunk: int        # dw: (image, output row) pairs per BRGEMM (dw_chunk)
    dw_swap: bool = False     # dw's GEMMs as dw^T (M = c, N = k; kw = kd): few input channels
    kind = "conv2d_backward"

    # ---- geometry ---------------------------------------------------------------------------
    @functools.cached_property
    def phases(self) -> Phases:
        """The stride phases (~30 us to work out at H = 56; read by every row body)."""
        return phases(self.window)

    def x_shape(self) -> tuple[int, ...]:
        return (self.n, self.c, self.window.h, self.window.w)

    def dy_shape(self) -> tuple[int, ...]:
        return (self.n, self.k, self.window.p, self.window.q)

    def xp_shape(self) -> tuple[int, ...]:
        return blocked_shape(self.x_shape(), self.cw, self.window.pad)

    def dyp_shape(self) -> tuple[int, ...]:
        return blocked_shape(self.dy_shape(), self.kd, self.phases.pad)

    def wt_shape(self) -> tuple[int, ...]:
        """The backward-data filter's blocks: (groups, C/cd, K/kd, R, S, kd, cd), K and C
        swapped (not flipped: the offset table names each tap), zero past K and C/groups."""
        win = self.window
        return (self.groups, -(-self.cg // self.cd), -(-self.kg // self.kd), win.r, win.s, self.kd, self.cd)

    @property
    def taps(self) -> int:
        """The most batch entries of a dx phase (the offset table's row length)."""
        ph = self.phases
        most = max(len(t) for t in ph.rows) * max(len(t) for _, _, t in ph.cols)
        return max(1, -(-self.kg // self.kd) * most)

    def dx_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """(2, sh * sw * taps) int64: per (row phase, column phase), the A offsets from the
        row's first dy pixel (block 0 of the group, the row's base) and the B offsets from
        the (group, input block)'s filter blocks; and the (sh, sw) int64 entry counts."""
        win, ph = self.window, self.phases
        sh, sw = win.stride
        _, _, hp, wp, kd = self.dyp_shape()
        left = ph.pad[2]
        kbg = -(-self.kg // kd)
        table = np.zeros((2, sh, sw, self.taps), np.int64)
        counts = np.zeros((sh, sw), np.int64)
        for rho, rtaps in enumerate(ph.rows):
            for phi, (_, _, staps) in enumerate(ph.cols):
                entries = [(kb * hp * wp * kd + dr * wp * kd + (left + q0) * kd,
                            ((kb * win.r + r) * win.s + s) * kd * self.cd)
                           for kb in range(kbg) for r, dr in rtaps for s, q0 in staps]
                counts[rho, phi] = len(entries)
                if entries:
                    table[:, rho, phi, :len(entries)] = np.array(entries, np.int64).T
        return table.reshape(2, -1), counts

    def dw_offsets(self) -> np.ndarray:
        """(2, N * P) int64: per (image, output row), the offsets of its A and B rows: dy's
        row from dy's first pixel and x_pad's first row from the padded copy's first pixel
        (swapped: x_pad's, then the padded dy's)."""
        win = self.window
        _, cb, hp, wp, c = self.xp_shape()
        n, p = np.meshgrid(np.arange(self.n), np.arange(win.p), indexing="ij")
        xo = n * cb * hp * wp * c + p * win.stride[0] * wp * c
        if self.dw_swap:
            _, kb, hq, wq, kd = self.dyp_shape()
            top, _, left, _ = self.phases.pad
            dyo = n * kb * hq * wq * kd + (p + top) * wq * kd + left * kd
            return np.stack([xo.ravel(), dyo.ravel()]).astype(np.int64)
        dyo = n * self.dy_strides[0] + p * self.dy_strides[2]
        return np.stack([dyo.ravel(), xo.ravel()]).astype(np.int64)

    @property
    def dw_direct(self) -> bool:
        """1x1 filters, not swapped: the BRGEMMs write dw itself."""
        return self.window.r * self.window.s == 1 and not self.dw_swap

    def dw_tile(self) -> tuple[int, int, int, int]:
        """A thread's dw tile: (k, R, S, c), swapped (c, R, S, k)."""
        r, s = self.window.r, self.window.s
        return (self.cw, r, s, self.kw) if self.dw_swap else (self.kw, r, s, self.cw)

    # ---- the composite ----------------------------------------------------------------------
    def composite(self, target) -> compose.Composite:
        win = self.window
        sh, sw = win.stride
        tensors = [compose.Tensor("dy", F32, self.dy_shape(), self.dy_strides),
                   compose.Tensor("x", F32, self.x_shape(), self.x_strides),
                   compose.Tensor("w", F32, (self.k, self.cg, win.r, win.s)),
                   compose.Tensor("offs", DType.I64, (2, sh * sw * self.taps)),
                   compose.Tensor("counts", DType.I64, (sh, sw)),
                   compose.Tensor("dwoffs", DType.I64, (2, self.n * win.p)),
                   compose.Tensor("dx", F32, self.x_shape(), output=True),
                   compose.Tensor("dw", F32, (self.k, self.cg, win.r, win.s), output=True),
                   compose.Tensor("dbias", F32, (self.k,), output=True)]
        scratch = [compose.Scratch("xp", F32, int(np.prod(self.xp_shape())), "call", "the padded NCHWc x"),
                   compose.Scratch("dyp", F32, int(np.prod(self.dyp_shape())), "call", "the padded NCHWk dy"),
                   compose.Scratch("wt", F32, int(np.prod(self.wt_shape())), "call", "the blocked transposed w"),
                   compose.Scratch("tile", F32, win.w * self.cd, "thread", "a dx row tile"),
                   compose.Scratch("colsum", F32, self.kd, "thread", "an image's dbias")]
        if not self.dw_direct:
            scratch.append(compose.Scratch("dwt", F32, int(np.prod(self.dw_tile())), "thread", "a dw tile"))
        body = [pack_loop("x", "xp", self.x_shape(), self.cw, F32, win.pad),
                pack_loop("dy", "dyp", self.dy_shape(), self.kd, F32, self.phases.pad),
                *self._w_loops(), compose.BARRIER, self._dx_loops(), self._dw_loops(), self._dbias_loop()]
        return compose.Composite(tuple(tensors), tuple(body), tuple(scratch))

    # ---- the backward-data filter ---------------------------------------------------------------
    def _w_loops(self) -> list:
        """Per (output channel, input-channel block) a transpose of w[k]'s (c, R*S) block into
        the filter blocks' (R*S, c) rows of k; zeros past C/groups and past K."""
        win = self.window
        rs, kd, cd = win.r * win.s, self.kd, self.cd
        kbg = -(-self.kg // kd)
        kpad = self.groups * kbg * kd     # == K where groups > 1 (kd then divides K/groups)

        def block(ctx: compose.Context) -> None:
            b = ctx.b
            ki, cbi, size = ctx.start["tk"], ctx.index["tc"], ctx.size["tc"]
            g, kk = (b.sdiv(ki, i64(self.kg)), b.srem(ki, i64(self.kg))) if self.groups > 1 else (i64(0), ki)
            wt = ctx.view("wt", self.wt_shape())
            row = wt.at(g, cbi, b.sdiv(kk, i64(kd)), 0, 0, b.srem(kk, i64(kd)))

            def turn() -> None:
                ctx.call(ctx.primitive(UnaryDesc("transpose", size, rs, F32, F32)),
                         [(ctx.tensor("w").at(ki, ctx.start["tc"]), rs), (row, kd * cd)])
                if size < cd:
                    ctx.call(ctx.primitive(UnaryDesc("zero", rs, cd - size, F32, F32)),
                             [(b.gep(row, [i64(size)], source_etype=F32.storage), kd * cd)])
            if kpad == self.k:
                turn()
                return
            with b.if_else(b.icmp_signed("<", ki, i64(self.k))) as (inside, past):
                with inside:
                    turn()
                with past:
                    ctx.call(ctx.primitive(UnaryDesc("zero", rs, cd, F32, F32)), [(row, kd * cd)])
        return [compose.Loop("tk", kpad, (compose.Loop("tc", self.cg, (block,), tile=cd),), parallel=True)]

    # ---- dx -------------------------------------------------------------------------------------
    def _dx_loops(self) -> compose.Loop:
        rows = compose.Loop("h", self.window.h, (self._dx_row,), parallel=True)
        blocks = compose.Loop("cb", self.cg, (rows,), tile=self.cd, parallel=True)
        return compose.Loop("n", self.n, (compose.Loop("g", self.groups, (blocks,), parallel=True),),
                            parallel=True)

    def _dx_row(self, ctx: compose.Context) -> None:
        """One row of dx for one block of input channels: a BRGEMM per column phase."""
        b, win, ph = ctx.b, self.window, self.phases
        sh, sw = win.stride
        kd, cd = self.kd, self.cd
        ni, gi, cbi, hi = ctx.start["n"], ctx.start["g"], ctx.index["cb"], ctx.start["h"]
        rows = ctx.size["cb"]
        t = b.add(hi, i64(win.pad[0]))
        rho = b.srem(t, i64(sh)) if sh > 1 else i64(0)
        base = b.add(b.sdiv(t, i64(sh)) if sh > 1 else t, i64(ph.pad[0]))
        a = ctx.view("dyp", self.dyp_shape()).at(ni, b.mul(gi, i64(-(-self.kg // kd))), base)
        wt = ctx.view("wt", self.wt_shape()).at(gi, cbi)
        offs = ctx.tensor("offs")
        tile = ctx.view("tile", (win.w, cd))
        for phi, (w0, count, _) in enumerate(ph.cols):
            if not count:
                continue
            entry = b.mul(b.add(b.mul(rho, i64(sw)), i64(phi)), i64(self.taps))
            taps = ctx.load("counts", rho, phi)
            gemm = BrgemmDesc(count, cd, kd, F32, "offset", beta=0.0, lda=kd, ldb=cd, ldc=sw * cd)
            ctx.call(ctx.primitive(gemm), [(a, kd), (wt, cd), (tile.at(w0), sw * cd),
                                           (offs.at(0, entry), taps), (offs.at(1, entry), taps)])
        dx = ctx.tensor("dx")
        c_at = b.add(b.mul(gi, i64(self.cg)), ctx.start["cb"])
        ctx.call(ctx.primitive(UnaryDesc("transpose", win.w, rows, F32, F32)),
                 [(tile.ptr, cd), (dx.at(ni, c_at, hi), dx.strides[1])])

    # ---- dw -------------------------------------------------------------------------------------
    def _dw_loops(self) -> compose.Loop:
        cblocks = compose.Loop("wc", self.cg, (self._dw_block,), tile=self.cw, parallel=True)
        kblocks = compose.Loop("wk", self.kg, (cblocks,), tile=self.kw, parallel=True)
        return compose.Loop("wg", self.groups, (kblocks,), parallel=True)

    def _dw_out(self, ctx: compose.Context, r, s) -> tuple:
        """(address, ld) of the dw tile of this (k block, c block) and tap (r, s): in dw
        itself for 1x1 filters, else in the thread's tile."""
        if self.dw_direct:
            b, dw = ctx.b, ctx.tensor("dw")
            k_at = b.add(b.mul(ctx.start["wg"], i64(self.kg)), ctx.start["wk"])
            return dw.at(k_at, ctx.start["wc"]), dw.strides[0]
        tile = ctx.view("dwt", self.dw_tile())
        return tile.at(0, r, s), tile.strides[0]

    def _dw_block(self, ctx: compose.Context) -> None:
        """One (k block, c block): the BRGEMMs of each chunk of (image, row) pairs per tap
        (r, s) (adding to a zeroed tile where there are several chunks), then the tile's
        rows into dw, R*S contiguous elements per channel.
        Swapped: dw^T = x_pad^T dy^T, A the padded x's (pixels x c) read transposed, B the
        padded dy's (pixels x k)."""
        b, win = ctx.b, self.window
        ks, cs = ctx.size["wk"], ctx.size["wc"]
        k_at = b.add(b.mul(ctx.start["wg"], i64(self.kg)), ctx.start["wk"])
        cb_at = b.add(b.mul(ctx.start["wg"], i64(-(-self.cg // self.cw))), ctx.index["wc"])
        m, n = (cs, ks) if self.dw_swap else (ks, cs)
        beta = 0.0 if self.chunk >= self.n * win.p else 1.0
        if beta:
            cols = n if self.dw_direct else win.r * win.s * self.dw_tile()[3]
            ctx.call(ctx.primitive(UnaryDesc("zero", m, cols, F32, F32)), [self._dw_out(ctx, 0, 0)])

        def product(ctx: compose.Context) -> None:
            j0, count, r, s = ctx.start["j"], ctx.size["j"], ctx.start["r"], ctx.start["s"]
            c, ldc = self._dw_out(ctx, r, s)
            xs = (ctx.view("xp", self.xp_shape()).at(0, cb_at, b.mul(r, i64(win.dilation[0])),
                                                     b.mul(s, i64(win.dilation[1]))), win.stride[1] * self.cw)
            if self.dw_swap:
                kb_at = b.add(b.mul(ctx.start["wg"], i64(-(-self.kg // self.kd))), ctx.index["wk"])
                a, bb = xs, (ctx.view("dyp", self.dyp_shape()).at(0, kb_at), self.kd)
            else:
                a, bb = (ctx.tensor("dy").at(0, k_at), self.dy_strides[1]), xs
            offs = ctx.tensor("dwoffs")
            gemm = BrgemmDesc(m, n, win.q, F32, "offset", trans_a=self.dw_swap, beta=beta, lda=a[1], ldb=bb[1],
                              ldc=ldc)
            ctx.call(ctx.primitive(gemm), [a, bb, (c, ldc), (offs.at(0, j0), count), (offs.at(1, j0), count)])

        def store(ctx: compose.Context) -> None:
            """Row i of the tile, (R*S, n), into dw: its (n, R*S) rows at dw[k, c0:] (swapped:
            at dw[k0:, c], C/groups*R*S apart)."""
            tile, dw, i = ctx.view("dwt", self.dw_tile()), ctx.tensor("dw"), ctx.start["dk"]
            at = (k_at, b.add(ctx.start["wc"], i)) if self.dw_swap else (b.add(k_at, i), ctx.start["wc"])
            ld = dw.strides[0 if self.dw_swap else 1]
            ctx.call(ctx.primitive(UnaryDesc("transpose", win.r * win.s, n, F32, F32)),
                     [(tile.at(i), tile.strides[2]), (dw.at(*at), ld)])

        taps = compose.Loop("r", win.r, (compose.Loop("s", win.s, (product,)),))
        ctx.run(compose.Loop("j", self.n * win.p, (taps,), tile=self.chunk))
        if not self.dw_direct:
            ctx.run(compose.Loop("dk", m, (store,)))

    # ---- dbias ----------------------------------------------------------------------------------
    def _dbias_loop(self) -> compose.Loop:
        _, _, hp, wp, kd = self.dyp_shape()

        def body(ctx: compose.Context) -> None:
            size = ctx.size["bk"]
            dyp = ctx.view("dyp", self.dyp_shape())
            out = (ctx.tensor("dbias").at(ctx.start["bk"]), size)
            column_sums = ctx.primitive(UnaryDesc("reduce_sum", hp * wp, size, F32, F32, axis=0))
            ctx.call(column_sums, [(dyp.at(0, ctx.index["bk"]), kd), out])
            if self.n > 1:
                add = ctx.primitive(BinaryDesc("add", 1, size, F32))
                mine = (ctx.buffer("colsum"), size)

                def image(ctx: compose.Context) -> None:          # images 1.. in order
                    ni = ctx.b.add(ctx.start["bn"], i64(1))
                    ctx.call(column_sums, [(dyp.at(ni, ctx.index["bk"]), kd), mine])
                    ctx.call(add, [out, mine, out])
                ctx.run(compose.Loop("bn", self.n - 1, (image,)))
        return compose.Loop("bk", self.k, (body,), tile=self.kd, parallel=True)

