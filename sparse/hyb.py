"""Decompositions: a matrix cut into parts, each in its own format (SparseTIR's composable
formats). `decompose(a, rules)` applies user rules; `hyb(a, col_parts, buckets)` is SparseTIR's
hybrid format written as rules: column partitions x power-of-two ELL row-length buckets, rows
longer than the widest bucket split into several ELL rows. A kernel runs one loop nest per
part and adds each part's rows into the output rows its row map names."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ArgumentError, ShapeError
from .axes import index_dtype_for, leaf_coords
from .convert import from_coords
from .formats import Format, SparseMatrix

HYB_MAX_WIDTH = 32     # default widest bucket: wider ELL rows waste lanes on padding in short rows
_FORMATS = ("csr", "coo", "ell", "bsr")


@dataclass(frozen=True, eq=False)
class Rule:
    """Which nonzeros go to a part, and in which format. A rule takes, among the nonzeros no
    earlier rule took, those with a column in `cols` ([lo, hi); None: all) and a row in `rows`
    (row indices; None: all) whose row holds between `min_nnz` and `max_nnz` (None: no limit)
    of them. Format parameters: `width` for "ell" (default: the longest row taken; longer rows
    are split into several ELL rows of `width`), `block` (r, c) for "bsr" (required).
    `whole_pieces` (ell with a width): take only each row's first floor(L / width) * width
    entries (whole ELL rows, no padding) and leave the rest of the row to later rules."""
    format: str
    cols: tuple[int, int] | None = None
    rows: np.ndarray | None = None
    min_nnz: int = 1
    max_nnz: int | None = None
    width: int | None = None
    block: tuple[int, int] | None = None
    whole_pieces: bool = False

    def __post_init__(self):
        if self.format not in _FORMATS:
            raise ArgumentError(f"tpp.sparse: Rule format={self.format!r}; use one of {_FORMATS}")
        if self.width is not None and (self.format != "ell" or int(self.width) < 1):
            raise ArgumentError(f"tpp.sparse: Rule width={self.width!r} is for 'ell', >= 1")
        if self.whole_pieces and self.width is None:
            raise ArgumentError("tpp.sparse: Rule whole_pieces=True needs format='ell' and a width")
        if (self.block is None) != (self.format != "bsr"):
            raise ArgumentError("tpp.sparse: Rule block=(r, c) is required for 'bsr' (only)")
        if self.max_nnz is not None and self.max_nnz < self.min_nnz:
            raise ArgumentError(f"tpp.sparse: Rule max_nnz={self.max_nnz} < min_nnz={self.min_nnz}")
        if self.cols is not None and (len(self.cols) != 2 or self.cols[0] > self.cols[1]):
            raise ArgumentError(f"tpp.sparse: Rule cols={self.cols!r} must be (lo, hi), lo <= hi")


@dataclass(frozen=True, eq=False)
class Part:
    """One part: `matrix` in its own format and `rows`, the output row of each of its rows
    (None: the identity, the part has the whole shape: "coo" and "bsr" parts). `rows` may
    repeat (an ELL part holding the pieces of split rows: `unique_rows` False), and a row's
    entries may lie in several parts (column partitions, a long row's remainder), so a kernel
    combines a part's rows into the output (adds them; max/min for those reductions) rather
    than storing them."""
    matrix: SparseMatrix
    rows: np.ndarray | None
    rule: Rule
    unique_rows: bool = True
    # for each stored slot of `matrix` (values' C order): the entry's position in the source's
    # canonical row-major order (a.tocsr()'s values, = a.tocoo()'s), -1 for ELL padding and a
    # BSR block's stored zeros: where a kernel reads per-edge data (gspmm's `edge`) given in
    # the source's order, or writes an SDDMM's result back into it
    source: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Decomposed:
    """A matrix as the sum of its parts: every stored entry of the original in exactly one."""
    shape: tuple[int, int]
    parts: tuple[Part, ...]
    dtype: np.dtype = field(default=np.dtype(np.float32))

    @property
    def formats(self) -> tuple[Format, ...]:
        return tuple(p.matrix.format for p in self.parts)

    @property
    def nnz(self) -> int:
        return sum(p.matrix.nnz for p in self.parts)

    def to_dense(self) -> np.ndarray:
        """The sum of the parts, as a kernel computes it (an f32 accumulator, rounded once to
        the dtype): exact, since each entry has its value in one part and zeros (a BSR block's
        padding) in the others. Adding, not assigning, keeps those zeros from overwriting."""
        dense = np.zeros(self.shape, np.float32)
        for p in self.parts:
            (r, c), v = p.matrix.coords()
            np.add.at(dense, (r if p.rows is None else p.rows[r], c), v.astype(np.float32))
        return dense.astype(self.dtype)

    def __repr__(self) -> str:
        return (f"Decomposed(shape={self.shape}, nnz={self.nnz}, parts=["
                + ", ".join(f"{p.matrix.format}x{p.matrix.shape[0]}" for p in self.parts) + "])")


def _as_matrix(a) -> SparseMatrix:
    if isinstance(a, SparseMatrix):
        return a
    from .scipy_io import from_scipy      # scipy input: the caller's convenience
    return from_scipy(a)


def decompose(a, rules) -> Decomposed:
    """Cut `a` (a SparseMatrix or scipy.sparse) into parts by `rules` (a list of Rule, applied
    in order). Every stored entry must be taken by some rule: end the list with a catch-all such
    as Rule("csr"); entries left over raise ArgumentError."""
    a = _as_matrix(a)
    if a.ndim != 2:
        raise ShapeError("tpp.sparse: decompose needs a 2-D matrix")
    m, n = a.shape
    csr = a.tocsr()           # sorted by (row, col): a row's pieces stay in column order
    (row, col), vals = csr.coords()
    taken = np.zeros(row.size, bool)
    parts = []
    for rule in rules:
        if not isinstance(rule, Rule):
            raise ArgumentError(f"tpp.sparse: rules must be Rule records, got {type(rule).__name__}")
        sel = ~taken
        if rule.cols is not None:
            sel &= (col >= rule.cols[0]) & (col < rule.cols[1])
        if rule.rows is not None:
            rr = np.asarray(rule.rows, np.int64).reshape(-1)
            if rr.size and (rr.min() < 0 or rr.max() >= m):
                raise ArgumentError(f"tpp.sparse: Rule rows must be in [0, {m}), got "
                                    f"{int(rr.min())}..{int(rr.max())}")
            rmask = np.zeros(m, bool)
            rmask[rr] = True
            sel &= rmask[row]
        counts = np.bincount(row[sel], minlength=m)
        ok = counts >= max(rule.min_nnz, 1)
        if rule.max_nnz is not None:
            ok &= counts <= rule.max_nnz
        sel &= ok[row]
        if rule.whole_pieces:      # rank of each entry within its row's selected entries
            first = np.concatenate(([0], np.cumsum(np.bincount(row[sel], minlength=m))))
            rank = np.cumsum(sel) - 1 - first[row]
            sel &= rank < (counts[row] // rule.width) * rule.width
        if sel.any():
            part = _part(rule, row[sel], col[sel], vals[sel], (m, n), a.index_dtype)
            parts.append(_with_source(part, row * max(n, 1) + col, a.index_dtype))
        taken |= sel
    if not taken.all():
        q = int(np.argmin(taken))
        raise ArgumentError(f"tpp.sparse: the rules leave {int((~taken).sum())} entries unassigned "
                            f"(the first at row {int(row[q])}, col {int(col[q])}); end them with "
                            f"a catch-all such as Rule('csr')")
    return Decomposed((m, n), tuple(parts), a.dtype)


def _with_source(part: Part, keys, index_dtype) -> Part:
    """`part` with its `source` map: its slots' (row, col) looked up among the source's sorted
    row-major keys (row * n + col; int64: m, n < 2**31 keep it below 2**62)."""
    mat = part.matrix
    (r, c), _ = mat.coords()
    if part.rows is not None:
        r = part.rows[r].astype(np.int64)
    want = r * max(mat.shape[1], 1) + c
    at = np.minimum(np.searchsorted(keys, want), max(keys.size - 1, 0))
    found = np.where(keys[at] == want, at, -1) if keys.size else np.full(want.size, -1)
    src = np.full(mat.values.size, -1, index_dtype_for(keys.size, index_dtype))
    real = ~leaf_coords(mat.axes)[1]          # not an ELL pad slot: coords() listed these
    src[real] = found
    return Part(mat, part.rows, part.rule, part.unique_rows, src)


def _part(rule: Rule, row, col, vals, shape, index_dtype) -> Part:
    m, n = shape
    if rule.format in ("coo", "bsr"):
        mat = from_coords(row, col, vals, shape, rule.format, block=rule.block,
                          index_dtype=index_dtype, sum_duplicates=False)
        return Part(mat, None, rule)
    # csr and ell parts hold only their rows (the part's row i is output row rows[i])
    urows, local = np.unique(row, return_inverse=True)
    if rule.format == "csr":
        mat = from_coords(local, col, vals, (urows.size, n), "csr", index_dtype=index_dtype,
                          sum_duplicates=False)
        return Part(mat, urows.astype(index_dtype_for(m, index_dtype)), rule)
    counts = np.bincount(local, minlength=urows.size)
    width = int(rule.width) if rule.width is not None else int(counts.max())
    # a row of L entries becomes ceil(L / width) ELL rows; entry k of the row goes to piece
    # k // width, slot k % width (entries arrive sorted by (row, col): pieces keep column order)
    starts = np.concatenate(([0], np.cumsum(counts)))
    rank = np.arange(row.size) - starts[local]
    pieces = -(-counts // width)
    first = np.concatenate(([0], np.cumsum(pieces)))
    ell_row = first[local] + rank // width
    out_rows = np.repeat(urows, pieces)
    it = index_dtype_for(max(m, n), index_dtype)
    mat = from_coords(ell_row, col, vals, (int(first[-1]), n), "ell", width=width, index_dtype=it,
                      sum_duplicates=False)
    return Part(mat, out_rows.astype(it), rule, unique_rows=bool((pieces <= 1).all()))


def hyb_rules(a, col_parts: int = 1, buckets=None) -> list[Rule]:
    """The rules of hyb(): for each of `col_parts` column ranges (equal widths, the last one
    shorter), one ELL rule per bucket width w taking the rows whose count in that range is in
    (previous width, w]. A row longer than the widest bucket W first gives its whole pieces
    of W entries to an ELL part of width W (whole_pieces), its remaining L % W entries then
    go to the bucket that fits them (less padding than one padded piece of W).
    Default buckets: 1, 2, 4, ... up to the longest row (within a range), at most HYB_MAX_WIDTH."""
    a = _as_matrix(a)
    m, n = a.shape
    if not isinstance(col_parts, (int, np.integer)) or col_parts < 1:
        raise ArgumentError(f"tpp.sparse: col_parts={col_parts!r} must be an integer >= 1")
    step = max(1, -(-n // int(col_parts)))
    ranges = [(lo, min(n, lo + step)) for lo in range(0, n, step)]
    if buckets is None:
        (row, col), _ = a.coords()
        part = col // step
        longest = int(np.bincount(row * len(ranges) + part).max()) if row.size else 0
        w, buckets = 1, []
        while longest and w <= HYB_MAX_WIDTH:
            buckets.append(w)
            if w >= longest:
                break
            w *= 2
    else:
        try:
            buckets = sorted({int(b) for b in buckets})
        except (TypeError, ValueError):
            raise ArgumentError(f"tpp.sparse: buckets={buckets!r} must be a list of widths") from None
        if not buckets or buckets[0] < 1:
            raise ArgumentError(f"tpp.sparse: buckets={buckets!r} must be widths >= 1")
    rules = []
    for lo, hi in ranges if buckets else ():       # no buckets: an empty matrix, no parts
        prev, wide = 0, buckets[-1]
        rules.append(Rule("ell", cols=(lo, hi), min_nnz=wide + 1, width=wide, whole_pieces=True))
        for i, w in enumerate(buckets):
            last = i == len(buckets) - 1
            rules.append(Rule("ell", cols=(lo, hi), min_nnz=prev + 1,
                              max_nnz=None if last else w, width=w))
            prev = w
    return rules


def hyb(a, col_parts: int = 1, buckets=None) -> Decomposed:
    """SparseTIR's hybrid format (hyb_rules(a, col_parts, buckets) applied by decompose)."""
    a = _as_matrix(a)
    return decompose(a, hyb_rules(a, col_parts, buckets))
