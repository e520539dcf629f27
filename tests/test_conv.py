"""tpp.ops.conv2d / Conv2d against a float64 numpy convolution: hypothesis over N, C, K
(block remainders), H, W, R, S, stride, padding (incl. "same"/"valid"), dilation and
groups; one-pixel outputs; the stem's folded taps; fused bias / residual / activation;
folded BatchNorm; plain and blocked inputs and outputs; bf16; 1 and 2 threads
identical; and the errors."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import tpp
import tpp.ops
from tpp.kernels import unary as unary_k
from tpp.ops.conv_api import output_block

BF16 = np.dtype(ml_dtypes.bfloat16)


def reference(x, w, bias=None, stride=(1, 1), pad=(0, 0, 0, 0), dil=(1, 1), groups=1):
    """float64 conv2d (torch's semantics) with padding (top, bottom, left, right)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), pad[:2], pad[2:]))
    p = (xp.shape[2] - dil[0] * (r - 1) - 1) // stride[0] + 1
    q = (xp.shape[3] - dil[1] * (s - 1) - 1) // stride[1] + 1
    out = np.zeros((n, k, p, q))
    kg = k // groups
    for g in range(groups):
        for i in range(r):
            for j in range(s):
                h0, w0 = i * dil[0], j * dil[1]
                patch = xp[:, g * cg:(g + 1) * cg, h0:h0 + stride[0] * (p - 1) + 1:stride[0],
                           w0:w0 + stride[1] * (q - 1) + 1:stride[1]]
                out[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", patch, w[g * kg:(g + 1) * kg, :, i, j])
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def check(got, x, w, bias=None, stride=(1, 1), pad=(0, 0, 0, 0), dil=(1, 1), groups=1, post=None, bf16=False,
          added=None):
    """added: the magnitude of what post adds (a residual), for the rounding bound."""
    want = reference(x, w, bias, stride, pad, dil, groups)
    size = reference(np.abs(np.asarray(x, np.float64)), np.abs(np.asarray(w, np.float64)),
                     None if bias is None else np.abs(bias), stride, pad, dil, groups)
    if added is not None:
        size = size + np.abs(np.asarray(added, np.float64))
    if post is not None:
        want = post(want)
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape
    allowed = 2e-6 * size + 1e-30 + (2.0 ** -8 * np.abs(want) if bf16 else 0)
    worst = np.max(np.abs(got - want) - allowed)
    assert worst <= 0, f"off by {worst:.3g} beyond the bound"


def _pad4(padding):
    p = (padding, padding) if isinstance(padding, int) else padding
    return (p[0], p[0], p[1], p[1])


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    cg, kg = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, dil[0] * (r - 1) + 1 - 2 * pad[0]), 12))
    w = draw(st.integers(max(1, dil[1] * (s - 1) + 1 - 2 * pad[1]), 12))
    n = draw(st.integers(1, 2))
    return n, cg * groups, h, w, kg * groups, r, s, stride, pad, dil, groups


@settings(max_examples=60, deadline=None)
@given(case=conv_cases(), seed=st.integers(0, 2 ** 16), bias=st.booleans())
def test_conv2d_matches_reference(case, seed, bias):
    n, c, h, w, k, r, s, stride, pad, dil, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32) if bias else None
    got = tpp.ops.conv2d(x, wt, b, stride, pad, dil, groups)
    check(got, x, wt, b, stride, _pad4(pad), dil, groups)


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(), seed=st.integers(0, 2 ** 16), block=st.sampled_from([2, 4, 8]),
       out_blocked=st.booleans(), bf16=st.booleans())
def test_blocked_input_with_padding(case, seed, block, out_blocked, bf16):
    """Blocked input with padding: per-thread row buffers (only the filter rows inside
    the input in a row's batch), no padded copy."""
    n, c, h, w, k, r, s, stride, pad, dil, groups = case
    assume(not bf16 or (c // groups) % 2 == 0)
    if (c // groups) % block:
        block = 2 if bf16 else 1
    rng = np.random.default_rng(seed)
    dt = BF16 if bf16 else np.float32
    x = rng.standard_normal((n, c, h, w)).astype(dt)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(dt)
    b = rng.standard_normal(k).astype(dt)
    res = rng.standard_normal((n, k) + conv_out(h, w, r, s, stride, pad, dil)).astype(dt)
    conv = tpp.ops.Conv2d(wt, b, stride, pad, dil, groups, activation="relu")
    resid = tpp.ops.to_blocked(res, output_block(k // groups, groups)) if out_blocked else res
    got = conv(tpp.ops.to_blocked(x, block), resid, blocked=out_blocked)
    got = got.numpy() if out_blocked else got
    check(got, x, wt, b.astype(np.float32), stride, _pad4(pad), dil, groups,
          post=lambda y: np.maximum(y + res.astype(np.float64), 0), bf16=bf16, added=res)


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(), seed=st.integers(0, 2 ** 16))
def test_bf16_matches_reference(case, seed):
    """bf16 on plain input at every geometry: odd channel counts per group (blocks rounded
    up to VNNI pairs, or one odd block whose taps fold: pairs across S*c)."""
    n, c, h, w, k, r, s, stride, pad, dil, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(BF16)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(BF16)
    got = tpp.ops.conv2d(x, wt, None, stride, pad, dil, groups)
    check(got, x, wt, None, stride, _pad4(pad), dil, groups, bf16=True)
    if s > 1 and dil[1] == 1 and c // groups <= 64:         # one folded block, also given Blocked
        conv = tpp.ops.Conv2d(wt, None, stride, pad, dil, groups)
        blocked = conv(tpp.ops.to_blocked(x, conv.block)).numpy()
        check(blocked, x, wt, None, stride, _pad4(pad), dil, groups, bf16=True)


def conv_out(h, w, r, s, stride, pad, dil):
    return ((h + 2 * pad[0] - dil[0] * (r - 1) - 1) // stride[0] + 1,
            (w + 2 * pad[1] - dil[1] * (s - 1) - 1) // stride[1] + 1)


def test_row_buffers_copy_nothing():
    """A padded Blocked input goes through per-thread row buffers: no padded copy of the
    whole input, also where the filter is wider than the image, or the stem's folded taps."""
    from tpp.ops.conv import ConvDesc
    from tpp.ops.conv_geometry import conv_window
    from tpp.jit.types import DType
    rng = np.random.default_rng(11)
    for c, block, hw, rs, pad in ((32, 8, (5, 9), (3, 3), (1, 1)), (32, 8, (4, 5), (3, 9), (1, 4)),
                                  (3, 3, (11, 12), (7, 7), (3, 3))):
        win = conv_window("t", hw, rs, 1, pad, 1)
        desc = ConvDesc(1, c, 16, 1, win, DType.F32, DType.F32, block, 16, True, True, None, None)
        names = [sc.name for sc in desc.composite(None).scratch]
        assert desc.row_buffer and names == ["rowbuf"]
        x = rng.standard_normal((1, c) + hw).astype(np.float32)
        wt = rng.standard_normal((16, c) + rs).astype(np.float32)
        got = tpp.ops.Conv2d(wt, None, 1, pad)(tpp.ops.to_blocked(x, block)).numpy()
        check(got, x, wt, None, (1, 1), _pad4(pad))


@pytest.mark.parametrize("shape", [(1, 64, 14, 14, 64, 3, 3, 1, 1), (1, 3, 23, 21, 20, 7, 7, 2, 3),
                                   (2, 35, 9, 8, 70, 3, 3, 2, 1), (1, 130, 5, 5, 66, 3, 3, 1, 1),
                                   (1, 128, 6, 6, 256, 1, 1, 2, 0), (1, 16, 7, 7, 16, 7, 7, 1, 0),
                                   (1, 8, 1, 1, 4, 1, 1, 1, 0), (1, 80, 9, 9, 96, 1, 1, 1, 0)])
def test_resnet_like_shapes(shape):
    n, c, h, w, k, r, s, stride, pad = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, r, s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    check(tpp.ops.conv2d(x, wt, b, stride, pad), x, wt, b, (stride, stride), _pad4(pad))


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("rs, dil", [((3, 3), 1), ((4, 2), 1), ((3, 5), 2)])
def test_padding_names(padding, rs, dil):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 5, 11, 10)).astype(np.float32)
    wt = rng.standard_normal((6, 5, *rs)).astype(np.float32)
    got = tpp.ops.conv2d(x, wt, padding=padding, dilation=dil)
    if padding == "valid":
        pad = (0, 0, 0, 0)
    else:
        th, tw = dil * (rs[0] - 1), dil * (rs[1] - 1)
        pad = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        assert got.shape[2:] == x.shape[2:]
    check(got, x, wt, None, (1, 1), pad, (dil, dil))


@pytest.mark.parametrize("activation", ["relu", "gelu_tanh", "sigmoid"])
@pytest.mark.parametrize("blocked", [False, True])
def test_fused_bias_residual_activation(activation, blocked):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 20, 9, 9)).astype(np.float32)
    wt = rng.standard_normal((70, 20, 3, 3)).astype(np.float32) * 0.2
    b = rng.standard_normal(70).astype(np.float32)
    res = rng.standard_normal((2, 70, 9, 9)).astype(np.float32)
    conv = tpp.ops.Conv2d(wt, b, 1, 1, activation=activation)
    kind = unary_k.KINDS[activation]
    want_fn = lambda y: kind.reference(y + res)  # noqa: E731
    if blocked:
        xb = tpp.ops.to_blocked(x, 8)
        out = conv(xb, tpp.ops.to_blocked(res, 64))
        assert isinstance(out, tpp.ops.Blocked) and out.block == 64
        pad_channels = out.data[:, -1, :, :, 70 - 64:]
        assert not pad_channels.any()          # channels past K stay zero whatever act(0) is
        got = out.numpy()
    else:
        got = conv(x, res)
    want = want_fn(reference(x, wt, b, pad=(1, 1, 1, 1)))
    assert np.allclose(got, want, rtol=2e-5, atol=2e-4)


def test_folded_batch_norm():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    wt = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 24), rng.standard_normal(24)
    mean, var = rng.standard_normal(24), rng.uniform(0.5, 2, 24)
    got = tpp.ops.Conv2d(wt, b, padding=1, activation="relu", bn=(gamma, beta, mean, var, 1e-5))(x)
    y = reference(x, wt, b, pad=(1, 1, 1, 1))
    want = np.maximum((y - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * gamma[:, None, None]
                      + beta[:, None, None], 0)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("c, block", [(3, 4), (35, 16), (64, 16), (20, 8)])
def test_blocked_chain(c, block):
    """A chain of prepared convolutions on Blocked activations equals the plain chain."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, c, 10, 12)).astype(np.float32)
    w1 = rng.standard_normal((40, c, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((33, 40, 1, 1)).astype(np.float32) * 0.3
    c1, c2 = tpp.ops.Conv2d(w1, padding=1, activation="relu"), tpp.ops.Conv2d(w2, stride=2)
    plain = c2(c1(x))
    chain = c2(c1(tpp.ops.to_blocked(x, block)))
    assert isinstance(chain, tpp.ops.Blocked)
    assert np.allclose(chain.numpy(), plain, rtol=1e-5, atol=1e-4)
    assert np.allclose(c1(x, blocked=True).numpy(), c1(x))
    assert np.allclose(c1(tpp.ops.to_blocked(x, block), blocked=False), c1(x), rtol=1e-5, atol=1e-4)   # Blocked in, NCHW out


@pytest.mark.parametrize("shape", [(1, 16, 9, 9, 32, 3, 3, 1, 1), (1, 3, 16, 16, 8, 7, 7, 2, 3),
                                   (2, 24, 6, 7, 20, 1, 1, 2, 0)])
def test_bf16(shape):
    n, c, h, w, k, r, s, stride, pad = shape
    rng = np.random.default_rng(6)
    x = rng.standard_normal((n, c, h, w)).astype(BF16)
    wt = rng.standard_normal((k, c, r, s)).astype(BF16)
    b = rng.standard_normal(k).astype(np.float32)
    got = tpp.ops.conv2d(x, wt, b.astype(BF16), stride, pad)
    assert got.dtype == BF16
    check(got, x, wt, b.astype(BF16).astype(np.float32), (stride, stride), _pad4(pad), bf16=True)


def test_threads_identical():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 48, 15, 13)).astype(np.float32)
    wt = rng.standard_normal((80, 48, 3, 3)).astype(np.float32)
    conv = tpp.ops.Conv2d(wt, padding=1)
    assert np.array_equal(conv(x, threads=1), conv(x, threads=2))
    xb = tpp.ops.to_blocked(x, 16)                  # read in place, edge blocks
    assert np.array_equal(conv(xb, threads=1).data, conv(xb, threads=2).data)


def test_empty_batch():
    wt = np.ones((4, 3, 3, 3), np.float32)
    assert tpp.ops.conv2d(np.ones((0, 3, 5, 5), np.float32), wt).shape == (0, 4, 3, 3)


def test_strided_input_view():
    rng = np.random.default_rng(8)
    base = rng.standard_normal((2, 10, 12, 14)).astype(np.float32)
    x = base[:, ::2, 1:, ::2]
    wt = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    check(tpp.ops.conv2d(x, wt, padding=1), x, wt, pad=(1, 1, 1, 1))


ERRORS = [
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float32), np.ones((2, 3, 3, 3), np.float32)),
     tpp.ShapeError, "channels"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32), groups=2),
     tpp.ArgumentError, "groups"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32), padding=-1),
     tpp.ArgumentError, "padding"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float64), np.ones((2, 4, 3, 3), np.float64)),
     tpp.DTypeError, "float32 or bfloat16"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), BF16), np.ones((2, 4, 3, 3), np.float32)),
     tpp.DTypeError, "x is bfloat16"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 2, 2), np.float32), np.ones((2, 4, 3, 3), np.float32)),
     tpp.ShapeError, "larger than the padded input"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32), stride=0),
     tpp.ArgumentError, "stride"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32), stride=2,
                            padding="same"), tpp.ArgumentError, "same"),
    (lambda: tpp.ops.conv2d(np.ones((4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32)),
     tpp.ShapeError, "'x'"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3), np.float32)),
     tpp.ShapeError, "'w'"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32),
                            np.ones(3, np.float32)), tpp.ShapeError, "'bias'"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32),
                            residual=np.ones((1, 2, 5, 5), np.float32)), tpp.ShapeError, "'residual'"),
    (lambda: tpp.ops.conv2d(np.ones((1, 4, 5, 5), np.float32), np.ones((2, 4, 3, 3), np.float32),
                            activation="softmax"), tpp.ArgumentError, "activation"),
    (lambda: tpp.ops.Conv2d(np.ones((2, 4, 3, 3), np.float32), bn=(1, 2)), tpp.ArgumentError, "bn"),
]


@pytest.mark.parametrize("fn, error, text", ERRORS, ids=[e[2] for e in ERRORS])
def test_errors(fn, error, text):
    with pytest.raises(error, match=text):
        fn()


@pytest.mark.parametrize("groups, view", [(1, False), (2, False), (1, True)])
def test_pointwise_gemm_path(groups, view):
    """1x1 stride-1 unpadded convolutions on NCHW run as a GEMM over pixels (col_bias,
    residual and activation in its epilogue); channel views with contiguous pixels too."""
    rng = np.random.default_rng(9)
    base = rng.standard_normal((2, 2 * 36, 11, 13)).astype(np.float32)
    x = base[:, ::2] if view else base[:, :36]
    wt = rng.standard_normal((70, 36 // groups, 1, 1)).astype(np.float32)
    b = rng.standard_normal(70).astype(np.float32)
    res = rng.standard_normal((2, 70, 11, 13)).astype(np.float32)
    got = tpp.ops.Conv2d(wt, b, groups=groups, activation="relu")(x, res)
    want = np.maximum(reference(x, wt, b, groups=groups) + res, 0)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("c, groups, hw", [(36, 1, (11, 13)), (36, 2, (11, 13)), (64, 1, (23, 30)), (7, 1, (5, 6))])
def test_pointwise_gemm_path_bf16(c, groups, hw):
    """bf16 1x1 on NCHW: the pixel GEMM on VNNI-packed panels (even C/groups; odd ones
    through the row buffers), pixel tiles past the first and a shorter last tile."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, c) + hw).astype(BF16)
    wt = rng.standard_normal((70, c // groups, 1, 1)).astype(BF16)
    b = rng.standard_normal(70).astype(BF16)
    res = rng.standard_normal((2, 70) + hw).astype(BF16)
    conv = tpp.ops.Conv2d(wt, b, groups=groups, activation="relu")
    got = conv(x, res, threads=2)
    assert got.dtype == BF16 and np.array_equal(got, conv(x, res, threads=1))
    check(got, x, wt, b.astype(np.float32), groups=groups, bf16=True,
          post=lambda y: np.maximum(y + res.astype(np.float64), 0), added=res)


def test_repeated_calls_replay_only_what_matches():
    """A prepared convolution replays a checked call's geometry; anything else (another
    shape, kind, block, residual, dtype or stride) takes the checked path."""
    rng = np.random.default_rng(10)
    wt = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    conv = tpp.ops.Conv2d(wt, padding=1)
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    want = reference(x, wt, pad=(1, 1, 1, 1))
    for _ in range(3):
        assert np.allclose(conv(x), want, rtol=1e-5, atol=1e-4)
        assert np.allclose(conv(x[:, :, ::-1, :].copy()[:, :, ::-1, :]), want, rtol=1e-5, atol=1e-4)
        assert np.allclose(conv(tpp.ops.to_blocked(x, 8)).numpy(), want, rtol=1e-5, atol=1e-4)
        assert np.allclose(conv(tpp.ops.to_blocked(x, 16)).numpy(), want, rtol=1e-5, atol=1e-4)
        res = rng.standard_normal(want.shape).astype(np.float32)
        assert np.allclose(conv(x, res), want + res, rtol=1e-5, atol=1e-4)
        x2 = rng.standard_normal((2, 16, 5, 7)).astype(np.float32)
        assert np.allclose(conv(x2), reference(x2, wt, pad=(1, 1, 1, 1)), rtol=1e-5, atol=1e-4)
        view = np.repeat(x, 2, axis=3)[:, :, :, ::2]           # W stride 2: copied on the checked path
        assert np.allclose(conv(view), want, rtol=1e-5, atol=1e-4)
    with pytest.raises(tpp.DTypeError):
        conv(x.astype(BF16))
    with pytest.raises(tpp.ShapeError):
        conv(x, np.ones((1, 24, 9, 8), np.float32))
