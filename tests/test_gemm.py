"""GEMM TPP: C = beta C + op(A) op(B) against the float64 reference.

Tolerance: each element is a sum of k products, so its error is bounded by
about k * eps * sum_k |a_ik b_kj| (plus |c| eps); we check against that bound
with the absolute values' product, which cannot be fooled by cancellation.
"""
from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tpp

from targets import X86, require, runs

EPS = {np.float32: 2.0 ** -23, np.float64: 2.0 ** -52}


def operands(rng, m, n, k, dtype, trans_a=False, trans_b=False, view=False):
    def make(shape):
        if not view:
            return rng.uniform(-1, 1, shape).astype(dtype)
        parent = rng.uniform(-1, 1, (shape[0] + 3, shape[1] + 7)).astype(dtype)
        return parent[1:1 + shape[0], 3:3 + shape[1]]
    a = make((k, m) if trans_a else (m, k))
    b = make((n, k) if trans_b else (k, n))
    return a, b, make((m, n))


def check(g, a, b, c, beta, trans_a, trans_b, dtype):
    c_before = np.array(c, dtype=np.float64)
    got = g(a, b, c)
    assert got is c, "gemm must update c in place and return it"
    ref = g.reference(a, b, c_before)
    oa = np.abs(np.asarray(a, np.float64))
    ob = np.abs(np.asarray(b, np.float64))
    bound = (oa.T if trans_a else oa) @ (ob.T if trans_b else ob) + beta * np.abs(c_before)
    k = oa.shape[0] if trans_a else oa.shape[1]
    tol = (k + 2) * EPS[dtype] * bound + 1e-300
    err = np.abs(np.asarray(got, np.float64) - ref)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"gemm error {err[worst]:.3g} > bound {tol[worst]:.3g} at {worst}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (16, 16, 16), (64, 64, 64), (17, 35, 9), (33, 16, 70),
                                   (5, 100, 1), (15, 33, 2)])
def test_gemm_matches_reference(m, n, k, beta, trans_a, trans_b, dtype, rng):
    g = tpp.gemm(m, n, k, dtype, trans_a=trans_a, trans_b=trans_b, beta=beta)
    a, b, c = operands(rng, m, n, k, dtype, trans_a, trans_b)
    check(g, a, b, c, beta, trans_a, trans_b, dtype)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 67), n=st.integers(1, 67), k=st.integers(1, 67), trans_a=st.booleans(),
       trans_b=st.booleans(), view=st.booleans(), beta=st.sampled_from([0.0, 1.0]))
def test_gemm_any_shape_and_layout(m, n, k, trans_a, trans_b, view, beta):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    g = tpp.gemm(m, n, k, "f32", trans_a=trans_a, trans_b=trans_b, beta=beta)
    a, b, c = operands(rng, m, n, k, np.float32, trans_a, trans_b, view)
    check(g, a, b, c, beta, trans_a, trans_b, np.float32)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, True)])
def test_large_shapes(trans_a, trans_b, rng):
    # with trans_b, 256^3 transposes B^T on the heap (256 KB), 20 x 33 x 40 on the stack
    for m, n, k in [(256, 256, 256), (130, 260, 300), (20, 33, 40)]:
        g = tpp.gemm(m, n, k, trans_a=trans_a, trans_b=trans_b)
        a, b, c = operands(rng, m, n, k, np.float32, trans_a, trans_b)
        check(g, a, b, c, 1.0, trans_a, trans_b, np.float32)


def test_views_dispatch_a_kernel_for_their_strides(rng):
    """lda/ldb/ldc are compiled in; a view with other strides still computes right."""
    g = tpp.gemm(8, 24, 12)
    a, b, c = operands(rng, 8, 24, 12, np.float32, view=True)
    check(g, a, b, c, 1.0, False, False, np.float32)
    explicit = tpp.gemm(8, 24, 12, lda=a.strides[0] // 4, ldb=b.strides[0] // 4, ldc=c.strides[0] // 4)
    check(explicit, a, b, c, 1.0, False, False, np.float32)


def test_beta_zero_allocates_and_ignores_c(rng):
    g = tpp.gemm(9, 10, 11, beta=0.0)
    a, b, _ = operands(rng, 9, 10, 11, np.float32)
    np.testing.assert_allclose(g(a, b), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    c = np.full((9, 10), np.nan, np.float32)          # beta = 0 must not read c (NaN would leak)
    assert np.all(np.isfinite(g(a, b, c)))


def test_codegen_register_blocked_without_spills():
    asm = tpp.gemm(64, 64, 64, target="x86-avx512").asm
    assert "vfmadd231ps" in asm and "zmm" in asm
    assert not re.search(r"vmov\w*\s+%zmm\d+, -?\d*\(%rsp\)", asm), "accumulators spilled to the stack"
    avx2 = tpp.gemm(64, 64, 64, target="x86-avx2").asm
    assert "ymm" in avx2 and "zmm" not in avx2 and "vfmadd" in avx2


def test_avx2_target_computes_the_same(rng):
    g = tpp.gemm(23, 45, 31, target="x86-avx2")
    a, b, c = operands(rng, 23, 45, 31, np.float32)
    check(g, a, b, c, 1.0, False, False, np.float32)


@pytest.mark.parametrize("call, error, message", [
    (lambda g, a, b, c: g(a, b[:-1], c), tpp.ShapeError, "argument 'b' must have shape"),
    (lambda g, a, b, c: g(a.astype(np.float64), b, c), tpp.DTypeError, "argument 'a' must have dtype"),
    (lambda g, a, b, c: g(a, b), TypeError, "accumulates into its output"),
    (lambda g, a, b, c: g(a, b, np.zeros((4, 6), np.float32)), tpp.ShapeError, "argument 'c' must have shape"),
])
def test_bad_calls(call, error, message, rng):
    g = tpp.gemm(5, 6, 7)
    a, b, c = operands(rng, 5, 6, 7, np.float32)
    with pytest.raises(error, match=message):
        call(g, a, b, c)


def test_c_overlapping_an_input_is_refused(rng):
    buf = rng.uniform(-1, 1, (6, 6)).astype(np.float32)
    g = tpp.gemm(6, 6, 6)
    with pytest.raises(tpp.AliasError, match="overlaps"):
        g(buf, buf.copy(), buf)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(m=0, n=4, k=4), tpp.DescriptorError, "m must be an integer >= 1"),
    (dict(m=4, n=4, k=4, beta=0.5), tpp.DescriptorError, "beta must be 0 or 1"),
    (dict(m=4, n=4, k=4, dtype="i8"), tpp.DTypeError, "not supported"),
    (dict(m=4, n=8, k=4, ldb=3), tpp.DescriptorError, "ldb must be an integer >= 8"),
])
def test_bad_descriptors(kwargs, error, message):
    with pytest.raises(error, match=message):
        tpp.gemm(**kwargs)


# ---- bf16 inputs, f32 accumulation ---------------------------------------------------
BF16 = ml_dtypes.bfloat16


@pytest.mark.parametrize("target", X86)   # vdpbf16ps on AVX-512, the f32 fallback on AVX2
@pytest.mark.parametrize("b_vnni", [False, True])
@pytest.mark.parametrize("out_dtype", ["f32", "bf16"])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (16, 16, 16), (64, 64, 64), (17, 35, 9), (33, 16, 70), (5, 100, 3)])
def test_bf16_gemm(m, n, k, beta, out_dtype, b_vnni, target, rng):
    g = tpp.gemm(m, n, k, "bf16", beta=beta, out_dtype=out_dtype, b_vnni=b_vnni, target=target)
    a = rng.uniform(-1, 1, (m, k)).astype(BF16)
    b = rng.uniform(-1, 1, (k, n)).astype(BF16)
    b_arg = tpp.unary("vnni_pack", k, n, "bf16")(b) if b_vnni else b
    c = rng.uniform(-1, 1, (m, n)).astype(np.float32 if out_dtype == "f32" else BF16)
    c_before = c.astype(np.float64)
    ref = g.reference(a, b_arg, c_before)
    got = require(g)(a, b_arg, c).astype(np.float64)
    np.testing.assert_allclose(ref, beta * c_before + a.astype(np.float64) @ b.astype(np.float64))
    # bf16 x bf16 products are exact in f32; only the f32 sums (and a bf16 C) round
    bound = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)) + beta * np.abs(c_before)
    tol = (k + 2) * 2.0 ** -23 * bound + (2.0 ** -8 * np.abs(ref) if out_dtype == "bf16" else 0)
    assert np.all(np.abs(got - ref) <= tol + 1e-30)


@pytest.mark.parametrize("k,n", [(1, 1), (2, 16), (7, 37), (33, 20), (64, 64)])
def test_vnni_pack_layout_and_round_trip(k, n, rng):
    x = rng.uniform(-4, 4, (k, n)).astype(BF16)
    packed = tpp.unary("vnni_pack", k, n, "bf16")(x)
    assert packed.shape == ((k + 1) // 2, 2 * n)
    pairs = packed.reshape((k + 1) // 2, n, 2)
    back = pairs.transpose(0, 2, 1).reshape(-1, n)[:k]          # unpack: B[2p + t, j] = Bp[p, 2j + t]
    assert np.array_equal(back.view(np.uint16), x.view(np.uint16))
    if k % 2:
        assert not pairs[-1, :, 1].astype(np.float32).any(), "the pad of an odd k must be zero"


def test_bf16_codegen_uses_vdpbf16ps():
    asm = tpp.gemm(64, 64, 64, "bf16", b_vnni=True, target="x86-avx512").asm
    assert "vdpbf16ps" in asm
    assert "vdpbf16ps" not in tpp.gemm(16, 16, 16, "bf16", target="x86-avx2").asm


def test_bf16_output_rounds_with_the_targets_instruction():
    """A bf16 C goes out through vcvtneps2bf16 where the target has it (one instruction, not
    the ten of the exact software rounding; subnormal results flush to zero), a masked
    last vector included; AVX2 rounds in software, bit-equal to ml_dtypes."""
    asm = tpp.gemm(20, 40, 16, "bf16", b_vnni=True, beta=0.0, out_dtype="bf16", target="x86-avx512").asm
    assert "vcvtneps2bf16" in asm
    assert "vcvtneps2bf16" not in tpp.gemm(20, 40, 16, "bf16", beta=0.0, out_dtype="bf16", target="x86-avx2").asm
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((20, 16)).astype(BF16), rng.standard_normal((16, 40)).astype(BF16)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(BF16)
    for target in [t for t in ("x86-avx512", "x86-avx2") if runs(t)]:
        g = tpp.gemm(20, 40, 16, "bf16", beta=0.0, out_dtype="bf16", target=target)
        got = g(a, b, np.zeros((20, 40), BF16))
        err = np.abs(got.astype(np.float32) - want.astype(np.float32)).max()
        assert err <= 2e-2 * np.abs(want.astype(np.float32)).max(), target


def test_bf16_rejects_what_it_does_not_offer():
    with pytest.raises(tpp.DescriptorError, match="b_vnni and trans_b exclude each other"):
        tpp.gemm(4, 4, 4, "bf16", trans_b=True, b_vnni=True)
    with pytest.raises(tpp.DescriptorError, match="for bf16 and int8 inputs"):
        tpp.gemm(4, 4, 4, "f32", b_vnni=True)
    with pytest.raises(tpp.DTypeError, match="out_dtype"):
        tpp.gemm(4, 4, 4, "f32", out_dtype="bf16")


# ---- int8: u8 x s8 -> s32 ------------------------------------------------------------------
@pytest.mark.parametrize("target", X86)   # vpdpbusd (AVX-512 / AVX-VNNI) or widening
@pytest.mark.parametrize("b_vnni", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (16, 16, 16), (64, 64, 64), (17, 35, 9), (33, 16, 70), (4, 4, 6)])
def test_int8_gemm_is_exact(m, n, k, beta, b_vnni, target, rng):
    g = tpp.gemm(m, n, k, "u8s8", beta=beta, b_vnni=b_vnni, target=target)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    b_arg = tpp.unary("vnni_pack", k, n, "i8")(b) if b_vnni else b
    c = rng.integers(-1000, 1000, (m, n)).astype(np.int32)
    expected = int(beta) * c.astype(np.int64) + a.astype(np.int64) @ b.astype(np.int64)
    assert np.array_equal(require(g)(a, b_arg, c), expected)


def test_int8_codegen_uses_vpdpbusd():
    assert "vpdpbusd" in tpp.gemm(64, 64, 64, "u8s8", b_vnni=True, target="x86-avx512").asm


@pytest.mark.parametrize("k,n", [(1, 1), (4, 16), (7, 37), (6, 5)])
def test_vnni4_pack_layout(k, n, rng):
    x = rng.integers(-128, 128, (k, n)).astype(np.int8)
    packed = tpp.unary("vnni_pack", k, n, "i8")(x)
    groups = -(-k // 4)
    assert packed.shape == (groups, 4 * n)
    back = packed.reshape(groups, n, 4).transpose(0, 2, 1).reshape(-1, n)
    assert np.array_equal(back[:k], x) and not back[k:].any()


# ---- transposed operands of the dot kernels (transposed into a buffer by the kernel) -------
@pytest.mark.parametrize("dtype", ["bf16", "u8s8"])
@pytest.mark.parametrize("trans_a,trans_b", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (17, 35, 9), (33, 16, 70), (64, 64, 64), (100, 90, 301)])
def test_dot_kernels_take_transposed_operands(dtype, trans_a, trans_b, target, m, n, k, rng):
    g = tpp.gemm(m, n, k, dtype, trans_a=trans_a, trans_b=trans_b, target=target)
    if dtype == "bf16":     # small integers: every sum is exact in f32
        a = rng.integers(-3, 4, (m, k)).astype(BF16)
        b = rng.integers(-3, 4, (k, n)).astype(BF16)
        c = rng.integers(-9, 10, (m, n)).astype(np.float32)
    else:
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        c = rng.integers(-1000, 1000, (m, n)).astype(np.int32)
    expected = c.astype(np.int64) + a.astype(np.int64) @ b.astype(np.int64)
    a_arg = np.ascontiguousarray(a.T) if trans_a else a
    b_arg = np.ascontiguousarray(b.T) if trans_b else b
    np.testing.assert_array_equal(g.reference(a_arg, b_arg, c), expected)
    np.testing.assert_array_equal(require(g)(a_arg, b_arg, c), expected)


# ---- fused epilogues -------------------------------------------------------------------------
EPILOGUES = [("bias",), ("relu",), ("bias", "relu"), ("bias", "residual", "gelu_tanh"), ("residual", "sigmoid"),
             ("tanh", "bias"), ("col_bias",), ("col_bias", "residual", "relu")]


@pytest.mark.parametrize("epilogue", EPILOGUES, ids="+".join)
@pytest.mark.parametrize("dtype,out_dtype", [("f32", "f32"), ("bf16", "f32"), ("bf16", "bf16")])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (17, 35, 9), (64, 64, 64)])
def test_fused_epilogue(epilogue, dtype, out_dtype, beta, m, n, k, rng):
    np_dt = {"f32": np.float32, "bf16": BF16}
    g = tpp.gemm(m, n, k, dtype, beta=beta, out_dtype=out_dtype, epilogue=epilogue)
    a = rng.uniform(-1, 1, (m, k)).astype(np_dt[dtype])
    b = rng.uniform(-1, 1, (k, n)).astype(np_dt[dtype])
    shapes = {"bias": (n,), "col_bias": (m, 1), "residual": (m, n)}
    extra = [rng.uniform(-1, 1, shapes[step]).astype(np_dt[out_dtype]) for step in epilogue if step in shapes]
    c = rng.uniform(-1, 1, (m, n)).astype(np_dt[out_dtype])
    ref = g.reference(a, b, *extra, c.astype(np.float64))
    got = g(a, b, *extra, c).astype(np.float64)
    # the sums round at f32 (k eps of the O(k) magnitudes); the activations add their
    # 2e-6 bound; a bf16 C adds its own rounding of the result
    rtol = 2.0 ** -8 if out_dtype == "bf16" else 1e-5
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=(k + 2) * 2.0 ** -22)


def test_col_bias_adds_one_value_per_row(rng):
    """col_bias (m x 1) is added along each row of C: C[i, :] += col_bias[i]."""
    a, b = rng.uniform(-1, 1, (19, 7)).astype(np.float32), rng.uniform(-1, 1, (7, 37)).astype(np.float32)
    col = rng.uniform(-1, 1, (19, 1)).astype(np.float32)
    got = require(tpp.gemm(19, 37, 7, beta=0.0, epilogue=("col_bias",)))(a, b, col, np.zeros((19, 37), np.float32))
    np.testing.assert_allclose(got, a.astype(np.float64) @ b + col, rtol=1e-5, atol=1e-5)


def test_epilogue_with_an_activation_has_no_calls():
    asm = tpp.gemm(32, 32, 32, epilogue=("bias", "gelu_tanh"), target="x86-avx512").asm
    assert "vfmadd231ps" in asm and "call" not in asm


@pytest.mark.parametrize("kwargs, message", [
    (dict(epilogue=("softmax",)), "epilogue step 'softmax'"),
    (dict(epilogue=("bias", "bias")), "may appear once"),
    (dict(dtype="u8s8", epilogue=("relu",)), "epilogues are for float GEMMs"),
])
def test_bad_epilogues(kwargs, message):
    with pytest.raises(tpp.DescriptorError, match=message):
        tpp.gemm(4, 4, 4, **kwargs)
