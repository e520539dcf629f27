"""What a kernel reads and writes, described without arrays: each operand's
dtype, logical extent and how it is broadcast. The public layer turns this into
argument checks; the emitters into address arithmetic.

Every kernel has the C signature `void kernel(const tpp_tensor *args)` where
`tpp_tensor` is `{void *data; int64_t ld;}` (ld in elements), one entry per
operand in the order inputs then outputs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from llvmlite import ir

from ..jit.loops import I64
from ..jit.types import DType
from ..jit.compiler import RUNNING_VSCALE
from ..jit.vec import PTR, bf16_to_f32, declare

TENSOR = ir.LiteralStructType([PTR, I64])   # tpp_tensor


class Bcast(enum.Enum):
    FULL = "full"      # rows x cols with a row stride
    ROW = "row"        # 1 x cols, reused for every row
    COL = "col"        # rows x 1 (stride ld), reused for every column
    SCALAR = "scalar"  # one element
    VEC = "vec"        # 1-D contiguous vector of `cols` elements (reduction outputs)


@dataclass(frozen=True)
class Operand:
    name: str
    dtype: DType
    rows: int
    cols: int
    bcast: Bcast = Bcast.FULL
    output: bool = False
    ld: int | None = None      # a row stride the kernel is compiled for (None: any, passed at call)


def define_kernel(module: ir.Module, name: str, target=None) -> tuple[ir.Function, ir.IRBuilder]:
    """The kernel function `void name(ptr args)` and a builder at its entry. Code for one
    vector length of a scalable ISA (target.fixed_vscale) first checks that the machine
    runs that length and traps if not: it would compute garbage."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), name)
    fn.args[0].add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if target is not None and target.fixed_vscale:
        with b.if_then(b.icmp_unsigned("!=", b.call(_running_vscale(module), []),
                                       ir.Constant(I64, target.fixed_vscale)), likely=False):
            b.call(declare(module, "llvm.trap", ir.VoidType(), []), [])
    return fn, b


def _running_vscale(module: ir.Module) -> ir.Function:
    """`i64 tpp.running_vscale()`: llvm.vscale in a function that declares no vector length
    (compiler.RUNNING_VSCALE), so it reads the machine's instead of being folded."""
    fn = module.globals.get(RUNNING_VSCALE)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(I64, []), RUNNING_VSCALE)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.ret(b.call(declare(module, "llvm.vscale.i64", I64, []), []))
    return fn


def unpack_args(b: ir.IRBuilder, args: ir.Value, count: int) -> list[tuple[ir.Value, ir.Value]]:
    """(data pointer, ld) of each of the `count` tpp_tensor entries."""
    out = []
    for k in range(count):
        data = b.load(b.gep(args, [ir.Constant(I64, k), ir.Constant(ir.IntType(32), 0)],
                            source_etype=TENSOR), typ=PTR)
        ld = b.load(b.gep(args, [ir.Constant(I64, k), ir.Constant(ir.IntType(32), 1)],
                          source_etype=TENSOR), typ=I64)
        out.append((data, ld))
    return out


def element_ptr(b: ir.IRBuilder, base: ir.Value, dtype: DType, index: ir.Value) -> ir.Value:
    return b.gep(base, [index], source_etype=dtype.storage)


def load_element(b: ir.IRBuilder, ptr: ir.Value, dtype: DType) -> ir.Value:
    """One element, widened to its compute type (bf16 -> f32)."""
    if dtype is DType.BF16:
        return bf16_to_f32(b, b.load(ptr, typ=ir.IntType(16)))
    return b.load(ptr, typ=dtype.storage)


def batch_entry(b: ir.IRBuilder, batch, bi: ir.Value, a_arg: ir.Value, b_arg: ir.Value, a_dtype: DType,
                b_dtype: DType, aux: list) -> tuple[ir.Value, ir.Value]:
    """(A_i, B_i) of BRGEMM batch entry bi, as the caller passed them (batch: a
    gemm_spec.Batch; the three variants' arguments: see gemm.emit_gemm)."""
    if batch.variant == "stride":
        return (element_ptr(b, a_arg, a_dtype, b.mul(bi, ir.Constant(I64, batch.stride_a))),
                element_ptr(b, b_arg, b_dtype, b.mul(bi, ir.Constant(I64, batch.stride_b))))
    if batch.variant == "offset":
        off_a = b.load(element_ptr(b, aux[0][0], DType.I64, bi), typ=I64)
        off_b = b.load(element_ptr(b, aux[1][0], DType.I64, bi), typ=I64)
        return element_ptr(b, a_arg, a_dtype, off_a), element_ptr(b, b_arg, b_dtype, off_b)
    return (b.load(element_ptr(b, a_arg, DType.I64, bi), typ=PTR),
            b.load(element_ptr(b, b_arg, DType.I64, bi), typ=PTR))
