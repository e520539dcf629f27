"""Code generation for every target on any host: kernels compile for both x86
targets (built as "not runnable here" copies, so nothing is linked), the
assembly shows the vectorisation (zmm and mask registers on AVX-512, ymm only
on AVX2) and no library calls; target selection; and the AVX2 code computing
correct results on this machine."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tpp
from tpp.kernels import unary as unary_k

from targets import X86, compile_only, skip_unless_runs
from tensors import REMAINDER_SHAPE, uniform, values
from tolerances import DTYPES, EXACT, TRANSC, assert_close, tolerance

# the kinds computed by vector approximations (f32/bf16 only), from the catalog
TRANSCENDENTAL = [k for k, spec in unary_k.KINDS.items() if spec.dtypes == unary_k.TRANSC and k != "cast"]
REDUCTIONS = ["reduce_sum", "reduce_sumsq", "reduce_max", "reduce_min"]


def unary_kwargs(kind: str, dt: str) -> dict:
    if kind in REDUCTIONS:
        return {"axis": 1}
    if kind == "cast":
        return {"out_dtype": "bf16" if dt == "f32" else "f32"}
    return {}


def kernel_for(kind: str, dt: str, target, shape=REMAINDER_SHAPE):
    if kind in tpp.BINARY_KINDS:
        return tpp.binary(kind, *shape, dtype=dt, broadcast="row", target=target)
    return tpp.unary(kind, *shape, dtype=dt, target=target, **unary_kwargs(kind, dt))


def kernel_body(k) -> str:
    """The assembly of the kernel function itself (its label up to .Lfunc_end)."""
    asm = k.asm
    start = asm.index(f"{k.symbol}:")
    end = asm.find(".Lfunc_end", start)
    return asm[start:end if end > 0 else None]


def instructions(body: str) -> list[str]:
    return [ln.strip() for ln in body.splitlines()
            if ln.strip() and not ln.strip().startswith((".", "#")) and not ln.strip().endswith(":")]


def _all_kinds():
    out = []
    for dt in ("f32", "bf16", "f64"):
        for kind in tpp.UNARY_KINDS + tpp.BINARY_KINDS:
            if dt == "f64" and (kind in TRANSCENDENTAL or kind == "cast"):
                continue
            if kind == "vnni_pack" and dt != "bf16":      # a bf16 GEMM operand layout only
                continue
            out.append((kind, dt))
    return out


# ---- every target covers every kind ---------------------------------------------------------
@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("kind, dt", _all_kinds(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_kind_compiles_without_calls(target, kind, dt):
    """Every kind and dtype compiles for every target into straight vector code: the
    kernel calls nothing (no libm expf/tanhf, no compiler-rt helper such as
    __truncsfbf2, which a JIT cannot link)."""
    k = kernel_for(kind, dt, compile_only(target))
    assert k.target.name == target
    calls = [ins for ins in instructions(kernel_body(k)) if re.match(r"call|jmp\s+\w*@PLT", ins)]
    assert not calls, f"{kind} {dt} on {target} calls out: {calls}"


@pytest.mark.parametrize("target", X86)
@pytest.mark.parametrize("kind", TRANSCENDENTAL)
def test_transcendentals_do_not_call_libm(target, kind):
    asm = kernel_for(kind, "f32", compile_only(target)).asm
    assert not re.search(r"\b(call|jmp)\w*\s+\S*(exp|log|tanh|erf|pow)f?\b", asm), asm
    assert not re.search(r"\b(expf|logf|tanhf|erff|erfcf|expm1f)\b", asm)


# ---- the instructions that prove vectorisation --------------------------------------------------
VECTOR_KINDS = [("relu", "f32"), ("exp", "f32"), ("gelu_erf", "bf16"), ("add", "f32"), ("div", "f64"),
                ("reduce_sum", "f32"), ("reduce_max", "bf16"), ("transpose", "f32"), ("cast", "f32")]


@pytest.mark.parametrize("kind, dt", VECTOR_KINDS)
def test_avx512_uses_zmm_and_masked_remainders(kind, dt):
    asm = kernel_for(kind, dt, compile_only("x86-avx512"), shape=(7, 37)).asm
    assert "zmm" in asm, f"{kind}: no zmm register on AVX-512"
    assert re.search(r"\{%k[1-7]\}", asm), f"{kind}: no masked move for the 37 % lanes remainder"


@pytest.mark.parametrize("kind, dt", VECTOR_KINDS)
def test_avx2_uses_ymm_and_never_zmm(kind, dt):
    asm = kernel_for(kind, dt, compile_only("x86-avx2"), shape=(7, 37)).asm
    assert "ymm" in asm, f"{kind}: no ymm register on AVX2"
    assert "zmm" not in asm and not re.search(r"\{%k\d\}", asm), f"{kind}: AVX-512 code in an AVX2 kernel"
    assert not re.search(r"%[xy]mm(1[6-9]|2\d|3[01])\b", asm), f"{kind}: EVEX-only register on AVX2"


def test_kernels_expose_their_ir_and_asm():
    k = tpp.unary("relu", 5, 19)
    assert f"define void @{k.symbol}" in k.ir.replace('"', "")
    assert f"{k.symbol}:" in k.asm
    assert k.descriptor.kind == "relu" and "relu" in repr(k)


# ---- target selection --------------------------------------------------------------------------
def test_target_argument_and_config_override():
    assert tpp.unary("relu", 3, 5, target="x86-avx2").target.name == "x86-avx2"
    with tpp.config.override(target="x86-avx2"):
        assert tpp.current_target().name == "x86-avx2"
        assert tpp.unary("relu", 3, 6).target.name == "x86-avx2"
    assert tpp.unary("relu", 3, 6).target == tpp.current_target()


def test_tpp_target_environment_variable(run_python):
    ran = run_python("import tpp; print(tpp.current_target().name, tpp.unary('exp', 3, 5).target.name)",
                     env={"TPP_TARGET": "x86-avx2"}).check()
    assert ran.stdout.split() == ["x86-avx2", "x86-avx2"]


def test_kernel_for_a_foreign_target_refuses_to_run():
    k = tpp.unary("relu", 3, 7, target=compile_only("x86-avx512"))
    with pytest.raises(tpp.TargetError, match="cannot run"):
        k(np.zeros((3, 7), np.float32))


# ---- AVX2 code runs correctly here -------------------------------------------------------------
needs_avx2 = skip_unless_runs("x86-avx2")
AVX2_UNARY = [("relu", EXACT), ("sqrt", EXACT), ("exp", TRANSC), ("log", TRANSC), ("tanh", TRANSC),
              ("sigmoid", TRANSC), ("gelu_tanh", TRANSC), ("gelu_erf", TRANSC)]


@needs_avx2
@pytest.mark.parametrize("kind, accuracy", AVX2_UNARY)
@pytest.mark.parametrize("shape", [(1, 1), (7, 37), (33, 65)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_avx2_unary_is_correct(kind, accuracy, shape, rng):
    domain = uniform(0.01, 100) if kind in ("sqrt", "log") else uniform(-8, 8)
    x = values(domain, rng, shape, np.float32)
    k = tpp.unary(kind, *shape, target="x86-avx2")
    assert_close(k(x), k.reference(x), tolerance(accuracy, np.float32), inputs=[x], what=f"avx2 {kind}")


@needs_avx2
@pytest.mark.parametrize("kind, modes, dt", [("add", ("none", "row"), "f32"), ("div", ("col", "none"), "f64"),
                                             ("max", ("none", "scalar"), "f32")])
def test_avx2_binary_is_correct(kind, modes, dt, rng):
    dtype = DTYPES[dt]
    k = tpp.binary(kind, 33, 65, dtype=dt, broadcast=modes, target="x86-avx2")
    shapes_ = {"none": (33, 65), "row": (65,), "col": (33, 1), "scalar": ()}
    a, b = (values(uniform(0.5, 4), rng, shapes_[m], dtype) for m in modes)
    assert_close(k(a, b), k.reference(a, b), tolerance(EXACT, dtype), inputs=[a, b], what=f"avx2 {kind}")


@needs_avx2
@pytest.mark.parametrize("axis", [1, 0])
def test_avx2_reductions_and_transpose_are_correct(axis, rng):
    x = rng.integers(-5, 6, (33, 65)).astype(np.float32)
    s = tpp.unary("reduce_sum", 33, 65, axis=axis, target="x86-avx2")(x)
    np.testing.assert_array_equal(s, x.sum(axis=axis))          # small integers: exact
    vals, idx = tpp.unary("reduce_max", 33, 65, axis=axis, argidx=True, target="x86-avx2")(x)
    np.testing.assert_array_equal(vals, x.max(axis=axis))
    np.testing.assert_array_equal(idx, x.argmax(axis=axis))
    np.testing.assert_array_equal(tpp.unary("transpose", 33, 65, target="x86-avx2")(x), x.T)


AVX2_BF16_SCRIPT = """
import ml_dtypes, numpy as np, tpp
bf16 = ml_dtypes.bfloat16
rng = np.random.default_rng(7)
x = rng.uniform(-8, 8, (7, 37)).astype(np.float32)
xb = x.astype(bf16)
print("cast f32 -> bf16", flush=True)
got = tpp.unary("cast", 7, 37, dtype="f32", out_dtype="bf16", target="x86-avx2")(x)
assert np.array_equal(got.view(np.uint16), xb.view(np.uint16)), "cast f32 -> bf16"
print("cast bf16 -> f32", flush=True)
got = tpp.unary("cast", 7, 37, dtype="bf16", out_dtype="f32", target="x86-avx2")(xb)
assert np.array_equal(got, xb.astype(np.float32)), "cast bf16 -> f32"
for kind in ("relu", "exp", "gelu_erf"):
    print(kind, flush=True)
    k = tpp.unary(kind, 7, 37, dtype="bf16", target="x86-avx2")
    ref = k.reference(xb)
    got = k(xb).astype(np.float64)
    assert np.all(np.abs(got - ref) <= 2 ** -8 * np.abs(ref) + 1e-6), kind
print("add", flush=True)
got = tpp.binary("add", 7, 37, dtype="bf16", broadcast="row", target="x86-avx2")(xb, xb[0])
assert np.array_equal(got, (xb.astype(np.float32) + xb[0].astype(np.float32)).astype(bf16))
print("reduce_sum", flush=True)
got = tpp.unary("reduce_sum", 7, 37, dtype="bf16", axis=1, target="x86-avx2")(xb)
x64 = xb.astype(np.float64)
ref, bound = x64.sum(axis=1), 38 * 2 ** -23 * np.abs(x64).sum(axis=1)   # (n + 1) eps sum|x|
assert np.all(np.abs(got.astype(np.float64) - ref) <= 2 ** -8 * np.abs(ref) + bound), "sum"
print("ok")
"""


@needs_avx2
def test_avx2_bf16_kernels_in_a_subprocess(run_python):
    """bf16 kernels on AVX2 (no AVX512-BF16 conversions there). In its own process
    because a kernel that links a missing helper crashes the interpreter."""
    ran = run_python(AVX2_BF16_SCRIPT).check()
    assert ran.stdout.strip().endswith("ok")
