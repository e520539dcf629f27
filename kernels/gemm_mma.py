"""bf16 GEMM and BRGEMM on NVIDIA tensor cores: mma.sync m16n8k16 (sm_80 and later).

A thread block of 256 threads (8 warps) computes a BM x BN = 128 x 128 tile of C;
blocks walk the tiles with a grid stride. Each warp owns a 64 x 32 piece: 4 x 4
mma tiles of 16 x 8, 64 f32 accumulators per thread, kept in registers through
the K loop and the batch. Per BK = 32 step of K the block stages its A (128 x 32)
and B (32 x 128) slices in shared memory: 16-byte vector loads where a chunk of 8
elements lies inside the operand and is aligned, element loads with zeros past
the edges otherwise (so any M, N, K and leading dimension works), the loads for
the next step issued before the current step's mmas. Warps then read their
fragments with ldmatrix (x4; .trans for B, which is stored k-major) and issue 16
mmas per 16 of K. Shared rows are padded (A: 40, B: 136 elements) so the 8 row
addresses of an ldmatrix fall in different banks.

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
from ..jit.types import DType
from ..jit.vec import F32, I16, I32, VecBuilder, declare
from . import simt
from .epilogue import apply_epilogue, epilogue_inputs
from .operands import batch_entry, element_ptr

BM, BN, BK = 128, 128, 32
THREADS = 256                          # tpp.cuda launches blocks of this many (cuda.BLOCK)
WARPS_M, WARPS_N = 2, 4                # warp grid: each warp 64 x 32
WM, WN = BM // WARPS_M, BN // WARPS_N
MT, NT = WM // 16, WN // 8             # mma tiles per warp: 4 x 4
A_LD, B_LD = BK + 8, BN + 8            # padded shared rows (elements)
SHARED = 3                             # NVPTX address space of shared memory
GLOBAL = 1

_V8 = ir.VectorType(I16, 8)
_FRAG4 = ir.LiteralStructType([I32] * 4)
_ACC4 = ir.LiteralStructType([F32] * 4)


def _branch_value(b: ir.IRBuilder, cond: ir.Value, then, otherwise) -> ir.Value:
    """then() where cond holds, otherwise() elsewhere, as one value (a phi): each side
    runs only on its branch (a load past an operand's end must not run)."""
    with b.if_else(cond) as (yes, no):
        with yes:
            t_val, t_block = then(), b.block
        with no:
            f_val, f_block = otherwise(), b.block
    phi = b.phi(t_val.type)
    phi.add_incoming(t_val, t_block)
    phi.add_incoming(f_val, f_block)
    return phi


def applies(dtype: DType, trans_a: bool, trans_b: bool, b_vnni: bool) -> bool:
    """Whether the tensor-core kernel takes this GEMM (else the SIMT one does)."""
    return dtype is DType.BF16 and not (trans_a or trans_b or b_vnni)


def launch_threads(m: int, n: int) -> int:
    """Threads worth launching: one block per C tile."""
    return -(-m // BM) * -(-n // BN) * THREADS


def emit(module: ir.Module, name: str, m: int, n: int, k: int, lda: int, ldb: int, ldc: int, beta: float,
         batch: str, stride_a: int, stride_b: int, out_dtype: DType, epilogue: tuple[str, ...],
         arg_count: int, target) -> ir.Function:
    extra = epilogue_inputs(epilogue)
    fn, b, pairs = simt.define_simt_kernel(module, name, arg_count + len(extra))
    (a_arg, _), (b_arg, _) = pairs[:2]
    c_ptr = pairs[2 + len(extra)][0]
    aux = pairs[3 + len(extra):]
    epilogue_args = dict(zip(extra, pairs[2:2 + len(extra)]))
    v = VecBuilder(b, 1, target)

    def sreg(reg: str) -> ir.Value:
        return b.zext(b.call(declare(module, f"llvm.nvvm.read.ptx.sreg.{reg}", I32, []), []), I64)

    def shared(name_: str, count: int) -> ir.GlobalVariable:
        g = ir.GlobalVariable(module, ir.ArrayType(I16, count), f"{name}_{name_}", addrspace=SHARED)
        g.linkage = "internal"
        g.initializer = ir.Constant(g.type.pointee, None)
        g.align = 16
        return g

    a_smem, b_smem = shared("a", BM * A_LD), shared("b", BK * B_LD)
    barrier = declare(module, "llvm.nvvm.barrier0", ir.VoidType(), [])
    sptr = ir.PointerType(addrspace=SHARED)
    ldsm = declare(module, "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.b16", _FRAG4, [sptr])
    ldsm_t = declare(module, "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4.trans.b16", _FRAG4, [sptr])
    mma = declare(module, "llvm.nvvm.mma.m16n8k16.row.col.bf16", _ACC4, [I32] * 6 + [F32] * 4)

    def s_at(g: ir.GlobalVariable, index: ir.Value) -> ir.Value:
        """Element `index` of a shared array, as an opaque shared pointer (llvmlite's
        bitcast keeps a typed pointer, which stores check against the array type)."""
        return b.inttoptr(b.ptrtoint(b.gep(g, [i64(0), index], source_etype=g.value_type), I64), sptr)

    tid = sreg("tid.x")
    lane, warp = b.urem(tid, i64(32)), b.udiv(tid, i64(32))
    w_row = b.mul(b.udiv(warp, i64(WARPS_N)), i64(WM))
    w_col = b.mul(b.urem(warp, i64(WARPS_N)), i64(WN))
    tiles_n = -(-n // BN)

    # ---- staging: chunks of 8 elements, two per thread for each operand --------------
    def chunk_load(base: ir.Value, ld: int, row: ir.Value, col: ir.Value, rows: int, cols: int) -> ir.Value:
        """8 elements of a rows x cols operand from (row, col) on, as <8 x i16>: one
        16-byte load where they are all inside and aligned, else element by element
        (zeros outside)."""
        ptr = element_ptr(b, base, DType.BF16, b.add(b.mul(row, i64(ld)), col))
        row_ok = b.icmp_signed("<", row, i64(rows))
        inside = b.and_(row_ok, b.icmp_signed("<=", b.add(col, i64(8)), i64(cols)))
        aligned = b.icmp_unsigned("==", b.and_(b.ptrtoint(ptr, I64), i64(15)), i64(0))

        def vector() -> ir.Value:
            value = b.load(b.addrspacecast(ptr, ir.PointerType(addrspace=GLOBAL)), typ=_V8)
            value.align = 16
            return value

        def elements() -> ir.Value:
            vec = ir.Constant(_V8, None)
            for e in range(8):
                ok = b.and_(row_ok, b.icmp_signed("<", b.add(col, i64(e)), i64(cols)))
                x = _branch_value(b, ok, lambda e=e: b.load(element_ptr(b, ptr, DType.BF16, i64(e)), typ=I16),
                                  lambda: ir.Constant(I16, 0))
                vec = b.insert_element(vec, x, ir.Constant(I32, e))
            return vec
        return _branch_value(b, b.and_(inside, aligned), vector, elements)

    # chunk c of A's slice: row c / 4, columns (c % 4) * 8; of B's: row c / 16, columns (c % 16) * 8
    a_chunks = [b.add(tid, i64(u * THREADS)) for u in range(BM * BK // 8 // THREADS)]
    b_chunks = [b.add(tid, i64(u * THREADS)) for u in range(BK * BN // 8 // THREADS)]

    def fetch(a_base, b_base, row0, col0, k0) -> list:
        """This thread's chunks of the A and B slices at k0 (registers)."""
        vals = []
        for c in a_chunks:
            r, q = b.udiv(c, i64(BK // 8)), b.urem(c, i64(BK // 8))
            vals.append(chunk_load(a_base, lda, b.add(row0, r), b.add(k0, b.mul(q, i64(8))), m, k))
        for c in b_chunks:
            r, q = b.udiv(c, i64(BN // 8)), b.urem(c, i64(BN // 8))
            vals.append(chunk_load(b_base, ldb, b.add(k0, r), b.add(col0, b.mul(q, i64(8))), k, n))
        return vals

    def stage(vals: list) -> None:
        for c, val in zip(a_chunks, vals[:len(a_chunks)]):
            r, q = b.udiv(c, i64(BK // 8)), b.urem(c, i64(BK // 8))
            st = b.store(val, s_at(a_smem, b.add(b.mul(r, i64(A_LD)), b.mul(q, i64(8)))))
            st.align = 16
        for c, val in zip(b_chunks, vals[len(a_chunks):]):
            r, q = b.udiv(c, i64(BN // 8)), b.urem(c, i64(BN // 8))
            st = b.store(val, s_at(b_smem, b.add(b.mul(r, i64(B_LD)), b.mul(q, i64(8)))))
            st.align = 16

    # ---- the warp's mmas on the staged slice ------------------------------------------
    def mmas(accs: list) -> list:
        accs = list(accs)
        for kk in range(0, BK, 16):
            a_frags = []
            for i in range(MT):
                # lane L: row L % 16 of the m16 tile, columns kk + 8 (L / 16)
                row = b.add(w_row, b.add(i64(i * 16), b.urem(lane, i64(16))))
                col = b.add(i64(kk), b.mul(b.udiv(lane, i64(16)), i64(8)))
                frag = b.call(ldsm, [s_at(a_smem, b.add(b.mul(row, i64(A_LD)), col))])
                a_frags.append([b.extract_value(frag, r) for r in range(4)])
            b_frags = []
            for p in range(NT // 2):
                # lane L: matrix L / 8 = (k half, n half); row kk + 8 (mat % 2) + L % 8
                mat = b.udiv(lane, i64(8))
                krow = b.add(i64(kk), b.add(b.mul(b.urem(mat, i64(2)), i64(8)), b.urem(lane, i64(8))))
                ncol = b.add(w_col, b.add(i64(p * 16), b.mul(b.udiv(mat, i64(2)), i64(8))))
                frag = b.call(ldsm_t, [s_at(b_smem, b.add(b.mul(krow, i64(B_LD)), ncol))])
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
            first = fetch(a_base, b_base, row0, col0, i64(0))
            with Loop(b, 0, i64(steps), carry=accs + first, name="k") as kl:
                acc_in, staged = kl.vars[:len(accs)], kl.vars[len(accs):]
                b.call(barrier, [])                    # the previous slice is no longer read
                stage(staged)
                b.call(barrier, [])
                # the next slice's loads go out before this slice's mmas (past K they
                # read nothing: every chunk is outside and comes back as zeros)
                nxt = fetch(a_base, b_base, row0, col0, b.mul(b.add(kl.i, i64(1)), i64(BK)))
                kl.next(*(mmas(acc_in) + nxt))
            return kl.vars[:len(accs)]

        if batch == "none":
            accs = k_loop(a_arg, b_arg, accs)
        else:
            with Loop(b, 0, aux[0][1], carry=accs, name="batch") as bl:
                bl.next(*k_loop(*batch_entry(b, batch, bl.i, a_arg, b_arg, DType.BF16, DType.BF16,
                                             stride_a, stride_b, aux), list(bl.vars)))
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
