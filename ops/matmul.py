"""tpp.ops.matmul: C = A B (+ a fused epilogue) for any sizes, from BRGEMM blocks.

Two loop nests, compiled into one module:
  pack:    B is copied, block by block, into Kb x Nb blocks (row stride Nb), each
           block contiguous: a block's rows are whole vector loads, and a large row
           stride would map them onto the same cache sets (matmul at 2048 ran at
           35 GF/s unpacked). A is read in place unless the plan asks to pack it too
           (Mb x Kb blocks).
  compute: over Mb x Nb output blocks (the parallel loop): one BRGEMM (stride
           variant) over the full K chunks and one GEMM for the last chunk, which
           carries the epilogue. Edge blocks (remainders of M, N and K) use kernels
           compiled for their sizes, chosen per block at run time.
The worker pool runs the pack nest, then the compute nest, each split across
TPP_NUM_THREADS threads.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .. import cabi, checks, pool
from ..descriptors import BrgemmDesc, GemmDesc, UnaryDesc
from ..dispatch import current_target, get_functions
from ..dtypes import parse as parse_dtype, to_numpy
from ..errors import ShapeError
from ..jit.loops import i64
from ..jit.types import DType
from ..kernels.epilogue import epilogue_inputs, epilogue_operands
from ..kernels.operands import Operand
from ..loopnest import Loop, Nest, emit_nest, primitive


@dataclass(frozen=True)
class MatmulPlan:
    """Blocking and loop order: tuning changes this, not the code."""
    mb: int = 56          # 4 register tiles of 14 rows (AVX-512 f32)
    nb: int = 32          # one tile of 2 vectors: a packed B block is then one contiguous panel
                          # (two tiles side by side put its rows 256 B apart, on a quarter of
                          # the L1 sets; measured 0.84 vs 0.89-0.90x OpenBLAS at 1024)
    kb: int = 512
    order: tuple[str, str] = ("mb", "nb")     # outer, inner parallel loop
    # Copy A into Mb x Kb blocks too? Reading A in place was 5-6% faster at 1024 and 2048
    # (interleaved runs): its rows are broadcast one element at a time, so their stride
    # costs little, while the copy is a pass over all of A through memory.
    pack_a: bool = False


@dataclass(frozen=True)
class MatmulDesc:
    m: int
    n: int
    k: int
    dtype: DType
    lda: int
    ldb: int
    ldc: int
    epilogue: tuple[str, ...] = ()
    plan: MatmulPlan = MatmulPlan()
    kind = "matmul"

    @property
    def out_dtype(self) -> DType:
        return DType.F32 if self.dtype is DType.BF16 else self.dtype

    def counts(self) -> tuple[int, int, int]:
        """(M blocks, N blocks, K chunks)."""
        p = self.plan
        return -(-self.m // p.mb), -(-self.n // p.nb), -(-self.k // p.kb)

    def edges(self) -> tuple[int, int, int]:
        """Rows, columns and depth of the last block in each dimension."""
        mbs, nbs, kcs = self.counts()
        p = self.plan
        return self.m - (mbs - 1) * p.mb, self.n - (nbs - 1) * p.nb, self.k - (kcs - 1) * p.kb

    def scratch_sizes(self) -> tuple[int, int]:
        """Elements of the packed A and B."""
        mbs, nbs, kcs = self.counts()
        p = self.plan
        return (mbs * kcs * p.mb * p.kb if p.pack_a else 0), nbs * kcs * p.kb * p.nb

    def compute_nest(self) -> Nest:
        mbs, nbs, _ = self.counts()
        extents = {"mb": mbs, "nb": nbs}
        return Nest(tuple(Loop(name, extents[name]) for name in self.plan.order), parallel=2)

    def pack_nest(self) -> Nest:
        mbs, nbs, kcs = self.counts()
        return Nest((Loop("blk", ((mbs if self.plan.pack_a else 0) + nbs) * kcs),), parallel=1)

    def operands(self) -> list[Operand]:
        return [Operand("a", self.dtype, self.m, self.k), Operand("b", self.dtype, self.k, self.n),
                *epilogue_operands(self.epilogue, self.m, self.n, self.out_dtype),
                Operand("c", self.out_dtype, self.m, self.n, output=True)]

    # ---- code --------------------------------------------------------------------
    def emit(self, module, name: str, target) -> None:
        """`name(args, start, end)` computes output blocks, `name_pack(...)` packs;
        args = [a, b, (bias), (residual), c, packed A, packed B]."""
        count = len(self.operands())
        emit_nest(module, name + "_pack", self.pack_nest(), count + 2, self._pack_body(module, name, target))
        emit_nest(module, name, self.compute_nest(), count + 2, self._compute_body(module, name, target))

    def _pack_body(self, module, name, target):
        p, dt = self.plan, self.dtype
        mbs, nbs, kcs = self.counts()
        m_edge, n_edge, k_edge = self.edges()
        copies = {}

        def copy(rows: int, cols: int):
            if (rows, cols) not in copies:
                copies[(rows, cols)] = primitive(module, UnaryDesc("copy", rows, cols, dt, dt), target,
                                                 f"{name}_copy{rows}x{cols}")
            return copies[(rows, cols)]

        def body(ctx) -> None:
            b = ctx.b
            (a, _), (bb, _) = ctx.args[:2]
            ap, bp = ctx.args[-2][0], ctx.args[-1][0]
            blk = ctx.index["blk"]

            def at(ptr, index):
                return b.gep(ptr, [index], source_etype=dt.storage)

            a_blocks = mbs * kcs if p.pack_a else 0
            with b.if_else(b.icmp_signed("<", blk, i64(a_blocks))) as (pack_a, pack_b):
                with pack_a:
                    mb, kc = b.sdiv(blk, i64(kcs)), b.srem(blk, i64(kcs))
                    src = at(a, b.add(b.mul(b.mul(mb, i64(p.mb)), i64(self.lda)), b.mul(kc, i64(p.kb))))
                    dst = at(ap, b.mul(blk, i64(p.mb * p.kb)))
                    _by_edges(b, b.icmp_signed("==", mb, i64(mbs - 1)), b.icmp_signed("==", kc, i64(kcs - 1)),
                         (p.mb, p.kb), (m_edge, k_edge),
                         lambda r, c: ctx.call(copy(r, c), [(src, self.lda), (dst, p.kb)]))
                with pack_b:
                    j = b.sub(blk, i64(a_blocks))
                    nb, kc = b.sdiv(j, i64(kcs)), b.srem(j, i64(kcs))
                    src = at(bb, b.add(b.mul(b.mul(kc, i64(p.kb)), i64(self.ldb)), b.mul(nb, i64(p.nb))))
                    dst = at(bp, b.mul(j, i64(p.kb * p.nb)))
                    _by_edges(b, b.icmp_signed("==", kc, i64(kcs - 1)), b.icmp_signed("==", nb, i64(nbs - 1)),
                         (p.kb, p.nb), (k_edge, n_edge),
                         lambda r, c: ctx.call(copy(r, c), [(src, self.ldb), (dst, p.nb)]))
        return body

    def _compute_body(self, module, name, target):
        p, dt, odt = self.plan, self.dtype, self.out_dtype
        mbs, nbs, kcs = self.counts()
        m_edge, n_edge, k_edge = self.edges()
        # A's row stride and the distance between its K chunks, packed or in place
        a_ld, a_chunk = (p.kb, p.mb * p.kb) if p.pack_a else (self.lda, p.kb)
        kernels = {}
        for mr in {min(p.mb, self.m), m_edge}:
            for nr in {min(p.nb, self.n), n_edge}:
                tag = f"{name}_{mr}x{nr}"
                last = GemmDesc(mr, nr, k_edge, dt, beta=1.0 if kcs > 1 else 0.0, lda=a_ld, ldb=p.nb,
                                ldc=self.ldc, out_dtype=odt, epilogue=self.epilogue)
                br = None
                if kcs > 1:
                    br = primitive(module, BrgemmDesc(mr, nr, p.kb, dt, "stride", beta=0.0, lda=a_ld, ldb=p.nb,
                                                      ldc=self.ldc, stride_a=a_chunk, stride_b=p.kb * p.nb),
                                   target, tag + "_br")
                kernels[(mr, nr)] = (br, primitive(module, last, target, tag + "_last"))
        steps = epilogue_inputs(self.epilogue)

        def body(ctx) -> None:
            b = ctx.b
            extras = ctx.args[2:2 + len(steps)]
            c = ctx.args[2 + len(steps)][0]
            ap, bp = ctx.args[-2][0], ctx.args[-1][0]
            mb, nb = ctx.index["mb"], ctx.index["nb"]
            i0, j0 = b.mul(mb, i64(p.mb)), b.mul(nb, i64(p.nb))

            def at(ptr, dtype, index):
                return b.gep(ptr, [index], source_etype=dtype.storage)

            if p.pack_a:
                a_blk = at(ap, dt, b.mul(mb, i64(kcs * p.mb * p.kb)))
            else:
                a_blk = at(ctx.args[0][0], dt, b.mul(i0, i64(self.lda)))
            b_blk = at(bp, dt, b.mul(nb, i64(kcs * p.kb * p.nb)))
            c_blk = at(c, odt, b.add(b.mul(i0, i64(self.ldc)), j0))

            def run(mr: int, nr: int) -> None:
                br, last = kernels[(mr, nr)]
                if br is not None:
                    ctx.call(br, [(a_blk, a_ld), (b_blk, p.nb), (c_blk, self.ldc), (a_blk, i64(kcs - 1))])
                args = [(at(a_blk, dt, i64((kcs - 1) * a_chunk)), a_ld),
                        (at(b_blk, dt, i64((kcs - 1) * p.kb * p.nb)), p.nb)]
                for step, (ptr, ld) in zip(steps, extras):
                    offset = j0 if step == "bias" else b.add(b.mul(i0, ld), j0)
                    args.append((at(ptr, odt, offset), ld))
                ctx.call(last, args + [(c_blk, self.ldc)])

            _by_edges(b, b.icmp_signed("==", mb, i64(mbs - 1)), b.icmp_signed("==", nb, i64(nbs - 1)),
                      (min(p.mb, self.m), min(p.nb, self.n)), (m_edge, n_edge), run)
        return body


def _by_edges(b, last_row, last_col, full: tuple[int, int], edge: tuple[int, int], call) -> None:
    """call(rows, cols) with the block sizes that match whether this is the last block
    row / column: four branches, each calling code compiled for its sizes."""
    with b.if_else(last_row) as (edge_r, inner_r):
        for flag, rows in ((edge_r, edge[0]), (inner_r, full[0])):
            with flag:
                with b.if_else(last_col) as (edge_c, inner_c):
                    with edge_c:
                        call(rows, edge[1])
                    with inner_c:
                        call(rows, full[1])


def _default_plan(dtype: DType, m: int) -> MatmulPlan:
    target = current_target()
    lanes = target.lanes(32)                             # f32 accumulators (bf16 computes in f32)
    rows = min(16, (target.vector_registers - 3) // 2)   # the GEMM microkernel's MR for 2 vectors
    if dtype is DType.F64:
        lanes //= 2
    # Mb of at most 4 register tiles, the same for every block row: a short last block
    # left the 2 threads' shares unequal (512: 280 vs 232 rows, speed-up 1.44x)
    blocks = -(-m // (4 * rows))
    return MatmulPlan(mb=-(-m // blocks), nb=2 * lanes)


_scratch = threading.local()       # per thread: concurrent calls must not share packed buffers


def _aligned(count: int, dtype: np.dtype, alignment: int = 64) -> np.ndarray:
    """An uninitialised 1-D array whose data starts on an `alignment`-byte boundary: the
    packed blocks' rows are vector loads, and a load split across two cache lines is slower."""
    raw = np.empty(count * dtype.itemsize + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + count * dtype.itemsize].view(dtype)


def _buffers(desc: MatmulDesc) -> tuple[np.ndarray, np.ndarray]:
    cache = getattr(_scratch, "buffers", None)
    if cache is None or cache[0] != desc:
        sa, sb = desc.scratch_sizes()
        np_dtype = to_numpy(desc.dtype)
        cache = (desc, _aligned(sa, np_dtype), _aligned(sb, np_dtype))
        _scratch.buffers = cache
    return cache[1], cache[2]


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, *, epilogue=(),
           bias: np.ndarray | None = None, residual: np.ndarray | None = None,
           plan: MatmulPlan | None = None, threads: int | None = None) -> np.ndarray:
    """C = A @ B for 2-D arrays of any sizes (f32, f64; bf16 inputs give f32), with an
    optional fused epilogue, e.g. matmul(a, b, epilogue=("bias", "relu"), bias=b0).
    Runs on TPP_NUM_THREADS threads (or `threads`)."""
    what = "tpp.ops.matmul"
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        raise TypeError(f"{what}: a and b must be numpy arrays")
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"{what}: a and b must be 2-D, got shapes {a.shape} and {b.shape}")
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2:
        raise ShapeError(f"{what}: inner dimensions differ: a is {a.shape}, b is {b.shape}")
    if min(m, n, k) == 0:
        raise ShapeError(f"{what}: empty operands {a.shape} @ {b.shape}")
    dtype = parse_dtype(a.dtype, "a.dtype")
    epilogue = (epilogue,) if isinstance(epilogue, str) else tuple(epilogue)
    if out is None:
        out = np.empty((m, n), to_numpy(DType.F32 if dtype is DType.BF16 else dtype))
    desc = MatmulDesc(m, n, k, dtype, _row_stride(a), _row_stride(b), _row_stride(out), epilogue,
                      plan or _default_plan(dtype, m))
    given = {"bias": bias, "residual": residual}
    extras = [given[step] for step in epilogue_inputs(epilogue)]
    ops = desc.operands()
    arrays = [checks.as_array(what, op, x, to_numpy(op.dtype)) for op, x in zip(ops, [a, b, *extras, out])]
    checks.check_overlap(what, ops, arrays, False)
    compute, pack = (cabi.ffi.cast(cabi.NEST, f) for f in get_functions(desc, suffixes=("", "_pack")))
    tensors = cabi.tensors([(cabi.data_address(x), _row_stride(x)) for x in arrays + list(_buffers(desc))])
    pool.run(pack, tensors, desc.pack_nest().parallel_extent, threads)
    pool.run(compute, tensors, desc.compute_nest().parallel_extent, threads)
    return out


def _row_stride(x: np.ndarray) -> int:
    """Row stride in elements (a single row's is its width); the checks validate it."""
    return cabi.row_stride(x, x.shape[-1])
