"""Hostile calls the generated cases do not reach: BRGEMM offsets and address lists that
are negative, huge, of other dtypes or lengths; empty batches; 0-size composites; values
at the edges of the transcendentals (saturation, subnormal results), reduce_sum's error
on long rows and columns, the bf16 cast of NaNs; C descriptors whose strings are not
UTF-8 or whose alpha is not finite (the same rule as Python's).
"""
from __future__ import annotations

from pathlib import Path

import cffi
import ml_dtypes
import numpy as np

import tpp
import tpp.ops
from hostile import harness
from hostile.harness import BF16, Cases, Wrong, attempt, close, refused
from tpp import capi, capi_build

CASES = Cases()
README = Path(__file__).resolve().parents[2] / "README.md"


def _offset_call(a_off, b_off, beta=0.0):
    br = tpp.brgemm(4, 4, 4, variant="offset", beta=beta)
    a, b = np.ones(64, np.float32), np.ones(64, np.float32)
    c = np.full((4, 4), 3, np.float32)
    return br, a, b, c, lambda: br(a, b, c, a_off, b_off)


def negative_offset(value, which):
    offs = np.array([0, value], np.int64)
    zero = np.zeros(2, np.int64)
    *_, call = _offset_call(offs if which == "a" else zero, zero if which == "a" else offs)
    exc = refused(call, f"a negative offset {value} in {which}_offsets")
    if str(value) not in str(exc):
        raise Wrong(f"the error does not name the offset {value}: {exc}")
    if not isinstance(exc, tpp.ShapeError):
        raise Wrong(f"a negative offset raised {type(exc).__name__}, not ShapeError: {exc}")


for _v in (-1, -5, -16, -2 ** 40, -2 ** 63):
    for _w in ("a", "b"):
        CASES.add(f"brgemm_offset_negative_{_w}_{abs(_v)}", negative_offset, _v, _w)


def offsets_of(dtype, expect):
    offs = np.array([0, 16, 32], dtype)
    br, a, b, c, call = _offset_call(offs, offs)
    got, exc = attempt(call)
    if exc is None:
        if expect == "refuse":
            raise Wrong(f"accepted {np.dtype(dtype)} offsets")
        close(c, np.full((4, 4), 12.0))


for _dt, _e in ((np.int8, "same"), (np.int16, "same"), (np.int32, "same"), (np.uint8, "same"), (np.uint64, "same"),
                (np.float32, "refuse"), (np.float64, "refuse"), (np.bool_, "refuse"), (np.complex64, "refuse")):
    CASES.add(f"brgemm_offsets_as_{np.dtype(_dt).name}", offsets_of, _dt, _e)


@CASES.case
def brgemm_offsets_of_different_lengths():
    *_, call = _offset_call(np.array([0, 16], np.int64), np.array([0], np.int64))
    refused(call, "a_offsets and b_offsets of different lengths")


@CASES.case
def brgemm_offsets_2d():
    offs = np.zeros((2, 1), np.int64)
    br, a, b, c, call = _offset_call(offs, offs)
    got, exc = attempt(call)
    if exc is None:
        close(c, np.full((4, 4), 8.0))


@CASES.case
def brgemm_offsets_a_list():
    br, a, b, c, call = _offset_call([0, 16], [0, 16])
    got, exc = attempt(call)
    if exc is None:
        close(c, np.full((4, 4), 8.0))


@CASES.case
def brgemm_offsets_none():
    refused(_offset_call(None, None)[-1], "None as offsets")


def empty_batch(variant, beta, epilogue=()):
    br = tpp.brgemm(4, 4, 4, variant=variant, beta=beta, epilogue=epilogue)
    c = np.full((4, 4), 3, np.float32)
    extras = [np.full(4, 2, np.float32)] if epilogue else []
    if variant == "stride":
        args = [np.zeros((0, 4, 4), np.float32), np.zeros((0, 4, 4), np.float32), *extras, c]
    elif variant == "offset":
        args = [np.zeros(16, np.float32), np.zeros(16, np.float32), *extras, c, np.zeros(0, np.int64),
                np.zeros(0, np.int64)]
    else:
        args = [[], [], *extras, c]
    got, exc = attempt(lambda: br(*args))
    if exc is None:
        acc = np.full((4, 4), 3.0 * beta)
        if epilogue:
            acc = np.maximum(acc + 2, 0)
        close(c, acc, what=f"an empty {variant} batch, beta {beta}")


for _var in ("stride", "offset", "address"):
    for _beta in (0.0, 1.0):
        CASES.add(f"brgemm_{_var}_empty_batch_beta{int(_beta)}", empty_batch, _var, _beta)
    CASES.add(f"brgemm_{_var}_empty_batch_bias_relu", empty_batch, _var, 0.0, ("bias", "relu"))


def address_lists(how):
    br = tpp.brgemm(4, 4, 4, variant="address", beta=0.0)
    blk = np.ones((4, 4), np.float32)
    c = np.zeros((4, 4), np.float32)
    a, b, expect = [blk, blk], [blk, blk], "same"
    if how == "unequal":
        b, expect = [blk], "refuse"
    elif how == "tuple":
        a, b = (blk, blk), (blk, blk)
    elif how == "none_inside":
        a, expect = [blk, None], "refuse"
    elif how == "wrong_dtype_inside":
        a, expect = [blk, blk.astype(np.float64)], "refuse"
    elif how == "wrong_shape_inside":
        a, expect = [blk, np.ones((4, 5), np.float32)], "refuse"
    elif how == "a_stack":
        a = np.stack([blk, blk])
    elif how == "generator":
        a = (x for x in [blk, blk])
    elif how == "same_block_twice":
        a = b = [blk, blk]
    elif how == "c_is_a_block":
        c = blk.copy()
        a = [c, c]
    got, exc = attempt(lambda: br(a, b, c))
    if exc is None:
        if expect == "refuse":
            raise Wrong(f"accepted an address list: {how}")
        close(c, np.full((4, 4), 8.0), what=how)


for _how in ("unequal", "tuple", "none_inside", "wrong_dtype_inside", "wrong_shape_inside", "a_stack", "generator",
             "same_block_twice", "c_is_a_block"):
    CASES.add(f"brgemm_address_{_how}", address_lists, _how)


def zero_size_composite(what):
    if what.startswith("matmul"):
        m, n, k = {"matmul_m0": (0, 4, 5), "matmul_n0": (3, 0, 5), "matmul_k0": (3, 4, 0)}[what]
        a, b = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
        got, exc = attempt(lambda: tpp.ops.matmul(a, b))
        if exc is None:
            close(got, np.zeros((m, n)), what=what)
        got, exc = attempt(lambda: tpp.ops.matmul(a, b, epilogue=("bias", "relu"), bias=np.full(n, -1, np.float32)))
        if exc is None:
            close(got, np.zeros((m, n)), what=what + " with bias, relu")
    elif what.startswith("bias_act"):
        shape = {"bias_act_rows0": (0, 5), "bias_act_cols0": (3, 0), "bias_act_3d0": (2, 0, 4)}[what]
        x = np.ones(shape, np.float32)
        got, exc = attempt(lambda: tpp.ops.bias_act(x, np.ones(shape[-1], np.float32), "relu"))
        if exc is None:
            close(got, np.ones(shape) * 2, what=what)
    else:
        indptr, x = {"segment_sum_rows0": (np.array([0], np.int64), np.ones((3, 4), np.float32)),
                     "segment_sum_nnz0": (np.array([0, 0, 0], np.int64), np.ones((0, 4), np.float32)),
                     "segment_sum_features0": (np.array([0, 2], np.int64), np.ones((2, 0), np.float32))}[what]
        got, exc = attempt(lambda: tpp.ops.segment_sum(indptr, x))
        if exc is None:
            close(got, np.zeros((len(indptr) - 1, x.shape[1])), what=what)


for _what in ("matmul_m0", "matmul_n0", "matmul_k0", "bias_act_rows0", "bias_act_cols0", "bias_act_3d0",
              "segment_sum_rows0", "segment_sum_nnz0", "segment_sum_features0"):
    CASES.add(f"zero_size_{_what}", zero_size_composite, _what)


# ---- numerics at the edges --------------------------------------------------------------------
def _f32_true(fn, x) -> np.ndarray:
    return np.asarray(fn(np.asarray(x, np.float64)), np.float64).astype(np.float32)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _gelu_tanh(x):
    """0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)): no cancellation for large negative x."""
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)
    with np.errstate(over="ignore"):
        return np.where(np.isinf(x) & (x > 0), x, x / (1 + np.exp(-2 * u)))


def saturates(kind, xs, ref):
    x = np.array([xs], np.float32)
    got = tpp.unary(kind, 1, len(xs))(x)
    want = _f32_true(ref, x)
    if not np.array_equal(got, want):
        raise Wrong(f"{kind}({xs}) = {got[0].tolist()}, the f32-rounded true values are {want[0].tolist()}")


CASES.add("sigmoid_saturates_at_one", saturates, "sigmoid", [17.0, 20.0, 50.0, 88.0, 1e30, np.inf], _sigmoid)
CASES.add("gelu_tanh_is_x_for_large_x", saturates, "gelu_tanh", [10.0, 20.0, 88.0, 1000.0, 3e38], _gelu_tanh)
CASES.add("tanh_saturates", saturates, "tanh", [10.0, 20.0, 88.0, np.inf, -10.0, -np.inf], np.tanh)


def subnormal_results(kind, xs, ref):
    """Results in the subnormal range are produced (within a few subnormal steps), or the
    README's accuracy paragraph says they flush to zero."""
    x = np.array([xs], np.float32)
    got = tpp.unary(kind, 1, len(xs))(x)[0].astype(np.float64)
    want = _f32_true(ref, x)[0].astype(np.float64)
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    wrong = np.abs(got - want) > 4 * tiny + 2e-5 * np.abs(want)
    if wrong.any():
        flushed = (got == 0) & wrong
        text = README.read_text().lower()
        if flushed.all() and "subnormal" in text and "flush" in text and kind.split("_")[0] in text:
            return
        raise Wrong(f"{kind}({xs}) = {got.tolist()}, the f32-rounded true values are {want.tolist()}")


CASES.add("sigmoid_subnormal_results", subnormal_results, "sigmoid", [-88.0, -95.0, -100.0, -103.0], _sigmoid)
CASES.add("gelu_tanh_subnormal_results", subnormal_results, "gelu_tanh", [-9.0, -10.0, -10.4, -10.6, -10.8],
          _gelu_tanh)


def reduce_sum_error(axis, shape, seed=0):
    """reduce_sum's error against the exact sum grows like numpy's (pairwise), not like a
    sequential accumulator's: at most 4x numpy's f32 error, plus a few ulps."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, shape).astype(np.float32)
    got = tpp.unary("reduce_sum", *shape, axis=axis)(x).astype(np.float64)
    exact = x.astype(np.float64).sum(axis=axis)
    ours = np.abs(got - exact).max()
    numpy_err = np.abs(x.sum(axis=axis, dtype=np.float32).astype(np.float64) - exact).max()
    ulp = float(np.spacing(np.float32(exact.max())))
    if ours > 4 * numpy_err + 4 * ulp:
        raise Wrong(f"reduce_sum axis={axis} on {shape}: error {ours:.3g}, numpy's {numpy_err:.3g} (ulp {ulp:.3g})")


CASES.add("reduce_sum_long_row", reduce_sum_error, 1, (2, 1 << 20))
CASES.add("reduce_sum_long_column", reduce_sum_error, 0, (1 << 18, 8))


@CASES.case
def bf16_cast_of_nans_matches_ml_dtypes():
    """Bit-equal to ml_dtypes (the README's claim), NaN payloads included, or the README's
    cast row says how NaNs differ."""
    bits = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF, 0x7FC12345, 0xFF812345, 0x7F80FFFF,
                     0x7F800000, 0xFF800000, 0x3F800000], np.uint32)
    x = bits.view(np.float32).reshape(1, -1)
    got = tpp.unary("cast", 1, x.shape[1], "f32", out_dtype="bf16")(x).view(np.uint16)
    want = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    if np.array_equal(got, want):
        return
    diff = [(hex(b), hex(g), hex(w)) for b, g, w in zip(bits, got[0], want[0]) if g != w]
    nan_only = all(np.isnan(np.uint32(int(b, 16)).view(np.float32)) for b, _, _ in diff)
    still_nan = all(np.isnan(np.uint16(int(g, 16)).view(ml_dtypes.bfloat16)) for _, g, _ in diff)
    text = README.read_text()
    if nan_only and still_nan and "NaN" in text and "ml_dtypes" in text and "payload" in text.lower():
        return
    raise Wrong(f"f32 -> bf16 cast differs from ml_dtypes (bits, tpp, ml_dtypes): {diff}")


# ---- C descriptors -----------------------------------------------------------------------------
_ffi = []


def ffi() -> cffi.FFI:
    if not _ffi:
        f = cffi.FFI()
        f.cdef(capi_build.declarations())
        _ffi.append(f)
    return _ffi[0]


def c_strings(field, raw: bytes, family="unary"):
    f = ffi()
    keep = [f.new("char[]", raw), f.new("char[]", b"relu")]
    fields = {"m": 4, "n": 4, "k": 4, "kind": keep[1] if family != "gemm" else f.NULL}
    fields[field] = keep[0]
    d = f.new("tpp_desc *", fields)
    try:
        capi.kernel_address(f, family, d)
    except Exception as exc:                   # noqa: BLE001
        code = capi._error_code(exc)
        if code == capi.E_INTERNAL:
            raise Wrong(f"a {field} of {raw!r} is an internal error: {type(exc).__name__}: {exc}") from exc
        return
    raise Wrong(f"accepted a {field} of {raw!r}")


for _field, _raw, _fam in (("kind", b"\xff\xfe", "unary"), ("kind", b"rel\xc3", "unary"), ("kind", b"", "unary"),
                           ("dtype", b"f3\x80", "unary"), ("dtype", b"\xe2\x82", "gemm"),
                           ("epilogue", b"bias,\xffrelu", "gemm"), ("variant", b"\xa0stride", "brgemm"),
                           ("broadcast_b", b"r\xf0w", "binary"), ("target", b"x86\xff", "unary"),
                           ("out_dtype", b"\xc0\xaf", "gemm")):
    CASES.add(f"c_desc_{_field}_not_utf8_{_raw.hex()}", c_strings, _field, _raw, _fam)


def c_alpha(alpha):
    """A C descriptor's alpha follows Python's rule for the same value."""
    py, py_exc = attempt(lambda: tpp.unary("leaky_relu", 4, 4, alpha=alpha))
    f = ffi()
    d = f.new("tpp_desc *", {"m": 4, "n": 4, "kind": f.new("char[]", b"leaky_relu"), "alpha": alpha,
                             "flags": capi.ALPHA})      # TPP_FLAG_ALPHA
    c, c_exc = attempt(lambda: capi.kernel_address(f, "unary", d))
    if (py_exc is None) != (c_exc is None):
        raise Wrong(f"alpha={alpha}: Python {'refuses' if py_exc else 'accepts'} ({py_exc}), "
                    f"C {'refuses' if c_exc else 'accepts'} ({c_exc})")
    if py_exc is None:
        x = np.array([[-1.0, 2.0, -3.0, 0.5]] * 4, np.float32)
        with np.errstate(over="ignore"):             # 1e300 is inf as the kernel's f32
            a32 = np.float32(alpha)
        harness.close(py(x), np.where(x > 0, x, a32 * x.astype(np.float64)), np.float32)


for _a in (0.1, float("nan"), float("inf"), -float("inf"), 1e300, -0.0):
    CASES.add(f"c_alpha_{_a}", c_alpha, _a)

results = harness.results_fixture(CASES, __name__)
test_case = harness.case_test(CASES)

if __name__ == "__main__":
    harness.main(CASES)
