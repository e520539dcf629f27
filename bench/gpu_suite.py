"""`tpp-bench gpu`: tpp's NVPTX kernels on the GPU (tpp.cuda), timed with CUDA events.

Elementwise rows: GB/s (bytes read + written) of the kernel on device arrays
(LAUNCHES launches queued back to back between two events, so the time between
launches on the Python side is not counted),
beside the device-to-device copy of the same bytes (cuMemcpyDtoD), the ceiling
of any kernel that reads and writes them once. Needs an NVIDIA GPU; elsewhere
each row says why it was skipped.
"""
from __future__ import annotations

import numpy as np

import tpp

QUICK = (("add", (16384, 16384)), ("relu", (16384, 16384)), ("gelu_tanh", (16384, 16384)),
         ("mul", (4096, 4096)))
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


def rows(opts, cases=QUICK, target: str | None = None) -> list[dict]:
    if not tpp.cuda.available():
        return [{"suite": "gpu", "op": kind, "shape": f"{s[0]}x{s[1]}", "error": "no NVIDIA GPU (tpp.cuda)"}
                for kind, s in cases]
    return [run_case(kind, shape, max(5, opts.repeat), target) for kind, shape in cases]
