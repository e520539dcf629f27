"""Unary elementwise TPPs: the kinds, their numpy references (float64, named
like the kinds) and their vector bodies.

Backward kinds take two inputs, LIBXSMM-style: relu_grad, leaky_relu_grad and
the gelu grads take (dy, x); sigmoid_grad and tanh_grad take (dy, y) where y
is the forward output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
from llvmlite import ir

from .errors import DTypeError
from ..jit.types import DType
from ..jit.vec import VecBuilder
from . import fields, simt, vmath
from .eltwise import emit_eltwise
from .family import Family, Lowering, elements
from .operands import Operand

ARITH = frozenset({DType.F32, DType.BF16, DType.F64})   # exact or IEEE ops: f64 too
TRANSC = frozenset({DType.F32, DType.BF16})              # vector approximations are f32


@dataclass(frozen=True)
class UnaryKind:
    name: str
    reference: Callable[..., np.ndarray]     # float64 numpy reference
    body: Callable[..., list]                # (vec, inputs, Params) -> [output]
    dtypes: frozenset = ARITH
    inputs: tuple[str, ...] = ("x",)         # names of the input tiles
    default_alpha: float | None = None       # kinds with a parameter


# ---- numpy references -------------------------------------------------------------
def copy(x): return np.array(x, dtype=np.float64)
def cast(x): return np.array(x, dtype=np.float64)
def zero(): return 0.0
def relu(x): return np.where(x < 0, 0.0, x)
def leaky_relu(x, alpha): return np.where(x > 0, x, alpha * x)
def elu(x, alpha): return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
def _phi(x): return 0.5 * _erfc(-x / np.sqrt(2.0))
def _sigmoid_2u(x):
    """sigmoid(2u) = 0.5 (1 + tanh(u)) for gelu's u, without the cancellation of 1 + tanh."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-2.0 * vmath.GELU_C * (x + vmath.GELU_K * x ** 3)))


def gelu_tanh(x): return x * _sigmoid_2u(x)   # == 0.5 x (1 + tanh(u))
def gelu_erf(x): return x * _phi(x)
def sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))
def tanh(x): return np.tanh(x)
def exp(x): return np.exp(x)
def exp2(x): return np.exp2(x)
def log(x): return np.log(x)
def sqrt(x): return np.sqrt(x)
def rsqrt(x): return 1.0 / np.sqrt(x)
def reciprocal(x): return 1.0 / x
def negate(x): return -x
def abs(x): return np.abs(x)   # noqa: A001 - named like the kind
def square(x): return x * x
def relu_grad(dy, x): return np.where(x > 0, dy, 0.0)
def leaky_relu_grad(dy, x, alpha): return np.where(x > 0, dy, alpha * dy)
def sigmoid_grad(dy, y): return dy * y * (1 - y)
def tanh_grad(dy, y): return dy * (1 - y * y)


def gelu_tanh_grad(dy, x):
    s = _sigmoid_2u(x)                       # 0.5 (1 + tanh u); 1 - tanh^2 u = 4 s (1 - s)
    du = vmath.GELU_C * (1 + 3 * vmath.GELU_K * x * x)
    return dy * (s + 2 * x * s * (1 - s) * du)


def gelu_erf_grad(dy, x):
    return dy * (_phi(x) + x * np.exp(-0.5 * x * x) * vmath.INV_SQRT_2PI)


def _erfc(z):
    """float64 erfc without scipy: math.erfc elementwise (references need not be fast)."""
    import math
    return np.vectorize(math.erfc, otypes=[np.float64])(z)


# ---- vector bodies -----------------------------------------------------------------
class Params(NamedTuple):
    """What a body needs besides its input vectors."""
    elem: ir.Type           # compute element type (float or double)
    alpha: float | None


def _select_pos(v: VecBuilder, p: Params, x, pos, neg):
    """x > 0 ? pos : neg (a NaN x takes neg, which carries the NaN in every use here)."""
    return v.b.select(v.b.fcmp_ordered(">", x, v.const(0.0, p.elem)), pos, neg)


def _relu(v, xs, p):
    x, = xs
    zero_ = v.const(0.0, p.elem)
    return [v.b.select(v.b.fcmp_ordered("<", x, zero_), zero_, x)]


def _leaky(v, xs, p):
    x, = xs
    return [_select_pos(v, p, x, x, v.b.fmul(x, v.const(p.alpha, p.elem)))]


def _elu(v, xs, p):
    x, = xs
    return [_select_pos(v, p, x, x, v.b.fmul(vmath.expm1(v, x), v.const(p.alpha, p.elem)))]


def _relu_grad(v, xs, p):
    dy, x = xs
    return [_select_pos(v, p, x, dy, v.const(0.0, p.elem))]


def _leaky_grad(v, xs, p):
    dy, x = xs
    return [_select_pos(v, p, x, dy, v.b.fmul(dy, v.const(p.alpha, p.elem)))]


def _times_dy(fn):
    return lambda v, xs, p: [v.b.fmul(xs[0], fn(v, xs[1]))]


def _one(fn):
    return lambda v, xs, p: [fn(v, xs[0])]


def _one_p(fn):
    return lambda v, xs, p: [fn(v, xs[0], p)]


def _sigmoid_grad(v, xs, p):
    dy, y = xs
    return [v.b.fmul(v.b.fmul(dy, y), v.b.fsub(v.const(1.0, p.elem), y))]


def _tanh_grad(v, xs, p):
    dy, y = xs
    return [v.b.fmul(dy, v.fma(v.b.fneg(y), y, v.const(1.0, p.elem)))]


_DY_X = ("dy", "x")
_DY_Y = ("dy", "y")


def _kinds(*entries: UnaryKind) -> dict[str, UnaryKind]:
    return {k.name: k for k in entries}


KINDS = _kinds(
    UnaryKind("copy", copy, lambda v, xs, p: [xs[0]]),
    UnaryKind("cast", cast, lambda v, xs, p: [xs[0]], frozenset({DType.F32, DType.BF16})),
    UnaryKind("zero", zero, lambda v, xs, p: [v.const(0.0, p.elem)], inputs=()),
    UnaryKind("relu", relu, _relu),
    UnaryKind("leaky_relu", leaky_relu, _leaky, default_alpha=0.01),
    UnaryKind("elu", elu, _elu, TRANSC, default_alpha=1.0),
    UnaryKind("gelu_tanh", gelu_tanh, _one(vmath.gelu_tanh), TRANSC),
    UnaryKind("gelu_erf", gelu_erf, _one(vmath.gelu_erf), TRANSC),
    UnaryKind("sigmoid", sigmoid, _one(vmath.sigmoid), TRANSC),
    UnaryKind("tanh", tanh, _one(vmath.tanh), TRANSC),
    UnaryKind("exp", exp, _one(vmath.exp), TRANSC),
    UnaryKind("exp2", exp2, _one(vmath.exp2), TRANSC),
    UnaryKind("log", log, _one(vmath.log), TRANSC),
    UnaryKind("sqrt", sqrt, _one(lambda v, x: v.sqrt(x))),
    UnaryKind("rsqrt", rsqrt, _one_p(lambda v, x, p: v.b.fdiv(v.const(1.0, p.elem), v.sqrt(x)))),
    UnaryKind("reciprocal", reciprocal, _one_p(lambda v, x, p: v.b.fdiv(v.const(1.0, p.elem), x))),
    UnaryKind("negate", negate, _one(lambda v, x: v.b.fneg(x))),
    UnaryKind("abs", abs, _one(lambda v, x: v.fabs(x))),
    UnaryKind("square", square, _one(lambda v, x: v.b.fmul(x, x))),
    UnaryKind("relu_grad", relu_grad, _relu_grad, inputs=_DY_X),
    UnaryKind("leaky_relu_grad", leaky_relu_grad, _leaky_grad, inputs=_DY_X, default_alpha=0.01),
    UnaryKind("gelu_tanh_grad", gelu_tanh_grad, _times_dy(vmath.gelu_tanh_grad), TRANSC, inputs=_DY_X),
    UnaryKind("gelu_erf_grad", gelu_erf_grad, _times_dy(vmath.gelu_erf_grad), TRANSC, inputs=_DY_X),
    UnaryKind("sigmoid_grad", sigmoid_grad, _sigmoid_grad, inputs=_DY_Y),
    UnaryKind("tanh_grad", tanh_grad, _tanh_grad, inputs=_DY_Y),
)

# Other names users reach for; resolved before a descriptor is made.
ALIASES = {"gelu": "gelu_tanh", "gelu_grad": "gelu_tanh_grad", "identity": "copy", "neg": "negate"}


# ---- the family record -------------------------------------------------------------
def alpha_value(d) -> float | None:
    """The descriptor's alpha, or its kind's default (None for kinds without one)."""
    return float(d.alpha) if d.alpha is not None else KINDS[d.kind].default_alpha


def _validate(d) -> None:
    kind = KINDS[d.kind]
    if d.axis is not None or d.argidx:
        fields.refuse_reduction(d)
    fields.dtype_check(d.kind, d.dtype, kind.dtypes)
    if d.kind == "cast":
        if d.out_dtype not in kind.dtypes or d.out_dtype == d.dtype:
            raise DTypeError(f"tpp cast: out_dtype must be the other of f32/bf16, "
                             f"got {d.dtype.value} -> {d.out_dtype.value}")
    elif d.out_dtype != d.dtype:
        fields.refuse_cast(d)
    if d.alpha is not None:
        if kind.default_alpha is None:
            fields.refuse_alpha(d)
        fields.put(d, "alpha", fields.real(d.kind, "alpha", d.alpha))


def _operands(d) -> list[Operand]:
    ins = [Operand(name, d.dtype, d.m, d.n) for name in KINDS[d.kind].inputs]
    return ins + [Operand("out", d.out_dtype, d.m, d.n, output=True)]


def _reference(d, *inputs):
    kind = KINDS[d.kind]
    if not kind.inputs:                      # a constant tile
        return np.full((d.m, d.n), kind.reference())
    xs = [np.asarray(x, dtype=np.float64) for x in inputs]
    return kind.reference(*xs, alpha_value(d)) if kind.default_alpha is not None else kind.reference(*xs)


def _lowering(driver) -> Lowering:
    """The elementwise driver (eltwise.py on vector CPUs, simt.py on GPUs) with the kind's body."""
    def emit(module, name, target, d):
        ops = _operands(d)
        params, body = Params(d.dtype.compute.storage, alpha_value(d)), KINDS[d.kind].body
        return driver(module, name, target, d.m, d.n, ops[:-1], ops[-1:], lambda v, xs: body(v, xs, params))
    return Lowering(emit, threads=elements if driver is simt.emit_eltwise else None)


FAMILY = Family("unary", "eltwise", tuple(KINDS), _validate, _operands, _reference,
                {"simd": _lowering(emit_eltwise), "simt": _lowering(simt.emit_eltwise)}, elementwise=True)
