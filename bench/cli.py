"""`tpp-bench`: microbenchmarks of tpp's primitives beside numpy, same run, same data.

    tpp-bench                          the quick suite (the issue's performance targets)
    tpp-bench unary --kinds exp,tanh -m 1024 -n 1024
    tpp-bench binary --kinds add --sizes 64x64,4096x4096 --json
    tpp-bench gemm --sizes 16,32,64,128,256 --dtype f32 [--trans-a] [--trans-b]
    tpp-bench gemm --dtype bf16 --sizes 64,128,256   (B vnni-packed; also --dtype u8s8)
    tpp-bench brgemm --sizes 64 --batch 16 --variant stride,offset,address
    tpp-bench matmul --sizes 512,1024,2048 --threads 1,2
    tpp-bench ops --threads 1,2          (bias_act, segment_sum: the composition layer's small ops)
    tpp-bench attention | norm | bert --threads 1,2   (against torch where installed, else numpy)
    tpp-bench conv --threads 1,2 [--shapes c2_3x3,stem] [--dtype bf16]   (ResNet-50 convs vs torch's conv2d)
    tpp-bench capi --sizes 32,64,128     (GEMM through libtpp, timed in a C loop)
    tpp-bench info                      (target, features, threads, cache, peaks)

Every subcommand takes --json; sweeps take --plot out.png (pip install 'tpp[plot]').

matmul (tpp.ops.matmul against np.matmul on as many BLAS threads) takes a while
and runs several threads, so it is not part of the quick suite: run it by name.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from tpp import config
from tpp.jit.targets import names

from . import (blas, brgemm_suite, capi_suite, conv_suite, dot_gemm, gemm_suite, gpu_suite, matmul_suite,
               ops_suite, peak, report, suites, transformer_suite)
from . import info as info_mod
from . import plot

# commands that run several threads (never pinned to one CPU), and the transformer rows
TRANSFORMER = {"attention": transformer_suite.attention_rows, "norm": transformer_suite.norm_rows,
               "bert": transformer_suite.bert_rows}
MULTI_THREAD = ("matmul", "ops") + tuple(TRANSFORMER)

_SUPPRESS = argparse.SUPPRESS
_DEFAULTS = {"json": False, "repeat": 5, "min_time_ms": 20.0, "cpu": None, "no_pin": False, "plot": None,
             "target": None}


def _common() -> argparse.ArgumentParser:
    # Defaults are suppressed here and applied after parsing, so an option given
    # before the subcommand is not reset by the subcommand's own copy of it.
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", default=_SUPPRESS,
                   help="print a JSON list of rows instead of the table")
    p.add_argument("--repeat", type=int, metavar="N", default=_SUPPRESS,
                   help="timed repetitions per measurement (median reported; default 5)")
    p.add_argument("--min-time", type=float, dest="min_time_ms", metavar="MS", default=_SUPPRESS,
                   help="minimum length of one repetition in ms (default 20)")
    p.add_argument("--cpu", type=int, metavar="ID", default=_SUPPRESS,
                   help="pin the process to this CPU (default: the last one available)")
    p.add_argument("--no-pin", action="store_true", default=_SUPPRESS, help="do not pin to one CPU")
    p.add_argument("--target", metavar="NAME", default=_SUPPRESS,
                   help="the target to measure (default: this machine's best; GPU targets with `gpu`)")
    p.add_argument("--plot", metavar="PNG", default=_SUPPRESS,
                   help="also draw the rows (GFLOP/s or GB/s against size) into this image (needs matplotlib)")
    return p


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        try:
            m, _, n = part.strip().lower().partition("x")
            out.append((int(m), int(n or m)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad size {part!r}; use MxN, e.g. 1024x1024") from None
    return out


def _family(sub, name: str, kinds: tuple[str, ...], default: tuple[str, ...], common) -> None:
    p = sub.add_parser(name, parents=[common], help=f"{name} kinds against numpy",
                       description=f"{name} TPPs against numpy. Kinds: {', '.join(kinds)}")
    p.add_argument("--kinds", default=",".join(default),
                   help=f"comma-separated kinds, or 'all' (default {','.join(default)})")
    p.add_argument("--sizes", type=_sizes, help="comma-separated MxN shapes (default 1024x1024)")
    p.add_argument("-m", type=int, help="rows (with -n; instead of --sizes)")
    p.add_argument("-n", type=int, help="columns (default: same as -m)")
    p.add_argument("--dtype", default="f32", help="f32, bf16 or f64 (default f32)")
    p.set_defaults(family=name, catalog=kinds)


def _gemm_sizes(text: str) -> list[tuple[int, int, int]]:
    out = []
    for part in text.split(","):
        dims = part.strip().lower().split("x")
        try:
            if len(dims) not in (1, 3):
                raise ValueError
            out.append(tuple(int(d) for d in dims) * (3 if len(dims) == 1 else 1))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad size {part!r}; use N (N^3) or MxNxK, e.g. 64x64x64") from None
    return out


def _gemm(sub, common) -> None:
    p = sub.add_parser("gemm", parents=[common], help="GEMM (beta=0) against np.matmul, %% of peak",
                       description="tpp.gemm with beta=0 (C = op(A) op(B)) against np.matmul(a, b, out=c), "
                                   "with the FMA peak timed between the repetitions. bf16 and u8s8 take B "
                                   "VNNI-packed and divide by the bf16 / int8 dot-instruction peak; numpy "
                                   "computes them in float32.")
    p.add_argument("--sizes", type=_gemm_sizes, default=[(s, s, s) for s in (16, 32, 64, 128, 256)],
                   help="comma-separated N (N x N x N) or MxNxK (default 16,32,64,128,256)")
    p.add_argument("--dtype", default="f32", choices=gemm_suite.DTYPES + dot_gemm.DTYPES,
                   help="f32, f64, bf16 (C f32) or u8s8 (uint8 x int8 -> int32) (default f32)")
    p.add_argument("--trans-a", action="store_true", help="A is stored transposed (k x m)")
    p.add_argument("--trans-b", action="store_true", help="B is stored transposed (n x k)")
    p.set_defaults(family="gemm")


def _list(kind, what: str):
    def parse(text: str) -> list:
        try:
            return [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad {what} {text!r}") from None
    return parse


def _brgemm(sub, common) -> None:
    p = sub.add_parser("brgemm", parents=[common], help="BRGEMM f32 (beta=0) against numpy, %% of FMA peak",
                       description="tpp.brgemm's raw kernel through the JIT repeat loop (C = sum_i A_i B_i, "
                                   "beta=0, f32) against numpy's fastest of three spellings.")
    p.add_argument("--sizes", type=_gemm_sizes, default=[(64, 64, 64)],
                   help="comma-separated N (N x N x N blocks) or MxNxK (default 64)")
    p.add_argument("--batch", type=int, default=16, help="blocks per call (default 16)")
    p.add_argument("--variant", type=_list(str, "variant"), default=["stride"],
                   help="stride, offset, address, a comma list or 'all' (default stride)")


def _matmul(sub, common) -> None:
    p = sub.add_parser("matmul", parents=[common], help="tpp.ops.matmul against np.matmul, 1..T threads",
                       description="tpp.ops.matmul(a, b, out=c, threads=T) against np.matmul(a, b, out=c) "
                                   "with numpy's BLAS on T threads, repetitions interleaved; not pinned.")
    p.add_argument("--sizes", type=_gemm_sizes, default=[(s, s, s) for s in matmul_suite.QUICK_SIZES],
                   help="comma-separated N or MxNxK (default 512,1024,2048)")
    p.add_argument("--threads", type=_list(int, "thread count"), default=[1, 2],
                   help="comma-separated thread counts (default 1,2; the speed-up is over the first if 1)")
    p.add_argument("--dtype", choices=matmul_suite.DTYPES, default="f32",
                   help="f32, f64, or bf16 (C f32; numpy, which has no bf16 BLAS, multiplies float32 "
                        "copies of the same values) (default f32)")
    p.add_argument("--trans-a", action="store_true", help="a is the .T view of a C-order k x m array")
    p.add_argument("--trans-b", action="store_true", help="b is the .T view of a C-order n x k array (x @ w.T)")


def _ops(sub, common) -> None:
    p = sub.add_parser("ops", parents=[common], help="bias_act and segment_sum against numpy/scipy",
                       description=ops_suite.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=_list(int, "thread count"), default=[1, 2],
                   help="comma-separated thread counts for tpp (default 1,2)")


def _transformer(sub, common) -> None:
    for name, text in (("attention", "tpp.ops.attention against torch's scaled_dot_product_attention"),
                       ("norm", "tpp.ops.layer_norm and softmax against torch's"),
                       ("bert", "tpp.ops.BertLayer against torch.nn.TransformerEncoderLayer")):
        p = sub.add_parser(name, parents=[common], help=text, description=transformer_suite.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--threads", type=_list(int, "thread count"), default=[1, 2],
                       help="comma-separated thread counts (tpp's and torch's; default 1,2)")


def _capi(sub, common) -> None:
    p = sub.add_parser("capi", parents=[common], help="GEMM through libtpp, timed in a C loop",
                       description=capi_suite.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=_gemm_sizes, default=[(s, s, s) for s in (32, 64, 128)],
                   help="comma-separated N or MxNxK (default 32,64,128)")


def parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(prog="tpp-bench", parents=[common], description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(
        dest="command", metavar="{unary,binary,gemm,brgemm,matmul,ops,attention,norm,bert,conv,capi,gpu,info}")
    sub.add_parser("info", parents=[common], help="target, features, threads, cache and measured peaks")
    sub.add_parser("gpu", parents=[common], help="NVPTX kernels on an NVIDIA GPU (tpp.cuda)",
                   description=gpu_suite.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _capi(sub, common)
    _family(sub, "unary", suites.UNARY_KINDS, suites.UNARY_DEFAULT_KINDS, common)
    _family(sub, "binary", suites.BINARY_KINDS, suites.BINARY_DEFAULT_KINDS, common)
    _gemm(sub, common)
    _brgemm(sub, common)
    _matmul(sub, common)
    _ops(sub, common)
    _transformer(sub, common)
    conv_suite.add_parser(sub, common)
    return p


def _kinds(p: argparse.ArgumentParser, text: str, catalog: tuple[str, ...]) -> list[str]:
    kinds = list(catalog) if text.strip() == "all" else [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in catalog]
    if unknown:
        p.error(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(catalog)}")
    return kinds


def _pin(args) -> int | None:
    """Run on one CPU: no migrations mid-repetition (the kernels are single-threaded).
    matmul runs several threads and is never pinned."""
    if args.no_pin or args.command in MULTI_THREAD or not hasattr(os, "sched_setaffinity"):
        return None
    if args.command == "conv" and not conv_suite.pinned(args):       # conv pins single-thread runs only
        return None
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _peaks(command, plan) -> list[str]:
    """The peaks a command's header reports: its own first, then f32 FMA for comparison."""
    if command == "gemm":
        return list(dict.fromkeys([plan[1], "f32"]))
    return [] if command in ("gpu", "conv") + MULTI_THREAD else ["f32"]    # conv measures its own


def _rows(args, plan, opts) -> list[dict]:
    if args.command is None:
        return suites.quick(opts)
    if args.command == "gemm":
        if plan[1] in dot_gemm.DTYPES:
            return dot_gemm.sizes_rows(plan[0], plan[1], opts)
        return gemm_suite.sizes_rows(*plan, opts)
    if args.command == "brgemm":
        return brgemm_suite.sizes_rows(*plan, opts)
    if args.command == "matmul":
        return matmul_suite.sizes_rows(*plan, opts)
    if args.command == "capi":
        return capi_suite.sizes_rows(plan, opts)
    if args.command == "gpu":
        return gpu_suite.rows(opts, target=args.target)
    if args.command == "ops":
        return ops_suite.rows(plan, opts)
    if args.command in TRANSFORMER:
        return TRANSFORMER[args.command](plan, opts)
    if args.command == "conv":
        return conv_suite.rows(plan, opts)
    return suites.sizes_rows(args.family, *plan, opts)


def _split(args, plan) -> list:
    """The plan cut into steps (one per size, or per kind and size), for the progress line."""
    if args.command in ("gemm", "brgemm", "matmul"):
        return [(f"{'x'.join(map(str, size))}", (([size],) + tuple(plan[1:]))) for size in plan[0]]
    if args.command == "capi":
        return [(f"{'x'.join(map(str, size))}", [size]) for size in plan]
    if args.command == "conv":
        return conv_suite.split(plan)
    if args.command in ("gpu", "ops") + tuple(TRANSFORMER):
        return [(args.command, plan)]
    if args.command in ("unary", "binary"):
        kinds, sizes, dtype = plan
        return [(f"{kind} {m}x{n}", ([kind], [(m, n)], dtype)) for kind in kinds for m, n in sizes]
    return [("quick suite", plan)]


def _progress(text: str, done: int, total: int) -> None:
    """A one-line progress bar on stderr, only on a terminal."""
    if not sys.stderr.isatty():
        return
    width = 24
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text[:40]:<40}{end}")
    sys.stderr.flush()


def _all_rows(args, plan, opts) -> list[dict]:
    steps = _split(args, plan)
    rows = []
    for i, (label, part) in enumerate(steps):
        _progress(label, i, len(steps))
        rows += _rows(args, part, opts)
    _progress("done", len(steps), len(steps))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    for name, value in _DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    if args.repeat < 1 or args.min_time_ms <= 0:
        p.error("--repeat must be >= 1 and --min-time > 0")
    opts = suites.Options(repeat=args.repeat, min_time=args.min_time_ms / 1e3)
    if args.command == "info":
        found = info_mod.gather(opts)
        print(json.dumps(found, indent=1) if args.json else info_mod.text(found))
        return 0
    if args.target is not None:
        if args.target not in names():
            p.error(f"unknown target {args.target!r}; known: {', '.join(names())}")
        gpu_target = args.target.startswith("nvptx")
        if gpu_target != (args.command == "gpu"):
            p.error("GPU targets (nvptx-*) are measured by `tpp-bench gpu`, CPU targets by the other commands")
    plan = _plan(p, args) if args.command else None      # argument errors before any output
    saved = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        pinned = _pin(args)
    except OSError as exc:
        p.error(f"cannot pin to cpu {args.cpu}: {exc}")
    try:
        cpu_target = args.target if args.target and args.command != "gpu" else config.get().target
        with config.override(num_threads=1, target=cpu_target), blas.limit(1):
            info = report.machine(pinned)
            info["blas_threads"] = blas.threads()
            info["elementwise"] = args.command in (None, "unary", "binary")
            info["peaks"] = [peak.measure(d, repeat=opts.repeat, min_time=opts.min_time)
                             for d in _peaks(args.command, plan)]
            if info["peaks"]:
                info["peak"] = info["peaks"][0]
            if args.command == "matmul":
                info["threads"] = ",".join(map(str, plan[1]))
                info["dtype"] = plan[2]
                info["blas_threads"] = "same as tpp's"
                info["topology"] = matmul_suite.describe_topology(matmul_suite.topology())
                info["legend"] = ("tpp = tpp.ops.matmul(a, b, out=c, threads=T), np = np.matmul(a, b, out=c) on T "
                                  "BLAS threads, interleaved; tpp/np = median of per-repetition ratios (> 1: tpp "
                                  "faster); speed-up = median of tpp's 1-thread time / its T-thread time"
                                  + ("; bf16: numpy multiplies float32 copies of the bf16 a, b (no bf16 BLAS)"
                                     if plan[2] == "bf16" else ""))
            if args.command == "conv":
                info.update(conv_suite.header_info(plan, opts))
            if not args.json:
                print(report.header(info, opts), flush=True)
            rows = _all_rows(args, plan, opts) if args.command else _rows(args, plan, opts)
    finally:
        if pinned is not None and saved is not None:
            os.sched_setaffinity(0, saved)     # main() may be called in-process (tests)
    table = conv_suite.table if args.command == "conv" else report.table
    print(report.to_json(rows, info) if args.json else table(rows))
    if args.plot:
        try:
            draw = conv_suite.plot if args.command == "conv" else plot.plot
            print(f"plot: {draw(rows, info, args.plot)}", file=sys.stderr)
        except plot.PlotUnavailable as exc:
            print(f"tpp-bench: no plot: {exc}", file=sys.stderr)
            return 1
    return 0


def _plan(p: argparse.ArgumentParser, args) -> tuple:
    if args.command in ("gemm", "brgemm", "matmul", "capi") and any(d < 1 for size in args.sizes for d in size):
        p.error("sizes must be >= 1")
    if args.command == "gemm":
        if args.dtype in dot_gemm.DTYPES and (args.trans_a or args.trans_b):
            p.error(f"tpp-bench gemm times --dtype {args.dtype} with a VNNI-packed B; --trans-a/--trans-b "
                    f"are measured for f32 and f64")
        return args.sizes, args.dtype, args.trans_a, args.trans_b
    if args.command == "brgemm":
        variants = list(brgemm_suite.VARIANTS) if args.variant == ["all"] else args.variant
        bad = [v for v in variants if v not in brgemm_suite.VARIANTS]
        if bad or not variants:
            p.error(f"unknown variant(s) {', '.join(bad)}; known: {', '.join(brgemm_suite.VARIANTS)}")
        if args.batch < 1:
            p.error("--batch must be >= 1")
        return args.sizes, args.batch, variants
    if args.command == "capi":
        return args.sizes
    if args.command == "gpu":
        return ()
    if args.command == "conv":
        return conv_suite.plan(p, args)
    if args.command in ("ops",) + tuple(TRANSFORMER):
        if not args.threads or any(t < 1 for t in args.threads):
            p.error("--threads must be >= 1")
        return args.threads
    if args.command == "matmul":
        if not args.threads or any(t < 1 for t in args.threads):
            p.error("--threads must be >= 1")
        if args.cpu is not None:
            p.error("matmul runs several threads and is not pinned; --cpu does not apply")
        return args.sizes, args.threads, args.dtype, args.trans_a, args.trans_b
    return _family_plan(p, args)


def _family_plan(p: argparse.ArgumentParser, args) -> tuple[list[str], list[tuple[int, int]], str]:
    kinds = _kinds(p, args.kinds, args.catalog)
    if args.m is not None or args.n is not None:
        if args.sizes is not None:
            p.error("give either --sizes or -m/-n")
        m = args.m if args.m is not None else args.n
        sizes = [(m, args.n if args.n is not None else m)]
    else:
        sizes = args.sizes or [(1024, 1024)]
    if any(m < 1 or n < 1 for m, n in sizes):
        p.error("sizes must be >= 1")
    return kinds, sizes, args.dtype


if __name__ == "__main__":
    sys.exit(main())
