"""BRGEMM kernels from Python: C = beta C + sum_i op(A_i) op(B_i).

    br = tpp.brgemm(m, n, k, variant="stride")
    br(a, b, c)                          # a: (batch, m, k), b: (batch, k, n) stacks (or views)
    br = tpp.brgemm(m, n, k, variant="offset")
    br(a, b, c, a_offsets, b_offsets)    # flat buffers + int64 element offsets of each block
    br = tpp.brgemm(m, n, k, variant="address")
    br([a0, a1, ...], [b0, b1, ...], c)  # lists of 2-D blocks

The batch count is a call-time value. Arguments are checked here, in Python
(every block inside its buffer, C overlapping none of them), then the kernel
runs through one cffi call, which releases the GIL. Row strides and the stack
strides are compiled in; a call with other strides dispatches a kernel for them.
"""
from __future__ import annotations

import numpy as np

from .cabi import KERNEL, data_address, ffi, row_stride, tensors
from .descriptors import BrgemmDesc
from .errors import AliasError, DTypeError, ShapeError
from .kernel import Kernel



def _extent(name: str, x: np.ndarray) -> tuple[str, int, int]:
    """(name, first byte, one past the last byte) an array view can touch."""
    lo = data_address(x)
    last = sum((size - 1) * stride for size, stride in zip(x.shape, x.strides)) if x.size else -x.itemsize
    return name, lo, lo + last + x.itemsize


class BatchReduceKernel:
    """A BRGEMM TPP; `kernel` is the compiled Kernel (its .address, .ir, .asm)."""

    def __init__(self, kernel: Kernel, get_kernel):
        self.kernel = kernel
        self.descriptor: BrgemmDesc = kernel.descriptor
        self._get_kernel = get_kernel
        self._np = kernel._np[0]
        self._what = f"tpp brgemm({self.descriptor.variant})"
        self._fn = ffi.cast(KERNEL, kernel.address) if kernel.address else None

    ir = property(lambda self: self.kernel.ir)
    asm = property(lambda self: self.kernel.asm)
    address = property(lambda self: self.kernel.address)

    def __repr__(self) -> str:
        return f"<tpp.BatchReduceKernel {self.descriptor} on {self.kernel.target.name}>"

    # ---- checks ---------------------------------------------------------------------
    def _array(self, name: str, x, ndim: int) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self._what}: argument '{name}' must be a numpy array, got {type(x).__name__}")
        x = x.view(np.ndarray) if type(x) is not np.ndarray else x
        if x.dtype != self._np:
            raise DTypeError(f"{self._what}: argument '{name}' must have dtype {self._np}, got {x.dtype}")
        if x.ndim != ndim:
            raise ShapeError(f"{self._what}: argument '{name}' must have {ndim} dimensions, got shape {x.shape}")
        if x.size == 0:        # an empty batch: its strides are meaningless and never used
            return x
        if x.ndim and x.shape[-1] > 1 and x.strides[-1] != x.itemsize:
            raise ShapeError(f"{self._what}: argument '{name}' must have unit element stride, "
                             f"got strides {x.strides}")
        if any(s < 0 or s % x.itemsize for s in x.strides):
            raise ShapeError(f"{self._what}: argument '{name}' has negative or fractional strides {x.strides}")
        if not x.flags.aligned:
            raise ShapeError(f"{self._what}: argument '{name}' is not aligned to its element size")
        return x

    def _block(self, name: str, x, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
        """A 2-D block of the given shape; returns it and its row stride (elements)."""
        x = self._array(name, x, 2)
        if x.shape != shape:
            raise ShapeError(f"{self._what}: argument '{name}' must have shape {shape}, got {x.shape}")
        return x, row_stride(x, shape[1])

    def _shapes(self):
        d = self.descriptor
        return (((d.k, d.m) if d.trans_a else (d.m, d.k)), ((d.n, d.k) if d.trans_b else (d.k, d.n)))

    # ---- call -----------------------------------------------------------------------
    def __call__(self, a, b, c, a_offsets=None, b_offsets=None):
        d = self.descriptor
        a_shape, b_shape = self._shapes()
        c, ldc = self._block("c", c, (d.m, d.n))
        if not c.flags.writeable:
            raise ValueError(f"{self._what}: output 'c' is read-only")
        variant = d.variant
        if variant == "stride":
            args, lds, extents, keep = self._stride_args(a, b, a_shape, b_shape)
        elif variant == "offset":
            args, lds, extents, keep = self._offset_args(a, b, a_offsets, b_offsets, a_shape, b_shape)
        else:
            args, lds, extents, keep = self._address_args(a, b, a_shape, b_shape)
        c_lo = data_address(c)
        c_hi = c_lo + ((d.m - 1) * ldc + d.n) * c.itemsize
        for name, lo, hi in extents:
            if lo < c_hi and c_lo < hi:
                raise AliasError(f"{self._what}: output 'c' overlaps '{name}'")
        fn = self._fn
        want = dict(lda=lds[0], ldb=lds[1], ldc=ldc, **lds[2])
        if any(getattr(d, key) != value for key, value in want.items()):
            sibling = self._get_kernel(_replace(d, **want), self.kernel.target)
            fn = ffi.cast(KERNEL, sibling.address)
        fn(tensors([args[0], args[1], (data_address(c), ldc)] + args[2:]))
        del keep        # the arrays the tensors point into lived until here
        return c

    def _stride_args(self, a, b, a_shape, b_shape):
        a = self._array("a", a, 3)
        b = self._array("b", b, 3)
        if a.shape[1:] != a_shape or b.shape[1:] != b_shape:
            raise ShapeError(f"{self._what}: a and b must have shapes (batch, {a_shape[0]}, {a_shape[1]}) "
                             f"and (batch, {b_shape[0]}, {b_shape[1]}), got {a.shape} and {b.shape}")
        if a.shape[0] != b.shape[0]:
            raise ShapeError(f"{self._what}: a and b must have the same batch, got {a.shape[0]} and {b.shape[0]}")
        count = a.shape[0]
        isz = a.itemsize
        d = self.descriptor
        lda = a.strides[1] // isz if a_shape[0] > 1 and count else d.lda
        ldb = b.strides[1] // isz if b_shape[0] > 1 and count else d.ldb
        strides = dict(stride_a=a.strides[0] // isz if count > 1 else d.stride_a,
                       stride_b=b.strides[0] // isz if count > 1 else d.stride_b)
        extents = [_extent("a", a), _extent("b", b)] if count else []
        return [(data_address(a), lda), (data_address(b), ldb), (0, count)], (lda, ldb, strides), extents, (a, b)

    def _offset_args(self, a, b, a_offsets, b_offsets, a_shape, b_shape):
        if a_offsets is None or b_offsets is None:
            raise TypeError(f"{self._what}: the offset variant is called br(a, b, c, a_offsets, b_offsets)")
        d = self.descriptor
        keep = []
        args = []
        pairs = (("a", a, a_offsets, a_shape, d.lda), ("b", b, b_offsets, b_shape, d.ldb))
        for name, buf, offs, shape, ld in pairs:
            buf = self._array(name, buf, np.ndim(buf))
            if not buf.flags.c_contiguous:
                raise ShapeError(f"{self._what}: buffer '{name}' must be C-contiguous (offsets index it flat)")
            offs = np.ascontiguousarray(offs, dtype=np.int64)
            if offs.ndim != 1:
                raise ShapeError(f"{self._what}: {name}_offsets must be 1-D, got shape {offs.shape}")
            span = (shape[0] - 1) * ld + shape[1]
            if offs.size and (offs.min() < 0 or offs.max() + span > buf.size):
                raise ShapeError(f"{self._what}: a block of '{name}' at offset {int(offs.max())} with row stride "
                                 f"{ld} would end past the buffer's {buf.size} elements")
            keep += [buf, offs]
            args.append((data_address(buf), ld, offs))
        if args[0][2].size != args[1][2].size:
            raise ShapeError(f"{self._what}: a_offsets and b_offsets must have the same length")
        count = int(args[0][2].size)
        extents = [_extent("a", keep[0]), _extent("b", keep[2])]
        return [(args[0][0], args[0][1]), (args[1][0], args[1][1]), (data_address(args[0][2]), count),
                (data_address(args[1][2]), count)], (d.lda, d.ldb, {}), extents, keep

    def _address_args(self, a, b, a_shape, b_shape):
        if not isinstance(a, (list, tuple)) or not isinstance(b, (list, tuple)) or len(a) != len(b):
            raise TypeError(f"{self._what}: the address variant is called br([a0, a1, ...], [b0, b1, ...], c) "
                            f"with lists of the same length")
        count = len(a)
        d = self.descriptor
        lds = [d.lda, d.ldb]
        pointers, extents = [], []
        for which, blocks, shape in ((0, a, a_shape), (1, b, b_shape)):
            table = np.empty(count, np.int64)
            for i, x in enumerate(blocks):
                name = f"{'ab'[which]}[{i}]"
                x, ld = self._block(name, x, shape)
                if i == 0:
                    lds[which] = ld
                elif ld != lds[which] and shape[0] > 1:
                    raise ShapeError(f"{self._what}: all blocks of '{'ab'[which]}' must share one row stride, "
                                     f"{name} has {ld}, the first {lds[which]}")
                table[i] = data_address(x)
                extents.append(_extent(name, x))
            pointers.append(table)
        return [(data_address(pointers[0]), lds[0]), (data_address(pointers[1]), lds[1]), (0, count)], \
            (lds[0], lds[1], {}), extents, (pointers, a, b)


def _replace(desc: BrgemmDesc, **changes) -> BrgemmDesc:
    from dataclasses import replace
    return replace(desc, **changes)
