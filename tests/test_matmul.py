"""tpp.ops.matmul: the first composite (pack + BRGEMM loop nest on the worker pool)."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tpp
from tpp.ops import MatmulPlan, matmul


def bound(a, b, k):
    return (k + 2) * 2.0 ** -23 * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (17, 35, 9), (64, 64, 64), (57, 65, 257), (300, 130, 513),
                                   (129, 1, 300), (1, 200, 70)])
def test_matmul_matches_numpy(m, n, k, rng):
    a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    got = matmul(a, b)
    assert got.shape == (m, n) and got.dtype == np.float32
    assert np.all(np.abs(got - a.astype(np.float64) @ b) <= bound(a, b, k))


@settings(max_examples=20)
@given(m=st.integers(1, 260), n=st.integers(1, 200), k=st.integers(1, 300), threads=st.sampled_from([1, 2]),
       pad=st.integers(0, 9), seed=st.integers(0, 2**32 - 1))
def test_default_plans_at_any_size(m, n, k, threads, pad, seed):
    # the default plan's single K chunk is K rounded up to the B strip: every K mod 8
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (m, k + pad)).astype(np.float32)[:, :k]     # row stride k + pad
    b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    got = matmul(a, b, threads=threads)
    assert np.all(np.abs(got - a.astype(np.float64) @ b) <= bound(a, b, k))


def test_views_and_out(rng):
    pa = rng.uniform(-1, 1, (90, 150)).astype(np.float32)
    pb = rng.uniform(-1, 1, (140, 100)).astype(np.float32)
    a, b = pa[5:75, 3:133], pb[2:132, 10:90]          # 70 x 130 @ 130 x 80, row strides > widths
    parent = np.zeros((80, 96), np.float32)
    out = parent[3:73, 8:88]
    assert matmul(a, b, out=out) is out
    assert np.all(np.abs(out - a.astype(np.float64) @ b) <= bound(a, b, 130))
    assert not parent[:3].any() and not parent[:, :8].any() and not parent[73:].any()


@pytest.mark.parametrize("plan", [MatmulPlan(), MatmulPlan(28, 32, 64), MatmulPlan(56, 64, 128, ("nb", "mb")),
                                  MatmulPlan(112, 16, 512), MatmulPlan(28, 32, 64, a_layout="blocks"),
                                  MatmulPlan(56, 64, 128, ("nb", "mb"), a_layout="in_place"),
                                  MatmulPlan(36, 16, 64, a_layout="rows", b_strip=8)])
def test_retiling_changes_only_the_plan(plan, rng):
    a = rng.uniform(-1, 1, (150, 200)).astype(np.float32)
    b = rng.uniform(-1, 1, (200, 90)).astype(np.float32)
    assert np.all(np.abs(matmul(a, b, plan=plan) - a.astype(np.float64) @ b) <= bound(a, b, 200))


@pytest.mark.parametrize("plan", [MatmulPlan(28, 32, 40, b_strip=8), MatmulPlan(14, 16, 24, a_layout="blocks"),
                                  MatmulPlan(42, 32, 24, a_layout="panels", b_strip=3),
                                  MatmulPlan(18, 16, 24, a_layout="rows", b_strip=8)])
def test_pack_strips_and_layouts_at_odd_sizes(plan, rng):
    # K = 97 leaves a short last strip of B and a short last K chunk
    a = rng.uniform(-1, 1, (45, 97)).astype(np.float32)
    b = rng.uniform(-1, 1, (97, 75)).astype(np.float32)
    assert np.all(np.abs(matmul(a, b, plan=plan) - a.astype(np.float64) @ b) <= bound(a, b, 97))


def test_plan_checks_the_strip():
    with pytest.raises(ValueError, match="b_strip must divide kb"):
        MatmulPlan(kb=40, b_strip=16)


def test_a_remembered_geometry_still_checks_each_call(rng):
    a = rng.uniform(-1, 1, (6, 6)).astype(np.float32)
    b = rng.uniform(-1, 1, (6, 6)).astype(np.float32)
    out = np.empty((6, 6), np.float32)
    matmul(a, b, out=out)                   # validated once; the same geometry again:
    with pytest.raises(tpp.AliasError, match="overlaps"):
        matmul(a, b, out=b)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        matmul(a, b, out=out)
    raw = np.zeros(6 * 6 * 4 + 2, np.uint8)
    odd = raw[2:].view(np.float32).reshape(6, 6)          # same shape and strides, misaligned
    with pytest.raises(tpp.ShapeError, match="aligned"):
        matmul(a, b, out=odd)
    np.testing.assert_allclose(matmul(a, b, out=np.empty((6, 6), np.float32)), a @ b, rtol=1e-5, atol=1e-6)


def test_repeated_calls_reuse_only_the_argument_table(rng):
    # the same arrays again take the remembered table; new contents, other shapes in
    # between and a read-only out are still seen
    a = rng.uniform(-1, 1, (70, 90)).astype(np.float32)
    b = rng.uniform(-1, 1, (90, 40)).astype(np.float32)
    out = np.empty((70, 40), np.float32)
    for _ in range(2):
        np.testing.assert_allclose(matmul(a, b, out=out), a @ b, rtol=1e-5, atol=1e-5)
        a *= -2
    other = rng.uniform(-1, 1, (30, 20)).astype(np.float32)
    np.testing.assert_allclose(matmul(other, other.T.copy()), other @ other.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(matmul(a, b, out=out), a @ b, rtol=1e-5, atol=1e-5)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        matmul(a, b, out=out)


def test_no_memory_for_a_panels_raises(run_python):
    # each thread's A panels are malloc'ed by the compute nest: a failure must become
    # MemoryError, not a crash (the packed B, 64 MB, still fits under the limit). The plan
    # is AVX-512's default for this shape, forced: AVX2's reads A in place (no panels).
    code = """
import resource, numpy as np, tpp.ops
a = np.ones((56, 1 << 19), np.float32); b = np.ones((1 << 19, 1), np.float32)
plan = tpp.ops.MatmulPlan(mb=56, nb=32, kb=1 << 19, a_layout="panels", b_strip=8)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (90 << 20), hard))
try:
    tpp.ops.matmul(a, b, threads=1, plan=plan)
except MemoryError as e:
    print("MemoryError", "each thread copies" in str(e))
"""
    assert run_python(code).check().stdout.strip() == "MemoryError True"


def test_one_and_two_threads_agree(rng):
    a = rng.uniform(-1, 1, (257, 190)).astype(np.float32)
    b = rng.uniform(-1, 1, (190, 300)).astype(np.float32)
    assert np.array_equal(matmul(a, b, threads=1), matmul(a, b, threads=2))


def test_fused_epilogue(rng):
    a = rng.uniform(-1, 1, (70, 300)).astype(np.float32)
    b = rng.uniform(-1, 1, (300, 50)).astype(np.float32)
    bias = rng.uniform(-1, 1, 50).astype(np.float32)
    residual = rng.uniform(-1, 1, (70, 50)).astype(np.float32)
    got = matmul(a, b, epilogue=("bias", "residual", "relu"), bias=bias, residual=residual)
    ref = np.maximum(a.astype(np.float64) @ b + bias + residual, 0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


def test_other_dtypes(rng):
    a = rng.uniform(-1, 1, (60, 70))
    b = rng.uniform(-1, 1, (70, 40))
    np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)        # f64
    ab, bb = a.astype(ml_dtypes.bfloat16), b.astype(ml_dtypes.bfloat16)
    got = matmul(ab, bb)                                                             # bf16 -> f32
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ab.astype(np.float64) @ bb.astype(np.float64), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("m,n,k,threads", [(1, 1, 1, 1), (37, 70, 37, 1), (130, 33, 1100, 2), (60, 95, 1030, 1),
                                           (240, 64, 2050, 2)])
def test_bf16_packs_b_in_pairs_at_any_depth(m, n, k, threads, rng):
    # small integers: every product and sum is exact in the f32 accumulators. Odd K
    # pads the last pair; K past 1024 makes 2 KB K chunks with a short last one.
    a = rng.integers(-3, 4, (m, k)).astype(ml_dtypes.bfloat16)
    b = rng.integers(-3, 4, (k, n)).astype(ml_dtypes.bfloat16)
    got = matmul(a, b, threads=threads)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, a.astype(np.float64) @ b.astype(np.float64))


def test_bf16_plans_pack_whole_pairs(rng):
    a = rng.integers(-3, 4, (45, 97)).astype(ml_dtypes.bfloat16)
    b = rng.integers(-3, 4, (97, 75)).astype(ml_dtypes.bfloat16)
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(matmul(a, b, plan=MatmulPlan(28, 32, 40, a_layout="blocks", b_strip=8)), want)
    with pytest.raises(ValueError, match="b_strip must be a multiple of 2"):
        matmul(a, b, plan=MatmulPlan(42, 32, 24, a_layout="blocks", b_strip=3))


@settings(max_examples=25)
@given(m=st.integers(1, 150), n=st.integers(1, 120), k=st.integers(1, 140), trans_a=st.booleans(),
       trans_b=st.booleans(), dtype=st.sampled_from(["f32", "f64", "bf16"]), threads=st.sampled_from([1, 2]),
       pad=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))
def test_transposed_views_are_read_as_stored(m, n, k, trans_a, trans_b, dtype, threads, pad, seed):
    # x.T / w.T of C-order arrays (the Linear layer's x @ w.T), with padded row strides:
    # read in place or packed by transposing, never copied by numpy first. Small
    # integers: every dtype's product is exact.
    rng = np.random.default_rng(seed)
    np_type = {"f32": np.float32, "f64": np.float64, "bf16": ml_dtypes.bfloat16}[dtype]
    a = rng.integers(-3, 4, (m, k)).astype(np_type)
    b = rng.integers(-3, 4, (k, n)).astype(np_type)

    def stored(x, transposed):
        if not transposed:
            return x
        held = np.zeros((x.shape[1], x.shape[0] + pad), np_type)[:, :x.shape[0]]
        held[...] = x.T
        return held.T
    got = matmul(stored(a, trans_a), stored(b, trans_b), threads=threads)
    np.testing.assert_array_equal(got, a.astype(np.float64) @ b.astype(np.float64))


@pytest.mark.parametrize("plan", [MatmulPlan(28, 32, 40, a_layout="panels", b_strip=8),
                                  MatmulPlan(14, 16, 24, a_layout="blocks", b_strip=8),
                                  MatmulPlan(56, 64, 128, ("nb", "mb"), a_layout="in_place", b_strip=16),
                                  MatmulPlan(42, 32, 24, a_layout="in_place", b_strip=8),
                                  MatmulPlan(30, 16, 40, a_layout="rows", b_strip=8)])
def test_transposed_views_under_every_layout(plan, rng):
    a = rng.uniform(-1, 1, (97, 45)).astype(np.float32).T         # 45 x 97, stored by columns
    b = rng.uniform(-1, 1, (75, 97)).astype(np.float32).T         # 97 x 75
    assert np.all(np.abs(matmul(a, b, plan=plan) - a.astype(np.float64) @ b) <= bound(a, b, 97))


def test_operands_strided_both_ways_are_refused(rng):
    a = rng.uniform(-1, 1, (40, 60)).astype(np.float32)
    with pytest.raises(tpp.ShapeError, match="unit element stride"):
        matmul(a[::2, ::2], a[:30, :10])


def test_empty_dimensions_give_numpys_answers(rng):
    a = rng.uniform(-1, 1, (7, 0)).astype(np.float32)
    b = rng.uniform(-1, 1, (0, 5)).astype(np.float32)
    bias = rng.uniform(-1, 1, 5).astype(np.float32)
    np.testing.assert_array_equal(matmul(a, b), np.zeros((7, 5), np.float32))      # K = 0: zeros
    got = matmul(a, b, epilogue=("bias", "relu"), bias=bias)                       # ... then the epilogue
    np.testing.assert_array_equal(got, np.broadcast_to(np.maximum(bias, 0), (7, 5)))
    assert matmul(np.zeros((0, 4), np.float32), np.zeros((4, 3), np.float32)).shape == (0, 3)
    out = np.zeros((6, 0))
    assert matmul(np.zeros((6, 4)), np.zeros((4, 0)), out=out) is out
    with pytest.raises(tpp.ShapeError, match=r"out must be a \(6, 0\) float64"):
        matmul(np.zeros((6, 4)), np.zeros((4, 0)), out=np.zeros((6, 1)))
    with pytest.raises(tpp.DTypeError, match="'b' must have dtype float32"):
        matmul(a, b.astype(np.float64))


def test_bad_dtypes_and_thread_counts(rng):
    a = rng.uniform(-1, 1, (20, 30)).astype(np.float32)
    b = rng.uniform(-1, 1, (30, 10)).astype(np.float32)
    with pytest.raises(tpp.DTypeError, match="tpp.ops.matmul: dtype int32 is not supported"):
        matmul(a.astype(np.int32), b.astype(np.int32))
    for threads in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive int"):
            matmul(a, b, threads=threads)


def test_bad_input(rng):
    a = rng.uniform(-1, 1, (4, 5)).astype(np.float32)
    with pytest.raises(tpp.ShapeError, match="inner dimensions differ"):
        matmul(a, a)
    with pytest.raises(tpp.ShapeError, match="2-D"):
        matmul(a[0], a.T)
    with pytest.raises(tpp.DTypeError, match="argument 'b' must have dtype float32"):
        matmul(a, a.T.astype(np.float64))
    with pytest.raises(tpp.AliasError, match="overlaps"):
        sq = rng.uniform(-1, 1, (5, 5)).astype(np.float32)
        matmul(sq, sq.copy(), out=sq)
    with pytest.raises(TypeError, match="numpy arrays"):
        matmul([[1.0]], a)


def test_avx2_copies_long_rows_of_a_per_thread():
    # without embedded broadcasts, rows of A over 4 KB go into per-thread Kb-wide copies
    from tpp.jit import host
    from tpp.jit.types import DType
    from tpp.ops.matmul_plan import _plan_for
    l1 = host.CacheGeometry(sets=64, ways=8, line=64)
    avx2, avx512 = tpp.Target.named("x86-avx2"), tpp.Target.named("x86-avx512")
    plan = _plan_for(avx2, l1, DType.F32, 2048, 2048, 2048, 2048, 1, False, False)
    assert (plan.a_layout, plan.mb, plan.kb) == ("rows", 96, 512)
    assert _plan_for(avx2, l1, DType.F32, 1024, 1024, 1024, 1024, 1, False, False).a_layout == "in_place"
    assert _plan_for(avx512, l1, DType.F32, 2048, 2048, 2048, 2048, 1, False, False).a_layout == "panels"


@pytest.mark.parametrize("threads", [1, 2])
def test_rows_layout_with_several_chunks_and_edges(threads, rng):
    # 3 K chunks (the last short), a short last block row and a narrow last column block
    a = rng.uniform(-1, 1, (100, 1100)).astype(np.float32)
    b = rng.uniform(-1, 1, (1100, 40)).astype(np.float32)
    plan = MatmulPlan(30, 16, 512, a_layout="rows", b_strip=8)
    got = matmul(a, b, plan=plan, threads=threads)
    assert np.all(np.abs(got - a.astype(np.float64) @ b) <= bound(a, b, 1100))
