"""The elementwise driver for SIMT targets (GPUs): one thread per element.

The kernel is `ptx_kernel void name(ptr data0, i64 ld0, ptr data1, i64 ld1, ...)`,
the operands' (data, ld) pairs in the same order as the CPU kernels' tpp_tensor
entries. Threads walk the M*N elements with a grid stride (any grid size
works; tpp.cuda picks one that fills the GPU). When every full operand is
contiguous (ld == N, decided at run time, the same for all threads) element i
is at offset i; otherwise, and whenever an operand is broadcast along a row or
column, row and column come from dividing by the compile-time N. The bodies
are the CPU catalog's, built on one-lane vectors.
"""
from __future__ import annotations

from typing import Sequence

from llvmlite import ir

from ..jit.loops import I64, Loop, i64
from ..jit.targets import Target
from ..jit.vec import I32, PTR, VecBuilder, declare
from .operands import Bcast, Operand, element_ptr, load_element

SREGS = ("tid.x", "ntid.x", "ctaid.x", "nctaid.x")
# The contiguous, aligned path: LANES elements per load (128 bits of f32), VECTORS loads
# per operand in flight per thread and turn. Scalar loads reached 68-84% of the device
# copy's bandwidth on an H200 (relu / add on 256M f32).
LANES = 4
VECTORS = 2


def define_simt_kernel(module: ir.Module, name: str, count: int) -> tuple[ir.Function, ir.IRBuilder, list]:
    """`ptx_kernel void name(ptr, i64, ...)` for `count` operands; returns the (data, ld)
    argument pairs."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, I64] * count), name)
    fn.calling_convention = "ptx_kernel"
    pairs = [(fn.args[2 * k], fn.args[2 * k + 1]) for k in range(count)]   # no noalias: in place is allowed
    return fn, ir.IRBuilder(fn.append_basic_block("entry")), pairs


SHARED = 3                       # NVPTX address spaces
GLOBAL = 1


def sreg(module: ir.Module, b: ir.IRBuilder, reg: str) -> ir.Value:
    """A special register (tid.x, ctaid.x, ...) as i64."""
    return b.zext(b.call(declare(module, f"llvm.nvvm.read.ptx.sreg.{reg}", I32, []), []), I64)


def thread_index(module: ir.Module, b: ir.IRBuilder) -> tuple[ir.Value, ir.Value]:
    """(global thread index, total threads in the grid) along x, as i64."""
    regs = {reg: sreg(module, b, reg) for reg in SREGS}
    first = b.add(b.mul(regs["ctaid.x"], regs["ntid.x"]), regs["tid.x"])
    return first, b.mul(regs["nctaid.x"], regs["ntid.x"])


def branch_value(b: ir.IRBuilder, cond: ir.Value, then, otherwise) -> ir.Value:
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


def shared_array(module: ir.Module, name: str, elem: ir.Type, count: int) -> ir.GlobalVariable:
    """A block's shared-memory array of `count` elements, 16-byte aligned."""
    g = ir.GlobalVariable(module, ir.ArrayType(elem, count), name, addrspace=SHARED)
    g.linkage = "internal"
    g.initializer = ir.Constant(g.type.pointee, None)
    g.align = 16
    return g


def shared_at(b: ir.IRBuilder, g: ir.GlobalVariable, index: ir.Value) -> ir.Value:
    """Element `index` of a shared array as an opaque shared pointer (llvmlite's bitcast
    keeps the array's typed pointer, which loads and stores check against)."""
    element = b.gep(g, [ir.Constant(I64, 0), index], source_etype=g.value_type)
    return b.inttoptr(b.ptrtoint(element, I64), ir.PointerType(addrspace=SHARED))


def emit_eltwise(module: ir.Module, name: str, target: Target, m: int, n: int,
                 inputs: Sequence[Operand], outputs: Sequence[Operand], body) -> ir.Function:
    operands = list(inputs) + list(outputs)
    fn, b, pairs = define_simt_kernel(module, name, len(operands))
    v = VecBuilder(b, 1, target)
    first, step = thread_index(module, b)
    total = i64(m * n)
    scalar_values = {k: load_element(b, ptr, op.dtype)
                     for k, (op, (ptr, _)) in enumerate(zip(operands, pairs)) if op.bcast is Bcast.SCALAR}

    def element(k: int, op: Operand, offset: ir.Value) -> ir.Value:
        return element_ptr(b, pairs[k][0], op.dtype, offset)

    def apply(vb: VecBuilder, places: list[list], aligned: bool = False) -> None:
        """For each list of operand offsets: load the inputs, then (after every load, so
        that they are all in flight at once) run the body and store the outputs."""
        loaded = []
        for where in places:
            loaded.append([vb.splat(scalar_values[k]) if op.bcast is Bcast.SCALAR
                           else vb.load(element(k, op, where[k]), op.dtype, aligned=aligned)
                           for k, op in enumerate(inputs)])
        for where, vals in zip(places, loaded):
            for j, (op, res) in enumerate(zip(outputs, body(vb, vals))):
                k = len(inputs) + j
                vb.store(res, element(k, op, where[k]), op.dtype, aligned=aligned)

    def run(offsets, start=first, stop=total) -> None:
        """The grid-stride loop over elements [start, stop); offsets(i) gives each
        operand's element offset."""
        with Loop(b, start, stop, step, name="elem") as lp:
            apply(v, [offsets(lp.i)])

    def flat(i: ir.Value) -> list:
        return [i64(0) if op.bcast is Bcast.SCALAR else i for op in operands]

    def run_vectors() -> None:
        """Contiguous and 16-byte aligned: each thread moves VECTORS vectors of LANES
        elements per turn (128-bit loads, several in flight), the rest one by one."""
        vb = VecBuilder(b, LANES, target)
        per_turn = LANES * VECTORS
        groups = i64(m * n // per_turn)
        with Loop(b, first, groups, step, name="vec") as lp:
            base = b.mul(lp.i, i64(per_turn))
            apply(vb, [flat(b.add(base, i64(u * LANES))) for u in range(VECTORS)], aligned=True)
        run(flat, b.add(i64(m * n // per_turn * per_turn), first), total)

    def by_row_col(i: ir.Value) -> list:
        row, col = b.udiv(i, i64(n)), b.urem(i, i64(n))
        at = {Bcast.FULL: lambda ld: b.add(b.mul(row, ld), col), Bcast.ROW: lambda ld: col,
              Bcast.COL: lambda ld: b.mul(row, ld), Bcast.SCALAR: lambda ld: i64(0)}
        return [at[op.bcast](ld) for op, (_, ld) in zip(operands, pairs)]

    if any(op.bcast in (Bcast.ROW, Bcast.COL) for op in operands):
        run(by_row_col)
        b.ret_void()
        return fn
    contiguous = ir.Constant(ir.IntType(1), 1)
    aligned = ir.Constant(ir.IntType(1), 1)
    for op, (ptr, ld) in zip(operands, pairs):
        if op.bcast is Bcast.FULL:
            if m > 1:          # one row is contiguous whatever its ld
                contiguous = b.and_(contiguous, b.icmp_signed("==", ld, i64(n)))
            aligned = b.and_(aligned, b.icmp_unsigned("==", b.and_(b.ptrtoint(ptr, I64), i64(15)), i64(0)))
    with b.if_else(contiguous) as (whole, strided):
        with whole:
            with b.if_else(aligned) as (vectors, scalars_only):
                with vectors:
                    run_vectors()
                with scalars_only:
                    run(flat)
        with strided:
            run(by_row_col)
    b.ret_void()
    return fn
