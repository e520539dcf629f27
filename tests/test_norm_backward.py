"""tpp.ops.layer_norm_backward against central finite differences of the float64
layer norm, and against the analytic float64 gradients over hypothesis shapes, with
and without a weight, bf16, 1 and 2 threads, and the errors."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tpp
import tpp.ops

BF16 = np.dtype(ml_dtypes.bfloat16)


def forward(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    return y * w + b


def analytic(dy, x, w, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    rs = 1 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xh = (x - mu) * rs
    g = dy * (1 if w is None else w)
    dx = rs * (g - g.mean(-1, keepdims=True) - xh * (g * xh).mean(-1, keepdims=True))
    lead = tuple(range(x.ndim - 1))
    return dx, (dy * xh).sum(lead), dy.sum(lead)


def test_gradients_match_finite_differences(rng):
    x = rng.uniform(-2, 2, (3, 11)).astype(np.float32)
    w = rng.uniform(0.5, 2, 11).astype(np.float32)
    b = rng.uniform(-1, 1, 11).astype(np.float32)
    r = rng.uniform(-1, 1, (3, 11))                    # loss = sum(y * r), so dy = r
    _, mean, rstd = tpp.ops.layer_norm(x, w, b, stats=True)
    dx, dw, db = tpp.ops.layer_norm_backward(r.astype(np.float32), x, w, mean, rstd)
    xd, wd, bd, h = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1e-6

    def fd(arr, i):
        """d loss / d arr.flat[i], arr one of xd, wd, bd."""
        def loss(moved):
            xx, ww, bb = (moved if base is arr else base for base in (xd, wd, bd))
            return (forward(xx, ww, bb) * r).sum()
        up, down = arr.copy(), arr.copy()
        up.flat[i] += h
        down.flat[i] -= h
        return (loss(up) - loss(down)) / (2 * h)
    for got, arr in ((dx, xd), (dw, wd), (db, bd)):
        want = np.array([fd(arr, i) for i in range(arr.size)]).reshape(arr.shape)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@settings(max_examples=20, deadline=None)
@given(lead=st.lists(st.integers(1, 5), max_size=2), n=st.integers(1, 200), weighted=st.booleans(),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
def test_against_the_analytic_gradients(lead, n, weighted, threads, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, (*lead, n)).astype(np.float32)
    dy = rng.uniform(-1, 1, x.shape).astype(np.float32)
    w = rng.uniform(-2, 2, n).astype(np.float32) if weighted else None
    _, mean, rstd = tpp.ops.layer_norm(x, w, stats=True)
    dx, dw, db = tpp.ops.layer_norm_backward(dy, x, w, mean, rstd, threads=threads)
    want_dx, want_dw, want_db = analytic(dy.astype(np.float64), x.astype(np.float64), w)
    rows = max(1, x.size // n)
    scale = np.max(np.abs(want_dx), axis=-1, keepdims=True) + 1
    assert np.all(np.abs(dx - want_dx) <= 1e-4 * scale)
    np.testing.assert_allclose(db, want_db, rtol=1e-5, atol=1e-5 * rows)
    if weighted:
        np.testing.assert_allclose(dw, want_dw, rtol=1e-4, atol=1e-4 * rows)
    else:
        assert dw is None


def test_bf16_inputs(rng):
    x = rng.uniform(-3, 3, (40, 96)).astype(BF16)
    dy = rng.uniform(-1, 1, x.shape).astype(BF16)
    w = rng.uniform(-2, 2, 96).astype(np.float32)
    _, mean, rstd = tpp.ops.layer_norm(x, w, stats=True)
    dx, dw, db = tpp.ops.layer_norm_backward(dy, x, w, mean, rstd)
    assert dx.dtype == BF16 and dw.dtype == db.dtype == np.float32
    want_dx, want_dw, want_db = analytic(dy.astype(np.float64), x.astype(np.float64), w)
    assert np.all(np.abs(dx.astype(np.float64) - want_dx) <= 2 ** -7 * (np.abs(want_dx) + np.abs(want_dx).max()))
    np.testing.assert_allclose(db, want_db, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-2, atol=2e-2)


def test_dx_is_the_same_on_one_and_two_threads(rng):
    x = rng.uniform(-3, 3, (300, 130)).astype(np.float32)
    dy = rng.uniform(-1, 1, x.shape).astype(np.float32)
    w = rng.uniform(-2, 2, 130).astype(np.float32)
    _, mean, rstd = tpp.ops.layer_norm(x, w, stats=True)
    one = tpp.ops.layer_norm_backward(dy, x, w, mean, rstd, threads=1)
    two = tpp.ops.layer_norm_backward(dy, x, w, mean, rstd, threads=2)
    assert np.array_equal(one[0], two[0])
    np.testing.assert_allclose(one[1], two[1], rtol=1e-5, atol=1e-5)


def test_bad_input_names_the_argument():
    x = np.ones((4, 8), np.float32)
    stats = np.ones(4, np.float32)
    with pytest.raises(tpp.ShapeError, match="same shape"):
        tpp.ops.layer_norm_backward(x[:3], x, None, stats, stats)
    with pytest.raises(tpp.ShapeError, match="'mean'"):
        tpp.ops.layer_norm_backward(x, x, None, stats[:3], stats)
    with pytest.raises(tpp.ShapeError, match="'weight'"):
        tpp.ops.layer_norm_backward(x, x, np.ones(7, np.float32), stats, stats)
    with pytest.raises(tpp.DTypeError, match="must both be float32"):
        tpp.ops.layer_norm_backward(x.astype(np.float64), x, None, stats, stats)
    with pytest.raises(TypeError, match="'rstd'"):
        tpp.ops.layer_norm_backward(x, x, None, stats, list(stats))
