"""Transpose TPP: M x N -> N x M, any element type (it moves bits).

Square tiles of T x T elements (T = one register of the element type, at most
16) are loaded as T row vectors, transposed in registers by log2(T) rounds of
two-input shuffles, and stored as T rows. The rounds follow the target's shuffle
lanes (Target.shuffle_lane_bits): on x86 first interleaves inside 128-bit lanes
(unpck*: one cycle), then selections of whole lanes, instead of three-input
permutes (a 16 x 16 f32 tile 22 -> ~12 ns). Edge tiles use masked loads and stores.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..jit.loops import Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import I32, VecBuilder
from . import fields, simt
from .family import Family, Lowering, elements
from .unary import ARITH
from .operands import Operand, define_kernel, element_ptr, unpack_args

_BITS = {1: ir.IntType(8), 2: ir.IntType(16), 4: ir.IntType(32), 8: ir.IntType(64)}
PAGE = 4096         # bytes: rows this far apart share L1 sets (its index bits end below 4 KB)


def transpose(x):
    return np.ascontiguousarray(x.T)


def operands(d) -> list[Operand]:
    return [Operand("x", d.dtype, d.m, d.n), Operand("out", d.dtype, d.n, d.m, output=True)]


def tile_size(target: Target, dtype: DType) -> int:
    return min(16, target.lanes(8 * dtype.itemsize))


def _round_masks(t: int, lane: int, d: int) -> tuple[list[int], list[int]]:
    """The (lo, hi) two-input shuffle masks of the round that pairs rows i and i + d.
    Within a lane of `lane` elements (d < lane): interleave chunks of d elements from the
    lane's lower (lo) or upper (hi) half of both rows (x86's unpcklps/unpcklpd family);
    across lanes: the even (lo) or odd (hi) lanes of the first row, then of the second
    (vshuff32x4 / vperm2f128). log2(t) such rounds transpose t rows, leaving the columns
    in an order that _transpose_rounds works out."""
    lo, hi = [], []
    if d < lane:
        half = lane // 2
        for base in range(0, t, lane):
            for j in range(0, half, d):
                for part, out in ((base + j, lo), (base + half + j, hi)):
                    out += [part + e for e in range(d)] + [t + part + e for e in range(d)]
    else:
        for parity, out in ((0, lo), (1, hi)):
            for src in (0, t):
                for l in range(parity, t // lane, 2):
                    out += [src + l * lane + e for e in range(lane)]
    return lo, hi


def _transpose_rounds(v: VecBuilder, rows: list[ir.Value], lane: int) -> list[ir.Value]:
    """Transpose t vectors of t lanes: result c is column c of the rows."""
    t = len(rows)
    ids = [[(r, c) for c in range(t)] for r in range(t)]        # which element sits where
    vm = ir.VectorType(I32, t)
    d = 1
    while d < t:
        lo, hi = _round_masks(t, lane, d)
        nxt, nid = list(rows), list(ids)
        for i in range(t):
            if i & d:
                continue
            pair = ids[i] + ids[i + d]
            nxt[i] = v.b.shuffle_vector(rows[i], rows[i + d], ir.Constant(vm, lo))
            nxt[i + d] = v.b.shuffle_vector(rows[i], rows[i + d], ir.Constant(vm, hi))
            nid[i], nid[i + d] = [pair[k] for k in lo], [pair[k] for k in hi]
        rows, ids = nxt, nid
        d *= 2
    out = [None] * t
    for vec, where in zip(rows, ids):
        col = where[0][1]
        assert where == [(r, col) for r in range(t)], "the rounds must leave whole columns"
        out[col] = vec
    return out


def emit_simd(module: ir.Module, name: str, target: Target, d) -> ir.Function:
    """Vector CPUs: register tiles (transpose_into)."""
    fn, b = define_kernel(module, name, target)
    (x, ldx), (out, ldo) = unpack_args(b, fn.args[0], 2)
    transpose_into(b, target, x, ldx, out, ldo, d.m, d.n, d.dtype)
    b.ret_void()
    return fn


def emit_simt(module: ir.Module, name: str, target: Target, d) -> ir.Function:
    """GPUs: one thread per element over a grid-stride loop, reading along rows (the
    writes are strided; a shared-memory tile would make both sides coalesced)."""
    m, n, dtype = d.m, d.n, d.dtype
    fn, b, ((x, ldx), (out, ldo)) = simt.define_simt_kernel(module, name, 2)
    first, step = simt.thread_index(module, b)
    et = _BITS[dtype.itemsize]
    with Loop(b, first, i64(m * n), step, name="elem") as lp:
        i, j = b.udiv(lp.i, i64(n)), b.urem(lp.i, i64(n))
        value = b.load(element_ptr(b, x, dtype, b.add(b.mul(i, ldx), j)), typ=et)
        b.store(value, element_ptr(b, out, dtype, b.add(b.mul(j, ldo), i)))
    b.ret_void()
    return fn


def transpose_into(b: ir.IRBuilder, target: Target, x: ir.Value, ldx: ir.Value, out: ir.Value,
                   ldo: ir.Value, m: int, n: int, dtype: DType) -> None:
    """Emit out[j, i] = x[i, j] for an m x n x (row strides ldx, ldo in elements) at the
    builder's position; GEMM packs B^T with it."""
    t = tile_size(target, dtype)
    v = VecBuilder(b, t)
    et = _BITS[dtype.itemsize]
    # the rows' offsets within a tile, made once here: the clean-up pipeline has no LICM,
    # so products formed inside the loops stay there (32 imuls per 16 x 16 tile)
    in_rows = [b.mul(i64(r), ldx) for r in range(t)]
    # elements per shuffle lane (a whole vector where any pattern costs the same)
    lane = min(t, target.shuffle_lane_bits // (8 * dtype.itemsize)) if target.shuffle_lane_bits else t
    out_rows = [b.mul(i64(c), ldo) for c in range(t)]

    def tile(i0, j0, rows: int, cols: int) -> None:
        """One tile at (i0, j0) of the input with `rows` x `cols` valid elements."""
        col_mask = None if cols == t else v.tail_mask(i64(cols))
        row_mask = None if rows == t else v.tail_mask(i64(rows))
        src = element_ptr(b, x, dtype, b.add(b.mul(i0, ldx), j0))
        dst = element_ptr(b, out, dtype, b.add(b.mul(j0, ldo), i0))
        vecs = []
        for r in range(t):
            if r >= rows:
                vecs.append(ir.Constant(v.vty(et), None))
                continue
            vecs.append(v.load_raw(element_ptr(b, src, dtype, in_rows[r]), et, dtype.itemsize, col_mask))
        for c, vec in enumerate(_transpose_rounds(v, vecs, lane)[:cols]):
            v.store_raw(vec, element_ptr(b, dst, dtype, out_rows[c]), dtype.itemsize, row_mask)

    mt, nt = m // t * t, n // t * t

    def rows_first() -> None:
        with Loop(b, 0, mt, t, name="ti") as ti:
            with Loop(b, 0, nt, t, name="tj") as tj:
                tile(ti.i, tj.i, t, t)
            if n > nt:
                tile(ti.i, i64(nt), t, n - nt)
        if m > mt:
            with Loop(b, 0, nt, t, name="tj_edge") as tj:
                tile(i64(mt), tj.i, m - mt, t)
            if n > nt:
                tile(i64(mt), i64(nt), m - mt, n - nt)

    def columns_first() -> None:
        """t rows of out at a time, each from end to end: where out's rows lie far apart
        (a conv tile into NCHW planes 50 KB apart puts every 4th row in one L1 set),
        writing t elements of every row per step evicted lines half written."""
        with Loop(b, 0, nt, t, name="tj") as tj:
            with Loop(b, 0, mt, t, name="ti") as ti:
                tile(ti.i, tj.i, t, t)
            if m > mt:
                tile(i64(mt), tj.i, m - mt, t)
        if n > nt:
            with Loop(b, 0, mt, t, name="ti_edge") as ti:
                tile(ti.i, i64(nt), t, n - nt)
            if m > mt:
                tile(i64(mt), i64(nt), m - mt, n - nt)

    if n <= t or m <= t:            # one tile row or column: both orders are the same
        rows_first()
        return
    # the strides are call-time values; inlined with constant ones, the branch folds away.
    # Rows a page or more apart (and farther than x's): columns first (a 224 x 64 f32 tile
    # into rows 50 KB apart 3.35 -> 1.95 us); closer ones keep rows first (into a dense
    # 64 x 224: 1.5 us, columns first 2.0)
    far = b.and_(b.icmp_signed(">", ldo, ldx), b.icmp_signed(">=", ldo, i64(PAGE // dtype.itemsize)))
    with b.if_else(far) as (farther, otherwise):
        with farther:
            columns_first()
        with otherwise:
            rows_first()


# ---- the family record -------------------------------------------------------------
def _validate(d) -> None:
    fields.check_layout_kind(d, ARITH)


FAMILY = Family("transpose", "transpose", ("transpose",), _validate, operands,
                lambda d, x: transpose(np.asarray(x, dtype=np.float64)),
                {"simd": Lowering(emit_simd), "simt": Lowering(emit_simt, threads=elements)})
