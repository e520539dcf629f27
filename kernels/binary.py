"""Binary elementwise TPPs: arithmetic and compares. Each input may be full,
row-broadcast, column-broadcast or a scalar (the driver handles that); compares
write a bool mask (one byte, 0 or 1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import DescriptorError
from ..jit.types import DType
from . import fields, simt
from .eltwise import emit_eltwise
from .family import Family, Lowering, elements
from .operands import Bcast, Operand

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


# ---- the family record -------------------------------------------------------------
INPUT_MODES = (Bcast.FULL, Bcast.ROW, Bcast.COL, Bcast.SCALAR)
# an input's extent by its broadcast mode: (rows of m, cols of n)
_SHAPE = {Bcast.FULL: (True, True), Bcast.ROW: (False, True), Bcast.COL: (True, False),
          Bcast.SCALAR: (False, False)}


def out_dtype(d) -> DType:
    return DType.BOOL if KINDS[d.kind].compare else d.dtype


def _validate(d) -> None:
    fields.dtype_check(d.kind, d.dtype, FLOATS)
    for mode in (d.bcast_a, d.bcast_b):
        if mode not in INPUT_MODES:
            raise DescriptorError(f"tpp {d.kind}: broadcast {mode!r} is not an input mode")


def _shape(d, mode: Bcast) -> tuple[int, int]:
    rows, cols = _SHAPE[mode]
    return (d.m if rows else 1), (d.n if cols else 1)


def _operands(d) -> list[Operand]:
    return [Operand("a", d.dtype, *_shape(d, d.bcast_a), d.bcast_a),
            Operand("b", d.dtype, *_shape(d, d.bcast_b), d.bcast_b),
            Operand("out", out_dtype(d), d.m, d.n, output=True)]


def _reference(d, a, b):
    ra = np.asarray(a, dtype=np.float64).reshape(_shape(d, d.bcast_a))
    rb = np.asarray(b, dtype=np.float64).reshape(_shape(d, d.bcast_b))
    return np.broadcast_to(KINDS[d.kind].reference(ra, rb), (d.m, d.n))


def _lowering(driver) -> Lowering:
    def emit(module, name, target, d):
        ops, body = _operands(d), KINDS[d.kind].body
        return driver(module, name, target, d.m, d.n, ops[:2], ops[2:], lambda v, xs: [body(v, xs[0], xs[1])])
    return Lowering(emit, threads=elements if driver is simt.emit_eltwise else None)


FAMILY = Family("binary", "eltwise", tuple(KINDS), _validate, _operands, _reference,
                {"simd": _lowering(emit_eltwise), "simt": _lowering(simt.emit_eltwise)}, elementwise=True)
