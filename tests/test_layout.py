"""tpp.ops.to_blocked / from_blocked: NCHW <-> NCHWc round trips against the numpy
expression, channel remainders (zero padding), strided views, bf16, threads, errors."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tpp
import tpp.ops
from tpp.ops.layout import numpy_blocked

BF16 = np.dtype(ml_dtypes.bfloat16)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 20),
       block=st.sampled_from([1, 3, 4, 8, 16, 32]), bf16=st.booleans(), threads=st.sampled_from([1, 2]))
def test_round_trip(n, c, h, w, block, bf16, threads):
    x = np.random.default_rng(c * 31 + w).standard_normal((n, c, h, w)).astype(BF16 if bf16 else np.float32)
    xb = tpp.ops.to_blocked(x, block, threads=threads)
    assert xb.shape == x.shape and xb.block == block and xb.data.shape == (n, -(-c // block), h, w, block)
    assert np.array_equal(xb.data, numpy_blocked(x, block))       # channels past C are zero
    assert np.array_equal(tpp.ops.from_blocked(xb, threads=threads), x)


def test_strided_view_and_out():
    base = np.random.default_rng(0).standard_normal((2, 12, 7, 9)).astype(np.float32)
    x = base[:, 1::2, ::-1, :]
    xb = tpp.ops.to_blocked(x, 4)
    out = np.empty((2, 6, 7, 9), np.float32)
    assert tpp.ops.from_blocked(xb, out=out) is out
    assert np.array_equal(out, x)


def test_default_block_is_a_vector_of_f32():
    xb = tpp.ops.to_blocked(np.ones((1, 5, 2, 2), np.float32))
    assert xb.block == tpp.ops.layout.default_block(tpp.ops.layout.DType.F32)


@pytest.mark.parametrize("fn, error", [
    (lambda: tpp.ops.to_blocked(np.ones((2, 3, 4), np.float32)), tpp.ShapeError),
    (lambda: tpp.ops.to_blocked(np.ones((1, 2, 3, 4), np.float64)), tpp.DTypeError),
    (lambda: tpp.ops.to_blocked(np.ones((1, 2, 3, 4), np.float32), 0), tpp.ShapeError),
    (lambda: tpp.ops.from_blocked(np.ones((1, 2, 3, 4, 4), np.float32)), TypeError),
    (lambda: tpp.ops.Blocked(np.ones((1, 2, 3, 4, 4), np.float32), 9), tpp.ShapeError),
    (lambda: tpp.ops.from_blocked(tpp.ops.to_blocked(np.ones((1, 2, 3, 4), np.float32), 2),
                                  out=np.ones((1, 2, 3, 5), np.float32)), tpp.ShapeError),
])
def test_errors(fn, error):
    with pytest.raises(error):
        fn()
