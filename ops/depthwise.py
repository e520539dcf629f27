"""tpp.ops.depthwise: depthwise convolution (torch's conv2d with groups == C == K), fused
with a bias, a residual and an activation: y = act(conv(x, w) + bias + residual).

ONE compiled function on the composition layer; each output row (or, on plain NCHW,
each few rows or the whole plane of one channel) is one depthwise-row TPP (kernels/depthwise.py: the R*S
weights in registers, outputs register-blocked so each input vector is loaded once for
every tap it feeds). Two ways:
- Blocked NCHWc (and plain NCHW rows narrower than PIXEL_MIN_Q): lanes along the
  channels of a block; a row of Q output pixels of one block is a Q x c tile.
- plain NCHW: lanes along the pixels of one channel (the primitive with c = 1), nothing
  transposed. At stride 1 with rows that keep their width (a "same" horizontal padding)
  and contiguous planes, one call per channel plane with its pixels flat in the lanes
  (every lane used: Q=28 fills 49 vectors, not 56; the primitive's plane=True); else
  a few rows of one channel per call.
x is read in place: the primitive leaves the left/right padding out of memory (and,
for a plane, the top/bottom), else a row of the top/bottom padding is passed as the
address of a zero row (zeroed once per thread). Only the narrow
plain case copies: its units transpose the rows they read into a zero-padded blocked
copy private to the thread, and transpose each output (and residual) row.

Parallel units are (image, channel block or channel, a tile of output rows).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from .. import compose
from ..depthwise_kernel import DepthwiseRowDesc
from ..descriptors import UnaryDesc
from ..dispatch import current_target
from ..kernels import depthwise_plane
from ..dtypes import parse as parse_dtype, to_numpy
from ..errors import ArgumentError, DTypeError, ShapeError
from llvmlite import ir

from ..jit.loops import I64, i64
from ..jit.types import DType
from .args import element_strides
from .bias_act import activation_arg
from .conv_geometry import conv_window, pair
from .layout import Blocked, blocked_shape, default_block, unit_rows

WHAT = "tpp.ops.depthwise_conv2d"
DTYPES = (DType.F32, DType.BF16)
UNITS = 8               # split output rows until there are this many parallel units
PLANE_BYTES = 96 << 10  # a unit's padded input rows stay in L2 beside everything else
PIXEL_MIN_Q = 8         # plain rows at least this wide put pixels in the lanes (half a zmm)
CALLS_KEPT = 64         # a layer's checked (x kind, shape, target) geometries


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
    pixels: bool = False    # plain: one channel's row at a time, pixels in the lanes (c = 1)
    plane: bool = False     # pixels: a whole channel's plane per call, flat in the lanes
    kind = "depthwise"

    @property
    def c(self) -> int:
        """Channels per unit and per pixel of the padded copy: a block, or 1 (pixels)."""
        return 1 if self.pixels else self.block

    @property
    def padded_width(self) -> int:
        return self.hw[1] + self.pad[2] + self.pad[3]

    @property
    def copies_input(self) -> bool:
        """Whether units read a padded copy (NCHW transposed into blocks) or x itself:
        its rows in place, the left/right padding left to the primitive, rows of the
        top/bottom padding pointed at a zero row."""
        return not (self.blocked or self.pixels)

    @property
    def zero_rows(self) -> bool:     # in place with top/bottom padding, rows by address
        return not (self.copies_input or self.plane) and bool(self.pad[0] or self.pad[1])

    @property
    def unit_rows(self) -> int:
        """Output rows per parallel unit: all P while there are enough (image, block)
        pairs, else fewer, and few enough that the unit's padded rows stay in L2."""
        p = self.pq[0]
        pairs = max(1, self.n * -(-self.channels // self.c))
        rows = p if pairs >= UNITS else -(-p // -(-UNITS // pairs))
        if self.copies_input:
            row_bytes = self.padded_width * self.c * self.dtype.itemsize
            while rows > 1 and self.input_rows(rows) * row_bytes > PLANE_BYTES:
                rows = -(-rows // 2)
        return max(1, rows)

    def input_rows(self, rows: int) -> int:
        return (rows - 1) * self.stride[0] + (self.rs[0] - 1) * self.dilation[0] + 1

    def row_desc(self, m: int = 1) -> DepthwiseRowDesc:
        """The primitive of m output rows: reading x in place, its rows by address."""
        q, s, sw, dw = self.pq[1], self.rs[1], self.stride[1], self.dilation[1]
        if self.plane:
            top, bottom, left, right = self.pad
            return DepthwiseRowDesc(q, 1, self.rs[0], s, 1, dw, self.dtype, self.dtype, self.bias,
                                    self.res_strides is not None, self.activation, (left, right), False,
                                    self.pq[0], 1, True, (top, bottom))
        pad = (0, 0)
        if not self.copies_input:
            left = self.pad[2]
            pad = (left, max(0, (q - 1) * sw + (s - 1) * dw + 1 - left - self.hw[1]))
        return DepthwiseRowDesc(q, self.c, self.rs[0], s, sw, dw, self.dtype, self.dtype, self.bias,
                                self.res_strides is not None, self.activation, pad, not self.copies_input,
                                m, self.stride[0])

    def composite(self, target) -> compose.Composite:
        n, ch, c, dt = self.n, self.channels, self.c, self.dtype
        (h, w), (p, q) = self.hw, self.pq
        cb = -(-ch // c)
        taps = self.rs[0] * self.rs[1]
        f32 = DType.F32
        if self.blocked:
            x = compose.Tensor("x", dt, blocked_shape((n, ch, h, w), c))
            y = compose.Tensor("y", dt, blocked_shape((n, ch, p, q), c), output=True)
        else:
            x = compose.Tensor("x", dt, (n, ch, h, w), self.x_strides)
            y = compose.Tensor("y", dt, (n, ch, p, q), output=True)
        # the bias is w's last row (one array fewer to check and pass per call)
        tensors = [x, compose.Tensor("w", f32, (cb, taps + self.bias, c))]
        if self.res_strides is not None:
            shape = y.shape if self.blocked else (n, ch, p, q)
            tensors.append(compose.Tensor("res", dt, shape, None if self.blocked else self.res_strides))
        tensors.append(y)
        rows = self.unit_rows
        scratch = []
        if self.copies_input:
            scratch.append(compose.Scratch("xp", dt, self.input_rows(rows) * self.padded_width * c, "thread",
                                           "the padded input rows"))
        if self.zero_rows:
            scratch.append(compose.Scratch("zeros", dt, w * c, "thread", "a row of the top/bottom padding"))
        if not (self.blocked or self.pixels):
            scratch.append(compose.Scratch("tile", dt, q * c, "thread", "an output row"))
            if self.res_strides is not None:
                scratch.append(compose.Scratch("rtile", dt, q * c, "thread", "a residual row"))
        unit = compose.Loop("pt", p, (partial(self._unit, self.rows_per_call(target)),), tile=rows, parallel=True)
        loop = compose.Loop("n", n, (compose.Loop("cb", ch, (unit,), tile=c, parallel=True),), parallel=True)
        # the zero row: once per thread (its scratch is the thread's), before its units
        return compose.Composite(tuple(tensors), ((self._zero_row,) if self.zero_rows else ()) + (loop,),
                                 tuple(scratch))

    def rows_per_call(self, target) -> int:
        """Output rows one primitive call computes: pixel rows take several (their FMA
        chains are independent, and input rows are loaded once for all of them), as many
        as the registers hold beside the weights; one where kernel rows are dilated (the
        rows they read are then not one run)."""
        if self.plane:
            return self.pq[0]
        if not self.pixels or self.dilation[0] > 1:
            return 1
        return 4 if target.vector_registers >= 32 else 2

    # ---- one unit: its padded input rows, then its output rows ---------------------------
    def _unit(self, m: int, ctx: compose.Context) -> None:
        if self.copies_input:
            ctx.run(compose.Loop("i", self.input_rows(ctx.size["pt"]), (self._pad_row,)))
        ctx.run(compose.Loop("p", ctx.size["pt"], (self._out_row,), tile=m))

    def _zero_row(self, ctx: compose.Context) -> None:
        dt, width = self.dtype, self.hw[1] * self.c
        ctx.call(ctx.primitive(UnaryDesc("zero", 1, width, dt, dt)), [(ctx.buffer("zeros"), width)])

    def _pad_row(self, ctx: compose.Context) -> None:
        """Padded input row p0*stride + i of this block (from NCHW) into row i of the copy."""
        b, dt, c = ctx.b, self.dtype, self.c
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
                if rows < c or left or right:
                    ctx.call(zero_row, [(dst, c)])     # halo columns, channels past C
                ctx.call(ctx.primitive(UnaryDesc("transpose", rows, w, dt, dt)),
                             [(x.at(ni, ctx.start["cb"], row), x.strides[1]), (interior, c)])
            with otherwise:
                ctx.call(zero_row, [(dst, c)])

    def _out_row(self, ctx: compose.Context) -> None:
        b, dt, c = ctx.b, self.dtype, self.c
        sh, dh = self.stride[0], self.dilation[0]
        q, rows = self.pq[1], ctx.size["cb"]
        ni, cbi, c0 = ctx.start["n"], ctx.index["cb"], ctx.start["cb"]
        local, m = ctx.start["p"], ctx.size["p"]
        po = b.add(ctx.start["pt"], local)
        if self.copies_input:
            pitch = self.padded_width * c
            x = (_at(b, ctx.buffer("xp"), dt, b.mul(b.mul(local, i64(sh)), i64(pitch))), dh * pitch)
        elif self.plane:
            x = (ctx.tensor("x").at(ni, c0, i64(0)), 1)
        else:
            x = (self._row_addresses(ctx, po, m), 1)
        args = [x, (ctx.tensor("w").at(cbi), c)]
        if self.bias:
            args.append((ctx.tensor("w").at(cbi, i64(self.rs[0] * self.rs[1])), c))
        if self.res_strides is not None:
            res = ctx.tensor("res")
            if self.blocked or self.pixels:
                args.append((res.at(ni, cbi, po), c) if self.blocked else (res.at(ni, c0, po), res.strides[2]))
            else:
                rt = ctx.buffer("rtile")
                ctx.call(ctx.primitive(UnaryDesc("transpose", rows, q, dt, dt)),
                         [(res.at(ni, c0, po), res.strides[1]), (rt, c)])
                args.append((rt, c))
        if self.blocked:
            out = (ctx.tensor("y").at(ni, cbi, po), c)
        elif self.pixels:
            y = ctx.tensor("y")
            out = (y.at(ni, c0, po), y.strides[2])
        else:
            out = (ctx.buffer("tile"), c)
        ctx.call(ctx.primitive(self.row_desc(m)), args + [out])
        if self.blocked and rows < c and self.activation is not None:
            # channels past C: act(0) need not be 0 (sigmoid), and Blocked keeps them zero
            ctx.call(ctx.primitive(UnaryDesc("zero", q, c - rows, dt, dt)), [(_at(b, out[0], dt, i64(rows)), c)])
        if not (self.blocked or self.pixels):
            y = ctx.tensor("y")
            ctx.call(ctx.primitive(UnaryDesc("transpose", q, rows, dt, dt)),
                     [out, (y.at(ni, c0, po), y.strides[1])])


    def _row_addresses(self, ctx: compose.Context, po, m: int):
        """An array of the addresses of the input rows output rows po .. po+m-1 read (in
        the entry block, reused): the image's rows, or the zero row for padding rows.
        m > 1 only without vertical dilation: the rows are then one run."""
        b, top, h = ctx.b, self.pad[0], self.hw[0]
        r = self.rs[0] + (m - 1) * self.stride[0]
        x = ctx.tensor("x")
        ni = ctx.start["n"]
        ch = ctx.index["cb"] if self.blocked else ctx.start["cb"]
        with b.goto_block(b.function.entry_basic_block):
            # (an untyped pointer, as compose's call tables: llvmlite types an alloca's)
            table = b.inttoptr(b.ptrtoint(b.alloca(ir.ArrayType(I64, r)), I64), ir.PointerType())
        for i in range(r):
            hi = b.add(b.mul(po, i64(self.stride[0])), i64(i * (self.dilation[0] if m == 1 else 1) - top))
            at = b.ptrtoint(x.at(ni, ch, hi), I64)
            if self.zero_rows:
                inside = b.and_(b.icmp_signed(">=", hi, i64(0)), b.icmp_signed("<", hi, i64(h)))
                at = b.select(inside, at, b.ptrtoint(ctx.buffer("zeros"), I64))
            b.store(at, b.gep(table, [i64(i)], source_etype=I64))
        return table


def _at(b, ptr, dt: DType, offset):
    return b.gep(ptr, [offset], source_etype=dt.storage)


# ---- the op ------------------------------------------------------------------------------
_memo = compose.Memo()


def _plane_fits(desc: DepthwiseDesc) -> bool:
    """Whether pixel rows run a whole plane per call, flat in the lanes: stride 1, rows
    that keep their width (q == w, a "same" horizontal padding), planes contiguous in x,
    y and the residual, channels enough to share out (each call is a whole plane), and
    what the kernel needs of the target (kernels/depthwise_plane.plane_fits)."""
    (h, w), (p, q) = desc.hw, desc.pq
    if desc.stride != (1, 1) or desc.dilation[0] != 1 or q != w or desc.n * desc.channels < UNITS:
        return False
    if desc.x_strides[2] != w or (desc.res_strides is not None and desc.res_strides[2] != q):
        return False
    return depthwise_plane.plane_fits(replace(desc, plane=True).row_desc(), current_target())


def _pixels(blocked: bool, win) -> bool:
    """Whether a plain NCHW layer runs per channel with pixels in the lanes: rows wide
    enough to fill most of a vector (narrower ones transpose into channel blocks)."""
    return not blocked and win.q >= PIXEL_MIN_Q


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
        self.activation = activation_arg(WHAT, activation, ArgumentError)
        self._w = np.asarray(w, np.float32).reshape(self.channels, r * s)
        self._bias = None if bias is None else np.asarray(bias, np.float32)
        self._packed: dict[int, np.ndarray] = {}
        self._calls: dict = {}
        self._pack(default_block(self.dtype))

    def _pack(self, c: int) -> np.ndarray:
        """(CB, R*S [+ 1], c) f32: the weights, then the bias (with one), zero past C (c = 1:
        each channel's taps and bias, contiguous)."""
        found = self._packed.get(c)
        if found is None:
            cb = -(-self.channels // c)
            rows = self._w if self._bias is None else np.concatenate([self._w, self._bias[:, None]], axis=1)
            wp = np.zeros((cb * c, rows.shape[1]), np.float32)
            wp[:self.channels] = rows
            found = self._packed[c] = np.ascontiguousarray(wp.reshape(cb, c, -1).transpose(0, 2, 1))
        return found

    def __call__(self, x, residual=None, *, threads: int | None = None):
        threads = compose.threads_arg(WHAT, threads)
        blocked = isinstance(x, Blocked)
        if not blocked and isinstance(x, np.ndarray) and x.ndim == 4:
            x = unit_rows(x)                      # the pack reads rows with unit stride
        key = (x.shape, x.dtype, x.block if blocked else None, current_target())
        found = self._calls.get(key)
        if found is None:     # (x checked once per kind, shape and target: a small call's cost)
            c = x.block if blocked else default_block(self.dtype)
            shape, win = self._geometry(x)
            pixels = _pixels(blocked, win)
            if len(self._calls) >= CALLS_KEPT:
                self._calls.clear()
            found = self._calls[key] = (shape, win, c, pixels, self._pack(1 if pixels else c),
                                        blocked_shape(shape, c) if blocked else shape)
        shape, win, c, pixels, wp, y_shape = found
        self._check_residual(residual, blocked, shape, c)
        y = np.empty(y_shape, self._np)
        if y.size:
            res = residual.data if blocked and residual is not None else residual
            arrays = [x.data if blocked else x, wp, y] if res is None else [x.data if blocked else x, wp, res, y]
            params = (self.channels, self.rs, self.stride, self.padding, self.dilation, self.activation, c,
                      res is not None, pixels)
            if not _memo.call(params, arrays, threads):
                if not blocked:
                    compose.check_rows(WHAT, "x", x)
                    if res is not None:
                        compose.check_rows(WHAT, "residual", res)
                desc = DepthwiseDesc(
                    shape[0], shape[1], (win.h, win.w), self.rs, win.stride, win.dilation, win.pad, (win.p, win.q),
                    c, self.dtype, blocked, () if blocked else element_strides(x),
                    None if res is None else () if blocked else element_strides(res), self._bias is not None,
                    self.activation, pixels)
                if pixels and _plane_fits(desc):
                    desc = replace(desc, plane=True)
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
        win = conv_window(WHAT, (h, w), self.rs, self.stride, self.padding, self.dilation)
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
