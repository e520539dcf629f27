"""Axes: the levels a sparse format is stacked from (SparseTIR's dense_fixed, dense_variable,
sparse_fixed, sparse_variable; TACO's level formats with the same meaning).

A format is a chain of axes, outermost first. The root has one position; each axis maps every
position of its parent to a run of positions of its own and gives each of them a coordinate:

| kind            | positions per parent position | coordinate of a position  | arrays           |
|-----------------|-------------------------------|---------------------------|------------------|
| dense_fixed     | `extent`                      | 0 .. extent-1             | none             |
| dense_variable  | indptr[p+1] - indptr[p]       | 0 .. (run length)-1       | indptr           |
| sparse_fixed    | `nnz` (fixed)                 | indices[q]                | indices          |
| sparse_variable | indptr[p+1] - indptr[p]       | indices[q]                | indptr, indices  |

Each axis contributes to one matrix dimension (`dim`); axes of the same dim combine outer to
inner in mixed radix (BSR: row = block_row * r + row_in_block), so the matrix's shape along a
dim is the product of its axes' extents. The values hold one element per position of the last
axis, in position order (C order of the values array).

Kernels read these arrays directly, so they are C-contiguous numpy arrays of one index dtype
(int32 or int64) per matrix. A sparse_fixed axis may be `padded`: slots holding PAD (-1, never a
valid coordinate) come after a run's real entries and carry zero values (ELL rows shorter
than the width); a kernel must skip them (max/min/mean reductions would count them)."""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError, DTypeError, ShapeError

PAD = -1          # the index of an ELL padding slot: outside every axis's range, so never a column
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
_I32_MAX = np.iinfo(np.int32).max


class AxisKind(enum.Enum):
    DENSE_FIXED = "dense_fixed"
    DENSE_VARIABLE = "dense_variable"
    SPARSE_FIXED = "sparse_fixed"
    SPARSE_VARIABLE = "sparse_variable"

    @property
    def sparse(self) -> bool:
        return self in (AxisKind.SPARSE_FIXED, AxisKind.SPARSE_VARIABLE)

    @property
    def variable(self) -> bool:
        return self in (AxisKind.DENSE_VARIABLE, AxisKind.SPARSE_VARIABLE)


@dataclass(frozen=True)
class AxisFormat:
    """What code is compiled for about an axis: its kind, its matrix dim, and its size where the
    size is static (`size`: an inner dense_fixed axis's extent, a block's r or c; an inner
    sparse_fixed axis's nnz, the ELL width); None where the size is data (the outermost axis's
    extent or count: a loop bound read at run time). `unique`: coordinates within a parent run
    are distinct (False: COO's row axis, a kernel must accumulate). `padded`: PAD slots."""
    kind: AxisKind
    dim: int
    size: int | None
    unique: bool = True
    padded: bool = False


@dataclass(frozen=True, eq=False)
class Axis:
    """One level of a format and the arrays it owns (see the module docstring). `extent` is the
    coordinate range; `nnz` the fixed positions per parent position of a sparse_fixed axis."""
    kind: AxisKind
    dim: int
    extent: int
    name: str = ""
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    nnz: int | None = None
    unique: bool = True
    padded: bool = False

    def format(self, outermost: bool) -> AxisFormat:
        size = None
        if not outermost:
            size = self.extent if self.kind is AxisKind.DENSE_FIXED else self.nnz
        return AxisFormat(self.kind, self.dim, size, self.unique, self.padded)


def dense_fixed(extent: int, dim: int, name: str = "") -> Axis:
    return Axis(AxisKind.DENSE_FIXED, dim, int(extent), name)


def dense_variable(extent: int, dim: int, indptr, name: str = "") -> Axis:
    return Axis(AxisKind.DENSE_VARIABLE, dim, int(extent), name, indptr=indptr)


def sparse_fixed(extent: int, dim: int, indices, nnz: int, name: str = "", unique: bool = True,
                 padded: bool = False) -> Axis:
    return Axis(AxisKind.SPARSE_FIXED, dim, int(extent), name, indices=indices, nnz=int(nnz),
                unique=unique, padded=padded)


def sparse_variable(extent: int, dim: int, indptr, indices, name: str = "") -> Axis:
    return Axis(AxisKind.SPARSE_VARIABLE, dim, int(extent), name, indptr=indptr, indices=indices)


def index_dtype_for(maxval: int, given=None) -> np.dtype:
    """The index dtype to store: the given one if it is int32/int64 and holds maxval (keep the
    caller's width), else int32 where maxval fits (half the bytes a kernel streams), else int64."""
    if given is not None and np.dtype(given) in INDEX_DTYPES:
        if np.dtype(given) == np.int64 or maxval <= _I32_MAX:
            return np.dtype(given)
    return np.dtype(np.int32) if maxval <= _I32_MAX else np.dtype(np.int64)


def as_index(a, what: str, dtype: np.dtype | None = None) -> np.ndarray:
    """An index array as a C-contiguous int32/int64 array: an int32/int64 numpy array is kept as
    is (no copy when contiguous); other integers and lists are converted (int32 where they fit)."""
    given = isinstance(a, np.ndarray)       # a list has no width of its own: int32 if it fits
    arr = np.asarray(a)
    if arr.size == 0 and arr.dtype.kind == "f":       # np.asarray([]) is float64: an empty list
        arr = arr.astype(dtype or np.int32)
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"tpp.sparse: {what} must hold integers, got dtype {arr.dtype}")
    if dtype is None:
        if given and arr.dtype in INDEX_DTYPES:
            dtype = arr.dtype
        else:
            hi = int(arr.max()) if arr.size else 0
            lo = int(arr.min()) if arr.size else 0
            dtype = index_dtype_for(max(hi, -lo))
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(dtype).max:
        raise ArgumentError(f"tpp.sparse: {what} holds {int(arr.max())}, beyond {np.dtype(dtype)}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_indptr(ax: Axis, npos: int) -> int:
    p = ax.indptr
    what = f"indptr of axis {ax.name!r}"
    if p.ndim != 1 or p.shape[0] != npos + 1:
        raise ShapeError(f"tpp.sparse: {what} must have {npos + 1} entries (one per {npos} "
                         f"parent positions, plus one), got shape {p.shape}")
    if p[0] != 0:
        raise ArgumentError(f"tpp.sparse: {what} must start at 0, got {int(p[0])}")
    d = np.diff(p)
    if d.size and d.min() < 0:
        q = int(np.argmax(d < 0))
        raise ArgumentError(f"tpp.sparse: {what} must be non-decreasing: indptr[{q + 1}]="
                            f"{int(p[q + 1])} < indptr[{q}]={int(p[q])}")
    if ax.kind is AxisKind.DENSE_VARIABLE and d.size and d.max() > ax.extent:
        raise ArgumentError(f"tpp.sparse: {what}: a run of {int(d.max())} exceeds the axis's "
                            f"extent {ax.extent}")
    return int(p[-1])


def _check_indices(ax: Axis, count: int) -> None:
    idx = ax.indices
    what = f"indices of axis {ax.name!r}"
    if ax.kind is AxisKind.SPARSE_VARIABLE and idx.ndim != 1:
        raise ShapeError(f"tpp.sparse: {what} must be 1-D, got shape {idx.shape}")
    if idx.size != count:
        raise ShapeError(f"tpp.sparse: {what} must have {count} entries, got {idx.size} "
                         f"(shape {idx.shape})")
    if not count:
        return
    flat = idx.reshape(-1)
    bad = (flat < 0) | (flat >= ax.extent)
    if ax.padded:
        bad &= flat != PAD
    if bad.any():
        q = int(np.argmax(bad))
        pad = f" or PAD ({PAD})" if ax.padded else ""
        raise ArgumentError(f"tpp.sparse: {what}: entry {q} is {int(flat[q])}, out of range "
                            f"[0, {ax.extent}){pad}")


def check_axes(axes: tuple[Axis, ...], shape: tuple[int, ...]) -> int:
    """Validate the chain against `shape`; return the number of positions of the last axis."""
    if not axes:
        raise ArgumentError("tpp.sparse: a format needs at least one axis")
    dtypes = set()
    for ax in axes:
        for arr, nm in ((ax.indptr, "indptr"), (ax.indices, "indices")):
            if arr is None:
                continue
            if not isinstance(arr, np.ndarray) or arr.dtype not in INDEX_DTYPES:
                raise DTypeError(f"tpp.sparse: {nm} of axis {ax.name!r} must be an int32 or "
                                 f"int64 numpy array, got {getattr(arr, 'dtype', type(arr))}")
            if not arr.flags.c_contiguous:
                raise ShapeError(f"tpp.sparse: {nm} of axis {ax.name!r} must be C-contiguous")
            dtypes.add(arr.dtype)
        need_ptr, need_idx = ax.kind.variable, ax.kind.sparse
        if (ax.indptr is not None) != need_ptr or (ax.indices is not None) != need_idx:
            raise ArgumentError(f"tpp.sparse: axis {ax.name!r} ({ax.kind.value}) takes "
                                f"{'indptr ' if need_ptr else ''}{'indices' if need_idx else ''}"
                                f"{'no arrays' if not (need_ptr or need_idx) else ''}")
        if ax.extent < 0 or (ax.kind is AxisKind.SPARSE_FIXED and (ax.nnz is None or ax.nnz < 0)):
            raise ArgumentError(f"tpp.sparse: axis {ax.name!r}: extent and nnz must be >= 0")
        if ax.padded and ax.kind is not AxisKind.SPARSE_FIXED:
            raise ArgumentError(f"tpp.sparse: axis {ax.name!r}: only sparse_fixed axes are padded")
        if not 0 <= ax.dim < len(shape):
            raise ArgumentError(f"tpp.sparse: axis {ax.name!r}: dim {ax.dim} not in 0..{len(shape) - 1}")
    if len(dtypes) > 1:
        raise DTypeError(f"tpp.sparse: all index arrays of a matrix share one dtype, got "
                         f"{sorted(str(d) for d in dtypes)}")
    for d, n in enumerate(shape):
        ext = int(np.prod([ax.extent for ax in axes if ax.dim == d], dtype=np.int64))
        if ext != n:
            raise ShapeError(f"tpp.sparse: the axes of dim {d} span {ext}, shape says {n}")
    npos = 1
    for ax in axes:
        if ax.kind is AxisKind.DENSE_FIXED:
            npos *= ax.extent
        elif ax.kind is AxisKind.SPARSE_FIXED:
            npos *= ax.nnz
            _check_indices(ax, npos)
        else:
            npos = _check_indptr(ax, npos)
            if ax.kind is AxisKind.SPARSE_VARIABLE:
                _check_indices(ax, npos)
    return npos


def walk(axes: tuple[Axis, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each axis, (parent position, coordinate) of each of its positions (int64)."""
    out, npos = [], 1
    for ax in axes:
        if ax.kind is AxisKind.DENSE_FIXED:
            par = np.repeat(np.arange(npos, dtype=np.int64), ax.extent)
            crd = np.tile(np.arange(ax.extent, dtype=np.int64), npos)
        elif ax.kind is AxisKind.SPARSE_FIXED:
            par = np.repeat(np.arange(npos, dtype=np.int64), ax.nnz)
            crd = ax.indices.reshape(-1).astype(np.int64)
        else:
            ptr = ax.indptr.astype(np.int64)
            par = np.repeat(np.arange(npos, dtype=np.int64), np.diff(ptr))
            crd = (ax.indices.astype(np.int64) if ax.kind is AxisKind.SPARSE_VARIABLE
                   else np.arange(ptr[-1], dtype=np.int64) - ptr[par])
        out.append((par, crd))
        npos = crd.shape[0]
    return out


def leaf_coords(axes, levels=None) -> tuple[list[np.ndarray], np.ndarray]:
    """Each axis's coordinate at every position of the last axis, and the mask of pad slots."""
    levels = walk(axes) if levels is None else levels
    n = levels[-1][1].shape[0]
    pos, pad = np.arange(n, dtype=np.int64), np.zeros(n, bool)
    coords = [None] * len(axes)
    for a in range(len(axes) - 1, -1, -1):
        par, crd = levels[a]
        coords[a] = crd[pos]
        pad |= coords[a] == PAD
        pos = par[pos]
    return coords, pad


def check_order(axes, levels) -> None:
    """Within each parent run: coordinates strictly increasing on unique axes (sorted, no
    duplicates), non-decreasing on the others; pads only after a run's real entries. With a
    non-unique axis (COO), the whole coordinate tuples must be strictly increasing too."""
    for ax, (par, crd) in zip(axes, levels):
        if crd.shape[0] < 2 or not ax.kind.sparse:
            continue
        same = par[1:] == par[:-1]
        real = crd != PAD
        if ax.padded and (same & ~real[:-1] & real[1:]).any():
            q = int(np.argmax(same & ~real[:-1] & real[1:]))
            raise ArgumentError(f"tpp.sparse: indices of axis {ax.name!r}: entry {q + 1} follows "
                                f"a PAD slot in the same row; padding must come last")
        both = same & real[:-1] & real[1:]
        d = crd[1:] - crd[:-1]
        _raise_order(ax.name, both & (d < 0), both & (d == 0) if ax.unique else None, crd)
    if not all(ax.unique for ax in axes):
        coords, pad = leaf_coords(axes, levels)
        coords = [c[~pad] for c in coords]
        if coords[0].shape[0] < 2:
            return
        cmp = np.zeros(coords[0].shape[0] - 1, np.int64)
        for c in reversed(coords):       # the first differing axis decides: lexicographic order
            d = np.sign(c[1:] - c[:-1])
            cmp = np.where(d != 0, d, cmp)
        _raise_order("/".join(ax.name for ax in axes), cmp < 0, cmp == 0, None)


def _raise_order(name, unsorted, dup, crd) -> None:
    hint = "; pass canonical=True to sort them and sum duplicates"
    if unsorted.any():
        q = int(np.argmax(unsorted))
        at = f" ({int(crd[q + 1])} after {int(crd[q])})" if crd is not None else ""
        raise ArgumentError(f"tpp.sparse: indices of axis {name!r} are not sorted within a row: "
                            f"entry {q + 1}{at}{hint}")
    if dup is not None and dup.any():
        q = int(np.argmax(dup))
        at = f" ({int(crd[q])})" if crd is not None else ""
        raise ArgumentError(f"tpp.sparse: indices of axis {name!r} hold a duplicate: entries "
                            f"{q} and {q + 1}{at}{hint}")
