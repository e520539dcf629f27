"""tpp.ops.depthwise: act(conv2d(x, w, groups=C) + bias + residual) against a float64
numpy reference with torch's semantics, plain NCHW and Blocked NCHWc, f32 and bf16."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tpp.errors import ArgumentError, DTypeError, ShapeError
from tpp.kernels import unary as unary_k
from tpp.ops import layout
from tpp.ops.depthwise import Depthwise, depthwise_conv2d
from tolerances import DTYPES, EPS, EXACT, F32, TRANSC, tolerance

ACTS = {None: EXACT, "relu": EXACT, "gelu_tanh": TRANSC, "sigmoid": TRANSC}


# ---- the reference -----------------------------------------------------------------------
def pads(padding, rs, dilation):
    """(top, bottom, left, right) as torch pads: "same" puts an odd total's extra pixel last."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        th, tw = (d * (k - 1) for d, k in zip(dilation, rs))
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = padding if isinstance(padding, tuple) else (padding, padding)
    return (ph, ph, pw, pw)


def depthwise_reference(x, w, bias=None, stride=(1, 1), padding=0, dilation=(1, 1)):
    """float64 conv2d(x, w, groups=C) and the sum of |terms| of each output (for the bound)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    r, s = w.shape[2:]
    top, bottom, left, right = pads(padding, (r, s), dilation)
    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top:top + h, left:left + wd] = x
    (sh, sw), (dh, dw) = stride, dilation
    p = (xp.shape[2] - dh * (r - 1) - 1) // sh + 1
    q = (xp.shape[3] - dw * (s - 1) - 1) // sw + 1
    out, mag = np.zeros((n, c, p, q)), np.zeros((n, c, p, q))
    for i in range(r):
        for j in range(s):
            win = xp[:, :, i * dh:i * dh + (p - 1) * sh + 1:sh, j * dw:j * dw + (q - 1) * sw + 1:sw]
            term = win * w[None, :, 0, i, j, None, None]
            out += term
            mag += np.abs(term)
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
        mag += np.abs(np.asarray(bias, np.float64))[None, :, None, None]
    return out, mag


def activate(z, activation):
    return z if activation is None else unary_k.KINDS[activation].reference(z)


def check(got, x, w, bias, stride, padding, dilation, activation, residual=None, what=""):
    """|got - ref| within: f32 summation error of the R*S + 2 terms (times the activation's
    slope, < 1.2 for these), plus the activation's and the output dtype's own bound."""
    dt = np.dtype(x.dtype)
    pre, mag = depthwise_reference(x, w, bias, stride, padding, dilation)
    if residual is not None:
        pre, mag = pre + np.asarray(residual, np.float64), mag + np.abs(np.asarray(residual, np.float64))
    ref = activate(pre, activation)
    tol = tolerance(ACTS[activation], dt)
    allowed = tol.atol + tol.rtol * np.abs(ref) + 1.2 * (w.shape[2] * w.shape[3] + 3) * EPS[F32] * mag + 1e-30
    got64 = np.asarray(got).astype(np.float64)
    assert got64.shape == ref.shape, f"{what}: shape {got64.shape} != {ref.shape}"
    err = np.abs(got64 - ref)
    bad = ~(err <= allowed)
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, err / allowed, -1)), ref.shape)
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} outside the bound; worst at {worst}: got "
                             f"{got64[worst]!r}, reference {ref[worst]!r}, allowed {allowed[worst]:.3g}")


def pair(v):
    return v if isinstance(v, tuple) else (v, v)


# ---- numerics ----------------------------------------------------------------------------
@st.composite
def problems(draw):
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.sampled_from([1, 2, (1, 2), (2, 1)]))
    dilation = draw(st.sampled_from([1, 2, (2, 1)]))
    padding = draw(st.sampled_from([0, 1, 2, (1, 0), "valid"] + (["same"] if stride == 1 else [])))
    top, bottom, left, right = pads(padding, (r, s), pair(dilation))
    dh, dw = pair(dilation)
    h = draw(st.integers(max(1, dh * (r - 1) + 1 - top - bottom), 11))
    w = draw(st.integers(max(1, dw * (s - 1) + 1 - left - right), 11))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 37)), h=h, w=w, rs=(r, s), stride=stride,
                padding=padding, dilation=dilation)


@settings(max_examples=40)
@given(prob=problems(), blocked=st.booleans(), dtype=st.sampled_from(["f32", "bf16"]), use_bias=st.booleans(),
       use_residual=st.booleans(), activation=st.sampled_from(sorted(ACTS, key=str)),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1))
def test_any_shape_matches_the_reference(prob, blocked, dtype, use_bias, use_residual, activation, threads, seed):
    rng = np.random.default_rng(seed)
    dt = DTYPES[dtype]
    n, c, h, wd, (r, s) = prob["n"], prob["c"], prob["h"], prob["w"], prob["rs"]
    x = rng.uniform(-2, 2, (n, c, h, wd)).astype(dt)
    w = rng.uniform(-1, 1, (c, 1, r, s)).astype(dt)
    bias = rng.uniform(-1, 1, c).astype(dt) if use_bias else None
    geometry = (pair(prob["stride"]), prob["padding"], pair(prob["dilation"]))
    out_shape = depthwise_reference(x[:, :1], w[:1], None, *geometry)[0].shape[2:]
    residual = rng.uniform(-1, 1, (n, c, *out_shape)).astype(dt) if use_residual else None
    what = f"{prob} {dtype} blocked={blocked} bias={use_bias} residual={use_residual} {activation}"
    layer = Depthwise(w, bias, prob["stride"], prob["padding"], prob["dilation"], activation)
    if blocked:
        res = None if residual is None else layout.to_blocked(residual)
        got = layer(layout.to_blocked(x), res, threads=threads)
        assert isinstance(got, layout.Blocked) and got.shape == (n, c, *out_shape) and got.dtype == dt
        channels = got.data.transpose(0, 1, 4, 2, 3).reshape(n, -1, *out_shape)
        assert not channels[:, c:].any(), "channels past C must stay zero"
        got = got.numpy()
    else:
        got = layer(x, residual, threads=threads)
        assert type(got) is np.ndarray and got.dtype == dt
    check(got, x, w, bias, *geometry, activation, residual, what)


@pytest.mark.parametrize("shape, rs, stride, padding, dilation", [
    ((1, 256, 28, 28), (3, 3), 1, 1, 1),        # the layer
    ((1, 40, 15, 15), (3, 3), 2, 1, 1),         # stride 2, C not a multiple of the block
    ((2, 19, 9, 13), (5, 5), 1, "same", 2),
    ((1, 5, 13, 12), (7, 7), 1, 3, 1),
    ((1, 6, 9, 9), (6, 6), 1, 2, 1),            # more taps than registers hold (AVX2)
    ((1, 7, 4, 4), (4, 4), 1, 0, 1),            # a 1x1 output
])
def test_fixed_layers(shape, rs, stride, padding, dilation, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[1], 1, *rs)).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    geometry = (pair(stride), padding, pair(dilation))
    got = depthwise_conv2d(x, w, b, stride, padding, dilation, "relu")
    check(got, x, w, b, *geometry, "relu", what=f"{shape} {rs}")
    blocked = depthwise_conv2d(layout.to_blocked(x), w, b, stride, padding, dilation, "relu").numpy()
    np.testing.assert_array_equal(blocked, got)       # one kernel, two layouts


@pytest.mark.parametrize("stride", [1, 2])       # plain: whole planes; rows by address (zero rows)
def test_threads_agree_bit_for_bit(rng, stride):
    x = rng.standard_normal((2, 35, 17, 19)).astype(np.float32)
    w = rng.standard_normal((35, 1, 3, 3)).astype(np.float32)
    out = (9, 10) if stride == 2 else (17, 19)
    res = rng.standard_normal((2, 35, *out)).astype(np.float32)
    layer = Depthwise(w, rng.standard_normal(35).astype(np.float32), stride, 1, activation="gelu_tanh")
    one = layer(x, res, threads=1)
    np.testing.assert_array_equal(layer(x, res, threads=2), one)
    xb, rb = layout.to_blocked(x), layout.to_blocked(res)
    np.testing.assert_array_equal(layer(xb, rb, threads=2).data, layer(xb, rb, threads=1).data)


@pytest.mark.parametrize("shape, rs, padding, dilation", [
    ((1, 16, 28, 28), (3, 3), 1, 1),             # the plane: a 4-row loop turn and two edges
    ((2, 5, 14, 14), (3, 3), (2, 1), 1),         # two padding rows above and below, edges only
    ((1, 9, 12, 13), (3, 5), "same", (1, 2)),    # an odd width, dilated along the row: 7 accumulators
    ((3, 4, 7, 20), (4, 2), "same", 1),          # an even kernel: the extra padding last
])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_whole_planes(shape, rs, padding, dilation, dtype, rng):
    """Plain stride-1 layers whose rows keep their width run a plane per channel, pixels
    flat in the lanes: the reference's values, the Blocked layout's bits, one thread's."""
    dt = DTYPES[dtype]
    x = rng.uniform(-2, 2, shape).astype(dt)
    w = rng.uniform(-1, 1, (shape[1], 1, *rs)).astype(dt)
    b = rng.uniform(-1, 1, shape[1]).astype(dt)
    layer = Depthwise(w, b, 1, padding, dilation, "sigmoid")
    out = depthwise_reference(x[:, :1], w[:1], None, (1, 1), padding, pair(dilation))[0].shape
    res = rng.uniform(-1, 1, (shape[0], shape[1], *out[2:])).astype(dt)
    got = layer(x, res, threads=2)
    check(got, x, w, b, (1, 1), padding, pair(dilation), "sigmoid", res, f"{shape} {rs}")
    np.testing.assert_array_equal(layer(x, res, threads=1), got)
    if dtype == "f32":
        blocked = layer(layout.to_blocked(x), layout.to_blocked(res)).numpy()
        np.testing.assert_array_equal(blocked, got)


def test_a_layer_is_reused_across_calls_and_shapes(rng):
    w = rng.standard_normal((20, 1, 3, 3)).astype(np.float32)
    layer = Depthwise(w, stride=2, padding=1)
    for shape in ((1, 20, 10, 10), (3, 20, 7, 12), (1, 20, 10, 10)):
        for _ in range(2):                         # the second call takes the remembered geometry
            x = rng.standard_normal(shape).astype(np.float32)
            check(layer(x), x, w, None, (2, 2), 1, (1, 1), None)


def test_views_and_other_blocks(rng):
    base = rng.standard_normal((2, 24, 9, 20)).astype(np.float32)
    w = rng.standard_normal((12, 1, 3, 3)).astype(np.float32)
    for x in (base[:, ::2], base[:, :12, :, ::2], base[:, 5:17, 1:8, 3:14]):
        check(depthwise_conv2d(x, w, padding=1), x, w, None, (1, 1), 1, (1, 1), None, what=str(x.strides))
    x = np.ascontiguousarray(base[:, :12])
    got = depthwise_conv2d(layout.to_blocked(x, 4), w, padding=1)
    assert got.block == 4
    np.testing.assert_array_equal(got.numpy(), depthwise_conv2d(x, w, padding=1))


def test_bf16_rounds_once(rng):
    dt = DTYPES["bf16"]
    x = rng.uniform(-2, 2, (1, 33, 8, 8)).astype(dt)
    w = rng.uniform(-1, 1, (33, 1, 3, 3)).astype(dt)
    res = rng.uniform(-1, 1, (1, 33, 8, 8)).astype(dt)
    got = depthwise_conv2d(x, w, None, 1, 1, 1, None, res)
    assert got.dtype == dt
    ref = (depthwise_reference(x, w, None, (1, 1), 1)[0] + res.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(got, ref.astype(dt))        # f32 sum rounded to bf16 once, as here
    np.testing.assert_array_equal(depthwise_conv2d(layout.to_blocked(x), w, None, 1, 1, 1, None,
                                                   layout.to_blocked(res)).numpy(), got)


def test_empty_batch(rng):
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    assert depthwise_conv2d(np.zeros((0, 4, 5, 5), np.float32), w).shape == (0, 4, 3, 3)


# ---- errors ------------------------------------------------------------------------------
X = np.zeros((1, 4, 6, 6), np.float32)
W = np.zeros((4, 1, 3, 3), np.float32)


@pytest.mark.parametrize("call, error, match", [
    (lambda: depthwise_conv2d(X, np.zeros((4, 3, 3), np.float32)), ShapeError, "'w'"),
    (lambda: depthwise_conv2d(X, np.zeros((4, 2, 3, 3), np.float32)), ShapeError, "'w'"),
    (lambda: depthwise_conv2d(X, np.zeros((5, 1, 3, 3), np.float32)), ShapeError, "'w' has 5 channels"),
    (lambda: depthwise_conv2d(X[0], W), ShapeError, "'x'"),
    (lambda: depthwise_conv2d(X, W, np.zeros(5, np.float32)), ShapeError, "'bias'"),
    (lambda: depthwise_conv2d(X, W, np.zeros(4, np.float64)), DTypeError, "'bias'"),
    (lambda: depthwise_conv2d(X.astype(DTYPES["bf16"]), W), DTypeError, "'x'"),
    (lambda: depthwise_conv2d(X, W.astype(np.float64)), DTypeError, "w"),
    (lambda: depthwise_conv2d(X, W, residual=np.zeros((1, 4, 6, 6), np.float32)), ShapeError, "'residual'"),
    (lambda: depthwise_conv2d(X, W, residual=np.zeros((1, 4, 4, 4), np.float64)), DTypeError, "'residual'"),
    (lambda: depthwise_conv2d(layout.to_blocked(X), W, residual=np.zeros((1, 4, 4, 4), np.float32)), ShapeError,
     "'residual' must be a tpp.ops.Blocked"),
    (lambda: depthwise_conv2d(X, np.zeros((4, 1, 9, 3), np.float32)), ShapeError, "larger than the padded"),
    (lambda: depthwise_conv2d(X, W, dilation=4), ShapeError, "larger than the padded"),
    (lambda: depthwise_conv2d(X, W, stride=0), ArgumentError, "stride"),
    (lambda: depthwise_conv2d(X, W, padding=-1), ArgumentError, "padding"),
    (lambda: depthwise_conv2d(X, W, padding="full"), ArgumentError, "padding"),
    (lambda: depthwise_conv2d(X, W, stride=2, padding="same"), ArgumentError, "same"),
    (lambda: depthwise_conv2d(X, W, activation="softmax"), ArgumentError, "activation"),
    (lambda: depthwise_conv2d(X, W, threads=0), ArgumentError, "threads"),
])
def test_bad_arguments_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()

