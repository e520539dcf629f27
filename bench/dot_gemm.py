"""GEMM rows on narrow inputs, the dot-instruction GEMMs: bf16 and u8s8.

    bf16   A (m x k) and B (k x n) bf16, C f32: vdpbf16ps multiplies pairs of k
    u8s8   A uint8, B int8, C int32: vpdpbusd multiplies quads of k (LIBXSMM's int8)

B is VNNI-packed once, by tpp.unary("vnni_pack", k, n, "bf16" | "i8"), outside the
timing (a weight is packed once and used many times), and the kernel is
tpp.gemm(..., b_vnni=True, beta=0). Contenders, repetitions interleaved as in
gemm_suite:

    peak        the dot-instruction loop of peak.py (absent where the target has no
                such instruction: then the row has no %peak)
    tpp_kernel  the kernel through repeat.py's JIT loop
    tpp_call    g(a, bp, c) from Python
    numpy       np.matmul on the same values as float32 (numpy has no bf16 or int8
                GEMM: its integer matmul is a slow non-BLAS loop), labelled as such
    tpp_f32     u8s8 only: tpp's own f32 GEMM (beta=0) on the same values, for the
                ratio int8 GOP/s / f32 GFLOP/s (the issue's target: >= 3.5x)

Checks: bf16 against a float64 product of the same (bf16) values, relative to
|A| |B| (tolerance k * eps(f32)); u8s8 exactly against an int64 product.
"""
from __future__ import annotations

import statistics

import numpy as np
from tpp.kernels import vnni as vnni_ref

import tpp
from tpp.dtypes import to_numpy

from . import peak, timing
from .gemm_suite import ALIGN, aligned_empty, peak_summary, rates
from .repeat import kernel_runner

DTYPES = ("bf16", "u8s8")
_PACK = {"bf16": "bf16", "u8s8": "i8"}
_EPS32 = float(np.finfo(np.float32).eps)


def _aligned_copy(x: np.ndarray, dtype=None) -> np.ndarray:
    out = aligned_empty(x.shape, dtype or x.dtype)
    out[...] = x
    return out


def operands(m: int, n: int, k: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A and B (unpacked), 64-byte aligned: bf16 uniform in [-1, 1) (rounded to bf16);
    u8s8 A in [0, 255], B in [-128, 127]."""
    rng = np.random.default_rng(seed)
    if dtype == "bf16":
        bf16 = to_numpy(tpp.DType.BF16)
        return (_aligned_copy(rng.uniform(-1, 1, (m, k)).astype(np.float32), bf16),
                _aligned_copy(rng.uniform(-1, 1, (k, n)).astype(np.float32), bf16))
    return (_aligned_copy(rng.integers(0, 256, (m, k), dtype=np.uint8)),
            _aligned_copy(rng.integers(-128, 128, (k, n), dtype=np.int8)))


def pack(b: np.ndarray, dtype: str) -> np.ndarray:
    """B VNNI-packed by tpp's vnni_pack TPP, into an aligned buffer."""
    k, n = b.shape
    kernel = tpp.unary("vnni_pack", k, n, _PACK[dtype])
    out_op = kernel.descriptor.operands()[-1]
    bp = aligned_empty((out_op.rows, out_op.cols), b.dtype)
    kernel(b, out=bp)
    return bp


def _errors(a, b, outs: dict, dtype: str) -> tuple[dict, float]:
    """Largest error of each C relative to |A| |B| elementwise, and the tolerance."""
    k = a.shape[1]
    if dtype == "u8s8":
        ref = a.astype(np.int64) @ b.astype(np.int64)
    else:
        ref = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)) + np.finfo(np.float64).tiny
    errs = {name: float(np.max(np.abs(c.astype(np.float64) - ref) / scale)) for name, c in outs.items()}
    return errs, (0.0 if dtype == "u8s8" else k * _EPS32)


def run_case(m: int, n: int, k: int, dtype: str, opts, seed: int = 0) -> dict:
    """One row: the dot GEMM's kernel-level and call-level rate, %peak of the dot peak,
    beside np.matmul in float32 (and, for u8s8, tpp's f32 GEMM)."""
    unit = peak.KINDS[dtype].unit
    row = {"suite": "gemm", "table": "gemm_dot", "op": "gemm", "m": m, "n": n, "k": k,
           "shape": f"{m}x{n}x{k}", "dtype": dtype, "trans_a": False, "trans_b": False,
           "layout": "A B(vnni)", "beta": 0.0, "flops": 2 * m * n * k, "unit": unit, "align_bytes": ALIGN}
    try:
        kernel = tpp.gemm(m, n, k, dtype, b_vnni=True, beta=0.0)
        a, b = operands(m, n, k, dtype, seed)
        bp = pack(b, dtype)
        f32 = tpp.gemm(m, n, k, "f32", beta=0.0) if dtype == "u8s8" else None
    except (tpp.TppError, ValueError) as exc:
        return {**row, "error": str(exc)}
    ref_bp = np.ascontiguousarray(vnni_ref.vnni_pack(b))
    row["packed_ok"] = bool(np.array_equal(bp.view(np.uint8), ref_bp.view(np.uint8)))      # bitwise
    c_dtype = to_numpy(kernel.descriptor.operands()[-1].dtype)
    a32, b32 = _aligned_copy(a, np.float32), _aligned_copy(b, np.float32)
    outs = {name: aligned_empty((m, n), c_dtype) for name in ("tpp_kernel", "tpp_call")}
    outs["numpy"] = aligned_empty((m, n), np.float32)
    if f32 is not None:
        outs["tpp_f32"] = aligned_empty((m, n), np.float32)
    for c in outs.values():
        c.fill(-7)            # beta=0: must be overwritten (int C has no NaN)
    c_call, c_np = outs["tpp_call"], outs["numpy"]
    runs = {}
    reason = peak.available(kernel.target, dtype)
    pl = peak.loop(kernel.target, dtype) if reason is None else None
    if pl is not None:
        runs["peak"] = pl.run
    runs.update({"tpp_kernel": kernel_runner(kernel, [a, bp, outs["tpp_kernel"]]),
                 "tpp_call": timing.loop(lambda: kernel(a, bp, c_call)),
                 "numpy": timing.loop(lambda: np.matmul(a32, b32, out=c_np))})
    if f32 is not None:
        runs["tpp_f32"] = kernel_runner(f32, [a32, b32, outs["tpp_f32"]])
    t = opts.timing()
    counts, per_op = timing.sample_many(runs, **t, min_times={"peak": t["min_time"] / 2})
    stats = {name: timing.stats_of(per_op[name], counts[name]) for name in runs}
    peaks = None
    if pl is not None:
        row["peak"], peaks = peak_summary(pl, per_op["peak"], counts["peak"])
    else:
        row["peak"] = None
        row["peak_unavailable"] = reason
    flops = row["flops"]
    for name in ("tpp_kernel", "tpp_call", "numpy") + (("tpp_f32",) if f32 is not None else ()):
        row[name] = rates(stats[name], per_op[name], peaks if name != "tpp_f32" else None, flops)
    row["numpy"]["expr"] = "np.matmul(a32, b32, out=c32)  [float32 of the same values]"
    row["ratio_kernel"] = stats["numpy"].median / stats["tpp_kernel"].median     # > 1: tpp faster
    row["ratio_call"] = stats["numpy"].median / stats["tpp_call"].median
    if f32 is not None:     # int8 GOP/s over f32 GFLOP/s, per repetition (they ran back to back)
        ratios = [tf / ti for tf, ti in zip(per_op["tpp_f32"], per_op["tpp_kernel"])]
        row["int8_over_f32"] = statistics.median(ratios)
        row["int8_over_f32_min"], row["int8_over_f32_max"] = min(ratios), max(ratios)
    errors, tol = _errors(a, b, outs, dtype)
    f32_tol = k * _EPS32
    row["max_rel_err"], row["tolerance"] = errors, tol
    row["result_ok"] = row["packed_ok"] and all(errors[x] <= tol for x in ("tpp_kernel", "tpp_call"))
    row["baseline_agrees"] = errors["numpy"] <= f32_tol and errors.get("tpp_f32", 0.0) <= f32_tol
    return row


def sizes_rows(sizes, dtype: str, opts) -> list[dict]:
    return [run_case(m, n, k, dtype, opts) for m, n, k in sizes]
