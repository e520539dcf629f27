"""Fused GEMM epilogues: steps applied to the accumulators in registers before
they are stored (LIBXSMM's brgemm_ext; the seed of graph-level fusion).

A step is "bias" (add a 1 x n row, broadcast down the rows), "col_bias" (add an
m x 1 column, broadcast along the rows: a per-output-channel bias where the
channels are C's rows, as in a 1x1 convolution on NCHW), "residual" (add an m x n
input) or the name of a one-input unary kind from the catalog
("relu", "gelu_tanh", "sigmoid", ...). Steps run in the order given, in the
accumulator precision; a bf16 C is rounded once, at the store.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..jit.loops import i64
from ..jit.types import DType
from ..jit.vec import I16, VecBuilder, bf16_to_f32
from . import unary
from .operands import Bcast, Operand, element_ptr

INPUT_STEPS = ("bias", "col_bias", "residual")


def activation_kinds() -> tuple[str, ...]:
    """Unary kinds an epilogue can apply: one input, defined for f32."""
    return tuple(name for name, kind in unary.KINDS.items()
                 if kind.inputs == ("x",) and DType.F32 in kind.dtypes and name not in ("copy", "cast"))


def epilogue_inputs(epilogue: tuple[str, ...]) -> list[str]:
    """The steps that read an operand, in argument order."""
    return [step for step in epilogue if step in INPUT_STEPS]


def epilogue_operands(epilogue: tuple[str, ...], m: int, n: int, dtype: DType) -> list[Operand]:
    shapes = {"bias": Operand("bias", dtype, 1, n, Bcast.ROW), "col_bias": Operand("col_bias", dtype, m, 1, Bcast.COL),
              "residual": Operand("residual", dtype, m, n)}
    return [shapes[step] for step in epilogue_inputs(epilogue)]


def reference(epilogue: tuple[str, ...], acc: np.ndarray, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """float64: the steps applied to acc (inputs: bias, residual by name)."""
    for step in epilogue:
        if step == "bias":
            acc = acc + np.asarray(inputs["bias"], np.float64).reshape(1, -1)
        elif step == "col_bias":
            acc = acc + np.asarray(inputs["col_bias"], np.float64).reshape(-1, 1)
        elif step == "residual":
            acc = acc + np.asarray(inputs["residual"], np.float64)
        else:
            kind = unary.KINDS[step]
            acc = kind.reference(acc, kind.default_alpha) if kind.default_alpha is not None else kind.reference(acc)
    return acc


def _scalar(b, ptr, dtype: DType) -> ir.Value:
    if dtype is DType.BF16:
        return bf16_to_f32(b, b.load(ptr, typ=I16))      # the bits, widened
    return b.load(ptr, typ=dtype.storage)


def apply_epilogue(v: VecBuilder, epilogue: tuple[str, ...], args: dict[str, tuple], dtype: DType, accs: list,
                   i0: ir.Value, j0: ir.Value, mr: int, nvec: int, masks: list) -> list:
    b, lanes = v.b, v.lanes
    elem = accs[0].type.element
    for step in epilogue:
        if step == "bias":
            ptr = args["bias"][0]
            row = [v.load(element_ptr(b, ptr, dtype, b.add(j0, i64(u * lanes))), dtype, masks[u])
                   for u in range(nvec)]
            accs = [b.fadd(acc, row[idx % nvec]) for idx, acc in enumerate(accs)]
        elif step == "col_bias":
            ptr = args["col_bias"][0]
            cols = [v.splat(_scalar(b, element_ptr(b, ptr, dtype, b.add(i0, i64(i))), dtype)) for i in range(mr)]
            accs = [b.fadd(acc, cols[idx // nvec]) for idx, acc in enumerate(accs)]
        elif step == "residual":
            ptr, ld = args["residual"]
            out = []
            for i in range(mr):
                base = element_ptr(b, ptr, dtype, b.add(b.mul(b.add(i0, i64(i)), ld), j0))
                for u in range(nvec):
                    r = v.load(element_ptr(b, base, dtype, i64(u * lanes)), dtype, masks[u])
                    out.append(b.fadd(accs[i * nvec + u], r))
            accs = out
        else:
            kind = unary.KINDS[step]
            params = unary.Params(elem, kind.default_alpha)
            accs = [kind.body(v, [acc], params)[0] for acc in accs]
    return accs
