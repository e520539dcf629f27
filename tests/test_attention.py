"""tpp.ops.attention against a float64 numpy scaled-dot-product attention: every mask
kind (bool, additive float, broadcast shapes), causal (Sq < Sk, Sq > Sk), grouped-query
heads, S in {1, 7, 77, 128, 129, 513}, D in {32, 64, 80, 128}, batch > 1, bf16, fully
masked rows (NaN like torch), 1 and 2 threads bit-identical, and the errors."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tpp
import tpp.ops

BF16 = np.dtype(ml_dtypes.bfloat16)


def reference(q, k, v, mask=None, causal=False, scale=None):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    heads, kv_heads, sq, d = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) * (1 / np.sqrt(d) if scale is None else scale)
    if causal:
        s = s + np.where(np.tril(np.ones((sq, k.shape[2]), bool)), 0, -np.inf)
    if mask is not None:
        s = s + (np.where(mask, 0.0, -np.inf) if mask.dtype == bool else np.asarray(mask, np.float64))
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)) @ v


def inputs(rng, b, h, hkv, sq, sk, d, dtype=np.float32):
    q = rng.standard_normal((b, h, sq, d)).astype(dtype)
    k = rng.standard_normal((b, hkv, sk, d)).astype(dtype)
    v = rng.standard_normal((b, hkv, sk, d)).astype(dtype)
    return q, k, v


def check(got, want, dtype=np.float32):
    got = np.asarray(got, np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    tol = 3e-2 if dtype == BF16 else 2e-5
    assert np.nanmax(np.abs(got - want), initial=0) <= tol * (1 + np.nanmax(np.abs(want), initial=0))


@pytest.mark.parametrize("s,d", [(1, 64), (7, 64), (77, 64), (128, 64), (129, 64), (513, 64),
                                 (129, 32), (77, 80), (129, 128), (513, 128)])
def test_sequence_lengths_and_head_sizes(s, d, rng):
    q, k, v = inputs(rng, 1, 2, 2, s, s, d)
    check(tpp.ops.attention(q, k, v), reference(q, k, v))


@pytest.mark.parametrize("sq,sk", [(77, 129), (129, 77), (1, 513), (513, 1), (64, 64), (200, 70)])
@pytest.mark.parametrize("causal", [False, True])
def test_causal_and_unequal_lengths(sq, sk, causal, rng):
    q, k, v = inputs(rng, 2, 4, 2, sq, sk, 64)
    got = tpp.ops.attention(q, k, v, causal=causal)
    check(got, reference(q, k, v, causal=causal))
    assert np.array_equal(got, tpp.ops.attention(q, k, v, causal=causal, threads=2), equal_nan=True)


@pytest.mark.parametrize("shape,kind", [((2, 4, 77, 129), "bool"), ((2, 1, 77, 129), "float"), ((1, 4, 1, 129), "bool"),
                                        ((129,), "float"), ((77, 1), "bool"), ((2, 1, 1, 1), "float")])
def test_masks_of_every_broadcast_shape(shape, kind, rng):
    q, k, v = inputs(rng, 2, 4, 4, 77, 129, 32)
    mask = rng.random(shape) > 0.2 if kind == "bool" else rng.uniform(-3, 1, shape).astype(np.float32)
    check(tpp.ops.attention(q, k, v, mask), reference(q, k, v, mask))


def test_fully_masked_rows_are_nan_like_torch(rng):
    q, k, v = inputs(rng, 1, 2, 2, 9, 100, 64)
    mask = np.ones((9, 100), bool)
    mask[3] = False
    mask[5, :64] = False                                   # the first key block masked only
    got = tpp.ops.attention(q, k, v, mask)
    assert np.isnan(got[:, :, 3]).all() and not np.isnan(np.delete(got, 3, axis=2)).any()
    check(got, reference(q, k, v, mask))


def test_grouped_query_heads(rng):
    q, k, v = inputs(rng, 3, 8, 2, 65, 65, 64)
    check(tpp.ops.attention(q, k, v, causal=True), reference(q, k, v, causal=True))
    q, k, v = inputs(rng, 1, 6, 1, 33, 40, 80)             # multi-query
    check(tpp.ops.attention(q, k, v), reference(q, k, v))


def test_bf16(rng):
    q, k, v = inputs(rng, 1, 2, 1, 129, 77, 64, BF16)
    check(tpp.ops.attention(q, k, v), reference(q, k, v), BF16)
    check(tpp.ops.attention(q, k, v, causal=True), reference(q, k, v, causal=True), BF16)
    assert tpp.ops.attention(q, k, v).dtype == BF16


def test_scale_views_and_no_batch_axis(rng):
    q, k, v = inputs(rng, 1, 3, 3, 50, 60, 64)
    check(tpp.ops.attention(q, k, v, scale=0.3), reference(q, k, v, scale=0.3))
    wide = rng.standard_normal((1, 3, 60, 100)).astype(np.float32)
    kv = wide[..., 10:74]                                   # row stride 100
    check(tpp.ops.attention(q, kv, kv), reference(q, kv, kv))
    check(tpp.ops.attention(q[0], k[0], v[0]), reference(q, k, v)[0])
    qt = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)   # heads inner, like torch's views
    check(tpp.ops.attention(qt, k, v), reference(q, k, v))


def test_two_threads_give_the_same_bits(rng):
    q, k, v = inputs(rng, 2, 6, 3, 300, 257, 64)
    one = tpp.ops.attention(q, k, v, threads=1)
    assert np.array_equal(one, tpp.ops.attention(q, k, v, threads=2))


def test_empty_inputs(rng):
    q, k, v = inputs(rng, 1, 2, 2, 0, 5, 32)
    assert tpp.ops.attention(q, k, v).shape == (1, 2, 0, 32)
    q, k, v = inputs(rng, 1, 2, 2, 5, 0, 32)
    np.testing.assert_array_equal(tpp.ops.attention(q, k, v), np.zeros((1, 2, 5, 32), np.float32))


@pytest.mark.parametrize("build,error,match", [
    (lambda q, k, v: tpp.ops.attention(q, np.repeat(k[:, :1], 3, 1), np.repeat(v[:, :1], 3, 1)), tpp.ShapeError,
     "multiple of"),
    (lambda q, k, v: tpp.ops.attention(q, k[..., :32], v[..., :32]), tpp.ShapeError, "D=64"),
    (lambda q, k, v: tpp.ops.attention(q, k, v[:, :, :5]), tpp.ShapeError, "same shape"),
    (lambda q, k, v: tpp.ops.attention(q, k, v, np.ones((3, 9), bool)), tpp.ShapeError, "does not broadcast"),
    (lambda q, k, v: tpp.ops.attention(q, k, v, np.ones(9, np.int32)), tpp.DTypeError, "bool or a float"),
    (lambda q, k, v: tpp.ops.attention(q, k, v, np.ones(9, bool), causal=True), ValueError, "not both"),
    (lambda q, k, v: tpp.ops.attention(q.astype(np.float64), k, v), tpp.DTypeError, "must all be float32"),
    (lambda q, k, v: tpp.ops.attention(q[0, 0], k[0, 0], v[0, 0]), tpp.ShapeError, "\\(B, H, S, D\\)"),
    (lambda q, k, v: tpp.ops.attention(q, k, v, scale=float("inf")), ValueError, "scale"),
    (lambda q, k, v: tpp.ops.attention(q[..., ::2], k[..., ::2], v[..., ::2]), tpp.ShapeError, "unit element"),
])
def test_bad_input_names_the_argument(build, error, match, rng):
    q, k, v = inputs(rng, 1, 4, 2, 8, 9, 64)
    with pytest.raises(error, match=match):
        build(q, k, v)


@pytest.mark.parametrize("block,key_block", [(64, 64), (32, 128), (16, 48)])
def test_other_block_plans(block, key_block, rng, monkeypatch):
    # the diagonal of a causal query block sits at any offset in a longer key block
    import importlib
    plan = importlib.import_module("tpp.ops.attention")
    for name, value in (("BLOCK", block), ("KEY_BLOCK", key_block), ("WIDE_BLOCK", block),
                        ("LONG_KEY_BLOCK", key_block)):
        monkeypatch.setattr(plan, name, value)
    for sq, sk in ((77, 129), (129, 77), (200, 200)):
        q, k, v = inputs(rng, 1, 2, 1, sq, sk, 64)
        check(tpp.ops.attention(q, k, v, causal=True), reference(q, k, v, causal=True))
        mask = rng.random((sq, sk)) > 0.3
        check(tpp.ops.attention(q, k, v, mask), reference(q, k, v, mask))


def test_long_key_blocks(rng):
    # causal with Sk >= LONG_KEYS runs on key blocks of LONG_KEY_BLOCK: short last block, diagonals at
    # every offset in it, a mask, bf16, 1 and 2 threads bit-identical
    q, k, v = inputs(rng, 1, 2, 1, 300, 1100, 64)
    mask = rng.random((300, 1100)) > 0.3
    check(tpp.ops.attention(q, k, v, mask), reference(q, k, v, mask))
    q, k, v = inputs(rng, 1, 2, 2, 1030, 1030, 32)
    got = tpp.ops.attention(q, k, v, causal=True)
    check(got, reference(q, k, v, causal=True))
    assert np.array_equal(got, tpp.ops.attention(q, k, v, causal=True, threads=2))
    q16, k16, v16 = (x.astype(BF16) for x in (q, k, v))
    check(tpp.ops.attention(q16, k16, v16, causal=True), reference(q16, k16, v16, causal=True), BF16)


def test_negative_and_zero_scale(rng):
    # the row max is taken on S before scaling only where the scale is positive
    q, k, v = inputs(rng, 1, 2, 2, 70, 130, 64)
    for scale in (-0.2, 0.0):
        check(tpp.ops.attention(q, k, v, scale=scale), reference(q, k, v, scale=scale))
        check(tpp.ops.attention(q, k, v, causal=True, scale=scale), reference(q, k, v, causal=True, scale=scale))
