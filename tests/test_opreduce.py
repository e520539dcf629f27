"""The segment-reduce primitive (kernels/opreduce.py): against its float64 reference on
every x86 target (ops, reduces, dtypes, index widths, row widths across the chunk and
tail boundaries, segments empty / odd / clamped, repeated indices, strided x), bad
indices refused without being read, the code for every CPU target, descriptor checks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tpp
from tpp.errors import DescriptorError, DTypeError
from targets import SVE, X86, compile_only, require
from tolerances import DTYPES, EPS

INDEX = {"i32": np.int32, "i64": np.int64}


def case(rng, n, extent, nnz, dtype, index_dtype, pad=0):
    dt = DTYPES[dtype]
    x = rng.uniform(-2, 2, (extent, n + pad)).astype(dt)[:, :n]
    idx = rng.integers(0, extent, nnz).astype(INDEX[index_dtype])
    e = rng.uniform(-2, 2, nnz).astype(dt)
    return x, idx, e


def tolerance(dtype, count, scale=4.0):
    return EPS[DTYPES[dtype]] * scale * max(count, 1) * 4


@pytest.mark.parametrize("target", X86)
@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 3, 8, 16, 17, 64, 100, 256, 257, 300]), nnz=st.integers(1, 60),
       dtype=st.sampled_from(["f32", "bf16", "f64"]), index_dtype=st.sampled_from(["i32", "i64"]),
       op=st.sampled_from(["copy", "mul"]), reduce=st.sampled_from(["sum", "max", "min"]),
       lo=st.integers(-5, 65), length=st.integers(-3, 70), pad=st.sampled_from([0, 5]),
       seed=st.integers(0, 2 ** 16))
def test_matches_the_reference(target, n, nnz, dtype, index_dtype, op, reduce, lo, length, pad, seed):
    rng = np.random.default_rng(seed)
    k = require(tpp.opreduce(n, 13, nnz, dtype, op=op, reduce=reduce, index_dtype=index_dtype, target=target))
    x, idx, e = case(rng, n, 13, nnz, dtype, index_dtype, pad)
    seg = np.array([lo, lo + length], INDEX[index_dtype])
    args = (x, seg, idx, e) if op == "mul" else (x, seg, idx)
    got = k(*args)
    want = k.reference(*args)
    assert got.shape == (1, n) and got.dtype == x.dtype
    count = max(0, min(lo + length, nnz) - max(lo, 0))
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tolerance(dtype, count), atol=tolerance(dtype, count))


@pytest.mark.parametrize("reduce", ["sum", "max", "min"])
def test_an_empty_segment_gives_zeros(reduce):
    k = require(tpp.opreduce(20, 4, 6, "f32", reduce=reduce))
    x = np.full((4, 20), 7.0, np.float32)
    got = k(x, np.array([3, 3]), np.zeros(6, np.int64))
    assert (got == 0).all()
    got = k(x, np.array([5, 2]), np.zeros(6, np.int64))      # stop before start: empty too
    assert (got == 0).all()


def test_max_and_min_pick_the_extremes():
    k = require(tpp.opreduce(5, 3, 4, "f32", op="mul", reduce="max", index_dtype="i32"))
    x = np.array([[1, -1, 0, 5, 2], [3, 0, -2, 1, 2], [0, 0, 0, 0, 9]], np.float32)
    idx = np.array([0, 1, 2, 1], np.int32)
    e = np.array([1, 2, -1, 0.5], np.float32)
    got = k(x, np.array([0, 4], np.int32), idx, e)
    np.testing.assert_array_equal(got[0], [6, 0, 0, 5, 4])


@pytest.mark.parametrize("bad", [-1, 13, 2 ** 31 - 1])
@pytest.mark.parametrize("index_dtype", ["i32", "i64"])
def test_a_bad_index_raises_and_is_never_read(bad, index_dtype):
    k = require(tpp.opreduce(16, 13, 10, "f32", op="mul", index_dtype=index_dtype))
    rng = np.random.default_rng(1)
    x, idx, e = case(rng, 16, 13, 10, "f32", index_dtype)
    idx[6] = bad
    with pytest.raises(tpp.IndexRangeError, match=r"idx\[6\]"):
        k(x, np.array([2, 9], INDEX[index_dtype]), idx, e)
    k(x, np.array([0, 6], INDEX[index_dtype]), idx, e)    # outside the segment: not looked at


@pytest.mark.parametrize("name", ["x86-avx2", "x86-avx512", *SVE])
def test_the_code_for_every_cpu_target(name):
    k = tpp.opreduce(64, 100, 1000, "bf16", op="mul", reduce="sum", index_dtype="i32",
                     target=compile_only(name))
    assert "define" in k.ir
    if name.startswith("x86"):
        assert "prefetcht0" in k.asm       # the rows AHEAD positions on


def test_descriptor_checks():
    with pytest.raises(DescriptorError, match="reduce"):
        tpp.opreduce(4, 4, 4, reduce="mean")
    with pytest.raises(DescriptorError, match="op"):
        tpp.opreduce(4, 4, 4, op="add")
    with pytest.raises(DTypeError):
        tpp.opreduce(4, 4, 4, "i32")
    with pytest.raises(DescriptorError, match="nnz"):
        tpp.opreduce(4, 4, -1)
    with pytest.raises(DescriptorError):
        tpp.opreduce(True, 4, 4)
    k = tpp.opreduce(4, 4, 4, op="mul")
    with pytest.raises(TypeError, match="needs e"):
        k(np.zeros((4, 4), np.float32), np.array([0, 1]), np.zeros(4, np.int64))
