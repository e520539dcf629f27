"""tpp.ops.BertLayer / bert_layer against a float64 numpy BERT encoder layer (post-LN,
erf GELU), with and without a key padding mask, 1 and 2 threads; matmul with a B packed
ahead (tpp.ops.pack_b) and layer_norm's fused residual, which the layer is built on."""
from __future__ import annotations

import numpy as np
import pytest

import tpp
import tpp.ops
from tpp.bench.transformer_suite import numpy_bert_layer, random_params


@pytest.mark.parametrize("b,s,d,heads", [(1, 1, 32, 2), (2, 33, 96, 4), (1, 130, 64, 1)])
def test_layer_matches_numpy(b, s, d, heads, rng):
    params = random_params(d, rng)
    x = rng.standard_normal((b, s, d)).astype(np.float32)
    layer = tpp.ops.BertLayer(params, heads)
    want = numpy_bert_layer(x, params, heads)
    np.testing.assert_allclose(layer(x), want, rtol=1e-4, atol=2e-5)
    np.testing.assert_array_equal(layer(x, threads=1), layer(x, threads=2))
    np.testing.assert_allclose(tpp.ops.bert_layer(x, params, heads), want, rtol=1e-4, atol=2e-5)


def test_key_padding_mask(rng):
    params = random_params(64, rng, ff=100)
    x = rng.standard_normal((3, 20, 64)).astype(np.float32)
    pad = np.zeros((3, 20), bool)
    pad[1, 12:] = True
    pad[2, 1:] = True
    got = tpp.ops.BertLayer(params, 4)(x, pad)
    np.testing.assert_allclose(got, numpy_bert_layer(x, params, 4, pad), rtol=1e-4, atol=2e-5)


def test_bad_parameters_name_the_problem(rng):
    params = random_params(64, rng)
    with pytest.raises(ValueError, match="heads must be a positive int dividing"):
        tpp.ops.BertLayer(params, 5)
    bad = dict(params, ff2_b=np.zeros(3, np.float32))
    with pytest.raises(tpp.ShapeError, match="ff2_b"):
        tpp.ops.BertLayer(bad, 4)
    missing = {k: v for k, v in params.items() if k != "ln2_w"}
    with pytest.raises(KeyError, match="ln2_w"):
        tpp.ops.BertLayer(missing, 4)
    layer = tpp.ops.BertLayer(params, 4)
    with pytest.raises(tpp.ShapeError, match="\\(B, S, 64\\)"):
        layer(np.zeros((2, 3, 63), np.float32))
    with pytest.raises(tpp.ShapeError, match="key_padding_mask"):
        layer(np.zeros((2, 3, 64), np.float32), np.zeros((2, 4), bool))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (100, 97, 75), (64, 768, 300), (300, 40, 2000)])
def test_matmul_with_b_packed_ahead(m, k, n, rng):
    a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    w = rng.uniform(-1, 1, (n, k)).astype(np.float32)
    bias = rng.uniform(-1, 1, n).astype(np.float32)
    for packed in (tpp.ops.pack_b(w.T), tpp.ops.pack_b(np.ascontiguousarray(w.T), m=m)):
        want = a.astype(np.float64) @ w.T.astype(np.float64)
        bound = 4 * k * 2.0 ** -24 * (np.abs(a).astype(np.float64) @ np.abs(w.T)) + 1e-30
        assert np.all(np.abs(tpp.ops.matmul(a, packed) - want) <= bound)
        out = np.empty((m, n), np.float32)
        for threads in (1, 2):
            tpp.ops.matmul(a, packed, out=out, epilogue=("bias", "relu"), bias=bias, threads=threads)
            assert np.all(np.abs(out - np.maximum(want + bias, 0)) <= bound + 1e-6)


def test_packed_b_is_checked(rng):
    packed = tpp.ops.pack_b(rng.uniform(-1, 1, (10, 20)).astype(np.float32))
    assert packed.shape == (10, 20)
    with pytest.raises(tpp.ShapeError, match="inner dimensions"):
        tpp.ops.matmul(np.ones((3, 11), np.float32), packed)
    with pytest.raises(tpp.DTypeError, match="packed for f32"):
        tpp.ops.matmul(np.ones((3, 10), np.float64), packed)
    with pytest.raises(tpp.ShapeError, match="2-D"):
        tpp.ops.pack_b(np.ones(5, np.float32))


def test_layer_norm_with_a_residual(rng):
    x = rng.uniform(-2, 2, (5, 7, 130)).astype(np.float32)
    r = rng.uniform(-2, 2, x.shape).astype(np.float32)
    w, b = rng.uniform(-1, 1, 130).astype(np.float32), rng.uniform(-1, 1, 130).astype(np.float32)
    s = x.astype(np.float64) + r
    mu = s.mean(-1, keepdims=True)
    want = (s - mu) / np.sqrt(((s - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(tpp.ops.layer_norm(x, w, b, residual=r), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(tpp.ShapeError, match="'residual'"):
        tpp.ops.layer_norm(x, w, b, residual=r[:, :3])
