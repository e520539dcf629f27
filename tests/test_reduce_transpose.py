"""Reductions (sum, sumsq, max, min over axis 1 or 0, with argidx for max/min)
and transpose, against numpy: sums within an error bound that grows with the
reduced length, max/min/argidx/transpose exactly (NaN and ties like numpy); sums of
1M-element rows and columns as accurate as numpy's pairwise sum."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tpp
from tpp.kernels import reduce as reduce_refs

from targets import SVE, X86, compile_only, require
from tensors import SHAPES, STRIDED, blank, grid, layouts, place, seeds, shapes, uniform, values
from tolerances import BF16, DTYPES, EPS, F32, F64, reduction_bound

SUMS = ["reduce_sum", "reduce_sumsq"]
EXTREMA = ["reduce_max", "reduce_min"]
DTS = ["f32", "bf16", "f64"]
TRANSPOSE_SHAPES = SHAPES + [(17, 3), (3, 17), (64, 1), (1, 64), (40, 24)]


def check_reduction(k, x: np.ndarray, got, what: str) -> None:
    """Values (and indices) of reduction kernel k on x against numpy."""
    d = k.descriptor
    length = d.m if d.axis == 1 else d.n
    values_, idx = got if d.argidx else (got, None)
    assert values_.shape == (length,) and values_.dtype == x.dtype, what
    ref = k.reference(x)
    ref_values = ref[0] if d.argidx else ref
    if d.kind in SUMS:
        err = np.abs(values_.astype(np.float64) - ref_values)
        bound = reduction_bound(d.kind, x, d.axis, x.dtype)
        worst = int(np.argmax(err - bound))
        assert (err <= bound).all(), (f"{what}: output {worst} = {values_[worst]!r}, reference "
                                      f"{ref_values[worst]!r}, error {err[worst]:.3g} > "
                                      f"bound {bound[worst]:.3g}")
    else:   # max/min select an input element: exact, NaN if any NaN (numpy semantics)
        np.testing.assert_array_equal(values_.astype(np.float64), ref_values, err_msg=what)
    if d.argidx:
        assert idx.dtype == np.int64 and idx.shape == (length,), what
        np.testing.assert_array_equal(idx, ref[1], err_msg=f"{what}: indices")


def run_into_views(k, x: np.ndarray, layout=STRIDED):
    """k(x) into output views inside sentinel-filled buffers; checks that nothing
    around them was written and returns what k returned."""
    d = k.descriptor
    length = d.m if d.axis == 1 else d.n
    outs = [blank((length,), x.dtype, layout)] + ([blank((length,), np.int64, layout)] if d.argidx else [])
    views = tuple(o.view for o in outs) if d.argidx else outs[0].view
    got = k(x, out=views)
    assert got is views
    for o, name in zip(outs, ("values", "indices")):
        o.assert_untouched_outside(f"{d.kind} axis={d.axis} {x.dtype} {x.shape} {name}")
    return got


def _reduction_params():
    out = []
    for kind in SUMS + EXTREMA:
        for argidx in ([False, True] if kind in EXTREMA else [False]):
            for axis in (1, 0):
                for dt in DTS:
                    for shape in SHAPES:
                        name = f"{kind}{'-argidx' * argidx}-axis{axis}-{dt}-{shape[0]}x{shape[1]}"
                        out.append(pytest.param(kind, argidx, axis, dt, shape, id=name))
    return out


def test_references_are_importable_by_kind_name(rng):
    x = rng.uniform(-1, 1, (5, 7))
    for kind in SUMS + EXTREMA:
        for axis in (0, 1):
            np.testing.assert_array_equal(tpp.unary(kind, 5, 7, axis=axis).reference(x),
                                          getattr(reduce_refs, kind)(x, axis))


@pytest.mark.parametrize("kind, argidx, axis, dt, shape", _reduction_params())
def test_reduction_matches_numpy(kind, argidx, axis, dt, shape, rng):
    # extrema on a small integer grid: many ties, so "first occurrence" is exercised
    domain = uniform(-10, 10) if kind in SUMS else grid(-3, 3)
    x = values(domain, rng, shape, DTYPES[dt])
    k = tpp.unary(kind, *shape, dtype=dt, axis=axis, argidx=argidx)
    what = f"{kind} axis={axis} argidx={argidx} {dt} {shape}"
    check_reduction(k, x, k(x), what)
    check_reduction(k, x, run_into_views(k, x), what + " into views")


@pytest.mark.parametrize("kind", EXTREMA)
@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_extrema_with_nan_and_inf(kind, axis, dt, rng):
    """A NaN wins (the first NaN's index with argidx), like numpy; +-inf are ordinary."""
    x = values(grid(-3, 3, nan_fraction=0.04), rng, (33, 65), DTYPES[dt])
    x[rng.random(x.shape) < 0.03] = np.inf
    x[rng.random(x.shape) < 0.03] = -np.inf
    x[5] = np.nan        # an all-NaN row
    x[:, 7] = -np.inf    # an all -inf column
    for argidx in (False, True):
        k = tpp.unary(kind, 33, 65, dtype=dt, axis=axis, argidx=argidx)
        check_reduction(k, x, k(x), f"{kind} axis={axis} argidx={argidx} with NaN/inf")


@pytest.mark.parametrize("axis", [1, 0])
def test_sum_of_large_cancelling_values_is_within_bound(axis, rng):
    """The error bound holds where the sum cancels almost entirely."""
    x = rng.uniform(-1e6, 1e6, (33, 65)).astype(np.float32)
    x -= x.mean(axis=axis, keepdims=True).astype(np.float32)
    k = tpp.unary("reduce_sum", 33, 65, axis=axis)
    check_reduction(k, x, k(x), "cancelling sum")


@pytest.mark.parametrize("kind", SUMS + EXTREMA)
@pytest.mark.parametrize("axis", [1, 0])
def test_reduction_of_a_view(kind, axis, rng):
    x = values(uniform(-10, 10), rng, (7, 37), np.float32)
    px = place(x, STRIDED)
    k = tpp.unary(kind, 7, 37, axis=axis, argidx=kind in EXTREMA)
    check_reduction(k, x, run_into_views(k, px.view), f"{kind} axis={axis} views")
    px.assert_unchanged()


@given(kind=st.sampled_from(SUMS + EXTREMA), axis=st.sampled_from([0, 1]), argidx=st.booleans(),
       dt=st.sampled_from(["f32", "bf16"]), shape=shapes, layout=layouts, out_layout=layouts, seed=seeds)
def test_reduction_any_shape_and_layout(kind, axis, argidx, dt, shape, layout, out_layout, seed):
    argidx = argidx and kind in EXTREMA
    domain = uniform(-10, 10) if kind in SUMS else grid(-5, 5)
    x = values(domain, np.random.default_rng(seed), shape, DTYPES[dt])
    px = place(x, layout)
    k = tpp.unary(kind, *shape, dtype=dt, axis=axis, argidx=argidx)
    got = run_into_views(k, px.view, out_layout)
    check_reduction(k, x, got, f"{kind} axis={axis} argidx={argidx} {dt} {shape} in {layout} "
                               f"out {out_layout}")
    px.assert_unchanged()


# ---- long sums: blocked and combined pairwise ---------------------------------------------------
# Rows past two blocks (16 vector additions per accumulator: 1024 f32 on AVX-512, 256 on
# AVX2) and columns past 16 rows per accumulator, with remainders after the last block,
# odd block counts and a masked column tail.
LONG_SHAPES = [(2, 2048), (3, 7 * 1024 + 37), (1, 5 * 1024 + 1000), (16 * 5 + 7, 37), (1603, 5), (2000, 70)]


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("kind", SUMS + EXTREMA)
@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("shape", LONG_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_long_reductions_match_numpy(kind, axis, shape, target, rng):
    dt = "f32" if kind in SUMS else "bf16"
    domain = uniform(-10, 10) if kind in SUMS else grid(-50, 50)
    x = values(domain, rng, shape, DTYPES[dt])
    k = require(tpp.unary(kind, *shape, dtype=dt, axis=axis, target=target))
    check_reduction(k, x, run_into_views(k, place(x, STRIDED).view), f"{kind} axis={axis} {shape} {target}")


# One sequential accumulator per lane over 1M uniform [0, 1) terms was off by up to
# 4e-4 relative (f32 sumsq down a column), numpy's pairwise sum by under one ulp of the
# result. The bound: four ulps of the result (in the accumulation precision), plus the
# rounding of a bf16 output.
LONG = 1 << 20


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("kind", SUMS)
@pytest.mark.parametrize("dt", ["f32", "f64", "bf16"])
@pytest.mark.parametrize("axis", [1, 0], ids=["row", "column"])
def test_sum_of_a_million_is_as_accurate_as_numpy(kind, dt, axis, target):
    x = values(uniform(0, 1), np.random.default_rng(12), (LONG,), DTYPES[dt])
    shape = (1, LONG) if axis == 1 else (LONG, 1)
    k = require(tpp.unary(kind, *shape, dtype=dt, axis=axis, target=target))
    got = float(k(x.reshape(shape))[0])
    terms = x.astype(np.float64) ** (2 if kind == "reduce_sumsq" else 1)
    exact = math.fsum(terms)
    acc = F64 if dt == "f64" else F32
    bound = 4 * EPS[acc] * exact + (EPS[BF16] / 2 * exact if dt == "bf16" else 0.0)
    summed = x.astype(acc) ** (2 if kind == "reduce_sumsq" else 1)
    numpy_err = abs(float(summed.sum()) - exact)
    assert abs(got - exact) <= bound, (f"{kind} {dt} {target} {'row' if axis else 'column'} of {LONG}: "
                                       f"relative error {abs(got - exact) / exact:.2e} (numpy's "
                                       f"{numpy_err / exact:.2e}), bound {bound / exact:.2e}")


@pytest.mark.parametrize("target", SVE)
@pytest.mark.parametrize("axis", [1, 0])
def test_blocked_sums_compile_for_sve(target, axis):
    """The pairwise levels (a stack array, a trailing-ones count) lower for every SVE length
    (at 128 bits LLVM picks NEON's v registers for the fixed-length vectors)."""
    shape = (3, 5000) if axis == 1 else (5000, 3)
    asm = tpp.unary("reduce_sum", *shape, axis=axis, target=compile_only(target)).asm
    assert "fadd" in asm and re.search(r"\b[zv]\d+\.(4)?s\b", asm), asm[:2000]


@pytest.mark.parametrize("kind", SUMS)
@pytest.mark.parametrize("axis", [1, 0])
def test_blocked_gpu_sums_in_the_ptx_interpreter(kind, axis, rng):
    """A GPU thread sums in blocks of ~sqrt(length) (here 17 blocks of 17 and 11 more):
    small integers, so every order gives the exact sum."""
    from test_gpu_sim import run_plain
    shape = (3, 300) if axis == 1 else (300, 3)
    x = rng.integers(-20, 20, shape).astype(np.float32)
    k = tpp.unary(kind, *shape, axis=axis, target="nvptx-sm80")
    got = run_plain(k, [x])[0].ravel()
    np.testing.assert_array_equal(got, k.reference(x))


# ---- transpose -------------------------------------------------------------------------------
def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.itemsize}"))


def _transpose_input(rng, shape, dt) -> np.ndarray:
    """Distinct values with NaNs and signed zeros: transpose moves bits, it must not
    canonicalise anything."""
    x = values(uniform(-100, 100), rng, shape, DTYPES[dt])
    x.flat[::7] = -0.0
    x.flat[3::11] = np.nan
    return x


@pytest.mark.parametrize("dt", DTS)
@pytest.mark.parametrize("shape", TRANSPOSE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_transpose_is_exact(dt, shape, rng):
    x = _transpose_input(rng, shape, dt)
    got = tpp.unary("transpose", *shape, dtype=dt)(x)
    assert got.shape == shape[::-1] and got.dtype == x.dtype
    np.testing.assert_array_equal(_bits(got), _bits(np.ascontiguousarray(x.T)))


@pytest.mark.parametrize("dt", DTS)
def test_transpose_views_in_and_out(dt, rng):
    x = _transpose_input(rng, (33, 65), dt)
    px, out = place(x, STRIDED), blank((65, 33), DTYPES[dt], STRIDED)
    k = tpp.unary("transpose", 33, 65, dtype=dt)
    assert k(px.view, out=out.view) is out.view
    np.testing.assert_array_equal(_bits(out.view), _bits(np.ascontiguousarray(x.T)))
    out.assert_untouched_outside()
    px.assert_unchanged()


@given(dt=st.sampled_from(DTS), shape=shapes, lin=layouts, lout=layouts, seed=seeds)
def test_transpose_any_shape_and_layout(dt, shape, lin, lout, seed):
    x = _transpose_input(np.random.default_rng(seed), shape, dt)
    px, out = place(x, lin), blank(shape[::-1], DTYPES[dt], lout)
    tpp.unary("transpose", *shape, dtype=dt)(px.view, out=out.view)
    np.testing.assert_array_equal(_bits(out.view), _bits(np.ascontiguousarray(x.T)))
    out.assert_untouched_outside()
    px.assert_unchanged()
