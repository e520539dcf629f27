"""What a GEMM or BRGEMM is, as data, for every backend's emitter: the dtype tables,
B's stored shape, the operands, and LIBXSMM-style records for the batch and for
the pieces a CPU block product works on.

An emitter takes the descriptor (a GemmDesc or BrgemmDesc: its fields m, n, k,
dtype, trans_a, trans_b, beta, lda, ldb, ldc, out_dtype, b_vnni, epilogue, read by
name) and a Batch; a GEMM is the batch "none".
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from ..jit.types import DType
from .epilogue import epilogue_operands
from .operands import Operand
from .vnni import GROUP

# A's dtype -> (B's dtype, the C dtypes offered). U8 is LIBXSMM's int8 GEMM: u8 x s8 -> s32.
DTYPES = frozenset({DType.F32, DType.F64, DType.BF16, DType.U8})
B_DTYPE = {DType.F32: DType.F32, DType.F64: DType.F64, DType.BF16: DType.BF16, DType.U8: DType.I8}
OUT_DTYPES = {DType.F32: {DType.F32}, DType.F64: {DType.F64}, DType.BF16: {DType.F32, DType.BF16},
              DType.U8: {DType.I32}}
ACCUMULATOR = {DType.BF16: DType.F32, DType.U8: DType.I32}      # others accumulate in their own type

BATCH_VARIANTS = ("none", "stride", "offset", "address")
# tpp_tensor entries a kernel of each batch variant takes (see gemm.emit_gemm)
ARG_COUNT = {"none": 3, "stride": 4, "offset": 5, "address": 4}


@dataclass(frozen=True)
class Batch:
    """How a kernel finds its blocks A_i, B_i (operands.batch_entry): "none" (one GEMM),
    "stride" (A_i = A_0 + i * stride_a elements, compiled in), "offset" (tables of
    element offsets), "address" (arrays of pointers)."""
    variant: str = "none"
    stride_a: int = 0
    stride_b: int = 0

    @property
    def args(self) -> int:
        """tpp_tensor entries besides the epilogue's inputs."""
        return ARG_COUNT[self.variant]


NO_BATCH = Batch()


def batch_of(d) -> Batch:
    """A descriptor's batch: a BRGEMM's variant and strides, a GEMM's none."""
    return Batch(d.variant, d.stride_a, d.stride_b) if d.kind == "brgemm" else NO_BATCH


def accumulator(d) -> DType:
    """What the products sum in (and the epilogue's activations compute in)."""
    return ACCUMULATOR.get(d.dtype, d.dtype)


def b_shape(n: int, k: int, trans_b: bool, b_vnni: bool, dtype: DType = DType.BF16) -> tuple[int, int]:
    if b_vnni:                              # VNNI groups, see vnni.py
        g = GROUP[B_DTYPE[dtype].itemsize]
        return -(-k // g), g * n
    return (n, k) if trans_b else (k, n)


def operands(d) -> list[Operand]:
    """A, B, the epilogue's inputs, C (one block of each for a BRGEMM); the row strides
    are compiled in."""
    a_shape = (d.k, d.m) if d.trans_a else (d.m, d.k)
    return [Operand("a", d.dtype, *a_shape, ld=d.lda),
            Operand("b", B_DTYPE[d.dtype], *b_shape(d.n, d.k, d.trans_b, d.b_vnni, d.dtype), ld=d.ldb),
            *epilogue_operands(d.epilogue, d.m, d.n, d.out_dtype),
            Operand("c", d.out_dtype, d.m, d.n, output=True, ld=d.ldc)]


# ---- the pieces of a CPU block product (gemm.py, gemm_dot.py) ---------------------------------
@dataclass(frozen=True)
class Panels:
    """The (A_i, B_i) pair a block product reads: pointers, row strides (IR values) and
    whether each is stored transposed (B: or VNNI-packed)."""
    a: ir.Value
    b: ir.Value
    lda: ir.Value
    ldb: ir.Value
    trans_a: bool
    trans_b: bool
    b_vnni: bool = False


@dataclass(frozen=True)
class Block:
    """A register block of C: rows i0 .. i0 + mr, nvec vectors from column j0, each
    vector's load/store mask (None: full)."""
    i0: ir.Value
    j0: ir.Value
    mr: int
    nvec: int
    masks: tuple
