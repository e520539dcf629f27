"""Argument helpers the ops share: the output array and the element strides a
composite is compiled for."""
from __future__ import annotations

import numpy as np

from .. import compose
from ..errors import ShapeError
from ..jit.types import DType


def output(what: str, out, shape: tuple[int, ...], dtype) -> np.ndarray:
    """`out`, checked to be an array of `shape` and `dtype`, or a new one."""
    dtype = np.dtype(dtype)
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray) or out.shape != tuple(shape) or out.dtype != dtype:
        raise ShapeError(f"{what}: out must be a {tuple(shape)} {dtype} array, got "
                         f"{getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}")
    return out


def element_strides(a: np.ndarray) -> tuple[int, ...]:
    """Strides in elements; an axis of extent 1 takes the C-order stride (it is never
    stepped, and a view's value there is arbitrary)."""
    c_order = compose.Tensor("", DType.F32, a.shape).strides
    return tuple(s // a.itemsize if e > 1 else c for s, e, c in zip(a.strides, a.shape, c_order))
