"""The K loop of a bf16 GEMM block: f32 accumulators, bf16 operands in pairs.

With the target's bf16 dot instruction (vdpbf16ps), each step takes a pair of
k: A[i, 2p:2p+2] is broadcast as one 32-bit value and B's two rows 2p, 2p+1 are
interleaved into 32-bit pairs, either already (a VNNI-2 packed B, see vnni.py)
or in registers (a plain B: two loads and a shuffle). Without it, the pair is
widened to f32 and takes two FMAs. An odd k ends with a pair whose second A
element is zero.
"""
from __future__ import annotations

from llvmlite import ir

from ..jit.loops import Loop, i64
from ..jit.types import BFLOAT, DType
from ..jit.vec import I16, I32, VecBuilder, bf16_to_f32
from .operands import element_ptr
from .vnni import interleave

BF16 = DType.BF16
UNROLL = 2            # k pairs per loop iteration


def block_product_bf16(b: ir.IRBuilder, v: VecBuilder, a_ptr, b_ptr, i0, j0, mr: int, nvec: int,
                       masks: list, k: int, lda, ldb, b_vnni: bool, accs: list) -> list:
    lanes = v.lanes
    a_rows = [element_ptr(b, a_ptr, BF16, b.mul(b.add(i0, i64(i)), lda)) for i in range(mr)]
    pair_vec = ir.VectorType(BFLOAT, 2 * lanes)
    has_dot = v.has_op("bf16_dot", accs[0].type)
    zero_row = ir.Constant(v.vty(I16), None)

    def b_pairs(p: ir.Value, u: int, last_odd: bool) -> ir.Value:
        """<lanes x i32>: lane j = (B[2p, col], B[2p+1, col]) for the u-th vector of columns."""
        col = b.add(j0, i64(u * lanes))
        if b_vnni:    # row p of the packed B, pairs at element 2*col
            at = element_ptr(b, b_ptr, BF16, b.add(b.mul(p, ldb), b.mul(col, i64(2))))
            return v.load_raw(at, I32, 2, masks[u])
        r0 = element_ptr(b, b_ptr, BF16, b.add(b.mul(b.mul(p, i64(2)), ldb), col))
        lo = v.load_raw(r0, I16, 2, masks[u])
        hi = zero_row if last_odd else v.load_raw(element_ptr(b, r0, BF16, ldb), I16, 2, masks[u])
        return interleave(v, lo, hi)

    def a_pair(i: int, p: ir.Value, last_odd: bool) -> ir.Value:
        """A[i0+i, 2p:2p+2] as one i32 (high half zero for the odd last k)."""
        at = element_ptr(b, a_rows[i], BF16, b.mul(p, i64(2)))
        if last_odd:
            return b.zext(b.load(at, typ=I16, align=2), I32)
        return b.load(at, typ=I32, align=2)

    def step(p: ir.Value, accs: list, last_odd: bool = False) -> list:
        bp = [b_pairs(p, u, last_odd) for u in range(nvec)]
        out = []
        for i in range(mr):
            ap = v.splat(a_pair(i, p, last_odd))
            for u in range(nvec):
                acc = accs[i * nvec + u]
                if has_dot:
                    out.append(v.target_op("bf16_dot", acc, b.bitcast(ap, pair_vec), b.bitcast(bp[u], pair_vec)))
                else:
                    out.append(_two_fmas(b, v, acc, ap, bp[u]))
        return out

    pairs = k // 2
    main = pairs // UNROLL * UNROLL          # pairs in the unrolled loop; the rest after it
    with Loop(b, 0, main, UNROLL, carry=accs, name="kpair") as kl:
        step_accs = list(kl.vars)
        for u in range(UNROLL):
            step_accs = step(b.add(kl.i, i64(u)), step_accs)
        kl.next(*step_accs)
    accs = list(kl.vars)
    for p in range(main, pairs):
        accs = step(i64(p), accs)
    if k % 2:
        accs = step(i64(k // 2), accs, last_odd=True)
    return accs


def _two_fmas(b: ir.IRBuilder, v: VecBuilder, acc, a_pairs, b_pairs):
    """acc + a.lo * b.lo + a.hi * b.hi per lane, in f32 (targets without a bf16 dot)."""
    def halves(x):
        lo = b.trunc(x, v.vty(I16))
        hi = b.trunc(b.lshr(x, v.const(16, I32)), v.vty(I16))
        return bf16_to_f32(b, lo), bf16_to_f32(b, hi)
    a_lo, a_hi = halves(a_pairs)
    b_lo, b_hi = halves(b_pairs)
    return v.fma(a_hi, b_hi, v.fma(a_lo, b_lo, acc))
