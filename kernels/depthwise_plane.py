"""The depthwise-row TPP's plane mode (kernels/depthwise.py, d.plane): a whole NCHW
channel plane per call, its pixels flat in the lanes, at stride 1 where rows keep their
width (q == w). Every lane is used (Q=28: 49 vectors for 28 rows, not 56), each tap is
one constant offset from the output pixel, and the padding rows and columns read as
zero lanes, with nothing in memory for them."""
from __future__ import annotations

import math

from llvmlite import ir

from ..jit.loops import Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import F32, I1, I32, VecBuilder
from . import depthwise as dw        # its helpers, read at emission time (it imports this module)
from .operands import element_ptr, load_element

PLANE_VECTORS = 8   # accumulators at a time in a plane
PLANE_PERIOD = 16   # a plane's loop turn: at most this many vectors (lcm(q, lanes) pixels)


def plane_fits(d, target: Target) -> bool:
    """Whether a plane (d.plane) is worth its flat lanes on this target: rows that a
    row's vectors would not fill (q not a multiple of the lanes), a loop turn of at
    most PLANE_PERIOD vectors, and the weights, the activation's temporaries and at least
    half of PLANE_VECTORS accumulators in registers."""
    lanes = target.lanes(32)
    period = d.q // math.gcd(d.q, lanes)
    return d.q % lanes != 0 and period <= PLANE_PERIOD and plane_group(d, target) >= PLANE_VECTORS // 2


def plane_group(d, target: Target) -> int:
    """Accumulators at a time in a plane: PLANE_VECTORS, fewer where the weights and the
    activation's temporaries leave less room."""
    return max(1, min(PLANE_VECTORS, target.vector_registers - d.r * d.s - 1 - dw._spare(d)))


def plane_block(d, lanes: int) -> int:
    """Output pixels per turn of a plane's loop: whole periods of lcm(q, lanes) pixels
    (so each vector's lanes fall on the same columns in every turn and the masks of
    the left/right taps are constants), as many as PLANE_VECTORS accumulators take."""
    period = d.q * lanes // math.gcd(d.q, lanes)
    return period * max(1, PLANE_VECTORS * lanes // period)


def emit(v: VecBuilder, d, args: dict, x, target: Target) -> None:
    """A whole plane, its pixels flat in the lanes: output pixel o reads input pixel
    o + (i - top)*q + t*dilation - left for tap (i, t), one constant offset per tap,
    so every vector's lanes are used (Q=28: 49 vectors for 28 rows, not 56). Per kernel
    row each output vector's own span of that row is loaded once (one load per vector
    and kernel row, shared by the row's taps) and the tap windows are cut from it and
    its neighbours by shuffles (valignd), but for the right-hand windows that hold
    padding lanes: those are masked loads. (An unaligned load per tap, each zmm window
    crossing a cache line, was load-bound: slower than the row path; shuffles for every
    window were bound by the FP pipes the FMAs share, 17.6 ops a vector; loads for every
    window with padding lanes 4% slower, this mix 4% faster than all shuffles.) A tap
    whose pixel is in the padding (past a row's end: the next row's pixel; above or
    below the plane) reads zero in that lane."""
    b, f32, dt, lanes = v.b, DType.F32, d.dtype, v.lanes
    (w, ldw), (out, _) = args["w"], args["out"]
    (left, right), (top, bottom), q = d.pad, d.vpad, d.q
    h, total = dw.plane_rows(d), d.m * d.q
    weights = [v.splat(load_element(b, element_ptr(b, w, f32, b.mul(i64(k), ldw)), f32)) for k in range(d.r * d.s)]
    start = v.splat(load_element(b, args["bias"][0], f32)) if d.bias else v.const(0.0)
    size, group = plane_block(d, lanes), plane_group(d, target)
    shifts = [t * d.dilation - left for t in range(d.s)]      # a tap's pixel from the output's
    kmin, kmax = -left // lanes, -(-right // lanes)       # the spans either side a block reads
    ity = v.vty(I32)

    def inside(o: int, i: int, t: int, known: int | None) -> bool:
        """Whether output pixel o's tap (i, t) reads memory (o from the block's start,
        the block at `known`, or in the loop: at a multiple of size inside the plane)."""
        col = o % q + shifts[t]
        if known is None:
            return 0 <= col < q
        o += known
        return o < total and 0 <= o // q + i - top < h and 0 <= col < q

    def block(f0, count: int, known: int | None) -> None:
        """Output pixels [f0, f0 + count) (known: f0 as a constant, every read checked)."""
        nvec = -(-count // lanes)
        for g0 in range(0, nvec, group):
            us = range(g0, min(nvec, g0 + group))
            accs = {u: start for u in us}
            for i in range(d.r):
                row = (i - top) * q
                spans: dict[int, ir.Value] = {}

                def span(k: int):
                    """Input pixels [k*lanes, (k+1)*lanes) + row from the block's start."""
                    if k not in spans:
                        at = element_ptr(b, x, dt, b.add(f0, i64(k * lanes + row)))
                        on = [known is None or 0 <= known + k * lanes + lane + row < h * q for lane in range(lanes)]
                        mask = None if all(on) else ir.Constant(v.vty(I1), on)
                        if not any(on):
                            spans[k] = ir.Constant(ity, None)
                        elif dt is DType.F32:     # as integers: the shuffles become valignd, not vpermt2ps
                            spans[k] = v.load_raw(at, I32, dt.itemsize, mask)
                        else:
                            spans[k] = b.bitcast(v.load(at, dt, mask), ity)
                    return spans[k]

                for u in us:
                    for t in range(d.s):
                        on = [inside(u * lanes + lane, i, t, known) for lane in range(lanes)]
                        if not any(on):
                            continue
                        k0, r0 = divmod(shifts[t], lanes)
                        if r0 and shifts[t] > 0 and not all(on):
                            # a right-hand window with padding lanes: one masked (unaligned) load
                            # instead of a shuffle and a mask, balancing the load and FP pipes
                            at = element_ptr(b, x, dt, b.add(f0, i64(u * lanes + row + shifts[t])))
                            accs[u] = v.fma(v.load(at, dt, ir.Constant(v.vty(I1), on)), weights[i * d.s + t], accs[u])
                            continue
                        xv = span(u + k0)
                        if r0:
                            xv = b.shuffle_vector(xv, span(u + k0 + 1), ir.Constant(ity, list(range(r0, r0 + lanes))))
                        if not all(on):
                            xv = b.select(ir.Constant(v.vty(I1), on), xv, ir.Constant(ity, None))
                        accs[u] = v.fma(b.bitcast(xv, v.vty(F32)), weights[i * d.s + t], accs[u])
            for u in us:
                at = b.add(f0, i64(u * lanes))
                rest = count - u * lanes
                mask = None if rest >= lanes else v.tail_mask(i64(rest))
                res = element_ptr(b, args["residual"][0], dt, at) if d.residual else None
                dw._finish(v, d, accs[u], res, element_ptr(b, out, d.out_dtype, at), mask)

    # the loop: blocks whose reads (each row's vectors from kmin before the block to
    # kmax after it) all lie in the plane
    lo = -(-(top * q - kmin * lanes) // size)
    hi = max(lo, ((d.m - bottom) * q - kmax * lanes) // size)
    if hi > lo:
        with Loop(b, lo * size, hi * size, size, name="plane") as lp:
            block(lp.i, size, None)
    for f, end in ((0, lo * size), (hi * size, total)) if hi > lo else ((0, total),):
        while f < min(end, total):
            count = min(size, total - f)
            block(i64(f), count, f)
            f += count
