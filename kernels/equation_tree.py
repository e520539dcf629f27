"""Equation trees (kernels/equation.py compiles them): the node format's checks,
which nodes are rows of values and which one value per row, the float64 evaluation,
and the order of a row's passes.

A tree is nested tuples (hashable: it is part of the descriptor, the cache key):

    ("arg", i)                   input i (its broadcast mode is the descriptor's)
    ("const", value)             a finite float
    ("unary", kind, alpha, x)    one of tpp.unary's one-input elementwise kinds
    ("binary", kind, a, b)       add, sub, mul, div, max, min (broadcasting)
    ("reduce", op, x)            op in sum / max / min over the row: one value per row

At the root only, several outputs of one pass over the tile (flash attention's P, its
row max and row sum in one kernel):

    ("outputs", rounding, t1, ..., tk)
                                 output i is t_i: an M x N tile in the descriptor's
                                 out_dtype where t_i is a row of values, else M values in
                                 the compute dtype (f32); rounding ("exact" or "native")
                                 says how an M x N bf16 output is rounded: "exact" bit-equal
                                 to ml_dtypes, "native" with the CPU's conversion
                                 instruction where the target has one (AVX512-BF16's
                                 vcvtneps2bf16: subnormals flush to zero)
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from ..jit.types import DType
from . import binary as binary_k
from . import unary as unary_k
from .errors import DescriptorError
from .operands import Bcast

FLOATS = frozenset({DType.F32, DType.BF16, DType.F64})
INPUT_MODES = (Bcast.FULL, Bcast.ROW, Bcast.COL, Bcast.SCALAR)
# one-input elementwise kinds (copy is the identity; cast and zero are not expressions)
UNARY = tuple(k for k, spec in unary_k.KINDS.items() if spec.inputs == ("x",) and k != "cast")
BINARY = tuple(k for k, spec in binary_k.KINDS.items() if not spec.compare)
REDUCE = {"sum": (0.0, "fadd"), "max": (-math.inf, "fmaximum"), "min": (math.inf, "fminimum")}
MAX_NODES = 256
MAX_OUTPUTS = 8
ROUNDINGS = ("exact", "native")


# ---- the tree ------------------------------------------------------------------------
def outputs(tree) -> tuple:
    """The trees of the outputs: the root's items for an ("outputs", ...) root, else the root."""
    return tree[2:] if tree[0] == "outputs" else (tree,)


def rounding(tree) -> str:
    return tree[1] if tree[0] == "outputs" else "exact"


def walk(node) -> Iterator[tuple]:
    """Every node of the tree, children before their parent."""
    tag = node[0]
    if tag == "outputs":
        for t in node[2:]:
            yield from walk(t)
    elif tag == "unary":
        yield from walk(node[3])
    elif tag == "binary":
        yield from walk(node[2])
        yield from walk(node[3])
    elif tag == "reduce":
        yield from walk(node[2])
    yield node


def check_tree(node, inputs: int, what: str = "tpp.equation", root: bool = True) -> None:
    """DescriptorError naming the first malformed node (the tree comes from users)."""
    count = 0
    if root and isinstance(node, tuple) and node and node[0] == "outputs":
        if len(node) < 3 or len(node) > 2 + MAX_OUTPUTS or node[1] not in ROUNDINGS:
            raise DescriptorError(f"{what}: an outputs root is ('outputs', rounding, t1, ...) with rounding one "
                                  f"of {', '.join(ROUNDINGS)} and 1 to {MAX_OUTPUTS} outputs, got {node!r:.200}")
        for t in node[2:]:
            check_tree(t, inputs, what, root=False)
        return

    def visit(nd, depth: int) -> None:
        nonlocal count
        count += 1
        if isinstance(nd, tuple) and nd and nd[0] == "outputs":
            raise DescriptorError(f"{what}: an outputs node is allowed only at the root")
        if count > MAX_NODES or depth > 64:
            raise DescriptorError(f"{what}: the expression has more than {MAX_NODES} nodes or is nested "
                                  "deeper than 64")
        if not isinstance(nd, tuple) or not nd or not isinstance(nd[0], str):
            raise DescriptorError(f"{what}: a node must be a tuple starting with its tag, got {nd!r}")
        tag = nd[0]
        shape = {"arg": 2, "const": 2, "unary": 4, "binary": 4, "reduce": 3}.get(tag)
        if shape is None or len(nd) != shape:
            raise DescriptorError(f"{what}: unknown or malformed node {nd!r} (tags: arg, const, unary, "
                                  "binary, reduce)")
        if tag == "arg":
            i = nd[1]
            if type(i) is not int or not 0 <= i < inputs:
                raise DescriptorError(f"{what}: ('arg', {i!r}) names no input (there are {inputs})")
        elif tag == "const":
            if type(nd[1]) is not float or not math.isfinite(nd[1]):
                raise DescriptorError(f"{what}: a constant must be a finite float, got {nd[1]!r}")
        elif tag == "unary":
            if nd[1] not in UNARY:
                raise DescriptorError(f"{what}: unary kind {nd[1]!r} is not one of {', '.join(UNARY)}")
            spec = unary_k.KINDS[nd[1]]
            if nd[2] is not None and (spec.default_alpha is None or type(nd[2]) is not float
                                      or not math.isfinite(nd[2])):
                raise DescriptorError(f"{what}: {nd[1]} takes no alpha, or alpha must be a finite float, "
                                      f"got {nd[2]!r}")
            visit(nd[3], depth + 1)
        elif tag == "binary":
            if nd[1] not in BINARY:
                raise DescriptorError(f"{what}: binary kind {nd[1]!r} is not one of {', '.join(BINARY)}")
            visit(nd[2], depth + 1)
            visit(nd[3], depth + 1)
        else:
            if nd[1] not in REDUCE:
                raise DescriptorError(f"{what}: reduction {nd[1]!r} is not one of {', '.join(REDUCE)}")
            visit(nd[2], depth + 1)
    visit(node, 0)


def varies(node, modes: tuple[Bcast, ...]) -> bool:
    """Whether the node is a row of values (not one value per row)."""
    tag = node[0]
    if tag == "arg":
        return modes[node[1]] in (Bcast.FULL, Bcast.ROW)
    if tag == "unary":
        return varies(node[3], modes)
    if tag == "binary":
        return varies(node[2], modes) or varies(node[3], modes)
    return False                     # const, reduce


def compute_dtype(inputs: tuple[DType, ...], out: DType) -> DType:
    """f64 where everything is f64, else f32 (bf16 computes in f32)."""
    return DType.F64 if all(d is DType.F64 for d in (*inputs, out)) else DType.F32


def evaluate(node, args: list[np.ndarray], m: int, n: int) -> np.ndarray:
    """The tree in float64 numpy: args shaped (m or 1, n or 1), results broadcast like them
    (an outputs root: a tuple, one per output)."""
    tag = node[0]
    if tag == "outputs":
        return tuple(evaluate(t, args, m, n) for t in node[2:])
    if tag == "arg":
        return args[node[1]]
    if tag == "const":
        return np.float64(node[1])
    if tag == "unary":
        spec, x = unary_k.KINDS[node[1]], evaluate(node[3], args, m, n)
        with np.errstate(all="ignore"):
            if spec.default_alpha is None:
                return spec.reference(x)
            return spec.reference(x, node[2] if node[2] is not None else spec.default_alpha)
    if tag == "binary":
        a, b = evaluate(node[2], args, m, n), evaluate(node[3], args, m, n)
        with np.errstate(all="ignore"):
            return binary_k.KINDS[node[1]].reference(a, b)
    x = np.broadcast_to(evaluate(node[2], args, m, n), (m, n))
    fn = {"sum": np.sum, "max": np.max, "min": np.min}[node[1]]
    return fn(x, axis=1, keepdims=True)


def passes(tree) -> list[tuple]:
    """The reductions in the order their passes run (each after the ones it uses)."""
    seen, order = set(), []
    for node in walk(tree):
        if node[0] == "reduce" and node not in seen:
            seen.add(node)
            order.append(node)
    return order


def reads(tree, done: set) -> Iterator[tuple]:
    """The nodes a pass evaluates for `tree`: a reduction in `done` is a value by then."""
    if tree in done:
        yield tree
        return
    tag = tree[0]
    if tag == "outputs":
        for t in tree[2:]:
            yield from reads(t, done)
        return
    if tag == "unary":
        yield from reads(tree[3], done)
    elif tag == "binary":
        yield from reads(tree[2], done)
        yield from reads(tree[3], done)
    elif tag == "reduce":
        yield from reads(tree[2], done)
    yield tree


def stashed(tree, modes: tuple, reductions: list) -> list:
    """The reductions' operands that a later pass reads again (not plain inputs, which
    are loads anyway), in pass order."""
    found = []
    for i, r in enumerate(reductions):
        x = r[2]
        if x[0] in ("arg", "const") or not varies(x, modes) or x in found:
            continue
        done = set(reductions[:i + 1])
        later = [t[2] for t in reductions[i + 1:]] + [tree]
        if any(x == node for tree in later for node in reads(tree, done)):
            found.append(x)
    return found
