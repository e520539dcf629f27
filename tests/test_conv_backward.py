"""tpp.ops.conv2d_backward: against a float64 numpy reference derived from a numpy forward
(itself checked by finite differences), by the forward's adjoint identity, over
hypothesis geometries (strides, paddings, dilations, groups, channel counts off the
blocks), across thread counts, and on bad input."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tpp.errors import ArgumentError, DTypeError, ShapeError, TppError
from tpp.ops.conv_api import conv2d
from tpp.ops import conv_backward as cb
from tpp.ops.conv_backward import conv2d_backward

EPS32 = 2.0 ** -23


# ---- the float64 reference ---------------------------------------------------------------------
def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def ref_pads(r, s, padding, dilation):
    """torch's (top, bottom, left, right) for conv2d's padding argument."""
    dh, dw = _pair(dilation)
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        th, tw = dh * (r - 1), dw * (s - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = _pair(padding)
    return (ph, ph, pw, pw)


def _taps(x, w, stride, padding, dilation):
    """The padded input and, per tap (r, s), the slices of it that meet the outputs."""
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    top, bottom, left, right = ref_pads(r, s, padding, dilation)
    p = (h + top + bottom - dh * (r - 1) - 1) // sh + 1
    q = (wd + left + right - dw * (s - 1) - 1) // sw + 1
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    taps = [(ri, si, (slice(ri * dh, ri * dh + (p - 1) * sh + 1, sh), slice(si * dw, si * dw + (q - 1) * sw + 1, sw)))
            for ri in range(r) for si in range(s)]
    return xp, taps, (p, q), (top, left)


def ref_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d in float64."""
    xp, taps, (p, q), _ = _taps(x, w, stride, padding, dilation)
    k, cg = w.shape[:2]
    kg, w64 = k // groups, np.asarray(w, np.float64)
    y = np.zeros((x.shape[0], k, p, q))
    for g in range(groups):
        ks, cs = slice(g * kg, (g + 1) * kg), slice(g * cg, (g + 1) * cg)
        for ri, si, (hs, ws) in taps:
            y[:, ks] += np.einsum("ncpq,kc->nkpq", xp[:, cs, hs, ws], w64[ks, :, ri, si])
    return y if b is None else y + np.asarray(b, np.float64)[None, :, None, None]


def ref_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1):
    """(dx, dw, dbias) of ref_forward: each tap's product transposed (the forward is a sum
    over taps of slice-times-matrix, linear in x and in w)."""
    xp, taps, _, (top, left) = _taps(x, w, stride, padding, dilation)
    k, cg = w.shape[:2]
    kg, w64, dy = k // groups, np.asarray(w, np.float64), np.asarray(dy, np.float64)
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    for g in range(groups):
        ks, cs = slice(g * kg, (g + 1) * kg), slice(g * cg, (g + 1) * cg)
        for ri, si, (hs, ws) in taps:
            dw[ks, :, ri, si] = np.einsum("nkpq,ncpq->kc", dy[:, ks], xp[:, cs, hs, ws])
            dxp[:, cs, hs, ws] += np.einsum("nkpq,kc->ncpq", dy[:, ks], w64[ks, :, ri, si])
    h, wd = x.shape[2:]
    return dxp[:, :, top:top + h, left:left + wd], dw, dy.sum(axis=(0, 2, 3))


def _data(rng, n, c, h, w, k, r, s, stride, padding, dilation, groups):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(np.float32)
    p, q = ref_forward(x[:1, :, :, :], wt, None, stride, padding, dilation, groups).shape[2:]
    dy = rng.standard_normal((n, k, p, q)).astype(np.float32)
    return dy, x, wt


def check(dy, x, w, stride=1, padding=0, dilation=1, groups=1, threads=1):
    got = conv2d_backward(dy, x, w, stride, padding, dilation, groups, threads=threads)
    want = ref_backward(dy, x, w, stride, padding, dilation, groups)
    # each result is a sum of products: its error is bounded by eps times the sum of the
    # products' magnitudes (the same reference on |dy|, |x|, |w|) times a few
    scale = ref_backward(np.abs(dy), np.abs(x), np.abs(w), stride, padding, dilation, groups)
    for name, g, ref, sc in zip(("dx", "dw", "dbias"), got, want, scale):
        assert g.shape == ref.shape and g.dtype == np.float32, name
        bound = 64 * EPS32 * sc + 1e-30
        bad = np.abs(g - ref) > bound
        assert not bad.any(), f"{name}: {bad.sum()} of {bad.size} off, worst {np.abs(g - ref).max():.3g}"
    return got


# ---- the reference itself ----------------------------------------------------------------------
@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), ((2, 1), (1, 2), (1, 2), 2),
                                                            (2, "valid", 2, 1), (1, "same", (2, 1), 1)])
def test_reference_is_the_gradient(rng, stride, padding, dilation, groups):
    """Central differences of sum(dy * conv(x, w) + b) match ref_backward (exact up to
    rounding: the loss is linear in each argument)."""
    dy, x, w = _data(rng, 2, 4, 6, 5, 4, 3, 2, stride, padding, dilation, groups)
    b = rng.standard_normal(4)
    dx, dw, db = ref_backward(dy, x, w, stride, padding, dilation, groups)
    args = dict(x=x.astype(np.float64), w=w.astype(np.float64), b=b)

    def loss(**kw):
        a = {**args, **kw}
        return float((dy * ref_forward(a["x"], a["w"], a["b"], stride, padding, dilation, groups)).sum())

    h = 1e-3
    for name, grad in (("x", dx), ("w", dw), ("b", db)):
        for idx in map(tuple, rng.integers(0, grad.shape, size=(6, grad.ndim))):
            plus, minus = args[name].copy(), args[name].copy()
            plus[idx] += h
            minus[idx] -= h
            fd = (loss(**{name: plus}) - loss(**{name: minus})) / (2 * h)
            assert fd == pytest.approx(grad[idx], rel=1e-7, abs=1e-9), (name, idx)


# ---- the kernel against it -----------------------------------------------------------------------
CASES = [
    # n, c, h, w, k, r, s, stride, padding, dilation, groups
    (1, 64, 10, 9, 64, 3, 3, 1, 1, 1, 1),            # one block each way
    (1, 70, 9, 9, 130, 3, 3, 1, 1, 1, 1),            # short last blocks (dx: 16-channel K blocks)
    (2, 3, 12, 11, 8, 7, 7, 2, 3, 1, 1),             # the stem's shape of filter, strided
    (2, 8, 8, 8, 6, 1, 1, 2, 0, 1, 1),               # a strided 1x1 (dx rows and columns of zeros)
    (1, 6, 9, 8, 4, 3, 3, 2, 1, 1, 2),               # groups, strided
    (1, 5, 11, 10, 7, 3, 3, (2, 3), (2, 1), (1, 2), 1),
    (1, 4, 6, 7, 4, 2, 2, 1, "same", 1, 1),          # "same" with an even filter: asymmetric padding
    (1, 4, 6, 7, 4, 3, 3, 1, "same", 2, 2),
    (1, 3, 5, 5, 2, 1, 1, 1, 3, 1, 1),               # padding past the filter: dy's border rows unused
    (1, 3, 5, 6, 2, 3, 2, 3, (4, 2), 1, 1),          # stride and padding past the filter
    (1, 3, 1, 1, 2, 1, 1, 2, 1, 1, 1),               # no x pixel meets a tap: dx = 0
    (1, 96, 5, 6, 96, 3, 3, 1, 1, 1, 3),             # 32 channels a group
    (2, 3, 9, 9, 70, 1, 1, 1, 0, 1, 1),              # dw swapped (3 input channels), 1x1, K past a block
    (3, 4, 5, 5, 4, 3, 3, 1, 2, 2, 4),               # depthwise-like: C/groups = K/groups = 1
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_matches_reference(rng, case):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    check(*_data(rng, n, c, h, w, k, r, s, stride, padding, dilation, groups), stride, padding, dilation, groups)


@st.composite
def geometries(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    cg, kg = draw(st.integers(1, 19)), draw(st.integers(1, 19))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.sampled_from([1, 2, 3, (1, 2), (3, 1)]))
    dilation = draw(st.sampled_from([1, 2, (1, 3)]))
    pads = [0, 1, 2, (0, 3), "valid"] + (["same"] if stride == 1 else [])
    padding = draw(st.sampled_from(pads))
    h, w = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    top, bottom, left, right = ref_pads(r, s, padding, dilation)
    dh, dw = _pair(dilation)
    assume(h + top + bottom > dh * (r - 1) and w + left + right > dw * (s - 1))
    return draw(st.integers(1, 3)), groups * cg, h, w, groups * kg, r, s, stride, padding, dilation, groups


@settings(max_examples=25, deadline=None)
@given(geom=geometries(), seed=st.integers(0, 2 ** 32 - 1))
def test_hypothesis_geometries(geom, seed):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = geom
    data = _data(np.random.default_rng(seed), n, c, h, w, k, r, s, stride, padding, dilation, groups)
    check(*data, stride, padding, dilation, groups)


@pytest.mark.parametrize("case", [(2, 8, 9, 7, 6, 3, 3, 1, 1, 1, 1), (1, 6, 9, 8, 4, 3, 2, (2, 1), 1, (1, 2), 2)])
def test_adjoint_identity(rng, case):
    """sum(dy * conv(x, w)) = sum(dx * x) = sum(dw * w), with tpp's own forward."""
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    dy, x, wt = _data(rng, n, c, h, w, k, r, s, stride, padding, dilation, groups)
    y = conv2d(x, wt, None, stride, padding, dilation, groups, threads=1)
    dx, dw, _ = conv2d_backward(dy, x, wt, stride, padding, dilation, groups, threads=1)
    total = float((dy.astype(np.float64) * y).sum())
    size = float((np.abs(dy.astype(np.float64)) * np.abs(y)).sum())
    assert float((dx.astype(np.float64) * x).sum()) == pytest.approx(total, abs=1e-5 * size)
    assert float((dw.astype(np.float64) * wt).sum()) == pytest.approx(total, abs=1e-5 * size)


@pytest.mark.parametrize("case", [(3, 20, 12, 10, 36, 3, 3, 1, 1, 1, 1), (2, 12, 11, 9, 8, 3, 3, 2, 1, 1, 2),
                                  (2, 3, 12, 10, 20, 3, 3, 2, 1, 1, 1)])
def test_threads_bitwise_identical(rng, case):
    """Every dx, dw and dbias element is summed by one thread in one order, whatever the
    thread count: the results agree to the bit."""
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    data = _data(rng, n, c, h, w, k, r, s, stride, padding, dilation, groups)
    one = conv2d_backward(*data, stride, padding, dilation, groups, threads=1)
    two = conv2d_backward(*data, stride, padding, dilation, groups, threads=2)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("budget", [1, 9000])
def test_dw_in_chunks(rng, monkeypatch, budget):
    """dw's BRGEMMs over chunks of (image, row) pairs (one pair each; several and a short
    last chunk) add up to the one-chunk result."""
    monkeypatch.setattr(cb, "CHUNK_BYTES", budget)
    check(*_data(rng, 3, 20, 9, 8, 36, 3, 2, 1, 1, 1, 1), 1, 1)
    check(*_data(rng, 2, 6, 9, 8, 4, 1, 1, 2, 0, 1, 2), 2, 0, 1, 2)      # 1x1: into dw itself
    check(*_data(rng, 3, 3, 9, 8, 20, 3, 2, 1, 1, 1, 1), 1, 1)           # swapped: 3 input channels


def test_views_and_repeated_calls(rng):
    """Strided views of dy and x (channel and row steps) give what their copies give."""
    dy_big, x_big, w = _data(rng, 2, 10, 14, 9, 6, 3, 3, 1, 1, 1, 1)
    x = x_big[:, 1:9, :, :]
    w = np.ascontiguousarray(w[:, :8])
    dy = rng.standard_normal((2, 12, 14, 12)).astype(np.float32)[:, ::2, :, 1:10]
    got = check(dy, x, w, 1, 1)
    again = conv2d_backward(np.ascontiguousarray(dy), np.ascontiguousarray(x), w, 1, 1, threads=1)
    for a, b in zip(got, again):
        assert np.array_equal(a, b)


def test_empty_batch():
    dx, dw, db = conv2d_backward(np.zeros((0, 4, 3, 3), np.float32), np.zeros((0, 2, 5, 5), np.float32),
                                 np.ones((4, 2, 3, 3), np.float32))
    assert dx.shape == (0, 2, 5, 5) and not dw.any() and not db.any() and dw.shape == (4, 2, 3, 3)


# ---- bad input ---------------------------------------------------------------------------------
def _good():
    x = np.zeros((1, 4, 6, 6), np.float32)
    w = np.zeros((6, 2, 3, 3), np.float32)
    dy = np.zeros((1, 6, 4, 4), np.float32)
    return dict(dy=dy, x=x, w=w)


@pytest.mark.parametrize("change,error,words", [
    (dict(dy=np.zeros((1, 6, 5, 4), np.float32)), ShapeError, "'dy'"),
    (dict(dy=np.zeros((1, 5, 4, 4), np.float32)), ShapeError, "'dy'"),
    (dict(dy=np.zeros((6, 4, 4), np.float32)), ShapeError, "'dy'"),
    (dict(x=np.zeros((1, 6, 6, 6), np.float32)), ShapeError, "channels"),
    (dict(x=[[1.0]]), ShapeError, "'x'"),
    (dict(w=np.zeros((6, 2, 3), np.float32)), ShapeError, "'w'"),
    (dict(x=np.zeros((1, 4, 6, 6), np.float64)), DTypeError, "'x'"),
    (dict(dy=np.zeros((1, 6, 4, 4), ml_dtypes.bfloat16)), DTypeError, "'dy'"),
    (dict(w=np.zeros((6, 2, 3, 3), np.float16)), DTypeError, "'w'"),
    (dict(groups=4), ArgumentError, "groups"),
    (dict(groups=0), ArgumentError, "groups"),
    (dict(stride=0), ArgumentError, "stride"),
    (dict(padding="full"), ArgumentError, "padding"),
    (dict(stride=2, padding="same"), ArgumentError, "same"),
    (dict(w=np.zeros((6, 2, 9, 3), np.float32)), ShapeError, "larger"),
    (dict(threads=0), ArgumentError, "threads"),
])
def test_bad_input(change, error, words):
    args = {**_good(), "groups": 2, **change}
    dy, x, w = args.pop("dy"), args.pop("x"), args.pop("w")
    with pytest.raises(error, match=words) as info:
        conv2d_backward(dy, x, w, **args)
    assert isinstance(info.value, TppError)
    assert "conv2d_backward" in str(info.value)
