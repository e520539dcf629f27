"""What the hostile cases call: one record per family (a primitive's descriptor, or a
composite of tpp.ops), with the arrays of a correct call, how to call it, and its
float64 reference.

A call is a list of argument slots (name, role, value): role "in" is read, "out" is
written, "inout" (GEMM's C with beta=1) both. `Call.invoke(values)` calls with the slots'
values in the family's calling convention; `Call.expected(values)` is the reference for
those values (computed from copies taken before the call), one array per written slot
(or per output the call returns when none is passed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import tpp
import tpp.ops
from tpp.kernels import unary as unary_k

from .harness import Wrong, attempt, close, values


@dataclass
class Slot:
    name: str
    role: str                  # "in", "out", "inout"
    value: object


@dataclass
class Call:
    slots: list[Slot]
    invoke: Callable           # invoke(values) -> the call's result
    expected: Callable         # expected(values) -> {slot name or "result": float64 array}
    dtype: object = None       # the computation's dtype (for the tolerance)
    returns: Callable | None = None     # result -> {name: array} when outputs are returned

    def values(self) -> list:
        return [s.value for s in self.slots]


def _np(dt) -> np.dtype:
    return np.dtype(tpp.dtypes.to_numpy(dt))


def _as_f64(x):
    if isinstance(x, list):
        return [_as_f64(v) for v in x]
    return np.asarray(x).astype(np.float64) if np.asarray(x).dtype.kind == "V" or np.asarray(x).dtype.kind == "f" \
        else np.asarray(x)


def _copy(x):
    return [_copy(v) for v in x] if isinstance(x, list) else np.array(x, copy=True)


def check_call(call: Call, vals: list, ref_vals: list | None = None, expect: str = "same",
               guards=(), why: str = "") -> None:
    """Call with `vals`; the result must match the reference computed on `ref_vals` (the
    values the call stands for: `vals` itself by default), or the call must raise a tpp
    error (expect "same"); expect "refuse": it must raise one; "work": it must work and
    match; "any": anything but a crash or an undocumented error. `guards`: (parent,
    copy before, mask of what the call may write) triples; the rest must stay as it was."""
    ref_vals = vals if ref_vals is None else ref_vals
    before = [_copy(v) for v in ref_vals]
    got, exc = attempt(lambda: call.invoke(vals))
    for parent, kept, inside in guards:
        changed = ~inside & ~((parent == kept) | ((parent != parent) & (kept != kept)))
        if changed.any():
            raise Wrong(f"{why}: the call wrote {int(changed.sum())} elements outside its output")
    if exc is not None:
        if expect == "work":
            raise Wrong(f"{why}: refused a correct call: {type(exc).__name__}: {exc}")
        return
    if expect == "refuse":
        raise Wrong(f"accepted {why}")
    if expect == "any":
        return
    expected = call.expected(before)
    returned = call.returns(got) if call.returns else {}
    for name, ref in expected.items():
        i = next((j for j, s in enumerate(call.slots) if s.name == name), None)
        out = vals[i] if i is not None and i < len(vals) and call.slots[i].role != "in" else returned.get(name)
        if out is None and name not in returned and len(expected) == 1:
            out = got
        close(out, ref, call.dtype, f"{why} {name}".strip())


# ---- primitives -------------------------------------------------------------------------------
def primitive_call(k, rng, pass_out: bool = True) -> Call:
    """A correct call of a unary, binary or GEMM kernel, its outputs passed (or allocated)."""
    d = k.descriptor
    ops = d.operands()
    positive = getattr(d, "kind", "") in ("log", "sqrt", "rsqrt")
    reads_c = bool(getattr(d, "output_required", False))
    slots = []
    for op in ops:
        shape = tpp.arrayabi.accepted_shapes(op)[0]
        if not op.output:
            slots.append(Slot(op.name, "in", values(rng, shape, _np(op.dtype), positive)))
        elif reads_c:
            slots.append(Slot(op.name, "inout", values(rng, shape, _np(op.dtype))))
        elif pass_out:
            slots.append(Slot(op.name, "out", np.zeros(shape, _np(op.dtype))))
    outs = [op.name for op in ops if op.output]
    nin = sum(not op.output for op in ops)

    def invoke(vals):
        ins, given = vals[:nin], vals[nin:]
        if d.positional_output or reads_c:
            return k(*ins, *given)
        if not given:
            return k(*ins)
        return k(*ins, out=given[0] if len(given) == 1 else tuple(given))

    def expected(vals):
        ref = d.reference(*vals[:nin], *(vals[nin:] if reads_c else ()))
        ref = ref if isinstance(ref, tuple) else (ref,)
        return dict(zip(outs, ref))

    def returns(result):
        result = result if isinstance(result, tuple) else (result,)
        return dict(zip(outs, result))
    return Call(slots, invoke, expected, _np(d.dtype), returns)


def brgemm_call(br, rng, count: int = 3) -> Call:
    """A correct call of a BRGEMM kernel of any variant, batch `count`."""
    d = br.descriptor
    ops = d.operands()
    a_op, b_op, extra, c_op = ops[0], ops[1], ops[2:-1], ops[-1]
    dt = lambda op: _np(op.dtype)                                   # noqa: E731
    a = [values(rng, (a_op.rows, a_op.cols), dt(a_op)) for _ in range(count)]
    b = [values(rng, (b_op.rows, b_op.cols), dt(b_op)) for _ in range(count)]
    extras = [Slot(op.name, "in", values(rng, tpp.arrayabi.accepted_shapes(op)[0], dt(op))) for op in extra]
    c = Slot("c", "inout" if d.beta else "out", values(rng, (c_op.rows, c_op.cols), dt(c_op)))
    sa, sb = a_op.rows * a_op.cols, b_op.rows * b_op.cols
    if d.variant == "stride":
        head = [Slot("a", "in", np.stack(a)), Slot("b", "in", np.stack(b))]
        tail = []
    elif d.variant == "offset":
        head = [Slot("a", "in", np.concatenate([x.ravel() for x in a])),
                Slot("b", "in", np.concatenate([x.ravel() for x in b]))]
        tail = [Slot("a_offsets", "in", np.arange(count, dtype=np.int64)[::-1] * sa),
                Slot("b_offsets", "in", np.arange(count, dtype=np.int64)[::-1] * sb)]
    else:
        head = [Slot("a", "in", a), Slot("b", "in", b)]
        tail = []
    slots = head + extras + [c] + tail
    n_extra = len(extras)

    def blocks(vals):
        if d.variant == "stride":
            return list(np.asarray(vals[0])), list(np.asarray(vals[1]))
        if d.variant == "offset":
            fa, fb = np.asarray(vals[0]).ravel(), np.asarray(vals[1]).ravel()
            oa, ob = vals[3 + n_extra], vals[4 + n_extra]
            return ([fa[o:o + sa].reshape(a_op.rows, a_op.cols) for o in np.asarray(oa)],
                    [fb[o:o + sb].reshape(b_op.rows, b_op.cols) for o in np.asarray(ob)])
        return list(vals[0]), list(vals[1])

    def expected(vals):
        a_blocks, b_blocks = blocks(vals)
        return {"c": d.reference(a_blocks, b_blocks, *vals[2:2 + n_extra], vals[2 + n_extra])}
    return Call(slots, lambda vals: br(*vals), expected, _np(d.dtype))


# ---- composites -------------------------------------------------------------------------------
def _act(name, x, alpha=None):
    if name is None:
        return x
    kind = unary_k.KINDS[unary_k.ALIASES.get(name, name)]
    return kind.reference(x) if kind.default_alpha is None else kind.reference(
        x, kind.default_alpha if alpha is None else alpha)


def matmul_call(rng, m=6, n=5, k=7, dtype=np.float32, epilogue=(), threads=None, **kw) -> Call:
    a, b = values(rng, (m, k), dtype), values(rng, (k, n), dtype)
    out_dt = np.float32 if np.dtype(dtype) == np.dtype(tpp.dtypes.to_numpy(tpp.DType.BF16)) else dtype
    steps = (epilogue,) if isinstance(epilogue, str) else tuple(epilogue) if isinstance(epilogue, (tuple, list)) else ()
    slots = [Slot("a", "in", a), Slot("b", "in", b)]
    if "bias" in steps:
        slots.append(Slot("bias", "in", values(rng, (n,), out_dt)))
    slots.append(Slot("out", "out", np.zeros((m, n), out_dt)))
    acts = [s for s in steps if s not in ("bias", "residual")]

    def invoke(vals):
        extra = {"bias": vals[2]} if "bias" in steps else {}
        return tpp.ops.matmul(vals[0], vals[1], out=vals[-1], epilogue=epilogue, threads=threads, **extra, **kw)

    def expected(vals):
        c = _as_f64(vals[0]) @ _as_f64(vals[1])
        if "bias" in steps:
            c = c + _as_f64(vals[2])
        for s in acts:
            c = _act(s, c)
        return {"out": c}
    return Call(slots, invoke, expected, dtype)


def bias_act_call(rng, shape=(3, 4, 6), dtype=np.float32, activation="relu", alpha=None, threads=None) -> Call:
    x, bias = values(rng, shape, dtype), values(rng, shape[-1:], dtype)
    slots = [Slot("x", "in", x), Slot("bias", "in", bias), Slot("out", "out", np.zeros(shape, dtype))]

    def invoke(vals):
        return tpp.ops.bias_act(vals[0], vals[1], activation, alpha=alpha, out=vals[2], threads=threads)

    def expected(vals):
        s = _as_f64(vals[0]) + _as_f64(vals[1])
        if np.dtype(dtype) == np.dtype(tpp.dtypes.to_numpy(tpp.DType.BF16)):
            s = s.astype(dtype).astype(np.float64)
        return {"out": _act(activation, s, None if alpha is None else float(alpha))}
    return Call(slots, invoke, expected, dtype)


def segment_sum_call(rng, rows=5, f=6, dtype=np.float32, index=np.int64, threads=None) -> Call:
    counts = rng.integers(0, 4, rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(index)
    nnz = int(indptr[-1])
    x = values(rng, (nnz, f), dtype)
    slots = [Slot("indptr", "in", indptr), Slot("x", "in", x), Slot("out", "out", np.zeros((rows, f), dtype))]

    def invoke(vals):
        return tpp.ops.segment_sum(vals[0], vals[1], out=vals[2], threads=threads)

    def expected(vals):
        ip, xs = np.asarray(vals[0]), _as_f64(vals[1])
        return {"out": np.stack([xs[ip[i]:ip[i + 1]].sum(0) for i in range(len(ip) - 1)])}
    return Call(slots, invoke, expected, dtype)


def gather_call(k, rng) -> Call:
    """A correct call of a gather or scatter-add kernel: indices inside the extent (repeats
    included: scatter-add accumulates them)."""
    d = k.descriptor
    dt, index = _np(d.dtype), _np(d.index_dtype)
    idx = rng.integers(0, d.extent, d.m).astype(index)
    if d.kind == "gather":
        slots = [Slot("x", "in", values(rng, (d.extent, d.n), dt)), Slot("idx", "in", idx),
                 Slot("out", "out", np.zeros((d.m, d.n), dt))]
    else:
        slots = [Slot("x", "in", values(rng, (d.m, d.n), dt)), Slot("idx", "in", idx),
                 Slot("out", "inout", values(rng, (d.extent, d.n), dt))]

    def invoke(vals):
        return k(vals[0], vals[1], vals[2])

    def expected(vals):
        x, ix, out = _as_f64(vals[0]), np.asarray(vals[1]), _as_f64(vals[2])
        if d.kind == "gather":
            return {"out": x[ix]}
        np.add.at(out, ix, x)
        return {"out": out}
    return Call(slots, invoke, expected, dt)


# ---- the families ----------------------------------------------------------------------------
@dataclass
class Family:
    """A family under test: its valid fields, how to dispatch from fields, and a correct call
    of what that returns. `int_fields` are the sizes, strides and counts (hostile cases
    replace them one at a time), `dtype_fields` the dtypes."""
    name: str
    fields: dict
    make: Callable               # make(fields) -> kernel (or a callable for composites)
    call: Callable               # call(made, rng) -> Call
    int_fields: tuple = ()
    dtype_fields: tuple = ("dtype",)


def _unary(kind, m=5, n=7, dtype="f32", **kw):
    f = dict(kind=kind, m=m, n=n, dtype=dtype, **kw)
    return Family(f"unary_{kind}" + ("_axis%d" % kw["axis"] if "axis" in kw else ""), f,
                  lambda f: tpp.unary(f.pop("kind"), f.pop("m"), f.pop("n"), **f), primitive_call,
                  ("m", "n") + tuple(x for x in ("axis",) if x in kw),
                  ("dtype", "out_dtype") if "out_dtype" in kw else ("dtype",))


def _binary(kind, broadcast=None, dtype="f32"):
    f = dict(kind=kind, m=5, n=7, dtype=dtype, broadcast=broadcast)
    return Family(f"binary_{kind}", f, lambda f: tpp.binary(f.pop("kind"), f.pop("m"), f.pop("n"), **f),
                  primitive_call, ("m", "n"))


def _gemm(name, **kw):
    f = dict(m=6, n=6, k=6, **{"dtype": "f32", **kw})
    return Family(name, f, lambda f: tpp.gemm(f.pop("m"), f.pop("n"), f.pop("k"), **f), primitive_call,
                  ("m", "n", "k", "lda", "ldb", "ldc"), ("dtype", "out_dtype"))


def _brgemm(variant, **kw):
    f = dict(m=4, n=4, k=4, **{"dtype": "f32", "variant": variant, **kw})
    strides = ("stride_a", "stride_b") if variant == "stride" else ()
    return Family(f"brgemm_{variant}", f, lambda f: tpp.brgemm(f.pop("m"), f.pop("n"), f.pop("k"), **f),
                  brgemm_call, ("m", "n", "k", "lda", "ldb", "ldc") + strides, ("dtype", "out_dtype"))


def _planned(f):
    threads = f.pop("threads")
    plan = tpp.ops.MatmulPlan(**f)
    return lambda rng: matmul_call(rng, 37, 29, 70, np.float32, threads=threads, plan=plan)


def _composite(made, rng) -> Call:
    return made(rng)


def families() -> list[Family]:
    bf16 = "bf16"
    return [
        _unary("relu"), _unary("leaky_relu", alpha=0.3), _unary("gelu_tanh", dtype=bf16), _unary("exp"),
        _unary("relu_grad", dtype="f64"),
        _unary("reduce_sum", axis=1), _unary("reduce_max", axis=0, argidx=True), _unary("transpose", 5, 6),
        _unary("vnni_pack", 4, 6, dtype=bf16), _unary("cast", dtype="f32", out_dtype=bf16),
        _binary("add", "row"), _binary("gt", ("col", "none")), _binary("div", "scalar", "f64"),
        _gemm("gemm_beta1"), _gemm("gemm_beta0_bias_relu", beta=0.0, epilogue=("bias", "relu")),
        _gemm("gemm_bf16_vnni", dtype=bf16, b_vnni=True, beta=0.0),
        _brgemm("stride"), _brgemm("offset", beta=0.0), _brgemm("address", trans_b=True),
        Family("matmul", dict(epilogue=(), threads=None),
               lambda f: (lambda rng: matmul_call(rng, 6, 5, 7, np.float32, f["epilogue"], threads=f["threads"])),
               _composite, ("threads",), ()),
        Family("matmul_plan", dict(mb=16, nb=16, kb=32, b_strip=2, a_layout="panels", threads=2),
               _planned,
               _composite, ("mb", "nb", "kb", "b_strip", "threads"), ()),
        Family("bias_act", dict(activation="leaky_relu", alpha=0.25, threads=None),
               lambda f: (lambda rng: bias_act_call(rng, (3, 4, 6), np.float32, f["activation"], f["alpha"],
                                                    threads=f["threads"])),
               _composite, ("threads",), ()),
        Family("gather", dict(m=9, n=21, extent=13, dtype="f32", index_dtype="i32"),
               lambda f: tpp.gather(f.pop("m"), f.pop("n"), f.pop("extent"), **f), gather_call,
               ("m", "n", "extent"), ("dtype", "index_dtype")),
        Family("scatter_add", dict(m=11, n=18, extent=5, dtype=bf16, index_dtype="i64"),
               lambda f: tpp.scatter_add(f.pop("m"), f.pop("n"), f.pop("extent"), **f), gather_call,
               ("m", "n", "extent"), ("dtype", "index_dtype")),
        Family("segment_sum", dict(threads=None),
               lambda f: (lambda rng: segment_sum_call(rng, 5, 6, np.float32, np.int64, threads=f["threads"])),
               _composite, ("threads",), ()),
    ]
