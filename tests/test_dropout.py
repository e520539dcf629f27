"""Dropout: the Philox 4x32-10 reference against Random123's known-answer vectors, the
JIT kernel against that reference (every x86 target), and tpp.ops.dropout's mask being
a function of the seed and the element's place only (threads, leading shape), its keep
rate within binomial bounds, p = 0 and 1, bf16, in place, and the errors."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tpp
import tpp.ops
from tpp.dropout_kernel import dropout as dropout_kernel
from tpp.kernels.dropout import keep_mask, philox

from targets import X86, require

# Random123's kat_vectors for philox4x32_10: counter, key, result
KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


@pytest.mark.parametrize("counter,key,want", KAT)
def test_philox_known_answers(counter, key, want):
    assert tuple(int(w) for w in philox(np.array(counter, np.uint32), key)) == want


@pytest.mark.parametrize("target", X86)
@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 200), row0=st.integers(0, 2 ** 31), seed=st.integers(0, 2 ** 64 - 1),
       p=st.sampled_from([0.0, 0.1, 0.5, 0.999, 1.0]))
def test_kernel_matches_the_reference(target, m, n, row0, seed, p):
    k = require(dropout_kernel(m, n, p, target=target))
    x = np.random.default_rng(n).uniform(-2, 2, (m, n)).astype(np.float32)
    seed_i64 = int(np.array([seed], np.uint64).view(np.int64)[0])
    got = k(x, seed_i64, row0)
    keep = keep_mask(np.arange(row0, row0 + m), n, seed, p)
    np.testing.assert_array_equal(got != 0, keep & (x != 0))
    want = np.where(keep, x.astype(np.float64) / (1 - p), 0.0) if p < 1 else np.zeros((m, n))
    assert np.all(np.abs(got - want) <= 2e-7 * np.abs(want))


def test_the_mask_depends_only_on_seed_and_place(rng):
    x = rng.uniform(1, 2, (4, 33, 301)).astype(np.float32)          # no zeros: y == 0 is the mask
    one = tpp.ops.dropout(x, 0.3, 42, threads=1)
    assert np.array_equal(one, tpp.ops.dropout(x, 0.3, 42, threads=2))
    assert np.array_equal(one.reshape(132, 301), tpp.ops.dropout(x.reshape(132, 301), 0.3, 42))
    assert not np.array_equal(one, tpp.ops.dropout(x, 0.3, 43))
    keep = keep_mask(np.arange(132), 301, 42, 0.3).reshape(x.shape)
    np.testing.assert_array_equal(one != 0, keep)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_keep_rate_within_binomial_bounds(p):
    x = np.ones((512, 1024), np.float32)
    kept = np.count_nonzero(tpp.ops.dropout(x, p, 7))
    count = x.size
    sigma = math.sqrt(count * p * (1 - p))
    assert abs(kept - count * (1 - p)) < 5 * sigma
    # neighbouring columns and rows are independent: the rate of "both kept" is (1 - p)^2
    y = tpp.ops.dropout(x, p, 8) != 0
    both = np.count_nonzero(y[:, :-1] & y[:, 1:]) / y[:, 1:].size
    assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 / y[:, 1:].size)


def test_p_zero_and_one_bf16_and_in_place(rng):
    x = rng.uniform(-2, 2, (10, 70)).astype(np.float32)
    np.testing.assert_array_equal(tpp.ops.dropout(x, 0.0, 1), x)
    np.testing.assert_array_equal(tpp.ops.dropout(x, 1.0, 1), np.zeros_like(x))
    xb = x.astype(ml_dtypes.bfloat16)
    yb = tpp.ops.dropout(xb, 0.5, 3)
    kept = yb != 0
    np.testing.assert_array_equal(yb[kept], (xb.astype(np.float32) * 2).astype(ml_dtypes.bfloat16)[kept])
    y = x.copy()
    assert tpp.ops.dropout(y, 0.5, 3, out=y) is y
    np.testing.assert_array_equal(y, tpp.ops.dropout(x, 0.5, 3))


@pytest.mark.parametrize("kwargs,error,match", [
    ({"p": 1.5}, ValueError, "p must be in"),
    ({"p": -0.1}, ValueError, "p must be in"),
    ({"seed": -1}, ValueError, "seed must be"),
    ({"seed": True}, ValueError, "seed must be"),
    ({"seed": 2 ** 64}, ValueError, "seed must be"),
    ({"out": np.empty((2, 2), np.float32)}, tpp.ShapeError, "out must be"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        tpp.ops.dropout(np.ones((4, 4), np.float32), **kwargs)
    with pytest.raises(tpp.DTypeError, match="float32 or bfloat16"):
        tpp.ops.dropout(np.ones(4), 0.5)
