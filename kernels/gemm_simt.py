"""GEMM and BRGEMM for SIMT targets (GPUs), first version: one thread per element of C.

Each thread walks its row of op(A) and column of op(B) (through the batch for
BRGEMM), accumulating in f32 (bf16 inputs), i32 (u8 x s8) or the input type,
then applies the epilogue and stores. Correct for every descriptor the CPU GEMM
takes (transposes, VNNI B, beta, epilogues, the three batch variants) with the
same argument list; it does not use shared memory or tensor cores yet, so it is
far from the GPU's speed.
"""
from __future__ import annotations

from llvmlite import ir

from ..jit.loops import Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import I32, VecBuilder
from . import simt
from .epilogue import apply_epilogue, epilogue_inputs
from .operands import batch_entry, element_ptr
from .vnni import GROUP


def emit(module: ir.Module, name: str, target: Target, m: int, n: int, k: int, dtype: DType, b_dtype: DType,
         acc_dtype: DType, trans_a: bool, trans_b: bool, beta: float, lda: int, ldb: int, ldc: int,
         batch: str, stride_a: int, stride_b: int, out_dtype: DType, b_vnni: bool,
         epilogue: tuple[str, ...], arg_count: int) -> ir.Function:
    extra = epilogue_inputs(epilogue)
    fn, b, pairs = simt.define_simt_kernel(module, name, arg_count + len(extra))
    v = VecBuilder(b, 1, target)
    (a_arg, _), (b_arg, _) = pairs[:2]
    c_ptr = pairs[2 + len(extra)][0]
    aux = pairs[3 + len(extra):]
    epilogue_args = dict(zip(extra, pairs[2:2 + len(extra)]))
    integer = acc_dtype is DType.I32
    first, step = simt.thread_index(module, b)

    def widen(value: ir.Value, dt: DType) -> ir.Value:
        if dt is DType.U8:
            return b.zext(value, v.vty(I32))
        if dt is DType.I8:
            return b.sext(value, v.vty(I32))
        return value

    def bases(bi: ir.Value) -> tuple[ir.Value, ir.Value]:
        return batch_entry(b, batch, bi, a_arg, b_arg, dtype, b_dtype, stride_a, stride_b, aux)

    def a_at(base, i, kk):
        index = b.add(b.mul(kk, i64(lda)), i) if trans_a else b.add(b.mul(i, i64(lda)), kk)
        return widen(v.load(element_ptr(b, base, dtype, index), dtype), dtype)

    def b_at(base, kk, j):
        if b_vnni:
            g = GROUP[b_dtype.itemsize]
            index = b.add(b.mul(b.udiv(kk, i64(g)), i64(ldb)), b.add(b.mul(j, i64(g)), b.urem(kk, i64(g))))
        elif trans_b:
            index = b.add(b.mul(j, i64(ldb)), kk)
        else:
            index = b.add(b.mul(kk, i64(ldb)), j)
        return widen(v.load(element_ptr(b, base, b_dtype, index), b_dtype), b_dtype)

    with Loop(b, first, i64(m * n), step, name="elem") as lp:
        i, j = b.udiv(lp.i, i64(n)), b.urem(lp.i, i64(n))
        c_at = element_ptr(b, c_ptr, out_dtype, b.add(b.mul(i, i64(ldc)), j))
        zero = v.const(0, acc_dtype.storage)
        acc = zero if beta == 0 else v.load(c_at, out_dtype)

        def block(a_base, b_base, acc):
            with Loop(b, 0, i64(k), carry=[acc], name="k") as kl:
                x, y = a_at(a_base, i, kl.i), b_at(b_base, kl.i, j)
                kl.next(b.add(kl.vars[0], b.mul(x, y)) if integer else v.fma(x, y, kl.vars[0]))
            return kl.vars[0]

        if batch == "none":
            acc = block(a_arg, b_arg, acc)
        else:
            with Loop(b, 0, aux[0][1], carry=[acc], name="batch") as bl:
                bl.next(block(*bases(bl.i), bl.vars[0]))
            acc = bl.vars[0]
        if epilogue:
            acc = apply_epilogue(v, epilogue, epilogue_args, out_dtype, [acc], i, j, 1, 1, [None])[0]
        v.store(acc, c_at, out_dtype)
    b.ret_void()
    return fn
