"""Equation TPPs: a small expression tree over the catalog's unary, binary and
row-reduction primitives, compiled into ONE kernel that walks the tile a row at a
time (LIBXSMM's matrix equations). Softmax, layer norm and their kin are such
trees: the row is read from memory once and stays in L1 for the passes the
reductions need, and the intermediates live in registers.

The trees' format, checks and float64 evaluation are in kernels/equation_tree.py; this
module holds the family record and the code.

Per row a node is either a row of values (it depends on a full or row-broadcast
input) or one value (constants, column and scalar inputs, reductions, and what is
computed from those alone). The root gives an M x N output, or M values (one per
row: a 1-D output) where it is one value per row.

Code per row: one pass over the row for each reduction (in dependency order: a
reduction may use earlier ones, like the variance uses the mean), with several
vector accumulators, then the pass that evaluates the root and stores it. A
reduction's operand that a later pass uses again (softmax's exp(x - max)) is kept
in a row buffer on the stack during its pass (rows up to STASH_BYTES) instead of
being computed twice. Within one vector step each distinct subtree is computed
once.

An ("outputs", rounding, t1, ...) root (equation_tree.py) stores several outputs in one
kernel. Where the last reduction's operand is its one M x N output (flash attention's
P = exp2(s - max) beside rowsum(P)), that output is stored during the reduction's pass
and needs no pass or row buffer of its own; without row buffers the passes then run
pass-major (all rows' row max, then all rows' exp and sums), so that no pass waits on
the reduction chain of the row before it.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..jit.loops import I64, Loop, i64
from ..jit.targets import Target
from ..jit.types import DType
from ..jit.vec import PTR, VecBuilder, f32_to_bf16
from . import binary as binary_k
from . import fields
from . import unary as unary_k
from .eltwise import compute_lanes, unroll_for
from .errors import DescriptorError, DTypeError
from .equation_tree import (BINARY, FLOATS, INPUT_MODES, MAX_NODES, REDUCE, UNARY, check_tree,  # noqa: F401
                            compute_dtype, evaluate, outputs, passes, reads, rounding, stashed, varies, walk)
from .family import Family, Lowering
from .operands import Bcast, Operand, define_kernel, element_ptr, load_element, unpack_args

STASH_BYTES = 16384        # a row buffer this size stays in L1 beside the row itself


# ---- the family record -----------------------------------------------------------------
def _validate(d) -> None:
    what = "tpp.equation"
    if not d.inputs:
        raise DescriptorError(f"{what}: an equation needs at least one input")
    for i, (dt, mode) in enumerate(d.inputs):
        fields.dtype_check(f"{what} input {i}", dt, FLOATS)
        if mode not in INPUT_MODES:
            raise DescriptorError(f"{what}: input {i}'s broadcast must be one of full, row, col, scalar, "
                                  f"got {mode!r}")
    fields.dtype_check(f"{what} out_dtype", d.out_dtype, FLOATS)
    check_tree(d.tree, len(d.inputs), what)
    dts = tuple(dt for dt, _ in d.inputs)
    if DType.F64 in (*dts, d.out_dtype) and compute_dtype(dts, d.out_dtype) is not DType.F64:
        raise DTypeError(f"{what}: f64 computes in f64 only with every input and the output f64, got "
                         f"inputs {', '.join(x.value for x in dts)} and out {d.out_dtype.value}")
    if compute_dtype(dts, d.out_dtype) is DType.F64:
        for node in walk(d.tree):
            if node[0] == "unary" and DType.F64 not in unary_k.KINDS[node[1]].dtypes:
                raise DTypeError(f"{what}: {node[1]} has no f64 version (its approximation is f32)")


def _modes(d) -> tuple:
    return tuple(mode for _, mode in d.inputs)


def row_output(d) -> bool:
    """The root is one value per row: the output is M values."""
    return d.tree[0] != "outputs" and not varies(d.tree, _modes(d))


def _multi(d) -> bool:
    return d.tree[0] == "outputs"


def _out_dtypes(d) -> list[DType]:
    """Per output: the descriptor's out_dtype, but one value per row of an outputs root
    is kept in the compute dtype."""
    if not _multi(d):
        return [d.out_dtype]
    cdt = compute_dtype(tuple(dt for dt, _ in d.inputs), d.out_dtype)
    return [d.out_dtype if varies(t, _modes(d)) else cdt for t in outputs(d.tree)]


def _shape(d, mode: Bcast) -> tuple[int, int]:
    return (d.m if mode in (Bcast.FULL, Bcast.COL) else 1), (d.n if mode in (Bcast.FULL, Bcast.ROW) else 1)


def _operands(d) -> list[Operand]:
    ops = [Operand(f"x{i}", dt, *_shape(d, mode), mode) for i, (dt, mode) in enumerate(d.inputs)]
    trees, names = outputs(d.tree), ["out"] if not _multi(d) else [f"out{i}" for i in range(len(d.tree) - 2)]
    for name, t, dt in zip(names, trees, _out_dtypes(d)):
        if varies(t, _modes(d)):
            ops.append(Operand(name, dt, d.m, d.n, output=True))
        else:
            ops.append(Operand(name, dt, 1, d.m, Bcast.VEC, output=True))
    return ops


def _reference(d, *inputs):
    args = [np.asarray(x, dtype=np.float64).reshape(_shape(d, mode)) for x, (_, mode) in zip(inputs, d.inputs)]
    got = evaluate(d.tree, args, d.m, d.n)
    outs = []
    for t, value in zip(outputs(d.tree), got if _multi(d) else (got,)):
        by_row = not varies(t, _modes(d))
        out = np.broadcast_to(value, (d.m, 1 if by_row else d.n))
        outs.append(out[:, 0].copy() if by_row else out)
    return tuple(outs) if _multi(d) else outs[0]


def _through(d, reductions: list):
    """(output index, reduction): the one M x N output of an outputs root when it is the
    operand of the last reduction, stored during that reduction's pass (no pass of its
    own, no row buffer: P and its row sums in one pass)."""
    if not _multi(d) or not reductions:
        return None
    full = [i for i, t in enumerate(outputs(d.tree)) if varies(t, _modes(d))]
    if len(full) == 1 and outputs(d.tree)[full[0]] == reductions[-1][2]:
        return full[0], reductions[-1]
    return None




# ---- code ------------------------------------------------------------------------------
class _Row:
    """What one row's passes share: the builder, the inputs' row bases, the values of
    the reductions done so far (splats) and the stashed subtrees' buffers."""

    def __init__(self, v: VecBuilder, d, elem: ir.Type, bases: list, scalars: dict):
        self.v, self.d, self.elem = v, d, elem
        self.modes = tuple(mode for _, mode in d.inputs)
        self.bases = bases              # per input: its row's first element (full), or its start
        self.scalars = scalars          # node -> splat of a one-per-row value known for this row
        self.stash: dict[tuple, ir.Value] = {}      # node -> row buffer holding it
        self.done: set = set()                      # the reductions whose values are known

    def vector(self, node, j: ir.Value, mask, memo: dict) -> ir.Value:
        """The node's vector at columns [j, j + lanes) (masked lanes: don't care)."""
        hit = memo.get(node)
        if hit is not None:
            return hit
        v, b = self.v, self.v.b
        if node in self.scalars:
            out = self.scalars[node]
        elif node in self.stash:
            out = v.load(element_ptr(b, self.stash[node], self.cdt, j), self.cdt, mask)
        else:
            tag = node[0]
            if tag == "arg":
                dt, mode = self.d.inputs[node[1]]
                out = v.load(element_ptr(b, self.bases[node[1]], dt, j), dt, mask)
            elif tag == "const":
                out = v.const(node[1], self.elem)
            elif tag == "unary":
                spec = unary_k.KINDS[node[1]]
                alpha = node[2] if node[2] is not None else spec.default_alpha
                out = spec.body(v, [self.vector(node[3], j, mask, memo)], unary_k.Params(self.elem, alpha))[0]
            elif tag == "binary" and node[1] == "div" and ("recip", node[3]) in memo:
                # by one value per row: a multiply by its reciprocal, computed once per row
                out = b.fmul(self.vector(node[2], j, mask, memo), memo[("recip", node[3])])
            elif tag == "binary" and ((node[1] in ("add", "sub") and _mul(node[2]))
                                      or (node[1] == "add" and _mul(node[3]))):
                # a * b + c, a * b - c, c + a * b: one FMA (one rounding, one instruction)
                product, other = (node[2], node[3]) if _mul(node[2]) else (node[3], node[2])
                x, y = self.vector(product[2], j, mask, memo), self.vector(product[3], j, mask, memo)
                c = self.vector(other, j, mask, memo)
                out = v.fma(x, y, b.fneg(c) if node[1] == "sub" else c)
            elif tag == "binary":
                out = binary_k.KINDS[node[1]].body(v, self.vector(node[2], j, mask, memo),
                                                   self.vector(node[3], j, mask, memo))
            else:
                raise AssertionError(f"reduction {node!r} used before its pass")
        memo[node] = out
        return out

    def hoisted(self, tree, done: set) -> dict:
        """The values a pass over `tree` needs that are one per row, computed here, before
        the pass's loops (a step's memo starts from them): per-row scalars such as
        rsqrt(var + eps) and the reciprocals of per-row divisors."""
        pre: dict = {}
        for node in reads(tree, done):
            if node in self.scalars or varies(node, self.modes):
                if node[0] == "binary" and node[1] == "div" and not varies(node[3], self.modes):
                    key = ("recip", node[3])
                    if key not in pre:
                        one = self.v.const(1.0, self.elem)
                        pre[key] = self.v.b.fdiv(one, self.vector(node[3], i64(0), None, pre))
                continue
            self.vector(node, i64(0), None, pre)
        return pre

    @property
    def cdt(self) -> DType:
        return compute_dtype(tuple(dt for dt, _ in self.d.inputs), self.d.out_dtype)


def _over_row(v: VecBuilder, n: int, unroll: int, state: dict, step) -> None:
    """step(j, mask, u) over the row: whole groups of `unroll` vectors (u = 0..unroll-1),
    then single vectors (u = 0), then one masked vector. state["accs"] holds values the
    steps update (a reduction's accumulators), carried through the loops."""
    b, lanes = v.b, v.lanes
    group = unroll * lanes
    groups = n // group * group
    singles = (n - groups) // lanes * lanes

    def loop(start: int, stop: int, stride: int, body) -> None:
        with Loop(b, start, stop, stride, carry=list(state["accs"]), name="cols") as lp:
            state["accs"] = list(lp.vars)
            body(lp.i)
            lp.next(*state["accs"])
        state["accs"] = list(lp.vars)
    if groups:
        loop(0, groups, group, lambda i: [step(b.add(i, i64(u * lanes)), None, u) for u in range(unroll)])
    if singles:
        loop(groups, groups + singles, lanes, lambda i: step(i, None, 0))
    if n % lanes:
        step(i64(n - n % lanes), v.tail_mask(i64(n % lanes)), 0)


def emit_simd(module: ir.Module, name: str, target: Target, d) -> ir.Function:
    ops = _operands(d)
    fn, b = define_kernel(module, name, target)
    v = VecBuilder(b, compute_lanes(target, ops), target)
    cdt = compute_dtype(tuple(dt for dt, _ in d.inputs), d.out_dtype)
    elem = cdt.storage
    slots = unpack_args(b, fn.args[0], len(ops))
    unroll = unroll_for(target)
    reductions = passes(d.tree)
    through = _through(d, reductions)
    kept = [x for x in stashed(d.tree, _modes(d), reductions) if through is None or x != through[1][2]]
    trees, out_dts = outputs(d.tree), _out_dtypes(d)
    out_slots = slots[len(d.inputs):]
    native = rounding(d.tree) == "native"

    def store_out(value, ptr, dt, mask) -> None:
        v.store(value, ptr, dt, mask, native=native)
    buffers = {}
    if kept and len(kept) * d.n * cdt.itemsize <= STASH_BYTES:
        with b.goto_entry_block():
            for node in kept:
                slot = b.alloca(ir.ArrayType(elem, d.n), name="stash")
                slot.align = 64
                buffers[node] = b.inttoptr(b.ptrtoint(slot, I64), PTR)

    def setup(row_i):
        bases, scalars = [], {}
        for i, (dt, mode) in enumerate(d.inputs):
            ptr, ld = slots[i]
            bases.append(element_ptr(b, ptr, dt, b.mul(row_i, ld)) if mode is Bcast.FULL else ptr)
            if mode in (Bcast.COL, Bcast.SCALAR):
                at = element_ptr(b, ptr, dt, b.mul(row_i, ld)) if mode is Bcast.COL else ptr
                scalars[("arg", i)] = v.splat(load_element(b, at, dt))
        return _Row(v, d, elem, bases, scalars)

    def reduction_pass(st, row_i, r) -> None:
        scalars, done = st.scalars, st.done
        identity, combine = REDUCE[r[1]]
        # max/min: plain compare-and-select accumulators (one vmaxps each) and one
        # "saw a NaN" flag vector beside them, instead of llvm.maximum's NaN-propagating
        # sequence (six instructions per vector on x86); the flag makes the result NaN
        minmax = r[1] != "sum"
        carry = [v.const(identity, elem) for _ in range(unroll)]
        if minmax:
            carry.append(ir.Constant(v.vty(ir.IntType(1)), [0] * v.lanes))
        stash = buffers.get(r[2])
        state = {"accs": carry}
        pre = st.hoisted(r[2], done)
        if through is not None and r is through[1]:
            k = through[0]
            row_out = element_ptr(b, out_slots[k][0], out_dts[k], b.mul(row_i, out_slots[k][1]))
            sink = lambda x, j, mask, row_out=row_out, dt=out_dts[k]: store_out(  # noqa: E731
                x, element_ptr(b, row_out, dt, j), dt, mask)
        elif stash is not None:
            sink = lambda x, j, mask, stash=stash: v.store(  # noqa: E731
                x, element_ptr(b, stash, cdt, j), cdt, mask)
        else:
            sink = None

        def step(j, mask, u):
            x = st.vector(r[2], j, mask, dict(pre))
            if sink is not None:
                sink(x, j, mask)
            if mask is not None:
                x = b.select(mask, x, v.const(identity, elem))
            if minmax:
                state["accs"][-1] = b.or_(state["accs"][-1], b.fcmp_unordered("uno", x, x))
            state["accs"][u] = _combine(v, r[1], state["accs"][u], x, fast=True)
        _over_row(v, d.n, unroll, state, step)
        total = state["accs"][0]
        for other in state["accs"][1:unroll]:
            total = _combine(v, r[1], total, other, fast=True)
        if minmax:
            value = _fast_reduce(v, r[1], total)
            saw_nan = _any(v, state["accs"][-1])
            value = b.select(saw_nan, ir.Constant(elem, float("nan")), value)
        else:
            value = v.reduce(combine, total)
        scalars[r] = v.splat(value)
        done.add(r)
        if stash is not None:
            st.stash[r[2]] = stash

    def final_pass(st, row_i) -> None:
        pre = st.hoisted(d.tree, st.done)
        full = []
        for k, (t, dt, (out, out_ld)) in enumerate(zip(trees, out_dts, out_slots)):
            if varies(t, st.modes):
                if through is None or k != through[0]:
                    full.append((t, dt, element_ptr(b, out, dt, b.mul(row_i, out_ld))))
                continue
            value = st.vector(t, i64(0), None, pre)
            first = b.extract_element(value, ir.Constant(ir.IntType(32), 0))
            b.store(f32_to_bf16(b, first) if dt is DType.BF16 else first, element_ptr(b, out, dt, row_i))
        if full:
            def store(j, mask, u):
                memo = dict(pre)
                for t, dt, out_row in full:
                    store_out(st.vector(t, j, mask, memo), element_ptr(b, out_row, dt, j), dt, mask)
            _over_row(v, d.n, unroll, {"accs": []}, store)

    if not (_multi(d) and not buffers and len(reductions) > 1):
        with Loop(b, 0, d.m, name="row") as row:
            st = setup(row.i)
            for r in reductions:
                reduction_pass(st, row.i, r)
            final_pass(st, row.i)
    else:
        # an outputs root without row buffers (flash attention's step): pass-major, each
        # reduction but the last over all rows, its values kept in an M-value buffer, then
        # the last with the outputs. Row by row, the exp pass would wait on the row max's
        # reduction chain; across rows the passes are independent streams
        with b.goto_entry_block():
            kept_values = {}
            for r in reductions[:-1]:
                slot = b.alloca(ir.ArrayType(elem, d.m), name="values")
                slot.align = 64
                kept_values[r] = b.inttoptr(b.ptrtoint(slot, I64), PTR)
        for k, r in enumerate(reductions):
            with Loop(b, 0, d.m, name="row") as row:
                st = setup(row.i)
                for known in reductions[:k]:
                    st.scalars[known] = v.splat(load_element(b, element_ptr(b, kept_values[known], cdt, row.i), cdt))
                    st.done.add(known)
                reduction_pass(st, row.i, r)
                if r in kept_values:
                    value = b.extract_element(st.scalars[r], ir.Constant(ir.IntType(32), 0))
                    b.store(value, element_ptr(b, kept_values[r], cdt, row.i))
                else:
                    final_pass(st, row.i)
    b.ret_void()
    return fn


def _mul(node) -> bool:
    return node[0] == "binary" and node[1] == "mul"


def _combine(v: VecBuilder, op: str, a: ir.Value, b: ir.Value, fast: bool = False) -> ir.Value:
    """Two partial reductions as one: NaN-propagating max/min like numpy's, or (fast) a
    compare and select, whose NaN the caller tracks itself."""
    if op == "sum":
        return v.b.fadd(a, b)
    if fast:
        return v.b.select(v.b.fcmp_ordered(">" if op == "max" else "<", a, b), a, b)
    return v.maximum(a, b) if op == "max" else v.minimum(a, b)


def _fast_reduce(v: VecBuilder, op: str, x: ir.Value) -> ir.Value:
    """The lanes' max/min by halving with compare-and-select (no NaN in play)."""
    b, n = v.b, v.lanes
    while n > 1:
        half = n // 2
        lo = b.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half))))
        hi = b.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half, n))))
        x = b.select(b.fcmp_ordered(">" if op == "max" else "<", lo, hi), lo, hi)
        n = half
    return b.extract_element(x, ir.Constant(ir.IntType(32), 0))


def _any(v: VecBuilder, flags: ir.Value) -> ir.Value:
    """Whether any lane of an i1 vector is set (llvm.vector.reduce.or)."""
    from ..jit.vec import declare
    fn = declare(v.module, f"llvm.vector.reduce.or.v{v.lanes}i1", ir.IntType(1), [flags.type])
    return v.b.call(fn, [flags])


FAMILY = Family("equation", "equation", ("equation",), _validate, _operands, _reference,
                {"simd": Lowering(emit_simd)},
                unsupported={"simt": "equations are compiled for vector CPUs only so far"})
