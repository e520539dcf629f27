"""The 2-D elementwise loop driver shared by the unary and binary families.

A body maps input vectors (in compute precision) to output vectors; this module
walks the M x N tile: rows outside, vectors along the row inside (unrolled main
loop, single-vector loop, one masked remainder vector), broadcast operands
hoisted out of the loops they do not vary in. When every full operand is
contiguous (ld == N) the tile is walked as one row of M*N elements, so narrow
tiles still run at vector speed.
"""
from __future__ import annotations

from typing import Callable, Sequence

from llvmlite import ir

from ..jit.loops import I64, Loop, i64
from ..jit.targets import Target
from ..jit.vec import VecBuilder
from . import simt
from .operands import Bcast, Operand, define_kernel, element_ptr, load_element, unpack_args

# body(vec_builder, input vectors) -> output vectors (i1 vectors for BOOL outputs)
Body = Callable[[VecBuilder, list[ir.Value]], list[ir.Value]]


def compute_lanes(target: Target, operands: Sequence[Operand]) -> int:
    """Lanes per vector: one register of the widest compute type involved."""
    widest = max(op.dtype.compute.itemsize for op in operands if op.dtype.is_float) \
        if any(op.dtype.is_float for op in operands) else 4
    return target.lanes(8 * widest)


def unroll_for(target: Target) -> int:
    """Vectors per main-loop iteration: enough independent work to hide latency,
    few enough that every operand's vectors stay in registers."""
    return 4 if target.vector_registers >= 32 else 2


# Outputs of at least 2 MiB (the L2 of one core here) use streaming (non-temporal) stores: the
# tile cannot stay in L2 anyway, and skipping the read-for-ownership of each output
# line saves a third of the memory traffic of a unary kernel.
STREAM_BYTES = 2 << 20


def emit_eltwise(module: ir.Module, name: str, target: Target, m: int, n: int,
                 inputs: Sequence[Operand], outputs: Sequence[Operand], body: Body) -> ir.Function:
    if target.model == "simt":                      # GPUs: one thread per element
        return simt.emit_eltwise(module, name, target, m, n, inputs, outputs, body)
    fn, b = define_kernel(module, name, target)
    operands = list(inputs) + list(outputs)
    lanes = compute_lanes(target, operands)
    v = VecBuilder(b, lanes, target)
    slots = unpack_args(b, fn.args[0], len(operands))
    ins = list(zip(inputs, slots[: len(inputs)]))
    outs = list(zip(outputs, slots[len(inputs):]))

    # Flatten to one long row when the layout allows it (decided at run time from the lds).
    rows, cols = i64(m), i64(n)
    full = [(op, ld) for op, (_, ld) in ins + outs if op.bcast is Bcast.FULL]
    if m > 1 and all(op.bcast in (Bcast.FULL, Bcast.SCALAR) for op in operands):
        contiguous = ir.Constant(ir.IntType(1), 1)
        for _, ld in full:
            contiguous = b.and_(contiguous, b.icmp_signed("==", ld, i64(n)))
        rows = b.select(contiguous, i64(1), i64(m))
        cols = b.select(contiguous, i64(m * n), i64(n))

    scalars = {id(op): v.splat(load_element(b, ptr, op.dtype))
               for op, (ptr, _) in ins if op.bcast is Bcast.SCALAR}

    out_op = outputs[0]
    stream = (len(outputs) == 1 and m * n * out_op.dtype.itemsize >= STREAM_BYTES
              and target.intrinsic("store_fence") is not None)

    with Loop(b, 0, rows, name="row") as row:
        bases, col_splats = [], {}
        for op, (ptr, ld) in ins + outs:
            if op.bcast is Bcast.FULL:
                bases.append(element_ptr(b, ptr, op.dtype, b.mul(row.i, ld)))
            else:
                bases.append(ptr)
            if op.bcast is Bcast.COL:
                elem = element_ptr(b, ptr, op.dtype, b.mul(row.i, ld))
                col_splats[id(op)] = v.splat(load_element(b, elem, op.dtype))

        def step(j: ir.Value, mask: ir.Value | None, streaming: bool = False) -> None:
            vals = []
            for (op, _), base in zip(ins, bases):
                if op.bcast is Bcast.SCALAR:
                    vals.append(scalars[id(op)])
                elif op.bcast is Bcast.COL:
                    vals.append(col_splats[id(op)])
                else:
                    vals.append(v.load(element_ptr(b, base, op.dtype, j), op.dtype, mask))
            results = body(v, vals)
            for (op, _), base, res in zip(outs, bases[len(ins):], results):
                v.store(res, element_ptr(b, base, op.dtype, j), op.dtype, mask, streaming)

        # Peel a masked head so that the output's full-vector stores are aligned: a
        # store split across two cache lines costs ~12% in L2 (numpy's buffers are
        # 16-byte aligned), and streaming stores require it. Short rows skip it.
        unroll = unroll_for(target)
        chunk = unroll * lanes
        start = i64(0)
        if stream or m * n >= 4 * chunk:
            vbytes = i64(lanes * out_op.dtype.itemsize)
            addr = b.ptrtoint(bases[-1], I64)
            head = b.udiv(b.urem(b.sub(vbytes, b.urem(addr, vbytes)), vbytes), i64(out_op.dtype.itemsize))
            long_row = b.icmp_signed(">=", cols, i64(2 * chunk))
            start = head if stream else b.select(long_row, head, i64(0))
            start = b.select(b.icmp_signed("<", cols, start), cols, start)
            with b.if_then(b.icmp_signed(">", start, i64(0))):
                step(i64(0), v.tail_mask(start))
        with Loop(b, start, b.sub(cols, i64(chunk - 1)), chunk, name="vecU") as main:
            for u in range(unroll):
                step(b.add(main.i, i64(u * lanes)), None, stream)
        with Loop(b, main.i, b.sub(cols, i64(lanes - 1)), lanes, name="vec1") as single:
            step(single.i, None, stream)
        with b.if_then(b.icmp_signed("<", single.i, cols)):
            step(single.i, v.tail_mask(b.sub(cols, single.i)))
    if stream:
        v.store_fence()
    b.ret_void()
    return fn
