"""`tpp-bench ops`: the small composites of the composition layer beside their
baselines, same data, repetitions interleaved, one row per (op, shape, threads).

    bias_act   tpp.ops.bias_act(x, b, "relu", out=y)  vs  numpy's best of
               np.add(x, b, out=y); np.maximum(y, 0, out=y)  and  the same with
               np.add(x, b, out=y); y.clip(0, None, out=y)   (GB/s: x read, y written)
    segment    tpp.ops.segment_sum(indptr, x)  vs  np.add.reduceat on the non-empty
               segments, and scipy's CSR (all ones) @ x where scipy is installed
               (GFLOP/s: one add per x element read)

The segments are made here, seeded: uniform degree (0..2x the mean) or power law
(a Zipf-like tail, the rows shuffled): the shares split by nonzeros are what the
power-law rows measure. numpy and scipy run on one thread; tpp's threads are
given per row.
"""
from __future__ import annotations

import numpy as np

import tpp.ops

from . import timing

COLUMNS = [
    ("op", lambda r: r["op"], False), ("shape", lambda r: r["shape"], False), ("dtype", lambda r: r["dtype"], False),
    ("threads", lambda r: str(r["threads"]), True),
    ("tpp", lambda r: f"{r['tpp']:.1f} {r['unit']}", True), ("tpp ms", lambda r: f"{r['tpp_ms']:.3f}", True),
    ("baseline", lambda r: f"{r['base']:.1f} {r['unit']}", True), ("base ms", lambda r: f"{r['base_ms']:.3f}", True),
    ("tpp/base", lambda r: f"{r['ratio']:.2f}", True), ("baseline is", lambda r: r["base_name"], False),
    ("check", lambda r: "ok" if r["result_ok"] else "WRONG", False),
]


def _row(op, shape, dtype, threads, unit, work, stats, tpp_name, ok) -> dict:
    base_name = min((k for k in stats if k != tpp_name), key=lambda k: stats[k].median)
    t, b = stats[tpp_name].median, stats[base_name].median
    return {"suite": "ops", "table": "ops", "op": op, "shape": shape, "dtype": dtype, "threads": threads,
            "unit": unit, "tpp": work / t, "tpp_ms": t * 1e3, "base": work / b, "base_ms": b * 1e3,
            "ratio": b / t, "base_name": base_name, "result_ok": ok,
            "stats": {k: v.as_dict() for k, v in stats.items()}}


def bias_act_rows(shapes, thread_counts, opts) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for m, n in shapes:
        x = rng.standard_normal((m, n), dtype=np.float32)
        b = rng.standard_normal(n, dtype=np.float32)
        y, z = np.empty_like(x), np.empty_like(x)

        def np_maximum():
            np.add(x, b, out=z)
            np.maximum(z, 0, out=z)

        def np_clip():
            np.add(x, b, out=z)
            z.clip(0, None, out=z)
        for threads in thread_counts:
            runs = {"tpp": timing.loop(lambda: tpp.ops.bias_act(x, b, "relu", out=y, threads=threads)),
                    "np.add+np.maximum": timing.loop(np_maximum), "np.add+clip": timing.loop(np_clip)}
            stats = timing.measure_many(runs, repeat=opts.repeat, min_time=opts.min_time)
            ok = np.array_equal(y, np.maximum(x + b, 0))
            rows.append(_row("bias_act relu", f"{m}x{n}", "f32", threads, "GB/s", 2 * x.nbytes / 1e9, stats, "tpp",
                             ok))
    return rows


def segments(rows: int, mean_degree: int, law: str, rng) -> np.ndarray:
    if law == "uniform":
        degree = rng.integers(0, 2 * mean_degree + 1, rows)
    else:
        degree = np.minimum(rng.zipf(1.8, rows), rows // 10)
        degree = np.maximum((degree * (mean_degree / degree.mean())).astype(np.int64), 0)
        rng.shuffle(degree)
    return np.concatenate([[0], np.cumsum(degree)]).astype(np.int64)


def segment_rows(sizes, thread_counts, opts) -> list[dict]:
    rows = []
    rng = np.random.default_rng(1)
    try:
        import scipy.sparse as sp
    except ImportError:
        sp = None
    for nrows, f, law in sizes:
        indptr = segments(nrows, 16, law, rng)
        nnz = int(indptr[-1])
        x = rng.standard_normal((nnz, f), dtype=np.float32)
        out = np.empty((nrows, f), np.float32)
        starts = indptr[:-1][np.diff(indptr) > 0]
        runs = {"np.add.reduceat": timing.loop(lambda: np.add.reduceat(x, starts, axis=0))}
        if sp is not None:
            a = sp.csr_matrix((np.ones(nnz, np.float32), np.arange(nnz), indptr), shape=(nrows, nnz))
            runs["scipy csr @ x"] = timing.loop(lambda: a @ x)
        for threads in thread_counts:
            runs["tpp"] = timing.loop(lambda: tpp.ops.segment_sum(indptr, x, out=out, threads=threads))
            stats = timing.measure_many(runs, repeat=opts.repeat, min_time=opts.min_time)
            ok = _segments_ok(out, indptr, x, starts)
            rows.append(_row(f"segment_sum {law}", f"{nrows}x{f} nnz={nnz}", "f32", threads, "GFLOP/s",
                             nnz * f / 1e9, stats, "tpp", ok))
    return rows


def _segments_ok(got, indptr, x, starts) -> bool:
    """Within the recursive-summation bound of a float64 reference: (n + 1) eps sum |x|."""
    full = np.diff(indptr) > 0
    want, scale = np.zeros(got.shape), np.zeros(got.shape)
    want[full] = np.add.reduceat(x.astype(np.float64), starts, axis=0)
    scale[full] = np.add.reduceat(np.abs(x.astype(np.float64)), starts, axis=0)
    bound = (np.diff(indptr)[:, None] + 1) * 2.0 ** -23 * scale
    return bool(np.all(np.abs(got - want) <= bound))


BIAS_SHAPES = ((256, 1024), (4096, 4096))
SEGMENT_SIZES = ((100_000, 64, "uniform"), (100_000, 64, "power-law"))


def rows(thread_counts, opts) -> list[dict]:
    return bias_act_rows(BIAS_SHAPES, thread_counts, opts) + segment_rows(SEGMENT_SIZES, thread_counts, opts)
