"""`tpp-bench gpu`: tpp's NVPTX kernels on the GPU (tpp.cuda), timed with CUDA events.

Elementwise rows: GB/s (bytes read + written) of the kernel on device arrays
(LAUNCHES launches queued back to back between two events, so the time between
launches on the Python side is not counted),
beside the device-to-device copy of the same bytes (cuMemcpyDtoD), the ceiling
of any kernel that reads and writes them once. Needs an NVIDIA GPU; elsewhere
each row says why it was skipped.

GEMM rows: tpp's bf16 GEMM (tensor cores: mma.sync m16n8k16, f32 accumulation,
f32 C) in TFLOP/s, beside torch.matmul (cuBLAS) on the same bf16 operands in the
same run where PyTorch with CUDA is installed; a sample of C is checked against
float64 products of the same bf16 values.
"""
from __future__ import annotations

import numpy as np

import tpp

QUICK = (("add", (16384, 16384)), ("relu", (16384, 16384)), ("gelu_tanh", (16384, 16384)),
         ("mul", (4096, 4096)))
GEMMS = ((4096, 4096, 4096), (2048, 2048, 2048))
BINARY = {"add", "mul", "sub", "div", "max", "min"}
LAUNCHES = 10        # kernels queued between two events: the Python between launches stays hidden


def _target() -> str:
    major, minor = tpp.cuda.compute_capability()
    return "nvptx-sm90" if major * 10 + minor >= 90 else "nvptx-sm80"


def run_case(kind: str, shape: tuple[int, int], repeat: int, target: str | None = None) -> dict:
    m, n = shape
    row = {"suite": "gpu", "op": kind, "m": m, "n": n, "shape": f"{m}x{n}", "dtype": "f32"}
    target = target or _target()
    row["target"] = target
    binary = kind in BINARY
    k = tpp.binary(kind, m, n, target=target) if binary else tpp.unary(kind, m, n, target=target)
    gk = tpp.cuda.load(k)
    rng = np.random.default_rng(0)
    ins = [tpp.cuda.DeviceArray.from_numpy(rng.uniform(0.5, 2, (m, n)).astype(np.float32))
           for _ in range(2 if binary else 1)]
    out = tpp.cuda.DeviceArray((m, n), np.float32)
    pointers, keep, _ = gk.prepare(*ins, out=out)

    def launches() -> None:          # back to back: the GPU never waits for Python
        for _ in range(LAUNCHES):
            gk.launch(pointers)
    seconds = tpp.cuda.time_on_gpu(launches, repeat) / LAUNCHES
    nbytes = 4 * m * n * (len(ins) + 1)
    row["gbps"] = nbytes / seconds / 1e9
    row["ms"] = seconds * 1e3
    row["copy_gbps"] = tpp.cuda.copy_bandwidth(4 * m * n * 2, repeat)     # same bytes moved
    row["pct_copy"] = 100 * row["gbps"] / row["copy_gbps"]
    every = (slice(None, None, max(1, m // 64)), slice(None, None, max(1, n // 64)))
    sample = np.ascontiguousarray(out.numpy()[every])
    host = [np.ascontiguousarray(a.numpy()[every]) for a in ins]
    cpu = tpp.binary(kind, *sample.shape) if binary else tpp.unary(kind, *sample.shape)
    row["result_ok"] = bool(np.allclose(sample, cpu(*host), rtol=1e-5, atol=1e-6))
    return row


def run_gemm(m: int, n: int, k: int, repeat: int, target: str | None = None) -> dict:
    target = target or _target()
    row = {"suite": "gpu", "table": "gpu_gemm", "op": "gemm", "m": m, "n": n, "k": k,
           "shape": f"{m}x{n}x{k}", "dtype": "bf16", "target": target}
    gk = tpp.cuda.load(tpp.gemm(m, n, k, "bf16", beta=0.0, target=target))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(tpp.dtypes.to_numpy(tpp.DType.BF16))
    b = rng.standard_normal((k, n)).astype(a.dtype)
    da, db = tpp.cuda.DeviceArray.from_numpy(a), tpp.cuda.DeviceArray.from_numpy(b)
    dc = tpp.cuda.DeviceArray((m, n), np.float32)
    pointers, keep, _ = gk.prepare(da, db, out=dc)

    def launches() -> None:
        for _ in range(LAUNCHES):
            gk.launch(pointers)
    seconds = tpp.cuda.time_on_gpu(launches, repeat) / LAUNCHES
    row["tflops"] = 2 * m * n * k / seconds / 1e12
    row["ms"] = seconds * 1e3
    rows_, cols = slice(None, None, max(1, m // 48)), slice(None, None, max(1, n // 48))
    want = a[rows_].astype(np.float64) @ b[:, cols].astype(np.float64)
    got = dc.numpy()[rows_, cols]
    row["result_ok"] = bool(np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.sqrt(k)))
    row["torch_tflops"] = _torch_matmul(a, b, repeat)
    row["pct_torch"] = 100 * row["tflops"] / row["torch_tflops"] if row["torch_tflops"] else None
    return row


def _torch_matmul(a: np.ndarray, b: np.ndarray, repeat: int) -> float | None:
    """torch.matmul (cuBLAS) on the same bf16 operands, TFLOP/s; None without torch/CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    ta = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).cuda()
    tb = torch.from_numpy(b.view(np.int16)).view(torch.bfloat16).cuda()

    def launches() -> None:
        for _ in range(LAUNCHES):
            torch.matmul(ta, tb)
    seconds = tpp.cuda.time_on_gpu(launches, repeat) / LAUNCHES
    return 2 * a.shape[0] * b.shape[1] * a.shape[1] / seconds / 1e12


def rows(opts, cases=QUICK, target: str | None = None, gemms=GEMMS) -> list[dict]:
    if not tpp.cuda.available():
        return ([{"suite": "gpu", "op": kind, "shape": f"{s[0]}x{s[1]}", "error": "no NVIDIA GPU (tpp.cuda)"}
                 for kind, s in cases]
                + [{"suite": "gpu", "op": "gemm", "shape": "x".join(map(str, g)), "dtype": "bf16",
                    "error": "no NVIDIA GPU (tpp.cuda)"} for g in gemms])
    repeat = max(5, opts.repeat)
    return ([run_case(kind, shape, repeat, target) for kind, shape in cases]
            + [run_gemm(*g, repeat, target) for g in gemms])
