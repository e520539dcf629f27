"""How far a correct kernel may be from the float64 numpy reference: one table.

Elementwise kinds fall into accuracy classes. Each bound is stated for f32 and
derived for the other dtypes:

  EXACT      one IEEE rounding of the exact result (add, div, sqrt, relu, ...):
             |err| <= 0.5 ulp; we allow 1 ulp (eps * |ref|).
  ROUNDED    a few IEEE roundings in a row (rsqrt = 1/sqrt, dy*y*(1-y),
             alpha*x with an f32 alpha): we allow 2 ulp.
  UNIT       a few roundings of values bounded by 1 that may cancel
             (dy * (1 - y*y) as y -> 1, where even the float64 reference loses
             relative accuracy): 2 ulp relative plus 2 ulp of 1 absolute.
  TRANSC     the vector approximations of exp/log/tanh/sigmoid/gelu/elu: the
             2e-6 relative bound that kernels/vmath.py documents. The 1e-15
             absolute term absorbs the float64 reference's own cancellation
             error (0.5 x (1 + tanh(u)) has an absolute error of about
             |x| * 2**-53 where the result is tiny); it is far below any f32 ulp
             of the O(1) values these functions produce.
  GRAD       transcendental gradients (gelu grads): 1e-5 relative plus 1e-6
             absolute, i.e. ~8 f32 ulp of the O(1) terms that cancel near the
             gradient's zero crossings (dy is drawn from [-1, 1]).

bf16 kernels compute in f32 and round the result to bf16 (8 significant
bits), so their bound is the f32 bound plus 2**-8 relative. f64 kernels exist
only for EXACT and ROUNDED kinds, with the same number of ulp at f64's eps.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = {"f32": F32, "bf16": BF16, "f64": F64}
EPS = {F32: 2.0 ** -23, F64: 2.0 ** -52, BF16: 2.0 ** -7}   # spacing of 1.0
BF16_ROUNDING = 2.0 ** -8                                    # half a bf16 ulp, relative, doubled
FLT_MIN = float(np.finfo(np.float32).tiny)                   # smallest normal f32

EXACT, ROUNDED, UNIT, TRANSC, GRAD = "exact", "rounded", "unit", "transcendental", "grad"


@dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float = 0.0


_F32 = {
    EXACT: Tol(EPS[F32]),
    ROUNDED: Tol(2 * EPS[F32]),
    UNIT: Tol(2 * EPS[F32], 2 * EPS[F32]),
    TRANSC: Tol(2e-6, 1e-15),
    GRAD: Tol(1e-5, 1e-6),
}
_F64 = {EXACT: Tol(EPS[F64]), ROUNDED: Tol(2 * EPS[F64]), UNIT: Tol(2 * EPS[F64], 2 * EPS[F64])}


def tolerance(accuracy: str, dtype) -> Tol:
    dtype = np.dtype(dtype)
    if dtype == F32:
        return _F32[accuracy]
    if dtype == BF16:
        t = _F32[accuracy]
        return Tol(t.rtol + BF16_ROUNDING, t.atol)
    if dtype == F64:
        return _F64[accuracy]
    raise KeyError(f"no tolerance for {dtype}")


def reduction_bound(kind: str, x: np.ndarray, axis: int, dtype) -> np.ndarray:
    """Allowed |got - ref| per output of a sum-like reduction: the classical
    recursive-summation bound n * eps * sum|terms| (any order, any blocking),
    in the accumulation precision (f32 for bf16), plus bf16 output rounding."""
    x = np.asarray(x, np.float64)
    terms = np.abs(x * x) if kind == "reduce_sumsq" else np.abs(x)
    n = x.shape[axis]
    acc_eps = EPS[F64] if np.dtype(dtype) == F64 else EPS[F32]
    bound = (n + 1) * acc_eps * terms.sum(axis=axis)
    if np.dtype(dtype) == BF16:
        ref = x.sum(axis=axis) if kind == "reduce_sum" else (x * x).sum(axis=axis)
        bound = bound * (1 + BF16_ROUNDING) + BF16_ROUNDING * np.abs(ref)
    return bound


def assert_close(got, ref, tol: Tol, *, inputs=(), what: str = "") -> None:
    """|got - ref| <= atol + rtol |ref| elementwise; NaN must match NaN and an
    infinity the same infinity. The message names the worst element and the
    inputs there."""
    got64 = np.asarray(got).astype(np.float64)
    ref64 = np.broadcast_to(np.asarray(ref, np.float64), got64.shape)
    assert got64.shape == ref64.shape, f"{what}: shape {got64.shape} != reference {ref64.shape}"
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got64 - ref64)
        allowed = tol.atol + tol.rtol * np.abs(ref64)
        nan_ok = np.isnan(ref64) & np.isnan(got64)
        inf_ok = np.isinf(ref64) & (got64 == ref64)
        ok = nan_ok | inf_ok | (np.isfinite(ref64) & (err <= allowed))
    if ok.all():
        return
    bad = np.argwhere(~ok)
    with np.errstate(invalid="ignore"):
        score = np.where(ok, -1.0, np.nan_to_num(err / np.maximum(allowed, 1e-300), nan=np.inf))
    worst = np.unravel_index(np.argmax(score), score.shape)
    at = ", ".join(repr(_at(a, got64.shape, worst)) for a in inputs)
    raise AssertionError(
        f"{what}: {len(bad)} of {ok.size} elements outside rtol={tol.rtol:.3g}, atol={tol.atol:.3g}; "
        f"worst at {tuple(int(i) for i in worst)}: got {got64[worst]!r}, reference {ref64[worst]!r}"
        + (f", inputs there: {at}" if inputs else ""))


def _at(a, shape, index):
    """Input `a` (full, row, column or scalar operand) at output position `index`."""
    try:
        return float(np.broadcast_to(np.asarray(a, np.float64), shape)[index])
    except ValueError:
        return a


def assert_bits_equal(got: np.ndarray, expected: np.ndarray, *, what: str = "") -> None:
    """Bit-identical arrays (so -0.0 != 0.0 and NaN payloads count)."""
    g, e = np.ascontiguousarray(got), np.ascontiguousarray(expected)
    assert g.dtype == e.dtype and g.shape == e.shape, f"{what}: {g.dtype}{g.shape} vs {e.dtype}{e.shape}"
    ui = np.dtype(f"u{g.dtype.itemsize}")
    gb, eb = g.view(ui), e.view(ui)
    bad = np.flatnonzero(gb.ravel() != eb.ravel())
    assert bad.size == 0, (
        f"{what}: {bad.size} of {gb.size} elements differ; first at flat index {bad[0]}: "
        f"got {gb.ravel()[bad[0]]:#x} ({g.ravel()[bad[0]]!r}), expected {eb.ravel()[bad[0]]:#x} "
        f"({e.ravel()[bad[0]]!r})")
