"""VNNI-2 packing of a bf16 GEMM operand: B (k x n) -> Bp (ceil(k/2) x 2n) with
Bp[p, 2j + t] = B[2p + t, j] and a zero row pair-mate when k is odd. Each 32-bit
pair then holds the two k-consecutive values that one vdpbf16ps lane multiplies."""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..jit.loops import Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import I16, I32, VecBuilder
from .operands import Operand, define_kernel, element_ptr, unpack_args


def vnni_pack(x):
    """numpy reference (any dtype)."""
    k, n = x.shape
    out = np.zeros(((k + 1) // 2, n, 2), dtype=x.dtype)
    out[:, :, 0] = x[0::2]
    out[: k // 2, :, 1] = x[1::2]
    return out.reshape((k + 1) // 2, 2 * n)


def operands(k: int, n: int, dtype: DType) -> list[Operand]:
    return [Operand("x", dtype, k, n), Operand("out", dtype, (k + 1) // 2, 2 * n, output=True)]


def interleave(v: VecBuilder, lo: ir.Value, hi: ir.Value) -> ir.Value:
    """<L x i16> lo, hi -> <L x i32> whose lane j holds the pair (lo[j], hi[j])."""
    lanes = v.lanes
    order = ir.Constant(ir.VectorType(I32, 2 * lanes), [x for j in range(lanes) for x in (j, lanes + j)])
    pairs = v.b.shuffle_vector(lo, hi, order)
    return v.b.bitcast(pairs, v.vty(I32))


def emit_vnni_pack(module: ir.Module, name: str, target: Target, k: int, n: int, dtype: DType) -> ir.Function:
    fn, b = define_kernel(module, name)
    (x, ldx), (out, ldo) = unpack_args(b, fn.args[0], 2)
    lanes = target.lanes(32)
    v = VecBuilder(b, lanes, target)
    zero = ir.Constant(v.vty(I16), None)

    def pair_row(p: ir.Value, has_second: bool) -> None:
        r0 = element_ptr(b, x, dtype, b.mul(b.mul(p, i64(2)), ldx))
        r1 = element_ptr(b, r0, dtype, ldx)
        dst = element_ptr(b, out, dtype, b.mul(p, ldo))

        def chunk(j, mask):
            lo = v.load_raw(element_ptr(b, r0, dtype, j), I16, 2, mask)
            hi = v.load_raw(element_ptr(b, r1, dtype, j), I16, 2, mask) if has_second else zero
            v.store_raw(interleave(v, lo, hi), element_ptr(b, dst, dtype, b.mul(j, i64(2))), 2, mask)
        with Loop(b, 0, n - lanes + 1, lanes, name="cols") as cl:
            chunk(cl.i, None)
        if n % lanes:
            chunk(i64(n - n % lanes), v.tail_mask(i64(n % lanes)))

    with Loop(b, 0, k // 2, name="pairs") as pl:
        pair_row(pl.i, True)
    if k % 2:
        pair_row(i64(k // 2), False)
    b.ret_void()
    return fn
