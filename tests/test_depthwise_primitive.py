"""The depthwise-row TPP (kernels/depthwise.py) against its float64 reference on every x86
target (hypothesis over the geometry, padding, row addresses, output rows, fusions and
dtypes), its code (weights in registers, no spills, FMAs per output vector) compiled for
every CPU target, and its descriptor's checks."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tpp
from tpp.depthwise_kernel import depthwise_row, depthwise_row_desc
from tpp.errors import DescriptorError, DTypeError
from tpp.kernels import depthwise as dw_k
from targets import GPU, SVE, X86, compile_only, require
from tolerances import DTYPES, EPS, EXACT, F32, TRANSC, tolerance

ACTS = {None: EXACT, "relu": EXACT, "gelu_tanh": TRANSC, "sigmoid": TRANSC}


@st.composite
def rows(draw):
    c = draw(st.sampled_from([1, 1, 3, 16, 20, 37]))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    q = draw(st.integers(1, 40 if c == 1 else 12))
    extent = (q - 1) * stride + (s - 1) * dilation + 1
    left = draw(st.integers(0, min(2, extent - 1)))
    right = draw(st.integers(0, min(2, extent - 1 - left)))
    m = draw(st.integers(1, 3)) if c == 1 else 1
    if c == 1 and draw(st.booleans()):       # a whole plane: stride 1, rows that keep their width
        left = draw(st.integers(0, (s - 1) * dilation))
        top = draw(st.integers(0, r - 1))
        m = draw(st.integers(1, 12))
        return dict(q=q, c=1, r=r, s=s, dilation=dilation, pad=(left, (s - 1) * dilation - left), m=m,
                    plane=True, vpad=(top, draw(st.integers(0, min(r - 1, m + r - 2 - top)))))
    return dict(q=q, c=c, r=r, s=s, stride=stride, dilation=dilation, pad=(left, right), m=m,
                row_step=draw(st.integers(1, 2)))


def inputs_of(d, rng, dt):
    """x as the kernel reads it: rows (R + (m-1)*row_step of them), or a plane."""
    if d.plane:
        return rng.uniform(-2, 2, (1, dw_k.plane_rows(d) * d.q)).astype(dt)
    return rng.uniform(-2, 2, (dw_k.input_rows(d), dw_k.stored(d) * d.c)).astype(dt)


@pytest.mark.parametrize("target", X86)
@settings(max_examples=60, deadline=None)
@given(geo=rows(), dtype=st.sampled_from(["f32", "bf16"]), bias=st.booleans(), residual=st.booleans(),
       activation=st.sampled_from(sorted(ACTS, key=str)), row_ptrs=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_row_matches_the_reference(target, geo, dtype, bias, residual, activation, row_ptrs, seed):
    row_ptrs = row_ptrs and not geo.get("plane")
    k = require(depthwise_row(**geo, dtype=dtype, bias=bias, residual=residual, activation=activation,
                              row_ptrs=row_ptrs, target=target))
    d, dt, rng = k.descriptor, DTYPES[dtype], np.random.default_rng(seed)
    ops = {op.name: op for op in d.operands()}
    data = inputs_of(d, rng, dt)
    x = np.array([[row.ctypes.data for row in data]], np.int64) if row_ptrs else data
    inputs = [x, rng.uniform(-1, 1, (ops["w"].rows, ops["w"].cols)).astype(np.float32)]
    if bias:
        inputs.append(np.float32(0.25) if d.c == 1 else rng.uniform(-1, 1, (1, d.c)).astype(np.float32))
    if residual:
        inputs.append(rng.uniform(-1, 1, (ops["residual"].rows, ops["residual"].cols)).astype(dt))
    got = k(*inputs).astype(np.float64)
    ref = k.reference(*inputs)
    # the bound: f32 summation error of the R*S + 2 terms (times the activation's slope,
    # < 1.2 here), plus the activation's and the output dtype's own
    plain = replace(d, activation=None, row_ptrs=False)
    mag = plain.reference(np.abs(data.astype(np.float64)), *[np.abs(np.asarray(a, np.float64)) for a in inputs[1:]])
    tol = tolerance(ACTS[activation], dt)
    allowed = tol.atol + tol.rtol * np.abs(ref) + 1.2 * (d.r * d.s + 3) * EPS[F32] * mag + 1e-30
    assert got.shape == ref.shape
    assert np.all(np.abs(got - ref) <= allowed), (geo, np.max(np.abs(got - ref) - allowed))


def test_pixel_lanes_and_channel_lanes_agree_bit_for_bit(rng):
    """c == 1 and one channel of a c-wide row sum the same taps in the same order."""
    row = depthwise_row(28, 16, 3, 3, pad=(1, 1), bias=True)
    one = depthwise_row(28, 1, 3, 3, pad=(1, 1), bias=True)
    require(row)
    x = rng.standard_normal((3, 28, 16)).astype(np.float32)
    w = rng.standard_normal((9, 16)).astype(np.float32)
    b = rng.standard_normal((1, 16)).astype(np.float32)
    wide = row(x.reshape(3, -1), w, b)
    for ch in (0, 7, 15):
        got = one(np.ascontiguousarray(x[:, :, ch]), np.ascontiguousarray(w[:, ch:ch + 1]), b[0, ch])
        np.testing.assert_array_equal(got[0], wide[:, ch])


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("q, m, r, s, dilation, left, vpad", [
    (28, 28, 3, 3, 1, 1, (1, 1)),       # the plane: the loop over 4-row turns and both edges
    (14, 14, 3, 3, 1, 1, (1, 1)),       # edges only
    (12, 17, 5, 5, 1, 2, (2, 2)),       # three vectors a period
    (13, 11, 3, 3, 2, 2, (0, 2)),       # an odd width: a period of 13 vectors, in two groups
    (20, 9, 4, 2, 1, 0, (3, 0)),        # all padding above, none left
])
def test_plane_matches_the_reference(target, q, m, r, s, dilation, left, vpad, rng):
    for dtype, residual, activation in (("f32", True, "gelu_tanh"), ("bf16", False, None)):
        k = require(depthwise_row(q, 1, r, s, 1, dilation, dtype, bias=True, residual=residual, activation=activation,
                                  pad=(left, (s - 1) * dilation - left), m=m, plane=True, vpad=vpad, target=target))
        d, dt = k.descriptor, DTYPES[dtype]
        inputs = [inputs_of(d, rng, dt), rng.uniform(-1, 1, (r * s, 1)).astype(np.float32), np.float32(0.5)]
        if residual:
            inputs.append(rng.uniform(-1, 1, (1, m * q)).astype(dt))
        tol = tolerance(ACTS[activation], dt)
        got, ref = k(*inputs).astype(np.float64), k.reference(*inputs)
        np.testing.assert_allclose(got, ref, rtol=tol.rtol + 1e-5, atol=tol.atol + 1e-5)


def test_plane_agrees_with_channel_lanes_bit_for_bit(rng):
    """A plane sums each pixel's taps in the channel lanes' order: the same bits."""
    plane = depthwise_row(28, 1, 3, 3, pad=(1, 1), bias=True, m=28, plane=True, vpad=(1, 1))
    row = depthwise_row(28, 16, 3, 3, pad=(1, 1), bias=True)
    require(row)
    x = rng.standard_normal((28, 28, 16)).astype(np.float32)
    w = rng.standard_normal((9, 16)).astype(np.float32)
    b = rng.standard_normal((1, 16)).astype(np.float32)
    xp = np.pad(x, ((1, 1), (0, 0), (0, 0)))
    for ch in (0, 9):
        got = plane(np.ascontiguousarray(x[:, :, ch]).reshape(1, -1), np.ascontiguousarray(w[:, ch:ch + 1]),
                    b[0, ch]).reshape(28, 28)
        for p in (0, 13, 27):
            np.testing.assert_array_equal(got[p], row(xp[p:p + 3].reshape(3, -1), w, b)[:, ch])


# ---- code --------------------------------------------------------------------------------
def _body(asm: str) -> list[str]:
    return [line for line in asm.splitlines() if line.startswith("\t") and not line.strip().startswith(".")]


@pytest.mark.parametrize("target, reg", [("x86-avx512", "zmm"), ("x86-avx2", "ymm")])
def test_channel_rows_hold_the_weights_and_do_not_spill(target, reg):
    """3x3 on a 16-channel block: R*S FMAs per output vector, the weights loaded once,
    no vector register spilled to the stack."""
    k = tpp.get_kernel(depthwise_row_desc(28, 16, 3, 3, pad=(1, 1), row_ptrs=True), compile_only(target))
    body = _body(k.asm)
    qb, hold = dw_k.channel_block(k.descriptor, k.target)
    assert hold and qb >= 4
    # the loop's block (9 FMAs per output) and the two edge blocks (left and right taps skipped)
    assert sum("vfmadd" in line for line in body) == 9 * qb * 3 - 2 * 3
    assert not [line for line in body if reg in line and "rsp" in line], "spills"


def test_pixel_rows_load_each_window_once():
    """Stride 1 along pixels: each (input row, output vector, tap) window is one
    (unaligned) load shared by every output row it feeds, no shuffles, no spills."""
    k = tpp.get_kernel(depthwise_row_desc(28, 1, 3, 3, pad=(1, 1), m=4), compile_only("x86-avx512"))
    body = _body(k.asm)
    fmas = [line for line in body if "vfmadd" in line]
    loads = [line for line in body if re.search(r"vmov(ups|aps|dqu\d*)\s+-?\d*\(", line)]
    memory_fmas = [line for line in fmas if "(" in line]
    assert len(fmas) == 4 * 2 * 9            # 4 rows x 2 vectors x 9 taps
    assert len(loads) + len(memory_fmas) <= 6 * 2 * 3   # 6 input rows x 2 vectors x 3 taps, once each
    assert not [line for line in body if "vperm" in line]
    assert not [line for line in body if "zmm" in line and "rsp" in line]


def test_plane_cuts_windows_by_valign_and_does_not_spill():
    """A plane's loop turn (7 vectors, 4 rows of 28): 9 FMAs per vector, one load per
    (vector, kernel row) plus the turn's neighbours, the shifted windows by valignd
    (never vpermt2ps) or masked loads, no vector spilled."""
    k = tpp.get_kernel(depthwise_row_desc(28, 1, 3, 3, pad=(1, 1), bias=True, m=28, plane=True, vpad=(1, 1)),
                       compile_only("x86-avx512"))
    body, lines = _body(k.asm), k.asm.splitlines()
    # the loop: from the label its backward branch names to that branch
    jump = next(i for i, line in enumerate(lines) if re.match(r"\tj\w+\s+(\.LBB\w+)", line)
                and re.match(r"\tj\w+\s+(\.LBB\w+)", line)[1] + ":" in lines[:i])
    label = re.match(r"\tj\w+\s+(\.LBB\w+)", lines[jump])[1] + ":"
    loop = _body("\n".join(lines[lines.index(label):jump + 1]))
    assert sum("vfmadd" in line for line in loop) == 7 * 9
    # 6 shifted windows a vector: by valignd, but the 12 right-hand ones with padding lanes
    assert sum("valignd" in line for line in loop) == 7 * 6 - 12
    loads = [line for line in loop if re.search(r"\s-?\d*\(%r", line) and "vmovups\t%zmm" not in line]
    assert len(loads) <= 3 * (7 + 2) + 12 + 7    # spans (+ neighbours), the masked windows, pad masks
    assert not [line for line in loop if "vperm" in line]
    assert not [line for line in body if "zmm" in line and "rsp" in line]


@pytest.mark.parametrize("target", SVE)
def test_compiles_for_sve(target):
    for desc in (depthwise_row_desc(9, 16, 3, 3, pad=(1, 1)), depthwise_row_desc(20, 1, 3, 3, 2, m=2),
                 depthwise_row_desc(20, 1, 3, 3, pad=(1, 1), m=9, plane=True, vpad=(1, 1))):
        assert tpp.get_kernel(desc, compile_only(target)).asm


@pytest.mark.parametrize("target", GPU)
def test_gpus_are_refused_with_the_reason(target):
    with pytest.raises(Exception, match="vector CPUs"):
        tpp.get_kernel(depthwise_row_desc(9, 16, 3, 3), compile_only(target))


# ---- descriptor ----------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, match", [
    (lambda: depthwise_row_desc(0, 16, 3, 3), DescriptorError, "q"),
    (lambda: depthwise_row_desc(4, 16, 3, 3, stride=0), DescriptorError, "stride"),
    (lambda: depthwise_row_desc(4, 16, 3, 3, dtype="f64"), DTypeError, "f64"),
    (lambda: depthwise_row_desc(4, 16, 3, 3, activation="softmax"), DescriptorError, "activation"),
    (lambda: depthwise_row_desc(4, 16, 3, 3, pad=(3, 3)), DescriptorError, "pad"),
    (lambda: depthwise_row_desc(4, 16, 3, 3, pad=(-1, 0)), DescriptorError, "pad"),
    (lambda: depthwise_row_desc(4, 16, 3, 3, m=2), DescriptorError, "c == 1"),
    (lambda: depthwise_row_desc(4, 16, 3, 3, bias=1), DescriptorError, "bias"),
    (lambda: depthwise_row_desc(4, 16, 3, 3, pad=(1, 1), plane=True), DescriptorError, "c == 1"),
    (lambda: depthwise_row_desc(4, 1, 3, 3, 2, pad=(1, 1), plane=True), DescriptorError, "stride 1"),
    (lambda: depthwise_row_desc(4, 1, 3, 3, pad=(1, 0), plane=True), DescriptorError, "q pixels"),
    (lambda: depthwise_row_desc(4, 1, 3, 3, pad=(1, 1), vpad=(1, 0)), DescriptorError, "plane=True"),
    (lambda: depthwise_row_desc(4, 1, 3, 3, pad=(1, 1), plane=True, vpad=(2, 1)), DescriptorError, "vpad"),
])
def test_bad_descriptors_name_the_field(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_descriptor_is_a_cache_key():
    a = depthwise_row_desc(28, 16, 3, 3, pad=[1, 1], activation="gelu")
    assert a == depthwise_row_desc(28, 16, 3, 3, pad=(1, 1), activation="gelu_tanh") and hash(a)
    assert a.pad == (1, 1) and a.activation == "gelu_tanh"
