"""Gather rows and scatter-add rows by index (kernels/gather.py has the code):

    g = tpp.gather(m, n, extent, "f32", index_dtype="i64")
    out = g(x, idx)                 # x: (extent, n), idx: (m,), out[i] = x[idx[i]]: (m, n)
    s = tpp.scatter_add(m, n, extent, "bf16", index_dtype="i32")
    s(x, idx, out)                  # x: (m, n), out: (extent, n), out[idx[i]] += x[i]

x and out may be row-strided views (unit element stride). An index < 0 or >= extent
raises IndexRangeError naming it and its position; the kernel checks every index before
it touches x or out, so out is left as it was. A composite inlines the primitive with
`ctx.call(ctx.primitive(gather_desc(...)), [x, idx, out, status])` ((pointer, ld) each)
and reads the status word itself: the rows done, m unless an index was bad.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .descriptors import Primitive, check_dims, check_extent
from .dispatch import get_kernel
from .dtypes import parse as parse_dtype
from . import checks
from .errors import DescriptorError, DTypeError, IndexRangeError, ShapeError
from .jit.types import DType
from .kernel import Kernel
from .kernels import fields
from .kernels import gather as gather_k
from .kernels.operands import Bcast


_local = threading.local()


@dataclass(frozen=True)
class GatherDesc(Primitive):
    kind: str                   # "gather" or "scatter_add"
    m: int                      # indices (rows gathered, or rows scattered)
    n: int                      # elements per row
    extent: int                 # rows of the indexed array: x's (gather), out's (scatter_add)
    dtype: DType = DType.F32
    index_dtype: DType = DType.I64

    record = gather_k.FAMILY

    @property
    def output_required(self) -> bool:
        return self.kind == "scatter_add"     # out is read (accumulated into)

    def __post_init__(self) -> None:
        what = self.kind if isinstance(self.kind, str) else "gather"
        check_dims(self, what, "n", "extent")
        m = fields.integer(what, "m", self.m)
        if not 0 <= m < 2 ** 31:
            raise DescriptorError(f"tpp {what}: m must be an integer in 0 .. 2**31 - 1, got {m!r}")
        fields.put(self, "m", m)
        self.record.validate(self)
        check_extent(what, "x", "extent, n", max(self.m, self.extent), self.n, self.n, self.dtype.itemsize)


_INDEX_NAMES = {"i32": DType.I32, "int32": DType.I32, "i64": DType.I64, "int64": DType.I64}


def _index_dtype(value) -> DType:
    """index_dtype: "i32"/"i64" (or int32/int64 as names or numpy dtypes)."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str):     # names only: numpy's "i8" is int64, tpp's is int8
        found = _INDEX_NAMES.get(value)
    else:
        try:
            found = {np.dtype(np.int32): DType.I32, np.dtype(np.int64): DType.I64}.get(np.dtype(value))
        except TypeError:
            found = None
    if found is None:
        raise DTypeError(f"tpp gather: index_dtype={value!r} is not supported; use 'i32' or 'i64'")
    return found


def gather_desc(m: int, n: int, extent: int, dtype="f32", *, index_dtype="i64",
                kind: str = "gather") -> GatherDesc:
    return GatherDesc(kind, m, n, extent, parse_dtype(dtype), _index_dtype(index_dtype))


class GatherKernel:
    """A gather / scatter-add kernel: calls the compiled one with a status word and
    raises IndexRangeError where it reports a bad index."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.descriptor = d = kernel.descriptor
        self.target = kernel.target
        self._m, self._out = d.m, (d.m, d.n)
        self._dt = d.dtype.numpy
        self._native = kernel._native       # None where the host cannot run it (or no entry)

    def __call__(self, x, idx, out=None):
        if out is None:
            if self.descriptor.kind == "scatter_add":
                raise TypeError("tpp scatter_add: pass the output it accumulates into: s(x, idx, out)")
            out = np.empty(self._out, self._dt)
        if not self._m:
            return self._empty(x, idx, out)
        try:
            status = _local.status          # one per thread: calls of one kernel may overlap
        except AttributeError:
            status = _local.status = np.empty(1, np.int64)
        native = self._native               # the kernel's native entry: checks and calls
        if native is None or native(x, idx, out, status) is not status:
            self.kernel(x, idx, out=(out, status))     # converts, or raises naming the argument
        if status.item() != self._m:
            self._raise(idx, status.item())
        return out

    def _empty(self, x, idx, out):
        """m == 0: nothing to move; the arguments checked as a call would (numpy gives
        empty arrays zero strides, which the kernel's checks refuse)."""
        what, ops = f"tpp {self.descriptor.kind}", self.kernel.descriptor.operands()
        for op, value in zip(ops, (x, idx, out)):
            if op.rows * op.cols:
                checks.as_array(what, op, value, op.dtype.numpy)
            elif not isinstance(value, np.ndarray) or value.dtype != op.dtype.numpy:
                raise DTypeError(f"{what}: argument '{op.name}' must be a {op.dtype.numpy} array, got "
                                 f"{getattr(value, 'dtype', type(value).__name__)}")
            elif value.shape != (shape := (op.cols,) if op.bcast is Bcast.VEC else (op.rows, op.cols)):
                raise ShapeError(f"{what}: argument '{op.name}' must have shape {shape}, got {value.shape}")
        return out

    def _raise(self, idx, at: int):
        d = self.descriptor
        raise IndexRangeError(f"tpp {d.kind}: idx[{at}] = {int(np.asarray(idx)[at])} is out of range for "
                              f"{'x' if d.kind == 'gather' else 'out'} with {d.extent} rows; nothing was "
                              f"{'gathered' if d.kind == 'gather' else 'added'}")

    def reference(self, x, idx, out=None):
        """The float64 numpy result (gather: x[idx]; scatter_add: out + x at idx)."""
        return self.descriptor.reference(x, idx, out)[0]

    @property
    def ir(self) -> str:
        return self.kernel.ir

    @property
    def asm(self) -> str:
        return self.kernel.asm

    def __repr__(self) -> str:
        return f"<tpp.GatherKernel {self.descriptor} on {self.target.name}>"


def gather(m: int, n: int, extent: int, dtype="f32", *, index_dtype="i64", target=None) -> GatherKernel:
    """Dispatch a gather-rows TPP: g(x, idx[, out]) -> out, out[i, :] = x[idx[i], :];
    x is (extent, n), idx (m,) of index_dtype (i32 or i64), out (m, n)."""
    return GatherKernel(get_kernel(gather_desc(m, n, extent, dtype, index_dtype=index_dtype), target))


def scatter_add(m: int, n: int, extent: int, dtype="f32", *, index_dtype="i64", target=None) -> GatherKernel:
    """Dispatch a scatter-add-rows TPP: s(x, idx, out) -> out, out[idx[i], :] += x[i, :]
    (repeated indices accumulate; bf16 adds in f32 and rounds each addition); x is (m, n),
    idx (m,), out (extent, n)."""
    return GatherKernel(get_kernel(gather_desc(m, n, extent, dtype, index_dtype=index_dtype,
                                               kind="scatter_add"), target))
