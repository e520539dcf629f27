"""The GEMM and BRGEMM families as records (family.py): the descriptor's checks, its
operands (gemm_spec.py), the float64 reference and the emitter per backend:
gemm.py's register blocks on vector CPUs; on GPUs tensor cores (gemm_mma.py) for
plain bf16 and shared-memory tiles (gemm_simt.py) for the rest. Every emitter takes
the descriptor and its gemm_spec.Batch.

A BRGEMM descriptor has every field of a GEMM one plus the batch (variant,
stride_a, stride_b), so its checks are the GEMM's and then the batch's; messages
name the descriptor's `what` ("tpp gemm" / "tpp brgemm").
"""
from __future__ import annotations

import numpy as np

from .errors import DescriptorError, DTypeError
from ..jit.types import DType
from . import epilogue as epilogue_k
from . import fields
from . import gemm as gemm_k
from . import unary as unary_k
from .family import Family, Lowering
from .gemm_spec import B_DTYPE, BATCH_VARIANTS, DTYPES, OUT_DTYPES, accumulator, b_shape, batch_of, operands


def tight_lds(d) -> tuple[int, int, int]:
    """(lda, ldb, ldc) of tightly packed A, B and C."""
    b_cols = b_shape(d.n, d.k, d.trans_b, d.b_vnni, d.dtype)[1]
    return (d.m if d.trans_a else d.k, b_cols, d.n)


# ---- checks -----------------------------------------------------------------------------------
def _validate_gemm(d) -> None:
    what = d.what.removeprefix("tpp ")
    fields.check_dims(d, what, "m", "n", "k")
    for name in ("trans_a", "trans_b", "b_vnni"):
        fields.put(d, name, fields.flag(what, name, getattr(d, name)))
    fields.dtype_check(what, d.dtype, DTYPES)
    allowed = OUT_DTYPES[d.dtype]
    if d.out_dtype is not None and not isinstance(d.out_dtype, DType):
        raise DTypeError(f"{d.what}: out_dtype must be a tpp DType or None, got {d.out_dtype!r}")
    if d.out_dtype is None:
        fields.put(d, "out_dtype", accumulator(d))
    elif d.out_dtype not in allowed:
        raise DTypeError(f"{d.what}: out_dtype {d.out_dtype.value} with {d.dtype.value} inputs "
                         f"(supported: {', '.join(fields.dtype_names(allowed))})")
    if d.b_vnni and d.trans_b:
        raise DescriptorError(f"{d.what}: b_vnni and trans_b exclude each other (a VNNI packed B "
                              "is already in the layout the kernel reads)")
    if d.b_vnni and d.dtype not in (DType.BF16, DType.U8):
        raise DescriptorError(f"{d.what}: b_vnni (a VNNI packed B) is for bf16 and int8 inputs")
    if fields.real(what, "beta", d.beta) not in (0.0, 1.0):
        raise DescriptorError(f"{d.what}: beta must be 0 or 1, got {d.beta!r}")
    fields.put(d, "beta", float(d.beta))
    _validate_epilogue(d)
    for name, value, least in zip(("lda", "ldb", "ldc"), (d.lda, d.ldb, d.ldc), tight_lds(d)):
        if name == "lda" and not d.trans_a and value is not None:
            # A is only read, so its rows may overlap: a convolution's rows of pixels with
            # the filter taps folded into K (q*stride*c apart, S*c long) are such an A
            least = 1
        if value is not None:
            value = fields.integer(what, name, value)
            if value < least:
                raise DescriptorError(f"{d.what}: {name} must be an integer >= {least}, got {value!r}")
        fields.put(d, name, least if value is None else value)
    a_rows, a_cols = (d.k, d.m) if d.trans_a else (d.m, d.k)
    b_rows, b_cols = b_shape(d.n, d.k, d.trans_b, d.b_vnni, d.dtype)
    fields.check_extent(what, "a", "m, k, lda", a_rows, a_cols, d.lda, d.dtype.itemsize)
    fields.check_extent(what, "b", "n, k, ldb", b_rows, b_cols, d.ldb, B_DTYPE[d.dtype].itemsize)
    fields.check_extent(what, "c", "m, n, ldc", d.m, d.n, d.ldc, d.out_dtype.itemsize)


def _validate_epilogue(d) -> None:
    if isinstance(d.epilogue, str) or not isinstance(d.epilogue, (tuple, list)):
        raise DescriptorError(f"{d.what}: epilogue must be a tuple of step names, got {d.epilogue!r}")
    fields.put(d, "epilogue", tuple(d.epilogue))
    known = epilogue_k.INPUT_STEPS + epilogue_k.activation_kinds()
    for step in d.epilogue:
        if step not in known:
            raise DescriptorError(f"{d.what}: epilogue step {step!r} is not one of: {', '.join(known)}")
    if d.epilogue and d.dtype is DType.U8:
        raise DescriptorError(f"{d.what}: epilogues are for float GEMMs (int8 accumulates in int32)")
    acc = accumulator(d)
    for step in d.epilogue:
        if step in unary_k.KINDS and acc not in unary_k.KINDS[step].dtypes:
            raise DTypeError(f"{d.what}: epilogue step {step!r} is not offered for {acc.value} "
                             f"(supported: {', '.join(fields.dtype_names(unary_k.KINDS[step].dtypes))})")
    inputs = epilogue_k.epilogue_inputs(d.epilogue)
    if len(inputs) != len(set(inputs)):
        raise DescriptorError(f"{d.what}: each of bias/residual may appear once in an epilogue")


def _validate_brgemm(d) -> None:
    if d.variant not in BATCH_VARIANTS[1:]:
        raise DescriptorError(f"tpp brgemm: variant must be stride, offset or address, got {d.variant!r}")
    _validate_gemm(d)
    a_rows = d.k if d.trans_a else d.m
    b_rows = b_shape(d.n, d.k, d.trans_b, d.b_vnni, d.dtype)[0]
    for name, value, least, dtype in (("stride_a", d.stride_a, a_rows * d.lda, d.dtype),
                                      ("stride_b", d.stride_b, b_rows * d.ldb, B_DTYPE[d.dtype])):
        if d.variant != "stride":
            if value is not None:
                raise DescriptorError(f"tpp brgemm: {name} is only for the stride variant")
            fields.put(d, name, 0)
        elif value is None:
            fields.put(d, name, least)
        else:
            value = fields.integer("brgemm", name, value)
            if value < 0:
                raise DescriptorError(f"tpp brgemm: {name} must be an integer >= 0, got {value!r}")
            apart = value * dtype.itemsize
            if apart > fields.MAX_BYTES:
                raise DescriptorError(f"tpp brgemm: {name}={value} puts blocks {apart} bytes apart, more "
                                      f"than the limit of 2**48")
            fields.put(d, name, value)


# ---- operands and references ------------------------------------------------------------------
def _product(d, a, b) -> np.ndarray:
    """op(A) op(B) in float64, B unpacked from VNNI groups: B[g p + t, j] = Bp[p, g j + t]."""
    b64 = np.asarray(b, np.float64)
    if d.b_vnni:
        g = b64.shape[1] // d.n
        b64 = b64.reshape(b64.shape[0], d.n, g).transpose(0, 2, 1).reshape(-1, d.n)[: d.k]
    return gemm_k.gemm(np.asarray(a, np.float64), b64, np.zeros((d.m, d.n)), 1.0, d.trans_a, d.trans_b)


def _reference_gemm(d, a, b, *rest):
    """float64 result for g(a, b, [bias], [residual], [c])."""
    names = epilogue_k.epilogue_inputs(d.epilogue)
    c = rest[len(names)] if len(rest) > len(names) else None
    c64 = np.zeros((d.m, d.n)) if c is None else np.asarray(c, dtype=np.float64)
    acc = d.beta * c64 + _product(d, a, b)
    return epilogue_k.reference(d.epilogue, acc, dict(zip(names, rest)))


def _reference_brgemm(d, a_blocks, b_blocks, *rest):
    """float64 result for lists of A_i and B_i blocks, then the epilogue's inputs and C."""
    names = epilogue_k.epilogue_inputs(d.epilogue)
    acc = d.beta * np.asarray(rest[len(names)], np.float64)
    for a, b in zip(a_blocks, b_blocks):
        acc = acc + _product(d, a, b)
    return epilogue_k.reference(d.epilogue, acc, dict(zip(names, rest)))


# ---- emitters ---------------------------------------------------------------------------------
def _emit_simd(module, name, target, d):
    return gemm_k.emit_gemm(module, name, target, d, batch_of(d))


def _gpu_kernel(d):
    """gemm_mma (tensor cores, plain bf16) or gemm_simt (shared-memory tiles, the rest)."""
    return gemm_k.simt_kernel(d.dtype, d.trans_a, d.trans_b, d.b_vnni)


def _emit_simt(module, name, target, d):
    return _gpu_kernel(d).emit(module, name, target, d, batch_of(d))


def _threads(d) -> int:
    """One block of THREADS per C tile."""
    return _gpu_kernel(d).launch_threads(d.m, d.n)


_LOWERINGS = {"simd": Lowering(_emit_simd), "simt": Lowering(_emit_simt, threads=_threads)}
GEMM = Family("gemm", "gemm", ("gemm",), _validate_gemm, operands, _reference_gemm, _LOWERINGS)
BRGEMM = Family("brgemm", "brgemm", ("brgemm",), _validate_brgemm, operands, _reference_brgemm, _LOWERINGS)
