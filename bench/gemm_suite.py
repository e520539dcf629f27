"""GEMM rows: tpp's GEMM TPP beside np.matmul, as a fraction of the FMA peak.

Every row runs with beta=0, C = op(A) op(B), which is what
`np.matmul(a, b, out=c)` computes (tpp's default beta=1 would add to C, more
work than numpy does). Four contenders are timed with their repetitions
interleaved (peak, kernel, call, numpy, peak, kernel, ...):

    peak        the JIT FMA loop of peak.py (a shorter repetition)
    tpp_kernel  the kernel called natively count times by repeat.py's loop
    tpp_call    g(a, b, c) from Python
    numpy       np.matmul(a, b, out=c) (a.T / b.T views for the transposes)

This VM drifts by up to 2x between minutes, so a peak measured once is no
yardstick for a kernel timed later: each repetition's GFLOP/s is divided by
the peak measured just before it, and %peak is the median of those ratios.
Each contender writes its own C, filled with NaN first (a beta=0 kernel that
read C would leave NaN), and all three results are checked against a float64
reference after the timing.

All operands start on a 64-byte boundary. numpy's own small arrays are only
16-byte aligned (a 64x64 f32 array lands at 48 mod 64 here), and whether
they happen to be aligned changed the 64^3 kernel by 10-15% (79% of peak
aligned, 68-70% at offsets 4/16/32 bytes), which made runs incomparable.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

import tpp
from tpp.dtypes import parse as parse_dtype
from tpp.dtypes import to_numpy

from . import peak, timing
from .repeat import kernel_runner

BETA = 0.0
DTYPES = ("f32", "f64")
QUICK = ((64, 64, 64), (16, 16, 16))      # in-cache throughput; the Python-level call cost
ALIGN = 64
_EPS = {"f32": float(np.finfo(np.float32).eps), "f64": float(np.finfo(np.float64).eps)}


@dataclass
class Case:
    """One GEMM and its operands; each contender has its own C."""
    kernel: tpp.Kernel
    a: np.ndarray
    b: np.ndarray
    outs: dict[str, np.ndarray] = field(default_factory=dict)
    expr: str = ""

    def numpy_fn(self):
        d = self.kernel.descriptor
        a = self.a.T if d.trans_a else self.a
        b = self.b.T if d.trans_b else self.b
        c = self.outs["numpy"]
        return lambda: np.matmul(a, b, out=c)

    def runs(self) -> dict[str, timing.RunFn]:
        a, b, g = self.a, self.b, self.kernel
        c_call = self.outs["tpp_call"]
        return {"tpp_kernel": kernel_runner(g, [a, b, self.outs["tpp_kernel"]]),
                "tpp_call": timing.loop(lambda: g(a, b, c_call)),
                "numpy": timing.loop(self.numpy_fn())}

    def reference(self) -> np.ndarray:
        return self.kernel.descriptor.reference(self.a, self.b)

    def errors(self) -> dict[str, float]:
        """Each result's largest error relative to (|op(A)| |op(B)|) elementwise: the scale
        of the rounding error of a k-term dot product (NaN where C was left unwritten)."""
        d = self.kernel.descriptor
        a64, b64 = np.abs(np.asarray(self.a, np.float64)), np.abs(np.asarray(self.b, np.float64))
        scale = (a64.T if d.trans_a else a64) @ (b64.T if d.trans_b else b64)
        scale += np.finfo(np.float64).tiny
        ref = self.reference()
        return {name: float(np.max(np.abs(np.asarray(c, np.float64) - ref) / scale))
                for name, c in self.outs.items()}


def aligned_empty(shape: tuple[int, ...], dtype, align: int = ALIGN) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an `align`-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def case(m: int, n: int, k: int, dtype: str = "f32", trans_a: bool = False, trans_b: bool = False,
         seed: int = 0) -> Case:
    """Dispatch the beta=0 GEMM and make its inputs (uniform in [-1, 1)) and NaN-filled Cs."""
    kernel = tpp.gemm(m, n, k, dtype, trans_a=trans_a, trans_b=trans_b, beta=BETA)
    ops = kernel.descriptor.operands()
    rng = np.random.default_rng(seed)
    a, b = (aligned_empty((op.rows, op.cols), to_numpy(op.dtype)) for op in ops[:2])
    a[...] = rng.uniform(-1.0, 1.0, a.shape)
    b[...] = rng.uniform(-1.0, 1.0, b.shape)
    c_op = ops[2]
    outs = {name: aligned_empty((c_op.rows, c_op.cols), to_numpy(c_op.dtype))
            for name in ("tpp_kernel", "tpp_call", "numpy")}
    for c in outs.values():
        c.fill(np.nan)
    expr = f"np.matmul({'a.T' if trans_a else 'a'}, {'b.T' if trans_b else 'b'}, out=c)"
    return Case(kernel, a, b, outs, expr)


def layout(trans_a: bool, trans_b: bool) -> str:
    return f"{'A^T' if trans_a else 'A'} {'B^T' if trans_b else 'B'}"


def rates(st: timing.Stats, samples: list[float], peaks: list[float] | None, flops: int) -> dict:
    """Per-call time, G(FL)OP/s and, where there is a peak (per repetition, flop/s), %peak:
    the median over repetitions of each one's rate over the peak timed beside it."""
    out = {**st.as_dict(), "us_per_call": st.median * 1e6, "gflops": flops / st.median / 1e9}
    if peaks:
        ratios = [flops / s / p for s, p in zip(samples, peaks)]
        out.update(pct_peak=100 * statistics.median(ratios), pct_peak_min=100 * min(ratios),
                   pct_peak_max=100 * max(ratios))
    else:
        out.update(pct_peak=None, pct_peak_min=None, pct_peak_max=None)
    return out


def peak_summary(pl, samples: list[float], count: int = 1) -> tuple[dict, list[float]]:
    """The peak part of a row and the per-repetition peaks in flop/s."""
    peaks = [pl.flops_per_count / s for s in samples]
    st = timing.stats_of(samples, count)
    return ({"gflops": statistics.median(peaks) / 1e9, "gflops_min": min(peaks) / 1e9,
             "gflops_max": max(peaks) / 1e9, "loop": pl.describe(), "unit": pl.kind.unit,
             **st.as_dict()}, peaks)


def run_case(m: int, n: int, k: int, dtype: str, opts, trans_a: bool = False, trans_b: bool = False,
             seed: int = 0) -> dict:
    """One row: kernel-level and call-level GFLOP/s and %peak beside np.matmul, same data."""
    row = {"suite": "gemm", "op": "gemm", "m": m, "n": n, "k": k, "shape": f"{m}x{n}x{k}",
           "dtype": str(dtype), "trans_a": bool(trans_a), "trans_b": bool(trans_b),
           "layout": layout(trans_a, trans_b), "beta": BETA, "flops": 2 * m * n * k,
           "align_bytes": ALIGN}
    try:
        dtype = row["dtype"] = parse_dtype(dtype).value
        c = case(m, n, k, dtype, trans_a, trans_b, seed)
        pl = peak.loop(c.kernel.target, dtype)
    except (tpp.TppError, ValueError) as exc:
        return {**row, "error": str(exc)}
    flops = row["flops"]
    runs = {"peak": pl.run, **c.runs()}
    t = opts.timing()
    counts, per_op = timing.sample_many(runs, **t, min_times={"peak": t["min_time"] / 2})
    row["peak"], peaks = peak_summary(pl, per_op["peak"], counts["peak"])
    stats = {name: timing.stats_of(per_op[name], counts[name]) for name in runs}
    for name in ("tpp_kernel", "tpp_call", "numpy"):
        row[name] = rates(stats[name], per_op[name], peaks, flops)
    row["numpy"]["expr"] = c.expr
    row["ratio_kernel"] = stats["numpy"].median / stats["tpp_kernel"].median     # > 1: tpp faster
    row["ratio_call"] = stats["numpy"].median / stats["tpp_call"].median
    errors = c.errors()
    tol = k * _EPS[dtype]               # the worst-case bound is k * eps / 2
    row["max_rel_err"] = errors
    row["tolerance"] = tol
    row["result_ok"] = all(errors[name] <= tol for name in ("tpp_kernel", "tpp_call"))
    row["baseline_agrees"] = errors["numpy"] <= tol
    return row


def sizes_rows(sizes, dtype: str, trans_a: bool, trans_b: bool, opts) -> list[dict]:
    return [run_case(m, n, k, dtype, opts, trans_a, trans_b) for m, n, k in sizes]


def quick(opts) -> list[dict]:
    return [run_case(m, n, k, "f32", opts) for m, n, k in QUICK]
