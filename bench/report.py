"""Output: a header about the machine, an aligned table, or JSON."""
from __future__ import annotations

import json
import os
import platform
from typing import Callable

import llvmlite
import numpy as np

import tpp
from tpp.jit import compiler


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(pinned: int | None) -> dict:
    target = tpp.current_target()
    return {"target": target.name, "llvm_cpu": target.cpu, "cpu": cpu_name(), "threads": 1,
            "pinned_cpu": pinned, "cores_visible": os.cpu_count(), "tpp": tpp.__version__,
            "numpy": np.__version__, "llvmlite": llvmlite.__version__, "llvm": compiler.llvm_version()}


def header(info: dict, opts) -> str:
    pin = f"pinned to cpu {info['pinned_cpu']}" if info["pinned_cpu"] is not None else "not pinned"
    blas = info.get("blas_threads")
    blas = f", numpy BLAS threads {blas}" if blas is not None else ""
    lines = [(f"tpp-bench {info['tpp']} | target {info['target']} ({info['llvm_cpu']}) | "
              f"CPU {info['cpu']} | threads 1 ({pin}{blas}) | numpy {info['numpy']}, "
              f"llvmlite {info['llvmlite']}, LLVM {info['llvm']}"),
             (f"medians of {opts.repeat} repetitions of >= {opts.min_time * 1e3:g} ms after warm-up; "
              f"kern = JIT repeat loop (no Python), call = k(x, out=y) or g(a, b, c) from Python; "
              f"ratio > 1: tpp faster")]
    if info.get("elementwise", True):
        lines.append("elementwise: GB/s = (bytes read + written) / time")
    pk = info.get("peak")
    if pk:
        lines.append(f"FMA peak {pk['dtype']}: {pk['gflops']:.1f} GFLOP/s now ({pk['loop']}, JIT loop; "
                     f"median of {opts.repeat}); speed drifts, so each GEMM row divides by the peak "
                     f"timed just before each of its repetitions (peak GF/s column)")
        lines.append("gemm: beta=0, C = op(A) op(B) (what np.matmul(a, b, out=c) computes), operands 64-byte "
                     "aligned; "
                     "GF/s = 2MNK / time; %peak = median over repetitions of kern GF/s / peak")
    return "\n".join(lines)


def _f(value, fmt: str = "{:.1f}") -> str:
    return "" if value is None else fmt.format(value)


def _us(value) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _get(row: dict, part: str, field: str):
    sub = row.get(part)
    return None if not sub else sub.get(field)


# (column title, cell function, right-aligned)
_COLUMNS: list[tuple[str, Callable[[dict], str], bool]] = [
    ("op", lambda r: r["op"], False),
    ("shape", lambda r: r["shape"], False),
    ("dtype", lambda r: r["dtype"], False),
    ("kern GB/s", lambda r: _f(_get(r, "tpp_kernel", "gbps")), True),
    ("call GB/s", lambda r: _f(_get(r, "tpp_call", "gbps")), True),
    ("numpy GB/s", lambda r: _f(_get(r, "numpy", "gbps")), True),
    ("kern/np", lambda r: _f(r.get("ratio_kernel"), "{:.2f}"), True),
    ("call/np", lambda r: _f(r.get("ratio_call"), "{:.2f}"), True),
    ("kern Gelem/s", lambda r: _f(_get(r, "tpp_kernel", "gelem_s"), "{:.2f}") if r["transcendental"] else "",
     True),
    ("np Gelem/s", lambda r: _f(_get(r, "numpy", "gelem_s"), "{:.2f}") if r["transcendental"] else "", True),
    ("tpp us/call", lambda r: _us(_get(r, "tpp_call", "us_per_call")), True),
    ("np us/call", lambda r: _us(_get(r, "numpy", "us_per_call")), True),
    ("spread", lambda r: _f(_spread(r), "{:.0%}"), True),
    ("numpy expression", lambda r: _numpy_expr(r), False),
]


def _gemm_check(row: dict) -> str:
    if not row.get("result_ok"):
        return "WRONG: " + ", ".join(f"{k} {v:.1e}" for k, v in row["max_rel_err"].items()
                                     if not v <= row["tolerance"])
    return "ok" if row.get("baseline_agrees") else "ok (numpy differs)"


_GEMM_COLUMNS: list[tuple[str, Callable[[dict], str], bool]] = [
    ("op", lambda r: r["op"], False),
    ("M", lambda r: str(r["m"]), True),
    ("N", lambda r: str(r["n"]), True),
    ("K", lambda r: str(r["k"]), True),
    ("dtype", lambda r: r["dtype"], False),
    ("layout", lambda r: r["layout"], False),
    ("kern GF/s", lambda r: _f(_get(r, "tpp_kernel", "gflops")), True),
    ("%peak", lambda r: _f(_get(r, "tpp_kernel", "pct_peak"), "{:.0f}%"), True),
    ("call us", lambda r: _us(_get(r, "tpp_call", "us_per_call")), True),
    ("call GF/s", lambda r: _f(_get(r, "tpp_call", "gflops")), True),
    ("np us", lambda r: _us(_get(r, "numpy", "us_per_call")), True),
    ("np GF/s", lambda r: _f(_get(r, "numpy", "gflops")), True),
    ("kern/np", lambda r: _f(r.get("ratio_kernel"), "{:.2f}"), True),
    ("call/np", lambda r: _f(r.get("ratio_call"), "{:.2f}"), True),
    ("peak GF/s", lambda r: _f(_get(r, "peak", "gflops")), True),
    ("spread", lambda r: _f(_spread(r), "{:.0%}"), True),
    ("check", _gemm_check, False),
]


def _spread(row: dict) -> float | None:
    parts = [row[p]["spread"] for p in ("tpp_kernel", "tpp_call", "numpy") if row.get(p)]
    return max(parts) if parts else None


def _numpy_expr(row: dict) -> str:
    np_part = row.get("numpy")
    if not np_part:
        return "(no numpy expression)"
    text = np_part["expr"]
    if np_part.get("candidates", 1) > 1:
        text += f"  [best of {np_part['candidates']}]"
    if row.get("baseline_agrees") is False:
        text += "  [WARNING: values differ from tpp]"
    return text


def _aligned(titles: list[str], cells: list[list[str]], right: list[bool]) -> list[str]:
    widths = [max(len(t), *(len(c[i]) for c in cells)) if cells else len(t) for i, t in enumerate(titles)]

    def line(values):
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()
    return [line(titles)] + [line(c) for c in cells]


def table(rows: list[dict]) -> str:
    kernels = [r for r in rows if r["suite"] not in ("compile", "gemm") and "error" not in r]
    gemms = [r for r in rows if r["suite"] == "gemm" and "error" not in r]
    compiles = [r for r in rows if r["suite"] == "compile" and "error" not in r]
    errors = [r for r in rows if "error" in r]
    out = []
    if kernels:
        out += _aligned([c[0] for c in _COLUMNS], [[c[1](r) for c in _COLUMNS] for r in kernels],
                        [c[2] for c in _COLUMNS])
    if gemms:
        if out:
            out.append("")
        out += _aligned([c[0] for c in _GEMM_COLUMNS], [[c[1](r) for c in _GEMM_COLUMNS] for r in gemms],
                        [c[2] for c in _GEMM_COLUMNS])
    if compiles:
        out.append("")
        titles = ["JIT compile", "kernel", "dtype", "median ms", "min ms", "reps", "how"]
        cells = [[r["mode"], r["op"] + " " + r["shape"], r["dtype"], f"{r['ms']:.2f}", f"{r['min_ms']:.2f}",
                  str(r["reps"]), r["method"] + ("" if r.get("verified_disk_hit", True)
                                                 else "  [WARNING: not a verified disk hit]")]
                 for r in compiles]
        out += _aligned(titles, cells, [False, False, False, True, True, True, False])
    for r in errors:
        out.append(f"skipped {r['op']} {r.get('shape', '')} {r.get('dtype', '')}: {r['error']}")
    return "\n".join(out)


def to_json(rows: list[dict], info: dict) -> str:
    """A list of rows; each carries the machine fields so rows from many runs can be pooled."""
    slim = {k: info[k] for k in ("target", "cpu", "threads", "blas_threads") if k in info}
    if info.get("peak"):
        slim["machine_peak_gflops"] = info["peak"]["gflops"]
    return json.dumps([{**r, **slim} for r in rows], indent=1)
