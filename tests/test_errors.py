"""Bad input raises the documented exception class with a message that names the
argument and what was expected. One table of (what is wrong, the call, the
class, a distinctive part of the message)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import ml_dtypes
import numpy as np
import pytest

import tpp
from tpp import config

F32 = np.float32


def f32(*shape):
    return np.ones(shape, F32)


def read_only(a):
    a.flags.writeable = False
    return a


def misaligned(shape):
    """A float32 array whose data is one byte off its element alignment."""
    raw = np.zeros(int(np.prod(shape)) * 4 + 1, np.uint8)
    return np.frombuffer(raw.data, dtype=F32, count=int(np.prod(shape)), offset=1).reshape(shape)


def strided_rows(shape, row_stride):
    base = np.ones(shape[0] * max(row_stride, shape[1]) + shape[1], F32)
    return np.lib.stride_tricks.as_strided(base, shape, (row_stride * 4, 4))


RELU = lambda: tpp.unary("relu", 4, 6)                                     # noqa: E731
ADD_ROW = lambda: tpp.binary("add", 4, 6, broadcast="row")                  # noqa: E731
OVERLAP = np.zeros((4, 8), F32)


@dataclass(frozen=True)
class Bad:
    id: str
    call: Callable[[], object]
    error: type
    match: str


BAD = [
    # --- descriptors ------------------------------------------------------------------------
    Bad("unknown unary kind", lambda: tpp.unary("softplus", 4, 4), tpp.DescriptorError,
        r"tpp.unary: unknown kind 'softplus'; known kinds: copy, "),
    Bad("unknown binary kind", lambda: tpp.binary("pow", 4, 4), tpp.DescriptorError,
        r"tpp.binary: unknown kind 'pow'; known kinds: add, "),
    Bad("m = 0", lambda: tpp.unary("relu", 0, 4), tpp.DescriptorError,
        r"tpp relu: m must be an integer >= 1, got 0"),
    Bad("negative n", lambda: tpp.binary("add", 3, -2), tpp.DescriptorError,
        r"tpp add: n must be an integer >= 1, got -2"),
    Bad("float m", lambda: tpp.unary("relu", 2.0, 4), tpp.DescriptorError, r"m must be .* got 2.0"),
    Bad("bool m", lambda: tpp.unary("relu", True, 4), tpp.DescriptorError, r"m must be .* got True"),
    Bad("huge n", lambda: tpp.unary("relu", 1, 2 ** 31), tpp.DescriptorError, r"n=2147483648 is too large"),
    Bad("unknown dtype string", lambda: tpp.unary("relu", 4, 4, dtype="f16"), tpp.DTypeError,
        r"tpp: dtype='f16' is not supported; use 'f32', 'bf16' or 'f64'"),
    Bad("integer dtype", lambda: tpp.binary("add", 4, 4, dtype=np.int32), tpp.DTypeError,
        r"dtype i32 is not supported \(supported: bf16, f32, f64\)"),
    Bad("f64 transcendental", lambda: tpp.unary("exp", 4, 4, dtype="f64"), tpp.DTypeError,
        r"tpp exp: dtype f64 is not supported"),
    Bad("unknown out_dtype", lambda: tpp.unary("cast", 4, 4, out_dtype="fp8"), tpp.DTypeError,
        r"out_dtype='fp8' is not supported"),
    Bad("cast to the same dtype", lambda: tpp.unary("cast", 4, 4, dtype="f32", out_dtype="f32"),
        tpp.DTypeError,
        r"tpp cast: out_dtype must be the other of f32/bf16, got f32 -> f32"),
    Bad("cast to f64", lambda: tpp.unary("cast", 4, 4, dtype="f32", out_dtype="f64"), tpp.DTypeError,
        r"got f32 -> f64"),
    Bad("out_dtype on relu", lambda: tpp.unary("relu", 4, 4, out_dtype="bf16"), tpp.DTypeError,
        r"tpp relu: out_dtype must equal dtype \(f32\); use kind 'cast'"),
    Bad("alpha on relu", lambda: tpp.unary("relu", 4, 4, alpha=0.1), tpp.DescriptorError,
        r"tpp relu: takes no alpha"),
    Bad("reduction without axis", lambda: tpp.unary("reduce_sum", 4, 4), tpp.DescriptorError,
        r"tpp reduce_sum: axis must be 0 \(over rows\) or 1 \(over columns\), got None"),
    Bad("reduction axis 2", lambda: tpp.unary("reduce_max", 4, 4, axis=2), tpp.DescriptorError,
        r"axis must be 0 .* got 2"),
    Bad("argidx on reduce_sum", lambda: tpp.unary("reduce_sum", 4, 4, axis=1, argidx=True),
        tpp.DescriptorError,
        r"tpp reduce_sum: argidx is only offered by reduce_max and reduce_min"),
    Bad("axis on relu", lambda: tpp.unary("relu", 4, 4, axis=1), tpp.DescriptorError,
        r"tpp relu: axis/argidx are only for reduce_\* kinds"),
    Bad("unknown broadcast mode", lambda: tpp.binary("add", 4, 4, broadcast="diag"), tpp.DescriptorError,
        r"tpp add: broadcast mode 'diag' is not one of none, row, col, scalar"),
    Bad("broadcast triple", lambda: tpp.binary("add", 4, 4, broadcast=("row", "col", "none")),
        tpp.DescriptorError, r"broadcast must be one mode or a pair"),
    Bad("bool lda", lambda: tpp.gemm(4, 4, 1, lda=True), tpp.DescriptorError,
        r"tpp gemm: lda must be an integer, got the bool True"),
    Bad("numpy bool axis", lambda: tpp.unary("reduce_max", 4, 4, axis=np.True_), tpp.DescriptorError,
        r"tpp reduce_max: axis must be an integer, got the bool np.True_"),
    Bad("float stride", lambda: tpp.brgemm(4, 4, 4, stride_a=16.0), tpp.DescriptorError,
        r"tpp brgemm: stride_a must be an integer, got float 16.0"),
    Bad("stride past 2**48 bytes", lambda: tpp.brgemm(4, 4, 4, stride_a=2 ** 62), tpp.DescriptorError,
        r"tpp brgemm: stride_a=4611686018427387904 puts blocks 18446744073709551616 bytes apart, more than "
        r"the limit of 2\*\*48"),
    Bad("operand past 2**48 bytes", lambda: tpp.gemm(4, 4, 4, ldb=2 ** 50), tpp.DescriptorError,
        r"tpp gemm: n, k, ldb make operand 'b' span \d+ bytes, more than the limit of 2\*\*48"),
    Bad("nan alpha", lambda: tpp.unary("elu", 4, 4, alpha=float("nan")), tpp.DescriptorError,
        r"tpp elu: alpha must be finite, got nan"),
    # one rule for alpha and beta, at the descriptor (the C ABI and tpp-aot say the same)
    Bad("infinite alpha", lambda: tpp.unary("leaky_relu", 4, 4, alpha=-float("inf")), tpp.DescriptorError,
        r"tpp leaky_relu: alpha must be finite, got -inf"),
    Bad("string alpha", lambda: tpp.unary("elu", 4, 4, alpha="big"), tpp.DescriptorError,
        r"tpp elu: alpha must be a real number, got str 'big'"),
    Bad("infinite beta", lambda: tpp.gemm(4, 4, 4, beta=float("inf")), tpp.DescriptorError,
        r"tpp gemm: beta must be finite, got inf"),
    Bad("nan brgemm beta", lambda: tpp.brgemm(4, 4, 4, beta=float("nan")), tpp.DescriptorError,
        r"tpp brgemm: beta must be finite, got nan"),
    Bad("f64 gemm, f32-only epilogue", lambda: tpp.gemm(4, 4, 4, "f64", epilogue="gelu_tanh"), tpp.DTypeError,
        r"tpp gemm: epilogue step 'gelu_tanh' is not offered for f64 \(supported: bf16, f32\)"),
    Bad("unknown target", lambda: tpp.unary("relu", 4, 4, target="riscv-v"), tpp.TargetError,
        r"tpp: unknown target 'riscv-v'; known targets: aarch64-sve, aarch64-sve128, .*, x86-avx512"),
    # --- calls: shapes, dtypes, layouts ---------------------------------------------------------
    Bad("wrong shape", lambda: RELU()(f32(6, 4)), tpp.ShapeError,
        r"tpp relu: argument 'x' must have shape \(4, 6\), got \(6, 4\)"),
    Bad("1-D input", lambda: RELU()(f32(24)), tpp.ShapeError,
        r"argument 'x' must have shape \(4, 6\), got \(24,\)"),
    Bad("3-D input", lambda: RELU()(f32(1, 4, 6)), tpp.ShapeError, r"got \(1, 4, 6\)"),
    Bad("wrong out shape", lambda: RELU()(f32(4, 6), out=f32(4, 5)), tpp.ShapeError,
        r"argument 'out' must have shape \(4, 6\), got \(4, 5\)"),
    Bad("wrong row operand shape", lambda: ADD_ROW()(f32(4, 6), f32(6, 1)), tpp.ShapeError,
        r"argument 'b' must have shape \(1, 6\) or \(6,\), got \(6, 1\)"),
    Bad("wrong col operand shape", lambda: tpp.binary("add", 4, 6, broadcast="col")(f32(4, 6), f32(4)),
        tpp.ShapeError, r"argument 'b' must have shape \(4, 1\), got \(4,\)"),
    Bad("array as scalar operand", lambda: tpp.binary("mul", 4, 6, broadcast="scalar")(f32(4, 6), f32(1)),
        tpp.ShapeError, r"argument 'b' must have shape \(\), got \(1,\)"),
    Bad("wrong reduction out shape", lambda: tpp.unary("reduce_sum", 4, 6, axis=0)(f32(4, 6), out=f32(4)),
        tpp.ShapeError, r"argument 'out' must have shape \(6,\), got \(4,\)"),
    Bad("wrong input dtype", lambda: RELU()(np.ones((4, 6))), tpp.DTypeError,
        r"tpp relu: argument 'x' must have dtype float32, got float64"),
    Bad("bf16 into an f32 kernel", lambda: RELU()(f32(4, 6).astype(ml_dtypes.bfloat16)), tpp.DTypeError,
        r"must have dtype float32, got bfloat16"),
    Bad("float out for a compare", lambda: tpp.binary("gt", 4, 6)(f32(4, 6), f32(4, 6), out=f32(4, 6)),
        tpp.DTypeError, r"argument 'out' must have dtype bool, got float32"),
    Bad("int32 indices", lambda: tpp.unary("reduce_max", 4, 6, axis=1, argidx=True)(
        f32(4, 6), out=(f32(4), np.zeros(4, np.int32))), tpp.DTypeError,
        r"argument 'idx' must have dtype int64, got int32"),
    Bad("non-unit element stride", lambda: RELU()(f32(4, 12)[:, ::2]), tpp.ShapeError,
        r"argument 'x' must have unit element stride \(strides\[-1\] == 4 bytes\), got strides \(48, 8\)"),
    Bad("Fortran-ordered input", lambda: RELU()(np.asfortranarray(f32(4, 6))), tpp.ShapeError,
        r"must have unit element stride"),
    Bad("transposed view", lambda: RELU()(f32(6, 4).T), tpp.ShapeError, r"must have unit element stride"),
    Bad("rows overlapping each other", lambda: RELU()(strided_rows((4, 6), 3)), tpp.ShapeError,
        r"argument 'x' must have a positive row stride of at least 6 elements"),
    Bad("negative row stride", lambda: RELU()(f32(4, 6)[::-1]), tpp.ShapeError,
        r"must have a positive row stride of at least 6 elements .* got strides \(-24, 4\)"),
    Bad("misaligned data", lambda: RELU()(misaligned((4, 6))), tpp.ShapeError,
        r"argument 'x' is not aligned to its element size"),
    Bad("read-only out", lambda: RELU()(f32(4, 6), out=read_only(f32(4, 6))), ValueError,
        r"tpp relu: output 'out' is read-only"),
    # --- calls: arguments -------------------------------------------------------------------------
    Bad("list input", lambda: RELU()([[1.0] * 6] * 4), TypeError,
        r"tpp relu: argument 'x' must be a numpy array, got list"),
    Bad("None input", lambda: RELU()(None), TypeError, r"argument 'x' must be a numpy array, got NoneType"),
    Bad("list out", lambda: RELU()(f32(4, 6), out=[0.0] * 24), TypeError,
        r"argument 'out' must be a numpy array, got list"),
    Bad("bool as scalar operand", lambda: tpp.binary("mul", 4, 6, broadcast="scalar")(f32(4, 6), True),
        TypeError,
        r"argument 'b' must be a numpy array, got bool"),
    Bad("too many inputs", lambda: RELU()(f32(4, 6), f32(4, 6)), TypeError,
        r"tpp relu: expected 1 input\(s\), got 2"),
    Bad("too few inputs", lambda: ADD_ROW()(f32(4, 6)), TypeError, r"tpp add: expected 2 input\(s\), got 1"),
    Bad("an input to zero", lambda: tpp.unary("zero", 4, 6)(f32(4, 6)), TypeError,
        r"expected 0 input\(s\), got 1"),
    Bad("single out for argidx", lambda: tpp.unary("reduce_min", 4, 6, axis=1, argidx=True)(
        f32(4, 6), out=f32(4)),
        TypeError, r"tpp reduce_min: out must be a tuple of 2 arrays"),
    Bad("float brgemm offsets", lambda: tpp.brgemm(2, 2, 2, variant="offset")(
        f32(8), f32(8), f32(2, 2), np.array([0.0]), np.array([0])), tpp.DTypeError,
        r"tpp brgemm\(offset\): a_offsets must hold integers, got dtype float64"),
    Bad("brgemm offset near 2**63", lambda: tpp.brgemm(2, 2, 2, variant="offset")(
        f32(8), f32(8), f32(2, 2), np.array([0]), np.array([2 ** 63 - 1])), tpp.ShapeError,
        r"b_offsets\[0\] = 9223372036854775807: the block of 'b' there \(row stride 2\) would start before "
        r"or end past the buffer's 8 elements \(b_offsets must lie in 0 \.\. 4\)"),
    Bad("negative brgemm offset: its entry, not 'offset 0'", lambda: tpp.brgemm(2, 2, 2, variant="offset")(
        f32(8), f32(8), f32(2, 2), np.array([0, 4, -3]), np.array([0, 0, 0])), tpp.ShapeError,
        r"tpp brgemm\(offset\): a_offsets\[2\] = -3: the block of 'a' there \(row stride 2\) would start "
        r"before or end past the buffer's 8 elements \(a_offsets must lie in 0 \.\. 4\)"),
    Bad("brgemm offset of -2**63", lambda: tpp.brgemm(2, 2, 2, variant="offset")(
        f32(8), f32(8), f32(2, 2), np.array([0]), np.array([-2 ** 63])), tpp.ShapeError,
        r"b_offsets\[0\] = -9223372036854775808: "),
    Bad("brgemm offsets into a buffer smaller than a block", lambda: tpp.brgemm(2, 2, 2, variant="offset")(
        f32(3), f32(8), f32(2, 2), np.array([0]), np.array([0])), tpp.ShapeError,
        r"buffer 'a' has 3 elements, fewer than one block of 2 x 2 with row stride 2 spans \(4\)"),
    Bad("batch past 2**31 - 1", lambda: tpp.brgemm(2, 2, 2)(*[np.lib.stride_tricks.as_strided(
        f32(2, 2), (2 ** 40, 2, 2), (0, 8, 4))] * 2, f32(2, 2)), tpp.ShapeError,
        r"tpp brgemm\(stride\): a batch of 1099511627776 blocks is more than the limit of 2147483647"),
    # --- overlap ------------------------------------------------------------------------------------
    Bad("out shifted one column over x", lambda: RELU()(OVERLAP[:, :6], out=OVERLAP[:, 1:7]), tpp.AliasError,
        r"tpp relu: output 'out' overlaps 'x'; only exact in-place use \(out is the input itself\) "
        r"is allowed"),
    Bad("out shifted one row over x", lambda: tpp.unary("relu", 3, 8)(OVERLAP[:3], out=OVERLAP[1:]),
        tpp.AliasError, r"output 'out' overlaps 'x'"),
    Bad("same start, other row stride",
        lambda: RELU()(OVERLAP[:, :6], out=OVERLAP.reshape(-1)[:24].reshape(4, 6)),
        tpp.AliasError, r"output 'out' overlaps 'x'"),
    Bad("out over a row operand", lambda: ADD_ROW()(OVERLAP[:, :6], OVERLAP[0, :6], out=OVERLAP[:, 2:]),
        tpp.AliasError, r"output 'out' overlaps"),
    Bad("out is the row operand's memory", lambda: tpp.binary("add", 1, 6, broadcast="row")(
        OVERLAP[:1, :6], OVERLAP[0, :6], out=OVERLAP[:1, :6]), tpp.AliasError, r"output 'out' overlaps 'b'"),
    Bad("transpose in place", lambda: tpp.unary("transpose", 4, 4)(OVERLAP[:, :4], out=OVERLAP[:, :4]),
        tpp.AliasError, r"tpp transpose: output 'out' overlaps 'x'; .* for elementwise kinds, not this one"),
    Bad("reduction out inside x", lambda: tpp.unary("reduce_sum", 4, 8, axis=1)(OVERLAP, out=OVERLAP[1, :4]),
        tpp.AliasError, r"tpp reduce_sum: output 'out' overlaps 'x'"),
    Bad("argidx outputs overlapping each other", lambda: tpp.unary("reduce_max", 4, 6, axis=1, argidx=True)(
        f32(4, 6), out=(OVERLAP.reshape(-1)[:4], OVERLAP.reshape(-1)[:10].view(np.int64)[1:])),
        tpp.AliasError,
        r"tpp reduce_max: output 'out' overlaps 'idx'"),
    Bad("cast output over its input", lambda: tpp.unary("cast", 4, 6, out_dtype="bf16")(
        OVERLAP[:, :6], out=OVERLAP.view(ml_dtypes.bfloat16)[:, 2:8]), tpp.AliasError,
        r"output 'out' overlaps 'x'"),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b.id)
def test_bad_input_raises(bad):
    with pytest.raises(bad.error, match=bad.match):
        bad.call()


def test_exception_classes_subclass_the_builtins():
    assert issubclass(tpp.ShapeError, ValueError) and issubclass(tpp.AliasError, ValueError)
    assert issubclass(tpp.DescriptorError, ValueError) and issubclass(tpp.DTypeError, TypeError)
    for cls in (tpp.ShapeError, tpp.DTypeError, tpp.AliasError, tpp.DescriptorError, tpp.TargetError):
        assert issubclass(cls, tpp.TppError)


def test_kernel_still_works_after_refused_calls(rng):
    k = tpp.unary("relu", 4, 6)
    for bad in BAD:
        try:
            bad.call()
        except Exception:
            pass
    x = rng.uniform(-1, 1, (4, 6)).astype(F32)
    np.testing.assert_array_equal(k(x), np.maximum(x, 0))


def test_accepted_conversions(rng):
    """What the checks accept besides exact ndarrays: subclasses, and any row
    stride >= n; a refused call leaves `out` untouched."""
    class Sub(np.ndarray):
        pass
    x = rng.uniform(-1, 1, (4, 6)).astype(F32)
    np.testing.assert_array_equal(RELU()(x.view(Sub)), np.maximum(x, 0))
    wide = np.zeros((4, 100), F32)
    wide[:, 50:56] = x
    np.testing.assert_array_equal(RELU()(wide[:, 50:56]), np.maximum(x, 0))
    out = np.full((4, 6), 7.0, F32)
    with pytest.raises(tpp.ShapeError):
        RELU()(f32(6, 4), out=out)
    assert (out == 7.0).all()


@pytest.mark.parametrize("name, value, match", [
    ("TPP_OPT_LEVEL", "7", r"TPP_OPT_LEVEL=7 is outside 0..3"),
    ("TPP_OPT_LEVEL", "fast", r"TPP_OPT_LEVEL='fast' is not an integer"),
    ("TPP_NUM_THREADS", "0", r"TPP_NUM_THREADS=0 is outside 1..1024"),
])
def test_bad_environment_knobs(monkeypatch, name, value, match):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        config.from_environment()


def test_environment_knobs_are_read(monkeypatch, tmp_path):
    monkeypatch.setenv("TPP_CACHE", "0")
    monkeypatch.setenv("TPP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TPP_TARGET", "x86-avx2")
    monkeypatch.setenv("TPP_OPT_LEVEL", "2")
    cfg = config.from_environment()
    assert (cfg.cache, cfg.cache_dir, cfg.target, cfg.opt_level) == (False, tmp_path, "x86-avx2", 2)
