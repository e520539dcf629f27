"""tpp: Tensor Processing Primitives, JIT-compiled through llvmlite.

    import tpp
    relu = tpp.unary("relu", 64, 64, dtype="f32")   # dispatch once
    y = relu(x)                                      # call many times
    add = tpp.binary("add", 64, 64, broadcast="row")
    add(a, bias, out=a)
"""
from __future__ import annotations

import numpy as np

from . import _checkout  # noqa: F401  (first: finds tpp.jit & co. in a source checkout)
from . import config, cuda
from .brgemm import BatchReduceKernel
from .descriptors import BINARY_KINDS, UNARY_KINDS, BinaryDesc, BrgemmDesc, GemmDesc, UnaryDesc, parse_bcast
from .dispatch import __version__, current_target, get_kernel
from .dtypes import parse as _parse_dtype
from .errors import (AliasError, ArgumentError, DescriptorError, DTypeError, IndexRangeError, ShapeError, TargetError,
                     TppError)
from . import expr as eq
from .expr import EquationDesc, equation, equation_desc
from .dropout_kernel import DropoutDesc, dropout, dropout_desc
from .gather_kernel import GatherDesc, GatherKernel, gather, gather_desc, scatter_add
from .opreduce_kernel import OpReduceDesc, OpReduceKernel, opreduce, opreduce_desc
from .jit.targets import Target
from .jit.types import DType
from .kernel import Kernel
from .kernels import binary as _binary_k
from .kernels import unary as _unary_k


def unary(kind: str, m: int, n: int, dtype="f32", *, out_dtype=None, alpha: float | None = None,
          axis: int | None = None, argidx: bool = False, target=None) -> Kernel:
    """Dispatch a unary TPP on an m x n tile.

    kind: an elementwise kind ("relu", "gelu_tanh", "exp", ..., "cast"), a reduction
    ("reduce_sum", "reduce_max", ... with axis=1 for one result per row or axis=0
    for one per column; argidx=True adds the index of max/min), or "transpose".
    """
    return get_kernel(unary_desc(kind, m, n, dtype, out_dtype=out_dtype, alpha=alpha, axis=axis,
                                 argidx=argidx), target)


def unary_desc(kind: str, m: int, n: int, dtype="f32", *, out_dtype=None, alpha: float | None = None,
               axis: int | None = None, argidx: bool = False) -> UnaryDesc:
    """The descriptor tpp.unary dispatches (what the C ABI and AOT builds use too)."""
    kind = _unary_k.ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    dt = _parse_dtype(dtype)
    odt = _parse_dtype(out_dtype, "out_dtype") if out_dtype is not None else dt
    return UnaryDesc(kind, m, n, dt, odt, alpha, axis, argidx)


def binary(kind: str, m: int, n: int, dtype="f32", *, broadcast=None, target=None) -> Kernel:
    """Dispatch a binary TPP on an m x n tile.

    broadcast: None (both full), a mode for the second input ("row", "col",
    "scalar"), or a pair of modes (for a, for b) from "none", "row", "col", "scalar".
    Row inputs have shape (1, n) or (n,), column inputs (m, 1), scalars () or a
    Python number.
    """
    return get_kernel(binary_desc(kind, m, n, dtype, broadcast=broadcast), target)


def binary_desc(kind: str, m: int, n: int, dtype="f32", *, broadcast=None) -> BinaryDesc:
    """The descriptor tpp.binary dispatches."""
    kind = _binary_k.ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if isinstance(broadcast, (tuple, list)):
        if len(broadcast) != 2:
            raise DescriptorError(f"tpp {kind}: broadcast must be one mode or a pair, got {broadcast!r}")
        ba, bb = (parse_bcast(x, kind) for x in broadcast)
    else:
        ba, bb = parse_bcast(None, kind), parse_bcast(broadcast, kind)
    return BinaryDesc(kind, m, n, _parse_dtype(dtype), ba, bb)


def _gemm_dtypes(dtype, out_dtype) -> tuple[DType, DType | None]:
    """(A's dtype, C's dtype or None for the default); "u8s8" names the int8 GEMM."""
    odt = _parse_dtype(out_dtype, "out_dtype") if out_dtype is not None else None
    return (DType.U8 if dtype in ("u8s8", "int8") else _parse_dtype(dtype)), odt


def _steps(epilogue) -> tuple[str, ...]:
    if isinstance(epilogue, str):
        return (epilogue,)
    if not isinstance(epilogue, (tuple, list)):
        raise DescriptorError(f"tpp gemm: epilogue must be a tuple of step names, got {epilogue!r}")
    return tuple(epilogue)


def _beta(beta) -> float:
    """beta as a Python float (what the descriptor checks), or an error naming it."""
    if isinstance(beta, (str, bytes)) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise DescriptorError(f"tpp gemm: beta must be a number (0.0 or 1.0), got {type(beta).__name__} {beta!r}")
    try:
        return float(beta)
    except OverflowError:
        raise DescriptorError(f"tpp gemm: beta must be 0.0 or 1.0, got {beta!r}") from None


def gemm(m: int, n: int, k: int, dtype="f32", *, trans_a: bool = False, trans_b: bool = False,
         beta: float = 1.0, lda: int | None = None, ldb: int | None = None, ldc: int | None = None,
         out_dtype=None, b_vnni: bool = False, epilogue=(), target=None) -> Kernel:
    """Dispatch a GEMM TPP: C = beta * C + op(A) op(B), called as g(a, b, c) (c updated
    in place and returned). a is m x k (k x m with trans_a), b is k x n (n x k with
    trans_b), c is m x n. The kernel is compiled for row strides lda/ldb/ldc (elements;
    default: tight); a call with other strides (views) runs a kernel compiled for
    them, dispatched on first use. With beta=0, g(a, b) allocates c.
    bf16 inputs accumulate in f32 (vdpbf16ps where the CPU has it); c is f32, or bf16
    with out_dtype="bf16". dtype="u8s8" is the int8 GEMM: a uint8, b int8, c int32
    (vpdpbusd). b_vnni=True takes b VNNI-packed by tpp.unary("vnni_pack", k, n, dtype).
    epilogue: steps fused before the store, e.g. ("bias", "relu") or ("bias", "residual",
    "gelu_tanh"); bias (1 x n, added to every row), col_bias (m x 1, added along each row)
    and residual (m x n) are passed after b in epilogue order: g(a, b, bias, c)."""
    return get_kernel(gemm_desc(m, n, k, dtype, trans_a=trans_a, trans_b=trans_b, beta=beta, lda=lda,
                                ldb=ldb, ldc=ldc, out_dtype=out_dtype, b_vnni=b_vnni, epilogue=epilogue),
                      target)


def gemm_desc(m: int, n: int, k: int, dtype="f32", *, trans_a: bool = False, trans_b: bool = False,
              beta: float = 1.0, lda: int | None = None, ldb: int | None = None, ldc: int | None = None,
              out_dtype=None, b_vnni: bool = False, epilogue=()) -> GemmDesc:
    """The descriptor tpp.gemm dispatches."""
    dt, odt = _gemm_dtypes(dtype, out_dtype)
    # flags go to the descriptor as given: it refuses what is not a bool (bool("false") is True)
    return GemmDesc(m, n, k, dt, trans_a, trans_b, _beta(beta), lda, ldb, ldc, odt, b_vnni, _steps(epilogue))


def brgemm(m: int, n: int, k: int, dtype="f32", *, variant: str = "stride", trans_a: bool = False,
           trans_b: bool = False, beta: float = 1.0, lda: int | None = None, ldb: int | None = None,
           ldc: int | None = None, stride_a: int | None = None, stride_b: int | None = None,
           out_dtype=None, b_vnni: bool = False, epilogue=(), target=None) -> BatchReduceKernel:
    """Dispatch a BRGEMM TPP: C = beta * C + sum_i op(A_i) op(B_i), then the epilogue,
    batch count given at call time. variant "stride": br(a, b, c) with stacks a
    (batch, m, k), b (batch, k, n); "offset": br(a, b, c, a_offsets, b_offsets) with flat
    buffers and int64 element offsets; "address": br([a0, a1, ...], [b0, b1, ...], c).
    dtype, out_dtype, b_vnni and epilogue as for gemm; the epilogue's inputs go between
    b and c: br(a, b, bias, c)."""
    desc = brgemm_desc(m, n, k, dtype, variant=variant, trans_a=trans_a, trans_b=trans_b, beta=beta,
                       lda=lda, ldb=ldb, ldc=ldc, stride_a=stride_a, stride_b=stride_b,
                       out_dtype=out_dtype, b_vnni=b_vnni, epilogue=epilogue)
    return BatchReduceKernel(get_kernel(desc, target), get_kernel)


def brgemm_desc(m: int, n: int, k: int, dtype="f32", *, variant: str = "stride", trans_a: bool = False,
                trans_b: bool = False, beta: float = 1.0, lda: int | None = None, ldb: int | None = None,
                ldc: int | None = None, stride_a: int | None = None, stride_b: int | None = None,
                out_dtype=None, b_vnni: bool = False, epilogue=()) -> BrgemmDesc:
    """The descriptor tpp.brgemm dispatches."""
    dt, odt = _gemm_dtypes(dtype, out_dtype)
    return BrgemmDesc(m, n, k, dt, variant, trans_a, trans_b, _beta(beta), lda, ldb, ldc, stride_a, stride_b, odt,
                      b_vnni, _steps(epilogue))


__all__ = ["unary", "binary", "gemm", "brgemm", "equation", "equation_desc", "eq", "EquationDesc", "dropout",
           "dropout_desc", "DropoutDesc", "cuda", "gather", "scatter_add", "gather_desc", "GatherDesc",
           "GatherKernel", "IndexRangeError", "opreduce", "opreduce_desc", "OpReduceDesc", "OpReduceKernel",
           "BrgemmDesc", "BatchReduceKernel", "GemmDesc", "Kernel",
           "Target", "UnaryDesc", "BinaryDesc",
           "UNARY_KINDS", "BINARY_KINDS", "config", "current_target", "TppError", "ShapeError",
           "DTypeError", "AliasError", "ArgumentError",
           "DescriptorError", "TargetError", "__version__"]
