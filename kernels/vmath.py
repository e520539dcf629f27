"""Vector transcendental functions emitted as IR (f32 lanes): no libm calls.

Error bounds (tests/test_unary.py checks them against float64 numpy):
  exp, log, tanh, sigmoid, gelu_erf: <= 2e-6 relative wherever the result is a
  normal f32 (measured: 2-6e-7). gelu_tanh: <= 2e-6 relative for x >= -5; below,
  where |result| < 3e-7, the f32 rounding of its exponent -2u (|2u| up to 87)
  allows ~|2u| 2^-23 relative, so the bound there is 1e-11 absolute.

Coefficients: exp uses the Taylor series of e^r on |r| <= ln2/2 (degree 6,
truncation 1.2e-7 relative). The tanh rational function and the erfc polynomial
were fitted here by iteratively reweighted (linearised) least squares in
float64 against numpy/scipy and rounded to f32 (script: tools/fit_vmath.py);
the fit errors are given beside each.
"""
from __future__ import annotations

import math

from llvmlite import ir

from ..jit.vec import F32, I32, VecBuilder

# Cody-Waite split of ln2: LN2_HI has 9 significant bits, so n * LN2_HI is exact
# for every exponent n that a finite f32 result can have.
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4
LOG2E = 1.4426950408889634
_EXP_TAYLOR = [1.0 / math.factorial(k) for k in range(7)]
# tanh(x) = x P(x^2) / Q(x^2) on |x| <= 9.5 (beyond, tanh rounds to +-1 in f32);
# max relative error of the f32 coefficients 1.2e-7.
_TANH_P = [0.9999999403953552, 0.13347992300987244, 0.0034564989618957043, 1.9972900190623477e-05,
           1.2489629774847799e-08]
_TANH_Q = [1.0, 0.46681296825408936, 0.0257278885692358, 0.0003221994556952268, 7.418839231831953e-07]
_TANH_CLAMP = 9.5
# erfc(z) = t * exp(-z^2 + P(t)), t = 2 / (2 + z), z >= 0; max error of P 8.8e-8.
_ERFC_P = [-1.2654409408569336, 0.9984806776046753, 0.3880085051059723, 0.027806438505649567,
           0.021895624697208405, -0.12011776119470596, -0.6470887660980225, 1.1191939115524292,
           -0.6646727919578552, 0.14193512499332428]
GELU_C = math.sqrt(2.0 / math.pi)
GELU_K = 0.044715
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _pow2(v: VecBuilder, n: ir.Value) -> ir.Value:
    """2**n for an i32 vector n in [-126, 127], built in the exponent field."""
    b = v.b
    bits = b.shl(b.add(n, v.const(127, I32)), v.const(23, I32))
    return b.bitcast(bits, v.vty(F32))


def exp(v: VecBuilder, x: ir.Value) -> ir.Value:
    b = v.b
    has_scalef = v.has_op("scalef", x.type)
    if has_scalef:
        xc = _clamp(v, x, -104.0, 88.8)   # NaN flows through to a NaN result
    else:
        # maxnum/minnum drop NaN, so xc is never NaN (fptosi of NaN would be poison);
        # NaN is put back at the end.
        xc = v.intrinsic("maxnum", v.intrinsic("minnum", x, v.const(88.8)), v.const(-104.0))
    n = v.rint(b.fmul(xc, v.const(LOG2E)))
    r = v.fma(n, v.const(-LN2_HI), xc)
    r = v.fma(n, v.const(-LN2_LO), r)
    p = v.poly(r, _EXP_TAYLOR)
    if has_scalef:
        return v.scalef(p, n)                          # p * 2^n, over/underflow handled
    ni = b.fptosi(n, v.vty(I32))
    half = b.ashr(ni, v.const(1, I32))                 # split 2^n in two so neither factor
    res = b.fmul(b.fmul(p, _pow2(v, half)), _pow2(v, b.sub(ni, half)))   # over/underflows
    return b.select(b.fcmp_unordered("uno", x, x), x, res)


def expm1(v: VecBuilder, x: ir.Value) -> ir.Value:
    """e^x - 1 without the cancellation of exp(x) - 1 near 0."""
    b = v.b
    small = b.fmul(x, v.poly(x, [1.0 / math.factorial(k + 1) for k in range(9)]))
    big = b.fsub(exp(v, x), v.const(1.0))
    return b.select(b.fcmp_ordered("<", v.fabs(x), v.const(0.5)), small, big)


def log(v: VecBuilder, x: ir.Value) -> ir.Value:
    b = v.b
    vi = v.vty(I32)
    tiny = b.fcmp_ordered("<", x, v.const(1.17549435e-38))          # subnormal (or <= 0)
    xs = b.select(tiny, b.fmul(x, v.const(8388608.0)), x)             # * 2^23
    bits = b.bitcast(xs, vi)
    e = b.sub(b.lshr(bits, v.const(23, I32)), v.const(127, I32))
    e = b.sub(e, b.select(tiny, v.const(23, I32), v.const(0, I32)))
    m = b.bitcast(b.or_(b.and_(bits, v.const(0x007FFFFF, I32)), v.const(0x3F800000, I32)), v.vty(F32))
    big = b.fcmp_ordered(">", m, v.const(math.sqrt(2.0)))
    m = b.select(big, b.fmul(m, v.const(0.5)), m)                    # m in [sqrt(.5), sqrt(2))
    e = b.add(e, b.zext(big, vi))
    s = v.div(b.fsub(m, v.const(1.0)), b.fadd(m, v.const(1.0)))
    s2 = b.fmul(s, s)
    # log(m) = 2 atanh(s) = 2s (1 + s^2/3 + s^4/5 + ...); |s| <= 0.1716
    logm = b.fmul(b.fadd(s, s), v.poly(s2, [1.0, 1 / 3, 1 / 5, 1 / 7, 1 / 9]))
    ef = b.sitofp(e, v.vty(F32))
    res = v.fma(ef, v.const(LN2_HI), v.fma(ef, v.const(LN2_LO), logm))
    res = b.select(b.fcmp_ordered("==", x, v.const(0.0)), v.const(-math.inf), res)
    res = b.select(b.fcmp_ordered("==", x, v.const(math.inf)), x, res)
    return b.select(b.fcmp_unordered("ult", x, v.const(0.0)), v.const(math.nan), res)


def _clamp(v: VecBuilder, x: ir.Value, lo: float, hi: float) -> ir.Value:
    """Clamp with NaN passing through (each select is one vminps/vmaxps on x86);
    an infinite bound is no bound."""
    b = v.b
    if hi != math.inf:
        x = b.select(b.fcmp_ordered(">", x, v.const(hi)), v.const(hi), x)
    if lo != -math.inf:
        x = b.select(b.fcmp_ordered("<", x, v.const(lo)), v.const(lo), x)
    return x


def tanh(v: VecBuilder, x: ir.Value) -> ir.Value:
    """An odd rational function: ~16 vector instructions, no exp, no branch blend."""
    b = v.b
    xc = _clamp(v, x, -_TANH_CLAMP, _TANH_CLAMP)
    u = b.fmul(xc, xc)
    return v.div(b.fmul(xc, v.poly(u, _TANH_P)), v.poly(u, _TANH_Q))


def sigmoid(v: VecBuilder, x: ir.Value) -> ir.Value:
    b = v.b
    # e^-x is capped at e^88 so that 1 + e^-x stays finite for the reciprocal
    # (NaN passes the clamp and gives NaN).
    e = exp(v, _clamp(v, b.fneg(x), -math.inf, 88.0))
    return v.recip(b.fadd(v.const(1.0), e))


def _gelu_tanh_arg(v: VecBuilder, x: ir.Value) -> ir.Value:
    """-2u for u = sqrt(2/pi) (x + 0.044715 x^3); gelu_tanh = x / (1 + e^(-2u))."""
    b = v.b
    x2 = b.fmul(x, x)
    u = b.fmul(x, v.fma(x2, v.const(-2.0 * GELU_C * GELU_K), v.const(-2.0 * GELU_C)))
    return u


# Below this, gelu_tanh and its gradient are 0 to f32 precision (|gelu(-10)| ~ 1e-37)
# and e^(-2u) would overflow; above +_GELU_FLAT the gradient is exactly 1.
_GELU_FLOOR = -10.0
_GELU_FLAT = 10.0


def _below_floor(v: VecBuilder, x: ir.Value, value: ir.Value, floor_value: float) -> ir.Value:
    return v.b.select(v.b.fcmp_ordered("<", x, v.const(_GELU_FLOOR)), v.const(floor_value), value)


def gelu_tanh(v: VecBuilder, x: ir.Value) -> ir.Value:
    # 0.5 x (1 + tanh(u)) == x * sigmoid(2u): no cancellation for negative x.
    b = v.b
    xc = _clamp(v, x, _GELU_FLOOR, math.inf)          # keeps e^(-2u) finite
    e = exp(v, _gelu_tanh_arg(v, xc))
    return _below_floor(v, x, v.div(xc, b.fadd(v.const(1.0), e)), -0.0)


def gelu_tanh_grad(v: VecBuilder, x: ir.Value) -> ir.Value:
    """d/dx gelu_tanh = s + x s (1-s) du2/dx with s = sigmoid(2u), du2/dx = 2c (1 + 3k x^2)."""
    b = v.b
    xc = _clamp(v, x, _GELU_FLOOR, _GELU_FLAT)        # no inf * 0 for huge |x|
    e = exp(v, _gelu_tanh_arg(v, xc))
    s = v.recip(b.fadd(v.const(1.0), e))
    one_minus_s = b.fmul(e, s)
    du2 = v.fma(b.fmul(xc, xc), v.const(6.0 * GELU_C * GELU_K), v.const(2.0 * GELU_C))
    return _below_floor(v, x, v.fma(b.fmul(b.fmul(xc, s), one_minus_s), du2, s), 0.0)


# Phi(x) is 0 or 1 in f32 beyond +-_PHI_CLAMP, and so is the gelu_erf gradient.
_PHI_CLAMP = 20.0


def _phi_parts(v: VecBuilder, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(Phi(x), e^(-x^2/2)) where Phi is the standard normal CDF; x must be clamped
    to +-_PHI_CLAMP by the caller (x^2 must not overflow).

    Phi(x) = erfc(-x/sqrt2)/2 with erfc(z) = t e^(-z^2 + P(t)). z^2 = x^2/2 is
    carried as hi + lo (FMA residual) and e^(-hi/2) is taken on its own, so
    the rounding of z^2 costs no accuracy in the far tail."""
    b = v.b
    hi = b.fmul(x, x)
    lo = v.fma(x, x, b.fneg(hi))
    gauss_hi = exp(v, b.fmul(hi, v.const(-0.5)))
    z = b.fmul(v.fabs(x), v.const(1.0 / math.sqrt(2.0)))
    t = b.fmul(v.const(2.0), v.recip(b.fadd(v.const(2.0), z)))
    corr = exp(v, v.fma(lo, v.const(-0.5), v.poly(t, _ERFC_P)))
    half_erfc = b.fmul(b.fmul(t, v.const(0.5)), b.fmul(gauss_hi, corr))   # erfc(|x|/sqrt2)/2
    phi = b.select(b.fcmp_ordered("<", x, v.const(0.0)), half_erfc, b.fsub(v.const(1.0), half_erfc))
    return phi, gauss_hi


def gelu_erf(v: VecBuilder, x: ir.Value) -> ir.Value:
    phi, _ = _phi_parts(v, _clamp(v, x, -_PHI_CLAMP, _PHI_CLAMP))
    return v.b.fmul(x, phi)


def gelu_erf_grad(v: VecBuilder, x: ir.Value) -> ir.Value:
    """Phi(x) + x * e^(-x^2/2) / sqrt(2 pi)."""
    xc = _clamp(v, x, -_PHI_CLAMP, _PHI_CLAMP)
    phi, gauss = _phi_parts(v, xc)
    return v.fma(v.b.fmul(xc, gauss), v.const(INV_SQRT_2PI), phi)
