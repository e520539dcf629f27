"""VNNI packing of a GEMM operand for the dot instructions that multiply groups of
g consecutive k held in one 32-bit lane (g = 2 for bf16, 4 for 8-bit integers):
B (k x n) -> Bp (ceil(k/g) x g*n) with Bp[p, g*j + t] = B[g*p + t, j], zero-padded
when k is not a multiple of g."""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..jit.loops import Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import I32, VecBuilder
from . import fields
from .family import Family, Lowering
from .operands import Operand, define_kernel, element_ptr, unpack_args

GROUP = {2: 2, 1: 4}                       # element size in bytes -> k per 32-bit lane
DTYPES = frozenset({DType.BF16, DType.I8, DType.U8})


def vnni_pack(x):
    """numpy reference (any dtype; the group follows the element size)."""
    g = GROUP[x.dtype.itemsize]
    k, n = x.shape
    groups = -(-k // g)
    out = np.zeros((groups * g, n), dtype=x.dtype)
    out[:k] = x
    return out.reshape(groups, g, n).transpose(0, 2, 1).reshape(groups, g * n)


def operands(d) -> list[Operand]:
    """x is k x n (the descriptor's m x n); out its ceil(k/g) x g*n groups."""
    k, n, g = d.m, d.n, GROUP[d.dtype.itemsize]
    return [Operand("x", d.dtype, k, n), Operand("out", d.dtype, -(-k // g), g * n, output=True)]


def interleave_rows(v: VecBuilder, rows: list[ir.Value]) -> ir.Value:
    """g vectors <L x iB> -> <L x i32> whose lane j holds (rows[0][j], ..., rows[g-1][j]),
    by pairwise interleaving shuffles (two rounds for g = 4)."""
    lanes = v.lanes
    while len(rows) > 1:
        merged = []
        for lo, hi in zip(rows[0::2], rows[1::2]):
            count = lo.type.count
            order = [x for j in range(count) for x in (j, count + j)]
            pairs = v.b.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(I32, 2 * count), order))
            width = 2 * lo.type.element.width
            merged.append(v.b.bitcast(pairs, ir.VectorType(ir.IntType(width), lanes)))
        rows = merged
    return rows[0]


def emit_simd(module: ir.Module, name: str, target: Target, d) -> ir.Function:
    k, n, dtype = d.m, d.n, d.dtype
    fn, b = define_kernel(module, name, target)
    (x, ldx), (out, ldo) = unpack_args(b, fn.args[0], 2)
    g = GROUP[dtype.itemsize]
    item = ir.IntType(8 * dtype.itemsize)
    lanes = target.lanes(32)
    v = VecBuilder(b, lanes, target)
    zero = ir.Constant(v.vty(item), None)

    def group_row(p: ir.Value, rows: int) -> None:
        r0 = element_ptr(b, x, dtype, b.mul(b.mul(p, i64(g)), ldx))
        dst = element_ptr(b, out, dtype, b.mul(p, ldo))

        def chunk(j, mask):
            loaded = [v.load_raw(element_ptr(b, r0, dtype, b.add(b.mul(ldx, i64(t)), j)), item,
                                 dtype.itemsize, mask) if t < rows else zero for t in range(g)]
            v.store_raw(interleave_rows(v, loaded), element_ptr(b, dst, dtype, b.mul(j, i64(g))),
                        dtype.itemsize, mask)
        with Loop(b, 0, n - lanes + 1, lanes, name="cols") as cl:
            chunk(cl.i, None)
        if n % lanes:
            chunk(i64(n - n % lanes), v.tail_mask(i64(n % lanes)))

    with Loop(b, 0, k // g, name="groups") as pl:
        group_row(pl.i, g)
    if k % g:
        group_row(i64(k // g), k % g)
    b.ret_void()
    return fn


# ---- the family record -------------------------------------------------------------
def _validate(d) -> None:
    fields.check_layout_kind(d, DTYPES)


def _reference(d, x):
    """The packed layout in float64 (the groups follow the element size: packed in the dtype)."""
    return vnni_pack(np.asarray(x, dtype=d.dtype.numpy)).astype(np.float64)


FAMILY = Family("vnni_pack", "vnni_pack", ("vnni_pack",), _validate, operands, _reference,
                {"simd": Lowering(emit_simd)},
                unsupported={"simt": "VNNI layouts are a CPU dot-instruction format; GPUs take plain or "
                                     "mma fragments"})
