"""SparseMatrix: a shape, a chain of axes (axes.py) and the values; its frozen `Format`, the
description kernels key their compiled code on."""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from ..dtypes import parse as parse_dtype, to_numpy
from ..errors import DTypeError, ShapeError
from .axes import PAD, Axis, AxisFormat, AxisKind, check_axes, check_order, leaf_coords, walk

VALUE_DTYPES = {np.dtype(np.float32): "f32", np.dtype(ml_dtypes.bfloat16): "bf16"}
_DF, _DV, _SF, _SV = (AxisKind.DENSE_FIXED, AxisKind.DENSE_VARIABLE, AxisKind.SPARSE_FIXED,
                      AxisKind.SPARSE_VARIABLE)
# the named formats, by their axes' kinds; dims other than 0, 1, ... (a transpose) add "_t"
_NAMES = {(_DF, _SV): "csr", (_SF, _SF): "coo", (_DF, _SV, _DF, _DF): "bsr", (_DF, _SF): "ell"}


def value_dtype(dtype) -> np.dtype:
    """np.dtype for a values dtype argument: f32 or bf16 (tpp's names or dtype objects)."""
    try:
        d = to_numpy(parse_dtype(dtype))
    except DTypeError:
        d = None
    if d not in VALUE_DTYPES:
        raise DTypeError(f"tpp.sparse: dtype={dtype!r} is not supported; use 'f32' or 'bf16'")
    return d


def as_values(a, what: str = "values", dtype=None) -> np.ndarray:
    """Values as a C-contiguous f32/bf16 array: f32 and bf16 input kept (no copy when
    contiguous); other real numbers (float64, ints, bool) converted to f32 unless `dtype`."""
    arr = np.asarray(a)
    if dtype is not None:
        d = value_dtype(dtype)
    elif arr.dtype in VALUE_DTYPES:
        d = arr.dtype
    elif arr.dtype.kind in "fiub":
        d = np.dtype(np.float32)
    else:
        raise DTypeError(f"tpp.sparse: {what} must be real numbers (f32 or bf16 are stored), "
                         f"got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=d)


@dataclass(frozen=True)
class Format:
    """Everything about a matrix that compiled code depends on, nothing that is data: the
    axes' kinds, dims and static sizes (AxisFormat), the values' and indices' dtypes. Hashable:
    a kernel cache key. `name` is "csr", "coo", "bsr", "ell", their transposes ("csc",
    "coo_t", ...) or "custom"."""
    axes: tuple[AxisFormat, ...]
    dtype: str            # "f32" | "bf16"
    index_dtype: str      # "int32" | "int64"
    ndim: int = 2

    @property
    def name(self) -> str:
        base = _NAMES.get(tuple(a.kind for a in self.axes))
        if base is None:
            return "custom"
        dims = tuple(a.dim for a in self.axes)
        natural = {"csr": (0, 1), "coo": (0, 1), "ell": (0, 1), "bsr": (0, 1, 0, 1)}[base]
        if dims == natural:
            return base
        if dims == tuple(1 - d for d in natural):
            return "csc" if base == "csr" else base + "_t"
        return "custom"

    @property
    def block(self) -> tuple[int, ...] | None:
        """(r, c) of a BSR format, None for others."""
        return (self.axes[2].size, self.axes[3].size) if self.name in ("bsr", "bsr_t") else None

    def __str__(self) -> str:
        b = self.block
        blk = f"({b[0]}x{b[1]})" if b else ""
        w = f"({self.axes[1].size})" if self.name in ("ell", "ell_t") else ""
        return f"{self.name}{blk}{w}[{self.dtype},{self.index_dtype}]"


class SparseMatrix:
    """A sparse matrix: `shape`, `axes` (outermost first), `values` (one per position of the
    last axis, C order; f32 or bf16). Arrays are kept as given (no copies): a kernel reads them
    in place. Construction validates the chain (index ranges, indptr lengths and order, sorted
    and duplicate-free indices, padding) unless check=False (for arrays this package built).
    Build one with tpp.sparse.csr / coo / bsr / ell / from_dense / from_scipy."""

    __slots__ = ("shape", "axes", "values", "format", "_levels")

    def __init__(self, shape, axes, values, *, check: bool = True):
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ShapeError(f"tpp.sparse: shape={shape} must be non-negative")
        axes = tuple(axes)
        if not isinstance(values, np.ndarray) or values.dtype not in VALUE_DTYPES:
            raise DTypeError(f"tpp.sparse: values must be a float32 or bfloat16 numpy array, got "
                             f"{getattr(values, 'dtype', type(values))}")
        if not values.flags.c_contiguous:
            raise ShapeError("tpp.sparse: values must be C-contiguous")
        self.shape, self.axes, self.values, self._levels = shape, axes, values, None
        if check:
            count = check_axes(axes, shape)
            if values.size != count:
                raise ShapeError(f"tpp.sparse: values must have {count} entries (one per stored "
                                 f"position), got {values.size} (shape {values.shape})")
            check_order(axes, self._walk())
            if any(ax.padded for ax in axes):
                _, pad = leaf_coords(axes, self._walk())
                if (values.reshape(-1)[pad] != 0).any():
                    raise ShapeError("tpp.sparse: values of PAD slots must be zero")
        idx = [a for ax in axes for a in (ax.indptr, ax.indices) if a is not None]
        self.format = Format(tuple(ax.format(i == 0) for i, ax in enumerate(axes)),
                             VALUE_DTYPES[values.dtype],
                             str(idx[0].dtype) if idx else "int32", len(shape))

    def _walk(self):
        if self._levels is None:       # position maps: O(nnz) to build, reused by every query
            self._levels = walk(self.axes)
        return self._levels

    # --- what a matrix holds -------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def index_dtype(self) -> np.dtype:
        return np.dtype(self.format.index_dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _leaf(self):
        coords, pad = leaf_coords(self.axes, self._walk())
        return coords, pad

    @property
    def nnz(self) -> int:
        """Stored entries, explicit zeros and BSR blocks' zeros included, ELL padding not."""
        if not any(ax.padded for ax in self.axes):
            return int(self.values.size)
        return int((~self._leaf()[1]).sum())

    def coords(self) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """((row, col), values) of every stored entry but padding, in storage order (int64)."""
        coords, pad = self._leaf()
        out = []
        for d, n in enumerate(self.shape):
            c = np.zeros(coords[0].shape[0], np.int64)
            for ax, cc in zip(self.axes, coords):       # mixed radix, outer axes first
                if ax.dim == d:
                    c = c * ax.extent + cc
            out.append(c[~pad])
        return tuple(out), self.values.reshape(-1)[~pad]

    def to_dense(self) -> np.ndarray:
        """A numpy array of the matrix (its dtype); entries are unique, so assigned exactly."""
        dense = np.zeros(self.shape, self.dtype)
        idx, vals = self.coords()
        dense[idx] = vals
        return dense

    def __repr__(self) -> str:
        return f"SparseMatrix({self.format}, shape={self.shape}, nnz={self.nnz})"

    # --- conversions (convert.py builds them; imported here lazily: it imports this module) --
    def transpose(self) -> SparseMatrix:
        """The transpose with no copy: the same axes with their dims swapped (CSR -> CSC)."""
        if self.ndim != 2:
            raise ShapeError("tpp.sparse: transpose needs a 2-D matrix")
        axes = tuple(Axis(ax.kind, 1 - ax.dim, ax.extent, ax.name, ax.indptr, ax.indices,
                          ax.nnz, ax.unique, ax.padded) for ax in self.axes)
        return SparseMatrix(self.shape[::-1], axes, self.values, check=False)

    @property
    def T(self) -> SparseMatrix:
        return self.transpose()

    def astype(self, dtype) -> SparseMatrix:
        """The same pattern (its index arrays shared) with values cast to f32 or bf16."""
        vals = np.ascontiguousarray(self.values, dtype=value_dtype(dtype))
        return SparseMatrix(self.shape, self.axes, vals, check=False)

    def tocsr(self) -> SparseMatrix:
        from .convert import convert
        return self if self.format.name == "csr" else convert(self, "csr")

    def tocoo(self) -> SparseMatrix:
        from .convert import convert
        return self if self.format.name == "coo" else convert(self, "coo")

    def tobsr(self, block: tuple[int, int]) -> SparseMatrix:
        from .convert import convert
        return convert(self, "bsr", block=block)

    def toell(self, width: int | None = None) -> SparseMatrix:
        """ELL of `width` slots a row (default: the longest row); a longer row is an error."""
        from .convert import convert
        return convert(self, "ell", width=width)

    def to_scipy(self):
        """A scipy.sparse array (see tpp.sparse.to_scipy)."""
        from .scipy_io import to_scipy
        return to_scipy(self)


__all__ = ["Format", "SparseMatrix", "PAD", "value_dtype", "as_values"]
