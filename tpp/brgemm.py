"""BRGEMM kernels from Python: C = beta C + sum_i op(A_i) op(B_i), then the epilogue.

    br = tpp.brgemm(m, n, k, variant="stride")
    br(a, b, c)                          # a: (batch, m, k), b: (batch, k, n) stacks (or views)
    br = tpp.brgemm(m, n, k, variant="offset")
    br(a, b, c, a_offsets, b_offsets)    # flat buffers + int64 element offsets of each block
    br = tpp.brgemm(m, n, k, variant="address")
    br([a0, a1, ...], [b0, b1, ...], c)  # lists of 2-D blocks

An epilogue's inputs come between B and C, as for GEMM: br(a, b, bias, residual, c).
The batch count is a call-time value. Arguments are checked here, in Python
(every block inside its buffer, C overlapping none of the inputs), then the kernel
runs through one cffi call, which releases the GIL. Row strides and the stack
strides are compiled in; a call with other strides runs a kernel compiled for
them (dispatched on first use, then kept here).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import checks
from .cabi import KERNEL, data_address, ffi, row_stride, tensors
from .descriptors import BrgemmDesc
from .errors import AliasError, DTypeError, ShapeError, TargetError
from .kernel import Kernel
from .kernels.epilogue import epilogue_inputs


# The most blocks one call takes, like every size (kernels/fields.check_dims). A stack of
# zero strides can claim any batch (np.lib.stride_tricks); far beyond this, the kernel's
# buffer for transposed blocks would be larger than any machine's memory and the call
# would run for years.
MAX_BATCH = 2 ** 31 - 1


def _extent(name: str, x: np.ndarray) -> tuple[str, int, int]:
    """(name, first byte, one past the last byte) an array view can touch (strides >= 0)."""
    lo = data_address(x)
    if not x.size:
        return name, lo, lo
    last = 0
    for size, stride in zip(x.shape, x.strides):
        last += (size - 1) * stride
    return name, lo, lo + last + x.itemsize


class BatchReduceKernel:
    """A BRGEMM TPP; `kernel` is the compiled Kernel (its .address, .ir, .asm)."""

    def __init__(self, kernel: Kernel, get_kernel):
        self.kernel = kernel
        d: BrgemmDesc = kernel.descriptor
        self.descriptor = d
        self._get_kernel = get_kernel
        ops = kernel._operands                       # A_i, B_i, epilogue inputs, C
        self._a_np, self._b_np, self._c_np = kernel._np[0], kernel._np[1], kernel._np[-1]
        self._extras = list(zip(ops[2:-1], kernel._np[2:-1]))
        self._c_op = ops[-1]
        self._a_shape = (ops[0].rows, ops[0].cols)
        self._b_shape = (ops[1].rows, ops[1].cols)
        self._what = f"tpp brgemm({d.variant})"
        self._fns = {}                               # compiled strides -> cffi function
        if kernel.address:
            self._fns[self._strides_of(d)] = ffi.cast(KERNEL, kernel.address)
        names = ", ".join(epilogue_inputs(d.epilogue))
        self._signature = {"stride": "br(a, b, {}c)", "offset": "br(a, b, {}c, a_offsets, b_offsets)",
                           "address": "br([a0, a1, ...], [b0, b1, ...], {}c)"}[d.variant].format(
                               names + ", " if names else "")

    ir = property(lambda self: self.kernel.ir)
    asm = property(lambda self: self.kernel.asm)
    address = property(lambda self: self.kernel.address)
    code = property(lambda self: self.kernel.code)

    def __repr__(self) -> str:
        return f"<tpp.BatchReduceKernel {self.descriptor} on {self.kernel.target.name}>"

    def reference(self, a_blocks, b_blocks, *rest):
        """The float64 reference for lists of blocks, the epilogue's inputs and C."""
        return self.descriptor.reference(a_blocks, b_blocks, *rest)

    @staticmethod
    def _strides_of(d: BrgemmDesc) -> tuple[int, int, int, int, int]:
        return d.lda, d.ldb, d.ldc, d.stride_a, d.stride_b

    # ---- checks ---------------------------------------------------------------------
    def _array(self, name: str, x, ndim: int, dtype: np.dtype) -> np.ndarray:
        if type(x) is not np.ndarray:
            if not isinstance(x, np.ndarray):
                raise TypeError(f"{self._what}: argument '{name}' must be a numpy array, "
                                f"got {type(x).__name__}")
            x = x.view(np.ndarray)
        if x.dtype != dtype:
            raise DTypeError(f"{self._what}: argument '{name}' must have dtype {dtype}, got {x.dtype}")
        if x.ndim != ndim:
            raise ShapeError(f"{self._what}: argument '{name}' must have {ndim} dimensions, got shape {x.shape}")
        if x.size == 0:        # an empty batch: its strides are meaningless and never used
            return x
        strides, isz = x.strides, x.itemsize
        if ndim and x.shape[-1] > 1 and strides[-1] != isz:
            raise ShapeError(f"{self._what}: argument '{name}' must have unit element stride, "
                             f"got strides {strides}")
        for stride in strides:
            if stride < 0 or stride % isz:
                raise ShapeError(f"{self._what}: argument '{name}' has negative or fractional strides {strides}")
        if not x.flags.aligned:
            raise ShapeError(f"{self._what}: argument '{name}' is not aligned to its element size")
        return x

    def _block(self, name: str, x, shape: tuple[int, int], dtype: np.dtype) -> tuple[np.ndarray, int]:
        """A 2-D block of the given shape; returns it and its row stride (elements)."""
        x = self._array(name, x, 2, dtype)
        if x.shape != shape:
            raise ShapeError(f"{self._what}: argument '{name}' must have shape {shape}, got {x.shape}")
        return x, row_stride(x, shape[1])

    # ---- call -----------------------------------------------------------------------
    def __call__(self, a, b, *rest):
        d = self.descriptor
        n_extra = len(self._extras)
        want = n_extra + (3 if d.variant == "offset" else 1)
        if len(rest) != want:
            raise TypeError(f"{self._what}: called as {self._signature}; got {2 + len(rest)} arguments")
        c, ldc = self._block("c", rest[n_extra], (d.m, d.n), self._c_np)
        if not c.flags.writeable:
            raise ValueError(f"{self._what}: output 'c' is read-only")
        if d.variant == "stride":
            args, lds, extents, keep = self._stride_args(a, b)
        elif d.variant == "offset":
            args, lds, extents, keep = self._offset_args(a, b, *rest[n_extra + 1:])
        else:
            args, lds, extents, keep = self._address_args(a, b)
        extras = []
        for (op, dtype), x in zip(self._extras, rest[:n_extra]):
            x = checks.as_array(self._what, op, x, dtype)
            extras.append((data_address(x), row_stride(x, op.cols)))
            extents.append(_extent(op.name, x))
            keep = (keep, x)
        c_lo = data_address(c)
        c_hi = c_lo + ((d.m - 1) * ldc + d.n) * c.itemsize
        for name, lo, hi in extents:
            if lo < c_hi and c_lo < hi:
                raise AliasError(f"{self._what}: output 'c' overlaps '{name}'")
        fn = self._function((lds[0], lds[1], ldc) + lds[2])
        fn(tensors(args[:2] + extras + [(c_lo, ldc)] + args[2:]))
        del keep        # the arrays the tensors point into lived until here
        return c

    def _function(self, strides: tuple[int, int, int, int, int]):
        """The kernel compiled for these strides (lda, ldb, ldc, stride_a, stride_b)."""
        fn = self._fns.get(strides)
        if fn is None:
            lda, ldb, ldc, sa, sb = strides
            d = self.descriptor
            sibling = self._get_kernel(replace(d, lda=lda, ldb=ldb, ldc=ldc,
                                               stride_a=sa if d.variant == "stride" else None,
                                               stride_b=sb if d.variant == "stride" else None),
                                       self.kernel.target)
            if not sibling.address:
                raise TargetError(f"{self._what}: kernel was built for target {self.kernel.target.name}, "
                                  f"which this machine cannot run; read .asm or build it ahead of time")
            fn = self._fns[strides] = ffi.cast(KERNEL, sibling.address)
        return fn

    def _count(self, count: int) -> int:
        if count > MAX_BATCH:
            raise ShapeError(f"{self._what}: a batch of {count} blocks is more than the limit of "
                             f"{MAX_BATCH} (2**31 - 1)")
        return count

    def _stride_args(self, a, b):
        a = self._array("a", a, 3, self._a_np)
        b = self._array("b", b, 3, self._b_np)
        a_shape, b_shape = self._a_shape, self._b_shape
        if a.shape[1:] != a_shape or b.shape[1:] != b_shape:
            raise ShapeError(f"{self._what}: a and b must have shapes (batch, {a_shape[0]}, {a_shape[1]}) "
                             f"and (batch, {b_shape[0]}, {b_shape[1]}), got {a.shape} and {b.shape}")
        if a.shape[0] != b.shape[0]:
            raise ShapeError(f"{self._what}: a and b must have the same batch, got {a.shape[0]} and {b.shape[0]}")
        count = self._count(a.shape[0])
        d = self.descriptor
        lda = a.strides[1] // a.itemsize if a_shape[0] > 1 and count else d.lda
        ldb = b.strides[1] // b.itemsize if b_shape[0] > 1 and count else d.ldb
        strides = (a.strides[0] // a.itemsize if count > 1 else d.stride_a,
                   b.strides[0] // b.itemsize if count > 1 else d.stride_b)
        extents = [_extent("a", a), _extent("b", b)] if count else []
        return [(data_address(a), lda), (data_address(b), ldb), (0, count)], (lda, ldb, strides), extents, (a, b)

    def _offset_args(self, a, b, a_offsets, b_offsets):
        d = self.descriptor
        keep = []
        args = []
        pairs = (("a", a, a_offsets, self._a_shape, d.lda, self._a_np),
                 ("b", b, b_offsets, self._b_shape, d.ldb, self._b_np))
        for name, buf, offs, shape, ld, dtype in pairs:
            buf = self._array(name, buf, np.ndim(buf), dtype)
            if not buf.flags.c_contiguous:
                raise ShapeError(f"{self._what}: buffer '{name}' must be C-contiguous (offsets index it flat)")
            offs = np.asarray(offs)
            if offs.size and offs.dtype.kind not in "iu":       # a float offset would be truncated
                raise DTypeError(f"{self._what}: {name}_offsets must hold integers, got dtype {offs.dtype}")
            self._count(offs.size)                  # before a copy of an absurd zero-stride table
            offs = np.ascontiguousarray(offs, dtype=np.int64)
            if offs.ndim != 1:
                raise ShapeError(f"{self._what}: {name}_offsets must be 1-D, got shape {offs.shape}")
            span = (shape[0] - 1) * ld + shape[1]
            # compared with the last start, not offs + span: that sum in int64 wraps for
            # offsets near 2**63
            last = buf.size - span
            bad = np.flatnonzero((offs < 0) | (offs > last)) if offs.size else ()
            if len(bad) and last < 0:
                raise ShapeError(f"{self._what}: buffer '{name}' has {buf.size} elements, fewer than one "
                                 f"block of {shape[0]} x {shape[1]} with row stride {ld} spans ({span})")
            if len(bad):                    # the first bad entry, as given (was: "offset 0")
                i = int(bad[0])
                raise ShapeError(f"{self._what}: {name}_offsets[{i}] = {int(offs[i])}: the block of '{name}' "
                                 f"there (row stride {ld}) would start before or end past the buffer's "
                                 f"{buf.size} elements ({name}_offsets must lie in 0 .. {last})")
            keep += [buf, offs]
            args.append((data_address(buf), ld, offs))
        if args[0][2].size != args[1][2].size:
            raise ShapeError(f"{self._what}: a_offsets and b_offsets must have the same length")
        count = int(args[0][2].size)
        extents = [_extent("a", keep[0]), _extent("b", keep[2])]
        return [(args[0][0], args[0][1]), (args[1][0], args[1][1]), (data_address(args[0][2]), count),
                (data_address(args[1][2]), count)], (d.lda, d.ldb, (0, 0)), extents, keep

    def _address_args(self, a, b):
        if not isinstance(a, (list, tuple)) or not isinstance(b, (list, tuple)) or len(a) != len(b):
            raise TypeError(f"{self._what}: the address variant is called {self._signature} "
                            f"with lists of the same length")
        count = self._count(len(a))
        d = self.descriptor
        lds = [d.lda, d.ldb]
        pointers, extents = [], []
        for which, blocks, shape, dtype in ((0, a, self._a_shape, self._a_np), (1, b, self._b_shape, self._b_np)):
            table = np.empty(count, np.int64)
            for i, x in enumerate(blocks):
                name = f"{'ab'[which]}[{i}]"
                x, ld = self._block(name, x, shape, dtype)
                if i == 0:
                    lds[which] = ld
                elif ld != lds[which] and shape[0] > 1:
                    raise ShapeError(f"{self._what}: all blocks of '{'ab'[which]}' must share one row stride, "
                                     f"{name} has {ld}, the first {lds[which]}")
                table[i] = data_address(x)
                extents.append(_extent(name, x))
            pointers.append(table)
        return [(data_address(pointers[0]), lds[0]), (data_address(pointers[1]), lds[1]), (0, count)], \
            (lds[0], lds[1], (0, 0)), extents, (pointers, a, b)
