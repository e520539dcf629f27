"""matmul rows: tpp.ops.matmul beside np.matmul on the same thread count.

For each size every contender runs with its repetitions interleaved (the VM's
speed drifts by 2x between minutes, so only back-to-back repetitions compare):

    tpp_t{T}    tpp.ops.matmul(a, b, out=c, threads=T)
    np_t{T}     np.matmul(a, b, out=c) with numpy's BLAS set to T threads (set
                untimed before each of its repetitions; bench/blas.py)

OpenBLAS's workers spin for ~50-100 ms after a multi-thread call, on the CPUs
tpp's threads want: tpp's 2-thread matmul at 1024 ran at 80-95 GFLOP/s right
after np.matmul on 2 threads, 135-170 after a 0.1-0.2 s sleep. tpp's own workers
spin for a few ms (tpp/pool.py) and slowed numpy's 2-thread matmul the same way.
So the contender that follows any multi-thread repetition first sleeps SETTLE s,
untimed.

A row per (size, T): medians, the median over repetitions of np time / tpp time
(> 1: tpp faster) and, for T > 1, the median of tpp's 1-thread time / its T-thread
time (the speed-up). The process is not pinned: tpp's pool threads inherit the
affinity of the thread that starts them. All results are checked against a
float64 product.

`topology()` reports what the guest knows about its CPUs (sysfs), and whether
two of them are separate cores in practice: the f32 FMA loop of peak.py run on
each CPU at once against one CPU alone (SMT siblings share the FMA ports, so
they reach ~1x together; separate cores ~2x).
"""
from __future__ import annotations

import os
import statistics
import threading
import time

import numpy as np
import tpp.ops

import tpp
from tpp.dtypes import parse as parse_dtype
from tpp.dtypes import to_numpy

from . import blas, peak, timing
from .gemm_suite import ALIGN, aligned_empty

QUICK_SIZES = (512, 1024, 2048)
DTYPES = ("f32", "f64", "bf16")
SETTLE = 0.2            # seconds after a multi-thread numpy repetition (see above)
TOPOLOGY_TRIALS = 7     # the 2-CPU FMA scaling varies (1.2x-2.1x seen within a minute on the VM)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _concurrent_fma(cpus: list[int], count: int) -> float:
    """Seconds for `count` peak-loop runs on every CPU in `cpus` at once (the slowest)."""
    pl = peak.loop(None, "f32")
    barrier = threading.Barrier(len(cpus))
    took = [0.0] * len(cpus)

    def work(i: int, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})        # this thread only (Linux)
        out = peak.ffi.new("char[]", 64)
        barrier.wait()
        t0 = time.perf_counter()
        pl.fn(count * peak.ITERATIONS_PER_COUNT, out)     # cffi releases the GIL
        took[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(cpus)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(took)


def topology(measure: bool = True) -> dict:
    """CPUs visible, their SMT siblings and cores per sysfs, and (measure=True, two or more
    CPUs) the FMA-loop throughput of all of them at once relative to one alone."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    base = "/sys/devices/system/cpu/cpu{}/topology/"
    info = {"cpus": cpus, "siblings": {c: _read(base.format(c) + "thread_siblings_list") for c in cpus},
            "core_id": {c: _read(base.format(c) + "core_id") for c in cpus},
            "package": {c: _read(base.format(c) + "physical_package_id") for c in cpus},
            "hypervisor": "hypervisor" in (_read("/proc/cpuinfo") or "").split()}
    cores = {(info["package"][c], info["core_id"][c]) for c in cpus}
    info["distinct_cores"] = len(cores) if None not in {x for pair in cores for x in pair} else None
    info["smt_siblings_visible"] = any(s and ("," in s or "-" in s) for s in info["siblings"].values())
    if measure and len(cpus) >= 2 and hasattr(os, "sched_setaffinity"):
        pair = cpus[:2]
        count = max(1, timing.calibrate(peak.loop(None, "f32").run, 0.03))
        ratios = []
        for _ in range(TOPOLOGY_TRIALS):
            one = _concurrent_fma(pair[:1], count)
            both = _concurrent_fma(pair, count)
            ratios.append(2 * one / both)       # work done at once over the same work on one CPU
        info["fma_scaling_2cpus"] = statistics.median(ratios)
        info["fma_scaling_range"] = (min(ratios), max(ratios))
        info["fma_scaling_cpus"] = pair
    return info


def describe_topology(info: dict) -> str:
    sib = ", ".join(f"cpu{c}: {s}" for c, s in info["siblings"].items())
    text = (f"CPUs {','.join(map(str, info['cpus']))} ({'VM guest' if info['hypervisor'] else 'bare metal?'}); "
            f"sysfs: {info['distinct_cores']} distinct core(s), SMT siblings per CPU [{sib}]"
            f"{' (no SMT siblings visible)' if not info['smt_siblings_visible'] else ''}")
    if "fma_scaling_2cpus" in info:
        x = info["fma_scaling_2cpus"]
        lo, hi = info["fma_scaling_range"]
        text += (f"; FMA loop on cpu{info['fma_scaling_cpus'][0]}+cpu{info['fma_scaling_cpus'][1]} at once: "
                 f"{x:.2f}x one CPU, {lo:.2f}-{hi:.2f} over {TOPOLOGY_TRIALS} tries "
                 f"({'separate cores in practice' if x > 1.7 else 'they share FMA units'}"
                 f"{'; at times they do not' if lo < 1.7 <= x else ''})")
    return text


def _settled(fn):
    def run() -> None:
        fn()
        time.sleep(SETTLE)
    return run


def run_case(m: int, n: int, k: int, thread_counts, opts, seed: int = 0, dtype: str = "f32",
             trans_a: bool = False, trans_b: bool = False) -> list[dict]:
    """Rows for one size: tpp.ops.matmul and np.matmul at each thread count, interleaved.
    bf16: tpp multiplies the bf16 arrays (C f32), numpy float32 copies of them (it has
    no bf16 BLAS; the copies are made once, untimed). trans_a / trans_b: both sides get
    a / b as the .T views of C-order (k x m) / (n x k) arrays."""
    thread_counts = list(dict.fromkeys(thread_counts))
    rng = np.random.default_rng(seed)
    in_type = to_numpy(parse_dtype(dtype))
    out_type = np.float64 if dtype == "f64" else np.float32
    a = aligned_empty((k, m), in_type).T if trans_a else aligned_empty((m, k), in_type)
    b = aligned_empty((n, k), in_type).T if trans_b else aligned_empty((k, n), in_type)
    a[...] = rng.uniform(-1, 1, a.shape)
    b[...] = rng.uniform(-1, 1, b.shape)
    # astype keeps each view's order (K: the copies are stored like the originals)
    a_np, b_np = (a, b) if in_type == out_type else (a.astype(out_type), b.astype(out_type))
    runs, prepare, outs = {}, {}, {}
    one_blas = blas.setter(1)
    for t in thread_counts:
        c_tpp, c_np = outs[f"tpp_t{t}"], outs[f"np_t{t}"] = (aligned_empty((m, n), out_type),
                                                               aligned_empty((m, n), out_type))
        runs[f"tpp_t{t}"] = timing.loop(lambda c=c_tpp, t=t: tpp.ops.matmul(a, b, out=c, threads=t))
        runs[f"np_t{t}"] = timing.loop(lambda c=c_np: np.matmul(a_np, b_np, out=c))
        prepare[f"tpp_t{t}"], prepare[f"np_t{t}"] = one_blas, blas.setter(t)
    order = list(runs)
    for name, before in zip(order, order[-1:] + order[:-1]):     # cyclic: repetitions go round
        if int(before.split("_t")[1]) > 1:
            prepare[name] = _settled(prepare[name])
    for c in outs.values():
        c.fill(np.nan)
    head = {"suite": "matmul", "op": "matmul", "m": m, "n": n, "k": k, "shape": f"{m}x{n}x{k}",
            "dtype": dtype, "flops": 2 * m * n * k, "align_bytes": ALIGN,
            "layout": f"{'A^T' if trans_a else 'A'} {'B^T' if trans_b else 'B'}"}
    try:
        counts, per_op = timing.sample_many(runs, **opts.timing(), prepare=prepare)
    except tpp.TppError as exc:
        return [{**head, "threads": t, "error": str(exc)} for t in thread_counts]
    finally:
        one_blas()
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref, scale = a64 @ b64, np.abs(a64) @ np.abs(b64) + np.finfo(np.float64).tiny
    errors = {name: float(np.max(np.abs(c - ref) / scale)) for name, c in outs.items()}
    tol = k * float(np.finfo(out_type).eps)       # bf16: both sides add in f32
    rows = []
    for t in thread_counts:
        st = {x: timing.stats_of(per_op[f"{x}_t{t}"], counts[f"{x}_t{t}"]) for x in ("tpp", "np")}
        row = {**head, "threads": t, "tolerance": tol,
               "max_rel_err": {x: errors[f"{x}_t{t}"] for x in ("tpp", "np")}}
        for x, key in (("tpp", "tpp"), ("np", "numpy")):
            row[key] = {**st[x].as_dict(), "ms_per_call": st[x].median * 1e3,
                        "gflops": row["flops"] / st[x].median / 1e9}
        copies = "" if a_np is a else f" on {np.dtype(out_type).name} copies of the {dtype} a, b"
        views = "".join(f", {x} = {x}t.T" for x, flag in (("a", trans_a), ("b", trans_b)) if flag)
        row["numpy"]["expr"] = f"np.matmul(a, b, out=c){copies}{views}  [BLAS threads {t}]"
        ratios = [tn / tt for tn, tt in zip(per_op[f"np_t{t}"], per_op[f"tpp_t{t}"])]
        row["ratio"], row["ratio_min"], row["ratio_max"] = statistics.median(ratios), min(ratios), max(ratios)
        base = thread_counts[0]
        if t != base and base == 1:
            ups = [t1 / tt for t1, tt in zip(per_op["tpp_t1"], per_op[f"tpp_t{t}"])]
            np_ups = [t1 / tt for t1, tt in zip(per_op["np_t1"], per_op[f"np_t{t}"])]
            row["speedup_vs_1"], row["np_speedup_vs_1"] = statistics.median(ups), statistics.median(np_ups)
        row["result_ok"] = errors[f"tpp_t{t}"] <= tol
        row["baseline_agrees"] = errors[f"np_t{t}"] <= tol
        rows.append(row)
    return rows


def sizes_rows(sizes, thread_counts, dtype, trans_a, trans_b, opts) -> list[dict]:
    return [row for m, n, k in sizes
            for row in run_case(m, n, k, thread_counts, opts, dtype=dtype, trans_a=trans_a, trans_b=trans_b)]
