"""Reduction TPPs: sum, max, min and sum of squares of an M x N tile, over each
row's columns (axis=1, M results) or over each column's rows (axis=0, N
results). max/min can also return the index of the first extreme element, as
numpy's argmax/argmin do (a NaN counts as the extreme, like numpy).

Accumulation is in the compute type (f32 for bf16 inputs) in vector lanes:
several independent accumulators. On vector CPUs a sum is cut into blocks of 16
additions per accumulator whose sums are combined pairwise (pairwise.py), along a
row and down a column alike, so its error grows like numpy's (log n); 1M f32 terms
are summed to within about an ulp. A GPU thread sums its row or column in two levels
of ~sqrt(n) additions each, in registers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from llvmlite import ir

from .errors import DescriptorError
from ..jit.loops import I64, Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import VecBuilder, f32_to_bf16
from . import fields, simt
from .eltwise import compute_lanes, unroll_for
from .family import Family, Lowering, elements
from .operands import Bcast, Operand, define_kernel, element_ptr, unpack_args
from .pairwise import pairwise
from .unary import ARITH


@dataclass(frozen=True)
class ReduceKind:
    name: str
    reference: Callable[[np.ndarray, int], np.ndarray]
    identity: float
    combine: str              # the horizontal reduction (llvm.vector.reduce.<combine>)
    update: Callable          # (vec, acc, x) -> acc with x taken in
    merge: Callable           # (vec, acc, acc) -> one accumulator of both
    arg_reference: Callable | None = None   # numpy argmax/argmin where an index is offered
    compare: str = ""         # "take the new element" predicate for arg reductions


def reduce_sum(x, axis): return x.sum(axis=axis)
def reduce_sumsq(x, axis): return (x * x).sum(axis=axis)
def reduce_max(x, axis): return x.max(axis=axis)
def reduce_min(x, axis): return x.min(axis=axis)


def _add(v, a, b): return v.b.fadd(a, b)
def _max(v, a, b): return v.maximum(a, b)
def _min(v, a, b): return v.minimum(a, b)


KINDS = {k.name: k for k in (
    ReduceKind("reduce_sum", reduce_sum, 0.0, "fadd", _add, _add),
    ReduceKind("reduce_sumsq", reduce_sumsq, 0.0, "fadd", lambda v, acc, x: v.fma(x, x, acc), _add),
    ReduceKind("reduce_max", reduce_max, -math.inf, "fmaximum", _max, _max, np.argmax, ">"),
    ReduceKind("reduce_min", reduce_min, math.inf, "fminimum", _min, _min, np.argmin, "<"),
)}


def operands(d) -> list[Operand]:
    """x, then one result per row (axis=1) or per column (axis=0), then their indices."""
    length = d.m if d.axis == 1 else d.n
    ops = [Operand("x", d.dtype, d.m, d.n), Operand("out", d.dtype, 1, length, Bcast.VEC, output=True)]
    if d.argidx:
        ops.append(Operand("idx", DType.I64, 1, length, Bcast.VEC, output=True))
    return ops


class _Acc:
    """One accumulator (value vector, and index vector for arg reductions)."""

    def __init__(self, v: VecBuilder, kind: ReduceKind, elem: ir.Type, argidx: bool):
        self.v, self.kind, self.elem, self.argidx = v, kind, elem, argidx

    def init(self) -> list[ir.Value]:
        vals = [self.v.const(self.kind.identity, self.elem)]
        if self.argidx:
            vals.append(self.v.const(0, I64))
        return vals

    def update(self, state: list[ir.Value], x: ir.Value, index: ir.Value | None) -> list[ir.Value]:
        v, b = self.v, self.v.b
        acc = state[0]
        if not self.argidx:
            return [self.kind.update(v, acc, x)]
        # strictly better, or the first NaN: numpy's argmax/argmin keep the first.
        take = b.or_(b.fcmp_ordered(self.kind.compare, x, acc),
                     b.and_(b.fcmp_unordered("uno", x, x), b.fcmp_ordered("ord", acc, acc)))
        return [b.select(take, x, acc), b.select(take, index, state[1])]

    def merge(self, a: list[ir.Value], b_: list[ir.Value]) -> list[ir.Value]:
        """Combine two partial accumulators (plain reductions only)."""
        return [self.kind.merge(self.v, a[0], b_[0])]

    def horizontal(self, state: list[ir.Value]) -> list[ir.Value]:
        v, b = self.v, self.v.b
        value = v.reduce(self.kind.combine, state[0])
        if not self.argidx:
            return [value]
        vals, idx = state
        hit = b.or_(b.fcmp_ordered("==", vals, v.splat(value)),
                    b.and_(b.fcmp_unordered("uno", vals, vals),
                           v.splat(b.fcmp_unordered("uno", value, value))))
        masked = b.select(hit, idx, v.const(2 ** 62, I64))
        return [value, v.reduce("umin", masked)]


def _masked_in(v: VecBuilder, acc: _Acc, x: ir.Value, mask: ir.Value) -> ir.Value:
    return v.b.select(mask, x, v.const(acc.kind.identity, acc.elem))


# Additions into one accumulator per block of a sum: the blocks' sums are then combined
# pairwise (pairwise.py), so the error grows like numpy's, ~(16 + log2 n) eps at worst.
SEQUENTIAL = 16


def emit_simd(module: ir.Module, name: str, target: Target, d) -> ir.Function:
    """Vector CPUs: U accumulators of one register each, along the rows or down the
    columns; sums are blocked and their blocks combined pairwise."""
    rk, m, n, dtype, axis, argidx = KINDS[d.kind], d.m, d.n, d.dtype, d.axis, d.argidx
    ops = operands(d)
    fn, b = define_kernel(module, name, target)
    lanes = compute_lanes(target, ops[:2])
    v = VecBuilder(b, lanes, target)
    elem = dtype.compute.storage
    acc = _Acc(v, rk, elem, argidx)
    (x, ldx), (out, _), *rest = unpack_args(b, fn.args[0], len(ops))
    idx_out = rest[0][0] if argidx else None
    unroll = 1 if argidx else unroll_for(target)
    sums = rk.combine == "fadd"
    width = len(acc.init())

    def store(j, state, mask=None):
        v.store(state[0], element_ptr(b, out, dtype, j), dtype, mask)
        if argidx:
            v.store(state[1], element_ptr(b, idx_out, DType.I64, j), DType.I64, mask)

    def merge(a, c):
        return [s for k in range(0, len(a), width) for s in acc.merge(a[k:k + width], c[k:k + width])]

    if axis == 0:
        def columns(j0, count, mask=None):
            part = _column_part(v, acc, x, ldx, dtype, j0, count, mask, interleave=1 if argidx else
                                max(1, unroll // count))
            if sums:
                state = pairwise(b, m, SEQUENTIAL * max(1, unroll // count), part, merge)
            else:
                state = part(i64(0), m)
            for u in range(count):
                store(b.add(j0, i64(u * lanes)), state[u * width:(u + 1) * width], mask)

        chunk = unroll * lanes
        with Loop(b, 0, n - chunk + 1, chunk, name="colU") as main:
            columns(main.i, unroll)
        with Loop(b, main.i, n - lanes + 1, lanes, name="col1") as single:
            columns(single.i, 1)
        if n % lanes:
            columns(i64(n - n % lanes), 1, v.tail_mask(i64(n % lanes)))
    else:
        with Loop(b, 0, m, name="rows") as rows:
            part = _row_part(v, acc, element_ptr(b, x, dtype, b.mul(rows.i, ldx)), dtype, unroll)
            state = pairwise(b, n, SEQUENTIAL * unroll * lanes, part, merge) if sums else part(i64(0), n)
            result = acc.horizontal(state)
            value = result[0]
            if dtype is DType.BF16:
                value = f32_to_bf16(b, value)
            b.store(value, element_ptr(b, out, dtype, rows.i))
            if argidx:
                b.store(result[1], element_ptr(b, idx_out, DType.I64, rows.i))
    b.ret_void()
    return fn


def _row_part(v: VecBuilder, acc: _Acc, row: ir.Value, dtype: DType, unroll: int):
    """Elements [start, start + count) of a row: U accumulators, folded into one."""
    b, lanes = v.b, v.lanes
    width = len(acc.init())

    def part(start: ir.Value, count: int) -> list[ir.Value]:
        base = element_ptr(b, row, dtype, start)

        def index(j):
            return b.add(v.splat(b.add(start, j)), v.iota(I64))

        chunk = unroll * lanes
        init = [s for _ in range(unroll) for s in acc.init()]
        with Loop(b, 0, count - chunk + 1, chunk, carry=init, name="vecU") as main:
            nxt = []
            for u in range(unroll):
                j = b.add(main.i, i64(u * lanes))
                val = v.load(element_ptr(b, base, dtype, j), dtype)
                nxt += acc.update(main.vars[u * width:(u + 1) * width], val, index(j))
            main.next(*nxt)
        state = main.vars[:width]
        for u in range(1, unroll):     # fold the U accumulators (sum/max/min: order-free)
            state = acc.merge(state, main.vars[u * width:(u + 1) * width])
        if count % chunk >= lanes:
            with Loop(b, main.i, count - lanes + 1, lanes, carry=state, name="vec1") as single:
                val = v.load(element_ptr(b, base, dtype, single.i), dtype)
                single.next(*acc.update(single.vars, val, index(single.i)))
            state = single.vars
        if count % lanes:
            j = i64(count - count % lanes)
            mask = v.tail_mask(i64(count % lanes))
            val = _masked_in(v, acc, v.load(element_ptr(b, base, dtype, j), dtype, mask), mask)
            state = acc.update(state, val, index(j))
        return state
    return part


def _column_part(v: VecBuilder, acc: _Acc, x: ir.Value, ldx: ir.Value, dtype: DType, j0: ir.Value,
                 count: int, mask: ir.Value | None, interleave: int):
    """Rows [start, start + rows) of `count` adjacent column vectors from column j0: each
    accumulated down the rows, `interleave` rows at a time into separate accumulators
    (independent additions for a narrow group), merged at the end."""
    b, lanes = v.b, v.lanes
    width = len(acc.init())

    def add_row(r, state):
        row = element_ptr(b, x, dtype, b.mul(r, ldx))
        nxt = []
        for u in range(count):
            val = v.load(element_ptr(b, row, dtype, b.add(j0, i64(u * lanes))), dtype, mask)
            if mask is not None:
                val = _masked_in(v, acc, val, mask)
            nxt += acc.update(state[u * width:(u + 1) * width], val, v.splat(r))
        return nxt

    def part(start: ir.Value, rows: int) -> list[ir.Value]:
        size = count * width
        init = [s for _ in range(interleave * count) for s in acc.init()]
        with Loop(b, 0, rows - interleave + 1, interleave, carry=init, name="rows") as lp:
            nxt = []
            for k in range(interleave):
                nxt += add_row(b.add(start, b.add(lp.i, i64(k))), lp.vars[k * size:(k + 1) * size])
            lp.next(*nxt)
        state = lp.vars[:size]
        for k in range(1, interleave):
            other = lp.vars[k * size:(k + 1) * size]
            state = [s for u in range(count)
                     for s in acc.merge(state[u * width:(u + 1) * width], other[u * width:(u + 1) * width])]
        for r in range(rows - rows % interleave, rows):
            state = add_row(b.add(start, i64(r)), state)
        return state
    return part


def emit_simt(module: ir.Module, name: str, target: Target, d) -> ir.Function:
    """GPUs: one thread per result, walking its row (axis=1) or column (axis=0; the
    threads of a warp then read adjacent columns), over a grid-stride loop; sums in
    blocks of ~sqrt(length) elements."""
    m, n, dtype, axis, argidx = d.m, d.n, d.dtype, d.axis, d.argidx
    ops = operands(d)
    fn, b, pairs = simt.define_simt_kernel(module, name, len(ops))
    v = VecBuilder(b, 1, target)
    acc = _Acc(v, KINDS[d.kind], dtype.compute.storage, argidx)
    (x, ldx), (out, _) = pairs[:2]
    first, step = simt.thread_index(module, b)
    results, length = (m, n) if axis == 1 else (n, m)
    with Loop(b, first, i64(results), step, name="result") as res:
        def walk(start: ir.Value, count: int) -> list[ir.Value]:
            """Elements [start, start + count) of the thread's row or column, from fresh."""
            with Loop(b, 0, i64(count), carry=acc.init(), name="walk") as w:
                k = b.add(start, w.i)
                at = b.add(b.mul(res.i, ldx), k) if axis == 1 else b.add(b.mul(k, ldx), res.i)
                w.next(*acc.update(list(w.vars), v.load(element_ptr(b, x, dtype, at), dtype), v.splat(k)))
            return list(w.vars)

        if KINDS[d.kind].combine == "fadd" and length >= 4 * SEQUENTIAL:
            # Two levels of ~sqrt(length) additions each (error ~2 sqrt(n) eps instead of n
            # eps), in registers: a thread's stack would be local memory.
            block = max(SEQUENTIAL, math.isqrt(length))
            blocks = length // block
            with Loop(b, 0, i64(blocks), carry=acc.init(), name="blocks") as outer:
                outer.next(*acc.merge(list(outer.vars), walk(b.mul(outer.i, i64(block)), block)))
            state = list(outer.vars)
            if length % block:
                state = acc.merge(state, walk(i64(blocks * block), length % block))
        else:
            state = walk(i64(0), length)
        state = acc.horizontal(state)
        value = state[0]
        if dtype is DType.BF16:
            value = f32_to_bf16(b, value)
        b.store(value, element_ptr(b, out, dtype, res.i))
        if argidx:
            b.store(state[1], element_ptr(b, pairs[2][0], DType.I64, res.i))
    b.ret_void()
    return fn


# ---- the family record -------------------------------------------------------------
def _validate(d) -> None:
    fields.dtype_check(d.kind, d.dtype, ARITH)
    axis = None if d.axis is None else fields.integer(d.kind, "axis", d.axis)
    if axis not in (0, 1):
        raise DescriptorError(f"tpp {d.kind}: axis must be 0 (over rows) or 1 (over columns), got {d.axis!r}")
    fields.put(d, "axis", axis)
    if d.argidx and KINDS[d.kind].arg_reference is None:
        raise DescriptorError(f"tpp {d.kind}: argidx is only offered by reduce_max and reduce_min")
    if d.out_dtype != d.dtype:
        fields.refuse_cast(d)
    if d.alpha is not None:
        fields.refuse_alpha(d)


def _reference(d, x):
    """float64 values (and int64 indices with argidx) of the numpy reference."""
    x = np.asarray(x, dtype=np.float64)
    rk = KINDS[d.kind]
    values = rk.reference(x, d.axis)
    return (values, rk.arg_reference(x, axis=d.axis)) if d.argidx else values


FAMILY = Family("reduce", "reduce", tuple(KINDS), _validate, operands, _reference,
                {"simd": Lowering(emit_simd), "simt": Lowering(emit_simt, threads=elements)})
