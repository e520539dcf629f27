"""Unary elementwise kinds against their float64 numpy references: every kind
and dtype on fixed shapes, views and in-place use, custom alphas, special
values of the transcendental kinds, dense sweeps over their normal range, and
hypothesis shapes and layouts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tpp
from tpp.kernels import unary as unary_refs

from targets import X86, require
from tensors import (REMAINDER_SHAPE, SHAPES, STRIDED, Domain, blank, grid, layouts, magnitude, place,
                     seeds, shapes, uniform, values)
from tolerances import (BF16, DTYPES, EXACT, F32, FLT_MIN, GRAD, ROUNDED, TRANSC, UNIT, Tol, assert_close,
                        tolerance)

DY = uniform(-1, 1)


@dataclass(frozen=True)
class Case:
    """One unary kind: its accuracy class, a domain per input, and whether f64 exists."""
    kind: str
    accuracy: str
    domains: tuple[Domain, ...]
    f64: bool = True                  # the transcendental kinds are f32/bf16 only


CASES = {c.kind: c for c in [
    Case("copy", EXACT, (uniform(-100, 100),)),
    Case("zero", EXACT, ()),
    Case("relu", EXACT, (grid(-3, 3),)),
    Case("leaky_relu", ROUNDED, (uniform(-10, 10),)),
    Case("elu", TRANSC, (uniform(-10, 10),), f64=False),
    Case("gelu_tanh", TRANSC, (uniform(-5, 10),), f64=False),     # its tail: test_gelu_tanh_tail
    Case("gelu_erf", TRANSC, (uniform(-10, 10),), f64=False),
    Case("sigmoid", TRANSC, (uniform(-20, 20),), f64=False),
    Case("tanh", TRANSC, (uniform(-10, 10),), f64=False),
    Case("exp", TRANSC, (uniform(-10, 10),), f64=False),
    Case("exp2", TRANSC, (uniform(-20, 20),), f64=False),
    Case("log", TRANSC, (magnitude(1e-30, 1e30),), f64=False),
    Case("sqrt", EXACT, (magnitude(1e-30, 1e30),)),
    Case("rsqrt", ROUNDED, (magnitude(1e-30, 1e30),)),
    Case("reciprocal", EXACT, (magnitude(1e-30, 1e30, signed=True),)),
    Case("negate", EXACT, (uniform(-100, 100),)),
    Case("abs", EXACT, (uniform(-100, 100),)),
    Case("square", EXACT, (uniform(-1e3, 1e3),)),
    Case("relu_grad", EXACT, (DY, grid(-3, 3))),
    Case("leaky_relu_grad", ROUNDED, (DY, uniform(-10, 10))),
    Case("gelu_tanh_grad", GRAD, (DY, uniform(-10, 10)), f64=False),
    Case("gelu_erf_grad", GRAD, (DY, uniform(-10, 10)), f64=False),
    Case("sigmoid_grad", UNIT, (DY, uniform(0, 1))),
    Case("tanh_grad", UNIT, (DY, uniform(-1, 1))),
]}
TRANSCENDENTAL = [k for k, c in CASES.items() if not c.f64]
ALPHA_KINDS = {"leaky_relu": 0.2, "elu": 0.5, "leaky_relu_grad": 0.3}


def _id(kind, dt, shape=None):
    return f"{kind}-{dt}" + (f"-{shape[0]}x{shape[1]}" if shape else "")


def _cases(shapes_=(None,), dtypes=("f32", "bf16", "f64"), kinds=None) -> list:
    return list(_gen_cases(shapes_, dtypes, kinds))


def _gen_cases(shapes_, dtypes, kinds):
    for kind in kinds or CASES:
        for dt in dtypes:
            if dt == "f64" and not CASES[kind].f64:
                continue
            for shape in shapes_:
                yield pytest.param(kind, dt, *([shape] if shape else []), id=_id(kind, dt, shape))


def _inputs(case: Case, rng, shape, dtype) -> list[np.ndarray]:
    return [values(d, rng, shape, dtype) for d in case.domains]


def _check(k, got, xs, case: Case, dtype, what: str):
    assert got.dtype == dtype and got.shape == (k.descriptor.m, k.descriptor.n), what
    assert_close(got, k.reference(*xs), tolerance(case.accuracy, dtype), inputs=xs, what=what)


# ---- the catalog ---------------------------------------------------------------------
def test_every_elementwise_kind_has_a_case():
    elementwise = {k for k in tpp.UNARY_KINDS
                   if k not in ("transpose", "vnni_pack") and not k.startswith("reduce_")}
    assert set(CASES) | {"cast"} == elementwise


@pytest.mark.parametrize("kind", list(CASES))
def test_reference_is_importable_by_kind_name(kind, rng):
    case = CASES[kind]
    xs = [d(rng, (3, 5)) for d in case.domains]
    k = tpp.unary(kind, 3, 5, "f32")
    fn = getattr(unary_refs, kind)
    alpha = [k.descriptor.alpha_value()] if kind in ALPHA_KINDS else []
    expected = np.broadcast_to(fn(*xs, *alpha), (3, 5))
    np.testing.assert_array_equal(k.reference(*xs), expected)


@pytest.mark.parametrize("alias, kind", [("gelu", "gelu_tanh"), ("gelu_grad", "gelu_tanh_grad"),
                                         ("identity", "copy"), ("neg", "negate")])
def test_aliases_dispatch_the_same_kernel(alias, kind):
    assert tpp.unary(alias, 4, 9) is tpp.unary(kind, 4, 9)


# ---- numerics on fixed shapes -----------------------------------------------------------
@pytest.mark.parametrize("kind, dt, shape", _cases(SHAPES))
def test_matches_reference(kind, dt, shape, rng):
    case, dtype = CASES[kind], DTYPES[dt]
    k = tpp.unary(kind, *shape, dtype=dt)
    xs = _inputs(case, rng, shape, dtype)
    _check(k, k(*xs), xs, case, dtype, _id(kind, dt, shape))


@pytest.mark.parametrize("kind, dt", _cases())
def test_views_in_and_out(kind, dt, rng):
    """Inputs and output are views with row stride > n and a column offset; the
    call returns `out`, writes nothing outside it and leaves the inputs alone."""
    case, dtype = CASES[kind], DTYPES[dt]
    k = tpp.unary(kind, *REMAINDER_SHAPE, dtype=dt)
    ins = [place(x, STRIDED) for x in _inputs(case, rng, REMAINDER_SHAPE, dtype)]
    out = blank(REMAINDER_SHAPE, dtype, STRIDED)
    assert k(*[p.view for p in ins], out=out.view) is out.view
    _check(k, out.view, [p.view for p in ins], case, dtype, _id(kind, dt))
    out.assert_untouched_outside()
    for p in ins:
        p.assert_unchanged()


@pytest.mark.parametrize("kind, dt", _cases(kinds=[k for k in CASES if k != "zero"]))
def test_in_place(kind, dt, rng):
    """out may be exactly an input (any of them), also as a strided view."""
    case, dtype = CASES[kind], DTYPES[dt]
    k = tpp.unary(kind, *REMAINDER_SHAPE, dtype=dt)
    xs = _inputs(case, rng, REMAINDER_SHAPE, dtype)
    expected = k.reference(*xs)
    for target in range(len(xs)):
        placed = [place(x, STRIDED) for x in xs]
        views = [p.view for p in placed]
        assert k(*views, out=views[target]) is views[target]
        assert_close(views[target], expected, tolerance(case.accuracy, dtype), inputs=xs,
                     what=f"{kind} {dt} in place over input {target}")
        placed[target].assert_untouched_outside()


@pytest.mark.parametrize("dt", ["f32", "bf16", "f64"])
def test_zero_fills_out(dt):
    out = place(np.full(REMAINDER_SHAPE, 7.0, DTYPES[dt]), STRIDED)
    k = tpp.unary("zero", *REMAINDER_SHAPE, dtype=dt)
    assert k(out=out.view) is out.view
    assert not out.view.astype(np.float64).any()
    out.assert_untouched_outside()
    assert k().shape == REMAINDER_SHAPE and not k().astype(np.float64).any()


# alpha's meaning, written out independently of the library's references
ALPHA_MEANING = {
    "leaky_relu": lambda a, x: np.where(x > 0, x, a * x),
    "elu": lambda a, x: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
    "leaky_relu_grad": lambda a, dy, x: np.where(x > 0, dy, a * dy),
}


@pytest.mark.parametrize("kind, alpha", ALPHA_KINDS.items())
@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_custom_alpha(kind, alpha, dt, rng):
    case, dtype = CASES[kind], DTYPES[dt]
    k = tpp.unary(kind, *REMAINDER_SHAPE, dtype=dt, alpha=alpha)
    xs = _inputs(case, rng, REMAINDER_SHAPE, dtype)
    expected = ALPHA_MEANING[kind](alpha, *[x.astype(np.float64) for x in xs])
    assert_close(k(*xs), expected, tolerance(case.accuracy, dtype), inputs=xs, what=f"{kind} alpha={alpha}")


@pytest.mark.parametrize("kind", TRANSCENDENTAL)
def test_transcendental_kinds_refuse_f64(kind):
    match = rf"tpp {kind}: dtype f64 is not supported \(supported: bf16, f32\)"
    with pytest.raises(tpp.DTypeError, match=match):
        tpp.unary(kind, 4, 4, dtype="f64")


# ---- hypothesis: any shape, any layout -------------------------------------------------
VIEW_KINDS = ["copy", "relu", "leaky_relu", "exp", "gelu_erf", "sqrt", "sigmoid_grad", "gelu_tanh_grad"]


@given(kind=st.sampled_from(VIEW_KINDS), dt=st.sampled_from(["f32", "bf16"]), shape=shapes,
       in_layout=layouts, out_layout=layouts, in_place=st.booleans(), seed=seeds)
def test_any_shape_and_layout(kind, dt, shape, in_layout, out_layout, in_place, seed):
    case, dtype = CASES[kind], DTYPES[dt]
    k = tpp.unary(kind, *shape, dtype=dt)
    xs = _inputs(case, np.random.default_rng(seed), shape, dtype)
    placed = [place(x, in_layout) for x in xs]
    out = placed[0] if in_place else blank(shape, dtype, out_layout)
    k(*[p.view for p in placed], out=out.view)
    assert_close(out.view, k.reference(*xs), tolerance(case.accuracy, dtype), inputs=xs,
                 what=f"{kind} {dt} {shape} in {in_layout} out {'in place' if in_place else out_layout}")
    out.assert_untouched_outside()
    for p in placed[1 if in_place else 0:]:
        p.assert_unchanged()


# ---- special values ----------------------------------------------------------------------
INF, NAN = np.inf, np.nan
# Results fixed by limits and identities; NaN in gives NaN out. A tuple lists
# the acceptable results: at +-inf the gelu forms are indeterminate in their
# textbook formulas (x * Phi(x) = -inf * 0), and the library's own references
# return NaN there, so NaN is accepted beside the limit. Finite inputs, however
# huge, must give the limit.
LIMIT_OR_NAN = lambda limit: (limit, NAN)   # noqa: E731
EXACT_SPECIALS = {
    "exp": [(INF, INF), (-INF, 0.0), (NAN, NAN), (0.0, 1.0), (-0.0, 1.0), (1000.0, INF), (-1000.0, 0.0),
            (3.4e38, INF), (-3.4e38, 0.0)],
    "log": [(0.0, -INF), (-0.0, -INF), (INF, INF), (-1.0, NAN), (-INF, NAN), (NAN, NAN), (1.0, 0.0),
            (-1e-45, NAN)],
    "tanh": [(INF, 1.0), (-INF, -1.0), (NAN, NAN), (0.0, 0.0), (1e30, 1.0), (-1e30, -1.0), (20.0, 1.0)],
    "sigmoid": [(INF, 1.0), (-INF, 0.0), (NAN, NAN), (0.0, 0.5), (1e30, 1.0), (-1e30, 0.0), (100.0, 1.0)],
    "elu": [(INF, INF), (-INF, -1.0), (NAN, NAN), (0.0, 0.0), (-1e30, -1.0), (3e38, 3e38)],
    "gelu_tanh": [(INF, INF), (-INF, LIMIT_OR_NAN(0.0)), (NAN, NAN), (0.0, 0.0), (3e38, 3e38), (-3e38, 0.0)],
    "gelu_erf": [(INF, INF), (-INF, LIMIT_OR_NAN(0.0)), (NAN, NAN), (0.0, 0.0), (3e38, 3e38), (-3e38, 0.0)],
    "gelu_tanh_grad": [(INF, LIMIT_OR_NAN(1.0)), (-INF, LIMIT_OR_NAN(0.0)), (NAN, NAN), (0.0, 0.5),
                       (1e38, 1.0), (-1e38, 0.0)],
    "gelu_erf_grad": [(INF, LIMIT_OR_NAN(1.0)), (-INF, LIMIT_OR_NAN(0.0)), (NAN, NAN), (0.0, 0.5),
                      (1e38, 1.0), (-1e38, 0.0)],
}
# Huge and tiny finite inputs, compared with the float64 reference. Results
# below the normal f32 range are subnormals within one subnormal ulp: atol = TINY.
F32_MAX, F32_TRUE_MIN = float(np.finfo(np.float32).max), 1e-45
TINY = 2.0 ** -149
EXTREMES = {
    "exp": [88.7, 88.72, 80.0, -80.0, -87.3, -88.0, -100.0, -103.0, -103.9, 1e-30, -1e-30, 1e-8, 50.0],
    "log": [F32_TRUE_MIN, 1e-44, 1e-40, 5e-39, FLT_MIN, 1e-37, 1e-30, 1e30, F32_MAX, 0.9999999, 1.0000001,
            2.0, 0.5],
    "tanh": [1e-30, -1e-30, FLT_MIN, 1e-8, -1e-8, 9.0, -9.0, 10.0, 1e-3, -0.625, 0.63],
    "sigmoid": [-80.0, -87.0, -88.0, -100.0, -104.0, 1e-30, -1e-30, 16.0, 17.0, 30.0, -30.0, 88.0],
}


def _run_f32(kind: str, xs: list[float], target=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """kind on a 1 x len(xs) f32 tile (gradients with dy = 1), on the host's target or
    `target` (skipped where this CPU cannot run it)."""
    x = np.array([xs], np.float32)
    k = require(tpp.unary(kind, 1, x.shape[1], "f32", target=target))
    inputs = [np.ones_like(x), x] if len(CASES[kind].domains) == 2 else [x]
    return k(*inputs), inputs


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("kind", EXACT_SPECIALS)
def test_exact_special_values(kind, target):
    """Equal to the expected f32 value, on every x86 target; like everywhere else, a result
    below the normal range may be off by one subnormal ulp, 2^-149 (never flushed)."""
    xs, expected = zip(*EXACT_SPECIALS[kind])
    got, _ = _run_f32(kind, list(xs), target)

    def matches(g: float, e: float) -> bool:
        e = float(np.float32(e))
        return g == e or (np.isnan(g) and np.isnan(e)) or (np.isfinite(e) and abs(g - e) <= TINY)

    wrong = [f"{kind}({x!r}) = {g!r}, expected {e!r}" for x, g, e in zip(xs, got[0].tolist(), expected)
             if not any(matches(g, option) for option in (e if isinstance(e, tuple) else (e,)))]
    assert not wrong, "; ".join(wrong)


# float64 formulas without the cancellation that the library's references have for
# large negative x (0.5 (1 + tanh(.)) rounds to 0 once tanh(.) rounds to -1, near
# x = -37 for sigmoid), so the relative bound can be checked down to the subnormals.
def _sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu_tanh64(x):
    u = unary_refs.vmath.GELU_C * (x + unary_refs.vmath.GELU_K * x ** 3)
    return x / (1.0 + np.exp(-2.0 * u))


ACCURATE = {"sigmoid": _sigmoid64, "gelu_tanh": _gelu_tanh64}


def _accurate_reference(kind: str, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if kind in ACCURATE:
            return ACCURATE[kind](np.asarray(x, np.float64))
        return tpp.unary(kind, *x.shape, "f32").reference(x)


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("kind", EXTREMES)
def test_huge_and_tiny_inputs(kind, target):
    got, inputs = _run_f32(kind, EXTREMES[kind], target)
    assert_close(got, _accurate_reference(kind, inputs[0]), Tol(2e-6, TINY), inputs=inputs,
                 what=f"{kind} at extreme inputs")


def test_tanh_keeps_the_sign_of_zero():
    assert list(np.signbit(_run_f32("tanh", [-0.0, 0.0])[0][0])) == [True, False]


# Dense sweeps over each function's range: the 2e-6 relative bound of kernels/vmath.py
# must hold, plus 2^-149 where the result is subnormal.
SWEEPS = {
    "exp": uniform(-87.0, 88.0),
    "log": magnitude(F32_TRUE_MIN, F32_MAX),          # subnormal inputs included
    "tanh": uniform(-20.0, 20.0),
    "sigmoid": uniform(-104.0, 40.0),        # subnormal results included
    "gelu_tanh": uniform(-5.0, 10.0),       # below -5: test_gelu_tanh_tail
    "gelu_erf": uniform(-12.0, 12.0),
    "elu": uniform(-30.0, 30.0),
}


@pytest.mark.parametrize("kind", SWEEPS)
def test_normal_range_sweep(kind, rng):
    x = values(SWEEPS[kind], rng, (64, 512), F32)
    got = tpp.unary(kind, 64, 512, "f32")(x)
    assert_close(got, _accurate_reference(kind, x), Tol(tolerance(TRANSC, F32).rtol, TINY), inputs=[x],
                 what=f"{kind} sweep")


def test_gelu_tanh_tail(rng):
    """Below x = -5 gelu_tanh is under 3e-7 in magnitude; the f32 rounding of its
    exponent -2u (|2u| up to 113) then limits the relative error to ~|2u| 2^-24: the
    documented bound there is 2e-5 relative, plus 2^-149 for subnormal results."""
    x = values(uniform(-12.0, -5.0), rng, (16, 512), F32)
    got = tpp.unary("gelu_tanh", 16, 512, "f32")(x)
    assert_close(got, _accurate_reference("gelu_tanh", x), Tol(2e-5, TINY), inputs=[x],
                 what="gelu_tanh tail")


# ---- cast f32 <-> bf16 --------------------------------------------------------------------
# Round-to-nearest-even edge cases: exact ties with even and odd upper halves,
# just below/above a tie, overflow to inf, subnormals, signed zeros, inf, NaNs (quiet,
# signalling, with payloads).
CAST_EDGES = np.array([
    0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0xBF808000, 0xBF818000,   # ties, near ties
    0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0xFF7FFFFF,                           # rounds to inf / max
    0x00000001, 0x00008000, 0x00018000, 0x00010000, 0x007FFFFF, 0x80018000,   # subnormals
    0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,   # zeros, infs, qNaN
    0x7F800001, 0xFF800001, 0x7FA00000, 0x7FC12345, 0xFFFFFFFF, 0x7F80FFFF,   # sNaN, payloads
], np.uint32).view(np.float32)


def _assert_bf16_matches_ml_dtypes(got: np.ndarray, x: np.ndarray, what: str) -> None:
    """Bit-identical to ml_dtypes' round-to-nearest-even, NaN included: ml_dtypes turns
    every NaN (quiet or signalling, any payload) into the quiet NaN of its sign."""
    with np.errstate(invalid="ignore"):
        expected = x.astype(BF16)
    g, e = got.view(np.uint16).ravel(), expected.view(np.uint16).ravel()
    diff = np.flatnonzero(g != e)
    assert diff.size == 0, (f"{what}: {diff.size} values differ from ml_dtypes, e.g. f32 "
                            f"{x.view(np.uint32).ravel()[diff[0]]:#010x} -> {g[diff[0]]:#06x}, "
                            f"expected {e[diff[0]]:#06x}")


def test_cast_f32_to_bf16_edges():
    x = CAST_EDGES.reshape(1, -1)
    got = tpp.unary("cast", *x.shape, dtype="f32", out_dtype="bf16")(x)
    assert got.dtype == BF16
    _assert_bf16_matches_ml_dtypes(got, x, "cast edge cases")


def test_cast_f32_to_bf16_random_bit_patterns(rng):
    """Random bit patterns cover every exponent (subnormals, NaN payloads included),
    and their low halves are forced to ties on a quarter of them."""
    bits = rng.integers(0, 2 ** 32, (256, 257), dtype=np.uint64).astype(np.uint32)
    ties = rng.random(bits.shape) < 0.25
    bits[ties] = (bits[ties] & 0xFFFF0000) | 0x8000
    x = bits.view(np.float32)
    got = tpp.unary("cast", *x.shape, dtype="f32", out_dtype="bf16")(x)
    _assert_bf16_matches_ml_dtypes(got, x, "cast of random f32 bit patterns")


def test_cast_f32_to_bf16_every_upper_half():
    """Every sign, exponent and upper mantissa (all 2^16 upper halves) with the low halves
    that decide the rounding (0, 1, just below, at and above the tie, all ones): every
    NaN class (quiet, signalling, payload only in the low half) and both infinities."""
    low = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    bits = (np.arange(2 ** 16, dtype=np.uint32)[:, None] << 16 | low).reshape(-1, 1024)
    x = bits.view(np.float32)
    got = tpp.unary("cast", *x.shape, dtype="f32", out_dtype="bf16")(x)
    _assert_bf16_matches_ml_dtypes(got, x, "cast of every upper half")
    assert set(got.view(np.uint16)[np.isnan(x)].tolist()) == {0x7FC0, 0xFFC0}


def test_cast_bf16_to_f32_is_exact_for_every_bf16():
    x = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16).view(BF16).reshape(256, 256)
    got = tpp.unary("cast", 256, 256, dtype="bf16", out_dtype="f32")(x)
    assert got.dtype == F32
    expected = x.astype(np.float32)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], expected.view(np.uint32)[~nan])
    assert np.isnan(got[nan]).all()


@pytest.mark.parametrize("kind, op", [("copy", lambda x: x), ("negate", np.negative), ("abs", np.abs)])
def test_exact_bf16_kinds_reproduce_every_bf16(kind, op):
    """copy/negate/abs are exact in bf16: subnormals and signed zeros must survive
    the round trip through f32 compute precision."""
    x = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16).view(BF16).reshape(256, 256)
    got = tpp.unary(kind, 256, 256, dtype="bf16")(x)
    expected = op(x)
    nan = np.isnan(x.astype(np.float32))
    g, e = got.view(np.uint16)[~nan], expected.view(np.uint16)[~nan]
    bad = np.flatnonzero(g != e)
    assert bad.size == 0, f"{kind}: {bad.size} bf16 values change, e.g. {e[bad[0]]:#06x} -> {g[bad[0]]:#06x}"
    assert np.isnan(got[nan].astype(np.float32)).all()


@pytest.mark.parametrize("src, dst", [("f32", "bf16"), ("bf16", "f32")])
@given(shape=shapes, in_layout=layouts, out_layout=layouts, seed=seeds)
def test_cast_any_shape_and_layout(src, dst, shape, in_layout, out_layout, seed):
    x = values(uniform(-1e4, 1e4), np.random.default_rng(seed), shape, DTYPES[src])
    xin, out = place(x, in_layout), blank(shape, DTYPES[dst], out_layout)
    tpp.unary("cast", *shape, dtype=src, out_dtype=dst)(xin.view, out=out.view)
    np.testing.assert_array_equal(out.view.view(f"u{out.view.itemsize}"),
                                  x.astype(DTYPES[dst]).view(f"u{out.view.itemsize}"))
    out.assert_untouched_outside()
    xin.assert_unchanged()
