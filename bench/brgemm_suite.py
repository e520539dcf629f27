"""BRGEMM rows: C = sum_i A_i B_i (beta=0, f32) beside numpy, as % of the FMA peak.

The kernel is tpp.brgemm(m, n, k, variant=..., beta=0). Its raw address is run
by repeat.py's JIT loop on a tpp_tensor table filled here per the C ABI of
kernels/gemm.py (emit_gemm):

    stride   [A_0, B_0, C, {NULL, batch}]            stacks (batch, m, k), (batch, k, n)
    offset   [A, B, C, {a_offsets, batch}, {b_offsets, batch}]   int64 element offsets
    address  [&A_i[], &B_i[], C, {NULL, batch}]       arrays of block pointers

The offset and address variants point at the same blocks as the stride one.
Contenders, repetitions interleaved (peak, kernel, call, numpy..., peak, ...):

    peak        peak.py's f32 FMA loop (each repetition's rate is divided by it)
    tpp_kernel  the raw kernel through the repeat loop
    tpp_call    br(a, b, c) (or the offset/address call) from Python
    numpy       the fastest of three spellings (the row names it):
                  for i: np.matmul(a[i], b[i], out=t); c += t      (c zeroed first)
                  np.matmul(a, b, out=t3); t3.sum(axis=0, out=c)
                  np.matmul(a.transpose(1, 0, 2).reshape(m, -1), b.reshape(-1, n), out=c)
Every result is checked against a float64 sum of the products.
"""
from __future__ import annotations

import numpy as np

import tpp

from . import peak, timing
from .gemm_suite import ALIGN, aligned_empty, peak_summary, rates
from .repeat import address_runner, table

VARIANTS = ("stride", "offset", "address")
QUICK = ((64, 64, 64, 16, "stride"),)      # the target: >= 97% of the FMA peak
_EPS = float(np.finfo(np.float32).eps)


def _numpy_candidates(a: np.ndarray, b: np.ndarray, outs: dict) -> dict:
    batch, m, _ = a.shape
    n = b.shape[2]
    t = np.empty((m, n), np.float32)
    t3 = np.empty((batch, m, n), np.float32)
    c_loop, c_sum, c_cat = outs["np:loop"], outs["np:sum"], outs["np:cat"]

    def loop():
        c_loop.fill(0)
        for i in range(batch):
            np.matmul(a[i], b[i], out=t)
            np.add(c_loop, t, out=c_loop)

    def stack_sum():
        np.matmul(a, b, out=t3)
        t3.sum(axis=0, out=c_sum)

    def cat():
        np.matmul(a.transpose(1, 0, 2).reshape(m, -1), b.reshape(-1, n), out=c_cat)

    return {"for i: np.matmul(a[i], b[i], out=t); c += t": ("np:loop", loop),
            "np.matmul(a, b, out=t3); t3.sum(axis=0, out=c)": ("np:sum", stack_sum),
            "np.matmul(a.transpose(1, 0, 2).reshape(m, -1), b.reshape(-1, n), out=c)": ("np:cat", cat)}


def kernel_args(variant: str, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """The tpp_tensor table for the raw kernel (see the module doc) and what it points into."""
    batch, m, k = a.shape
    n = b.shape[2]
    if variant == "stride":
        return table([(a.ctypes.data, k), (b.ctypes.data, n), (c.ctypes.data, n), (0, batch)]), ()
    if variant == "offset":
        a_offs = np.arange(batch, dtype=np.int64) * (m * k)
        b_offs = np.arange(batch, dtype=np.int64) * (k * n)
        return table([(a.ctypes.data, k), (b.ctypes.data, n), (c.ctypes.data, n),
                      (a_offs.ctypes.data, batch), (b_offs.ctypes.data, batch)]), (a_offs, b_offs)
    a_ptrs = np.array([a[i].ctypes.data for i in range(batch)], np.int64)
    b_ptrs = np.array([b[i].ctypes.data for i in range(batch)], np.int64)
    return table([(a_ptrs.ctypes.data, k), (b_ptrs.ctypes.data, n), (c.ctypes.data, n), (0, batch)]), \
        (a_ptrs, b_ptrs)


def call_fn(br: tpp.BatchReduceKernel, variant: str, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """What a user writes for each variant."""
    batch, m, k = a.shape
    n = b.shape[2]
    if variant == "stride":
        return lambda: br(a, b, c)
    if variant == "offset":
        a_offs = np.arange(batch, dtype=np.int64) * (m * k)
        b_offs = np.arange(batch, dtype=np.int64) * (k * n)
        a_flat, b_flat = a.reshape(-1), b.reshape(-1)
        return lambda: br(a_flat, b_flat, c, a_offs, b_offs)
    a_list, b_list = list(a), list(b)
    return lambda: br(a_list, b_list, c)


def run_case(m: int, n: int, k: int, batch: int, variant: str, opts, seed: int = 0) -> dict:
    """One row: the BRGEMM's kernel-level and call-level GFLOP/s, %peak, beside numpy."""
    row = {"suite": "brgemm", "op": f"brgemm {variant}", "variant": variant, "m": m, "n": n, "k": k,
           "batch": batch, "shape": f"{m}x{n}x{k} x{batch}", "dtype": "f32", "beta": 0.0,
           "flops": 2 * m * n * k * batch, "align_bytes": ALIGN}
    try:
        br = tpp.brgemm(m, n, k, "f32", variant=variant, beta=0.0)
        pl = peak.loop(br.kernel.target, "f32")
    except (tpp.TppError, ValueError) as exc:
        return {**row, "error": str(exc)}
    rng = np.random.default_rng(seed)
    a, b = aligned_empty((batch, m, k), np.float32), aligned_empty((batch, k, n), np.float32)
    a[...] = rng.uniform(-1, 1, a.shape)
    b[...] = rng.uniform(-1, 1, b.shape)
    names = ("tpp_kernel", "tpp_call", "np:loop", "np:sum", "np:cat")
    outs = {name: aligned_empty((m, n), np.float32) for name in names}
    for c in outs.values():
        c.fill(np.nan)        # beta=0 must not read C
    args, keep = kernel_args(variant, a, b, outs["tpp_kernel"])
    candidates = _numpy_candidates(a, b, outs)
    runs = {"peak": pl.run,
            "tpp_kernel": address_runner(br.address, br.kernel.target, args, (keep, a, b, outs)),
            "tpp_call": timing.loop(call_fn(br, variant, a, b, outs["tpp_call"]))}
    runs.update({key: timing.loop(fn) for key, fn in candidates.values()})
    t = opts.timing()
    counts, per_op = timing.sample_many(runs, **t, min_times={"peak": t["min_time"] / 2})
    row["peak"], peaks = peak_summary(pl, per_op["peak"], counts["peak"])
    stats = {name: timing.stats_of(per_op[name], counts[name]) for name in runs}
    flops = row["flops"]
    for name in ("tpp_kernel", "tpp_call"):
        row[name] = rates(stats[name], per_op[name], peaks, flops)
    expr, np_stats = timing.best({e: stats[key] for e, (key, _) in candidates.items()})
    key = candidates[expr][0]
    row["numpy"] = {**rates(np_stats, per_op[key], peaks, flops), "expr": expr, "candidates": len(candidates),
                    "all_us": {e: stats[x].median * 1e6 for e, (x, _) in candidates.items()}}
    row["ratio_kernel"] = np_stats.median / stats["tpp_kernel"].median     # > 1: tpp faster
    row["ratio_call"] = np_stats.median / stats["tpp_call"].median
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = np.einsum("imk,ikn->mn", a64, b64)
    scale = np.einsum("imk,ikn->mn", np.abs(a64), np.abs(b64)) + np.finfo(np.float64).tiny
    errors = {name: float(np.max(np.abs(c - ref) / scale)) for name, c in outs.items()}
    tol = batch * k * _EPS
    row["max_rel_err"], row["tolerance"] = errors, tol
    row["result_ok"] = all(errors[x] <= tol for x in ("tpp_kernel", "tpp_call"))
    row["baseline_agrees"] = all(errors[x] <= tol for x in ("np:loop", "np:sum", "np:cat"))
    return row


def sizes_rows(sizes, batch: int, variants, opts) -> list[dict]:
    return [run_case(m, n, k, batch, v, opts) for v in variants for m, n, k in sizes]


def quick(opts) -> list[dict]:
    return [run_case(m, n, k, batch, v, opts) for m, n, k, batch, v in QUICK]
