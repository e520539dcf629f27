"""Fuzz every family with hostile descriptor fields and call arguments.

Descriptor fields are drawn from valid sizes and from what a careless or hostile caller
passes: numpy integers of every width, bools, huge and negative numbers, floats, None,
strings. Call arguments are mostly the right arrays, or one of them made wrong (shape,
dtype, layout, not an array, read-only, overlapping, one too many or too few). Each
example must either work, and then match the numpy reference, or raise what the
library documents: a tpp error (tpp.errors), TypeError or ValueError.

A crash must not take pytest down, so the examples run in a child process (this file
is its script: `python -m hostile.test_fuzz FAMILY ...`) that logs each example before
running it: a crash, or a hang, fails the family's test and names the last example
logged. The examples are drawn from a fixed seed (TPP_FUZZ_SEED picks another), and every
family has a time budget in the child (FAMILIES) as well as an example count, so the
whole run stays short on a slow machine.
"""
from __future__ import annotations

import faulthandler
import math
import os
import resource
import sys
import time

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import tpp
import tpp.ops
from hostile.harness import documented, run_children
from tpp.descriptors import dtype_names
from tpp.jit.types import DType
from tpp.kernels import reduce as reduce_k
from tpp.kernels import unary as unary_k
from tpp.kernels import vnni as vnni_k

BF16 = np.dtype(ml_dtypes.bfloat16)
NP_INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
HOSTILE = (True, False, np.True_, np.False_, 0, -1, -7, -2 ** 63, 2 ** 31 - 1, 2 ** 31, 2 ** 47, 2 ** 62,
           2 ** 63, 2 ** 64, 3.0, np.float32(4), np.float64(2.5), float("nan"), float("inf"), None, "4", 2j,
           [4])
LARGEST = 1 << 14            # elements of the biggest array an example allocates
CHILD_MEMORY = 8 << 30       # address space of the child process
# family -> (examples, seconds): the child stops a family at whichever comes first
FAMILIES = {"unary": (150, 8), "binary": (80, 5), "gemm": (100, 8), "brgemm": (100, 8), "matmul": (25, 6),
            "bias_act": (40, 4), "segment_sum": (40, 4)}


@st.composite
def hostile(draw, valid: dict) -> dict:
    """`valid` (fields that name a kernel) made hostile: in half the examples its integer
    fields become numpy integers (of random widths that hold them, bools numpy bools), and
    often one or two fields are replaced by anything at all."""
    f = dict(valid)
    if draw(st.booleans()):
        for name, v in f.items():
            if isinstance(v, bool):
                f[name] = np.bool_(v)
            elif isinstance(v, int):
                fits = [t for t in NP_INTS if np.iinfo(t).min <= v <= np.iinfo(t).max]
                f[name] = draw(st.sampled_from(fits))(v)
    for name in draw(st.lists(st.sampled_from(sorted(f)), max_size=2)):
        f[name] = draw(st.sampled_from(HOSTILE + (np.int8(-1), np.uint64(2 ** 64 - 1), np.int16(200), "f32")))
    return f


def size(hi: int = 40):
    return st.integers(1, hi)


def optional_ld(least: int):
    return st.one_of(st.none(), st.integers(least, least + 9))


# ---- call arguments ---------------------------------------------------------------------
def values(rng: np.random.Generator, shape, dtype, positive: bool = False) -> np.ndarray:
    x = rng.uniform(0.25, 2.0, shape)
    if not positive:
        x *= rng.choice((-1.0, 1.0), shape)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        x = rng.integers(max(info.min, -8), min(info.max, 8), shape, endpoint=True)
    return x.astype(dtype)


MUTATIONS = ("none",) * 6 + ("shape", "dtype", "stride", "fortran", "list", "none_arg", "number", "zero_d",
                             "read_only", "overlap", "extra", "missing")


def mutate(how: str, args: list, outs: list, which: int):
    """(args, outs) with one of them made wrong in the way `how` names."""
    pool = args + outs
    if not pool or how == "none":
        return args, outs
    i = which % len(pool)
    x = pool[i]
    if how == "extra":
        return args + [x], outs
    if how == "missing":
        return args[:-1], outs
    if isinstance(x, np.ndarray) and x.ndim:
        bad = {"shape": lambda: np.zeros(x.shape[:-1] + (x.shape[-1] + 1,), x.dtype),
               "dtype": lambda: x.astype(np.float64 if x.dtype != np.float64 else np.float32),
               "stride": lambda: np.repeat(x, 2, axis=-1)[..., ::2],
               "fortran": lambda: np.asfortranarray(x) if x.ndim > 1 and min(x.shape) > 1 else x.T,
               "list": lambda: x.tolist(),
               "none_arg": lambda: None,
               "number": lambda: 1.5,
               "zero_d": lambda: np.array(1.0, x.dtype),
               "read_only": lambda: _read_only(x),
               "overlap": lambda: pool[(i + 1) % len(pool)]}[how]()
    else:
        bad = None
    pool = pool[:i] + [bad] + pool[i + 1:]
    return pool[:len(args)], pool[len(args):]


def _read_only(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x.flags.writeable = False
    return x


def small(*dims) -> bool:
    """Whether arrays of these sizes are worth allocating (huge accepted sizes get small,
    wrong arrays instead: the call must refuse them)."""
    return all(isinstance(d, int) and d >= 0 for d in dims) and math.prod(dims) <= LARGEST


def check_result(got, ref, dtype) -> None:
    """got (an array or tuple) against the float64 reference rounded to the output dtype."""
    got = np.asarray(got[0] if isinstance(got, tuple) else got)
    ref = np.asarray(ref[0] if isinstance(ref, tuple) else ref, np.float64)
    loose = BF16 in (np.dtype(dtype), got.dtype)
    expect = ref.astype(got.dtype if got.dtype != bool else np.float64).astype(np.float64)
    np.testing.assert_allclose(got.astype(np.float64).reshape(expect.shape), expect,
                               rtol=3e-2 if loose else 1e-4, atol=3e-2 if loose else 1e-4, equal_nan=True)


# ---- one example per family -------------------------------------------------------------
_log = {"n": 0, "stop": float("inf")}


def log(family: str, **fields) -> bool:
    """Log the example about to run, flushed first (the last line before a crash names
    it); False once the family's time is spent: the example is drawn in full but not run
    (hypothesis replays examples, so what is drawn must not depend on the clock)."""
    if time.monotonic() > _log["stop"]:
        return False
    _log["n"] += 1
    print(f"example {family} {_log['n']}: " + ", ".join(f"{k}={v!r}" for k, v in fields.items()), flush=True)
    return True


def attempt(fn):
    """Run fn; a documented error (harness.documented: a tpp error) is a pass, anything
    else propagates (and fails)."""
    try:
        return fn(), None
    except Exception as exc:        # noqa: BLE001
        if documented(exc):
            return None, exc
        raise


def run_kernel(k, rng, how, which, nin_extra=()):
    """Call a dispatched kernel with its operands' arrays (one maybe mutated); check a result."""
    d = k.descriptor
    ops = d.operands()
    if not small(*(op.rows * op.cols for op in ops)):   # small wrong arrays, out too (not allocated)
        wrong = [np.zeros((2, 3), np.float32) for op in ops]
        nin = sum(not op.output for op in ops)
        if getattr(d, "reads_output", None) is not None:
            return attempt(lambda: k(*wrong[:nin + 1]))
        return attempt(lambda: k(*wrong[:nin], out=tuple(wrong[nin:]) if len(ops) - nin > 1 else wrong[nin]))
    positive = getattr(d, "kind", "") in ("log", "sqrt", "rsqrt")
    args = [values(rng, (op.rows, op.cols), tpp.dtypes.to_numpy(op.dtype), positive)
            for op in ops if not op.output]
    outs = [np.zeros(tpp.kernel.arrayabi.accepted_shapes(op)[0], tpp.dtypes.to_numpy(op.dtype))
            for op in ops if op.output]
    args, outs = mutate(how, args, outs, which)
    reads_c = getattr(d, "reads_output", False)
    if reads_c:                                        # gemm with beta = 1: c is the last argument
        c0 = None if not outs or not isinstance(outs[0], np.ndarray) else outs[0].copy()
        got, exc = attempt(lambda: k(*args, *outs))
        if exc is None and how == "none":
            check_result(got, d.reference(*args, c0), tpp.dtypes.to_numpy(d.dtype))
        return got, exc
    out = tuple(outs) if len(outs) > 1 else (outs[0] if outs else None)
    got, exc = attempt(lambda: k(*args, out=out) if which % 2 else k(*args))
    if exc is None and how == "none" and getattr(d, "kind", "") != "vnni_pack":
        check_result(got, d.reference(*args), tpp.dtypes.to_numpy(d.dtype))
    return got, exc


UNARY_DTYPES = {**{k: dtype_names(v.dtypes) for k, v in unary_k.KINDS.items()},
                **{k: ["bf16", "f32", "f64"] for k in reduce_k.KINDS}, "transpose": ["bf16", "f32", "f64"],
                "vnni_pack": dtype_names(vnni_k.DTYPES)}


@st.composite
def unary_fields(draw) -> dict:
    kind = draw(st.sampled_from(sorted(UNARY_DTYPES)))
    f = dict(kind=kind, m=draw(size()), n=draw(size()), dtype=draw(st.sampled_from(UNARY_DTYPES[kind])))
    if kind in reduce_k.KINDS:
        f["axis"] = draw(st.sampled_from((0, 1)))
        if reduce_k.KINDS[kind].arg_reference is not None:
            f["argidx"] = draw(st.booleans())
    if kind in unary_k.KINDS and unary_k.KINDS[kind].default_alpha is not None and draw(st.booleans()):
        f["alpha"] = draw(st.sampled_from((0.2, 2.0, -0.5)))
    if kind == "cast":
        f["dtype"] = draw(st.sampled_from(("f32", "bf16")))
        f["out_dtype"] = {"f32": "bf16", "bf16": "f32"}[f["dtype"]]
    return f


def dispatch_and_run(data, rng, family: str, valid: dict, make) -> None:
    """Make the fields hostile, log the example, dispatch with make(fields) and, where
    that worked, call the kernel with mutated arguments."""
    f = data.draw(hostile(valid))
    how, which = data.draw(st.sampled_from(MUTATIONS)), data.draw(st.integers(0, 5))
    if not log(family, **f, how=how, which=which):
        return
    k, exc = attempt(lambda: make(f))
    if exc is None:
        run_kernel(k, rng, how, which)


def unary_example(data, rng):
    dispatch_and_run(data, rng, "unary", data.draw(unary_fields()),
                     lambda f: tpp.unary(f.pop("kind"), f.pop("m"), f.pop("n"), **f))


BROADCASTS = ("none", "row", "col", "scalar")


def binary_example(data, rng):
    valid = dict(kind=data.draw(st.sampled_from(tpp.BINARY_KINDS)), m=data.draw(size()), n=data.draw(size()),
                 dtype=data.draw(st.sampled_from(("f32", "bf16", "f64"))),
                 broadcast=data.draw(st.one_of(st.none(), st.sampled_from(BROADCASTS),
                                               st.tuples(*[st.sampled_from(BROADCASTS)] * 2))))
    dispatch_and_run(data, rng, "binary", valid, lambda f: tpp.binary(f.pop("kind"), f.pop("m"), f.pop("n"), **f))


EPILOGUES = ((), (), ("bias",), ("relu",), ("bias", "relu"), ("residual",), ("bias", "residual", "gelu_tanh"),
             "sigmoid", ("residual", "sqrt"))


def _steps(epilogue) -> tuple[str, ...]:
    return (epilogue,) if isinstance(epilogue, str) else epilogue


@st.composite
def gemm_fields(draw, batch: bool = False) -> dict:
    m, n, k = draw(size()), draw(size()), draw(size())
    dtype = draw(st.sampled_from(("f32", "f32", "bf16", "f64", "u8s8")))
    f = dict(m=m, n=n, k=k, dtype=dtype, beta=draw(st.sampled_from((0.0, 1.0))))
    if dtype in ("bf16", "u8s8") and draw(st.booleans()):
        f["b_vnni"] = True
    else:
        f["trans_b"] = draw(st.booleans())
    f["trans_a"] = draw(st.booleans())
    if dtype != "u8s8":                 # f64 GEMMs take the activations defined for f64
        f["epilogue"] = draw(st.sampled_from([e for e in EPILOGUES if dtype != "f64" or all(
            s in ("bias", "residual") or DType.F64 in unary_k.KINDS[s].dtypes for s in _steps(e))]))
    if dtype == "bf16" and draw(st.booleans()):
        f["out_dtype"] = "bf16"
    d = (tpp.brgemm_desc if batch else tpp.gemm_desc)(**f)          # the tight strides, to pad
    for name in ("lda", "ldb", "ldc"):
        f[name] = draw(optional_ld(getattr(d, name)))
    if batch:
        f["variant"] = draw(st.sampled_from(("stride", "stride", "offset", "address")))
        if f["variant"] == "stride":
            d = tpp.brgemm_desc(**f)
            for name in ("stride_a", "stride_b"):
                f[name] = draw(st.sampled_from((None, None, 0, getattr(d, name), getattr(d, name) + 3)))
    return f


def gemm_example(data, rng):
    dispatch_and_run(data, rng, "gemm", data.draw(gemm_fields()),
                     lambda f: tpp.gemm(f.pop("m"), f.pop("n"), f.pop("k"), **f))


def brgemm_example(data, rng):
    f = data.draw(hostile(data.draw(gemm_fields(batch=True))))
    batch = data.draw(st.sampled_from((0, 1, 2, 3, 3)))
    how, which = data.draw(st.sampled_from(MUTATIONS)), data.draw(st.integers(0, 5))
    if not log("brgemm", **f, batch=batch, how=how, which=which):
        return
    br, exc = attempt(lambda: tpp.brgemm(f.pop("m"), f.pop("n"), f.pop("k"), **f))
    if exc is not None:
        return
    d = br.descriptor
    ops = d.operands()
    count = batch
    if not small(count + 1, *(op.rows * op.cols for op in ops)):
        return attempt(lambda: br(np.zeros((1, 2, 3), np.float32), np.zeros((1, 3, 2), np.float32),
                                  np.zeros((2, 2), np.float32)))
    a_op, b_op, extra, c_op = ops[0], ops[1], ops[2:-1], ops[-1]
    dt = tpp.dtypes.to_numpy
    a = [values(rng, (a_op.rows, a_op.cols), dt(a_op.dtype)) for _ in range(count)]
    b = [values(rng, (b_op.rows, b_op.cols), dt(b_op.dtype)) for _ in range(count)]
    extras = [values(rng, (op.rows, op.cols), dt(op.dtype)) for op in extra]
    c = values(rng, (c_op.rows, c_op.cols), dt(c_op.dtype))
    c0 = c.copy()
    if d.variant == "stride":
        empty = lambda op: np.zeros((0, op.rows, op.cols), dt(op.dtype))      # noqa: E731
        head = [np.stack(a) if a else empty(a_op), np.stack(b) if b else empty(b_op)]
        tail = []
    elif d.variant == "offset":
        head = [np.concatenate([x.ravel() for x in a] or [np.zeros(0, dt(a_op.dtype))]),
                np.concatenate([x.ravel() for x in b] or [np.zeros(0, dt(b_op.dtype))])]
        tail = [np.arange(count) * a_op.rows * a_op.cols, np.arange(count) * b_op.rows * b_op.cols]
    else:
        head, tail = [a, b], []
    args, rest = mutate(how, head + extras, [c] + tail, which)
    got, exc = attempt(lambda: br(*args, *rest))
    if exc is None and how == "none":
        check_result(got, d.reference(a, b, *extras, c0), tpp.dtypes.to_numpy(d.dtype))


def matmul_example(data, rng):
    shape = data.draw(st.sampled_from(((3, 5, 7), (1, 1, 1), (17, 9, 33), (0, 4, 4), (8, 8, 8))))
    dtype = data.draw(st.sampled_from((np.float32, np.float32, np.float64, BF16, np.int32, np.float16)))
    layout = data.draw(st.sampled_from(("rows", "rows", "a.T", "b.T", "strided", "1-D", "list", "mismatch")))
    threads = data.draw(st.sampled_from((None, None, 1, 2, 0, -1, True, 2.5, np.int64(2), "2")))
    epilogue = data.draw(st.sampled_from(((), (), ("bias", "relu"), ("relu",), ("softmax",), ("bias",))))
    with_bias = data.draw(st.booleans())
    if not log("matmul", shape=shape, dtype=dtype, layout=layout, threads=threads, epilogue=epilogue,
               bias=with_bias):
        return
    m, n, k = shape
    a, b = values(rng, (m, k), dtype), values(rng, (k, n), dtype)
    if layout == "a.T":
        a = np.ascontiguousarray(a.T).T
    elif layout == "b.T":
        b = np.ascontiguousarray(b.T).T
    elif layout == "strided":
        a = np.repeat(a, 2, axis=1)[:, ::2]
    elif layout == "1-D":
        a = a.ravel()
    elif layout == "list":
        b = b.tolist()
    elif layout == "mismatch":
        b = values(rng, (k + 1, n), dtype)
    bias = values(rng, (n,), np.float32) if with_bias else None
    got, exc = attempt(lambda: tpp.ops.matmul(a, b, epilogue=epilogue, bias=bias, threads=threads))
    if exc is None and layout in ("rows", "a.T", "b.T") and epilogue == ():
        ref = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
        check_result(got, ref, np.dtype(dtype))


def bias_act_example(data, rng):
    shape = data.draw(st.sampled_from(((3, 5), (2, 3, 17), (1, 1), (7,), (0, 4), (4, 0), ())))
    dtype = data.draw(st.sampled_from((np.float32, np.float32, np.float64, BF16, np.int32)))
    activation = data.draw(st.sampled_from((None, "relu", "gelu_tanh", "leaky_relu", "sigmoid", "bogus", "cast")))
    alpha = data.draw(st.sampled_from((None, None, 0.1, np.float32(2), -1.0)))
    layout = data.draw(st.sampled_from(("rows", "rows", "strided", "bias_long", "bias_2d", "in_place", "neg")))
    threads = data.draw(st.sampled_from((None, 1, 2, 0, np.int32(2))))
    if not log("bias_act", shape=shape, dtype=dtype, activation=activation, alpha=alpha, layout=layout,
               threads=threads):
        return
    x = values(rng, shape, dtype)
    bias = values(rng, shape[-1:], dtype)
    out = None
    if layout == "strided" and x.ndim:
        x = np.repeat(x, 2, axis=-1)[..., ::2]
    elif layout == "bias_long":
        bias = values(rng, (shape[-1] + 1,) if shape else (1,), dtype)
    elif layout == "bias_2d":
        bias = bias[None]
    elif layout == "in_place":
        out = x
    elif layout == "neg" and x.ndim:
        x = x[::-1]
    x0 = np.array(x, copy=True)
    got, exc = attempt(lambda: tpp.ops.bias_act(x, bias, activation, alpha=alpha, out=out, threads=threads))
    if exc is None and layout in ("rows", "in_place", "neg"):
        s = x0.astype(np.float64) + np.asarray(bias, np.float64)
        if np.dtype(dtype) == BF16:
            s = s.astype(BF16).astype(np.float64)
        if activation is not None:
            kind = unary_k.KINDS[activation]
            s = kind.reference(s) if kind.default_alpha is None else kind.reference(
                s, kind.default_alpha if alpha is None else float(alpha))
        check_result(got, s, np.dtype(dtype))


def segment_sum_example(data, rng):
    rows, f = data.draw(st.integers(0, 9)), data.draw(st.sampled_from((1, 3, 16, 33, 0)))
    index = data.draw(st.sampled_from((np.int64, np.int32, np.int16, np.uint64, np.float64)))
    dtype = data.draw(st.sampled_from((np.float32, np.float64, BF16, np.int32)))
    shape = data.draw(st.sampled_from(("ok", "ok", "ok", "decreasing", "past_end", "negative", "1-D", "2-D_indptr",
                                       "empty_indptr")))
    threads = data.draw(st.sampled_from((None, 1, 2, 0)))
    if not log("segment_sum", rows=rows, f=f, index=index, dtype=dtype, shape=shape, threads=threads):
        return
    counts = rng.integers(0, 5, rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nnz = int(indptr[-1])
    x = values(rng, (nnz, f), dtype)
    if shape == "decreasing" and (rows < 2 or indptr[2] == nnz):
        shape = "ok"                                   # nothing to make decrease
    if shape == "decreasing":
        indptr[1] = nnz
    elif shape == "past_end":
        indptr[-1] += 1
    elif shape == "negative":
        indptr[0] = -1
    elif shape == "1-D":
        x = x[:, 0] if f else x.ravel()
    elif shape == "2-D_indptr":
        indptr = indptr[None]
    elif shape == "empty_indptr":
        indptr = indptr[:0]
    ip = indptr.astype(index)
    got, exc = attempt(lambda: tpp.ops.segment_sum(ip, x, threads=threads))
    if exc is None:
        if shape not in ("ok", "1-D") or not np.array_equal(ip.astype(np.int64), indptr):
            if shape in ("decreasing", "past_end", "negative", "empty_indptr", "2-D_indptr"):
                raise AssertionError(f"segment_sum accepted a bad indptr ({shape}): {indptr}")
            return
        xs = np.asarray(x, np.float64)
        ref = np.stack([xs[indptr[i]:indptr[i + 1]].sum(0) for i in range(rows)]) if rows else \
            np.zeros((0,) + xs.shape[1:])
        check_result(got, ref, np.dtype(dtype))


EXAMPLES = {"unary": unary_example, "binary": binary_example, "gemm": gemm_example, "brgemm": brgemm_example,
            "matmul": matmul_example, "bias_act": bias_act_example, "segment_sum": segment_sum_example}


def fuzz(family: str, fuzz_seed: int) -> None:
    examples, seconds = FAMILIES[family]
    _log["stop"] = time.monotonic() + seconds

    @seed(fuzz_seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data(), st.integers(0, 2 ** 32 - 1))
    def run(data, array_seed):
        EXAMPLES[family](data, np.random.default_rng(array_seed))

    run()


def main(families: list[str]) -> None:
    faulthandler.enable()
    # a bug that allocates without bound fails here as a MemoryError, not in the OOM killer
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    fuzz_seed = int(os.environ.get("TPP_FUZZ_SEED") or 0)
    print(f"seed {fuzz_seed} (TPP_FUZZ_SEED={fuzz_seed} repeats this run)", flush=True)
    for family in families:
        print(f"case {family}", flush=True)
        try:
            fuzz(family, fuzz_seed)
        except BaseException as exc:             # hypothesis re-raises the shrunk failure
            import traceback
            traceback.print_exc(file=sys.stdout)
            print(f"failed {family}: {type(exc).__name__}: {str(exc)[:3000]}", flush=True)
        else:
            print(f"ok {family}", flush=True)
    sys.stdout.flush()
    os._exit(0)


# ---- the runner -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzzed(kernel_cache_dir) -> dict[str, str]:
    return run_children([sys.executable, "-m", "hostile.test_fuzz"], list(FAMILIES), kernel_cache_dir, timeout=180)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_example_works_or_raises_a_documented_error(family, fuzzed):
    assert fuzzed[family] == "ok", fuzzed[family]


if __name__ == "__main__":
    main(sys.argv[1:])
