"""Binary elementwise TPPs: arithmetic and compares. Each input may be full,
row-broadcast, column-broadcast or a scalar (the driver handles that); compares
write a bool mask (one byte, 0 or 1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..jit.types import DType

FLOATS = frozenset({DType.F32, DType.BF16, DType.F64})


@dataclass(frozen=True)
class BinaryKind:
    name: str
    reference: Callable[[np.ndarray, np.ndarray], np.ndarray]
    body: Callable                 # (vec, a, b) -> vector
    compare: bool = False          # output is a bool mask


def add(a, b): return a + b
def sub(a, b): return a - b
def mul(a, b): return a * b
def div(a, b): return a / b
def max(a, b): return np.maximum(a, b)   # noqa: A001 - named like the kind
def min(a, b): return np.minimum(a, b)   # noqa: A001
def gt(a, b): return a > b
def ge(a, b): return a >= b
def lt(a, b): return a < b
def le(a, b): return a <= b
def eq(a, b): return a == b
def ne(a, b): return a != b


def _cmp(op: str, ordered: bool = True):
    # IEEE semantics like numpy: every compare with NaN is false except !=.
    if ordered:
        return lambda v, a, b: v.b.fcmp_ordered(op, a, b)
    return lambda v, a, b: v.b.fcmp_unordered(op, a, b)


KINDS = {k.name: k for k in (
    BinaryKind("add", add, lambda v, a, b: v.b.fadd(a, b)),
    BinaryKind("sub", sub, lambda v, a, b: v.b.fsub(a, b)),
    BinaryKind("mul", mul, lambda v, a, b: v.b.fmul(a, b)),
    BinaryKind("div", div, lambda v, a, b: v.b.fdiv(a, b)),
    BinaryKind("max", max, lambda v, a, b: v.maximum(a, b)),
    BinaryKind("min", min, lambda v, a, b: v.minimum(a, b)),
    BinaryKind("gt", gt, _cmp(">"), compare=True),
    BinaryKind("ge", ge, _cmp(">="), compare=True),
    BinaryKind("lt", lt, _cmp("<"), compare=True),
    BinaryKind("le", le, _cmp("<="), compare=True),
    BinaryKind("eq", eq, _cmp("=="), compare=True),
    BinaryKind("ne", ne, _cmp("!=", ordered=False), compare=True),
)}

ALIASES = {"maximum": "max", "minimum": "min", "multiply": "mul", "subtract": "sub", "divide": "div"}
