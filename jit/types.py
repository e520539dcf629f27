"""Element types the primitives compute on, and their LLVM IR types.

llvmlite.ir has no bfloat type; `BFloatType` fills that gap (LLVM's `bfloat`).
"""
from __future__ import annotations

import enum

import ml_dtypes
import numpy as np
from llvmlite import ir
from llvmlite.ir.types import _BaseFloatType


class BFloatType(_BaseFloatType):
    """LLVM's `bfloat` (the top 16 bits of an IEEE f32)."""

    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self) -> str:
        return "bfloat"

    def format_constant(self, value: float) -> str:
        import struct

        bits = struct.unpack("<I", struct.pack("<f", value))[0] >> 16
        return f"0xR{bits:04X}"


BFloatType._create_instance()
BFLOAT = BFloatType()


class DType(enum.Enum):
    """Storage types. `compute` is the type arithmetic happens in (bf16 computes in f32)."""

    F32 = "f32"
    F64 = "f64"
    BF16 = "bf16"
    BOOL = "bool"   # compare masks: one byte, 0 or 1
    I64 = "i64"     # arg indices of reductions
    I32 = "i32"
    I8 = "i8"
    U8 = "u8"

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F64, DType.BF16)

    @property
    def storage(self) -> ir.Type:
        """The IR type one element has in memory."""
        return _STORAGE[self]

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype of an array of this type (bf16: ml_dtypes.bfloat16)."""
        return _NUMPY[self]

    @property
    def compute(self) -> "DType":
        return DType.F32 if self is DType.BF16 else self

    def __repr__(self) -> str:
        return f"DType.{self.name}"


_ITEMSIZE = {DType.F32: 4, DType.F64: 8, DType.BF16: 2, DType.BOOL: 1, DType.I64: 8,
             DType.I32: 4, DType.I8: 1, DType.U8: 1}
_STORAGE = {DType.F32: ir.FloatType(), DType.F64: ir.DoubleType(), DType.BF16: BFLOAT,
            DType.BOOL: ir.IntType(8), DType.I64: ir.IntType(64), DType.I32: ir.IntType(32),
            DType.I8: ir.IntType(8), DType.U8: ir.IntType(8)}
_NUMPY = {DType.F32: np.dtype(np.float32), DType.F64: np.dtype(np.float64),
          DType.BF16: np.dtype(ml_dtypes.bfloat16), DType.BOOL: np.dtype(np.bool_),
          DType.I64: np.dtype(np.int64), DType.I32: np.dtype(np.int32), DType.I8: np.dtype(np.int8),
          DType.U8: np.dtype(np.uint8)}
