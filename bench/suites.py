"""Benchmark rows: one elementwise kernel against numpy, and the quick suite.

Bytes are the operation's logical traffic: every input read once plus every
output written once (write-allocate traffic is not counted), the same figure
for tpp and numpy, so the GB/s columns compare directly even where numpy's
expression touches more memory (relu reads a zeros array; chains re-read
temporaries).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tpp
from tpp.dtypes import parse as parse_dtype
from tpp.dtypes import to_numpy
from tpp.kernels import binary as binary_k
from tpp.kernels import unary as unary_k

from . import baselines, brgemm_suite, compile_time, gemm_suite, timing
from .repeat import kernel_runner

# Kinds computed through vector polynomial approximations: rows also get Gelem/s.
TRANSCENDENTAL = frozenset({"elu", "gelu_tanh", "gelu_erf", "sigmoid", "tanh", "exp", "log",
                            "gelu_tanh_grad", "gelu_erf_grad"}) & frozenset(unary_k.KINDS)
UNARY_KINDS = tuple(unary_k.KINDS)
BINARY_KINDS = tuple(binary_k.KINDS)
# Inputs are uniform in (lo, hi); kinds defined only for positive x get a positive range.
_DOMAIN = {"log": (0.1, 4.0), "sqrt": (0.1, 4.0), "rsqrt": (0.1, 4.0), "reciprocal": (0.1, 4.0)}
_DEFAULT_DOMAIN = (-4.0, 4.0)
_OTHER_DTYPE = {"f32": "bf16", "bf16": "f32"}   # cast converts to the other float type
# Tolerance of the check that the numpy baseline computes the same thing as the kernel.
_AGREE = {"f32": (2e-3, 1e-4), "bf16": (3e-2, 1e-2), "f64": (1e-6, 1e-9)}

UNARY_DEFAULT_KINDS = ("relu", "exp", "tanh", "sigmoid", "gelu_tanh")
BINARY_DEFAULT_KINDS = ("add", "mul", "max")

QUICK = (
    ("binary", "add", 4096, 4096), ("binary", "mul", 4096, 4096),
    ("unary", "relu", 4096, 4096), ("unary", "relu", 512, 512),
    ("unary", "copy", 1024, 1024),   # the memory ceiling for the 1M-element rows below
    ("unary", "exp", 1024, 1024), ("unary", "tanh", 1024, 1024),
    ("unary", "gelu_tanh", 1024, 1024), ("unary", "sigmoid", 1024, 1024),
    ("binary", "add", 64, 64),       # the Python-level call cost: read us/call
)


@dataclass(frozen=True)
class Options:
    repeat: int = 5
    min_time: float = 0.02      # seconds per repetition
    warmup: int = 1

    def timing(self) -> dict:
        return {"repeat": self.repeat, "min_time": self.min_time, "warmup": self.warmup}


def dispatch(family: str, kind: str, m: int, n: int, dtype: str) -> tpp.Kernel:
    if family == "binary":
        return tpp.binary(kind, m, n, dtype)
    out_dtype = _OTHER_DTYPE.get(dtype) if kind == "cast" else None
    return tpp.unary(kind, m, n, dtype, out_dtype=out_dtype)


def _inputs(kernel: tpp.Kernel, rng: np.random.Generator) -> list[np.ndarray]:
    lo, hi = _DOMAIN.get(kernel.descriptor.kind, _DEFAULT_DOMAIN)
    arrays = []
    for op in kernel.descriptor.operands():
        if op.output:
            continue
        x = rng.random((op.rows, op.cols), dtype=np.float32)
        x *= hi - lo
        x += lo
        arrays.append(x.astype(to_numpy(op.dtype), copy=False))
    return arrays


def _outputs(kernel: tpp.Kernel) -> list[np.ndarray]:
    return [np.empty((op.rows, op.cols), to_numpy(op.dtype))
            for op in kernel.descriptor.operands() if op.output]


def _call_fn(kernel: tpp.Kernel, ins: list, out: np.ndarray):
    """What a user writes: k(x, out=y)."""
    if len(ins) == 1:
        x = ins[0]
        return lambda: kernel(x, out=out)
    if len(ins) == 2:
        a, b = ins
        return lambda: kernel(a, b, out=out)
    return lambda: kernel(*ins, out=out)


def _rates(stats: timing.Stats, nbytes: int, elems: int) -> dict:
    return {**stats.as_dict(), "us_per_call": stats.median * 1e6,
            "gbps": nbytes / stats.median / 1e9, "gelem_s": elems / stats.median / 1e9}


def _agree(kernel, ins, fns, dtype: str) -> bool:
    """Do the kernel and every numpy candidate compute the same values?"""
    y_tpp = _call_fn(kernel, ins, _outputs(kernel)[0])()
    rtol, atol = _AGREE.get(dtype, (2e-3, 1e-4))
    ok = True
    for fn, out in fns:
        fn()
        ok &= bool(np.allclose(np.asarray(y_tpp, np.float64), np.asarray(out, np.float64),
                               rtol=rtol, atol=atol, equal_nan=True))
    return ok


def run_case(family: str, kind: str, m: int, n: int, dtype: str, opts: Options,
             seed: int = 0) -> dict:
    """One row: tpp kernel-level and call-level timings beside numpy's best, same data."""
    row = {"suite": family, "op": kind, "m": m, "n": n, "shape": f"{m}x{n}", "dtype": str(dtype),
           "transcendental": kind in TRANSCENDENTAL}
    try:
        dtype = row["dtype"] = parse_dtype(dtype).value
        kernel = dispatch(family, kind, m, n, dtype)
    except tpp.TppError as exc:
        return {**row, "error": str(exc)}
    ins = _inputs(kernel, np.random.default_rng(seed))
    outs = _outputs(kernel)
    if len(outs) != 1:
        return {**row, "error": "kernels with several outputs are not benchmarked"}
    nbytes = sum(a.nbytes for a in ins + outs)
    elems = m * n
    row.update(bytes=nbytes, elements=elems)
    runs = {"tpp_kernel": kernel_runner(kernel, ins + outs),
            "tpp_call": timing.loop(_call_fn(kernel, ins, outs[0]))}
    table = baselines.BINARY if family == "binary" else baselines.UNARY
    builder = table.get(kind)
    candidates = {}
    if builder is not None:
        y_np = _outputs(kernel)[0]
        alpha = kernel.descriptor.alpha_value() if family == "unary" else None
        candidates = builder(ins, y_np, alpha)
        row["baseline_agrees"] = _agree(kernel, ins, [(fn, y_np) for fn in candidates.values()], dtype)
        runs.update({"np:" + expr: timing.loop(fn) for expr, fn in candidates.items()})
    stats = timing.measure_many(runs, **opts.timing())      # interleaved: same noise for all
    tk, tc = stats["tpp_kernel"], stats["tpp_call"]
    row["tpp_kernel"] = _rates(tk, nbytes, elems)
    row["tpp_call"] = _rates(tc, nbytes, elems)
    if not candidates:
        row.update(numpy=None, ratio_kernel=None, ratio_call=None)
        return row
    expr, tn = timing.best({e: stats["np:" + e] for e in candidates})
    row["numpy"] = {**_rates(tn, nbytes, elems), "expr": expr, "candidates": len(candidates)}
    row["ratio_kernel"] = tn.median / tk.median       # > 1: tpp faster
    row["ratio_call"] = tn.median / tc.median
    return row


def sizes_rows(family: str, kinds, sizes, dtype: str, opts: Options) -> list[dict]:
    return [run_case(family, kind, m, n, dtype, opts) for kind in kinds for m, n in sizes]


def quick(opts: Options) -> list[dict]:
    """The issue's performance targets, GEMM 64^3 (%peak) and 16^3 (the call cost), beta=0,
    BRGEMM 64^3 x 16 stride (%peak), plus the JIT compile time of one unary kernel."""
    rows = [run_case(family, kind, m, n, "f32", opts) for family, kind, m, n in QUICK]
    rows += gemm_suite.quick(opts)
    rows += brgemm_suite.quick(opts)
    rows += compile_time.rows("relu", "f32", opts.repeat)
    return rows
