"""NVPTX targets: every elementwise kind emitted as PTX that ptxas accepts for sm_80 and
sm_90 (where ptxas is installed), the target-coverage table, clear errors on a
machine without a GPU, and (marked gpu) the kernels run on a GPU against numpy."""
from __future__ import annotations

import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest

import tpp
from tpp.descriptors import BINARY_KINDS, UNARY_KINDS
from tpp.jit.targets import Target
from tpp.kernels import reduce as reduce_k

from targets import ALL, GPU

PTXAS = shutil.which("ptxas")
GPU_ARCHS = [(t, Target.named(t).cpu) for t in GPU]       # ("nvptx-sm80", "sm_80"), ...
ELTWISE_UNARY = sorted(k for k in UNARY_KINDS if k not in reduce_k.KINDS and k not in ("transpose", "vnni_pack"))
FAMILIES = ("eltwise", "reduce", "transpose", "vnni_pack", "gemm", "brgemm")


def _unary(kind, m, n, dtype, target):
    """The kernel, or None where the kind does not take this dtype."""
    extra = {"out_dtype": "bf16" if dtype == "f32" else "f32"} if kind == "cast" else {}
    try:
        return tpp.unary(kind, m, n, dtype, target=target, **extra)
    except tpp.DTypeError:
        return None


def ptxas(ptx: bytes, arch: str, tmp_path) -> None:
    path = tmp_path / "k.ptx"
    path.write_bytes(ptx)
    proc = subprocess.run([PTXAS, f"-arch={arch}", str(path), "-o", str(tmp_path / "k.cubin")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---- coverage ------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ALL)
def test_every_family_is_offered_or_refused_with_a_reason(target):
    t = Target.named(target)
    for family in FAMILIES:
        reason = t.unsupported_reason(family)
        assert reason is None or len(reason) > 20, (family, reason)
    samples = {"eltwise": lambda: tpp.unary("relu", 4, 4, target=target),
               "reduce": lambda: tpp.unary("reduce_sum", 4, 4, axis=1, target=target),
               "transpose": lambda: tpp.unary("transpose", 4, 4, target=target),
               "vnni_pack": lambda: tpp.unary("vnni_pack", 4, 4, "bf16", target=target),
               "gemm": lambda: tpp.gemm(4, 4, 4, target=target),
               "brgemm": lambda: tpp.brgemm(4, 4, 4, target=target)}
    for family, make in samples.items():
        reason = t.unsupported_reason(family)
        if reason is None:
            assert make().asm
        else:
            with pytest.raises(tpp.TargetError, match="not offered for target"):
                make()


def test_gpu_kernels_explain_themselves_on_a_cpu_machine():
    k = tpp.binary("add", 8, 8, target="nvptx-sm90")
    assert ".entry" in k.asm and ".target sm_90" in k.asm
    if not tpp.cuda.available():
        with pytest.raises(tpp.TargetError, match="tpp.cuda.load"):
            k(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32))
        with pytest.raises(tpp.TargetError, match="tpp.cuda"):
            tpp.cuda.load(k)
    with pytest.raises(tpp.TargetError, match="not a GPU kernel"):
        tpp.cuda.GpuKernel(tpp.binary("add", 8, 8))


# ---- PTX accepted by ptxas --------------------------------------------------------------------
@pytest.mark.skipif(PTXAS is None, reason="ptxas (CUDA toolkit) is not installed")
@pytest.mark.parametrize("target,arch", GPU_ARCHS)
@pytest.mark.parametrize("kind", ELTWISE_UNARY)
def test_unary_ptx_assembles(kind, target, arch, tmp_path):
    dtypes = ["f32", "bf16"] + (["f64"] if target == "nvptx-sm90" else [])
    for dtype in dtypes:
        k = _unary(kind, 33, 70, dtype, target)
        if k is not None:
            ptxas(k.code, arch, tmp_path)


@pytest.mark.skipif(PTXAS is None, reason="ptxas (CUDA toolkit) is not installed")
@pytest.mark.parametrize("target,arch", GPU_ARCHS)
@pytest.mark.parametrize("kind", sorted(BINARY_KINDS))
def test_binary_ptx_assembles(kind, target, arch, tmp_path):
    for bc in ("none", "row", "col", "scalar"):
        ptxas(tpp.binary(kind, 33, 70, broadcast=bc, target=target).code, arch, tmp_path)
    ptxas(tpp.binary(kind, 9, 20, "bf16", target=target).code, arch, tmp_path)


# ---- on a GPU ---------------------------------------------------------------------------------
gpu = pytest.mark.skipif(not tpp.cuda.available(), reason="no NVIDIA GPU here (tpp.cuda found none)")
NP = {"f32": np.float32, "bf16": ml_dtypes.bfloat16, "f64": np.float64}


def _gpu_target() -> str:
    major, minor = tpp.cuda.compute_capability()
    return "nvptx-sm90" if major * 10 + minor >= 90 else "nvptx-sm80"


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", ELTWISE_UNARY)
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_unary_on_the_gpu(kind, dtype, rng):
    m, n = 37, 301
    k = _unary(kind, m, n, dtype, _gpu_target())
    if k is None:
        pytest.skip(f"{kind} has no {dtype}")
    gk = tpp.cuda.load(k)
    ops = k.descriptor.operands()
    ins = [rng.uniform(0.1, 2.0, (op.rows, op.cols)).astype(NP[dtype]) for op in ops if not op.output]
    got = gk(*ins)
    cpu = _unary(kind, m, n, dtype, None)
    want = cpu(*ins)
    tol = 1e-6 if dtype == "f32" else 1e-2
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=tol, atol=tol)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", sorted(BINARY_KINDS))
@pytest.mark.parametrize("bc", ["none", "row", "col", "scalar"])
def test_binary_on_the_gpu(kind, bc, rng):
    m, n = 29, 515
    gk = tpp.cuda.load(tpp.binary(kind, m, n, broadcast=bc, target=_gpu_target()))
    shapes = {"none": (m, n), "row": (1, n), "col": (m, 1), "scalar": ()}
    a = rng.uniform(0.5, 2, (m, n)).astype(np.float32)
    b = rng.uniform(0.5, 2, shapes[bc]).astype(np.float32)
    np.testing.assert_array_equal(gk(a, b), tpp.binary(kind, m, n, broadcast=bc)(a, b))


@pytest.mark.gpu
@gpu
def test_device_arrays_views_and_in_place(rng):
    m, n = 64, 1000
    x = rng.uniform(-1, 1, (m, n)).astype(np.float32)
    dx = tpp.cuda.DeviceArray.from_numpy(x)
    gk = tpp.cuda.load(tpp.unary("relu", m, n, target=_gpu_target()))
    gk(dx, out=dx)                                # in place, on the device
    tpp.cuda.synchronize()
    np.testing.assert_array_equal(dx.numpy(), np.maximum(x, 0))
    torch = pytest.importorskip("torch")
    big = torch.zeros((m, n + 24), device="cuda")
    src = torch.from_numpy(x).cuda()
    gk(src, out=big[:, 5:5 + n])                  # a strided view of a torch tensor
    torch.cuda.synchronize()
    np.testing.assert_array_equal(big[:, 5:5 + n].cpu().numpy(), np.maximum(x, 0))
    assert not big[:, :5].any() and not big[:, 5 + n:].any()


class _DLPackOnly:
    """A torch tensor seen only through DLPack (torch also offers __cuda_array_interface__,
    which tpp.cuda would take first)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, stream=None):
        return self.tensor.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self.tensor.__dlpack_device__()


@pytest.mark.gpu
@gpu
def test_dlpack_arrays_on_the_gpu(rng):
    torch = pytest.importorskip("torch")
    m, n, k = 48, 80, 32
    a = rng.integers(-3, 4, (m, k)).astype(ml_dtypes.bfloat16)
    b = rng.integers(-3, 4, (k, n)).astype(ml_dtypes.bfloat16)
    ta = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).cuda()
    tb = torch.from_numpy(b.view(np.int16)).view(torch.bfloat16).cuda()
    big = torch.zeros((m, n + 16), device="cuda")
    gk = tpp.cuda.load(tpp.gemm(m, n, k, "bf16", beta=0.0, ldc=n + 16, target=_gpu_target()))
    gk(_DLPackOnly(ta), _DLPackOnly(tb), out=_DLPackOnly(big[:, 8:8 + n]))      # a strided view
    torch.cuda.synchronize()
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(big[:, 8:8 + n].cpu().numpy(), want)
    assert not big[:, :8].any() and not big[:, 8 + n:].any()
    host = _DLPackOnly(torch.zeros((m, n)))                                     # CPU: copied in and out
    gk2 = tpp.cuda.load(tpp.gemm(m, n, k, "bf16", beta=0.0, target=_gpu_target()))
    gk2(a, b, out=host)
    np.testing.assert_array_equal(host.tensor.numpy(), want)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kw", [{}, {"beta": 0.0, "epilogue": ("bias", "relu")}, {"trans_a": True},
                                {"trans_b": True, "beta": 0.0}, {"dtype": "bf16", "b_vnni": True},
                                {"dtype": "u8s8"}, {"dtype": "f64"}])
def test_gemm_on_the_gpu(kw, rng):
    m, n, k = 37, 70, 29
    cpu = tpp.gemm(m, n, k, **kw)
    gk = tpp.cuda.load(tpp.gemm(m, n, k, target=_gpu_target(), **kw))
    ops = cpu.descriptor.operands()
    args = [rng.integers(0 if op.dtype.value == "u8" else -3, 4, (op.rows, op.cols)).astype(tpp.dtypes.to_numpy(op.dtype))
            if op.rows > 1 else rng.integers(-3, 4, op.cols).astype(tpp.dtypes.to_numpy(op.dtype)) for op in ops]
    want = cpu(*[a.copy() for a in args])
    got = gk(*args[:-1], out=args[-1])
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind,axis", [("reduce_sum", 0), ("reduce_sum", 1), ("reduce_max", 1), ("reduce_min", 0)])
def test_reductions_and_transpose_on_the_gpu(kind, axis, rng):
    m, n = 45, 301
    x = rng.integers(-50, 50, (m, n)).astype(np.float32)       # sums exact in any order
    target = _gpu_target()
    argidx = kind != "reduce_sum"
    got = tpp.cuda.load(tpp.unary(kind, m, n, axis=axis, argidx=argidx, target=target))(x)
    want = tpp.unary(kind, m, n, axis=axis, argidx=argidx)(x)
    for g, w in zip(got if argidx else (got,), want if argidx else (want,)):
        np.testing.assert_array_equal(g, w)
    xt = tpp.cuda.load(tpp.unary("transpose", m, n, target=target))(x)
    np.testing.assert_array_equal(xt, x.T)


@pytest.mark.skipif(PTXAS is None, reason="ptxas (CUDA toolkit) is not installed")
@pytest.mark.parametrize("target,arch", GPU_ARCHS)
def test_gemm_reduce_transpose_ptx_assembles(target, arch, tmp_path):
    kernels = [tpp.gemm(33, 70, 19, target=target), tpp.gemm(16, 16, 16, "bf16", b_vnni=True, target=target),
               tpp.gemm(8, 24, 12, "u8s8", target=target),
               tpp.gemm(20, 9, 7, trans_a=True, trans_b=True, beta=0.0, epilogue=("bias", "gelu_tanh"),
                        target=target),
               tpp.unary("reduce_sumsq", 9, 40, axis=0, target=target),
               tpp.unary("reduce_min", 9, 40, "bf16", axis=1, argidx=True, target=target),
               tpp.unary("transpose", 9, 40, "bf16", target=target)]
    kernels += [tpp.brgemm(9, 17, 5, variant=v, target=target) for v in ("stride", "offset", "address")]
    for k in kernels:
        ptxas(k.code, arch, tmp_path)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("m,n,k,kw", [(300, 260, 100, {}), (129, 65, 47, {}),
                                      (64, 200, 96, {"out_dtype": "bf16", "epilogue": ("bias", "relu")})])
def test_tensor_core_gemm_on_the_gpu(m, n, k, kw, rng):
    cpu = tpp.gemm(m, n, k, "bf16", beta=0.0, **kw)
    gk = tpp.cuda.load(tpp.gemm(m, n, k, "bf16", beta=0.0, target=_gpu_target(), **kw))
    ops = cpu.descriptor.operands()
    args = [rng.integers(-3, 4, (op.rows, op.cols) if op.rows > 1 else op.cols).astype(tpp.dtypes.to_numpy(op.dtype))
            for op in ops]
    want = cpu(*[a.copy() for a in args])
    got = gk(*args[:-1], out=args[-1])
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


@pytest.mark.skipif(PTXAS is None, reason="ptxas (the CUDA toolkit) is not installed")
@pytest.mark.parametrize("target,arch", GPU_ARCHS)
def test_tensor_core_gemm_ptx(target, arch, tmp_path):
    # bf16 GEMMs and BRGEMMs run on mma.sync m16n8k16 with ldmatrix from shared memory;
    # ptxas -v reports no spills (their execution is checked in test_gpu_sim.py)
    kernels = [tpp.gemm(4096, 4096, 4096, "bf16", beta=0.0, target=target),
               tpp.gemm(50, 72, 33, "bf16", lda=35, out_dtype="bf16", epilogue=("bias", "relu"), target=target),
               *(tpp.brgemm(64, 64, 64, "bf16", variant=v, target=target) for v in ("stride", "offset", "address"))]
    for k in kernels:
        ptx = k.code.decode()
        assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in ptx
        assert "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in ptx
        path = tmp_path / "k.ptx"
        path.write_text(ptx)
        proc = subprocess.run([PTXAS, f"-arch={arch}", "-v", str(path), "-o", str(tmp_path / "k.cubin")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "0 bytes spill stores" in proc.stderr, proc.stderr


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("variant", ["stride", "offset", "address"])
def test_brgemm_on_the_gpu(variant, rng):
    m, n, k, batch = 19, 40, 13, 5
    a = rng.integers(-3, 4, (batch, m, k)).astype(np.float32)
    b = rng.integers(-3, 4, (batch, k, n)).astype(np.float32)
    bias = rng.integers(-3, 4, n).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    br = tpp.cuda.load(tpp.brgemm(m, n, k, variant=variant, beta=0.0, epilogue=("bias",), target=_gpu_target()))
    if variant == "stride":
        br(a, b, bias, c)
    elif variant == "offset":
        order = np.arange(batch)[::-1]
        br(a.reshape(-1), b.reshape(-1), bias, c, order * m * k, order * k * n)
    else:
        br([tpp.cuda.DeviceArray.from_numpy(x) for x in a], list(b), bias, c)
    np.testing.assert_array_equal(c, np.einsum("bik,bkj->ij", a.astype(np.float64), b) + bias)
