"""The dropout TPP's descriptor and dispatch, tpp.dropout (kernels/dropout.py has the RNG):
a kernel called as k(x, seed, row0, out=y), seed and row0 Python ints or int64 scalars."""
from __future__ import annotations

from dataclasses import dataclass

from .descriptors import Primitive, check_dims, check_extent
from .dispatch import get_kernel
from .dtypes import parse as parse_dtype
from .jit.types import DType
from .kernel import Kernel
from .kernels import dropout as dropout_k


@dataclass(frozen=True)
class DropoutDesc(Primitive):
    m: int
    n: int
    dtype: DType
    p: float

    kind = "dropout"
    record = dropout_k.FAMILY

    def __post_init__(self) -> None:
        check_dims(self, "dropout", "m", "n")
        self.record.validate(self)
        check_extent("dropout", "x", "m, n", self.m, self.n, self.n, self.dtype.itemsize)


def dropout_desc(m: int, n: int, p: float, dtype="f32") -> DropoutDesc:
    return DropoutDesc(m, n, parse_dtype(dtype, "dtype"), p)


def dropout(m: int, n: int, p: float, dtype="f32", *, target=None) -> Kernel:
    """Dispatch a dropout TPP for m x n tiles: y = x * keep / (1 - p), each element kept
    with probability 1 - p by Philox 4x32-10 on (column // 4, row0 + row)."""
    return get_kernel(dropout_desc(m, n, p, dtype), target)
