"""tpp.ops.matmul: C = A B (+ a fused epilogue) for any sizes, from GEMM and BRGEMM blocks.

A composite on the layer (tpp.compose): ONE compiled function, run by a team of
threads, in two phases with a barrier between them:
  pack:    B is copied, a strip of rows at a time, into Kb x Nb blocks (row stride Nb),
           each block contiguous: a block's rows are whole vector loads, and a large row
           stride would map them onto the same cache sets (matmul at 2048 ran at 35 GF/s
           unpacked); for bf16 the blocks are VNNI-2 packed, and a B given as B^T is
           transposed strip by strip into them. With a_layout="blocks" A is copied too
           (Mb x Kb blocks).
  compute: over Mb x Nb output blocks (the parallel loops): one BRGEMM (stride variant)
           over the full K chunks and one GEMM for the last chunk, which carries the
           epilogue; the layer compiles each edge block (remainders of M, N and K) for
           its sizes. With a_layout="panels" each thread transposes the Mb x K rows of A
           it is about to use into its own buffer (Kb x Mb panels), once per block row:
           the panels stay in L2 for the whole row of output blocks. An A given as A^T is
           that layout already: its rows are copied into the panels, or read in place
           where their stride does not alias in the cache sets.
This module holds the plan's geometry and the bodies; tpp.compose does the loops, edges,
scratch, barrier, checks, memos and the pool.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from .. import compose
from ..descriptors import BrgemmDesc, GemmDesc, UnaryDesc
from ..dtypes import parse as parse_dtype, to_numpy
from ..errors import DescriptorError, DTypeError, ShapeError
from ..jit.loops import I64, i64
from ..jit.types import DType
from ..kernels import vnni as vnni_k
from ..kernels import epilogue as epilogue_k
from ..kernels.epilogue import epilogue_inputs
from .matmul_plan import MatmulPlan, default_plan
from .packed import PackedB, packed_matmul

WHAT = "tpp.ops.matmul"
DTYPES = (DType.F32, DType.F64, DType.BF16)


def c_dtype(dtype: DType) -> DType:
    """C's dtype for inputs of `dtype`: bf16 products are accumulated and kept in f32."""
    return DType.F32 if dtype is DType.BF16 else dtype


@dataclass(frozen=True)
class MatmulDesc(compose.CompositeDesc):
    m: int
    n: int
    k: int
    dtype: DType
    lda: int
    ldb: int
    ldc: int
    epilogue: tuple[str, ...] = ()
    plan: MatmulPlan = MatmulPlan()
    trans_a: bool = False       # A given as A^T (k x m, row stride lda), e.g. x.T of a C-order x
    trans_b: bool = False       # B given as B^T (n x k, row stride ldb), e.g. w.T
    ldr: int = 0                # the residual's row stride (epilogue "residual")
    # "given": B as stored, packed by the pack phase of every call; "pack": the function
    # only packs B, into the output "packed" (tpp.ops.pack_b); "packed": B is that packed
    # buffer (a PackedB), and calls do no packing of B
    b_mode: str = "given"
    kind = "matmul"

    def __post_init__(self) -> None:
        if self.plan.b_strip % self.b_group:
            raise ValueError(f"tpp.ops.matmul: {self.dtype.value} packs B in groups of {self.b_group} rows, "
                             f"so MatmulPlan.b_strip must be a multiple of {self.b_group}, got {self.plan.b_strip}")

    @property
    def out_dtype(self) -> DType:
        return c_dtype(self.dtype)

    def counts(self) -> tuple[int, int, int]:
        """(M blocks, N blocks, K chunks)."""
        p = self.plan
        return -(-self.m // p.mb), -(-self.n // p.nb), -(-self.k // p.kb)

    @property
    def b_group(self) -> int:
        """Rows of B interleaved into one 32-bit lane in the packed panels: 2 for bf16,
        whose dot kernels take B VNNI packed (packing it in the pack phase instead of in
        every GEMM took 1024^2 from 79 to ~200 GF/s), else 1 (rows as they are)."""
        return vnni_k.GROUP[self.dtype.itemsize] if self.dtype is DType.BF16 else 1

    def b_chunk(self) -> tuple[int, int]:
        """A packed B chunk (Kb rows of one panel): its row length (ld) in elements and
        its size (the distance between chunks)."""
        p, g = self.plan, self.b_group
        return g * p.nb, -(-p.kb // g) * g * p.nb

    def a_chunk(self) -> tuple[int, int]:
        """How the GEMMs read A: its row stride and the distance between K chunks."""
        p = self.plan
        return {"in_place": (self.lda, p.kb * (self.lda if self.trans_a else 1)),
                "blocks": (p.kb, p.mb * p.kb), "rows": (p.kb, p.mb * p.kb), "panels": (p.mb, p.mb * p.kb)}[p.a_layout]

    def packed_size(self) -> int:
        """Elements of B packed (every panel's K chunks)."""
        _, nbs, kcs = self.counts()
        return nbs * kcs * self.b_chunk()[1]

    def _packed_b(self, ctx):
        """Where the packed B panels are: a call buffer, or a tensor (pack / packed modes)."""
        return {"given": lambda: ctx.buffer("packed_b"), "pack": lambda: ctx.tensor("packed").ptr,
                "packed": lambda: ctx.tensor("b").ptr}[self.b_mode]()

    # ---- the composite -------------------------------------------------------------
    def composite(self, target) -> compose.Composite:
        p, dt = self.plan, self.dtype
        mbs, nbs, kcs = self.counts()
        a_shape = (self.k, self.m) if self.trans_a else (self.m, self.k)
        b_shape = (self.n, self.k) if self.trans_b else (self.k, self.n)
        b_tensor = (compose.Tensor("b", dt, (self.packed_size(),)) if self.b_mode == "packed"
                    else compose.Tensor("b", dt, b_shape, (self.ldb, 1)))
        pack = [compose.Loop("strip", self.k, (compose.Loop("nb", self.n, (self._pack_b,), tile=p.nb),),
                             tile=p.b_strip, parallel=True)]
        b_rows = ([compose.Scratch("b_rows", dt, p.b_strip * p.nb, "thread", "a strip of B")]
                  if self.trans_b and self.b_group > 1 else [])
        if self.b_mode == "pack":
            return compose.Composite((b_tensor, compose.Tensor("packed", dt, (self.packed_size(),), output=True)),
                                     tuple(pack), tuple(b_rows))
        tensors = [compose.Tensor("a", dt, a_shape, (self.lda, 1)), b_tensor]
        for step in epilogue_inputs(self.epilogue):
            tensors.append(compose.Tensor("bias", self.out_dtype, (self.n,)) if step == "bias" else
                           compose.Tensor("residual", self.out_dtype, (self.m, self.n), (self.ldr, 1)))
        tensors.append(compose.Tensor("c", self.out_dtype, (self.m, self.n), (self.ldc, 1), output=True))
        scratch = b_rows
        if self.b_mode == "given":
            scratch.append(compose.Scratch("packed_b", dt, self.packed_size(), "call"))
        else:
            pack = []
        if p.a_ahead:
            scratch.append(compose.Scratch("packed_a", dt, mbs * kcs * p.mb * p.kb, "call"))
        if p.a_layout in ("panels", "rows"):
            scratch.append(compose.Scratch("a_panels", dt, p.mb * kcs * p.kb, "thread",
                                           "A each thread copies its block rows into"))
        if p.a_ahead:
            pack.insert(0, compose.Loop("mb", self.m, (compose.Loop("kc", self.k, (self._pack_a,), tile=p.kb,
                                                                    parallel=True),), tile=p.mb, parallel=True))
        tiles = {"mb": (self.m, p.mb), "nb": (self.n, p.nb)}

        def blocks(name: str, body) -> compose.Loop:
            extent, tile = tiles[name]
            return compose.Loop(name, extent, body, tile=tile, parallel=True)
        compute = blocks(p.order[0], (blocks(p.order[1], (self._block,)),))
        body = (*pack, compose.BARRIER, self._forget_panels, compute) if pack else (self._forget_panels, compute)
        return compose.Composite(tuple(tensors), body, tuple(scratch))

    def _unary(self, ctx, kind: str, rows: int, cols: int):
        return ctx.primitive(UnaryDesc(kind, rows, cols, self.dtype, self.dtype))

    def _pack_a(self, ctx) -> None:
        """An Mb x Kb block of A (or its Kb x Mb block of A^T) into its packed block."""
        p = self.plan
        _, _, kcs = self.counts()
        rows, cols = ctx.size["mb"], ctx.size["kc"]
        i0, k0 = ctx.start["mb"], ctx.start["kc"]
        a = ctx.tensor("a")
        src = a.at(k0, i0) if self.trans_a else a.at(i0, k0)
        blk = ctx.b.add(ctx.b.mul(ctx.index["mb"], i64(kcs)), ctx.index["kc"])
        dst = ctx.b.gep(ctx.buffer("packed_a"), [ctx.b.mul(blk, i64(p.mb * p.kb))], source_etype=self.dtype.storage)
        make = self._unary(ctx, "transpose", cols, rows) if self.trans_a else self._unary(ctx, "copy", rows, cols)
        ctx.call(make, [(src, self.lda), (dst, p.kb)])

    def _pack_b(self, ctx) -> None:
        """An Nb-wide piece of a strip of B rows into the Kb x Nb block of its panel (a
        strip never crosses a K chunk and starts a VNNI group)."""
        p, b, st = self.plan, ctx.b, self.dtype.storage
        _, _, kcs = self.counts()
        b_ld, b_chunk = self.b_chunk()
        rows, cols = ctx.size["strip"], ctx.size["nb"]
        r0, j0 = ctx.start["strip"], ctx.start["nb"]
        kc, row_in = b.sdiv(r0, i64(p.kb)), b.srem(r0, i64(p.kb))
        src = ctx.tensor("b").at(j0, r0) if self.trans_b else ctx.tensor("b").at(r0, j0)
        at = b.add(b.add(b.mul(kc, i64(b_chunk)), b.mul(b.sdiv(row_in, i64(self.b_group)), i64(b_ld))),
                   b.mul(ctx.index["nb"], i64(kcs * b_chunk)))
        given, out = (src, self.ldb), (b.gep(self._packed_b(ctx), [at], source_etype=st), b_ld)
        b_pack = "copy" if self.b_group == 1 else "vnni_pack"
        if not self.trans_b:
            ctx.call(self._unary(ctx, b_pack, rows, cols), [given, out])
        elif self.b_group == 1:
            ctx.call(self._unary(ctx, "transpose", cols, rows), [given, out])
        else:       # B^T's cols x rows block, transposed, then VNNI packed
            strip = (ctx.buffer("b_rows"), p.nb)
            ctx.call(self._unary(ctx, "transpose", cols, rows), [given, strip])
            ctx.call(self._unary(ctx, b_pack, rows, cols), [strip, out])

    def _forget_panels(self, ctx) -> None:
        if self.plan.a_layout in ("panels", "rows"):
            ctx.b.store(i64(-1), ctx.var("panel_row", I64))

    def _panels(self, ctx) -> None:
        """This thread's A panels for block row mb, unless they hold it already."""
        p, b = self.plan, ctx.b
        held = ctx.var("panel_row", I64)
        rows, i0 = ctx.size["mb"], ctx.start["mb"]
        a = ctx.tensor("a")

        def chunk(ctx) -> None:
            # rows x cols of A (transposed), or cols x rows of A^T (copied)
            cols, k0 = ctx.size["kc"], ctx.start["kc"]
            # "rows" keeps A's orientation (copy), "panels" transposes it; A^T the other way round
            kind = "copy" if (p.a_layout == "rows") != self.trans_a else "transpose"
            make = self._unary(ctx, kind, rows, cols) if not self.trans_a else self._unary(ctx, kind, cols, rows)
            a_ld, a_chunk = self.a_chunk()
            dst = b.gep(ctx.buffer("a_panels"), [b.mul(ctx.index["kc"], i64(a_chunk))],
                        source_etype=self.dtype.storage)
            ctx.call(make, [(a.at(k0, i0) if self.trans_a else a.at(i0, k0), self.lda), (dst, a_ld)])
        with b.if_then(b.icmp_signed("!=", b.load(held, typ=I64), ctx.index["mb"])):
            ctx.run(compose.Loop("kc", self.k, (chunk,), tile=p.kb))
            b.store(ctx.index["mb"], held)

    def _block(self, ctx) -> None:
        """One output block: BRGEMM over the full K chunks, GEMM (with the epilogue) on the last."""
        p, b, dt, odt = self.plan, ctx.b, self.dtype, self.out_dtype
        _, nbs, kcs = self.counts()
        mr, nr = ctx.size["mb"], ctx.size["nb"]
        i0, j0 = ctx.start["mb"], ctx.start["nb"]
        a_ld, a_chunk = self.a_chunk()
        b_ld, b_chunk = self.b_chunk()
        # the GEMMs read A^T where it is the panels, or the given A^T in place
        trans_a = p.a_layout == "panels" or (p.a_layout == "in_place" and self.trans_a)
        vnni = self.b_group > 1
        k_edge = self.k - (kcs - 1) * p.kb
        if p.a_layout in ("panels", "rows"):
            self._panels(ctx)
            a_blk = ctx.buffer("a_panels")
        elif p.a_layout == "blocks":
            a_blk = b.gep(ctx.buffer("packed_a"), [b.mul(ctx.index["mb"], i64(kcs * p.mb * p.kb))],
                          source_etype=dt.storage)
        else:
            a_blk = ctx.tensor("a").at(i64(0), i0) if self.trans_a else ctx.tensor("a").at(i0, i64(0))
        b_blk = b.gep(self._packed_b(ctx), [b.mul(ctx.index["nb"], i64(kcs * b_chunk))], source_etype=dt.storage)
        c = ctx.tensor("c").arg(i0, j0)
        if kcs > 1:
            br = ctx.primitive(BrgemmDesc(mr, nr, p.kb, dt, "stride", trans_a, beta=0.0, lda=a_ld, ldb=b_ld,
                                          ldc=self.ldc, stride_a=a_chunk, stride_b=b_chunk, b_vnni=vnni))
            ctx.call(br, [(a_blk, a_ld), (b_blk, b_ld), c, (a_blk, i64(kcs - 1))])
        last = ctx.primitive(GemmDesc(mr, nr, k_edge, dt, trans_a, beta=1.0 if kcs > 1 else 0.0, lda=a_ld,
                                      ldb=b_ld, ldc=self.ldc, out_dtype=odt, b_vnni=vnni, epilogue=self.epilogue))
        args = [(b.gep(a_blk, [i64((kcs - 1) * a_chunk)], source_etype=dt.storage), a_ld),
                (b.gep(b_blk, [i64((kcs - 1) * b_chunk)], source_etype=dt.storage), b_ld)]
        for step in epilogue_inputs(self.epilogue):
            args.append((ctx.tensor("bias").at(j0), self.n) if step == "bias" else ctx.tensor("residual").arg(i0, j0))
        ctx.call(last, args + [c])


_memo = compose.Memo()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, *, epilogue=(),
           bias: np.ndarray | None = None, residual: np.ndarray | None = None,
           plan: MatmulPlan | None = None, threads: int | None = None) -> np.ndarray:
    """C = A @ B for 2-D arrays of any sizes (f32, f64; bf16 inputs give f32), with an
    optional fused epilogue, e.g. matmul(a, b, epilogue=("bias", "relu"), bias=b0).
    a and b may be row-major views or transposed ones (x.T, w.T: stored by columns),
    read as they are stored. Runs on TPP_NUM_THREADS threads (or `threads`)."""
    epilogue = _epilogue(epilogue)
    given = {"bias": bias, "residual": residual}
    if isinstance(b, PackedB):
        return packed_matmul(a, b, out, epilogue, given, plan, compose.threads_arg(WHAT, threads))
    threads = compose.threads_arg(WHAT, threads)
    if out is None:             # a new result, for the memo to try (the checked path makes its own)
        fresh = _result_like(a, b)
        if fresh is not None and _memo.call((epilogue, plan, threads),
                                            [a, b, *(given.get(s) for s in epilogue_inputs(epilogue)), fresh], threads):
            return fresh
    # the default plan depends on the thread count
    elif _memo.call((epilogue, plan, threads), [a, b, *(given.get(s) for s in epilogue_inputs(epilogue)), out],
                    threads):
        return out
    return _checked(a, b, out, epilogue, given, plan, threads)


def _result_like(a, b) -> np.ndarray | None:
    """C for a @ b where both are non-empty 2-D arrays of a supported dtype, else None."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray or a.ndim != 2 or b.ndim != 2 or not a.size:
        return None
    dt = _result_dtype(a.dtype)
    return None if dt is None else np.empty((a.shape[0], b.shape[1]), dt)


@functools.lru_cache(maxsize=16)
def _result_dtype(dtype: np.dtype) -> np.dtype | None:
    try:
        dt = parse_dtype(dtype, "a.dtype")
    except Exception:           # the checked path names the error
        return None
    return to_numpy(c_dtype(dt)) if dt in DTYPES else None


MATMUL_INPUTS = ("bias", "residual")        # the epilogue inputs matmul takes (bias=, residual=)


@functools.lru_cache(maxsize=256)
def _known_epilogue(steps: tuple) -> tuple[str, ...]:
    known = MATMUL_INPUTS + epilogue_k.activation_kinds()
    for step in steps:
        if not isinstance(step, str) or step not in known:
            raise DescriptorError(f"{WHAT}: epilogue step {step!r} is not one of: {', '.join(known)}")
    for step in MATMUL_INPUTS:
        if steps.count(step) > 1:
            raise DescriptorError(f"{WHAT}: the epilogue adds {step!r} more than once: {steps!r}")
    return steps


def _epilogue(epilogue) -> tuple[str, ...]:
    """The epilogue as a tuple of known steps (a step name alone is a one-step epilogue)."""
    if isinstance(epilogue, str):
        epilogue = (epilogue,)
    if not isinstance(epilogue, (tuple, list)):
        raise DescriptorError(f"{WHAT}: epilogue must be a tuple of step names, got {epilogue!r}")
    try:
        return _known_epilogue(tuple(epilogue))
    except TypeError:           # an unhashable step
        raise DescriptorError(f"{WHAT}: epilogue must be a tuple of step names, got {epilogue!r}") from None


def _checked(a, b, out, epilogue, given, plan, threads, packed: PackedB | None = None) -> np.ndarray:
    """matmul with every check, raising the error that fits; remembers the geometry.
    `packed`: B packed ahead (b is then packed.data)."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        raise TypeError(f"{WHAT}: a and b must be numpy arrays")
    if a.ndim != 2 or (b.ndim != 2 and packed is None):
        raise ShapeError(f"{WHAT}: a and b must be 2-D, got shapes {a.shape} and {b.shape}")
    (m, k), (k2, n) = a.shape, (b.shape if packed is None else packed.shape)
    if k != k2:
        raise ShapeError(f"{WHAT}: inner dimensions differ: a is {a.shape}, b is {(k2, n)}")
    dtype = parse_dtype(a.dtype, "a.dtype")
    if dtype not in DTYPES:
        raise DTypeError(f"{WHAT}: dtype {a.dtype} is not supported (supported: "
                         f"{', '.join(str(to_numpy(d)) for d in DTYPES)}; bf16 gives float32)")
    if packed is not None and packed.dtype is not dtype:
        raise DTypeError(f"{WHAT}: b was packed for {packed.dtype.value}, a is {a.dtype}")
    if min(m, n, k) == 0:
        if packed is not None:
            return _empty(a, np.zeros((k, n), a.dtype), out, epilogue, given, plan, threads, dtype)
        return _empty(a, b, out, epilogue, given, plan, threads, dtype)
    if out is None:
        out = np.empty((m, n), to_numpy(c_dtype(dtype)))
    steps = epilogue_inputs(epilogue)
    extras = [given[step] for step in steps]
    for step, x in zip(steps, extras):
        if x is None:
            raise TypeError(f"{WHAT}: the epilogue's {step!r} step needs the {step}= argument")
    names = ["a", "b", *steps, "out"]
    arrays = [a, b, *extras, out]
    for name, x in zip(names, arrays):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{WHAT}: argument '{name}' must be a numpy array, got {type(x).__name__}")
    trans_a, trans_b = _by_columns(a), packed is None and _by_columns(b)
    stored = [a.T if trans_a else a, b.T if trans_b else b]
    for step, x in zip(steps, extras):
        if step == "bias" and x.shape == (1, n):
            x = x.reshape(n)          # (1, n) or (n,): the same row
        stored.append(x)
    stored.append(out)
    for name, x in zip(names, stored):
        if name != "b" or packed is None:
            compose.check_rows(WHAT, name, x, " or be a transposed view")
    lda, ldb = _row_stride(stored[0]), (_row_stride(stored[1]) if packed is None else n)
    ldr = _row_stride(given["residual"]) if "residual" in steps and given["residual"].ndim == 2 else 0
    chosen = plan or default_plan(dtype, m, n, k, lda, threads, trans_a, trans_b)
    if packed is not None:          # B's panels and chunks are the packing's
        chosen = replace(chosen, nb=packed.nb, kb=packed.kb, b_strip=packed.b_strip)
    desc = MatmulDesc(m, n, k, dtype, lda, ldb, _row_stride(out), epilogue, chosen, trans_a, trans_b, ldr,
                      "given" if packed is None else "packed")
    prog = compose.program(WHAT, desc)
    params = (epilogue, plan, threads) if packed is None else (epilogue, plan, threads, packed.key)
    compose.run_checked(_memo, params, prog, stored, threads, given=arrays)
    return out


def _empty(a, b, out, epilogue, given, plan, threads, dtype: DType) -> np.ndarray:
    """np.matmul's answers where a dimension is 0: an empty C for M or N = 0; for K = 0
    the epilogue of a zero product, which the kernels compute on a 1-deep one."""
    (m, k), n = a.shape, b.shape[1]
    if b.dtype != a.dtype:
        raise DTypeError(f"{WHAT}: argument 'b' must have dtype {a.dtype}, got {b.dtype}")
    if k == 0 and m and n:
        return _checked(np.zeros((m, 1), a.dtype), np.zeros((1, n), b.dtype), out, epilogue, given, plan, threads)
    out_type = to_numpy(c_dtype(dtype))
    if out is None:
        return np.empty((m, n), out_type)
    if not isinstance(out, np.ndarray) or out.shape != (m, n) or out.dtype != out_type:
        raise ShapeError(f"{WHAT}: out must be a ({m}, {n}) {np.dtype(out_type)} array, got "
                         f"{getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}")
    return out


def _by_columns(x: np.ndarray) -> bool:
    """Whether x is stored column by column (x.T is row-major: w.T of a C-order w, or a
    Fortran-order array): then matmul reads x.T, transposed. Rows of one element are
    row-major whatever their stride."""
    rows, cols = x.shape
    return (cols > 1 and x.strides[1] != x.itemsize and x.strides[1] > 0
            and (rows == 1 or x.strides[0] == x.itemsize))


def _row_stride(x: np.ndarray) -> int:
    """Row stride in elements (a single row's is its width)."""
    return x.strides[0] // x.itemsize if x.ndim == 2 and x.shape[0] > 1 else x.shape[-1]
