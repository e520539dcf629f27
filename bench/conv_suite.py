"""`tpp-bench conv`: 2-D convolutions on ResNet-50's layer shapes beside a baseline,
same data, repetitions interleaved, one row per (shape, input kind, threads).

    conv          tpp.ops.conv_api.Conv2d(w, None, stride, R//2, 1, groups), prepared once
                  (weights packed at construction), timed as conv(x, threads=T) on a plain
                  NCHW input (NCHW output)
    conv blocked  the same prepared convolution on blocked activations:
                  xb = tpp.ops.layout.to_blocked(x) once, then conv(xb, threads=T)
                  (a Blocked NCHWc output); the op column names the block (c16); where
                  C is below the default block (the stem's 3 channels) the block is
                  conv.block, C (also in bf16, whose VNNI pairs then run across the
                  folded taps): a 16-channel block would cost Conv2d its folded taps

The baseline is torch.nn.functional.conv2d on the same arrays (torch.set_num_threads(T),
no_grad) where torch is installed (`pip install torch==2.13.0+cpu`), else numpy's
im2col (a strided sliding-window copy) and np.matmul with its BLAS on T threads;
`--baseline` picks one, the "baseline is" column says which ran. Both tpp rows of a
shape share the baseline's repetitions, and every output is checked against the
baseline's (max |tpp - base| / max |base| <= 1e-3 for f32, 2e-2 for bf16).

GFLOP/s = 2 N K (C/groups) R S P Q / time. %peak = tpp GFLOP/s / (T x the one-core
peak of bench/peak.py: the f32 FMA loop, or for bf16 the bf16 dot loop where the
target has it). The header's peak is measured at the start; as the machine's speed
drifts, each row also times the peak loop between its own repetitions, and its %peak
is the median over repetitions of tpp's rate / (T x that repetition's peak). Padding is R//2 (torch's ResNet:
1x1 pad 0, 3x3 pad 1, 7x7 pad 3). The depthwise row (groups = C = K) goes through
the same Conv2d, which hands it to ops/depthwise.py.

--shapes picks rows by index or name (see SHAPES; 'resnet' = the ResNet rows, 'all'
= every row, the default). The summary at the end is, per thread count and input
kind, the geometric mean of tpp/base over the ResNet rows and the worst of them.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import blas, peak, timing
from .transformer_suite import SETTLE

try:
    import torch
except ImportError:        # the bench's optional extra
    torch = None


@dataclass(frozen=True)
class Shape:
    name: str
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: int
    groups: int = 1

    @property
    def padding(self) -> int:
        return self.r // 2

    @property
    def out_hw(self) -> tuple[int, int]:
        p = (self.h + 2 * self.padding - self.r) // self.stride + 1
        q = (self.w + 2 * self.padding - self.s) // self.stride + 1
        return p, q

    @property
    def resnet(self) -> bool:
        return self.groups == 1

    def flops(self, n: int) -> float:
        p, q = self.out_hw
        return 2.0 * n * self.k * (self.c // self.groups) * self.r * self.s * p * q

    def label(self) -> str:
        g = f" g{self.groups}" if self.groups > 1 else ""
        return f"C{self.c} {self.h}x{self.w} K{self.k} {self.r}x{self.s} s{self.stride}{g}"


# ResNet-50's distinct conv shapes at batch 1 (torch's layout: stride on the 3x3 / the
# projection), then one depthwise row (MobileNet-like).
SHAPES = (
    Shape("c2_reduce", 64, 56, 56, 64, 1, 1, 1),       # conv2_x 1x1 64 -> 64
    Shape("c2_3x3", 64, 56, 56, 64, 3, 3, 1),          # conv2_x 3x3
    Shape("c2_expand", 64, 56, 56, 256, 1, 1, 1),      # conv2_x 1x1 64 -> 256 (and the projection)
    Shape("c3_3x3", 128, 28, 28, 128, 3, 3, 1),        # conv3_x 3x3
    Shape("c4_3x3", 256, 14, 14, 256, 3, 3, 1),        # conv4_x 3x3
    Shape("c5_3x3", 512, 7, 7, 512, 3, 3, 1),          # conv5_x 3x3
    Shape("c3_proj", 256, 56, 56, 512, 1, 1, 2),       # conv3_1 projection shortcut, stride 2
    Shape("stem", 3, 224, 224, 64, 7, 7, 2),           # conv1 7x7/2
    Shape("dw3x3", 256, 28, 28, 256, 3, 3, 1, groups=256),
)

DTYPES = ("f32", "bf16")
BASELINES = ("auto", "torch", "numpy")
TOLERANCE = {"f32": 1e-3, "bf16": 2e-2}
VARIANTS = ("conv", "conv blocked")
PEAK = "peak"          # the one-core peak loop, a contender of every row's interleaved repetitions


@dataclass
class Plan:
    shapes: list
    threads: list
    dtype: str = "f32"
    baseline: str = "torch"          # resolved: "torch" or "numpy"
    batch: int = 1
    peak: dict | None = field(default=None, compare=False)


# ---------------------------------------------------------------- command line

def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad thread count list {text!r}") from None


def add_parser(sub, common) -> None:
    p = sub.add_parser("conv", parents=[common], help="ResNet-50 conv2d shapes against torch's (or numpy's)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=_ints, default=[1],
                   help="comma-separated thread counts (tpp's and the baseline's; default 1)")
    p.add_argument("--dtype", choices=DTYPES, default="f32",
                   help="f32 or bf16 (both sides in bf16; numpy computes float32 copies of the bf16 values)")
    p.add_argument("--shapes", default="all",
                   help="comma-separated row indices or names (" + ", ".join(f"{i} {s.name}" for i, s in
                                                                     enumerate(SHAPES))
                        + "), 'resnet' or 'all' (default all)")
    p.add_argument("--baseline", choices=BASELINES, default="auto",
                   help="torch, numpy (im2col + np.matmul), or auto: torch where installed (default auto)")
    p.add_argument("--batch", type=int, default=1, help="images per call, N (default 1)")


def pick_shapes(text: str) -> list[Shape]:
    """Rows by index or name, 'resnet' or 'all'; ValueError on an unknown one."""
    names = {s.name: s for s in SHAPES}
    out: list[Shape] = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        if part == "all":
            out += SHAPES
        elif part == "resnet":
            out += [s for s in SHAPES if s.resnet]
        elif part in names:
            out.append(names[part])
        elif part.isdigit() and int(part) < len(SHAPES):
            out.append(SHAPES[int(part)])
        else:
            raise ValueError(f"unknown shape {part!r}; known: 0..{len(SHAPES) - 1}, "
                             f"{', '.join(names)}, resnet, all")
    return list(dict.fromkeys(out))


def plan(p: argparse.ArgumentParser, args) -> Plan:
    """The parsed options checked (p.error on a bad one, before any output)."""
    if not args.threads or any(t < 1 for t in args.threads):
        p.error("--threads must be >= 1")
    if args.cpu is not None and max(args.threads) > 1:
        p.error("conv with several threads is not pinned; --cpu applies to --threads 1")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    try:
        shapes = pick_shapes(args.shapes)
    except ValueError as exc:
        p.error(str(exc))
    if not shapes:
        p.error("--shapes picked no rows")
    base = args.baseline
    if base == "torch" and torch is None:
        p.error("--baseline torch: torch is not installed (pip install torch==2.13.0+cpu)")
    if base == "auto":
        base = "torch" if torch is not None else "numpy"
    return Plan(shapes, list(dict.fromkeys(args.threads)), args.dtype, base, args.batch)


def pinned(args) -> bool:
    """Whether cli may pin the process to one CPU: only single-thread runs."""
    return max(args.threads) == 1


def split(pl: Plan) -> list:
    """One progress step per shape."""
    return [(s.name, dataclasses.replace(pl, shapes=[s])) for s in pl.shapes]


# ---------------------------------------------------------------- the peak and the header

def measure_peak(dtype: str, opts) -> dict:
    """The one-core peak %peak divides by: f32 FMA, or the bf16 dot where it exists."""
    if dtype == "bf16":
        pk = peak.measure("bf16", repeat=opts.repeat, min_time=opts.min_time)
        if pk.get("available", True):
            return pk
    return peak.measure("f32", repeat=opts.repeat, min_time=opts.min_time)


def header_info(pl: Plan, opts) -> dict:
    """Fields for report.header (measures the peak, kept in the plan for the rows)."""
    pl.peak = measure_peak(pl.dtype, opts)
    pk = pl.peak
    what = "FMA f32" if pk.get("what") == "FMA" else f"{pk.get('what')} ({pk['dtype']})"
    base = ("torch.nn.functional.conv2d (torch.set_num_threads(T), no_grad)" if pl.baseline == "torch"
            else "numpy im2col (sliding-window copy) + np.matmul, BLAS on T threads")
    if pl.dtype == "bf16":
        base += (", bf16 tensors" if pl.baseline == "torch" else ", float32 copies of the bf16 values")
    return {"threads": ",".join(map(str, pl.threads)), "dtype": pl.dtype,
            "legend": ("tpp = Conv2d(w, None, stride, R//2, groups=g) prepared once, conv(x, threads=T); "
                       "blocked: x = to_blocked(x) once; baseline interleaved on the same data; tpp/base = "
                       "base time / tpp time (> 1: tpp faster)"),
            "notes": [f"one-core peak {what}: {pk['gflops']:.1f} GFLOP/s now ({pk['loop']}, median of "
                      f"{opts.repeat}); each row times the loop again between its repetitions: %peak = "
                      f"median over repetitions of tpp GFLOP/s / (threads x that repetition's peak)",
                      "GFLOP/s = 2 N K (C/groups) R S P Q / time; padding R//2; batch N = " + str(pl.batch),
                      "baseline: " + base]}


# ---------------------------------------------------------------- the baselines

def numpy_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """conv2d as im2col + matmul: the (C/g R S, P Q) column matrix of each group, copied
    out of a sliding-window view of the zero-padded input, times the (K/g, C/g R S) weights."""
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = sliding_window_view(xp, (r, s), axis=(2, 3))[:, :, ::stride, ::stride]     # n c P Q r s
    p, q = win.shape[2:4]
    cols = win.reshape(n, groups, cg, p, q, r, s).transpose(0, 1, 2, 5, 6, 3, 4)
    cols = cols.reshape(n, groups, cg * r * s, p * q)                               # the im2col copy
    out = np.matmul(w.reshape(groups, k // groups, cg * r * s), cols)
    return out.reshape(n, k, p, q)


def _bf16(a: np.ndarray) -> np.ndarray:
    from tpp.dtypes import parse, to_numpy
    return a.astype(to_numpy(parse("bf16", "dtype")))


def _baseline(pl: Plan, sh: Shape, x32, w32, threads: int):
    """(name, run() (timed), result() -> the output as float32 NCHW, prepare() untimed before
    each of the baseline's repetitions)."""
    pad = sh.padding
    if pl.baseline == "torch":
        tx, tw = torch.from_numpy(x32), torch.from_numpy(w32)
        if pl.dtype == "bf16":
            tx, tw = tx.to(torch.bfloat16), tw.to(torch.bfloat16)
        conv2d = torch.nn.functional.conv2d

        def run():
            with torch.no_grad():
                return conv2d(tx, tw, None, sh.stride, pad, 1, sh.groups)

        def result():
            return run().float().numpy()
        return "torch conv2d" + (" bf16" if pl.dtype == "bf16" else ""), run, result, (lambda: None)
    set_blas = blas.setter(threads)

    def np_run():
        return numpy_conv(x32, w32, sh.stride, pad, sh.groups)
    name = "numpy im2col+matmul" + (f" (BLAS {threads} thr)" if threads > 1 else "")
    if pl.dtype == "bf16":
        name += " f32 math"
    return name, np_run, (lambda: np.asarray(np_run(), np.float32)), set_blas


def _settled(fn, threads: int):
    if threads == 1:
        return fn

    def run():
        fn()
        time.sleep(SETTLE)   # torch's / OpenBLAS's threads spin after a multi-thread call
    return run


# ---------------------------------------------------------------- the rows

def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    diff = float(np.max(np.abs(np.asarray(got, np.float64) - want))) if want.size else 0.0
    return diff / scale if scale > 0 else diff


def _depthwise_missing() -> str | None:
    try:
        import tpp.ops.depthwise  # noqa: F401
    except Exception as exc:       # noqa: BLE001 (being written elsewhere: any failure skips the row)
        return f"tpp.ops.depthwise does not import ({type(exc).__name__}: {exc})"
    return None


def _error_row(pl: Plan, sh: Shape, threads: int, reason: str) -> dict:
    return {"suite": "conv", "table": "conv", "op": "conv", "name": sh.name, "shape": sh.label(),
            "dtype": pl.dtype, "threads": threads, "error": reason}


def shape_rows(pl: Plan, sh: Shape, opts) -> list[dict]:
    from tpp.ops.conv_api import Conv2d
    from tpp.ops.layout import to_blocked
    if sh.groups > 1 and sh.groups == sh.c == sh.k:
        missing = _depthwise_missing()
        if missing:
            return [_error_row(pl, sh, t, missing) for t in pl.threads]
    rng = np.random.default_rng(SHAPES.index(sh) if sh in SHAPES else 0)
    x32 = rng.standard_normal((pl.batch, sh.c, sh.h, sh.w), dtype=np.float32)
    w32 = (rng.standard_normal((sh.k, sh.c // sh.groups, sh.r, sh.s))
           / math.sqrt(sh.c // sh.groups * sh.r * sh.s)).astype(np.float32)
    if pl.dtype == "bf16":
        x, w = _bf16(x32), _bf16(w32)
        x32, w32 = x.astype(np.float32), w.astype(np.float32)    # the baseline sees the same values
    else:
        x, w = x32, w32
    conv = Conv2d(w, None, sh.stride, sh.padding, 1, sh.groups)
    xb = to_blocked(x)
    if xb.block > sh.c:      # the stem: 3 channels in a 16-channel block would lose Conv2d's folded taps
        xb = to_blocked(x, conv.block)
    flops = sh.flops(pl.batch)
    pk = pl.peak or measure_peak(pl.dtype, opts)
    pl.peak = pk
    peak_loop = peak.loop(None, pk["dtype"])
    tol = TOLERANCE[pl.dtype]
    rows = []
    for threads in pl.threads:
        if torch is not None:
            torch.set_num_threads(threads)
        base_name, base_run, base_result, base_prepare = _baseline(pl, sh, x32, w32, threads)
        one_blas = blas.setter(1)
        runs = {"conv": timing.loop(lambda: conv(x, threads=threads)),
                "conv blocked": timing.loop(lambda: conv(xb, threads=threads)),
                base_name: timing.loop(base_run), PEAK: peak_loop.run}
        prepare = {"conv": _settled(one_blas, threads), "conv blocked": _settled(one_blas, threads),
                   base_name: _settled(base_prepare, threads), PEAK: _settled(one_blas, threads)}
        counts, per_op = timing.sample_many(runs, repeat=opts.repeat, min_time=opts.min_time, prepare=prepare)
        one_blas()
        stats = {name: timing.stats_of(per_op[name], counts[name]) for name in runs}
        base_prepare()
        want = base_result().astype(np.float64)
        one_blas()
        outputs = {"conv": np.asarray(conv(x, threads=threads), np.float32),
                   "conv blocked": np.asarray(conv(xb, threads=threads).numpy(), np.float32)}
        b = stats[base_name]
        peaks = [peak.gflops(peak_loop, sec) for sec in per_op[PEAK]]      # one core, each repetition
        for variant in VARIANTS:
            t = stats[variant]
            err = _rel_err(outputs[variant], want)
            ratios = [bb / tt for bb, tt in zip(per_op[base_name], per_op[variant])]
            gflops = flops / t.median / 1e9
            pcts = [100.0 * flops / sec / 1e9 / (threads * pg) for sec, pg in zip(per_op[variant], peaks)]
            rows.append({
                "suite": "conv", "table": "conv", "op": variant, "name": sh.name, "shape": sh.label(),
                "n": pl.batch, "c": sh.c, "h": sh.h, "w": sh.w, "k": sh.k, "r": sh.r, "s": sh.s,
                "stride": sh.stride, "padding": sh.padding, "groups": sh.groups, "p": sh.out_hw[0],
                "q": sh.out_hw[1], "resnet": sh.resnet, "dtype": pl.dtype, "threads": threads,
                "gflop": flops / 1e9, "tpp": {"gflops": gflops, "ms_per_call": t.median * 1e3, **t.as_dict()},
                "baseline": {"gflops": flops / b.median / 1e9, "ms_per_call": b.median * 1e3, **b.as_dict()},
                "block": xb.block if variant == "conv blocked" else None,
                "base_name": base_name, "baseline_kind": pl.baseline,
                "ratio": b.median / t.median, "ratio_min": min(ratios), "ratio_max": max(ratios),
                "peak_gflops": statistics.median(peaks), "peak_dtype": pk["dtype"],
                "pct_peak": statistics.median(pcts),
                "max_rel_err": err, "tolerance": tol, "result_ok": bool(err <= tol)})
    return rows


def rows(pl: Plan, opts) -> list[dict]:
    out = []
    for sh in pl.shapes:
        out += shape_rows(pl, sh, opts)
    return out


# ---------------------------------------------------------------- output

def _check(r: dict) -> str:
    return "ok" if r["result_ok"] else f"WRONG (rel err {r['max_rel_err']:.1e} > {r['tolerance']:g})"


COLUMNS = [
    ("op", lambda r: r["op"] + (f" c{r['block']}" if r.get("block") else ""), False),
    ("shape", lambda r: r["shape"], False), ("dtype", lambda r: r["dtype"], False),
    ("threads", lambda r: str(r["threads"]), True),
    ("tpp GFLOP/s", lambda r: f"{r['tpp']['gflops']:.1f}", True),
    ("tpp ms", lambda r: f"{r['tpp']['ms_per_call']:.3f}", True),
    ("base GFLOP/s", lambda r: f"{r['baseline']['gflops']:.1f}", True),
    ("base ms", lambda r: f"{r['baseline']['ms_per_call']:.3f}", True),
    ("tpp/base", lambda r: f"{r['ratio']:.2f}", True),
    ("%peak", lambda r: f"{r['pct_peak']:.0f}%", True),
    ("spread", lambda r: f"{max(r['tpp']['spread'], r['baseline']['spread']):.0%}", True),
    ("baseline is", lambda r: r["base_name"], False),
    ("check", _check, False),
]


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(rows_: list[dict]) -> list[dict]:
    """Per (threads, variant): the geometric mean of tpp/base over the ResNet rows, and the worst."""
    groups: dict = {}
    for r in rows_:
        if "error" not in r and r.get("resnet"):
            groups.setdefault((r["threads"], r["op"]), []).append(r)
    out = []
    for (threads, variant), group in groups.items():
        worst = min(group, key=lambda r: r["ratio"])
        out.append({"threads": threads, "op": variant, "rows": len(group),
                    "geomean_ratio": _geomean([r["ratio"] for r in group]),
                    "worst_ratio": worst["ratio"], "worst_shape": worst["shape"]})
    return out


def table(rows_: list[dict]) -> str:
    from .report import _aligned
    good = [r for r in rows_ if "error" not in r]
    out = _aligned([c[0] for c in COLUMNS], [[c[1](r) for c in COLUMNS] for r in good],
                   [c[2] for c in COLUMNS])
    for r in rows_:
        if "error" in r:
            out.append(f"skipped {r['op']} {r['shape']} {r['dtype']} threads {r['threads']}: {r['error']}")
    by_threads: dict = {}
    for s in summary(rows_):
        by_threads.setdefault(s["threads"], []).append(s)
    for threads, parts in by_threads.items():
        each = "; ".join(f"{s['op']} geomean {s['geomean_ratio']:.2f}, worst {s['worst_ratio']:.2f} "
                         f"({s['worst_shape']})" for s in parts)
        out.append(f"summary, threads {threads}: tpp/base over {parts[0]['rows']} ResNet row(s): {each}")
    return "\n".join(out)


def plot(rows_: list[dict], info: dict, path: str) -> str:
    """GFLOP/s per shape: one line per (tpp plain, tpp blocked, baseline) and thread count,
    the peak x threads dotted (bench/plot.py's style; matplotlib is an optional extra)."""
    from .plot import pyplot, save
    plt, good = pyplot(rows_)
    names = list(dict.fromkeys(r["name"] for r in good))
    lines: dict = {}
    for r in good:
        lines.setdefault(f"tpp {r['op']} {r['threads']} thr", {})[r["name"]] = r["tpp"]["gflops"]
        lines.setdefault(f"{r['base_name']} {r['threads']} thr", {})[r["name"]] = r["baseline"]["gflops"]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for label, points in lines.items():
        xs = [i for i, s in enumerate(names) if s in points]
        ax.plot(xs, [points[names[i]] for i in xs], marker="o",
                linestyle="-" if label.startswith("tpp") else "--", label=label)
    for threads in sorted({r["threads"] for r in good}):
        pk = next(r["peak_gflops"] for r in good if r["threads"] == threads)
        ax.axhline(threads * pk, color="grey", linestyle=":",
                   label=f"peak x {threads}: {threads * pk:.0f} GFLOP/s")
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_xlabel("layer")
    ax.set_ylabel("GFLOP/s")
    ax.set_ylim(bottom=0)
    return save(plt, fig, ax, f"tpp-bench conv on {info.get('target', '?')} ({info.get('cpu', '?')}), "
                f"{good[0]['dtype']}", path)
