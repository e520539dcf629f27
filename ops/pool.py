"""tpp.ops.max_pool2d / avg_pool2d / global_avg_pool2d with torch.nn.functional's semantics,
on plain NCHW arrays (float32, bfloat16) and on Blocked NCHWc activations (ops/layout.py).

Each call is ONE composite on the layer. Pooling works on the blocked layout, where an
output row of Q pixels is a Q x c tile (row stride c) and the window tap (r, s) of it is
the input tile at pixel (p*sh - top + r*dh, q*sw - left + s*dw) with row stride sw*c: the
row is one equation TPP whose inputs are the taps (max: a balanced tree of maximum; avg:
a sum times 1/divisor), each tap read once, the partial results in registers.

Padding is never materialised. The output rows are cut, once per descriptor, into runs of
consecutive rows whose windows have the same valid taps r (and, for avg, the same
divisor): the top and bottom edge rows and the interior. Each run is a parallel loop
nest (image, channel block, row) compiled with its own tap list, so no border is tested
at run time; within a row the columns are cut into runs the same way, one equation per
run. torch's divisor (count_include_pad, the ceil_mode windows that end past the
padding) is separable, rows times columns, so every run has one constant scale.

Plain NCHW input is pooled in the same loop nest: the body first transposes the window's
input rows (c channels x W pixels) into a per-thread blocked row buffer, pools from it
into a Q x c row, and transposes that into the NCHW output.

global_avg_pool2d is a reduction: on NCHW one equation (sum of a row of H*W, times
1/(H*W)) over a tile of channel rows; on NCHWc a column sum (reduce_sum, axis 0) of each
block's H*W x c tile into an f32 accumulator, then its scaled copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from .. import compose
from .. import expr as eq
from ..descriptors import BinaryDesc, UnaryDesc
from ..dispatch import current_target
from ..dtypes import parse as parse_dtype
from ..errors import ArgumentError, DTypeError, ShapeError
from ..jit.loops import i64
from ..jit.types import DType
from .args import element_strides
from .conv_geometry import Window, pool_window
from .layout import Blocked, blocked_shape, default_block

DTYPES = (DType.F32, DType.BF16)
MAX_TAPS = 64          # taps per equation; more are summed in chunks through an f32 row
TILE_BYTES = 16 << 10  # global pool: a tile of the input that stays in L1
BF16_NEG_INF = 0xFF80


# ---- geometry: runs of outputs with the same taps ---------------------------------------------
def runs(size: int, k: int, stride: int, dil: int, before: int, count: int, include_pad: bool):
    """Maximal runs (lo, hi, taps, divisor) of outputs o in [0, count) whose window
    start o*stride - before has the same taps inside [0, size) and the same divisor
    (torch's: with padding, the window clipped at size + before; else the taps)."""
    out: list[list] = []
    for o in range(count):
        start = o * stride - before
        taps = tuple(i for i in range(k) if 0 <= start + i * dil < size)
        divisor = min(start + (k - 1) * dil + 1, size + before) - start if include_pad else len(taps)
        if out and out[-1][1] == o and out[-1][2:] == [taps, divisor]:
            out[-1][1] = o + 1
        else:
            out.append([o, o + 1, taps, divisor])
    return [tuple(r) for r in out]


def _combine(kind: str, terms: list):
    """A balanced tree (short dependency chains) of max or + over the terms."""
    while len(terms) > 1:
        pairs = [eq.maximum(a, b) if kind == "max" else a + b for a, b in zip(terms[::2], terms[1::2])]
        terms = pairs + terms[len(pairs) * 2:]
    return terms[0]


def tap_desc(kind: str, taps: int, m: int, c: int, dt: DType, out_dt: DType, scale, acc: bool):
    """out = max / sum (times scale) of `taps` m x c inputs of dtype dt, and, with acc,
    an f32 m x c input (the chunks so far) as the last input."""
    terms = [eq.arg(i) for i in range(taps + acc)]
    e = _combine(kind, terms)
    if scale is not None:
        e = e * scale
    return eq.equation_desc(e, m, c, dtypes=[dt] * taps + [DType.F32] * acc, out_dtype=out_dt)


def _const_row(ctx: compose.Context, name: str, dt: DType, values) -> ir.Value:
    """A constant row in the module (the -inf of a window with no taps)."""
    if dt is DType.BF16:
        elem, values = ir.IntType(16), [BF16_NEG_INF if v else 0 for v in values]
    else:
        elem, values = ir.FloatType(), [float("-inf") if v else 0.0 for v in values]
    g = ir.GlobalVariable(ctx.module, ir.ArrayType(elem, len(values)), ctx.module.get_unique_name(name))
    g.global_constant, g.linkage = True, "internal"
    g.initializer = ir.Constant(ir.ArrayType(elem, len(values)), [ir.Constant(elem, v) for v in values])
    return g


@dataclass(frozen=True)
class PoolDesc(compose.CompositeDesc):
    op: str                          # "max" or "avg"
    shape: tuple[int, int, int, int]  # logical N, C, H, W
    block: int
    dtype: DType
    window: Window
    p: int                           # output rows and columns
    q: int
    include_pad: bool
    plain_strides: tuple[int, ...] | None   # NCHW input's element strides; None: Blocked
    kind = "pool"

    def composite(self, target) -> compose.Composite:
        n, ch, h, w = self.shape
        win, c, dt, plain = self.window, self.block, self.dtype, self.plain_strides is not None
        top, _, left, _ = win.pad
        (sh, sw), (dh, dw) = win.stride, win.dilation
        row_runs = runs(h, win.r, sh, dh, top, self.p, self.include_pad)
        col_runs = runs(w, win.s, sw, dw, left, self.q, self.include_pad)
        most = max(len(rt) for *_, rt, _ in row_runs) * max(len(ct) for *_, ct, _ in col_runs)
        tail = ch % c
        if plain:
            x = compose.Tensor("x", dt, self.shape, self.plain_strides)
            y = compose.Tensor("y", dt, (n, ch, self.p, self.q), output=True)
        else:
            x = compose.Tensor("x", dt, blocked_shape(self.shape, c))
            y = compose.Tensor("y", dt, blocked_shape((n, ch, self.p, self.q), c), output=True)
        scratch = []
        if plain:
            scratch += [compose.Scratch("rows", dt, win.r * w * c, "thread", "the window's rows, blocked"),
                        compose.Scratch("orow", dt, self.q * c, "thread", "an output row, blocked")]
        if most > MAX_TAPS:
            scratch.append(compose.Scratch("acc", DType.F32, self.q * c, "thread", "a row's partial result"))

        def pool_row(ctx, srcs, out, dh_count, cb):
            """One output row: srcs[r] is input row r's pixel 0 (blocked, ld c) for the
            valid taps r; out is the output row's pixel 0."""
            b = ctx.b
            for lo, hi, col_taps, dw_count in col_runs:
                ptrs = [(b.gep(src, [i64((lo * sw - left + s * dw) * c)], source_etype=dt.storage), sw * c)
                        for src in srcs for s in col_taps]
                dst = (b.gep(out, [i64(lo * c)], source_etype=dt.storage), c)
                if not ptrs:      # a window wholly in the padding: -inf, as torch
                    fill = _const_row(ctx, "neg_inf", dt, [1] * c)
                    if tail and not plain:
                        last = _const_row(ctx, "neg_inf_tail", dt, [k < tail for k in range(c)])
                        fill = b.select(b.icmp_signed("==", cb, i64(-(-ch // c) - 1)), last, fill)
                    for k in range(hi - lo):
                        at = b.gep(dst[0], [i64(k * c)], source_etype=dt.storage)
                        ctx.call(ctx.primitive(UnaryDesc("copy", 1, c, dt, dt)), [(fill, c), (at, c)])
                    continue
                scale = 1.0 / (dh_count * dw_count) if self.op == "avg" else None
                # stride 1: a run's taps are contiguous, one row of (hi - lo) * c (the
                # equation's per-row set-up paid once, its vector loop unrolled)
                shape = (1, (hi - lo) * c) if sw == 1 else (hi - lo, c)
                self._reduce(ctx, ptrs, shape, dst, scale)

        def row_body(lo, row_taps, dh_count):
            def body(ctx: compose.Context) -> None:
                b = ctx.b
                xt, yt = ctx.tensor("x"), ctx.tensor("y")
                ni, cb = ctx.start["n"], ctx.start["cb"]
                p = b.add(ctx.start["p"], i64(lo))
                h0 = b.mul(p, i64(sh))
                if not plain:
                    srcs = [xt.at(ni, cb, b.add(h0, i64(r * dh - top))) for r in row_taps]
                    pool_row(ctx, srcs, yt.at(ni, cb, p), dh_count, cb)
                    return
                rows, buf = ctx.size["cb"], ctx.buffer("rows")
                srcs = []
                for k, r in enumerate(row_taps):
                    slot = b.gep(buf, [i64(k * w * c)], source_etype=dt.storage)
                    ctx.call(ctx.primitive(UnaryDesc("transpose", rows, w, dt, dt)),
                             [(xt.at(ni, cb, b.add(h0, i64(r * dh - top))), xt.strides[1]), (slot, c)])
                    srcs.append(slot)
                orow = ctx.buffer("orow")
                pool_row(ctx, srcs, orow, dh_count, cb)
                ctx.call(ctx.primitive(UnaryDesc("transpose", self.q, rows, dt, dt)),
                         [(orow, c), (yt.at(ni, cb, p), yt.strides[1])])
            return body

        body = []
        if plain and tail:
            # the last block's channels past C stay zero in the row buffer (never NaN garbage)
            def clear(ctx: compose.Context) -> None:
                zero = ctx.primitive(UnaryDesc("zero", win.r * w, c, dt, dt))
                ctx.call(zero, [(ctx.buffer("rows"), c)])
            body.append(clear)
        for lo, hi, row_taps, dh_count in row_runs:
            loop = compose.Loop("p", hi - lo, (row_body(lo, row_taps, dh_count),), parallel=True)
            # plain: channels in tiles of c (the last tile's transposes sized for it); blocked: blocks
            loop = compose.Loop("cb", ch if plain else -(-ch // c), (loop,), tile=c if plain else 1,
                                parallel=True)
            body.append(compose.Loop("n", n, (loop,), parallel=True))
        return compose.Composite((x, y), tuple(body), tuple(scratch))

    def _reduce(self, ctx, ptrs, shape, dst, scale) -> None:
        """dst = the taps' max / scaled sum over an m x n tile: one equation, or chunks of
        MAX_TAPS through the f32 row "acc"."""
        dt, op, (m, n) = self.dtype, self.op, shape
        if len(ptrs) <= MAX_TAPS:
            ctx.call(ctx.primitive(tap_desc(op, len(ptrs), m, n, dt, dt, scale, False)), [*ptrs, dst])
            return
        acc = (ctx.buffer("acc"), dst[1])
        chunks = [ptrs[k:k + MAX_TAPS] for k in range(0, len(ptrs), MAX_TAPS)]
        for k, chunk in enumerate(chunks):
            last = k == len(chunks) - 1
            desc = tap_desc(op, len(chunk), m, n, dt, dt if last else DType.F32, scale if last else None,
                            acc=k > 0)
            ctx.call(ctx.primitive(desc), [*chunk, *([acc] if k else []), dst if last else acc])


@dataclass(frozen=True)
class GlobalPoolDesc(compose.CompositeDesc):
    shape: tuple[int, int, int, int]
    block: int
    dtype: DType
    plain_strides: tuple[int, ...] | None
    kind = "global_avg_pool"

    def composite(self, target) -> compose.Composite:
        n, ch, h, w = self.shape
        dt, c, hw, f32 = self.dtype, self.block, h * w, DType.F32
        scale = 1.0 / hw
        if self.plain_strides is None:
            return self._blocked()
        x = compose.Tensor("x", dt, self.shape, self.plain_strides)
        y = compose.Tensor("y", dt, (n, ch, 1, 1), output=True)
        flat = h == 1 or self.plain_strides[2] == w      # a plane is one row of H*W
        mean = eq.sum(eq.arg(0)) * scale
        if flat:
            tile = max(1, min(ch, TILE_BYTES // (hw * dt.itemsize)))

            def body(ctx: compose.Context) -> None:
                xt, yt = ctx.tensor("x"), ctx.tensor("y")
                at = (ctx.start["n"], ctx.start["c"])
                desc = eq.equation_desc(mean, ctx.size["c"], hw, dt, out_dtype=dt)
                ctx.call(ctx.primitive(desc), [(xt.at(*at), xt.strides[1]), (yt.at(*at), 1)])
            scratch = ()
        else:
            # rows of a plane lie apart: each row's sum, then their scaled sum
            tile = 1

            def body(ctx: compose.Context) -> None:
                xt, yt, sums = ctx.tensor("x"), ctx.tensor("y"), ctx.buffer("sums")
                at = (ctx.start["n"], ctx.start["c"])
                ctx.call(ctx.primitive(eq.equation_desc(eq.sum(eq.arg(0)), h, w, dt, out_dtype=f32)),
                         [(xt.at(*at), xt.strides[2]), (sums, 1)])
                ctx.call(ctx.primitive(eq.equation_desc(mean, 1, h, f32, out_dtype=dt)),
                         [(sums, h), (yt.at(*at), 1)])
            scratch = (compose.Scratch("sums", f32, h, "thread", "a plane's row sums"),)
        loop = compose.Loop("c", ch, (body,), tile=tile, parallel=True)
        return compose.Composite((x, y), (compose.Loop("n", n, (loop,), parallel=True),), scratch)

    def _blocked(self) -> compose.Composite:
        n, ch, h, w = self.shape
        dt, c, hw, f32 = self.dtype, self.block, h * w, DType.F32
        x = compose.Tensor("x", dt, blocked_shape(self.shape, c))
        y = compose.Tensor("y", dt, blocked_shape((n, ch, 1, 1), c), output=True)
        tile = max(1, min(hw, TILE_BYTES // (c * 4)))
        whole = tile == hw
        scratch = [compose.Scratch("acc", f32, c, "thread", "a block's channel sums")]
        if not whole:
            scratch.append(compose.Scratch("part", f32, c, "thread", "a tile's channel sums"))
        if dt is not f32:
            scratch.append(compose.Scratch("wide", f32, tile * c, "thread", "a tile in f32"))

        def tile_body(ctx: compose.Context) -> None:
            b, m = ctx.b, ctx.size["t"]
            src = ctx.tensor("x").at(ctx.start["n"], ctx.start["cb"], 0, 0)
            src = b.gep(src, [b.mul(ctx.start["t"], i64(c))], source_etype=dt.storage)
            if dt is not f32:         # reduce_sum keeps its input's dtype: sum bf16 in f32
                ctx.call(ctx.primitive(UnaryDesc("cast", m, c, dt, f32)), [(src, c), (ctx.buffer("wide"), c)])
                src = ctx.buffer("wide")
            into = ctx.buffer("acc" if whole else "part")
            ctx.call(ctx.primitive(UnaryDesc("reduce_sum", m, c, f32, f32, axis=0)), [(src, c), (into, c)])
            if not whole:
                acc = (ctx.buffer("acc"), c)
                ctx.call(ctx.primitive(BinaryDesc("add", 1, c, f32)), [acc, (into, c), acc])

        def body(ctx: compose.Context) -> None:
            if not whole:
                ctx.call(ctx.primitive(UnaryDesc("zero", 1, c, f32, f32)), [(ctx.buffer("acc"), c)])
            ctx.run(compose.Loop("t", hw, (tile_body,), tile=tile))
            out = ctx.tensor("y").at(ctx.start["n"], ctx.start["cb"])
            ctx.call(ctx.primitive(eq.equation_desc(eq.arg(0) * (1.0 / hw), 1, c, f32, out_dtype=dt)),
                     [(ctx.buffer("acc"), c), (out, c)])
        loop = compose.Loop("cb", -(-ch // c), (body,), parallel=True)
        return compose.Composite((x, y), (compose.Loop("n", n, (loop,), parallel=True),), tuple(scratch))


# ---- the API ---------------------------------------------------------------------------------
def _input(what: str, x):
    """(array the composite reads, its dtype, logical NCHW shape, block, plain strides or None)."""
    if isinstance(x, Blocked):
        dt = parse_dtype(x.dtype, "x.dtype")
        if dt not in DTYPES:
            raise DTypeError(f"{what}: x must be float32 or bfloat16, got {x.dtype}")
        return x.data, dt, x.shape, x.block, None
    if not isinstance(x, np.ndarray):
        raise ArgumentError(f"{what}: argument 'x' must be a numpy array or a tpp.ops.Blocked, "
                            f"got {type(x).__name__}")
    if x.ndim != 4:
        raise ShapeError(f"{what}: argument 'x' must be 4-D (N, C, H, W), got shape {x.shape}")
    dt = parse_dtype(x.dtype, "x.dtype") if x.dtype.kind == "f" or x.dtype.name == "bfloat16" else None
    if dt not in DTYPES:
        raise DTypeError(f"{what}: argument 'x' must be float32 or bfloat16, got {x.dtype}")
    try:
        compose.check_rows(what, "x", x)
    except ShapeError:        # no unit stride along W, or steps backwards: a copy with rows
        x = np.ascontiguousarray(x)
    return x, dt, x.shape, default_block(dt), element_strides(x)


def _run(what: str, x, make_desc, out_hw, params, threads):
    """Plan (once per geometry: checks, descriptor, program), then run on a new output."""
    threads = compose.threads_arg(what, threads)
    blocked = isinstance(x, Blocked)
    data = x.data if blocked else x
    try:
        key = (what, params, blocked, data.shape, data.strides, data.dtype, x.channels if blocked else 0,
               current_target())
        plan = _plans.get(key)
    except (AttributeError, TypeError):      # not an array, or unhashable arguments
        key, plan = None, None
    if plan is None:
        plan = _plan(what, x, make_desc, out_hw)
        if key is not None:
            if len(_plans) >= 512:
                _plans.clear()
            _plans[key] = plan
    copy, out_shape, channels, prog = plan
    if copy:
        data = np.ascontiguousarray(data)
    out = np.empty(out_shape, data.dtype)
    # the memo keys on the program the plan found (one descriptor, target): the arrays'
    # geometry alone does not hold a Blocked's channel count
    if prog is not None and not _memo.call(prog, [data, out], threads):
        compose.run_checked(_memo, prog, prog, [data, out], threads)
    return Blocked(out, channels) if blocked else out


def _plan(what: str, x, make_desc, out_hw):
    """(copy x first, the output array's shape, channels, the program or None if empty)."""
    data, dt, shape, block, strides = _input(what, x)
    desc = make_desc(dt, shape, block, strides)
    n, ch = shape[:2]
    out_shape = (n, ch, *out_hw(desc))
    if strides is None:
        out_shape = blocked_shape(out_shape, block)
    empty = not data.size or not np.prod(out_shape)
    copy = strides is not None and data is not x
    return copy, out_shape, ch, None if empty else compose.program(what, desc)


_plans: dict = {}
_memo = compose.Memo()


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False, *,
               threads: int | None = None):
    """torch.nn.functional.max_pool2d on NCHW x (float32 / bfloat16) or a Blocked x (the
    result has the same kind). A window wholly in the padding gives -inf, NaN propagates."""
    what = "tpp.ops.max_pool2d"
    return _pool(what, "max", x, kernel_size, stride, padding, dilation, bool(ceil_mode), True, threads)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, *, threads: int | None = None):
    """torch.nn.functional.avg_pool2d (no divisor_override) on NCHW or Blocked x."""
    what = "tpp.ops.avg_pool2d"
    return _pool(what, "avg", x, kernel_size, stride, padding, 1, bool(ceil_mode), bool(count_include_pad),
                 threads)


def _pool(what, op, x, kernel_size, stride, padding, dilation, ceil_mode, include_pad, threads):
    def make(dt, shape, block, strides):
        win = pool_window(what, shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
        return PoolDesc(op, shape, block, dt, win, win.p, win.q, include_pad and op == "avg", strides)
    params = (op, _key(kernel_size), _key(stride), _key(padding), _key(dilation), ceil_mode, include_pad)
    return _run(what, x, make, lambda d: (d.p, d.q), params, threads)


def _key(value):
    return tuple(value) if isinstance(value, list) else value


def global_avg_pool2d(x, *, threads: int | None = None):
    """torch's adaptive_avg_pool2d(x, 1): the mean of each channel's plane, (N, C, 1, 1)
    (a Blocked x gives a Blocked (N, C, 1, 1))."""
    what = "tpp.ops.global_avg_pool2d"

    def make(dt, shape, block, strides):
        if shape[2] * shape[3] == 0:
            raise ShapeError(f"{what}: argument 'x' has an empty plane ({shape[2]}x{shape[3]})")
        return GlobalPoolDesc(shape, block, dt, strides)
    return _run(what, x, make, lambda d: (1, 1), ("gap",), threads)


__all__ = ["max_pool2d", "avg_pool2d", "global_avg_pool2d"]
