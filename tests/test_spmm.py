"""tpp.ops.spmm against scipy in float64: random patterns with empty rows, one row holding
half the nonzeros, one column, rectangular shapes, bf16 values, int32/int64 indices,
every format (CSR in place, the others converted), scipy input, 1-D and strided x;
threads 1 and 2 bit-identical; bad input refused with errors that name it."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

import tpp
import tpp.ops
import tpp.sparse as ts
from tpp.errors import DTypeError, ShapeError

BF16 = np.dtype(ml_dtypes.bfloat16)


def pattern(rng, rows, cols, density, heavy=False):
    """A scipy CSR (float64 values) with some empty rows; heavy: row 0 holds half the nonzeros."""
    a = sp.random(rows, cols, density, format="csr", random_state=rng, dtype=np.float64)
    if heavy and rows and cols:
        extra = sp.csr_matrix((rng.uniform(-1, 1, cols), (np.zeros(cols, int), np.arange(cols))), (rows, cols))
        a = (a + extra).tocsr()
    a.sort_indices()
    return a


def check(a64, x, got, dtype):
    want = a64 @ np.asarray(x, np.float64)
    k = np.diff(a64.indptr).max(initial=0)
    scale = np.abs(a64) @ np.abs(np.asarray(x, np.float64))
    eps = 2.0 ** -23 if dtype == np.float32 else 2.0 ** -8
    bound = (k + 2) * eps * scale + 1e-30
    assert got.dtype == dtype
    assert (np.abs(got.astype(np.float64) - want) <= bound).all()


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 80), cols=st.integers(1, 80), f=st.sampled_from([1, 7, 16, 64, 65, 256, 300]),
       density=st.sampled_from([0.0, 0.02, 0.2, 0.9]), heavy=st.booleans(),
       dtype=st.sampled_from([np.float32, BF16]), index=st.sampled_from([np.int32, np.int64]),
       seed=st.integers(0, 2 ** 16))
def test_matches_scipy(rows, cols, f, density, heavy, dtype, index, seed):
    rng = np.random.default_rng(seed)
    a64 = pattern(rng, rows, cols, density, heavy)
    a = ts.csr(a64.indptr.astype(index), a64.indices.astype(index), a64.data.astype(dtype), a64.shape)
    a64 = sp.csr_matrix((a.values.astype(np.float64), a64.indices, a64.indptr), a64.shape)
    x = rng.uniform(-2, 2, (cols, f)).astype(dtype)
    check(a64, x, tpp.ops.spmm(a, x, threads=1), dtype)


def test_threads_give_identical_results():
    rng = np.random.default_rng(3)
    a = ts.from_scipy(pattern(rng, 3000, 2000, 0.01, heavy=True).astype(np.float32))
    x = rng.standard_normal((2000, 48)).astype(np.float32)
    one = tpp.ops.spmm(a, x, threads=1)
    two = tpp.ops.spmm(a, x, threads=2)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("fmt", ["coo", "csc", "bsr", "ell", "scipy_csr", "scipy_coo"])
def test_every_format_and_scipy_input(fmt):
    rng = np.random.default_rng(4)
    a64 = pattern(rng, 40, 36, 0.15)
    a = ts.from_scipy(a64.astype(np.float32))
    given_a = {"coo": lambda: a.tocoo(), "csc": lambda: ts.from_scipy(a64.tocsc().astype(np.float32)),
               "bsr": lambda: a.tobsr((4, 3)), "ell": lambda: a.toell(),
               "scipy_csr": lambda: a64.astype(np.float32), "scipy_coo": lambda: a64.tocoo().astype(np.float32)}[fmt]()
    x = rng.uniform(-1, 1, (36, 20)).astype(np.float32)
    check(a64.astype(np.float32).astype(np.float64), x, tpp.ops.spmm(given_a, x), np.float32)


def test_vector_strided_x_out_and_edges():
    rng = np.random.default_rng(5)
    a64 = pattern(rng, 30, 25, 0.3).astype(np.float32)
    a = ts.from_scipy(a64)
    v = rng.standard_normal(25).astype(np.float32)
    np.testing.assert_allclose(tpp.ops.spmm(a, v), a64 @ v, rtol=1e-5, atol=1e-5)
    base = rng.standard_normal((25, 40)).astype(np.float32)
    out = np.full((30, 50), 9.0, np.float32)
    tpp.ops.spmm(a, base[:, 3:33], out=out[:, :30])
    np.testing.assert_allclose(out[:, :30], a64 @ base[:, 3:33], rtol=1e-5, atol=1e-5)
    assert (out[:, 30:] == 9).all()
    empty = ts.from_scipy(sp.csr_matrix((30, 25), dtype=np.float32))
    assert (tpp.ops.spmm(empty, base) == 0).all()
    assert tpp.ops.spmm(a, np.zeros((25, 0), np.float32)).shape == (30, 0)
    one_col = ts.from_scipy(sp.csr_matrix(np.ones((6, 1), np.float32)))
    np.testing.assert_array_equal(tpp.ops.spmm(one_col, np.full((1, 3), 2, np.float32)), np.full((6, 3), 2))


def test_bad_input():
    a = ts.from_scipy(sp.random(10, 8, 0.3, format="csr", random_state=1, dtype=np.float32))
    x = np.ones((8, 4), np.float32)
    with pytest.raises(ShapeError, match=r"\(8, F\)"):
        tpp.ops.spmm(a, np.ones((9, 4), np.float32))
    with pytest.raises(DTypeError, match="dtype"):
        tpp.ops.spmm(a, x.astype(np.float64))
    with pytest.raises(TypeError, match="SparseMatrix"):
        tpp.ops.spmm(np.ones((10, 8)), x)
    with pytest.raises(ShapeError, match="out"):
        tpp.ops.spmm(a, x, out=np.empty((10, 5), np.float32))
    with pytest.raises(tpp.ArgumentError, match="threads"):
        tpp.ops.spmm(a, x, threads=0)


def test_indices_changed_after_the_check_raise_instead_of_reading_outside():
    rng = np.random.default_rng(6)
    a = ts.from_scipy(pattern(rng, 50, 40, 0.2).astype(np.float32))
    x = np.ones((40, 16), np.float32)
    tpp.ops.spmm(a, x)
    a.axes[1].indices[3] = 10 ** 6          # mutated behind the matrix's back
    with pytest.raises(tpp.IndexRangeError, match="position 3"):
        tpp.ops.spmm(a, x)
