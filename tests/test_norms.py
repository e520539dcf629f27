"""tpp.ops.softmax / log_softmax / layer_norm / rms_norm against float64 numpy: any
leading shape (hypothesis), strided rows and in-place use, bf16 in and out, the
layer_norm statistics, 1 and 2 threads giving identical results, and the errors."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tpp
import tpp.ops

BF16 = np.dtype(ml_dtypes.bfloat16)


def ref_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_log_softmax(x):
    s = x - x.max(-1, keepdims=True)
    return s - np.log(np.exp(s).sum(-1, keepdims=True))


def ref_layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b), mu[..., 0], 1 / np.sqrt(var[..., 0] + eps)


def ref_rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * (1 if w is None else w)


def close(got, want, dtype=np.float32, scale=None):
    got = np.asarray(got, np.float64)
    rel = 2.0 ** -7 if dtype == BF16 else 3e-5
    scale = np.max(np.abs(want), axis=-1, keepdims=True) if scale is None else scale
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= rel * (np.abs(want) + scale) + 1e-30), np.max(np.abs(got - want))


shapes = st.lists(st.integers(1, 6), min_size=0, max_size=2).flatmap(
    lambda lead: st.integers(1, 300).map(lambda n: (*lead, n)))


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2 ** 16), threads=st.sampled_from([1, 2]))
def test_every_norm_at_any_shape(shape, seed, threads):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, shape).astype(np.float32)
    xd = x.astype(np.float64)
    n = shape[-1]
    w, b = rng.uniform(-2, 2, n).astype(np.float32), rng.uniform(-2, 2, n).astype(np.float32)
    close(tpp.ops.softmax(x, threads=threads), ref_softmax(xd))
    close(tpp.ops.log_softmax(x, threads=threads), ref_log_softmax(xd))
    close(tpp.ops.layer_norm(x, w, b, threads=threads), ref_layer_norm(xd, w, b, 1e-5)[0])
    close(tpp.ops.rms_norm(x, w, threads=threads), ref_rms_norm(xd, w, 1e-6))


def test_layer_norm_stats_and_optional_affine(rng):
    x = rng.uniform(-3, 3, (4, 9, 130)).astype(np.float32)
    xd = x.astype(np.float64)
    y, mean, rstd = tpp.ops.layer_norm(x, eps=1e-3, stats=True)
    want, mu, rs = ref_layer_norm(xd, None, None, 1e-3)
    close(y, want)
    assert mean.shape == rstd.shape == (4, 9) and mean.dtype == rstd.dtype == np.float32
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rstd, rs, rtol=1e-5)
    b = rng.uniform(-1, 1, 130).astype(np.float32)
    close(tpp.ops.layer_norm(x, None, b), ref_layer_norm(xd, None, b, 1e-5)[0])


def test_strided_rows_and_in_place(rng):
    parent = rng.uniform(-3, 3, (50, 200)).astype(np.float32)
    x = parent[3:40, 10:150]                   # row stride 200, 37 x 140
    want = ref_softmax(x.astype(np.float64))
    out = np.zeros((60, 160), np.float32)[5:42, 7:147]
    assert tpp.ops.softmax(x, out=out) is out
    close(out, want)
    y = x.copy()
    assert tpp.ops.softmax(y, out=y) is y      # in place
    close(y, want)


@pytest.mark.parametrize("dtype,out_dtype", [(BF16, None), (BF16, "f32"), (np.float32, "bf16")])
def test_bf16(dtype, out_dtype, rng):
    x = rng.uniform(-3, 3, (7, 300)).astype(dtype)
    xd = x.astype(np.float64)
    for fn, ref in ((tpp.ops.softmax, ref_softmax), (tpp.ops.log_softmax, ref_log_softmax)):
        got = fn(x, out_dtype=out_dtype)
        assert got.dtype == (np.dtype(np.float32) if out_dtype == "f32" else BF16 if out_dtype or dtype == BF16
                             else np.float32)
        close(got, ref(xd), BF16)
    w = rng.uniform(-2, 2, 300).astype(np.float32)
    close(tpp.ops.layer_norm(x, w, w, out_dtype=out_dtype), ref_layer_norm(xd, w, w, 1e-5)[0], BF16)


def test_one_and_two_threads_agree_bit_for_bit(rng):
    x = rng.uniform(-3, 3, (3, 333, 515)).astype(np.float32)
    w = rng.uniform(-2, 2, 515).astype(np.float32)
    for fn in (tpp.ops.softmax, tpp.ops.log_softmax, lambda x, threads: tpp.ops.layer_norm(x, w, w, threads=threads),
               lambda x, threads: tpp.ops.rms_norm(x, w, threads=threads)):
        assert np.array_equal(fn(x, threads=1), fn(x, threads=2))


def test_one_dimensional_and_empty(rng):
    x = rng.uniform(-3, 3, 50).astype(np.float32)
    close(tpp.ops.softmax(x), ref_softmax(x.astype(np.float64)))
    assert tpp.ops.softmax(np.zeros((0, 5), np.float32)).shape == (0, 5)
    assert tpp.ops.layer_norm(np.zeros((3, 0), np.float32)).shape == (3, 0)


def test_softmax_saturates_like_torch():
    x = np.array([[0.0, -np.inf, 1.0, -np.inf], [np.inf, 0.0, 0.0, 0.0], [-np.inf] * 4], np.float32)
    y = tpp.ops.softmax(x)
    np.testing.assert_allclose(y[0], ref_softmax(np.array([0.0, -np.inf, 1.0, -np.inf])), rtol=1e-6)
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()      # inf - inf, as torch gives


@pytest.mark.parametrize("call,error,match", [
    (lambda x: tpp.ops.softmax(x, axis=0), tpp.ShapeError, "only the last axis"),
    (lambda x: tpp.ops.softmax(x.astype(np.float64)), tpp.DTypeError, "float32 or bfloat16"),
    (lambda x: tpp.ops.softmax(list(x)), TypeError, "numpy array"),
    (lambda x: tpp.ops.layer_norm(x, np.ones(5, np.float32)), tpp.ShapeError, "'weight' must be a float32 array"),
    (lambda x: tpp.ops.layer_norm(x, None, np.ones(8, np.float64)), tpp.ShapeError, "'bias'"),
    (lambda x: tpp.ops.layer_norm(x, eps=-1.0), ValueError, "eps must be"),
    (lambda x: tpp.ops.rms_norm(x, eps=float("nan")), ValueError, "eps must be"),
    (lambda x: tpp.ops.softmax(x, out=np.empty((4, 7), np.float32)), tpp.ShapeError, "out must be"),
    (lambda x: tpp.ops.softmax(x, out_dtype="f64"), tpp.DTypeError, "out_dtype"),
    (lambda x: tpp.ops.softmax(x[:, ::2]), tpp.ShapeError, "unit element stride"),
])
def test_bad_input_names_the_argument(call, error, match):
    x = np.ones((4, 8), np.float32)
    with pytest.raises(error, match=match):
        call(x)
