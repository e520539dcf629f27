"""numpy baselines: for each kind, numpy's fastest reasonable expression(s),
all writing into preallocated outputs and temporaries.

A builder takes (inputs, out, alpha) and returns {label: fn}; the benchmark
times every candidate and reports the fastest, with its label, so numpy gets
its best shot. Kinds without a numpy expression (numpy has no erf) are absent.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from tpp.kernels.vmath import GELU_C, GELU_K

Fn = Callable[[], object]
Builder = Callable[[list, np.ndarray, "float | None"], dict[str, Fn]]


def _ufunc1(uf, name: str) -> Builder:
    return lambda ins, y, alpha: {f"np.{name}(x, out=y)": lambda: uf(ins[0], out=y)}


def _ufunc2(uf, name: str) -> Builder:
    return lambda ins, c, alpha: {f"np.{name}(a, b, out=c)": lambda: uf(ins[0], ins[1], out=c)}


def _like(x: np.ndarray, n: int = 1) -> list[np.ndarray]:
    return [np.empty_like(x) for _ in range(n)]


def _relu(ins, y, alpha):
    x = ins[0]
    zeros = np.zeros_like(x)
    return {"np.maximum(x, zeros, out=y)": lambda: np.maximum(x, zeros, out=y)}


def _leaky_relu(ins, y, alpha):
    x, (t,) = ins[0], _like(ins[0])
    # alpha < 1: max(x, alpha*x) is x for x > 0 and alpha*x otherwise
    return {"multiply(x,alpha,t); maximum(x,t,y)":
            lambda: (np.multiply(x, alpha, out=t), np.maximum(x, t, out=y))}


def _elu(ins, y, alpha):
    x, (t,) = ins[0], _like(ins[0])
    zeros = np.zeros_like(x)

    def chain():
        np.minimum(x, zeros, out=t)
        np.expm1(t, out=t)
        np.multiply(t, alpha, out=t)
        np.maximum(x, zeros, out=y)
        np.add(y, t, out=y)
    return {"min,expm1,mul,max,add (in place)": chain}


def _sigmoid(ins, y, alpha):
    x = ins[0]

    def via_reciprocal():
        np.negative(x, out=y)
        np.exp(y, out=y)
        np.add(y, 1.0, out=y)
        np.reciprocal(y, out=y)

    def via_divide():
        np.negative(x, out=y)
        np.exp(y, out=y)
        np.add(y, 1.0, out=y)
        np.divide(1.0, y, out=y)

    def via_tanh():
        np.multiply(x, 0.5, out=y)
        np.tanh(y, out=y)
        np.add(y, 1.0, out=y)
        np.multiply(y, 0.5, out=y)
    return {"negative,exp,add 1,reciprocal": via_reciprocal,
            "negative,exp,add 1,divide 1/": via_divide,
            "0.5*(1+tanh(0.5x))": via_tanh}


def _gelu_tanh(ins, y, alpha):
    x, (t,) = ins[0], _like(ins[0])
    c, ck = GELU_C, GELU_C * GELU_K

    def via_tanh():          # 0.5 x (1 + tanh(x (c + cK x^2)))
        np.multiply(x, x, out=t)
        np.multiply(t, ck, out=t)
        np.add(t, c, out=t)
        np.multiply(t, x, out=t)
        np.tanh(t, out=t)
        np.add(t, 1.0, out=t)
        np.multiply(t, x, out=y)
        np.multiply(y, 0.5, out=y)

    def via_exp():           # 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u))
        np.multiply(x, x, out=t)
        np.multiply(t, -2.0 * ck, out=t)
        np.add(t, -2.0 * c, out=t)
        np.multiply(t, x, out=t)
        np.exp(t, out=t)
        np.add(t, 1.0, out=t)
        np.divide(x, t, out=y)
    return {"x*x,mul,add,mul,tanh,add,mul,mul": via_tanh, "x/(1+exp(-2u)) chain": via_exp}


def _rsqrt(ins, y, alpha):
    x = ins[0]
    return {"sqrt(x,y); divide(1,y,y)": lambda: (np.sqrt(x, out=y), np.divide(1.0, y, out=y))}


def _reciprocal(ins, y, alpha):
    x = ins[0]
    return {"np.divide(1, x, out=y)": lambda: np.divide(1.0, x, out=y),
            "np.reciprocal(x, out=y)": lambda: np.reciprocal(x, out=y)}


def _square(ins, y, alpha):
    x = ins[0]
    return {"np.square(x, out=y)": lambda: np.square(x, out=y),
            "np.multiply(x, x, out=y)": lambda: np.multiply(x, x, out=y)}


def _relu_grad(ins, y, alpha):
    dy, x = ins
    zeros = np.zeros_like(x)
    mask = np.empty(x.shape, bool)
    (t,) = _like(x)

    def copy_where():
        np.greater(x, zeros, out=mask)
        y.fill(0)
        np.copyto(y, dy, where=mask)

    def multiply_mask():
        np.greater(x, zeros, out=mask)
        np.multiply(dy, mask, out=y)

    def multiply_float_mask():      # the compare writes 1.0/0.0 straight into a float array
        np.greater(x, zeros, out=t)
        np.multiply(dy, t, out=y)
    return {"greater; fill 0; copyto where": copy_where, "greater; multiply(dy, mask)": multiply_mask,
            "greater(x,0,out=float t); multiply(dy,t)": multiply_float_mask}


def _leaky_relu_grad(ins, y, alpha):
    dy, x = ins
    zeros = np.zeros_like(x)
    mask = np.empty(x.shape, bool)
    (t,) = _like(x)

    def copy_where():
        np.greater(x, zeros, out=mask)
        np.multiply(dy, alpha, out=y)
        np.copyto(y, dy, where=mask)

    def scale():                    # dy * (alpha + (1 - alpha) * [x > 0])
        np.greater(x, zeros, out=t)
        np.multiply(t, 1.0 - alpha, out=t)
        np.add(t, alpha, out=t)
        np.multiply(dy, t, out=y)
    return {"greater; mul alpha; copyto where": copy_where, "dy*(alpha+(1-alpha)*[x>0]) chain": scale}


def _sigmoid_grad(ins, out, alpha):
    dy, y = ins
    (t,) = _like(y)
    return {"dy*y*(1-y) in place": lambda: (np.subtract(1.0, y, out=t), np.multiply(t, y, out=t),
                                            np.multiply(dy, t, out=out))}


def _tanh_grad(ins, out, alpha):
    dy, y = ins
    (t,) = _like(y)
    return {"dy*(1-y*y) in place": lambda: (np.multiply(y, y, out=t), np.subtract(1.0, t, out=t),
                                            np.multiply(dy, t, out=out))}


def _gelu_tanh_grad(ins, out, alpha):
    dy, x = ins
    x2, t = _like(x, 2)
    c, ck = GELU_C, GELU_C * GELU_K

    def chain():
        np.multiply(x, x, out=x2)
        np.multiply(x2, ck, out=t)
        np.add(t, c, out=t)
        np.multiply(t, x, out=t)
        np.tanh(t, out=t)                     # t = tanh(u)
        np.multiply(x2, 3.0 * ck, out=x2)
        np.add(x2, c, out=x2)                 # x2 = du/dx
        np.multiply(t, t, out=out)
        np.subtract(1.0, out, out=out)
        np.multiply(out, x2, out=out)
        np.multiply(out, x, out=out)
        np.multiply(out, 0.5, out=out)        # 0.5 x (1 - t^2) du
        np.add(t, 1.0, out=t)
        np.multiply(t, 0.5, out=t)
        np.add(out, t, out=out)
        np.multiply(out, dy, out=out)
    return {"in-place chain (tanh)": chain}


UNARY: dict[str, Builder] = {
    "copy": lambda ins, y, a: {"np.copyto(y, x)": lambda: np.copyto(y, ins[0])},
    "cast": lambda ins, y, a: {"np.copyto(y, x) (casting)": lambda: np.copyto(y, ins[0], casting="unsafe")},
    "zero": lambda ins, y, a: {"y.fill(0)": lambda: y.fill(0)},
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "gelu_tanh": _gelu_tanh,
    "sigmoid": _sigmoid,
    "tanh": _ufunc1(np.tanh, "tanh"),
    "exp": _ufunc1(np.exp, "exp"),
    "log": _ufunc1(np.log, "log"),
    "sqrt": _ufunc1(np.sqrt, "sqrt"),
    "rsqrt": _rsqrt,
    "reciprocal": _reciprocal,
    "negate": _ufunc1(np.negative, "negative"),
    "abs": _ufunc1(np.abs, "abs"),
    "square": _square,
    "relu_grad": _relu_grad,
    "leaky_relu_grad": _leaky_relu_grad,
    "gelu_tanh_grad": _gelu_tanh_grad,
    "sigmoid_grad": _sigmoid_grad,
    "tanh_grad": _tanh_grad,
}

BINARY: dict[str, Builder] = {
    name: _ufunc2(uf, uf.__name__) for name, uf in {
        "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
        "max": np.maximum, "min": np.minimum, "gt": np.greater, "ge": np.greater_equal,
        "lt": np.less, "le": np.less_equal, "eq": np.equal, "ne": np.not_equal}.items()
}
