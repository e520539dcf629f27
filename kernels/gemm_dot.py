"""The K loop of a GEMM block on narrow inputs, multiplied in groups of g
consecutive k that share one 32-bit lane:

  bf16 x bf16 -> f32: g = 2, vdpbf16ps
  u8 x s8 -> s32:     g = 4, vpdpbusd (LIBXSMM's VNNI int8 convention)

Per step a group A[i, g*p : g*p+g] is broadcast as one 32-bit value, and B's
g rows are interleaved into 32-bit groups: already (a VNNI packed B, see
vnni.py) or in registers (a plain B: g loads and shuffles). Where the target
has no such dot instruction, the lanes are widened and multiplied one k at a
time. A k that is not a multiple of g ends with a group padded with zeros.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llvmlite import ir

from ..jit.loops import I64, fold, i64
from ..jit.types import BFLOAT, DType
from ..jit.vec import I8, I16, I32, VecBuilder, bf16_to_f32
from .gemm_spec import Block, Panels
from .operands import element_ptr
from .vnni import GROUP, interleave_rows

UNROLL = 2            # groups per loop iteration


@dataclass(frozen=True)
class DotKind:
    a: DType
    b: DType
    op: str                          # the target-table name of the dot instruction
    operand: Callable[[ir.Type], ir.Type]   # how the instruction types its two group operands
    widen: Callable                  # fallback: (v, lane-group i32 vector, which) -> g compute vectors


def _bf16_halves(v: VecBuilder, x: ir.Value, signed: bool):
    b = v.b
    return [bf16_to_f32(b, b.trunc(b.lshr(x, v.const(16 * t, I32)), v.vty(I16))) for t in range(2)]


def _int8_quarters(v: VecBuilder, x: ir.Value, signed: bool):
    b = v.b
    parts = [b.trunc(b.lshr(x, v.const(8 * t, I32)), v.vty(I8)) for t in range(4)]
    return [(b.sext if signed else b.zext)(p, v.vty(I32)) for p in parts]


DOTS = {
    DType.BF16: DotKind(DType.BF16, DType.BF16, "bf16_dot", lambda lanes: ir.VectorType(BFLOAT, 2 * lanes),
                        _bf16_halves),
    DType.U8: DotKind(DType.U8, DType.I8, "u8s8_dot", lambda lanes: ir.VectorType(I32, lanes),
                      _int8_quarters),
}


def block_product_dot(b: ir.IRBuilder, v: VecBuilder, dot: DotKind, k: int, src: Panels, block: Block,
                      accs: list) -> list:
    """accs + A[i0:i0+mr, :] B[:, j0:j0+nvec*lanes]. Transposed panels are read as they
    are: g scalar loads per A group, g gathers per B group (correct, slow; gemm.py
    transposes them into a buffer first and gets here only if that buffer cannot be
    allocated)."""
    lanes = v.lanes
    a_ptr, b_ptr, lda, ldb, trans_a, trans_b, b_vnni = (src.a, src.b, src.lda, src.ldb, src.trans_a,
                                                        src.trans_b, src.b_vnni)
    i0, j0, mr, nvec, masks = block.i0, block.j0, block.mr, block.nvec, block.masks
    g = GROUP[dot.a.itemsize]
    item = ir.IntType(8 * dot.a.itemsize)
    if trans_a:      # A^T is k x m: A[i0 + i, kk] = A^T[kk, i0 + i]
        a_cols = [element_ptr(b, a_ptr, dot.a, b.add(i0, i64(i))) for i in range(mr)]
    else:
        a_rows = [element_ptr(b, a_ptr, dot.a, b.mul(b.add(i0, i64(i)), lda)) for i in range(mr)]
    has_dot = v.has_op(dot.op, accs[0].type)
    operand_type = dot.operand(lanes)
    zero_row = ir.Constant(v.vty(item), None)

    def b_groups(p: ir.Value, u: int, rows: int) -> ir.Value:
        """<lanes x i32>: lane j = B[g*p : g*p + rows, col] packed (zeros past `rows`)."""
        col = b.add(j0, i64(u * lanes))
        if b_vnni:    # row p of the packed B, groups at element g*col
            at = element_ptr(b, b_ptr, dot.b, b.add(b.mul(p, ldb), b.mul(col, i64(g))))
            return v.load_raw(at, I32, dot.b.itemsize, masks[u])
        if trans_b:   # B[g*p + t, col + j] = B^T[col + j, g*p + t]
            rows_at = b.mul(b.add(v.splat(col), v.iota(I64)), v.splat(ldb))
            loaded = [b.bitcast(v.gather(b_ptr, b.add(rows_at, v.splat(b.add(b.mul(p, i64(g)), i64(t)))),
                                         dot.b, masks[u]), v.vty(item))
                      if t < rows else zero_row for t in range(g)]
            return interleave_rows(v, loaded)
        r0 = element_ptr(b, b_ptr, dot.b, b.add(b.mul(b.mul(p, i64(g)), ldb), col))
        loaded = [v.load_raw(element_ptr(b, r0, dot.b, b.mul(ldb, i64(t))), item, dot.b.itemsize, masks[u])
                  if t < rows else zero_row for t in range(g)]
        return interleave_rows(v, loaded)

    def a_group(i: int, p: ir.Value, rows: int) -> ir.Value:
        """A[i0+i, g*p : g*p + rows] as one i32 (zero-filled past `rows`)."""
        if trans_a:
            at, step = element_ptr(b, a_cols[i], dot.a, b.mul(b.mul(p, i64(g)), lda)), lda
        else:
            at, step = element_ptr(b, a_rows[i], dot.a, b.mul(p, i64(g))), i64(1)
            if rows == g:
                return b.load(at, typ=I32, align=dot.a.itemsize)
        value = ir.Constant(I32, 0)
        for t in range(rows):
            elem = b.load(element_ptr(b, at, dot.a, b.mul(step, i64(t))), typ=item, align=dot.a.itemsize)
            value = b.or_(value, b.shl(b.zext(elem, I32), ir.Constant(I32, 8 * dot.a.itemsize * t)))
        return value

    def step(p: ir.Value, accs: list, rows: int = g) -> list:
        groups = [b_groups(p, u, rows) for u in range(nvec)]
        out = []
        for i in range(mr):
            ag = v.splat(a_group(i, p, rows))
            for u in range(nvec):
                acc = accs[i * nvec + u]
                if has_dot:
                    out.append(v.target_op(dot.op, acc, b.bitcast(ag, operand_type),
                                           b.bitcast(groups[u], operand_type)))
                else:
                    out.append(_widened(v, acc, dot.widen(v, ag, dot.a is DType.I8),
                                        dot.widen(v, groups[u], dot.b is DType.I8)))
        return out

    accs = fold(b, k // g, UNROLL, accs, step, name="kgroup")
    if k % g:
        accs = step(i64(k // g), accs, rows=k % g)
    return accs


def _widened(v: VecBuilder, acc, a_parts: list, b_parts: list):
    """acc + sum_t a_t * b_t lane by lane (targets without the dot instruction)."""
    for x, y in zip(a_parts, b_parts):
        if isinstance(acc.type.element, ir.IntType):
            acc = v.b.add(acc, v.b.mul(x, y))
        else:
            acc = v.fma(x, y, acc)
    return acc
