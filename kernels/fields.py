"""Checks of descriptor fields, shared by the families' validation: each converts a
field to the plain Python value the code generators need, or raises an error that
names it (tpp.errors: exceptions only, importable from any layer)."""
from __future__ import annotations

import math
import operator

import numpy as np

from .errors import DescriptorError, DTypeError
from ..jit.types import DType

# No operand or batch stride spans more than this many bytes: 256 TiB, more than any
# machine's memory, and far enough below 2**63 that the kernels' int64 address arithmetic
# inside one operand (row index times row stride, in bytes) cannot wrap.
MAX_BYTES = 1 << 48


# put(desc, name, value): set a frozen descriptor's field to its checked, normalised value
# (validation runs inside __post_init__, before the descriptor is hashed or shared). The
# builtin itself: a wrapper's Python frame cost ~50 ns per field on every dispatch.
put = object.__setattr__


def integer(what: str, name: str, value) -> int:
    """`value` as a Python int. Every size, stride and index field passes through here:
    numpy integers would compute in their own width inside the code generator
    (np.int16(200) * 200 wraps) and numpy bools print as `True` into the IR."""
    if isinstance(value, (bool, np.bool_)):
        raise DescriptorError(f"tpp {what}: {name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise DescriptorError(f"tpp {what}: {name} must be an integer, got {type(value).__name__} "
                              f"{value!r}") from None


def flag(what: str, name: str, value) -> bool:
    """A flag field as a Python bool (numpy bools included; ints and strings are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise DescriptorError(f"tpp {what}: {name} must be True or False, got {type(value).__name__} "
                              f"{value!r}")
    return bool(value)


def check_dims(desc, what: str, *names: str) -> None:
    """Set each named size field to a Python int in 1 .. 2**31 - 1, or raise naming it."""
    for name in names:
        value = getattr(desc, name)
        try:
            if isinstance(value, (bool, np.bool_)):
                raise TypeError
            number = operator.index(value)
        except TypeError:
            raise DescriptorError(f"tpp {what}: {name} must be an integer >= 1, got {value!r}") from None
        if number < 1:
            raise DescriptorError(f"tpp {what}: {name} must be an integer >= 1, got {number!r}")
        if number >= 2 ** 31:
            raise DescriptorError(f"tpp {what}: {name}={number} is too large (limit 2**31 - 1)")
        put(desc, name, number)


def check_extent(what: str, operand: str, fields: str, rows: int, cols: int, ld: int, itemsize: int) -> None:
    """Refuse an operand of rows x cols elements, rows ld apart, that spans more than
    MAX_BYTES; the message names the fields that set its extent."""
    extent = ((rows - 1) * ld + cols) * itemsize
    if extent > MAX_BYTES:
        raise DescriptorError(f"tpp {what}: {fields} make operand '{operand}' span {extent} bytes, more "
                              f"than the limit of 2**48")


def real(what: str, name: str, value) -> float:
    """A finite real parameter (alpha, beta) as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DescriptorError(f"tpp {what}: {name} must be a real number, got {type(value).__name__} "
                              f"{value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise DescriptorError(f"tpp {what}: {name} must be finite, got {value}")
    return value


def dtype_names(dtypes) -> list[str]:
    return sorted(d.value for d in dtypes)


def dtype_check(kind: str, dtype: DType, allowed) -> None:
    if not isinstance(dtype, DType):
        raise DTypeError(f"tpp {kind}: dtype must be a tpp DType (tpp.unary etc. parse names), got {dtype!r}")
    if dtype not in allowed:
        raise DTypeError(f"tpp {kind}: dtype {dtype.value} is not supported (supported: "
                         f"{', '.join(dtype_names(allowed))})")


# ---- refusals of the unary descriptors' optional fields, for the families without them ----
# (called where the field is set: the valid path makes no call)
def refuse_reduction(d) -> None:
    raise DescriptorError(f"tpp {d.kind}: axis/argidx are only for reduce_* kinds")


def refuse_cast(d) -> None:
    raise DTypeError(f"tpp {d.kind}: out_dtype must equal dtype ({d.dtype.value}); use kind 'cast'")


def refuse_alpha(d) -> None:
    raise DescriptorError(f"tpp {d.kind}: takes no alpha")


def check_layout_kind(d, dtypes) -> None:
    """A kind that only moves elements (transpose, vnni_pack): a dtype of `dtypes` and
    none of the optional fields (in the order the messages were always checked)."""
    if d.axis is not None or d.argidx:
        refuse_reduction(d)
    dtype_check(d.kind, d.dtype, dtypes)
    if d.out_dtype != d.dtype:
        refuse_cast(d)
    if d.alpha is not None:
        refuse_alpha(d)
