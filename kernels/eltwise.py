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

from ..jit import host
from ..jit.loops import I64, Loop, i64
from ..jit.targets import Target
from ..jit.vec import VecBuilder
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


# Streaming (non-temporal) stores once the tile's operands crowd the last-level cache:
# the output then goes to memory without its read-for-ownership (a third of a unary
# kernel's traffic) and leaves the cache to the inputs. While they fit, ordinary stores
# keep the output cached for whoever reads it next, and a call repeated on the same
# arrays runs at cache speed, which streaming caps at the DRAM's write bandwidth. The
# point moves with the mix: the output weighs half an input here. AVX2 on Zen 4 (32 MB
# L3), GB/s of ordinary vs streaming stores (best of 11, same run) by operand bytes:
# copy 8 MiB 92 / 49, 16 MiB 80 / 54, 20 MiB 65 / 54, 24 MiB 57 / 53, 28 MiB 50 / 53,
# 48 MiB 38 / 46; add 12 MiB 83 / 77, 16 MiB 75 / 76, 20 MiB 62 / 73, 24 MiB 63 / 73,
# 48 MiB 40 / 58. (Streaming every output of 2 MiB or more, one machine's L2, made the
# 1024^2 copy 0.6x numpy's memcpy.)
STREAM_SHARE = 0.5


def streams(target: Target, inputs: Sequence[Operand], outputs: Sequence[Operand], m: int, n: int) -> bool:
    """Whether the tile's full-size inputs plus half its outputs take more than
    STREAM_SHARE of the last-level cache."""
    llc = host.last_level() if target.runs_on_host else host.DEFAULT_LAST_LEVEL

    def size(ops: Sequence[Operand]) -> int:
        return sum(m * n * op.dtype.itemsize for op in ops if op.bcast is Bcast.FULL)
    return size(inputs) + size(outputs) / 2 > STREAM_SHARE * llc.size


def emit_eltwise(module: ir.Module, name: str, target: Target, m: int, n: int,
                 inputs: Sequence[Operand], outputs: Sequence[Operand], body: Body) -> ir.Function:
    """The vector-CPU kernel (simt.emit_eltwise is the GPUs'; the records pick one)."""
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
    stream = (len(outputs) == 1 and streams(target, inputs, outputs, m, n)
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
