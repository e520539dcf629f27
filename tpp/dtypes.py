"""dtype arguments: strings ("f32", "bf16", "f64") or numpy/ml_dtypes dtype objects."""
from __future__ import annotations

import numpy as np

from .errors import DTypeError
from .jit.types import DType

NUMPY = {d: d.numpy for d in DType}       # the table lives with the types (jit/types.py)
_FROM_NUMPY = {v: k for k, v in NUMPY.items()}
_NAMES = {"f32": DType.F32, "float32": DType.F32, "f64": DType.F64, "float64": DType.F64,
          "bf16": DType.BF16, "bfloat16": DType.BF16, "i8": DType.I8, "int8": DType.I8, "u8": DType.U8,
          "uint8": DType.U8, "i32": DType.I32, "int32": DType.I32}


def parse(dtype, what: str = "dtype") -> DType:
    """DType for a user's dtype argument; raises DTypeError naming `what`."""
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, str) and dtype in _NAMES:
        return _NAMES[dtype]
    try:
        npd = np.dtype(dtype)
    except TypeError:
        npd = None
    if npd is not None and npd in _FROM_NUMPY and npd.isnative:
        return _FROM_NUMPY[npd]
    raise DTypeError(f"tpp: {what}={dtype!r} is not supported; use 'f32', 'bf16' or 'f64'")


def to_numpy(dtype: DType) -> np.dtype:
    return NUMPY[dtype]
