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


def _peak_line(pk: dict, opts) -> str:
    what = pk.get("what", "FMA")
    what = f"FMA peak {pk['dtype']}" if what == "FMA" else f"{what} peak ({pk['dtype']})"
    if pk.get("available", True) is False:
        return f"{what}: unavailable ({pk['reason']})"
    return (f"{what}: {pk['gflops']:.1f} {pk.get('unit', 'GFLOP/s')} now ({pk['loop']}, JIT loop; "
            f"median of {opts.repeat})")


def header(info: dict, opts) -> str:
    pin = f"pinned to cpu {info['pinned_cpu']}" if info["pinned_cpu"] is not None else "not pinned"
    blas = info.get("blas_threads")
    blas = f", numpy BLAS threads {blas}" if blas is not None else ""
    lines = [(f"tpp-bench {info['tpp']} | target {info['target']} ({info['llvm_cpu']}) | "
              f"CPU {info['cpu']} | threads {info['threads']} ({pin}{blas}) | numpy {info['numpy']}, "
              f"llvmlite {info['llvmlite']}, LLVM {info['llvm']}"),
             (f"medians of {opts.repeat} repetitions of >= {opts.min_time * 1e3:g} ms after warm-up; "
              + info.get("legend", "kern = JIT repeat loop (no Python), call = k(x, out=y) or g(a, b, c) "
                                   "from Python; ratio > 1: tpp faster"))]
    if info.get("topology"):
        lines.append("topology: " + info["topology"])
    if info.get("elementwise", True):
        lines.append("elementwise: GB/s = (bytes read + written) / time")
    peaks = info.get("peaks") or ([info["peak"]] if info.get("peak") else [])
    for pk in peaks:
        lines.append(_peak_line(pk, opts))
    if peaks:
        lines.append("speed drifts, so each GEMM/BRGEMM row divides by its peak timed just before each of "
                     "its repetitions (peak column); %peak = median over repetitions of kern rate / peak")
        lines.append("gemm: beta=0, C = op(A) op(B) (what np.matmul(a, b, out=c) computes), operands 64-byte "
                     "aligned; GF/s = 2MNK / time (GOP/s for int8)")
    lines += info.get("notes", [])
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
    if row.get("packed_ok") is False:
        return "WRONG: tpp vnni_pack differs from the numpy packing"
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
    parts = [row[p]["spread"] for p in ("tpp_kernel", "tpp_call", "numpy", "tpp") if row.get(p)]
    return max(parts) if parts else None


def _dot_columns(rows: list[dict]) -> list[tuple[str, Callable[[dict], str], bool]]:
    """bf16 / u8s8 GEMM rows: rates in the dtype's unit, numpy computing in f32."""
    u = "GOP/s" if rows[0].get("unit") == "GOP/s" else "GF/s"
    cols = _GEMM_COLUMNS[:6] + [
        (f"kern {u}", lambda r: _f(_get(r, "tpp_kernel", "gflops")), True),
        ("%peak", lambda r: _f(_get(r, "tpp_kernel", "pct_peak"), "{:.0f}%") or "n/a", True),
        ("call us", lambda r: _us(_get(r, "tpp_call", "us_per_call")), True),
        (f"call {u}", lambda r: _f(_get(r, "tpp_call", "gflops")), True),
        ("np f32 us", lambda r: _us(_get(r, "numpy", "us_per_call")), True),
        ("np f32 GF/s", lambda r: _f(_get(r, "numpy", "gflops")), True),
        ("kern/np", lambda r: _f(r.get("ratio_kernel"), "{:.2f}"), True),
        ("call/np", lambda r: _f(r.get("ratio_call"), "{:.2f}"), True)]
    if any("int8_over_f32" in r for r in rows):
        cols += [("tpp f32 GF/s", lambda r: _f(_get(r, "tpp_f32", "gflops")), True),
                 ("i8/f32", lambda r: _f(r.get("int8_over_f32"), "{:.2f}x"), True)]
    return cols + [(f"peak {u}", lambda r: _f(_get(r, "peak", "gflops")) or "n/a", True),
                   ("spread", lambda r: _f(_spread(r), "{:.0%}"), True), ("check", _gemm_check, False)]


_BRGEMM_COLUMNS: list[tuple[str, Callable[[dict], str], bool]] = [
    ("op", lambda r: r["op"], False),
    ("M", lambda r: str(r["m"]), True), ("N", lambda r: str(r["n"]), True), ("K", lambda r: str(r["k"]), True),
    ("batch", lambda r: str(r["batch"]), True),
    ("kern GF/s", lambda r: _f(_get(r, "tpp_kernel", "gflops")), True),
    ("%peak", lambda r: _f(_get(r, "tpp_kernel", "pct_peak"), "{:.0f}%"), True),
    ("kern us", lambda r: _us(_get(r, "tpp_kernel", "us_per_call")), True),
    ("call us", lambda r: _us(_get(r, "tpp_call", "us_per_call")), True),
    ("np us", lambda r: _us(_get(r, "numpy", "us_per_call")), True),
    ("np GF/s", lambda r: _f(_get(r, "numpy", "gflops")), True),
    ("kern/np", lambda r: _f(r.get("ratio_kernel"), "{:.2f}"), True),
    ("call/np", lambda r: _f(r.get("ratio_call"), "{:.2f}"), True),
    ("peak GF/s", lambda r: _f(_get(r, "peak", "gflops")), True),
    ("spread", lambda r: _f(_spread(r), "{:.0%}"), True),
    ("check", _gemm_check, False),
    ("numpy expression (fastest of 3)", lambda r: _get(r, "numpy", "expr") or "", False),
]

_MATMUL_COLUMNS: list[tuple[str, Callable[[dict], str], bool]] = [
    ("op", lambda r: r["op"], False),
    ("M", lambda r: str(r["m"]), True), ("N", lambda r: str(r["n"]), True), ("K", lambda r: str(r["k"]), True),
    ("dtype", lambda r: r["dtype"], False),
    ("layout", lambda r: r["layout"], False),
    ("threads", lambda r: str(r["threads"]), True),
    ("tpp GF/s", lambda r: _f(_get(r, "tpp", "gflops")), True),
    ("tpp ms", lambda r: _f(_get(r, "tpp", "ms_per_call"), "{:.2f}"), True),
    ("np GF/s", lambda r: _f(_get(r, "numpy", "gflops")), True),
    ("np ms", lambda r: _f(_get(r, "numpy", "ms_per_call"), "{:.2f}"), True),
    ("tpp/np", lambda r: _f(r.get("ratio"), "{:.2f}"), True),
    ("tpp/np min-max", lambda r: f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}", True),
    ("tpp speed-up", lambda r: _f(r.get("speedup_vs_1"), "{:.2f}x"), True),
    ("np speed-up", lambda r: _f(r.get("np_speedup_vs_1"), "{:.2f}x"), True),
    ("spread", lambda r: _f(_spread(r), "{:.0%}"), True),
    ("check", _gemm_check, False),
]


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


_GPU_COLUMNS = [
    ("op", lambda r: r["op"], False), ("shape", lambda r: r["shape"], False), ("target", lambda r: r["target"], False),
    ("GB/s", lambda r: _f(r["gbps"]), True), ("ms", lambda r: f"{r['ms']:.3f}", True),
    ("copy GB/s", lambda r: _f(r["copy_gbps"]), True), ("% of copy", lambda r: f"{r['pct_copy']:.0f}%", True),
    ("check", lambda r: "ok" if r["result_ok"] else "WRONG", False),
]

_GPU_GEMM_COLUMNS = [
    ("op", lambda r: r["op"], False), ("shape", lambda r: r["shape"], False), ("dtype", lambda r: r["dtype"], False),
    ("target", lambda r: r["target"], False), ("TFLOP/s", lambda r: _f(r["tflops"]), True),
    ("ms", lambda r: f"{r['ms']:.3f}", True),
    ("torch.matmul TFLOP/s", lambda r: _f(r["torch_tflops"]) if r["torch_tflops"] else "-", True),
    ("% of torch", lambda r: f"{r['pct_torch']:.0f}%" if r["pct_torch"] else "-", True),
    ("check", lambda r: "ok" if r["result_ok"] else "WRONG", False),
]

_CAPI_COLUMNS = [
    ("op", lambda r: "gemm (C)", False), ("M", lambda r: str(r["m"]), True), ("N", lambda r: str(r["n"]), True),
    ("K", lambda r: str(r["k"]), True), ("C GF/s", lambda r: _f(r["c"]["gflops"]), True),
    ("%peak", lambda r: f"{r['c_pct_peak']:.0f}%", True), ("py kern GF/s", lambda r: _f(r["py_kernel"]["gflops"]), True),
    ("C/py", lambda r: f"{r['ratio_c_py']:.3f}", True), ("peak GF/s", lambda r: _f(r["peak_gflops"]), True),
    ("LIBXSMM ref", lambda r: _f(r["libxsmm_reference_gflops"]) if r["libxsmm_reference_gflops"] else "-", True),
    ("init ms", lambda r: _f(r["init_ms"]), True), ("1st dispatch JIT ms", lambda r: _f(r["first_dispatch_jit_ms"]), True),
    ("1st dispatch disk ms", lambda r: _f(r["first_dispatch_disk_ms"], "{:.2f}"), True),
    ("dispatch us", lambda r: _f(r["cached_dispatch_us"], "{:.3f}"), True),
]


def _aligned(titles: list[str], cells: list[list[str]], right: list[bool]) -> list[str]:
    widths = [max(len(t), *(len(c[i]) for c in cells)) if cells else len(t) for i, t in enumerate(titles)]

    def line(values):
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()
    return [line(titles)] + [line(c) for c in cells]


def _grid(columns, rows: list[dict]) -> list[str]:
    return _aligned([c[0] for c in columns], [[c[1](r) for c in columns] for r in rows], [c[2] for c in columns])


def table(rows: list[dict]) -> str:
    """One aligned table per kind of row, in the order the kinds first appear."""
    errors = [r for r in rows if "error" in r]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if "error" not in r:
            key = r.get("table", r["suite"])
            groups.setdefault(key if key in ("compile", "gemm", "gemm_dot", "brgemm", "matmul", "capi", "gpu",
                                             "gpu_gemm", "ops")
                              else "kernel", []).append(r)
    out = []
    for key, group in groups.items():
        if out:
            out.append("")
        if key == "kernel":
            out += _grid(_COLUMNS, group)
        elif key == "gemm":
            out += _grid(_GEMM_COLUMNS, group)
        elif key == "gemm_dot":
            out += _grid(_dot_columns(group), group)
        elif key == "brgemm":
            out += _grid(_BRGEMM_COLUMNS, group)
        elif key == "matmul":
            out += _grid(_MATMUL_COLUMNS, group)
        elif key == "capi":
            out += _grid(_CAPI_COLUMNS, group)
        elif key == "gpu":
            out += _grid(_GPU_COLUMNS, group)
        elif key == "gpu_gemm":
            out += _grid(_GPU_GEMM_COLUMNS, group)
        elif key == "ops":
            from .ops_suite import COLUMNS
            out += _grid(COLUMNS, group)
        else:
            titles = ["JIT compile", "kernel", "dtype", "median ms", "min ms", "reps", "how"]
            cells = [[r["mode"], r["op"] + " " + r["shape"], r["dtype"], f"{r['ms']:.2f}", f"{r['min_ms']:.2f}",
                      str(r["reps"]), r["method"] + ("" if r.get("verified_disk_hit", True)
                                                     else "  [WARNING: not a verified disk hit]")]
                     for r in group]
            out += _aligned(titles, cells, [False, False, False, True, True, True, False])
    for r in errors:
        out.append(f"skipped {r['op']} {r.get('shape', '')} {r.get('dtype', '')}: {r['error']}")
    return "\n".join(out)


def to_json(rows: list[dict], info: dict) -> str:
    """A list of rows; each carries the machine fields so rows from many runs can be pooled."""
    slim = {k: info[k] for k in ("target", "cpu", "threads", "blas_threads") if k in info}
    if info.get("peak") and info["peak"].get("available", True):
        slim["machine_peak_gflops"] = info["peak"]["gflops"]
    return json.dumps([{**slim, **r} for r in rows], indent=1)      # a row's own fields win (threads)
