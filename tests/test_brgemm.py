"""BRGEMM TPP: C = beta C + sum_i op(A_i) op(B_i), in the stride, offset and
address variants, against the float64 reference (error bound as in test_gemm,
with k * batch products per element)."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tpp

from targets import X86, require

EPS = 2.0 ** -23


def stacks(rng, m, n, k, batch, trans_a=False, trans_b=False):
    a = rng.uniform(-1, 1, (batch,) + ((k, m) if trans_a else (m, k))).astype(np.float32)
    b = rng.uniform(-1, 1, (batch,) + ((n, k) if trans_b else (k, n))).astype(np.float32)
    return a, b


def call(br, a, b, c):
    """Run br on the stacks a, b through its variant's calling convention."""
    variant = br.descriptor.variant
    if variant == "stride":
        return br(a, b, c)
    if variant == "address":
        return br(list(a), list(b), c)
    order = np.arange(a.shape[0])[::-1]               # blocks in any order, from flat buffers
    a_off = order * (a.size // max(a.shape[0], 1))
    b_off = order * (b.size // max(b.shape[0], 1))
    return br(a.reshape(-1), b.reshape(-1), c, a_off, b_off)


def check(br, a, b, c, batch):
    c_before = c.astype(np.float64)
    got = call(br, a, b, c)
    assert got is c
    d = br.descriptor
    ref = d.reference(list(a), list(b), c_before)
    oa = np.abs(a.astype(np.float64))
    ob = np.abs(b.astype(np.float64))
    bound = d.beta * np.abs(c_before)
    for i in range(batch):
        bound = bound + (oa[i].T if d.trans_a else oa[i]) @ (ob[i].T if d.trans_b else ob[i])
    tol = (d.k * max(batch, 1) + 2) * EPS * bound + 1e-30
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= tol), f"max error {err.max():.3g}, bound there {tol.flat[np.argmax(err)]:.3g}"


@pytest.mark.parametrize("variant", ["stride", "offset", "address"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("m,n,k,batch", [(8, 8, 8, 4), (17, 35, 9, 3), (64, 64, 64, 16), (5, 3, 1, 1),
                                         (7, 9, 11, 0)])
def test_brgemm_matches_reference(variant, trans_a, trans_b, beta, m, n, k, batch, rng):
    br = tpp.brgemm(m, n, k, variant=variant, trans_a=trans_a, trans_b=trans_b, beta=beta)
    a, b = stacks(rng, m, n, k, batch, trans_a, trans_b)
    c = rng.uniform(-1, 1, (m, n)).astype(np.float32)
    check(br, a, b, c, batch)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 67), n=st.integers(1, 67), k=st.integers(1, 40), batch=st.integers(1, 5),
       variant=st.sampled_from(["stride", "offset", "address"]))
def test_brgemm_any_shape(m, n, k, batch, variant):
    rng = np.random.default_rng(m * 7919 + n * 31 + k + batch)
    br = tpp.brgemm(m, n, k, variant=variant)
    a, b = stacks(rng, m, n, k, batch)
    check(br, a, b, np.zeros((m, n), np.float32), batch)


def test_strided_views_of_bigger_stacks(rng):
    big_a = rng.uniform(-1, 1, (6, 20, 30)).astype(np.float32)
    big_b = rng.uniform(-1, 1, (3, 12, 40)).astype(np.float32)
    a, b = big_a[::2, 1:9, 2:12], big_b[:, 1:11, 3:19]          # (3, 8, 10), (3, 10, 16)
    c_parent = np.zeros((10, 20), np.float32)
    c = c_parent[1:9, 2:18]
    got = tpp.brgemm(8, 16, 10)(a, b, c)
    ref = sum(a[i].astype(np.float64) @ b[i] for i in range(3))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert not c_parent[0].any() and not c_parent[9].any(), "wrote outside the view of c"


def test_codegen_uses_vector_fmas():
    asm = tpp.brgemm(32, 32, 32, target="x86-avx512").asm
    assert "vfmadd231ps" in asm and "zmm" in asm


def test_bad_calls(rng):
    br = tpp.brgemm(4, 5, 6)
    a, b = stacks(rng, 4, 5, 6, 3)
    c = np.zeros((4, 5), np.float32)
    with pytest.raises(tpp.ShapeError, match="same batch"):
        br(a, b[:2], c)
    with pytest.raises(tpp.ShapeError, match="must have shapes"):
        br(a[:, :, :5], b, c)
    with pytest.raises(tpp.DTypeError, match="must have dtype"):
        br(a.astype(np.float64), b, c)
    with pytest.raises(tpp.ShapeError, match="3 dimensions"):
        br(a[0], b[0], c)
    overlap = np.zeros((3, 6, 6), np.float32)
    with pytest.raises(tpp.AliasError, match="overlaps"):
        tpp.brgemm(4, 6, 6)(overlap[:, :4, :], overlap.copy(), overlap[0, :4, :])


def test_offsets_are_bounds_checked(rng):
    br = tpp.brgemm(4, 5, 6, variant="offset")
    a, b = stacks(rng, 4, 5, 6, 2)
    c = np.zeros((4, 5), np.float32)
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    with pytest.raises(tpp.ShapeError, match="past the buffer"):
        br(flat_a, flat_b, c, np.array([0, flat_a.size - 5]), np.array([0, 0]))
    with pytest.raises(tpp.ShapeError, match="past the buffer"):
        br(flat_a, flat_b, c, np.array([-1, 0]), np.array([0, 0]))
    with pytest.raises(tpp.ShapeError, match="same length"):
        br(flat_a, flat_b, c, np.array([0]), np.array([0, 0]))
    with pytest.raises(TypeError, match="a_offsets, b_offsets"):
        br(flat_a, flat_b, c)


def test_address_blocks_share_one_row_stride(rng):
    br = tpp.brgemm(4, 5, 6, variant="address")
    a, b = stacks(rng, 4, 5, 6, 2)
    wide = np.zeros((4, 9), np.float32)[:, :6]
    with pytest.raises(tpp.ShapeError, match="share one row stride"):
        br([a[0], wide], list(b), np.zeros((4, 5), np.float32))
    with pytest.raises(TypeError, match="lists of the same length"):
        br([a[0]], list(b), np.zeros((4, 5), np.float32))


def test_bad_descriptors():
    with pytest.raises(tpp.DescriptorError, match="variant must be"):
        tpp.brgemm(4, 4, 4, variant="gather")
    with pytest.raises(tpp.DescriptorError, match="only for the stride variant"):
        tpp.brgemm(4, 4, 4, variant="offset", stride_a=16)


# ---- dtypes beyond f32, and the fused epilogue ------------------------------------------
BF16 = ml_dtypes.bfloat16


@pytest.mark.parametrize("variant", ["stride", "offset", "address"])
@pytest.mark.parametrize("out_dtype", ["f32", "bf16"])
@pytest.mark.parametrize("b_vnni", [False, True])
@pytest.mark.parametrize("target", X86)     # vdpbf16ps on AVX-512, the f32 fallback on AVX2
@pytest.mark.parametrize("m,n,k,batch", [(5, 19, 7, 3), (32, 32, 32, 4)])
def test_bf16_brgemm(variant, out_dtype, b_vnni, target, m, n, k, batch, rng):
    br = tpp.brgemm(m, n, k, "bf16", variant=variant, out_dtype=out_dtype, b_vnni=b_vnni, target=target)
    a, b = (x.astype(BF16) for x in stacks(rng, m, n, k, batch))
    pack = tpp.unary("vnni_pack", k, n, "bf16")
    b_arg = np.stack([pack(bi) for bi in b]) if b_vnni else b
    c = rng.uniform(-1, 1, (m, n)).astype(np.float32 if out_dtype == "f32" else BF16)
    c_before = c.astype(np.float64)
    got = call(require(br), a, b_arg, c)
    ref = sum(a[i].astype(np.float64) @ b[i].astype(np.float64) for i in range(batch)) + c_before
    bound = sum(np.abs(a[i].astype(np.float64)) @ np.abs(b[i].astype(np.float64)) for i in range(batch))
    # bf16 x bf16 products are exact in f32; only the f32 sums (and a bf16 C) round
    tol = (k * batch + 2) * 2.0 ** -23 * (bound + np.abs(c_before))
    if out_dtype == "bf16":
        tol = tol + 2.0 ** -8 * np.abs(ref)
    assert np.all(np.abs(got.astype(np.float64) - ref) <= tol + 1e-30)
    np.testing.assert_allclose(br.reference(list(a), list(b_arg), c_before), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["stride", "offset", "address"])
@pytest.mark.parametrize("b_vnni", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_int8_brgemm_is_exact(variant, b_vnni, beta, rng):
    m, n, k, batch = 9, 21, 13, 3
    br = tpp.brgemm(m, n, k, "u8s8", variant=variant, b_vnni=b_vnni, beta=beta)
    a = rng.integers(0, 256, (batch, m, k), dtype=np.uint8)
    b = rng.integers(-128, 128, (batch, k, n), dtype=np.int8)
    pack = tpp.unary("vnni_pack", k, n, "i8")
    b_arg = np.stack([pack(bi) for bi in b]) if b_vnni else b
    c = rng.integers(-1000, 1000, (m, n), dtype=np.int32)
    ref = beta * c.astype(np.int64) + sum(a[i].astype(np.int64) @ b[i] for i in range(batch))
    np.testing.assert_array_equal(call(br, a, b_arg, c), ref)


def test_f64_brgemm(rng):
    a, b = rng.uniform(-1, 1, (3, 6, 7)), rng.uniform(-1, 1, (3, 7, 10))
    c = np.zeros((6, 10))
    np.testing.assert_allclose(tpp.brgemm(6, 10, 7, "f64")(a, b, c), np.einsum("bik,bkj->ij", a, b),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("variant", ["stride", "offset", "address"])
@pytest.mark.parametrize("epilogue", [("bias",), ("residual",), ("bias", "relu"),
                                      ("bias", "residual", "gelu_tanh")])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_fused_epilogue(variant, epilogue, beta, rng):
    m, n, k, batch = 17, 40, 9, 4
    br = tpp.brgemm(m, n, k, variant=variant, beta=beta, epilogue=epilogue)
    a, b = stacks(rng, m, n, k, batch)
    inputs = {"bias": rng.uniform(-1, 1, n).astype(np.float32),
              "residual": rng.uniform(-1, 1, (24, 48)).astype(np.float32)[3:3 + m, 5:5 + n]}  # a view
    extras = [inputs[step] for step in epilogue if step in inputs]
    c = rng.uniform(-1, 1, (m, n)).astype(np.float32)
    acc = beta * c.astype(np.float64) + sum(a[i].astype(np.float64) @ b[i] for i in range(batch))
    ref = br.reference(list(a), list(b), *extras, c.astype(np.float64))
    if variant == "stride":
        got = br(a, b, *extras, c)
    elif variant == "address":
        got = br(list(a), list(b), *extras, c)
    else:
        offs = np.arange(batch)
        got = br(a.reshape(-1), b.reshape(-1), *extras, c, offs * m * k, offs * k * n)
    assert got is c
    if epilogue == ("bias", "relu"):          # the reference itself, checked once by hand
        np.testing.assert_allclose(ref, np.maximum(acc + inputs["bias"], 0), rtol=1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_epilogue_calls_are_checked(rng):
    br = tpp.brgemm(4, 5, 6, beta=0.0, epilogue=("bias", "residual"))
    a, b = stacks(rng, 4, 5, 6, 2)
    c = np.zeros((4, 5), np.float32)
    bias, res = np.zeros(5, np.float32), np.zeros((4, 5), np.float32)
    with pytest.raises(TypeError, match=r"br\(a, b, bias, residual, c\)"):
        br(a, b, c)
    with pytest.raises(tpp.ShapeError, match="argument 'bias'"):
        br(a, b, np.zeros(4, np.float32), res, c)
    with pytest.raises(tpp.DTypeError, match="argument 'residual'"):
        br(a, b, bias, res.astype(np.float64), c)
    with pytest.raises(tpp.AliasError, match="'c' overlaps 'residual'"):
        br(a, b, bias, c, c)


def test_dtype_errors_name_brgemm(rng):
    with pytest.raises(tpp.DescriptorError, match="tpp brgemm: epilogues are for float"):
        tpp.brgemm(4, 4, 4, "u8s8", epilogue=("relu",))
    br = tpp.brgemm(4, 5, 6, "u8s8")
    a = rng.integers(0, 9, (2, 4, 6), dtype=np.uint8)
    with pytest.raises(tpp.DTypeError, match="argument 'b' must have dtype int8"):
        br(a, np.zeros((2, 6, 5), np.uint8), np.zeros((4, 5), np.int32))


@pytest.mark.parametrize("dtype", ["f32", "bf16", "u8s8"])
def test_transposes_when_the_buffer_cannot_be_allocated(dtype, run_python):
    """Transposed operands are transposed into a malloc'ed buffer; when malloc fails (here:
    an address-space limit below the ~1 GB it asks for) the kernel reads them in place
    (gathers, scalar loads) and still computes the right result."""
    code = """
import resource, sys
import ml_dtypes
import numpy as np
import tpp
dtype = sys.argv[1]
m, n, k = 3, 17, 5
count = 1 << 21                      # ~0.5-1 GB of transposed blocks
trans_a = dtype != "f32"             # f32 reads A^T in place anyway
br = tpp.brgemm(m, n, k, dtype, trans_a=trans_a, trans_b=True, beta=0.0, variant="offset")
rng = np.random.default_rng(5)
a = rng.integers(0 if dtype == "u8s8" else -1, 2, (m, k))
b = rng.integers(-1, 2, (k, n))
np_a, np_b, np_c = {"f32": (np.float32,) * 3, "bf16": (ml_dtypes.bfloat16,) * 2 + (np.float32,),
                    "u8s8": (np.uint8, np.int8, np.int32)}[dtype]
a_arg = np.ascontiguousarray(a.T if trans_a else a).astype(np_a)
b_arg = np.ascontiguousarray(b.T).astype(np_b)
zeros = np.zeros(count, np.int64)
c = np.zeros((m, n), np_c)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (400 << 20), hard))
try:
    np.empty(500 << 20, np.uint8)
    raise SystemExit("the limit does not stop a 500 MB allocation")
except MemoryError:
    pass
br(a_arg.reshape(-1), b_arg.reshape(-1), c, zeros, zeros)
# every entry is the same A B; sums of small integers are exact (< 2^24 in f32)
np.testing.assert_array_equal(c, count * (a @ b))
print("ok")
"""
    assert run_python(code, dtype).check().stdout.strip() == "ok"


@pytest.mark.parametrize("dtype", ["bf16", "u8s8"])
@pytest.mark.parametrize("trans_a,trans_b", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("variant", ["stride", "offset", "address"])
def test_dot_kernels_take_transposed_blocks(dtype, trans_a, trans_b, variant, rng):
    m, n, k, batch = 19, 33, 11, 3
    br = tpp.brgemm(m, n, k, dtype, variant=variant, trans_a=trans_a, trans_b=trans_b)
    if dtype == "bf16":     # small integers: every sum is exact in f32
        a = rng.integers(-3, 4, (batch, m, k)).astype(BF16)
        b = rng.integers(-3, 4, (batch, k, n)).astype(BF16)
        c = rng.integers(-9, 10, (m, n)).astype(np.float32)
    else:
        a = rng.integers(0, 256, (batch, m, k)).astype(np.uint8)
        b = rng.integers(-128, 128, (batch, k, n)).astype(np.int8)
        c = rng.integers(-1000, 1000, (m, n)).astype(np.int32)
    expected = c.astype(np.int64) + sum(a[i].astype(np.int64) @ b[i] for i in range(batch))
    a_arg = np.ascontiguousarray(a.transpose(0, 2, 1)) if trans_a else a
    b_arg = np.ascontiguousarray(b.transpose(0, 2, 1)) if trans_b else b
    np.testing.assert_array_equal(call(br, a_arg, b_arg, c), expected)
