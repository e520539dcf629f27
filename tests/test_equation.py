"""Equation TPPs (tpp.equation, tpp.eq): expression trees compiled into one row-wise
kernel, against the tree evaluated in float64 numpy. Softmax-, norm- and
log-softmax-shaped trees over hypothesis shapes and strides on every x86 target,
every broadcast mode, one-value-per-row outputs, the row buffer that keeps a
reduction's operand for a later pass (and rows too long for it), bf16 and f64,
every one-input unary kind, and the errors for malformed expressions."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tpp
from tpp import eq
from tpp.jit.vec import native_bf16
from tpp.kernels import equation as equation_k

from targets import SVE, X86, compile_only, named, require

BF16 = np.dtype(ml_dtypes.bfloat16)
NP = {"f32": np.float32, "bf16": BF16, "f64": np.float64}


def softmax(x, n):
    e = eq.exp(x - eq.max(x))
    return e / eq.sum(e)


def log_softmax(x, n):
    s = x - eq.max(x)
    return s - eq.log(eq.sum(eq.exp(s)))


def layer_norm(x, n):
    d = x - eq.sum(x) / n
    return d * eq.rsqrt(eq.sum(d * d) / n + 1e-5) * eq.arg(1, "row") + eq.arg(2, "row")


def rms_norm(x, n):
    return x * eq.rsqrt(eq.sum(x * x) / n + 1e-6) * eq.arg(1, "row")


TREES = {"softmax": softmax, "log_softmax": log_softmax, "layer_norm": layer_norm, "rms_norm": rms_norm}


def inputs_for(desc, rng, dtype, pad=0):
    """Arrays for the descriptor's inputs (full ones as views with row stride n + pad)."""
    arrays = []
    for op in desc.operands()[:-1]:
        if op.rows > 1 and pad:
            parent = rng.uniform(-3, 3, (op.rows, op.cols + pad)).astype(NP[dtype])
            arrays.append(parent[:, :op.cols])
        else:
            arrays.append(rng.uniform(-3, 3, (op.rows, op.cols)).astype(NP[dtype]))
    return arrays


def bound(ref: np.ndarray, dtype: str, out: str) -> np.ndarray:
    """Per-element error allowed: the transcendental approximations' 2e-6 relative plus
    the sums' rounding (a few ulp of the row's largest value), or bf16's 2**-8."""
    scale = np.max(np.abs(ref), axis=-1, keepdims=True) if ref.ndim == 2 else np.abs(ref)
    rel = 2.0 ** -7 if "bf16" in (dtype, out) else 3e-5
    return rel * (np.abs(ref) + scale) + 1e-30


def check(kernel, arrays, dtype, out):
    got = np.asarray(kernel(*arrays), np.float64)
    ref = kernel.descriptor.reference(*arrays)
    assert got.shape == ref.shape
    assert np.all(np.abs(got - ref) <= bound(ref, dtype, out)), np.max(np.abs(got - ref))


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("name", list(TREES))
@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 20), n=st.integers(1, 300), pad=st.sampled_from([0, 5]), seed=st.integers(0, 2 ** 16))
def test_named_trees_at_any_size(target, name, m, n, pad, seed):
    k = tpp.equation(TREES[name](eq.arg(0), n), m, n, target=target)
    require(k)
    check(k, inputs_for(k.descriptor, np.random.default_rng(seed), "f32", pad), "f32", "f32")


@pytest.mark.parametrize("dtype,out", [("bf16", "bf16"), ("bf16", "f32"), ("f32", "bf16")])
def test_bf16_in_and_out(dtype, out, rng):
    n = 197
    k = tpp.equation(layer_norm(eq.arg(0), n), 9, n, dtype, out_dtype=out)
    assert k(*inputs_for(k.descriptor, rng, dtype)).dtype == NP[out]
    check(k, inputs_for(k.descriptor, rng, dtype), dtype, out)


def test_f64_arithmetic_equation(rng):
    x = eq.arg(0)
    d = x - eq.sum(x) / 50
    k = tpp.equation(d / eq.sqrt(eq.sum(d * d)), 7, 50, "f64")
    a = rng.uniform(-1, 1, (7, 50))
    mu = a - a.mean(1, keepdims=True)
    np.testing.assert_allclose(k(a), mu / np.sqrt((mu * mu).sum(1, keepdims=True)), rtol=1e-13)


def test_every_broadcast_mode(rng):
    full, row, col, scalar = eq.arg(0), eq.arg(1, "row"), eq.arg(2, "col"), eq.arg(3, "scalar")
    k = tpp.equation(eq.maximum(full * row - col, scalar) + eq.sum(full * col), 13, 37)
    a, r, c = rng.uniform(-2, 2, (13, 37)), rng.uniform(-2, 2, (1, 37)), rng.uniform(-2, 2, (13, 1))
    a, r, c = (x.astype(np.float32) for x in (a, r, c))
    s = np.float32(0.25)
    want = np.maximum(a.astype(np.float64) * r - c, s) + (a.astype(np.float64) * c).sum(1, keepdims=True)
    got = k(a, r.reshape(37), c, np.array(s))         # a row may be (n,), a scalar ()
    assert np.all(np.abs(got - want) <= 1e-5 * (np.abs(want) + 40))


def test_one_value_per_row_gives_m_values(rng):
    x = eq.arg(0)
    a = rng.uniform(-5, 5, (21, 131)).astype(np.float32)
    spread = tpp.equation(eq.max(x) - eq.min(x), 21, 131)
    assert spread(a).shape == (21,)
    np.testing.assert_array_equal(spread(a), a.max(1) - a.min(1))
    sumsq = tpp.equation(eq.sum(x * x), 21, 131)
    ref = (a.astype(np.float64) ** 2).sum(1)
    assert np.all(np.abs(sumsq(a) - ref) <= 1e-6 * ref)
    # the sum over a row of a column-broadcast value is n times it
    col = tpp.equation(eq.sum(eq.arg(0, "col")), 21, 131)
    c = rng.uniform(-1, 1, (21, 1)).astype(np.float32)
    np.testing.assert_allclose(col(c), 131 * c[:, 0], rtol=1e-6)


def test_nan_in_a_row_propagates_through_max():
    x = eq.arg(0)
    k = tpp.equation(softmax(x, 40), 3, 40)
    a = np.zeros((3, 40), np.float32)
    a[1, 17] = np.nan
    y = k(a)
    assert np.isnan(y[1]).all() and not np.isnan(y[[0, 2]]).any()
    np.testing.assert_allclose(y[0], 1 / 40, rtol=1e-6)


@pytest.mark.parametrize("n,stashed", [(1000, True), (5000, False)])
def test_reduction_operand_kept_for_the_next_pass_where_the_row_fits(n, stashed, rng):
    k = tpp.equation(softmax(eq.arg(0), n), 4, n)
    assert ("stash" in k.ir) is stashed                 # 5000 f32 take more than 16 KB
    assert k.ir.count("llvm.exp") == 0                  # (exp is our polynomial, not a call)
    check(k, inputs_for(k.descriptor, rng, "f32"), "f32", "f32")


@pytest.mark.parametrize("kind", equation_k.UNARY)
def test_every_unary_kind_matches_tpp_unary(kind, rng):
    x = eq.arg(0)
    k = tpp.equation(eq.unary(kind, x), 5, 19)
    domain = (0.1, 4) if kind in ("log", "sqrt", "rsqrt") else (-4, 4)
    a = rng.uniform(*domain, (5, 19)).astype(np.float32)
    np.testing.assert_array_equal(k(a), tpp.unary(kind, 5, 19)(a))


def test_alpha_reaches_the_kind(rng):
    a = rng.uniform(-2, 2, (3, 10)).astype(np.float32)
    k = tpp.equation(eq.leaky_relu(eq.arg(0), 0.2), 3, 10)
    np.testing.assert_array_equal(k(a), tpp.unary("leaky_relu", 3, 10, alpha=0.2)(a))


def test_equal_expressions_share_one_kernel():
    one = tpp.equation(softmax(eq.arg(0), 64), 8, 64)
    two = tpp.equation(softmax(eq.arg(0), 64), 8, 64)
    assert one is two


def test_numbers_on_either_side(rng):
    a = rng.uniform(-2, 2, (2, 9)).astype(np.float32)
    x = eq.arg(0)
    k = tpp.equation(1 - 2 * x / 4 + np.float32(0.5), 2, 9)
    np.testing.assert_allclose(k(a), 1 - 2 * a.astype(np.float64) / 4 + 0.5, rtol=1e-6)


@pytest.mark.parametrize("target", SVE)
def test_sve_code_generation(target):
    for tree in (layer_norm, softmax):
        k = tpp.equation(tree(eq.arg(0), 101), 3, 101, target=compile_only(target))
        assert k.code and "llvm.masked.load" in k.ir          # object code, and the row's masked tail


def test_gpu_targets_refuse_with_a_reason():
    with pytest.raises(tpp.TargetError, match="vector CPUs only"):
        tpp.equation(softmax(eq.arg(0), 8), 2, 8, target=named("nvptx-sm90"))


@pytest.mark.parametrize("build,match", [
    (lambda: tpp.equation(eq.arg(1) + 1, 2, 2), "inputs \\[0\\] are not used"),
    (lambda: tpp.equation(eq.arg(0) + eq.arg(0, "row"), 2, 2), "used as full and as row"),
    (lambda: tpp.equation(eq.unary("cast", eq.arg(0)), 2, 2), "unary kind 'cast'"),
    (lambda: tpp.equation(eq.binary("gt", eq.arg(0), 1), 2, 2), "binary kind 'gt'"),
    (lambda: tpp.equation(eq.relu(eq.arg(0), 0.5), 2, 2), "takes no alpha"),
    (lambda: tpp.equation(eq.arg(0) + math.inf, 2, 2), "finite float"),
    (lambda: tpp.equation(eq.arg(0), 0, 2), "m"),
    (lambda: tpp.equation(eq.arg(0), 2, 2, dtypes=("f32", "f32")), "2 dtypes for 1 inputs"),
    (lambda: eq.arg(True), "non-negative int"),
    (lambda: eq.arg(0, "diagonal"), "bcast must be one of"),
    (lambda: tpp.equation_desc(2.0, 2, 2), "uses no input"),
])
def test_malformed_expressions_are_refused(build, match):
    with pytest.raises(tpp.DescriptorError, match=match):
        build()


def test_raw_trees_are_checked():
    bad = [("arg",), ("arg", 1), ("pow", ("arg", 0)), ("reduce", "mean", ("arg", 0)), ("const", 1),
           "x", ("unary", "exp", None, ("arg", -1))]
    for tree in bad:
        with pytest.raises(tpp.DescriptorError):
            tpp.EquationDesc(2, 2, tree, ((tpp.DType.F32, equation_k.Bcast.FULL),), tpp.DType.F32)


def test_f64_refuses_approximated_kinds():
    with pytest.raises(tpp.DTypeError, match="no f64 version"):
        tpp.equation(eq.exp(eq.arg(0)), 2, 2, "f64")
    with pytest.raises(tpp.DTypeError, match="every input and the output f64"):
        tpp.equation(eq.arg(0) + eq.arg(1), 2, 2, dtypes=("f64", "f32"), out_dtype="f64")


def test_an_expression_has_no_truth_value():
    with pytest.raises(TypeError, match="no truth value"):
        bool(eq.arg(0))


def test_max_and_min_of_rows_with_nan_and_infinities():
    x = eq.arg(0)
    a = np.array([[1, 2, np.nan] + [0] * 40, [-np.inf] * 43, [np.inf] + [5] * 42, [np.nan] * 43], np.float32)
    for fn, ref in ((eq.max, np.max), (eq.min, np.min)):
        got = tpp.equation(fn(x), 4, 43)(a)
        np.testing.assert_array_equal(got, ref(a, axis=1))


# ---- outputs roots: several outputs of one pass (flash attention's step) ------------------
def _online_softmax(c):
    x, m, l = eq.arg(0), eq.arg(1, "col"), eq.arg(2, "col")
    mn = eq.maximum(m, eq.max(x) * c)
    p = eq.exp2(x * c - mn)
    alpha = eq.exp2(m - mn)
    return p, mn, l * alpha + eq.sum(p), alpha


@pytest.mark.parametrize("m,n", [(1, 5), (13, 77), (64, 128), (8, 300)])
@pytest.mark.parametrize("out", ["f32", "bf16"])
@pytest.mark.parametrize("rounding", ["exact", "native"])
def test_outputs_root(m, n, out, rounding, rng):
    from tpp.expr import EquationDesc
    from tpp.jit.types import DType
    from tpp.kernels.operands import Bcast
    tree = ("outputs", rounding, *(e.node for e in _online_softmax(0.3)))
    ins = ((DType.F32, Bcast.FULL), (DType.F32, Bcast.COL), (DType.F32, Bcast.COL))
    desc = EquationDesc(m, n, tree, ins, DType(out))
    k = tpp.dispatch.get_kernel(desc)
    x = rng.standard_normal((m, n)).astype(np.float32)
    mc, lc = rng.standard_normal((m, 1)).astype(np.float32), rng.random((m, 1)).astype(np.float32)
    got = k(x, mc, lc)
    assert [g.shape for g in got] == [(m, n), (m,), (m,), (m,)]
    assert got[0].dtype == NP[out] and all(g.dtype == np.float32 for g in got[1:])
    want = desc.record.reference(desc, x, mc, lc)
    for g, w in zip(got, want):
        tol = 8e-3 if g.dtype == BF16 else 2e-6
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=tol, atol=tol)
    if out == "bf16" and rounding == "exact":       # bit-equal to ml_dtypes' rounding of the f32 tile
        f32 = tpp.dispatch.get_kernel(EquationDesc(m, n, tree, ins, DType.F32))(x, mc, lc)[0]
        assert np.array_equal(got[0].view(np.uint16), f32.astype(BF16).view(np.uint16))
    # m and l updated in place: each row's inputs are read before its outputs are stored
    p, m2, l2 = np.empty((m, n), NP[out]), mc[:, 0].copy(), lc[:, 0].copy()
    k(x, m2.reshape(m, 1), l2.reshape(m, 1), out=(p, np.empty(m, np.float32), np.empty(m, np.float32),
                                                   np.empty(m, np.float32)))
    from tpp import cabi
    arrays = [x, m2, l2, p, m2, l2, np.empty(m, np.float32)]
    k._raw(cabi.tensors([(a.ctypes.data, a.strides[0] // a.itemsize if a.ndim == 2 else 1) for a in arrays]))
    np.testing.assert_array_equal(m2, got[1])
    np.testing.assert_array_equal(l2, got[2])


def test_outputs_root_is_checked():
    from tpp.expr import EquationDesc
    from tpp.jit.types import DType
    from tpp.kernels.operands import Bcast
    x = eq.arg(0).node
    ins = ((DType.F32, Bcast.FULL),)
    for tree in (("outputs", "exact"), ("outputs", "fast", x), ("outputs", "exact", ("outputs", "exact", x)),
                 ("unary", "exp", None, ("outputs", "exact", x))):
        with pytest.raises(tpp.DescriptorError):
            EquationDesc(4, 8, tree, ins, DType.F32)


@pytest.mark.parametrize("target", X86 + SVE)
def test_outputs_root_compiles_for_every_cpu_target(target):
    # native bf16 rounding is fptrunc only where the target has the conversion (AVX512-BF16);
    # elsewhere the exact integer rounding
    from tpp.expr import EquationDesc
    from tpp.jit.types import DType
    from tpp.kernels.operands import Bcast
    p, mn = _online_softmax(0.3)[:2]
    tree = ("outputs", "native", p.node, mn.node, eq.sum(p).node)
    desc = EquationDesc(5, 101, tree, ((DType.F32, Bcast.FULL), (DType.F32, Bcast.COL)), DType.BF16)
    k = tpp.dispatch.get_kernel(desc, compile_only(target))
    assert k.code
    assert ("fptrunc" in k.ir) == native_bf16(compile_only(target))
