"""tpp.ops.bias_act and tpp.ops.segment_sum: the two small composites written on the
composition layer, against float64 numpy references."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tpp
import tpp.ops
from tpp.kernels import unary as unary_k
from tolerances import EXACT, TRANSC, DTYPES, assert_close, tolerance

ACTS = {None: EXACT, "relu": EXACT, "gelu_tanh": TRANSC, "sigmoid": TRANSC, "leaky_relu": EXACT, "square": EXACT}


def bias_act_reference(x, bias, activation, alpha=None):
    """act(x + bias) with the sum rounded to x's dtype first, as the kernel does."""
    s = (x.astype(np.float64) + bias.astype(np.float64)).astype(x.dtype).astype(np.float64)
    if activation is None:
        return s
    kind = unary_k.KINDS[activation]
    if kind.default_alpha is not None:
        return kind.reference(s, kind.default_alpha if alpha is None else alpha)
    return kind.reference(s)


@settings(max_examples=25)
@given(lead=st.lists(st.integers(1, 4), max_size=2), rows=st.integers(1, 70), n=st.integers(1, 70),
       activation=st.sampled_from(sorted(ACTS, key=str)), dtype=st.sampled_from(["f32", "bf16"]),
       pad=st.integers(0, 5), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_bias_act_any_leading_shape(lead, rows, n, activation, dtype, pad, threads, seed):
    rng = np.random.default_rng(seed)
    dt = DTYPES[dtype]
    full = rng.uniform(-4, 4, (*lead, rows, n + pad)).astype(dt)
    x = full[..., :n]                                  # rows n + pad apart
    bias = rng.uniform(-1, 1, n).astype(dt)
    got = tpp.ops.bias_act(x, bias, activation, threads=threads)
    assert got.shape == x.shape and got.dtype == dt
    assert_close(got, bias_act_reference(x, bias, activation), tolerance(ACTS[activation], dt), inputs=[x],
                 what=f"bias_act {activation} {dtype}")


def test_bias_act_out_in_place_and_1d(rng):
    x = rng.standard_normal((33, 17)).astype(np.float32)
    b = rng.standard_normal(17).astype(np.float32)
    want = np.maximum(x + b, 0)
    y = x.copy()
    assert tpp.ops.bias_act(y, b, "relu", out=y) is y
    np.testing.assert_array_equal(y, want)
    out = np.empty_like(x)
    for _ in range(2):                                 # the remembered geometry
        assert tpp.ops.bias_act(x, b, "relu", out=out) is out
        np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(tpp.ops.bias_act(x[3], b, "relu"), want[3])
    np.testing.assert_allclose(tpp.ops.bias_act(x, b, "leaky_relu", alpha=0.5),
                               np.where(x + b > 0, x + b, 0.5 * (x + b)), rtol=1e-6)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(tpp.ops.bias_act(x64, b.astype(np.float64)), x64 + b, rtol=1e-15)
    assert tpp.ops.bias_act(np.zeros((0, 5), np.float32), np.zeros(5, np.float32)).shape == (0, 5)


def test_bias_act_bad_input(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    b = np.zeros(6, np.float32)
    with pytest.raises(tpp.ShapeError, match=r"'bias' must have shape \(6,\)"):
        tpp.ops.bias_act(x, b[:5])
    with pytest.raises(tpp.DescriptorError, match="activation must be None or one of"):
        tpp.ops.bias_act(x, b, "relu_grad")
    with pytest.raises(tpp.DTypeError, match="argument 'bias' must have dtype float32"):
        tpp.ops.bias_act(x, b.astype(np.float64))
    with pytest.raises(tpp.DTypeError, match="int32 is not supported"):
        tpp.ops.bias_act(x.astype(np.int32), b.astype(np.int32))
    with pytest.raises(tpp.ShapeError, match="unit element stride"):
        tpp.ops.bias_act(np.zeros((4, 12), np.float32)[:, ::2], b)
    with pytest.raises(tpp.AliasError, match="overlaps"):
        tpp.ops.bias_act(x[:, :5], b[:5], out=x[:, 1:])
    with pytest.raises(ValueError, match="threads must be a positive int"):
        tpp.ops.bias_act(x, b, threads=0)
    with pytest.raises(TypeError, match="numpy arrays"):
        tpp.ops.bias_act(x.tolist(), b)


def segments(rng, rows: int, max_degree: int, empty_every: int = 5) -> np.ndarray:
    degree = rng.integers(0, max_degree + 1, rows)
    degree[::empty_every] = 0
    return np.concatenate([[0], np.cumsum(degree)])


def segment_reference(indptr, x):
    x64 = np.asarray(x, np.float64)
    return np.stack([x64[indptr[i]:indptr[i + 1]].sum(0) for i in range(len(indptr) - 1)])


@settings(max_examples=25)
@given(rows=st.integers(1, 300), f=st.integers(1, 70), max_degree=st.integers(0, 40),
       index=st.sampled_from([np.int32, np.int64]), dtype=st.sampled_from(["f32", "f64", "bf16"]),
       pad=st.integers(0, 3), start=st.integers(0, 3), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_segment_sum(rows, f, max_degree, index, dtype, pad, start, threads, seed):
    rng = np.random.default_rng(seed)
    indptr = (segments(rng, rows, max_degree) + start).astype(index)     # need not start at 0
    dt = DTYPES[dtype]
    x = rng.uniform(-1, 1, (int(indptr[-1]) + 2, f + pad)).astype(dt)[:, :f]
    got = tpp.ops.segment_sum(indptr, x, threads=threads)
    ref = segment_reference(indptr, x)
    # any summation order: n eps sum|x| (f32 accumulation for bf16, then one rounding)
    counts = np.diff(indptr.astype(np.int64))[:, None]
    sums = segment_reference(indptr, np.abs(x.astype(np.float64)))
    eps = 2.0 ** -52 if dtype == "f64" else 2.0 ** -23
    bound = (counts + 1) * eps * sums + (2.0 ** -8 * np.abs(ref) if dtype == "bf16" else 0)
    assert got.shape == (rows, f) and got.dtype == dt
    assert np.all(np.abs(got.astype(np.float64) - ref) <= bound + 1e-30)


def test_segment_sum_power_law_two_threads(rng):
    # a few very long segments: the nonzero-weighted shares still give the right sums
    degree = np.ones(2000, np.int64)
    degree[[3, 700, 1999]] = 30000
    indptr = np.concatenate([[0], np.cumsum(degree)])
    x = rng.standard_normal((int(indptr[-1]), 16)).astype(np.float32)
    np.testing.assert_allclose(tpp.ops.segment_sum(indptr, x, threads=2), segment_reference(indptr, x),
                               rtol=1e-4, atol=1e-3)


def test_segment_sum_edges_and_errors(rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    np.testing.assert_array_equal(tpp.ops.segment_sum(np.array([0, 0, 0]), x), np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(tpp.ops.segment_sum(np.array([0], np.int32), x), np.zeros((0, 3), np.float32))
    np.testing.assert_allclose(tpp.ops.segment_sum(np.array([0, 2, 6]), x[:, 0]), [x[:2, 0].sum(), x[2:, 0].sum()],
                               rtol=1e-6)
    out = np.full((2, 3), np.nan, np.float32)
    assert tpp.ops.segment_sum(np.array([1, 3, 3]), x, out=out) is out
    np.testing.assert_allclose(out, [x[1:3].sum(0), np.zeros(3)], rtol=1e-6)
    with pytest.raises(ValueError, match="nondecreasing.*and it decreases"):
        tpp.ops.segment_sum(np.array([0, 4, 2]), x)
    with pytest.raises(ValueError, match="to <= x.shape\\[0\\] = 6"):
        tpp.ops.segment_sum(np.array([0, 7]), x)
    with pytest.raises(ValueError, match="from >= 0"):
        tpp.ops.segment_sum(np.array([-1, 2]), x)
    with pytest.raises(tpp.ShapeError, match="int32 or int64"):
        tpp.ops.segment_sum(np.array([0.0, 2.0]), x)
    with pytest.raises(tpp.ShapeError, match="int32 or int64"):
        tpp.ops.segment_sum(np.array([[0, 2]]), x)
    with pytest.raises(tpp.DTypeError, match="int64 is not supported"):
        tpp.ops.segment_sum(np.array([0, 2]), x.astype(np.int64))
    with pytest.raises(tpp.ShapeError, match=r"out must be an array of shape \(1, 3\)"):
        tpp.ops.segment_sum(np.array([0, 2]), x, out=np.empty((2, 3), np.float32))
    with pytest.raises(tpp.AliasError, match="overlaps"):
        tpp.ops.segment_sum(np.array([0, 2, 3]), x, out=x[:2])
    with pytest.raises(TypeError, match="numpy arrays"):
        tpp.ops.segment_sum([0, 2], x)
    xb = x.astype(ml_dtypes.bfloat16)
    assert tpp.ops.segment_sum(np.array([0, 6]), xb).dtype == xb.dtype
