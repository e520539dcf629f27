"""Segment reduce of indexed rows (kernels/opreduce.py has the code):

    k = tpp.opreduce(n, extent, nnz, "f32", op="mul", reduce="sum", index_dtype="i32")
    row = k(x, seg, idx, e)        # x (extent, n), seg (2,), idx / e (nnz,): out (1, n)
    # out[0] = sum over p in [seg[0], seg[1]) of x[idx[p]] * e[p]

The row kernel of tpp.ops.spmm / gspmm, inlined by those composites once per matrix
row; called alone it computes one row. A bad index raises IndexRangeError naming its
position (the kernel never dereferences it).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .descriptors import Primitive, check_dims
from .dispatch import get_kernel
from .dtypes import parse as parse_dtype
from .errors import DescriptorError, IndexRangeError
from .gather_kernel import _index_dtype
from .jit.types import DType
from .kernel import Kernel
from .kernels import fields
from .kernels import opreduce as opreduce_k

_local = threading.local()


@dataclass(frozen=True)
class OpReduceDesc(Primitive):
    kind: str                   # the reduce: "sum", "max", "min"
    op: str                     # "copy" (x's row) or "mul" (x's row times e[p])
    n: int                      # elements per row
    extent: int                 # rows of x
    nnz: int                    # entries of idx (and e)
    dtype: DType = DType.F32
    index_dtype: DType = DType.I64

    record = opreduce_k.FAMILY

    def __post_init__(self) -> None:
        check_dims(self, "opreduce", "n", "extent")
        nnz = fields.integer("opreduce", "nnz", self.nnz)
        if not 0 <= nnz < 2 ** 62:
            raise DescriptorError(f"tpp opreduce: nnz must be a non-negative integer, got {nnz!r}")
        fields.put(self, "nnz", nnz)
        self.record.validate(self)


def opreduce_desc(n: int, extent: int, nnz: int, dtype="f32", *, op: str = "copy", reduce: str = "sum",
                  index_dtype="i64") -> OpReduceDesc:
    return OpReduceDesc(reduce, op, n, extent, nnz, parse_dtype(dtype), _index_dtype(index_dtype))


class OpReduceKernel:
    """Calls the compiled kernel with a zeroed status word; IndexRangeError on a bad index."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.descriptor = kernel.descriptor
        self.target = kernel.target

    def __call__(self, x, seg, idx, e=None, out=None):
        d = self.descriptor
        if (e is None) != (d.op == "copy"):
            raise TypeError(f"tpp opreduce: op={d.op!r} " + ("takes no e" if d.op == "copy" else "needs e"))
        if out is None:
            out = np.empty((1, d.n), d.dtype.numpy)
        try:
            status = _local.status
        except AttributeError:
            status = _local.status = np.empty(1, np.int64)
        status[0] = 0
        inputs = (x, seg, idx) if e is None else (x, seg, idx, e)
        self.kernel(*inputs, out=(out, status))
        if status.item():
            at = status.item() - 1
            raise IndexRangeError(f"tpp opreduce: idx[{at}] = {int(np.asarray(idx)[at])} is out of range "
                                  f"for x with {d.extent} rows")
        return out

    def reference(self, x, seg, idx, e=None):
        return self.descriptor.reference(*((x, seg, idx) if e is None else (x, seg, idx, e)))[0]

    @property
    def ir(self) -> str:
        return self.kernel.ir

    @property
    def asm(self) -> str:
        return self.kernel.asm

    def __repr__(self) -> str:
        return f"<tpp.OpReduceKernel {self.descriptor} on {self.target.name}>"


def opreduce(n: int, extent: int, nnz: int, dtype="f32", *, op: str = "copy", reduce: str = "sum",
             index_dtype="i64", target=None) -> OpReduceKernel:
    """Dispatch a segment-reduce TPP: k(x, seg, idx[, e]) -> (1, n) row."""
    return OpReduceKernel(get_kernel(opreduce_desc(n, extent, nnz, dtype, op=op, reduce=reduce,
                                                   index_dtype=index_dtype), target))
