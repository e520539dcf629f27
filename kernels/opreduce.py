"""Reduce a segment of indexed rows into one row: the row kernel of SpMM and g-SpMM
(LIBXSMM's opreduce_vecs_idx).

    out[0, :] = REDUCE over p in [seg[0], seg[1]) of  OP(x[idx[p], :], e[p])

OP is "copy" (x's row alone) or "mul" (x's row times the scalar e[p]: a CSR value, an
edge weight); REDUCE is sum, max or min. The segment is read at run time (two entries of
a row pointer), so one compiled kernel serves every row of a CSR matrix; idx and e are
the matrix's whole index and value arrays (nnz entries), read at the segment's positions.
An empty segment gives a zero row (DGL's g-SpMM for every reduce).

Safety, without a pass over the data first: the segment is clamped to [0, nnz], and an
index outside [0, extent) (compared unsigned: a negative one is a huge one) is never
dereferenced: row 0 is read in its place (weight zero for mul-sum) and `status` (one
int64) receives 1 + the position. The kernel never writes status otherwise, so a
composite that runs it for many rows passes one status word, zeroed before the call,
and any nonzero value after it names a bad position.

The loop: the row's vectors are cut into chunks that fit in half the vector registers
(f32 n = 256 on AVX-512 is one chunk of 16 zmm accumulators); per chunk, one walk over
the segment with the accumulators carried in registers. Sum walks two positions per
turn into two sets of accumulators (added at the end) when a chunk uses at most a
quarter of the registers: an FMA's latency would otherwise bound a short row (f32 n = 64:
four accumulators, each waiting 4 cycles per position), and prefetches the row AHEAD
positions on (a random row is a DRAM miss; see AHEAD). bf16 x and e are widened to f32,
the sum kept in f32 and rounded once into out.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..jit.loops import I64, Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import I32, PTR, VecBuilder, declare
from . import fields
from .errors import DescriptorError, DTypeError
from .family import Family, Lowering
from .operands import Bcast, Operand, define_kernel, element_ptr, load_element, unpack_args

KINDS = ("sum", "max", "min")
OPS = ("copy", "mul")
DTYPES = frozenset({DType.F32, DType.BF16, DType.F64})
INDEX_DTYPES = frozenset({DType.I32, DType.I64})
# rows prefetched this many positions ahead, into L1: a random row is a DRAM miss, and the
# out-of-order window alone keeps too few in flight (100k x 64 f32 rows, 1.6M uniform
# positions, one Zen 4 core, interleaved: none 47-80 ms, 16 ahead 43-66 ms; into L2 instead
# (prefetcht1/t2): no gain; rows of 256 f32 (1 KB) gain nothing, the hardware streams them)
AHEAD = 16
LOCALITY = 3


def _validate(d) -> None:
    if d.kind not in KINDS:
        raise DescriptorError(f"tpp opreduce: unknown reduce {d.kind!r}; known: {', '.join(KINDS)}")
    if d.op not in OPS:
        raise DescriptorError(f"tpp opreduce: unknown op {d.op!r}; known: {', '.join(OPS)}")
    fields.dtype_check("opreduce", d.dtype, DTYPES)
    if not isinstance(d.index_dtype, DType) or d.index_dtype not in INDEX_DTYPES:
        raise DTypeError(f"tpp opreduce: index_dtype must be i32 or i64, got {d.index_dtype!r}")


def _operands(d) -> list[Operand]:
    """x (extent, n), seg (2,), idx (nnz,), e (nnz,), out (1, n), status (1,)."""
    ops = [Operand("x", d.dtype, d.extent, d.n), Operand("seg", d.index_dtype, 1, 2, Bcast.VEC),
           Operand("idx", d.index_dtype, 1, d.nnz, Bcast.VEC)]
    if d.op == "mul":
        ops.append(Operand("e", d.dtype, 1, d.nnz, Bcast.VEC))
    return ops + [Operand("out", d.dtype, 1, d.n, output=True),
                  Operand("status", DType.I64, 1, 1, Bcast.VEC, output=True)]


def _reference(d, x, seg, idx, *rest):
    """(out, status) in float64."""
    e = rest[0] if d.op == "mul" else None
    x, idx = np.asarray(x, np.float64), np.asarray(idx).astype(np.int64)
    lo, hi = (min(max(int(s), 0), d.nnz) for s in np.asarray(seg).astype(np.int64))
    pos = np.arange(lo, max(lo, hi))
    outside = (idx[pos] < 0) | (idx[pos] >= d.extent)
    status = np.array([1 + pos[outside][-1] if outside.any() else 0], np.int64)
    if not pos.size:
        return np.zeros((1, d.n)), status
    rows = x[np.where(outside, 0, idx[pos])]
    if e is not None:
        rows = rows * np.asarray(e, np.float64)[pos][:, None]
    red = {"sum": np.sum, "max": np.max, "min": np.min}[d.kind]
    return red(rows, axis=0)[None], status


# ---- code -------------------------------------------------------------------------------------
def _clamp(b: ir.IRBuilder, v: ir.Value, hi: int) -> ir.Value:
    v = b.select(b.icmp_signed("<", v, i64(0)), i64(0), v)
    return b.select(b.icmp_signed(">", v, i64(hi)), i64(hi), v)


def emit_simd(module: ir.Module, name: str, target: Target, d) -> ir.Function:
    fn, b = define_kernel(module, name, target)
    args = unpack_args(b, fn.args[0], len(_operands(d)))
    (x, ldx), (seg, _), (idx, _) = args[:3]
    e = args[3][0] if d.op == "mul" else None
    (out, _), (status, _) = args[-2:]
    ity = d.index_dtype.storage

    start = _clamp(b, _index(b, seg, d, i64(0)), d.nnz)
    stop = _clamp(b, _index(b, seg, d, i64(1)), d.nnz)
    stop = b.select(b.icmp_signed("<", stop, start), start, stop)      # stop before start: empty
    compute = d.dtype.compute
    v = VecBuilder(b, target.lanes(8 * compute.itemsize), target)
    lanes = v.lanes
    vectors = -(-d.n // lanes)
    chunk = max(1, min(vectors, target.vector_registers // 2))
    init = {"sum": 0.0, "max": float("-inf"), "min": float("inf")}[d.kind]

    def combine(acc, val):
        if d.kind == "max":
            return v.maximum(acc, val)
        if d.kind == "min":
            return v.minimum(acc, val)
        return b.fadd(acc, val)

    def mask_of(k):
        rest = d.n - k * lanes
        return None if rest >= lanes else v.tail_mask(i64(rest))

    def step(p, accs, first_vec):
        """accs (vectors first_vec onwards) updated with position p's row."""
        j = _index(b, idx, d, p)
        bad = b.icmp_unsigned(">=", j, i64(d.extent))
        with b.if_then(bad, likely=False):
            b.store(b.add(p, i64(1)), status)
        j = b.select(bad, i64(0), j)
        row = element_ptr(b, x, d.dtype, b.mul(j, ldx))
        if first_vec == 0 and AHEAD:
            _prefetch_ahead(b, v, d, x, ldx, idx, p)
        w = None
        if e is not None:
            w = load_element(b, element_ptr(b, e, d.dtype, p), d.dtype)
            if d.kind == "sum":
                w = b.select(bad, ir.Constant(w.type, 0.0), w)
            w = v.splat(w)
        new = []
        for k, acc in enumerate(accs):
            vec = first_vec + k
            val = v.load(element_ptr(b, row, d.dtype, i64(vec * lanes)), d.dtype, mask_of(vec))
            if w is not None and d.kind == "sum":
                new.append(v.fma(val, w, acc))
            else:
                new.append(combine(acc, b.fmul(val, w) if w is not None else val))
        return new

    cty = compute.storage
    for first in range(0, vectors, chunk):
        count = min(chunk, vectors - first)
        zero = v.const(init, cty)
        pairs = d.kind == "sum" and count * 4 <= target.vector_registers
        if pairs:
            length = b.sub(stop, start)
            end2 = b.add(start, b.and_(length, i64(-2)))
            with Loop(b, start, end2, 2, carry=[zero] * (2 * count), name="pair") as lp:
                a0 = step(lp.i, lp.vars[:count], first)
                a1 = step(b.add(lp.i, i64(1)), lp.vars[count:], first)
                lp.next(*a0, *a1)
            accs = [b.fadd(p, q) for p, q in zip(lp.vars[:count], lp.vars[count:])]
            odd = b.icmp_signed("<", end2, stop)
            pre = b.block
            with b.if_then(odd):
                last = step(end2, accs, first)
                inner = b.block
            merged = []
            for a, l in zip(accs, last):
                phi = b.phi(a.type)
                phi.add_incoming(a, pre)
                phi.add_incoming(l, inner)
                merged.append(phi)
            accs = merged
        else:
            with Loop(b, start, stop, 1, carry=[zero] * count, name="seg") as lp:
                lp.next(*step(lp.i, lp.vars, first))
            accs = list(lp.vars)
        if d.kind != "sum":          # an empty segment gives zeros
            empty = b.icmp_signed(">=", start, stop)
            accs = [b.select(empty, v.const(0.0, cty), a) for a in accs]
        for k, acc in enumerate(accs):
            vec = first + k
            v.store(acc, element_ptr(b, out, d.dtype, i64(vec * lanes)), d.dtype, mask_of(vec))
    b.ret_void()
    return fn


def _prefetch_ahead(b: ir.IRBuilder, v: VecBuilder, d, x, ldx, idx, p) -> None:
    """Prefetch the row AHEAD positions on (its index read within idx; a bad one only
    prefetches a wild address, which cannot fault)."""
    ahead = b.add(p, i64(AHEAD))
    ahead = b.select(b.icmp_signed("<", ahead, i64(d.nnz)), ahead, i64(max(d.nnz - 1, 0)))
    row = element_ptr(b, x, d.dtype, b.mul(_index(b, idx, d, ahead), ldx))
    for off in range(0, d.n * d.dtype.itemsize, 64):
        fn = declare(b.module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
        b.call(fn, [b.gep(row, [i64(off)], source_etype=ir.IntType(8)), ir.Constant(I32, 0),
                    ir.Constant(I32, LOCALITY), ir.Constant(I32, 1)])


def _index(b: ir.IRBuilder, base: ir.Value, d, at: ir.Value) -> ir.Value:
    """base[at] of the index dtype, as i64."""
    ity = d.index_dtype.storage
    j = b.load(element_ptr(b, base, d.index_dtype, at), typ=ity)
    return b.sext(j, I64) if ity.width < 64 else j


FAMILY = Family("opreduce", "gather", KINDS, _validate, _operands, _reference, {"simd": Lowering(emit_simd)},
                unsupported={"simt": "segment reductions are written for vector CPUs so far"})
