"""tpp.ops.pool's max_pool2d / avg_pool2d / global_avg_pool2d against a float64 numpy
reference written from torch's definitions (output size, ceil_mode's last window,
count_include_pad's divisor): any shape, kernel, stride, padding, dilation (hypothesis),
plain NCHW arrays, strided views and Blocked NCHWc inputs of any block, f32 and bf16,
1 and 2 threads giving identical bits, NaN and all-padding windows, the AVX2 target's
block of 8, and the errors."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tpp import config
from tpp.errors import ArgumentError, DTypeError, ShapeError
from tpp.ops.layout import Blocked, numpy_blocked
from tpp.ops.pool import avg_pool2d, global_avg_pool2d, max_pool2d

BF16 = np.dtype(ml_dtypes.bfloat16)
F32_EPS = 2.0 ** -23


# ---- the reference -------------------------------------------------------------------------
def out_size(n, k, s, p, d, ceil):
    """torch's pooling_output_shape: floor (or ceil) division, and in ceil mode no window
    may start in the right padding."""
    o = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def ref_pool(x, op, kernel, stride, pad, dil, ceil, include_pad):
    """(result, the window mean of |x| with the same divisor: the scale of avg's error)."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    (r, s), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dil
    p_out, q_out = out_size(h, r, sh, ph, dh, ceil), out_size(w, s, sw, pw, dw, ceil)
    out, scale = np.empty((n, c, p_out, q_out)), np.zeros((n, c, p_out, q_out))
    for p in range(p_out):
        for q in range(q_out):
            h0, w0 = p * sh - ph, q * sw - pw
            rows = [h0 + i * dh for i in range(r) if 0 <= h0 + i * dh < h]
            cols = [w0 + j * dw for j in range(s) if 0 <= w0 + j * dw < w]
            win = x[:, :, rows][:, :, :, cols].reshape(n, c, -1)
            if op == "max":
                out[:, :, p, q] = win.max(-1) if win.shape[-1] else -np.inf
                continue
            if include_pad:
                div = (min(h0 + r, h + ph) - h0) * (min(w0 + s, w + pw) - w0)
            else:
                div = len(rows) * len(cols)
            out[:, :, p, q] = win.sum(-1) / div
            scale[:, :, p, q] = np.abs(win).sum(-1) / div
    return out, scale


def unblock(b: Blocked) -> np.ndarray:
    """A Blocked result as NCHW, after checking that its channels past C are zero."""
    n, cb, h, w, c = b.data.shape
    full = b.data.astype(np.float64).transpose(0, 1, 4, 2, 3).reshape(n, cb * c, h, w)
    assert not full[:, b.channels:].any(), "channels past C must stay zero"
    return full[:, :b.channels]


def check(got, want, scale, dtype, taps, op):
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape
    if op == "max":          # a max is one of its inputs: exact in any dtype
        assert np.array_equal(got, want, equal_nan=True)
        return
    allowed = (taps + 2) * F32_EPS * scale + (2.0 ** -8 * np.abs(want) if dtype == BF16 else 0) + 1e-30
    assert np.all(np.abs(got - want) <= allowed), np.max(np.abs(got - want) - allowed)


def make_input(rng, shape, dtype, kind, block):
    """x as the op takes it (plain, a strided view, or Blocked) and its float64 values."""
    n, c, h, w = shape
    if kind == "view":       # channels, rows and columns of a bigger array; W still unit stride
        big = rng.uniform(-4, 4, (n, 2 * c, h + 1, w + 3)).astype(dtype)
        x = big[:, ::2, 1:, 2:2 + w]
    elif kind == "copied":   # no unit stride along W: the op copies it
        x = rng.uniform(-4, 4, (n, c, h, 2 * w)).astype(dtype)[..., ::2]
    else:
        x = rng.uniform(-4, 4, shape).astype(dtype)
    ref = np.asarray(x, np.float64)
    if kind == "blocked":
        x = Blocked(numpy_blocked(np.ascontiguousarray(x), block), c)
    return x, ref


def run_both(fn, x, **kw):
    """fn at 1 and 2 threads: identical bits; the result as float64 NCHW."""
    one, two = fn(x, threads=1, **kw), fn(x, threads=2, **kw)
    if isinstance(x, Blocked):
        assert isinstance(one, Blocked) and one.block == x.block and one.dtype == x.dtype
        assert np.array_equal(one.data.view(np.uint8), two.data.view(np.uint8))
        return unblock(one)
    assert isinstance(one, np.ndarray) and one.dtype == x.dtype and one.flags.c_contiguous
    assert np.array_equal(one.view(np.uint8), two.view(np.uint8))
    return one


pairs = st.tuples(st.integers(1, 3), st.integers(1, 3))
geometry = st.fixed_dictionaries({
    "shape": st.tuples(st.integers(1, 2), st.integers(1, 37), st.integers(1, 13), st.integers(1, 13)),
    "kernel": pairs, "stride": st.one_of(st.none(), pairs), "dil": pairs,
    "ceil": st.booleans(), "include_pad": st.booleans(), "pad_frac": st.tuples(st.booleans(), st.booleans()),
    "dtype": st.sampled_from([np.dtype(np.float32), BF16]),
    "kind": st.sampled_from(["plain", "blocked", "view", "copied"]), "block": st.sampled_from([16, 8, 5]),
    "seed": st.integers(0, 2 ** 16)})


def _case(g, op):
    kernel = g["kernel"]
    stride = kernel if g["stride"] is None else g["stride"]
    pad = tuple(k // 2 if big else 0 for k, big in zip(kernel, g["pad_frac"]))
    dil = g["dil"] if op == "max" else (1, 1)
    _, _, h, w = g["shape"]
    assume(out_size(h, kernel[0], stride[0], pad[0], dil[0], g["ceil"]) >= 1)
    assume(out_size(w, kernel[1], stride[1], pad[1], dil[1], g["ceil"]) >= 1)
    x, xd = make_input(np.random.default_rng(g["seed"]), g["shape"], g["dtype"], g["kind"], g["block"])
    want, scale = ref_pool(xd, op, kernel, stride, pad, dil, g["ceil"], g["include_pad"])
    return x, want, scale, dict(kernel_size=kernel, stride=g["stride"], padding=pad, ceil_mode=g["ceil"]), dil


@settings(max_examples=30, deadline=None)
@given(g=geometry)
def test_max_pool_any_geometry(g):
    x, want, _, kw, dil = _case(g, "max")
    got = run_both(max_pool2d, x, dilation=dil, **kw)
    check(got, want, None, g["dtype"], 0, "max")


@settings(max_examples=30, deadline=None)
@given(g=geometry)
def test_avg_pool_any_geometry(g):
    x, want, scale, kw, _ = _case(g, "avg")
    got = run_both(avg_pool2d, x, count_include_pad=g["include_pad"], **kw)
    check(got, want, scale, g["dtype"], g["kernel"][0] * g["kernel"][1], "avg")


@settings(max_examples=15, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 12), st.integers(1, 12)),
       dtype=st.sampled_from([np.dtype(np.float32), BF16]),
       kind=st.sampled_from(["plain", "blocked", "view", "copied"]), block=st.sampled_from([16, 8, 3]),
       seed=st.integers(0, 2 ** 16))
def test_global_avg_pool(shape, dtype, kind, block, seed):
    x, xd = make_input(np.random.default_rng(seed), shape, dtype, kind, block)
    got = run_both(global_avg_pool2d, x)
    want = xd.mean(axis=(2, 3), keepdims=True)
    scale = np.abs(xd).mean(axis=(2, 3), keepdims=True)
    check(got, want, scale, dtype, shape[2] * shape[3], "avg")


def test_resnet_stem_pool_and_head():
    """ResNet-50's 3x3 / 2 max pool (padding 1) on 56 output rows, and its 7x7 head."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 24, 112, 112)).astype(np.float32)
    want, _ = ref_pool(x, "max", (3, 3), (2, 2), (1, 1), (1, 1), False, True)
    assert np.array_equal(max_pool2d(x, 3, 2, 1), want)
    assert np.array_equal(unblock(max_pool2d(Blocked(numpy_blocked(x, 16), 24), 3, 2, 1)), want)
    h = rng.standard_normal((2, 70, 7, 7)).astype(np.float32)
    check(global_avg_pool2d(h), h.astype(np.float64).mean((2, 3), keepdims=True),
          np.abs(h).mean((2, 3), keepdims=True), np.float32, 49, "avg")


@pytest.mark.parametrize("op", ["max", "avg"])
def test_kernels_past_one_equation(op):
    """9x9 windows (81 taps, 72 at the padded edge columns): chunks of taps summed or
    maxed through an f32 row."""
    rng = np.random.default_rng(7)
    for dtype in (np.dtype(np.float32), BF16):
        x = rng.uniform(-4, 4, (1, 18, 11, 10)).astype(dtype)
        want, scale = ref_pool(x, op, (9, 9), (2, 1), (0, 1), (1, 1), True, False)
        fn = max_pool2d if op == "max" else avg_pool2d
        kw = dict(count_include_pad=False) if op == "avg" else {}
        check(fn(x, 9, (2, 1), (0, 1), ceil_mode=True, **kw), want, scale, dtype, 81, op)
        check(unblock(fn(Blocked(numpy_blocked(x, 16), 18), 9, (2, 1), (0, 1), ceil_mode=True, **kw)), want,
              scale, dtype, 81, op)


def test_nan_inf_and_windows_in_the_padding():
    x = np.arange(2 * 20 * 5 * 5, dtype=np.float32).reshape(2, 20, 5, 5)
    x[0, 3, 2, 2], x[1, 19, 0, 0], x[1, 0, 4, 4] = np.nan, -np.inf, np.inf
    want, _ = ref_pool(x, "max", (3, 3), (2, 2), (1, 1), (1, 1), False, True)
    assert np.isnan(want).any()
    for xx in (x, Blocked(numpy_blocked(x, 16), 20)):
        got = max_pool2d(xx, 3, 2, 1)
        assert np.array_equal(unblock(got) if isinstance(got, Blocked) else got, want, equal_nan=True)
    # ceil mode, dilation 2, padding 1 on a 1x1 input: the only window's taps (-1, 1, 3)
    # all fall outside the input; torch gives -inf there
    y = np.random.default_rng(1).standard_normal((1, 20, 1, 1)).astype(np.float32)
    want, _ = ref_pool(y, "max", (3, 3), (3, 3), (1, 1), (2, 2), True, True)
    assert np.isneginf(want).all() and want.shape == (1, 20, 1, 1)
    assert np.array_equal(max_pool2d(y, 3, 3, 1, 2, True), want)
    got = max_pool2d(Blocked(numpy_blocked(y, 16), 20), 3, 3, 1, 2, True)
    assert np.array_equal(unblock(got), want)          # and the padded channels stay zero


def test_avx2_block_of_eight():
    """The AVX2 target's default block is 8 lanes (runs on an AVX-512 host too)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 13, 9, 10)).astype(np.float32)
    with config.override(target="x86-avx2"):
        want, scale = ref_pool(x, "avg", (3, 2), (2, 1), (1, 1), (1, 1), True, True)
        check(avg_pool2d(x, (3, 2), (2, 1), 1, True), want, scale, np.float32, 6, "avg")
        want, _ = ref_pool(x, "max", (2, 3), (1, 2), (1, 1), (2, 1), False, True)
        assert np.array_equal(max_pool2d(x, (2, 3), (1, 2), 1, (2, 1)), want)
        check(global_avg_pool2d(x), x.astype(np.float64).mean((2, 3), keepdims=True),
              np.abs(x).mean((2, 3), keepdims=True), np.float32, 90, "avg")


def test_empty_batch_and_channels():
    for shape in ((0, 3, 5, 5), (2, 0, 5, 5)):
        x = np.zeros(shape, np.float32)
        assert max_pool2d(x, 2).shape == (*shape[:2], 2, 2)
        assert global_avg_pool2d(x).shape == (*shape[:2], 1, 1)


def test_errors():
    x = np.zeros((1, 2, 6, 6), np.float32)
    with pytest.raises(ShapeError, match="'x' must be 4-D"):
        max_pool2d(x[0], 2)
    with pytest.raises(DTypeError, match="'x' must be float32 or bfloat16"):
        avg_pool2d(x.astype(np.float64), 2)
    with pytest.raises(DTypeError, match="float32 or bfloat16"):
        global_avg_pool2d(x.astype(np.int32))
    with pytest.raises(ArgumentError, match="at most half of the kernel"):
        max_pool2d(x, 3, padding=2)
    with pytest.raises(ShapeError, match="output would be empty"):
        avg_pool2d(x, 7)
    with pytest.raises(ArgumentError, match="numpy array or a tpp.ops.Blocked"):
        max_pool2d([[1.0]], 1)
    with pytest.raises(ArgumentError, match="kernel_size must be an int or a pair"):
        max_pool2d(x, (2, 2, 2))
    with pytest.raises(ArgumentError, match="stride must be >= 1"):
        avg_pool2d(x, 2, stride=0)
    with pytest.raises(ArgumentError, match="dilation"):
        max_pool2d(x, 2, dilation=0)
    with pytest.raises(ArgumentError, match="threads"):
        global_avg_pool2d(x, threads=0)
    with pytest.raises(ShapeError, match="empty plane"):
        global_avg_pool2d(np.zeros((1, 2, 0, 3), np.float32))


def test_blocked_geometry_with_other_channel_counts():
    """Blocked inputs of one data shape but other channel counts (5 and 1 in a block
    of 5) are other programs: the padding-only windows' -inf stops at C (found by
    hypothesis: the memo keyed on the arrays' geometry alone)."""
    from tpp.ops.layout import numpy_blocked
    outs = []
    for c in (5, 1):
        x = np.random.default_rng(0).uniform(-4, 4, (1, c, 8, 1)).astype(np.float32)
        y = max_pool2d(Blocked(numpy_blocked(x, 5), c), (1, 2), None, (0, 1), (3, 3), True, threads=1)
        outs.append(y.data[0, 0, 0, 0])
    assert np.isneginf(outs[0]).all()
    assert np.isneginf(outs[1][0]) and not outs[1][1:].any()
