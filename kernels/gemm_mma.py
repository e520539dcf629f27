"""bf16 GEMM and BRGEMM on NVIDIA tensor cores: mma.sync m16n8k16 (sm_80 and later).

A thread block of 256 threads (8 warps) computes a BM x BN = 128 x 128 tile of C;
blocks walk the tiles with a grid stride. Each warp owns a 64 x 32 piece: 4 x 4
mma tiles of 16 x 8, 64 f32 accumulators per thread, kept in registers through
the K loop and the batch.

K goes by slices of BK = 32 through a ring of STAGES = 3 shared-memory stages
(A 128 x 32 and B 32 x 128 per stage, 16 KB; 48 KB in all): slice i + 2 is
copied in with cp.async while the warps multiply slice i, so one barrier per
slice both publishes the slice that landed and frees the stage the next copy
overwrites. A 16-byte chunk whose source is aligned goes by cp.async, its bytes
past the operand's edge zero-filled (src-size); an unaligned one (a leading
dimension that is not a multiple of 8, an odd base) element by element, zeros
outside. Warps read their fragments with ldmatrix (x4; .trans for B, stored
k-major). Chunks sit XOR-swizzled in their rows (A: chunk ^ (row / 2) % 4, B:
chunk ^ row % 8) so the 8 row addresses of an ldmatrix fall in distinct banks.

Fragment layouts (PTX ISA, mma.m16n8k16, .bf16): with g = lane / 4, t = lane % 4,
A's four registers hold rows (g, g+8, g, g+8) x columns (2t, 2t+1) (+8 for the
last two), B's two hold rows 2t, 2t+1 (+8) of column g, and C's four floats rows
g, g, g+8, g+8 x columns 2t, 2t+1. ldmatrix hands thread T row T/4, columns 2(T%4)
and 2(T%4)+1 of each 8 x 8 matrix (transposed for .trans), which is why the
address each lane supplies below picks rows and matrices the way it does.

The epilogue (beta, bias, residual, activations, bf16 output) runs per element at
the store, as in the SIMT GEMM. Descriptors this does not take (transposes, VNNI B,
other dtypes) use gemm_simt's kernel.
"""
from __future__ import annotations

from llvmlite import ir

from ..jit.loops import I64, Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import F32, I16, I32, VecBuilder, declare
from . import simt
from .epilogue import apply_epilogue, epilogue_inputs
from .gemm_spec import Batch
from .operands import batch_entry, element_ptr

BM, BN, BK = 128, 128, 32
STAGES = 3                             # slices in flight: 3 x 16 KB, the static shared-memory limit
THREADS = 256                          # tpp.cuda launches blocks of this many (cuda.BLOCK)
WARPS_M, WARPS_N = 2, 4                # warp grid: each warp 64 x 32
WM, WN = BM // WARPS_M, BN // WARPS_N
MT, NT = WM // 16, WN // 8             # mma tiles per warp: 4 x 4
A_CHUNKS, B_CHUNKS = BK // 8, BN // 8  # 16-byte chunks per shared row

_V8 = ir.VectorType(I16, 8)
_FRAG4 = ir.LiteralStructType([I32] * 4)
_ACC4 = ir.LiteralStructType([F32] * 4)


def applies(dtype: DType, trans_a: bool, trans_b: bool, b_vnni: bool) -> bool:
    """Whether the tensor-core kernel takes this GEMM (else the SIMT one does)."""
    return dtype is DType.BF16 and not (trans_a or trans_b or b_vnni)


def launch_threads(m: int, n: int) -> int:
    """Threads worth launching: one block per C tile."""
    return -(-m // BM) * -(-n // BN) * THREADS


def emit(module: ir.Module, name: str, target: Target, d, batch: Batch) -> ir.Function:
    """The kernel for plain bf16 GEMM descriptor d (gemm_spec.py, `applies`) and its batch."""
    m, n, k, lda, ldb, ldc = d.m, d.n, d.k, d.lda, d.ldb, d.ldc
    beta, out_dtype, epilogue = d.beta, d.out_dtype, d.epilogue
    extra = epilogue_inputs(epilogue)
    fn, b, pairs = simt.define_simt_kernel(module, name, batch.args + len(extra))
    (a_arg, _), (b_arg, _) = pairs[:2]
    c_ptr = pairs[2 + len(extra)][0]
    aux = pairs[3 + len(extra):]
    epilogue_args = dict(zip(extra, pairs[2:2 + len(extra)]))
    v = VecBuilder(b, 1, target)

    def sreg(reg: str) -> ir.Value:
        return simt.sreg(module, b, reg)

    a_smem = simt.shared_array(module, f"{name}_a", I16, STAGES * BM * BK)
    b_smem = simt.shared_array(module, f"{name}_b", I16, STAGES * BK * BN)
    barrier = declare(module, "llvm.nvvm.barrier0", ir.VoidType(), [])
    sptr, gptr = ir.PointerType(addrspace=simt.SHARED), ir.PointerType(addrspace=simt.GLOBAL)
    ldsm = declare(module, "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.b16", _FRAG4, [sptr])
    ldsm_t = declare(module, "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.trans.b16", _FRAG4, [sptr])
    mma = declare(module, "llvm.nvvm.mma.m16n8k16.row.col.bf16", _ACC4, [I32] * 6 + [F32] * 4)
    cp_async = declare(module, "llvm.nvvm.cp.async.cg.shared.global.16.s", ir.VoidType(), [sptr, gptr, I32])
    commit = declare(module, "llvm.nvvm.cp.async.commit.group", ir.VoidType(), [])
    wait = declare(module, "llvm.nvvm.cp.async.wait.group", ir.VoidType(), [I32])

    def s_at(g: ir.GlobalVariable, index: ir.Value) -> ir.Value:
        return simt.shared_at(b, g, index)

    # where chunk q of a stage's row lives (elements from the stage's start): swizzled
    def a_slot(stage, row: ir.Value, q: ir.Value) -> ir.Value:
        q = b.xor(q, b.and_(b.lshr(row, i64(1)), i64(3)))
        return b.add(b.mul(stage, i64(BM * BK)), b.add(b.mul(row, i64(BK)), b.mul(q, i64(8))))

    def b_slot(stage, row: ir.Value, q: ir.Value) -> ir.Value:
        q = b.xor(q, b.and_(row, i64(7)))
        return b.add(b.mul(stage, i64(BK * BN)), b.add(b.mul(row, i64(BN)), b.mul(q, i64(8))))

    tid = sreg("tid.x")
    lane, warp = b.urem(tid, i64(32)), b.udiv(tid, i64(32))
    w_row = b.mul(b.udiv(warp, i64(WARPS_N)), i64(WM))
    w_col = b.mul(b.urem(warp, i64(WARPS_N)), i64(WN))
    tiles_n = -(-n // BN)

    # ---- copying a slice in: 16-byte chunks, two per thread for each operand -----------
    def chunk_in(base: ir.Value, ld: int, row: ir.Value, col: ir.Value, rows: int, cols: int,
                 dst: ir.Value) -> None:
        """The 8 elements of a rows x cols operand from (row, col) on into shared `dst`:
        cp.async with the bytes past the edge zero-filled where the source is aligned,
        else element by element (zeros outside)."""
        ptr = element_ptr(b, base, DType.BF16, b.add(b.mul(row, i64(ld)), col))
        row_ok = b.icmp_signed("<", row, i64(rows))
        aligned = b.icmp_unsigned("==", b.and_(b.ptrtoint(ptr, I64), i64(15)), i64(0))
        with b.if_else(aligned) as (fast, slow):
            with fast:
                left = b.mul(b.sub(i64(cols), col), i64(2))          # bytes before the row's end
                nbytes = b.select(row_ok, b.select(b.icmp_signed("<", left, i64(16)), left, i64(16)), i64(0))
                nbytes = b.select(b.icmp_signed("<", nbytes, i64(0)), i64(0), nbytes)
                # nothing is read when nbytes is 0; the operand's base keeps the address valid
                src = b.select(b.icmp_signed(">", nbytes, i64(0)), ptr, base)
                b.call(cp_async, [dst, b.addrspacecast(src, gptr), b.trunc(nbytes, I32)])
            with slow:
                vec = ir.Constant(_V8, None)
                for e in range(8):
                    ok = b.and_(row_ok, b.icmp_signed("<", b.add(col, i64(e)), i64(cols)))
                    x = simt.branch_value(b, ok, lambda e=e: b.load(element_ptr(b, ptr, DType.BF16, i64(e)), typ=I16),
                                      lambda: ir.Constant(I16, 0))
                    vec = b.insert_element(vec, x, ir.Constant(I32, e))
                st = b.store(vec, dst)
                st.align = 16

    a_chunks = [b.add(tid, i64(u * THREADS)) for u in range(BM * A_CHUNKS // THREADS)]
    b_chunks = [b.add(tid, i64(u * THREADS)) for u in range(BK * B_CHUNKS // THREADS)]

    def copy_in(a_base, b_base, row0, col0, k0, stage) -> None:
        """Start copying the slice at k0 into `stage` (one cp.async group per slice)."""
        for c in a_chunks:
            r, q = b.udiv(c, i64(A_CHUNKS)), b.urem(c, i64(A_CHUNKS))
            chunk_in(a_base, lda, b.add(row0, r), b.add(k0, b.mul(q, i64(8))), m, k,
                     s_at(a_smem, a_slot(stage, r, q)))
        for c in b_chunks:
            r, q = b.udiv(c, i64(B_CHUNKS)), b.urem(c, i64(B_CHUNKS))
            chunk_in(b_base, ldb, b.add(k0, r), b.add(col0, b.mul(q, i64(8))), k, n,
                     s_at(b_smem, b_slot(stage, r, q)))
        b.call(commit, [])

    # ---- the warp's mmas on one stage ---------------------------------------------------
    def mmas(stage, accs: list) -> list:
        accs = list(accs)
        for kk in range(0, BK, 16):
            a_frags = []
            for i in range(MT):
                # lane L: row L % 16 of the m16 tile, chunk kk / 8 + L / 16
                row = b.add(w_row, b.add(i64(i * 16), b.urem(lane, i64(16))))
                q = b.add(i64(kk // 8), b.udiv(lane, i64(16)))
                frag = b.call(ldsm, [s_at(a_smem, a_slot(stage, row, q))])
                a_frags.append([b.extract_value(frag, r) for r in range(4)])
            b_frags = []
            for p in range(NT // 2):
                # lane L: matrix L / 8 = (k half, n half); row kk + 8 (mat % 2) + L % 8
                mat = b.udiv(lane, i64(8))
                krow = b.add(i64(kk), b.add(b.mul(b.urem(mat, i64(2)), i64(8)), b.urem(lane, i64(8))))
                ncol = b.add(w_col, b.add(i64(p * 16), b.mul(b.udiv(mat, i64(2)), i64(8))))
                frag = b.call(ldsm_t, [s_at(b_smem, b_slot(stage, krow, b.udiv(ncol, i64(8))))])
                regs = [b.extract_value(frag, r) for r in range(4)]
                b_frags += [regs[0:2], regs[2:4]]
            for i in range(MT):
                for j in range(NT):
                    at = (i * NT + j) * 4
                    d = b.call(mma, a_frags[i] + b_frags[j] + accs[at:at + 4])
                    accs[at:at + 4] = [b.extract_value(d, r) for r in range(4)]
        return accs

    # ---- tiles ---------------------------------------------------------------------------
    tiles = i64(-(-m // BM) * tiles_n)
    with Loop(b, sreg("ctaid.x"), tiles, sreg("nctaid.x"), name="tile") as tl:
        row0, col0 = b.mul(b.udiv(tl.i, i64(tiles_n)), i64(BM)), b.mul(b.urem(tl.i, i64(tiles_n)), i64(BN))
        zero = ir.Constant(F32, 0.0)
        accs = [zero] * (MT * NT * 4)

        def k_loop(a_base, b_base, accs: list) -> list:
            steps = -(-k // BK)
            b.call(barrier, [])            # every warp is done with the stages' previous contents
            for s_ in range(STAGES - 1):   # slices 0 .. STAGES-2 in flight (past K: zeros)
                copy_in(a_base, b_base, row0, col0, i64(s_ * BK), i64(s_))
            with Loop(b, 0, i64(steps), carry=accs, name="k") as kl:
                # slice i has landed (this thread's copies), then every thread's; and every
                # warp has finished slice i-1, whose stage the copy below refills
                b.call(wait, [ir.Constant(I32, STAGES - 2)])
                b.call(barrier, [])
                ahead = b.add(kl.i, i64(STAGES - 1))
                copy_in(a_base, b_base, row0, col0, b.mul(ahead, i64(BK)), b.urem(ahead, i64(STAGES)))
                kl.next(*mmas(b.urem(kl.i, i64(STAGES)), list(kl.vars)))
            b.call(wait, [ir.Constant(I32, 0)])   # no copy outlives the loop into the next one
            return list(kl.vars)

        if batch.variant == "none":
            accs = k_loop(a_arg, b_arg, accs)
        else:
            with Loop(b, 0, aux[0][1], carry=accs, name="batch") as bl:
                bl.next(*k_loop(*batch_entry(b, batch, bl.i, a_arg, b_arg, DType.BF16, DType.BF16, aux),
                                list(bl.vars)))
            accs = list(bl.vars)

        # ---- store: C fragment (g, 2t..2t+1) and (g+8, 2t..2t+1) of each 16 x 8 tile ----
        g, t = b.udiv(lane, i64(4)), b.urem(lane, i64(4))
        for i in range(MT):
            for j in range(NT):
                for r in range(4):
                    row = b.add(row0, b.add(w_row, b.add(i64(i * 16 + 8 * (r // 2)), g)))
                    col = b.add(col0, b.add(w_col, b.add(i64(j * 8 + r % 2), b.mul(t, i64(2)))))
                    inside = b.and_(b.icmp_signed("<", row, i64(m)), b.icmp_signed("<", col, i64(n)))
                    with b.if_then(inside):
                        c_at = element_ptr(b, c_ptr, out_dtype, b.add(b.mul(row, i64(ldc)), col))
                        acc = b.insert_element(ir.Constant(v.vty(F32), None), accs[(i * NT + j) * 4 + r],
                                               ir.Constant(I32, 0))
                        if beta != 0:
                            acc = b.fadd(acc, v.load(c_at, out_dtype))
                        if epilogue:
                            acc = apply_epilogue(v, epilogue, epilogue_args, out_dtype, [acc], row, col,
                                                 1, 1, [None])[0]
                        v.store(acc, c_at, out_dtype)
    b.ret_void()
    return fn
