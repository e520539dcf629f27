"""Vector transcendental functions emitted as IR (f32 lanes): no libm calls.

Error bounds (tests/test_unary.py and tests/test_numerics_exact.py check them
against float64 numpy):
  exp, log, tanh, sigmoid, gelu_erf: <= 2e-6 relative (measured: 2-6e-7), plus
  2^-149 where the result is subnormal. gelu_tanh: <= 2e-6 relative for x >= -5;
  below, where |result| < 3e-7, the f32 rounding of its exponent -2u (|2u| up to
  113) allows ~|2u| 2^-24 relative: 2e-5 there.
  Saturation: where the f32 rounding of the true value is 0, +-1, +-inf or x, the
  result is exactly that. The forms below are chosen for it: results near 1 (or
  near x) come from one final rounding of 1 - small (x - x small), and results
  that may be subnormal are computed scaled, p r 2^n with e^a = p 2^n, and
  multiplied by 2^n last (ldexp), so they are rounded once, not flushed.

Coefficients: exp uses a degree-5 polynomial for e^r on |r| <= ln2/2 and exp2 one
for 2^f on |f| <= 1/2, both fitted (relative minimax by reweighted least squares,
constant term 1 so that e^0 = 2^0 = 1 exactly; exp's linear term 1 too) and
rounded to f32: truncation 1.1e-7 relative (the degree-6 Taylor series it
replaced: 1.6e-7, one FMA more). The tanh rational function and the erfc polynomial
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
_EXP_POLY = [1.0, 1.0, 0.499992311000824, 0.16667115688323975, 0.041890114545822144, 0.008312431164085865]
_EXP2_POLY = [1.0, 0.6931470036506653, 0.24022242426872253, 0.0555073507130146, 0.009671475738286972,
              0.0013264254666864872]
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


def _exponent_range(v: VecBuilder, x: ir.Value, lo: float, hi: float) -> ir.Value:
    """x clamped to [lo, hi] for an exponential's 2^n. With vscalefps NaN flows through to
    a NaN result; without, maxnum/minnum drop it, so the clamp is never NaN (fptosi of NaN
    would be poison) and callers put NaN back (_nan_back) or carry it in another factor."""
    if v.has_op("scalef", x.type):
        return _clamp(v, x, lo, hi)
    return v.intrinsic("maxnum", v.intrinsic("minnum", x, v.const(hi)), v.const(lo))


def _nan_back(v: VecBuilder, x: ir.Value, res: ir.Value) -> ir.Value:
    """res, with x's NaNs where _exponent_range dropped them."""
    if v.has_op("scalef", x.type):
        return res
    return v.b.select(v.b.fcmp_unordered("uno", x, x), x, res)


def exp_parts(v: VecBuilder, x: ir.Value, lo: float = -104.0, hi: float = 88.8) -> tuple[ir.Value, ir.Value]:
    """(p, n) with e^x = p * 2^n, p in [0.7, 1.42] and n integral (float), for x clamped
    to [lo, hi] (lo >= -170: ldexp's two factors each stay normal). Callers scale p before
    ldexp(., n) so that a result below the normal range is rounded once, not twice."""
    b = v.b
    xc = _exponent_range(v, x, lo, hi)
    n = v.rint(b.fmul(xc, v.const(LOG2E)))
    r = v.fma(n, v.const(-LN2_HI), xc)
    r = v.fma(n, v.const(-LN2_LO), r)
    return v.poly(r, _EXP_POLY), n


def ldexp(v: VecBuilder, p: ir.Value, n: ir.Value) -> ir.Value:
    """p * 2^n for integral float n in [-252, 254] and |p| < 2^126, rounded once:
    gradual underflow to subnormals and 0, overflow to inf."""
    if v.has_op("scalef", p.type):
        return v.scalef(p, n)
    b = v.b
    ni = b.fptosi(n, v.vty(I32))
    half = b.ashr(ni, v.const(1, I32))                 # split 2^n in two so neither factor
    return b.fmul(b.fmul(p, _pow2(v, half)), _pow2(v, b.sub(ni, half)))   # over/underflows


def exp(v: VecBuilder, x: ir.Value) -> ir.Value:
    p, n = exp_parts(v, x)
    return _nan_back(v, x, ldexp(v, p, n))


def exp2(v: VecBuilder, x: ir.Value) -> ir.Value:
    """2^x: n = rint(x) and f = x - n (exact), 2^f by the polynomial, times 2^n rounded
    once. No Cody-Waite split (x needs no scaling by log2 e), so ~3 vector instructions
    fewer than exp: softmax-like code that can fold log2 e into a scale it applies
    anyway uses it."""
    xc = _exponent_range(v, x, -160.0, 129.0)   # below, 2^x rounds to 0; above, to inf
    n = v.rint(xc)
    return _nan_back(v, x, ldexp(v, v.poly(v.b.fsub(xc, n), _EXP2_POLY), n))


def expm1(v: VecBuilder, x: ir.Value) -> ir.Value:
    """e^x - 1 without the cancellation of exp(x) - 1 near 0; x + x^2 (1/2 + x/6 + ...) is
    rounded once, so a tiny x gives x exactly (and x's sign: -0 stays -0)."""
    b = v.b
    small = v.fma(b.fmul(x, x), v.poly(x, [1.0 / math.factorial(k + 2) for k in range(8)]), x)
    small = b.select(b.fcmp_ordered("==", x, v.const(0.0)), x, small)     # -0 stays -0
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


# tanh rounds to +-1 in f32 from this |x| on (the smallest such f32); below it the
# rational function is capped at the f32 below 1. Below _TANH_LINEAR tanh(x) rounds to x.
_TANH_ONE = 9.010914
_BELOW_ONE = 1.0 - 2.0 ** -24
_TANH_LINEAR = 2.99e-4       # (3 * 2^-25)^0.5: x^3/3 is then under half an ulp of x


def tanh(v: VecBuilder, x: ir.Value) -> ir.Value:
    """An odd rational function of |x| (~20 vector instructions, no exp), given x's sign;
    exactly +-1 where tanh rounds to it and exactly x where it rounds to x."""
    b = v.b
    ax = v.fabs(x)
    xc = _clamp(v, ax, -math.inf, _TANH_CLAMP)
    u = b.fmul(xc, xc)
    r = v.div(b.fmul(xc, v.poly(u, _TANH_P)), v.poly(u, _TANH_Q))
    r = _clamp(v, r, -math.inf, _BELOW_ONE)
    r = b.select(b.fcmp_ordered(">=", ax, v.const(_TANH_ONE)), v.const(1.0), r)
    r = b.select(b.fcmp_ordered("<", x, v.const(0.0)), b.fneg(r), r)
    return b.select(b.fcmp_ordered("<", ax, v.const(_TANH_LINEAR)), x, r)    # keeps -0


def sigmoid(v: VecBuilder, x: ir.Value) -> ir.Value:
    """q = sigmoid(-|x|) = t / (1 + t) with t = e^-|x| (never overflows); sigmoid(x) is q
    for x < 0 (a subnormal t is kept exactly: 1 + t is then 1) and 1 - q for x >= 0,
    rounded once near 1, so it is 1.0 exactly where the true value rounds to 1."""
    b = v.b
    t = exp(v, b.fneg(v.fabs(x)))
    q = b.fmul(t, v.recip(b.fadd(v.const(1.0), t)))
    return b.select(b.fcmp_ordered(">=", x, v.const(0.0)), b.fsub(v.const(1.0), q), q)


def _gelu_tanh_arg(v: VecBuilder, x: ir.Value) -> ir.Value:
    """-2u for u = sqrt(2/pi) (x + 0.044715 x^3); gelu_tanh = x / (1 + e^(-2u))."""
    b = v.b
    x2 = b.fmul(x, x)
    u = b.fmul(x, v.fma(x2, v.const(-2.0 * GELU_C * GELU_K), v.const(-2.0 * GELU_C)))
    return u


# Below this gelu_tanh and its gradient round to -0 in f32 (|gelu(-10.8)| < 2^-150);
# above +_GELU_FLAT the gradient is exactly 1.
_GELU_FLOOR = -11.0
_GELU_FLAT = 10.0
_SCALED_LO = -120.0     # e^(-|2u|) parts: |2u| <= 113 above the floor


def _below_floor(v: VecBuilder, x: ir.Value, value: ir.Value, floor_value: float) -> ir.Value:
    return v.b.select(v.b.fcmp_ordered("<", x, v.const(_GELU_FLOOR)), v.const(floor_value), value)


def _sigmoid_2u(v: VecBuilder, xc: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """(q, p r, n) for gelu's sigmoid(2u): q = sigmoid(-|2u|) = p r 2^n, with
    e^-|2u| = p 2^n and r = 1 / (1 + e^-|2u|); sigmoid(2u) is q for x < 0, 1 - q for x >= 0."""
    b = v.b
    p, n = exp_parts(v, b.fneg(v.fabs(_gelu_tanh_arg(v, xc))), _SCALED_LO)
    t = ldexp(v, p, n)
    r = v.recip(b.fadd(v.const(1.0), t))
    return b.fmul(t, r), b.fmul(p, r), n


def gelu_tanh(v: VecBuilder, x: ir.Value) -> ir.Value:
    """x sigmoid(2u) == 0.5 x (1 + tanh(u)), without cancellation: x - x q for x > 0
    (rounded once: exactly x where gelu rounds to x), ldexp(x p r, n) for x <= 0 (rounded
    once, into the subnormal range where the result is that small; -0 stays -0)."""
    b = v.b
    xc = _clamp(v, x, _GELU_FLOOR, math.inf)
    q, pr, n = _sigmoid_2u(v, xc)
    # x q is below half an ulp of x beyond _GELU_FLAT: the clamp avoids inf * 0 at x = inf
    pos = v.fma(b.fneg(_clamp(v, xc, -math.inf, _GELU_FLAT)), q, xc)
    neg = ldexp(v, b.fmul(xc, pr), n)
    value = b.select(b.fcmp_ordered(">", x, v.const(0.0)), pos, neg)
    return _below_floor(v, x, value, -0.0)


def gelu_tanh_grad(v: VecBuilder, x: ir.Value) -> ir.Value:
    """d/dx gelu_tanh = s + x s (1-s) du2 with s = sigmoid(2u), du2/dx = 2c (1 + 3k x^2):
    1 + q (x (1-q) du2 - 1) for x > 0 (s = 1 - q; rounded once near 1) and
    q (1 + x (1-q) du2) for x <= 0 (s = q; scaled like gelu_tanh's tail)."""
    b = v.b
    xc = _clamp(v, x, _GELU_FLOOR, _GELU_FLAT)        # no inf * 0 for huge |x|
    q, pr, n = _sigmoid_2u(v, xc)
    du2 = v.fma(b.fmul(xc, xc), v.const(6.0 * GELU_C * GELU_K), v.const(2.0 * GELU_C))
    x_rest = b.fmul(xc, b.fsub(v.const(1.0), q))       # x (1 - q)
    pos = v.fma(q, v.fma(x_rest, du2, v.const(-1.0)), v.const(1.0))
    neg = ldexp(v, b.fmul(pr, v.fma(x_rest, du2, v.const(1.0))), n)
    value = b.select(b.fcmp_ordered(">", x, v.const(0.0)), pos, neg)
    return _below_floor(v, x, value, -0.0)


# Phi(x) is 0 or 1 in f32 beyond +-_PHI_CLAMP, and so is the gelu_erf gradient.
_PHI_CLAMP = 20.0


def _phi_parts(v: VecBuilder, x: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """(h, p, n): Q = erfc(|x|/sqrt2)/2 = h 2^n (Phi(x) = Q for x < 0, 1 - Q above) and
    e^(-x^2/2) = p 2^n; x must be clamped to +-_PHI_CLAMP by the caller (x^2 must not
    overflow). The callers scale by 2^n last, so a subnormal result is rounded once.

    erfc(z) = t e^(-z^2 + P(t)). z^2 = x^2/2 is carried as hi + lo (FMA residual) and
    e^(-hi/2) is taken on its own, so the rounding of z^2 costs no accuracy in the far tail."""
    b = v.b
    hi = b.fmul(x, x)
    lo = v.fma(x, x, b.fneg(hi))
    p, n = exp_parts(v, b.fmul(hi, v.const(-0.5)), _SCALED_LO)
    z = b.fmul(v.fabs(x), v.const(1.0 / math.sqrt(2.0)))
    t = b.fmul(v.const(2.0), v.recip(b.fadd(v.const(2.0), z)))
    corr = exp(v, v.fma(lo, v.const(-0.5), v.poly(t, _ERFC_P)))
    h = b.fmul(b.fmul(t, v.const(0.5)), b.fmul(p, corr))
    return h, p, n


def gelu_erf(v: VecBuilder, x: ir.Value) -> ir.Value:
    """x - x Q for x > 0 (rounded once: exactly x where gelu rounds to x), x Q for x <= 0."""
    b = v.b
    xc = _clamp(v, x, -_PHI_CLAMP, _PHI_CLAMP)
    h, _, n = _phi_parts(v, xc)
    pos = v.fma(b.fneg(xc), ldexp(v, h, n), x)          # Q is 0 beyond the clamp: x stays x
    neg = ldexp(v, b.fmul(xc, h), n)
    return b.select(b.fcmp_ordered(">", x, v.const(0.0)), pos, neg)


def gelu_erf_grad(v: VecBuilder, x: ir.Value) -> ir.Value:
    """Phi(x) + x e^(-x^2/2) / sqrt(2 pi): 1 + (x phi - Q) for x > 0 (rounded once near
    1), Q + x phi for x <= 0 (scaled by 2^n last)."""
    b = v.b
    xc = _clamp(v, x, -_PHI_CLAMP, _PHI_CLAMP)
    h, p, n = _phi_parts(v, xc)
    x_gauss = b.fmul(xc, p)
    pos = b.fadd(v.const(1.0), ldexp(v, v.fma(x_gauss, v.const(INV_SQRT_2PI), b.fneg(h)), n))
    neg = ldexp(v, v.fma(x_gauss, v.const(INV_SQRT_2PI), h), n)
    return b.select(b.fcmp_ordered(">", x, v.const(0.0)), pos, neg)
