"""GEMM and BRGEMM for SIMT targets (GPUs) without tensor cores: shared-memory tiles.

Every descriptor the CPU GEMM takes (f32, f64, bf16 with transposes or a VNNI B,
u8 x s8 -> s32; beta, epilogues, the three batch variants) with the same argument
list; plain bf16 goes to the tensor cores instead (gemm_mma.py).

A block of 256 threads computes a BM x BN = 64 x 64 tile of C, blocks walking the
tiles with a grid stride. Per BK = 16 step of K the block stages its A (64 x 16)
and B (16 x 64) slices in shared memory, already widened to the accumulator type
(f32, f64 or i32) and with transposes and VNNI groups resolved by the loads, which
check every element against the operand's edges. Thread (ty, tx) of the 16 x 16
grid then accumulates rows ty + 16 i and columns tx + 16 j (i, j < 4): a warp
reads two A values (broadcasts) and 16 consecutive B values per step, no bank
conflicts. The epilogue runs per element at the store.
"""
from __future__ import annotations

from llvmlite import ir

from ..jit.loops import Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import I32, VecBuilder, declare
from . import simt
from .epilogue import apply_epilogue, epilogue_inputs
from .gemm_spec import B_DTYPE, Batch, accumulator
from .operands import batch_entry, element_ptr
from .vnni import GROUP

BM, BN, BK = 64, 64, 16
THREADS = 256
TY, TX = 16, 16                       # thread grid; each thread 4 x 4 outputs
RM, RN = BM // TY, BN // TX


def launch_threads(m: int, n: int) -> int:
    """Threads worth launching: one block per C tile."""
    return -(-m // BM) * -(-n // BN) * THREADS


def emit(module: ir.Module, name: str, target: Target, d, batch: Batch) -> ir.Function:
    """The kernel for GEMM descriptor d (gemm_spec.py) and its batch."""
    m, n, k, dtype, trans_a, trans_b, b_vnni = d.m, d.n, d.k, d.dtype, d.trans_a, d.trans_b, d.b_vnni
    lda, ldb, ldc, beta, out_dtype, epilogue = d.lda, d.ldb, d.ldc, d.beta, d.out_dtype, d.epilogue
    b_dtype, acc_dtype = B_DTYPE[dtype], accumulator(d)
    extra = epilogue_inputs(epilogue)
    fn, b, pairs = simt.define_simt_kernel(module, name, batch.args + len(extra))
    v = VecBuilder(b, 1, target)
    (a_arg, _), (b_arg, _) = pairs[:2]
    c_ptr = pairs[2 + len(extra)][0]
    aux = pairs[3 + len(extra):]
    epilogue_args = dict(zip(extra, pairs[2:2 + len(extra)]))
    integer = acc_dtype is DType.I32
    acc_t = acc_dtype.storage               # float, double or i32

    def sreg(reg: str) -> ir.Value:
        return simt.sreg(module, b, reg)

    # A slice stored [row][k] and B slice [k][col], one padding element per row
    a_ld, b_ld = BK + 1, BN + 1
    a_smem = simt.shared_array(module, f"{name}_a", acc_t, BM * a_ld)
    b_smem = simt.shared_array(module, f"{name}_b", acc_t, BK * b_ld)
    barrier = declare(module, "llvm.nvvm.barrier0", ir.VoidType(), [])

    def s_at(g: ir.GlobalVariable, index: ir.Value) -> ir.Value:
        return simt.shared_at(b, g, index)

    def widen(value: ir.Value, dt: DType) -> ir.Value:
        """A loaded element as the accumulator type (v.load already made bf16 f32)."""
        value = b.extract_element(value, ir.Constant(I32, 0))
        if dt is DType.U8:
            return b.zext(value, I32)
        if dt is DType.I8:
            return b.sext(value, I32)
        return value

    def element(ptr: ir.Value, dt: DType, ok: ir.Value) -> ir.Value:
        """The element at ptr where ok holds, else zero (nothing is read outside)."""
        return simt.branch_value(b, ok, lambda: widen(v.load(ptr, dt), dt), lambda: ir.Constant(acc_t, 0))

    def a_index(i: ir.Value, kk: ir.Value) -> ir.Value:
        return b.add(b.mul(kk, i64(lda)), i) if trans_a else b.add(b.mul(i, i64(lda)), kk)

    def b_index(kk: ir.Value, j: ir.Value) -> ir.Value:
        if b_vnni:
            g = GROUP[b_dtype.itemsize]
            return b.add(b.mul(b.udiv(kk, i64(g)), i64(ldb)), b.add(b.mul(j, i64(g)), b.urem(kk, i64(g))))
        if trans_b:
            return b.add(b.mul(j, i64(ldb)), kk)
        return b.add(b.mul(kk, i64(ldb)), j)

    tid = sreg("tid.x")
    tx, ty = b.urem(tid, i64(TX)), b.udiv(tid, i64(TX))
    tiles_n = -(-n // BN)
    # staging: element e = tid + 256 u of a slice; A as (row e / BK, k e % BK), B as (k e / BN, col e % BN)
    per_thread = BM * BK // THREADS          # elements of each slice per thread (BM == BN)

    def stage(a_base, b_base, row0, col0, k0) -> None:
        # (slice width, shared array and row, source, dtype, its index, slice origin, operand extent)
        slices = ((BK, a_smem, a_ld, a_base, dtype, a_index, (row0, k0), (m, k)),
                  (BN, b_smem, b_ld, b_base, b_dtype, b_index, (k0, col0), (k, n)))
        for width, smem, ld, base, dt, index, (r0, c0), (rows, cols) in slices:
            for u in range(per_thread):
                e = b.add(tid, i64(u * THREADS))
                r, q = b.udiv(e, i64(width)), b.urem(e, i64(width))
                i, j = b.add(r0, r), b.add(c0, q)
                ok = b.and_(b.icmp_signed("<", i, i64(rows)), b.icmp_signed("<", j, i64(cols)))
                b.store(element(element_ptr(b, base, dt, index(i, j)), dt, ok),
                        s_at(smem, b.add(b.mul(r, i64(ld)), q)))

    def multiply(accs: list) -> list:
        accs = list(accs)
        for q in range(BK):
            av = [b.load(s_at(a_smem, b.add(b.mul(b.add(ty, i64(TY * i)), i64(a_ld)), i64(q))), typ=acc_t)
                  for i in range(RM)]
            bv = [b.load(s_at(b_smem, b.add(i64(q * b_ld), b.add(tx, i64(TX * j)))), typ=acc_t)
                  for j in range(RN)]
            for i in range(RM):
                for j in range(RN):
                    x = accs[i * RN + j]
                    accs[i * RN + j] = (b.add(x, b.mul(av[i], bv[j])) if integer
                                        else b.call(_fma(module, acc_t), [av[i], bv[j], x]))
        return accs

    tiles = i64(-(-m // BM) * tiles_n)
    with Loop(b, sreg("ctaid.x"), tiles, sreg("nctaid.x"), name="tile") as tl:
        row0, col0 = b.mul(b.udiv(tl.i, i64(tiles_n)), i64(BM)), b.mul(b.urem(tl.i, i64(tiles_n)), i64(BN))
        accs = [ir.Constant(acc_t, 0)] * (RM * RN)

        def k_loop(a_base, b_base, accs: list) -> list:
            with Loop(b, 0, i64(-(-k // BK)), carry=accs, name="k") as kl:
                b.call(barrier, [])                # the previous slice is no longer read
                stage(a_base, b_base, row0, col0, b.mul(kl.i, i64(BK)))
                b.call(barrier, [])
                kl.next(*multiply(list(kl.vars)))
            return list(kl.vars)

        if batch.variant == "none":
            accs = k_loop(a_arg, b_arg, accs)
        else:
            with Loop(b, 0, aux[0][1], carry=accs, name="batch") as bl:
                bl.next(*k_loop(*batch_entry(b, batch, bl.i, a_arg, b_arg, dtype, b_dtype, aux),
                                list(bl.vars)))
            accs = list(bl.vars)

        for i in range(RM):
            for j in range(RN):
                row = b.add(row0, b.add(ty, i64(TY * i)))
                col = b.add(col0, b.add(tx, i64(TX * j)))
                with b.if_then(b.and_(b.icmp_signed("<", row, i64(m)), b.icmp_signed("<", col, i64(n)))):
                    c_at = element_ptr(b, c_ptr, out_dtype, b.add(b.mul(row, i64(ldc)), col))
                    acc = b.insert_element(ir.Constant(v.vty(acc_t), None), accs[i * RN + j], ir.Constant(I32, 0))
                    if beta != 0:
                        old = v.load(c_at, out_dtype)
                        acc = b.add(acc, old) if integer else b.fadd(acc, old)
                    if epilogue:
                        acc = apply_epilogue(v, epilogue, epilogue_args, out_dtype, [acc], row, col, 1, 1, [None])[0]
                    v.store(acc, c_at, out_dtype)
    b.ret_void()
    return fn


def _fma(module: ir.Module, t: ir.Type) -> ir.Function:
    name = "llvm.fma.f64" if isinstance(t, ir.DoubleType) else "llvm.fma.f32"
    return declare(module, name, t, [t, t, t])
