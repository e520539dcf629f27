"""The transcendental kinds where they saturate, underflow or overflow, on every x86
target: dense windows of consecutive f32 inputs against the f32 rounding of the true
value (float64 formulas without cancellation, below), and the special inputs.

Where the f32-rounded true value is 0, +-1, +-inf or x itself the result must be
exactly that (the sign of a zero included); everywhere else within the kind's relative
bound plus one subnormal ulp (2^-149): subnormal results are produced, not flushed."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import tpp

from targets import X86, require

TINY = 2.0 ** -149                    # the smallest subnormal f32
F32_MAX = float(np.finfo(np.float32).max)
C, K = math.sqrt(2.0 / math.pi), 0.044715
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


# ---- float64 truths (dy = 1 for the gradients) ----------------------------------------------
def _sig(w):
    """(sigmoid(w), 1 - sigmoid(w)) without overflow or cancellation."""
    e = np.exp(-np.abs(w))
    return np.where(w >= 0, 1 / (1 + e), e / (1 + e)), np.where(w >= 0, e / (1 + e), 1 / (1 + e))


def _w(x):
    return 2 * C * (x + K * x ** 3)


def _phi(x):
    return 0.5 * _erfc(-x / math.sqrt(2.0))


def _gauss(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _gelu_tanh_grad(x):
    s, one_minus_s = _sig(_w(x))
    return s + x * s * one_minus_s * 2 * C * (1 + 3 * K * x * x)


TRUTH = {
    "exp": np.exp,
    "exp2": np.exp2,
    "sigmoid": lambda x: _sig(x)[0],
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "gelu_tanh": lambda x: x * _sig(_w(x))[0],
    "gelu_tanh_grad": _gelu_tanh_grad,
    "gelu_erf": lambda x: x * _phi(x),
    "gelu_erf_grad": lambda x: _phi(x) + x * _gauss(x),
    "sigmoid_grad": lambda y: y * (1 - y),
    "tanh_grad": lambda y: 1 - y * y,
}


@dataclass(frozen=True)
class Window:
    """Every `step`-th f32 from lo to hi (one sign), and the relative bound there."""
    lo: float
    hi: float
    step: int = 1
    rtol: float = 2e-6

    def inputs(self) -> np.ndarray:
        a, b = np.float32(self.lo).view(np.uint32), np.float32(self.hi).view(np.uint32)
        bits = np.arange(min(a, b), max(a, b) + 1, self.step, dtype=np.uint64).astype(np.uint32)
        return bits.view(np.float32)


# Saturation, underflow (subnormal results, then 0) and overflow points of each kind.
# The gelu forms' tails (x < -5) carry the rounding of their exponent 2u, |2u| up to 113:
# ~|2u| 2^-24 relative (the README's bound there).
WINDOWS = {
    "exp": [Window(-110, -80, 13), Window(85, 90, 3)],
    "exp2": [Window(-155, -120, 13), Window(120, 130, 3), Window(1e-30, 2, 4099), Window(-1e-30, -2, 4099)],
    "sigmoid": [Window(-110, -80, 13), Window(14, 20, 13), Window(80, 90, 13)],
    "tanh": [Window(7.5, 10, 11), Window(-7.5, -10, 11), Window(1e-30, 2.9e-4, 4099),
             Window(-1e-30, -2.9e-4, 4099)],
    "elu": [Window(-20, -15, 11), Window(-1e-38, -1e-3, 4099), Window(1e-38, 1e-3, 4099)],
    "gelu_tanh": [Window(-12, -9, 7, 2e-5), Window(-9, -5, 13, 2e-5), Window(4, 6, 13),
                  Window(1e20, F32_MAX, 4099)],
    "gelu_tanh_grad": [Window(-12, -9, 7, 2e-5), Window(3, 7, 13), Window(9, 11, 13)],
    "gelu_erf": [Window(-15, -12, 7), Window(4, 7, 13), Window(1e20, F32_MAX, 4099)],
    "gelu_erf_grad": [Window(-15, -12, 7, 1e-5), Window(4, 8, 13)],
    "sigmoid_grad": [Window(1e-45, 1e-30, 4099), Window(0.999, 1.0), Window(-1e-45, -1e-30, 4099)],
    "tanh_grad": [Window(0.999, 1.0), Window(-0.999, -1.0)],
}
WINDOW_CASES = [pytest.param(kind, w, id=f"{kind}[{w.lo:g},{w.hi:g}]")
                for kind, ws in WINDOWS.items() for w in ws]


def run(kind: str, x: np.ndarray, target: str | None) -> np.ndarray:
    """kind on a 1 x len(x) f32 tile on `target` (None: the host's; gradients with dy = 1)."""
    row = np.ascontiguousarray(x, np.float32).reshape(1, -1)
    k = require(tpp.unary(kind, 1, row.shape[1], "f32", target=target))
    return (k(np.ones_like(row), row) if kind.endswith("_grad") else k(row))[0]


def _exact_where_saturated(got, rounded, x, what: str) -> None:
    """Where the rounded truth is 0, +-1, +-inf or x, the result is bit-equal to it."""
    saturated = np.isin(rounded, [0.0, 1.0, -1.0, np.inf, -np.inf]) | (rounded == x)
    wrong = np.flatnonzero(saturated & (got.view(np.uint32) != rounded.view(np.uint32)))
    assert wrong.size == 0, (f"{what}: {wrong.size} saturated results differ, e.g. x={x[wrong[0]]!r}: "
                             f"{got[wrong[0]]!r}, expected {rounded[wrong[0]]!r}")


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("kind, window", WINDOW_CASES)
def test_saturation_and_underflow(kind, window, target):
    x = window.inputs()
    got = run(kind, x, target)
    with np.errstate(over="ignore"):
        true = TRUTH[kind](x.astype(np.float64))
        rounded = true.astype(np.float32)
    what = f"{kind} on {target}"
    _exact_where_saturated(got, rounded, x, what)
    finite = np.isfinite(rounded)
    err = np.abs(got[finite].astype(np.float64) - true[finite])
    allowed = window.rtol * np.abs(true[finite]) + TINY
    worst = int(np.argmax(err / allowed))
    xs, gs, ts = x[finite][worst], got[finite][worst], true[finite][worst]
    assert (err <= allowed).all(), (f"{what}: x={xs!r} gives {gs!r}, true {ts!r} "
                                    f"(relative {err[worst] / abs(ts):.2e})")


NAN, INF = math.nan, math.inf
# (input, exact result): limits at +-inf and at the largest finite inputs, NaN in NaN out,
# signed zeros.
SPECIALS = {
    "exp": [(INF, INF), (-INF, 0.0), (F32_MAX, INF), (-F32_MAX, 0.0), (0.0, 1.0), (-0.0, 1.0)],
    "exp2": [(INF, INF), (-INF, 0.0), (F32_MAX, INF), (-F32_MAX, 0.0), (0.0, 1.0), (-0.0, 1.0), (1.0, 2.0),
             (-149.0, 2.0 ** -149), (127.0, 2.0 ** 127), (128.0, INF), (-150.0, 0.0)],
    "sigmoid": [(INF, 1.0), (-INF, 0.0), (F32_MAX, 1.0), (-F32_MAX, 0.0), (0.0, 0.5), (-0.0, 0.5),
                (-100.0, float(np.float32(math.exp(-100)))), (20.0, 1.0)],
    "tanh": [(INF, 1.0), (-INF, -1.0), (F32_MAX, 1.0), (-F32_MAX, -1.0), (0.0, 0.0), (-0.0, -0.0)],
    "elu": [(INF, INF), (-INF, -1.0), (F32_MAX, F32_MAX), (-F32_MAX, -1.0), (0.0, 0.0), (-0.0, -0.0)],
    "gelu_tanh": [(INF, INF), (-INF, -0.0), (F32_MAX, F32_MAX), (-F32_MAX, -0.0), (0.0, 0.0), (-0.0, -0.0),
                  (88.0, 88.0)],
    "gelu_tanh_grad": [(INF, 1.0), (-INF, -0.0), (F32_MAX, 1.0), (-F32_MAX, -0.0), (0.0, 0.5), (-0.0, 0.5)],
    "gelu_erf": [(INF, INF), (-INF, -0.0), (F32_MAX, F32_MAX), (-F32_MAX, -0.0), (0.0, 0.0), (-0.0, -0.0)],
    "gelu_erf_grad": [(INF, 1.0), (-INF, -0.0), (F32_MAX, 1.0), (-F32_MAX, -0.0), (0.0, 0.5), (-0.0, 0.5)],
    "sigmoid_grad": [(INF, -INF), (-INF, -INF), (1.0, 0.0), (0.0, 0.0), (-0.0, -0.0)],
    "tanh_grad": [(INF, -INF), (-INF, -INF), (1.0, 0.0), (-1.0, 0.0), (0.0, 1.0)],
}


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("kind", SPECIALS)
def test_special_inputs(kind, target):
    xs, expected = zip(*(SPECIALS[kind] + [(NAN, NAN), (-NAN, NAN)]))
    got = run(kind, np.array(xs, np.float32), target)
    want = np.array(expected, np.float32)
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), "; ".join(f"{kind}({x!r}) = {g!r}, expected {e!r}"
                                 for x, g, e, ok in zip(xs, got.tolist(), expected, same) if not ok)


def test_sigmoid_of_minus_100_is_subnormal():
    """The issue's example: e^-100 ~ 3.7e-44, an f32 subnormal (it was clamped to 6e-39)."""
    got = run("sigmoid", np.array([-100.0, -95.0, -104.0], np.float32), None)
    np.testing.assert_array_equal(got, np.exp(np.array([-100.0, -95.0, -104.0])).astype(np.float32))
