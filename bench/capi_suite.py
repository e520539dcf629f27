"""`tpp-bench capi`: GEMM kernels dispatched through libtpp and timed in a C loop.

The C driver (bench/c/gemm_driver.c) is built with the system compiler against a
libtpp built once per tpp version into the kernel cache directory. Per size:

    cold   the driver with TPP_CACHE=0: interpreter start, then a JIT compile
    C      the driver with the kernel cache (first dispatch: a disk-cache read);
           its repetitions time `gemm(args)` in a C loop
    py     the same kernel from this process, timed by the JIT repeat loop (the
           Python-side kernel-level number of `tpp-bench gemm`)

C and py alternate (C, py, C, py): the VM's speed drifts, so only neighbours
compare. LIBXSMM's figures (../shared/DESIGN.md, measured on the reference
machine, not this one) are printed beside them for orientation.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import threading
from pathlib import Path

import numpy as np

import tpp
from tpp import capi_build, config

from . import peak, timing
from .gemm_suite import aligned_empty
from .repeat import kernel_runner

DRIVER = Path(__file__).parent / "c" / "gemm_driver.c"
LIBXSMM_F32 = {8: 47.9, 16: 91.3, 32: 111.7, 64: 112.9, 128: 114.1, 256: 110.4}   # GFLOP/s, DESIGN.md
ROUNDS = 2
_lock = threading.Lock()


class Unavailable(RuntimeError):
    pass


def _fingerprint() -> str:
    h = hashlib.sha256()
    for path in (capi_build.HEADER, Path(capi_build.__file__), DRIVER):
        h.update(path.read_bytes())
    h.update(tpp.__version__.encode())
    return h.hexdigest()[:16]


def driver() -> Path:
    """The compiled C driver (built on first use, kept in the kernel cache directory)."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise Unavailable("tpp-bench capi needs a C compiler (cc)")
    home = Path(config.get().cache_dir) / f"capi-{_fingerprint()}"
    exe = home / "gemm_driver"
    with _lock:
        if not exe.is_file():
            paths = capi_build.build(home)
            inc, lib = paths["header"].parent, paths["library"].parent
            proc = subprocess.run([cc, "-O2", str(DRIVER), f"-I{inc}", f"-L{lib}", "-ltpp", f"-Wl,-rpath,{lib}",
                                   "-o", str(exe)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise Unavailable(f"building the C driver failed:\n{proc.stderr}")
    return exe


def run_driver(exe: Path, m: int, n: int, k: int, min_ms: float, reps: int, cache: bool = True) -> dict:
    env = dict(os.environ)
    if not cache:
        env["TPP_CACHE"] = "0"
    proc = subprocess.run([str(exe), str(m), str(n), str(k), f"{min_ms:g}", str(reps)], capture_output=True,
                          text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise Unavailable(f"the C driver failed ({proc.returncode}): {proc.stderr.strip()}")
    out = {}
    for line in proc.stdout.splitlines():
        key, *values = line.split()
        out[key] = [float(v) for v in values] if key == "gflops" else float(values[0])
    return out


def run_case(m: int, n: int, k: int, opts, exe: Path) -> dict:
    row = {"suite": "capi", "op": "gemm", "m": m, "n": n, "k": k, "shape": f"{m}x{n}x{k}", "dtype": "f32",
           "flops": 2 * m * n * k}
    min_ms = opts.min_time * 1e3
    cold = run_driver(exe, m, n, k, min_ms, 1, cache=False)
    g = tpp.gemm(m, n, k, beta=0.0)
    a, b, c = aligned_empty((m, k), np.float32), aligned_empty((k, n), np.float32), aligned_empty((m, n), np.float32)
    a[...], b[...] = 0.5, 0.25
    runs = {"py": kernel_runner(g, [a, b, c])}
    pl = peak.loop(None, "f32")
    c_rates, py_rates, peaks, warm = [], [], [], None
    for _ in range(ROUNDS):
        warm = run_driver(exe, m, n, k, min_ms, opts.repeat)
        c_rates += warm["gflops"]
        counts, per_op = timing.sample_many({"peak": pl.run, **runs}, repeat=opts.repeat, min_time=opts.min_time)
        py_rates += [row["flops"] / t / 1e9 for t in per_op["py"]]
        peaks += [peak.gflops(pl, t) for t in per_op["peak"]]
    row["c"] = {"gflops": statistics.median(c_rates), "gflops_max": max(c_rates), "reps": len(c_rates)}
    row["py_kernel"] = {"gflops": statistics.median(py_rates), "gflops_max": max(py_rates), "reps": len(py_rates)}
    row["peak_gflops"] = statistics.median(peaks)
    row["c_pct_peak"] = 100 * row["c"]["gflops"] / row["peak_gflops"]
    row["ratio_c_py"] = row["c"]["gflops"] / row["py_kernel"]["gflops"]
    row["libxsmm_reference_gflops"] = LIBXSMM_F32.get(m) if m == n == k else None
    row["init_ms"] = cold["init_s"] * 1e3
    row["first_dispatch_jit_ms"] = cold["first_dispatch_s"] * 1e3
    row["first_dispatch_disk_ms"] = warm["first_dispatch_s"] * 1e3
    row["cached_dispatch_us"] = warm["cached_dispatch_us"]
    return row


def sizes_rows(sizes, opts) -> list[dict]:
    try:
        exe = driver()
    except (Unavailable, OSError) as exc:
        return [{"suite": "capi", "op": "gemm", "shape": "x".join(map(str, s)), "error": str(exc)} for s in sizes]
    rows = []
    for m, n, k in sizes:
        try:
            rows.append(run_case(m, n, k, opts, exe))
        except Unavailable as exc:
            rows.append({"suite": "capi", "op": "gemm", "shape": f"{m}x{n}x{k}", "error": str(exc)})
    return rows
