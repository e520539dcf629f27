"""GEMM TPP: C = beta * C + op(A) op(B) on row-major tiles (f32, f64).

The C tile is cut into register blocks of MR rows x NV vectors. For each
block the K loop keeps all MR * NV accumulators in registers: per k it loads
NV vectors of B's row k, broadcasts each of the MR elements A[i, k] (a memory
operand of the FMA on x86) and issues MR * NV FMAs. MR is the largest that
leaves a register for each B vector and one for the broadcast. Column
remainders use masked loads and stores of C and B; row remainders a smaller
block. Leading dimensions are part of the kernel (a call with other strides
gets a sibling kernel from the public layer).

op(A) = A^T reads A[k, i] instead of A[i, k] (still a broadcast of one
element). op(B) = B^T needs B[j, k] along j, a strided column: the kernel
transposes B^T into a buffer once per call and runs the plain loops on it
(see _with_b_transposed).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from llvmlite import ir

from ..jit import host
from ..jit.loops import I64, Loop, fold, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import PTR, VecBuilder, declare
from .epilogue import apply_epilogue, epilogue_inputs
from . import gemm_mma, gemm_simt
from .gemm_dot import DOTS, block_product_dot
# the GEMM contract as data lives in gemm_spec.py; its names are this module's too
from .gemm_spec import (ACCUMULATOR, ARG_COUNT, B_DTYPE, BATCH_VARIANTS, DTYPES, NO_BATCH,  # noqa: F401
                        OUT_DTYPES, Batch, Block, Panels, b_shape, operands)
from .transpose import transpose_into
from .operands import batch_entry, define_kernel, element_ptr, unpack_args

MAX_MR = 16
K_UNROLL = 2
# K up to this is unrolled completely (no loop): 16^3 went from 83% to 86% of peak (same run)
FULL_UNROLL_K = 16
# B rows ahead to prefetch in long K loops (K > 2 PREFETCH; shorter ones keep their data
# in L1), at most: on Emerald Rapids 16 took matmul 1024 from 0.89x to 0.95x of OpenBLAS;
# on Zen 4 a block streaming B panels from L3 (56x2048x2048) ran at 106 / 111 / 113 / 112
# GF/s with 0 / 16 / 32 / 64 (one run each; 64 cost 2% in cache).
PREFETCH = 32
LINE = 64                   # bytes a prefetch brings in: one per line of a strip's B row


def prefetch_distance(l1: host.CacheGeometry, k: int, ldb_bytes: int) -> int:
    """B rows ahead to prefetch in the K loop (0: none). A strip's B rows, ldb apart, fall
    into few L1 sets where ldb is a power of two (1 KB: 4 of 64 sets), where the lines
    prefetched ahead evict lines still in use, of B and of A. So the distance is the
    longest (up to PREFETCH, at least 4) that puts at most one line in flight in any set
    per 8 ways. AVX2 on Zen 4, % of peak (best of 15, one run), no prefetch / this rule /
    before (32 rows ahead, issued for each vector): 128^3 97 / 96 (8 rows) / 92; 256^3
    97 / 96 (4) / 89; 48x256x2048 71 / 79 (4) / 78 (8 rows: 85, but 92 at 256^3);
    96x512x512 90 / 90 (none) / 73; 48x1024x256 86 / 83 (none) / 57. AVX-512 the same
    within 1% at 128-512 (a row of its blocks is 28 FMAs, not 12); packed B panels (128
    or 64 bytes a row) keep 32."""
    if not PREFETCH or k <= 2 * PREFETCH:
        return 0
    rows, most = PREFETCH, max(1, l1.ways // 8)
    while rows >= 4 and l1.most_lines_in_one_set(rows, ldb_bytes) > most:
        rows //= 2
    return rows if rows >= 4 else 0


def gemm(a, b, c, beta, trans_a, trans_b):
    """float64 reference: beta * c + op(a) @ op(b)."""
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    return beta * c + opa @ opb


def block_rows(target: Target, nvec: int, m: int, masked: bool = False) -> int:
    """MR for a block of nvec vectors per row: accumulators + B vectors + the broadcasts
    (+ a masked last vector's mask) must fit the register file. One broadcast where FMAs
    read it from memory, and on 16 registers (AVX2's vbroadcastss: the core renames the
    one register for each broadcast in flight; 6 x 2 and 4 x 3 blocks, no spills); a few
    on SVE's 32. AVX2 has no mask registers: vmaskmovps takes its mask in a vector
    register, kept through the K loop (a masked 4 x 3 block: 52 stack accesses)."""
    small = target.vector_registers <= 16
    broadcasts = 1 if target.fma_memory_broadcast or small else 4
    broadcasts += 1 if masked and small else 0
    return max(1, min(MAX_MR, m, (target.vector_registers - nvec - broadcasts) // nvec))


def block_vectors(target: Target, lanes: int, n: int) -> int:
    """NV: two vectors per row (the common choice for 16-32 registers), one if N is narrow."""
    return 1 if n <= lanes else 2


def loop_columns(target: Target, lanes: int, n: int) -> int:
    """How many of C's columns the loop of NV-vector strips covers; the rest (up to 3
    vectors) is one strip after it. Where broadcasts take registers of their own (AVX2),
    an odd vector count ends in a 3-vector strip instead of a 1-vector one: a 1-vector
    tile loads a broadcast for every FMA (24^3 on 16 ymm: a 12 x 1 tile spilling two
    accumulators beside the 6 x 2 ones)."""
    nr = block_vectors(target, lanes, n) * lanes
    vectors = -(-n // lanes)
    if not target.fma_memory_broadcast and vectors >= 3 and vectors % 2:
        return (vectors - 3) // 2 * nr
    return n // nr * nr


def simt_kernel(dtype: DType, trans_a: bool, trans_b: bool, b_vnni: bool):
    """The GPU GEMM a descriptor compiles to (its module has launch_threads(m, n) and
    THREADS): tensor cores for plain bf16, shared-memory tiles for the rest."""
    return gemm_mma if gemm_mma.applies(dtype, trans_a, trans_b, b_vnni) else gemm_simt


def emit_gemm(module: ir.Module, name: str, target: Target, d, batch: Batch = NO_BATCH) -> ir.Function:
    """GEMM (batch "none") or BRGEMM: C = beta C + sum_i op(A_i) op(B_i), then the epilogue,
    for descriptor d (gemm_spec.py) on a vector CPU.

    Arguments (tpp_tensor entries): [A, B, (bias), (residual), C], the epilogue's inputs
    in epilogue order; BRGEMM adds {aux, count} entries after C:
      stride:  A/B point at A_0/B_0, A_i = A_0 + i*stride_a (elements, compiled in);
               aux = {NULL, count}
      offset:  A/B are base buffers, aux = {int64 offsets of A_i, count}, then
               {int64 offsets of B_i, count} (elements)
      address: A/B point at arrays of `count` pointers A_i / B_i; aux = {NULL, count}
    The epilogue is applied to the accumulators in registers, after the whole batch and
    before the store (see epilogue.py).
    Leading dimensions are compiled in (LIBXSMM's contract): every A row of a block is
    then a constant offset from one pointer that moves with k."""
    m, n, k, dtype, trans_a, trans_b, b_vnni = d.m, d.n, d.k, d.dtype, d.trans_a, d.trans_b, d.b_vnni
    beta, epilogue, cdt = d.beta, d.epilogue, d.out_dtype
    fn, b = define_kernel(module, name, target)
    extra = epilogue_inputs(epilogue)
    slots = unpack_args(b, fn.args[0], batch.args + len(extra))
    (a_arg, _), (b_arg, _) = slots[:2]
    c_ptr = slots[2 + len(extra)][0]
    aux = slots[3 + len(extra):]             # BRGEMM's count and offset tables
    epilogue_args = dict(zip(extra, slots[2:2 + len(extra)]))
    lda, ldb, ldc = i64(d.lda), i64(d.ldb), i64(d.ldc)
    acc_dtype = ACCUMULATOR.get(dtype, dtype)
    lanes = target.lanes(8 * acc_dtype.itemsize)
    v = VecBuilder(b, lanes, target)
    elem = acc_dtype.storage

    nr = block_vectors(target, lanes, n) * lanes
    n_full = loop_columns(target, lanes, n)
    l1 = host.l1d() if target.runs_on_host else host.DEFAULT_L1D     # the chip the code runs on

    def given_bases(bi: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(A_i, B_i) for batch entry bi, as the caller passed them."""
        return batch_entry(b, batch, bi, a_arg, b_arg, dtype, B_DTYPE[dtype], aux)

    def nest(packed: dict) -> None:
        """The loops over C's register blocks. packed: {"a"/"b": (buffer, row stride,
        elements per entry)} for operands transposed into a buffer (entry i at i times
        the entry size); the others are read as given."""
        # a packed A is the other orientation: A^T's rows packed as A, or A packed as A^T
        a_ld, a_trans = (lda, trans_a) if "a" not in packed else (i64(packed["a"][1]), not trans_a)
        b_ld, b_trans = (ldb, trans_b) if "b" not in packed else (i64(packed["b"][1]), False)

        def bases(bi: ir.Value) -> tuple[ir.Value, ir.Value]:
            ab = list(given_bases(bi))
            for which, name in enumerate("ab"):
                if name in packed:
                    buf, _, entry = packed[name]
                    ab[which] = element_ptr(b, buf, (dtype, B_DTYPE[dtype])[which], b.mul(bi, i64(entry)))
            return ab[0], ab[1]

        def product(a_i, b_i, block: Block, accs):
            src = Panels(a_i, b_i, a_ld, b_ld, a_trans, b_trans, b_vnni)
            if dtype in DOTS:
                return block_product_dot(b, v, DOTS[dtype], k, src, block, accs)
            return _block_product(b, v, dtype, k, src, block, accs,
                                  prefetch_distance(l1, k, b_ld.constant * dtype.itemsize))

        def tile(i0: ir.Value, j0: ir.Value, mr: int, cols: int) -> None:
            """C[i0:i0+mr, j0:j0+cols] (+)= sum_i A_i B_i for compile-time mr, cols <= nr."""
            nvec = math.ceil(cols / lanes)
            masks = [None] * nvec
            if cols % lanes:
                masks[-1] = v.tail_mask(i64(cols % lanes))
            c_rows = [element_ptr(b, c_ptr, cdt, b.add(b.mul(b.add(i0, i64(i)), ldc), j0)) for i in range(mr)]

            def c_at(i, u):
                return element_ptr(b, c_rows[i], cdt, i64(u * lanes))

            if beta == 0:
                init = [ir.Constant(v.vty(elem), None) for _ in range(mr * nvec)]
            else:
                init = [v.load(c_at(i, u), cdt, masks[u]) for i in range(mr) for u in range(nvec)]
            block = Block(i0, j0, mr, nvec, tuple(masks))
            if batch.variant == "none":
                a_0, b_0 = (packed[name][0] if name in packed else arg for name, arg in (("a", a_arg), ("b", b_arg)))
                accs = product(a_0, b_0, block, init)
            else:
                with Loop(b, 0, aux[0][1], carry=init, name="batch") as bl:
                    a_i, b_i = bases(bl.i)
                    bl.next(*product(a_i, b_i, block, list(bl.vars)))
                accs = list(bl.vars)
            if epilogue:
                accs = apply_epilogue(v, epilogue, epilogue_args, cdt, accs, i0, j0, mr, nvec, masks)
            for i in range(mr):
                for u in range(nvec):
                    v.store(accs[i * nvec + u], c_at(i, u), cdt, masks[u], native=True)

        def row_blocks(j0: ir.Value, cols: int) -> None:
            nvec = math.ceil(cols / lanes)
            # Balance the row tiles (16 rows: 8 + 8, not 14 + 2): a thin remainder tile has
            # too few independent accumulators to hide the FMA latency.
            tiles = math.ceil(m / block_rows(target, nvec, m, masked=cols % lanes != 0))
            mr = math.ceil(m / tiles)
            m_full = m // mr * mr
            with Loop(b, 0, m_full, mr, name="mb") as mb:
                tile(mb.i, j0, mr, cols)
            if m > m_full:
                tile(i64(m_full), j0, m - m_full, cols)

        if n_full:
            with Loop(b, 0, n_full, nr, name="nb") as nb:
                row_blocks(nb.i, nr)
        if n > n_full:
            row_blocks(i64(n_full), n - n_full)

    # Which operands are transposed into a buffer first: B^T always (its columns would be
    # gathers), A^T for the dot kernels (they broadcast A's k-groups, contiguous only in A).
    packs = []
    if trans_a and dtype in DOTS:
        packs.append(_Pack("a", dtype, k, m, lda, -(-k // lanes) * lanes, lambda bi: given_bases(bi)[0]))
    elif not trans_a and not target.broadcast_indexed and dtype not in DOTS and m > 1:
        # Where a broadcast is a load of its own with an immediate offset only (SVE's
        # ld1rw), rows of A each need a pointer and an add per step; A^T puts a block's
        # A[i0:i0+mr, kk] side by side, one pointer for the whole block.
        packs.append(_Pack("a", dtype, m, k, lda, -(-m // 16) * 16, lambda bi: given_bases(bi)[0]))
    if trans_b:
        packs.append(_Pack("b", B_DTYPE[dtype], n, k, ldb, -(-n // lanes) * lanes, lambda bi: given_bases(bi)[1]))
    if packs:
        _with_transposed(b, target, module, packs, aux[0][1] if batch.variant != "none" else None,
                         a_arg, b_arg, nest)
    else:
        nest({})
    b.ret_void()
    return fn


# The transposed operands of a GEMM (no batch) up to this size go into a stack buffer;
# larger ones and BRGEMM batches (their size is a call-time value) into a malloc'ed one.
STACK_PACK_BYTES = 64 << 10


@dataclass(frozen=True)
class _Pack:
    """Operand `name`, stored rows x cols (row stride ld), to be transposed into a
    cols x rows buffer with row stride out_ld."""
    name: str
    dtype: DType
    rows: int
    cols: int
    ld: ir.Value
    out_ld: int
    source: Callable          # batch entry -> the operand's pointer

    @property
    def entry(self) -> int:
        """Elements per batch entry, rounded up to whole cache lines."""
        return -(-self.cols * self.out_ld * self.dtype.itemsize // 64) * 64 // self.dtype.itemsize


def _with_transposed(b: ir.IRBuilder, target: Target, module: ir.Module, packs: list[_Pack], count,
                     a_arg, b_arg, nest) -> None:
    """op(B) = B^T: B is n x k, and its columns are what the K loop needs as vectors.
    Gathering them costs a gather per vector for every row block (26-33% of peak); the
    kernel instead transposes each B_i once per call (transpose.py, in registers) into a
    k x n buffer and runs the plain loops on it. A^T goes the same way for bf16/int8
    (their A groups are contiguous only in A), and A for targets without broadcast
    operands (see emit_gemm). If malloc fails the loops read the
    operands as given (gathers and scalar loads), so a call never fails. count: the
    BRGEMM's batch count (None for one GEMM)."""
    offsets, total = [], 0
    for p in packs:
        offsets.append(total)
        total += p.entry * p.dtype.itemsize         # bytes per batch entry, all operands

    def pack_all(buf: ir.Value) -> dict:
        regions = {}
        for p, off in zip(packs, offsets):
            region = b.gep(buf, [b.mul(i64(off), i64(1) if count is None else count)], source_etype=ir.IntType(8))
            regions[p.name] = (region, p.out_ld, p.entry)

            def one(bi: ir.Value, p=p, region=region) -> None:
                src = (a_arg, b_arg)["ab".index(p.name)] if count is None else p.source(bi)
                transpose_into(b, target, src, p.ld, element_ptr(b, region, p.dtype, b.mul(bi, i64(p.entry))),
                               i64(p.out_ld), p.rows, p.cols, p.dtype)
            if count is None:          # one GEMM
                one(i64(0))
            else:
                with Loop(b, 0, count, name="pack") as lp:
                    one(lp.i)
        return regions

    if count is None and total <= STACK_PACK_BYTES:
        slot = b.alloca(ir.ArrayType(ir.IntType(8), total))
        slot.align = 64
        nest(pack_all(b.inttoptr(b.ptrtoint(slot, I64), PTR)))
        return
    malloc = declare(module, "malloc", PTR, [I64])
    free = declare(module, "free", ir.VoidType(), [PTR])
    nbytes = i64(total) if count is None else b.mul(count, i64(total))
    size = b.add(nbytes, i64(64))                            # + 64: room to align the start
    if count is not None:       # a count (from C) whose size would wrap asks for SIZE_MAX: malloc fails
        size = b.select(b.icmp_unsigned(">", count, i64((1 << 47) // total)), i64(-1), size)
    buf = b.call(malloc, [size])
    failed = b.icmp_unsigned("==", b.ptrtoint(buf, I64), i64(0))
    with b.if_else(failed) as (fallback, packed):
        with fallback:
            nest({})
        with packed:
            start = b.and_(b.add(b.ptrtoint(buf, I64), i64(63)), i64(-64))
            nest(pack_all(b.inttoptr(start, PTR)))
            b.call(free, [buf])


def _block_product(b: ir.IRBuilder, v: VecBuilder, dtype: DType, k: int, src: Panels, block: Block,
                   accs: list, prefetch: int = 0) -> list:
    """accs + A[i0:i0+mr, :] B[:, j0:j0+nvec*lanes] for one (A, B) pair: the K loop."""
    lanes, elem = v.lanes, dtype.storage
    a_ptr, b_ptr, lda, ldb, trans_a, trans_b = src.a, src.b, src.lda, src.ldb, src.trans_a, src.trans_b
    i0, j0, mr, nvec, masks = block.i0, block.j0, block.mr, block.nvec, block.masks
    # addresses that do not depend on k are computed here, outside the K loop
    if trans_a:
        a_base = element_ptr(b, a_ptr, dtype, i0)                  # A^T: row k, column i0 + i
    else:
        a_rows = [element_ptr(b, a_ptr, dtype, b.mul(b.add(i0, i64(i)), lda)) for i in range(mr)]
    b_col = element_ptr(b, b_ptr, dtype, j0)

    def b_vector(kk: ir.Value, col: ir.Value, mask) -> ir.Value:
        # B^T: element j of the vector is B[col + j, kk], ldb apart
        rows = b.add(v.splat(col), v.iota(I64))
        index = b.add(b.mul(rows, v.splat(ldb)), v.splat(kk))
        return v.gather(b_ptr, index, dtype, mask)

    def k_step(kk: ir.Value, accs: list) -> list:
        """One rank-1 update of the block: accs + A[:, kk] B[kk, :]."""
        if trans_b:
            bvecs = [b_vector(kk, b.add(j0, i64(u * lanes)), masks[u]) for u in range(nvec)]
        else:
            b_row = element_ptr(b, b_col, dtype, b.mul(kk, ldb))
            bvecs = [v.load(element_ptr(b, b_row, dtype, i64(u * lanes)), dtype, masks[u])
                     for u in range(nvec)]
            if prefetch:            # one per cache line of the strip's row
                ahead = element_ptr(b, b_row, dtype, b.mul(i64(prefetch), ldb))
                for off in range(0, nvec * lanes * dtype.itemsize, LINE):
                    v.prefetch(element_ptr(b, ahead, dtype, i64(off // dtype.itemsize)))
        if trans_a:
            a_row_k = element_ptr(b, a_base, dtype, b.mul(kk, lda))
        out = []
        for i in range(mr):
            if trans_a:
                a_at = element_ptr(b, a_row_k, dtype, i64(i))
            else:
                a_at = element_ptr(b, a_rows[i], dtype, kk)
            a_val = v.splat(b.load(a_at, typ=elem))
            out += [v.fma(a_val, bvecs[u], accs[i * nvec + u]) for u in range(nvec)]
        return out

    # K unrolled K_UNROLL times (fewer loop instructions per FMA), then the rest. Not for a
    # one-vector block whose broadcasts are loads of their own: LLVM hoists the second
    # step's MR broadcasts above the first step's FMAs and spills accumulators (AVX2 8 x 1:
    # two of eight in memory; unrolled once, 14 x 1 keeps all in registers).
    unroll = 1 if nvec == 1 and not v.target.fma_memory_broadcast else K_UNROLL
    return fold(b, k, k if k <= FULL_UNROLL_K else unroll, accs, k_step, name="k")

