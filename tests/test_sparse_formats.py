"""tpp.sparse formats (no kernels): every format against scipy / numpy on random patterns (empty
rows, one column, a row holding half the nonzeros, rectangular and empty shapes), f32 and bf16
values, int32 and int64 indices; hyb and rule decompositions reproduce the matrix exactly;
zero-copy with scipy; every validation error."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import tpp.sparse as ts
from tpp.errors import ArgumentError, DTypeError, ShapeError, TppError

BF16 = np.dtype(ml_dtypes.bfloat16)
PATTERNS = ("uniform", "empty_rows", "one_col", "heavy_row")


def random_csr(seed, m, n, density, pattern, index_dtype=np.int32, dtype=np.float32):
    """A canonical scipy csr_array (f32 data holding dtype-rounded values) of the pattern."""
    rng = np.random.default_rng(seed)
    if pattern == "one_col":
        n = 1
    cells = m * n
    k = int(round(density * cells))
    flat = rng.choice(cells, size=k, replace=False) if cells else np.zeros(0, np.int64)
    row, col = flat // max(n, 1), flat % max(n, 1)
    if pattern == "empty_rows" and m:
        keep = row % 3 != 0                       # every third row empty
        row, col = row[keep], col[keep]
    if pattern == "heavy_row" and m and n:
        r = rng.integers(m)                       # one row holds (about) half the nonzeros
        extra = rng.choice(n, size=min(n, max(row.size, 1)), replace=False)
        keep = row != r
        row = np.concatenate([row[keep], np.full(extra.size, r)])
        col = np.concatenate([col[keep], extra])
    vals = rng.standard_normal(row.size).astype(dtype).astype(np.float32)
    a = sp.csr_array(sp.coo_array((vals, (row, col)), shape=(m, n)))
    a.sum_duplicates()
    a.indptr, a.indices = a.indptr.astype(index_dtype), a.indices.astype(index_dtype)
    return a


matrices = st.builds(
    lambda seed, m, n, density, pattern, it, dt: (random_csr(seed, m, n, density, pattern, it, dt), it, dt),
    st.integers(0, 2**31), st.integers(0, 37), st.integers(0, 41), st.sampled_from([0.0, 0.05, 0.3, 0.9]),
    st.sampled_from(PATTERNS), st.sampled_from([np.int32, np.int64]), st.sampled_from([np.float32, BF16]))


def divisor(n, rng):
    ds = [d for d in range(1, max(n, 1) + 1) if n % d == 0] or [1]
    return int(rng.choice(ds))


@given(matrices, st.integers(0, 1000))
def test_formats_round_trip(case, seed):
    a, it, dt = case
    rng = np.random.default_rng(seed)
    ref = a.toarray()
    m = ts.from_scipy(a, dtype="bf16" if dt == BF16 else None)
    assert m.format.name == "csr" and m.dtype == dt and m.index_dtype == it and m.nnz == a.nnz
    block = (divisor(a.shape[0], rng), divisor(a.shape[1], rng))
    forms = [(m, False), (m.tocoo(), False), (m.toell(), False), (m.tobsr(block), False),
             (m.T, True), (m.T.tocsr(), True), (m.T.toell(), True), (m.T.tocoo().T, False),
             (ts.from_scipy(a.tocsc(), dtype=dt), False),
             (ts.from_scipy(a.tocoo(), dtype=dt, canonical=True), False),
             (ts.from_scipy(a.tobsr(block), dtype=dt, canonical=True), False),
             (ts.from_dense(ref, "ell", dtype=dt), False), (ts.from_dense(ref, "coo", dtype=dt), False)]
    for i, (f, transposed) in enumerate(forms):
        want_it = np.int32 if i >= len(forms) - 2 else it      # from_dense: int32 where it fits
        want = ref.T if transposed else ref
        d = f.to_dense()
        assert d.dtype == dt and d.shape == want.shape
        np.testing.assert_array_equal(d.astype(np.float32), want)
        s = f.to_scipy()
        assert s.dtype == np.float32
        np.testing.assert_array_equal(s.toarray(), want)
        back = ts.from_scipy(s, dtype=dt, canonical=f.format.name == "coo_t")
        np.testing.assert_array_equal(back.to_dense(), d)
        assert f.tocsr().nnz == f.nnz           # BSR's stored zeros stay explicit zeros
        assert f.nnz == a.nnz or (f.format.block and f.nnz == f.values.size >= a.nnz)
        for arr in [x for ax in f.axes for x in (ax.indptr, ax.indices) if x is not None] + [f.values]:
            assert arr.flags.c_contiguous and (arr is f.values or arr.dtype == want_it)
    assert m.toell().format.index_dtype == str(np.dtype(it))      # conversions keep the width
    assert forms[-1][0].format.index_dtype == "int32"                # built here: int32 fits


@given(matrices, st.integers(1, 5), st.sampled_from([None, [1], [2, 4], [1, 2, 4, 8], [3, 5], [64]]))
def test_hyb_is_exact(case, col_parts, buckets):
    a, it, dt = case
    m = ts.from_scipy(a, dtype=dt)
    h = ts.hyb(m, col_parts=col_parts, buckets=buckets)
    d = h.to_dense()
    assert d.dtype == dt and h.nnz == a.nnz
    np.testing.assert_array_equal(d.astype(np.float32), a.toarray())
    widths = sorted(set(buckets)) if buckets else [2**k for k in range(6) if 2**k <= ts.HYB_MAX_WIDTH]
    step = max(1, -(-a.shape[1] // col_parts))
    for p in h.parts:
        mat = p.matrix
        assert mat.format.name == "ell" and mat.format.axes[1].size in widths
        lo, hi = p.rule.cols
        assert hi - lo <= step
        (r, c), _ = mat.coords()
        assert ((c >= lo) & (c < hi)).all()
        idx = mat.axes[1].indices
        assert idx.dtype == mat.index_dtype
        assert (mat.values[idx == ts.PAD] == 0).all()
        assert p.rows.shape == (mat.shape[0],) and (np.diff(p.rows) >= 0).all()
        assert p.unique_rows == (np.unique(p.rows).size == p.rows.size)


def test_hyb_splits_long_rows_and_buckets():
    dense = np.zeros((6, 100), np.float32)
    dense[2, :70] = np.arange(1, 71)        # 70 entries: 2 whole rows of 32, 6 left -> bucket 8
    dense[4, [1, 5, 9]] = 7                 # 3 -> bucket 4
    dense[5, 50] = -1                       # 1 -> bucket 1
    h = ts.hyb(ts.from_dense(dense))
    assert [p.matrix.format.axes[1].size for p in h.parts] == [32, 1, 4, 8]
    wide, rest = h.parts[0], h.parts[3]
    assert list(wide.rows) == [2, 2] and not wide.unique_rows and (wide.matrix.axes[1].indices >= 0).all()
    np.testing.assert_array_equal(wide.matrix.axes[1].indices.ravel(), np.arange(64))
    assert list(rest.rows) == [2] and list(rest.matrix.axes[1].indices[0]) == [64, 65, 66, 67, 68, 69, -1, -1]
    assert sum(p.matrix.values.size for p in h.parts) == 64 + 1 + 4 + 8
    # a rule list without whole_pieces splits a long row into padded pieces of the width
    h3 = ts.decompose(ts.from_dense(dense), [ts.Rule("ell", min_nnz=33, width=32), ts.Rule("csr")])
    assert list(h3.parts[0].rows) == [2, 2, 2] and (h3.parts[0].matrix.axes[1].indices[2, 6:] == ts.PAD).all()
    np.testing.assert_array_equal(h3.to_dense(), dense)
    np.testing.assert_array_equal(h.to_dense(), dense)
    h2 = ts.hyb(ts.from_dense(dense), col_parts=2, buckets=[2, 8])
    assert all(p.rule.cols in [(0, 50), (50, 100)] for p in h2.parts)
    np.testing.assert_array_equal(h2.to_dense(), dense)
    assert ts.hyb(sp.csr_array(dense)).nnz == 74        # scipy input accepted


def test_decompose_user_rules():
    a = random_csr(3, 40, 30, 0.2, "heavy_row")
    m = ts.from_scipy(a)
    long_rows = np.flatnonzero(np.diff(a.indptr) > 8)
    rules = [ts.Rule("csr", rows=long_rows), ts.Rule("ell", cols=(0, 15), width=4),
             ts.Rule("bsr", cols=(15, 30), max_nnz=2, block=(2, 3)), ts.Rule("coo")]
    h = ts.decompose(m, rules)
    assert [p.matrix.format.name for p in h.parts] == ["csr", "ell", "bsr", "coo"]
    assert list(h.parts[0].rows) == list(long_rows)
    assert h.parts[2].rows is None and h.parts[3].rows is None
    np.testing.assert_array_equal(h.to_dense(), a.toarray())
    with pytest.raises(ArgumentError, match="unassigned"):
        ts.decompose(m, rules[1:3])
    for bad in [dict(format="dia"), dict(format="ell", width=0), dict(format="bsr"),
                dict(format="csr", block=(1, 1)), dict(format="csr", min_nnz=3, max_nnz=2),
                dict(format="csr", cols=(5, 2)), dict(format="ell", whole_pieces=True)]:
        with pytest.raises(ArgumentError):
            ts.Rule(**bad)
    with pytest.raises(ArgumentError, match="Rule rows"):
        ts.decompose(m, [ts.Rule("csr", rows=[40])])
    with pytest.raises(ArgumentError, match="Rule records"):
        ts.decompose(m, ["csr"])
    with pytest.raises(ArgumentError, match="col_parts"):
        ts.hyb(m, col_parts=0)
    with pytest.raises(ArgumentError, match="buckets"):
        ts.hyb(m, buckets=[0, 2])


@pytest.mark.parametrize("it", [np.int32, np.int64])
def test_zero_copy_with_scipy(it):
    a = random_csr(1, 20, 24, 0.3, "uniform", it)
    m = ts.from_scipy(a)
    for mine, theirs in ((m.values, a.data), (m.axes[1].indices, a.indices), (m.axes[1].indptr, a.indptr)):
        assert np.shares_memory(mine, theirs)
    s = m.to_scipy()
    assert all(np.shares_memory(x, y) for x, y in ((s.data, a.data), (s.indices, a.indices),
                                                   (s.indptr, a.indptr)))
    c = a.tocsc()
    mc = ts.from_scipy(c)
    assert mc.format.name == "csc" and np.shares_memory(mc.axes[1].indices, c.indices)
    assert np.shares_memory(mc.to_scipy().indices, c.indices)
    o = a.tocoo()
    mo = ts.from_scipy(o)
    assert np.shares_memory(mo.axes[0].indices, o.row) and np.shares_memory(mo.values, o.data)
    assert np.shares_memory(mo.to_scipy().col, o.col)
    b = sp.bsr_array(a.toarray(), blocksize=(4, 3))
    b.sort_indices()                        # scipy's bsr from dense leaves them unsorted
    b.indptr, b.indices = b.indptr.astype(it), b.indices.astype(it)
    mb = ts.from_scipy(b)
    assert mb.format.block == (4, 3) and np.shares_memory(mb.values, b.data)
    assert np.shares_memory(mb.to_scipy().data, b.data)
    assert mb.T.format.name == "bsr_t" and np.shares_memory(mb.T.values, b.data)
    # bf16: scipy cannot hold it, to_scipy converts the values (the indices are still shared)
    h = m.astype("bf16")
    s16 = h.to_scipy()
    assert s16.dtype == np.float32 and np.shares_memory(s16.indices, a.indices)
    np.testing.assert_array_equal(s16.toarray(), a.toarray().astype(BF16).astype(np.float32))
    # float64 data is converted (a copy), the indices are still shared
    m64 = ts.from_scipy(a.astype(np.float64))
    assert m64.dtype == np.float32 and not np.shares_memory(m64.values, a.data)


def test_format_is_a_key():
    a, b = random_csr(1, 10, 12, 0.3, "uniform"), random_csr(2, 30, 5, 0.5, "uniform")
    fa, fb = ts.from_scipy(a).format, ts.from_scipy(b).format
    assert fa == fb and hash(fa) == hash(fb) and str(fa) == "csr[f32,int32]"
    assert ts.from_scipy(a).astype("bf16").format != fa
    assert ts.from_scipy(random_csr(1, 10, 12, 0.3, "uniform", np.int64)).format != fa
    e4, e8 = ts.from_scipy(a).toell(4 + 6), ts.from_scipy(a).toell(8 + 6)
    assert e4.format != e8.format and str(e4.format) == "ell(10)[f32,int32]"
    assert ts.from_scipy(a).T.format.name == "csc"
    assert {fa: 1}[fb] == 1


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0), (3, 4)])
def test_empty(shape):
    z = np.zeros(shape, np.float32)
    for f in ("csr", "coo", "ell"):
        m = ts.from_dense(z, f)
        assert m.nnz == 0 and m.to_dense().shape == shape
        assert m.to_scipy().shape == shape and m.T.to_dense().shape == shape[::-1]
    assert ts.from_dense(z, "bsr", block=(1, 1)).nnz == 0
    assert ts.hyb(ts.from_dense(z), col_parts=3).parts == ()
    assert ts.csr(np.zeros(shape[0] + 1, np.int32), [], [], shape).nnz == 0
    assert ts.coo([], [], [], shape).to_dense().shape == shape
    assert ts.from_scipy(sp.csr_array(shape, dtype=np.float32)).shape == shape


def test_canonical_sums_duplicates_like_scipy():
    rng = np.random.default_rng(5)
    row, col = rng.integers(0, 6, 40), rng.integers(0, 7, 40)
    vals = rng.standard_normal(40).astype(np.float32)
    want = sp.coo_array((vals, (row, col)), shape=(6, 7)).toarray()
    m = ts.coo(row, col, vals, (6, 7), canonical=True)
    np.testing.assert_allclose(m.to_dense(), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ArgumentError, match="canonical=True"):
        ts.coo(row, col, vals, (6, 7))
    # a csr with unsorted columns and duplicates (built directly: scipy's constructors sum them)
    raw = sp.csr_array((vals[np.argsort(row, kind="stable")], col[np.argsort(row, kind="stable")],
                        np.concatenate([[0], np.cumsum(np.bincount(row, minlength=6))])), shape=(6, 7))
    with pytest.raises(ArgumentError):
        ts.from_scipy(raw)
    c = ts.from_scipy(raw, canonical=True)
    np.testing.assert_allclose(c.to_dense(), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(raw.indices, col[np.argsort(row, kind="stable")])  # untouched
    fixed = raw.copy()
    fixed.sum_duplicates()                                  # scipy's canonical form, same arrays
    np.testing.assert_array_equal(c.axes[1].indptr, fixed.indptr)
    np.testing.assert_array_equal(c.axes[1].indices, fixed.indices)
    np.testing.assert_allclose(c.values, fixed.data, rtol=1e-6, atol=1e-6)
    # bf16: duplicates summed in f32, rounded once
    c16 = ts.coo([0, 0, 0], [1, 1, 1], np.array([1, 2**-8, 2**-8], BF16), (1, 2), canonical=True)
    assert c16.values.dtype == BF16 and float(c16.values[0]) == float(np.float32(1 + 2**-7).astype(BF16))
    bl = ts.bsr([0, 2], [1, 1], np.ones((2, 2, 2)), (2, 4), canonical=True)
    np.testing.assert_array_equal(bl.to_dense(), [[0, 0, 2, 2], [0, 0, 2, 2]])
    e = ts.coo([0, 0], [1, 1], [0.0, 0.0], (1, 2), canonical=True)  # explicit zeros are kept
    assert e.nnz == 1


def test_custom_axis_chain():
    """A chain no constructor names: each row stores its first L_i columns densely (ragged)."""
    ptr = np.array([0, 2, 2, 5], np.int32)
    axes = (ts.dense_fixed(3, 0, "row"), ts.dense_variable(4, 1, ptr, "col"))
    m = ts.SparseMatrix((3, 4), axes, np.arange(1, 6, dtype=np.float32))
    assert m.format.name == "custom" and m.nnz == 5
    np.testing.assert_array_equal(m.to_dense(), [[1, 2, 0, 0], [0, 0, 0, 0], [3, 4, 5, 0]])
    np.testing.assert_array_equal(m.tocsr().to_dense(), m.to_dense())
    with pytest.raises(ArgumentError, match="exceeds"):
        ts.SparseMatrix((3, 4), (axes[0], ts.dense_variable(4, 1, np.array([0, 5, 5, 5], np.int32))),
                        np.zeros(5, np.float32))


I32 = np.int32
BAD = [  # (constructor, args, error, message fragment)
    (ts.csr, ([0, 1, 2], [0, 5], [1, 2], (2, 5)), ArgumentError, r"out of range \[0, 5\)"),
    (ts.csr, ([0, 1, 2], [0, -2], [1, 2], (2, 5)), ArgumentError, "out of range"),
    (ts.csr, ([0, 2, 1], [0, 1], [1, 2], (2, 5)), ArgumentError, "non-decreasing"),
    (ts.csr, ([0, 1], [0], [1], (2, 5)), ShapeError, "must have 3 entries"),
    (ts.csr, ([1, 1, 2], [0, 1], [1, 2], (2, 5)), ArgumentError, "start at 0"),
    (ts.csr, ([0, 1, 3], [0, 1], [1, 2], (2, 5)), ShapeError, "must have 3 entries"),
    (ts.csr, ([0, 2, 2], [3, 1], [1, 2], (2, 5)), ArgumentError, "not sorted"),
    (ts.csr, ([0, 2, 2], [1, 1], [1, 2], (2, 5)), ArgumentError, "duplicate"),
    (ts.csr, ([0, 1, 2], [0, 1], [1, 2, 3], (2, 5)), ShapeError, "values must have 2"),
    (ts.csr, ([0, 1, 2], [0, 1], [1j, 2], (2, 5)), DTypeError, "real numbers"),
    (ts.csr, ([0, 1, 2], [0.0, 1.5], [1, 2], (2, 5)), DTypeError, "integers"),
    (ts.csr, ([0, 1, 2], [0, 1], [1, 2], (2, -5)), ShapeError, "non-negative"),
    (ts.csr, ([0, 1, 2], [0, 1], [1, 2], (2,)), ShapeError, r"\(rows, cols\)"),
    (ts.coo, ([0, 1], [4, 0], [1, 2], (2, 4)), ArgumentError, "out of range"),
    (ts.coo, ([1, 0], [0, 0], [1, 2], (2, 4)), ArgumentError, "not sorted"),
    (ts.coo, ([0, 0], [2, 1], [1, 2], (2, 4)), ArgumentError, "not sorted"),
    (ts.coo, ([0, 0], [2, 2], [1, 2], (2, 4)), ArgumentError, "duplicate"),
    (ts.coo, ([0, 0], [1], [1, 2], (2, 4)), ShapeError, "one length"),
    (ts.ell, ([[0, -1], [-1, 1]], [[1, 0], [0, 1]], (2, 3)), ArgumentError, "padding must come last"),
    (ts.ell, ([[0, -1]], [[1, 2]], (1, 3)), ShapeError, "PAD slots must be zero"),
    (ts.ell, ([[0, 3]], [[1, 2]], (1, 3)), ArgumentError, "out of range"),
    (ts.ell, ([[0, -2]], [[1, 0]], (1, 3)), ArgumentError, "out of range"),
    (ts.ell, ([[1, 0]], [[1, 2]], (1, 3)), ArgumentError, "not sorted"),
    (ts.ell, ([[0, 1]], [[1, 2]], (2, 3)), ShapeError, r"\(2, width\)"),
    (ts.bsr, ([0, 1], [0], np.ones((1, 2, 2)), (3, 4)), ShapeError, "multiple of the block"),
    (ts.bsr, ([0, 1], [2], np.ones((1, 2, 2)), (2, 4)), ArgumentError, "out of range"),
    (ts.bsr, ([0, 1], [0], np.ones((1, 2)), (2, 4)), ShapeError, "nblocks, r, c"),
    (ts.bsr, ([0, 2], [1, 0], np.ones((2, 2, 2)), (2, 4)), ArgumentError, "not sorted"),
    (ts.bsr, ([0, 2], [0, 0], np.ones((2, 2, 2)), (2, 4)), ArgumentError, "duplicate"),
]


@pytest.mark.parametrize("ctor,args,err,msg", BAD, 
                         ids=[f"{c.__name__}-{i}" for i, (c, *_) in enumerate(BAD)])
def test_validation_errors(ctor, args, err, msg):
    with pytest.raises(err, match=msg):
        ctor(*args)


def test_validation_errors_more():
    ptr, ind = np.array([0, 1, 2], I32), np.array([0, 1], I32)
    with pytest.raises(ArgumentError, match="out of range"):        # canonical=True checks too
        ts.csr([0, 1, 2], [0, 9], [1, 2], (2, 5), canonical=True)
    with pytest.raises(ArgumentError, match="non-decreasing"):
        ts.csr([0, 2, 1], [0, 1], [1, 2], (2, 5), canonical=True)
    with pytest.raises(ArgumentError, match="out of range"):
        ts.coo([0, 2], [0, 0], [1, 2], (2, 4), canonical=True)
    with pytest.raises(ShapeError, match="C-contiguous"):
        ts.SparseMatrix((2, 5), (ts.dense_fixed(2, 0), ts.sparse_variable(5, 1, ptr, ind)),
                        np.ones(4, np.float32)[::2])
    with pytest.raises(DTypeError, match="float32 or bfloat16"):
        ts.SparseMatrix((2, 5), (ts.dense_fixed(2, 0), ts.sparse_variable(5, 1, ptr, ind)),
                        np.ones(2))
    with pytest.raises(DTypeError, match="share one dtype"):
        ts.SparseMatrix((2, 5), (ts.dense_fixed(2, 0), ts.sparse_variable(5, 1, ptr, ind.astype(np.int64))),
                        np.ones(2, np.float32))
    with pytest.raises(DTypeError, match="int32 or int64"):
        ts.SparseMatrix((2, 5), (ts.dense_fixed(2, 0), ts.sparse_variable(5, 1, ptr, ind.astype(np.int16))),
                        np.ones(2, np.float32))
    with pytest.raises(ShapeError, match="span"):
        ts.SparseMatrix((3, 5), (ts.dense_fixed(2, 0), ts.sparse_variable(5, 1, ptr, ind)),
                        np.ones(2, np.float32))
    with pytest.raises(ArgumentError, match="takes"):
        only_ptr = ts.Axis(ts.AxisKind.SPARSE_VARIABLE, 1, 5, indptr=ptr)   # no indices
        ts.SparseMatrix((2, 5), (ts.dense_fixed(2, 0), only_ptr), np.ones(2, np.float32))
    with pytest.raises(DTypeError, match="dtype="):
        ts.from_dense(np.eye(2), dtype="f16")
    with pytest.raises(ArgumentError, match="width=1"):
        ts.from_dense(np.ones((2, 2))).toell(1)
    with pytest.raises(ArgumentError, match="block"):
        ts.from_dense(np.ones((2, 2))).tobsr(None)
    with pytest.raises(ArgumentError, match="format="):
        ts.from_coords([0], [0], np.ones(1, np.float32), (1, 1), "dia")
    with pytest.raises(ArgumentError, match="scipy.sparse"):
        ts.from_scipy(np.eye(3))
    with pytest.raises(ArgumentError, match="beyond"):
        ts.csr(np.array([0, 1], np.uint64), np.array([2**63], np.uint64), [1], (1, 5))
    # scipy formats beyond csr/csc/coo/bsr go through tocsr (a copy), unsigned indices converted
    d = ts.from_scipy(sp.dia_array(np.eye(4, dtype=np.float32)))
    np.testing.assert_array_equal(d.to_dense(), np.eye(4))
    u = ts.csr(np.array([0, 1], np.uint32), np.array([2], np.uint8), [1.0], (1, 5))
    assert u.index_dtype == np.int32 and u.dtype == np.float32


def test_bf16_and_widths_kept():
    a = random_csr(9, 16, 16, 0.25, "uniform", np.int64, BF16)     # values bf16-exact
    m16 = ts.from_scipy(a, dtype="bf16")
    assert m16.dtype == BF16 and m16.values.dtype == BF16 and m16.index_dtype == np.int64
    for f in (m16.tocoo(), m16.toell(), m16.tobsr((4, 4)), m16.T):
        assert f.dtype == BF16 and f.index_dtype == np.int64
        assert f.to_dense().dtype == BF16
    h = ts.hyb(m16, col_parts=2)
    assert h.dtype == BF16 and all(p.matrix.dtype == BF16 for p in h.parts)
    np.testing.assert_array_equal(h.to_dense().astype(np.float32), a.toarray())


def test_index_width_of_lists_and_arrays():
    assert ts.csr([0, 1], [0], [1.0], (1, 2)).index_dtype == np.int32         # built here
    assert ts.csr(np.array([0, 1]), np.array([0]), [1.0], (1, 2)).index_dtype == np.int64  # kept
    assert ts.coo(np.array([0], np.int32), [1], [2], (1, 2)).index_dtype == np.int32
    with pytest.raises(ShapeError, match="one length"):
        ts.from_coords([0, 0], [1], [1.0, 2.0], (1, 2))


def _dense_of(m, n, entries):
    """The matrix a list of (row, col, value) means, duplicates summed (scipy's semantics)."""
    d = np.zeros((m, n), np.float64)
    for r, c, v in entries:
        d[r, c] += v
    return d


OK = {"csr": 0, "coo": 0, "ell": 0}      # how many arrays were accepted (the test's own check)


@given(st.integers(0, 4), st.integers(0, 4), st.booleans(), st.data())
def test_arbitrary_arrays_never_a_wrong_answer(m, n, canonical, data):
    """Any small indptr / indices / row / col arrays: a tpp error, or exactly what they mean."""
    ints = st.integers(-2, 6)
    counts = st.lists(st.integers(0, 3), min_size=m, max_size=m).map(lambda c: [0, *np.cumsum(c).tolist()])
    ptr = data.draw(st.one_of(counts, st.lists(ints, min_size=0, max_size=6)))    # mostly valid
    ind = data.draw(st.one_of(st.lists(ints, min_size=0, max_size=6),
                              st.lists(st.integers(0, max(n - 1, 0)), min_size=max(ptr[-1], 0) if ptr else 0,
                                       max_size=max(ptr[-1], 0) if ptr else 0)))
    vals = list(np.arange(1, len(ind) + 1, dtype=np.float32))
    try:
        got = ts.csr(ptr, ind, vals, (m, n), canonical=canonical).to_dense()
    except TppError:
        pass
    else:
        OK["csr"] += 1
        assert len(ptr) == m + 1 and ptr[0] == 0 and ptr[-1] == len(ind)
        rows = [(r, ind[q], vals[q]) for r in range(m) for q in range(ptr[r], ptr[r + 1])]
        if not canonical:
            assert all(ptr[r] <= q < q + 1 < ptr[r + 1] and ind[q] < ind[q + 1]
                       for r in range(m) for q in range(ptr[r], ptr[r + 1] - 1))
        np.testing.assert_array_equal(got, _dense_of(m, n, rows))
    row = data.draw(st.lists(ints, min_size=len(ind), max_size=len(ind)))
    row = sorted(row) if data.draw(st.booleans()) else row
    try:
        got = ts.coo(row, ind, vals, (m, n), canonical=canonical).to_dense()
    except TppError:
        pass
    else:
        OK["coo"] += 1
        np.testing.assert_array_equal(got, _dense_of(m, n, zip(row, ind, vals)))
        if not canonical:
            assert list(zip(row, ind)) == sorted(set(zip(row, ind)))
    width = data.draw(st.integers(0, 3))
    eidx = data.draw(st.lists(st.lists(ints, min_size=width, max_size=width), min_size=m, max_size=m))
    eidx = np.array(eidx, np.int64).reshape(m, width)
    evals = np.arange(1, m * width + 1, dtype=np.float32).reshape(m, width) * (eidx != ts.PAD)
    try:
        got = ts.ell(eidx, evals, (m, n)).to_dense()
    except TppError:
        pass
    else:
        OK["ell"] += 1
        ents = [(r, c, evals[r, k]) for r in range(m) for k, c in enumerate(eidx[r]) if c != -1]
        np.testing.assert_array_equal(got, _dense_of(m, n, ents))


@given(matrices, st.integers(1, 3))
def test_part_source_maps_back_to_csr_order(case, col_parts):
    a, it, dt = case
    m = ts.from_scipy(a, dtype=dt)
    rules = ts.hyb_rules(m, col_parts, [2, 4])[:-1] + [ts.Rule("bsr", max_nnz=1, block=(1, 1)),
                                                        ts.Rule("csr")]
    for h in (ts.hyb(m, col_parts), ts.hyb(m.T.tocsr().T), ts.decompose(m, rules)):
        seen = np.concatenate([p.source[p.source >= 0] for p in h.parts] + [np.zeros(0, int)])
        np.testing.assert_array_equal(np.sort(seen), np.arange(a.nnz))     # each entry once
        for p in h.parts:
            real = p.source >= 0
            np.testing.assert_array_equal(p.matrix.values.reshape(-1)[real], m.values[p.source[real]])
            assert p.source.shape == (p.matrix.values.size,) and p.source.dtype in (np.int32, np.int64)


def test_axis_chain_errors():
    ptr, ind, v = np.array([0, 1, 2], I32), np.array([0, 1], I32), np.ones(2, np.float32)
    row = ts.dense_fixed(2, 0, "row")
    cases = [
        ((), ArgumentError, "at least one axis"),
        ((row, ts.sparse_variable(5, 1, ptr, np.array([0, 9, 1, 9], I32)[::2])), ShapeError, "C-contiguous"),
        ((row, ts.sparse_variable(5, 1, ptr, ind.reshape(2, 1))), ShapeError, "1-D"),
        ((row, ts.sparse_fixed(5, 1, ind, -1)), ArgumentError, ">= 0"),
        ((row, ts.Axis(ts.AxisKind.SPARSE_VARIABLE, 1, 5, "col", ptr, ind, padded=True)),
         ArgumentError, "only sparse_fixed"),
        ((row, ts.sparse_variable(5, 2, ptr, ind)), ArgumentError, "dim 2"),
    ]
    for axes, err, msg in cases:
        with pytest.raises(err, match=msg):
            ts.SparseMatrix((2, 5), axes, v)
    with pytest.raises(ShapeError, match="non-negative"):
        ts.SparseMatrix((2, -5), (row,), v)
    with pytest.raises(ShapeError, match="2-D"):
        ts.from_dense(np.ones(3))
    with pytest.raises(ArgumentError, match="duplicate"):
        ts.from_coords([0, 0], [1, 1], [1.0, 2.0], (1, 2), sum_duplicates=False)
    with pytest.raises(ArgumentError, match="positive"):
        ts.from_dense(np.ones((2, 2))).tobsr((0, 1))
    with pytest.raises(ShapeError, match="multiple"):
        ts.from_dense(np.ones((3, 2))).tobsr((2, 1))
    with pytest.raises(ArgumentError, match="buckets"):
        ts.hyb(ts.from_dense(np.ones((2, 2))), buckets=["x"])
    # a rank-3 chain is a valid SparseMatrix (the axes are generic); 2-D operations refuse it
    cube = ts.SparseMatrix((2, 2, 2), (ts.dense_fixed(2, 0), ts.dense_fixed(2, 1), ts.dense_fixed(2, 2)),
                           np.arange(8, dtype=np.float32))
    np.testing.assert_array_equal(cube.to_dense(), np.arange(8).reshape(2, 2, 2))
    assert cube.format.name == "custom" and cube.format.ndim == 3
    with pytest.raises(ShapeError, match="2-D"):
        cube.transpose()
    with pytest.raises(ShapeError, match="2-D"):
        ts.decompose(cube, [ts.Rule("csr")])
    mixed = ts.SparseMatrix((2, 5), (ts.dense_fixed(2, 0), ts.sparse_variable(5, 0 + 1, ptr, ind)), v)
    assert "csr" in repr(mixed) and "parts=[ell" in repr(ts.hyb(mixed))
    assert ts.hyb(mixed).formats == (mixed.toell().format,)


def test_works_without_scipy():
    """tpp.sparse needs numpy alone; scipy is imported by from_scipy / to_scipy on use."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['scipy'] = None\n"
            "import numpy as np, tpp.sparse as ts\n"
            "m = ts.csr(np.array([0, 1, 2]), np.array([1, 0]), np.ones(2, np.float32), (2, 2))\n"
            "assert m.to_dense().tolist() == [[0, 1], [1, 0]]\n"
            "try:\n    m.to_scipy()\nexcept ImportError as e:\n    print('refused', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "refused" in out and "pip install tpp[sparse]" in out
