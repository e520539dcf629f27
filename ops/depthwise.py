"""tpp.ops.depthwise: depthwise convolution (torch's conv2d with groups == C == K), fused
with a bias, a residual and an activation: y = act(conv(x, w) + bias + residual).

ONE compiled function on the composition layer, vectorised over channels. It works on
the blocked layout NCHWc, where a row of Q output pixels of one channel block is a
Q x c tile (row stride c) and tap (r, s) reads the input tile at pixel
(p*stride + r*dil, s*dil) with row stride stride*c. One equation TPP per output row
sums the R*S products of those tiles with their taps' c weights (row-broadcast
1 x c inputs), starting from the bias row, then adds the residual and applies the
activation: R*S FMAs per output vector, the intermediates in registers.

Parallel units are (image, channel block, a tile of output rows). A unit first writes
the input rows it reads into a zero-padded blocked copy private to its thread
(transposes from NCHW, or copies from NCHWc; halo and channels past C zeroed), so the
compute loop never tests a border and its input stays in L1/L2; then it runs its
rows. A plain NCHW output row is computed into a per-thread tile and transposed out;
a plain residual is transposed into a tile first, so the sum is rounded once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import compose, expr as eq
from ..descriptors import UnaryDesc
from ..dtypes import parse as parse_dtype, to_numpy
from ..errors import ArgumentError, DTypeError, ShapeError
from ..jit.loops import i64
from ..jit.types import DType
from ..kernels import unary as unary_k
from .args import element_strides
from .bias_act import activations
from .conv_geometry import conv_window, pair
from .layout import Blocked, default_block

WHAT = "tpp.ops.depthwise_conv2d"
DTYPES = (DType.F32, DType.BF16)
MAX_TAPS = 32           # taps per equation (its node limit); more accumulate in an f32 tile
UNITS = 8               # split output rows until there are this many parallel units
PLANE_BYTES = 96 << 10  # a unit's padded input rows stay in L2 beside everything else
WIDE_BYTES = 128 << 10  # a block's weights repeated along a row of pixels, read for each row


@dataclass(frozen=True)
class DepthwiseDesc(compose.CompositeDesc):
    n: int
    channels: int
    hw: tuple[int, int]
    rs: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int, int, int]        # top, bottom, left, right
    pq: tuple[int, int]
    block: int
    dtype: DType
    blocked: bool                         # x, residual and y are NCHWc (else NCHW)
    x_strides: tuple[int, ...]            # element strides of a plain x / residual
    res_strides: tuple[int, ...] | None   # None: no residual
    bias: bool
    activation: str | None
    wide: bool = False      # a row of Q pixels is one 1 x Q*c row (stride 1 along W): weights repeated Q times
    kind = "depthwise"

    @property
    def span(self) -> int:
        """The length of a weight or bias row: one block, or Q of them (wide)."""
        return self.block * (self.pq[1] if self.wide else 1)

    @property
    def padded_width(self) -> int:
        return self.hw[1] + self.pad[2] + self.pad[3]

    @property
    def copies_input(self) -> bool:
        """Whether units read a padded copy (NCHW input, or padding) or x itself."""
        return not self.blocked or any(self.pad)

    @property
    def unit_rows(self) -> int:
        """Output rows per parallel unit: all P while there are enough (image, block)
        pairs, else fewer, and few enough that the unit's padded rows stay in L2."""
        p = self.pq[0]
        pairs = max(1, self.n * -(-self.channels // self.block))
        rows = p if pairs >= UNITS else -(-p // -(-UNITS // pairs))
        if self.copies_input:
            row_bytes = self.padded_width * self.block * self.dtype.itemsize
            while rows > 1 and self.input_rows(rows) * row_bytes > PLANE_BYTES:
                rows = -(-rows // 2)
        return max(1, rows)

    def input_rows(self, rows: int) -> int:
        return (rows - 1) * self.stride[0] + (self.rs[0] - 1) * self.dilation[0] + 1

    def composite(self, target) -> compose.Composite:
        n, ch, c, dt = self.n, self.channels, self.block, self.dtype
        (h, w), (p, q) = self.hw, self.pq
        cb = -(-ch // c)
        taps = self.rs[0] * self.rs[1]
        f32 = DType.F32
        if self.blocked:
            x = compose.Tensor("x", dt, (n, cb, h, w, c))
            y = compose.Tensor("y", dt, (n, cb, p, q, c), output=True)
        else:
            x = compose.Tensor("x", dt, (n, ch, h, w), self.x_strides)
            y = compose.Tensor("y", dt, (n, ch, p, q), output=True)
        tensors = [x, compose.Tensor("w", f32, (cb, taps, self.span))]
        if self.bias:
            tensors.append(compose.Tensor("bias", f32, (cb * self.span,)))
        if self.res_strides is not None:
            shape = y.shape if self.blocked else (n, ch, p, q)
            tensors.append(compose.Tensor("res", dt, shape, None if self.blocked else self.res_strides))
        tensors.append(y)
        rows = self.unit_rows
        scratch = []
        if self.copies_input:
            scratch.append(compose.Scratch("xp", dt, self.input_rows(rows) * self.padded_width * c, "thread",
                                           "the padded input rows"))
        if not self.blocked:
            scratch.append(compose.Scratch("tile", dt, q * c, "thread", "an output row"))
            if self.res_strides is not None:
                scratch.append(compose.Scratch("rtile", dt, q * c, "thread", "a residual row"))
        if taps > MAX_TAPS:
            scratch.append(compose.Scratch("acc", f32, q * c, "thread", "partial sums of the taps"))
        unit = compose.Loop("pt", p, (self._unit,), tile=rows, parallel=True)
        loop = compose.Loop("n", n, (compose.Loop("cb", ch, (unit,), tile=c, parallel=True),), parallel=True)
        return compose.Composite(tuple(tensors), (loop,), tuple(scratch))

    # ---- one unit: its padded input rows, then its output rows ---------------------------
    def _unit(self, ctx: compose.Context) -> None:
        if self.copies_input:
            ctx.run(compose.Loop("i", self.input_rows(ctx.size["pt"]), (self._pad_row,)))
        ctx.run(compose.Loop("p", ctx.size["pt"], (self._out_row,)))

    def _pad_row(self, ctx: compose.Context) -> None:
        """Padded input row p0*stride + i of this block into row i of the thread's copy."""
        b, dt, c = ctx.b, self.dtype, self.block
        (h, w), (top, _, left, right) = self.hw, self.pad
        wp, rows = self.padded_width, ctx.size["cb"]
        x = ctx.tensor("x")
        ni, i = ctx.start["n"], ctx.index["i"]
        hi = b.add(b.mul(ctx.start["pt"], i64(self.stride[0])), i)
        dst = _at(b, ctx.buffer("xp"), dt, b.mul(i, i64(wp * c)))
        zero_row = ctx.primitive(UnaryDesc("zero", wp, c, dt, dt))
        inside = b.and_(b.icmp_signed(">=", hi, i64(top)), b.icmp_signed("<", hi, i64(top + h)))
        with b.if_else(inside) as (then, otherwise):
            with then:
                row = b.sub(hi, i64(top))
                interior = _at(b, dst, dt, i64(left * c))
                if self.blocked:
                    for cols, offset in ((left, 0), (right, (left + w) * c)):
                        if cols:
                            ctx.call(ctx.primitive(UnaryDesc("zero", cols, c, dt, dt)),
                                     [(_at(b, dst, dt, i64(offset)), c)])
                    ctx.call(ctx.primitive(UnaryDesc("copy", w, c, dt, dt)),
                             [(x.at(ni, ctx.index["cb"], row), c), (interior, c)])
                else:
                    if rows < c or left or right:
                        ctx.call(zero_row, [(dst, c)])     # halo columns, channels past C
                    ctx.call(ctx.primitive(UnaryDesc("transpose", rows, w, dt, dt)),
                             [(x.at(ni, ctx.start["cb"], row), x.strides[1]), (interior, c)])
            with otherwise:
                ctx.call(zero_row, [(dst, c)])

    def _out_row(self, ctx: compose.Context) -> None:
        b, dt, c, f32 = ctx.b, self.dtype, self.block, DType.F32
        (r, s), (sh, sw), (dh, dw) = self.rs, self.stride, self.dilation
        q, rows = self.pq[1], ctx.size["cb"]
        ni, cbi, c0 = ctx.start["n"], ctx.index["cb"], ctx.start["cb"]
        local = ctx.index["p"]
        po = b.add(ctx.start["pt"], local)
        wt = ctx.tensor("w")

        def tap(k: int):
            """Tap k's input tile (address, row stride)."""
            dr, ds = (k // s) * dh, (k % s) * dw
            if self.copies_input:
                at = b.add(b.mul(b.add(b.mul(local, i64(sh)), i64(dr)), i64(self.padded_width * c)), i64(ds * c))
                return _at(b, ctx.buffer("xp"), dt, at), sw * c
            return ctx.tensor("x").at(ni, cbi, b.add(b.mul(po, i64(sh)), i64(dr)), ds), sw * c

        extra = []
        if self.bias:
            extra.append((ctx.tensor("bias").at(b.mul(cbi, i64(self.span))), c))
        if self.res_strides is not None:
            res = ctx.tensor("res")
            if self.blocked:
                extra.append((res.at(ni, cbi, po), c))
            else:
                rt = ctx.buffer("rtile")
                ctx.call(ctx.primitive(UnaryDesc("transpose", rows, q, dt, dt)),
                         [(res.at(ni, c0, po), res.strides[1]), (rt, c)])
                extra.append((rt, c))
        out = (ctx.tensor("y").at(ni, cbi, po), c) if self.blocked else (ctx.buffer("tile"), c)
        taps = list(range(r * s))
        chunks = [taps[k:k + MAX_TAPS] for k in range(0, len(taps), MAX_TAPS)]
        for j, chunk in enumerate(chunks):
            first, last = j == 0, j == len(chunks) - 1
            acc, args, dts = None, [], []
            if not first:           # the earlier chunks' partial sums
                acc, args, dts = eq.arg(0), [(ctx.buffer("acc"), c)], [f32]
            if last and self.bias:
                bias = eq.arg(len(args), "row")
                acc = bias if acc is None else acc + bias
                args.append(extra[0])
                dts.append(f32)
            for k in chunk:
                xi, wi = eq.arg(len(args)), eq.arg(len(args) + 1, "row")
                args += [tap(k), (wt.at(cbi, k), c)]
                dts += [dt, f32]
                acc = xi * wi if acc is None else acc + xi * wi
            if last and self.res_strides is not None:
                acc = acc + eq.arg(len(args))
                args.append(extra[-1])
                dts.append(dt)
            if last and self.activation is not None:
                acc = eq.unary(self.activation, acc)
            dest = out if last else (ctx.buffer("acc"), c)
            m, width = (1, q * c) if self.wide else (q, c)
            desc = eq.equation_desc(acc, m, width, dtypes=dts, out_dtype=dt if last else f32)
            ctx.call(ctx.primitive(desc), args + [dest])
        if self.blocked and rows < c and self.activation is not None:
            # channels past C: act(0) need not be 0 (sigmoid), and Blocked keeps them zero
            ctx.call(ctx.primitive(UnaryDesc("zero", q, c - rows, dt, dt)), [(_at(b, out[0], dt, i64(rows)), c)])
        if not self.blocked:
            y = ctx.tensor("y")
            ctx.call(ctx.primitive(UnaryDesc("transpose", q, rows, dt, dt)),
                     [out, (y.at(ni, c0, po), y.strides[1])])


def _at(b, ptr, dt: DType, offset):
    return b.gep(ptr, [offset], source_etype=dt.storage)


# ---- the op ------------------------------------------------------------------------------
_memo = compose.Memo()


def _check_activation(activation):
    if activation is None:
        return None
    name = unary_k.ALIASES.get(activation, activation) if isinstance(activation, str) else activation
    if name not in activations():
        raise ArgumentError(f"{WHAT}: activation must be None or one of {', '.join(activations())}, "
                            f"got {activation!r}")
    return name


def _wide(win, c: int) -> bool:
    """Whether a row of output pixels is computed as one 1 x Q*c row: stride 1 along W
    (the Q pixels of a tap are contiguous) and the block's repeated weights fit in L2."""
    return win.stride[1] == 1 and win.q > 1 and win.r * win.s * win.q * c * 4 <= WIDE_BYTES


class Depthwise:
    """A depthwise convolution with its weights packed once: w of shape (C, 1, R, S)
    (torch's conv2d weight for groups == C), an optional bias (C,), torch's stride,
    padding (int, pair, "same", "valid") and dilation, and an activation applied last.

    `layer(x, residual=None)`: x is NCHW (numpy) or a tpp.ops.Blocked (NCHWc); the result
    is of the same kind (Blocked: with x's block). The residual, added before the
    activation, is an array of the output's shape and kind. f32 or bf16 (computed in
    f32, rounded once); x, w, bias and residual share one dtype."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None = None, stride=1, padding=0, dilation=1,
                 activation: str | None = None):
        if not isinstance(w, np.ndarray) or w.ndim != 4 or w.shape[1] != 1:
            raise ShapeError(f"{WHAT}: argument 'w' must be a (C, 1, R, S) array (groups == C), got "
                             f"{getattr(w, 'shape', type(w).__name__)}")
        self.dtype = parse_dtype(w.dtype, "w.dtype")
        if self.dtype not in DTYPES:
            raise DTypeError(f"{WHAT}: w must be float32 or bfloat16, got {w.dtype}")
        if min(w.shape[2:]) < 1:
            raise ShapeError(f"{WHAT}: argument 'w' has an empty kernel {w.shape[2:]}")
        self._np = np.dtype(to_numpy(self.dtype))
        self.channels, _, r, s = w.shape
        if bias is not None:
            if not isinstance(bias, np.ndarray) or bias.shape != (self.channels,):
                raise ShapeError(f"{WHAT}: argument 'bias' must have shape ({self.channels},) (w's C), got "
                                 f"{getattr(bias, 'shape', type(bias).__name__)}")
            if bias.dtype != w.dtype:
                raise DTypeError(f"{WHAT}: argument 'bias' must have w's dtype {w.dtype}, got {bias.dtype}")
        self.rs = (r, s)
        self.stride, self.dilation = pair(WHAT, "stride", stride, 1), pair(WHAT, "dilation", dilation, 1)
        self.padding = padding if isinstance(padding, str) else pair(WHAT, "padding", padding, 0)
        conv_window(WHAT, (1 << 30, 1 << 30), self.rs, self.stride, self.padding, self.dilation)  # "same" & co
        self.activation = _check_activation(activation)
        self._w = np.asarray(w, np.float32).reshape(self.channels, r * s)
        self._bias = None if bias is None else np.asarray(bias, np.float32)
        self._packed: dict[tuple, tuple] = {}
        self._windows: dict = {}
        self._pack(default_block(self.dtype))

    def _pack(self, c: int, repeat: int = 1) -> tuple:
        """(CB, R*S, c*repeat) f32 weights and a (CB*c*repeat,) f32 bias, zero past C, each
        block's c values repeated `repeat` times (the wide rows)."""
        found = self._packed.get((c, repeat))
        if found is None:
            cb = -(-self.channels // c)
            wp = np.zeros((cb * c, self._w.shape[1]), np.float32)
            wp[:self.channels] = self._w
            wp = np.ascontiguousarray(np.tile(wp.reshape(cb, c, -1).transpose(0, 2, 1), (1, 1, repeat)))
            bp = None
            if self._bias is not None:
                bp = np.zeros(cb * c, np.float32)
                bp[:self.channels] = self._bias
                bp = np.ascontiguousarray(np.tile(bp.reshape(cb, 1, c), (1, repeat, 1)).reshape(-1))
            found = self._packed[(c, repeat)] = (wp, bp)
        return found

    def __call__(self, x, residual=None, *, threads: int | None = None):
        threads = compose.threads_arg(WHAT, threads)
        blocked = isinstance(x, Blocked)
        if not blocked and isinstance(x, np.ndarray) and x.ndim == 4 and x.shape[-1] > 1 \
                and x.strides[-1] != x.itemsize:
            x = np.ascontiguousarray(x)           # the pack reads rows with unit stride
        c = x.block if blocked else default_block(self.dtype)
        shape, win = self._geometry(x)
        self._check_residual(residual, blocked, shape, c)
        wide = _wide(win, c)
        wp, bp = self._pack(c, win.q if wide else 1)
        y = np.empty((shape[0], -(-shape[1] // c), *shape[2:], c) if blocked else shape, self._np)
        if y.size:
            res = residual.data if blocked and residual is not None else residual
            arrays = [x.data if blocked else x, wp, *([] if bp is None else [bp]), *([] if res is None else [res]), y]
            params = (self.channels, self.rs, self.stride, self.padding, self.dilation, self.activation, c,
                      bp is not None, res is not None, wide)
            if not _memo.call(params, arrays, threads):
                if not blocked:
                    compose.check_rows(WHAT, "x", x)
                    if res is not None:
                        compose.check_rows(WHAT, "residual", res)
                desc = DepthwiseDesc(
                    shape[0], shape[1], (win.h, win.w), self.rs, win.stride, win.dilation, win.pad, (win.p, win.q),
                    c, self.dtype, blocked, () if blocked else element_strides(x),
                    None if res is None else () if blocked else element_strides(res), bp is not None,
                    self.activation, wide)
                compose.run_checked(_memo, params, compose.program(WHAT, desc), arrays, threads)
        return Blocked(y, shape[1]) if blocked else y

    def _geometry(self, x):
        """The output's logical shape (N, C, P, Q) and the window, x checked."""
        if not isinstance(x, Blocked) and not (isinstance(x, np.ndarray) and x.ndim == 4):
            raise ShapeError(f"{WHAT}: argument 'x' must be a 4-D (N, C, H, W) array or a tpp.ops.Blocked, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if x.dtype != self._np:
            raise DTypeError(f"{WHAT}: argument 'x' must have w's dtype {self._np}, got {x.dtype}")
        n, ch, h, w = x.shape
        if ch != self.channels:
            raise ShapeError(f"{WHAT}: argument 'w' has {self.channels} channels (shape ({self.channels}, 1, "
                             f"{self.rs[0]}, {self.rs[1]})) but x has {ch}")
        win = self._windows.get((h, w))
        if win is None:       # (the geometry's checks cost more than a small call's compute)
            win = self._windows[(h, w)] = conv_window(WHAT, (h, w), self.rs, self.stride, self.padding, self.dilation)
        return (n, ch, win.p, win.q), win

    def _check_residual(self, residual, blocked: bool, shape, c: int) -> None:
        if residual is None:
            return
        if isinstance(residual, Blocked) != blocked or not (blocked or isinstance(residual, np.ndarray)):
            kind = "a tpp.ops.Blocked" if blocked else "a numpy array"
            raise ShapeError(f"{WHAT}: argument 'residual' must be {kind} like x, got {type(residual).__name__}")
        if residual.shape != shape or (blocked and residual.block != c):
            raise ShapeError(f"{WHAT}: argument 'residual' must have the output's shape {shape}"
                             + (f" and block {c}" if blocked else "") + f", got {residual.shape}"
                             + (f" block {residual.block}" if blocked else ""))
        if residual.dtype != self._np:
            raise DTypeError(f"{WHAT}: argument 'residual' must have x's dtype {self._np}, got {residual.dtype}")


def depthwise_conv2d(x, w: np.ndarray, bias: np.ndarray | None = None, stride=1, padding=0, dilation=1,
                     activation: str | None = None, residual=None, *, threads: int | None = None):
    """act(conv2d(x, w, groups=C) + bias + residual) with torch's semantics; see Depthwise
    (a layer built once packs its weights once)."""
    return Depthwise(w, bias, stride, padding, dilation, activation)(x, residual, threads=threads)


__all__ = ["Depthwise", "DepthwiseDesc", "depthwise_conv2d"]
