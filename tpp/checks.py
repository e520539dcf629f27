"""Argument checks in Python: the slow path that runs when the native checks of
the fast path refuse a call (or where no fast path exists). It accepts what
the native path does plus conversions (Python numbers for scalar operands,
ndarray subclasses), and otherwise raises an error that names the argument."""
from __future__ import annotations

import numpy as np

from .dtypes import NUMPY
from .jit.types import DType
from .arrayabi import accepted_shapes, min_row_stride, same_tile
from .cabi import data_address, row_stride
from .errors import AliasError, DTypeError, ShapeError
from .kernels.operands import Bcast, Operand


def _fmt(shapes):
    return " or ".join(str(s) for s in shapes)


def _is_number(value) -> bool:
    """A Python or numpy real number (ml_dtypes scalars are np.generic, not np.number)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, float, np.number)) or (
        isinstance(value, np.generic) and value.dtype == NUMPY[DType.BF16])


def as_array(what: str, op: Operand, value, dtype: np.dtype) -> np.ndarray:
    """`value` as a base-class ndarray for operand `op`, or a clear error."""
    if not op.output and op.bcast is Bcast.SCALAR and _is_number(value):
        return np.asarray(value, dtype=dtype)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{what}: argument '{op.name}' must be a numpy array, got {type(value).__name__}")
    arr = value.view(np.ndarray) if type(value) is not np.ndarray else value
    if arr.dtype != dtype:
        raise DTypeError(f"{what}: argument '{op.name}' must have dtype {dtype}, got {arr.dtype}")
    shapes = accepted_shapes(op)
    if arr.shape not in shapes:
        raise ShapeError(f"{what}: argument '{op.name}' must have shape {_fmt(shapes)}, got {arr.shape}")
    isz = arr.itemsize
    if arr.ndim and arr.shape[-1] > 1 and arr.strides[-1] != isz:
        raise ShapeError(f"{what}: argument '{op.name}' must have unit element stride "
                         f"(strides[-1] == {isz} bytes), got strides {arr.strides}; use np.ascontiguousarray")
    if arr.ndim == 2 and arr.shape[0] > 1:
        s0 = arr.strides[0]
        if s0 % isz or s0 < min_row_stride(op) * isz:
            raise ShapeError(f"{what}: argument '{op.name}' must have a positive row stride of at least "
                             f"{min_row_stride(op)} elements that is a whole number of elements, "
                             f"got strides {arr.strides}")
    if not arr.flags.aligned:
        raise ShapeError(f"{what}: argument '{op.name}' is not aligned to its element size")
    if op.output and not arr.flags.writeable:
        raise ValueError(f"{what}: output '{op.name}' is read-only")
    return arr


def span_bytes(op: Operand, ld: int, itemsize: int) -> int:
    """Bytes from an operand's first element to the end of its last, rows ld apart."""
    return ((op.rows - 1) * ld + op.cols) * itemsize


def _extent(op: Operand, arr: np.ndarray) -> tuple[int, int, int]:
    lo = data_address(arr)
    ld = row_stride(arr, op.cols)
    return lo, lo + span_bytes(op, ld, arr.itemsize), ld


def check_overlap(what: str, operands: list[Operand], arrays: list[np.ndarray], allow_alias: bool) -> None:
    ext = [_extent(op, a) for op, a in zip(operands, arrays)]
    for o, out in enumerate(operands):
        if not out.output:
            continue
        for p, other in enumerate(operands):
            if p == o or (other.output and p < o):
                continue
            (olo, ohi, old), (plo, phi, pld) = ext[o], ext[p]
            if olo < phi and plo < ohi:
                if allow_alias and same_tile(out, other) and olo == plo and old == pld:
                    continue
                raise AliasError(f"{what}: output '{out.name}' overlaps '{other.name}'; only exact "
                                 f"in-place use (out is the input itself) is allowed"
                                 + ("" if allow_alias else " for elementwise kinds, not this one"))
